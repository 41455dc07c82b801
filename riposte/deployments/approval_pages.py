"""The approval pages of the intake: `GET /approvals/{token}` shows what the link would decide
(and changes nothing: mail scanners and chat unfurlers fetch links), `POST` takes the decision.

Answers: 401 for a link that does not verify (tampered, or signed with an unknown key), 409 when
the decision was already taken (by this link, another approver, the UI or the timeout), 410 for
an expired link, 503 when Prefect cannot be reached. Pages never show or log the token.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from riposte.alerts.approval import (
    ApprovalKeys,
    ContainmentRequest,
    LinkClaims,
    LinkExpired,
    LinkInvalid,
)
from riposte.blocks.signing_keys import ApprovalKeysMissing, aload_approval_keys
from riposte.flows.approval_decision import (
    AlreadyDecided,
    DecisionRecord,
    NotWaiting,
    read_decision,
    record_decision,
)
from riposte.settings import Settings

logger = logging.getLogger("riposte.approvals")

MAX_FORM_BYTES = 16 * 1024
MAX_REASON_CHARS = 2000

_HEADERS = {
    # The token is in the URL: never send it on as a Referer, never cache the page, never
    # let another site frame it.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;"
    "color:#1b1f24}h1{font-size:1.4rem}table{border-collapse:collapse}td{padding:.2rem .6rem;"
    "vertical-align:top}td:first-child{color:#57606a}textarea{width:100%;min-height:5rem}"
    "button{font-size:1rem;padding:.5rem 1.2rem;margin-top:.8rem}"
    ".approve{background:#1a7f37;color:#fff}.reject{background:#cf222e;color:#fff}"
)


def _page(status: int, title: str, body: str) -> HTMLResponse:
    document = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><meta name=viewport content='width=device-width'><style>{_STYLE}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _decided_text(record: DecisionRecord | None) -> str:
    if record is None:
        return "<p>The decision on this request was already taken.</p>"
    verb = "approved" if record.decision == "approve" else "rejected"
    how = {
        "link": "with a signed link",
        "timeout": "by the policy's default outcome (no answer in time)",
        "automatic": "automatically",
        "ui": "in the Prefect UI",
    }[record.via]
    when = record.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<p>The decision was already taken: <b>{verb}</b> by {html.escape(record.approver)} "
        f"{how}, at {when}.</p>"
    )


class _Refused(Exception):
    def __init__(self, response: HTMLResponse) -> None:
        self.response = response


async def _keys(settings: Settings) -> ApprovalKeys:
    try:
        return await aload_approval_keys(settings)
    except ApprovalKeysMissing:
        logger.error("Approval links cannot be checked: no approval key is configured")
        raise _Refused(_page(503, "Approvals unavailable", "<p>Try again later.</p>")) from None
    except (httpx.HTTPError, PrefectHTTPStatusError, OSError):
        raise _Refused(_unavailable()) from None


def _unavailable() -> HTMLResponse:
    response = _page(503, "Try again in a moment", "<p>Riposte cannot reach Prefect now.</p>")
    response.headers["Retry-After"] = "5"
    return response


async def _check(
    token: str, settings: Settings, client: PrefectClient
) -> tuple[LinkClaims, ContainmentRequest, ApprovalKeys]:
    """The link's claims and the run's request, or the page that refuses it."""
    keys = await _keys(settings)
    try:
        body = keys.open(token)
        claims = LinkClaims.model_validate(body)
    except (LinkInvalid, ValueError):
        raise _Refused(
            _page(401, "This link is not valid", "<p>It was altered or is not a Riposte link.</p>")
        ) from None
    try:
        record = await read_decision(client, claims.run)
        run = await client.read_flow_run(claims.run)
    except ObjectNotFound:
        raise _Refused(
            _page(410, "This request is gone", "<p>Its run no longer exists.</p>")
        ) from None
    except (httpx.HTTPError, PrefectHTTPStatusError, OSError):
        raise _Refused(_unavailable()) from None
    if record is not None:
        raise _Refused(_page(409, "Already decided", _decided_text(record)))
    if datetime.now(UTC) >= claims.expires:
        expired = LinkExpired(f"the link expired at {claims.expires:%Y-%m-%d %H:%M} UTC")
        raise _Refused(_page(410, "This link has expired", f"<p>{html.escape(str(expired))}.</p>"))
    try:
        request = ContainmentRequest.model_validate(run.parameters.get("request"))
    except ValueError:
        raise _Refused(
            _page(410, "This request is gone", "<p>Its run is not a containment run.</p>")
        ) from None
    if request.params != claims.params or request.key != claims.request:
        raise _Refused(
            _page(401, "This link is not valid", "<p>It does not belong to this request.</p>")
        )
    if claims.approver not in {a.name for a in request.approvers}:
        # A well-signed link for someone the policy never named (a key that leaked, a link
        # minted by hand) decides nothing.
        logger.warning(
            "Refused an approval link for %r: not an approver of request %s",
            claims.approver[:200],
            request.key,
        )
        raise _Refused(
            _page(
                401,
                "This link is not valid",
                "<p>It was not made for one of this request's approvers.</p>",
            )
        )
    if run.state is None or not run.state.is_paused():
        state = html.escape((run.state.name if run.state else None) or "unknown")
        raise _Refused(
            _page(
                409,
                "Not waiting for a decision",
                f"<p>The run is {state}: a decision was "
                "already taken, or it is not waiting yet.</p>",
            )
        )
    return claims, request, keys


def _facts(request: ContainmentRequest, claims: LinkClaims) -> str:
    rows: list[tuple[str, str]] = [
        ("Alert", f"{request.alert_title} ({request.severity})"),
        ("Source", f"{request.alert.source} {request.alert.alert_id}"),
        ("Rule", request.rule),
    ]
    if request.ticket is not None:
        rows.append(("Ticket", request.ticket.key))
    rows.append(("Approver", claims.approver))
    rows.append(("Link valid until", claims.expires.strftime("%Y-%m-%d %H:%M UTC")))
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    actions = "".join(f"<li>{html.escape(a.describe())}</li>" for a in request.actions)
    return f"<table>{cells}</table><p>Actions:</p><ul>{actions}</ul>"


def approval_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    def client_of(request: Request) -> PrefectClient:
        return request.app.state.starter.client

    @router.get("/approvals/{token}", response_class=HTMLResponse, include_in_schema=True)
    async def show(token: str, request: Request) -> HTMLResponse:
        """The confirmation page of an approval link (changes nothing)."""
        try:
            claims, containment, _ = await _check(token, settings, client_of(request))
        except _Refused as refused:
            return refused.response
        verb = "Approve" if claims.decision == "approve" else "Reject"
        css = "approve" if claims.decision == "approve" else "reject"
        body = (
            _facts(containment, claims)
            + "<form method=post><label>Reason (recorded in the audit)<br>"
            + f"<textarea name=reason maxlength={MAX_REASON_CHARS}></textarea></label><br>"
            + f"<button class={css} type=submit>{verb} as {html.escape(claims.approver)}</button>"
            + "</form>"
        )
        return _page(200, f"{verb} containment?", body)

    @router.post("/approvals/{token}", response_class=HTMLResponse)
    async def take(token: str, request: Request) -> HTMLResponse:
        """Take the decision the link carries, once."""
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM_BYTES:
                return _page(413, "Too long", "<p>The reason is too long.</p>")
        try:
            form: dict[str, Any] = parse_qs(raw.decode("utf-8"), max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            return _page(400, "Bad form", "<p>The form could not be read.</p>")
        reason = (form.get("reason") or [""])[0].strip()[:MAX_REASON_CHARS]
        client = client_of(request)
        try:
            claims, containment, keys = await _check(token, settings, client)
        except _Refused as refused:
            return refused.response
        try:
            record = await record_decision(
                client,
                keys,
                UUID(str(claims.run)),
                params=containment.params,
                decision=claims.decision,
                approver=claims.approver,
                via="link",
                reason=reason,
            )
        except AlreadyDecided as exc:
            return _page(409, "Already decided", _decided_text(exc.record))
        except NotWaiting as exc:
            return _page(409, "Not waiting for a decision", f"<p>{html.escape(str(exc))}.</p>")
        except (httpx.HTTPError, PrefectHTTPStatusError, OSError):
            return _unavailable()
        logger.info(
            "Containment %s: %s by %s (link)", containment.key, record.decision, record.approver
        )
        verb = "approved" if record.decision == "approve" else "rejected"
        follow = (
            "Riposte is running the actions now; the ticket and the alert will say how they went."
            if record.decision == "approve"
            else "Nothing will be executed."
        )
        return _page(200, f"Containment {verb}", f"<p>Thank you. {follow}</p>")

    return router
