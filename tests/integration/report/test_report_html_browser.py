"""The HTML report opened as a user opens it: a file:// URL in headless Chromium (Debian's
``chromium``, installed by scripts/services.sh). The page renders every part (sources,
outcomes, verdicts, the three inline SVG charts, side-by-side examples) with no console
message at all (there is no script; a blocked load or a malformed SVG attribute would log
one), a screenshot is taken, and nothing sensitive is in the DOM."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.integration.report.conftest import (
    assert_no_secret,
    config_for,
    parse,
    plant,
    run_report,
    running_instance,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("report_env")]


class Elements(HTMLParser):
    """Every start tag of a document with its attributes, and the text, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        """Elements ``tag`` whose attributes contain these values (``class_`` for class:
        one of its classes)."""
        found = []
        for name, have in self.tags:
            if name != tag:
                continue
            ok = all(
                value in have.get(key.rstrip("_"), "").split()
                if key == "class_"
                else have.get(key) == value
                for key, value in attrs.items()
            )
            if ok:
                found.append(have)
        return found


def chromium(page: Path, out: Path) -> tuple[str, str, Path]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/services.sh (Debian's chromium)")
    shot = out / "report.png"
    proc = subprocess.run(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", f"--user-data-dir={out / 'profile'}",
            "--window-size=1280,3000", f"--screenshot={shot}", "--enable-logging=stderr",
            "--v=0", "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=90, cwd=out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr, shot


async def test_html_report_in_headless_chromium(tmp_path: Path, prefix: str) -> None:
    sink = {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")}
    page = tmp_path / "report.html"
    async with running_instance(sink) as instance:
        await plant(parse(instance.raw))  # beside the proxy's own records, in its sink
        config = config_for(tmp_path, instance.raw)
        argv = ["-c", config, "--format", "html", "-o", str(page)]
        argv += ["--admin-url", instance.proxy.admin_url]
        assert await asyncio.to_thread(run_report, *argv) == 0
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "an external asset"
    assert "<script" not in html and "<link" not in html

    browser = tmp_path / "browser"
    browser.mkdir()
    dom, log, shot = await asyncio.to_thread(chromium, page, browser)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a page was drawn, not a blank frame

    doc = Elements()
    doc.feed(dom)
    text = " ".join(" ".join(doc.text).split())
    assert "shadowproxy report" in text
    sections = doc.having("section", class_="target")
    assert [s["data-target"] for s in sections] == ["users-get", "orders-get"]
    assert len(doc.having("a")) == 2  # the table of contents
    assert len(doc.having("table", class_="outcomes")) == 2
    assert len(doc.having("table", class_="readiness")) == 2
    assert len(doc.having("p", class_="verdict")) == 2
    assert len(doc.having("svg", class_="chart-timeline")) == 2
    assert len(doc.having("svg", class_="chart-fields")) == 2
    assert len(doc.having("svg", class_="chart-latency")) == 2
    assert len(doc.having("rect", class_="bar-mismatch")) >= 4
    assert len(doc.having("rect", class_="bar-p99")) == 4  # primary and shadow of each route
    assert len(doc.having("div", class_="example")) == 6
    assert len(doc.having("td", class_="shadow")) >= 6
    assert "mismatch_rate" in text and "NOT READY" in text and "95% interval" in text
    assert_no_secret(dom)
    assert_no_secret(html)
