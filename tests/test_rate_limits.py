"""Per-API rate limits: the vendors' budgets, created by setup as Prefect limits with slot decay,
acquired strictly by the clients inside runs, and nowhere else."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker

from riposte.blocks import SlackIncomingWebhook, TeamsWorkflowWebhook
from riposte.deployments.local import sandbox_blocks
from riposte.limits import (
    VENDOR_BUDGETS,
    RateBudget,
    RateLimitError,
    Window,
    ensure_rate_limits,
    limit_for_system,
    parse_rate,
    rate_budgets,
)
from riposte.sandbox.config import SandboxConfig
from riposte.settings import Settings

APIS = ("graph", "mde", "mdebatch", "mdca", "arm", "servicenow", "jira", "slack", "teams")


@pytest.fixture
def vendor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No override: the session's conftest opens every budget wide."""
    for api in APIS:
        monkeypatch.delenv(f"RIPOSTE_RATE_{api.upper()}", raising=False)


@pytest.fixture
def blocks(
    prefect_server: str, sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig
) -> Iterator[dict[str, Any]]:
    yield dict(sandbox_blocks(sandbox_url, sandbox_config))
    ensure_rate_limits()  # put back the session's budgets a test may have changed


@pytest.fixture(autouse=True)
def send_run_logs() -> Iterator[None]:
    """Flush the runs' logs while the session's Prefect server is still up."""
    yield
    APILogWorker.drain_all(timeout=5)


def by_api(budgets: tuple[RateBudget, ...]) -> dict[str, RateBudget]:
    return {b.api: b for b in budgets}


def windows(budget: RateBudget) -> list[tuple[int, float]]:
    return [(w.requests, w.seconds) for w in budget.windows]


def test_default_budgets_are_the_vendors_documented_limits(vendor_env: None) -> None:
    budgets = by_api(rate_budgets(Settings()))
    assert sorted(budgets) == sorted(APIS)
    assert windows(budgets["mdca"]) == [(30, 60.0)]
    assert windows(budgets["graph"]) == [(150, 60.0)]
    assert windows(budgets["mde"]) == [(100, 60.0), (1500, 3600.0)]
    assert windows(budgets["slack"]) == [(1, 1.0)]
    assert {b.name for b in budgets.values()} == {f"riposte-api-{api}" for api in APIS}
    # A budget counted over two windows has a limit for each, taken together.
    assert budgets["mde"].names == ("riposte-api-mde", "riposte-api-mde-per-3600s")
    assert all(b.source for b in budgets.values())


def test_no_window_can_exceed_its_budget_and_the_steady_rate_uses_the_rest() -> None:
    for budget in VENDOR_BUDGETS:
        assert budget.limit >= 1 and budget.slot_decay_per_second > 0
        assert {s.window for s in budget.limits} == set(budget.windows)
        for spec in budget.limits:
            if spec.window.requests > 1:
                # A full bucket plus a window's refill stays within the window's budget.
                worst = spec.limit + spec.slot_decay_per_second * spec.window.seconds
                assert worst <= spec.window.requests + 1e-9, budget.describe()
    mdca = by_api(VENDOR_BUDGETS)["mdca"]
    assert (mdca.limit, mdca.slot_decay_per_second) == (3, pytest.approx(0.45))
    slack = by_api(VENDOR_BUDGETS)["slack"]
    assert (slack.limit, slack.slot_decay_per_second) == (1, 1.0)  # one, back after a second
    minute, hour = by_api(VENDOR_BUDGETS)["mde"].limits
    # 90 a minute after a burst of 10, while the hour's limit (750 at once, then the other
    # 750 over the hour) lasts: a storm is not held to the hour's average from the start.
    assert (minute.limit, minute.slot_decay_per_second) == (10, pytest.approx(1.5))
    assert (hour.limit, hour.slot_decay_per_second) == (750, pytest.approx(750 / 3600))


def test_each_client_system_has_its_limit(vendor_env: None) -> None:
    assert limit_for_system("Microsoft Defender for Cloud Apps") == ("riposte-api-mdca",)
    assert limit_for_system("Microsoft Graph") == ("riposte-api-graph",)
    assert limit_for_system("Slack") == ("riposte-api-slack",)
    assert limit_for_system("Microsoft Defender for Endpoint batch update") == (
        "riposte-api-mdebatch",
        "riposte-api-mdebatch-per-3600s",
    )
    assert limit_for_system("Microsoft identity platform") is None  # tokens: not budgeted


def test_an_environment_setting_overrides_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPOSTE_RATE_MDCA", "10/s")
    monkeypatch.setenv("RIPOSTE_RATE_JIRA", "100/min, 1000/h")
    monkeypatch.setenv("RIPOSTE_RATE_ARM", "45")
    budgets = by_api(rate_budgets(Settings()))
    assert windows(budgets["mdca"]) == [(10, 1.0)]
    assert budgets["mdca"].source == "RIPOSTE_RATE_MDCA=10/s"
    assert windows(budgets["jira"]) == [(100, 60.0), (1000, 3600.0)]
    assert windows(budgets["arm"]) == [(45, 60.0)]  # a bare number is per minute
    monkeypatch.setenv("RIPOSTE_RATE_SLACK", "fast")
    with pytest.raises(ValueError, match="RIPOSTE_RATE_SLACK"):
        rate_budgets(Settings())
    with pytest.raises(ValueError):
        parse_rate("0/s")


def test_setup_created_every_limit_with_its_budget_and_running_it_again_changes_nothing(
    prefect_server: str,
) -> None:
    with get_client(sync_client=True) as client:
        for spec in (spec for budget in rate_budgets() for spec in budget.limits):
            limit = client.read_global_concurrency_limit_by_name(spec.name)
            assert limit.active
            assert limit.limit == spec.limit
            assert math.isclose(limit.slot_decay_per_second, spec.slot_decay_per_second)
        again = ensure_rate_limits(client)
    assert again == {n: "unchanged" for b in rate_budgets() for n in b.names}


def test_a_request_without_its_limit_fails_loudly_in_a_run_and_is_not_sent(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    teams: TeamsWorkflowWebhook = blocks["riposte-teams"]
    card = {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {"type": "AdaptiveCard", "version": "1.4", "body": []},
            }
        ],
    }
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name("riposte-api-teams")

    @flow
    def notify() -> None:
        teams.get_client().post(card)

    with pytest.raises(RateLimitError, match="riposte-api-teams.*riposte blocks register"):
        notify()
    assert sandbox.get("/_sandbox/teams/messages").json() == []
    # Outside a run there is no Prefect budget: the same call goes straight out.
    teams.get_client().post(card)
    assert len(sandbox.get("/_sandbox/teams/messages").json()) == 1


def test_a_burst_inside_a_run_is_spread_over_time_by_a_tight_limit(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    slack: SlackIncomingWebhook = blocks["riposte-slack"]
    count = 7
    # Out of a run: nothing to wait for, the burst goes at once.
    started = time.monotonic()
    for i in range(count):
        slack.get_client().post({"text": f"free {i}"})
    free = time.monotonic() - started

    tight = replace(by_api(VENDOR_BUDGETS)["slack"], windows=(Window(4, 1.0),))
    assert (tight.limit, tight.slot_decay_per_second) == (1, 3.0)
    assert ensure_rate_limits(budgets=[tight]) == {"riposte-api-slack": "updated"}

    @flow
    def burst() -> float:
        started = time.monotonic()
        for i in range(count):
            slack.get_client().post({"text": f"limited {i}"})
        return time.monotonic() - started

    elapsed = burst()
    # One at once, then 3 a second: at least 2 s for 7. Prefect counts whole slots from the
    # limit's last update, so it is slower, never faster; the margin absorbs clock rounding.
    expected = (count - tight.limit) / tight.slot_decay_per_second
    assert elapsed >= 0.9 * expected, (elapsed, expected)
    assert elapsed < 10 * expected + 20, (elapsed, expected)
    assert free < expected, free
    # Its own messages: a run of another test (an approval's booked sweep) may post meanwhile.
    ours = [
        m
        for m in sandbox.get("/_sandbox/slack/messages").json()
        if str(m.get("text", "")).startswith(("free ", "limited "))
    ]
    assert len(ours) == 2 * count
