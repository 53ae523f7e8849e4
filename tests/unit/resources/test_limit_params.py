"""A ``limit`` query parameter is ASCII digits: ``str.isdigit`` also takes superscripts and
other digits ``int`` refuses, which were 500s (``?limit=²``), on both ports."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from proxy.control.admin import parse_limit
from proxy.control.triage_data import parse_filters
from proxy.errors import BadRequest
from proxy.resources.api import _limit

NOT_ASCII_DIGITS = ["²", "1²", "\u0661", "\u07c1"]  # superscripts, Arabic-Indic and NKo one


@pytest.mark.parametrize("raw", NOT_ASCII_DIGITS)
def test_the_resource_api_refuses_them_with_400(raw: str) -> None:
    with pytest.raises(BadRequest, match="limit must be an integer"):
        _limit(raw, 1000)


@pytest.mark.parametrize("raw", NOT_ASCII_DIGITS)
def test_the_admin_api_refuses_them_with_400(raw: str) -> None:
    with pytest.raises(BadRequest, match="limit must be an integer"):
        parse_limit(raw)
    with pytest.raises(BadRequest, match="limit must be an integer"):
        parse_filters(MultiDict(limit=raw), [])


def test_ascii_digits_still_pass() -> None:
    assert _limit("7", 1000) == 7
    assert parse_limit("1000") == 1000
    assert parse_filters(MultiDict(limit="20"), []).limit == 20
