"""The deployments (respond, respond-batch, poll, reconcile, digest, sync, contain, approval-sweep,
replay), run in-process by the responder.

Production may run the same deployments on a `process` work pool instead (`prefect.yaml`).
Responses carry the tag `response`, so the UI's runs list filtered on it (`RESPONSES_VIEW`) shows
nothing else; the scheduled runs that keep things going carry `housekeeping`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

from prefect import Flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from riposte.deployments.responder import Responder, serve_forever
from riposte.flows.contain import contain_alert, expire_approvals
from riposte.flows.digest import post_digests
from riposte.flows.poll import poll_alerts
from riposte.flows.reconcile import reconcile_alerts
from riposte.flows.replay import replay_alerts
from riposte.flows.respond import respond_batch, respond_to_alert
from riposte.flows.sync import sync_tickets
from riposte.settings import HOUSEKEEPING_TAG, RESPONSE_TAG, Settings, get_settings


def _deployment(
    flow: Flow[Any, Any], name: str, tags: list[str], description: str, **options: Any
) -> RunnerDeployment:
    """One of Riposte's deployments: tagged `riposte`, its entrypoint the flow's module path (as
    in prefect.yaml)."""
    deployment = flow.to_deployment(
        name=name,
        tags=["riposte", *tags],
        description=description,
        entrypoint_type=EntrypointType.MODULE_PATH,
        **options,
    )
    return cast(RunnerDeployment, deployment)


def _housekeeping(
    flow: Flow[Any, Any],
    name: str,
    seconds: int,
    description: str,
    paused: bool | None = None,
    tags: tuple[str, ...] = (),
) -> RunnerDeployment:
    """A scheduled run that keeps things going: every ``seconds``, one at a time."""
    return _deployment(
        flow,
        name,
        [*tags, HOUSEKEEPING_TAG],
        description,
        interval=timedelta(seconds=seconds),
        concurrency_limit=1,
        paused=paused,
    )


def deployments(settings: Settings) -> list[tuple[RunnerDeployment, Flow[Any, Any]]]:
    respond = _deployment(
        respond_to_alert,
        "respond",
        [RESPONSE_TAG],
        "Answer one alert. Started by the intake and by poll_alerts; a Custom run with an "
        "alert's id and source answers that alert again, a completed one too (nothing already "
        "done is done twice).",
    )
    batch = _deployment(
        respond_batch,
        "respond-batch",
        [RESPONSE_TAG],
        "Answer a burst of alerts, one task run per alert.",
    )
    # Two polls at once would only repeat each other's work.
    poll = _housekeeping(
        poll_alerts,
        "poll",
        settings.poll_interval_seconds,
        "Start a response for every alert updated since the watermark.",
        paused=settings.poll_paused,
    )
    reconcile = _housekeeping(
        reconcile_alerts,
        "reconcile",
        settings.reconcile_interval_seconds,
        "Start a response for recent alerts that no run has handled.",
        paused=settings.poll_paused,
    )
    # A second run at the same time would find every post Cached: it only costs calls.
    digest = _housekeeping(
        post_digests,
        "digest",
        settings.digest_interval_seconds,
        "Post one summary message per channel for every digest period that closed.",
        paused=settings.digest_paused,
    )
    # Two at once would be safe (each ticket under a lock) but only repeat each other.
    sync = _housekeeping(
        sync_tickets,
        "sync",
        settings.sync_interval_seconds,
        "Bring alerts and their tickets to one state: a ticket resolved or reopened resolves or "
        "reopens its alerts; a person's change of an alert in Defender becomes one note on its "
        "ticket.",
        paused=settings.poll_paused,
    )
    contain = _deployment(
        contain_alert,
        "contain",
        ["containment"],
        "Ask the policy's approvers, wait for their decision (suspended: no process waits), "
        "then contain. Started by the escalate playbook; resume it from the approval links or "
        "the Prefect UI form.",
    )
    # A safety net: each approval books a run of its own at its deadline.
    sweep = _housekeeping(
        expire_approvals,
        "approval-sweep",
        settings.approval_sweep_seconds,
        "Apply the policy's default outcome to approvals nobody answered in time. Runs at each "
        "approval's deadline, and on this schedule in case a booking was lost.",
        tags=("containment",),
    )
    replay = _deployment(
        replay_alerts,
        "replay",
        ["replay"],
        "Replay past alerts (default: the last 7 days) through the policy in force and a "
        "candidate policy, simulated: nothing is written; the report is an artifact. Not "
        "scheduled: add a schedule for a weekly review.",
    )
    from riposte.deployments.playbook_deployments import playbook_deployments

    return [
        *playbook_deployments(),
        (contain, contain_alert),
        (sweep, expire_approvals),
        (digest, post_digests),
        (reconcile, reconcile_alerts),
        (respond, respond_to_alert),
        (batch, respond_batch),
        (poll, poll_alerts),
        (replay, replay_alerts),
        (sync, sync_tickets),
    ]


def main() -> None:
    # Prefect configures logging on import, so basicConfig would be a no-op: attach our own.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    riposte_logger = logging.getLogger("riposte")
    riposte_logger.addHandler(handler)
    riposte_logger.setLevel(logging.INFO)
    settings = get_settings()
    from riposte.playbooks.runner import report_problems

    report_problems(riposte_logger)
    serve_forever(
        Responder(
            deployments(settings),
            limit=settings.runner_limit,
            poll_seconds=settings.responder_poll_seconds,
        )
    )


if __name__ == "__main__":
    main()
