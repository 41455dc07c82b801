"""The run plan: which flow runs answer a set of alerts (one run each when they are few, batches
when they are many), with their names, tags and idempotency keys. Pure: the intake and the poll
both plan with it, then create the runs through Prefect their own way."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

from riposte.alerts.response import AlertRef

# The two deployments that answer alerts (`riposte.settings` exports them with the others).
RESPOND_DEPLOYMENT = "respond_to_alert/respond"
BATCH_DEPLOYMENT = "respond_batch/respond-batch"

# Up to this many alerts at once get one run each; more are a burst and go in batches.
SINGLE_RUN_LIMIT = 20
BATCH_SIZE = 100


class RunRequest(BaseModel):
    """One flow run to create for a set of alerts (one alert, or a batch)."""

    deployment: str
    name: str
    parameters: dict[str, Any]
    tags: list[str]
    idempotency_key: str


def plan_runs(
    refs: list[AlertRef],
    *,
    single_limit: int = SINGLE_RUN_LIMIT,
    batch_size: int = BATCH_SIZE,
    attempt: int = 0,
) -> list[RunRequest]:
    """The runs that answer ``refs``: one `respond_to_alert` run each when they are few, batches
    of `respond_batch` when they are many (a burst). Duplicates of one alert revision are
    dropped; both kinds of run de-duplicate through their idempotency keys. ``attempt`` > 0
    answers again alerts whose earlier responses failed: a key of its own, or Prefect would
    hand back the failed run, and the tags `rerun` and `attempt:<n>` (the first run being
    attempt 1), which tell it apart in the UI from the alert's first run of the same name."""
    again = f":again-{attempt}" if attempt else ""
    rerun = ["rerun", f"attempt:{attempt + 1}"] if attempt else []
    unique = list({ref.key: ref for ref in refs}.values())
    if len(unique) <= single_limit:
        return [
            RunRequest(
                deployment=RESPOND_DEPLOYMENT,
                name=f"{ref.source}-{ref.alert_id}",
                parameters={
                    "source": ref.source,
                    "alert_id": ref.alert_id,
                    "revision": ref.revision,
                },
                tags=[
                    "riposte",
                    f"source:{ref.source}",
                    f"severity:{ref.revision.split('-')[0]}",
                    *rerun,
                ],
                idempotency_key=f"respond:{ref.key}{again}",
            )
            for ref in unique
        ]
    requests = []
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        digest = hashlib.sha256("\n".join(sorted(r.key for r in chunk)).encode()).hexdigest()
        sources = sorted({r.source for r in chunk})
        requests.append(
            RunRequest(
                deployment=BATCH_DEPLOYMENT,
                name=f"batch-{chunk[0].source}-{chunk[0].alert_id}-{len(chunk)}",
                parameters={
                    "alerts": [r.model_dump() for r in chunk],
                    "first_alert": f"{chunk[0].source}-{chunk[0].alert_id}",
                    "size": len(chunk),
                },
                tags=["riposte", "batch", *(f"source:{s}" for s in sources), *rerun],
                idempotency_key=f"batch:{digest}{again}",
            )
        )
    return requests
