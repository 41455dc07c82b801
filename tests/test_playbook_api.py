"""The playbook API: declaring, registering and loading playbooks, routing policy rules to them
with checked parameters, and the `riposte playbook` commands' contracts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from riposte.alerts.matching import evaluate
from riposte.alerts.model import Severity
from riposte.alerts.policy import PolicyError, parse_policy
from riposte.playbooks import (
    Alert,
    Context,
    NoParams,
    PlaybookDefinitionError,
    load_registry,
    playbook,
    registry,
)
from riposte.playbooks.builtin import BUILTINS
from tests.alert_factory import api_alert, make_alert

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "playbooks"
BUILTIN_NAMES = {"ticket_and_notify", "escalate", "close_benign", "digest", "ignore"}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
    from pydantic import BaseModel, Field
    from riposte.playbooks import Alert, Context, playbook

    class Params(BaseModel):
        team: str = Field("red", description="Who gets the ticket")

    @playbook(opens_ticket=True)
    def team_ticket(alert: Alert, params: Params, ctx: Context) -> None:
        ctx.update_alert(ctx.ticket().ticket)
"""


# --- declaring --------------------------------------------------------------------------------


class LevelParams(BaseModel):
    level: int = 3


def test_a_playbook_takes_its_parameters_model_from_the_annotation() -> None:
    @playbook
    def levelled(alert: Alert, params: LevelParams, ctx: Context) -> None:
        """Levels."""

    assert levelled.name == "levelled"
    assert levelled.params_model is LevelParams
    assert levelled.gating == "run" and not levelled.opens_ticket
    assert levelled.parameters() == [
        {"name": "level", "type": "int", "required": False, "default": 3, "description": ""}
    ]


def test_a_wrong_signature_is_refused_naming_the_playbook_and_its_file() -> None:
    with pytest.raises(PlaybookDefinitionError) as caught:

        @playbook
        def two_args(alert: Alert, ctx: Context) -> None: ...

    message = str(caught.value)
    assert "test_playbook_api.py:" in message and "playbook two_args" in message
    assert "(alert, params, ctx)" in message


def test_async_playbooks_bad_names_and_parameters_named_like_rule_fields_are_refused() -> None:
    from pydantic import BaseModel

    with pytest.raises(PlaybookDefinitionError, match="not `async def`"):

        @playbook
        async def later(alert: Alert, params: NoParams, ctx: Context) -> None: ...

    with pytest.raises(PlaybookDefinitionError, match="a name is lowercase"):
        playbook(name="Bad-Name")(lambda alert, params, ctx: None)

    class Clash(BaseModel):
        throttle: int = 1

    with pytest.raises(PlaybookDefinitionError, match="throttle have the name of a rule field"):
        playbook(name="clashing", params=Clash)(lambda alert, params, ctx: None)

    with pytest.raises(PlaybookDefinitionError, match="not a pydantic model this module can"):

        @playbook
        def local_model(alert: Alert, params: Clash, ctx: Context) -> None: ...


# --- registering and loading -------------------------------------------------------------------


def test_the_built_ins_are_registered_and_written_on_the_public_api() -> None:
    found = load_registry("", with_entry_points=False)
    assert set(found.playbooks) == BUILTIN_NAMES
    assert found.problems == []
    for builtin in BUILTINS:
        assert builtin.origin == "built-in"
        assert builtin.where.endswith(".py:" + builtin.where.rsplit(":", 1)[1])
        assert f"riposte/playbooks/builtin/{builtin.name}.py" in builtin.where


def test_a_folder_in_riposte_playbooks_registers_its_playbooks_beside_the_built_ins(
    tmp_path: Path,
) -> None:
    write(tmp_path, "team.py", GOOD)
    write(tmp_path, "_helper.py", "raise RuntimeError('not a playbook file')\n")
    write(tmp_path, "test_team.py", "raise RuntimeError('tests are not loaded')\n")
    found = load_registry(str(tmp_path), with_entry_points=False)
    assert found.problems == []
    assert set(found.playbooks) == BUILTIN_NAMES | {"team_ticket"}
    assert found.playbooks["team_ticket"].origin == str(tmp_path / "team.py")


def test_a_broken_source_is_reported_with_its_file_and_the_others_keep_working(
    tmp_path: Path,
) -> None:
    write(tmp_path, "good.py", GOOD)
    broken = write(tmp_path, "broken.py", "import no_such_module_anywhere\n")
    syntax = write(tmp_path, "syntax.py", "def oops(:\n")
    wrong = write(
        tmp_path,
        "wrong.py",
        """\
        from riposte.playbooks import playbook

        @playbook
        def one_arg(alert):
            pass
        """,
    )
    found = load_registry(f"{tmp_path},no_such_package.playbooks", with_entry_points=False)
    assert "team_ticket" in found.playbooks and set(found.playbooks) >= BUILTIN_NAMES
    by_source = {p.source: p.message for p in found.problems}
    assert set(by_source) == {str(broken), str(syntax), str(wrong), "no_such_package.playbooks"}
    assert "ModuleNotFoundError" in by_source[str(broken)]
    assert f"{syntax}:1" in by_source[str(syntax)]
    assert f"{wrong}:3" in by_source[str(wrong)] and "playbook one_arg" in by_source[str(wrong)]


def test_the_same_name_twice_keeps_the_first_and_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.py", GOOD)
    second = write(tmp_path, "b.py", GOOD)
    found = load_registry(f"{first},{second}", with_entry_points=False)
    assert found.playbooks["team_ticket"].origin == str(first)
    (problem,) = found.problems
    assert problem.source == str(second)
    assert "team_ticket" in problem.message and str(first) in problem.message
    assert str(second) in problem.message

    shadow = write(
        tmp_path,
        "shadow.py",
        """\
        from riposte.playbooks import playbook, NoParams

        @playbook
        def escalate(alert, params: NoParams, ctx):
            pass
        """,
    )
    found = load_registry(str(shadow), with_entry_points=False)
    assert found.playbooks["escalate"].origin == "built-in"
    assert "escalate" in found.problems[0].message


def test_a_missing_path_and_a_module_with_no_playbook_are_problems(tmp_path: Path) -> None:
    found = load_registry(f"{tmp_path / 'nope.py'},json", with_entry_points=False)
    messages = {p.source: p.message for p in found.problems}
    assert messages[str(tmp_path / "nope.py")] == "no such file or folder"
    assert messages["json"] == "defines no playbook (`@playbook`)"


# --- policy routing ---------------------------------------------------------------------------

EXAMPLE_POLICY = (EXAMPLES / "policy.yaml").read_text()


def test_the_process_registry_holds_the_example_the_tests_register() -> None:
    assert os.environ["RIPOSTE_PLAYBOOKS"] == str(EXAMPLES)
    assert "dfa_block_source_ip" in registry().playbooks


def test_a_rule_routes_to_a_custom_playbook_with_its_checked_parameters() -> None:
    policy = parse_policy(EXAMPLE_POLICY, "policy.yaml")
    action = evaluate(policy, api_alert("a-1", "API_AccessFromSuspiciousIP")).final
    assert action.playbook == "dfa_block_source_ip" and action.rule == "apis-block-source"
    assert action.params == {
        "never_block": ["192.0.2.0/24", "198.51.100.7/32"],
        "digest_at_most": "low",
        "block": True,
    }
    assert action.ticket is not None and action.ticket.system == "jira"
    assert action.containment is not None and [str(a) for a in action.containment.actions] == [
        "block_ip"
    ]
    assert action.throttle is not None and action.digest is not None
    # Not a Defender for APIs alert: the fallback's built-in.
    other = evaluate(policy, make_alert("b-1", severity=Severity.HIGH)).final
    assert other.playbook == "ticket_and_notify" and other.params == {}


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    return [str(p) for p in caught.value.problems]


def test_unknown_playbooks_and_parameters_fail_with_file_line_and_what_is_known() -> None:
    text = """\
version: 1
defaults:
  ticket: {system: jira, project: SEC}
  digest: {channel: slack-incoming-webhook/riposte-slack, period: 1d}
rules:
  - name: typo
    playbook: dfa_block_source_io
"""
    (unknown,) = problems_of(text)
    assert unknown.startswith(
        "p.yaml:7: rules[0].playbook: unknown playbook 'dfa_block_source_io' "
        "(did you mean 'dfa_block_source_ip'?); known: close_benign, dfa_block_source_ip,"
    )
    bad_params = EXAMPLE_POLICY.replace("never_block:", "nevr_block:").replace(
        "digest_at_most: low", "digest_at_most: loud"
    )
    found = problems_of(bad_params)
    assert any(
        p.startswith("p.yaml:29: rules[0].nevr_block: unknown field (did you mean 'never_block'?)")
        and "parameter of the dfa_block_source_ip playbook" in p
        for p in found
    ), found
    assert any(p.startswith("p.yaml:30: rules[0].digest_at_most: ") for p in found), found
    bad_value = EXAMPLE_POLICY.replace("192.0.2.0/24", "192.0.2.300/24").replace(
        "digest_at_most: low", "digest_at_most: loud"
    )
    found = problems_of(bad_value)
    assert any(p.startswith("p.yaml:29: rules[0].never_block[0]: ") for p in found), found
    assert any(p.startswith("p.yaml:30: rules[0].digest_at_most: ") for p in found), found


def test_a_playbook_s_own_checks_and_the_shared_ones_apply_to_custom_playbooks() -> None:
    text = """\
version: 1
rules:
  - name: no-digest
    playbook: dfa_block_source_ip
    ticket: {system: jira}
    block: true
  - name: throttled-but-ticketless
    playbook: close_benign
    close: {reason: known scanner}
    throttle: {key: [source], window: 1h}
"""
    found = problems_of(text)
    assert (
        "p.yaml:3: rules[0]: the dfa_block_source_ip playbook needs `digest: {channel, period}` "
        "here or in defaults" in found
    )
    assert any(
        p.startswith("p.yaml:6: rules[0].block: block: true needs `containment") for p in found
    )
    assert (
        "p.yaml:10: rules[1].throttle: the close_benign playbook opens no ticket: remove `throttle`"
        in found
    )


def test_explain_shows_what_a_custom_playbook_would_be_given() -> None:
    from riposte.alerts.matching import explain

    policy = parse_policy(EXAMPLE_POLICY, "policy.yaml")
    text = explain(policy, api_alert("a-2", "API_AccessFromTorExitNode")).text()
    assert (
        'parameters given to the playbook: {"block": true, "digest_at_most": "low", '
        '"never_block": ["192.0.2.0/24", "198.51.100.7/32"]}' in text
    )
    assert "run the dfa_block_source_ip playbook" in text
    assert "ask soc-lead@example.com to approve: block ip" in text


# --- the commands -------------------------------------------------------------------------------


def riposte(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def test_playbook_list_json_names_the_built_ins_and_the_registered_example() -> None:
    builtins_only = riposte("playbook", "list", "--json", env={"RIPOSTE_PLAYBOOKS": ""})
    assert builtins_only.returncode == 0, builtins_only.stderr
    listed = json.loads(builtins_only.stdout)
    assert {p["name"] for p in listed["playbooks"]} == BUILTIN_NAMES
    assert {p["origin"] for p in listed["playbooks"]} == {"built-in"}

    done = riposte("playbook", "list", "--json", env={"RIPOSTE_PLAYBOOKS": "examples/playbooks"})
    assert done.returncode == 0, done.stderr
    rows = {p["name"]: p for p in json.loads(done.stdout)["playbooks"]}
    assert set(rows) == BUILTIN_NAMES | {"dfa_block_source_ip"}
    example = rows["dfa_block_source_ip"]
    assert example["origin"] == "examples/playbooks/dfa_block_source_ip.py"
    params = {p["name"]: p for p in example["parameters"]}
    assert params["never_block"]["type"] == "list[IPvAnyNetwork]"
    assert params["never_block"]["default"] == []
    assert params["digest_at_most"]["default"] == "low"
    assert params["block"] == {
        "name": "block",
        "type": "bool",
        "required": False,
        "default": True,
        "description": "Ask the approvers to block the source IP",
    }


def test_policy_check_fails_on_a_playbook_that_does_not_load(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.py", "raise RuntimeError('boom at import')\n")
    done = riposte("policy", "check", env={"RIPOSTE_PLAYBOOKS": str(broken)})
    assert done.returncode == 1
    assert f"{broken}: does not import: RuntimeError: boom at import" in done.stdout
    assert "1 playbook source(s) did not load" in done.stderr
    fine = riposte("policy", "check", str(EXAMPLES / "policy.yaml"))
    assert fine.returncode == 0, fine.stdout + fine.stderr


def test_policy_check_names_an_unknown_playbook_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "rules:\n  - {name: x, playbook: mine}\n")
    done = riposte("policy", "check", str(path), env={"RIPOSTE_PLAYBOOKS": ""})
    assert done.returncode == 1
    assert done.stdout == (
        f"{path}:2: rules[0].playbook: unknown playbook 'mine'; known: close_benign, digest, "
        "escalate, ignore, ticket_and_notify\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "ALERT"], "unknown playbook 'nope'; known: close_benign"),
        (["ticket_and_notify", "missing.json"], "missing.json: no such file"),
        (["dfa_block_source_ip", "ALERT", "--params", "{not json"], "--params is not JSON"),
        (["dfa_block_source_ip", "ALERT", "--params", "[1]"], "--params must be a JSON object"),
        (
            ["dfa_block_source_ip", "ALERT", "--params", '{"never_block": ["x"]}'],
            "--params: never_block[0]: value is not a valid IPv4 or IPv6 network",
        ),
        (
            ["dfa_block_source_ip", "ALERT", "--params", '{"blok": true}'],
            "--params: blok: unknown field (did you mean 'block'?)",
        ),
    ],
)
def test_playbook_run_refuses_bad_input_with_exit_2_and_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from datetime import UTC, datetime

    from riposte.sandbox.samples import sample_graph_alerts

    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(sample_graph_alerts(datetime.now(UTC))[1]))
    args = [str(alert) if a == "ALERT" else a for a in args]
    done = riposte("playbook", "run", *args, env={"RIPOSTE_PLAYBOOKS": str(EXAMPLES)})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert done.stdout == ""


def test_playbook_new_writes_a_playbook_that_registers_and_refuses_to_overwrite(
    tmp_path: Path,
) -> None:
    done = riposte("playbook", "new", "page_owner", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "test_page_owner.py").is_file()
    found = load_registry(str(tmp_path / "page_owner.py"), with_entry_points=False)
    assert found.problems == [] and "page_owner" in found.playbooks
    assert found.playbooks["page_owner"].opens_ticket
    again = riposte("playbook", "new", "page_owner", "--dir", str(tmp_path))
    assert again.returncode == 2 and "not overwritten" in again.stderr
    bad = riposte("playbook", "new", "Page-Owner", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "not a playbook name" in bad.stderr


@pytest.mark.e2e
def test_playbook_run_of_the_example_on_its_own_sandbox_names_the_ticket_it_opened(
    tmp_path: Path,
) -> None:
    """With no local stack running, `playbook run` starts a Prefect server and a sandbox of its
    own, loads the alert, runs the playbook and prints its side effects."""
    from datetime import UTC, datetime

    from riposte.sandbox.samples import sample_graph_alerts

    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(sample_graph_alerts(datetime.now(UTC))[1]))
    env = {
        "RIPOSTE_PLAYBOOKS": "examples/playbooks",
        "RIPOSTE_POLICY_FILE": str(EXAMPLES / "policy.yaml"),
        # Ports where no local stack listens: the command must start its own.
        "RIPOSTE_PREFECT_PORT": "1",
        "RIPOSTE_HOME": str(tmp_path / "home"),
    }
    done = riposte("playbook", "run", "dfa_block_source_ip", str(alert), "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed"
    assert report["ticket"]["system"] == "jira" and report["ticket"]["key"] == "SEC-1"
    assert report["ticket"]["created"] is True
    assert [m["channel"] for m in report["messages"]] == ["teams:#SOC"]
    assert report["alert_update"]["status"] == "in_progress"
    (asked,) = report["approvals_asked"]
    assert asked["approvers"] == ["soc-lead@example.com"]
    assert asked["actions"] == [
        "Block IP address 185.220.101.34 (DE) in Defender for Endpoint (AlertAndBlock)"
    ]


# --- what an adversary or a careless author could do -------------------------------------------


def test_a_run_by_hand_takes_only_the_playbook_s_own_parameters() -> None:
    from riposte.alerts.policy import default_policy
    from riposte.flows.playbooks import manual_action

    policy = default_policy()
    alert = api_alert("h-1", "API_AccessFromSuspiciousIP")
    for smuggled in (
        {"playbook": "escalate"},
        {"containment": {"actions": ["block_ip"], "automatic": True}},
        {"channels": ["slack-incoming-webhook/mallory"]},
        {"containment_requires_approval": False},
    ):
        with pytest.raises(ValueError, match="neither a rule field nor a parameter"):
            manual_action(policy, alert, "digest", smuggled)
    with pytest.raises(ValueError, match="nevr_block.*did you mean 'never_block'"):
        manual_action(policy, alert, "dfa_block_source_ip", {"nevr_block": ["192.0.2.0/24"]})
    action = manual_action(policy, alert, "dfa_block_source_ip", {"block": False})
    assert action.params["block"] is False and action.containment is None


def test_a_playbook_narrows_the_rule_s_containment_and_never_widens_it() -> None:
    from riposte.alerts.throttle import Disposition, Outcome
    from riposte.playbooks import Context

    text = EXAMPLE_POLICY.replace("containment: {actions: [block_ip]}", (
        "containment: {actions: [revoke_sessions], automatic: true}"
    ))  # fmt: skip
    policy = parse_policy(text, "p.yaml")
    alert = api_alert("w-1", "API_AccessFromSuspiciousIP", ip="185.220.101.34")
    action = evaluate(policy, alert).final
    outcome = Outcome(
        rule=action.rule,
        playbook=action.playbook,
        disposition=Disposition.TICKET,
        reason="test",
        at=alert.created_at,
    )
    ctx = Context(None, alert, action, outcome)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="asked for block_ip, which the rule's containment does not"
    ):
        ctx.request_containment(["block_ip"])


BROKEN_AUTHOR = """\
    from pydantic import BaseModel, field_validator
    from riposte.playbooks import playbook

    class Params(BaseModel):
        level: int = 1

        @field_validator("level")
        @classmethod
        def _level(cls, value):
            return value.lower()  # an int has no lower(): the author's bug

    def _checks(params, rule, defaults):
        raise RuntimeError("check bug")
        yield

    def _describe(params, action):
        raise IndexError("describe bug")

    @playbook(checks=_checks, describe=_describe)
    def buggy(alert, params: Params, ctx):
        pass
"""


def test_a_playbook_author_s_bugs_become_policy_problems_not_tracebacks(tmp_path: Path) -> None:
    write(tmp_path, "buggy.py", BROKEN_AUTHOR)
    found = load_registry(str(tmp_path), with_entry_points=False)
    catalog = found.playbooks
    rule = "version: 1\nfallback: {playbook: ignore}\nrules:\n  - name: b\n    playbook: buggy\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(rule, "p.yaml", catalog)
    assert [str(p) for p in caught.value.problems] == [
        "p.yaml:4: rules[0]: the buggy playbook's own checks failed: RuntimeError: check bug"
    ]
    with pytest.raises(PolicyError) as caught:
        parse_policy(rule + "    level: 3\n", "p.yaml", catalog)
    (problem,) = caught.value.problems
    assert str(problem).startswith(
        "p.yaml:4: rules[0]: the buggy playbook's parameter model failed"
    )


def test_aliased_parameters_survive_the_plan(tmp_path: Path) -> None:
    write(
        tmp_path,
        "aliased.py",
        """\
        from pydantic import BaseModel, ConfigDict, Field
        from riposte.playbooks import playbook

        class Params(BaseModel):
            model_config = ConfigDict(extra="forbid")
            never_block: list[str] = Field(default_factory=list, alias="never-block")

        @playbook
        def aliased(alert, params: Params, ctx):
            pass
        """,
    )
    catalog = load_registry(str(tmp_path), with_entry_points=False).playbooks
    text = (
        "version: 1\nfallback: {playbook: ignore}\n"
        "rules:\n  - name: a\n    playbook: aliased\n    never-block: [x]\n"
    )
    policy = parse_policy(text, "p.yaml", catalog)
    action = evaluate(policy, make_alert("al-1")).final
    assert action.params == {"never-block": ["x"]}
    assert catalog["aliased"].params_model.model_validate(action.params).never_block == ["x"]


def test_sys_exit_at_import_is_a_problem_and_helpers_in_a_folder_are_not(tmp_path: Path) -> None:
    write(tmp_path, "good.py", GOOD)
    exiting = write(tmp_path, "needs_token.py", "import sys\nsys.exit('missing ACME_TOKEN')\n")
    write(tmp_path, "ipsets.py", "PARTNERS = ['192.0.2.0/24']\n")
    found = load_registry(str(tmp_path), with_entry_points=False)
    assert "team_ticket" in found.playbooks
    assert [(p.source, p.message) for p in found.problems] == [
        (str(exiting), "does not import: it called sys.exit('missing ACME_TOKEN')")
    ]


def test_gating_must_be_known_and_agree_with_the_flags() -> None:
    with pytest.raises(PlaybookDefinitionError, match="gating 'digset' is not one of"):
        playbook(name="g1", gating="digset")(lambda alert, params, ctx: None)  # type: ignore[arg-type]
    with pytest.raises(PlaybookDefinitionError, match="needs uses_digest=True"):
        playbook(name="g2", gating="digest")(lambda alert, params, ctx: None)
    with pytest.raises(PlaybookDefinitionError, match="needs opens_ticket=True"):
        playbook(name="g3", gating="ticket")(lambda alert, params, ctx: None)


def test_notes_reach_the_run_report_as_text_never_as_markdown() -> None:
    from riposte.flows.respond import _markdown_text

    hostile = "Reset at [IT helpdesk](https://evil.example/r) ![](https://evil.example/p) | col `x`"
    shown = _markdown_text(hostile)
    assert shown.startswith("`") and shown.endswith("`") and shown.count("`") == 2
    assert "\\|" in shown and "| col" not in shown.replace("\\|", "")


def test_a_failing_describe_does_not_fail_explain_or_the_decision(tmp_path: Path) -> None:
    from riposte.alerts.matching import explain

    fixed = BROKEN_AUTHOR.replace("raise RuntimeError", "return iter(())  #")
    write(tmp_path, "buggy.py", fixed.replace("return value.lower()", "return value"))
    catalog = load_registry(str(tmp_path), with_entry_points=False).playbooks
    text = "version: 1\nfallback: {playbook: ignore}\nrules:\n  - name: b\n    playbook: buggy\n"
    policy = parse_policy(text, "p.yaml", catalog)
    shown = explain(policy, make_alert("d-1")).text()
    assert "(the buggy playbook's describe failed: IndexError: describe bug)" in shown


def test_an_installed_package_ships_playbooks_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "acme_playbooks.py", GOOD.replace("team_ticket", "acme_ticket"))
    dist = tmp_path / "acme_playbooks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-playbooks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[riposte.playbooks]\nacme = acme_playbooks\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = load_registry("")
    assert found.problems == []
    assert found.playbooks["acme_ticket"].origin == "entry point acme (acme_playbooks)"


def test_a_failed_run_s_message_names_every_channel_not_reached_however_long_the_reasons() -> None:
    """A batch's table row keeps the first 1,000 characters of an alert's failure: a long reason
    for the first channel must not push the others out of it."""
    from riposte.alerts.response import Delivery
    from riposte.playbooks.context import ActionResult, failure_message

    reason = "notify graph-a-1 slack failed: Slack: message to #soc-alerts failed: " + "x" * 400
    result = ActionResult(
        rule="r",
        playbook="ticket_and_notify",
        disposition="ticket",
        reason="default",
        deliveries=[
            *(
                Delivery(channel=channel, delivered=False, detail=reason)
                for channel in (
                    "slack-incoming-webhook/riposte-slack",
                    "teams-workflow-webhook/riposte-teams",
                )
            ),
            Delivery(channel="email-smtp/soc", delivered=True),
        ],
        problems=["incident 7: Forbidden (HTTP 403)"],
    )
    row = f"FAILED: {failure_message([result])}"[:1000]
    assert "riposte-slack: notify graph-a-1 slack failed" in row
    assert "riposte-teams: notify graph-a-1 slack failed" in row
    assert "email-smtp/soc" not in row
    assert row.endswith("not done: incident 7: Forbidden (HTTP 403)")
