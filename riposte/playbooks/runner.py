"""Carry out one policy action with its playbook: the seam between the flows and the playbooks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert
from riposte.alerts.response import Ticket
from riposte.alerts.throttle import Disposition, Outcome
from riposte.playbooks.context import ActionResult, Context, ResponseContext
from riposte.playbooks.registry import Registry, registry
from riposte.tasks.decide import record_response

# Dispositions for which the playbook runs; the others (suppressed, ignored) are only recorded.
RESPONDED = (
    Disposition.TICKET,
    Disposition.COMMENT,
    Disposition.DIGEST,
    Disposition.CLOSE,
    Disposition.RUN,
)

_reported: set[str] = set()
_reported_lock = threading.Lock()


def report_problems(
    logger: logging.Logger | logging.LoggerAdapter[Any], found: Registry | None = None
) -> None:
    """Log, once per process, every playbook source that could not be loaded."""
    for problem in (found or registry()).problems:
        text = str(problem)
        with _reported_lock:
            if text in _reported:
                continue
            _reported.add(text)
        logger.error("Playbook not loaded: %s", text)


def run_action(ctx: Context) -> ActionResult:
    """Run the playbook of ``ctx.action`` with its parameters; the result of its steps."""
    found = registry().get(ctx.action.playbook)
    params = found.params_model.model_validate(ctx.action.params)
    found(ctx.alert, params, ctx)
    return ctx.result


def carry_out(
    response: ResponseContext,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    open_tickets: dict[str, Ticket] | None = None,
    started: list[ActionResult] | None = None,
    finished: Callable[[ActionResult], object] | None = None,
) -> ActionResult:
    """Do what ``outcome`` says with the playbook's steps; a suppressed or ignored alert is
    only recorded. A response made starts the rule's suppression window.

    ``started`` gets the action's result before the playbook runs, and each step adds to it as
    it is done: when the playbook raises, it still says what was done (for the report of a
    Failed response). ``finished`` is called with the result once the playbook has returned,
    before the suppression window is recorded: what fails after it did not stop the
    playbook."""
    if outcome.disposition not in RESPONDED:
        recorded = ActionResult(
            rule=outcome.rule,
            playbook=str(outcome.playbook),
            disposition=str(outcome.disposition),
            reason=outcome.reason,
        )
        if started is not None:
            started.append(recorded)
        if finished is not None:
            finished(recorded)
        return recorded
    ctx = Context(response, alert, action, outcome, open_tickets)
    if started is not None:
        started.append(ctx.result)
    result = run_action(ctx)
    if finished is not None:
        finished(result)
    if outcome.suppress_key:
        record_response(alert, outcome.suppress_key, outcome.at)
    return result
