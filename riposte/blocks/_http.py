"""HTTP plumbing shared by every client: timeouts, Retry-After, backoff, and safe error messages."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from riposte.blocks.errors import (
    ExternalServiceError,
    ServiceAuthError,
    ServiceNotFoundError,
    ServiceRejectedError,
    ServiceUnavailableError,
)

logger = logging.getLogger("riposte.http")
# httpx logs every request with its full URL at INFO; webhook URLs are secrets.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

# Methods whose repetition cannot create a second object. POSTs are retried only when the
# request never left (connection refused) or the server said "too many requests", because a
# retried create after a timeout could make a second ticket; the tasks do find-or-create instead.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
IDEMPOTENT = "riposte_idempotent"


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
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                seconds = float(header)
            except ValueError:
                try:
                    seconds = parsedate_to_datetime(header).timestamp() - time.time()
                except (TypeError, ValueError):
                    seconds = self.backoff(attempt)
            return max(0.0, min(self.retry_after_cap, seconds))
        # Some APIs (Defender for Cloud Apps) throttle without saying how long: back off ourselves.
        return max(2.0, self.backoff(attempt))


class ResilientTransport(httpx.BaseTransport):
    """Retries what is safe to retry, honouring Retry-After (capped), with backoff and jitter."""

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
            except httpx.ConnectError:
                if last:
                    raise
                delay = self.policy.backoff(attempt)
                logger.warning("%s unreachable; retrying in %.1fs", self.system, delay)
            except httpx.TimeoutException:
                if last or not idempotent:
                    raise
                delay = self.policy.backoff(attempt)
                logger.warning("%s timed out; retrying in %.1fs", self.system, delay)
            else:
                if response.status_code == 429 or (
                    response.status_code == 503 and "Retry-After" in response.headers
                ):
                    if last:
                        return response
                    delay = self.policy.retry_after(response, attempt)
                    logger.warning(
                        "%s throttled the request (HTTP %s); waiting %.1fs as asked",
                        self.system,
                        response.status_code,
                        delay,
                    )
                elif response.status_code >= 500 and idempotent and not last:
                    delay = self.policy.backoff(attempt)
                    logger.warning(
                        "%s answered HTTP %s; retrying in %.1fs",
                        self.system,
                        response.status_code,
                        delay,
                    )
                else:
                    return response
                response.read()
                response.close()
            self.sleep(delay)
            attempt += 1

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
    """One pooled client for one block: every call has a timeout and goes through the retries."""
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        headers={"Accept": "application/json", **(headers or {})},
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        transport=ResilientTransport(system, policy),
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
        messages = data.get("errorMessages")
        errors = data.get("errors")
        if messages or errors:
            return f"{messages or ''} {errors or ''}".strip()[:limit]
    return str(data)[:limit]


def check(response: httpx.Response, system: str, action: str) -> httpx.Response:
    """Turn an error response into the matching ExternalServiceError; return it otherwise."""
    if response.is_success:
        return response
    code = response.status_code
    detail = describe_body(response)
    message = f"{action} failed: {detail}" if detail else f"{action} failed"
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


def send(
    client: httpx.Client, system: str, action: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """Make one call and translate transport failures into errors that carry no URL."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ServiceUnavailableError(system, f"{action} timed out") from None
    except httpx.TransportError as exc:
        raise ServiceUnavailableError(
            system, f"{action} failed: cannot reach the service ({type(exc).__name__})"
        ) from None
    return check(response, system, action)
