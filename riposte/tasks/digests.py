"""Digest buckets kept as Prefect artifacts: alerts go in as entries, a summary goes out once.

An alert is recorded in its bucket (one channel, one period) as a table artifact whose key is
the bucket's key. Artifacts are append-only: every entry is a new version of the key, so two
workers adding alerts at the same moment cannot overwrite each other (a Variable would be a
read-modify-write, and holds 5000 characters at most). The entry stays with the flow run that
made it, which is where an analyst looks. The scheduled digest flow reads the entries of the
periods that closed and posts one message per bucket, keyed by the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType
from prefect.client.schemas.sorting import ArtifactSort
from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict

from riposte.alerts.messages import EmailContent, MessageRenderer
from riposte.alerts.model import Alert
from riposte.alerts.policy import Digest, Templates
from riposte.alerts.response import Delivery
from riposte.alerts.throttle import DigestBucket, digest_bucket
from riposte.blocks.email import EmailSmtp
from riposte.settings import get_settings
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call
from riposte.tasks.notify import Channel, channel_label, post_chat

ENTRY_PREFIX = "riposte-digest-"  # `DigestBucket.key` starts with it
POSTED_PREFIX = "riposte-posted-digest-"
# An alert may still join its period's bucket this long after the period ended (it was raised
# in the period but reached us late); after that it goes to the current period instead, since
# the closed one may have been posted already.
LATE_ENTRY = timedelta(minutes=2)
# The digest flow waits this much longer, so that an entry being written at the deadline is in.
SETTLE = timedelta(minutes=1)
_PAGE = 200


class DigestEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: DigestBucket
    alert: Alert
    rule: str


def posted_key(bucket: DigestBucket) -> str:
    return POSTED_PREFIX + bucket.key.removeprefix(ENTRY_PREFIX)


def closed_by(bucket: DigestBucket, now: datetime) -> bool:
    """Whether the digest flow may post ``bucket`` at ``now``: no entry can join it any more."""
    return now >= bucket.end + LATE_ENTRY + SETTLE


def _entry_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    bucket: DigestBucket = params["bucket"]
    return cache_key("digest", alert.correlation_key, bucket.key)


@external_call(_entry_key, name="digest {alert.source}-{alert.id}")
def add_to_digest(alert: Alert, bucket: DigestBucket, rule: str) -> DigestBucket:
    """Record ``alert`` in its digest bucket; returns the bucket it went to (the current
    period's when its own period closed too long ago).

    Example:
        ```python
        add_to_digest(alert, outcome.digest, outcome.rule)
        ```
    """
    now = datetime.now(UTC)
    if now >= bucket.end + LATE_ENTRY:
        period = Digest(channel=bucket.channel, period=bucket.end - bucket.start)
        bucket = digest_bucket(period, now)
    entry = DigestEntry(bucket=bucket, alert=alert, rule=rule)
    create_table_artifact(
        table=[
            {
                "alert": f"{alert.source}-{alert.id}",
                "severity": str(alert.severity),
                "title": alert.title,
                "rule": rule,
                "channel": bucket.channel,
                "period": f"{bucket.start.isoformat()} - {bucket.end.isoformat()}",
                "entry": entry.model_dump_json(exclude={"alert": {"raw"}}),
            }
        ],
        key=bucket.key,
        description=f"Digest entry: {alert.source} alert {alert.id} for {bucket.channel}",
    )
    return bucket


def _entries_of(data: Any) -> Iterable[DigestEntry]:
    rows = json.loads(data) if isinstance(data, str) else data
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and isinstance(row.get("entry"), str):
            yield DigestEntry.model_validate_json(row["entry"])


def read_entries(since: datetime) -> list[DigestEntry]:
    """Every digest entry recorded at or after ``since``, newest first."""
    entries: list[DigestEntry] = []
    flt = ArtifactFilter(
        key=ArtifactFilterKey(like_=ENTRY_PREFIX + "%"),
        type=ArtifactFilterType(any_=["table"]),
    )
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_artifacts(
                artifact_filter=flt, sort=ArtifactSort.CREATED_DESC, limit=_PAGE, offset=offset
            )
            for artifact in page:
                if artifact.created is not None and artifact.created < since:
                    return entries
                entries.extend(_entries_of(artifact.data))
            if len(page) < _PAGE:
                return entries
            offset += _PAGE


def posted_buckets(buckets: Iterable[DigestBucket]) -> set[str]:
    """The keys of the buckets (among ``buckets``) whose digest was posted already."""
    by_marker = {posted_key(b): b.key for b in buckets}
    if not by_marker:
        return set()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(by_marker)))
        )
    return {by_marker[a.key] for a in found if a.key in by_marker}


def _post_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    bucket: DigestBucket = params["bucket"]
    return cache_key("digest-post", bucket.key)


@external_call(_post_key, name="post {bucket.key}")
def post_digest(
    channel: Channel,
    bucket: DigestBucket,
    alerts: list[Alert],
    templates: Templates | None = None,
) -> Delivery:
    """Post one summary of ``alerts`` for ``bucket`` to its channel; keyed by the bucket, so
    that a retry, a re-run or a second digest flow at the same moment posts nothing more.

    Example:
        ```python
        post_digest(load_channel(bucket.channel), bucket, alerts)
        ```
    """
    message = MessageRenderer(templates, get_settings().templates_dir).digest(
        channel.kind, bucket, alerts
    )
    if isinstance(channel, EmailSmtp):
        if not isinstance(message, EmailContent):  # the renderer gives email content for email
            raise TypeError("an email digest must render as email content")
        channel.get_client().send(message, message_id=f"<{bucket.key}@riposte>")
    else:
        if not isinstance(message, dict):
            raise TypeError(f"a {channel.kind} digest must render as a JSON message")
        return post_chat(channel, message)
    return Delivery(channel=channel_label(channel), delivered=True)
