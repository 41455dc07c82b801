"""`riposte replay --stage`: the alerts answered for real, against a fresh sandbox.

A Prefect server and a sandbox of the run's own are started in a temporary folder (nothing of
the local stack or of production is used, or even read); the sandbox's blocks are saved there,
the alerts are loaded into its Defender simulators, and each alert gets a real
`respond_to_alert` run, in time order, with the policy and playbooks given (custom playbooks
included). Containment asks the approvers as in production (the messages are real, in the
sandbox) and then takes the answer ``--approve`` gave. The report lists every side effect the
sandbox holds afterwards: tickets and their notes, messages per channel, approvals asked,
containment done, alert and incident updates.

Before anything starts, every block the policy names must be one of the sandbox's: a policy
that posts to a production channel is refused, naming the block.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from riposte.deployments.cli_input import (
    CannotRun,
    load_policy_in_force,
    parse_since,
    policy_block_refs,
    read_sources,
)
from riposte.deployments.stack import ID_FIELD, SANDBOX_PREFIX

_BAD_INPUT = 2
COMMAND = "riposte replay --stage"
_IGNORED_CHANGES = ("time", "Time", "DateTime", "timestamp", "lastModified", "etag")


def _fail(message: str) -> int:
    print(f"{COMMAND}: {message}", file=sys.stderr)
    return _BAD_INPUT


def foreign_blocks(policy: Any, sandbox_refs: Iterable[str]) -> list[str]:
    """Each block the policy (or the settings it relies on) would use that is not one of the
    sandbox's, as ``where: block``."""
    from riposte.playbooks.context import DEFAULT_DEFENDER
    from riposte.settings import get_settings

    known = set(sandbox_refs)
    names = {ref.split("/", 1)[-1] for ref in known}
    problems = []
    for where, ref in policy_block_refs(policy):
        if ref not in known:
            problems.append(f"{where}: {ref}")
    settings = get_settings()
    systems = {r.ticket.system for r in policy.rules if getattr(r, "ticket", None)}
    if policy.defaults.ticket is not None:
        systems.add(policy.defaults.ticket.system)
    for system in sorted(systems):
        name = settings.jira_block if system == "jira" else settings.servicenow_block
        if name not in names and name not in known:
            variable = "RIPOSTE_JIRA_BLOCK" if system == "jira" else "RIPOSTE_SERVICENOW_BLOCK"
            problems.append(f"{variable}: {name} ({system} tickets)")
    if DEFAULT_DEFENDER not in names:  # pragma: no cover - the sandbox always has it
        problems.append(f"defender block: {DEFAULT_DEFENDER}")
    return list(dict.fromkeys(problems))


_SUBSCRIPTION = re.compile(
    r"^/subscriptions/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})/",
)


def _sandbox_env(alerts: list[Any]) -> dict[str, str]:
    """The staging sandbox's settings: the Azure subscriptions of the Defender for Cloud alerts
    staged are the simulated tenant's (the simulator refuses alerts of other subscriptions)."""
    from riposte.sandbox.config import SandboxConfig

    found = list(SandboxConfig().subscription_ids)
    for alert in alerts:
        if alert.source == "defender_cloud":
            match = _SUBSCRIPTION.match(str(alert.raw.get("id", "")))
            if match and match.group(1).lower() not in found:
                found.append(match.group(1).lower())
    return {"RIPOSTE_SANDBOX_SUBSCRIPTION_IDS": json.dumps(found)}


def cmd_stage(args: argparse.Namespace, paths: list[Path]) -> int:
    from riposte.alerts.policy import PolicyError
    from riposte.deployments.local import sandbox_blocks
    from riposte.deployments.own_stack import OwnStack, run_inner
    from riposte.playbooks.replay import load_alerts, plain

    policy_path = Path(args.policy).resolve() if args.policy else None
    try:
        policy = load_policy_in_force(policy_path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return _fail(f"{policy_path}: the policy does not load ({len(exc.problems)} problem(s))")
    refs = [
        f"{block.get_block_type_slug()}/{name}"
        for name, block in sandbox_blocks("http://127.0.0.1:1").items()
    ]
    foreign = foreign_blocks(policy, refs)
    if foreign:
        for line in foreign:
            print(f"not a sandbox block: {line}", file=sys.stderr)
        return _fail(
            f"{len(foreign)} block(s) the policy would use are not the sandbox's (staging posts "
            f"only to the sandbox; its blocks are {', '.join(sorted(refs))}): stage a copy of "
            "the policy that names them"
        )
    if args.since:
        try:
            alerts, skipped = read_sources(args, parse_since(args.since))
        except (ValueError, CannotRun) as exc:
            return _fail(str(exc))
    else:
        loaded = load_alerts(paths, args.source)
        alerts, skipped = loaded.alerts, loaded.skipped
    for item in skipped:
        print(f"skipped {plain(str(item), 500)}", file=sys.stderr)
    if not alerts:
        return _fail(f"no alert to stage ({len(skipped)} input(s) skipped)")
    # As the simulated replay: an alert met twice in the same revision is answered once.
    from riposte.alerts.response import response_revision

    seen: set[tuple[str, str, str]] = set()
    ordered = []
    for alert in sorted(alerts, key=lambda a: (a.created_at, a.source, a.id)):
        key = (alert.source, alert.id, response_revision(alert))
        if key not in seen:
            seen.add(key)
            ordered.append(alert)
    job = {
        "alerts": [{"source": a.source, "id": a.id, "payload": a.raw} for a in ordered],
        "skipped": [s.model_dump() for s in skipped],
        "approve": args.approve == "all",
        "repeats": len(alerts) - len(ordered),
        "json": args.json,
        "markdown": str(Path(args.markdown).resolve()) if args.markdown else None,
    }
    own = OwnStack(_sandbox_env(ordered))
    print("Starting a Prefect server and a sandbox of the staging run's own ...", file=sys.stderr)
    if not own.started(COMMAND):
        return 1
    job.update(sandbox_url=own.sandbox_url, stack=str(own.folder), nonce=own.nonce)
    env = own.process_env()
    # The report names every failure and its reason: Prefect's tracebacks would only hide it.
    env.update({"PREFECT_LOGGING_LEVEL": "CRITICAL", "RIPOSTE_STAGING": "true"})
    if policy_path is not None:
        env["RIPOSTE_POLICY_FILE"] = str(policy_path)
    try:
        return run_inner("riposte.deployments.stage", job, env, timeout=3600)
    finally:
        own.stop()


# --- the inner process: its Prefect is the staging's own -----------------------------------


def _snapshot(client: Any) -> dict[str, dict[str, Any]]:
    """The alerts and incidents the sandbox holds, by source and id."""
    out: dict[str, dict[str, Any]] = {}
    for source, api in SANDBOX_PREFIX.items():
        for item in client.get(f"/_sandbox/{api}/alerts").json():
            out.setdefault(source, {})[str(item.get(ID_FIELD[source]))] = item
    for incident in client.get("/_sandbox/graph/incidents").json():
        out.setdefault("incident", {})[str(incident["id"])] = incident
    return out


def _changes(before: Any, after: Any, where: str = "") -> list[str]:
    """What changed between two versions of a record, in words (timestamps left out)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if any(part in key for part in _IGNORED_CHANGES):
                continue
            here = f"{where}.{key}" if where else key
            found.extend(_changes(before.get(key), after.get(key), here))
        return found
    if before == after:
        return []
    if isinstance(before, list) or isinstance(after, list):
        a, b = len(before or []), len(after or [])
        return [f"{where}: {a} -> {b} item(s)"] if a != b else [f"{where}: changed"]
    return [f"{where}: {_short(before)} -> {_short(after)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _load(client: Any, job: dict[str, Any], skipped: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Load the alerts into the sandbox, by source; an alert the simulator refuses is skipped
    with the simulator's reason."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for item in job["alerts"]:
        held = item["payload"].get(ID_FIELD[item["source"]])
        if str(held) != item["id"]:
            # An export or stream record (continuous export, a Log Analytics row, a streamed
            # event): production answers it by reading the alert from the API, which serves
            # its own shape; the simulator can only serve what it is given.
            skipped.append(
                {
                    "where": f"{item['source']}-{item['id']}",
                    "problem": "not in the shape the API serves (an export or streamed record): "
                    "stage the alert as the API returns it",
                }
            )
            continue
        by_source.setdefault(item["source"], []).append(item)
    kept: list[dict[str, Any]] = []
    for source, items in by_source.items():
        path = f"/_sandbox/{SANDBOX_PREFIX[source]}/alerts"
        if client.post(path, json=[i["payload"] for i in items]).status_code == 200:
            kept.extend(items)
            continue
        for item in items:  # one at a time, to name the one refused
            answer = client.post(path, json=[item["payload"]])
            if answer.status_code == 200:
                kept.append(item)
            else:
                skipped.append(
                    {
                        "where": f"{source}-{item['id']}",
                        "problem": f"the sandbox refused it: {answer.text[:300]}",
                    }
                )
    order = {(i["source"], i["id"]): n for n, i in enumerate(job["alerts"])}
    return sorted(kept, key=lambda i: order[(i["source"], i["id"])])


def _inner(job: dict[str, Any]) -> int:
    import httpx

    from riposte.deployments.local import save_sandbox_blocks
    from riposte.deployments.stage_report import as_markdown, as_text
    from riposte.flows.contain import stage_containment
    from riposte.flows.digest import post_digests
    from riposte.flows.respond import respond_to_alert
    from riposte.playbooks import context
    from riposte.sandbox.config import SandboxConfig
    from riposte.settings import get_settings
    from riposte.tasks.decide import current_policy
    from riposte.tasks.digests import LATE_ENTRY, SETTLE

    # Only under `riposte replay --stage`, on the Prefect server it started: its folder holds
    # the nonce the job carries, and this process's Prefect lives in that folder.
    stack = Path(job["stack"])
    if (
        not get_settings().staging
        or (stack / "stack-nonce").read_text() != job["nonce"]
        or Path(os.environ.get("PREFECT_HOME", "/nonexistent")).parent != stack
        or not os.environ.get("PREFECT_API_URL", "").startswith("http://127.0.0.1:")
    ):
        raise RuntimeError("the staging process runs only under riposte replay --stage")
    sandbox_url = job["sandbox_url"]
    save_sandbox_blocks(sandbox_url, SandboxConfig.from_env())
    client = httpx.Client(base_url=sandbox_url, timeout=30)
    skipped: list[dict[str, str]] = list(job["skipped"])
    alerts = _load(client, job, skipped)
    before = _snapshot(client)

    approvals: list[dict[str, Any]] = []
    started: dict[str, str] = {}

    def stage(request: Any) -> str:
        # One run per request, as the idempotency key of the real one.
        if request.key in started:
            return started[request.key]
        state = stage_containment(request, job["approve"], return_state=True)
        run = str(state.state_details.flow_run_id)
        started[request.key] = run
        approvals.append(
            {
                "alert": f"{request.alert.source}-{request.alert.alert_id}",
                "rule": request.rule,
                "actions": [a.describe() for a in request.actions],
                "approvers": [a.name for a in request.approvers],
                "automatic": request.automatic,
                "outcome": (state.message or state.name or "")[:500],
                "state": state.name,
            }
        )
        return run

    context.containment_starter = stage
    responses = []
    for number, item in enumerate(alerts, 1):
        state = respond_to_alert(alert_id=item["id"], source=item["source"], return_state=True)
        row: dict[str, Any] = {"alert": f"{item['source']}-{item['id']}", "state": state.name}
        if state.is_completed():
            summary = state.result()
            row["rules"] = [a.rule for a in summary.actions]
            row["dispositions"] = [a.disposition for a in summary.actions]
        else:
            row["reason"] = (state.message or "")[:500]
        responses.append(row)
        if sys.stderr.isatty():
            print(f"\rstaging {number}/{len(alerts)}", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    # The digests, posted as the scheduled flow would once their periods close. An entry for a
    # period that already closed (every past alert's) goes to the period open when it is
    # recorded, as in production: so "once they close" is the longest period from now.
    digests = None
    if alerts:
        policy = current_policy(logging.getLogger("riposte.stage")).policy
        periods = [d.period for d in _digests_of(policy)] or [timedelta(hours=1)]
        end = datetime.now(UTC) + max(periods) + LATE_ENTRY + SETTLE + timedelta(minutes=1)
        lookback = int((max(periods) + timedelta(days=2)).total_seconds() // 3600) + 1
        digests = post_digests(now=end, lookback_hours=lookback, return_state=True)
    after = _snapshot(client)
    report = _side_effects(client, before, after)
    report.update(
        {
            "mode": "staged",
            "approve": "all" if job["approve"] else "none",
            "alerts": len(alerts),
            "repeats": job["repeats"],
            "responses": responses,
            "failed": [r for r in responses if r["state"] != "Completed"],
            "approvals": approvals,
            "digest_run": digests.name if digests is not None else None,
            "skipped": skipped,
        }
    )
    if job["markdown"]:
        Path(job["markdown"]).write_text(as_markdown(report) + "\n", encoding="utf-8")
    if job["json"]:
        print(json.dumps(report, indent=2, ensure_ascii=True, default=str))
    else:
        print(as_text(report))
    return 1 if report["failed"] else 0


def _digests_of(policy: Any) -> list[Any]:
    found = [policy.defaults.digest, *(r.digest for r in [*policy.rules, policy.fallback])]
    return [d for d in found if d is not None]


def _side_effects(
    client: Any, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    tickets = []
    for held in client.get("/_sandbox/servicenow/incidents").json():
        record = held.get("record", {})
        tickets.append(
            {
                "system": "servicenow",
                "key": record.get("number"),
                "title": record.get("short_description"),
                "priority": record.get("priority"),
                "notes": len(held.get("journal") or []),
            }
        )
    for issue in client.get("/_sandbox/jira/issues").json():
        fields = issue.get("fields", {})
        priority = fields.get("priority")
        tickets.append(
            {
                "system": "jira",
                "key": issue.get("key"),
                "title": fields.get("summary"),
                "priority": priority.get("name") if isinstance(priority, dict) else priority,
                "notes": len(issue.get("comments") or []),
            }
        )
    messages: list[dict[str, str]] = []
    for service in ("slack", "teams"):
        for message in client.get(f"/_sandbox/{service}/messages").json():
            messages.append({"channel": service, "text": _first_text(message)})
    updates = []
    for source, items in after.items():
        for key, item in items.items():
            changed = _changes(before.get(source, {}).get(key, {}), item)
            if changed:
                updates.append({"record": f"{source}-{key}", "changes": changed})
    return {
        "tickets": tickets,
        "messages": dict(sorted(Counter(m["channel"] for m in messages).items())),
        "message_texts": messages,
        "machine_actions": [
            {k: a.get(k) for k in ("type", "machineId", "status", "requestor")}
            for a in client.get("/_sandbox/mde/machineactions").json()
        ],
        "indicators": [
            {k: i.get(k) for k in ("indicatorValue", "indicatorType", "action")}
            for i in client.get("/_sandbox/mde/indicators").json()
        ],
        "users": [
            {
                "user": u.get("userPrincipalName"),
                "accountEnabled": u.get("accountEnabled"),
                "sessions_revoked": u.get("signInSessionsRevoked", 0),
            }
            for u in client.get("/_sandbox/graph/users").json()
            if u.get("accountEnabled") is False or u.get("signInSessionsRevoked")
        ],
        "updates": updates,
    }


def _first_text(message: Any) -> str:
    """The first words a person sees of a chat message (Slack's text, a card's first block)."""
    if isinstance(message, dict):
        text = message.get("text")
        if isinstance(text, str) and text.strip():
            return text[:200]
        items: list[Any] = [v for k, v in message.items() if k != "rendered"]
    elif isinstance(message, list):
        items = message
    else:
        return ""
    for item in items:
        found = _first_text(item)
        if found:
            return found
    return ""


if __name__ == "__main__":
    sys.exit(_inner(json.loads(sys.stdin.read())))
