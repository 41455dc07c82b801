"""Microsoft Graph security: the typed client of ``security/alerts_v2`` and
``security/incidents``, and the `AlertSourceClient` over Graph alerts.

Get them from the credentials block: ``DefenderCredentials.load(name).get_client()`` and
``.source_client("graph")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from riposte.alerts.sources.lifecycle import UNKNOWN, AlertState, check_verdict, graph_state
from riposte.alerts.timestamps import parse_timestamp
from riposte.blocks._http import build_http_client, send
from riposte.blocks.alert_sources import (
    GRAPH as GRAPH_SOURCE,
)
from riposte.blocks.alert_sources import (
    Acknowledged,
    CloseVerdict,
    Resolution,
    Triage,
    comments_contain,
)
from riposte.blocks.errors import ServiceRejectedError

GRAPH = "Microsoft Graph"


def graph_time(value: datetime) -> str:
    """A UTC timestamp as Graph's $filter expects it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def _updated(alert: dict[str, Any]) -> datetime:
    return parse_timestamp(alert.get("lastUpdateDateTime")) or _NEVER


class GraphSecurityClient:
    """Typed access to Graph ``security/alerts_v2``: list, get, update status, comment."""

    ALERTS = "/v1.0/security/alerts_v2"

    def __init__(self, base_url: str, auth: httpx.Auth, *, timeout: float) -> None:
        self.auth = auth
        self._http = build_http_client(
            GRAPH,
            base_url.rstrip("/"),
            timeout=timeout,
            auth=self.auth,
            # Without it, Defender for Cloud and Defender for APIs alerts report their service
            # and detection source as "unknownFutureValue".
            headers={"Prefer": "include-unknown-enum-members"},
        )

    def _call(self, action: str, method: str, url: str, **kwargs: Any) -> Any:
        return send(self._http, GRAPH, action, method, url, **kwargs).json()

    def _alert_path(self, alert_id: str) -> str:
        # Quoted whole: an id is a value, never a path (`../../x` must not leave the API).
        return f"{self.ALERTS}/{quote(alert_id, safe='')}"

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"get alert {alert_id}", "GET", self._alert_path(alert_id)
        )
        return body

    def list_alerts_since(
        self,
        since: datetime | None,
        *,
        page_size: int = 500,
        until: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Alerts updated at or after ``since`` (and before ``until``, default now), oldest
        update first, each once in its latest version.

        Uses only the documented query options (`$filter`, `$top`, `$skip`): the service's order
        is its own, so the window is read whole, then sorted. Every `@odata.nextLink` the service
        sends is followed (on the Graph host only). Some tenants send none, and `$skip` stalls past
        an offset (reported by users of the API, against its documentation): then a full page
        means the window holds more, and it is split in two by time and each half read the same
        way; a window of one millisecond is read by `$skip`.
        """
        start = since or _NEVER
        end = until or datetime.now(UTC) + timedelta(seconds=1)
        latest: dict[str, dict[str, Any]] = {}
        self._read_window(start, end, page_size, latest)
        yield from sorted(latest.values(), key=lambda a: (_updated(a), str(a.get("id"))))

    def _read_window(
        self, start: datetime, end: datetime, page_size: int, latest: dict[str, dict[str, Any]]
    ) -> None:
        window = (
            f"lastUpdateDateTime ge {graph_time(start)} and lastUpdateDateTime lt {graph_time(end)}"
        )
        params: dict[str, str | int] = {"$filter": window, "$top": page_size}
        body = self._call("list alerts", "GET", self.ALERTS, params=params)
        page = self._keep(body, latest)
        if body.get("@odata.nextLink"):
            while link := body.get("@odata.nextLink"):
                body = self._call("list alerts (next page)", "GET", self._same_host(str(link)))
                self._keep(body, latest)
            return
        if len(page) < page_size:
            return  # the whole window fitted in one page
        if end - start > timedelta(milliseconds=1):
            middle = start + (end - start) / 2
            self._read_window(start, middle, page_size, latest)
            self._read_window(middle, end, page_size, latest)
            return
        skip = len(page)  # one millisecond holds more than a page: $skip, documented
        while len(page) == page_size:
            params["$skip"] = skip
            page = self._keep(self._call("list alerts", "GET", self.ALERTS, params=params), latest)
            skip += len(page)

    @staticmethod
    def _keep(body: dict[str, Any], latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        page = [item for item in body.get("value", []) if isinstance(item, dict)]
        for item in page:
            alert_id = str(item.get("id"))
            known = latest.get(alert_id)
            if known is None or _updated(item) >= _updated(known):
                latest[alert_id] = item
        return page

    def _same_host(self, link: str) -> str:
        """A nextLink, if it points at the Graph host the client talks to: the token goes with
        it, so a link elsewhere is refused."""
        target, base = httpx.URL(link), self._http.base_url
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise ServiceRejectedError(
                GRAPH, "list alerts: the next page link leaves the Graph host"
            )
        return link

    def update_alert(self, alert_id: str, **changes: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"update alert {alert_id}", "PATCH", self._alert_path(alert_id), json=changes
        )
        return body

    # --- incidents (`security/incidents`: SecurityIncident.ReadWrite.All) ----------------------

    INCIDENTS = "/v1.0/security/incidents"

    def _incident_path(self, incident_id: str) -> str:
        return f"{self.INCIDENTS}/{quote(incident_id, safe='')}"

    def get_incident(self, incident_id: str, *, with_alerts: bool = False) -> dict[str, Any]:
        """The incident (``with_alerts``: its alerts too, `$expand=alerts`)."""
        params = {"$expand": "alerts"} if with_alerts else None
        body: dict[str, Any] = self._call(
            f"get incident {incident_id}", "GET", self._incident_path(incident_id), params=params
        )
        return body

    def update_incident(self, incident_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH the given fields (`customTags` replaces the whole list); the updated incident."""
        body: dict[str, Any] = self._call(
            f"update incident {incident_id}",
            "PATCH",
            self._incident_path(incident_id),
            json=changes,
        )
        return body

    def comment_incident(self, incident_id: str, comment: str) -> list[dict[str, Any]]:
        return self._comment(
            f"comment on incident {incident_id}", self._incident_path(incident_id), comment
        )

    def add_comment(self, alert_id: str, comment: str) -> list[dict[str, Any]]:
        return self._comment(f"comment on alert {alert_id}", self._alert_path(alert_id), comment)

    def _comment(self, action: str, path: str, comment: str) -> list[dict[str, Any]]:
        """POST a comment; Graph answers with the whole comment list."""
        body = self._call(
            action,
            "POST",
            f"{path}/comments",
            json={"@odata.type": "microsoft.graph.security.alertComment", "comment": comment},
        )
        comments: list[dict[str, Any]] = body.get("value", [])
        return comments


# Graph's classification and determination for each verdict. "other" rather than a guess at a
# finer determination: the reason text says what the playbook knew.
GRAPH_VERDICTS: dict[CloseVerdict, tuple[str, str]] = {
    "benign": ("informationalExpectedActivity", "other"),
    "false_positive": ("falsePositive", "notMalicious"),
    "true_positive": ("truePositive", "other"),
}


class GraphAlertSource:
    """`AlertSourceClient` over Graph ``security/alerts_v2`` (wraps `GraphSecurityClient`)."""

    source = GRAPH_SOURCE

    def __init__(self, client: GraphSecurityClient) -> None:
        self.client = client

    def list_updated_since(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        return self.client.list_alerts_since(since)

    def get(self, alert_id: str) -> dict[str, Any]:
        return self.client.get_alert(alert_id)

    def mark_in_progress(self, alert_id: str) -> bool:
        if self.client.get_alert(alert_id).get("status") in ("new", "unknown", None):
            self.client.update_alert(alert_id, status="inProgress")
        return True

    def comment(self, alert_id: str, text: str) -> bool:
        self.client.add_comment(alert_id, text)
        return True

    def has_comment(self, alert_id: str, needle: str) -> bool:
        return comments_contain(self.client.get_alert(alert_id).get("comments"), needle)

    def close(self, alert_id: str, verdict: CloseVerdict, reason: str) -> None:
        classification, determination = GRAPH_VERDICTS[verdict]
        current = self.client.get_alert(alert_id)
        # Graph's update has no reason field: the reason goes in a comment, once.
        if reason.strip() and not comments_contain(current.get("comments"), reason):
            self.client.add_comment(alert_id, reason)
        wanted = {
            "status": "resolved",
            "classification": classification,
            "determination": determination,
        }
        if any(current.get(k) != v for k, v in wanted.items()):
            self.client.update_alert(alert_id, **wanted)

    def triage(self, alert_id: str, wanted: dict[str, str]) -> Triage:
        current = self.client.get_alert(alert_id)
        changes = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changes:
            self.client.update_alert(alert_id, **changes)
        return Triage(written=tuple(sorted(changes)))

    def acknowledge(
        self, current: dict[str, Any], comment: str | None = None, marker: str | None = None
    ) -> Acknowledged:
        alert_id = str(current.get("id"))
        payload = dict(current)
        status_changed = comment_added = False
        if current.get("status") in ("new", "unknown", None):
            self.client.update_alert(alert_id, status="inProgress")
            payload["status"] = "inProgress"
            status_changed = True
        if comment and not comments_contain(current.get("comments"), marker or comment):
            self.client.add_comment(alert_id, comment)
            payload["comments"] = [*(current.get("comments") or []), {"comment": comment}]
            comment_added = True
        return Acknowledged(payload, status_changed, comment_added)

    def resolve(
        self, alert_id: str, classification: str, determination: str, comment: str, marker: str
    ) -> Resolution:
        check_verdict(classification, determination)
        current = self.client.get_alert(alert_id)
        wanted = {"status": "resolved"}
        # "unknown" is no verdict: what the alert holds stays.
        for field, value in (("classification", classification), ("determination", determination)):
            if value != UNKNOWN:
                wanted[field] = value
        changes = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not changes:
            return Resolution((), False)
        # The comment first: a crash between the two calls leaves the alert unresolved, and
        # the repeat resolves it without commenting twice.
        added = self._comment_once(alert_id, current, comment, marker)
        self.client.update_alert(alert_id, **changes)
        return Resolution(tuple(sorted(changes)), added)

    def reopen(self, alert_id: str, comment: str, marker: str) -> Resolution:
        current = self.client.get_alert(alert_id)
        if current.get("status") != "resolved":
            return Resolution((), False)
        added = self._comment_once(alert_id, current, comment, marker)
        self.client.update_alert(alert_id, status="inProgress")
        return Resolution(("status",), added)

    def alert_state(self, payload: dict[str, Any]) -> AlertState:
        return graph_state(payload)

    def _comment_once(
        self, alert_id: str, current: dict[str, Any], comment: str, marker: str
    ) -> bool:
        if not comment.strip() or comments_contain(current.get("comments"), marker or comment):
            return False
        self.client.add_comment(alert_id, comment)
        return True
