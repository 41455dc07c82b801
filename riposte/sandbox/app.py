"""The sandbox application: every simulator on one app, one path prefix per simulated service."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from riposte.sandbox import (
    chat,
    cloud_apps,
    control,
    defender_cloud,
    defender_endpoint,
    faults,
    graph,
    identity,
    jira,
    pages,
    quotas,
    servicenow,
)
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.metering import RequestCounterMiddleware
from riposte.sandbox.state import Reject, SandboxState

SIMULATORS = (
    identity.router,
    graph.router,
    defender_endpoint.router,
    cloud_apps.router,
    defender_cloud.router,
    servicenow.router,
    jira.router,
    chat.slack_router,
    chat.teams_router,
)


async def _reject(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Reject)
    return exc.response


def create_app(config: SandboxConfig | None = None) -> FastAPI:
    """A fresh sandbox with its own state; ``config`` sets the credentials it accepts.

    Layout (``SandboxConfig.urls`` builds these):
    ``/login/{tenant}/oauth2/v2.0/token`` Entra ID; ``/graph/v1.0/security/alerts_v2`` Graph;
    ``/mde/api/alerts`` Defender for Endpoint; ``/mdca/api/v1/alerts/`` Defender for Cloud Apps;
    ``/arm/subscriptions/{sub}/providers/Microsoft.Security/alerts`` Defender for Cloud (ARM);
    ``/servicenow/api/now/table/incident`` ServiceNow; ``/jira/rest/api/3/...`` Jira;
    ``/slack/services/{hook}`` Slack; ``/teams/workflows/{flow}/triggers/manual/paths/invoke``
    Teams; ``/_sandbox/...`` fault injection, inspection and reset (no auth: loopback only).
    """
    state = SandboxState(config or SandboxConfig())
    app = FastAPI(
        title="Riposte sandbox",
        summary=(
            "Simulators of Entra ID, Graph security, Defender for Endpoint, Defender for Cloud"
            " Apps, Defender for Cloud (ARM), ServiceNow, Jira, Slack and Teams."
        ),
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    app.state.sandbox = state
    app.add_exception_handler(Reject, _reject)
    app.state.quotas = quotas.QuotaState()
    for router in (*SIMULATORS, faults.router, control.router, quotas.router, pages.router):
        app.include_router(router)
    simulated_routes = [route for router in SIMULATORS for route in router.routes]
    # Added last, so it runs first: faulted and refused requests still get counted.
    app.add_middleware(quotas.QuotaMiddleware, state=state, quotas=app.state.quotas)
    app.add_middleware(faults.FaultMiddleware, state=state)
    app.add_middleware(RequestCounterMiddleware, state=state, routes=simulated_routes)
    return app
