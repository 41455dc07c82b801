"""The chaos scenarios: each injects one failure into a running stack while alerts arrive, lets
the system recover as it is designed to, and counts what came out at the other end.

Counting is done where the effects live, never from Riposte's own account: tickets and duplicate
tickets from the sandbox's ServiceNow records by correlation key (`riposte-graph-<alert id>`),
messages from the sandbox's Slack and Teams logs (a message belongs to the alert whose id or
ticket number it names), comments from the simulated Defender alert. An alert is lost when it
was sent and has no ticket (the chaos policy gives every alert one).

A scenario needs a `Harness`: where the intake and the sandbox are, the intake's token, and, for
the scenarios that stop processes, a `StackControl`. `chaos/run.py` builds one around a local
stack of its own; `tests/test_chaos.py` around the test session's servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import httpx

TICKET_PREFIX = "riposte-graph-"
_OUR_ID = re.compile(r"chaos-[a-z]+-[0-9a-f]{6}-\d{5}")
_TICKET_NUMBER = re.compile(r"INC\d+")


# --- the world around the scenarios ----------------------------------------------------------


class StackControl(Protocol):
    """What the process-level scenarios do to the stack's parts."""

    def restart_prefect(self, down_seconds: float) -> None:
        """Stop the Prefect server, keep it down ``down_seconds``, start it on the same DB."""

    def kill_responder(self) -> None:
        """SIGKILL the responder (the process that runs the flows)."""

    def start_responder(self) -> None:
        """Start the responder again."""


@dataclass
class Harness:
    intake_url: str
    sandbox_url: str
    token: str
    prefect_cli: str
    say: Callable[[str], None] = print
    stack: StackControl | None = None
    reset_sandbox: bool = False
    """Forget the sandbox's state before each scenario (a stack of its own: yes; shared: no)."""


class Sandbox:
    """The sandbox's control endpoints: alerts, faults, and what the simulators recorded."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def close(self) -> None:
        self.http.close()

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def load(self, alerts: list[dict[str, Any]]) -> None:
        for start in range(0, len(alerts), 250):
            self.http.post(
                "/_sandbox/graph/alerts", json=alerts[start : start + 250]
            ).raise_for_status()

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        """The fault as the sandbox took it (a sandbox without some option drops it)."""
        r = self.http.post("/_sandbox/faults", json=spec)
        r.raise_for_status()
        fault: dict[str, Any] = r.json()
        return fault

    def remove_fault(self, fault_id: str) -> None:
        r = self.http.delete(f"/_sandbox/faults/{fault_id}")
        if r.status_code not in (200, 404):  # 404: used up (`times`) already
            r.raise_for_status()

    def faults(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self.http.get("/_sandbox/faults").json()
        return listing

    def incidents(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.http.get("/_sandbox/servicenow/incidents").json()
        return records

    def messages(self) -> list[tuple[str, str]]:
        """Every chat message as (channel kind, text of the whole message)."""
        out = []
        for kind in ("slack", "teams"):
            for message in self.http.get(f"/_sandbox/{kind}/messages").json():
                out.append((kind, json.dumps(message)))
        return out

    def graph_alerts(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.http.get("/_sandbox/graph/alerts").json()}

    def jira_issues(self) -> list[dict[str, Any]]:
        issues: list[dict[str, Any]] = self.http.get("/_sandbox/jira/issues").json()
        return issues

    def jira_search_lag(self, seconds: float | None = None) -> float:
        """The Jira search's lag behind writes: set it when ``seconds`` is given; the old value."""
        old = float(self.http.get("/_sandbox/jira/settings").json()["search_lag_seconds"])
        if seconds is not None:
            self.http.post(
                "/_sandbox/jira/settings", json={"search_lag_seconds": seconds}
            ).raise_for_status()
        return old


def make_alerts(scenario: str, count: int) -> list[dict[str, Any]]:
    """``count`` Graph alerts with ids unique to this scenario run (every mention rewritten)."""
    from riposte.sandbox.samples import sample_graph_alerts

    template = sample_graph_alerts(datetime.now(UTC))[0]
    text = json.dumps(template)
    tag = f"chaos-{re.sub('[^a-z]', '', scenario)}-{os.urandom(3).hex()}"
    alerts = []
    for i in range(count):
        alert = json.loads(text.replace(template["id"], f"{tag}-{i:05d}"))
        alert["incidentId"] = str(800000 + i)
        alerts.append(alert)
    return alerts


# --- sending like Defender's automation -------------------------------------------------------


@dataclass
class Delivery:
    status: int = -1
    run_id: str | None = None
    refused: int = 0  # 503s (and connection failures) before the answer


class Sender:
    """Posts alerts one per request from concurrent senders that honour 503 + Retry-After (and
    retry connection failures) until ``give_up_after`` seconds, as a Logic App's retry policy
    would."""

    def __init__(self, intake_url: str, token: str, give_up_after: float = 600.0) -> None:
        self.url = f"{intake_url}/alerts/graph"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.give_up_after = give_up_after
        self.accepted = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def post(self, alert: dict[str, Any]) -> Delivery:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=120)
        client: httpx.Client = self._local.client
        delivery = Delivery()
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            try:
                r = client.post(self.url, json=alert, headers=self.headers)
            except httpx.HTTPError:
                delivery.refused += 1
                time.sleep(1.0)
                continue
            delivery.status = r.status_code
            if r.status_code == 503:
                delivery.refused += 1
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code == 202:
                delivery.run_id = r.json()["accepted"][0]["flow_run_id"]
                with self._lock:
                    self.accepted += 1
            return delivery
        return delivery

    def post_all(self, alerts: list[dict[str, Any]], senders: int) -> dict[str, Delivery]:
        with ThreadPoolExecutor(senders, thread_name_prefix="sender") as pool:
            return dict(zip((a["id"] for a in alerts), pool.map(self.post, alerts), strict=True))


class Burst:
    """A burst posted in the background, so that a scenario can break things meanwhile."""

    def __init__(self, sender: Sender, alerts: list[dict[str, Any]], senders: int) -> None:
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


# --- what Prefect says about the runs ---------------------------------------------------------


def read_runs(run_ids: Iterable[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = sorted(set(run_ids))
    runs: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 200):
            chunk = [UUID(i) for i in ids[start : start + 200]]
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            ):
                runs[str(run.id)] = run
    return runs


def wait_final(
    run_ids: Iterable[str],
    timeout: float,
    stall: float | None = None,
    progress: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Wait until every run is in a final state, for ``timeout`` seconds at most, or until
    neither the runs' states nor ``progress()`` (what the external systems hold) changed for
    ``stall`` seconds; return the runs as they are then."""
    ids = set(run_ids)
    deadline = time.monotonic() + timeout
    seen: Any = None
    changed = time.monotonic()
    while True:
        try:
            runs = read_runs(ids)
        except Exception:  # the server restarting: ask again
            runs = {}
        if len(runs) == len(ids) and all(r.state and r.state.is_final() for r in runs.values()):
            return runs
        now = time.monotonic()
        if now > deadline:
            return runs
        if stall is not None and runs:
            current = (
                sorted((i, state_name(r)) for i, r in runs.items()),
                progress() if progress else None,
            )
            if current != seen:
                seen, changed = current, now
            elif now - changed > stall:
                return runs
        time.sleep(1.0)


def state_name(run: Any) -> str:
    return str(run.state.name) if run is not None and run.state is not None else "unknown"


def artifacts_of(run_ids: Iterable[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    ids = sorted(UUID(i) for i in set(run_ids))
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 50):  # a few artifacts a run; 200 is the API's most
            found += client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=ids[start : start + 50])
                ),
                limit=200,
            )
    return found


def task_states(run_ids: Iterable[str], name_like: str) -> Counter[str]:
    """How many task runs named like ``name_like`` of these flow runs are in each state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    ids = sorted(UUID(i) for i in set(run_ids))
    states: Counter[str] = Counter()
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 20):
            offset = 0
            while True:
                page = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[start : start + 20])),
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name_like)),
                    limit=200,
                    offset=offset,
                )
                states.update(state_name(t) for t in page)
                if len(page) < 200:
                    break
                offset += 200
    return states


def run_reconcile(timeout: float) -> list[dict[str, Any]]:
    """Run `reconcile_alerts` now, as its schedule would; return its summaries."""
    from prefect.deployments import run_deployment

    from riposte.settings import RECONCILE_DEPLOYMENT

    run = run_deployment(
        RECONCILE_DEPLOYMENT, parameters={"sources": ["graph"]}, timeout=0, as_subflow=False
    )
    done = wait_final([str(run.id)], timeout)[str(run.id)]  # type: ignore[union-attr]
    if not (done.state and done.state.is_completed()):
        raise RuntimeError(f"reconcile_alerts ended {state_name(done)}: {done.state.message}")
    return [s.model_dump() for s in done.state.result()]


def response_runs_since(since: datetime) -> list[Any]:
    """Every respond / respond-batch run created since ``since`` (those reconcile started)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    with get_client(sync_client=True) as client:
        runs: list[Any] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
            ),
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["respond", "respond-batch"])
            ),
            limit=200,
        )
    return runs


def retry_run(prefect_cli: str, run_id: str) -> str:
    """`prefect flow-run retry <id>`, as an operator types it; return its output on success."""
    done = subprocess.run(
        [prefect_cli, "flow-run", "retry", run_id],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect flow-run retry {run_id}: {done.stdout}{done.stderr}".strip())
    return done.stdout


def mark_crashed(run_id: str, message: str) -> None:
    """What an operator does in the UI for a run whose process died: mark it Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)


# --- counting -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the external systems hold for a scenario's alerts."""

    tickets: int = 0
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)
    messages: int = 0
    per_alert: dict[str, Counter[str]] = field(default_factory=dict)
    """Messages by channel kind, per alert."""
    comments: dict[str, int] = field(default_factory=dict)
    in_progress: int = 0


def tally(sandbox: Sandbox, alert_ids: list[str]) -> Tally:
    wanted = {f"{TICKET_PREFIX}{a}": a for a in alert_ids}
    tickets: Counter[str] = Counter()
    alert_of_ticket: dict[str, str] = {}
    for incident in sandbox.incidents():
        record = incident["record"]
        alert_id = wanted.get(str(record.get("correlation_id")))
        if alert_id is not None:
            tickets[alert_id] += 1
            alert_of_ticket[str(record.get("number"))] = alert_id
    per_alert: dict[str, Counter[str]] = {a: Counter() for a in alert_ids}
    ours = set(alert_ids)
    messages = 0
    for kind, text in sandbox.messages():
        named = {i for i in _OUR_ID.findall(text) if i in ours}
        named |= {alert_of_ticket[n] for n in _TICKET_NUMBER.findall(text) if n in alert_of_ticket}
        for alert_id in named:
            per_alert[alert_id][kind] += 1
        messages += bool(named)
    graph = sandbox.graph_alerts()
    return Tally(
        tickets=sum(tickets.values()),
        duplicates=sum(n - 1 for n in tickets.values() if n > 1),
        lost=[a for a in alert_ids if not tickets[a]],
        messages=messages,
        per_alert=per_alert,
        comments={a: len(graph.get(a, {}).get("comments") or []) for a in alert_ids},
        in_progress=sum(1 for a in alert_ids if graph.get(a, {}).get("status") == "inProgress"),
    )


# --- results ------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    scenario: str
    sent: int = 0
    tickets: int = 0
    duplicates: int = 0
    lost: int = 0
    messages: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.duplicates == 0 and self.lost == 0

    @property
    def result(self) -> str:
        if self.ok:
            return "pass"
        why = [
            f"{n} {what}" for n, what in ((self.lost, "lost"), (self.duplicates, "doubled")) if n
        ]
        if self.problems:
            why.append(f"{len(self.problems)} check{'s' if len(self.problems) > 1 else ''} failed")
        return f"FAIL ({', '.join(why)})"

    def count(self, t: Tally) -> None:
        self.tickets, self.duplicates, self.lost, self.messages = (
            t.tickets,
            t.duplicates,
            len(t.lost),
            t.messages,
        )


def _sample(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


class Scenario:
    """Book-keeping shared by the scenarios: alerts, sending, checks, the result row."""

    def __init__(
        self,
        h: Harness,
        name: str,
        count: int,
        shape: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.h = h
        self.name = name
        self.sandbox = Sandbox(h.sandbox_url)
        if h.reset_sandbox:
            self.sandbox.reset()
        self.alerts = make_alerts(name, count)
        if shape is not None:  # the scenario's own titles, incidents...
            shape(self.alerts)
        self.ids = [a["id"] for a in self.alerts]
        self.sandbox.load(self.alerts)
        self.sender = Sender(h.intake_url, h.token)
        self.result = ScenarioResult(name, sent=count)
        self.deliveries: dict[str, Delivery] = {}
        self.faults: list[str] = []
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.h.say(f"[{self.name} {time.monotonic() - self.started:5.0f}s] {text}")

    def fault(self, **spec: Any) -> dict[str, Any]:
        fault = self.sandbox.add_fault(**spec)
        self.faults.append(str(fault["id"]))
        return fault

    def clear(self, fault_id: str | None = None) -> None:
        for f in [fault_id] if fault_id else list(self.faults):
            self.sandbox.remove_fault(f)
            self.faults.remove(f)

    def problem(self, text: str) -> None:
        self.result.problems.append(text)

    def note(self, text: str) -> None:
        self.result.notes.append(text)
        self.say(text)

    def burst(self, senders: int) -> Burst:
        return Burst(self.sender, self.alerts, senders)

    def delivered(self, deliveries: dict[str, Delivery]) -> None:
        self.deliveries = deliveries
        statuses = Counter(d.status for d in deliveries.values())
        refused = sum(d.refused for d in deliveries.values())
        self.say(f"sent {len(deliveries)}: statuses {dict(statuses)}, {refused} refusals retried")
        if statuses.get(202, 0) != len(self.ids):
            self.problem(f"intake did not accept every alert: statuses {dict(statuses)}")

    @property
    def run_ids(self) -> set[str]:
        return {d.run_id for d in self.deliveries.values() if d.run_id}

    def runs_of_alerts(self) -> dict[str, list[str]]:
        """Run id -> the alerts it holds (as the intake answered)."""
        out: dict[str, list[str]] = {}
        for alert_id, d in self.deliveries.items():
            if d.run_id:
                out.setdefault(d.run_id, []).append(alert_id)
        return out

    def wait_runs(self, timeout: float, stall: float = 180.0) -> dict[str, Any]:
        """Wait for the scenario's runs to end; a run that is not over once nothing has moved
        for ``stall`` seconds (runs, tickets, messages, comments) fails a check."""

        def progress() -> tuple[int, int, int]:
            t = tally(self.sandbox, self.ids)
            return t.tickets, t.messages, sum(t.comments.values())

        runs = wait_final(self.run_ids, timeout, stall, progress)
        states = Counter(state_name(r) for r in runs.values())
        self.say(f"{len(self.run_ids)} runs: {dict(states)}")
        stuck = [i for i in self.run_ids if not (i in runs and runs[i].state.is_final())]
        if stuck:
            self.problem(
                f"{len(stuck)} runs never ended (nothing moved for {stall:.0f}s): "
                + _sample(f"{runs[i].name} {state_name(runs[i])}" for i in stuck if i in runs)
            )
        return runs

    def tally(self) -> Tally:
        t = tally(self.sandbox, self.ids)
        self.result.count(t)
        return t

    def check_once(self, t: Tally, *, messages: bool = True, comments: bool = True) -> None:
        """Exactly one ticket per alert (counted in the row), and at most one message per
        channel and one comment per alert; with ``messages``/``comments``, exactly one."""
        doubled = [a for a, c in t.per_alert.items() if any(n > 1 for n in c.values())]
        if doubled:
            self.problem(f"{len(doubled)} alerts got a message twice: {_sample(doubled)}")
        if messages:
            missing = [a for a, c in t.per_alert.items() if c["slack"] != 1 or c["teams"] != 1]
            if missing:
                self.problem(f"{len(missing)} alerts lack a Slack or Teams message")
        twice = [a for a, n in t.comments.items() if n > 1]
        if twice:
            self.problem(f"{len(twice)} alerts commented twice: {_sample(twice)}")
        if comments:
            none = [a for a, n in t.comments.items() if n == 0]
            if none:
                self.problem(f"{len(none)} alerts have no comment linking their ticket")
            if t.in_progress != len(self.ids):
                self.problem(f"{len(self.ids) - t.in_progress} alerts not marked in progress")
        if t.lost:
            self.say(f"lost (no ticket): {_sample(t.lost)}")

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> bool:
        """Clear the scenario's faults; an error ends the scenario as a failed check, with
        whatever was counted until then."""
        try:
            for fault_id in list(self.faults):
                self.clear(fault_id)
            if exc is not None and isinstance(exc, Exception):
                self.problem(f"could not finish: {type(exc).__name__}: {exc}"[:500])
                with contextlib.suppress(Exception):
                    self.tally()
        finally:
            self.sandbox.close()
            self.result.seconds = time.monotonic() - self.started
            self.say(f"{self.result.result} in {self.result.seconds:.0f}s")
        return exc is None or isinstance(exc, Exception)

    def reconcile(self, lost: list[str], timeout: float) -> None:
        """What the design does for alerts left without an answer: the scheduled
        `reconcile_alerts` (run now rather than within its 10-minute interval). Notes what it
        found and started, and which of the ``lost`` alerts it did not see as unanswered."""
        since = datetime.now(UTC)
        summaries = run_reconcile(timeout)
        unanswered = {a for s in summaries for a in s["unanswered"]}
        failed = {a for s in summaries for a in s.get("failed", [])}
        gave_up = {a for s in summaries for a in s.get("gave_up", [])}
        mine = set(self.ids)
        self.note(
            f"reconcile_alerts: {sum(s['checked'] for s in summaries)} open alerts checked; of "
            f"this scenario's, {len(unanswered & mine)} never answered and "
            f"{len(failed & mine)} whose responses failed, answered again; "
            f"{len(gave_up & mine)} given up; {sum(s['started'] for s in summaries)} runs started"
        )
        started = [str(r.id) for r in response_runs_since(since)]
        if started:
            runs = wait_final(started, timeout)
            self.say(f"runs started by reconcile: {dict(Counter(map(state_name, runs.values())))}")
        missed = [a for a in lost if a not in unanswered | failed]
        if missed:
            self.note(
                f"reconcile_alerts did not answer again {len(missed)} alerts without a ticket "
                f"(given up: {len(set(missed) & gave_up)}; the others had a run in hand)"
            )

    def wait_chat_back(self, timeout: float) -> None:
        """An operator retries once Slack and Teams are back: wait until no fault is left on
        them (another scenario may share the sandbox and still be breaking them)."""
        deadline = time.monotonic() + timeout
        while any(f["service"] in ("slack", "teams") for f in self.sandbox.faults()):
            if time.monotonic() > deadline:
                raise TimeoutError("Slack or Teams still failing")
            time.sleep(1.0)

    def operator_retry(self, timeout: float) -> None:
        """What is left to an operator: Retry every failed run. Reported as a note; the row
        keeps what the system did by itself."""
        runs = read_runs(self.run_ids)
        failed = [
            i for i, r in runs.items() if r.state and (r.state.is_failed() or r.state.is_crashed())
        ]
        for run_id in failed:
            retry_run(self.h.prefect_cli, run_id)
        states = Counter(state_name(r) for r in wait_final(failed, timeout).values())
        after = tally(self.sandbox, self.ids)
        self.note(
            f"then an operator retried the {len(failed)} failed runs ({dict(states)}): "
            f"{after.tickets} tickets, {after.duplicates} duplicates, {len(after.lost)} alerts "
            "without a ticket (not counted in the row)"
        )


def explain_unanswered(s: Scenario, lost: list[str], runs: dict[str, Any]) -> None:
    """Why alerts are left without a ticket: the state of the runs that held them."""
    holders = s.runs_of_alerts()
    by_state: Counter[str] = Counter()
    for run_id, alert_ids in holders.items():
        n = len(set(alert_ids) & set(lost))
        if n:
            by_state[state_name(runs.get(run_id))] += n
    if by_state:
        s.note(f"{len(lost)} alerts without a ticket; the runs that held them: {dict(by_state)}")


# --- the scenarios ------------------------------------------------------------------------------


def itsm_down(
    h: Harness,
    alerts: int = 150,
    senders: int = 10,
    outage: float = 120.0,
    timeout: float = 900.0,
) -> ScenarioResult:
    """ServiceNow answers 503 for ``outage`` seconds, starting a third of the way into a burst.
    Every alert must end with exactly one ticket once it is back, through what the design
    provides: the clients' and tasks' retries, then the scheduled reconcile."""
    s = Scenario(h, "itsm-down", alerts)
    with s:
        burst = s.burst(senders)
        burst.wait_accepted(max(1, alerts // 3))
        # `for_seconds`: the sandbox ends it on time whatever we are doing; cleared below too.
        fault = s.fault(service="servicenow", status=503, for_seconds=outage)["id"]
        down_at = time.monotonic()
        s.say(f"ServiceNow answers 503 from now, for {outage:.0f}s")
        s.delivered(burst.join())
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
        s.clear(fault)
        s.say(f"ServiceNow is back (it was down {outage:.0f}s, from {down_at - s.started:.0f}s)")
        runs = s.wait_runs(timeout)
        t = s.tally()
        s.note(
            f"after the outage, before reconcile: {len(t.lost)} alerts without a ticket; "
            f"runs {dict(Counter(state_name(r) for r in runs.values()))}"
        )
        if t.lost:
            explain_unanswered(s, t.lost, runs)
            s.reconcile(t.lost, timeout)
        t = s.tally()
        s.check_once(t, messages=not t.lost, comments=not t.lost)
        if t.lost:
            s.operator_retry(timeout)
    return s.result


def prefect_restart(
    h: Harness,
    alerts: int = 150,
    senders: int = 10,
    down: float = 10.0,
    timeout: float = 900.0,
) -> ScenarioResult:
    """The Prefect server is stopped a third of the way into a burst and started again on the
    same SQLite database ``down`` seconds later. The senders retry the intake's 503s."""
    if h.stack is None:
        raise RuntimeError("prefect-restart needs a stack whose processes it can stop")
    s = Scenario(h, "prefect-restart", alerts)
    with s:
        burst = s.burst(senders)
        burst.wait_accepted(max(1, alerts // 3))
        s.say(f"stopping the Prefect server for {down:.0f}s")
        h.stack.restart_prefect(down)
        s.say("Prefect server is back")
        s.delivered(burst.join())
        refused = sum(d.refused for d in s.deliveries.values())
        s.note(
            f"{refused} posts got a 503 (or no answer) from the intake; the senders retried them"
        )
        runs = s.wait_runs(timeout)
        ended_badly = [
            i for i, r in runs.items() if r.state.is_final() and not r.state.is_completed()
        ]
        if ended_badly:
            s.problem(
                f"{len(ended_badly)} runs did not complete: "
                + _sample(f"{runs[i].name} {state_name(runs[i])}" for i in ended_badly)
            )
        t = s.tally()
        if t.lost:
            explain_unanswered(s, t.lost, runs)
            s.reconcile(t.lost, timeout)
            t = s.tally()
        s.check_once(t)
    return s.result


def _failure_reports(s: Scenario, runs: dict[str, Any]) -> dict[str, str]:
    """What each alert's run says went wrong for it: a single run's state message, or the row
    of its batch's table artifact."""
    reports: dict[str, str] = {}
    holders = s.runs_of_alerts()
    rows: dict[str, str] = {}
    for artifact in artifacts_of(holders):
        data = artifact.data
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                continue
        if isinstance(data, list):
            for row in data:
                if isinstance(row, dict) and "alert" in row:
                    rows[str(row["alert"])] = str(row.get("result", ""))
    for run_id, alert_ids in holders.items():
        run = runs.get(run_id)
        message = (run.state.message or "") if run is not None and run.state else ""
        for alert_id in alert_ids:
            reports[alert_id] = rows.get(f"graph-{alert_id}") or message
    return reports


def chat_down(
    h: Harness, alerts: int = 100, senders: int = 10, timeout: float = 900.0
) -> ScenarioResult:
    """Slack and Teams answer 500 to every message. Every alert still gets its ticket and its
    alert comment, and its run ends Failed saying which messages were not sent."""
    s = Scenario(h, "chat-down", alerts)
    with s:
        s.fault(service="slack", status=500)
        s.fault(service="teams", status=500)
        s.delivered(s.sender.post_all(s.alerts, senders))
        runs = s.wait_runs(timeout)
        not_failed = [i for i, r in runs.items() if not r.state.is_failed()]
        if not_failed:
            s.problem(f"{len(not_failed)} runs did not end Failed")
        t = s.tally()
        s.check_once(t, messages=False)
        if t.messages:
            s.problem(f"{t.messages} messages got through a total chat outage")
        reports = _failure_reports(s, runs)
        silent = [
            a
            for a in s.ids
            if not all(w in reports.get(a, "").lower() for w in ("slack", "teams", "not sent"))
        ]
        if silent:
            s.problem(
                f"{len(silent)} alerts' runs do not say that the Slack and Teams messages were "
                f"not sent, e.g. {reports.get(silent[0], '')[:160]!r}"
            )
        else:
            s.note(f"every run says what was not sent, e.g. {reports[s.ids[0]][:300]!r}")
    return s.result


def writeback_rejected(
    h: Harness, alerts: int = 100, senders: int = 10, timeout: float = 900.0
) -> ScenarioResult:
    """Defender refuses the write-back (Graph PATCH of the alert and its comment) with 403.
    Tickets and messages exist once; every run ends Failed with a message naming the system
    and the reason."""
    s = Scenario(h, "writeback-rejected", alerts)
    with s:
        tag = s.ids[0].rsplit("-", 1)[0]  # the alert ids of this run only
        s.fault(service="graph", method="PATCH", path_contains=tag, status=403)
        s.fault(service="graph", method="POST", path_contains=tag, status=403)  # comments
        s.delivered(s.sender.post_all(s.alerts, senders))
        runs = s.wait_runs(timeout)
        not_failed = [i for i, r in runs.items() if not r.state.is_failed()]
        if not_failed:
            s.problem(f"{len(not_failed)} runs did not end Failed")
        t = s.tally()
        s.check_once(t, comments=False)
        if any(t.comments.values()):
            s.problem("comments were written although Defender refused them")
        unclear = []
        for run_id in s.runs_of_alerts():
            run = runs.get(run_id)
            message = (run.state.message or "") if run is not None and run.state else ""
            if not ("graph" in message.lower() and ("403" in message or "forbidden" in message)):
                unclear.append(f"{state_name(run)} {message[:120]!r}")
        if unclear:
            s.problem(
                f"{len(unclear)} runs end without naming the system and the reason in their "
                f"state message, e.g. {unclear[0]}"
            )
        else:
            message = runs[next(iter(s.runs_of_alerts()))].state.message or ""
            _, _, first = message.partition("first failure: ")
            s.note(f"runs end with e.g. {(first or message)[-200:]!r}")
    return s.result


def retry_failed(
    h: Harness, alerts: int = 100, senders: int = 10, timeout: float = 900.0
) -> ScenarioResult:
    """Slack answers 500 until the runs have failed; then the operator retries each failed run
    with `prefect flow-run retry`. No second ticket, comment or message; Slack gets its one."""
    s = Scenario(h, "retry-failed", alerts)
    with s:
        fault = s.fault(service="slack", status=500)["id"]
        s.delivered(s.sender.post_all(s.alerts, senders))
        runs = s.wait_runs(timeout)
        failed = [i for i, r in runs.items() if r.state.is_failed()]
        if len(failed) != len(runs):
            s.problem(f"{len(runs) - len(failed)} runs did not fail while Slack was down")
        before = s.tally()
        s.clear(fault)
        s.wait_chat_back(timeout)
        s.say(f"Slack is back; retrying {len(failed)} failed runs")
        for run_id in failed:
            retry_run(h.prefect_cli, run_id)
        runs = wait_final(failed, timeout)
        not_completed = [i for i, r in runs.items() if not r.state.is_completed()]
        if not_completed:
            s.problem(f"{len(not_completed)} retried runs did not complete")
        t = s.tally()
        if t.tickets != before.tickets:
            s.problem(f"the retries changed the tickets: {before.tickets} -> {t.tickets}")
        s.check_once(t)
        if failed:
            states = task_states(failed, "ticket ")
            s.note(f"`ticket` task runs of the retried runs (both attempts): {dict(states)}")
    return s.result


def _wait_tickets(s: Scenario, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (made := tally(s.sandbox, s.ids).tickets) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return made


def sigkill_mid_task(
    h: Harness,
    alerts: int = 100,
    senders: int = 10,
    hold: float = 60.0,
    timeout: float = 1800.0,
) -> ScenarioResult:
    """The responder is SIGKILLed while ServiceNow holds its answers to ticket creations (the
    sandbox's `after_handling` fault: the tickets exist, the tasks never hear of them). The
    responder is started again and the interrupted runs are marked Crashed and retried, as an
    operator would; the re-runs must find the tickets instead of creating others."""
    if h.stack is None:
        raise RuntimeError("sigkill-mid-task needs a stack whose processes it can stop")
    s = Scenario(h, "sigkill-mid-task", alerts)
    with s:
        burst = s.burst(senders)
        burst.wait_accepted(max(1, alerts // 3))
        # A few responses finish first: their steps must come back Cached in the re-runs.
        normal = _wait_tickets(s, 3, 120)
        fault = s.fault(service="servicenow", method="POST", after_handling=True, delay=hold)
        if fault.get("after_handling"):
            made = _wait_tickets(s, normal + 5, hold / 2)
            s.say(f"{made - normal} ticket creations handled, their answers held")
        else:
            s.note(
                "the sandbox has no `after_handling` fault: ticket creations are held before "
                "they are handled instead, so the kill lands before those tickets exist"
            )
            time.sleep(min(hold / 2, 5.0))
        at_kill = s.tally()
        h.stack.kill_responder()
        killed_at = time.monotonic()
        s.say(f"responder SIGKILLed with {at_kill.tickets} tickets made")
        s.clear()
        s.delivered(burst.join())
        h.stack.start_responder()
        runs = read_runs(s.run_ids)
        interrupted = [
            i for i, r in runs.items() if r.state and (r.state.is_running() or r.state.is_pending())
        ]
        for run_id in interrupted:
            mark_crashed(run_id, "the responder running it was killed (chaos)")
            retry_run(h.prefect_cli, run_id)
        s.note(
            f"{at_kill.tickets} tickets existed at the kill; {len(interrupted)} runs were "
            "Running or Pending in the killed responder: marked Crashed and retried"
        )
        runs = s.wait_runs(timeout, stall=timeout)
        s.note(
            f"every run ended {time.monotonic() - killed_at:.0f}s after the kill; `ticket` task "
            f"runs of the retried runs (both attempts): {dict(task_states(interrupted, 'ticket '))}"
        )
        not_completed = [i for i, r in runs.items() if not r.state.is_completed()]
        if not_completed:
            s.problem(f"{len(not_completed)} runs did not complete after the re-run")
        t = s.tally()
        if t.lost:
            explain_unanswered(s, t.lost, runs)
        s.check_once(t)
    return s.result


SEARCH_LAG_TITLE = "[chaos search-lag] "
_JIRA_KEY = re.compile(r"\bSEC-\d+\b")


def search_lag(
    h: Harness,
    alerts: int = 100,
    senders: int = 10,
    lag: float = 30.0,
    group: int = 5,
    timeout: float = 900.0,
) -> ScenarioResult:
    """Jira's search shows an issue only ``lag`` seconds after it was written (Jira Cloud's is
    eventually consistent) while a burst arrives; every ``group`` alerts share one Defender
    incident, and the chaos policy's `search-lag` rule gives each incident one Jira issue. No
    incident may get a second issue, no alert a second note, no issue a second message per
    channel; every alert is on its incident's issue (as the one that opened it or as a note)."""
    base = 500_000_000 + int.from_bytes(os.urandom(3), "big") * 1000

    def shape(batch: list[dict[str, Any]]) -> None:
        for i, alert in enumerate(batch):
            alert["title"] = SEARCH_LAG_TITLE + str(alert["title"])
            alert["incidentId"] = str(base + i // group)

    s = Scenario(h, "search-lag", alerts, shape)
    incident_of = {a["id"]: str(a["incidentId"]) for a in s.alerts}
    incidents = sorted(set(incident_of.values()))
    with s:
        before = s.sandbox.jira_search_lag(lag)
        try:
            s.say(f"Jira search lags {lag:.0f}s; {alerts} alerts in {len(incidents)} incidents")
            s.delivered(s.sender.post_all(s.alerts, senders))
            runs = s.wait_runs(timeout)
        finally:
            s.sandbox.jira_search_lag(before)
        # What counts is in Jira and the chat logs, below: a batch run may also hold another
        # scenario's alerts (in tests/test_chaos.py, a ServiceNow outage's) and fail for them.
        not_completed = [i for i, r in runs.items() if not r.state.is_completed()]
        if not_completed:
            s.note(f"{len(not_completed)} runs holding these alerts did not complete")
        label_of = {f"riposte-incident-graph-{i}": i for i in incidents}
        issues: dict[str, list[dict[str, Any]]] = {i: [] for i in incidents}
        for issue in s.sandbox.jira_issues():
            for label in issue["fields"].get("labels") or []:
                if label in label_of:
                    issues[label_of[label]].append(issue)
        made = sum(len(v) for v in issues.values())
        s.result.tickets = made
        s.result.duplicates = sum(len(v) - 1 for v in issues.values() if len(v) > 1)
        missing = [i for i, v in issues.items() if not v]
        key_of = {i: v[0]["key"] for i, v in issues.items() if v}
        # An alert is on its issue once: the opener in the description ("Alert id: ..."), the
        # others as one note each (every note of Riposte's ends with the alert's key).
        on_issue: Counter[str] = Counter()
        for incident, found in issues.items():
            for issue in found:
                description = json.dumps(issue["fields"].get("description"))
                notes = json.dumps(issue["comments"])
                for alert_id, of in incident_of.items():
                    if of == incident:
                        on_issue[alert_id] += alert_id in description
                        on_issue[alert_id] += notes.count(
                            f"Riposte alert key: riposte-graph-{alert_id}"
                        )
        lost = [a for a in s.ids if on_issue[a] == 0]
        twice = [a for a in s.ids if on_issue[a] > 1]
        s.result.lost = len(lost)
        if missing:
            s.problem(f"{len(missing)} incidents have no Jira issue: {_sample(missing)}")
        if twice:
            s.problem(f"{len(twice)} alerts are on their issue twice: {_sample(twice)}")
        per_issue: Counter[tuple[str, str]] = Counter()
        messages = 0
        keys = set(key_of.values())
        for kind, text in s.sandbox.messages():
            named = {k for k in _JIRA_KEY.findall(text) if k in keys}
            for key in named:
                per_issue[(key, kind)] += 1
            messages += bool(named)
        s.result.messages = messages
        doubled = sorted({k for (k, _), n in per_issue.items() if n > 1})
        if doubled:
            s.problem(f"{len(doubled)} issues announced twice on a channel: {_sample(doubled)}")
        unannounced = [k for k in keys if not (per_issue[(k, "slack")] and per_issue[(k, "teams")])]
        if unannounced:
            s.problem(f"{len(unannounced)} issues without a Slack or Teams message")
        s.note(
            f"{made} issues for {len(incidents)} incidents ({s.result.duplicates} duplicates), "
            f"{sum(on_issue.values())} alert mentions for {alerts} alerts, {messages} messages"
        )
    return s.result


SYNC_RUN = "from riposte.flows.sync import sync_tickets; sync_tickets()"


def ticket_sync(
    h: Harness,
    alerts: int = 50,
    senders: int = 10,
    outage: float = 60.0,
    timeout: float = 900.0,
) -> ScenarioResult:
    """The tickets of ``alerts`` alerts are resolved by an analyst while Defender answers 503
    for ``outage`` seconds, and a `sync_tickets` run is SIGKILLed half-way; sync runs follow
    until they apply everything. Afterwards every alert is resolved once, with one comment from
    the sync, its ticket carries one note of the sync, and nothing was echoed back."""
    s = Scenario(h, "ticket-sync", alerts)
    with s:
        s.delivered(s.sender.post_all(s.alerts, senders))
        s.wait_runs(timeout)
        t = s.tally()
        numbers = {
            str(i["record"]["correlation_id"]).removeprefix(TICKET_PREFIX): str(
                i["record"]["number"]
            )
            for i in s.sandbox.incidents()
            if str(i["record"]["correlation_id"]).removeprefix(TICKET_PREFIX) in set(s.ids)
        }
        comments_before = dict(t.comments)
        # Only this scenario's alerts (their ids share a prefix): others may share the sandbox.
        s.fault(service="graph", status=503, for_seconds=outage, path_contains=s.ids[0][:-5])
        for alert_id in s.ids:
            if alert_id in numbers:
                s.sandbox.http.post(
                    f"/_sandbox/servicenow/incidents/{numbers[alert_id]}/resolve",
                    json={
                        "close_code": "Solved (Permanently)",
                        "close_notes": "Cleaned up (chaos)",
                        "user": "chaos.analyst",
                    },
                ).raise_for_status()
        s.say(f"{len(numbers)} tickets resolved; Defender answers 503 for {outage:.0f}s")
        killed = subprocess.Popen(
            [_python(), "-c", SYNC_RUN],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        time.sleep(min(outage / 2, 8.0))
        killed.kill()
        killed.wait(30)
        s.say("a sync run SIGKILLed mid-run")
        deadline = time.monotonic() + timeout
        runs = 0
        while True:
            runs += 1
            done = subprocess.run(
                [_python(), "-c", SYNC_RUN],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=os.environ.copy(),
            )
            graph = s.sandbox.graph_alerts()
            resolved = [a for a in s.ids if graph.get(a, {}).get("status") == "resolved"]
            if done.returncode == 0 and len(resolved) == len(numbers):
                break
            if time.monotonic() > deadline:
                s.problem(f"after {runs} sync runs, {len(resolved)} of {len(numbers)} resolved")
                break
            time.sleep(2.0)
        s.note(f"{runs} sync runs after the kill to apply everything")
        graph = s.sandbox.graph_alerts()
        sync_comments = {
            a: [
                c
                for c in (graph.get(a, {}).get("comments") or [])
                if "Resolved because" in str(c.get("comment"))
            ]
            for a in s.ids
        }
        resolved_once = [a for a, c in sync_comments.items() if len(c) == 1]
        if len(resolved_once) != len(numbers):
            twice = [a for a, c in sync_comments.items() if len(c) > 1]
            none = [a for a, c in sync_comments.items() if not c]
            s.problem(f"sync comments: {len(twice)} alerts twice, {len(none)} none")
        wrong = [
            a
            for a in s.ids
            if (graph.get(a, {}).get("classification"), graph.get(a, {}).get("status"))
            != ("truePositive", "resolved")
        ]
        if wrong:
            s.problem(f"{len(wrong)} alerts not resolved as truePositive: {_sample(wrong)}")
        notes = {
            str(i["record"]["number"]): [str(e.get("value", "")) for e in i.get("journal", [])]
            for i in s.sandbox.incidents()
        }
        applied = [
            n for n in numbers.values() if sum("Riposte resolved" in x for x in notes[n]) == 1
        ]
        echoed = [n for n in numbers.values() if any("in Defender (now" in x for x in notes[n])]
        if len(applied) != len(numbers):
            s.problem(f"{len(numbers) - len(applied)} tickets without exactly one sync note")
        if echoed:
            s.problem(f"{len(echoed)} tickets got an alert change echoed back: {_sample(echoed)}")
        other = [
            a
            for a in s.ids
            if len(graph.get(a, {}).get("comments") or []) != comments_before.get(a, 0) + 1
        ]
        if other:
            s.problem(f"{len(other)} alerts got another number of comments than one")
        s.note(
            f"{len(resolved_once)} alerts resolved with one comment each, {len(applied)} tickets "
            f"with one sync note, {len(echoed)} echoes"
        )
        s.result.count(t)
    return s.result


def _python() -> str:
    import sys

    return sys.executable


SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "itsm-down": itsm_down,
    "prefect-restart": prefect_restart,
    "chat-down": chat_down,
    "writeback-rejected": writeback_rejected,
    "sigkill-mid-task": sigkill_mid_task,
    "retry-failed": retry_failed,
    "search-lag": search_lag,
    "ticket-sync": ticket_sync,
}

COLUMNS = ("scenario", "alerts sent", "tickets", "duplicates", "lost", "messages", "result")


def table(results: list[ScenarioResult]) -> str:
    rows = [
        (r.scenario, r.sent, r.tickets, r.duplicates, r.lost, r.messages, r.result) for r in results
    ]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
