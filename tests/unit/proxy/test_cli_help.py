"""The command line explains itself: every option and positional has help (with its default),
every command has an example that parses, ``--version`` prints the one version, the exit codes
in ``--help`` are those of docs/cli.md, and ``demo`` without its extra says how to install it."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import proxy
import proxy.demo
from proxy import cli

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "cli.md"
# An example line: optional VAR=value assignments, then the command.
EXAMPLE = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*shadowproxy(?:\s|$)")
COMMANDS = {
    "serve",
    "check-config",
    "init-stores",
    "reconcile",
    "flags",
    "flags show",
    "flags set",
    "flags history",
    "readiness",
    "replay",
    "export-corpus",
    "report",
    "demo",
}


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


TREE = list(walk(cli.build_parser()))
IDS = [" ".join(path) or "(top)" for path, _ in TREE]


def examples(epilog: str) -> list[list[str]]:
    """The example commands in an epilog, as argv without the program name."""
    found = []
    for line in epilog.splitlines():
        if EXAMPLE.match(line.strip()):
            words = shlex.split(line, comments=True)
            while words[0] != "shadowproxy":
                words.pop(0)  # VAR=value
            found.append(words[1:])
    return found


def test_the_tree_holds_every_command() -> None:
    assert {" ".join(path) for path, _ in TREE} >= COMMANDS


@pytest.mark.parametrize(("path", "parser"), TREE, ids=IDS)
def test_every_argument_says_what_it_does_and_its_default(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{parser.prog}: {name} has no help"
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help and choice.help.strip(), f"{parser.prog} {choice.dest}"
        elif (
            action.option_strings
            and not action.required
            and not isinstance(action, argparse._VersionAction)
        ):
            assert "default" in action.help, f"{parser.prog}: {name} does not name its default"
        elif action.required and action.option_strings:
            assert "required" in action.help, f"{parser.prog}: {name} does not say required"
    assert parser.description and parser.description.strip(), parser.prog
    assert isinstance(parser.formatter_class, type)
    assert issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    parser.format_help()  # every %(default)s expands


@pytest.mark.parametrize(("path", "parser"), TREE, ids=IDS)
def test_every_example_parses_as_its_command(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    assert parser.epilog, f"{parser.prog} has no epilog"
    assert any(line.strip().startswith("shadowproxy ") for line in parser.epilog.splitlines())
    found = examples(parser.epilog)
    assert found, f"{parser.prog}: no example"
    for argv in found:
        assert tuple(argv[: len(path)]) == path, f"{parser.prog}: example {argv} is another's"
        try:
            args = cli.build_parser().parse_args(argv)
        except SystemExit as e:  # argparse has printed why
            pytest.fail(f"{parser.prog}: example {shlex.join(argv)} does not parse ({e})")
        config = getattr(args, "config", None)
        if config is not None:
            assert (ROOT / config).is_file(), f"example uses {config}: not a shipped config"


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"shadowproxy {proxy.__version__}\n"


def _epilog_codes() -> dict[int, str]:
    epilog = cli.build_parser().epilog or ""
    section = epilog.split("exit codes:\n", 1)[1]
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^  (\d+)\s+(.+)$", section, re.M)}


def _doc_section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_exit_codes_in_help_match_the_docs() -> None:
    section = _doc_section("Exit codes")
    rows = re.finditer(r"^\|\s*`(\d+)`\s*\|\s*(.+?)\s*\|\s*$", section, re.M)
    documented = {int(m[1]): m[2] for m in rows}
    assert _epilog_codes() == documented == dict(cli.EXIT_CODES)
    assert " ".join(cli.WORKERS_EXIT.split()) in " ".join(section.split())


def test_the_docs_cover_every_command_and_link_only_inside_the_repository() -> None:
    text = DOC.read_text(encoding="utf-8")
    for path, _ in TREE:
        if path:
            assert f"shadowproxy {' '.join(path)}" in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I), f"external link {target}"
        file = target.split("#", 1)[0]
        assert not file or (DOC.parent / file).exists(), f"broken link {target}"


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """run_demo sets tokens in the environment and configures logging for a terminal: keep
    both as they were."""
    monkeypatch.setenv("SHADOWPROXY_ADMIN_TOKEN", "demo-token")
    monkeypatch.setenv("SHADOWPROXY_REDACTION_KEY", "0" * 32)
    names = ("", "shadowproxy", "aiohttp.server", "aiohttp.access")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    yield monkeypatch
    for n, (handlers, level) in saved.items():
        logging.getLogger(n).handlers[:] = handlers
        logging.getLogger(n).setLevel(level)


# The demo's modules that import moto or pgserver: unloaded, so that they import them again.
IMPORTERS = ("proxy.store.embedded", "proxy.demo.store_story")


def hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make ``module`` unimportable, as when the demo extra is not installed."""
    for name in list(sys.modules):
        if name.startswith(module + ".") or name in IMPORTERS:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


def test_demo_without_moto_names_the_install_command(
    demo_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(demo_env, "moto")
    assert cli.main(["demo", "--duration", "0", "--users", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("shadowproxy: demo needs moto")
    assert "pip install 'shadowproxy[demo]'" in err


def test_demo_without_postgres_or_pgserver_names_the_install_command(
    demo_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(demo_env, "pgserver")
    demo_env.setenv("SHADOWPROXY_DEMO_PG_DSN", "postgresql://postgres@127.0.0.1:1/postgres")
    assert cli.main(["demo", "--duration", "0", "--users", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("shadowproxy: demo: no PostgreSQL answers")
    assert "pip install 'shadowproxy[demo]'" in err


def test_demo_lets_other_import_errors_through(demo_env: pytest.MonkeyPatch) -> None:
    async def broken(**_: object) -> int:
        raise ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")

    demo_env.setattr(proxy.demo, "run_demo", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["demo", "--story", "http"])
