"""The project's docs stand on their own: every link in README.md and docs/ points at a file
of this repository that exists, never outside it (a clone has nothing else)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return LINK.findall(text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_stays_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            bad.append(f"{target}: points outside the repository")
            continue
        file = target.split("#", 1)[0]
        if not file:
            continue  # an anchor on the same page
        resolved = (doc.parent / file).resolve()
        if not resolved.is_relative_to(ROOT):
            bad.append(f"{target}: leaves the repository")
        elif not resolved.exists():
            bad.append(f"{target}: no such file")
    assert bad == []


def test_the_docs_are_found() -> None:
    assert len(DOCS) >= 5
    assert links(ROOT / "README.md")


def test_a_link_outside_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("[design](../shared/DESIGN.md) [web](https://example.com)\n")
    assert links(doc) == ["../shared/DESIGN.md", "https://example.com"]
