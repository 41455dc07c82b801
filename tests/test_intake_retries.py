"""The intake asks Prefect again at once when a run creation meets a passing database conflict.

Prefect's server answers 503 when its database refuses a write for now (with SQLite: "database
is locked" whenever two writes meet), and Prefect's client waits two seconds before it asks
again. A stand-in Prefect API on loopback answers the way the server does (503 with
`{"exception_message": "Service Unavailable"}`, no Retry-After), a given number of times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun

from riposte.deployments.intake import QuickRetries, with_quick_retries
from tests.servers import serve_in_thread


class Conflicts:
    """Answers the first ``refusals`` requests of each route 503, as Prefect's server does."""

    def __init__(self) -> None:
        self.refusals = 0
        self.seen: list[tuple[str, str, float]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/api/{path:path}", methods=["GET", "POST"])
        async def any_route(path: str, request: Request) -> JSONResponse:
            body = await request.body()
            if path == "csrf-token":  # as a server without CSRF protection (the default)
                return JSONResponse({"detail": "CSRF protection is disabled."}, 422)
            earlier = [s for s in self.seen if s[:2] == (request.method, path)]
            self.seen.append((request.method, path, time.monotonic()))
            if len(earlier) < self.refusals:
                return JSONResponse({"exception_message": "Service Unavailable"}, 503)
            if path.endswith("/create_flow_run"):
                assert b"idempotency_key" in body
                run = FlowRun(flow_id=uuid4(), name="graph-a-1", deployment_id=uuid4())
                return JSONResponse(run.model_dump(mode="json"), 201)
            return JSONResponse({"ok": True})

        return app

    def attempts(self, method: str, path: str) -> list[float]:
        return [at for m, p, at in self.seen if (m, p) == (method, path)]


def _through_quick_retries(
    api: str, method: str, path: str, body: dict[str, Any] | None = None, times: int = 1
) -> list[httpx.Response]:
    """Send the same request ``times`` times through one `QuickRetries`."""

    async def send() -> list[httpx.Response]:
        transport = QuickRetries(httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(base_url=api, transport=transport, timeout=10) as client:
            kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
            return [await client.request(method, f"/{path}", **kwargs) for _ in range(times)]

    return asyncio.run(send())


KEYED = {"idempotency_key": "respond:graph:a-1:high"}


@pytest.fixture
def conflicts() -> Iterator[tuple[Conflicts, str]]:
    stand_in = Conflicts()
    with serve_in_thread(stand_in.app()) as url:
        yield stand_in, f"{url}/api"


def test_a_run_creation_refused_for_now_is_asked_again_at_once_not_after_seconds(
    conflicts: tuple[Conflicts, str],
) -> None:
    stand_in, api = conflicts
    stand_in.refusals = 2

    async def create() -> FlowRun:
        client = PrefectClient(api)
        assert with_quick_retries(client)
        async with client:
            return await client.create_flow_run_from_deployment(
                uuid4(), parameters={"alert_id": "a-1"}, idempotency_key=KEYED["idempotency_key"]
            )

    run = asyncio.run(create())
    assert run.name == "graph-a-1"
    [path] = {p for _, p, _ in stand_in.seen}
    tries = stand_in.attempts("POST", path)
    assert len(tries) == 3
    # Prefect's own client would have waited about 2 s (1.6 s at the least) before its retry.
    assert all(later - earlier < 1.0 for earlier, later in zip(tries, tries[1:], strict=False))


def test_a_lasting_refusal_is_handed_back_after_the_quick_tries_then_rests(
    conflicts: tuple[Conflicts, str],
) -> None:
    stand_in, api = conflicts
    stand_in.refusals = 100
    path = "deployments/d/create_flow_run"

    first, second = _through_quick_retries(api, "POST", path, KEYED, times=2)
    assert first.status_code == second.status_code == 503
    # One round of quick tries, then the next creation is left to Prefect's client alone: a
    # server that stays refused is not asked five times as often.
    assert len(stand_in.attempts("POST", path)) == 1 + len(QuickRetries.DELAYS) + 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "deployments/name/x/y", None),
        ("POST", "flow_runs/filter", KEYED),
        ("POST", "deployments/d/create_flow_run", {"parameters": {}}),  # no idempotency key
    ],
)
def test_other_requests_are_sent_once_by_it(
    conflicts: tuple[Conflicts, str], method: str, path: str, body: dict[str, Any] | None
) -> None:
    stand_in, api = conflicts
    stand_in.refusals = 100

    [answer] = _through_quick_retries(api, method, path, body)
    assert answer.status_code == 503
    assert len(stand_in.attempts(method, path)) == 1


@pytest.mark.parametrize(
    "headers", [{"Retry-After": "3"}, {"Prefect-Maintenance": "true"}, {}], ids=str
)
def test_a_503_that_is_not_the_database_s_not_now_is_left_to_prefect_s_client(
    headers: dict[str, str],
) -> None:
    """A 503 that asks to wait (Retry-After), Prefect's maintenance mode, or another body (a
    load balancer's page) is not asked again at once."""
    seen: list[float] = []
    app = FastAPI()

    @app.post("/api/deployments/d/create_flow_run")
    async def create() -> JSONResponse:
        seen.append(time.monotonic())
        body = {"detail": "maintenance"} if headers else {"error": "no healthy upstream"}
        return JSONResponse(body, 503, headers=headers)

    with serve_in_thread(app) as url:
        [answer] = _through_quick_retries(
            f"{url}/api", "POST", "deployments/d/create_flow_run", KEYED
        )
    assert answer.status_code == 503
    assert len(seen) == 1


def test_the_intake_s_own_prefect_client_gets_the_quick_retries() -> None:
    """The client the intake builds from the settings (no proxy) is one it can wrap."""
    from prefect.client.orchestration import get_client

    client = get_client()
    assert with_quick_retries(client)
    assert isinstance(client._client._transport, QuickRetries)


def test_a_client_whose_requests_go_through_a_proxy_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Behind a proxy, httpx sends the API's requests through a transport of its own: the
    intake says so at start (its creations then wait for the client's own retries)."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = PrefectClient("http://prefect.internal:4200/api")
    assert not with_quick_retries(client)
    assert not isinstance(client._client._transport, QuickRetries)
