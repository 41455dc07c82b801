"""Where the keys that sign approval links come from: the `RIPOSTE_APPROVAL_KEYS` setting, or
the file `RIPOSTE_APPROVAL_KEY_FILE` names, on the intake and on every worker.

Never from Prefect: the open-source Prefect API answers anyone who can reach it (a Secret block
is one request away, even from a page on another origin), and with the key anyone could sign a
link. Workers sign the links they send and the intake verifies them, so both hold the keys, in
their own environment or file: not in a work pool's job variables, which the API shows too.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from riposte.alerts.approval import ApprovalKeys
from riposte.settings import Settings, get_settings


class ApprovalKeysMissing(RuntimeError):
    """No key to sign or verify approval links with."""


def _missing() -> ApprovalKeysMissing:
    return ApprovalKeysMissing(
        "no approval key: set RIPOSTE_APPROVAL_KEYS, or RIPOSTE_APPROVAL_KEY_FILE to a file "
        "holding the keys, on the intake and on every worker"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ApprovalKeysMissing(f"the approval key file {path} does not exist") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ApprovalKeysMissing(
            f"the approval key file {path} cannot be read: {reason}"
        ) from None


def load_approval_keys(settings: Settings | None = None) -> ApprovalKeys:
    settings = settings or get_settings()
    if settings.approval_keys.strip():
        return ApprovalKeys.from_text(settings.approval_keys)
    if settings.approval_key_file is None:
        raise _missing()
    text = _read(settings.approval_key_file)
    if not text:
        raise ApprovalKeysMissing(f"the approval key file {settings.approval_key_file} is empty")
    return ApprovalKeys.from_text(text)


async def aload_approval_keys(settings: Settings | None = None) -> ApprovalKeys:
    """`load_approval_keys` for the intake's event loop (a small local file: no thread)."""
    return load_approval_keys(settings)


def ensure_approval_key(settings: Settings | None = None) -> bool:
    """Create the key file (0600, a fresh random key) when the settings name one that does not
    exist; True if created. An existing key is never replaced: links already sent must keep
    working."""
    settings = settings or get_settings()
    path = settings.approval_key_file
    if settings.approval_keys.strip() or path is None or path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False  # another process made it meanwhile
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return True
