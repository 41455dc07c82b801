"""`external_call`, the decorator of every task that calls an external system: its retries,
its wait when the system asks to come back later, its cache."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import DEFAULT as RUN_SCOPED
from prefect.cache_policies import NO_CACHE

from riposte.blocks._http import run_logger
from riposte.blocks.errors import (
    ServiceAuthError,
    ServiceNotFoundError,
    ServiceRejectedError,
    ServiceThrottledError,
)
from riposte.settings import get_settings
from riposte.tasks._cache import KeyFn, keyed

# The clients already retry throttling and 5xx with backoff; a task retry is the second line,
# for an outage that outlasts them. Refusals (bad credentials, invalid request) never heal.
TASK_RETRIES = 2
TASK_RETRY_DELAYS: list[float] = [5.0, 20.0]
_PERMANENT = (ServiceAuthError, ServiceNotFoundError, ServiceRejectedError)


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except (*_PERMANENT, ServiceThrottledError):  # throttled: deferred already, then given up
        return False
    except Exception:
        return True
    return False


# A system that asks to come back later than its client waits (ServiceNow's hourly rate
# limits) defers the step by as much, within this bound; past it, the step fails as throttled,
# without task retries (they would only be refused). Below the steps' lock hold (900 s by
# default, RIPOSTE_LOCK_HOLD_SECONDS), so that a deferred step never outlives its lock.
DEFER_MAX_SECONDS = 600.0


def deferring(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, called again once a `ServiceThrottledError`'s Retry-After has passed, with a
    line in the run's log that says so: the request was refused and not carried out, and a
    task retry after 5 or 20 seconds would only be refused again."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        longest = min(DEFER_MAX_SECONDS, 0.8 * get_settings().lock_hold_seconds)
        deadline = time.monotonic() + longest
        while True:
            try:
                return fn(*args, **kwargs)
            except ServiceThrottledError as exc:
                if time.monotonic() + exc.retry_after > deadline:
                    raise
                run_logger().warning(
                    "%s: rate limit reached; the step waits %.0f s (Retry-After), then tries again",
                    exc.system,
                    exc.retry_after,
                )
                time.sleep(exc.retry_after)

    return call


def external_call(
    key_fn: KeyFn | None = None, name: str | None = None, *, cached: bool = True
) -> Any:
    """The decorator of every task that calls an external system: retried unless the failure is
    permanent, deferred when the system asks to come back later (`deferring`), its result
    persisted so that a retried run gets it back as Cached. ``key_fn`` keys the result by the
    alert instead of by the flow run, under a lock, so that two runs never do the same step for
    the same alert (see `riposte.tasks._cache`). ``name`` is the task run's name template.
    ``cached=False``: no cache at all, for steps that read the state of things again each time
    and whose writes compare first (the ticket sync's)."""
    if cached:
        policy: Any = keyed(key_fn, serializable=True) if key_fn else RUN_SCOPED
    else:
        policy = NO_CACHE
    decorate = task(
        retries=TASK_RETRIES,
        retry_delay_seconds=TASK_RETRY_DELAYS,
        retry_condition_fn=retry_unless_permanent,
        persist_result=cached,
        cache_policy=policy,
        task_run_name=name,
    )
    return lambda fn: decorate(deferring(fn))
