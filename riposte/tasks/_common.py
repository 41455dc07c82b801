"""Retry rules shared by the tasks."""

from __future__ import annotations

from typing import Any

from prefect import task

from riposte.blocks.errors import ServiceAuthError, ServiceNotFoundError, ServiceRejectedError

# The clients already retry throttling and 5xx with backoff; a task retry is the second line,
# for an outage that outlasts them. Refusals (bad credentials, invalid request) never heal.
TASK_RETRIES = 2
TASK_RETRY_DELAYS: list[float] = [5.0, 20.0]
_PERMANENT = (ServiceAuthError, ServiceNotFoundError, ServiceRejectedError)


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except _PERMANENT:
        return False
    except Exception:
        return True
    return False


# The decorator of every task that calls an external system: retried unless the failure is
# permanent, with its result persisted so that a retried flow run gets it back as Cached.
external_call = task(
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    persist_result=True,
)
