"""The suite's own options: a bad value is a usage error naming the option and the value
(before anything starts), and against a deployment a scenario whose relays or commands were
not given is deselected with the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults.targets import ROOT

DEPLOYMENT = ["--proxy-url", "http://127.0.0.1:1", "--admin-url", "http://127.0.0.1:2"]


def run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/faults", "-p", "no:cacheprovider", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*DEPLOYMENT, "--shadow-upstream", "not-a-host-port"],
            "--shadow-upstream: 'not-a-host-port' is not HOST:PORT",
        ),
        ([*DEPLOYMENT, "--redis-upstream", "redis:99999"], "'redis:99999' is not HOST:PORT"),
        ([*DEPLOYMENT, "--primary-relay-port", "0"], "--primary-relay-port 0: not a port"),
        (["--proxy-url", "ftp://x", "--admin-url", "http://a:1"], "--proxy-url 'ftp://x'"),
        (["--shadow-upstream", "127.0.0.1:8002"], "needs --proxy-url and --admin-url"),
        (["--proxy-url", "http://a:1"], "give both --proxy-url and --admin-url"),
        ([*DEPLOYMENT, "--request-path", "users/1"], "--request-path 'users/1'"),
    ],
)
def test_a_bad_option_value_is_a_usage_error(args: list[str], message: str) -> None:
    done = run_suite(*args, "--collect-only", "-q")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert message in done.stderr, done.stderr


def test_against_a_deployment_scenarios_without_their_relays_are_deselected() -> None:
    done = run_suite(*DEPLOYMENT, "--shadow-upstream", "127.0.0.1:8002", "--collect-only", "-q")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "fault suite: deselected scenarios" in out, out
    assert "test_redis_down_and_back: needs --redis-upstream" in out, out
    assert "needs --kill-command and --start-command" in out, out
    # The option checks themselves need nothing and always run.
    assert "test_options.py::test_a_bad_option_value_is_a_usage_error" in out, out
