"""`external_call`, the decorator of every task that calls an external system: its retries,
its wait when the system asks to come back later, its cache; and `grouped_steps`, where those
tasks run as steps of one task run instead of a task run each."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prefect import Task
from prefect.cache_policies import DEFAULT as RUN_SCOPED
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext
from prefect.results import ResultRecord, ResultStore, get_result_store
from prefect.states import Completed, Failed
from prefect.transactions import CommitMode, IsolationLevel, Transaction, transaction
from prefect.utilities.callables import call_with_parameters, get_call_parameters

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


_GROUPED: ContextVar[bool] = ContextVar("riposte_grouped_steps", default=False)
_ATTEMPT: ContextVar[int] = ContextVar("riposte_step_attempt", default=0)


@contextmanager
def grouped_steps() -> Iterator[None]:
    """Inside it, the steps (`external_call` tasks) called in this thread are steps of the task
    run already running, not task runs of their own: the alerts of a batch cost the Prefect
    server one task run each instead of one per step.

    A grouped step keeps what its task run gave: the same cache key and lock (a SERIALIZABLE
    transaction on the same result store), so a step another run already did, grouped or not,
    comes back from its record instead of being done again; the same retries and delays; the
    same refusals that are not retried. What it does not have is a state of its own in the
    UI: the alert's task run logs a step that failed, or that was done before, by its name."""
    token = _GROUPED.set(True)
    try:
        yield
    finally:
        _GROUPED.reset(token)


def step_attempt() -> int:
    """Which attempt of the running step this is, from 1 (a task run's `run_count`)."""
    inline = _ATTEMPT.get()
    if inline:
        return inline
    context = TaskRunContext.get()
    return context.task_run.run_count if context is not None else 1


class Step(Task[..., Any]):
    """A task that, inside `grouped_steps()`, runs as a step of the current task run."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _GROUPED.get():
            return super().__call__(*args, **kwargs)
        return_state = kwargs.pop("return_state", False)
        kwargs.pop("wait_for", None)
        parameters = get_call_parameters(self.fn, args, kwargs)
        try:
            value = self._grouped(parameters)
        except Exception as exc:
            if return_state:
                return Failed(message=f"{self._label(parameters)} failed: {exc}", data=exc)
            raise
        return Completed(data=value) if return_state else value

    def _label(self, parameters: dict[str, Any]) -> str:
        template = self.task_run_name if isinstance(self.task_run_name, str) else None
        try:
            return template.format(**parameters) if template else self.name
        except (AttributeError, KeyError, IndexError, ValueError):
            return self.name

    def _grouped(self, parameters: dict[str, Any]) -> Any:
        policy = self.cache_policy
        key_fn = policy.cache_key_fn if isinstance(policy, CacheKeyFnPolicy) else None
        if key_fn is None:
            # Run-scoped or uncached (a read): done again by a Retry, as it reads the same.
            return self._attempts(parameters)
        key = key_fn(None, parameters)  # type: ignore[arg-type]  # keys read parameters only
        if key is None:
            return self._attempts(parameters)
        store = get_result_store().update_for_task(self)
        assert isinstance(store, ResultStore)  # the sync call gives the store itself
        level = policy.isolation_level if policy else None
        # A transaction of its own, as the step's task run had: inside the alert's task run's
        # transaction it would be a child, committed (its record written, its lock released)
        # only when the alert's response ends, and never when it fails.
        detached = Transaction.__var__.set(None)  # type: ignore[arg-type]
        try:
            with transaction(
                key=key,
                store=store,
                isolation_level=IsolationLevel(level) if level else None,
                commit_mode=CommitMode.LAZY,
                write_on_commit=True,
            ) as txn:
                # Nothing that may raise runs here once the record exists: Prefect's rollback of
                # a committed transaction returns before it releases the lock.
                done_before = txn.is_committed()
                if not done_before:
                    value = self._attempts(parameters)
                    txn.stage(value)
        finally:
            Transaction.__var__.reset(detached)
        if not done_before:
            return value
        record = store.read(key)  # a committed record does not change: read without the lock
        run_logger().info("%s: done before, its result reused", self._label(parameters))
        return record.result if isinstance(record, ResultRecord) else record

    def _attempts(self, parameters: dict[str, Any]) -> Any:
        """The step's function with the task's retries, delays and retry condition."""
        label = self._label(parameters)
        attempt = 1
        while True:
            token = _ATTEMPT.set(attempt)
            try:
                return call_with_parameters(self.fn, parameters)
            except Exception as exc:
                permanent = isinstance(exc, (*_PERMANENT, ServiceThrottledError))
                if permanent or attempt > TASK_RETRIES:
                    run_logger().error("%s failed: %s: %s", label, type(exc).__name__, exc)
                    raise
                delay = TASK_RETRY_DELAYS[min(attempt, len(TASK_RETRY_DELAYS)) - 1]
                run_logger().warning(
                    "%s failed (%s: %s); attempt %d of %d in %.0f s",
                    label,
                    type(exc).__name__,
                    exc,
                    attempt + 1,
                    TASK_RETRIES + 1,
                    delay,
                )
                time.sleep(delay)
                attempt += 1
            finally:
                _ATTEMPT.reset(token)


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
    return lambda fn: Step(
        fn=deferring(fn),
        retries=TASK_RETRIES,
        retry_delay_seconds=TASK_RETRY_DELAYS,
        retry_condition_fn=retry_unless_permanent,
        persist_result=cached,
        cache_policy=policy,
        task_run_name=name,
    )
