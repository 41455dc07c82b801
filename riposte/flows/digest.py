"""The scheduled `post_digests` flow: one summary message per channel per period that closed.

The digest playbook records alerts in buckets (one channel, one period) as Prefect artifacts;
this flow reads the buckets whose period is over, posts each once (the post is keyed by the
bucket, so a retry or a second run at the same time posts nothing more), and leaves a
`riposte-posted-digest-...` artifact with the text it posted, so later runs skip the bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from riposte.alerts.messages import MessageRenderer
from riposte.alerts.model import Alert
from riposte.alerts.throttle import DigestBucket
from riposte.flows._common import stored_flow
from riposte.settings import get_settings
from riposte.tasks.decide import current_policy
from riposte.tasks.digests import (
    closed_by,
    post_digest,
    posted_buckets,
    posted_key,
    read_entries,
)
from riposte.tasks.notify import load_channel


class PostedDigest(BaseModel):
    bucket: str
    channel: str
    start: datetime
    end: datetime
    alerts: int


class DigestSummary(BaseModel):
    posted: list[PostedDigest]
    waiting: int
    """Buckets whose period is not over yet."""
    failed: list[str]


# Not cached: a Retry of the flow must read the entries as they are now.
@task(task_run_name="read digest entries", cache_policy=NO_CACHE)
def collect_closed_buckets(
    now: datetime, lookback: timedelta
) -> tuple[list[tuple[DigestBucket, list[Alert]]], int]:
    """The buckets that closed by ``now`` and were not posted yet, each with its alerts (once
    each, oldest first), and how many buckets are still open."""
    by_key: dict[str, tuple[DigestBucket, dict[str, Alert]]] = {}
    for entry in read_entries(since=now - lookback):
        bucket, alerts = by_key.setdefault(entry.bucket.key, (entry.bucket, {}))
        alerts.setdefault(entry.alert.correlation_key, entry.alert)
    closed = [b for b, _ in by_key.values() if closed_by(b, now)]
    done = posted_buckets(closed)
    ready = [
        (bucket, sorted(by_key[bucket.key][1].values(), key=lambda a: a.created_at))
        for bucket in sorted(closed, key=lambda b: (b.start, b.channel))
        if bucket.key not in done
    ]
    return ready, len(by_key) - len(closed)


@stored_flow("post_digests", "digest", log_prints=False)
def post_digests(now: datetime | None = None, lookback_hours: int = 48) -> DigestSummary:
    """Post the digest of every period that closed in the last ``lookback_hours``: one message
    per channel per period, never twice.

    ``now`` (default: the current time) is when to consider periods closed; a later time posts
    periods that are still open, for tests and for catching up by hand.

    Args:
        now: Leave empty (the current time). A later time posts the periods that would have
            closed by then, still open ones included: to post a digest early, by hand.
        lookback_hours: How far back to look for periods not posted yet, in hours.
    """
    logger = get_run_logger()
    now = now or datetime.now(UTC)
    ready, waiting = collect_closed_buckets(now, timedelta(hours=lookback_hours))
    templates = current_policy(logger).policy.defaults.templates
    renderer = MessageRenderer(templates, get_settings().templates_dir)
    posted: list[PostedDigest] = []
    failed: list[str] = []
    for bucket, alerts in ready:
        try:
            channel = load_channel(bucket.channel)
        except Exception as exc:
            logger.error("Digest %s: channel %s: %s", bucket.key, bucket.channel, exc)
            failed.append(f"{bucket.key}: {exc}")
            continue
        state = post_digest(channel, bucket, alerts, templates, return_state=True)
        if not state.is_completed():
            failed.append(f"{bucket.key}: {state.message or 'failed'}")
            continue
        # Marked after the post's result is committed: if this fails, the next run finds the
        # post Cached and marks it then, without posting again.
        create_markdown_artifact(
            markdown=f"Posted to {bucket.channel}:\n\n```\n"
            f"{renderer.digest_text(bucket, alerts)}\n```",
            key=posted_key(bucket),
            description=f"Digest of {len(alerts)} alert(s) for {bucket.channel}",
        )
        posted.append(
            PostedDigest(
                bucket=bucket.key,
                channel=bucket.channel,
                start=bucket.start,
                end=bucket.end,
                alerts=len(alerts),
            )
        )
        logger.info("Posted the digest %s: %d alert(s)", bucket.key, len(alerts))
    if failed:
        raise RuntimeError("digests not posted: " + "; ".join(failed))
    return DigestSummary(posted=posted, waiting=waiting, failed=failed)
