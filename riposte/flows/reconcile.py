"""The scheduled `reconcile_alerts` flow: answer alerts that no run has handled.

A webhook can be lost (the sender gave up, a proxy dropped it) and the poll reads only what
changed since its watermark. Reconciliation compares the alerts of a recent window in Defender
with the runs Prefect has seen, and starts a response for each alert that has none.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from pydantic import BaseModel

from riposte.alerts.model import Status
from riposte.alerts.response import ref_for
from riposte.blocks import DefenderCredentials, load_block
from riposte.settings import get_settings
from riposte.tasks.poll import list_alerts_since
from riposte.tasks.runs import answered_alerts, start_responses


class ReconcileSummary(BaseModel):
    source: str
    checked: int
    unanswered: list[str]
    started: int


@flow(
    name="reconcile_alerts",
    flow_run_name="reconcile",
    persist_result=True,
    result_storage=get_settings().result_storage_block,
    log_prints=False,
)
def reconcile_alerts(
    sources: list[str] | None = None,
    defender_block: str = "riposte-defender",
    lookback_minutes: int = 60,
    max_alerts: int = 5000,
) -> list[ReconcileSummary]:
    """For each source, list the open alerts updated in the last `lookback_minutes`, find those
    that no response run has touched, and start responses for them."""
    logger = get_run_logger()
    defender = load_block(DefenderCredentials, defender_block)
    since = datetime.now(UTC) - timedelta(minutes=lookback_minutes)
    summaries = []
    for source in sources or get_settings().poll_source_list:
        alerts = list_alerts_since(defender, source, since, max_alerts)
        refs = [ref_for(a) for a in alerts if a.status != Status.RESOLVED]
        seen = answered_alerts(source, [r.alert_id for r in refs])
        missing = [r for r in refs if r.alert_id not in seen]
        started = start_responses(missing) if missing else []
        if missing:
            logger.warning(
                "%s: %d alerts had no response run; started %d runs for %s",
                source,
                len(missing),
                len(started),
                ", ".join(r.alert_id for r in missing[:20]),
            )
        summaries.append(
            ReconcileSummary(
                source=source,
                checked=len(refs),
                unanswered=[r.alert_id for r in missing],
                started=len(started),
            )
        )
    return summaries
