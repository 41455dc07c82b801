"""The same call for many alerts, asked at once by concurrent responses, made as one bulk call.

Defender for Endpoint updates many alerts with one ``batchUpdate`` and Defender for Cloud Apps
reads or closes many with one id filter, while their per-alert budgets are small (100 and 30
requests a minute). A batch run answers up to 16 alerts at once, each in its own thread: when
several of them wait for the same write (the same status, the same comment) or for a read,
`Coalescer` sends one bulk call for all of them, and each caller gets its own result or error,
as if it had made the call alone. Only inside `coalescing(...)` (the batch flow sets it): a
single response never waits for company that is not coming.

The first caller of a group leads: it waits `linger` seconds for others to join, takes up to
`max_ids` of them, makes the call (one bulk call, or the single call when it is alone) and
hands the lead to the next waiter, if any. While a bulk call waits for its slot of the API's
budget, later callers pile up for the next one, so the busier the API, the bigger the calls.
State is per process and per client, and only for the length of a call: nothing to recover.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from riposte.blocks._http import slot_ahead
from riposte.blocks.errors import ServiceNotFoundError, ServiceRejectedError

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

# Seconds a group's leader waits for company; None outside a batch (no coalescing at all).
_LINGER: ContextVar[float | None] = ContextVar("riposte_coalesce_linger", default=None)
DEFAULT_LINGER = 0.5


@contextlib.contextmanager
def coalescing(linger: float = DEFAULT_LINGER) -> Iterator[None]:
    """Within this block (and the threads started with a copy of its context), calls that can
    be made in bulk are gathered for ``linger`` seconds and made together."""
    token = _LINGER.set(linger)
    try:
        yield
    finally:
        _LINGER.reset(token)


@dataclass(eq=False)
class _Waiter(Generic[R]):
    alert_id: str
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    lead: bool = False
    result: R | None = None
    error: BaseException | None = None


class Coalescer(Generic[K, R]):
    """Gathers calls of one kind, grouped by ``K`` (what they would send besides the ids).

    ``single(alert_id, key)`` makes the call for one alert; ``bulk(alert_ids, key)`` for many
    and returns each alert's result by id (an id left out gets `ServiceNotFoundError`).
    """

    def __init__(
        self,
        system: str,
        what: str,
        *,
        single: Callable[[str, K], R],
        bulk: Callable[[Sequence[str], K], dict[str, R]],
        max_ids: int,
        slot_ahead: bool = True,
    ) -> None:
        if max_ids < 2:
            raise ValueError("a bulk call for fewer than 2 alerts is not a bulk call")
        self.system = system
        self.what = what
        self._single = single
        self._bulk = bulk
        self.max_ids = max_ids
        # The call's slot of ``system``'s budget is taken before the leader sees who is
        # waiting, so that everyone who came meanwhile shares it; not where the single and the
        # bulk call spend different budgets (Defender for Endpoint's batch update).
        self.slot_ahead = slot_ahead
        self._lock = threading.Lock()
        self._queues: dict[K, list[_Waiter[R]]] = {}
        self._leading: set[K] = set()

    def call(self, alert_id: str, key: K) -> R:
        """The call for ``alert_id``, made alone or with others waiting for the same ``key``."""
        linger = _LINGER.get()
        if linger is None:
            return self._single(alert_id, key)
        waiter: _Waiter[R] = _Waiter(alert_id)
        with self._lock:
            self._queues.setdefault(key, []).append(waiter)
            if key not in self._leading:
                self._leading.add(key)
                waiter.lead = True
        if waiter.lead:
            time.sleep(linger)  # let the rest of the storm join
        while not waiter.done:
            if waiter.lead:
                self._lead(key)
            else:
                waiter.woken.wait()
                waiter.woken.clear()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def _take(self, key: K) -> list[_Waiter[R]]:
        with self._lock:
            queue = self._queues.get(key, [])
            taken, rest = queue[: self.max_ids], queue[self.max_ids :]
            if rest:
                self._queues[key] = rest
            else:
                self._queues.pop(key, None)
        return taken

    def _lead(self, key: K) -> None:
        """One call for the first `max_ids` waiting (this thread among them), then the lead
        to the next waiter."""
        taken: list[_Waiter[R]] = []
        try:
            with slot_ahead(self.system) if self.slot_ahead else contextlib.nullcontext():
                taken = self._take(key)
                self._send(taken, key)
        except BaseException as exc:  # no slot of the budget came: the call cannot be made
            taken = taken or self._take(key)
            for waiter in taken:
                waiter.error = waiter.error or exc
        finally:
            for waiter in taken:
                waiter.done = True
            with self._lock:
                rest = self._queues.get(key, [])
                if rest:
                    rest[0].lead = True  # the next call is theirs
                    rest[0].woken.set()
                else:
                    self._leading.discard(key)
            for waiter in taken:
                waiter.lead = False
                waiter.woken.set()

    def _send(self, taken: list[_Waiter[R]], key: K) -> None:
        if len(taken) == 1:
            try:
                taken[0].result = self._single(taken[0].alert_id, key)
            except BaseException as exc:
                taken[0].error = exc
            return
        ids = list(dict.fromkeys(w.alert_id for w in taken))
        try:
            results = self._bulk(ids, key)
        except (ServiceNotFoundError, ServiceRejectedError):
            # Refused whole, nothing done (one alert deleted meanwhile, one value another
            # alert cannot take): each alert alone, so that only the one at fault fails.
            for waiter in taken:
                try:
                    waiter.result = self._single(waiter.alert_id, key)
                except BaseException as exc:
                    waiter.error = exc
            return
        except BaseException as exc:
            for waiter in taken:
                waiter.error = exc
            return
        for waiter in taken:
            if waiter.alert_id in results:
                waiter.result = results[waiter.alert_id]
            else:
                waiter.error = ServiceNotFoundError(
                    self.system, f"{self.what} {waiter.alert_id}: not in the bulk answer"
                )
