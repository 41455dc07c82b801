"""Email notifications delivered to a real SMTP server (aiosmtpd) on loopback, with STARTTLS."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError

from riposte.alerts.messages import EmailContent, email_message
from riposte.alerts.response import Ticket
from riposte.blocks import EmailSmtp
from riposte.blocks._http import RetryPolicy
from riposte.blocks.email import SmtpClient
from riposte.blocks.errors import ServiceAuthError, ServiceRejectedError, ServiceUnavailableError
from tests.alert_factory import make_alert
from tests.servers import free_port

CONTENT = EmailContent(
    subject="[Defender] [HIGH] Tor exit node",
    text="plain body <b>not html</b>",
    html="<p>html body</p>",
)


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it receives, refusing RCPT as told."""

    messages: list[tuple[Any, Message]] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    tls_sessions: list[bool] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_replies:
            reply = self.rcpt_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope, email.message_from_bytes(envelope.original_content)))
        self.tls_sessions.append(session.ssl is not None)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(mailbox: Mailbox, **smtp_options: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def block(port: int, **fields: Any) -> EmailSmtp:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "from_address": "Riposte <riposte@example.com>",
        "to_addresses": ["soc@example.com"],
        "timeout_seconds": 5,
    }
    values.update(fields)
    return EmailSmtp(**values)


def client(smtp: EmailSmtp, sleeps: list[float] | None = None) -> SmtpClient:
    """A client whose backoff sleeps are recorded instead of waited."""
    record = sleeps if sleeps is not None else []
    return SmtpClient(smtp, policy=RetryPolicy(attempts=3), sleep=record.append)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made for this test run."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riposte-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_path, key_path)


def accept_only(user: str, password: str, mailbox: Mailbox) -> Any:
    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        if ok:
            mailbox.logins.append(user)
        # handled=False: aiosmtpd then answers 535 itself (its default assumes we did).
        return AuthResult(success=ok, handled=False)

    return authenticator


# --- delivery ---------------------------------------------------------------------------------


def test_email_is_delivered_with_a_plain_text_and_an_html_part() -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        sent = client(block(port)).send(CONTENT, message_id="<riposte-graph-a-1@example.com>")
    assert sent.recipients == ("soc@example.com",)
    assert sent.refused == {}
    ((envelope, message),) = mailbox.messages
    assert envelope.mail_from == "riposte@example.com"
    assert envelope.rcpt_tos == ["soc@example.com"]
    assert message["Subject"] == CONTENT.subject
    assert message["Message-ID"] == "<riposte-graph-a-1@example.com>"
    assert message.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in message.walk()}
    assert parts["text/plain"].decode().strip() == CONTENT.text
    assert parts["text/html"].decode().strip() == CONTENT.html
    assert mailbox.tls_sessions == [False]


def test_rendered_alert_email_reaches_the_recipients_given() -> None:
    mailbox = Mailbox()
    ticket = Ticket(
        system="jira", key="SEC-7", id="1", url="https://x.atlassian.net/browse/SEC-7", created=True
    )
    content = email_message(make_alert(title="Tor <exit> node"), ticket)
    with smtp_server(mailbox) as port:
        block(port).get_client().send(content, ["a@example.com", "b@example.com"])
    ((envelope, message),) = mailbox.messages
    assert envelope.rcpt_tos == ["a@example.com", "b@example.com"]
    assert message["Subject"] == "[Defender] [MEDIUM] Tor <exit> node (SEC-7)"
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    assert "Tor &lt;exit&gt; node" in html.get_payload(decode=True).decode()


def test_email_is_delivered_over_starttls_with_a_login(certificate: Certificate) -> None:
    mailbox = Mailbox()
    with smtp_server(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_require_tls=True,
        authenticator=accept_only("riposte", "s3cret-pw", mailbox),
    ) as port:
        smtp = block(
            port,
            starttls=True,
            username="riposte",
            password=SecretStr("s3cret-pw"),
            ca_file=str(certificate.cert),
        )
        client(smtp).send(CONTENT)
    assert len(mailbox.messages) == 1
    assert mailbox.tls_sessions == [True]
    assert mailbox.logins == ["riposte"]


def test_an_untrusted_certificate_stops_the_send(certificate: Certificate) -> None:
    mailbox = Mailbox()
    with (
        smtp_server(mailbox, tls_context=certificate.server_context()) as port,
        pytest.raises(ServiceRejectedError, match="TLS failed"),
    ):
        client(block(port, starttls=True)).send(CONTENT)
    assert mailbox.messages == []


def test_a_server_without_starttls_is_never_used_in_clear_text() -> None:
    mailbox = Mailbox()
    with (
        smtp_server(mailbox) as port,
        pytest.raises(ServiceRejectedError, match="does not support STARTTLS"),
    ):
        client(block(port, starttls=True)).send(CONTENT)
    assert mailbox.messages == []


def test_a_wrong_password_is_an_auth_error_that_never_shows_the_password(
    certificate: Certificate,
) -> None:
    mailbox = Mailbox()
    with smtp_server(
        mailbox,
        tls_context=certificate.server_context(),
        authenticator=accept_only("riposte", "right", mailbox),
    ) as port:
        smtp = block(
            port,
            starttls=True,
            username="riposte",
            password=SecretStr("wrong-pw-123"),
            ca_file=str(certificate.cert),
        )
        sleeps: list[float] = []
        with pytest.raises(ServiceAuthError) as info:
            client(smtp, sleeps).send(CONTENT)
    assert "wrong-pw-123" not in str(info.value)
    assert sleeps == []  # refused credentials are not retried
    assert mailbox.messages == []


# --- failures and retries ---------------------------------------------------------------------


def test_a_temporary_refusal_is_retried_and_the_message_sent_once() -> None:
    mailbox = Mailbox(rcpt_replies=["451 4.3.0 try again later"])
    sleeps: list[float] = []
    with smtp_server(mailbox) as port:
        client(block(port), sleeps).send(CONTENT)
    assert len(sleeps) == 1
    assert len(mailbox.messages) == 1


def test_a_permanent_refusal_is_not_retried() -> None:
    mailbox = Mailbox(rcpt_replies=["550 5.1.1 no such user"] * 5)
    sleeps: list[float] = []
    with (
        smtp_server(mailbox) as port,
        pytest.raises(ServiceRejectedError, match="every recipient was refused"),
    ):
        client(block(port), sleeps).send(CONTENT)
    assert sleeps == []
    assert mailbox.messages == []


def test_one_refused_recipient_does_not_stop_the_others() -> None:
    mailbox = Mailbox(rcpt_replies=["550 5.1.1 no such user", "250 OK"])
    with smtp_server(mailbox) as port:
        sent = client(block(port)).send(CONTENT, ["gone@example.com", "soc@example.com"])
    assert list(sent.refused) == ["gone@example.com"]
    assert sent.refused["gone@example.com"].startswith("550")
    ((envelope, _),) = mailbox.messages
    assert envelope.rcpt_tos == ["soc@example.com"]


def test_an_unreachable_server_fails_after_the_retries() -> None:
    sleeps: list[float] = []
    with pytest.raises(ServiceUnavailableError, match="connect connection failed"):
        client(block(free_port()), sleeps).send(CONTENT)
    assert len(sleeps) == 2


def test_a_silent_server_times_out_instead_of_hanging() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepts connections into the backlog, never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="timed out"):
            client(block(port, timeout_seconds=0.3)).send(CONTENT)
    assert time.monotonic() - started < 5


# --- the block --------------------------------------------------------------------------------


def test_a_password_without_starttls_is_refused() -> None:
    with pytest.raises(ValueError, match="without STARTTLS"):
        SmtpClient(block(25, password=SecretStr("pw")))


def test_the_block_checks_addresses_and_needs_recipients() -> None:
    with pytest.raises(ValidationError):
        block(25, from_address="not an address")
    with pytest.raises(ValidationError):
        block(25, to_addresses=["soc"])
    with pytest.raises(ValueError, match="no recipients"):
        client(block(25, to_addresses=[])).send(CONTENT)
    assert block(25).channel == "soc@example.com"
    assert EmailSmtp.get_block_type_slug() == "email-smtp"
