"""One API client per block configuration per process, so calls share a connection pool."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr

T = TypeVar("T")

# A cache of open connection pools, not shared state: each process builds its own, and losing it
# costs only a new TLS handshake. Keyed by a digest of the whole configuration (secrets included)
# so that a rotated credential gets a fresh client instead of a stale one.
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _reveal(v) for k, v in value}
    return value


def config_digest(block: BaseModel) -> str:
    fields = {name: _reveal(getattr(block, name)) for name in type(block).model_fields}
    payload = json.dumps([type(block).__qualname__, fields], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def pooled(block: BaseModel, factory: Callable[[], T]) -> T:
    key = config_digest(block)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = factory()
            _clients[key] = client
        return client
