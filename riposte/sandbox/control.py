"""Control and inspection endpoints under ``/_sandbox``: load data, read what clients did, reset.

About 500 lines: one short route per thing a test, a bench or a stager loads, reads or sets,
for every simulated system; an analyst's own changes are in `riposte.sandbox.analyst`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from riposte.alerts.adf import to_adf
from riposte.sandbox import (
    analyst,
    cloud_apps,
    defender_cloud,
    defender_endpoint,
    graph,
    jira,
    servicenow,
)
from riposte.sandbox.clock import utcnow
from riposte.sandbox.graph import load_alerts
from riposte.sandbox.samples import sample_alerts_by_source, sample_graph_alerts
from riposte.sandbox.state import JiraIssue, Reject, SandboxState, get_state

router = APIRouter(prefix="/_sandbox")


class JiraSettings(BaseModel):
    search_lag_seconds: float = Field(default=0.0, ge=0.0)
    time_zone: str | None = Field(
        default=None,
        description="The API account's time zone (IANA name); None keeps the current one",
    )


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
    state = get_state(request).jira
    return JiraSettings(search_lag_seconds=state.search_lag_seconds, time_zone=state.time_zone)


@router.post("/jira/settings", response_model=None)
async def set_jira_settings(
    settings: JiraSettings, request: Request
) -> JiraSettings | JSONResponse:
    state = get_state(request).jira
    if settings.time_zone is not None:
        try:
            ZoneInfo(settings.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            return JSONResponse({"detail": "unknown time zone"}, status_code=400)
        state.time_zone = settings.time_zone
    state.search_lag_seconds = settings.search_lag_seconds
    return JiraSettings(search_lag_seconds=state.search_lag_seconds, time_zone=state.time_zone)


# --- what an analyst does in the ticketing tools ---------------------------------------------


class AnalystResolve(BaseModel):
    """Resolve (or close) an incident from its form: the Resolution code is one of the form's
    choices; the data policy refuses empty notes (403), as it would the form."""

    close_code: str = Field(description="one of the incident's Resolution code choices")
    close_notes: str = ""
    user: str = Field(default="soc.analyst", min_length=1, description="user name")
    state: Literal["resolved", "closed"] = "resolved"


class AnalystReopen(BaseModel):
    user: str = Field(default="soc.analyst", min_length=1)
    work_note: str = ""


class AnalystNote(BaseModel):
    text: str = Field(min_length=1)
    user: str = Field(default="soc.analyst", min_length=1)
    element: Literal["work_notes", "comments"] = "work_notes"


def _incident(request: Request, number_or_sys_id: str) -> dict[str, str]:
    records = get_state(request).servicenow.records
    record = records.get(number_or_sys_id) or next(
        (r for r in records.values() if r.get("number") == number_or_sys_id.upper()), None
    )
    if record is None:
        raise HTTPException(status_code=404, detail="no such incident")
    return record


def _analyst_write(
    request: Request, record: dict[str, str], body: dict[str, str], user: str
) -> dict[str, Any] | JSONResponse:
    state = get_state(request)
    try:
        servicenow.write(state, record, body, user)
    except Reject as refused:  # the data policy: the answer the API gives
        return JSONResponse(
            json.loads(bytes(refused.response.body)), status_code=refused.response.status_code
        )
    (held,) = [i for i in servicenow.inspect(state) if i["record"]["sys_id"] == record["sys_id"]]
    return held


# Resolve, reopen and note share a shape: each checks its own precondition, then writes as the user.
@router.post("/servicenow/incidents/{incident}/resolve", response_model=None)
async def servicenow_resolve(
    incident: str, action: AnalystResolve, request: Request
) -> dict[str, Any] | JSONResponse:
    """An analyst resolves (or closes) the incident (number or sys_id) as ``user``."""
    record = _incident(request, incident)
    if action.close_code not in servicenow.CLOSE_CODES:
        return JSONResponse(
            {"detail": "close_code is not a choice", "choices": list(servicenow.CLOSE_CODES)},
            status_code=400,
        )
    state = servicenow.RESOLVED if action.state == "resolved" else servicenow.CLOSED
    body = {"state": state, "close_code": action.close_code, "close_notes": action.close_notes}
    return _analyst_write(request, record, body, action.user)


@router.post("/servicenow/incidents/{incident}/reopen", response_model=None)
async def servicenow_reopen(
    incident: str, action: AnalystReopen, request: Request
) -> dict[str, Any] | JSONResponse:
    """An analyst reopens a resolved incident (state In Progress); closed ones cannot be."""
    record = _incident(request, incident)
    if record.get("state") != servicenow.RESOLVED:
        shown = servicenow.STATES.get(record.get("state", ""), record.get("state"))
        return JSONResponse(
            {"detail": f"the incident is {shown}: only a resolved incident can be reopened"},
            status_code=409,
        )
    body = {"state": "2", "work_notes": action.work_note}
    return _analyst_write(request, record, body, action.user)


@router.post("/servicenow/incidents/{incident}/notes", response_model=None)
async def servicenow_note(
    incident: str, action: AnalystNote, request: Request
) -> dict[str, Any] | JSONResponse:
    """An analyst adds a work note (or an additional comment) to the incident."""
    record = _incident(request, incident)
    return _analyst_write(request, record, {action.element: action.text}, action.user)


class AnalystDone(BaseModel):
    resolution: str = Field(default="Done", description="a resolution of the site")
    author: str = Field(default="SOC Analyst", min_length=1, description="display name")
    comment: str = ""
    status: str | None = Field(
        default=None, description="the Done-category status to move to; None: the workflow's"
    )


class AnalystReopenIssue(BaseModel):
    author: str = Field(default="SOC Analyst", min_length=1)
    comment: str = ""


class AnalystComment(BaseModel):
    text: str = Field(min_length=1)
    author: str = Field(default="SOC Analyst", min_length=1)


def _jira_issue(request: Request, key: str) -> JiraIssue:
    issue = get_state(request).jira.find(key)
    if issue is None:
        raise HTTPException(status_code=404, detail="no such issue")
    return issue


def _jira_held(state: SandboxState, issue: JiraIssue, **extra: str) -> dict[str, Any]:
    (held,) = [i for i in jira.inspect(state) if i["id"] == issue.id]
    return {**held, **extra}


def _analyst_transition(
    request: Request,
    issue: JiraIssue,
    choose: Callable[[list[jira.Transition]], jira.Transition | None],
    fields: dict[str, Any],
    author: str,
    comment: str,
) -> dict[str, Any] | JSONResponse:
    state = get_state(request)
    transition = choose(jira.available_transitions(issue))
    if transition is None:
        status = issue.fields.get("status")
        return JSONResponse({"detail": f"no such transition from {status}"}, status_code=409)
    if "resolution" not in transition.screen:
        fields = {}
    account = jira.analyst_account(state, author)
    comments = [to_adf(comment)] if comment.strip() else []
    try:
        jira.apply_transition(state, issue, transition.id, fields, comments, account)
    except Reject as refused:  # an unknown resolution: the answer the API gives
        return JSONResponse(
            json.loads(bytes(refused.response.body)), status_code=refused.response.status_code
        )
    return _jira_held(state, issue, transition=transition.id, author=account)


@router.post("/jira/issues/{key}/done", response_model=None)
async def jira_done(
    key: str, action: AnalystDone, request: Request
) -> dict[str, Any] | JSONResponse:
    """An analyst moves the issue to a Done-category status with a resolution, as ``author``
    (by a transition of the issue's workflow, through its screen)."""
    issue = _jira_issue(request, key)

    def choose(transitions: list[jira.Transition]) -> jira.Transition | None:
        done = [t for t in transitions if jira.STATUSES[t.to][2] == "done"]
        if action.status is not None:
            done = [t for t in done if t.to.lower() == action.status.lower()]
        done.sort(key=lambda t: "resolution" not in t.screen)
        return done[0] if done else None

    fields = {"resolution": {"name": action.resolution}}
    return _analyst_transition(request, issue, choose, fields, action.author, action.comment)


@router.post("/jira/issues/{key}/reopen", response_model=None)
async def jira_reopen(
    key: str, action: AnalystReopenIssue, request: Request
) -> dict[str, Any] | JSONResponse:
    """An analyst takes a done issue back (to In Progress, else the workflow's reopened status),
    which clears its resolution."""
    issue = _jira_issue(request, key)
    if jira.STATUSES[str(issue.fields.get("status"))][2] != "done":
        return JSONResponse({"detail": "the issue is not done"}, status_code=409)

    def choose(transitions: list[jira.Transition]) -> jira.Transition | None:
        back = [t for t in transitions if jira.STATUSES[t.to][2] != "done"]
        back.sort(key=lambda t: jira.STATUSES[t.to][2] != "indeterminate")
        return back[0] if back else None

    return _analyst_transition(request, issue, choose, {}, action.author, action.comment)


@router.post("/jira/issues/{key}/comments")
async def jira_comment(key: str, action: AnalystComment, request: Request) -> dict[str, Any]:
    """An analyst comments on the issue, as ``author``."""
    state = get_state(request)
    issue = _jira_issue(request, key)
    account = jira.analyst_account(state, action.author)
    jira.append_comment(state, issue, to_adf(action.text), account)
    return _jira_held(state, issue, author=account)


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
# An analyst's changes to alerts in the Defender portals: resolve, reopen, assign.
router.include_router(analyst.router)
