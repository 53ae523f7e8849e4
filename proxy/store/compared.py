"""Stored values straight to what a comparison reads.

A read decodes each stored value to its canonical value (``fieldtypes``) and renders that as
canonical JSON (``Schema.to_json``): two passes, each building values. Most stored values are
their canonical JSON already, or one cheap step from it (a lower-case uuid text, a datetime in
UTC, a plain string), so a :class:`ComparedDecoder` answers those fields in one step and sends
every other through the codec's ``decode_value`` and the field's renderer, which stay the
definition. Each store's codec says which of its stored forms have such a step (its
``COMPARED_STEPS``); each step answers only for a value it can vouch for and otherwise returns
:data:`SLOW`. Tests hold every decoder to ``to_json(decode(...), drift=True)`` as the oracle.

A users record, in process: 15-18 µs decoded and rendered, 7-9 µs straight
(``docs/benchmarks.md``, "the compared form").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from comparators.markers import Drifted
from proxy.store.fieldtypes import Malformed
from proxy.store.schema import FieldSpec, Schema

SLOW: Any = object()  # what a fast step returns for a value it cannot vouch for
NO_KEY: Any = object()

# (base, container) -> the step from a stored value to its compared form, or SLOW.
FastSteps = Mapping[tuple[str, str | None], Callable[[Any], Any]]
# A codec's stored value -> canonical value (a ``Malformed`` on drift).
Decode = Callable[[FieldSpec, Any], Any]


def plain_text(value: Any) -> bool:
    """A string that is its own canonical value on sight: ASCII (no lone surrogate), no NUL."""
    return isinstance(value, str) and value.isascii() and "\x00" not in value


def plain_texts(values: Any) -> bool:
    """A list of strings, each a :func:`plain_text`, checked on their concatenation: one
    ``join`` (which refuses anything but strings) and two C checks, not a call per string."""
    if type(values) is not list:
        return False
    try:
        joined = "".join(values)
    except TypeError:
        return False
    return joined.isascii() and "\x00" not in joined


def compared_value(spec: FieldSpec, value: Any) -> Any:
    """A canonical value (or None, or a ``Malformed``) as ``to_json(..., drift=True)``
    renders it."""
    if value is None:
        return [] if spec.type.container == "set" else None
    if isinstance(value, Malformed):
        return Drifted(value.raw, value.reason)
    return spec.render(value)


def without_drift(compared: dict[str, Any]) -> dict[str, Any]:
    """``to_json(record)`` from ``to_json(record, drift=True)``: a drifted field as its raw
    value, which is what a client gets; the same object when nothing drifted."""
    if not any(type(v) is Drifted for v in compared.values()):
        return compared
    return {k: v.raw if type(v) is Drifted else v for k, v in compared.items()}


class ComparedDecoder:
    """One schema's stored records (a DynamoDB item, an asyncpg row: any mapping of field
    name to stored value) straight to ``to_json(decode(record), fields=names, drift=True)``."""

    def __init__(self, schema: Schema, fast: FastSteps, decode: Decode) -> None:
        self._decode = decode
        self._key = schema.key
        self._key_spec = schema.key_field
        self._plan = {
            name: (spec, fast.get((spec.type.base, spec.type.container)))
            for name, spec in schema.fields.items()
        }

    def decode(
        self, stored: Mapping[str, Any], names: Iterable[str], key: Any = NO_KEY
    ) -> dict[str, Any]:
        """``key``: the canonical key the record was read by, when ``stored`` lacks it."""
        plan, decode = self._plan, self._decode
        out: dict[str, Any] = {}
        for name in names:
            if key is not NO_KEY and name == self._key:
                out[name] = self._key_spec.render(key)
                continue
            spec, fast = plan[name]
            value = stored.get(name)
            if fast is not None and value is not None:
                answer = fast(value)
                if answer is not SLOW:
                    out[name] = answer
                    continue
            out[name] = compared_value(spec, decode(spec, value))
        return out
