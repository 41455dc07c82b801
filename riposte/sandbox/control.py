"""Control and inspection endpoints under ``/_sandbox``: load data, read what clients did, reset."""

from __future__ import annotations

import copy
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from riposte.sandbox import jira, servicenow
from riposte.sandbox.clock import utcnow
from riposte.sandbox.graph import load_alerts
from riposte.sandbox.samples import sample_graph_alerts
from riposte.sandbox.state import get_state

router = APIRouter(prefix="/_sandbox")


class JiraSettings(BaseModel):
    search_lag_seconds: float = Field(default=0.0, ge=0.0)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    get_state(request).reset()
    return {"status": "reset"}


@router.post("/graph/alerts", response_model=None)
async def load_graph_alerts(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        payloads = await request.json()
    except ValueError:
        return JSONResponse({"detail": "body must be a JSON list of alerts"}, status_code=400)
    if isinstance(payloads, dict):
        payloads = [payloads]
    if not isinstance(payloads, list) or not all(isinstance(p, dict) for p in payloads):
        return JSONResponse({"detail": "body must be a JSON list of alerts"}, status_code=400)
    ids = load_alerts(get_state(request), payloads)
    return {"loaded": len(ids), "ids": ids}


@router.post("/graph/alerts/samples")
async def load_sample_alerts(request: Request) -> dict[str, Any]:
    ids = load_alerts(get_state(request), sample_graph_alerts(utcnow()))
    return {"loaded": len(ids), "ids": ids}


@router.get("/graph/alerts")
async def graph_alerts(request: Request) -> list[dict[str, Any]]:
    return copy.deepcopy(list(get_state(request).graph.alerts.values()))


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
async def identity(request: Request) -> dict[str, int]:
    tokens = get_state(request).identity
    now = time.monotonic()
    active = sum(1 for t in tokens.tokens.values() if t.expires_at > now)
    return {"tokens_issued": tokens.issued, "tokens_active": active}


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
