"""Email notifications: SMTP credentials (a block) and a client that sends plain-text + HTML mail.

The standard library's `smtplib` is enough: one message per alert or digest, no templates at this
layer (they are rendered by `riposte.alerts.messages`). Every socket operation has the block's
timeout. A password is never sent over a connection that STARTTLS did not protect.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import ClassVar, NoReturn

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from riposte.alerts.messages import EmailContent
from riposte.blocks._http import RetryPolicy
from riposte.blocks._pool import pooled
from riposte.blocks.errors import (
    ExternalServiceError,
    ServiceAuthError,
    ServiceRejectedError,
    ServiceUnavailableError,
)

SYSTEM = "SMTP"


def _address(value: str) -> str:
    _, address = parseaddr(value)
    if "@" not in address or any(c.isspace() for c in address):
        raise ValueError(f"{value!r} is not an email address")
    return value


class EmailSmtp(Block):
    """An SMTP relay and the sender address Riposte mails from.

    Example:
        ```python
        email = EmailSmtp.load("riposte-email")
        email.get_client().send(email_message(alert, ticket), ["soc@example.com"])
        ```
    """

    _block_type_name = "Email SMTP"
    _block_type_slug = "email-smtp"
    _logo_url = None
    _description = "SMTP relay (STARTTLS), login and sender address for email notifications."
    _block_schema_capabilities: ClassVar[list[str]] = ["notify"]
    kind: ClassVar[str] = "email"
    system: ClassVar[str] = SYSTEM

    host: str = Field(description="SMTP relay host name.")
    port: int = Field(587, ge=1, le=65535, description="587 for STARTTLS submission.")
    username: str | None = Field(None, description="Login; leave empty for an open relay.")
    password: SecretStr | None = Field(None, description="Password of the login.")
    starttls: bool = Field(
        True, description="Upgrade to TLS before anything else; a password needs it."
    )
    from_address: str = Field(description="Sender, e.g. Riposte <riposte@example.com>.")
    to_addresses: list[str] = Field(
        default_factory=list, description="Recipients when the caller names none."
    )
    ca_file: str | None = Field(
        None, description="PEM file of CAs to trust instead of the system's (a private relay)."
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of every SMTP operation.")

    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _address(value)

    @field_validator("to_addresses")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @property
    def channel(self) -> str:
        """What run reports call this channel (the recipients, never the login)."""
        return ", ".join(self.to_addresses) or "email"

    def get_client(self) -> SmtpClient:
        return pooled(self, lambda: SmtpClient(self))


@dataclass(frozen=True)
class SentEmail:
    message_id: str
    recipients: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)
    """Recipients the server refused while accepting the others (address -> reply)."""


class _Retryable(Exception):
    """The server did not take the message; sending again cannot duplicate it."""

    def __init__(self, error: ExternalServiceError) -> None:
        self.error = error


def _text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {text}"[:200]


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return _text(exc.smtp_code, exc.smtp_error)


class SmtpClient:
    """Sends one multipart message per call, on a fresh connection.

    A connection per message because relays drop idle connections within minutes, and a
    notification is rare enough that the handshake costs nothing worth saving. Failures before
    the server took the message (connection refused, a 4xx reply) are retried with backoff; a
    timeout after the message was handed over is not, since the server may have accepted it.
    """

    def __init__(
        self,
        block: EmailSmtp,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if block.password is not None and not block.starttls:
            raise ValueError("refusing to send an SMTP password without STARTTLS")
        self.host = block.host
        self.port = block.port
        self.username = block.username
        self._password = block.password
        self.starttls = block.starttls
        self.from_address = block.from_address
        self.default_to = tuple(block.to_addresses)
        self.timeout = block.timeout_seconds
        self.ca_file = block.ca_file
        self.policy = policy or RetryPolicy(attempts=3)
        self.sleep = sleep

    def build(
        self, content: EmailContent, to: Sequence[str], message_id: str | None = None
    ) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = content.subject
        message["From"] = self.from_address
        message["To"] = ", ".join(to)
        message["Date"] = formatdate(usegmt=True)
        domain = parseaddr(self.from_address)[1].rpartition("@")[2] or None
        message["Message-ID"] = message_id or make_msgid(domain=domain)
        message.set_content(content.text)
        message.add_alternative(content.html, subtype="html")
        return message

    def send(
        self,
        content: EmailContent,
        to: Sequence[str] | None = None,
        *,
        message_id: str | None = None,
    ) -> SentEmail:
        """Send ``content`` to ``to`` (or the block's recipients).

        ``message_id`` lets a caller give a retried notification the same Message-ID (for
        example built from the alert's correlation key), so mail clients can tell it apart.
        """
        recipients = tuple(_address(a) for a in (to if to is not None else self.default_to))
        if not recipients:
            raise ValueError("no recipients: pass some or set to_addresses on the block")
        message = self.build(content, recipients, message_id)
        attempt = 0
        while True:
            try:
                refused = self._deliver(message, recipients)
            except _Retryable as retry:
                attempt += 1
                if attempt >= self.policy.attempts:
                    raise retry.error from None
                self.sleep(self.policy.backoff(attempt - 1))
                continue
            return SentEmail(
                message_id=str(message["Message-ID"]),
                recipients=recipients,
                refused={addr: _text(code, reply) for addr, (code, reply) in refused.items()},
            )

    def _deliver(
        self, message: EmailMessage, recipients: tuple[str, ...]
    ) -> dict[str, tuple[int, bytes]]:
        step = "connect"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                step = "greeting"
                smtp.ehlo()
                if self.starttls:
                    step = "STARTTLS"
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                    smtp.ehlo()
                if self.username:
                    step = "login"
                    password = self._password.get_secret_value() if self._password else ""
                    smtp.login(self.username, password)
                step = "send"
                return smtp.send_message(
                    message, from_addr=parseaddr(self.from_address)[1], to_addrs=recipients
                )
        except smtplib.SMTPAuthenticationError as exc:
            raise ServiceAuthError(SYSTEM, f"login refused: {_reply(exc)}") from None
        except smtplib.SMTPNotSupportedError:
            raise ServiceRejectedError(
                SYSTEM, f"the server does not support {step} (not sent in clear text instead)"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            replies = [f"{code}" for code, _ in exc.recipients.values()]
            error = f"every recipient was refused ({', '.join(replies)})"
            if all(400 <= code < 500 for code, _ in exc.recipients.values()):
                raise _Retryable(ServiceUnavailableError(SYSTEM, error)) from None
            raise ServiceRejectedError(SYSTEM, error) from None
        except smtplib.SMTPResponseException as exc:
            # A 4xx reply means "not now": the message was not taken, so it can be sent again.
            error_type = ServiceUnavailableError if 400 <= exc.smtp_code < 500 else None
            message_text = f"{step} failed: {_reply(exc)}"
            if error_type is not None:
                raise _Retryable(error_type(SYSTEM, message_text)) from None
            raise ServiceRejectedError(SYSTEM, message_text) from None
        except ssl.SSLError as exc:
            raise ServiceRejectedError(
                SYSTEM, f"TLS failed: {exc.reason or type(exc).__name__}"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            return self._interrupted(step, exc)
        except smtplib.SMTPException as exc:
            raise ServiceRejectedError(SYSTEM, f"{step} failed: {str(exc)[:200]}") from None
        except OSError as exc:  # refused, unreachable, timed out (TimeoutError is an OSError)
            return self._interrupted(step, exc)

    @staticmethod
    def _interrupted(step: str, exc: OSError) -> NoReturn:
        # smtplib turns a read timeout into SMTPServerDisconnected("... timed out").
        timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc)
        what = "timed out" if timed_out else "connection failed"
        error = ServiceUnavailableError(SYSTEM, f"{step} {what} ({type(exc).__name__})")
        if step == "send":
            # The server may have queued the message already: do not risk sending it twice.
            raise error from None
        raise _Retryable(error) from None
