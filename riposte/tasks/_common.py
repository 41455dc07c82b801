"""Retry rules shared by the tasks."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import DEFAULT as RUN_SCOPED

from riposte.blocks.errors import ServiceAuthError, ServiceNotFoundError, ServiceRejectedError
from riposte.tasks._cache import KeyFn, keyed

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


def external_call(key_fn: KeyFn | None = None, name: str | None = None) -> Any:
    """The decorator of every task that calls an external system: retried unless the failure is
    permanent, its result persisted so that a retried run gets it back as Cached. ``key_fn``
    keys the result by the alert instead of by the flow run, under a lock, so that two runs
    never do the same step for the same alert (see `riposte.tasks._cache`). ``name`` is the
    task run's name template."""
    return task(
        retries=TASK_RETRIES,
        retry_delay_seconds=TASK_RETRY_DELAYS,
        retry_condition_fn=retry_unless_permanent,
        persist_result=True,
        cache_policy=keyed(key_fn, serializable=True) if key_fn else RUN_SCOPED,
        task_run_name=name,
    )
