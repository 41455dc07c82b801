"""HTTP plumbing shared by every client: timeouts, Retry-After, backoff, and safe error messages."""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from riposte.blocks.errors import (
    ExternalServiceError,
    OutcomeUnknownError,
    ServiceAuthError,
    ServiceNotFoundError,
    ServiceRejectedError,
    ServiceThrottledError,
    ServiceUnavailableError,
)
from riposte.limits import BUDGET_OF, acquire_request_slot, in_prefect_run, limit_for_system

logger = logging.getLogger("riposte.http")
# httpx logs every request with its full URL at INFO; webhook URLs are secrets.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

# Methods whose repetition cannot create a second object. POSTs are retried only when the
# request never left (connection refused) or the server said "too many requests", because a
# retried create after a timeout could make a second ticket; the tasks do find-or-create instead.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
IDEMPOTENT = "riposte_idempotent"
# Set on a 429 response whose Retry-After is beyond the client's cap: the seconds asked for.
DEFER_SECONDS = "riposte_defer_seconds"
# A wait for a request slot at least this long is worth a line in the run's log.
SLOW_SLOT_SECONDS = 1.0


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The logger of the current flow or task run, so that waits show in the Prefect UI; the
    module logger outside a run. A plain logger's records never reach the run's log: Prefect
    ships only its run loggers (and PREFECT_LOGGING_EXTRA_LOGGERS, which warns outside a run)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 30.0
    jitter: float = 0.5

    def backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def retry_after(self, response: httpx.Response, attempt: int) -> float:
        return min(self.throttle_wait(response, attempt)[0], self.retry_after_cap)

    def throttle_wait(self, response: httpx.Response, attempt: int) -> tuple[float, str]:
        """How long to wait after a throttling answer, and why, for the run's log. More than
        `retry_after_cap` means: do not wait here (the step is deferred, see `check`)."""
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                seconds = float(header)
            except ValueError:
                try:
                    seconds = parsedate_to_datetime(header).timestamp() - time.time()
                except (TypeError, ValueError):
                    return self.backoff(attempt), f"unreadable Retry-After {header[:40]!r}"
            return max(0.0, seconds), f"Retry-After {header}"
        # Some APIs (Defender for Cloud Apps) throttle without saying how long: back off ourselves.
        return max(2.0, self.backoff(attempt)), "no Retry-After, backing off"


class ResilientTransport(httpx.BaseTransport):
    """Retries what is safe to retry, honouring Retry-After (capped), with backoff and jitter.

    Every wait is logged, to the run's log inside a flow or task run (see `run_logger`).
    """

    def __init__(
        self,
        system: str,
        policy: RetryPolicy | None = None,
        inner: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.system = system
        self.policy = policy or RetryPolicy()
        self.inner = inner or httpx.HTTPTransport()
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        idempotent = bool(request.extensions.get(IDEMPOTENT, request.method in IDEMPOTENT_METHODS))
        attempt = 0
        while True:
            last = attempt + 1 >= self.policy.attempts
            try:
                response = self.inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
                # The request never left: safe to send again, whatever its method.
                if last:
                    raise
                delay = self.policy.backoff(attempt)
                self._log_wait(request, attempt, delay, "was unreachable")
            except httpx.TimeoutException:
                if last or not idempotent:
                    raise
                delay = self.policy.backoff(attempt)
                self._log_wait(request, attempt, delay, "timed out")
            else:
                code = response.status_code
                if code == 429 or (code == 503 and "Retry-After" in response.headers):
                    if last:
                        return response
                    delay, why = self.policy.throttle_wait(response, attempt)
                    if code == 429 and delay > self.policy.retry_after_cap:
                        # An hourly window (ServiceNow): waiting here would hold the request
                        # for long and retrying sooner would only be refused. The caller
                        # gets the 429 at once (`check`: ServiceThrottledError).
                        response.extensions[DEFER_SECONDS] = delay
                        return response
                    if delay > self.policy.retry_after_cap:
                        delay, why = self.policy.retry_after_cap, f"{why}, capped"
                    self._log_wait(
                        request, attempt, delay, f"throttled the request (HTTP {code}, {why})"
                    )
                elif code >= 500 and idempotent and not last:
                    delay = self.policy.backoff(attempt)
                    self._log_wait(request, attempt, delay, f"answered HTTP {code}")
                else:
                    return response
                response.read()
                response.close()
            self.sleep(delay)
            attempt += 1

    def _log_wait(self, request: httpx.Request, attempt: int, delay: float, what: str) -> None:
        # Method only, never the URL: a webhook's URL is its secret.
        run_logger().warning(
            "%s %s; waiting %.1fs before attempt %d of %d (%s request)",
            self.system,
            what,
            delay,
            attempt + 2,
            self.policy.attempts,
            request.method,
        )

    def close(self) -> None:
        self.inner.close()


# The limits whose slot this thread took ahead of its next request (`slot_ahead`).
_PREPAID: ContextVar[tuple[str, ...] | None] = ContextVar("riposte_prepaid_slot", default=None)


@contextlib.contextmanager
def slot_ahead(system: str) -> Iterator[None]:
    """Take the slot of ``system``'s budget now, for the first request this thread sends inside
    the block: a bulk call decides what it carries once its slot is there, so that callers who
    came while it waited ride along. Outside a run, or for a system without a budget, nothing."""
    names = limit_for_system(system)
    if names is None or not in_prefect_run():
        yield
        return
    acquire_request_slot(names)
    token = _PREPAID.set(names)
    try:
        yield
    finally:
        _PREPAID.reset(token)


class RateLimitedTransport(httpx.BaseTransport):
    """Takes one slot of the API's Prefect rate limit (`riposte.limits`) before each request.

    Only inside a flow or task run: outside one there is no Prefect budget to share. Placed
    under `ResilientTransport`, so that every retry is counted as the request it is.
    """

    def __init__(self, system: str, inner: httpx.BaseTransport | None = None) -> None:
        self.system = system
        self.limit = limit_for_system(system)
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        other = request.extensions.get(BUDGET_OF)
        limit = limit_for_system(other) if other else self.limit
        if limit is not None and _PREPAID.get() == limit:
            _PREPAID.set(None)  # taken ahead (`slot_ahead`); a retry takes its own
        elif limit is not None and in_prefect_run():
            started = time.monotonic()
            acquire_request_slot(limit)
            waited = time.monotonic() - started
            if waited >= SLOW_SLOT_SECONDS:
                run_logger().info(
                    "%s: waited %.1fs for a request slot of the rate limit %s",
                    self.system,
                    waited,
                    ", ".join(limit),
                )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def build_http_client(
    system: str,
    base_url: str,
    *,
    timeout: float,
    auth: httpx.Auth | None = None,
    headers: dict[str, str] | None = None,
    policy: RetryPolicy | None = None,
) -> httpx.Client:
    """One pooled client for one block: every call has a timeout, goes through the retries, and
    inside a run takes a slot of the API's rate limit per request sent."""
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        headers={"Accept": "application/json", **(headers or {})},
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        transport=ResilientTransport(system, policy, RateLimitedTransport(system)),
        follow_redirects=False,
    )


def describe_body(response: httpx.Response, limit: int = 300) -> str:
    """The error text a vendor put in the body, shortened; used only for messages."""
    try:
        data: Any = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:limit]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            parts = [str(err.get(k)) for k in ("code", "message", "detail") if err.get(k)]
            if parts:
                return ": ".join(parts)[:limit]
        if isinstance(err, str):
            desc = data.get("error_description")
            return (f"{err}: {desc}" if desc else err)[:limit]
        if isinstance(data.get("detail"), str):  # Defender for Cloud Apps (Django REST)
            return str(data["detail"])[:limit]
        messages = data.get("errorMessages")
        errors = data.get("errors")
        if messages or errors:
            return f"{messages or ''} {errors or ''}".strip()[:limit]
    return str(data)[:limit]


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


def without_request_url(text: str, request: httpx.Request | None) -> str:
    """``text`` with the request's URL, path and query taken out, and any URL at all: a server
    that echoes the path (a webhook's secret path, a token in the query) must not put it into
    a run's state, a log or an exception."""
    if request is not None:
        url = request.url
        pieces = {str(url), url.raw_path.decode("ascii", "replace"), url.path, url.query.decode()}
        pieces |= {p for p in url.path.split("/") if len(p) >= 8}  # each long segment alone
        for piece in sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True):
            text = text.replace(piece, "[path]")
    return _URL_IN_TEXT.sub("[url]", text)


def check(response: httpx.Response, system: str, action: str) -> httpx.Response:
    """Turn an error response into the matching ExternalServiceError; return it otherwise."""
    if response.is_success:
        return response
    code = response.status_code
    try:
        request: httpx.Request | None = response.request
    except RuntimeError:  # a response built by hand, not sent
        request = None
    detail = without_request_url(describe_body(response), request)
    message = f"{action} failed: {detail}" if detail else f"{action} failed"
    retry_after = response.extensions.get(DEFER_SECONDS)
    if code == 429 and isinstance(retry_after, float | int):
        raise ServiceThrottledError(
            system,
            f"{action} was refused: rate limit reached, retry after {retry_after:.0f} s",
            retry_after=retry_after,
        )
    error: type[ExternalServiceError]
    if code in (401, 403):
        error = ServiceAuthError
    elif code == 404:
        error = ServiceNotFoundError
    elif code == 429 or code >= 500:
        error = ServiceUnavailableError
    else:
        error = ServiceRejectedError
    raise error(system, message, status_code=code)


# Failures after the whole request was sent, when the server may have acted on it.
_SENT_THEN_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def send(
    client: httpx.Client, system: str, action: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """Make one call and translate transport failures into errors that carry no URL. A write
    whose answer was lost after it was sent is an `OutcomeUnknownError`: it may have been
    carried out, and only its caller knows whether it can be asked about."""
    try:
        response = client.request(method, url, **kwargs)
    except _SENT_THEN_LOST as exc:
        repeatable = (kwargs.get("extensions") or {}).get(IDEMPOTENT)
        if repeatable or (repeatable is None and method.upper() in IDEMPOTENT_METHODS):
            what = "timed out" if isinstance(exc, httpx.TimeoutException) else "lost its answer"
            raise ServiceUnavailableError(system, f"{action} {what}") from None
        raise OutcomeUnknownError(
            system,
            f"{action} was sent but its answer was lost ({type(exc).__name__}): "
            "it may have been carried out",
        ) from None
    except httpx.TimeoutException:
        raise ServiceUnavailableError(system, f"{action} timed out") from None
    except httpx.TransportError as exc:
        raise ServiceUnavailableError(
            system, f"{action} failed: cannot reach the service ({type(exc).__name__})"
        ) from None
    return check(response, system, action)
