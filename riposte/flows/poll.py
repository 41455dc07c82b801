"""The scheduled `poll_alerts` flow: a response for every alert updated since the watermark."""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger
from pydantic import BaseModel

from riposte.alerts.model import Status
from riposte.alerts.response import ref_for
from riposte.alerts.sources import SourceName
from riposte.blocks import DefenderCredentials, load_block
from riposte.settings import get_settings
from riposte.tasks.poll import list_alerts_since
from riposte.tasks.runs import advance_watermark, read_watermark, start_responses


class PollSummary(BaseModel):
    source: str
    since: str
    alerts_seen: int
    responses: int
    watermark: str


@flow(name="poll_alerts", flow_run_name="poll", log_prints=False)
def poll_alerts(
    sources: list[SourceName] | None = None,
    defender_block: str = "riposte-defender",
    lookback_minutes: int = 24 * 60,
    max_alerts: int = 1000,
) -> list[PollSummary]:
    """For each source (default: the `RIPOSTE_POLL_SOURCES` setting), list the alerts updated
    since its watermark (a Prefect Variable), start their responses (idempotent: an alert
    already answered keeps its run), then move the watermark.

    A watermark moves only after the responses were accepted by Prefect, so a crash in between
    repeats work (harmlessly) instead of losing alerts. A source that fails does not hold the
    others back; the run then ends Failed and names it.

    Args:
        sources: The Defender APIs to read; empty: those of the `RIPOSTE_POLL_SOURCES` setting.
        defender_block: The Defender credentials block to read with (`riposte-defender`).
        lookback_minutes: On a source's very first poll (no watermark yet), how far back to
            read, in minutes; later polls start at the watermark.
        max_alerts: At most this many alerts read per source and poll; the rest are read by
            the next poll.
    """
    logger = get_run_logger()
    defender = load_block(DefenderCredentials, defender_block)
    summaries: list[PollSummary] = []
    failures: list[str] = []
    for source in sources or get_settings().poll_source_list:
        try:
            since = read_watermark(source, timedelta(minutes=lookback_minutes))
            alerts = list_alerts_since(defender, source, since, max_alerts)
            # A resolved alert needs no response; one seen before comes back to the same run.
            refs = [ref_for(alert) for alert in alerts if alert.status != Status.RESOLVED]
            run_ids = start_responses(refs)
            newest = max((a.updated_at for a in alerts), default=since)
            watermark = advance_watermark(source, newest)
        except Exception as exc:
            logger.error("Polling %s failed: %s", source, exc)
            failures.append(f"{source}: {exc}")
            continue
        logger.info(
            "%s: %d alerts since %s; %d response runs started or found",
            source,
            len(alerts),
            since,
            len(run_ids),
        )
        summaries.append(
            PollSummary(
                source=source,
                since=since.isoformat(),
                alerts_seen=len(alerts),
                responses=len(run_ids),
                watermark=watermark.isoformat(),
            )
        )
    if failures:
        raise RuntimeError("polling failed for " + "; ".join(failures))
    return summaries
