"""`riposte replay` and `riposte policy diff`: what a policy (and its playbooks) would have done
with past alerts, and what a change to it would change.

Simulated by default: the alerts go through the policy's whole decision and the playbooks' own
code in memory (`riposte.playbooks.replay`), and nothing is written anywhere. `--stage` runs
them for real against a fresh sandbox instead (`riposte.deployments.stage`).

Exit codes: 0 done; 1 a `--fail-on` threshold was crossed (or, staged, a response failed);
2 bad input (a policy that does not load, no alert to replay, a bad option).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from riposte.deployments.cli_input import (
    CannotRun,
    load_policy_in_force,
    parse_since,
    prefect_for_blocks,
    read_sources,
)

_BAD_INPUT = 2


def _fail(command: str, message: str) -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return _BAD_INPUT


def _policy_in_force() -> str:
    from riposte.alerts.policy import DEFAULT_POLICY_NAME
    from riposte.settings import get_settings

    configured = get_settings().policy_file
    return f"{configured} (RIPOSTE_POLICY_FILE)" if configured else DEFAULT_POLICY_NAME


class _Progress:
    """A one-line progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.tty or total <= 0:
            return
        percent = 100 * done // total
        if percent == self.last and done != total:
            return
        self.last = percent
        bar = "#" * (percent // 4)
        print(f"\r{self.label} [{bar:<25}] {done}/{total}", end="", file=sys.stderr)
        if done == total:
            print(file=sys.stderr)


def _thresholds(texts: list[str], against: bool) -> list[Any]:
    from riposte.playbooks.replay import Threshold

    found = [Threshold.parse(t) for t in texts]
    if not against and any(t.metric == "changed" for t in found):
        raise ValueError("--fail-on changed>N compares two policies: give --against")
    return found


def run_simulation(
    command: str,
    *,
    paths: list[Path],
    base_path: Path | None,
    candidate_path: Path | None,
    fail_on: list[str],
    as_json: bool,
    markdown: Path | None,
    since: str | None = None,
    args: argparse.Namespace | None = None,
) -> int:
    from riposte.alerts.policy import PolicyError
    from riposte.playbooks.replay import (
        compare,
        load_alerts,
        markdown_comparison,
        markdown_report,
        md_text,
        plain,
        simulate,
        text_comparison,
        text_report,
    )

    try:
        thresholds = _thresholds(fail_on, candidate_path is not None)
    except ValueError as exc:
        return _fail(command, str(exc))
    policies: list[Any] = []
    for path in (base_path, candidate_path):
        if path is None and policies:
            break
        try:
            policies.append(load_policy_in_force(path))
        except PolicyError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            shown = path or _policy_in_force()
            return _fail(
                command, f"{shown}: the policy does not load ({len(exc.problems)} problem(s))"
            )
    if markdown is not None and (unwritable := _unwritable(markdown)):
        return _fail(command, f"--markdown {markdown}: {unwritable}")
    days: float | None = None
    if since is not None:
        assert args is not None
        try:
            start = parse_since(since)
            alerts, skipped = read_sources(args, start)
        except (ValueError, CannotRun) as exc:
            return _fail(command, str(exc))
        days = max(1.0, (datetime.now(UTC) - start).total_seconds() / 86400)
    else:
        loaded = load_alerts(paths, args.source if args is not None else None)
        alerts, skipped = loaded.alerts, loaded.skipped
    for item in skipped:
        print(f"skipped {plain(str(item), 500)}", file=sys.stderr)
    if not alerts:
        read = "" if since is not None else f"; {_files_read(paths)} file(s) read"
        return _fail(command, f"no alert to replay ({len(skipped)} input(s) skipped{read})")
    base = policies[0]
    report = simulate(base, alerts, skipped=skipped, progress=_Progress("replaying"), days=days)
    comparison = None
    if len(policies) == 2:
        other = simulate(
            policies[1], alerts, skipped=skipped, progress=_Progress("candidate"), days=days
        )
        comparison = compare(report, other)
    breaches = [b for t in thresholds if (b := t.breached(report, comparison)) is not None]
    if markdown is not None:
        text = markdown_comparison(comparison) if comparison else markdown_report(report)
        if thresholds:
            text += "\n\n## Gate (--fail-on)\n"
            for threshold in thresholds:
                crossed = [b for b in breaches if b.startswith(f"{threshold}:")]
                verdict = md_text(crossed[0], 300) if crossed else "held"
                text += f"\n- `{threshold}`: {'crossed: ' if crossed else ''}{verdict}"
        try:
            markdown.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            return _fail(command, f"--markdown {markdown}: cannot write: {exc.strerror}")
    if as_json:
        out: dict[str, Any] = {
            "mode": "simulated",
            "report": report.model_dump(mode="json"),
            "against": comparison.candidate.model_dump(mode="json") if comparison else None,
            "changed": comparison.changed if comparison else None,
            "differences": (
                [d.model_dump(mode="json") for d in comparison.differences] if comparison else []
            ),
            "totals": comparison.totals if comparison else None,
            "breaches": breaches,
        }
        print(json.dumps(out, indent=2, ensure_ascii=True))
    else:
        print(text_report(report, "Replay" if comparison is None else "Base"))
        if comparison is not None:
            print()
            print(text_report(comparison.candidate, "Candidate"))
            print()
            print(text_comparison(comparison))
    for figures in (report, comparison.candidate if comparison else None):
        if figures is not None and figures.totals.errors:
            print(
                f"warning: {figures.policy}: {figures.totals.errors} alert(s) whose playbook "
                "failed in the simulation (see the report; --fail-on errors>0 to fail on it)",
                file=sys.stderr,
            )
    for breach in breaches:
        print(f"fail-on: {breach}", file=sys.stderr)
    return 1 if breaches else 0


def _files_read(paths: list[Path]) -> int:
    from riposte.playbooks.replay import alert_files

    return sum(1 for _ in alert_files(paths))


def _unwritable(path: Path) -> str | None:
    """Why a report cannot be written at ``path``, before any work is done; None if it can."""
    if path.is_dir():
        return "is a directory"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"no such folder: {parent}"
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "not writable"
    return None


def cmd_replay(args: argparse.Namespace) -> int:
    command = "riposte replay"
    paths = [Path(p) for p in args.paths]
    if bool(paths) == bool(args.since):
        return _fail(command, "give alert files or folders, or --since WINDOW (not both)")
    if args.since:
        try:
            # Before Prefect is imported: it reads its settings once, at import.
            prefect_for_blocks()
        except CannotRun as exc:
            return _fail(command, str(exc))
    markdown = Path(args.markdown) if args.markdown else None
    if args.approve is not None and not args.stage:
        return _fail(command, "--approve answers the approvals of a staging run: add --stage")
    if args.stage:
        if args.against or args.fail_on:
            return _fail(command, "--stage runs one policy: --against and --fail-on are for "
                         "the simulated replay")  # fmt: skip
        from riposte.deployments.stage import cmd_stage

        return cmd_stage(args, paths)
    return run_simulation(
        command,
        paths=paths,
        base_path=Path(args.policy) if args.policy else None,
        candidate_path=Path(args.against) if args.against else None,
        fail_on=args.fail_on or [],
        as_json=args.json,
        markdown=markdown,
        since=args.since,
        args=args,
    )


def cmd_policy_diff(args: argparse.Namespace) -> int:
    return run_simulation(
        "riposte policy diff",
        paths=[Path(p) for p in args.alerts],
        base_path=Path(args.old),
        candidate_path=Path(args.new),
        fail_on=args.fail_on or [],
        as_json=args.json,
        markdown=Path(args.markdown) if args.markdown else None,
        args=args,
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on",
        action="append",
        metavar="METRIC>N[%]",
        help="exit 1 when crossed, e.g. tickets>10%% or containments>0 (repeatable); with "
        "two policies, the candidate's increase over the base; metrics: changed, tickets, "
        "notes, messages, pages, digest_entries, containments, containment_approval, "
        "containment_automatic, closed, ignored, suppressed, errors, skipped",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report as markdown")
    parser.add_argument("--source", help="force a parser instead of detecting each alert's source")


def add_replay_command(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="past alerts through the policy and its playbooks: simulated (nothing written), "
        "against another policy, or staged in a fresh sandbox",
    )
    replay.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="alert files (one alert, a list, an envelope, NDJSON) or folders of them (their "
        ".json, .ndjson and .jsonl files, recursively)",
    )
    replay.add_argument(
        "--since",
        metavar="WINDOW",
        help="instead of files: alerts created in the last WINDOW (30m, 12h, 7d) or since an "
        "ISO date-time, read from the configured Defender sources (read-only)",
    )
    replay.add_argument(
        "--sources", help="with --since: comma-separated sources (default: RIPOSTE_POLL_SOURCES)"
    )
    replay.add_argument(
        "--defender-block", default="riposte-defender", help="with --since: the Defender block"
    )
    replay.add_argument(
        "--max-alerts", type=int, default=50_000, help="with --since: at most this many"
    )
    replay.add_argument("--policy", metavar="FILE", help="policy (default: the one in force)")
    replay.add_argument(
        "--against", metavar="OTHER_POLICY", help="also replay through this candidate policy "
        "and list the differences alert by alert"
    )  # fmt: skip
    _output_options(replay)
    replay.add_argument(
        "--stage",
        action="store_true",
        help="run the responses for real against a fresh sandbox seeded with the alerts, and "
        "list every side effect",
    )
    replay.add_argument(
        "--approve",
        choices=("all", "none"),
        help="with --stage: answer every containment approval yes (all) or no (none, the default)",
    )
    replay.set_defaults(func=cmd_replay)


def add_policy_diff_command(policy_sub: Any) -> None:
    diff = policy_sub.add_parser(
        "diff",
        help="the same alerts through OLD and NEW, and the differences alert by alert",
    )
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.add_argument(
        "--alerts", nargs="+", required=True, metavar="PATH", help="alert files or folders"
    )
    _output_options(diff)
    diff.set_defaults(func=cmd_policy_diff)
