"""Approval links and decisions that nobody can forge or replay.

Open-source Prefect has no user identity: whoever resumes a paused run can type any name. So
Riposte proves who approved another way. Every approver gets links of their own, signed with a
key only Riposte holds (HMAC-SHA256) and bound to one flow run, the containment request (its
actions and a hash of their parameters), the approver, the decision and an expiry. The intake
verifies a link, records the decision once on the run (the first decision wins: a second click
anywhere gets 409) and resumes the run with a signed *proof*. The run trusts a decision only if
the proof verifies; a decision typed into the Prefect UI form has no proof and is recorded as
what it is: "Prefect UI, identity not proven".

A token is ``<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, first part))>``. Claims name
the key that signed them (``kid``) so keys can be rotated: sign with the first, accept any.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from riposte.alerts.containment import ContainmentAction
from riposte.alerts.response import AlertRef, Ticket

ApprovalChoice = Literal["approve", "reject"]
Via = Literal["link", "timeout", "automatic", "ui"]

MIN_KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096


class LinkError(ValueError):
    """A link or proof that cannot be trusted. ``status`` is the HTTP answer for it."""

    status = 401


class LinkInvalid(LinkError):
    """Tampered, malformed, or signed with a key Riposte does not hold."""


class LinkExpired(LinkError):
    """Genuine, but past its expiry: the decision window is closed."""

    status = 410


class ApprovalKeys:
    """The keys that sign approval links; the first signs, all verify (rotation)."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        encoded = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
        if not encoded:
            raise ValueError("approval links need at least one signing key")
        for key in encoded:
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"an approval key must be at least {MIN_KEY_BYTES} bytes long")
        self._keys = {self.key_id(k): k for k in encoded}
        self._signing = self.key_id(encoded[0])

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(b"riposte-approval-kid:" + key).hexdigest()[:12]

    @classmethod
    def from_text(cls, text: str) -> ApprovalKeys:
        """Keys separated by commas or newlines (the form of the env setting and the block)."""
        return cls([k.strip() for k in text.replace("\n", ",").split(",") if k.strip()])

    def sign(self, claims: BaseModel) -> str:
        body = claims.model_dump(mode="json")
        body["kid"] = self._signing
        payload = _b64(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(self._keys[self._signing], payload))}"

    def open(self, token: str) -> dict[str, object]:
        """The claims of a token whose signature verifies; LinkInvalid otherwise."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise LinkInvalid("the link is malformed")
        payload, signature = token.split(".")
        try:
            body = json.loads(_unb64(payload))
            given = _unb64(signature)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise LinkInvalid("the link is malformed") from None
        if not isinstance(body, dict):
            raise LinkInvalid("the link is malformed")
        key = self._keys.get(str(body.pop("kid", "")))
        if key is None or not hmac.compare_digest(self._mac(key, payload), given):
            raise LinkInvalid("the link's signature does not verify")
        return body

    @staticmethod
    def _mac(key: bytes, payload: str) -> bytes:
        return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or any(c not in _B64_ALPHABET for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class LinkClaims(BaseModel):
    """What one approval link says: this approver may take this decision on this request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    run: UUID = Field(description="The paused flow run")
    request: str = Field(description="The containment request: alert key and rule")
    params: str = Field(description="Hash of the actions and their parameters")
    approver: str
    decision: ApprovalChoice
    nonce: str
    exp: int = Field(description="Expiry, Unix seconds")

    @classmethod
    def new(
        cls,
        *,
        run: UUID,
        request: str,
        params: str,
        approver: str,
        decision: ApprovalChoice,
        expires: datetime,
    ) -> LinkClaims:
        return cls(
            run=run,
            request=request,
            params=params,
            approver=approver,
            decision=decision,
            nonce=secrets.token_urlsafe(12),
            exp=int(expires.timestamp()),
        )

    @property
    def expires(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


class DecisionProof(BaseModel):
    """What the intake (or the timeout sweep) attests when it resumes a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    run: UUID
    params: str
    decision: ApprovalChoice
    approver: str
    via: Via
    at: datetime


def open_link(keys: ApprovalKeys, token: str, *, now: datetime | None = None) -> LinkClaims:
    """The claims of a genuine link: LinkInvalid if tampered, LinkExpired if too late."""
    body = keys.open(token)
    try:
        claims = LinkClaims.model_validate(body)
    except ValidationError:
        raise LinkInvalid("the link is malformed") from None
    if (now or datetime.now(UTC)) >= claims.expires:
        raise LinkExpired(f"the link expired at {claims.expires:%Y-%m-%d %H:%M} UTC")
    return claims


def verify_proof(keys: ApprovalKeys, proof: str) -> DecisionProof:
    """The attested decision; LinkInvalid if the proof is absent, forged or malformed."""
    if not proof:
        raise LinkInvalid("no proof")
    body = keys.open(proof)
    try:
        return DecisionProof.model_validate(body)
    except ValidationError:
        raise LinkInvalid("the proof is malformed") from None


def params_hash(parts: Sequence[str]) -> str:
    """One hash over the actions' own parameter hashes, in order."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


# --- what a containment run is asked to do, and what a person answers ----------------------


class ApproverRef(BaseModel):
    """An approver as the run knows them: a name and where their links go."""

    model_config = ConfigDict(frozen=True)

    name: str
    channels: tuple[str, ...]
    address: str | None = None


class ContainmentRequest(BaseModel):
    """The parameters of one `contain_alert` run: block names and facts, never secrets."""

    model_config = ConfigDict(frozen=True)

    alert: AlertRef
    alert_title: str
    severity: str
    rule: str
    actions: tuple[ContainmentAction, ...]
    approvers: tuple[ApproverRef, ...] = ()
    timeout_seconds: int = Field(3600, ge=1)
    on_timeout: ApprovalChoice = "reject"
    timeout_channels: tuple[str, ...] = ()
    automatic: bool = False
    defender_block: str
    ticketing_block: str | None = None
    ticket: Ticket | None = None

    @property
    def params(self) -> str:
        return params_hash([a.param_hash() for a in self.actions])

    @property
    def key(self) -> str:
        """One request per ticket (or alert) and set of actions on targets: the alerts that
        share a throttled ticket and ask to block the same IP make one request, not hundreds
        (whatever their titles and comments, which the parameters also carry)."""
        # The ticket's record id (ServiceNow sys_id, Jira issue id) never comes back, unlike
        # a number a ticketing instance may hand out again after a reset.
        subject = f"{self.ticket.system}:{self.ticket.id}" if self.ticket else self.alert.key
        what = params_hash([f"{a.kind}:{a.target}" for a in self.actions])
        return f"{subject}:{self.rule}:{what[:16]}"

    def describe(self) -> str:
        return "; ".join(a.describe() for a in self.actions)


class ApprovalInput(BaseModel):
    """What resumes a paused containment run (the Prefect UI renders it as a form)."""

    decision: ApprovalChoice = Field(description="approve runs the containment, reject does not")
    reason: str = Field("", max_length=2000, description="Why; recorded in the audit")
    approver: str = Field(
        "",
        max_length=200,
        description="Your name. The Prefect UI does not prove who you are: the audit records "
        "this decision as made in the UI, with the name as typed",
    )
    proof: str = Field(
        "",
        max_length=MAX_TOKEN_CHARS,
        description="For approval links only: the intake fills it in when a link is used. "
        "Deciding here in the Prefect UI, leave it empty",
    )
