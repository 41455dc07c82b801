"""Counts requests per simulated service, route and status, for tests that count calls."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riposte.sandbox.state import SandboxState, service_for_path


class RequestCounterMiddleware:
    """Outermost layer, so requests answered by an injected fault are counted too."""

    def __init__(self, app: ASGIApp, state: SandboxState, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.state = state
        self.routes = list(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_for_path(scope["path"]) if scope["type"] == "http" else None
        if service is None:
            await self.app(scope, receive, send)
            return
        route = f"{scope['method']} {_route_template(self.routes, scope)}"
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.state.requests.record(service, route, status)


def _route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """``/graph/v1.0/security/alerts_v2/{alert_id}`` rather than the concrete path.

    Matched here rather than read from the scope after routing, because a request answered by
    an injected fault never reaches the router.
    """
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "(unmatched)"))
        if match == Match.PARTIAL and partial is None:  # right path, another method
            partial = str(getattr(route, "path", "(unmatched)"))
    # Never the raw path: a mistyped webhook path may carry a secret.
    return partial or "(unmatched)"
