"""The flag model: what the proxy reads on every request, how operators name and change it, and
which changes are refused. Pure: no I/O, no clock. (Over 400 lines: one vocabulary — the
states, the names, parsing and validating a change — that every flag module speaks.)

Names, as operators type them (``<target>.<flag>``; route names may hold dots, flag names never
do, so the last dot splits)::

    users.read_from=dynamodb                   which store serves reads
    users.write_to=postgres,dynamodb           stores that receive writes (list or "a,b")
    users.shadow_reads=0.5                     share of reads also sent to the other side
    users.new_store_read_fraction=0.1          share of reads served from the NEW store
    users-get.primary=candidate                HTTP route: backend that answers
    users-get.shadow=legacy                    HTTP route: backend shadowed ("none" = off)
    users-get.sample=0.25                      HTTP route: share of requests shadowed

    state = apply(snapshot, "users", "read_from", "dynamodb")   # coerced, not yet validated
    validate("resource", state, stores={"postgres", "dynamodb"}, new_store="dynamodb",
             backends=set())                                    # raises UnsafeFlip
    snapshot = snapshot.with_target("users", state, version=snapshot.version + 1)

Fractions accept ``0.25``, ``"0.25"`` and ``"25%"``. ``sticky_share(key, fraction, salt)`` is
the per-key split behind ``new_store_read_fraction``: deterministic and monotone in the
fraction, so one key always reads from one store while the fraction is unchanged and raising
the fraction only moves more keys over.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from comparators.errors import ShadowProxyError

TargetKind: TypeAlias = Literal["resource", "route"]

RESOURCE_FLAGS: tuple[str, ...] = (
    "read_from",
    "write_to",
    "shadow_reads",
    "new_store_read_fraction",
)
ROUTE_FLAGS: tuple[str, ...] = ("primary", "shadow", "sample")
FRACTION_FLAGS = frozenset({"shadow_reads", "new_store_read_fraction", "sample"})
_NONE_WORDS = frozenset({"", "none", "null", "off", "-"})


class FlagError(ShadowProxyError, ValueError):
    """A flag change that cannot be made: unknown name, bad value, or unsafe."""


class UnknownFlag(FlagError):
    """The target or the flag name does not exist."""


class InvalidFlagValue(FlagError):
    """The value cannot be coerced to the flag's type."""


class UnsafeFlip(FlagError):
    """The change is well-formed but would leave the proxy serving wrong or stale data."""


@dataclass(frozen=True)
class ResourceFlagState:
    """Flags of one store-mode resource. ``new_store_read_fraction`` serves that share of
    reads (sticky per key) from the resource's new store; the rest from ``read_from``."""

    read_from: str
    write_to: tuple[str, ...]
    shadow_reads: float
    new_store_read_fraction: float = 0.0


@dataclass(frozen=True)
class RouteFlagState:
    """Flags of one HTTP route: the answering backend, the shadowed one, the shadowed share."""

    primary: str
    shadow: str | None
    sample: float


FlagState: TypeAlias = ResourceFlagState | RouteFlagState


@dataclass(frozen=True)
class FlagSnapshot:
    """Every target's flags at one ``version`` (a counter the flag store bumps per change).
    The mappings are read-only views."""

    version: int
    resources: Mapping[str, ResourceFlagState] = field(default_factory=dict)
    routes: Mapping[str, RouteFlagState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", MappingProxyType(dict(self.resources)))
        object.__setattr__(self, "routes", MappingProxyType(dict(self.routes)))

    def state(self, target: str, flag: str) -> FlagState:
        """The state holding ``target.flag``; raises UnknownFlag."""
        kind = flag_kind(flag)
        states: Mapping[str, FlagState] = self.resources if kind == "resource" else self.routes
        try:
            return states[target]
        except KeyError:
            known = ", ".join(sorted(states)) or "none"
            raise UnknownFlag(
                f"unknown {kind} {target!r} for flag {flag!r} (known {kind}s: {known})"
            ) from None

    def value(self, target: str, flag: str) -> Any:
        """The JSON-ready value of ``target.flag`` (a list for ``write_to``)."""
        return flag_value(self.state(target, flag), flag)

    def with_target(
        self, target: str, state: FlagState, *, version: int | None = None
    ) -> FlagSnapshot:
        """A copy with ``target`` set to ``state`` (and ``version`` when given)."""
        v = self.version if version is None else version
        if isinstance(state, ResourceFlagState):
            return replace(self, version=v, resources={**self.resources, target: state})
        return replace(self, version=v, routes={**self.routes, target: state})

    def flat(self) -> dict[str, Any]:
        """``{"users.read_from": "postgres", ...}``: what ``flags show`` prints."""
        out: dict[str, Any] = {}
        for target, flag, value in iter_flags(self):
            out[f"{target}.{flag}"] = value
        return out


def iter_flags(snapshot: FlagSnapshot) -> Iterator[tuple[str, str, Any]]:
    """Every ``(target, flag, JSON-ready value)``, resources first, sorted by target."""
    for target in sorted(snapshot.resources):
        for flag in RESOURCE_FLAGS:
            yield target, flag, flag_value(snapshot.resources[target], flag)
    for target in sorted(snapshot.routes):
        for flag in ROUTE_FLAGS:
            yield target, flag, flag_value(snapshot.routes[target], flag)


def changed_flags(old: FlagSnapshot, new: FlagSnapshot) -> list[tuple[str, str, Any, Any]]:
    """``(target, flag, old value, new value)`` for every flag that differs; a target present
    on one side only shows ``None`` on the other."""
    before = {(t, f): v for t, f, v in iter_flags(old)}
    after = {(t, f): v for t, f, v in iter_flags(new)}
    out = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a != b:
            out.append((key[0], key[1], a, b))
    return out


# --- names and values --------------------------------------------------------------------


def flag_kind(flag: str) -> TargetKind:
    if flag in RESOURCE_FLAGS:
        return "resource"
    if flag in ROUTE_FLAGS:
        return "route"
    raise UnknownFlag(
        f"unknown flag {flag!r} (resource flags: {', '.join(RESOURCE_FLAGS)}; "
        f"route flags: {', '.join(ROUTE_FLAGS)})"
    )


def parse_name(name: str) -> tuple[str, str]:
    """``"users.read_from"`` -> ``("users", "read_from")``; the last dot splits."""
    target, dot, flag = name.strip().rpartition(".")
    if not dot or not target or not flag:
        raise UnknownFlag(f"flag name {name!r} must be <target>.<flag>, e.g. users.read_from")
    flag_kind(flag)
    return target, flag


@dataclass(frozen=True)
class Assignment:
    target: str
    flag: str
    raw_value: str


def parse_assignment(target: str | None, text: str) -> Assignment:
    """``parse_assignment("users", "read_from=dynamodb")``, or with ``target=None``
    ``parse_assignment(None, "users.read_from=dynamodb")``. The value is kept raw: ``apply``
    coerces it."""
    name, eq, raw = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise InvalidFlagValue(f"{text!r}: expected <flag>=<value>, e.g. read_from=dynamodb")
    if target is None:
        target, flag = parse_name(name)
    else:
        if name.startswith(f"{target}."):
            name = name[len(target) + 1 :]
        flag = name
        flag_kind(flag)
    return Assignment(target=target, flag=flag, raw_value=raw.strip())


def flag_value(state: FlagState, flag: str) -> Any:
    """The JSON-ready value of one flag of ``state`` (lists, not tuples)."""
    allowed = RESOURCE_FLAGS if isinstance(state, ResourceFlagState) else ROUTE_FLAGS
    if flag not in allowed:
        raise UnknownFlag(f"flag {flag!r} does not apply to {type(state).__name__}")
    value = getattr(state, flag)
    return list(value) if isinstance(value, tuple) else value


def coerce(flag: str, raw: Any) -> Any:
    """The typed value for ``flag`` from what an operator or a JSON body gave."""
    flag_kind(flag)  # raises UnknownFlag
    if flag in FRACTION_FLAGS:
        return _fraction(flag, raw)
    if flag == "write_to":
        return _names(raw)
    if flag == "shadow":
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in _NONE_WORDS):
            return None
        return _name(flag, raw)
    return _name(flag, raw)


def apply(snapshot: FlagSnapshot, target: str, flag: str, raw_value: Any) -> FlagState:
    """The state of ``target`` after setting ``flag`` to ``raw_value`` (coerced). Not
    validated: call ``validate`` before using it."""
    state = snapshot.state(target, flag)
    return replace(state, **{flag: coerce(flag, raw_value)})


def _fraction(flag: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise InvalidFlagValue(f"{flag} = {raw!r}: expected a number between 0 and 1")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if text.endswith("%"):
                return float(text[:-1].strip()) / 100.0
            return float(text)
        except ValueError:
            pass
    raise InvalidFlagValue(f"{flag} = {raw!r}: expected a number between 0 and 1 (or 0%..100%)")


def _name(flag: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidFlagValue(f"{flag} = {raw!r}: expected a name")
    text = raw.strip()
    if any(c in text for c in ",[] \t"):
        raise InvalidFlagValue(f"{flag} = {raw!r}: expected one name")
    return text


def _names(raw: Any) -> tuple[str, ...]:
    items: Iterable[Any]
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = [part.strip().strip("'\"") for part in text.split(",")]
    elif isinstance(raw, list | tuple):
        items = raw
    else:
        raise InvalidFlagValue(f"write_to = {raw!r}: expected a list of store names or 'a,b'")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidFlagValue(f"write_to = {raw!r}: {item!r} is not a store name")
        name = item.strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)


# --- validation --------------------------------------------------------------------------


def validate(
    target_kind: TargetKind,
    state: FlagState,
    *,
    stores: Iterable[str],
    new_store: str | None,
    backends: Iterable[str],
    target: str | None = None,
) -> None:
    """Raise ``UnsafeFlip`` when ``state`` must not be served. ``stores``/``new_store`` are the
    resource's declared stores and its migration target; ``backends`` the HTTP backends a
    route may name. ``target`` only improves the message."""
    where = f"{target}: " if target else ""
    if target_kind == "resource":
        if not isinstance(state, ResourceFlagState):
            raise UnsafeFlip(f"{where}expected resource flags, got {type(state).__name__}")
        _validate_resource(state, set(stores), new_store, where)
    else:
        if not isinstance(state, RouteFlagState):
            raise UnsafeFlip(f"{where}expected route flags, got {type(state).__name__}")
        _validate_route(state, set(backends), where)


def _validate_resource(
    state: ResourceFlagState, stores: set[str], new_store: str | None, where: str
) -> None:
    declared = ", ".join(sorted(stores)) or "none"
    if not state.write_to:
        raise UnsafeFlip(f"{where}write_to is empty: at least one store must receive writes")
    for name in (state.read_from, *state.write_to):
        if name not in stores:
            raise UnsafeFlip(f"{where}unknown store {name!r} (declared stores: {declared})")
    if state.read_from not in state.write_to:
        raise UnsafeFlip(
            f"{where}read_from = {state.read_from!r} is not in write_to = "
            f"{list(state.write_to)}: reading from a store that no longer receives writes "
            "serves stale data (move read_from first, then stop writing to the old store)"
        )
    _check_fraction(where, "shadow_reads", state.shadow_reads)
    _check_fraction(where, "new_store_read_fraction", state.new_store_read_fraction)
    if state.new_store_read_fraction > 0:
        if new_store is None:
            raise UnsafeFlip(
                f"{where}new_store_read_fraction = {state.new_store_read_fraction} but the "
                "resource has no new store to read from"
            )
        if new_store not in state.write_to:
            raise UnsafeFlip(
                f"{where}new_store_read_fraction = {state.new_store_read_fraction} reads from "
                f"the new store {new_store!r}, which is not in write_to = "
                f"{list(state.write_to)}: it would serve stale data"
            )


def _validate_route(state: RouteFlagState, backends: set[str], where: str) -> None:
    known = ", ".join(sorted(backends)) or "none"
    for role in ("primary", "shadow"):
        name = getattr(state, role)
        if name is not None and name not in backends:
            raise UnsafeFlip(f"{where}{role} = {name!r}: unknown backend (known: {known})")
    if state.shadow is not None and state.shadow == state.primary:
        raise UnsafeFlip(
            f"{where}shadow = primary = {state.primary!r}: a backend cannot shadow itself"
        )
    _check_fraction(where, "sample", state.sample)


def _check_fraction(where: str, flag: str, value: float) -> None:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise UnsafeFlip(f"{where}{flag} = {value}: must be a fraction between 0 and 1")


# --- the sticky per-key split ------------------------------------------------------------

_SCALE = float(1 << 64)


def key_point(key: str, salt: str) -> float:
    """A key's fixed point in [0, 1): blake2b of salt and key, uniform for any key set."""
    digest = hashlib.blake2b(
        f"{salt}\0{key}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / _SCALE


def sticky_share(key: str, fraction: float, salt: str) -> bool:
    """True for the keys in the ``fraction`` share: ``key_point(key) < fraction``. Stable per
    key while the fraction holds, monotone as it rises (a key in at 0.2 is in at 0.5).
    ``salt`` (e.g. the resource name) makes splits of different resources independent."""
    if not fraction > 0.0:  # also NaN
        return False
    if fraction >= 1.0:
        return True
    return key_point(key, salt) < fraction


def read_store(state: ResourceFlagState, key: str, *, new_store: str | None, salt: str) -> str:
    """The store that serves a read of ``key``: the new store for the sticky
    ``new_store_read_fraction`` share (only while it receives writes), else ``read_from``."""
    fraction = state.new_store_read_fraction
    if (
        new_store is None
        or fraction <= 0.0
        or new_store == state.read_from
        or new_store not in state.write_to
    ):
        return state.read_from
    return new_store if sticky_share(key, fraction, salt) else state.read_from


# --- serialisation (the flag store's document) -------------------------------------------


def snapshot_to_doc(snapshot: FlagSnapshot) -> dict[str, Any]:
    """JSON-ready ``{"resources": {...}, "routes": {...}}`` (the version is kept apart)."""
    return {
        "resources": {
            name: {flag: flag_value(state, flag) for flag in RESOURCE_FLAGS}
            for name, state in snapshot.resources.items()
        },
        "routes": {
            name: {flag: flag_value(state, flag) for flag in ROUTE_FLAGS}
            for name, state in snapshot.routes.items()
        },
    }


def snapshot_from_doc(version: int, doc: Mapping[str, Any]) -> FlagSnapshot:
    """Inverse of ``snapshot_to_doc``; raises InvalidFlagValue on a malformed document.
    Missing ``new_store_read_fraction`` reads as 0 (documents written before it existed)."""
    try:
        resources = {
            str(name): ResourceFlagState(
                read_from=coerce("read_from", spec["read_from"]),
                write_to=coerce("write_to", spec["write_to"]),
                shadow_reads=coerce("shadow_reads", spec["shadow_reads"]),
                new_store_read_fraction=coerce(
                    "new_store_read_fraction", spec.get("new_store_read_fraction", 0.0)
                ),
            )
            for name, spec in (doc.get("resources") or {}).items()
        }
        routes = {
            str(name): RouteFlagState(
                primary=coerce("primary", spec["primary"]),
                shadow=coerce("shadow", spec.get("shadow")),
                sample=coerce("sample", spec["sample"]),
            )
            for name, spec in (doc.get("routes") or {}).items()
        }
    except (KeyError, TypeError, AttributeError) as e:
        raise InvalidFlagValue(f"malformed flag document: {e!r}") from e
    return FlagSnapshot(version=version, resources=resources, routes=routes)
