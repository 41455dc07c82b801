"""The vendors' request quotas, enforced as the services do: past a budget, a 429 in the
service's own shape (with Retry-After where the service sends one), and the request is not
handled.

Off by default, so that tests and `make run` are not slowed; `POST /_sandbox/quotas
{"enabled": true}` switches every quota on at its documented value (the quota run of
`make bench` does). Budgets, as documented (shared reference):
- Graph security (``/graph/v1.0/security/...``): 150 requests a minute per app per tenant;
- Defender for Endpoint (``/mde/api/...``): 100 calls a minute and 1,500 an hour; its batch
  update of alerts (``POST /mde/api/alerts/batchUpdate``) has its own 10 a minute and 500 an
  hour. The documentation says "per API"; the sandbox counts every other call together, the
  stricter reading;
- Defender for Cloud Apps: its tenant throttle (30 a minute) is `CloudAppsThrottle`, switched on
  with the others.
`GET /_sandbox/quotas` says how many requests each quota admitted and refused, and the most it
admitted in any of its windows, so a bench can show that no budget was exceeded.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from riposte.sandbox.faults import drain_body, fault_response
from riposte.sandbox.state import SandboxState, get_state


@dataclass(frozen=True)
class Quota:
    name: str
    service: str  # the service whose error shape a refusal takes (`fault_response`)
    path_prefix: str
    windows: tuple[tuple[int, float], ...]  # (requests, seconds)
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (self.method in (None, method))


# Most specific first: a request counts against the first quota that matches.
VENDOR_QUOTAS: tuple[Quota, ...] = (
    Quota("graph-security", "graph", "/graph/v1.0/security/", ((150, 60.0),)),
    Quota("mde-batch-update", "mde", "/mde/api/alerts/batchUpdate", ((10, 60.0), (500, 3600.0))),
    Quota("mde", "mde", "/mde/api/", ((100, 60.0), (1500, 3600.0))),
)


@dataclass
class QuotaUse:
    admitted: deque[float] = field(default_factory=deque)  # monotonic times, last hour
    total_admitted: int = 0
    refused: int = 0
    peak: dict[float, int] = field(default_factory=dict)  # window seconds -> most in one

    def window_count(self, now: float, seconds: float) -> int:
        return sum(1 for t in self.admitted if t > now - seconds)


@dataclass
class QuotaState:
    enabled: bool = False
    use: dict[str, QuotaUse] = field(default_factory=dict)

    def admit(self, quota: Quota, now: float) -> float | None:
        """None when the request may go; else the seconds until it could."""
        use = self.use.setdefault(quota.name, QuotaUse())
        longest = max(seconds for _, seconds in quota.windows)
        while use.admitted and use.admitted[0] <= now - longest:
            use.admitted.popleft()
        waits = []
        for requests, seconds in quota.windows:
            inside = [t for t in use.admitted if t > now - seconds]
            if len(inside) >= requests:
                # Free once the oldest request that fills the window leaves it.
                waits.append(inside[-requests] + seconds - now)
        if waits:
            use.refused += 1
            return max(waits)
        use.admitted.append(now)
        use.total_admitted += 1
        for _, seconds in quota.windows:
            count = use.window_count(now, seconds)
            use.peak[seconds] = max(use.peak.get(seconds, 0), count)
        return None


def quota_for(method: str, path: str) -> Quota | None:
    return next((q for q in VENDOR_QUOTAS if q.matches(method, path)), None)


class QuotaMiddleware:
    """Refuses what a vendor would refuse once its quota is spent; after the fault layer, so
    an injected fault answers first, and inside the request counter, so refusals are counted."""

    def __init__(self, app: ASGIApp, state: SandboxState, quotas: QuotaState) -> None:
        self.app = app
        self.state = state
        self.quotas = quotas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        quota = (
            quota_for(scope["method"], scope["path"])
            if scope["type"] == "http" and self.quotas.enabled
            else None
        )
        wait = self.quotas.admit(quota, time.monotonic()) if quota is not None else None
        if quota is None or wait is None:
            await self.app(scope, receive, send)
            return
        await drain_body(receive)
        response = fault_response(quota.service, 429, max(1, math.ceil(wait)))
        await response(scope, receive, send)


class QuotaSettings(BaseModel):
    enabled: bool


class QuotaReport(BaseModel):
    name: str
    windows: list[str]
    admitted: int
    refused: int
    peak: dict[str, int]


router = APIRouter(prefix="/_sandbox", tags=["sandbox control"])


def _quota_state(request: Request) -> QuotaState:
    quotas: QuotaState = request.app.state.quotas
    return quotas


@router.post("/quotas")
async def set_quotas(settings: QuotaSettings, request: Request) -> QuotaSettings:
    """Switch the vendors' quotas on or off (Defender for Cloud Apps' throttle with them);
    switching resets the counts."""
    quotas = _quota_state(request)
    quotas.enabled = settings.enabled
    quotas.use.clear()
    state: SandboxState = get_state(request)
    state.cloud_apps.throttle.enabled = settings.enabled
    state.cloud_apps.recent.clear()
    return settings


@router.get("/quotas")
async def read_quotas(request: Request) -> list[QuotaReport]:
    quotas = _quota_state(request)
    reports = []
    for quota in VENDOR_QUOTAS:
        use = quotas.use.get(quota.name, QuotaUse())
        reports.append(
            QuotaReport(
                name=quota.name,
                windows=[f"{n}/{seconds:g}s" for n, seconds in quota.windows],
                admitted=use.total_admitted,
                refused=use.refused,
                peak={f"{seconds:g}s": count for seconds, count in use.peak.items()},
            )
        )
    return reports
