"""The Prefect UI as the analyst's console, in a real browser (Debian's headless Chromium, driven
by Playwright): an approval link opened from a chat message and approved, and a response run's
page in the Prefect UI whose report links to its ticket, followed to the ticket's page.

Each step leaves a screenshot in `.riposte/screenshots/` under the checkout, named after the step.
Chromium comes from the Debian packages `tests/install-chromium.sh` installs (`make test` runs it);
when they cannot be installed the tests skip and say why, or fail where `RIPOSTE_REQUIRE_BROWSER=1`
(CI: `.ci/run` sets it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.conftest import REPO
from tests.test_approval_e2e import (
    ALICE,
    approval_policy,
    contain_run,
    fresh,
    isolations,
    links,
    machine_of,
    respond,
)
from tests.test_policy_e2e import incidents, load, push, wait_completed

CHROMIUM = Path("/usr/bin/chromium")
# Playwright downloads no browser of its own. Without background networking, component updates
# and sync, Chromium opens no connection beyond the pages a test loads (a closed network refuses
# those connections, many at a time); it has no GPU and runs as root, hence no sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / ".riposte" / "screenshots"
INSTALL_LOG = REPO / ".riposte" / "chromium-install.log"
REPORT_LINK = re.compile(r"\[(INC\d+)\]\((http[^)\s]+)\)")  # a ServiceNow ticket in the report

expect.set_options(timeout=30_000)  # the UI's first load fetches its bundles on 2 busy cores


def why_no_chromium() -> str:
    reason = "tests/install-chromium.sh has not run (`make test` runs it before pytest)"
    try:
        lines = INSTALL_LOG.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    if lines:
        reason = f"tests/install-chromium.sh could not install it: {lines[-1]}"
    return (
        f"no headless Chromium at {CHROMIUM} (Debian packages chromium and chromium-driver): "
        + reason
    )


# Set by CI (`.ci/run`): there, a browser that could not be installed fails the tests.
REQUIRE_BROWSER = os.environ.get("RIPOSTE_REQUIRE_BROWSER", "").strip() not in ("", "0")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists() and not REQUIRE_BROWSER, reason=why_no_chromium()),
    pytest.mark.usefixtures("chromium_present", "served_flows"),
]


@pytest.fixture(scope="module")
def chromium_present() -> None:
    """Fails every test of the module when Chromium is absent though it is required (else the
    module skips)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"RIPOSTE_REQUIRE_BROWSER is set and there is {why_no_chromium()}", pytrace=False
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; each launch has a fresh profile of its own."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Page, step: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{step}.png"
    page.screenshot(path=path, full_page=True)
    return path


def test_an_approver_opens_the_link_sees_what_is_asked_and_approves(
    page: Page, sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(approval_policy())
    alert = fresh(0)  # PowerShell on an MDE device: the policy asks to isolate it
    machine = machine_of(alert)
    sandbox.post("/_sandbox/mde/machines", json={"id": machine}).raise_for_status()
    respond(sandbox, intake_url, alert)
    contain_run(alert, state="paused")
    link = links(sandbox)[(ALICE, "approve")]

    opened = page.goto(link)
    assert opened is not None and opened.status == 200
    expect(page).to_have_title(re.compile(r"^Approve"))
    asked = page.locator("body")
    expect(asked).to_contain_text("Isolate device")  # the action
    expect(asked).to_contain_text(machine)  # its target
    expect(asked).to_contain_text(alert["id"])
    expect(asked).to_contain_text(ALICE)
    approve = page.get_by_role("button", name=re.compile(rf"^Approve\b.*{re.escape(ALICE)}"))
    expect(approve).to_be_visible()
    screenshot(page, "approval-1-link-opened")
    assert isolations(sandbox) == []  # opening the page decides nothing

    reason = "confirmed with the device owner, from the browser"
    page.get_by_role("textbox").fill(reason)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        approve.click()
    assert posted.value.status == 200
    expect(page).to_have_title(re.compile(r"approved", re.IGNORECASE))
    screenshot(page, "approval-2-approved")

    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    message = done.state.message or ""
    assert ALICE in message and reason in message  # the form's reason reached the audit
    (isolation,) = isolations(sandbox)
    assert isolation["machineId"] == machine and isolation["status"] == "Succeeded"

    # The same link again: the decision is taken, nothing more is done.
    again = page.goto(link)
    assert again is not None and again.status == 409
    expect(page.get_by_role("button")).to_have_count(0)
    screenshot(page, "approval-3-link-used-again")
    assert len(isolations(sandbox)) == 1


def report_of(run_id: UUID) -> tuple[str, str]:
    """The key and markdown of the response run's report (`response-<source>-<alert id>`)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    reports = [
        a for a in artifacts if a.type == "markdown" and (a.key or "").startswith("response-")
    ]
    assert len(reports) == 1, [(a.key, a.type) for a in artifacts]
    return str(reports[0].key), str(reports[0].data)


def test_a_response_run_in_the_prefect_ui_links_to_its_ticket_page(
    page: Page, sandbox: httpx.Client, intake_url: str, prefect_server: str, sandbox_url: str
) -> None:
    alert = fresh(1)  # the session policy: a ServiceNow ticket and messages
    load(sandbox, [alert])
    (run,) = wait_completed(push(intake_url, [alert]))
    with get_client(sync_client=True) as client:
        assert client.read_flow(run.flow_id).name == "respond_to_alert"
    key, report = report_of(run.id)
    found = REPORT_LINK.search(report)
    assert found, report
    number, url = found.groups()
    (ticket,) = [i["record"] for i in incidents(sandbox) if i["record"]["number"] == number]
    assert url == f"{sandbox_url}/servicenow/nav_to.do?uri=incident.do?sys_id={ticket['sys_id']}"

    ui = prefect_server.removesuffix("/api")
    page.goto(f"{ui}/runs/flow-run/{run.id}")
    expect(page).to_have_title(re.compile(re.escape(run.name)))
    expect(page.get_by_text(run.name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    screenshot(page, "console-1-response-run")

    page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    card = page.get_by_role("link").filter(has_text=key)
    expect(card).to_be_visible()
    screenshot(page, "console-2-run-artifacts")

    card.click()
    ticket_link = page.get_by_role("link", name=number, exact=True)
    expect(ticket_link).to_have_attribute("href", url)
    screenshot(page, "console-3-response-report")

    with page.context.expect_page() as opened:  # the UI opens report links in a new tab
        ticket_link.click()
    ticket_page = opened.value
    ticket_page.wait_for_load_state()
    assert ticket_page.url == url
    expect(ticket_page).to_have_title(re.compile(rf"^{number}\b"))
    expect(ticket_page.get_by_role("heading", level=1)).to_contain_text(number)
    expect(ticket_page.locator("body")).to_contain_text(alert["id"])
    screenshot(ticket_page, "console-4-ticket-page")
