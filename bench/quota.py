"""A storm under the vendors' real quotas: 1,000 alerts across Graph, Defender for Endpoint and
Defender for Cloud Apps, answered with the default policy, every per-API budget at its
documented default, and the sandbox refusing (429) what each vendor would refuse.

Starts its own local stack (Prefect on SQLite, sandbox, intake, responder) on ports apart from
`make run`'s and `bench/run.py`'s, in a fresh state folder, switches the sandbox's quotas on,
loads the storm into the simulators and creates its responses as the poll does (`plan_runs`:
batches of `respond_batch` runs, the sources interleaved as a storm's alerts arrive), all of them
first, due a few seconds later: run creation queues behind a busy server's writes (the intake's
and the server's own cost are `bench/run.py`'s subject), and this run measures the vendors'
budgets. The clock starts when the runs are due. Then it watches the
simulators until every alert is acknowledged at its source (Graph and Defender for Endpoint:
in progress or resolved; Defender for Cloud Apps: read or closed), and prints:
time to that point, tickets and messages, the calls made per API against each budget, the
429s received, the most calls any budget window admitted, and the floor that the budgets
themselves impose on the calls that were made (for a budget of N per window W, C calls need
at least (ceil(C / N) - 1) * W seconds), with the ratio of the measured time to that floor.

A benchmark, not a test: it asserts nothing, and when the storm did not finish it says so
(runs by final state, the first errors) instead of printing figures of nothing.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from riposte.sandbox.driver import SandboxClient, adopt_stack_credential, stack_environment

REPO = Path(__file__).resolve().parent.parent
FIRST_PORT = 4400  # Prefect; the intake 4410, the sandbox 4420
# The storm: alerts per source, and how many distinct things they are about (throttle keys and
# incidents of the default policy), so that most alerts join an open ticket as a note.
MIX = {"graph": (500, 25), "defender_endpoint": (300, 30), "cloud_apps": (200, 20)}


def configure_environment(home: Path) -> None:
    """Before anything imports prefect: the bench's ports and state folder, the default
    policy, and no budget override (every budget at the vendor's documented value)."""
    for name in list(os.environ):
        if name.startswith("RIPOSTE_RATE_") or name == "RIPOSTE_POLICY_FILE":
            del os.environ[name]
    os.environ.update(stack_environment(home, FIRST_PORT))


def storm(total: int, tag: str) -> dict[str, list[dict[str, Any]]]:
    """``total`` alerts split as `MIX` says, each about one of a few IPs, incidents or
    accounts: medium severity, so the default policy opens tickets (`ticket_and_notify`)."""
    from riposte.sandbox.clock import graph_time
    from riposte.sandbox.samples import (
        sample_cloud_apps_alerts,
        sample_endpoint_alerts,
        sample_graph_alerts,
    )

    now = datetime.now(UTC)
    scale = total / sum(count for count, _ in MIX.values())
    alerts: dict[str, list[dict[str, Any]]] = {}

    count, groups = MIX["graph"]
    template = sample_graph_alerts(now)[2]  # API_ParameterEnumeration, medium
    graph = []
    for i in range(round(count * scale)):
        group = i % groups
        ip = f"198.51.100.{group + 1}"
        alert = dict(template, id=f"quota-{tag}-g{i:04d}", incidentId=str(700000 + group))
        alert["additionalData"] = dict(template["additionalData"], **{"Source IP": ip})
        alert["evidence"] = [
            dict(e, ipAddress=ip) if e.get("@odata.type", "").endswith("ipEvidence") else e
            for e in template["evidence"]
        ]
        alert["createdDateTime"] = alert["lastUpdateDateTime"] = graph_time(now)
        graph.append(alert)
    alerts["graph"] = graph

    count, groups = MIX["defender_endpoint"]
    template = sample_endpoint_alerts(now)[1]  # Mimikatz, made medium (no containment)
    endpoint = []
    for i in range(round(count * scale)):
        group = i % groups
        endpoint.append(
            dict(
                template,
                id=f"da-quota-{tag}-{i:04d}",
                incidentId=800000 + group,
                severity="Medium",
                status="New",
                comments=[],
                machineId=f"{group:040x}",
                computerDnsName=f"ws-{group:03d}.contoso.com",
            )
        )
    alerts["defender_endpoint"] = endpoint

    count, groups = MIX["cloud_apps"]
    template = sample_cloud_apps_alerts(now)[0]  # Impossible travel, medium
    cloud = []
    for i in range(round(count * scale)):
        user = f"traveller{i % groups:02d}@contoso.com"
        entities = [
            dict(e, id=user, label=user) if e.get("type") in ("account", "user") else e
            for e in template["entities"]
        ]
        cloud.append(
            dict(
                template,
                _id=f"{0xC0FFEE000000 + i:024x}",
                idValue=9_000_000 + i,
                entities=entities,
                statusValue=0,
                resolutionStatusValue=0,
            )
        )
    alerts["cloud_apps"] = cloud
    return alerts


# Runs are created first and due this much later, all together.
DUE_SECONDS = 20


def create_run(request: Any, due: datetime) -> str:
    """`start_responses`'s call, with a start time: the run waits until ``due``."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        request.deployment,
        parameters=request.parameters,
        flow_run_name=request.name,
        tags=request.tags,
        idempotency_key=request.idempotency_key,
        scheduled_time=due,
        timeout=0,
        as_subflow=False,
    )
    return str(run.id)


# The sandbox's simulator of each source, and the field that holds an alert's id.
CONTROL = {"graph": "graph", "defender_endpoint": "mde", "cloud_apps": "mdca"}
ID_KEY = {"graph": "id", "defender_endpoint": "id", "cloud_apps": "_id"}


def acknowledged(source: str, alert: dict[str, Any]) -> bool:
    if source == "graph":
        return alert.get("status") in ("inProgress", "resolved")
    if source == "defender_endpoint":
        return alert.get("status") in ("InProgress", "Resolved")
    return bool(alert.get("statusValue")) or bool(alert.get("resolutionStatusValue"))


def pending(sandbox: SandboxClient, wanted: dict[str, set[str]]) -> dict[str, int]:
    """Of the ``wanted`` alert ids of each source, how many are not acknowledged yet."""
    left = {}
    for source, ids in wanted.items():
        stored = sandbox.alerts(CONTROL[source])
        done = {str(a[ID_KEY[source]]) for a in stored if acknowledged(source, a)}
        left[source] = len(ids - done)
    return left


def runs_by_state(run_ids: list[str]) -> tuple[Counter[str], list[str]]:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    states: Counter[str] = Counter()
    errors: list[str] = []
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            run = client.read_flow_run(UUID(run_id))
            state = run.state.type.value if run.state else "NONE"
            states[state] += 1
            if state in ("FAILED", "CRASHED") and run.state and run.state.message:
                errors.append(f"{run.name}: {run.state.message[:300]}")
    return states, errors


def floor_seconds(calls: int, windows: list[tuple[int, float]]) -> float:
    """The least time ``calls`` can take under every (requests, seconds) window: a full window's
    worth at once, then the next when the window has passed."""
    return max((max(0, math.ceil(calls / n) - 1) * s for n, s in windows), default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000, help="alerts in the storm")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds to wait, counted from the start"
    )
    args = parser.parse_args()

    home = REPO / ".riposte" / "bench-quota"
    shutil.rmtree(home, ignore_errors=True)
    configure_environment(home)
    adopt_stack_credential()

    from riposte.alerts.response import ref_for
    from riposte.alerts.run_plan import plan_runs
    from riposte.alerts.sources import parse_alert
    from riposte.deployments.stack import LocalStack
    from riposte.limits import rate_budgets
    from riposte.settings import get_settings

    settings = get_settings()
    stack = LocalStack(settings, say=lambda text: print(text, file=sys.stderr))
    finished = False
    try:
        stack.start()
        sandbox = SandboxClient(settings.sandbox_url)
        sandbox.set_quotas(enabled=True)
        alerts = storm(args.alerts, os.urandom(3).hex())
        for source, items in alerts.items():
            sandbox.load(items, CONTROL[source])
        wanted = {s: {str(a[ID_KEY[s]]) for a in items} for s, items in alerts.items()}
        by_source = [[ref_for(parse_alert(a, s)) for a in items] for s, items in alerts.items()]
        # Interleaved, as a storm's alerts arrive: every batch has some of each source.
        refs = [r for group in itertools.zip_longest(*by_source) for r in group if r]
        total = len(refs)
        print(f"storm: {total} alerts, creating the responses ...", file=sys.stderr)
        began = time.monotonic()
        due = datetime.now(UTC) + timedelta(seconds=DUE_SECONDS)
        run_ids = [create_run(request, due) for request in plan_runs(refs)]
        created = time.monotonic() - began
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait < 0:
            print(f"run creation took {created:.0f} s, past the due time", file=sys.stderr)
        time.sleep(max(0.0, wait))
        started = time.monotonic()
        left = pending(sandbox, wanted)
        while time.monotonic() - started < args.timeout:
            left = pending(sandbox, wanted)
            if not any(left.values()):
                finished = True
                break
            time.sleep(2)
        elapsed = time.monotonic() - started
        print(f"acknowledged after {elapsed:.0f} s; waiting for the runs to end", file=sys.stderr)
        # The runs go on after the last acknowledgement only with what follows it (the report).
        states, errors = runs_by_state(run_ids)
        deadline = time.monotonic() + 300
        while states.get("COMPLETED", 0) + states.get("FAILED", 0) + states.get("CRASHED", 0) < len(
            run_ids
        ) and (time.monotonic() < deadline):
            time.sleep(5)
            states, errors = runs_by_state(run_ids)
        requests = sandbox.requests()
        quotas = {q["name"]: q for q in sandbox.quotas()}
        tickets = sandbox.tickets()
        slack = len(sandbox.chat_messages("slack"))
        teams = len(sandbox.chat_messages("teams"))
    finally:
        stack.stop()

    budgets = {b.api: b for b in rate_budgets()}
    statuses = requests["statuses"]
    services = requests["services"]
    # Calls against each budget, as the vendor counts them (the sandbox's quota layer for Graph
    # security and Defender for Endpoint; every Defender for Cloud Apps call).
    rows = [
        ("Graph security", "graph", quotas["graph-security"], None),
        ("Defender for Endpoint", "mde", quotas["mde"], None),
        ("Defender for Endpoint batch update", "mdebatch", quotas["mde-batch-update"], None),
        ("Defender for Cloud Apps", "mdca", None, services.get("mdca", 0)),
        # Not Defender's, but budgets all the same (ServiceNow's is an assumption, see
        # riposte/limits.py): they bound the storm too.
        ("ServiceNow", "servicenow", None, services.get("servicenow", 0)),
        ("Slack", "slack", None, services.get("slack", 0)),
        ("Teams", "teams", None, services.get("teams", 0)),
    ]
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    print(f"storm: {total} alerts ({', '.join(f'{len(v)} {k}' for k, v in alerts.items())})")
    print(f"responses: {len(run_ids)} runs created in {created:.1f} s; final states {dict(states)}")
    if not finished:
        print(f"NOT FINISHED within {args.timeout:.0f} s: alerts not acknowledged {left}")
    for error in errors[:5]:
        print(f"  failed: {error}")
    print()
    print("| API | budget | calls | per alert of its source | 429s | most in a window | floor |")
    print("|---|---|---|---|---|---|---|")
    floors = []
    for label, api, quota, counted in rows:
        budget = budgets[api]
        windows = [(w.requests, w.seconds) for w in budget.windows]
        calls = quota["admitted"] if quota else counted
        service = {"graph": "graph", "mdebatch": "mde"}.get(api, api)
        refused = quota["refused"] if quota else statuses.get(service, {}).get("429", 0)
        peak = ", ".join(f"{v} in {k}" for k, v in (quota or {}).get("peak", {}).items()) or "-"
        floor = floor_seconds(calls, windows)
        floors.append(floor)
        sources = {
            "graph": "graph",
            "mde": "defender_endpoint",
            "mdebatch": "defender_endpoint",
            "mdca": "cloud_apps",
        }
        of = len(alerts[sources[api]]) if api in sources else total
        per = calls / max(1, of)
        shown = ",".join(str(w) for w in budget.windows)
        print(f"| {label} | {shown} | {calls} | {per:.2f} | {refused} | {peak} | {floor:.0f} s |")
    floor = max(floors)
    print()
    duplicates = sum(n - 1 for n in tickets.values() if n > 1)
    print("| storm under the documented quotas | value |")
    print("|---|---|")
    state = "" if finished else " (NOT finished)"
    print(f"| time until every alert is acknowledged at its source | {elapsed:.0f} s{state} |")
    print(f"| floor the budgets impose on these calls | {floor:.0f} s |")
    ratio = elapsed / floor if floor else float("nan")
    print(f"| ratio to the floor (target <= 1.5) | {ratio:.2f}x |")
    print(f"| alerts not acknowledged (lost) | {sum(left.values())} |")
    print(f"| tickets | {len(tickets)} ({duplicates} duplicates) |")
    print(f"| messages | Slack {slack}, Teams {teams} |")
    print(f"| 429s received, all APIs | {sum(s.get('429', 0) for s in statuses.values())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
