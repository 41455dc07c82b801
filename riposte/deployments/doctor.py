"""`riposte doctor`: before the first real alert, prove that every block the policy will use can
do what a run needs, with read-only calls, and say what is missing and how to fix it.

Defender: a token for each API's audience, the application permissions it carries (the token's
`roles` claim) against what the policy's sources, rules and containment need (`NEEDS`), and one
alert listed per source. ServiceNow: incidents readable with their correlation_id, a query on an
impossible correlation_id matching nothing (an instance that drops a term it cannot use matches
everything), work notes readable. Jira: each project, the block's issue type, and every field
Riposte sets on the create screen (createmeta). Every channel the policy names exists
(``--send-test`` posts one marked test message: the only write). The intake's public URL is
https and answers /health. Exit 0 when everything needed is there, 1 with the table of what is not,
2 when it cannot run at all (no Prefect server, no Defender block, a policy that does not
load). Nothing is written unless ``--send-test`` is given.

This module runs the checks and prints the table; the checks are in `doctor_checks` (Defender,
channels, the intake) and `doctor_ticketing` (ServiceNow, Jira).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from riposte.deployments.cli_input import (
    CannotRun,
    load_policy_in_force,
    policy_block_refs,
    prefect_for_blocks,
)
from riposte.deployments.doctor_checks import (
    Finding,
    check_channels,
    check_defender,
    check_public_url,
)
from riposte.deployments.doctor_ticketing import check_jira, check_servicenow

CANNOT_RUN = 2


def _policy_sources(policy: Any) -> set[str]:
    found: set[str] = set()

    def walk(match: Any) -> None:
        if match is None:
            return
        for name in match.source or ():
            found.add(str(name).lower())
        for inner in match.any_ or ():
            walk(inner)

    for rule in policy.rules:
        walk(rule.match)
    return {s for s in found if s in ("graph", "defender_endpoint", "cloud_apps", "defender_cloud")}


def run_doctor(
    policy_path: str | None,
    sources: list[str] | None,
    defender_block: str,
    send_test: bool = False,
) -> list[Finding]:
    from pathlib import Path

    from riposte.alerts.policy import PolicyError
    from riposte.blocks import (
        BlockCache,
        DefenderCredentials,
        JiraCredentials,
        TicketingCredentials,
    )
    from riposte.settings import get_settings

    try:
        policy = load_policy_in_force(Path(policy_path) if policy_path else None)
    except PolicyError as exc:
        raise CannotRun(
            "the policy does not load: " + "; ".join(str(p) for p in exc.problems[:5])
        ) from None
    settings = get_settings()
    chosen = sources or sorted(set(settings.poll_source_list))
    unchecked = sorted(_policy_sources(policy) - set(chosen))
    blocks = BlockCache()
    try:
        creds = blocks.load(DefenderCredentials, defender_block)
    except Exception as exc:
        raise CannotRun(f"block {defender_block}: {exc}"[:300]) from None
    findings = check_defender(defender_block, creds, policy, chosen)
    if unchecked:
        findings.append(
            Finding(
                defender_block,
                "sources the policy names",
                "note",
                f"not checked: {', '.join(unchecked)} (only the polled sources, "
                "RIPOSTE_POLL_SOURCES, are checked by default)",
                "give --sources with every source Defender pushes to the intake",
            )  # fmt: skip
        )
    for system, projects in _ticketing(policy).items():
        name = settings.jira_block if system == "jira" else settings.servicenow_block
        try:
            ticketing = blocks.load(TicketingCredentials, name)
        except Exception as exc:
            findings.append(Finding(name, f"{system} block", "failed", str(exc)[:300],
                                    "save the block under that name"))  # fmt: skip
            continue
        if isinstance(ticketing, JiraCredentials):
            wanted = [p or ticketing.project_key for p in projects]
            findings += check_jira(name, ticketing, wanted)
        else:
            findings += check_servicenow(name, ticketing)
    findings += check_channels(policy_block_refs(policy), send_test)
    host = urlsplit(creds.authority_host).hostname or ""
    local = host in ("127.0.0.1", "localhost", "::1")
    findings += check_public_url(_asks_approval(policy), local)
    return findings


def _ticketing(policy: Any) -> dict[str, list[str | None]]:
    """Each ticket system the policy files with, and its Jira projects (None: the block's)."""
    found: dict[str, list[str | None]] = {}
    targets = [policy.defaults.ticket, *(r.ticket for r in [*policy.rules, policy.fallback])]
    for target in targets:
        if target is not None:
            found.setdefault(target.system, []).append(
                target.project if target.system == "jira" else None
            )
    return found


def _asks_approval(policy: Any) -> bool:
    """Whether a rule's containment waits for an approver (whose links need a public URL)."""
    from riposte.alerts.matching import containment_plan

    for params in [*policy.rules, policy.fallback]:
        if not getattr(policy.playbook(str(params.playbook)), "contains", False):
            continue
        requires = params.containment_requires_approval
        if requires is None:
            requires = policy.defaults.containment_requires_approval
        plan = containment_plan(params, policy.defaults, requires)
        if plan is not None and not plan.automatic:
            return True
    return False


def cmd_doctor(args: argparse.Namespace) -> int:
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    try:
        # Before Prefect is imported: it reads its settings once, at import.
        prefect_for_blocks()
        findings = run_doctor(args.policy, sources, args.defender_block, args.send_test)
    except CannotRun as exc:
        print(f"riposte doctor: {exc}", file=sys.stderr)
        return CANNOT_RUN
    blocking = [f for f in findings if f.blocking]
    if args.json:
        report = {"ok": not blocking, "findings": [asdict(f) for f in findings]}
        print(json.dumps(report, indent=2, ensure_ascii=True))
    else:
        for f in findings:
            line = f"{f.status.upper():8} {f.block}: {f.check}"
            if f.detail:
                line += f": {f.detail}"
            print(line)
            if f.fix and f.blocking:
                print(f"         fix: {f.fix}")
        print(f"\n{len(blocking)} problem(s)" if blocking else "\neverything needed is there")
    return 1 if blocking else 0


def add_doctor_command(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check, with read-only calls, that the blocks can do what the policy needs",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--policy", metavar="FILE", help="policy (default: the one in force)")
    doctor.add_argument(
        "--sources",
        help="comma-separated Defender sources to check (default: RIPOSTE_POLL_SOURCES and the "
        "sources the policy's rules name)",
    )
    doctor.add_argument("--defender-block", default="riposte-defender")
    doctor.add_argument(
        "--send-test",
        action="store_true",
        help="post one marked test message to every channel the policy names (the only write)",
    )
    doctor.set_defaults(func=cmd_doctor)
