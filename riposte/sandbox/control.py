"""Control and inspection endpoints under ``/_sandbox``: load data, read what clients did, reset."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from riposte.sandbox import cloud_apps, defender_cloud, defender_endpoint, graph, jira, servicenow
from riposte.sandbox.clock import utcnow
from riposte.sandbox.graph import load_alerts
from riposte.sandbox.samples import sample_alerts_by_source, sample_graph_alerts
from riposte.sandbox.state import SandboxState, get_state

router = APIRouter(prefix="/_sandbox")


class JiraSettings(BaseModel):
    search_lag_seconds: float = Field(default=0.0, ge=0.0)


class CloudAppsThrottleSettings(BaseModel):
    """MDCA's rate limit: ``requests`` per ``window_seconds`` per tenant, answered with 429."""

    enabled: bool = False
    requests: int = Field(default=30, ge=1)
    window_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)


class DefenderCloudSettings(BaseModel):
    page_size: int = Field(default=100, ge=1, le=1000)


Loader = Callable[[SandboxState, list[dict[str, Any]]], list[str]]
# Control path segment -> (source name of the samples, loader, where the alerts are kept).
ALERT_STORES: dict[str, tuple[str, Loader, Callable[[SandboxState], dict[str, Any]]]] = {
    "mde": ("defender_endpoint", defender_endpoint.load_alerts, lambda s: s.endpoint.alerts),
    "mdca": ("cloud_apps", cloud_apps.load_alerts, lambda s: s.cloud_apps.alerts),
    "arm": ("defender_cloud", defender_cloud.load_alerts, lambda s: s.defender_cloud.alerts),
}
LOADERS: dict[str, Loader] = {
    "graph": load_alerts,
    **{source: loader for source, loader, _ in ALERT_STORES.values()},
}


async def _payloads(request: Request) -> list[dict[str, Any]] | None:
    """The alerts of a load request (one object or a list), or None if the body is not that."""
    try:
        payloads = await request.json()
    except ValueError:
        return None
    if isinstance(payloads, dict):
        payloads = [payloads]
    if not isinstance(payloads, list) or not all(isinstance(p, dict) for p in payloads):
        return None
    return payloads


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    get_state(request).reset()
    return {"status": "reset"}


@router.post("/graph/alerts", response_model=None)
async def load_graph_alerts(request: Request) -> dict[str, Any] | JSONResponse:
    payloads = await _payloads(request)
    if payloads is None:
        return JSONResponse({"detail": "body must be a JSON list of alerts"}, status_code=400)
    ids = load_alerts(get_state(request), payloads)
    return {"loaded": len(ids), "ids": ids}


@router.post("/graph/alerts/samples")
async def load_sample_alerts(request: Request) -> dict[str, Any]:
    ids = load_alerts(get_state(request), sample_graph_alerts(utcnow()))
    return {"loaded": len(ids), "ids": ids}


@router.get("/graph/incidents")
async def graph_incidents(request: Request) -> list[dict[str, Any]]:
    """Every incident as stored, with its alerts' ids and the PATCHes it received."""
    state = get_state(request)
    out = []
    for incident in state.graph.incidents.values():
        shown = copy.deepcopy(incident)
        shown["alertIds"] = [
            a["id"]
            for a in state.graph.alerts.values()
            if str(a.get("incidentId")) == incident["id"]
        ]
        shown["updates"] = [
            u["fields"] for u in state.graph.incident_updates if u["incident"] == incident["id"]
        ]
        out.append(shown)
    return out


class IncidentMerge(BaseModel):
    into: str = Field(min_length=1)


@router.post("/graph/incidents/{incident_id}/merge")
async def merge_graph_incident(
    incident_id: str, merge: IncidentMerge, request: Request
) -> dict[str, Any]:
    """What Defender does when it merges incidents: this one becomes `redirected` to ``into``,
    and its alerts move there."""
    state = get_state(request)
    incidents = state.graph.incidents
    if incident_id not in incidents or merge.into not in incidents:
        raise HTTPException(status_code=404, detail="no such incident")
    incidents[incident_id].update(status="redirected", redirectIncidentId=merge.into)
    for alert in state.graph.alerts.values():
        if str(alert.get("incidentId")) == incident_id:
            alert["incidentId"] = merge.into
    return {"redirected": incident_id, "into": merge.into}


@router.get("/graph/alerts")
async def graph_alerts(request: Request) -> list[dict[str, Any]]:
    return copy.deepcopy(list(get_state(request).graph.alerts.values()))


@router.post("/alerts/samples")
async def load_every_sample(request: Request) -> dict[str, list[str]]:
    """Load the sample alerts of every source; answer the ids loaded, by source name."""
    state = get_state(request)
    samples = sample_alerts_by_source(utcnow())
    return {source: LOADERS[source](state, alerts) for source, alerts in samples.items()}


@router.post("/{api}/alerts", response_model=None)
async def load_source_alerts(
    api: Literal["mde", "mdca", "arm"], request: Request
) -> dict[str, Any] | JSONResponse:
    payloads = await _payloads(request)
    if payloads is None:
        return JSONResponse({"detail": "body must be a JSON list of alerts"}, status_code=400)
    _, loader, _ = ALERT_STORES[api]
    try:
        ids = loader(get_state(request), payloads)
    except ValueError as exc:  # an alert the simulated tenant cannot hold: none is stored
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return {"loaded": len(ids), "ids": ids}


@router.post("/{api}/alerts/samples")
async def load_source_samples(
    api: Literal["mde", "mdca", "arm"], request: Request
) -> dict[str, Any]:
    source, loader, _ = ALERT_STORES[api]
    ids = loader(get_state(request), sample_alerts_by_source(utcnow())[source])
    return {"loaded": len(ids), "ids": ids}


@router.get("/{api}/alerts")
async def source_alerts(
    api: Literal["mde", "mdca", "arm"], request: Request
) -> list[dict[str, Any]]:
    _, _, store = ALERT_STORES[api]
    return copy.deepcopy(list(store(get_state(request)).values()))


@router.get("/mdca/throttle")
async def cloud_apps_throttle(request: Request) -> CloudAppsThrottleSettings:
    throttle = get_state(request).cloud_apps.throttle
    return CloudAppsThrottleSettings(
        enabled=throttle.enabled, requests=throttle.requests, window_seconds=throttle.window_seconds
    )


@router.post("/mdca/throttle")
async def set_cloud_apps_throttle(
    settings: CloudAppsThrottleSettings, request: Request
) -> CloudAppsThrottleSettings:
    """Switch MDCA's 30 requests/minute limit on (or tighten it, for a fast test) or off."""
    state = get_state(request).cloud_apps
    state.throttle.enabled = settings.enabled
    state.throttle.requests = settings.requests
    state.throttle.window_seconds = settings.window_seconds
    state.recent.clear()
    return settings


@router.get("/arm/settings")
async def defender_cloud_settings(request: Request) -> DefenderCloudSettings:
    return DefenderCloudSettings(page_size=get_state(request).defender_cloud.page_size)


@router.post("/arm/settings")
async def set_defender_cloud_settings(
    settings: DefenderCloudSettings, request: Request
) -> DefenderCloudSettings:
    """The number of alerts per ARM list page, so that a few alerts span several pages."""
    get_state(request).defender_cloud.page_size = settings.page_size
    return settings


@router.get("/servicenow/incidents")
async def servicenow_incidents(request: Request) -> list[dict[str, Any]]:
    return servicenow.inspect(get_state(request))


@router.get("/jira/issues")
async def jira_issues(request: Request) -> list[dict[str, Any]]:
    return jira.inspect(get_state(request))


@router.get("/jira/settings")
async def jira_settings(request: Request) -> JiraSettings:
    return JiraSettings(search_lag_seconds=get_state(request).jira.search_lag_seconds)


@router.post("/jira/settings")
async def set_jira_settings(settings: JiraSettings, request: Request) -> JiraSettings:
    get_state(request).jira.search_lag_seconds = settings.search_lag_seconds
    return settings


@router.get("/slack/messages")
async def slack_messages(request: Request) -> list[dict[str, Any]]:
    return copy.deepcopy(get_state(request).chat.slack)


@router.get("/teams/messages")
async def teams_messages(request: Request) -> list[dict[str, Any]]:
    return copy.deepcopy(get_state(request).chat.teams)


@router.get("/identity")
async def identity(request: Request) -> dict[str, Any]:
    """Tokens issued and still valid, and how many were issued for each resource (audience)."""
    tokens = get_state(request).identity
    now = time.monotonic()
    active = sum(1 for t in tokens.tokens.values() if t.expires_at > now)
    return {
        "tokens_issued": tokens.issued,
        "tokens_active": active,
        "audiences": dict(tokens.issued_by_audience),
    }


@router.post("/identity/expire-tokens")
async def expire_tokens(request: Request) -> dict[str, int]:
    """Make every issued token expired, to exercise a client's token refresh without waiting."""
    tokens = get_state(request).identity.tokens
    now = time.monotonic()
    for token in tokens.values():
        token.expires_at = min(token.expires_at, now)
    return {"expired": len(tokens)}


@router.get("/requests")
async def requests(request: Request) -> dict[str, Any]:
    return get_state(request).requests.as_dict()


@router.delete("/requests")
async def clear_requests(request: Request) -> dict[str, str]:
    state = get_state(request)
    state.requests = type(state.requests)()
    return {"status": "cleared"}


# Containment: MDE machines, machine-action outcomes and indicators; Entra ID users.
router.include_router(defender_endpoint.control_router)
router.include_router(graph.control_router)
