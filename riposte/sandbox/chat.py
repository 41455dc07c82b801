"""Slack incoming webhooks and Teams Workflows webhooks: accept a message, record it."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from riposte.sandbox.clock import utcnow
from riposte.sandbox.state import get_state
from riposte.sandbox.web import same

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
MAX_BLOCKS = 50

slack_router = APIRouter(prefix="/slack")
teams_router = APIRouter(prefix="/teams")


# What Slack makes of a message's text (docs.slack.dev, "Formatting text for app surfaces" and
# the text object): `<url|label>` and `<url>` are links and `<!here>`, `<!channel>`,
# `<!everyone>`, `<@U...>`, `<#C...>`, `<!subteam^...>` mentions, always; a mrkdwn text object
# without `"verbatim": true`, and a message's top-level text when it has no blocks, are also
# parsed automatically: bare URLs become links. `&lt;` and `&gt;` are shown as `<` and `>`.
_MANUAL = re.compile(r"<([^<>]+)>")
_BARE_URL = re.compile(r"(?:(?:https?|s?ftps?|file)://|www\.)[^\s<>|]+", re.IGNORECASE)


def _parse_slack_text(text: str, automatic: bool, found: dict[str, list[str]]) -> None:
    for match in _MANUAL.finditer(text):
        target = match.group(1).split("|", 1)[0]
        if target.startswith(("!", "@", "#")):
            found["mentions"].append(target)
        else:
            found["links"].append(target)
    if automatic:
        found["links"].extend(_BARE_URL.findall(_MANUAL.sub(" ", text)))


def _slack_text_object(obj: Any, found: dict[str, list[str]]) -> None:
    # plain_text is shown as written: neither links nor mentions.
    if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj.get("type") == "mrkdwn":
        _parse_slack_text(obj["text"], obj.get("verbatim") is not True, found)


def slack_rendering(payload: dict[str, Any]) -> dict[str, list[str]]:
    """The links and mentions Slack would make of a webhook payload: what a reader can click
    and whom it would notify."""
    found: dict[str, list[str]] = {"links": [], "mentions": []}
    blocks = payload.get("blocks") or []
    text = payload.get("text")
    if isinstance(text, str) and not blocks:  # with blocks, text is the notification only
        _parse_slack_text(text, True, found)
    for block in blocks:
        _slack_text_object(block.get("text"), found)
        for field in block.get("fields") or []:
            _slack_text_object(field, found)
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("type") == "button":
                if isinstance(element.get("url"), str):
                    found["links"].append(element["url"])
            else:
                _slack_text_object(element, found)
    return found


def slack_error(status: int, text: str) -> PlainTextResponse:
    """Slack answers webhooks with bare text (`ok`, or the error's name), never JSON."""
    return PlainTextResponse(text, status_code=status)


def teams_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _slack_payload(request: Request) -> Any:
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            # Legacy form posts carry the JSON in a `payload` field.
            form = parse_qs(raw.decode("utf-8"))
            return json.loads(form["payload"][0])
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError):
        return None


@slack_router.post("/services/{hook_path:path}")
async def slack_webhook(hook_path: str, request: Request) -> PlainTextResponse:
    state = get_state(request)
    if not same(hook_path.strip("/"), state.config.slack_hook_path.strip("/")):
        return slack_error(404, "no_service")
    payload = await _slack_payload(request)
    if not isinstance(payload, dict):
        return slack_error(400, "invalid_payload")
    text, blocks = payload.get("text"), payload.get("blocks")
    has_text = isinstance(text, str) and bool(text.strip())
    if blocks is not None and not (
        isinstance(blocks, list)
        and len(blocks) <= MAX_BLOCKS
        and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
    ):
        return slack_error(400, "invalid_blocks")
    if not has_text and not blocks:
        return slack_error(400, "invalid_payload")
    state.chat.slack.append(
        {
            "text": text,
            "blocks": blocks,
            "payload": payload,
            "rendered": slack_rendering(payload),
            "received_at": utcnow().isoformat(),
        }
    )
    return PlainTextResponse("ok")


def _card_problem(payload: Any) -> str | None:
    if not isinstance(payload, dict) or payload.get("type") != "message":
        return 'The body must be an object with "type": "message".'
    attachments = payload.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "The body must carry a non-empty 'attachments' array."
    for attachment in attachments:
        if not isinstance(attachment, dict) or attachment.get("contentType") != ADAPTIVE_CARD:
            return f"Every attachment must have contentType '{ADAPTIVE_CARD}'."
        content = attachment.get("content")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            return "Every attachment's content must be an AdaptiveCard."
    return None


@teams_router.post("/workflows/{flow_id}/triggers/manual/paths/invoke")
async def teams_webhook(flow_id: str, request: Request) -> Response:
    state = get_state(request)
    config = state.config
    if not same(flow_id, config.teams_flow_id):
        return teams_error(404, "WorkflowNotFound", "The workflow could not be found.")
    if not request.query_params.get("api-version"):
        return teams_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if not same(request.query_params.get("sig", ""), config.teams_sig):
        return teams_error(
            401,
            "DirectApiAuthorizationRequired",
            "The request must be authenticated only by Shared Access scheme.",
        )
    try:
        payload = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        payload = None
    if problem := _card_problem(payload):
        return teams_error(400, "TriggerInputSchemaMismatch", problem)
    run_id = f"08584{uuid.uuid4().int % 10**21:021d}CU00"
    state.chat.teams.append(
        {"payload": payload, "run_id": run_id, "received_at": utcnow().isoformat()}
    )
    # Accepted for asynchronous processing: not proof that the card reached the channel.
    return Response(status_code=202, headers={"x-ms-workflow-run-id": run_id})
