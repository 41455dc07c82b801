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


def deployments(settings: Settings) -> list[tuple[RunnerDeployment, Flow[Any, Any]]]:
    respond = respond_to_alert.to_deployment(
        name="respond",
        tags=["riposte", RESPONSE_TAG],
        description="Answer one alert. Started by the intake and by poll_alerts; a Custom run "
        "with an alert's id and source answers that alert again, a completed one too (nothing "
        "already done is done twice).",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    batch = respond_batch.to_deployment(
        name="respond-batch",
        tags=["riposte", RESPONSE_TAG],
        description="Answer a burst of alerts, one task run per alert.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    poll = poll_alerts.to_deployment(
        name="poll",
        tags=["riposte", HOUSEKEEPING_TAG],
        interval=timedelta(seconds=settings.poll_interval_seconds),
        # Two polls at once would only repeat each other's work.
        concurrency_limit=1,
        paused=settings.poll_paused,
        description="Start a response for every alert updated since the watermark.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    reconcile = reconcile_alerts.to_deployment(
        name="reconcile",
        tags=["riposte", HOUSEKEEPING_TAG],
        interval=timedelta(seconds=settings.reconcile_interval_seconds),
        concurrency_limit=1,
        paused=settings.poll_paused,
        description="Start a response for recent alerts that no run has handled.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    digest = post_digests.to_deployment(
        name="digest",
        tags=["riposte", HOUSEKEEPING_TAG],
        interval=timedelta(seconds=settings.digest_interval_seconds),
        # A second run at the same time would find every post Cached: it only costs calls.
        concurrency_limit=1,
        paused=settings.digest_paused,
        description="Post one summary message per channel for every digest period that closed.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    sync = sync_tickets.to_deployment(
        name="sync",
        tags=["riposte", HOUSEKEEPING_TAG],
        interval=timedelta(seconds=settings.sync_interval_seconds),
        # Two at once would be safe (each ticket under a lock) but only repeat each other.
        concurrency_limit=1,
        paused=settings.poll_paused,
        description="Bring alerts and their tickets to one state: a ticket resolved or "
        "reopened resolves or reopens its alerts; a person's change of an alert in Defender "
        "becomes one note on its ticket.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    contain = contain_alert.to_deployment(
        name="contain",
        tags=["riposte", "containment"],
        description="Ask the policy's approvers, wait for their decision (suspended: no process "
        "waits), then contain. Started by the escalate playbook; resume it from the approval "
        "links or the Prefect UI form.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    sweep = expire_approvals.to_deployment(
        name="approval-sweep",
        tags=["riposte", "containment", HOUSEKEEPING_TAG],
        # A safety net: each approval books a run of its own at its deadline.
        interval=timedelta(seconds=settings.approval_sweep_seconds),
        concurrency_limit=1,
        description="Apply the policy's default outcome to approvals nobody answered in time. "
        "Runs at each approval's deadline, and on this schedule in case a booking was lost.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    replay = replay_alerts.to_deployment(
        name="replay",
        tags=["riposte", "replay"],
        description="Replay past alerts (default: the last 7 days) through the policy in force "
        "and a candidate policy, simulated: nothing is written; the report is an artifact. "
        "Not scheduled: add a schedule for a weekly review.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    from riposte.deployments.playbook_deployments import playbook_deployments

    return [
        *playbook_deployments(),
        (cast(RunnerDeployment, contain), contain_alert),
        (cast(RunnerDeployment, sweep), expire_approvals),
        (cast(RunnerDeployment, digest), post_digests),
        (cast(RunnerDeployment, reconcile), reconcile_alerts),
        (cast(RunnerDeployment, respond), respond_to_alert),
        (cast(RunnerDeployment, batch), respond_batch),
        (cast(RunnerDeployment, poll), poll_alerts),
        (cast(RunnerDeployment, replay), replay_alerts),
        (cast(RunnerDeployment, sync), sync_tickets),
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
