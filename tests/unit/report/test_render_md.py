"""Markdown that pastes cleanly: a value can neither break a table nor become markup."""

from __future__ import annotations

from proxy.report.render_md import code, sparkline, table, text


def test_code_spans_keep_any_value_literal_and_inside_its_cell() -> None:
    assert code("a|b") == "`a\\|b`"
    assert code("x `y` z") == "``x `y` z``"
    assert code("`edge`") == "`` `edge` ``"
    assert code("two\nlines") == "`two lines`"
    assert code("") == ""


def test_text_escapes_markup() -> None:
    assert text("<img src=x> *bold* [link](u) a|b") == (
        "\\<img src=x\\> \\*bold\\* \\[link\\](u) a\\|b"
    )


def test_tables_align_numbers_right() -> None:
    assert table(["a", "n"], [["x", "1"]], right=1) == ["| a | n |", "| --- | ---: |", "| x | 1 |"]


def test_sparkline() -> None:
    assert sparkline([0, 1, 8, 4]) == "▁▂█▅"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([]) == ""
