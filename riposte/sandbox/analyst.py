"""What an analyst does to an alert in the Defender portals, for tests and staging (mounted under
``/_sandbox``): resolve it with a classification, a determination and a comment, reopen it,
assign it.

Each change lands in the API's own shape, as a person's would: comments signed with the
person's UPN (Graph's ``createdByDisplayName``, Defender for Endpoint's ``createdBy``), Cloud
Apps' ``handledByUser`` set to it, and the alert's update time moved (Graph
``lastUpdateDateTime``, Defender for Endpoint ``lastUpdateTime``; the other two APIs keep none).
Bodies take Graph's spelling whatever the API, as the Defender portal shows one vocabulary;
each simulator stores its own (``CompromisedUser`` for compromisedAccount...). What a portal
cannot do is refused with 400 and says why:

| | resolve | reopen | assign |
|---|---|---|---|
| ``graph`` | status, classification, determination, comment | status, comment | yes |
| ``mde`` | the same, PascalCase; no retired determination | status, comment | yes |
| ``mdca`` | a close (true positive, benign, false positive) and its comment | no | no owner |
| ``arm`` | Resolved, or Dismissed with ``dismiss`` | Active or InProgress | no owner |
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from riposte.alerts.incidents import IncidentClassification, IncidentDetermination
from riposte.alerts.sources.lifecycle import (
    ENDPOINT_CLASSIFICATIONS,
    ENDPOINT_DETERMINATIONS,
    ENDPOINT_RETIRED_DETERMINATIONS,
    UNKNOWN,
)
from riposte.sandbox.alert_store import AlertSpelling, apply_change
from riposte.sandbox.cloud_apps import close_alert
from riposte.sandbox.defender_endpoint.alerts import SPELLING as ENDPOINT
from riposte.sandbox.graph.alerts import SPELLING as GRAPH
from riposte.sandbox.state import SandboxState, get_state

router = APIRouter()

Api = Literal["graph", "mde", "mdca", "arm"]
UPN = r"^[^@\s]+@[^@\s]+$"
# Graph classification -> the resolutionStatusValue of the close the Cloud Apps portal offers.
CLOUD_APPS_CLOSES = {"falsePositive": 3, "informationalExpectedActivity": 4, "truePositive": 5}
ARM_REOPENED = {"new": "Active", "inProgress": "InProgress"}
ENDPOINT_REOPENED = {"new": "New", "inProgress": "InProgress"}
# The APIs whose alerts keep an analyst's comments, update time and owner, as each spells them.
SPELLINGS: dict[str, AlertSpelling] = {"graph": GRAPH, "mde": ENDPOINT}


class AnalystChange(BaseModel):
    alertId: str = Field(min_length=1)  # noqa: N815 - as the APIs spell it
    by: str = Field(pattern=UPN, description="the analyst's UPN")
    comment: str | None = Field(default=None, min_length=1, max_length=30_000)


class AnalystResolve(AnalystChange):
    """Resolve: classification and determination in Graph's spelling (None: left as it is)."""

    classification: IncidentClassification | None = None
    determination: IncidentDetermination | None = None
    dismiss: bool = Field(default=False, description="Defender for Cloud only: Dismissed")


class AnalystReopen(AnalystChange):
    status: Literal["new", "inProgress"] = "inProgress"


class AnalystAssign(AnalystChange):
    assignedTo: str | None = Field(  # noqa: N815
        description="the new owner's UPN; null to unassign", pattern=UPN
    )


def _refuse(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def _given(value: str | None) -> str | None:
    """A verdict that says something (not None, not "unknown")."""
    return value if value not in (None, UNKNOWN) else None


def _find(api: Api, state: SandboxState, alert_id: str) -> dict[str, Any]:
    stores: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
        "graph": lambda: state.graph.alerts,
        "mde": lambda: state.endpoint.alerts,
        "mdca": lambda: state.cloud_apps.alerts,
        "arm": lambda: state.defender_cloud.alerts,
    }
    key = alert_id.lower() if api == "arm" else alert_id  # ARM ids are case-insensitive
    alert = stores[api]().get(key)
    if alert is None:
        raise HTTPException(status_code=404, detail=f"no {api} alert {alert_id!r}")
    return alert


def _write(
    api: str,
    state: SandboxState,
    alert: dict[str, Any],
    change: AnalystChange,
    fields: dict[str, Any],
) -> None:
    """The change as Graph or Defender for Endpoint stores it, signed by the analyst."""
    apply_change(alert, fields, state.graph_clock.next(), SPELLINGS[api], change.comment, change.by)


def _no_verdict_or_comment(api: str, change: AnalystChange) -> None:
    if isinstance(change, AnalystResolve) and (
        _given(change.classification) or _given(change.determination)
    ):
        raise _refuse(f"{api}: Defender for Cloud alerts keep no classification or determination")
    if change.comment is not None:
        raise _refuse(f"{api}: Defender for Cloud alerts have no comments")


# --- Defender for Endpoint -----------------------------------------------------------------


def _endpoint_verdict(resolve: AnalystResolve) -> dict[str, str]:
    fields: dict[str, str] = {}
    classification = _given(resolve.classification)
    if classification is not None:
        fields["classification"] = ENDPOINT_CLASSIFICATIONS[classification]
    determination = _given(resolve.determination)
    if determination in ENDPOINT_RETIRED_DETERMINATIONS:
        raise _refuse(
            f"mde: the determination {determination!r} was retired in August 2022; the portal"
            " no longer offers it"
        )
    if determination is not None:
        fields["determination"] = ENDPOINT_DETERMINATIONS[determination]
    return fields


# --- routes -----------------------------------------------------------------------------------


@router.post("/{api}/analyst/resolve")
async def analyst_resolve(api: Api, change: AnalystResolve, request: Request) -> dict[str, Any]:
    """Resolve an alert as an analyst would in the portal; answers the alert as stored."""
    state = get_state(request)
    alert = _find(api, state, change.alertId)
    if change.dismiss and api != "arm":
        raise _refuse(f"{api}: only Defender for Cloud alerts are dismissed")
    if api == "graph":
        fields: dict[str, Any] = {"status": "resolved"}
        for name in ("classification", "determination"):
            if getattr(change, name) is not None:
                fields[name] = getattr(change, name)
        _write(api, state, alert, change, fields)
    elif api == "mde":
        _write(api, state, alert, change, {"status": "Resolved", **_endpoint_verdict(change)})
    elif api == "mdca":
        classification = _given(change.classification)
        if classification is None:
            raise _refuse(
                "mdca: an alert is closed as a true positive, benign or false positive; give"
                " one of truePositive, informationalExpectedActivity, falsePositive"
            )
        if _given(change.determination):
            raise _refuse("mdca: Defender for Cloud Apps alerts keep no determination")
        close_alert(alert, CLOUD_APPS_CLOSES[classification], change.comment, change.by)
    else:
        _no_verdict_or_comment(api, change)
        alert.setdefault("properties", {})["status"] = "Dismissed" if change.dismiss else "Resolved"
    return copy.deepcopy(alert)


# Shaped as resolve and assign: what each API allows differs (the table of the module docstring).
@router.post("/{api}/analyst/reopen")
async def analyst_reopen(api: Api, change: AnalystReopen, request: Request) -> dict[str, Any]:
    """Reopen a resolved alert as an analyst would (status ``new`` or ``inProgress``)."""
    state = get_state(request)
    alert = _find(api, state, change.alertId)
    if api in SPELLINGS:
        status = change.status if api == "graph" else ENDPOINT_REOPENED[change.status]
        _write(api, state, alert, change, {"status": status})
    elif api == "mdca":
        raise _refuse(
            "mdca: Defender for Cloud Apps documents no way to reopen a closed alert (its API"
            " closes alerts and marks them read or unread)"
        )
    else:
        _no_verdict_or_comment(api, change)
        alert.setdefault("properties", {})["status"] = ARM_REOPENED[change.status]
    return copy.deepcopy(alert)


@router.post("/{api}/analyst/assign")
async def analyst_assign(api: Api, change: AnalystAssign, request: Request) -> dict[str, Any]:
    """Give an alert to an owner (or none) as an analyst would."""
    state = get_state(request)
    alert = _find(api, state, change.alertId)
    if api in SPELLINGS:
        _write(api, state, alert, change, {"assignedTo": change.assignedTo})
    else:
        name = "Defender for Cloud Apps" if api == "mdca" else "Defender for Cloud"
        raise _refuse(f"{api}: {name} alerts have no owner")
    return copy.deepcopy(alert)
