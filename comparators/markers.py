"""The shapes normalisation leaves behind, recognised by canonical bytes and the differ."""

from __future__ import annotations

from typing import Any, Final


class UnorderedList(list[Any]):
    """A list compared as a multiset; already sorted by canonical bytes."""

    __slots__ = ()


class KeyedItems(dict[str, Any]):
    """A keyed list as ``{key text: element}``; ``field`` names the key field."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field


class Ignored:
    """Stands in for an ignored list element, so later positions keep their index."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<ignored>"


IGNORED: Final = Ignored()
IGNORED_JSON: Final = b'"\\u0000ignored"'
