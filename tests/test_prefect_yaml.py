"""prefect.yaml (the work-pool rollout) declares the same deployments as the local stack serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from riposte.deployments.rollout import CRASH_RERUNS, WORK_POOL, recovery_automations
from riposte.deployments.serve import deployments
from riposte.settings import PLAYBOOK_FLOW, Settings

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def _declared() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    return {d["name"]: d for d in document["deployments"]}


def _served() -> dict[str, dict[str, Any]]:
    served = {}
    # The settings' defaults, not this test session's environment: prefect.yaml holds defaults.
    for deployment, flow in deployments(Settings.model_construct()):
        if flow.name == PLAYBOOK_FLOW:
            continue  # generated from the registered playbooks: `riposte deploy` applies them
        limit = deployment.concurrency_limit
        served[deployment.name] = {
            "flow": flow.name,
            "entrypoint": deployment.entrypoint,
            "tags": sorted(deployment.tags),
            "intervals": sorted(
                s.schedule.interval.total_seconds()  # type: ignore[union-attr]
                for s in deployment.schedules or []
            ),
            "concurrency_limit": getattr(limit, "limit", limit),
        }
    return served


def test_prefect_yaml_declares_every_served_deployment_with_its_name_and_flow() -> None:
    declared, served = _declared(), _served()
    assert sorted(declared) == sorted(served)
    for name, want in served.items():
        got = declared[name]
        module, _, flow_function = got["entrypoint"].partition(":")
        assert f"{module}.{flow_function}" == want["entrypoint"], name
        assert sorted(got.get("tags", [])) == want["tags"], name
        intervals = sorted(float(s["interval"]) for s in got.get("schedules") or [])
        assert intervals == want["intervals"], name
        assert got.get("concurrency_limit") == want["concurrency_limit"], name
        assert got["work_pool"]["name"] == WORK_POOL, name


def test_prefect_yaml_needs_no_code_pull_and_sends_heartbeats_for_lost_run_detection() -> None:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    assert document["pull"] == []
    env = document["definitions"]["work_pool"]["job_variables"]["env"]
    heartbeat = int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    # Three missed heartbeats before a run is declared lost: a slow run is not a dead one.
    assert Settings().lost_run_seconds >= 3 * heartbeat


def test_recovery_automations_rerun_only_responses_and_only_a_few_times() -> None:
    lost, rerun = recovery_automations(Settings(lost_run_seconds=120))
    assert lost.trigger.within.total_seconds() == 120  # type: ignore[union-attr]
    # A worker's run goes Pending -> Submitting -> Running: a run lost in any of them is found.
    assert {"prefect.flow-run.Submitting", "prefect.flow-run.heartbeat"} <= lost.trigger.after  # type: ignore[union-attr]
    assert rerun.actions[0].state.value == "SCHEDULED"  # type: ignore[union-attr]
    match = rerun.trigger.match.root  # type: ignore[union-attr]
    assert match["prefect.run-count"] == [str(n) for n in range(CRASH_RERUNS + 1)]
    related = rerun.trigger.match_related  # type: ignore[union-attr]
    assert related.root["prefect.resource.name"] == ["respond_to_alert", "respond_batch"]  # type: ignore[union-attr]


def test_every_registered_playbook_is_served_with_a_run_form_of_its_own() -> None:
    from riposte.playbooks import registry

    served = {
        deployment.name: deployment
        for deployment, flow in deployments(Settings.model_construct())
        if flow.name == PLAYBOOK_FLOW
    }
    assert set(served) == set(registry().playbooks)
    for name, deployment in served.items():
        assert deployment.entrypoint == "riposte.flows.playbooks.run_playbook", name
        form = deployment._parameter_openapi_schema
        assert form.properties["params"]["title"] == f"Parameters of {name}"
        assert form.properties["source"]["enum"] == [
            "cloud_apps", "defender_cloud", "defender_endpoint", "graph"
        ]  # fmt: skip
        assert "playbook" not in form.properties
