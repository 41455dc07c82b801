"""What every ServiceNow route shares: the router and its Basic auth, ServiceNow's error body
and request bodies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.state import Reject, get_state
from riposte.sandbox.web import has_basic_credentials, json_object

TABLE = "incident"
JOURNAL_TABLE = "sys_journal_field"


def snow_error(status: int, message: str, detail: str | None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "detail": detail}, "status": "failure"}, status_code=status
    )


def not_found() -> Reject:
    return Reject(
        snow_error(
            404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
        )
    )


async def require_basic(request: Request) -> None:
    config = get_state(request).config
    if not has_basic_credentials(request, config.servicenow_user, config.servicenow_password):
        raise Reject(
            snow_error(401, "User Not Authenticated", "Required to provide Auth information")
        )


router = APIRouter(prefix="/servicenow/api/now/table", dependencies=[Depends(require_basic)])


async def object_body(request: Request) -> dict[str, Any]:
    return await json_object(
        request,
        lambda detail: Reject(snow_error(400, "Exception while reading request", detail)),
        "The payload is not valid JSON.",
        "The payload must be an object.",
    )
