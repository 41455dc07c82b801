"""The scale test's Redis: Debian's `redis-server`, installed with apt-get when absent, run as a
throwaway server of its own (own port, own folder, nothing saved), and prefect-redis, through
which the Prefect servers use it for messaging, event ordering, leases and Docket, and the
workers for their locks.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from scale.processes import (
    Proc,
    Processes,
    ScaleTestError,
    apt_install,
    pip_install,
    wait_until,
)

# Redis databases: Prefect's messaging, cache, ordering and leases; Docket; Riposte's locks.
MESSAGING_DB, DOCKET_DB, LOCKS_DB = 0, 1, 2


def ensure_redis_installed() -> Path:
    """Debian's redis-server, installed from the archive first when absent."""
    found = shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}:/usr/bin")
    if found:
        return Path(found)
    apt_install("redis-server", 600)
    if not Path("/usr/bin/redis-server").exists():
        raise ScaleTestError("apt-get installed redis-server but there is no /usr/bin/redis-server")
    return Path("/usr/bin/redis-server")


def ensure_prefect_redis() -> str:
    """prefect-redis, pinned to the Prefect already installed (pip must not upgrade Prefect)."""
    if importlib.util.find_spec("prefect_redis") is not None:
        return "prefect-redis: present"
    from importlib.metadata import version

    pip_install("prefect-redis", f"prefect=={version('prefect')}")
    return "prefect-redis: installed"


def start_redis(procs: Processes, binary: Path, port: int, folder: Path) -> Proc:
    """redis-server in the foreground under the test's supervisor: loopback only, no
    persistence (a test server: what is measured is Riposte on it, not Redis's durability)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = procs.spawn(
        "redis",
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        + ["--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
        dict(os.environ),
    )

    def ready() -> bool:
        if not proc.alive():
            raise ScaleTestError(f"redis-server exited early; see {proc.log_path}")
        return ping(port)

    wait_until(f"redis-server on port {port}", ready, 30, 0.2)
    return proc


def ping(port: int) -> bool:
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def prefect_redis_environment(port: int) -> dict[str, str]:
    """What every Prefect API server and the services process set to share one Redis."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": str(port),
        "PREFECT_REDIS_MESSAGING_DB": str(MESSAGING_DB),
        "PREFECT_SERVER_DOCKET_URL": f"redis://127.0.0.1:{port}/{DOCKET_DB}",
    }


def redis_use(port: int) -> tuple[int, dict[int, int]]:
    """Commands Redis has processed, and keys by database: proof that the servers and the
    workers really use it."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        commands = int(client.info("stats")["total_commands_processed"])
        keyspace = client.info("keyspace")
    finally:
        client.close()
    keys = {int(name[2:]): int(value["keys"]) for name, value in keyspace.items()}
    return commands, keys


def locks_held(port: int) -> int:
    """How many of Riposte's locks Redis holds now."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, db=LOCKS_DB, socket_timeout=5)
    try:
        return int(client.dbsize())
    except (redis.RedisError, OSError):
        return 0
    finally:
        client.close()
