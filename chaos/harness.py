"""The chaos scenarios' world and book-keeping: the harness, the alerts, the counting, the result.

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
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from chaos.runs import (
    artifacts_of,
    read_runs,
    response_runs_since,
    retry_run,
    run_reconcile,
    runs_holding,
    state_name,
    wait_final,
)
from riposte.sandbox.driver import (
    TICKET_PREFIX,
    AlertSender,
    Burst,
    Delivery,
    SandboxClient,
    graph_alerts,
)

_OUR_ID = re.compile(r"chaos-[a-z]+-[0-9a-f]{6}-\d{5}")
_TICKET_NUMBER = re.compile(r"INC\d+")


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


def make_alerts(scenario: str, count: int) -> list[dict[str, Any]]:
    """``count`` Graph alerts with ids unique to this scenario run (every mention rewritten)."""
    tag = f"chaos-{re.sub('[^a-z]', '', scenario)}-{os.urandom(3).hex()}"
    return graph_alerts([f"{tag}-{i:05d}" for i in range(count)], 800000, rename_everywhere=True)


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


def tally(sandbox: SandboxClient, alert_ids: list[str]) -> Tally:
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


def first_few(items: Iterable[str], n: int = 3) -> str:
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
        self.sandbox = SandboxClient(h.sandbox_url)
        if h.reset_sandbox:
            self.sandbox.reset()
        self.alerts = make_alerts(name, count)
        if shape is not None:  # the scenario's own titles, incidents...
            shape(self.alerts)
        self.ids = [a["id"] for a in self.alerts]
        self.sandbox.load(self.alerts)
        # As a Logic App's retry policy would: 503s and connection failures, for 10 minutes.
        self.sender = AlertSender(h.intake_url, token=h.token, give_up_after=600.0)
        self.result = ScenarioResult(name, sent=count)
        self.deliveries: dict[str, Delivery] = {}
        self.faults: list[str] = []
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC)

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
        """The alerts posted in the background, returned once a third of them are accepted."""
        burst = Burst(self.sender, self.alerts, senders)
        burst.wait_accepted(max(1, len(self.ids) // 3))
        return burst

    def send(self, senders: int) -> None:
        """Post every alert from ``senders`` senders at once, and see that all were accepted."""
        self.delivered(self.sender.post_all(self.alerts, senders))

    def delivered(self, deliveries: dict[str, Delivery]) -> None:
        self.deliveries = deliveries
        statuses = Counter(d.status for d in deliveries.values())
        refused = sum(d.refused for d in deliveries.values())
        self.say(f"sent {len(deliveries)}: statuses {dict(statuses)}, {refused} refusals retried")
        if statuses.get(202, 0) != len(self.ids):
            self.problem(f"intake did not accept every alert: statuses {dict(statuses)}")

    def resolve_runs(self, timeout: float = 0.0) -> int:
        """Find in Prefect the runs of the alerts the intake answered `queued` (their runs are
        created after the answer), waiting up to ``timeout`` seconds for them to exist; how many
        accepted alerts still have none."""
        deadline = time.monotonic() + timeout
        while True:
            missing = {
                alert_id
                for alert_id, d in self.deliveries.items()
                if d.status == 202 and d.run_id is None
            }
            if missing:
                with contextlib.suppress(Exception):  # the server restarting: ask again
                    for alert_id, run_id in runs_holding(missing, self.started_at).items():
                        self.deliveries[alert_id].run_id = run_id
                        missing.discard(alert_id)
            if not missing or time.monotonic() >= deadline:
                return len(missing)
            time.sleep(1.0)

    @property
    def run_ids(self) -> set[str]:
        self.resolve_runs()
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

        unstarted = self.resolve_runs(timeout=min(timeout, 300.0))
        if unstarted:
            self.problem(f"{unstarted} accepted alerts have no response run")
        runs = wait_final(self.run_ids, timeout, stall, progress)
        states = Counter(state_name(r) for r in runs.values())
        self.say(f"{len(self.run_ids)} runs: {dict(states)}")
        stuck = [i for i in self.run_ids if not (i in runs and runs[i].state.is_final())]
        if stuck:
            self.problem(
                f"{len(stuck)} runs never ended (nothing moved for {stall:.0f}s): "
                + first_few(f"{runs[i].name} {state_name(runs[i])}" for i in stuck if i in runs)
            )
        return runs

    def check_runs(
        self, runs: dict[str, Any], ended: Callable[[Any], bool], what: str
    ) -> list[str]:
        """The runs whose state is not as ``ended`` says; a failed check "<how many> <what>"
        when there are some."""
        wrong = [i for i, r in runs.items() if not ended(r.state)]
        if wrong:
            self.problem(f"{len(wrong)} {what}")
        return wrong

    def tally_tickets(self) -> int:
        """How many tickets the alerts have now (not counted in the row)."""
        return tally(self.sandbox, self.ids).tickets

    def wait_tickets(self, at_least: int, timeout: float) -> int:
        """Wait (at most ``timeout`` seconds) until the alerts have ``at_least`` tickets; how many
        they have."""
        deadline = time.monotonic() + timeout
        while (made := self.tally_tickets()) < at_least and time.monotonic() < deadline:
            time.sleep(0.2)
        return made

    def failure_reports(self, runs: dict[str, Any]) -> dict[str, str]:
        """What each alert's run says went wrong for it: a single run's state message, or the row
        of its batch's table artifact."""
        reports: dict[str, str] = {}
        holders = self.runs_of_alerts()
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

    def tally(self) -> Tally:
        t = tally(self.sandbox, self.ids)
        self.result.count(t)
        return t

    def check_once(self, t: Tally, *, messages: bool = True, comments: bool = True) -> None:
        """Exactly one ticket per alert (counted in the row), and at most one message per
        channel and one comment per alert; with ``messages``/``comments``, exactly one."""
        doubled = [a for a, c in t.per_alert.items() if any(n > 1 for n in c.values())]
        if doubled:
            self.problem(f"{len(doubled)} alerts got a message twice: {first_few(doubled)}")
        if messages:
            missing = [a for a, c in t.per_alert.items() if c["slack"] != 1 or c["teams"] != 1]
            if missing:
                self.problem(f"{len(missing)} alerts lack a Slack or Teams message")
        twice = [a for a, n in t.comments.items() if n > 1]
        if twice:
            self.problem(f"{len(twice)} alerts commented twice: {first_few(twice)}")
        if comments:
            none = [a for a, n in t.comments.items() if n == 0]
            if none:
                self.problem(f"{len(none)} alerts have no comment linking their ticket")
            if t.in_progress != len(self.ids):
                self.problem(f"{len(self.ids) - t.in_progress} alerts not marked in progress")
        if t.lost:
            self.say(f"lost (no ticket): {first_few(t.lost)}")

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

    def explain_unanswered(self, lost: list[str], runs: dict[str, Any]) -> None:
        """Why alerts are left without a ticket: the state of the runs that held them."""
        holders = self.runs_of_alerts()
        by_state: Counter[str] = Counter()
        for run_id, alert_ids in holders.items():
            n = len(set(alert_ids) & set(lost))
            if n:
                by_state[state_name(runs.get(run_id))] += n
        if by_state:
            self.note(
                f"{len(lost)} alerts without a ticket; the runs that held them: {dict(by_state)}"
            )

    def answer_lost(self, lost: list[str], runs: dict[str, Any], timeout: float) -> None:
        """Alerts without a ticket: why (`explain_unanswered`), then the design's answer to
        them (`reconcile`)."""
        self.explain_unanswered(lost, runs)
        self.reconcile(lost, timeout)

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


COLUMNS = ("scenario", "alerts sent", "tickets", "duplicates", "lost", "messages", "result")


def table(results: list[ScenarioResult]) -> str:
    rows = [
        (r.scenario, r.sent, r.tickets, r.duplicates, r.lost, r.messages, r.result) for r in results
    ]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
