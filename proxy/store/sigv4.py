"""AWS Signature Version 4 for DynamoDB's ``POST /`` requests, and the credentials it signs
with — done here rather than by botocore because botocore's signer, driven by its event
hooks, cost more CPU per call than the rest of a shadow read (see ``proxy.store.dynamo_http``).

The tests hold it to botocore's ``SigV4Auth``: same canonical request, same signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

SERVICE = "dynamodb"
TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __post_init__(self) -> None:
        for value in (self.access_key_id, self.secret_access_key, self.session_token or ""):
            if "\r" in value or "\n" in value:
                raise ValueError("AWS credentials must not contain line breaks")


async def freeze(credentials: Any) -> Credentials:
    """aiobotocore credentials -> ours (refreshing them first when they are due)."""
    frozen = await credentials.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)


_last_stamp: tuple[int, str] = (-1, "")


def amz_date(now: float) -> str:
    """SigV4's timestamp, ``20240101T120000Z``, for a Unix time (formatted once a second)."""
    global _last_stamp
    second = int(now)
    if _last_stamp[0] != second:
        _last_stamp = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
    return _last_stamp[1]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.digest(key, text.encode(), "sha256")


class SigV4Signer:
    """SigV4 for DynamoDB's ``POST /`` requests, in one region.

    The signing key (four chained HMACs) depends only on the secret, the date and the region,
    so it is derived once per day and secret and cached: a request then costs two SHA-256s
    and two HMACs. The signed headers are content-type, host, x-amz-date, x-amz-target and,
    with temporary credentials, x-amz-security-token; the payload hash covers the body."""

    def __init__(self, region: str, service: str = SERVICE) -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}

    def signing_key(self, secret: str, date: str) -> bytes:
        key = self._keys.get((secret, date))
        if key is None:
            key = _hmac(("AWS4" + secret).encode(), date)
            for part in (self.region, self.service, "aws4_request"):
                key = _hmac(key, part)
            if len(self._keys) >= 4:  # yesterday's key, or a rotated secret's: not needed
                self._keys.clear()
            self._keys[(secret, date)] = key
        return key

    def authorization(
        self, credentials: Credentials, timestamp: str, host: str, target: str, body: bytes
    ) -> str:
        """The ``Authorization`` header for one request; ``timestamp`` is its X-Amz-Date."""
        date = timestamp[:8]
        headers = [("content-type", CONTENT_TYPE), ("host", host), ("x-amz-date", timestamp)]
        if credentials.session_token:
            headers.append(("x-amz-security-token", credentials.session_token))
        headers.append(("x-amz-target", target))  # the names stay sorted, as SigV4 wants
        signed = ";".join(name for name, _ in headers)
        canonical = "POST\n/\n\n{}\n{}\n{}".format(
            "".join(f"{name}:{' '.join(value.split())}\n" for name, value in headers),
            signed,
            hashlib.sha256(body).hexdigest(),
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(
            (ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        key = self.signing_key(credentials.secret_access_key, date)
        signature = hmac.digest(key, to_sign.encode(), "sha256").hex()  # one-shot: no HMAC object
        return (
            f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
