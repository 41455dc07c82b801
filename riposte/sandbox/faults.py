"""Fault injection: a middleware that answers matching requests with errors or delays them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riposte.sandbox.chat import slack_error, teams_error
from riposte.sandbox.clock import utcnow
from riposte.sandbox.graph import graph_error
from riposte.sandbox.identity import aad_error
from riposte.sandbox.jira import jira_error
from riposte.sandbox.servicenow import snow_error
from riposte.sandbox.state import Fault, SandboxState, get_state, service_for_path

ServiceName = Literal["identity", "graph", "servicenow", "jira", "slack", "teams"]


class FaultSpec(BaseModel):
    """What to break: requests of ``service`` (optionally one method, a path substring)."""

    service: ServiceName
    method: str | None = None
    path_contains: str | None = Field(
        default=None, description="substring of the path, query string included"
    )
    status: int | None = Field(default=None, ge=100, le=599)
    retry_after: int | None = Field(default=None, ge=0)
    delay: float = Field(default=0.0, ge=0.0, le=300.0)
    times: int | None = Field(default=None, ge=1, description="None: until cleared")

    @model_validator(mode="after")
    def _does_something(self) -> FaultSpec:
        if self.status is None and self.delay <= 0:
            raise ValueError("a fault needs a status, a delay, or both")
        return self


_GRAPH_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
_SLACK_TEXTS = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
}
_TEAMS_CODES = {
    429: "WorkflowTriggerIsThrottled",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def fault_response(service: str, status: int, retry_after: int | None) -> Response:
    """The error ``service`` would send with ``status``, in that service's usual body shape."""
    throttled = status == 429
    response: Response
    if service == "graph":
        message = (
            "Too many requests. Retry after the delay in the Retry-After header."
            if throttled
            else "Injected fault."
        )
        response = graph_error(status, _GRAPH_CODES.get(status, "UnknownError"), message)
    elif service == "identity":
        if throttled:
            response = aad_error(
                status, "temporarily_unavailable", 50196, "The request was throttled."
            )
        elif status >= 500:
            response = aad_error(
                status, "temporarily_unavailable", 90033, "A transient error has occurred."
            )
        else:
            response = aad_error(status, "invalid_request", 90023, "The request was rejected.")
    elif service == "servicenow":
        if throttled:
            response = snow_error(
                status, "Rate limit exceeded", "The request exceeded the configured rate limit."
            )
            response.headers["X-RateLimit-Limit"] = "60"
            response.headers["X-RateLimit-Reset"] = str(int(time.time()) + (retry_after or 60))
            response.headers["X-RateLimit-Rule"] = "sandbox-fault"
        else:
            response = snow_error(status, "Server error", "Injected fault.")
    elif service == "jira":
        if throttled:
            response = jira_error(status, ["Rate limit exceeded."])
            response.headers["RateLimit-Reason"] = "jira-burst-based"
            response.headers["X-RateLimit-Limit"] = "100"
            response.headers["X-RateLimit-Remaining"] = "0"
            response.headers["X-RateLimit-Reset"] = f"{utcnow():%Y-%m-%dT%H:%MZ}"
        else:
            response = jira_error(status, ["Internal server error (injected fault)."])
    elif service == "slack":
        text = _SLACK_TEXTS.get(status, "service_unavailable" if status >= 500 else "error")
        response = slack_error(status, text)
    else:
        response = teams_error(status, _TEAMS_CODES.get(status, "InjectedFault"), "Injected fault.")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


class FaultMiddleware:
    """Consults the fault list before routing, so no handler needs to know about faults."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_for_path(scope["path"]) if scope["type"] == "http" else None
        if service is None:
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{scope['path']}?{query}" if query else scope["path"]
        fault = self.state.faults.take(service, scope["method"], target)
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            await self.app(scope, receive, send)
            return
        await _drain(receive)
        response = fault_response(service, fault.status, fault.retry_after)
        await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    # Read the body the client sent, so the connection stays usable for its next request.
    more = True
    while more:
        message: Message = await receive()
        if message["type"] != "http.request":
            return
        more = bool(message.get("more_body", False))


router = APIRouter(prefix="/_sandbox/faults")


@router.post("")
async def add_fault(spec: FaultSpec, request: Request) -> dict[str, Any]:
    fault = Fault(
        id=uuid.uuid4().hex[:12],
        service=spec.service,
        method=spec.method.upper() if spec.method else None,
        path_contains=spec.path_contains,
        status=spec.status,
        retry_after=spec.retry_after,
        delay=spec.delay,
        remaining=spec.times,
    )
    get_state(request).faults.faults.append(fault)
    return fault.as_dict()


@router.get("")
async def list_faults(request: Request) -> list[dict[str, Any]]:
    return [f.as_dict() for f in get_state(request).faults.faults]


@router.delete("")
async def clear_faults(request: Request) -> dict[str, int]:
    faults = get_state(request).faults.faults
    cleared = len(faults)
    faults.clear()
    return {"cleared": cleared}


@router.delete("/{fault_id}", response_model=None)
async def remove_fault(fault_id: str, request: Request) -> dict[str, int] | JSONResponse:
    faults = get_state(request).faults.faults
    kept = [f for f in faults if f.id != fault_id]
    if len(kept) == len(faults):
        return JSONResponse({"detail": "no such fault"}, status_code=404)
    faults[:] = kept
    return {"cleared": 1}
