"""The chaos scenarios: each injects one failure into a running stack while alerts arrive, lets
the system recover as it is designed to, and counts what came out at the other end.

What a scenario stands on (the harness, the alerts, the counting, the result row) is in
`chaos/harness.py`; what Prefect says about the runs, in `chaos/runs.py`. `chaos/run.py` runs
these scenarios around a local stack of its own; `tests/test_chaos.py` imports them (and
`Harness`, `ScenarioResult` and `table`, from here) around the test session's servers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from chaos.harness import Harness, Scenario, ScenarioResult, first_few, table
from chaos.runs import (
    mark_crashed,
    read_runs,
    retry_run,
    state_name,
    task_states,
    wait_final,
)
from riposte.sandbox.driver import TICKET_PREFIX

__all__ = ["SCENARIOS", "Harness", "ScenarioResult", "table"]


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
            s.answer_lost(t.lost, runs, timeout)
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
    same SQLite database ``down`` seconds later. The intake keeps taking alerts into its
    journal and creates their runs once Prefect is back; a sender retries what had no answer."""
    if h.stack is None:
        raise RuntimeError("prefect-restart needs a stack whose processes it can stop")
    s = Scenario(h, "prefect-restart", alerts)
    with s:
        burst = s.burst(senders)
        s.say(f"stopping the Prefect server for {down:.0f}s")
        h.stack.restart_prefect(down)
        s.say("Prefect server is back")
        s.delivered(burst.join())
        refused = sum(d.refused for d in s.deliveries.values())
        s.note(
            f"{refused} posts got a 503 (or no answer) from the intake; the senders retried them; "
            f"{sum(d.run_id is None for d in s.deliveries.values())} answered queued"
        )
        runs = s.wait_runs(timeout)
        ended_badly = [
            i for i, r in runs.items() if r.state.is_final() and not r.state.is_completed()
        ]
        if ended_badly:
            s.problem(
                f"{len(ended_badly)} runs did not complete: "
                + first_few(f"{runs[i].name} {state_name(runs[i])}" for i in ended_badly)
            )
        t = s.tally()
        if t.lost:
            s.answer_lost(t.lost, runs, timeout)
            t = s.tally()
        s.check_once(t)
    return s.result


def chat_down(
    h: Harness, alerts: int = 100, senders: int = 10, timeout: float = 900.0
) -> ScenarioResult:
    """Slack and Teams answer 500 to every message. Every alert still gets its ticket and its
    alert comment, and its run ends Failed saying which messages were not sent."""
    s = Scenario(h, "chat-down", alerts)
    with s:
        s.fault(service="slack", status=500)
        s.fault(service="teams", status=500)
        s.send(senders)
        runs = s.wait_runs(timeout)
        s.check_runs(runs, lambda state: state.is_failed(), "runs did not end Failed")
        t = s.tally()
        s.check_once(t, messages=False)
        if t.messages:
            s.problem(f"{t.messages} messages got through a total chat outage")
        reports = s.failure_reports(runs)
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
        s.send(senders)
        runs = s.wait_runs(timeout)
        s.check_runs(runs, lambda state: state.is_failed(), "runs did not end Failed")
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
        s.send(senders)
        runs = s.wait_runs(timeout)
        not_failed = s.check_runs(
            runs, lambda state: state.is_failed(), "runs did not fail while Slack was down"
        )
        failed = [i for i in runs if i not in not_failed]
        before = s.tally()
        s.clear(fault)
        s.wait_chat_back(timeout)
        s.say(f"Slack is back; retrying {len(failed)} failed runs")
        for run_id in failed:
            retry_run(h.prefect_cli, run_id)
        runs = wait_final(failed, timeout)
        s.check_runs(runs, lambda state: state.is_completed(), "retried runs did not complete")
        t = s.tally()
        if t.tickets != before.tickets:
            s.problem(f"the retries changed the tickets: {before.tickets} -> {t.tickets}")
        s.check_once(t)
        if failed:
            states = task_states(failed, "ticket ")
            s.note(f"`ticket` task runs of the retried runs (both attempts): {dict(states)}")
    return s.result


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
        # A few responses finish first: their steps must come back Cached in the re-runs.
        normal = s.wait_tickets(3, 120)
        fault = s.fault(service="servicenow", method="POST", after_handling=True, delay=hold)
        if fault.get("after_handling"):
            made = s.wait_tickets(normal + 5, hold / 2)
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
        s.check_runs(
            runs, lambda state: state.is_completed(), "runs did not complete after the re-run"
        )
        t = s.tally()
        if t.lost:
            s.explain_unanswered(t.lost, runs)
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
            s.send(senders)
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
            s.problem(f"{len(missing)} incidents have no Jira issue: {first_few(missing)}")
        if twice:
            s.problem(f"{len(twice)} alerts are on their issue twice: {first_few(twice)}")
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
            s.problem(f"{len(doubled)} issues announced twice on a channel: {first_few(doubled)}")
        unannounced = [k for k in keys if not (per_issue[(k, "slack")] and per_issue[(k, "teams")])]
        if unannounced:
            s.problem(f"{len(unannounced)} issues without a Slack or Teams message")
        s.note(
            f"{made} issues for {len(incidents)} incidents ({s.result.duplicates} duplicates), "
            f"{sum(on_issue.values())} alert mentions for {alerts} alerts, {messages} messages"
        )
    return s.result


# A `sync_tickets` run in a process of its own, as its schedule would start one.
SYNC_RUN = [sys.executable, "-c", "from riposte.flows.sync import sync_tickets; sync_tickets()"]


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
        s.send(senders)
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
                s.sandbox.resolve_incident(
                    numbers[alert_id],
                    close_code="Solved (Permanently)",
                    close_notes="Cleaned up (chaos)",
                    user="chaos.analyst",
                )
        s.say(f"{len(numbers)} tickets resolved; Defender answers 503 for {outage:.0f}s")
        killed = subprocess.Popen(
            SYNC_RUN,
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
                SYNC_RUN,
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
            s.problem(f"{len(wrong)} alerts not resolved as truePositive: {first_few(wrong)}")
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
            s.problem(f"{len(echoed)} tickets got an alert change echoed back: {first_few(echoed)}")
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
