"""PII redaction for mismatch records: a keyed hash, so equality stays visible.

>>> r = Redactor(frozenset({"email"}), key=b"secret")
>>> r.value("a@example.com") == r.value("a@example.com")
True
>>> r.tree({"id": 1, "email": "a@example.com"})["email"].startswith("redacted:")
True

Field names match case-insensitively at any depth. A keyed-list segment whose key field is
sensitive (``users[email="a@b.c"]``) has its key value replaced in the path as well. A
:class:`BodyPreview` (a body that is not JSON) becomes ``"<size> bytes <kind> redacted:<token>"``
whatever its path. Nothing here raises on odd input: what cannot be walked is redacted whole.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from comparators.canonical import canonical
from comparators.model import BodyPreview, Difference
from comparators.paths import Keyed, Segment, collapse_indexes, parse_path, render_path

PREFIX = "redacted:"
TOKEN_HEX = 16
UNAVAILABLE = PREFIX + "unavailable"


class Redactor:
    __slots__ = ("_fields", "_key")

    def __init__(self, fields: Iterable[str], key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError("the redaction key must be bytes")
        self._fields = frozenset(str(f).lower() for f in fields)
        self._key = bytes(key)

    @property
    def fields(self) -> frozenset[str]:
        return self._fields

    def is_sensitive(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def value(self, value: Any) -> str:
        """``redacted:`` + the first 16 hex of HMAC-SHA256(key, canonical bytes of value)."""
        return self._token(canonical(value))

    def tree(self, value: Any) -> Any:
        """A copy of ``value`` with the values of sensitive keys replaced, at any depth."""
        try:
            return self._tree(value)
        except Exception:
            return UNAVAILABLE

    def difference(self, difference: Difference) -> Difference:
        """``difference`` with sensitive values (and sensitive key values in its path) hashed."""
        try:
            segments = parse_path(difference.path)
            sensitive = self.is_sensitive(_last_field(segments))
            return Difference(
                render_path("", [self._segment(s) for s in segments]),
                difference.kind,
                self._side(difference.primary, sensitive),
                self._side(difference.shadow, sensitive),
            )
        except Exception:
            path = collapse_indexes(str(difference.path))
            return Difference(path, str(difference.kind), UNAVAILABLE, UNAVAILABLE)

    def _tree(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: self.value(v) if self.is_sensitive(k) else self._tree(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._tree(v) for v in value]
        if isinstance(value, BodyPreview):
            return self._preview(value)
        return value

    def _preview(self, preview: BodyPreview) -> str:
        return f"{preview} {self._token(preview.digest.encode())}"

    def _side(self, value: Any, sensitive: bool) -> Any:
        if value is None:
            return None
        if isinstance(value, BodyPreview):
            return self._preview(value)
        return self.value(value) if sensitive else self.tree(value)

    def _segment(self, segment: Segment) -> Segment:
        if not isinstance(segment, Keyed) or not self.is_sensitive(segment.field):
            return segment
        text, sign, count = segment.text.rpartition("#")
        if not (sign and count.isdigit()):
            text, sign, count = segment.text, "", ""
        return Keyed(segment.field, self._token(text.encode()) + sign + count)

    def _token(self, data: bytes) -> str:
        return PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:TOKEN_HEX]


def _last_field(segments: list[Segment]) -> str | None:
    for segment in reversed(segments):
        if isinstance(segment, str):
            return segment
    return None
