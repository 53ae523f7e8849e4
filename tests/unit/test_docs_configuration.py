"""docs/configuration.md documents every key ``proxy.settings.Settings`` accepts, and no other.

The convention the document follows and this test enforces:

- A key is documented by a row of a Markdown key table (a table whose header's first cell
  is ``key``) whose FIRST cell is the key's full dotted path in backticks and nothing else:
  ``| `listen.header_timeout_seconds` | ... |``. Other tables are prose.
- Paths are built as the YAML nests: a dict of models gets a placeholder segment in angle
  brackets (any name: ``backends.<name>.url``, ``resources.<name>.fields.<field>.type``), a
  list or tuple of models gets ``[]`` (``routes[].compare.ignore``).
- Every leaf key (a value that is not itself a section of keys) must be documented; a section
  (``cache``, ``resources.<name>.guardrail``) may have its own row too.
- A key of one member of a discriminated union (``backends.<name>`` by ``kind``, ``sink`` by
  ``kind``) must be documented under a heading that names that member in backticks, e.g.
  ``### `kind: http` ``; the heading applies to the rows below it until the next heading. So
  ``backends.<name>.timeout_seconds`` needs one row under each of ``kind: http``,
  ``kind: postgres`` and ``kind: dynamodb``, and a key moved from one kind to another fails.

The test fails naming every key the document misses and every documented key the model no
longer has (or has for another kind), so the document cannot rot either way.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from proxy.settings import Settings, settings_from_mapping

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

_ROW_KEY = re.compile(r"^\|\s*`([^`]+)`\s*\|")
_HEADING = re.compile(r"^#{1,6}\s")
_SEPARATOR = re.compile(r"^\|[\s:|-]*$")
_MEMBER = re.compile(r"`(\w+): ([\w.-]+)`")
_PLACEHOLDER = re.compile(r"<[^<>.\[\]]+>")
_UNIONS = (Union, types.UnionType)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^()\s]*)\)")


@dataclass(frozen=True, order=True)
class Key:
    path: str
    member: str | None = None
    """``kind: http`` for a key of one member of a discriminated union, else None."""

    def __str__(self) -> str:
        return self.path if self.member is None else f"{self.path} (under `{self.member}`)"


# -- the model ---------------------------------------------------------------------------


def model_keys(
    model: type[BaseModel], prefix: str = "", member: str | None = None
) -> tuple[set[Key], set[Key]]:
    """(leaf keys, section keys) of ``model``, recursively."""
    leaves: set[Key] = set()
    sections: set[Key] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        is_leaf, children = _walk(info.annotation, path, member, info.discriminator)
        (leaves if is_leaf else sections).add(Key(path, member))
        leaves |= children[0]
        sections |= children[1]
    return leaves, sections


def _walk(
    tp: Any, path: str, member: str | None, discriminator: Any = None
) -> tuple[bool, tuple[set[Key], set[Key]]]:
    """Whether a value of type ``tp`` at ``path`` can be a plain value (a leaf), and the keys
    below it when it holds models."""
    leaves: set[Key] = set()
    sections: set[Key] = set()
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *meta = get_args(tp)
        found = next((m.discriminator for m in meta if isinstance(m, FieldInfo)), None)
        return _walk(inner, path, member, found or discriminator)
    if origin in _UNIONS:
        options = [a for a in get_args(tp) if a is not type(None)]
        models = [a for a in options if _is_model(a)]
        plain = len(options) > len(models)
        for option in options:
            if _is_model(option):
                tag = _member(option, discriminator) if len(models) > 1 else None
                sub = model_keys(option, f"{path}.", tag or member)
            else:
                _, sub = _walk(option, path, member)
            leaves |= sub[0]
            sections |= sub[1]
        return plain or not models, (leaves, sections)
    if _is_model(tp):
        return False, model_keys(tp, f"{path}.", member)
    if origin in (dict, Mapping):
        args = get_args(tp)
        if len(args) == 2 and _holds_model(args[1]):
            is_leaf, (leaves, sections) = _walk(args[1], f"{path}.<name>", member)
            if not is_leaf:
                sections.add(Key(f"{path}.<name>", member))
            return is_leaf, (leaves, sections)
        return True, (leaves, sections)
    if origin in (list, tuple, set, frozenset):
        items = [a for a in get_args(tp) if a is not Ellipsis]
        if items and all(_holds_model(a) for a in items):
            for arg in items:
                _, sub = _walk(arg, f"{path}[]", member)
                leaves |= sub[0]
                sections |= sub[1]
            sections.add(Key(f"{path}[]", member))
            return False, (leaves, sections)
    return True, (leaves, sections)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _holds_model(tp: Any) -> bool:
    if _is_model(tp):
        return True
    return any(_holds_model(a) for a in get_args(tp))


def _member(model: type[BaseModel], discriminator: Any) -> str:
    """``kind: http``: the discriminator field and this member's literal value."""
    names = [discriminator] if isinstance(discriminator, str) else list(model.model_fields)
    for name in names:
        info = model.model_fields.get(name)
        if info is not None and get_origin(info.annotation) is Literal:
            values = get_args(info.annotation)
            if len(values) == 1:
                return f"{name}: {values[0]}"
    raise AssertionError(f"{model.__name__}: union member without a literal discriminator")


# -- the document ------------------------------------------------------------------------


def documented_keys(text: str) -> list[Key]:
    """Every key table row's key, with the union member its heading names (if any)."""
    keys: list[Key] = []
    member: str | None = None
    table: bool | None = None  # None: not in a table; else whether it is a key table
    for line in text.splitlines():
        if not line.startswith("|"):
            table = None
            if _HEADING.match(line):
                found = _MEMBER.search(line)
                member = f"{found[1]}: {found[2]}" if found else None
            continue
        if table is None:  # the header row
            table = line.strip("| ").split("|")[0].strip() == "key"
            continue
        if not table or _SEPARATOR.match(line):
            continue
        row = _ROW_KEY.match(line)
        # A row whose first cell is not one key in backticks is reported as it stands.
        cell = line.strip("| ").split("|")[0].strip()
        keys.append(Key(_normal(row[1]) if row else f"unreadable key cell {cell!r}", member))
    return keys


def _normal(path: str) -> str:
    return _PLACEHOLDER.sub("<name>", path.strip())


def check(text: str, model: type[BaseModel]) -> tuple[list[str], list[str]]:
    """(keys the document misses, documented keys the model does not have)."""
    leaves, sections = model_keys(model)
    known = leaves | sections
    in_unions: dict[str, set[str]] = {k.path: set() for k in known if k.member is not None}
    for k in known:
        if k.member is not None:
            in_unions[k.path].add(k.member)
    plain = {k.path for k in known if k.member is None}
    found = documented_keys(text)
    seen: set[Key] = set()
    extra: list[str] = []
    for key in found:
        if key.path in plain:
            seen.add(Key(key.path))
        elif key.member is not None and key.member in in_unions.get(key.path, ()):
            seen.add(key)
        elif key.path in in_unions:
            kinds = ", ".join(f"`{m}`" for m in sorted(in_unions[key.path]))
            where = f"`{key.member}`" if key.member else "no kind heading"
            extra.append(f"{key.path} (documented under {where}; the model has it for {kinds})")
        else:
            extra.append(str(key))
    missing = sorted(str(k) for k in leaves - seen)
    return missing, sorted(set(extra))


def report(missing: list[str], extra: list[str]) -> str:
    lines = []
    if missing:
        lines.append(f"{len(missing)} key(s) of proxy.settings.Settings not in {DOC.name}:")
        lines += [f"  - {k}" for k in missing]
    if extra:
        lines.append(f"{len(extra)} key(s) in {DOC.name} that the settings model does not have:")
        lines += [f"  - {k}" for k in extra]
    return "\n".join(lines)


# -- the tests ---------------------------------------------------------------------------


def test_every_settings_key_is_documented_and_every_documented_key_exists() -> None:
    missing, extra = check(DOC.read_text(encoding="utf-8"), Settings)
    assert not missing and not extra, "\n" + report(missing, extra)


def test_the_walk_sees_nested_models_unions_dicts_and_lists() -> None:
    leaves, sections = model_keys(Settings)
    paths = {k.path for k in leaves}
    assert Key("listen.header_timeout_seconds") in leaves
    assert Key("backends.<name>.tls_ca_file", "kind: http") in leaves
    assert Key("backends.<name>.dsn", "kind: postgres") in leaves
    assert Key("backends.<name>.kind", "kind: dynamodb") in leaves
    assert Key("sink.stream", "kind: redis") in leaves
    assert "resources.<name>.fields.<name>.type" in paths
    assert "routes[].compare.ignore" in paths
    assert "cache.url" in paths  # Optional[CacheConfig]
    assert "readiness.required_operations" in paths  # Optional[tuple[str, ...]]
    assert Key("cache") in sections and Key("routes") in sections
    assert Key("resources.<name>.guardrail") in sections
    assert not {k.path for k in sections} & paths


def test_the_check_names_missing_extra_and_misplaced_keys() -> None:
    class Http(BaseModel):
        kind: Literal["http"]
        url: str

    class Pg(BaseModel):
        kind: Literal["postgres"]
        dsn: str = ""

    class Item(BaseModel):
        a: int = 0

    class Section(BaseModel):
        backends: dict[str, Annotated[Http | Pg, FieldInfo(discriminator="kind")]] = {}
        items: tuple[Item, ...] = ()
        maybe: Item | None = None

    text = "\n".join(
        [
            "# Section",
            "| key | meaning |",
            "|---|---|",
            "| `items[].a` | int |",
            "| `maybe` | section |",
            "## `kind: http`",
            "| key | meaning |",
            "|---|---|",
            "| `backends.<backend>.kind` | |",
            "| `backends.<backend>.dsn` | moved? |",
            "## `kind: postgres`",
            "| key | meaning |",
            "|---|---|",
            "| `backends.<backend>.kind` | |",
            "| `backends.<backend>.dsn` | |",
            "## Other",
            "| key | meaning |",
            "|---|---|",
            "| `gone.key` | |",
            "| `a`, `b` | two keys in one cell |",
            "",
            "| variable | meaning |",
            "|---|---|",
            "| `maybe.a` | a prose table does not document keys |",
            "text mentioning `backends.<name>.url` does not document it either",
        ]
    )
    missing, extra = check(text, Section)
    assert missing == ["backends.<name>.url (under `kind: http`)", "maybe.a"]
    assert extra == [
        "backends.<name>.dsn (documented under `kind: http`; the model has it for "
        "`kind: postgres`)",
        "gone.key",
        "unreadable key cell '`a`, `b`'",
    ]
    assert "not in configuration.md" in report(missing, extra)


def test_the_example_is_a_valid_config() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```yaml\n(.*?)^```", example, re.MULTILINE | re.DOTALL)
    assert block is not None, "the Example section has no yaml block"
    settings = settings_from_mapping(yaml.safe_load(block[1]), source="example", env={})
    assert settings.routes and settings.resources and settings.backends


def link_problems(text: str, base: Path) -> list[str]:
    """URLs in the prose, links out of the repository, to missing files or headings."""
    prose = _CODE.sub("", _FENCE.sub("", text))
    problems = [f"URL in the prose: {m}" for m in re.findall(r"\S*://\S*", prose)]
    anchors = _anchors(text)
    for target in _LINK.findall(prose):
        path, _, anchor = target.partition("#")
        if ":" in path:
            problems.append(f"link out of the repository: {target}")
        elif path and not (base / path).exists():
            problems.append(f"link to a missing file: {target}")
        elif not path and anchor not in anchors:
            problems.append(f"link to a missing heading: {target}")
    return problems


def test_links_stay_inside_the_repository() -> None:
    assert link_problems(DOC.read_text(encoding="utf-8"), DOC.parent) == []


def test_link_problems_are_named() -> None:
    text = "# Top\n[a](#top) [b](#nowhere) [c](configuration.md) [d](missing.md) [e](mailto:x)\n"
    text += "see http://x\n"
    assert link_problems(text, DOC.parent) == [
        "URL in the prose: http://x",
        "link to a missing heading: #nowhere",
        "link to a missing file: missing.md",
        "link out of the repository: mailto:x",
    ]


def _anchors(text: str) -> set[str]:
    """Heading anchors as GitHub makes them: lower case, punctuation dropped, spaces to -."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", text).splitlines():
        if not _HEADING.match(line):
            continue
        title = line.lstrip("#").strip().replace("`", "").lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out
