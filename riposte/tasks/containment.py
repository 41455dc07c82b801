"""Containment: carry out one approved action (isolate or release a device, block an indicator,
disable a user or revoke their sessions), exactly once per alert revision and action.

Once at two levels: the task's result is keyed by alert, revision and the action's parameter
hash (a Retry or a re-run gets it back as Cached), and the external system is asked before
acting, so that a run killed between its request and its commit does not act twice: a machine
action carries the alert's correlation marker in its comment and is looked up by it, indicators
are upserts, and disabling an account that is disabled changes nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from riposte.alerts.containment import (
    DEFAULT_INDICATOR_ACTION,
    ActionKind,
    ContainmentAction,
    correlation_marker,
    external_comment,
)
from riposte.alerts.model import Alert
from riposte.alerts.response import response_revision
from riposte.blocks.defender import DefenderCredentials
from riposte.blocks.defender_endpoint import DefenderEndpointClient
from riposte.blocks.errors import (
    ServiceAuthError,
    ServiceNotFoundError,
    ServiceRejectedError,
)
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call, retry_unless_permanent

POLL_INTERVAL_SECONDS = 5.0
DEADLINE_SECONDS = 600.0

# MDE machine action types of the two device actions, and the type that undoes each.
_MACHINE_ACTION = {ActionKind.ISOLATE_DEVICE: "Isolate", ActionKind.RELEASE_DEVICE: "Unisolate"}
_OPPOSITE = {"Isolate": "Unisolate", "Unisolate": "Isolate"}
_ACTIVE = ("Pending", "InProgress")
_FINAL = ("Succeeded", "Failed", "TimeOut", "Cancelled")
_PERMANENT = (ServiceAuthError, ServiceNotFoundError, ServiceRejectedError)


class ContainmentOutcome(BaseModel):
    """What one containment action did: on what, with which result, and when."""

    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    target: str
    label: str
    status: Literal["succeeded", "failed"]
    detail: str
    machine_action_id: str | None = None
    indicator_id: str | None = None
    started: datetime
    finished: datetime


class ContainmentFailed(RuntimeError):
    """An action did not take effect; the message says which action, on what, and why (never a
    URL or a secret). ``outcome`` is the failed `ContainmentOutcome`, for the run's record."""

    def __init__(self, message: str, outcome: ContainmentOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles a failed task's exception: keep the outcome through it.
        return (type(self), (str(self), self.outcome))


def _action_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    action: ContainmentAction = params["action"]
    return cache_key(
        "contain", alert.correlation_key, response_revision(alert), action.param_hash()
    )


def _retry_unless_settled(task: Any, task_run: Any, state: Any) -> bool:
    """Retry an outage, never an action that ended (failed or timed out at the vendor): doing it
    again is for a person to decide, with a Retry of the run."""
    try:
        state.result()
    except ContainmentFailed:
        return False
    except Exception:
        return retry_unless_permanent(task, task_run, state)
    return False


@external_call(_action_key, name="contain {action.kind} {alert.source}-{alert.id}")
def execute_action(
    defender: DefenderCredentials,
    alert: Alert,
    action: ContainmentAction,
    poll_interval_seconds: float = POLL_INTERVAL_SECONDS,
    deadline_seconds: float = DEADLINE_SECONDS,
) -> ContainmentOutcome:
    """Carry out one approved containment action for ``alert``, once; return its outcome, or
    raise `ContainmentFailed` saying which action failed, on what, and why.

    Isolation and release wait for the machine action to end, polling every
    ``poll_interval_seconds`` for at most ``deadline_seconds`` (a re-run after the deadline
    waits on the same action instead of starting another). Never call it from another task.

    Example:
        ```python
        for action in plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment="Approved"):
            outcome = execute_action(defender, alert, action)
        ```
    """
    run = _Run(alert, action)
    try:
        if action.kind in _MACHINE_ACTION:
            return run.machine_action(
                defender.endpoint_client(), poll_interval_seconds, deadline_seconds
            )
        if action.kind in (ActionKind.BLOCK_IP, ActionKind.BLOCK_URL, ActionKind.BLOCK_FILE):
            return run.indicator(defender.endpoint_client())
        if action.kind is ActionKind.DISABLE_USER:
            return run.disable_user(defender)
        return run.revoke_sessions(defender)
    except _PERMANENT as exc:
        # Refused by the system (unknown machine or user, invalid value, missing permission):
        # retrying will not help, and the approver needs the reason.
        raise run.failed(f"{exc.system} refused it: {exc.message}") from None


# A failed or timed-out action is not retried by the task (see `_retry_unless_settled`).
execute_action = execute_action.with_options(retry_condition_fn=_retry_unless_settled)


class _Run:
    """One execution of one action: the clock, the log, and the outcome it builds."""

    def __init__(self, alert: Alert, action: ContainmentAction) -> None:
        self.alert = alert
        self.action = action
        self.started = datetime.now(UTC)
        self.log = _logger()

    def outcome(self, detail: str, **ids: str | None) -> ContainmentOutcome:
        return ContainmentOutcome(
            kind=self.action.kind,
            target=self.action.target,
            label=self.action.label,
            status="succeeded",
            detail=detail,
            started=self.started,
            finished=datetime.now(UTC),
            **ids,
        )

    def failed(self, why: str, **ids: str | None) -> ContainmentFailed:
        outcome = self.outcome(why, **ids).model_copy(update={"status": "failed"})
        message = f"containment action failed: {self.action.describe()}: {why}"
        self.log.error("%s", message)
        return ContainmentFailed(message, outcome)

    def settle(self, ok: bool, done: str, why: str, **ids: str | None) -> ContainmentOutcome:
        """The outcome ``done`` if ``ok``, else raise the failure ``why``; either carries the
        ids of what the system made (a machine action, an indicator)."""
        if not ok:
            raise self.failed(why, **ids)
        return self.outcome(done, **ids)

    # --- isolate, release -----------------------------------------------------------------

    def machine_action(
        self, mde: DefenderEndpointClient, interval: float, deadline: float
    ) -> ContainmentOutcome:
        machine_id = self.action.target
        action_type = _MACHINE_ACTION[self.action.kind]
        found = self._ours(mde.machine_actions(machine_id), action_type)
        if found is not None:
            self.log.info(
                "%s: machine action %s was already requested for this alert (%s)",
                self.action.describe(),
                found.get("id"),
                found.get("status"),
            )
            origin = "requested earlier for this alert"
        else:
            found, origin = self._request(mde, action_type)
        action_id = str(found.get("id"))
        final = self._wait(mde, found, interval, deadline)
        status = final.get("status")
        return self.settle(
            status == "Succeeded",
            f"machine action {action_id} ({action_type}, {origin}) Succeeded",
            f"Defender for Endpoint machine action {action_id} ended {status}",
            machine_action_id=action_id,
        )

    def _ours(self, actions: list[dict[str, Any]], action_type: str) -> dict[str, Any] | None:
        """This alert's request of ``action_type`` that still stands: not failed, and not undone
        by a later request of the opposite type (``actions`` are newest first)."""
        marker = correlation_marker(self.alert)
        for item in actions:
            if item.get("status") not in (*_ACTIVE, "Succeeded"):
                continue
            if item.get("type") == _OPPOSITE[action_type]:
                return None
            if item.get("type") == action_type and marker in str(item.get("requestorComment")):
                return item
        return None

    def _request(self, mde: DefenderEndpointClient, action_type: str) -> tuple[dict[str, Any], str]:
        comment = external_comment(self.alert, self.action)
        machine_id = self.action.target
        try:
            if action_type == "Isolate":
                isolation_type = self.action.parameters.get("isolation_type", "Full")
                created = mde.isolate(machine_id, comment, isolation_type)
            else:
                created = mde.release(machine_id, comment)
        except ServiceRejectedError as exc:
            if "ActiveRequestAlreadyExists" not in exc.message:
                raise
            # Someone else's request of the same kind is under way: its result is ours too.
            running = [
                a
                for a in mde.machine_actions(machine_id, action_type=action_type)
                if a.get("status") in _ACTIVE
            ]
            if not running:
                raise
            self.log.info(
                "%s: waiting on machine action %s, already under way",
                self.action.describe(),
                running[0].get("id"),
            )
            return running[0], "already under way, requested by someone else"
        self.log.info("%s: requested, machine action %s", self.action.describe(), created.get("id"))
        return created, "requested"

    def _wait(
        self, mde: DefenderEndpointClient, action: dict[str, Any], interval: float, deadline: float
    ) -> dict[str, Any]:
        action_id = str(action.get("id"))
        give_up = time.monotonic() + deadline
        while action.get("status") not in _FINAL:
            if time.monotonic() >= give_up:
                raise self.failed(
                    f"Defender for Endpoint machine action {action_id} was still"
                    f" {action.get('status')} after {deadline:g}s; a re-run waits on the same"
                    " action",
                    machine_action_id=action_id,
                )
            time.sleep(max(0.0, min(interval, give_up - time.monotonic())))
            action = mde.machine_action(action_id)
        return action

    # --- indicators -----------------------------------------------------------------------

    def indicator(self, mde: DefenderEndpointClient) -> ContainmentOutcome:
        params = self.action.parameters
        indicator_type = params.get("indicator_type")
        if not indicator_type:
            raise self.failed("the action names no indicator_type")
        wanted = params.get("action", DEFAULT_INDICATOR_ACTION)
        indicator = mde.submit_indicator(
            self.action.target,
            indicator_type,
            wanted,
            params.get("title") or f"Riposte: alert {self.alert.id}",
            external_comment(self.alert, self.action),
            severity=params.get("severity"),
            expiration=params.get("expiration"),
        )
        indicator_id = str(indicator.get("id")) if indicator.get("id") is not None else None
        return self.settle(
            indicator.get("action") == wanted,
            f"indicator {indicator_id} ({indicator_type}, {wanted}) in place",
            f"Defender for Endpoint kept the indicator's action {indicator.get('action')}",
            indicator_id=indicator_id,
        )

    # --- users ----------------------------------------------------------------------------

    def disable_user(self, defender: DefenderCredentials) -> ContainmentOutcome:
        users = defender.users_client()
        changed = users.disable_user(self.action.target)
        user = users.get_user(self.action.target)
        if user.account_enabled is not False:
            raise self.failed("Entra ID still shows the account enabled")
        detail = "account disabled" if changed else "account was already disabled"
        return self.outcome(f"{detail} (user {user.id})")

    def revoke_sessions(self, defender: DefenderCredentials) -> ContainmentOutcome:
        if not defender.users_client().revoke_sessions(self.action.target):
            raise self.failed("Microsoft Graph did not confirm the revocation")
        return self.outcome("sign-in sessions revoked: every app asks the user to sign in again")


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # called through `.fn`, outside a run
        return logging.getLogger(__name__)
