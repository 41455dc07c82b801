"""Microsoft Defender for Cloud Apps alerts API client: list, fetch, mark read, close.

Get it from the credentials block: ``DefenderCredentials.load(name).cloud_apps_client()``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from riposte.alerts.sources.lifecycle import (
    UNKNOWN,
    AlertState,
    check_verdict,
    cloud_apps_state,
)
from riposte.blocks._http import IDEMPOTENT, build_http_client, send
from riposte.blocks.alert_sources import CLOUD_APPS as CLOUD_APPS_SOURCE
from riposte.blocks.alert_sources import Acknowledged, CloseVerdict, Resolution, Triage
from riposte.blocks.coalesce import Coalescer
from riposte.blocks.errors import ServiceNotFoundError, ServiceRejectedError

CLOUD_APPS = "Microsoft Defender for Cloud Apps"
MAX_PAGE = 100  # the API's own maximum per response

logger = logging.getLogger("riposte.blocks.cloud_apps")

CloseKind = Literal["benign", "false_positive", "true_positive"]
# What a close sends besides the ids: kind, comment, reasonId.
CloseCall = tuple[CloseKind, str | None, int | None]

# reasonId values of close_benign and close_false_positive (close_true_positive has none).
BENIGN_ACTUAL_SEVERITY_LOWER = 2
BENIGN_OTHER = 4
BENIGN_CONFIRMED_WITH_END_USER = 5
BENIGN_TRIGGERED_BY_TEST = 6
FALSE_POSITIVE_NOT_OF_INTEREST = 0
FALSE_POSITIVE_TOO_MANY_SIMILAR = 1
FALSE_POSITIVE_ALERT_NOT_ACCURATE = 3
FALSE_POSITIVE_OTHER = 4

# Graph's classification -> the close that records it (close_benign: "suspicious but not
# malicious, such as a penetration test", Graph's informationalExpectedActivity). Graph's
# "unknown" names none of the three: such an alert is not closed (see `resolve`).
CLOSE_KINDS: dict[str, CloseKind] = {
    "truePositive": "true_positive",
    "falsePositive": "false_positive",
    "informationalExpectedActivity": "benign",
}
# resolutionStatusValue each close sets.
CLOSED_AS: dict[CloseKind, int] = {"false_positive": 3, "benign": 4, "true_positive": 5}
# The alert keeps no determination; the close's reasonId says the nearest thing where a
# Graph determination names the same reason. Anything else is "Other" (4, in both lists).
BENIGN_REASONS: dict[str, int] = {
    "securityTesting": BENIGN_TRIGGERED_BY_TEST,
    "confirmedUserActivity": BENIGN_CONFIRMED_WITH_END_USER,
}

# Reads and closes are POSTs here, yet repeating them changes nothing: let the transport retry
# them after a timeout or a 5xx as it would a GET.
_REPEATABLE = {IDEMPOTENT: True}


def epoch_ms(value: datetime) -> int:
    """A timestamp in epoch milliseconds, as the ``date`` filter takes it (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


class LegacyTokenAuth(httpx.Auth):
    """The portal's API token, sent as ``Authorization: Token <token>``."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Token {self._token.get_secret_value()}"
        yield request


class CloudAppsClient:
    """Typed access to ``/api/v1/alerts/``; also the `AlertSourceClient` for ``cloud_apps``.

    The API allows 30 requests a minute per tenant and sends no Retry-After when it throttles:
    the shared transport then backs off at least 2 seconds by itself.

    Example:
        ```python
        mdca = DefenderCredentials.load("riposte-defender").cloud_apps_client()
        mdca.close_false_positive(["6641a2b3c4d5e6f708192a3b"], comment="Known VPN egress")
        ```
    """

    source = CLOUD_APPS_SOURCE
    ALERTS = "/api/v1/alerts/"

    def __init__(self, base_url: str, auth: httpx.Auth, *, timeout: float) -> None:
        # The portal URL is shown with and without /api; the paths below carry it.
        base = base_url.rstrip("/").removesuffix("/api")
        self._http = build_http_client(CLOUD_APPS, base, timeout=timeout, auth=auth)
        # In a batch run, alerts read or closed at the same moment share one call (an id
        # filter), within the tenant's 30 requests a minute.
        self.reads: Coalescer[None, dict[str, Any]] = Coalescer(
            CLOUD_APPS,
            "fetch alert",
            single=lambda alert_id, _: self.get_alert(alert_id),
            bulk=lambda ids, _: self.get_alerts(ids),
            max_ids=MAX_PAGE,
        )
        self.closes: Coalescer[CloseCall, None] = Coalescer(
            CLOUD_APPS,
            "close alert",
            single=lambda alert_id, call: self._close_each([alert_id], call).get(alert_id),
            bulk=self._close_each,
            max_ids=MAX_PAGE,
        )

    def _call(self, action: str, method: str, url: str, **kwargs: Any) -> Any:
        return send(self._http, CLOUD_APPS, action, method, url, **kwargs).json()

    def _path(self, alert_id: str, *rest: str) -> str:
        return "/".join((self.ALERTS.rstrip("/"), quote(alert_id, safe=""), *rest)) + "/"

    def list_alerts_since(
        self, since: datetime | None, *, page_size: int = MAX_PAGE
    ) -> Iterator[dict[str, Any]]:
        """Alerts raised at or after ``since``, oldest first, each once.

        The API filters on the alert's ``date`` only (there is no update time), so a later
        change to an old alert does not bring it back. Pages by ``skip``/``limit`` until
        ``hasNext`` is false; new alerts land at the end of an ascending sort, so the offsets
        of the pages already read do not move.
        """
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}")
        filters: dict[str, Any] = {}
        if since is not None:
            filters["date"] = {"gte": epoch_ms(since)}
        seen: set[str] = set()
        skip = 0
        while True:
            body = self._call(
                "list alerts",
                "POST",
                self.ALERTS,
                json={
                    "filters": filters,
                    "skip": skip,
                    "limit": page_size,
                    "sortField": "date",
                    "sortDirection": "asc",
                },
                extensions=_REPEATABLE,
            )
            page = body.get("data") or []
            for item in page:
                alert_id = str(item.get("_id"))
                if alert_id not in seen:
                    seen.add(alert_id)
                    yield item
            if not body.get("hasNext") or not page:
                return
            skip += len(page)

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(f"fetch alert {alert_id}", "GET", self._path(alert_id))
        return body

    def get_alerts(self, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Several alerts in one call (a list filtered by id, at most 100), by id; an id that
        is not there is left out."""
        ids = list(dict.fromkeys(str(i) for i in alert_ids))
        if not 1 <= len(ids) <= MAX_PAGE:
            raise ValueError(f"between 1 and {MAX_PAGE} alert ids at a time")
        body = self._call(
            f"fetch alerts {ids[0]}... ({len(ids)})",
            "POST",
            self.ALERTS,
            json={"filters": {"id": {"eq": ids}}, "skip": 0, "limit": MAX_PAGE},
            extensions=_REPEATABLE,
        )
        wanted = set(ids)
        return {
            str(a.get("_id")): a
            for a in body.get("data") or []
            if isinstance(a, dict) and str(a.get("_id")) in wanted
        }

    def mark_read(self, alert_id: str) -> None:
        send(
            self._http,
            CLOUD_APPS,
            f"mark alert {alert_id} read",
            "POST",
            self._path(alert_id, "read"),
            extensions=_REPEATABLE,
        )

    def close_benign(
        self, alert_ids: Sequence[str], *, comment: str | None = None, reason_id: int = BENIGN_OTHER
    ) -> int:
        """Close as benign (a true positive that needs no action); returns how many closed."""
        return self._close("benign", alert_ids, comment, reason_id)

    def close_false_positive(
        self,
        alert_ids: Sequence[str],
        *,
        comment: str | None = None,
        reason_id: int = FALSE_POSITIVE_OTHER,
    ) -> int:
        """Close as a false positive; returns how many alerts were closed."""
        return self._close("false_positive", alert_ids, comment, reason_id)

    def close_true_positive(self, alert_ids: Sequence[str], *, comment: str | None = None) -> int:
        """Close as a true positive; returns how many alerts were closed."""
        return self._close("true_positive", alert_ids, comment, None)

    def _close(
        self, kind: CloseKind, alert_ids: Sequence[str], comment: str | None, reason: int | None
    ) -> int:
        closed, _ = self._close_ids(kind, alert_ids, comment, reason)
        return closed

    def _close_each(self, alert_ids: Sequence[str], call: CloseCall) -> dict[str, None]:
        """One close for several alerts (the coalescer's bulk call): each alert's result."""
        kind, comment, reason = call
        _, not_found = self._close_ids(kind, alert_ids, comment, reason)
        return dict.fromkeys(i for i in alert_ids if i not in not_found)

    def _close_ids(
        self, kind: CloseKind, alert_ids: Sequence[str], comment: str | None, reason: int | None
    ) -> tuple[int, set[str]]:
        ids = [str(i) for i in alert_ids]
        if not ids:
            raise ValueError("no alert ids to close")
        # Always by id: the close endpoints take any filter, and an empty one would match
        # every alert of the tenant.
        body: dict[str, Any] = {"filters": {"id": {"eq": ids}}, "sendFeedback": False}
        if comment:
            body["comment"] = comment
        if reason is not None:
            body["reasonId"] = reason
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        action = f"close alerts {shown} as {kind.replace('_', ' ')}"
        answer = self._call(
            action, "POST", f"{self.ALERTS}close_{kind}/", json=body, extensions=_REPEATABLE
        )
        closed = answer.get(f"closed_{kind}")
        not_found = [str(i) for i in answer.get("alertsNotFound") or []]
        if not isinstance(closed, int) or isinstance(closed, bool):
            raise ServiceRejectedError(CLOUD_APPS, f"{action}: the answer carried no count")
        # A close that matched nothing is still a 200: the count is the only sign of it.
        if closed == 0:
            if not_found:
                raise ServiceNotFoundError(
                    CLOUD_APPS, f"{action}: nothing was closed; not found: {', '.join(not_found)}"
                )
            raise ServiceRejectedError(CLOUD_APPS, f"{action}: nothing was closed")
        if not_found:
            logger.warning("%s: closed %d, not found: %s", CLOUD_APPS, closed, ", ".join(not_found))
        return closed, set(not_found)

    # --- AlertSourceClient ----------------------------------------------------------------

    def list_updated_since(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        return self.list_alerts_since(since)

    def get(self, alert_id: str) -> dict[str, Any]:
        # In a batch run, with the other alerts read at the same moment (one id filter).
        return self.reads.call(str(alert_id), None)

    def mark_in_progress(self, alert_id: str) -> bool:
        # No "in progress" here: reading the alert is the closest the API has.
        self.mark_read(alert_id)
        return False

    def acknowledge(
        self, current: dict[str, Any], comment: str | None = None, marker: str | None = None
    ) -> Acknowledged:
        # Marked read (the closest to "in progress"), one alert per call: the API has no bulk
        # read. A comment can only travel with a close: none here.
        payload = dict(current)
        if not current.get("statusValue"):
            self.mark_read(str(current.get("_id")))
            payload["statusValue"] = 1
        return Acknowledged(payload, False, False)

    def comment(self, alert_id: str, text: str) -> bool:
        # No comment endpoint: a comment can only travel with a close.
        return False

    def has_comment(self, alert_id: str, needle: str) -> bool:
        return needle in str(self.get_alert(alert_id).get("comment") or "")

    def triage(self, alert_id: str, wanted: dict[str, str]) -> Triage:
        # The API has no owner, and classifies an alert only by closing it (close_alert).
        why = "Defender for Cloud Apps sets it only by closing the alert"
        return Triage(written=(), unsupported=tuple(f"{k}: {why}" for k in sorted(wanted)))

    def close(self, alert_id: str, verdict: CloseVerdict, reason: str) -> None:
        # In a batch run, alerts closed alike at the same moment share one close call.
        reason_ids: dict[CloseVerdict, int | None] = {
            "benign": BENIGN_OTHER,
            "false_positive": FALSE_POSITIVE_OTHER,
            "true_positive": None,
        }
        self.closes.call(str(alert_id), (verdict, reason.strip() or None, reason_ids[verdict]))

    def resolve(
        self, alert_id: str, classification: str, determination: str, comment: str, marker: str
    ) -> Resolution:
        """Close the alert with the close_* request of its classification: truePositive is
        close_true_positive, falsePositive close_false_positive, informationalExpectedActivity
        close_benign. The comment travels with the close (the alert keeps one comment). There
        is no determination on these alerts: it only picks the close's reasonId (benign:
        securityTesting is 6 "triggered by test", confirmedUserActivity 5 "confirmed with end
        user"; anything else 4 "other"). A classification of "unknown" names no close: the
        alert stays open, and `unsupported` says so."""
        check_verdict(classification, determination)
        unsupported: list[str] = []
        if determination != UNKNOWN:
            unsupported.append(
                "determination: Defender for Cloud Apps alerts keep none; the close's reasonId"
                " (benign: 2 lower severity, 4 other, 5 confirmed with end user, 6 triggered by"
                " test; false positive: 0 not of interest, 1 too many similar, 3 not accurate,"
                " 4 other) carries the nearest reason"
            )
        current = self.get_alert(alert_id)
        resolution = current.get("resolutionStatusValue")
        closed = isinstance(resolution, int) and resolution != 0  # 1 and 2: legacy closes
        kind = CLOSE_KINDS.get(classification)
        if kind is None and not closed:
            unsupported.insert(
                0,
                "status: Defender for Cloud Apps closes an alert only as a true positive, benign"
                " or false positive (close_true_positive, close_benign, close_false_positive);"
                f" {classification!r} names none of them, so the alert stays open",
            )
        # Closed as asked already, or closed and no verdict given: nothing to write.
        if kind is None or resolution == CLOSED_AS[kind]:
            return Resolution((), False, tuple(unsupported))
        changed = ("classification",) if closed else ("classification", "status")
        text = comment.strip()
        # One comment per alert, replaced by a close that carries one: an alert whose comment
        # has the marker already is closed again without one.
        added = bool(text) and (marker or text) not in str(current.get("comment") or "")
        reason: int | None = None
        if kind == "benign":
            reason = BENIGN_REASONS.get(determination, BENIGN_OTHER)
        elif kind == "false_positive":
            reason = FALSE_POSITIVE_OTHER
        self.closes.call(str(alert_id), (kind, text if added else None, reason))
        return Resolution(changed, added, tuple(unsupported))

    def reopen(self, alert_id: str, comment: str, marker: str) -> Resolution:
        # The API closes alerts and marks them read or unread; nothing opens a closed one.
        return Resolution(
            (),
            False,
            (
                "status: Defender for Cloud Apps cannot reopen an alert (its API has close_benign,"
                " close_false_positive, close_true_positive, read and unread, no reopen)",
                "comment: Defender for Cloud Apps takes a comment only with a close",
            ),
        )

    def alert_state(self, payload: dict[str, Any]) -> AlertState:
        return cloud_apps_state(payload)
