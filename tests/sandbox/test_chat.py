"""The Slack and Teams simulators: incoming webhook and workflow."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import (
    Sandbox,
    teams_card,
)

# --- slack and teams --------------------------------------------------------------------------


def test_slack_webhook_answers_plain_text_ok_and_records_message(sb: Sandbox) -> None:
    payload = {
        "text": "fallback",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}],
    }
    response = sb.http.post(sb.slack_path, json=payload)
    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers["content-type"].startswith("text/plain")
    (message,) = sb.http.get("/_sandbox/slack/messages").json()
    assert message["text"] == "fallback"
    assert message["blocks"] == payload["blocks"]


def test_slack_unknown_hook_is_404_no_service(sb: Sandbox) -> None:
    response = sb.http.post("/slack/services/T0/B0/revoked", json={"text": "hi"})
    assert response.status_code == 404
    assert response.text == "no_service"


@pytest.mark.parametrize("content", [b"not json", b"{}", b'{"text": ""}', b"[1]"])
def test_slack_payload_without_text_or_blocks_is_invalid_payload(
    sb: Sandbox, content: bytes
) -> None:
    response = sb.http.post(
        sb.slack_path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.text == "invalid_payload"
    assert sb.http.get("/_sandbox/slack/messages").json() == []


def test_teams_workflow_accepts_adaptive_card_with_202_and_empty_body(sb: Sandbox) -> None:
    response = sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card())
    assert response.status_code == 202
    assert response.content == b""
    (message,) = sb.http.get("/_sandbox/teams/messages").json()
    assert message["payload"] == teams_card()


def test_teams_workflow_rejects_wrong_flow_sig_and_body(sb: Sandbox) -> None:
    wrong_flow = sb.http.post(
        "/teams/workflows/other/triggers/manual/paths/invoke",
        params=sb.teams_params(),
        json=teams_card(),
    )
    assert wrong_flow.status_code == 404
    wrong_sig = sb.http.post(sb.teams_path, params=sb.teams_params("bad"), json=teams_card())
    assert wrong_sig.status_code == 401
    assert wrong_sig.json()["error"]["code"] == "DirectApiAuthorizationRequired"
    no_sig = sb.http.post(sb.teams_path, params={"api-version": "2016-06-01"}, json=teams_card())
    assert no_sig.status_code == 401
    not_a_card = sb.http.post(sb.teams_path, params=sb.teams_params(), json={"text": "hello"})
    assert not_a_card.status_code == 400
    assert sb.http.get("/_sandbox/teams/messages").json() == []
