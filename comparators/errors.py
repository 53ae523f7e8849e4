"""The root of the project's error tree, and the comparators' branch of it.

``ShadowProxyError`` lives here, in the package both ``comparators`` and ``proxy`` import
(``comparators`` never imports ``proxy``); the whole tree is drawn in ``proxy.errors``. ::

    ShadowProxyError
     └── ComparatorError
          └── RuleError (also a ValueError): a comparison rule from config is invalid
"""

from __future__ import annotations


class ShadowProxyError(Exception):
    """Base of every error shadowproxy raises on purpose."""


class ComparatorError(ShadowProxyError):
    """Base of every error raised on purpose by ``comparators``."""


class RuleError(ComparatorError, ValueError):
    """A rule from config is invalid; the message names the setting and the bad value."""
