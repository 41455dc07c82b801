"""Serve the deployments from one long-lived process: `respond` (started by the intake and the
poll) and `poll` (on a schedule). Production uses `prefect.yaml` and workers instead."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from riposte.flows.poll import poll_alerts
from riposte.flows.respond import respond_to_alert
from riposte.settings import Settings, get_settings


def deployments(settings: Settings) -> list[RunnerDeployment]:
    respond = respond_to_alert.to_deployment(
        name="respond",
        tags=["riposte"],
        description="Answer one alert. Started by the intake and by poll_alerts; re-run with "
        "Retry or with the alert's id.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    poll = poll_alerts.to_deployment(
        name="poll",
        tags=["riposte"],
        interval=timedelta(seconds=settings.poll_interval_seconds),
        # Two polls at once would only repeat each other's work.
        concurrency_limit=1,
        paused=settings.poll_paused,
        description="Start a response for every alert updated since the watermark.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [cast(RunnerDeployment, respond), cast(RunnerDeployment, poll)]


def main() -> None:
    settings = get_settings()
    serve(*deployments(settings), limit=settings.runner_limit, print_starting_message=False)


if __name__ == "__main__":
    main()
