"""Request helpers the simulators share: JSON bodies, HTTP Basic credentials, links back."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from fastapi import Request


class InvalidBody(ValueError):
    """The request body is not the JSON the simulator expects."""


async def json_body(request: Request) -> Any:
    """The decoded JSON body; raises `InvalidBody` for an empty or malformed one."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidBody("empty body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidBody("body is not valid JSON") from exc


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def same(given: str, expected: str) -> bool:
    """Constant-time comparison, as a real identity provider would do."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def base_url(request: Request) -> str:
    """Scheme, host and port the client used, so links point back at this sandbox."""
    return str(request.base_url).rstrip("/")
