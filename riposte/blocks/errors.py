"""Errors raised by the API clients: they name the system and the reason, never a URL or secret."""

from __future__ import annotations


class ExternalServiceError(Exception):
    """A call to an external system failed; ``system`` names it (``"ServiceNow"``, ``"Slack"``)."""

    def __init__(self, system: str, message: str, *, status_code: int | None = None) -> None:
        self.system = system
        self.status_code = status_code
        self.message = message
        code = f" (HTTP {status_code})" if status_code is not None else ""
        super().__init__(f"{system}: {message}{code}")


class ServiceAuthError(ExternalServiceError):
    """The system refused our credentials: check the block, retrying will not help."""


class ServiceNotFoundError(ExternalServiceError):
    """The system has no such object."""


class ServiceRejectedError(ExternalServiceError):
    """The system refused the request as invalid (a 4xx other than auth, not found, throttled)."""


class ServiceUnavailableError(ExternalServiceError):
    """The system kept failing (5xx, throttling or timeouts) after every retry."""


class ServiceThrottledError(ServiceUnavailableError):
    """The system said "too many requests" and to come back later than a client waits
    (ServiceNow's hourly rate limits): ``retry_after`` seconds. The request was not carried
    out; the step is deferred (`riposte.tasks._common.external_call`) rather than retried."""

    def __init__(self, system: str, message: str, *, retry_after: float) -> None:
        super().__init__(system, message, status_code=429)
        self.retry_after = retry_after


class OutcomeUnknownError(ServiceUnavailableError):
    """A write was sent in full and no answer came (a read timeout, a dropped connection): the
    system may have carried it out. A write that the system can be asked about again (a ticket
    found by its key) may be retried; one that cannot (a chat webhook) must not be repeated
    blindly, or the message arrives twice."""
