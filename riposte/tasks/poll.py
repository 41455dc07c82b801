"""Listing alerts from Defender for the scheduled poll."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prefect import get_run_logger, task

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert
from riposte.alerts.sources import parse_alert
from riposte.blocks.defender import DefenderCredentials
from riposte.tasks._common import TASK_RETRIES, TASK_RETRY_DELAYS, retry_unless_permanent


@task(
    task_run_name="list {source} alerts",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
)
def list_alerts_since(
    defender: DefenderCredentials, source: str, since: datetime, limit: int
) -> list[Alert]:
    """Alerts updated at or after ``since``, oldest first, at most ``limit``.

    An alert that cannot be parsed is logged and skipped, so one bad payload cannot block
    the watermark for every alert behind it.
    """
    logger = get_run_logger()
    alerts: list[Alert] = []
    for payload in defender.source_client(source).list_updated_since(since):
        try:
            alerts.append(parse_alert(payload, source))
        except AlertParseError as exc:
            logger.error("Skipping an alert that cannot be read: %s", exc)
        if len(alerts) >= limit:
            break
    return alerts


def read_alerts_since(
    defender: DefenderCredentials,
    source: str,
    since: datetime,
    limit: int,
    skipped: list[str],
    progress: Callable[[int], None] | None = None,
) -> list[Alert]:
    """Alerts of ``source`` created at or after ``since``, at most ``limit``, read-only (the
    clients' list calls, inside their rate budgets). An alert that cannot be parsed is named in
    ``skipped`` and left out. Not a task: `riposte replay --since` calls it outside any run."""
    alerts: list[Alert] = []
    if limit <= 0:
        return alerts
    for payload in defender.source_client(source).list_updated_since(since):
        try:
            alert = parse_alert(payload, source)
        except AlertParseError as exc:
            skipped.append(f"{source}: {exc}")
            continue
        if alert.created_at >= since:
            alerts.append(alert)
            if progress is not None:
                progress(len(alerts))
        if len(alerts) >= limit:
            break
    return alerts
