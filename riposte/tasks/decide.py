"""The policy in force and the `decide` task: which playbook answers an alert, and how.

The policy file is read at every run (`current_policy`), so an edit applies to the next alert.
When an edit breaks it, the last good policy, kept in a Prefect block, goes on answering on every
worker, and every run logs why. `decide` evaluates the policy and gates each action through the
throttles, incident grouping and suppression windows, whose state lives in the ticketing system
and in Prefect (`riposte.tasks.ledgers`). Its result is persisted and keyed by the alert revision
and the policy's digest: a re-run takes the same decision instead of adding a second comment.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict

from riposte.alerts.matching import PlannedAction, evaluate
from riposte.alerts.model import Alert
from riposte.alerts.policy.store import LastGoodRecord, PolicySnapshot, PolicyStore
from riposte.alerts.response import Ticket, response_revision
from riposte.alerts.throttle import Outcome, ThrottleLedger, gate
from riposte.blocks import BlockCache, TicketingCredentials, load_block
from riposte.blocks.last_good_policy import LAST_GOOD_POLICY_BLOCK, LastGoodPolicy
from riposte.settings import Settings, get_settings
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call
from riposte.tasks.ledgers import (
    NoTickets,
    TicketLedger,
    TicketRecords,
    VariableSuppressions,
    block_identity,
    record_response_time,
)
from riposte.tasks.tickets import ticket_place, ticketing_block_name

# --- the policy in force ---------------------------------------------------------------------

_log = logging.getLogger("riposte.policy")


def load_last_good() -> LastGoodRecord | None:
    try:
        block = load_block(LastGoodPolicy, LAST_GOOD_POLICY_BLOCK)
    except ValueError:  # no such block yet: no policy was ever good
        return None
    return LastGoodRecord(
        text=block.text, origin=block.origin, sha256=block.sha256, saved_at=block.saved_at
    )


# A save that failed every attempt, tried again at the next `current_policy` call.
_unsaved: list[LastGoodRecord] = []
_unsaved_lock = threading.Lock()


def _save_now(record: LastGoodRecord) -> None:
    for attempt in range(3):
        try:
            stored = load_last_good()
            if stored is not None and stored["sha256"] == record["sha256"]:
                return  # another run or worker saved it already
            LastGoodPolicy(**record).save(LAST_GOOD_POLICY_BLOCK, overwrite=True)
            return
        except Exception as exc:
            _log.warning("Could not save the last good policy (attempt %d): %s", attempt + 1, exc)
            time.sleep(2.0**attempt)
    with _unsaved_lock:
        _unsaved[:] = [record]


# One saver per process, so that two batches that see a new policy at once save it once.
_saver = ThreadPoolExecutor(1, thread_name_prefix="last-good-policy")


def save_last_good(record: LastGoodRecord) -> None:
    """Save the last good policy in the background: a write to Prefect can wait many seconds
    while a burst keeps its database busy (measured: 35 s on SQLite), and no alert should wait
    for it."""
    _saver.submit(_save_now, record)


# One store per policy file and templates folder in a process: a cache of parsed policies, not
# state (the file and the block are the truth; a new process rebuilds it with one parse).
_stores: dict[tuple[Path | None, Path | None], PolicyStore] = {}
_stores_lock = threading.Lock()


def policy_store(settings: Settings | None = None) -> PolicyStore:
    settings = settings or get_settings()
    key = (settings.policy_file, settings.templates_dir)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = PolicyStore(
                settings.policy_file,
                templates_dir=settings.templates_dir,
                load_last_good=load_last_good,
                save_last_good=save_last_good,
            )
            _stores[key] = store
    return store


def current_policy(logger: logging.Logger | logging.LoggerAdapter[Any]) -> PolicySnapshot:
    """The policy to answer with now. A broken file is logged (file:line: field: problem) on
    every call, and the last good policy is returned in its place; with no good policy at all,
    `PolicyError` is raised and the run fails naming every problem."""
    snapshot = policy_store().current()
    with _unsaved_lock:
        retry = _unsaved.pop() if _unsaved else None
    if retry is not None and snapshot.error is None and retry["sha256"] == snapshot.sha256:
        save_last_good(retry)
    if snapshot.error is not None:
        logger.error(
            "The policy file is broken; answering with the %s until it is fixed:\n%s",
            snapshot.origin,
            snapshot.error,
        )
    if snapshot.save_error is not None:
        logger.warning("%s", snapshot.save_error)
    return snapshot


# --- the decision ------------------------------------------------------------------------------


class PolicyDecision(BaseModel):
    """What the policy decided for one alert revision: each action and how it is carried out."""

    model_config = ConfigDict(frozen=True)

    policy_origin: str
    policy_sha256: str
    policy_fallback: bool
    matched_rules: tuple[str, ...]
    actions: tuple[PlannedAction, ...]
    outcomes: tuple[Outcome, ...]
    tickets: dict[str, Ticket] = {}
    """The open tickets that COMMENT outcomes go to, by correlation key."""


# Decisions persisted before this module had its name were pickled as
# `riposte.tasks.policy.Verdict`: under that name they still load, so a re-run of such an alert
# gets its decision back Cached instead of deciding again (after its first response's writes).
sys.modules.setdefault("riposte.tasks.policy", sys.modules[__name__])
Verdict = PolicyDecision


def _decide_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    snapshot: PolicySnapshot = params["snapshot"]
    # v2: planned actions carry the playbook's parameters; a decision pickled by an older
    # release lacks them, so it is not reused.
    return cache_key(
        "decide-v2",
        alert.correlation_key,
        response_revision(alert),
        snapshot.sha256,
        params.get("ticketing_override") or "",
    )


@external_call(_decide_key, name="decide {alert.source}-{alert.id}")
def decide(
    alert: Alert,
    snapshot: PolicySnapshot,
    ticketing_override: str | None = None,
    blocks: BlockCache | None = None,
) -> PolicyDecision:
    """Evaluate the policy for ``alert`` and gate each action through throttles, incident
    grouping and suppression windows, at the alert's creation time (so that a retry, or another
    worker, lands in the same windows).

    Example:
        ```python
        verdict = decide(alert, current_policy(logger))
        ```
    """
    blocks = blocks or BlockCache()
    decision = evaluate(snapshot.policy, alert)
    suppressions = VariableSuppressions()
    outcomes: list[Outcome] = []
    tickets: dict[str, Ticket] = {}
    for action in decision.actions:
        ledger: ThrottleLedger = NoTickets()
        needs_ledger = action.throttle is not None or action.group_by_incident
        block = ticketing_block_name(action.ticket, ticketing_override)
        if block is not None and needs_ledger:
            ticketing = blocks.load(TicketingCredentials, block)
            project = ticket_place(action.ticket, ticketing)["project"]
            client = ticketing.get_client()
            lagging = client.search_lags
            records = TicketRecords(block_identity(ticketing)) if lagging else None
            ledger = TicketLedger(client, project, records)
        outcome = gate(
            action, alert, at=alert.created_at, tickets=ledger, suppressions=suppressions
        )
        if outcome.ticket is not None and isinstance(ledger, TicketLedger):
            found = ledger.ticket(outcome.ticket.correlation_key)
            if found is not None:
                tickets[outcome.ticket.correlation_key] = found
        outcomes.append(outcome)
    return PolicyDecision(
        policy_origin=snapshot.origin,
        policy_sha256=snapshot.sha256,
        policy_fallback=snapshot.is_fallback,
        matched_rules=decision.matched_rules,
        actions=decision.actions,
        outcomes=tuple(outcomes),
        tickets=tickets,
    )


def _record_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    return cache_key(
        "suppress", alert.correlation_key, response_revision(alert), params["suppress_key"]
    )


@external_call(_record_key, name="suppress-window {alert.source}-{alert.id}")
def record_response(alert: Alert, suppress_key: str, at: datetime) -> datetime:
    """Start (or extend) the suppression window of ``suppress_key`` at ``at``, once the
    response was made; returns the time the window now starts from.

    Example:
        ```python
        record_response(alert, outcome.suppress_key, outcome.at)
        ```
    """
    return record_response_time(suppress_key, at)
