"""What the Graph and Defender for Endpoint simulators do alike to an alert, each in its API's
spelling: store loaded alerts with what the API always sets, and apply a change to one."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from riposte.sandbox.state import SandboxState

COMMENT_AUTHOR = "Automation"


@dataclass(frozen=True)
class AlertSpelling:
    """An API's names for the alert fields the simulators fill in and move."""

    created: str  # when the alert was created
    updated: str  # when it last changed
    resolved: str  # when it was resolved (None while it is not)
    new_status: str  # the status of a new alert
    resolved_status: str  # the status that sets `resolved`
    comment_by: str  # who wrote a comment
    comment_at: str  # when


def store_alerts(
    state: SandboxState,
    payloads: list[dict[str, Any]],
    spelling: AlertSpelling,
    store: dict[str, dict[str, Any]],
    correlate: Callable[[SandboxState, dict[str, Any]], None],
) -> list[str]:
    """Store alerts as given (ids kept), filling what the API would always have set;
    ``correlate`` makes the incident each alert names."""
    ids: list[str] = []
    for payload in payloads:
        alert = copy.deepcopy(payload)
        alert_id = str(alert.get("id") or f"da{uuid.uuid4().int % 10**18:018d}_{len(ids)}")
        alert["id"] = alert_id
        if not alert.get(spelling.created):
            alert[spelling.created] = state.graph_clock.next()
        if not alert.get(spelling.updated):
            alert[spelling.updated] = state.graph_clock.next()
        alert.setdefault("status", spelling.new_status)
        alert.setdefault("comments", [])
        alert.setdefault("evidence", [])
        store[alert_id] = alert
        correlate(state, alert)
        ids.append(alert_id)
    return ids


def apply_change(
    alert: dict[str, Any],
    update: dict[str, Any],
    now: str,
    spelling: AlertSpelling,
    comment: str | None = None,
    author: str = COMMENT_AUTHOR,
) -> None:
    """Write ``update`` (and ``comment``, signed by ``author``) at ``now``: the resolution time
    follows a change of status, and the update time moves."""
    if comment is not None:
        comments: list[dict[str, Any]] = alert.setdefault("comments", [])
        comments.append({"comment": comment, spelling.comment_by: author, spelling.comment_at: now})
    if "status" in update and update["status"] != alert.get("status"):
        alert[spelling.resolved] = now if update["status"] == spelling.resolved_status else None
    alert.update(update)
    alert[spelling.updated] = now
