"""The scheduled `reconcile_alerts` flow: answer alerts that no run has handled.

A webhook can be lost (the sender gave up, a proxy dropped it) and the poll reads only what
changed since its watermark. Reconciliation compares the alerts of a recent window in Defender
with the runs Prefect has seen, and starts a response for each alert that has none.

A response can also fail for longer than its retries last (the ITSM down for ten minutes).
Such an alert is answered again, under an idempotency key of its own, each time reconcile runs,
up to `RIPOSTE_RECONCILE_RETRIES` times; every step is find-or-create, so what the failed runs
did is found, not done twice. After that it is reported as given up: a person must look.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger
from pydantic import BaseModel

from riposte.alerts.model import Status
from riposte.alerts.response import AlertRef, ref_for
from riposte.alerts.sources import SourceName
from riposte.blocks import DefenderCredentials, load_block
from riposte.flows._common import stored_flow
from riposte.settings import get_settings
from riposte.tasks.poll import list_alerts_since
from riposte.tasks.runs import response_attempts, start_responses


class ReconcileSummary(BaseModel):
    source: str
    checked: int
    unanswered: list[str]  # no run had touched them
    failed: list[str] = []  # every run that touched them failed: answered again
    gave_up: list[str] = []  # failed more than `reconcile_retries` times: left to a person
    started: int


@stored_flow("reconcile_alerts", "reconcile", log_prints=False)
def reconcile_alerts(
    sources: list[SourceName] | None = None,
    defender_block: str = "riposte-defender",
    lookback_minutes: int = 60,
    max_alerts: int = 5000,
) -> list[ReconcileSummary]:
    """For each source, list the open alerts updated in the last `lookback_minutes`, find those
    that no response run has touched or whose responses all failed, and start responses for
    them. The runs that answer again an alert whose responses failed carry the tags `rerun` and
    `attempt:<n>`.

    Args:
        sources: The Defender APIs to check; empty: those of the `RIPOSTE_POLL_SOURCES` setting.
        defender_block: The Defender credentials block to read with (`riposte-defender`).
        lookback_minutes: How far back to look, in minutes: the alerts updated since then.
        max_alerts: At most this many alerts read per source.
    """
    logger = get_run_logger()
    retries = get_settings().reconcile_retries
    defender = load_block(DefenderCredentials, defender_block)
    since = datetime.now(UTC) - timedelta(minutes=lookback_minutes)
    summaries = []
    for source in sources or get_settings().poll_source_list:
        alerts = list_alerts_since(defender, source, since, max_alerts)
        refs = [ref_for(a) for a in alerts if a.status != Status.RESOLVED]
        attempts = response_attempts(source, [r.alert_id for r in refs])
        # By how many times their responses failed: 0 = no run ever touched them.
        due: dict[int, list[AlertRef]] = {}
        gave_up: list[str] = []
        for ref in refs:
            a = attempts.get(ref.alert_id)
            if a is not None and a.answered:
                continue
            if a is not None and a.failed > retries:
                gave_up.append(ref.alert_id)
                logger.error(
                    "%s-%s: %d responses failed, the last: %s. Not answered again: look at it "
                    "and Retry its last run when the cause is fixed",
                    source,
                    ref.alert_id,
                    a.failed,
                    a.last_failure,
                )
                continue
            due.setdefault(a.failed if a else 0, []).append(ref)
        started: list[str] = []
        for attempt, again in sorted(due.items()):
            ids = start_responses(again, attempt)
            started += ids
            logger.warning(
                "%s: %d alerts %s; started %d runs for %s",
                source,
                len(again),
                f"whose responses failed {attempt} time(s)" if attempt else "had no response run",
                len(ids),
                ", ".join(r.alert_id for r in again[:20]),
            )
        summaries.append(
            ReconcileSummary(
                source=source,
                checked=len(refs),
                unanswered=[r.alert_id for r in due.get(0, [])],
                failed=[r.alert_id for n, refs_ in due.items() if n for r in refs_],
                gave_up=gave_up,
                started=len(started),
            )
        )
    return summaries
