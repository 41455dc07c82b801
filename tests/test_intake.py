"""The intake over real HTTP: who may post, what it accepts, and what it says when it cannot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from riposte.deployments.intake import create_app
from riposte.sandbox.samples import sample_graph_alerts
from riposte.settings import Settings
from tests.conftest import INTAKE_TOKEN
from tests.servers import free_port, serve_in_thread

AUTH = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
# Generous: the machine may be busy (CI runs everything on two cores).
TIMEOUT = 60.0


def _post(url: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    return httpx.post(url, **kwargs)


def _get(url: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    return httpx.get(url, **kwargs)


def _alert() -> dict[str, Any]:
    return sample_graph_alerts(datetime.now(UTC))[0]


def test_missing_or_wrong_token_gets_401_and_nothing_else(intake_url: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {INTAKE_TOKEN}"},
    ):
        r = _post(f"{intake_url}/alerts/graph", json=_alert(), headers=headers)
        assert r.status_code == 401
        assert r.json() == {"detail": "unauthorized"}


def test_unknown_source_is_404(intake_url: str) -> None:
    r = _post(f"{intake_url}/alerts/carrier-pigeon", json=_alert(), headers=AUTH)
    assert r.status_code == 404 and "carrier-pigeon" in r.json()["detail"]


def test_wrong_content_type_is_415(intake_url: str) -> None:
    r = _post(
        f"{intake_url}/alerts/graph",
        content=json.dumps(_alert()),
        headers={**AUTH, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415


def test_malformed_json_is_400(intake_url: str) -> None:
    r = _post(
        f"{intake_url}/alerts/graph",
        content=b'{"id": "x",',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400


def test_body_over_one_mebibyte_is_413(intake_url: str) -> None:
    big = _alert()
    big["description"] = "x" * (1024 * 1024)
    r = _post(f"{intake_url}/alerts/graph", json=big, headers=AUTH)
    assert r.status_code == 413


def test_payload_that_is_not_an_alert_is_422_naming_the_field(intake_url: str) -> None:
    broken = _alert()
    del broken["id"]
    r = _post(f"{intake_url}/alerts/graph", json={"value": [_alert(), broken]}, headers=AUTH)
    assert r.status_code == 422
    assert "[1]" in r.json()["detail"] and "id" in r.json()["detail"]


def test_deeply_nested_json_is_refused_without_a_500(intake_url: str) -> None:
    body = "[" * 100_000 + "]" * 100_000
    r = _post(
        f"{intake_url}/alerts/graph",
        content=body.encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422)


@pytest.fixture
def intake_without_prefect(tmp_path: Path) -> Iterator[str]:
    dead = f"http://127.0.0.1:{free_port()}/api"
    settings = Settings(intake_tokens=INTAKE_TOKEN, intake_journal=tmp_path / "journal")
    app = create_app(settings, prefect_api_url=dead)
    with serve_in_thread(app) as url:
        yield url


def test_prefect_unreachable_still_accepts_into_the_journal_and_health_says_so(
    intake_without_prefect: str,
) -> None:
    """Prefect down: the alert is written to the journal and acknowledged as `queued` (its run
    comes once Prefect is back); /health says Prefect is unreachable and one alert waits."""
    r = _post(f"{intake_without_prefect}/alerts/graph", json=_alert(), headers=AUTH, timeout=60)
    assert r.status_code == 202, r.text
    (accepted,) = r.json()["accepted"]
    assert accepted["status"] == "queued" and accepted["flow_run_id"] is None
    health = _get(f"{intake_without_prefect}/health", timeout=60)
    assert health.status_code == 503, health.text
    assert health.json()["prefect"] == "unreachable" and health.json()["waiting"] == 1
    assert health.json()["forwarding"].startswith("Prefect API unavailable")


def test_intake_refuses_to_start_without_a_token() -> None:
    with pytest.raises(RuntimeError, match="sender keys"):
        create_app(Settings(intake_tokens=" , "))


def test_sender_keys_from_a_key_file_rotate_without_a_restart(tmp_path: Path) -> None:
    """`RIPOSTE_INTAKE_KEY_FILE`: keys outside Prefect (no API reader sees them), read again
    when the file changes; a file broken mid-rotation, or with keys of the wrong shape (a string
    where the list belongs would split into one-letter keys), keeps the last good keys; a file
    that is gone revokes them."""
    import os

    old, new = "old-token-0123456789", "new-token-0123456789"
    key_file = tmp_path / "intake-keys.json"
    key_file.write_text(json.dumps({"tokens": [old], "hmac_keys": []}))
    dead = f"http://127.0.0.1:{free_port()}/api"  # past the sender check: 202, queued
    app = create_app(
        Settings(intake_key_file=key_file, intake_journal=tmp_path / "journal"),
        prefect_api_url=dead,
    )

    def status(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return _post(f"{url}/alerts/graph", json=_alert(), headers=headers, timeout=60).status_code

    def rewrite(text: str) -> None:
        key_file.write_text(text)
        stamp = key_file.stat().st_mtime + 1
        os.utime(key_file, (stamp, stamp))

    with serve_in_thread(app) as url:
        assert (status(old), status(new)) == (202, 401)
        rewrite(json.dumps({"tokens": [new]}))
        assert (status(old), status(new)) == (401, 202)
        for broken in ("{not json", json.dumps({"tokens": new}), json.dumps({"tokens": ["short"]})):
            rewrite(broken)
            assert (status(new), status("n"), status("short")) == (202, 401, 401), broken
        key_file.unlink()
        assert status(new) == 401


def test_openapi_document_lists_the_alert_route(intake_url: str) -> None:
    doc = _get(f"{intake_url}/openapi.json").json()
    assert "/alerts/{source}" in doc["paths"]


def _signed(body: bytes, keys: list[str], timestamp: int | None = None) -> dict[str, str]:
    from riposte.deployments.signing import sign

    return {
        "Content-Type": "application/json",
        "X-Riposte-Signature": sign(body, [k.encode() for k in keys], timestamp),
    }


@pytest.mark.usefixtures("served_flows")
def test_signed_request_is_accepted_with_either_rotation_key(
    intake_url: str, sandbox: httpx.Client
) -> None:
    from tests.conftest import INTAKE_HMAC_KEYS

    for key in INTAKE_HMAC_KEYS:
        alert = _alert()
        alert["id"] = f"signed-{key[:6]}"
        sandbox.post("/_sandbox/graph/alerts", json=[alert]).raise_for_status()
        body = json.dumps(alert).encode()
        r = _post(f"{intake_url}/alerts/graph", content=body, headers=_signed(body, [key]))
        assert r.status_code == 202, r.text
        assert r.json()["accepted"][0]["id"] == alert["id"]


def test_tampered_or_stale_signature_gets_401(intake_url: str) -> None:
    import time

    from tests.conftest import INTAKE_HMAC_KEYS

    body = json.dumps(_alert()).encode()
    tampered = _post(
        f"{intake_url}/alerts/graph",
        content=body.replace(b"high", b"low"),
        headers=_signed(body, INTAKE_HMAC_KEYS),
    )
    stale = _post(
        f"{intake_url}/alerts/graph",
        content=body,
        headers=_signed(body, INTAKE_HMAC_KEYS, timestamp=int(time.time()) - 600),
    )
    wrong_key = _post(
        f"{intake_url}/alerts/graph", content=body, headers=_signed(body, ["not-a-key"])
    )
    for r in (tampered, stale, wrong_key):
        assert r.status_code == 401 and r.json() == {"detail": "unauthorized"}


@pytest.mark.usefixtures("served_flows")
def test_riposte_send_signs_and_posts_a_file(intake_url: str, sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from tests.conftest import INTAKE_HMAC_KEYS

    alert = _alert()
    alert["id"] = "sent-by-cli"
    sandbox.post("/_sandbox/graph/alerts", json=[alert]).raise_for_status()
    path = tmp_path / "alert.json"
    path.write_text(json.dumps({"value": [alert]}))
    key = tmp_path / "key"
    key.write_text(INTAKE_HMAC_KEYS[1])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "riposte.deployments.cli",
            "send",
            str(path),
            "--url",
            intake_url,
            "--key-file",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"][0]["id"] == "sent-by-cli"
    key.write_text("wrong")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "riposte.deployments.cli",
            "send",
            str(path),
            "--url",
            intake_url,
            "--key-file",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert refused.returncode == 1 and "401" in refused.stderr


@pytest.mark.usefixtures("served_flows")
def test_alert_sent_while_prefect_is_down_is_accepted_and_answered_once_it_is_back(
    prefect_server: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    """Prefect down: the alert (sent twice, as a sender that retries would) is acknowledged
    `queued` at once; when Prefect comes back the intake starts its response by itself, with no
    new delivery, and only one."""
    from urllib.parse import urlparse

    from tests.conftest import wait_until
    from tests.servers import tcp_forward

    port = free_port()
    settings = Settings(intake_tokens=INTAKE_TOKEN, intake_journal=tmp_path / "journal")
    app = create_app(settings, prefect_api_url=f"http://127.0.0.1:{port}/api")
    alert = _alert()
    alert["id"] = f"prefect-down-{free_port()}"
    sandbox.post("/_sandbox/graph/alerts", json=[alert]).raise_for_status()
    with serve_in_thread(app) as url:
        for _ in range(2):
            down = _post(f"{url}/alerts/graph", json=alert, headers=AUTH)
            assert down.status_code == 202, down.text
            assert down.json()["accepted"][0]["status"] == "queued"
        # Prefect comes back (here: becomes reachable on the address the intake uses).
        with tcp_forward(port, urlparse(prefect_server).port or 0):

            def ticketed() -> bool:
                incidents = sandbox.get("/_sandbox/servicenow/incidents").json()
                return any(alert["id"] in i["record"]["correlation_id"] for i in incidents)

            wait_until(ticketed, timeout=120, what="the ticket of the accepted alert")
            health = _get(f"{url}/health").json()
            assert (health["waiting"], health["forwarding"]) == (0, "ok"), health
    assert runs_named(f"graph-{alert['id']}") == 1


def runs_named(name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return len(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        )
