"""The lock manager setting: file locks on one machine, Redis (prefect-redis) for several."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from riposte.tasks import _cache
from riposte.tasks._cache import ExpiringFileSystemLockManager, ExpiringLocks, lock_manager


def test_file_locks_lapse_after_the_configured_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIPOSTE_HOME", str(tmp_path))
    monkeypatch.setenv("RIPOSTE_LOCK_HOLD_SECONDS", "30")
    manager = lock_manager()
    assert isinstance(manager, ExpiringFileSystemLockManager)
    assert manager.hold_seconds == 30
    assert manager.acquire_lock("alert-1", "run-a")
    # A holder that died (never releases): another run waits, then takes the lapsed lock.
    assert not manager.acquire_lock("alert-1", "run-b", acquire_timeout=0.3)
    assert manager.acquire_lock("alert-2", "run-a", hold_timeout=0.2)
    assert manager.acquire_lock("alert-2", "run-b", acquire_timeout=5)
    assert (tmp_path / "locks").is_dir()


def test_redis_url_builds_prefect_redis_lock_manager_with_our_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: dict[str, Any] = {}

    class FakeRedisLockManager:
        def __init__(self, **kwargs: Any) -> None:
            made.update(kwargs)

        def acquire_lock(
            self, key: str, holder: str, acquire_timeout: Any = None, hold_timeout: Any = None
        ) -> bool:
            made["acquired"] = (key, holder, acquire_timeout, hold_timeout)
            return True

    locking = types.ModuleType("prefect_redis.locking")
    locking.RedisLockManager = FakeRedisLockManager  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect_redis", types.ModuleType("prefect_redis"))
    monkeypatch.setitem(sys.modules, "prefect_redis.locking", locking)
    monkeypatch.setattr(_cache, "_redis_managers", {})
    monkeypatch.setenv("RIPOSTE_LOCK_MANAGER", "rediss://riposte:p%40ss@redis.internal:6380/2")
    monkeypatch.setenv("RIPOSTE_LOCK_HOLD_SECONDS", "120")

    manager = lock_manager()
    assert isinstance(manager, ExpiringLocks)
    assert made == {
        "host": "redis.internal",
        "port": 6380,
        "db": 2,
        "username": "riposte",
        "password": "p@ss",
        "ssl": True,
    }
    # Prefect's transactions pass no hold timeout: ours applies, so a dead holder's lock lapses.
    assert manager.acquire_lock("k", "h")
    assert made["acquired"] == ("k", "h", _cache.LOCK_WAIT_SECONDS, 120.0)
    assert lock_manager() is manager  # one client (connection pool) per process


def test_redis_without_prefect_redis_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prefect_redis", None)
    monkeypatch.setitem(sys.modules, "prefect_redis.locking", None)
    monkeypatch.setattr(_cache, "_redis_managers", {})
    monkeypatch.setenv("RIPOSTE_LOCK_MANAGER", "redis://localhost:6379/0")
    with pytest.raises(RuntimeError, match="pip install prefect-redis"):
        lock_manager()


def test_unknown_lock_manager_is_refused_without_echoing_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIPOSTE_LOCK_MANAGER", "etcd://user:secret@host:2379")
    with pytest.raises(ValueError) as refused:
        lock_manager()
    assert "secret" not in str(refused.value)
