"""What every Microsoft Graph route shares: the routers, the token check, Graph's error body and
request bodies, and the simulator's settings (``/_sandbox/graph/settings``)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from riposte.sandbox.clock import utcnow
from riposte.sandbox.identity import GRAPH_AUDIENCES, check_bearer
from riposte.sandbox.state import Reject, get_state
from riposte.sandbox.web import InvalidBody, json_body

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"


def graph_error(status: int, code: str, message: str) -> JSONResponse:
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": f"{utcnow():%Y-%m-%dT%H:%M:%S}",
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }
    headers = {"request-id": request_id, "client-request-id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        )
    return JSONResponse(body, status_code=status, headers=headers)


def graph_forbidden(message: str) -> JSONResponse:
    return graph_error(403, "Forbidden", message)


def _unauthorized(message: str) -> JSONResponse:
    return graph_error(401, "InvalidAuthenticationToken", message)


def bad_request(message: str) -> Reject:
    return Reject(graph_error(400, "BadRequest", message))


async def require_graph_token(request: Request) -> None:
    check_bearer(request, GRAPH_AUDIENCES, _unauthorized)


router = APIRouter(prefix="/graph/v1.0", dependencies=[Depends(require_graph_token)])
# The sandbox's controls: settings and directory users (mounted under /_sandbox).
control_router = APIRouter(prefix="/graph")


async def graph_body(request: Request) -> Any:
    """The request's JSON body, or Graph's 400 saying why it is not one."""
    try:
        return await json_body(request)
    except InvalidBody as exc:
        raise bad_request(f"Invalid request body: {exc}.") from None


class GraphSettings(BaseModel):
    revoke_sessions_status: Literal[200, 204] = Field(
        default=204, description="204 (documented) or 200 (the known issue)"
    )
    next_link: bool = Field(default=True, description="send @odata.nextLink (documented)")
    honor_orderby: bool = Field(default=False, description="apply $orderby (undocumented)")


@control_router.get("/settings")
async def graph_settings(request: Request) -> GraphSettings:
    graph = get_state(request).graph
    return GraphSettings(
        revoke_sessions_status=200 if graph.revoke_answers_200 else 204,
        next_link=graph.next_link,
        honor_orderby=graph.honor_orderby,
    )


@control_router.post("/settings")
async def set_graph_settings(settings: GraphSettings, request: Request) -> GraphSettings:
    graph = get_state(request).graph
    graph.revoke_answers_200 = settings.revoke_sessions_status == 200
    graph.next_link = settings.next_link
    graph.honor_orderby = settings.honor_orderby
    return settings
