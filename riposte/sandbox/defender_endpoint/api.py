"""What every Defender for Endpoint route shares: its two routers, the token and permission
checks, the error body, request bodies and paging."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.identity import ENDPOINT_AUDIENCES, check_bearer
from riposte.sandbox.state import Reject
from riposte.sandbox.web import int_option, json_object

MDE_ROOT = "https://api.security.microsoft.com/api"
MAX_TOP = 10_000

ALERT_READ = ("Alert.Read.All", "Alert.ReadWrite.All")
ALERT_WRITE = ("Alert.ReadWrite.All",)
MACHINE_READ = ("Machine.Read.All", "Machine.ReadWrite.All")
ISOLATE = ("Machine.Isolate",)
INDICATORS = ("Ti.ReadWrite", "Ti.ReadWrite.All")


def mde_error(status: int, code: str, message: str) -> JSONResponse:
    """The Defender for Endpoint error body: ``code``, ``message`` and a request ``target``."""
    target = str(uuid.uuid4())
    return JSONResponse(
        {"error": {"code": code, "message": message, "target": target}},
        status_code=status,
        headers={"request-id": target},
    )


def forbidden(message: str) -> JSONResponse:
    return mde_error(403, "Forbidden", message)


def bad_request(message: str, code: str = "BadRequest") -> Reject:
    return Reject(mde_error(400, code, message))


def invalid_body(message: str) -> Reject:
    return bad_request(f"Request body is incorrect: {message}", "InvalidRequestBody")


async def require_endpoint_token(request: Request) -> None:
    check_bearer(request, ENDPOINT_AUDIENCES, lambda m: mde_error(401, "Unauthorized", m))


router = APIRouter(prefix="/mde/api", dependencies=[Depends(require_endpoint_token)])
# The sandbox's controls: machines, action outcomes, what was done (mounted under /_sandbox).
control_router = APIRouter(prefix="/mde")


def field(body: dict[str, Any], name: str) -> Any:
    """A body property matched case-insensitively, as the service's JSON binding does."""
    if name in body:
        return body[name]
    folded = name.lower()
    return next((v for k, v in body.items() if isinstance(k, str) and k.lower() == folded), None)


def required_text(body: dict[str, Any], name: str) -> str:
    value = field(body, name)
    if not isinstance(value, str) or not value.strip():
        raise invalid_body(f"{name} is required.")
    return value


async def object_body(request: Request) -> dict[str, Any]:
    return await json_object(request, invalid_body, "{reason}.", "expected a JSON object.")


def page_bounds(request: Request) -> tuple[int, int]:
    """``($skip, $top)`` of a list request; $top is at most `MAX_TOP`."""
    top = int_option(request, "$top", MAX_TOP, bad_request)
    if top > MAX_TOP:
        raise bad_request(f"Invalid value '{top}' for $top: the maximum page size is {MAX_TOP}.")
    return int_option(request, "$skip", 0, bad_request), top


def page(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    skip, top = page_bounds(request)
    return [copy.deepcopy(item) for item in items[skip : skip + top]]
