"""The `replay_alerts` flow: last week's alerts (or any window) through the policy in force and,
optionally, a candidate policy, simulated in memory; the report is a markdown artifact.

Deployed as ``replay_alerts/replay`` without a schedule: a team adds one (weekly, say) to review
what the policy did and what a candidate would have done. It reads alerts through the Defender
clients (read-only, inside the rate budgets) and writes nothing but its artifact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from riposte.alerts.model import Alert
from riposte.alerts.policy import Policy, default_policy, load_policy, parse_duration
from riposte.alerts.sources import SourceName
from riposte.blocks import BlockCache, DefenderCredentials
from riposte.playbooks.context import DEFAULT_DEFENDER
from riposte.playbooks.replay import (
    Skipped,
    compare,
    load_alerts,
    markdown_comparison,
    markdown_report,
    simulate,
)
from riposte.settings import get_settings
from riposte.tasks.poll import read_alerts_since

REPLAY_ARTIFACT_KEY = "replay-report"


def _policy(path: str | None) -> Policy:
    if path:
        return load_policy(Path(path))
    configured = get_settings().policy_file
    return load_policy(configured) if configured is not None else default_policy()


@flow(name="replay_alerts", log_prints=False)
def replay_alerts(
    since: str = "7d",
    sources: list[SourceName] | None = None,
    candidate_policy: str | None = None,
    policy: str | None = None,
    alert_paths: list[str] | None = None,
    max_alerts: int = 50_000,
    defender_block: str = DEFAULT_DEFENDER,
) -> dict[str, Any]:
    """Replay the alerts of the last ``since`` (30m, 12h, 7d...) from ``sources`` (default:
    the poll's sources) through the policy in force (or ``policy``, a file on the worker),
    and through ``candidate_policy`` when given; simulated, nothing written. ``alert_paths``
    (files or folders on the worker) replaces reading the sources. The report is the markdown
    artifact ``replay-report``.

    Args:
        since: How far back to read the alerts: a number and a unit, `30m`, `12h`, `7d`.
        sources: The Defender APIs to read; empty: those of the `RIPOSTE_POLL_SOURCES` setting.
        candidate_policy: A policy file on the worker to compare with the policy in force;
            empty: the report shows the policy in force alone.
        policy: A policy file on the worker to replay instead of the policy in force
            (`RIPOSTE_POLICY_FILE`, else the shipped default); empty: the policy in force.
        alert_paths: Alert files or folders on the worker to replay instead of reading the
            sources (`since` and `sources` are then unused); empty: read the sources.
        max_alerts: At most this many alerts replayed.
        defender_block: The Defender credentials block to read the alerts with
            (`riposte-defender`); it is only read from.
    """
    logger = get_run_logger()
    base = _policy(policy)
    candidate = load_policy(Path(candidate_policy)) if candidate_policy else None
    skipped: list[Skipped] = []
    alerts: list[Alert] = []
    if alert_paths:
        loaded = load_alerts([Path(p) for p in alert_paths])
        alerts, skipped = loaded.alerts, loaded.skipped
    else:
        start = datetime.now(UTC) - parse_duration(since)
        defender = BlockCache().load(DefenderCredentials, defender_block)
        for source in sources or get_settings().poll_source_list:
            problems: list[str] = []
            found = read_alerts_since(defender, source, start, max_alerts - len(alerts), problems)
            alerts.extend(found)
            skipped.extend(Skipped(where=source, problem=p) for p in problems)
            logger.info("%s: %d alerts since %s", source, len(found), start.isoformat())
    report = simulate(base, alerts, sha256=base.sha256, skipped=skipped)
    for item in skipped:
        logger.warning("Skipped %s", item)
    if candidate is None:
        markdown = markdown_report(report)
        summary: dict[str, Any] = {"report": report.totals.model_dump()}
    else:
        other = simulate(candidate, alerts, sha256=candidate.sha256, skipped=skipped)
        comparison = compare(report, other)
        markdown = markdown_comparison(comparison)
        summary = {
            "report": report.totals.model_dump(),
            "candidate": other.totals.model_dump(),
            "changed": comparison.changed,
        }
    create_markdown_artifact(
        markdown=markdown,
        key=REPLAY_ARTIFACT_KEY,
        description=f"Replay of {report.totals.alerts} alerts",
    )
    logger.info(
        "Replayed %d alerts: %d tickets, %d messages, %d containment request(s)",
        report.totals.alerts,
        report.totals.tickets,
        report.totals.messages,
        report.totals.containments,
    )
    return summary
