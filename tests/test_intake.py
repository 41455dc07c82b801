"""The intake over real HTTP: who may post, what it accepts, and what it says when it cannot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from riposte.deployments.intake import create_app
from riposte.sandbox.samples import sample_graph_alerts
from riposte.settings import Settings
from tests.conftest import INTAKE_TOKEN
from tests.servers import free_port, serve_in_thread

AUTH = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


def _alert() -> dict[str, Any]:
    return sample_graph_alerts(datetime.now(UTC))[0]


def test_missing_or_wrong_token_gets_401_and_nothing_else(intake_url: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {INTAKE_TOKEN}"},
    ):
        r = httpx.post(f"{intake_url}/alerts/graph", json=_alert(), headers=headers)
        assert r.status_code == 401
        assert r.json() == {"detail": "unauthorized"}


def test_unknown_source_is_404(intake_url: str) -> None:
    r = httpx.post(f"{intake_url}/alerts/carrier-pigeon", json=_alert(), headers=AUTH)
    assert r.status_code == 404 and "carrier-pigeon" in r.json()["detail"]


def test_wrong_content_type_is_415(intake_url: str) -> None:
    r = httpx.post(
        f"{intake_url}/alerts/graph",
        content=json.dumps(_alert()),
        headers={**AUTH, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415


def test_malformed_json_is_400(intake_url: str) -> None:
    r = httpx.post(
        f"{intake_url}/alerts/graph",
        content=b'{"id": "x",',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400


def test_body_over_one_mebibyte_is_413(intake_url: str) -> None:
    big = _alert()
    big["description"] = "x" * (1024 * 1024)
    r = httpx.post(f"{intake_url}/alerts/graph", json=big, headers=AUTH)
    assert r.status_code == 413


def test_payload_that_is_not_an_alert_is_422_naming_the_field(intake_url: str) -> None:
    broken = _alert()
    del broken["id"]
    r = httpx.post(f"{intake_url}/alerts/graph", json={"value": [_alert(), broken]}, headers=AUTH)
    assert r.status_code == 422
    assert "[1]" in r.json()["detail"] and "id" in r.json()["detail"]


def test_deeply_nested_json_is_refused_without_a_500(intake_url: str) -> None:
    body = "[" * 100_000 + "]" * 100_000
    r = httpx.post(
        f"{intake_url}/alerts/graph",
        content=body.encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422)


@pytest.fixture
def intake_without_prefect() -> Iterator[str]:
    dead = f"http://127.0.0.1:{free_port()}/api"
    app = create_app(Settings(intake_tokens=INTAKE_TOKEN), prefect_api_url=dead)
    with serve_in_thread(app) as url:
        yield url


def test_prefect_unreachable_gives_503_with_retry_after(intake_without_prefect: str) -> None:
    r = httpx.post(
        f"{intake_without_prefect}/alerts/graph", json=_alert(), headers=AUTH, timeout=60
    )
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    health = httpx.get(f"{intake_without_prefect}/health", timeout=60)
    assert health.status_code == 503 and health.json()["prefect"] == "unreachable"


def test_intake_refuses_to_start_without_a_token() -> None:
    with pytest.raises(RuntimeError, match="token"):
        create_app(Settings(intake_tokens=" , "))


def test_openapi_document_lists_the_alert_route(intake_url: str) -> None:
    doc = httpx.get(f"{intake_url}/openapi.json").json()
    assert "/alerts/{source}" in doc["paths"]
