"""Microsoft Defender for Cloud (ARM) security alerts client: list, get, resolve, dismiss, activate.

Defender for APIs alerts come through here too. Get it from the credentials block:
``DefenderCredentials.load(name).cloud_client()``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from riposte.alerts.sources.lifecycle import (
    UNKNOWN,
    AlertState,
    check_verdict,
    defender_cloud_state,
)
from riposte.alerts.timestamps import parse_timestamp
from riposte.blocks._http import IDEMPOTENT, build_http_client, send
from riposte.blocks.alert_sources import DEFENDER_CLOUD as DEFENDER_CLOUD_SOURCE
from riposte.blocks.alert_sources import Acknowledged, CloseVerdict, Resolution, Triage
from riposte.blocks.errors import ServiceAuthError, ServiceNotFoundError, ServiceRejectedError

DEFENDER_CLOUD = "Microsoft Defender for Cloud"
API_VERSION = "2022-01-01"

StateChange = Literal["resolve", "dismiss", "activate", "inProgress"]

# ARM has no "false positive": anything not to act on is dismissed, a real threat resolved.
VERDICT_ACTIONS: dict[CloseVerdict, StateChange] = {
    "benign": "dismiss",
    "false_positive": "dismiss",
    "true_positive": "resolve",
}
# ARM's statuses as documented: Resolved is "closed after handling", Dismissed "dismissed as
# false positive". `resolve` dismisses a false positive and resolves anything else.
STATE_OF: dict[StateChange, str] = {
    "resolve": "Resolved",
    "dismiss": "Dismissed",
    "activate": "Active",
    "inProgress": "InProgress",
}
NO_VERDICT = "Defender for Cloud alerts keep none (only a status)"
NO_COMMENTS = "Defender for Cloud alerts have no comments"
ALERT_ID = re.compile(
    r"^/subscriptions/[^/?#]+(?:/resourceGroups/[^/?#]+)?/providers/Microsoft\.Security/"
    r"locations/[^/?#]+/alerts/[^/?#]+$",
    re.IGNORECASE,
)
_OLDEST = datetime.min.replace(tzinfo=UTC)


def alert_time(alert: dict[str, Any]) -> datetime | None:
    """When the alert became visible: the later of ``timeGeneratedUtc`` and
    ``processingEndTimeUtc``. An alert generated before a watermark but processed after it
    still counts as new, so a poll cannot skip it."""
    properties = alert.get("properties") or {}
    times = [
        parse_timestamp(properties.get(k)) for k in ("timeGeneratedUtc", "processingEndTimeUtc")
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def alert_name(alert_id: str) -> str:
    """The last segment of an ARM alert id: short, and enough to name it in a message."""
    return alert_id.rstrip("/").rsplit("/", 1)[-1]


class DefenderCloudClient:
    """Typed access to ``Microsoft.Security/alerts``; also the `AlertSourceClient` for
    ``defender_cloud``.

    Example:
        ```python
        mdc = DefenderCredentials.load("riposte-defender").cloud_client()
        mdc.change_state(alert["id"], "dismiss")
        ```
    """

    source = DEFENDER_CLOUD_SOURCE

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        subscription_ids: Sequence[str],
        timeout: float,
    ) -> None:
        self._base = base_url.rstrip("/")
        self.subscription_ids = list(subscription_ids)
        self._http = build_http_client(DEFENDER_CLOUD, self._base, timeout=timeout, auth=auth)

    def _send(self, action: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return send(self._http, DEFENDER_CLOUD, action, method, url, **kwargs)

    def list_alerts(self, subscription_id: str) -> Iterator[dict[str, Any]]:
        """Every alert of one subscription, page by page, following ``nextLink``."""
        action = f"list alerts of subscription {subscription_id}"
        url = (
            f"/subscriptions/{quote(subscription_id, safe='')}/providers/Microsoft.Security/alerts"
        )
        params: dict[str, str] | None = {"api-version": API_VERSION}
        while True:
            body = self._send(action, "GET", url, params=params).json()
            yield from body.get("value") or []
            next_link = body.get("nextLink")
            if not next_link:
                return
            # The bearer token goes wherever the link points: only ever back to ARM itself.
            if not str(next_link).startswith(self._base + "/"):
                raise ServiceRejectedError(
                    DEFENDER_CLOUD, f"{action}: the next page is on another host; not followed"
                )
            url, params = str(next_link), None  # the link carries api-version and $skipToken

    def list_alerts_since(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        """Alerts of every configured subscription that became visible at or after ``since``,
        oldest first, each once.

        ARM has no server-side time filter on this list: every page of every subscription is
        read and filtered here, by `alert_time`. An alert without any time is kept.
        """
        if not self.subscription_ids:
            raise ServiceAuthError(
                DEFENDER_CLOUD, "the credentials block lists no subscription_ids to read from"
            )
        found: dict[str, dict[str, Any]] = {}
        for subscription in self.subscription_ids:
            for alert in self.list_alerts(subscription):
                moment = alert_time(alert)
                if since is None or moment is None or moment >= since:
                    found[str(alert.get("id")).lower()] = alert
        yield from sorted(
            found.values(), key=lambda a: (alert_time(a) or _OLDEST, str(a.get("id")).lower())
        )

    def _resolve(self, alert_id: str) -> str:
        """The full ARM id of an alert given by full id or by name (the name costs a listing)."""
        if ALERT_ID.match(alert_id):
            return alert_id
        if "/" in alert_id or not alert_id:
            raise ValueError("not a Defender for Cloud alert id or alert name")
        wanted = alert_id.lower()
        for subscription in self.subscription_ids:
            for alert in self.list_alerts(subscription):
                properties = alert.get("properties") or {}
                names = (alert.get("name"), properties.get("systemAlertId"))
                if any(str(n).lower() == wanted for n in names if n):
                    return str(alert["id"])
        raise ServiceNotFoundError(DEFENDER_CLOUD, f"no alert named {alert_id}")

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        """One alert by its full ARM id (``/subscriptions/.../alerts/<name>``) or its name."""
        full_id = self._resolve(alert_id)
        body: dict[str, Any] = self._send(
            f"get alert {alert_name(full_id)}", "GET", full_id, params={"api-version": API_VERSION}
        ).json()
        return body

    def change_state(self, alert_id: str, change: StateChange) -> None:
        """``resolve``, ``dismiss``, ``activate`` or ``inProgress``; ARM answers 204, no body."""
        full_id = self._resolve(alert_id)
        self._send(
            f"{change} alert {alert_name(full_id)}",
            "POST",
            f"{full_id}/{change}",
            params={"api-version": API_VERSION},
            # Setting a state twice leaves it set: safe to retry like a PUT.
            extensions={IDEMPOTENT: True},
        )

    # --- AlertSourceClient ----------------------------------------------------------------

    def list_updated_since(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        return self.list_alerts_since(since)

    def get(self, alert_id: str) -> dict[str, Any]:
        return self.get_alert(alert_id)

    def mark_in_progress(self, alert_id: str) -> bool:
        current = self.get_alert(alert_id)
        if (current.get("properties") or {}).get("status") in ("Active", None):
            self.change_state(str(current.get("id") or alert_id), "inProgress")
        return True

    def comment(self, alert_id: str, text: str) -> bool:
        # Security alerts on ARM have no comments.
        return False

    def acknowledge(
        self, current: dict[str, Any], comment: str | None = None, marker: str | None = None
    ) -> Acknowledged:
        # No comments on ARM: the ticket links the alert.
        properties = current.get("properties") or {}
        if properties.get("status") not in ("Active", None):
            return Acknowledged(dict(current), False, False)
        self.change_state(str(current.get("id")), "inProgress")
        return Acknowledged(
            {**current, "properties": {**properties, "status": "InProgress"}}, True, False
        )

    def has_comment(self, alert_id: str, needle: str) -> bool:
        return False

    def triage(self, alert_id: str, wanted: dict[str, str]) -> Triage:
        why = "Defender for Cloud alerts have no owner or classification"
        return Triage(written=(), unsupported=tuple(f"{k}: {why}" for k in sorted(wanted)))

    def close(self, alert_id: str, verdict: CloseVerdict, reason: str) -> None:
        # The reason has nowhere to go on ARM; the ticket and the run's artifact keep it.
        self.change_state(alert_id, VERDICT_ACTIONS[verdict])

    def resolve(
        self, alert_id: str, classification: str, determination: str, comment: str, marker: str
    ) -> Resolution:
        """``dismiss`` a false positive (ARM: "dismissed as false positive"), ``resolve``
        anything else ("closed after handling"). The classification shows only as that choice;
        the determination and the comment have nowhere to go, and are reported so."""
        check_verdict(classification, determination)
        unsupported = []
        if classification != UNKNOWN:
            unsupported.append(
                f"classification: {NO_VERDICT}; a false positive is dismissed, anything else"
                " resolved"
            )
        if determination != UNKNOWN:
            unsupported.append(f"determination: {NO_VERDICT}")
        if comment.strip():
            unsupported.append(f"comment: {NO_COMMENTS}")
        change: StateChange = "dismiss" if classification == "falsePositive" else "resolve"
        # A dismissed alert now found a true positive is resolved, and the other way round;
        # without a verdict ("unknown"), a closed alert stays as it was closed.
        done = ("Resolved", "Dismissed") if classification == UNKNOWN else (STATE_OF[change],)
        current = self.get_alert(alert_id)
        if (current.get("properties") or {}).get("status") in done:
            return Resolution((), False, tuple(unsupported))
        self.change_state(str(current.get("id") or alert_id), change)
        return Resolution(("status",), False, tuple(unsupported))

    def reopen(self, alert_id: str, comment: str, marker: str) -> Resolution:
        """``activate`` a resolved or dismissed alert (back to Active, Graph's "new")."""
        unsupported = (f"comment: {NO_COMMENTS}",) if comment.strip() else ()
        current = self.get_alert(alert_id)
        if (current.get("properties") or {}).get("status") not in ("Resolved", "Dismissed"):
            return Resolution((), False, unsupported)
        self.change_state(str(current.get("id") or alert_id), "activate")
        return Resolution(("status",), False, unsupported)

    def alert_state(self, payload: dict[str, Any]) -> AlertState:
        return defender_cloud_state(payload)
