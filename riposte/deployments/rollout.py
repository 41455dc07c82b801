"""`riposte deploy`: the rollout to a `process` work pool, beyond one machine.

`prefect.yaml` declares the deployments; `prefect deploy --all` creates or updates them. What a
`prefect.yaml` cannot declare is done here first, each step safe to run again: the work pool,
the per-API rate limits (`riposte.limits`), and the two automations that give back the runs of
a lost worker:

- **lost runs crash**: a run of Riposte's whose process went silent (no heartbeat for
  `lost_run_seconds`, or Pending that long without starting) is marked Crashed. A killed worker
  (or machine) takes its flow-run processes with it and nobody reports on them; Prefect's
  heartbeats are what reveal it (the "zombie flow runs" automation of Prefect's docs).
- **crashed responses run again**: a Crashed `respond_to_alert` or `respond_batch` run is put
  back to Scheduled (as the UI's Retry does), at most `CRASH_RERUNS` times; any worker takes it,
  its completed steps come back Cached and every write is find-or-create, so nothing is done
  twice. A run that keeps crashing stays Crashed for a person to look at.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from riposte.settings import Settings, get_settings

LOST_RUNS = "riposte: lost runs crash"
RERUN_CRASHED = "riposte: crashed responses run again"
# The flows whose re-run is known to do nothing twice (persisted steps, find-or-create).
RERUN_FLOWS = ("respond_to_alert", "respond_batch")
CRASH_RERUNS = 2
# The names of the states of a run that has a process (or is getting one), and the heartbeat.
LIVE_STATE_NAMES = (
    "Pending",
    "Submitting",
    "InfrastructurePending",
    "Running",
    "Retrying",
    "heartbeat",
)
# The work pool prefect.yaml names.
WORK_POOL = "riposte"


def ensure_work_pool(client: SyncPrefectClient, name: str) -> str:
    """Create the `process` work pool ``name`` unless it exists; say which."""
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        from prefect.workers.process import ProcessWorker

        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                description="Riposte's deployments (prefect.yaml); workers: "
                f"prefect worker start --pool {name} --type process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
        return f"work pool {name}: created (process)"
    return f"work pool {name}: exists ({pool.type})"


def ensure_rate_limits() -> str:
    """The per-API rate limits, when this version of Riposte has them (`riposte.limits`)."""
    try:
        module = importlib.import_module("riposte.limits")
    except ModuleNotFoundError:
        return "rate limits: none in this version"
    ensure: Callable[[], dict[str, str]] | None = getattr(module, "ensure_rate_limits", None)
    if ensure is None:
        return "rate limits: none in this version"
    changes = ensure()
    summary = ", ".join(f"{name} {change}" for name, change in sorted(changes.items()))
    return f"rate limits: {summary or 'none'}"


def recovery_automations(settings: Settings) -> list[AutomationCore]:
    """The automations that find the runs of a lost worker and run the responses again."""
    riposte_runs = ResourceSpecification(
        {"prefect.resource.id": "prefect.tag.riposte", "prefect.resource.role": "tag"}
    )
    lost = AutomationCore(
        name=LOST_RUNS,
        description=(
            "A Riposte run silent for "
            f"{settings.lost_run_seconds}s (no heartbeat since it started or since its last "
            "heartbeat, or Pending without starting): its process is gone. Mark it Crashed."
        ),
        tags=["riposte"],
        trigger=EventTrigger(
            # Any of these (re)starts the wait; any flow-run event (a heartbeat, a state
            # change) ends it. A run that left no event for the whole window is lost. Events
            # are named after the state's name: a worker's Pending run goes on to "Submitting".
            after={f"prefect.flow-run.{name}" for name in LIVE_STATE_NAMES},
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=riposte_runs,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.lost_run_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {settings.lost_run_seconds}s: the process running "
                "this flow run is gone (worker or machine lost).",
            )
        ],
    )
    rerun = AutomationCore(
        name=RERUN_CRASHED,
        description=(
            f"A crashed {' or '.join(RERUN_FLOWS)} run goes back to Scheduled, at most "
            f"{CRASH_RERUNS} times: completed steps come back Cached, writes are find-or-create."
        ),
        tags=["riposte"],
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match=ResourceSpecification(
                {
                    "prefect.resource.id": "prefect.flow-run.*",
                    # The attempts so far: 0 when it crashed before it started.
                    "prefect.run-count": [str(n) for n in range(CRASH_RERUNS + 1)],
                }
            ),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": list(RERUN_FLOWS)}
            ),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="Run again after a crash by Riposte's automation: completed steps "
                "come back Cached.",
            )
        ],
    )
    return [lost, rerun]


def ensure_automations(client: SyncPrefectClient, automations: list[AutomationCore]) -> str:
    """Create each automation, or update the one of the same name."""
    done = []
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            done.append(f"{automation.name!r} updated")
        else:
            client.create_automation(automation)
            done.append(f"{automation.name!r} created")
    return "automations: " + ", ".join(done)


def prefect_deploy(prefect_file: Path, extra_args: list[str] | None = None) -> int:
    """`prefect deploy --all` on ``prefect_file``, in its folder; returns its exit code."""
    prefect_cli = Path(sys.executable).parent / "prefect"
    argv = [
        str(prefect_cli) if prefect_cli.exists() else "prefect",
        "--no-prompt",
        "deploy",
        "--all",
        "--prefect-file",
        str(prefect_file.resolve()),
        *(extra_args or []),
    ]
    return subprocess.call(argv, cwd=prefect_file.resolve().parent, env=dict(os.environ))


def deploy(
    prefect_file: Path,
    *,
    settings: Settings | None = None,
    say: Callable[[str], Any] = print,
    run_prefect_deploy: bool = True,
) -> int:
    """The whole rollout: work pool, rate limits, deployments, recovery automations."""
    settings = settings or get_settings()
    if not prefect_file.is_file():
        say(f"riposte deploy: no {prefect_file} (run it from the repository, or --prefect-file)")
        return 2
    with get_client(sync_client=True) as client:
        say(ensure_work_pool(client, WORK_POOL))
        say(ensure_rate_limits())
        say(ensure_automations(client, recovery_automations(settings)))
    if not run_prefect_deploy:
        return 0
    code = prefect_deploy(prefect_file)
    if code == 0:
        say(apply_playbook_deployments())
    return code


def apply_playbook_deployments() -> str:
    """The `run_playbook/<name>` deployments of the registered playbooks, on the work pool
    (generated: their run forms come from the playbooks' parameter models)."""
    from riposte.deployments.playbook_deployments import playbook_deployments
    from riposte.playbooks.registry import registry

    problems = registry().problems
    for problem in problems:
        print(f"riposte deploy: playbook not loaded: {problem}")
    names = []
    for deployment, _ in playbook_deployments():
        deployment.apply(work_pool_name=WORK_POOL)
        names.append(deployment.name)
    return f"Playbook deployments on the {WORK_POOL} pool: {', '.join(names)}"
