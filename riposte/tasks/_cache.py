"""Cache keys and locks that make a response happen once per alert revision, across runs.

Step results are keyed by the alert (not by the flow run), so whichever run answers an alert
again (a Retry, a re-run of the respond deployment, a duplicate delivery in another batch)
gets the completed steps back as Cached. The response as a whole is SERIALIZABLE: two runs that
reach the same alert at the same moment take turns on a lock, and the second finds the first's
committed record instead of acting again.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from prefect.cache_policies import CacheKeyFnPolicy, CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.filesystem import FileSystemLockManager
from prefect.locking.protocol import LockManager
from prefect.transactions import IsolationLevel

from riposte.settings import get_settings

# A holder killed mid-response (SIGKILL, a lost machine) must not block the alert forever: the
# lock lapses after `Settings.lock_hold_seconds` (15 minutes by default, well beyond any step).
LOCK_WAIT_SECONDS = 900.0


class ExpiringLocks:
    """Any lock manager (prefect-redis's, our file one), with our wait and hold timeouts where
    the caller gives none: Prefect's transactions give none, and a lock that never lapses would
    block an alert forever once its holder is killed."""

    def __init__(self, inner: LockManager, hold_seconds: float) -> None:
        self.inner = inner
        self.hold_seconds = hold_seconds

    def _timeouts(
        self, acquire_timeout: float | None, hold_timeout: float | None
    ) -> tuple[float, float]:
        return (
            LOCK_WAIT_SECONDS if acquire_timeout is None else acquire_timeout,
            self.hold_seconds if hold_timeout is None else hold_timeout,
        )

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        return self.inner.acquire_lock(key, holder, *self._timeouts(acquire_timeout, hold_timeout))

    # The async twin of `acquire_lock`: the protocol has both, and Prefect calls both.
    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        wait, hold = self._timeouts(acquire_timeout, hold_timeout)
        return await self.inner.aacquire_lock(key, holder, wait, hold)

    def release_lock(self, key: str, holder: str) -> None:
        self.inner.release_lock(key, holder)

    def is_locked(self, key: str) -> bool:
        return self.inner.is_locked(key)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        return self.inner.is_lock_holder(key, holder)

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return self.inner.wait_for_lock(key, timeout)

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await self.inner.await_for_lock(key, timeout)


class _FileLocks(FileSystemLockManager):
    """Prefect's file lock manager, safe against two races of its lock files."""

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        try:
            return super()._get_lock_info(key, use_cache)
        except ValueError:
            # The holder created the file and has not written it yet (Prefect touches, then
            # writes): the lock is taken. Without this, a contender reading the empty file fails.
            return {"holder": "", "expiration": None, "path": self._lock_path_for_key(key)}

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        try:
            return super().is_locked(key, use_cache)
        except FileNotFoundError:
            # Two contenders found the same lapsed lock and the other removed it first.
            self._locks.pop(key, None)
            return False


class ExpiringFileSystemLockManager(ExpiringLocks):
    """File locks under ``lock_files_directory`` (`_FileLocks`), with a hold timeout on every
    lock a transaction takes."""

    def __init__(self, lock_files_directory: Path, hold_seconds: float = 900.0) -> None:
        super().__init__(_FileLocks(lock_files_directory), hold_seconds)


def redis_lock_manager(url: str) -> LockManager:
    """prefect-redis's RedisLockManager for ``redis://[user:password@]host:port/db``
    (``rediss://`` for TLS). prefect-redis is not a dependency of Riposte: install it where
    several machines share the locks."""
    try:
        from prefect_redis.locking import RedisLockManager
    except ImportError:
        raise RuntimeError(
            "RIPOSTE_LOCK_MANAGER names Redis but prefect-redis is not installed: "
            "pip install prefect-redis"
        ) from None
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    manager: LockManager = RedisLockManager(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
    )
    return manager


# One Redis lock manager per URL in a process: a pool of connections, not state (the locks are
# in Redis). File lock managers are cheap and made per call, as before.
_redis_managers: dict[tuple[str, float], LockManager] = {}
_redis_lock = threading.Lock()


def lock_manager() -> LockManager:
    """The lock manager of `Settings.lock_manager`: file locks under the stack's home by default,
    shared by every process on this machine; several machines need a shared one (Redis)."""
    settings = get_settings()
    spec = settings.lock_manager.strip()
    hold = settings.lock_hold_seconds
    if spec in ("", "file"):
        return ExpiringFileSystemLockManager(Path(settings.home).resolve() / "locks", hold)
    if spec.startswith(("redis://", "rediss://")):
        with _redis_lock:
            manager = _redis_managers.get((spec, hold))
            if manager is None:
                manager = ExpiringLocks(redis_lock_manager(spec), hold)
                _redis_managers[(spec, hold)] = manager
        return manager
    raise ValueError(
        f"RIPOSTE_LOCK_MANAGER must be `file` or a redis:// URL, not {spec.split('@')[-1]!r}"
    )


@contextmanager
def exclusive(
    key: str, wait_seconds: float = LOCK_WAIT_SECONDS, hold_seconds: float | None = None
) -> Iterator[None]:
    """Hold the lock named ``key`` (the same lock manager as the task transactions) for a
    read-then-write that two workers must not interleave, such as numbering a ticket's notes.
    The lock lapses after ``hold_seconds`` (default: the `lock_hold_seconds` setting) if its
    holder is killed."""
    manager = lock_manager()
    holder = uuid.uuid4().hex
    hold = get_settings().lock_hold_seconds if hold_seconds is None else hold_seconds
    if not manager.acquire_lock(key, holder, wait_seconds, hold):
        raise TimeoutError(f"lock {key} still held after {wait_seconds:.0f}s")
    try:
        yield
    finally:
        manager.release_lock(key, holder)


def cache_key(*parts: str) -> str:
    """A key that is a safe file name, readable, and unique (a digest of the exact parts)."""
    text = "|".join(parts)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts))[:100]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


KeyFn = Callable[[TaskRunContext, dict[str, Any]], str | None]


def keyed(key_fn: KeyFn, *, serializable: bool = False) -> CachePolicy:
    policy: CachePolicy = CacheKeyFnPolicy(cache_key_fn=key_fn)
    if serializable:
        policy = policy.configure(
            isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=lock_manager()
        )
    return policy
