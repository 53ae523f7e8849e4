"""--since durations and the record times the window filters on."""

from __future__ import annotations

import pytest

from proxy.report.model import ReportError
from proxy.report.tally import bucket_seconds
from proxy.report.window import parse_duration, record_time, window


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600),
     ("1.5h", 5400), (" 24H ", 86400)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("24y", "--since '24y': unknown unit 'y' (known: s, m, h, d, w)"),
        ("24", "--since '24': expected a number and a unit (s, m, h, d, w), e.g. 24h"),
        ("h", "--since 'h': expected a number and a unit (s, m, h, d, w), e.g. 24h"),
        ("0h", "--since '0h': must be more than 0"),
        ("-1h", "--since '-1h': expected a number and a unit (s, m, h, d, w), e.g. 24h"),
    ],
)
def test_bad_durations_name_the_units(text: str, message: str) -> None:
    with pytest.raises(ReportError) as e:
        parse_duration(text)
    assert str(e.value) == message


def test_record_times() -> None:
    assert record_time("1970-01-01T00:01:00Z") == 60
    assert record_time("1970-01-01T00:01:00") == 60  # naive: UTC
    assert record_time("1970-01-01T01:01:00+01:00") == 60
    assert record_time("yesterday") is None
    assert record_time(60) is None


def test_buckets_are_at_most_48_of_a_round_width() -> None:
    assert bucket_seconds(window("1h", now=1e9)) == 120
    assert bucket_seconds(window("24h", now=1e9)) == 1800
    assert bucket_seconds(window("7d", now=1e9)) == 21600
    assert bucket_seconds(window("30d", now=1e9)) == 86400
    assert bucket_seconds(window("1000w", now=1e9)) == 604800
