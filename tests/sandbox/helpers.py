"""What the sandbox tests share: the client of a served sandbox, credentials, paths, payloads."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.config import SandboxConfig

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default"
MDCA_SCOPE = "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default"
ARM_SCOPE = "https://management.azure.com/.default"
ALERTS = "/graph/v1.0/security/alerts_v2"
MDE_ALERTS = "/mde/api/alerts"
MDCA_ALERTS = "/mdca/api/v1/alerts/"
INCIDENTS = "/servicenow/api/now/table/incident"
JIRA = "/jira/rest/api/3"
ARM_VERSION = {"api-version": "2022-01-01"}
GRAPH_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


def adf(text: str) -> dict[str, Any]:
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    }


def graph_ticks(text: str) -> int:
    ticks = parse_ticks(text)
    assert ticks is not None, text
    return ticks


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Sandbox:
    base: str
    config: SandboxConfig
    http: httpx.Client

    def token(self, scope: str = GRAPH_SCOPE) -> str:
        response = self.http.post(
            f"/login/{self.config.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret,
                "grant_type": "client_credentials",
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def graph(self, prefer_unknown: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token()}"}
        if prefer_unknown:
            headers["Prefer"] = "include-unknown-enum-members"
        return headers

    @property
    def snow(self) -> dict[str, str]:
        return basic(self.config.servicenow_user, self.config.servicenow_password)

    @property
    def jira(self) -> dict[str, str]:
        return basic(self.config.jira_email, self.config.jira_api_token)

    @property
    def slack_path(self) -> str:
        return f"/slack/services/{self.config.slack_hook_path}"

    @property
    def teams_path(self) -> str:
        return f"/teams/workflows/{self.config.teams_flow_id}/triggers/manual/paths/invoke"

    def teams_params(self, sig: str | None = None) -> dict[str, str]:
        return {"api-version": "2016-06-01", "sig": sig or self.config.teams_sig}

    def load_alerts(self, alerts: list[dict[str, Any]]) -> None:
        response = self.http.post("/_sandbox/graph/alerts", json=alerts)
        assert response.json()["loaded"] == len(alerts)

    def fault(self, **spec: Any) -> str:
        response = self.http.post("/_sandbox/faults", json=spec)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def random_config() -> SandboxConfig:
    word = secrets.token_hex
    return SandboxConfig(
        tenant_id=word(8),
        client_id=word(8),
        client_secret=word(16),
        servicenow_user=word(6),
        servicenow_password=word(16),
        jira_email=f"{word(4)}@example.org",
        jira_api_token=word(16),
        jira_projects=["SOC", "OPS"],
        slack_hook_path=f"T{word(4).upper()}/B{word(4).upper()}/{word(12)}",
        teams_flow_id=word(8),
        teams_sig=word(16),
    )


def alert(alert_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": alert_id, "title": f"alert {alert_id}", "severity": "medium", **fields}


def new_issue(sb: Sandbox, **fields: Any) -> httpx.Response:
    body = {
        "project": {"key": "SOC"},
        "summary": "Suspicious PowerShell",
        "issuetype": {"name": "Task"},
        "labels": ["riposte-graph-a1"],
        "priority": {"name": "High"},
        "description": adf("details"),
    }
    body.update(fields)
    return sb.http.post(f"{JIRA}/issue", headers=sb.jira, json={"fields": body})


def teams_card() -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "TextBlock", "text": "hello"}],
                },
            }
        ],
    }


def bearer(sb: Sandbox, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.token(scope)}"}


def legacy(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Token {sb.config.cloud_apps_legacy_token}"}


def arm_alerts_path(subscription: str) -> str:
    return f"/arm/subscriptions/{subscription}/providers/Microsoft.Security/alerts"
