"""Fault injection: a middleware that answers matching requests with errors or delays them.

A fault matches requests of one simulated service (optionally one method, a path substring)
and either answers in place of the simulator (``status``, after an optional ``delay``), or
only slows the answer down (``delay`` alone). With ``after_handling`` the simulator handles the
request first (the ticket IS created) and the fault then holds its answer for ``delay`` and/or
replaces it with ``status``: the caller never learns of the success, which is how a test
stages a crash between a remote side effect and the end of a task. A fault ends after
``times`` matching requests, after ``for_seconds`` ("ServiceNow down for two minutes"),
or when cleared.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riposte.sandbox.chat import slack_error, teams_error
from riposte.sandbox.clock import utcnow
from riposte.sandbox.cloud_apps import mdca_error
from riposte.sandbox.defender_cloud import arm_error
from riposte.sandbox.defender_endpoint import mde_error
from riposte.sandbox.graph import graph_error
from riposte.sandbox.identity import aad_error
from riposte.sandbox.jira import jira_error
from riposte.sandbox.servicenow import snow_error
from riposte.sandbox.state import (
    Fault,
    FaultState,
    SandboxState,
    get_state,
    service_for_path,
)

ServiceName = Literal[
    "identity", "graph", "mde", "mdca", "arm", "servicenow", "jira", "slack", "teams"
]
# Every simulated service can be faulted (tests/test_faults.py checks it against SERVICES): a
# new simulator needs its name here and its error shape in `fault_response`.
FAULTABLE = frozenset(get_args(ServiceName))


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
    for_seconds: float | None = Field(
        default=None, gt=0.0, le=86400.0, description="active this long, then gone by itself"
    )
    after_handling: bool = Field(
        default=False,
        description="let the simulator handle the request, then delay its answer and/or "
        "replace it with `status`: the side effect happens, the caller never hears of it",
    )

    @model_validator(mode="after")
    def _does_something(self) -> FaultSpec:
        if self.status is None and self.delay <= 0:
            raise ValueError("a fault needs a status, a delay, or both")
        return self


@dataclass
class InjectedFault(Fault):
    """A `Fault` with the options the state module does not know: expiry and after-handling."""

    after_handling: bool = False
    for_seconds: float | None = None
    expires_at: float | None = None  # monotonic

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.monotonic()) >= self.expires_at

    def applies_to(self, service: str, method: str, target: str) -> bool:
        return not self.expired() and super().applies_to(service, method, target)

    def as_dict(self) -> dict[str, Any]:
        left = None
        if self.expires_at is not None:
            left = round(max(0.0, self.expires_at - time.monotonic()), 1)
        return {
            **super().as_dict(),
            "after_handling": self.after_handling,
            "for_seconds": self.for_seconds,
            "expires_in": left,
        }


def drop_expired(faults: FaultState) -> None:
    now = time.monotonic()
    faults.faults[:] = [
        f for f in faults.faults if not (isinstance(f, InjectedFault) and f.expired(now))
    ]


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
_MDE_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "ResourceNotFound",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
_MDCA_DETAILS = {  # Django REST framework's standard texts
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    500: "A server error occurred.",
}
_ARM_CODES = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "AuthorizationFailed",
    404: "ResourceNotFound",
    409: "Conflict",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
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
    elif service == "mde":
        if throttled:
            response = mde_error(
                status,
                "TooManyRequests",
                "API calls quota exceeded! maximum admitted 100 per 00:01:00.",
            )
        else:
            response = mde_error(status, _MDE_CODES.get(status, "UnknownError"), "Injected fault.")
    elif service == "mdca":
        if throttled:
            # The documented limit comes with no Retry-After unless the fault asks for one.
            response = mdca_error(status, "Request was throttled.")
        else:
            response = mdca_error(status, _MDCA_DETAILS.get(status, "Injected fault."))
    elif service == "arm":
        if throttled:
            response = arm_error(
                status,
                "SubscriptionRequestsThrottled",
                "Number of requests for the subscription exceeded the limit for time interval"
                f" '01:00:00'. Please try again after '{retry_after or 5}' seconds.",
            )
            response.headers["x-ms-ratelimit-remaining-subscription-reads"] = "0"
        else:
            response = arm_error(status, _ARM_CODES.get(status, "UnknownError"), "Injected fault.")
    elif service == "servicenow":
        if throttled:
            response = snow_error(
                status, "Rate limit exceeded", "The request exceeded the configured rate limit."
            )
            # Inbound REST rate limits are per hour, and every 429 says when the window resets:
            # without a fault's own value, at the top of the next hour (often beyond a client's
            # cap on waiting).
            now = int(time.time())
            if retry_after is None:
                retry_after = 3600 - now % 3600
            response.headers["X-RateLimit-Limit"] = "60"
            response.headers["X-RateLimit-Reset"] = str(now + retry_after)
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
    elif service == "teams":
        response = teams_error(status, _TEAMS_CODES.get(status, "InjectedFault"), "Injected fault.")
    else:
        raise ValueError(f"no fault shape for the service {service!r}")
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
        drop_expired(self.state.faults)
        fault = self.state.faults.take(service, scope["method"], target)
        if fault is None:
            await self.app(scope, receive, send)
            return
        if isinstance(fault, InjectedFault) and fault.after_handling:
            await self._answer_late(fault, service, scope, receive, send)
            return
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            await self.app(scope, receive, send)
            return
        await drain_body(receive)
        response = fault_response(service, fault.status, fault.retry_after)
        await response(scope, receive, send)

    async def _answer_late(
        self, fault: Fault, service: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Handle the request for real, then hold the answer and/or swap it for the fault's."""
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            for message in held:
                await send(message)
            return
        response = fault_response(service, fault.status, fault.retry_after)
        await response(scope, receive, send)


async def drain_body(receive: Receive) -> None:
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
    fault = InjectedFault(
        id=uuid.uuid4().hex[:12],
        service=spec.service,
        method=spec.method.upper() if spec.method else None,
        path_contains=spec.path_contains,
        status=spec.status,
        retry_after=spec.retry_after,
        delay=spec.delay,
        remaining=spec.times,
        after_handling=spec.after_handling,
        for_seconds=spec.for_seconds,
        expires_at=time.monotonic() + spec.for_seconds if spec.for_seconds else None,
    )
    get_state(request).faults.faults.append(fault)
    return fault.as_dict()


@router.get("")
async def list_faults(request: Request) -> list[dict[str, Any]]:
    faults = get_state(request).faults
    drop_expired(faults)
    return [f.as_dict() for f in faults.faults]


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
