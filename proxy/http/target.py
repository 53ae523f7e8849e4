"""The request target in one normalised form, for routing and for forwarding alike.

A proxy that routes on one reading of a path and forwards another lets a client reach what the
routes do not allow: ``/users/..%2fadmin`` routed as ``/users/{id}`` runs ``/admin`` on a
backend that decodes and normalises. So the target is read once:

- absolute-form (``GET http://host/a?b``) becomes origin-form (``/a?b``);
- dot segments (``.``, ``..``, percent-encoded too, or before a ``;`` parameter) are refused
  with 400 under ``path_policy: reject`` (the default) and removed as RFC 3986 §5.2.4 says
  under ``normalize`` (a ``..;x`` segment is refused under both);
- encoded slashes and backslashes (``%2F``, ``%5C``, a raw ``\\``), control characters (raw
  or encoded, C1 included) and a fragment (``#``, which a request never carries) are refused
  under both: a backend that decodes them sees other segments;
- routing, sampling and logs use the percent-decoded path; the backend gets the same segments
  with the client's percent-encoding, and the query string untouched.

>>> parse_target("/users/42?x=%20", normalize=False)
Target(path='/users/42', raw='/users/42?x=%20')
>>> parse_target("http://example.com/a/./b/../c?q", normalize=True)
Target(path='/a/c', raw='/a/c?q')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from proxy.errors import BadRequest

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DOTS = frozenset({".", ".."})
# Sends a target to the full reading: escapes, a fragment, and a space (refused there).
_SPECIAL = frozenset("%\\# ")


@dataclass(frozen=True, slots=True)
class Target:
    path: str  # percent-decoded: what routes, sample keys and logs see
    raw: str  # path and query as the backend gets them


def parse_target(target: str, *, normalize: bool) -> Target:
    """The one form of ``target`` (a request line's target); BadRequest when ambiguous."""
    # A plain target needs no reading. isprintable() covers the query too: a control
    # character anywhere goes to the full reading, which refuses it.
    if (
        target[:1] == "/"
        and not _SPECIAL.intersection(target)
        and "/." not in target
        and target.isprintable()
    ):
        return Target(target.partition("?")[0], target)
    return _parse(target, normalize)


def _parse(target: str, normalize: bool) -> Target:
    if _CONTROL.search(target) or " " in target:
        raise BadRequest("control character or space in the request target: refused")
    if "#" in target:
        raise BadRequest("a fragment (#) in the request target: refused")
    if target[:1] != "/":
        target = _origin_form(target)
    path, sep, query = target.partition("?")
    raw_segments: list[str] = []
    decoded: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        text = _segment(segment)
        if text.partition(";")[0] in _DOTS:
            if not normalize or text not in _DOTS:
                raise BadRequest(f"dot segment {segment!r} in the request path: refused")
            if text == ".." and raw_segments:
                raw_segments.pop()
                decoded.pop()
            if i == len(segments) - 1:  # "/a/b/.." is "/a/"
                raw_segments.append("")
                decoded.append("")
            continue
        raw_segments.append(segment)
        decoded.append(text)
    raw = "/" + "/".join(raw_segments)
    return Target("/" + "/".join(decoded), raw + sep + query)


def _segment(segment: str) -> str:
    text = unquote(segment, errors="surrogateescape") if "%" in segment else segment
    if "/" in text or "\\" in text:
        raise BadRequest(f"encoded slash or backslash in path segment {segment!r}: refused")
    if _CONTROL.search(text):
        raise BadRequest("control character in the request path: refused")
    return text


def _origin_form(target: str) -> str:
    """``http://host/a?b`` -> ``/a?b``; anything else that is not a path is refused."""
    try:
        parts = urlsplit(target)
    except ValueError as e:
        raise BadRequest("malformed request target") from e
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise BadRequest("the request target must be a path or an absolute http(s) URL")
    rest = target[len(parts.scheme) + 3 + len(parts.netloc) :]
    return rest if rest[:1] == "/" else "/" + rest
