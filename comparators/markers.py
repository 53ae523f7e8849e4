"""The shapes normalisation leaves behind, and :class:`Drifted` which a caller puts in: all
recognised by canonical bytes and the differ."""

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


class Drifted:
    """A stored value that does not decode to its declared type (type drift), as compared.

    ``raw`` is the value as stored (plain JSON), ``reason`` what did not fit. A drifted value
    differs (``type_changed``) from every value that is not drifted, whatever ``raw`` looks
    like: ``["user"]`` stored as a list where a set is declared is not the set ``{user}``.
    Two drifted values are equal when their ``raw`` values have the same canonical bytes. A
    report shows it as ``{"malformed": raw, "reason": reason}``.
    """

    __slots__ = ("raw", "reason")

    def __init__(self, raw: Any, reason: str = "") -> None:
        self.raw = raw
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        from comparators.canonical import canonical  # canonical imports this module

        return isinstance(other, Drifted) and canonical(self.raw) == canonical(other.raw)

    def __repr__(self) -> str:
        return f"Drifted({self.raw!r}, {self.reason!r})"


DRIFTED_KEY: Final = "\x00malformed"
"""The key of a drifted value's canonical form ``{"\\u0000malformed": raw}``: no field value
can hold it (NUL is refused in stored text), so it never meets a plain value's bytes."""
