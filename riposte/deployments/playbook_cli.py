"""`riposte playbook list | new | run`: see the registered playbooks, start one, try one.

`run` answers one alert file with one playbook against the sandbox: the local stack's, when it
runs (`make run`), else a Prefect server and a sandbox of its own in a temporary folder, stopped
at the end. The alert is loaded into the sandbox first; every side effect is printed. Exit 0 when
the playbook completed, 1 when it failed (with the step and the reason), 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from riposte.deployments.own_stack import OwnStack, run_inner

_BAD_INPUT = 2


def _registry() -> Any:
    from riposte.playbooks.registry import registry

    return registry()


def cmd_playbook_list(args: argparse.Namespace) -> int:
    found = _registry()
    rows = [
        {
            "name": p.name,
            "origin": p.origin,
            "where": p.where,
            "description": " ".join(p.description.strip().split("\n\n")[0].split()),
            "opens_ticket": p.opens_ticket,
            "contains": p.contains,
            "uses_digest": p.uses_digest,
            "parameters": p.parameters(),
        }
        for p in sorted(found.playbooks.values(), key=lambda p: p.name)
    ]
    problems = [str(p) for p in found.problems]
    if args.json:
        print(json.dumps({"playbooks": rows, "problems": problems}, indent=2, ensure_ascii=True))
    else:
        for row in rows:
            print(f"{row['name']}  ({row['origin']})  {row['description']}")
            for param in row["parameters"]:
                default = "required" if param["required"] else f"default {param['default']!r}"
                print(f"    {param['name']}: {param['type']}, {default}  {param['description']}")
        for problem in problems:
            print(f"not loaded: {problem}", file=sys.stderr)
    return 1 if problems else 0


_PLAYBOOK_TEMPLATE = '''\
"""{name}: a playbook of this team's (the function's docstring is what `riposte playbook list`
shows)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from riposte.playbooks import Alert, Context, playbook


class Params(BaseModel):
    """What a policy rule may set for {name}, beside the rule's own fields."""

    model_config = ConfigDict(extra="forbid")

    notify_low: bool = Field(False, description="Post low-severity alerts too")


@playbook(name="{name}", opens_ticket=True)
def {name}(alert: Alert, params: Params, ctx: Context) -> None:
    """A ticket for the alert; a message when this alert opened it (and it is not low, unless
    notify_low); the alert marked in progress with the ticket's link."""
    opened = ctx.ticket()
    if opened.is_new and (params.notify_low or alert.severity != "low"):
        ctx.notify(ticket=opened.ticket)
    ctx.update_alert(opened.ticket)
'''

_TEST_TEMPLATE = '''\
"""Runs {name} against the sandbox with `riposte playbook run` (no credentials needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from riposte.sandbox.samples import sample_graph_alerts

HERE = Path(__file__).resolve().parent


def test_{name}_opens_a_ticket(tmp_path: Path) -> None:
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(sample_graph_alerts(datetime.now(UTC))[0]))
    env = {{**os.environ, "RIPOSTE_PLAYBOOKS": str(HERE / "{name}.py")}}
    done = subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", "playbook", "run", "{name}",
         str(alert), "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["ticket"]["key"]
'''


def cmd_playbook_new(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter, ValidationError

    from riposte.alerts.policy import PlaybookName

    try:
        name = TypeAdapter(PlaybookName).validate_python(args.name)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        print(f"riposte playbook new: {message}", file=sys.stderr)
        return _BAD_INPUT
    folder = Path(args.dir)
    files = {folder / f"{name}.py": _PLAYBOOK_TEMPLATE, folder / f"test_{name}.py": _TEST_TEMPLATE}
    taken = [str(p) for p in files if p.exists()]
    if taken:
        print(
            f"riposte playbook new: {', '.join(taken)}: already there; not overwritten",
            file=sys.stderr,
        )
        return _BAD_INPUT
    if name in _registry().playbooks:
        print(
            f"riposte playbook new: a playbook named {name} is registered already", file=sys.stderr
        )
        return _BAD_INPUT
    folder.mkdir(parents=True, exist_ok=True)
    for path, template in files.items():
        path.write_text(template.format(name=name))
        print(f"wrote {path}")
    print(
        textwrap.dedent(
            f"""\
            Next:
              RIPOSTE_PLAYBOOKS={folder / (name + ".py")} riposte playbook run {name} ALERT_FILE
              RIPOSTE_PLAYBOOKS={folder / (name + ".py")} pytest {folder / ("test_" + name + ".py")}
            and name it in a policy rule: `playbook: {name}`."""
        )
    )
    return 0


# --- run ----------------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"riposte playbook run: {message}", file=sys.stderr)
    return _BAD_INPUT


def _read_alert(path: Path) -> tuple[Mapping[str, Any], Any]:
    """The file's one alert payload and its normalized alert; `ValueError` saying what is wrong."""
    from riposte.alerts.documents import read_documents
    from riposte.alerts.errors import AlertParseError
    from riposte.alerts.sources import iter_alert_payloads, parse_alert

    try:
        payloads = [p for doc in read_documents(path) for p in iter_alert_payloads(doc)]
        if len(payloads) != 1:
            raise ValueError(f"{path}: holds {len(payloads)} alerts; give a file with one")
        return payloads[0], parse_alert(payloads[0])
    except AlertParseError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _check_params(name: str, text: str | None) -> dict[str, Any]:
    found = _registry()
    if name not in found.playbooks:
        import difflib

        known = ", ".join(sorted(found.playbooks))
        hint = difflib.get_close_matches(name, sorted(found.playbooks), n=1, cutoff=0.75)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        unset = "" if os.environ.get("RIPOSTE_PLAYBOOKS") else " (RIPOSTE_PLAYBOOKS is not set)"
        raise ValueError(f"unknown playbook {name!r}{did_you_mean}; known: {known}{unset}")
    if text is None:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params is not JSON ({exc.msg})") from None
    if not isinstance(params, dict):
        raise ValueError("--params must be a JSON object of the playbook's parameters")
    from riposte.alerts.policy import format_loc, validate_playbook_params

    _, problems = validate_playbook_params(found.get(name), params)
    if problems:
        loc, message = problems[0]
        raise ValueError(f"--params: {format_loc(loc) if loc else '(parameters)'}: {message}")
    return params


def cmd_playbook_run(args: argparse.Namespace) -> int:
    try:
        params = _check_params(args.name, args.params)
        payload, alert = _read_alert(Path(args.alert_file))
    except ValueError as exc:
        return _fail(str(exc))
    from riposte.alerts.policy import PolicyError, load_policy
    from riposte.deployments.stack import stack_env, status
    from riposte.settings import get_settings

    settings = get_settings()
    policy_path = Path(args.policy) if args.policy else settings.policy_file
    if policy_path is not None:
        try:
            load_policy(policy_path)
        except PolicyError as exc:
            more = len(exc.problems) - 1
            also = f" (and {more} more: riposte policy check {policy_path})" if more else ""
            return _fail(f"{exc.problems[0]}{also}")
    own: OwnStack | None = None
    if status(settings)["running"]:
        env = stack_env(settings)
        sandbox_url = settings.sandbox_url
        shared = True
    else:
        own = OwnStack()
        print(
            "No local stack is running: starting a Prefect server and a sandbox ...",
            file=sys.stderr,
        )
        if not own.started("riposte playbook run"):
            return 1
        env, sandbox_url, shared = own.env, own.sandbox_url, False
    job = {
        "playbook": args.name,
        "params": params,
        "payload": payload,
        "source": alert.source,
        "alert_id": alert.id,
        "sandbox_url": sandbox_url,
        "shared_stack": shared,
        "json": args.json,
    }
    # The report is the output: Prefect's own progress lines only when asked for.
    base = own.process_env() if own is not None else dict(os.environ)
    inner_env = {"PREFECT_LOGGING_LEVEL": "WARNING", **base, **env}
    if args.policy:
        inner_env["RIPOSTE_POLICY_FILE"] = str(Path(args.policy).resolve())
    try:
        return run_inner("riposte.deployments.playbook_cli", job, inner_env, timeout=900)
    finally:
        if own is not None:
            own.stop()


# --- the inner process: Prefect settings come from its environment -------------------------


def _inner(job: dict[str, Any]) -> int:
    import httpx

    from riposte.deployments.local import save_sandbox_blocks
    from riposte.deployments.stack import SANDBOX_PREFIX

    if not job["shared_stack"]:
        save_sandbox_blocks(job["sandbox_url"])
    loaded = httpx.post(
        f"{job['sandbox_url']}/_sandbox/{SANDBOX_PREFIX[job['source']]}/alerts",
        json=[job["payload"]],
        timeout=30,
    )
    if loaded.status_code != 200:
        print(
            f"riposte playbook run: the sandbox refused the alert: {loaded.text[:300]}",
            file=sys.stderr,
        )
        return _BAD_INPUT
    from riposte.flows.playbooks import run_playbook
    from riposte.playbooks import context

    asked: list[dict[str, Any]] = []
    if not job["shared_stack"]:
        # No contain_alert deployment serves this temporary server: record the request instead.
        def record(request: Any) -> str:
            asked.append(
                {
                    "actions": [a.describe() for a in request.actions],
                    "approvers": [a.name for a in request.approvers],
                    "automatic": request.automatic,
                    "timeout_seconds": request.timeout_seconds,
                }
            )
            return "not started (riposte playbook run records it; the local stack runs it)"

        context.containment_starter = record
    state = run_playbook(
        alert_id=job["alert_id"],
        source=job["source"],
        params=job["params"] or None,
        playbook=job["playbook"],
        return_state=True,
    )
    report: dict[str, Any] = {
        "playbook": job["playbook"],
        "alert": {"source": job["source"], "id": job["alert_id"]},
        "flow_run": str(state.state_details.flow_run_id),
        "approvals_asked": asked,
    }
    if state.is_completed():
        result = state.result()
        report.update(_effects(result))
        report["status"] = "completed"
        code = 0
    else:
        error = state.result(raise_on_failure=False)
        report["status"] = "failed"
        report["failed_steps"] = _failed_steps(state.state_details.flow_run_id)
        report["reason"] = f"{type(error).__name__}: {error}"[:1000]
        code = 1
    if job["json"]:
        print(json.dumps(report, indent=2, ensure_ascii=True, default=str))
    else:
        _print_text(report)
    return code


def _effects(result: Any) -> dict[str, Any]:
    ticket = result.ticket
    return {
        "disposition": result.disposition,
        "rule": result.rule,
        "ticket": (
            {
                "system": ticket.system,
                "key": ticket.key,
                "url": ticket.url,
                "created": result.ticket_created,
            }
            if ticket is not None
            else None
        ),
        "alert_number_on_ticket": result.alert_number,
        "messages": [d.model_dump(mode="json") for d in result.deliveries],
        "notes": list(result.notes),
        "alert_update": result.alert_update.model_dump(mode="json")
        if result.alert_update
        else None,
        "incident": result.incident.model_dump(mode="json") if result.incident else None,
        "closed": result.closed,
        "digest": result.digest,
        "containment": result.containment,
    }


def _failed_steps(flow_run_id: Any) -> list[dict[str, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}),
            task_run_filter=TaskRunFilter(state={"type": {"any_": ["FAILED", "CRASHED"]}}),
        )
    return [{"step": r.name, "reason": (r.state.message if r.state else "") or ""} for r in runs]


def _print_text(report: dict[str, Any]) -> None:
    print(
        f"playbook {report['playbook']} for {report['alert']['source']} alert "
        f"{report['alert']['id']}: {report['status']}"
    )
    if report["status"] != "completed":
        for step in report.get("failed_steps", []):
            print(f"  failed step: {step['step']}: {step['reason']}")
        print(f"  reason: {report.get('reason')}")
        return
    ticket = report.get("ticket")
    if ticket:
        verb = "created" if ticket["created"] else "found"
        print(f"  ticket: {verb} {ticket['system']} {ticket['key']} {ticket['url']}")
    for message in report.get("messages", []):
        print(
            f"  message: {message['channel']}: "
            + (
                (
                    "sent"
                    if message.get("confirmed", True)
                    else f"sent, unconfirmed: {message['detail']}"
                )
                if message["delivered"]
                else f"NOT sent: {message['detail']}"
            )
        )
    for note in report.get("notes", []):
        print(f"  {note}")
    if report.get("alert_update"):
        update = report["alert_update"]
        print(
            f"  alert: status {update['status']}, comment "
            + ("added" if update["comment_added"] else "already there")
        )
    if report.get("incident"):
        incident = report["incident"]
        written = ", ".join(incident["fields"]) or "nothing new"
        print(
            f"  incident {incident['incident_id']}: set {written}"
            + ("; comment added" if incident["comment_added"] else "")
            + f"; tags now {', '.join(incident['tags']) or 'none'}"
            + f"; owner {incident.get('assigned_to') or 'none'}"
        )
    for key in ("closed", "digest", "containment"):
        if report.get(key):
            print(f"  {key}: {report[key]}")
    for asked in report.get("approvals_asked", []):
        print(f"  approval asked of {', '.join(asked['approvers'])}: {'; '.join(asked['actions'])}")


def add_playbook_commands(sub: Any) -> None:
    # Alike in shape to cli.build_parser's declarations only: other commands, other options.
    playbook = sub.add_parser("playbook", help="the registered playbooks: list, new, run")
    psub = playbook.add_subparsers(dest="playbook_command", required=True)
    lst = psub.add_parser("list", help="registered playbooks, where they come from, parameters")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_playbook_list)
    new = psub.add_parser("new", help="write a playbook file and a test that runs it")
    new.add_argument("name", metavar="NAME")
    new.add_argument("--dir", default="playbooks", help="folder (default: ./playbooks)")
    new.set_defaults(func=cmd_playbook_new)
    run = psub.add_parser("run", help="run a playbook for an alert file against the sandbox")
    run.add_argument("name", metavar="NAME")
    run.add_argument("alert_file", metavar="ALERT_FILE")
    run.add_argument("--params", help="the playbook's parameters, as a JSON object")
    run.add_argument("--policy", help="policy file (default: RIPOSTE_POLICY_FILE, else built-in)")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(func=cmd_playbook_run)


if __name__ == "__main__":
    sys.exit(_inner(json.loads(sys.stdin.read())))
