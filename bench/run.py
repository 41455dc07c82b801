"""Benchmark of the local stack: single-alert latency and a burst of alerts, against a raw baseline.

Starts its own local stack (Prefect on SQLite, sandbox, intake, responder) on ports apart from
`make run`'s, in a fresh state folder, with `bench/policy.yaml` (every alert gets a ticket), then:
1. sends alerts one at a time and times POST -> ticket created;
2. posts a burst from concurrent senders and times until the last ticket exists, counting lost
   alerts (no ticket) and duplicate tickets;
3. makes the same HTTP calls to the same simulators directly with httpx, with the same
   concurrency and no orchestration, as the baseline the burst is compared to.
Prints a table. A benchmark, not a test: it asserts nothing and always prints what it saw.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from riposte.sandbox.driver import (
    AlertSender,
    SandboxClient,
    adopt_stack_credential,
    correlation,
    graph_alerts,
    stack_environment,
)

REPO = Path(__file__).resolve().parent.parent
FIRST_PORT = 4300  # Prefect; the intake 4310, the sandbox 4320


def configure_environment(home: Path) -> None:
    """Before anything imports prefect: the bench stack's ports, state folder and policy."""
    os.environ.update(stack_environment(home, FIRST_PORT))
    os.environ.update(
        {
            "RIPOSTE_POLICY_FILE": str(REPO / "bench" / "policy.yaml"),
            # The bench measures Riposte against the sandbox, not the vendors' budgets: the
            # per-API rate limits are wide open (still created and acquired, as in production).
            **{
                f"RIPOSTE_RATE_{api}": "100000/s"
                for api in (
                    *("GRAPH", "MDE", "MDEBATCH", "MDCA", "ARM"),
                    *("SERVICENOW", "JIRA", "SLACK", "TEAMS"),
                )
            },
        }
    )


def make_alerts(count: int, tag: str) -> list[dict[str, Any]]:
    return graph_alerts(
        [f"bench-{tag}-{i:05d}-{os.urandom(3).hex()}" for i in range(count)], 900000
    )


def sender(intake: str, token: str, timeout: float) -> AlertSender:
    """A sender that honours 503 + Retry-After and retries timeouts at once, 30 tries at most."""
    return AlertSender(intake, token=token, tries=30, pause_after_error=0.0, timeout=timeout)


def single_latency(sandbox: SandboxClient, intake: str, token: str, count: int) -> list[float]:
    alerts = make_alerts(count, "single")
    sandbox.load(alerts)
    latencies = []
    post = sender(intake, token, timeout=60)
    for alert in alerts:
        started = time.monotonic()
        post.post(alert)
        key = correlation(alert["id"])
        deadline = started + 60
        while time.monotonic() < deadline:
            if sandbox.tickets()[key]:
                latencies.append(time.monotonic() - started)
                break
            time.sleep(0.01)
        else:
            latencies.append(float("nan"))
    return latencies


def burst(
    sandbox: SandboxClient, intake: str, token: str, count: int, senders: int, timeout: float
) -> dict[str, Any]:
    alerts = make_alerts(count, "burst")
    sandbox.load(alerts)
    keys = {correlation(a["id"]) for a in alerts}
    started = time.monotonic()
    deliveries = sender(intake, token, timeout=120).post_all(alerts, senders)
    statuses = Counter(d.status for d in deliveries.values())
    posted = time.monotonic() - started
    last_new = started
    seen: Counter[str] = Counter()
    while time.monotonic() - started < timeout:
        current = sandbox.tickets()
        if sum(1 for k in keys if current[k]) > sum(1 for k in keys if seen[k]):
            last_new = time.monotonic()
        seen = current
        if all(seen[k] for k in keys):
            break
        time.sleep(0.5)
    drained = last_new - started
    return {
        "posted_in": posted,
        "statuses": dict(statuses),
        "drain": drained,
        "lost": sum(1 for k in keys if not seen[k]),
        "duplicates": sum(seen[k] - 1 for k in keys if seen[k] > 1),
        "complete": all(seen[k] for k in keys),
    }


def baseline(sandbox_url: str, count: int, workers: int) -> float:
    """The response's HTTP calls made directly: token, read alert, look up and create the
    incident, Slack, Teams, read alert, mark in progress, comment."""
    from riposte.deployments.local import sandbox_blocks

    blocks = sandbox_blocks(sandbox_url)
    creds = blocks["riposte-defender"]
    snow = blocks["riposte-servicenow"]
    slack = blocks["riposte-slack"].url.get_secret_value()  # type: ignore[attr-defined]
    teams = blocks["riposte-teams"].url.get_secret_value()  # type: ignore[attr-defined]
    sandbox = SandboxClient(sandbox_url)
    alerts = make_alerts(count, "raw")
    sandbox.load(alerts)
    with httpx.Client(timeout=60) as c:
        token = c.post(
            f"{creds.authority_host}/{creds.tenant_id}/oauth2/v2.0/token",  # type: ignore[attr-defined]
            data={
                "client_id": creds.client_id,  # type: ignore[attr-defined]
                "client_secret": creds.client_secret.get_secret_value(),  # type: ignore[attr-defined]
                "grant_type": "client_credentials",
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()["access_token"]
    graph = f"{creds.graph_base_url}/v1.0/security/alerts_v2"  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {token}"}
    snow_auth = (snow.username, snow.password.get_secret_value())  # type: ignore[attr-defined]
    table = f"{snow.instance_url}/api/now/table/incident"  # type: ignore[attr-defined]
    local = threading.local()

    def respond(alert: dict[str, Any]) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        c: httpx.Client = local.client
        key = correlation(alert["id"])
        c.get(f"{graph}/{alert['id']}", headers=auth).raise_for_status()
        c.get(table, params={"sysparm_query": f"correlation_id={key}"}, auth=snow_auth)
        c.post(
            table, json={"short_description": alert["title"], "correlation_id": key}, auth=snow_auth
        ).raise_for_status()
        c.post(slack, json={"text": alert["title"]}).raise_for_status()
        c.post(
            teams,
            json={
                "type": "message",
                "attachments": [
                    {
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "content": {"type": "AdaptiveCard", "version": "1.4", "body": []},
                    }
                ],
            },
        ).raise_for_status()
        c.get(f"{graph}/{alert['id']}", headers=auth).raise_for_status()
        c.patch(f"{graph}/{alert['id']}", json={"status": "inProgress"}, headers=auth)
        c.post(
            f"{graph}/{alert['id']}/comments",
            headers=auth,
            json={"@odata.type": "microsoft.graph.security.alertComment", "comment": key},
        )

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(respond, alerts))
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=50, help="alerts sent one at a time")
    parser.add_argument("--burst", type=int, default=1000, help="alerts in the burst")
    parser.add_argument("--senders", type=int, default=20, help="concurrent senders in the burst")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the drain")
    args = parser.parse_args()

    home = REPO / ".riposte" / "bench"
    shutil.rmtree(home, ignore_errors=True)
    configure_environment(home)
    adopt_stack_credential()

    from riposte.deployments.stack import LocalStack
    from riposte.settings import get_settings

    settings = get_settings()
    stack = LocalStack(settings, say=lambda text: print(text, file=sys.stderr))
    try:
        stack.start()
        token = stack.intake_token()
        sandbox = SandboxClient(settings.sandbox_url)
        print(f"single alerts: sending {args.single} one at a time ...", file=sys.stderr)
        latencies = single_latency(sandbox, settings.intake_url, token, args.single)
        print(f"burst: {args.burst} alerts from {args.senders} senders ...", file=sys.stderr)
        result = burst(sandbox, settings.intake_url, token, args.burst, args.senders, args.timeout)
        responder = next(p for p in stack.processes if p.name == "served-flows")
        rss = peak_rss_mb(responder.popen.pid)
        sandbox.reset()
        print("baseline: the same calls with httpx only ...", file=sys.stderr)
        raw = baseline(settings.sandbox_url, args.burst, 16)
    finally:
        stack.stop()

    rate = args.burst / result["drain"] if result["drain"] > 0 else float("nan")
    raw_rate = args.burst / raw
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    print(f"single alert, POST -> ticket ({len(latencies)} alerts, one at a time):")
    print(
        f"  p50 {percentile(latencies, 0.5):.2f} s   p95 {percentile(latencies, 0.95):.2f} s   "
        f"max {max(latencies):.2f} s"
    )
    print()
    print(f"| burst of {args.burst} | Riposte | raw httpx baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| time until the last ticket exists | {result['drain']:.1f} s | {raw:.1f} s | "
        f"{result['drain'] / raw:.1f}x |"
    )
    print(f"| alerts/s | {rate:.1f} | {raw_rate:.1f} | |")
    print(f"| posted in | {result['posted_in']:.1f} s (statuses {result['statuses']}) | | |")
    print(f"| alerts lost (no ticket) | {result['lost']} | | |")
    print(f"| duplicate tickets | {result['duplicates']} | | |")
    print(f"| responder peak RSS | {rss:.0f} MB | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
