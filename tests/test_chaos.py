"""The fast chaos scenarios of `make chaos` (chaos/scenarios.py), with small counts and short
outages, on the session's Prefect server, sandbox, responder and intake.

Each scenario runs in a thread of its own, at the same time as those whose faults it cannot
meet: first the chat outage (chat-down, and retry-failed, whose runs fail with it and are retried
once Slack and Teams are back), then a ServiceNow outage shorter than the retries, Defender
refusing the write-back of other alerts, and Jira's search lagging behind its writes. Their
alerts may share batch runs; each counts its own.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from chaos.scenarios import (
    Harness,
    ScenarioResult,
    chat_down,
    itsm_down,
    retry_failed,
    search_lag,
    table,
    ticket_sync,
    writeback_rejected,
)
from tests.conftest import INTAKE_TOKEN, PREFECT_CLI

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

logger = logging.getLogger("chaos")
TIMEOUT = 150.0


@pytest.fixture(scope="module")
def chaos(sandbox_url: str, intake_url: str) -> dict[str, ScenarioResult]:
    httpx.post(f"{sandbox_url}/_sandbox/reset", timeout=10).raise_for_status()
    harness = Harness(
        intake_url=intake_url,
        sandbox_url=sandbox_url,
        token=INTAKE_TOKEN,
        prefect_cli=PREFECT_CLI,
        say=lambda text: logger.info("%s", text),
    )
    small: dict[str, Any] = {"alerts": 3, "senders": 3, "timeout": TIMEOUT}
    with ThreadPoolExecutor(4, thread_name_prefix="scenario") as pool:
        # Slack and Teams down: chat-down's runs fail, and retry-failed's with them; those are
        # retried once both are back, which is when chat-down returns.
        chat = pool.submit(chat_down, harness, **small)
        retry = pool.submit(retry_failed, harness, **small)
        results = {"chat-down": chat.result()}
        # Then the scenarios that need their messages through.
        itsm = pool.submit(itsm_down, harness, **{**small, "alerts": 6, "outage": 5.0})
        writeback = pool.submit(writeback_rejected, harness, **small)
        # Jira's search 10 s behind its writes: 6 alerts in 2 incidents, one issue each.
        lag = pool.submit(search_lag, harness, **{**small, "alerts": 6, "group": 3, "lag": 10.0})
        results |= {
            "retry-failed": retry.result(),
            "itsm-down": itsm.result(),
            "writeback-rejected": writeback.result(),
            "search-lag": lag.result(),
        }
    # Last, alone: the ticket sync under a Defender outage and a killed sync run.
    results["ticket-sync"] = ticket_sync(harness, **{**small, "alerts": 10, "outage": 10.0})
    logger.info("\n%s", table(list(results.values())))
    return results


@pytest.mark.parametrize(
    "name",
    ["chat-down", "retry-failed", "itsm-down", "writeback-rejected", "search-lag", "ticket-sync"],
)
def test_scenario_loses_and_doubles_nothing_and_passes_its_checks(
    chaos: dict[str, ScenarioResult], name: str
) -> None:
    result = chaos[name]
    assert result.problems == [], "\n".join([table([result]), *result.problems, *result.notes])
    # search-lag: one ticket per incident of 3 alerts, not per alert.
    tickets = result.sent // 3 if name == "search-lag" else result.sent
    assert (result.tickets, result.duplicates, result.lost) == (tickets, 0, 0)
    assert result.ok
