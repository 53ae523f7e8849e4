"""The comparators' error tree.

::

    ComparatorError
     └── RuleError (also a ValueError): a comparison rule from config is invalid
"""

from __future__ import annotations


class ComparatorError(Exception):
    """Base of every error raised on purpose by ``comparators``."""


class RuleError(ComparatorError, ValueError):
    """A rule from config is invalid; the message names the setting and the bad value."""
