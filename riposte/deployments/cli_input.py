"""What several `riposte` commands read: alert files, the policy in force and the blocks it
names, and past alerts from the Defender sources (with the Prefect server holding their block).

Shared by `normalize`, `policy explain`, `replay` (simulated and `--stage`) and `doctor`, so
that none of those commands imports another for its input. The heavier imports stay inside
the functions, as in the commands themselves.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from riposte.alerts.documents import read_documents
from riposte.alerts.errors import AlertParseError


def read_alerts(path: Path, source: str | None) -> list[Any]:
    """Every alert of the file (one JSON value, a list or envelope, or NDJSON), parsed; the
    first problem raises `AlertParseError`, located at its alert."""
    from riposte.alerts.sources import iter_alert_payloads, parse_alert

    alerts = []
    for document in read_documents(path):
        for index, payload in enumerate(iter_alert_payloads(document)):
            try:
                alerts.append(parse_alert(payload, source))
            except AlertParseError as exc:
                raise exc.located(f"alert [{index}]") from None
    return alerts


def load_policy_in_force(path: Path | None) -> Any:
    """The policy of ``path`` (default: the one in force); `PolicyError` when it does not load."""
    from riposte.alerts.policy import default_policy, load_policy
    from riposte.settings import get_settings

    path = path or get_settings().policy_file
    return load_policy(path) if path is not None else default_policy()


def _block_refs(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(where, block reference) for every channel the policy names, anywhere in it."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if key in ("channels", "oncall_channels", "timeout_channels") and isinstance(
                item, list | tuple
            ):
                for ref in item:
                    yield here, str(ref)
            elif key == "channel" and isinstance(item, str):
                yield here, item
            else:
                yield from _block_refs(item, here)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _block_refs(item, f"{where}[{index}]")


def policy_block_refs(policy: Any) -> list[tuple[str, str]]:
    """(where, block reference) for every channel the policy names."""
    dumped = policy.model_dump(mode="json", by_alias=True)
    for index, rule in enumerate(dumped.get("rules", [])):
        dumped["rules"][index] = {"name": rule.get("name"), **rule}
    return list(_block_refs(dumped))


def parse_since(text: str) -> datetime:
    """``--since``: a duration back from now (30m, 12h, 7d) or an ISO date-time (UTC if naive)."""
    from riposte.alerts.policy import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 12h, 7d) or an ISO date-time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class CannotRun(RuntimeError):
    """The command cannot do its job (no Prefect server to read blocks from, a source that
    does not answer): one line, exit 2."""


def prefect_for_blocks() -> None:
    """The Prefect server that holds the Defender block: ``PREFECT_API_URL``, else the local
    stack's when it runs; never a temporary one that would hold no block."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from riposte.deployments.stack import stack_env, status
    from riposte.settings import get_settings

    settings = get_settings()
    if not status(settings)["running"]:
        raise CannotRun(
            "the Defender block is read from Prefect: set PREFECT_API_URL, or start the local "
            "stack (make run)"
        )
    os.environ.update(stack_env(settings))


def read_sources(args: argparse.Namespace, since: datetime) -> tuple[list[Any], list[Any]]:
    """Alerts created since ``since`` from the configured Defender sources (read-only)."""
    prefect_for_blocks()
    try:
        return _read_each_source(args, since)
    except CannotRun:
        raise
    except Exception as exc:  # a block that is missing, a source that does not answer
        raise CannotRun(f"cannot read the alerts: {type(exc).__name__}: {exc}"[:500]) from None


def _read_each_source(args: argparse.Namespace, since: datetime) -> tuple[list[Any], list[Any]]:
    from riposte.blocks import BlockCache, DefenderCredentials
    from riposte.playbooks.replay import Skipped
    from riposte.settings import get_settings
    from riposte.tasks.poll import read_alerts_since

    defender = BlockCache().load(DefenderCredentials, args.defender_block)
    sources = args.sources.split(",") if args.sources else get_settings().poll_source_list
    alerts: list[Any] = []
    skipped: list[Any] = []
    for source in (s.strip() for s in sources if s.strip()):
        problems: list[str] = []

        def reading(count: int, source: str = source) -> None:
            if sys.stderr.isatty() and count % 50 == 0:
                print(f"\r{source}: {count} alert(s) read ...", end="", file=sys.stderr)

        found = read_alerts_since(
            defender, source, since, args.max_alerts - len(alerts), problems, reading
        )
        alerts.extend(found)
        skipped.extend(Skipped(where=source, problem=p) for p in problems)
        end = "\r" if sys.stderr.isatty() else ""
        print(f"{end}{source}: {len(found)} alert(s) since {since.isoformat()}", file=sys.stderr)
    return alerts, skipped
