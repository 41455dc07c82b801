"""The sandbox's control routes: reset, request counts, health, config, no echo of secrets."""

from __future__ import annotations

from riposte.sandbox.config import SandboxConfig
from tests.sandbox.helpers import (
    ALERTS,
    ARM_SCOPE,
    ARM_VERSION,
    GRAPH_SCOPE,
    INCIDENTS,
    JIRA,
    MDCA_ALERTS,
    MDE_ALERTS,
    MDE_SCOPE,
    Sandbox,
    adf,
    alert,
    arm_alerts_path,
    basic,
    bearer,
    legacy,
    new_issue,
    teams_card,
)

# --- control ----------------------------------------------------------------------------------


def test_reset_clears_alerts_tickets_messages_faults_and_tokens(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1")])
    headers = sb.graph()
    sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": "x"})
    new_issue(sb)
    sb.http.post(sb.slack_path, json={"text": "hi"})
    sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card())
    sb.fault(service="graph", status=500, path_contains="never-matches")

    assert sb.http.post("/_sandbox/reset").json() == {"status": "reset"}

    assert sb.http.get("/_sandbox/graph/alerts").json() == []
    assert sb.http.get("/_sandbox/servicenow/incidents").json() == []
    assert sb.http.get("/_sandbox/jira/issues").json() == []
    assert sb.http.get("/_sandbox/slack/messages").json() == []
    assert sb.http.get("/_sandbox/teams/messages").json() == []
    assert sb.http.get("/_sandbox/faults").json() == []
    assert sb.http.get("/_sandbox/identity").json()["tokens_issued"] == 0
    assert sb.http.get(ALERTS, headers=headers).status_code == 401
    created = sb.http.post(INCIDENTS, headers=sb.snow, json={})
    assert created.json()["result"]["number"] == "INC0010001"
    assert new_issue(sb).json()["key"] == "SOC-1"


def test_request_counter_counts_calls_per_route_including_faulted_ones(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1")])
    headers = sb.graph()
    sb.fault(service="graph", status=429, retry_after=0, times=1)
    assert sb.http.get(f"{ALERTS}/a1", headers=headers).status_code == 429
    assert sb.http.get(f"{ALERTS}/a1", headers=headers).status_code == 200
    sb.http.get("/_sandbox/health")
    counts = sb.http.get("/_sandbox/requests").json()
    assert counts["services"] == {"identity": 1, "graph": 2}
    assert counts["routes"]["graph"] == {"GET /graph/v1.0/security/alerts_v2/{alert_id}": 2}
    assert counts["statuses"]["graph"] == {"429": 1, "200": 1}
    sb.http.delete("/_sandbox/requests")
    assert sb.http.get("/_sandbox/requests").json()["services"] == {}


def test_health(sb: Sandbox) -> None:
    assert sb.http.get("/_sandbox/health").json() == {"status": "ok"}


def test_no_answer_ever_echoes_a_configured_credential(sb: Sandbox) -> None:
    config = sb.config
    # Not the ServiceNow user name: the instance writes it in sys_created_by/sys_updated_by,
    # which is how a write is attributed.
    secrets_ = [
        config.client_secret,
        config.servicenow_password,
        config.jira_api_token,
        config.jira_email,
        config.teams_sig,
        config.slack_hook_path,
    ]
    sb.load_alerts([alert("a1")])
    answers = [
        sb.http.post(
            f"/login/{config.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": config.client_id,
                "client_secret": config.client_secret + "x",
                "grant_type": "client_credentials",
                "scope": GRAPH_SCOPE,
            },
        ),
        sb.http.get(ALERTS, headers={"Authorization": f"Bearer {config.client_secret}"}),
        sb.http.post(f"{ALERTS}/a1/comments", headers=sb.graph(), json={"comment": "x"}),
        sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": "x"}),
        sb.http.get(INCIDENTS, headers=basic(config.servicenow_user, "wrong")),
        new_issue(sb),
        sb.http.get(f"{JIRA}/issue/SOC-1", headers=sb.jira),
        sb.http.post(f"{JIRA}/issue/SOC-1/comment", headers=sb.jira, json={"body": adf("x")}),
        sb.http.get(f"{JIRA}/myself", headers=sb.jira),
        sb.http.post(sb.slack_path, json={"text": "hi"}),
        sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card()),
        sb.http.post(sb.teams_path, params=sb.teams_params("wrong"), json=teams_card()),
        sb.http.get("/_sandbox/requests"),
        sb.http.get("/_sandbox/servicenow/incidents"),
        sb.http.get("/_sandbox/jira/issues"),
    ]
    for answer in answers:
        text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in secrets_:
            assert secret not in text, (answer.request.url, secret)


def test_config_from_environment_overrides_defaults() -> None:
    config = SandboxConfig.from_env(
        {
            "RIPOSTE_SANDBOX_CLIENT_SECRET": "s3cret",
            "RIPOSTE_SANDBOX_JIRA_PROJECTS": "SEC, OPS",
            "RIPOSTE_SANDBOX_TOKEN_LIFETIME_SECONDS": "60",
        }
    )
    assert config.client_secret == "s3cret"
    assert config.jira_projects == ["SEC", "OPS"]
    assert config.token_lifetime_seconds == 60
    assert config.tenant_id == SandboxConfig().tenant_id


def test_config_urls_point_at_each_simulator(sb: Sandbox) -> None:
    urls = sb.config.urls(sb.base + "/")
    assert sb.http.post(urls["slack_webhook"], json={"text": "hi"}).text == "ok"
    assert sb.http.post(urls["teams_webhook"], json=teams_card()).status_code == 202
    token = sb.http.post(
        urls["token"],
        data={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    ).json()["access_token"]
    listed = sb.http.get(
        f"{urls['graph']}/v1.0/security/alerts_v2", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200
    assert sb.http.get(f"{urls['servicenow']}/api/now/table/incident", headers=sb.snow).is_success
    assert sb.http.get(f"{urls['jira']}/rest/api/3/myself", headers=sb.jira).is_success


# --- samples and control of the new simulators -------------------------------------------------


def test_loading_alerts_refuses_a_body_that_is_not_alerts(sb: Sandbox) -> None:
    for api in ("mde", "mdca", "arm"):
        assert sb.http.post(f"/_sandbox/{api}/alerts", json=[1, 2]).status_code == 400
    assert sb.http.post("/_sandbox/nosuch/alerts", json=[]).status_code == 422


def test_reset_clears_the_new_simulators_and_their_knobs(sb: Sandbox) -> None:
    sb.http.post("/_sandbox/alerts/samples").raise_for_status()
    sb.http.post("/_sandbox/mdca/throttle", json={"enabled": True, "requests": 1})
    sb.http.post("/_sandbox/arm/settings", json={"page_size": 1})
    sb.http.post("/_sandbox/reset").raise_for_status()
    for api in ("mde", "mdca", "arm"):
        assert sb.http.get(f"/_sandbox/{api}/alerts").json() == []
    assert sb.http.get("/_sandbox/mdca/throttle").json()["enabled"] is False
    assert sb.http.get("/_sandbox/arm/settings").json() == {"page_size": 100}


def test_request_counter_counts_the_new_simulators_by_route(sb: Sandbox) -> None:
    mde, mdca, arm = bearer(sb, MDE_SCOPE), legacy(sb), bearer(sb, ARM_SCOPE)
    sb.http.delete("/_sandbox/requests")
    sb.http.get(f"{MDE_ALERTS}/x", headers=mde)
    sb.http.post(MDCA_ALERTS, headers=mdca, json={})
    sb.http.get(arm_alerts_path(sb.config.subscription_ids[0]), headers=arm, params=ARM_VERSION)
    counts = sb.http.get("/_sandbox/requests").json()
    assert counts["services"] == {"mde": 1, "mdca": 1, "arm": 1}
    assert counts["routes"]["mde"] == {"GET /mde/api/alerts/{alert_id}": 1}
    assert counts["statuses"]["mde"] == {"404": 1}


def test_config_urls_point_at_the_new_simulators(sb: Sandbox) -> None:
    urls = sb.config.urls(sb.base)
    assert sb.http.get(f"{urls['mde']}/api/alerts", headers=bearer(sb, MDE_SCOPE)).is_success
    assert sb.http.get(f"{urls['mdca']}/api/v1/alerts/", headers=legacy(sb)).is_success
    listed = sb.http.get(
        f"{urls['arm']}/subscriptions/{sb.config.subscription_ids[0]}/providers/"
        "Microsoft.Security/alerts",
        headers=bearer(sb, ARM_SCOPE),
        params=ARM_VERSION,
    )
    assert listed.is_success


def test_new_simulators_never_echo_a_configured_credential(sb: Sandbox) -> None:
    secrets_ = [sb.config.client_secret, sb.config.cloud_apps_legacy_token]
    sb.http.post("/_sandbox/alerts/samples").raise_for_status()
    leaked = {"Authorization": f"Bearer {sb.config.client_secret}"}
    answers = [
        sb.http.get(MDE_ALERTS, headers=leaked),
        sb.http.get(MDCA_ALERTS, headers=leaked),
        sb.http.get(MDCA_ALERTS, headers={"Authorization": f"Token {secrets_[1]}x"}),
        sb.http.get(MDCA_ALERTS, headers=legacy(sb)),
        sb.http.get(
            arm_alerts_path(sb.config.subscription_ids[0]), headers=leaked, params=ARM_VERSION
        ),
        sb.http.get("/_sandbox/identity"),
        sb.http.get("/_sandbox/requests"),
    ]
    for answer in answers:
        text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in secrets_:
            assert secret not in text, (answer.request.url, secret)
