"""The policy file: validation with file:line:field errors, matching, ordering, the store."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from riposte.alerts.matching import evaluate, explain
from riposte.alerts.model import Alert, Severity
from riposte.alerts.policy import (
    Playbook,
    Policy,
    PolicyError,
    default_policy,
    load_policy,
    parse_duration,
    parse_policy,
)
from riposte.alerts.policy.store import InMemoryLastGood, PolicyStore
from riposte.alerts.response import Priority
from riposte.settings import Settings
from tests.alert_factory import api_alert, entity, make_alert

HEADER = """\
defaults:
  ticket: {system: servicenow, queue: SOC}
  channels: [slack-incoming-webhook/riposte-slack]
  oncall_channels: [teams-workflow-webhook/riposte-teams]
  digest: {channel: slack-incoming-webhook/riposte-slack, period: 1h}
"""


def policy(rules: str, extra: str = "") -> Policy:
    return parse_policy(HEADER + extra + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  "))


def one_rule(match: str) -> Policy:
    return policy(f"- name: r\n  match: {match}\n  playbook: escalate\n")


def matches(match: str, alert: Alert) -> bool:
    return evaluate(one_rule(match), alert).final.rule == "r"


def problems(text: str, origin: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, origin)
    return [str(p) for p in info.value.problems]


# --- every condition -------------------------------------------------------------------------

DEVICE = entity("device", "dev-1", tags="Finance, PCI")
ACCOUNT = entity("account", "CONTOSO\\jdoe", upn="jdoe@contoso.com")

CONDITIONS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("{source: [defender_endpoint, graph]}", {}, {"source": "cloud_apps"}),
    (
        "{service_source: microsoftdefenderforendpoint}",
        {"service_source": "microsoftDefenderForEndpoint"},
        {"service_source": "microsoftDefenderForCloud"},
    ),
    (
        "{detection_source: microsoftDefenderForApiManagement}",
        {"detection_source": "microsoftDefenderForApiManagement"},
        {"detection_source": None},
    ),
    ("{alert_type: 'API_*'}", {"alert_type": "API_SpikeInLatency"}, {"alert_type": "VM_EICAR"}),
    (
        "{policy_name: 'Impossible travel*'}",
        {"policy_name": "Impossible travel"},
        {"policy_name": "Mass download"},
    ),
    ("{severity: [high, low]}", {"severity": Severity.LOW}, {"severity": Severity.MEDIUM}),
    ("{severity_at_least: medium}", {"severity": Severity.HIGH}, {"severity": Severity.LOW}),
    ("{severity_at_most: low}", {"severity": Severity.INFORMATIONAL}, {"severity": "medium"}),
    ("{severity_at_most: low}", {"severity": Severity.LOW}, {"severity": Severity.UNKNOWN}),
    ("{category: [execution]}", {"category": "Execution"}, {"category": None}),
    (
        "{mitre_technique: T1078}",
        {"mitre_techniques": ("T1059", "T1078.004")},
        {"mitre_techniques": ("T10780",)},
    ),
    (
        "{title_pattern: '^\\[SAMPLE ALERT\\]'}",
        {"title": "[SAMPLE ALERT] Mining"},
        {"title": "Real [SAMPLE ALERT]"},
    ),
    (
        "{ip_in: [10.0.0.0/8, '2001:db8::/32']}",
        {"entities": (entity("ip", "10.1.2.3"),)},
        {"entities": (entity("ip", "203.0.113.9"),)},
    ),
    (
        "{ip_in: [2001:db8::/32]}",
        {"entities": (entity("ip", "2001:db8::5"),)},
        {"entities": (entity("ip", "not-an-ip"),)},
    ),
    (
        "{ip_in: [203.0.113.0/24]}",
        {"entities": (entity("ip", "::ffff:203.0.113.5"),)},
        {"entities": ()},
    ),
    (
        "{account_in: [JDOE@contoso.com]}",
        {"entities": (ACCOUNT,)},
        {"entities": (entity("account", "alice@contoso.com"),)},
    ),
    (
        "{device_tag: [pci]}",
        {"entities": (DEVICE,)},
        {"entities": (entity("device", "dev-2", machine_tags="Lab"),)},
    ),
    ("{has_incident: true}", {"incident_id": "31547"}, {"incident_id": None}),
    ("{has_incident: false}", {"incident_id": None}, {"incident_id": "31547"}),
    (
        "{any: [{source: cloud_apps}, {severity: high, category: Malware}]}",
        {"severity": Severity.HIGH, "category": "Malware"},
        {"severity": Severity.HIGH, "category": "Execution"},
    ),
]


@pytest.mark.parametrize(("match", "hit", "miss"), CONDITIONS, ids=[c[0] for c in CONDITIONS])
def test_each_condition_holds_for_a_matching_alert_and_not_for_another(
    match: str, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    assert matches(match, make_alert(**hit))
    assert not matches(match, make_alert(**miss))


def test_an_empty_match_is_a_catch_all() -> None:
    assert matches("{}", make_alert(severity=Severity.UNKNOWN))


def test_every_condition_of_a_rule_must_hold() -> None:
    match = "{alert_type: 'API_*', ip_in: [203.0.113.0/24], severity_at_least: high}"
    assert matches(match, api_alert("1", "API_X", severity=Severity.HIGH))
    assert not matches(match, api_alert("1", "API_X", severity=Severity.MEDIUM))
    assert not matches(match, api_alert("1", "API_X", ip="198.51.100.1", severity=Severity.HIGH))


def test_explanation_shows_each_condition_with_the_alert_value() -> None:
    pol = one_rule("{alert_type: 'API_*', severity_at_least: high}")
    result = explain(pol, api_alert("1", "API_SpikeInLatency"))
    (check,) = result.checked
    assert not check.matched
    shown = {c.condition: (c.expected, c.actual, c.held) for c in check.conditions}
    assert shown["alert_type"] == ("API_*", "API_SpikeInLatency", True)
    assert shown["severity_at_least"] == ("high", "medium", False)
    assert check.line == 7  # the rule's line in the file
    assert result.decision.used_fallback
    text = result.text()
    assert "[NO ] severity_at_least: want high; alert has medium" in text
    assert "Actions of 'fallback' (playbook ticket_and_notify)" in text


# --- ordering, continue, fallback, defaults ---------------------------------------------------


def test_first_matching_rule_wins_and_later_rules_are_not_reached() -> None:
    pol = policy(
        """
        - {name: first, match: {severity: medium}, playbook: digest}
        - {name: second, match: {}, playbook: escalate}
        - {name: third, match: {}, playbook: ignore}
        """
    )
    result = explain(pol, make_alert())
    assert result.decision.matched_rules == ("first",)
    assert result.decision.playbooks == (Playbook.DIGEST,)
    assert result.not_reached == ("second", "third")


def test_continue_keeps_the_action_and_tries_the_next_rules() -> None:
    pol = policy(
        """
        - {name: audit, match: {}, playbook: digest, continue: true}
        - {name: nope, match: {severity: high}, playbook: ignore}
        - {name: ticket, match: {severity: medium}, playbook: ticket_and_notify}
        """
    )
    decision = evaluate(pol, make_alert())
    assert decision.matched_rules == ("audit", "ticket")
    assert decision.playbooks == (Playbook.DIGEST, Playbook.TICKET_AND_NOTIFY)
    assert decision.final.rule == "ticket"


def test_fallback_decides_when_only_continuing_rules_matched() -> None:
    pol = policy(
        "- {name: audit, match: {}, playbook: digest, continue: true}\n",
        extra="fallback: {playbook: ignore}\n",
    )
    decision = evaluate(pol, make_alert())
    assert decision.playbooks == (Playbook.DIGEST, Playbook.IGNORE)
    assert decision.used_fallback


def test_rules_inherit_defaults_unless_they_give_their_own() -> None:
    pol = policy(
        """
        - name: jira
          match: {severity: high}
          playbook: ticket_and_notify
          ticket: {system: jira, project: SEC}
          channels: [slack-incoming-webhook/other]
          priority: {high: critical}
          templates: {slack: custom_slack.json.j2}
          containment_requires_approval: false
        - {name: plain, match: {}, playbook: ticket_and_notify}
        """
    )
    special = evaluate(pol, make_alert(severity=Severity.HIGH)).final
    assert special.ticket is not None and special.ticket.project == "SEC"
    assert special.channels == ("slack-incoming-webhook/other",)
    assert special.priority == Priority.CRITICAL
    assert special.templates.slack == "custom_slack.json.j2"
    assert special.containment_requires_approval is False
    plain = evaluate(pol, make_alert(severity=Severity.LOW)).final
    assert plain.ticket is not None and plain.ticket.queue == "SOC"
    assert plain.channels == ("slack-incoming-webhook/riposte-slack",)
    assert plain.priority == Priority.LOW
    assert plain.containment_requires_approval is True
    assert plain.route().open_ticket and plain.route().notify


def test_escalate_pages_the_oncall_channels_with_at_least_high_priority() -> None:
    pol = policy("- {name: esc, match: {}, playbook: escalate}\n")
    action = evaluate(pol, make_alert(severity=Severity.LOW)).final
    assert action.priority == Priority.HIGH
    assert action.channels == (
        "slack-incoming-webhook/riposte-slack",
        "teams-workflow-webhook/riposte-teams",
    )
    assert any("page" in step for step in action.steps())


def test_close_benign_digest_and_ignore_post_no_per_alert_message() -> None:
    pol = policy(
        """
        - name: close
          match: {severity: low}
          playbook: close_benign
          close: {classification: false_positive, reason: known scanner}
        - {name: dig, match: {severity: medium}, playbook: digest}
        - {name: ign, match: {}, playbook: ignore}
        """
    )
    for severity in (Severity.LOW, Severity.MEDIUM, Severity.HIGH):
        action = evaluate(pol, make_alert(severity=severity)).final
        assert action.channels == ()
        assert action.ticket is None
    closing = evaluate(pol, make_alert(severity=Severity.LOW)).final
    assert closing.params["close"]["classification"] == "false_positive"
    assert closing.steps() == ["close the alert in Defender as false positive: known scanner"]


def test_allowlists_suppress_only_when_every_listed_kind_entity_is_allowed() -> None:
    pol = policy(
        """
        - name: r
          match: {}
          playbook: ticket_and_notify
          allow: {ip_cidrs: [192.0.2.0/28], accounts: [svc-scanner@contoso.com]}
        """,
        extra="allow: {ip_cidrs: [198.51.100.7]}\n",
    )
    scanner = entity("ip", "192.0.2.3")
    attacker = entity("ip", "203.0.113.9")
    svc = entity("account", "svc-scanner@contoso.com")
    assert evaluate(pol, make_alert(entities=(scanner, svc))).final.allowlisted
    assert evaluate(pol, make_alert(entities=(scanner,))).final.allowlisted
    assert not evaluate(pol, make_alert(entities=(scanner, attacker))).final.allowlisted
    assert not evaluate(pol, make_alert(entities=())).final.allowlisted
    globally = evaluate(pol, make_alert(entities=(entity("ip", "198.51.100.7"),))).final
    assert globally.allowlisted and "policy's allowlist" in globally.allowlisted


TICKET = "ticket_and_notify"


# --- the shipped default policy ---------------------------------------------------------------


def test_default_policy_is_valid_and_has_no_unreachable_rule() -> None:
    pol = default_policy()
    assert pol.warnings() == []
    assert len(pol.rules) >= 10


@pytest.mark.parametrize(
    ("alert", "rule", "playbook"),
    [
        (api_alert("1", "API_AccessFromSuspiciousIP"), "apis-suspicious-source", "escalate"),
        (api_alert("2", "API_AccessFromTorExitNode"), "apis-suspicious-source", "escalate"),
        (api_alert("3", "API_ParameterEnumeration"), "apis-parameter-enumeration", TICKET),
        (api_alert("4", "API_SpikeInLatency"), "apis-latency-spike", "digest"),
        (api_alert("5", "API_SomethingNew"), "apis-other", TICKET),
        (
            make_alert(source="defender_endpoint", severity=Severity.HIGH, incident_id="9"),
            "endpoint-high",
            "escalate",
        ),
        (
            make_alert(source="cloud_apps", policy_name="Impossible travel"),
            "cloud-apps-travel",
            TICKET,
        ),
        (
            make_alert(source="defender_cloud", alert_type="SIMULATED_VM_Mining"),
            "cloud-sample-alerts",
            "close_benign",
        ),
        (make_alert(source="defender_cloud", severity=Severity.LOW), "cloud-low", "digest"),
        (make_alert(severity=Severity.UNKNOWN), "fallback", TICKET),
    ],
)  # fmt: skip
def test_default_policy_routes_each_defender_product(
    alert: Alert, rule: str, playbook: str
) -> None:
    action = evaluate(default_policy(), alert).final
    assert (action.rule, str(action.playbook)) == (rule, playbook)


# --- broken files -----------------------------------------------------------------------------

BROKEN = """\
rules:
  - name: ok
    match: {severty: high}
    playbook: escalate
  - name: bad-enum
    playbook: escalat
  - name: bad-values
    match:
      ip_in: [10.0.0.5/24]
      title_pattern: "(unclosed"
    playbook: digest
    priority: urgent
    throttle: {key: entity:ipp, window: 0}
  - playbook: ignore
"""


def test_broken_policy_reports_every_problem_as_file_line_field() -> None:
    assert problems(BROKEN) == [
        "p.yaml:3: rules[0].match.severty: unknown field (did you mean 'severity'?)",
        "p.yaml:6: rules[1].playbook: unknown playbook 'escalat' (did you mean 'escalate'?); "
        "known: close_benign, dfa_block_source_ip, digest, escalate, ignore, ticket_and_notify",
        "p.yaml:9: rules[2].match.ip_in[0]: 10.0.0.5/24 has host bits set",
        "p.yaml:10: rules[2].match.title_pattern: not a valid regular expression: missing ), "
        "unterminated subpattern at position 0",
        "p.yaml:12: rules[2].priority: 'urgent' is not a priority (critical, high, medium, low)",
        "p.yaml:13: rules[2].throttle.key: unknown key part 'entity:ipp' (did you mean "
        "'entity:ip'?); known: source, alert_type, policy_name, category, severity, "
        "service_source, detection_source, incident, title, entity:ip, entity:account, "
        "entity:device, entity:file, entity:process, entity:url, entity:cloud_resource, "
        "entity:api_endpoint",
        "p.yaml:13: rules[2].throttle.window: a duration must be longer than zero",
        "p.yaml:14: rules[3].name: required field is missing",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - name: a\n    playbook: [\n", "p.yaml:4: (yaml): "),
        ("", "p.yaml:1: (document): the policy file is empty"),
        ("- just\n- a list\n", "p.yaml:1: (document): a policy is a mapping of fields"),
        ("version: 2\n", "p.yaml:1: version: Input should be 1"),
        (
            "rules:\n  - {name: a, playbook: digest}\n  - {name: a, playbook: ignore}\n",
            "p.yaml:3: rules[1].name: rule name 'a' is already used by rules[0]",
        ),
        (
            "rules:\n  - name: a\n    playbook: ignore\n    playbook: escalate\n",
            "p.yaml:4: rules[0].playbook: duplicate key: one would be lost",
        ),
        (
            "rules:\n  - {name: a, playbook: close_benign}\n",
            "p.yaml:2: rules[0]: the close_benign playbook needs `close: {classification, reason}`",
        ),
        (
            "rules:\n  - name: a\n    playbook: digest\n    throttle: {key: title, window: 1h}\n",
            "p.yaml:4: rules[0].throttle: the digest playbook opens no ticket: remove `throttle`",
        ),
        (
            "rules:\n  - {name: a, playbook: escalate}\n",
            "p.yaml:2: rules[0]: the escalate playbook needs `ticket: {system, ...}` here or in "
            "defaults",
        ),
        (
            "defaults:\n  ticket: {system: jira, queue: SOC}\n",
            "p.yaml:2: defaults.ticket: Value error, Jira tickets go to a project",
        ),
        (
            "rules:\n  - {name: Bad Name, playbook: ignore}\n",
            "p.yaml:2: rules[0].name: use lowercase letters",
        ),
        (
            "rules:\n  - {name: a, match: {severity_at_least: high, severity_at_most: low}, "
            "playbook: ignore}\n",
            "p.yaml:2: rules[0].match: Value error, severity_at_least is above severity_at_most",
        ),
    ],
)
def test_broken_policy_names_the_line_and_the_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected.replace("Value error, ", "")) for p in found), found


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    found = problems("\n".join(lines) + "\n")
    assert found == ["p.yaml: (yaml): too many nodes (deeply nested aliases?)"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("1d", 86400), ("2w", 1209600), (60, 60)],
)
def test_durations_read_as_people_write_them(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


# --- the store: read at each evaluation, last good copy ---------------------------------------

GOOD = HEADER + "rules:\n  - {name: first, match: {}, playbook: digest}\n"
GOOD_2 = HEADER + "rules:\n  - {name: second, match: {}, playbook: ignore}\n"
BAD = HEADER + "rules:\n  - {name: first, match: {}, playbook: digst}\n"


def test_store_reads_the_file_at_each_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore(path)
    assert store.current().policy.rules[0].name == "first"
    path.write_text(GOOD_2)
    assert store.current().policy.rules[0].name == "second"


def test_broken_file_keeps_the_last_good_policy_and_reports_file_line_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    saved = InMemoryLastGood()
    saves: list[str] = []

    def save(record: Any) -> None:
        saves.append(record["sha256"])
        saved.save(record)

    store = PolicyStore(path, load_last_good=saved.load, save_last_good=save)
    first = store.current()
    assert not first.is_fallback
    store.current()
    assert len(saves) == 1  # an unchanged file is not saved again

    path.write_text(BAD)
    snapshot = store.current()
    assert snapshot.is_fallback
    assert snapshot.policy.rules[0].name == "first"
    assert snapshot.sha256 == first.sha256
    assert snapshot.error is not None
    assert str(snapshot.error).startswith(f"{path}:7: rules[0].playbook: unknown playbook")
    assert "last good copy of" in snapshot.origin

    path.write_text(GOOD_2)
    assert store.current().policy.rules[0].name == "second"
    assert len(saves) == 2


def test_last_good_copy_survives_a_restart_through_the_hooks(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    shared = InMemoryLastGood()  # stands for a Prefect block both workers read
    PolicyStore(path, load_last_good=shared.load, save_last_good=shared.save).current()
    path.write_text(BAD)
    other_worker = PolicyStore(path, load_last_good=shared.load, save_last_good=shared.save)
    snapshot = other_worker.current()
    assert snapshot.is_fallback and snapshot.policy.rules[0].name == "first"


def test_broken_file_without_a_last_good_copy_fails_with_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    with pytest.raises(PolicyError) as info:
        PolicyStore(path).current()
    assert str(info.value.problems[0]).startswith(f"{path}:7: rules[0].playbook:")
    assert "no last good policy" in str(info.value)


def test_missing_file_falls_back_to_the_last_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore(path)
    store.current()
    path.unlink()
    snapshot = store.current()
    assert snapshot.is_fallback
    assert str(snapshot.error) == f"{path}: (file): no such file"


def test_a_policy_naming_a_missing_or_unsafe_template_counts_as_broken(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "evil.j2").write_text("{{ ''.__class__.__mro__ }}")
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore(path, templates_dir=templates)
    store.current()
    path.write_text(
        HEADER
        + "rules:\n"
        + "  - name: first\n"
        + "    playbook: digest\n"
        + "    templates: {servicenow_description: evil.j2}\n"
        + "  - {name: x, playbook: ignore, templates: {slack: nowhere.j2}}\n"
    )
    snapshot = store.current()
    assert snapshot.is_fallback and snapshot.error is not None
    lines = [str(p) for p in snapshot.error.problems]
    assert lines[0].startswith(f"{path}:9: rules[0].templates.servicenow_description: line 1")
    assert "Python internal" in lines[0]
    assert lines[1].startswith(f"{path}:10: rules[1].templates.slack: template 'nowhere.j2'")


def test_store_without_a_path_uses_the_shipped_default_policy() -> None:
    snapshot = PolicyStore().current()
    assert snapshot.origin == "built-in default policy"
    assert snapshot.policy.rules[0].name == default_policy().rules[0].name


def test_policy_file_and_templates_dir_come_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test session sets a policy file for the responder; the default is none.
    monkeypatch.delenv("RIPOSTE_POLICY_FILE", raising=False)
    assert Settings().policy_file is None
    monkeypatch.setenv("RIPOSTE_POLICY_FILE", str(tmp_path / "p.yaml"))
    monkeypatch.setenv("RIPOSTE_TEMPLATES_DIR", str(tmp_path))
    settings = Settings()
    assert settings.policy_file == tmp_path / "p.yaml"
    assert settings.templates_dir == tmp_path


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    loaded = load_policy(path)
    assert loaded.origin == str(path)
    assert loaded.rule_line(0) == 7


# --- robustness -------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["high", "API_*", "ticket_and_notify", "1h", "10.0.0.0/8", "(", ""]),
)
_KEYS = st.sampled_from(
    ["rules", "name", "match", "playbook", "throttle", "key", "window", "any", "allow", "x", "1"]
)
_DATA = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(_DATA)
def test_any_yaml_document_loads_or_fails_with_located_problems(data: Any) -> None:
    text = yaml.safe_dump(data)
    try:
        parse_policy(text, "f.yaml")
    except PolicyError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert str(problem).startswith("f.yaml")
            assert problem.field and problem.message


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_fails_with_a_policy_error(text: str) -> None:
    try:
        parse_policy(text, "f.yaml")
    except PolicyError as exc:
        assert exc.problems
