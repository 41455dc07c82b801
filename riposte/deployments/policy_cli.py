"""`riposte policy check` and `riposte policy explain`: validate a policy, show what it decides.

Neither command touches anything: no Prefect, no ticketing system, no shared state. `explain`
evaluates the policy alone, so throttles, suppression windows and open tickets are described,
not consulted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from riposte.alerts.errors import AlertParseError
from riposte.alerts.matching import Explanation, explain
from riposte.alerts.policy import DEFAULT_POLICY_NAME, PolicyError
from riposte.alerts.policy.store import template_validator
from riposte.deployments.cli_input import load_policy_in_force, read_alerts


def _policy_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    from riposte.settings import get_settings

    return get_settings().policy_file


def _templates_dir(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    from riposte.settings import get_settings

    return get_settings().templates_dir


def _playbook_problems() -> int:
    """Print every playbook source that did not load; how many there were."""
    from riposte.playbooks.registry import registry

    problems = registry().problems
    for problem in problems:
        print(f"{problem} (playbook not loaded)")
    return len(problems)


def cmd_policy_check(args: argparse.Namespace) -> int:
    path = _policy_path(args.file)
    origin = str(path) if path is not None else DEFAULT_POLICY_NAME
    broken_playbooks = _playbook_problems()
    try:
        policy = load_policy_in_force(path)
        problems = template_validator(_templates_dir(args.templates_dir))(policy)
        if problems:
            raise PolicyError(problems)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        print(
            f"{origin}: {len(exc.problems)} problem(s); the policy cannot be used", file=sys.stderr
        )
        return 1
    for warning in policy.warnings():
        print(f"{warning} (warning)")
    if broken_playbooks:
        print(
            f"{origin}: {broken_playbooks} playbook source(s) did not load (RIPOSTE_PLAYBOOKS)",
            file=sys.stderr,
        )
        return 1
    playbooks = Counter(str(rule.playbook) for rule in policy.rules)
    counts = ", ".join(f"{name} {n}" for name, n in sorted(playbooks.items()))
    print(
        f"{origin}: OK: {len(policy.rules)} rule(s) ({counts or 'none'}); "
        f"fallback {policy.fallback.playbook}"
    )
    return 0


_STATE_NOTE = (
    "Nothing was changed, and no shared state was read: the first alert of a throttle window "
    "or incident opens a ticket, later ones become comments; a suppression window drops repeats."
)


def _uses_state(explanation: Explanation) -> bool:
    return any(
        a.throttle or a.suppress or a.group_by_incident for a in explanation.decision.actions
    )


def cmd_policy_explain(args: argparse.Namespace) -> int:
    path = _policy_path(args.policy)
    try:
        policy = load_policy_in_force(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    alert_path = Path(args.alert_file)
    try:
        alerts = read_alerts(alert_path, args.source)
    except AlertParseError as exc:
        print(f"riposte policy explain: {alert_path}: {exc}", file=sys.stderr)
        return 2
    explanations = [explain(policy, alert) for alert in alerts]
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in explanations], indent=2))
        return 0
    blocks = []
    for explanation in explanations:
        text = explanation.text()
        if _uses_state(explanation):
            text += "\n" + _STATE_NOTE
        blocks.append(text)
    print("\n\n".join(blocks))
    return 0


def add_policy_commands(subparsers: Any) -> None:
    """Add `policy check` and `policy explain` to the `riposte` command's subparsers."""
    policy = subparsers.add_parser("policy", help="check a policy file; explain its decisions")
    sub = policy.add_subparsers(dest="policy_command", required=True)

    check = sub.add_parser(
        "check",
        help="validate a policy file: exit 0, or 1 with file:line: field: problem lines",
    )
    check.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="policy file (default: RIPOSTE_POLICY_FILE, else the built-in default policy)",
    )
    check.add_argument(
        "--templates-dir", help="custom templates folder (default: RIPOSTE_TEMPLATES_DIR)"
    )
    check.set_defaults(func=cmd_policy_check)

    exp = sub.add_parser(
        "explain",
        help="which rule matches each alert of ALERT_FILE, why, and what its playbook would do",
    )
    exp.add_argument("alert_file", metavar="ALERT_FILE", help="JSON or NDJSON alert payloads")
    exp.add_argument("--policy", metavar="FILE", help="policy file (default: as for check)")
    exp.add_argument("--source", help="force a parser instead of detecting the source")
    exp.add_argument("--json", action="store_true", help="print the explanations as JSON")
    exp.set_defaults(func=cmd_policy_explain)

    from riposte.deployments.replay_cli import add_policy_diff_command

    add_policy_diff_command(sub)
