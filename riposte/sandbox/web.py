"""Request helpers the simulators share: JSON bodies, integer query options, HTTP Basic
credentials, links back."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
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


async def json_object(
    request: Request, refuse: Callable[[str], Exception], not_json: str, not_object: str
) -> dict[str, Any]:
    """The JSON object body, else ``refuse(message)`` with the API's own words: ``not_json`` for
    a body that is not JSON (``{reason}`` in it says why), ``not_object`` for another value."""
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise refuse(not_json.format(reason=exc)) from None
    if not isinstance(body, dict):
        raise refuse(not_object)
    return body


def int_option(
    request: Request, name: str, default: int, refuse: Callable[[str], Exception]
) -> int:
    """A query option that must be a whole number >= 0, else ``refuse(message)``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise refuse(f"Invalid value '{raw}' for query option {name}.") from None
    if value < 0:
        raise refuse(f"Invalid value '{raw}' for query option {name}: must be >= 0.")
    return value


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


def has_basic_credentials(request: Request, user: str, password: str) -> bool:
    """Whether the request carries HTTP Basic ``user`` and ``password``."""
    credentials = basic_credentials(request)
    return credentials is not None and same(credentials[0], user) and same(credentials[1], password)


def same(given: str, expected: str) -> bool:
    """Constant-time comparison, as a real identity provider would do."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def base_url(request: Request) -> str:
    """Scheme, host and port the client used, so links point back at this sandbox."""
    return str(request.base_url).rstrip("/")
