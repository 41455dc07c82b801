"""Tasks that read and write the alert in Defender."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Literal

from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict

from riposte.alerts.messages import alert_comment
from riposte.alerts.model import Alert
from riposte.alerts.response import Ticket, response_revision
from riposte.alerts.sources import parse_alert
from riposte.blocks.defender import DefenderCredentials
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call, step_attempt


class AlertClosure(BaseModel):
    model_config = ConfigDict(frozen=True)

    classification: str
    reason: str
    status: str


class AlertUpdate(BaseModel):
    model_config = ConfigDict(frozen=True)

    status_changed: bool
    comment_added: bool
    status: str


# When this process last read each alert (`fetch_alert`), so that `update_alert` can trust the
# payload only while it is fresh. A cache: losing it costs one read per alert.
_READ_AT: OrderedDict[tuple[str, str], float] = OrderedDict()
_READ_AT_LOCK = threading.Lock()
_READ_AT_MAX = 20_000
FRESH_SECONDS = 120.0


def _note_read(source: str, alert_id: str) -> None:
    with _READ_AT_LOCK:
        _READ_AT[(source, alert_id)] = time.monotonic()
        _READ_AT.move_to_end((source, alert_id))
        while len(_READ_AT) > _READ_AT_MAX:
            _READ_AT.popitem(last=False)


def _read_lately(source: str, alert_id: str) -> bool:
    with _READ_AT_LOCK:
        at = _READ_AT.get((source, alert_id))
    return at is not None and time.monotonic() - at <= FRESH_SECONDS


@external_call(name="fetch {source}-{alert_id}")
def fetch_alert(defender: DefenderCredentials, source: str, alert_id: str) -> Alert:
    """Read the full alert from Defender and normalize it.

    Example:
        ```python
        alert = fetch_alert(DefenderCredentials.load("riposte-defender"), "graph", alert_id)
        ```
    """
    payload = defender.source_client(source).get(alert_id)
    _note_read(source, alert_id)
    return parse_alert(payload, source)


def _update_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    ticket: Ticket | None = params["ticket"]
    return cache_key(
        "update", alert.correlation_key, response_revision(alert), ticket.key if ticket else ""
    )


@external_call(_update_key, name="update-alert {alert.source}-{alert.id}")
def update_alert(defender: DefenderCredentials, alert: Alert, ticket: Ticket | None) -> AlertUpdate:
    """Mark the alert in progress and comment with the ticket link (where the API has
    comments), each only once.

    Example:
        ```python
        update_alert(defender, alert, ticket)
        ```
    """
    client = defender.source_client(alert.source)
    # When this process read the alert moments ago (`fetch_alert`, within FRESH_SECONDS), its
    # payload says what is there, which saves a read per alert in a storm under the vendors'
    # budgets. Otherwise it is read again: a retried attempt (the failed one may have written
    # part of it), a re-run whose fetch came back Cached, a step that waited long before.
    first_attempt = step_attempt() <= 1
    fresh = first_attempt and bool(alert.raw) and _read_lately(alert.source, alert.id)
    current = alert.raw if fresh else client.get(alert.id)
    # Each API has its own notion of "in progress" (Cloud Apps: marked read); an alert that
    # moved on is left untouched. False where the API keeps no comments (Defender for Cloud):
    # the ticket links the alert.
    done = client.acknowledge(
        current,
        alert_comment(ticket) if ticket is not None else None,
        marker=ticket.url if ticket is not None else None,
    )
    after = parse_alert(done.payload, alert.source)
    return AlertUpdate(
        status_changed=done.status_changed,
        comment_added=done.comment_added,
        status=str(after.status),
    )


def _close_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    return cache_key("close", alert.correlation_key, response_revision(alert))


@external_call(_close_key, name="close {alert.source}-{alert.id}")
def close_alert(
    defender: DefenderCredentials,
    alert: Alert,
    classification: Literal["benign", "false_positive"],
    reason: str,
) -> AlertClosure:
    """Resolve the alert at its source as benign or a false positive, recording ``reason``
    where the API keeps one (every source's close is safe to repeat).

    Example:
        ```python
        close_alert(defender, alert, "benign", "Defender for Cloud sample alert")
        ```
    """
    client = defender.source_client(alert.source)
    client.close(alert.id, classification, reason)
    after = parse_alert(client.get(alert.id), alert.source)
    return AlertClosure(classification=classification, reason=reason, status=str(after.status))


class AlertTriage(BaseModel):
    """What `triage_alert` did: the fields it wrote, and those the alert's API cannot set."""

    model_config = ConfigDict(frozen=True)

    written: tuple[str, ...]
    unsupported: tuple[str, ...] = ()


def _triage_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    wanted = params["wanted"]
    asked = ",".join(f"{k}={wanted[k]}" for k in sorted(wanted))
    return cache_key("triage", alert.correlation_key, response_revision(alert), asked)


@external_call(_triage_key, name="triage {alert.source}-{alert.id}")
def triage_alert(
    defender: DefenderCredentials, alert: Alert, wanted: dict[str, str]
) -> AlertTriage:
    """Set the alert's owner (`assignedTo`), `classification` and `determination` at its source,
    given in Graph's spelling (camelCase): Graph takes them as they are, Defender for Endpoint in
    its PascalCase (its retired determinations, such as `apt`, are refused before sending),
    Defender for Cloud Apps and Defender for Cloud have none of them (reported, not guessed).
    Each field is written only where it differs.

    Example:
        ```python
        triage_alert(defender, alert, {"assignedTo": "soc@example.com"})
        ```
    """
    done = defender.source_client(alert.source).triage(alert.id, wanted)
    return AlertTriage(written=done.written, unsupported=done.unsupported)
