"""Severity-based routing: what to do for an alert until policies take over."""

from __future__ import annotations

from riposte.alerts.model import Alert, Severity
from riposte.alerts.response import Priority, Route

_BY_SEVERITY: dict[Severity, Route] = {
    Severity.HIGH: Route(
        priority=Priority.HIGH, open_ticket=True, notify=True, reason="high severity"
    ),
    Severity.MEDIUM: Route(
        priority=Priority.MEDIUM, open_ticket=True, notify=True, reason="medium severity"
    ),
    Severity.LOW: Route(
        priority=Priority.LOW, open_ticket=True, notify=False, reason="low severity"
    ),
    Severity.INFORMATIONAL: Route(
        priority=Priority.LOW,
        open_ticket=False,
        notify=False,
        reason="informational: recorded on the alert, no ticket",
    ),
    # Severity not known yet (an enum value newer than this code): worth a person's look.
    Severity.UNKNOWN: Route(
        priority=Priority.MEDIUM, open_ticket=True, notify=True, reason="unknown severity"
    ),
}


def route_by_severity(alert: Alert) -> Route:
    return _BY_SEVERITY[alert.severity]
