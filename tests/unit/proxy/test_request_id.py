"""Request ids: the client's when given, else 128 random bits that differ in every worker."""

from __future__ import annotations

import os
import re

from aiohttp.test_utils import make_mocked_request

from proxy.request import request_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_the_clients_id_is_kept() -> None:
    request = make_mocked_request("GET", "/", headers={"X-Request-ID": "abc-1"})
    assert request_id(request) == "abc-1"


def test_a_fresh_id_is_32_hex_digits_and_new_each_time() -> None:
    request = make_mocked_request("GET", "/")
    ids = {request_id(request) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(HEX32.fullmatch(i) for i in ids)


def test_a_forked_worker_draws_other_ids_than_its_parent() -> None:
    """A program that forks after import (a pre-fork server embedding the app) must not copy
    the generator's state into its children."""
    request = make_mocked_request("GET", "/")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave without running pytest's teardown
        try:
            os.write(write, " ".join(request_id(request) for _ in range(8)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent = {request_id(request) for _ in range(8)}
    assert len(child) == 8
    assert not child & parent
