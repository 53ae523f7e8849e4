"""proxy.http.target.parse_target: one reading of the request target, for routing and forwarding."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.http.target import Target, parse_target

POLICIES = [pytest.param(False, id="reject"), pytest.param(True, id="normalize")]


@pytest.mark.parametrize("normalize", POLICIES)
def test_fast_path_is_unchanged(normalize: bool) -> None:
    assert parse_target("/users/42?x=%20", normalize=normalize) == Target(
        "/users/42", "/users/42?x=%20"
    )


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize(
    ("target", "path", "raw"),
    [
        ("/a%20b", "/a b", "/a%20b"),
        ("/users/%34%32", "/users/42", "/users/%34%32"),
        ("/caf%C3%A9?q=%C3%A9", "/café", "/caf%C3%A9?q=%C3%A9"),
        ("/a%3Fb?c", "/a?b", "/a%3Fb?c"),
        ("/", "/", "/"),
        ("//a//b/", "//a//b/", "//a//b/"),
    ],
)
def test_path_is_percent_decoded_and_raw_keeps_the_client_encoding(
    normalize: bool, target: str, path: str, raw: str
) -> None:
    assert parse_target(target, normalize=normalize) == Target(path, raw)


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize(
    "target",
    [
        "/a?x=/../admin",
        "/a?x=%2f..%2fb",
        "/a?next=/./b&y=%5c&z=%00",
        "/a%20b?x=/../%2F",
    ],
)
def test_the_query_is_left_untouched(normalize: bool, target: str) -> None:
    result = parse_target(target, normalize=normalize)
    path_part, _, query = target.partition("?")
    assert result.raw == path_part + "?" + query
    assert result.raw.partition("?")[2] == query
    assert "?" not in result.path


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/users/..%2fstats", "encoded slash"),
        ("/a%2Fb", "encoded slash"),
        ("/a%2fb", "encoded slash"),
        ("/a%5cb", "backslash"),
        ("/a%5Cb", "backslash"),
        ("/a\\b", "backslash"),
        ("/a%0ab", "control character"),
        ("/a%0Db", "control character"),
        ("/a%00", "control character"),
        ("/a%7f", "control character"),
        ("/a\tb", "control character"),
        ("/a\x01b", "control character"),
        ("/..;x/admin", "dot segment"),
        ("/a/..;x", "dot segment"),
        ("/a/%2e%2e;x/b", "dot segment"),
        ("/a/.;x/b", "dot segment"),
    ],
)
def test_ambiguous_paths_are_refused_under_both_policies(
    normalize: bool, target: str, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_target(target, normalize=normalize)


@pytest.mark.parametrize(
    "target",
    [
        "/users/../admin/mode",
        "/a/./b",
        "/a/%2e%2e/b",
        "/a/%2E/b",
        "/a/%2E%2e/b",
        "/a/b/..",
        "/..",
        "/.",
        "/a/..?q=1",
        "http://example.com/a/../b",
    ],
)
def test_dot_segments_are_refused_under_reject(target: str) -> None:
    with pytest.raises(BadRequest, match="dot segment"):
        parse_target(target, normalize=False)


@pytest.mark.parametrize(
    ("target", "path", "raw"),
    [
        ("/users/../admin/mode", "/admin/mode", "/admin/mode"),
        ("/a/b/..", "/a/", "/a/"),
        ("/..", "/", "/"),
        ("/../..", "/", "/"),
        ("/.", "/", "/"),
        ("/a/./b", "/a/b", "/a/b"),
        ("/a/%2e%2e/b", "/b", "/b"),
        ("/a/%2E/b", "/a/b", "/a/b"),
        ("/a/b/../../c", "/c", "/c"),
        ("/a/%20/../b%20c", "/a/b c", "/a/b%20c"),
        ("/a/../b?x=/../y", "/b", "/b?x=/../y"),
        ("http://example.com/a/./b/../c?q", "/a/c", "/a/c?q"),
    ],
)
def test_dot_segments_are_resolved_under_normalize(target: str, path: str, raw: str) -> None:
    assert parse_target(target, normalize=True) == Target(path, raw)


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize(
    ("target", "path", "raw"),
    [
        ("http://example.com/users/1?x=1", "/users/1", "/users/1?x=1"),
        ("https://example.com:8443/users/1", "/users/1", "/users/1"),
        ("HTTP://Example.COM/x", "/x", "/x"),
        ("http://example.com", "/", "/"),
        ("http://example.com/", "/", "/"),
        ("http://h?q=1", "/", "/?q=1"),
        ("http://user@h/a%20b", "/a b", "/a%20b"),
    ],
)
def test_absolute_form_becomes_origin_form(
    normalize: bool, target: str, path: str, raw: str
) -> None:
    assert parse_target(target, normalize=normalize) == Target(path, raw)


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize(
    "target",
    ["ftp://x/y", "ws://x/y", "*", "users/1", "", "http:///x", "http:/x", "example.com/x"],
)
def test_targets_that_are_not_paths_are_refused(normalize: bool, target: str) -> None:
    with pytest.raises(BadRequest, match="request target"):
        parse_target(target, normalize=normalize)


@pytest.mark.parametrize("normalize", POLICIES)
def test_absolute_form_paths_get_the_same_checks(normalize: bool) -> None:
    with pytest.raises(BadRequest, match="encoded slash"):
        parse_target("http://example.com/users/..%2fstats", normalize=normalize)
    with pytest.raises(BadRequest, match="control character"):
        parse_target("http://example.com/a%0ab", normalize=normalize)


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize("target", ["/a b", "/ ?x", "/users/1? q", "/users/1?a\x01", "/x?\x7f"])
def test_a_raw_space_or_control_character_is_refused_anywhere(normalize: bool, target: str) -> None:
    """Plain or escaped, in the path or the query: the same refusal (the fast reading of
    plain targets once let a space, or a control character in the query, through)."""
    with pytest.raises(BadRequest, match="control character or space"):
        parse_target(target, normalize=normalize)


# --- properties --------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # what proxy.http.target calls a control character
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
# A raw space is no part of a request target (refused, see
# test_a_raw_space_or_control_character_is_refused_anywhere): not "plain".
_SEGMENT_ALPHABET = "".join(c for c in _PRINTABLE_ASCII if c not in " /\\%?#")

# Nothing to decode and nothing to resolve: a "." or ".." segment (also before a ";"
# parameter, which is refused) is left out.
plain_segments = st.text(alphabet=_SEGMENT_ALPHABET, max_size=12).filter(
    lambda s: s.partition(";")[0] not in (".", "..")
)
queries = st.none() | st.text(
    alphabet=_PRINTABLE_ASCII.replace(" ", "").replace("#", ""), max_size=20
)


@given(segments=st.lists(plain_segments, min_size=1, max_size=8), query=queries)
def test_plain_paths_are_read_as_they_are(segments: list[str], query: str | None) -> None:
    path = "/" + "/".join(segments)
    target = path if query is None else f"{path}?{query}"
    for normalize in (False, True):
        result = parse_target(target, normalize=normalize)
        assert result.path == path
        assert result.raw == target
        assert result.path == result.raw.partition("?")[0]


# Biased towards the characters that matter here, then anything at all.
_interesting = st.sampled_from(
    ["/", ".", "..", "%", "%2e", "%2E", "%2f", "%5c", "%00", "%0a", "%3b", ";", "?", "\\",
     "\x00", "\n", "\t", "\x7f", "http://", "https://h", "a", "é", "%c3%a9", "%ff", "#"]
)  # fmt: skip
_targets = st.one_of(
    st.text(),
    st.lists(_interesting | st.text(max_size=3), max_size=12).map("".join),
    st.lists(_interesting | st.text(max_size=3), max_size=12).map(lambda p: "/" + "".join(p)),
)


@given(target=_targets)
def test_any_target_is_refused_or_unambiguous(target: str) -> None:
    for normalize in (False, True):
        try:
            result = parse_target(target, normalize=normalize)
        except BadRequest:
            continue
        assert isinstance(result, Target)
        assert result.path.startswith("/")
        assert result.raw.startswith("/")
        assert ".." not in result.path.split("/")
        assert "." not in result.path.split("/")
        assert not _CONTROL.search(result.path)
        assert not _CONTROL.search(result.raw.partition("?")[0])
        # the segments the backend gets are those that were routed
        assert len(result.raw.partition("?")[0].split("/")) == len(result.path.split("/"))


@pytest.mark.parametrize("normalize", POLICIES)
@pytest.mark.parametrize(
    "target", ["\x01http://h/x", " http://h/x", "http://ex\tample.com/a/b", "http://\t\tab/x"]
)
def test_control_characters_around_an_absolute_url_are_refused(
    normalize: bool, target: str
) -> None:
    with pytest.raises(BadRequest):
        parse_target(target, normalize=normalize)
