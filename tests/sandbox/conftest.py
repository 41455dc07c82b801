"""The sandbox the tests of this folder talk to: one per test module, served on loopback, with
random credentials; each test starts from a reset sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from riposte.sandbox.app import create_app
from riposte.sandbox.config import SandboxConfig
from tests.sandbox.helpers import Sandbox, random_config
from tests.servers import serve_in_thread


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, SandboxConfig]]:
    config = random_config()
    with serve_in_thread(create_app(config)) as base:
        yield base, config


@pytest.fixture
def sb(server: tuple[str, SandboxConfig]) -> Iterator[Sandbox]:
    base, config = server
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/_sandbox/reset").status_code == 200
        yield Sandbox(base, config, http)
