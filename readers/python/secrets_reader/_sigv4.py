"""AWS Signature Version 4 for one request, with hmac and hashlib only.

Pinned to AWS's published test vector ``post-vanilla``
(readers/conformance/sigv4.json) by tests/test_sigv4.py. Enough for Secrets
Manager's JSON API: a ``POST /`` without a query string, every given header
signed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Signed:
    canonical_request: str
    string_to_sign: str
    #: The headers to add: ``x-amz-date``, ``authorization`` and, with a
    #: session token, ``x-amz-security-token``.
    headers: dict[str, str]


def amz_date(when: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` of ``when`` (default: now)."""
    when = when or datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _hmac(key: bytes, data: str) -> bytes:
    return hmac.new(key, data.encode("utf-8"), hashlib.sha256).digest()


def sign(
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    amz_date: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    session_token: str | None = None,
) -> Signed:
    """Signs a request whose ``headers`` (lower-case names, ``host`` among them) are all signed."""
    added = {"x-amz-date": amz_date}
    if session_token is not None:
        added["x-amz-security-token"] = session_token
    every = {k.lower(): re.sub(r"\s+", " ", v.strip()) for k, v in {**headers, **added}.items()}
    names = sorted(every)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{n}:{every[n]}\n" for n in names),
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    key = _hmac(f"AWS4{secret_key}".encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    key = _hmac(key, "aws4_request")
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return Signed(canonical_request, string_to_sign, {**added, "authorization": authorization})
