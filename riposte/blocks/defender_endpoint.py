"""Microsoft Defender for Endpoint API client: alerts (list since a watermark, get, update,
comment) and response actions (isolate, release, machine actions, indicators).

Get it from the credentials block: ``DefenderCredentials.load(name).endpoint_client()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from riposte.alerts.sources.lifecycle import (
    ENDPOINT_CLASSIFICATIONS,
    ENDPOINT_DETERMINATIONS,
    UNKNOWN,
    AlertState,
    check_verdict,
    endpoint_state,
)
from riposte.alerts.timestamps import parse_timestamp
from riposte.blocks._http import IDEMPOTENT, build_http_client, send
from riposte.blocks.alert_sources import (
    DEFENDER_ENDPOINT,
    Acknowledged,
    CloseVerdict,
    Resolution,
    Triage,
    comments_contain,
)
from riposte.blocks.coalesce import Coalescer
from riposte.blocks.errors import ServiceRejectedError
from riposte.limits import BUDGET_OF

ENDPOINT = "Microsoft Defender for Endpoint"
# The batch update has a budget of its own (riposte.limits, `mdebatch`).
ENDPOINT_BATCH = "Microsoft Defender for Endpoint batch update"
MAX_PAGE = 10_000
# The documentation gives no maximum of ids per batch update; a bound keeps a request small.
BATCH_MAX_IDS = 200

Changes = tuple[tuple[str, str], ...]

# classification and determination (PascalCase, unlike Graph) for each verdict.
VERDICTS: dict[CloseVerdict, tuple[str, str]] = {
    "benign": ("InformationalExpectedActivity", "Other"),
    "false_positive": ("FalsePositive", "NotMalicious"),
    "true_positive": ("TruePositive", "Other"),
}
_OLDEST = datetime.min.replace(tzinfo=UTC)

# Graph's spelling -> this API's (update-alert.md), kept with the reader of alert states.
# Defender for Endpoint has no `unknown`, and retired `Apt` and `SecurityPersonnel` in 2022:
# those have no equivalent here.
CLASSIFICATION_NAMES = ENDPOINT_CLASSIFICATIONS
DETERMINATION_NAMES = ENDPOINT_DETERMINATIONS


def endpoint_time(value: datetime) -> str:
    """A UTC timestamp as the API's ``$filter`` expects it (an unquoted literal)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _updated(alert: dict[str, Any]) -> datetime:
    return parse_timestamp(alert.get("lastUpdateTime")) or _OLDEST


class DefenderEndpointClient:
    """Typed access to ``/api/alerts``; also the `AlertSourceClient` for ``defender_endpoint``.

    Example:
        ```python
        mde = DefenderCredentials.load("riposte-defender").endpoint_client()
        mde.update_alert(alert_id, status="InProgress")
        ```
    """

    source = DEFENDER_ENDPOINT
    ALERTS = "/api/alerts"
    MACHINES = "/api/machines"
    MACHINE_ACTIONS = "/api/machineactions"
    INDICATORS = "/api/indicators"

    def __init__(self, base_url: str, auth: httpx.Auth, *, timeout: float) -> None:
        self._http = build_http_client(ENDPOINT, base_url.rstrip("/"), timeout=timeout, auth=auth)
        # The same update for several alerts at once, in a batch run: one batchUpdate.
        self.writes: Coalescer[Changes, None] = Coalescer(
            ENDPOINT,
            "update alert",
            single=lambda alert_id, changes: self._update_one(alert_id, changes),
            bulk=lambda ids, changes: self._update_many(ids, changes),
            max_ids=BATCH_MAX_IDS,
            slot_ahead=False,  # a single update and a batch update spend different budgets
        )

    def _call(self, action: str, method: str, url: str, **kwargs: Any) -> Any:
        return send(self._http, ENDPOINT, action, method, url, **kwargs).json()

    def _path(self, alert_id: str) -> str:
        return f"{self.ALERTS}/{quote(alert_id, safe='')}"

    def list_alerts_since(
        self, since: datetime | None, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Alerts whose ``lastUpdateTime`` is at or after ``since``, oldest update first, each once.

        The API has ``$filter`` on ``lastUpdateTime`` but documents no ``$orderby``, and pages
        only by ``$top``/``$skip``: the whole window is read first, then sorted. An alert seen
        twice (updated while the pages were read) is kept once, in its latest version.
        """
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}")
        latest: dict[str, dict[str, Any]] = {}
        skip = 0
        while True:
            params: dict[str, str | int] = {"$top": page_size, "$expand": "evidence"}
            if since is not None:
                params["$filter"] = f"lastUpdateTime ge {endpoint_time(since)}"
            if skip:
                params["$skip"] = skip
            page = self._call("list alerts", "GET", self.ALERTS, params=params).get("value", [])
            for item in page:
                alert_id = str(item.get("id"))
                known = latest.get(alert_id)
                if known is None or _updated(item) >= _updated(known):
                    latest[alert_id] = item
            if len(page) < page_size:
                break
            skip += len(page)
        yield from sorted(latest.values(), key=lambda a: (_updated(a), str(a.get("id"))))

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"get alert {alert_id}", "GET", self._path(alert_id), params={"$expand": "evidence"}
        )
        return body

    def update_alert(self, alert_id: str, **changes: str) -> dict[str, Any]:
        """PATCH any of ``status``, ``assignedTo``, ``classification``, ``determination`` (all
        PascalCase values) and ``comment`` (which adds a comment); returns the updated alert."""
        # A comment is appended: a PATCH carrying one is not repeated blindly (the steps read
        # the comments before writing again).
        repeatable = {IDEMPOTENT: "comment" not in changes}
        body: dict[str, Any] = self._call(
            f"update alert {alert_id}",
            "PATCH",
            self._path(alert_id),
            json=changes,
            extensions=repeatable,
        )
        return body

    def batch_update(self, alert_ids: Sequence[str], **changes: str) -> None:
        """The same ``changes`` (as `update_alert`'s) for many alerts in one call, which has
        its own budget (10 a minute, 500 an hour). Unchanged values should not be sent."""
        ids = [str(i) for i in alert_ids]
        if not ids:
            raise ValueError("no alert ids to update")
        if not changes:
            raise ValueError("a batch update needs at least one change")
        send(
            self._http,
            ENDPOINT,
            f"batch update of {len(ids)} alerts ({ids[0]}...)",
            "POST",
            f"{self.ALERTS}/batchUpdate",
            json={"alertIds": ids, **changes},
            # Setting a status again changes nothing; a comment would be added twice.
            extensions={IDEMPOTENT: "comment" not in changes, BUDGET_OF: ENDPOINT_BATCH},
        )

    def _update_one(self, alert_id: str, changes: Changes) -> None:
        self.update_alert(alert_id, **dict(changes))

    def _update_many(self, alert_ids: Sequence[str], changes: Changes) -> dict[str, None]:
        self.batch_update(alert_ids, **dict(changes))
        return dict.fromkeys(alert_ids)

    def _write(self, alert_id: str, changes: dict[str, str]) -> None:
        """`update_alert`, or a share of a batch update when others wait for the same."""
        self.writes.call(alert_id, tuple(sorted(changes.items())))

    # --- AlertSourceClient ----------------------------------------------------------------

    def list_updated_since(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        return self.list_alerts_since(since)

    def get(self, alert_id: str) -> dict[str, Any]:
        return self.get_alert(alert_id)

    def mark_in_progress(self, alert_id: str) -> bool:
        if self.get_alert(alert_id).get("status") in ("New", "Unknown", None):
            self.update_alert(alert_id, status="InProgress")
        return True

    def comment(self, alert_id: str, text: str) -> bool:
        # Comments have no endpoint of their own here: a PATCH with only a comment adds one.
        self.update_alert(alert_id, comment=text)
        return True

    def has_comment(self, alert_id: str, needle: str) -> bool:
        return comments_contain(self.get_alert(alert_id).get("comments"), needle)

    def close(self, alert_id: str, verdict: CloseVerdict, reason: str) -> None:
        classification, determination = VERDICTS[verdict]
        current = self.get_alert(alert_id)
        changes: dict[str, str] = {}
        wanted = {
            "status": "Resolved",
            "classification": classification,
            "determination": determination,
        }
        if any(current.get(k) != v for k, v in wanted.items()):
            changes.update(wanted)
        if reason.strip() and not comments_contain(current.get("comments"), reason):
            changes["comment"] = reason
        if changes:
            self._write(alert_id, changes)

    def acknowledge(
        self, current: dict[str, Any], comment: str | None = None, marker: str | None = None
    ) -> Acknowledged:
        # Status and comment travel in one update (or one share of a batch update).
        alert_id = str(current.get("id"))
        changes: dict[str, str] = {}
        if current.get("status") in ("New", "Unknown", None):
            changes["status"] = "InProgress"
        if comment and not comments_contain(current.get("comments"), marker or comment):
            changes["comment"] = comment
        if not changes:
            return Acknowledged(dict(current), False, False)
        self._write(alert_id, changes)
        payload = dict(current)
        if "status" in changes:
            payload["status"] = changes["status"]
        if "comment" in changes:
            payload["comments"] = [*(current.get("comments") or []), {"comment": comment}]
        return Acknowledged(payload, "status" in changes, "comment" in changes)

    def triage(self, alert_id: str, wanted: dict[str, str]) -> Triage:
        changes: dict[str, str] = {}
        for field, value in wanted.items():
            if field in _NAMES:
                value = _spelled(alert_id, field, value)
            changes[field] = value
        current = self.get_alert(alert_id)
        changes = {k: v for k, v in changes.items() if current.get(k) != v}
        if changes:
            self.update_alert(alert_id, **changes)
        return Triage(written=tuple(sorted(changes)))

    def resolve(
        self, alert_id: str, classification: str, determination: str, comment: str, marker: str
    ) -> Resolution:
        check_verdict(classification, determination)
        # Graph's names, this API's spelling; refused before sending when it has no such
        # value (the retired Apt and SecurityPersonnel). "unknown" is no verdict: kept as is.
        wanted = {"status": "Resolved"}
        for field, value in (("classification", classification), ("determination", determination)):
            if value != UNKNOWN:
                wanted[field] = _spelled(alert_id, field, value)
        current = self.get_alert(alert_id)
        changes = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not changes:
            return Resolution((), False)
        changed = tuple(sorted(changes))
        # Status, verdict and comment in one update: nothing half done to repeat.
        added = self._with_comment(changes, current, comment, marker)
        self._write(alert_id, changes)
        return Resolution(changed, added)

    def reopen(self, alert_id: str, comment: str, marker: str) -> Resolution:
        current = self.get_alert(alert_id)
        if current.get("status") != "Resolved":
            return Resolution((), False)
        changes = {"status": "InProgress"}
        added = self._with_comment(changes, current, comment, marker)
        self._write(alert_id, changes)
        return Resolution(("status",), added)

    def alert_state(self, payload: dict[str, Any]) -> AlertState:
        return endpoint_state(payload)

    @staticmethod
    def _with_comment(
        changes: dict[str, str], current: dict[str, Any], comment: str, marker: str
    ) -> bool:
        """Add ``comment`` to an update unless a comment containing ``marker`` is there."""
        if not comment.strip() or comments_contain(current.get("comments"), marker or comment):
            return False
        changes["comment"] = comment
        return True

    # --- response actions: isolation, indicators ------------------------------------------

    def _machine_path(self, machine_id: str, action: str) -> str:
        return f"{self.MACHINES}/{quote(machine_id, safe='')}/{action}"

    def isolate(
        self, machine_id: str, comment: str, isolation_type: str = "Full"
    ) -> dict[str, Any]:
        """Ask for the machine's isolation (``Full``, ``Selective`` or ``UnManagedDevice``);
        returns the MachineAction, Pending. Sent once: a retried POST could isolate twice."""
        body: dict[str, Any] = self._call(
            f"isolate machine {machine_id}",
            "POST",
            self._machine_path(machine_id, "isolate"),
            json={"Comment": comment, "IsolationType": isolation_type},
        )
        return body

    def release(self, machine_id: str, comment: str) -> dict[str, Any]:
        """Ask for the machine's release from isolation; returns the MachineAction, Pending."""
        body: dict[str, Any] = self._call(
            f"release machine {machine_id}",
            "POST",
            self._machine_path(machine_id, "unisolate"),
            json={"Comment": comment},
        )
        return body

    def machine_action(self, action_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"get machine action {action_id}",
            "GET",
            f"{self.MACHINE_ACTIONS}/{quote(action_id, safe='')}",
        )
        return body

    def machine_actions(
        self, machine_id: str, *, action_type: str | None = None, page_size: int = 1000
    ) -> list[dict[str, Any]]:
        """The machine's actions (of ``action_type`` only, when given), newest first."""
        clauses = [f"machineId eq {odata_string(machine_id)}"]
        if action_type is not None:
            clauses.append(f"type eq {odata_string(action_type)}")
        found = self._list(
            f"list machine actions of {machine_id}",
            self.MACHINE_ACTIONS,
            " and ".join(clauses),
            page_size,
        )
        return sorted(found, key=_created, reverse=True)

    def submit_indicator(
        self,
        value: str,
        indicator_type: str,
        action: str,
        title: str,
        description: str,
        *,
        severity: str | None = None,
        expiration: str | None = None,
        generate_alert: bool | None = None,
        recommended_actions: str | None = None,
    ) -> dict[str, Any]:
        """Submit or update the indicator of ``indicator_type`` (``IpAddress``, ``Url``,
        ``DomainName``, ``FileSha1``, ``FileSha256``...) and ``value``: the API keeps one per
        type and value, so repeating the call updates it. Returns the indicator."""
        payload: dict[str, Any] = {
            "indicatorValue": value,
            "indicatorType": indicator_type,
            "action": action,
            "title": title,
            "description": description,
        }
        optional = {
            "severity": severity,
            "expirationTime": expiration,
            "generateAlert": generate_alert,
            "recommendedActions": recommended_actions,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        body: dict[str, Any] = self._call(
            f"submit {indicator_type} indicator {value}",
            "POST",
            self.INDICATORS,
            json=payload,
            # An upsert: repeating it after a timeout cannot make a second indicator.
            extensions={IDEMPOTENT: True},
        )
        return body

    def find_indicator(self, value: str, indicator_type: str) -> dict[str, Any] | None:
        """The indicator of this type and value, or None."""
        found = self._list(
            f"find {indicator_type} indicator {value}",
            self.INDICATORS,
            f"indicatorValue eq {odata_string(value)} and indicatorType eq"
            f" {odata_string(indicator_type)}",
            MAX_PAGE,
        )
        wanted = value.casefold()
        return next(
            (
                i
                for i in found
                if str(i.get("indicatorValue", "")).casefold() == wanted
                and i.get("indicatorType") == indicator_type
            ),
            None,
        )

    def _list(
        self, action: str, path: str, odata_filter: str, page_size: int
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        skip = 0
        while True:
            params: dict[str, str | int] = {"$filter": odata_filter, "$top": page_size}
            if skip:
                params["$skip"] = skip
            page = self._call(action, "GET", path, params=params).get("value", [])
            items.extend(page)
            if len(page) < page_size:
                return items
            skip += len(page)


_NAMES = {"classification": CLASSIFICATION_NAMES, "determination": DETERMINATION_NAMES}


def _spelled(alert_id: str, field: str, value: str) -> str:
    """A classification or determination in Graph's spelling, in this API's; refused
    (`ServiceRejectedError`, before anything is sent) when this API has no such value."""
    names = _NAMES[field]
    if value not in names:
        raise ServiceRejectedError(
            ENDPOINT,
            f"alert {alert_id}: no {field} {value!r} in this API (it has {', '.join(names)})",
        )
    return names[value]


def odata_string(value: str) -> str:
    """``value`` as an OData string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _created(action: dict[str, Any]) -> datetime:
    return parse_timestamp(action.get("creationDateTimeUtc")) or _OLDEST
