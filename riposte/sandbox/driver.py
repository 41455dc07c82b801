"""Drives a running sandbox and intake from a script: the sandbox's control routes, alert bursts.

The code that bench/, scale/ and chaos/ share (they are scripts, not packages): a client of the
sandbox's `/_sandbox/...` control routes (reset, alerts, faults, quotas, and what the simulators
recorded: tickets, chat messages, Jira issues, requests), the Graph alerts those scripts send,
the environment of a local stack of a script's own, and one sender that posts alerts to the
intake from concurrent senders as Defender's automation would: honouring 503 + Retry-After and
retrying connection failures, within bounds.

Imports nothing of Prefect: the scripts import this before they set Prefect's environment.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from riposte.sandbox.samples import sample_graph_alerts

# The ServiceNow correlation id of a Graph alert's ticket: this prefix and the alert's id.
TICKET_PREFIX = "riposte-graph-"


def correlation(alert_id: str) -> str:
    """The correlation id of the ticket of the Graph alert ``alert_id``."""
    return f"{TICKET_PREFIX}{alert_id}"


def graph_alerts(
    ids: Sequence[str], first_incident: int, *, rename_everywhere: bool = False
) -> list[dict[str, Any]]:
    """Copies of the first sample Graph alert, one per id in ``ids``, in incidents
    ``first_incident``, ``first_incident + 1``...; with ``rename_everywhere``, every mention of
    the sample's id (links, evidence) is renamed too, not only the `id` field."""
    template = sample_graph_alerts(datetime.now(UTC))[0]
    text = json.dumps(template)
    alerts = []
    for i, alert_id in enumerate(ids):
        if rename_everywhere:
            alert: dict[str, Any] = json.loads(text.replace(template["id"], alert_id))
        else:
            alert = dict(template, id=alert_id)
        alert["incidentId"] = str(first_incident + i)
        alerts.append(alert)
    return alerts


def stack_environment(home: Path, first_port: int) -> dict[str, str]:
    """What a script's own local stack (bench, chaos) needs before anything imports prefect: its
    ports (Prefect at ``first_port``, the intake 10 above, the sandbox 20 above), its state
    folder ``home``, the poll paused and Prefect's logs at warnings."""
    return {
        "RIPOSTE_PREFECT_PORT": str(first_port),
        "RIPOSTE_INTAKE_PORT": str(first_port + 10),
        "RIPOSTE_SANDBOX_PORT": str(first_port + 20),
        "RIPOSTE_HOME": str(home),
        "RIPOSTE_POLL_PAUSED": "true",
        "PREFECT_API_URL": f"http://127.0.0.1:{first_port}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def adopt_stack_credential() -> None:
    """Put the local stack's Prefect API credential in this process's environment: that API
    answers only with it. After `stack_environment`, before anything imports prefect (which
    reads it once)."""
    from riposte.deployments.stack import stack_env
    from riposte.settings import Settings

    os.environ.update(stack_env(Settings()))


class SandboxClient:
    """The sandbox's control routes (`/_sandbox/...`): alerts, faults, quotas, and what the
    simulators recorded. Every call raises on an error answer."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> Any:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: Any = None) -> httpx.Response:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response

    def reset(self) -> None:
        """Forget every alert, record, fault and setting."""
        self._post("/_sandbox/reset")

    # --- alerts -------------------------------------------------------------------------------

    def load(self, alerts: list[dict[str, Any]], api: str = "graph") -> None:
        """Add ``alerts`` to the simulator ``api`` (graph, mde, mdca, arm), 250 a request."""
        for start in range(0, len(alerts), 250):
            self._post(f"/_sandbox/{api}/alerts", alerts[start : start + 250])

    def alerts(self, api: str = "graph") -> list[dict[str, Any]]:
        """The alerts the simulator ``api`` holds, as they are now (status, comments...)."""
        found: list[dict[str, Any]] = self._get(f"/_sandbox/{api}/alerts")
        return found

    def graph_alerts(self) -> dict[str, dict[str, Any]]:
        """The Graph simulator's alerts by id."""
        return {a["id"]: a for a in self.alerts("graph")}

    # --- faults and quotas --------------------------------------------------------------------

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        """The fault as the sandbox took it (a sandbox without some option drops it)."""
        fault: dict[str, Any] = self._post("/_sandbox/faults", spec).json()
        return fault

    def remove_fault(self, fault_id: str) -> None:
        r = self.http.delete(f"/_sandbox/faults/{fault_id}")
        if r.status_code not in (200, 404):  # 404: used up (`times`) already
            r.raise_for_status()

    def faults(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self._get("/_sandbox/faults")
        return listing

    def set_quotas(self, enabled: bool) -> None:
        """Switch the vendors' quotas (429 past a documented budget) on or off."""
        self._post("/_sandbox/quotas", {"enabled": enabled})

    def quotas(self) -> list[dict[str, Any]]:
        """Each quota's name, requests admitted and refused, and the most in a window."""
        listing: list[dict[str, Any]] = self._get("/_sandbox/quotas")
        return listing

    def requests(self) -> dict[str, Any]:
        """The requests the simulators answered, by service and by status."""
        counts: dict[str, Any] = self._get("/_sandbox/requests")
        return counts

    # --- what the simulators recorded ---------------------------------------------------------

    def incidents(self) -> list[dict[str, Any]]:
        """ServiceNow's incidents: each its `record`, `journal`..."""
        records: list[dict[str, Any]] = self._get("/_sandbox/servicenow/incidents")
        return records

    def tickets(self) -> Counter[str]:
        """How many ServiceNow incidents carry each correlation id."""
        return Counter(r["record"]["correlation_id"] for r in self.incidents())

    def resolve_incident(self, number: str, **fields: Any) -> None:
        """Resolve ServiceNow incident ``number`` as an analyst would (close code, notes...)."""
        self._post(f"/_sandbox/servicenow/incidents/{number}/resolve", fields)

    def chat_messages(self, kind: str) -> list[dict[str, Any]]:
        """The messages posted to ``kind`` (slack or teams), oldest first."""
        messages: list[dict[str, Any]] = self._get(f"/_sandbox/{kind}/messages")
        return messages

    def messages(self) -> list[tuple[str, str]]:
        """Every chat message as (channel kind, text of the whole message)."""
        return [
            (kind, json.dumps(message))
            for kind in ("slack", "teams")
            for message in self.chat_messages(kind)
        ]

    def jira_issues(self) -> list[dict[str, Any]]:
        issues: list[dict[str, Any]] = self._get("/_sandbox/jira/issues")
        return issues

    def jira_search_lag(self, seconds: float | None = None) -> float:
        """The Jira search's lag behind writes: set it when ``seconds`` is given; the old value."""
        old = float(self._get("/_sandbox/jira/settings")["search_lag_seconds"])
        if seconds is not None:
            self._post("/_sandbox/jira/settings", {"search_lag_seconds": seconds})
        return old


# --- sending alerts to the intake ---------------------------------------------------------------


@dataclass
class Delivery:
    """How posting one alert ended: the last status (-1: the last try had no answer), the run
    the intake started for it (on a 202 that names it; None when the alert was `queued`), and
    how many tries were refused before (503s and connection failures)."""

    status: int = -1
    run_id: str | None = None
    refused: int = 0


class AlertSender:
    """Posts Graph alerts to the intake, one per request, from any number of threads (a client
    of its own each), as a sender that honours 503 + Retry-After and retries connection
    failures, until ``tries`` tries or ``give_up_after`` seconds (either, both or neither).

    Authenticates with the intake's bearer ``token``, or signs each try with ``hmac_key``.
    Alert ``index`` goes to ``intakes[index % len(intakes)]`` (replicas in turn). Counts, for
    every thread at once: answers by status, alerts posted and accepted, the last post's time.
    Set ``stopped`` to make every sender give up before its next try."""

    def __init__(
        self,
        intakes: str | Sequence[str],
        *,
        token: str | None = None,
        hmac_key: str | None = None,
        tries: int | None = None,
        give_up_after: float | None = None,
        pause_after_error: float = 1.0,
        most_retry_after: float | None = None,
        timeout: float = 120.0,
    ) -> None:
        if (token is None) == (hmac_key is None):
            raise ValueError("either a token or an HMAC key")
        bases = [intakes] if isinstance(intakes, str) else list(intakes)
        self.urls = [f"{base}/alerts/graph" for base in bases]
        self.token = token
        self.hmac_key = hmac_key
        self.tries = tries
        self.give_up_after = give_up_after
        self.pause_after_error = pause_after_error
        self.most_retry_after = most_retry_after
        self.timeout = timeout
        self.stopped = False
        self.statuses: Counter[int] = Counter()
        self.posted = 0
        self.accepted = 0
        self.last_post = 0.0
        # Seconds each request took to be answered (every try), for latency percentiles.
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=self.timeout)
        client: httpx.Client = self._local.client
        return client

    def _send(self, client: httpx.Client, url: str, alert: dict[str, Any]) -> httpx.Response:
        if self.token is not None:
            return client.post(url, json=alert, headers={"Authorization": f"Bearer {self.token}"})
        from riposte.deployments.signing import SIGNATURE_HEADER, sign

        assert self.hmac_key is not None
        body = json.dumps(alert).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, [self.hmac_key.encode()]),  # fresh at every try
        }
        return client.post(url, content=body, headers=headers)

    def post(self, alert: dict[str, Any], index: int = 0) -> Delivery:
        client = self._client()
        url = self.urls[index % len(self.urls)]
        delivery = Delivery()
        deadline = math.inf if self.give_up_after is None else time.monotonic() + self.give_up_after
        for _ in itertools.count() if self.tries is None else range(self.tries):
            if self.stopped or time.monotonic() >= deadline:
                break
            sent = time.monotonic()
            try:
                r = self._send(client, url, alert)
            except httpx.HTTPError:
                delivery.status = -1
                delivery.refused += 1
                if self.pause_after_error:
                    time.sleep(self.pause_after_error)
                continue
            delivery.status = r.status_code
            with self._lock:
                self.latencies.append(time.monotonic() - sent)
            if r.status_code != 503:
                if r.status_code == 202:
                    delivery.run_id = r.json()["accepted"][0]["flow_run_id"]
                break
            delivery.refused += 1
            wait = float(r.headers.get("Retry-After", "1"))
            time.sleep(wait if self.most_retry_after is None else min(wait, self.most_retry_after))
        with self._lock:
            self.statuses[delivery.status] += 1
            self.posted += 1
            self.accepted += delivery.status == 202
            self.last_post = time.monotonic()
        return delivery

    def post_all(self, alerts: list[dict[str, Any]], senders: int) -> dict[str, Delivery]:
        """Post ``alerts`` from ``senders`` threads; each alert's delivery, by alert id."""
        with ThreadPoolExecutor(senders, thread_name_prefix="sender") as pool:
            return dict(zip((a["id"] for a in alerts), pool.map(self.post, alerts), strict=True))


class Burst:
    """A burst posted in the background, so that a script can break things meanwhile."""

    def __init__(self, sender: AlertSender, alerts: list[dict[str, Any]], senders: int) -> None:
        self.sender = sender
        self.result: dict[str, Delivery] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(alerts, senders), daemon=True)
        self._thread.start()

    def _run(self, alerts: list[dict[str, Any]], senders: int) -> None:
        try:
            self.result = self.sender.post_all(alerts, senders)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def wait_accepted(self, count: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sender.accepted < count and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.sender.accepted} of {count} alerts accepted")
            time.sleep(0.1)

    def join(self) -> dict[str, Delivery]:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result
