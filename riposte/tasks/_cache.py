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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy, CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.filesystem import FileSystemLockManager
from prefect.locking.protocol import LockManager
from prefect.transactions import IsolationLevel

from riposte.settings import get_settings

# A holder killed mid-response (SIGKILL, a lost machine) must not block the alert forever: the
# lock lapses after this long, well beyond any response's duration.
LOCK_HOLD_SECONDS = 900.0
LOCK_WAIT_SECONDS = 900.0


class ExpiringFileSystemLockManager(FileSystemLockManager):
    """Prefect's file lock manager with a hold timeout on every lock a transaction takes."""

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        try:
            return super()._get_lock_info(key, use_cache)
        except ValueError:
            # The holder created the file and has not written it yet (Prefect touches, then
            # writes): the lock is taken. Without this, a contender reading the empty file fails.
            return {"holder": "", "expiration": None, "path": self._lock_path_for_key(key)}

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        return super().acquire_lock(
            key,
            holder,
            LOCK_WAIT_SECONDS if acquire_timeout is None else acquire_timeout,
            LOCK_HOLD_SECONDS if hold_timeout is None else hold_timeout,
        )

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        return await super().aacquire_lock(
            key,
            holder,
            LOCK_WAIT_SECONDS if acquire_timeout is None else acquire_timeout,
            LOCK_HOLD_SECONDS if hold_timeout is None else hold_timeout,
        )


def lock_manager() -> LockManager:
    """File locks under the stack's home: shared by every process on this machine. Several
    machines need a shared lock manager (prefect-redis's RedisLockManager)."""
    return ExpiringFileSystemLockManager(Path(get_settings().home).resolve() / "locks")


@contextmanager
def exclusive(key: str, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the lock named ``key`` (the same lock manager as the task transactions) for a
    read-then-write that two workers must not interleave, such as numbering a ticket's notes."""
    manager = lock_manager()
    holder = uuid.uuid4().hex
    if not manager.acquire_lock(key, holder, wait_seconds, LOCK_HOLD_SECONDS):
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
