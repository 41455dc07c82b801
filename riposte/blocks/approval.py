"""Where the keys that sign approval links come from: the `RIPOSTE_APPROVAL_KEYS` setting, or
a Prefect Secret block (so that the flows, on any worker, and every intake replica share them).
"""

from __future__ import annotations

import secrets
from typing import Any, cast

from prefect.blocks.system import Secret

from riposte.alerts.approval import ApprovalKeys
from riposte.settings import Settings, get_settings


class ApprovalKeysMissing(RuntimeError):
    """No key to sign or verify approval links with."""


def _from_secret(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _missing(settings: Settings) -> ApprovalKeysMissing:
    return ApprovalKeysMissing(
        f"no approval key: set RIPOSTE_APPROVAL_KEYS or create the Prefect Secret block "
        f"{settings.approval_secret_block!r}"
    )


def load_approval_keys(settings: Settings | None = None) -> ApprovalKeys:
    settings = settings or get_settings()
    if settings.approval_keys.strip():
        return ApprovalKeys.from_text(settings.approval_keys)
    try:
        secret = cast(Secret[Any], Secret.load(settings.approval_secret_block))
    except ValueError:
        raise _missing(settings) from None
    return ApprovalKeys.from_text(_from_secret(secret.get()))


async def aload_approval_keys(settings: Settings | None = None) -> ApprovalKeys:
    """`load_approval_keys` for the intake's event loop."""
    settings = settings or get_settings()
    if settings.approval_keys.strip():
        return ApprovalKeys.from_text(settings.approval_keys)
    try:
        secret = cast(Secret[Any], await Secret.aload(settings.approval_secret_block))
    except ValueError:
        raise _missing(settings) from None
    return ApprovalKeys.from_text(_from_secret(secret.get()))


def ensure_approval_key(settings: Settings | None = None) -> bool:
    """Create the Secret block with a fresh random key if it does not exist; True if created.
    An existing key is never replaced (links already sent must keep working)."""
    settings = settings or get_settings()
    try:
        Secret.load(settings.approval_secret_block)
        return False
    except ValueError:
        pass
    Secret(value=secrets.token_urlsafe(48)).save(settings.approval_secret_block)
    return True
