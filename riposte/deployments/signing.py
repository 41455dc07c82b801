"""HMAC-SHA256 request signatures for the intake: `X-Riposte-Signature: t=<unix>,v1=<hex>`.

The signed text is ``f"{t}.{body}"``, so a signature is bound to one body and one moment; the
intake refuses signatures older or newer than the tolerance, which limits replays. A header may
carry several ``v1`` values (one per key) so that a sender can sign with the old and the new key
while a rotation is under way.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Riposte-Signature"
TOLERANCE_SECONDS = 300


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, keys: list[bytes], timestamp: int | None = None) -> str:
    """The header value for ``body`` signed with every key in ``keys``."""
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={signature(k, t, body)}" for k in keys)])


def plausible(header: str, *, now: float | None = None, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """Whether ``header`` is worth reading a body for: well formed, with a fresh timestamp and
    at least one signature of the right shape. Says nothing of whether it verifies."""
    timestamp: int | None = None
    signatures = 0
    for part in header.split(",")[:16]:
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and len(value.strip()) == 64:
            signatures += 1
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    return abs(current - timestamp) <= tolerance


def verify(
    header: str,
    body: bytes,
    keys: list[bytes],
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """True when some ``v1`` of the header is a valid signature of ``body`` by some key and the
    timestamp is within ``tolerance`` seconds of now. Every comparison runs, so timing tells
    nothing about which part failed."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        # isascii: "²".isdigit() is True, but int("²") fails.
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates or not keys:
        return False
    current = time.time() if now is None else now
    fresh = abs(current - timestamp) <= tolerance
    matched = False
    for key in keys:
        expected = signature(key, timestamp, body)
        for candidate in candidates[:8]:
            matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    return matched and fresh
