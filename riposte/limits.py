"""Per-API request budgets, kept in Prefect as global concurrency limits used as rate limits.

Every external API Riposte calls has a budget (Defender for Cloud Apps allows 30 requests a
minute per tenant, Graph security 150, ...). Two workers that each stayed under it on their own
would together exceed it, so the budget lives in Prefect, where every process shares it: one
global concurrency limit with slot decay per API, named ``riposte-api-<api>``
(``riposte-api-mdca``). Setup creates them (`ensure_rate_limits`, called by
``riposte blocks register`` and by the local stack); the HTTP clients take one slot per
outgoing request, retries included, strictly (`acquire_request_slot`: the same
``/v2/concurrency_limits/increment`` call as Prefect's ``rate_limit(..., strict=True)``, with
the server's transient SQLite 503s retried in milliseconds instead of seconds), so a missing
limit fails the call loudly instead of silently letting it through.

Only calls made inside a Prefect flow or task run are counted. Outside a run (the CLI, the
intake, unit tests of a client) there is no Prefect budget: nothing is acquired, and the only
protection is the client's own handling of 429 and Retry-After.

Each budget can be overridden with ``RIPOSTE_RATE_<API>`` (``RIPOSTE_RATE_MDCA=60/min``), read
when the limits are created: a count per ``s``, ``min`` or ``h``, several windows joined by
commas (``100/min,1500/h``); a bare number is per minute.

Over 500 lines because the budgets, the limits that setup makes of them and the slot protocol the
clients take them with change together, and one file keeps them from drifting apart.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

from riposte.settings import Settings, get_settings

LIMIT_PREFIX = "riposte-api-"
# Share of the smallest window's budget that may go out at once, as a burst; the rest is the
# steady rate. A bigger burst would leave less for the steady rate, see `RateBudget`.
BURST_SHARE = 0.1
# A longer window (Defender for Endpoint's hour) has a limit of its own, and half of it may go
# out early, at the pace of the shorter window: a storm is answered at 90 a minute for a
# while instead of at the hour's average (25 a minute) from the start.
LONG_WINDOW_BURST_SHARE = 0.5

Change = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Window:
    """At most ``requests`` in any ``seconds``-long window, as the vendor counts them."""

    requests: int
    seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.seconds <= 0:
            raise ValueError(f"a rate window needs requests >= 1 and seconds > 0, not {self}")

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(float(self.seconds))
        return f"{self.requests}/{unit}" if unit else f"{self.requests}/{self.seconds:g}s"


@dataclass(frozen=True)
class RateBudget:
    """The request budget of one API and the Prefect limit that enforces it.

    A Prefect limit with slot decay is a token bucket: ``limit`` slots, each request takes one,
    and taken slots come back at ``slot_decay_per_second``. So at most ``limit`` requests go out
    at once (the burst) and ``slot_decay_per_second`` a second after that (the steady rate), and
    any window of ``W`` seconds admits at most ``limit + slot_decay_per_second * W`` requests.

    "N per minute" is therefore NOT ``limit=N, slot_decay_per_second=N/60``: a full bucket of N
    plus a minute of refill would let 2N through in one minute. Instead the burst is a tenth of
    the budget (at least one) and the steady rate is what remains: ``limit = max(1, N // 10)``,
    ``slot_decay_per_second = (N - limit) / 60``, so that ``limit + rate * 60 <= N``. For 30 a
    minute: 3 at once, then 0.45 a second (27 a minute). A budget of one request per window
    gets one slot that comes back after the window. Where the vendor counts several windows
    (Defender for Endpoint: a minute and an hour), each gets a limit of its own and a request
    takes a slot of each, at once (`limits`); a longer window's burst is half its budget.

    Prefect applies the decay in whole slots from the limit's last update, and a refused
    acquisition counts as an update, so asks that come too often lose the refill they
    interrupt: `acquire_request_slot` lets one thread per process ask, paced a slot time apart
    while the bucket is dry, several slots at once when threads queue. The budget is never
    exceeded, only under-used (in `bench/quota.py`'s storm, ServiceNow's calls ran at about 243
    a minute against a steady rate of 270, 90 %).
    """

    api: str
    system: str  # the client's name for the system (`ExternalServiceError.system`)
    windows: tuple[Window, ...]
    source: str  # where the numbers come from

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError(f"the {self.api} budget has no window")

    @property
    def name(self) -> str:
        return limit_name(self.api)

    @property
    def limits(self) -> tuple[LimitSpec, ...]:
        """One Prefect limit per window, all taken for each request; the shortest window's
        is named after the API (``riposte-api-mde``), the others after their window too
        (``riposte-api-mde-per-3600s``)."""
        specs = []
        for i, window in enumerate(sorted(self.windows, key=lambda w: w.seconds)):
            share = BURST_SHARE if i == 0 else LONG_WINDOW_BURST_SHARE
            burst = max(1, math.floor(window.requests * share))
            specs.append(
                LimitSpec(
                    name=self.name if i == 0 else f"{self.name}-per-{window.seconds:g}s",
                    limit=burst,
                    slot_decay_per_second=max(window.requests - burst, 1) / window.seconds,
                    window=window,
                )
            )
        return tuple(specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.limits)

    @property
    def limit(self) -> int:
        """The burst of the shortest window's limit."""
        return self.limits[0].limit

    @property
    def slot_decay_per_second(self) -> float:
        """The steady rate of the shortest window's limit."""
        return self.limits[0].slot_decay_per_second

    def describe(self) -> str:
        return "; ".join(
            f"{spec.name}: {spec.window} -> {spec.limit} at once, then"
            f" {spec.slot_decay_per_second:.3g}/s"
            for spec in self.limits
        )


@dataclass(frozen=True)
class LimitSpec:
    """One Prefect rate limit (a token bucket) that enforces one window of a budget."""

    name: str
    limit: int
    slot_decay_per_second: float
    window: Window


def limit_name(api: str) -> str:
    return f"{LIMIT_PREFIX}{api}"


# The vendors' documented limits, from shared/reference/external-apis.md unless marked as an
# assumption. Requests to the token endpoint (Microsoft identity platform) are not budgeted:
# a token is fetched once an hour per process.
VENDOR_BUDGETS: tuple[RateBudget, ...] = (
    RateBudget(
        "graph",
        "Microsoft Graph",
        (Window(150, 60),),
        "Graph throttling limits: security alert operations, 150 requests per minute per app"
        " per tenant",
    ),
    RateBudget(
        "mde",
        "Microsoft Defender for Endpoint",
        (Window(100, 60), Window(1500, 3600)),
        "Defender for Endpoint API: 100 calls per minute and 1,500 per hour per API",
    ),
    RateBudget(
        "mdebatch",
        "Microsoft Defender for Endpoint batch update",
        (Window(10, 60), Window(500, 3600)),
        "Defender for Endpoint batch update of alerts (POST /api/alerts/batchUpdate): its own"
        " budget of 10 calls per minute and 500 per hour",
    ),
    RateBudget(
        "mdca",
        "Microsoft Defender for Cloud Apps",
        (Window(30, 60),),
        "Defender for Cloud Apps API: 30 requests per minute per tenant",
    ),
    RateBudget(
        "arm",
        "Microsoft Defender for Cloud",
        (Window(1200, 3600),),
        "Azure Resource Manager: 12,000 reads and 1,200 writes per hour per subscription and"
        " principal (documented per-subscription limits); assumption: reads are counted against"
        " the write budget, the stricter of the two, as one limit serves both",
    ),
    RateBudget(
        "servicenow",
        "ServiceNow",
        (Window(300, 60),),
        "assumption: ServiceNow has no fixed rate, an instance's administrators add REST rate"
        " limit rules per user; 300 requests per minute, set RIPOSTE_RATE_SERVICENOW to the"
        " instance's rule",
    ),
    RateBudget(
        "jira",
        "Jira",
        (Window(300, 60),),
        "assumption: Jira Cloud limits are cost-based and not published as fixed numbers (429"
        " with Retry-After when exceeded); 300 requests per minute, set RIPOSTE_RATE_JIRA to"
        " what the site allows",
    ),
    RateBudget(
        "slack",
        "Slack",
        (Window(1, 1),),
        "Slack incoming webhooks: 1 message per second (short bursts tolerated)",
    ),
    RateBudget(
        "teams",
        "Microsoft Teams",
        (Window(60, 60),),
        "assumption: Microsoft publishes no rate for Workflows webhooks (the retired connector"
        " webhooks throttled above 4 per second); one message per second on average, as Slack",
    ),
)

# Entra ID user operations (disable, revoke sessions) are Graph calls: they share its budget,
# the conservative choice (Graph throttles the directory separately, and more generously).
_SHARES_BUDGET_OF = {"Microsoft Entra ID": "Microsoft Graph"}


# A request that counts against another budget than its client's (Defender for Endpoint's
# batch update) names that budget's system in this request extension.
BUDGET_OF = "riposte_budget_of"


_RATE_RE = re.compile(
    r"^\s*(?P<n>\d+)\s*(?:/\s*(?P<unit>s|sec|second|m|min|minute|h|hr|hour))?\s*$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[Window, ...]:
    """``"30/min"``, ``"1/s"``, ``"100/min,1500/h"``; a bare number is per minute."""
    windows = []
    for part in text.split(","):
        match = _RATE_RE.match(part)
        if match is None:
            raise ValueError(
                f"rate {text!r}: expected a count per s, min or h, such as '30/min' or"
                " '100/min,1500/h'"
            )
        unit = (match["unit"] or "min")[0].lower()
        windows.append(Window(int(match["n"]), _UNIT_SECONDS[unit]))
    return tuple(windows)


def rate_budgets(settings: Settings | None = None) -> tuple[RateBudget, ...]:
    """The vendors' budgets with the ``RIPOSTE_RATE_<API>`` overrides applied."""
    settings = settings or get_settings()
    budgets = []
    for budget in VENDOR_BUDGETS:
        override = getattr(settings, f"rate_{budget.api}", None)
        if override:
            variable = f"RIPOSTE_RATE_{budget.api.upper()}"
            try:
                windows = parse_rate(override)
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
            budget = replace(budget, windows=windows, source=f"{variable}={override}")
        budgets.append(budget)
    return tuple(budgets)


def limit_for_system(system: str, settings: Settings | None = None) -> tuple[str, ...] | None:
    """The limit names of the API a client calls (one per window of its budget, as set up with
    the same settings), or None for a system without a budget."""
    wanted = _SHARES_BUDGET_OF.get(system, system)
    return next((b.names for b in rate_budgets(settings) if b.system == wanted), None)


def ensure_rate_limits(
    client: SyncPrefectClient | None = None, budgets: Iterable[RateBudget] | None = None
) -> dict[str, Change]:
    """Create or update one Prefect rate limit per API budget; safe to run again at any time.

    A limit already right is left alone (its taken slots too); one that differs gets the
    budget's size and decay; one switched off in Prefect stays off. Returns what happened to
    each, by limit name.
    """
    wanted = list(rate_budgets() if budgets is None else budgets)
    if client is None:
        with get_client(sync_client=True) as own:
            return _ensure(own, wanted)
    return _ensure(client, wanted)


def _ensure(client: SyncPrefectClient, budgets: Sequence[RateBudget]) -> dict[str, Change]:
    changes: dict[str, Change] = {}
    for spec in [s for budget in budgets for s in budget.limits]:
        try:
            current = client.read_global_concurrency_limit_by_name(spec.name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=spec.name,
                        limit=spec.limit,
                        slot_decay_per_second=spec.slot_decay_per_second,
                        active=True,
                    )
                )
                changes[spec.name] = "created"
                continue
            except ObjectAlreadyExists:  # another setup created it meanwhile: check it
                current = client.read_global_concurrency_limit_by_name(spec.name)
        if current.limit == spec.limit and math.isclose(
            current.slot_decay_per_second, spec.slot_decay_per_second, rel_tol=1e-9
        ):
            changes[spec.name] = "unchanged"
            continue
        client.update_global_concurrency_limit(
            spec.name,
            GlobalConcurrencyLimitUpdate(
                limit=spec.limit, slot_decay_per_second=spec.slot_decay_per_second
            ),
        )
        changes[spec.name] = "updated"
    return changes


class RateLimitError(RuntimeError):
    """A request slot could not be taken: the limit is missing (setup was not run) or Prefect
    refused. Not a failure of the external system, so not an `ExternalServiceError`."""


def in_prefect_run() -> bool:
    """True inside a flow or task run, where requests count against the Prefect budgets."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


# How long a request may wait for its slot before the call fails (a budget of 30 a minute
# behind a queue of callers can take minutes; an hour-long wait means something is wrong).
SLOT_WAIT_SECONDS = 600.0
# Prefect's server answers 503 when its SQLite database is busy; its own client then backs
# off 2, 4, 8 s. A slot increment is small and the conflict passes in milliseconds, so it is
# retried at once with a short jittered pause instead.
_BUSY_PAUSE_SECONDS = (0.02, 0.25)


class _SlotClient:
    """One HTTP connection pool to the Prefect API per process, for slot increments only."""

    _lock = threading.Lock()
    _clients: ClassVar[dict[tuple[str, str], httpx.Client]] = {}

    @classmethod
    def get(cls) -> httpx.Client:
        api = str(PREFECT_API_URL.value() or "").rstrip("/")
        if not api:
            raise RateLimitError("no Prefect API (PREFECT_API_URL) to take request slots from")
        headers = {"Content-Type": "application/json"}
        key = PREFECT_API_KEY.value()
        auth = PREFECT_API_AUTH_STRING.value()
        if key:
            headers["Authorization"] = f"Bearer {_plain(key)}"
        elif auth:
            headers["Authorization"] = "Basic " + base64.b64encode(_plain(auth).encode()).decode()
        identity = (api, hashlib.sha256(headers.get("Authorization", "").encode()).hexdigest())
        with cls._lock:
            client = cls._clients.get(identity)
            if client is None:
                client = httpx.Client(base_url=api, headers=headers, timeout=30.0)
                cls._clients[identity] = client
            return client


def _plain(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if callable(getter) else value)


# Slots are taken in lots only from generous limits (a burst of LOT_MIN_BURST or more), where
# one Prefect write per request would cost more than the budget protects; a lot is spent on the
# next requests within LOT_SECONDS of the ask and the rest dropped. Slots of a lot asked just
# before a vendor's window may be spent inside it: a window can see up to one lot per process
# more than the budget (a lot is at most a tenth of the burst, itself a tenth of the budget: 1%).
# A lot is as big as this process's demand for the limit over the last LOT_SECONDS (so a quiet
# process wastes little), at most a tenth of the burst and LOT_MAX. Vendor budgets
# are small (a burst of 1 to 15): their slots are taken one by one.
LOT_MIN_BURST = 200
LOT_MAX = 100
LOT_SECONDS = 5.0


class _Lots:
    """Slots this process took ahead of use, per limit (a cache: losing it wastes budget)."""

    lock = threading.Lock()
    spare: ClassVar[dict[str, tuple[int, float]]] = {}
    burst: ClassVar[dict[str, int]] = {}
    demand: ClassVar[dict[str, deque[float]]] = {}

    @classmethod
    def take_spare(cls, name: str, new_request: bool = True) -> bool:
        """A spare slot of ``name``; ``new_request``: counted in the demand."""
        with cls.lock:
            now = time.monotonic()
            asked = cls.demand.setdefault(name, deque())
            if new_request:
                asked.append(now)
            while asked and asked[0] < now - LOT_SECONDS:
                asked.popleft()
            count, taken = cls.spare.get(name, (0, 0.0))
            if count > 0 and now - taken < LOT_SECONDS:
                cls.spare[name] = (count - 1, taken)
                return True
            cls.spare.pop(name, None)
            return False

    @classmethod
    def size(cls, name: str) -> int:
        burst = cls.burst.get(name, 0)
        if burst < LOT_MIN_BURST:
            return 1
        with cls.lock:
            recent = len(cls.demand.get(name, ()))
        return max(1, min(LOT_MAX, burst // 10, recent))

    @classmethod
    def forget(cls, name: str) -> None:
        with cls.lock:
            cls.burst.pop(name, None)
            cls.spare.pop(name, None)

    @classmethod
    def got(cls, name: str, slots: int, burst: int | None, asked: float) -> None:
        """``slots`` came for an ask sent at ``asked`` (monotonic): the lot's time runs from
        the ask, not the answer."""
        with cls.lock:
            if burst is not None:
                cls.burst[name] = burst
            if slots > 1:
                cls.spare[name] = (slots - 1, asked)


def acquire_request_slot(
    names: str | Sequence[str], wait_seconds: float = SLOT_WAIT_SECONDS
) -> None:
    """Take one slot of the rate limit ``names`` (of each, at once, when several: one per
    window of a budget), strictly: wait as long as the budget requires (Prefect's 423 and its
    Retry-After), retry the server's transient 503s at once, and fail with RateLimitError if
    a limit does not exist or no slot came within ``wait_seconds``."""
    wanted = [names] if isinstance(names, str) else list(names)
    name = ",".join(wanted)
    if _Lots.take_spare(name):
        return
    deadline = time.monotonic() + wait_seconds
    # One thread of a process asks Prefect at a time, the others queue here. Prefect counts a
    # limit's decay in whole slots from its last update, and a refused request is an update:
    # sixteen threads asking every second would reset the clock before a slot ever came back.
    gate = _Gates.of(name)
    _Gates.queue(name, +1)
    try:
        entered = gate.acquire(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        _Gates.queue(name, -1)
    if not entered:
        raise RateLimitError(
            f"no slot of the Prefect rate limit {name!r} within {wait_seconds:.0f}s "
            "(waiting behind this process's other requests)"
        )
    try:
        if _Lots.take_spare(name, new_request=False):  # a lot taken by the thread before us
            return
        _acquire(wanted, name, deadline, wait_seconds)
    finally:
        gate.release()


class _Gates:
    lock = threading.Lock()
    gates: ClassVar[dict[str, threading.Lock]] = {}
    queued: ClassVar[dict[str, int]] = {}  # threads waiting at each gate

    @classmethod
    def of(cls, name: str) -> threading.Lock:
        with cls.lock:
            return cls.gates.setdefault(name, threading.Lock())

    @classmethod
    def queue(cls, name: str, change: int) -> None:
        with cls.lock:
            cls.queued[name] = cls.queued.get(name, 0) + change

    @classmethod
    def behind(cls, name: str) -> int:
        with cls.lock:
            return cls.queued.get(name, 0)


class _Pace:
    """Per limit (set), while its bucket is dry: when this process last got a slot, and how
    many refusals in a row. Touched only by the thread that holds the limit's gate."""

    last_slot: ClassVar[dict[str, float]] = {}
    refusals: ClassVar[dict[str, int]] = {}


# A slot time and a fiftieth: the decay is counted in whole slots, and 0.999 of one is none.
_SLOT_MARGIN = 1.02
# While threads queue at a dry limit, one ask takes what this many seconds of refill bring.
DRY_LOT_SECONDS = 2.0


def _slot_times(names: Sequence[str]) -> tuple[float, float, int]:
    """The seconds these limits take to give a slot back, the fastest and the slowest, and
    the smallest burst, per their budgets as set up with this process's settings ((0, 0, 1)
    when unknown)."""
    specs = [s for budget in rate_budgets() for s in budget.limits if s.name in names]
    if not specs:
        return 0.0, 0.0, 1
    decays = [s.slot_decay_per_second for s in specs]
    return _SLOT_MARGIN / max(decays), _SLOT_MARGIN / min(decays), min(s.limit for s in specs)


def _acquire(wanted: list[str], name: str, deadline: float, wait_seconds: float) -> None:
    """Ask Prefect until a slot comes. While the bucket is dry (the last ask was refused), the
    asks are paced a slot time apart: Prefect counts the refill from the last update, refused
    asks included, so an ask too soon costs the refill it interrupts. Prefect's own
    Retry-After grows with every refusal of every process and would leave the budget unused."""
    slots = _Lots.size(name)
    fastest, slowest, smallest_burst = _slot_times(wanted)
    if _Pace.refusals.get(name) and fastest:
        since = time.monotonic() - _Pace.last_slot.get(name, 0.0)
        if since >= slowest * 2:  # quiet long enough for the bucket to refill: start afresh
            _Pace.refusals[name] = 0
        else:
            # Threads queue behind this one: ask for as many slots as two seconds of refill
            # bring (within the burst), one ask instead of several, each a round trip to a
            # busy server. The spares go to the queued threads at once (`_Lots`).
            ahead = min(_Gates.behind(name) + 1, smallest_burst, int(DRY_LOT_SECONDS / fastest))
            slots = max(1, ahead)
            if since < fastest * slots:
                time.sleep(fastest * slots - since)
    while True:
        body = {"names": wanted, "slots": slots, "mode": "rate_limit"}
        # The server counts the refill from about when it got the ask, not when we heard back.
        asked = time.monotonic()
        try:
            response = _SlotClient.get().post("/v2/concurrency_limits/increment", json=body)
        except httpx.HTTPError as exc:
            response = None
            failure = f"Prefect API unreachable ({type(exc).__name__})"
        if response is not None:
            if response.status_code == 200:
                limits = response.json()
                found = {x.get("name") for x in limits if isinstance(x, dict)}
                missing = [n for n in wanted if n not in found]
                if missing or not limits:
                    raise RateLimitError(
                        f"the Prefect rate limit {(missing or wanted)[0]!r} does not exist. Setup"
                        " creates the limits: run `riposte blocks register`"
                        " (riposte.limits.ensure_rate_limits)"
                    )
                bursts = [x.get("limit") for x in limits if isinstance(x, dict)]
                burst = min((b for b in bursts if isinstance(b, int)), default=None)
                _Lots.got(name, slots, burst, asked)
                _Pace.last_slot[name] = asked
                if _Pace.refusals.get(name):
                    _Pace.refusals[name] = 1  # still dry: paced, but no longer backing off
                return
            if response.status_code == 423:
                refused = _Pace.refusals.get(name, 0) + 1
                _Pace.refusals[name] = refused
                if fastest:
                    # A slot time of the fastest limit, doubled at each refusal in a row up
                    # to the slowest's (the other window of a budget may be the dry one) or
                    # to eight, and jittered: another process pacing the same limit in step
                    # would otherwise reset its refill before every ask of ours.
                    backoff = min(2 ** (refused - 1), max(8.0, slowest / fastest))
                    pause = min(fastest * backoff * random.uniform(1.0, 1.5), 60.0)
                else:
                    pause = _retry_after(response, default=1.0)
                slots = 1  # a busy limit: take what one request needs
            elif response.status_code == 422 and slots > 1:
                # More slots than the limit holds (it was lowered since): one at a time.
                _Lots.forget(name)
                slots, pause = 1, 0.0
            elif response.status_code in (502, 503, 504):
                pause = random.uniform(*_BUSY_PAUSE_SECONDS)
            else:
                raise RateLimitError(
                    f"Prefect refused a slot of the rate limit {name!r}: HTTP "
                    f"{response.status_code}"
                )
            failure = f"HTTP {response.status_code}"
        else:
            pause = random.uniform(*_BUSY_PAUSE_SECONDS) * 4
        if time.monotonic() + pause > deadline:
            raise RateLimitError(
                f"no slot of the Prefect rate limit {name!r} within {wait_seconds:.0f}s "
                f"(last answer: {failure})"
            )
        time.sleep(pause)


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, min(float(response.headers.get("Retry-After", default)), 60.0))
    except ValueError:
        return default
