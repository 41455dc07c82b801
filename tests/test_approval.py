"""Approval links and proofs (signing, tampering, expiry, rotation), the decision a run trusts,
and the policy's containment section. No server: the end-to-end tests are in
test_approval_e2e.py."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from riposte.alerts.approval import (
    ApprovalInput,
    ApprovalKeys,
    ContainmentRequest,
    DecisionProof,
    LinkClaims,
    LinkExpired,
    LinkInvalid,
    open_link,
    verify_proof,
)
from riposte.alerts.containment import ActionKind, ContainmentAction
from riposte.alerts.matching import evaluate
from riposte.alerts.policy import PolicyError, parse_policy
from riposte.alerts.response import AlertRef
from riposte.flows.contain import judge
from tests.alert_factory import make_alert

KEY = secrets.token_urlsafe(40)
OTHER_KEY = secrets.token_urlsafe(40)


def _claims(**changes: object) -> LinkClaims:
    values: dict[str, object] = {
        "run": uuid4(),
        "request": "graph:a1:high:rule:abcd",
        "params": "p" * 32,
        "approver": "alice@contoso.com",
        "decision": "approve",
        "expires": datetime.now(UTC) + timedelta(hours=1),
    }
    values.update(changes)
    return LinkClaims.new(**values)  # type: ignore[arg-type]


def _request() -> ContainmentRequest:
    return ContainmentRequest(
        alert=AlertRef(source="graph", alert_id="a1", revision="high"),
        alert_title="Suspicious IP",
        severity="high",
        rule="apis-suspicious-source",
        actions=(
            ContainmentAction(
                kind=ActionKind.BLOCK_IP, target="203.0.113.7", label="203.0.113.7", parameters={}
            ),
        ),
        defender_block="riposte-defender",
    )


def test_a_signed_link_opens_to_its_claims() -> None:
    keys = ApprovalKeys([KEY])
    claims = _claims()
    assert open_link(keys, keys.sign(claims)) == claims


@pytest.mark.parametrize("part", ["payload", "signature"])
def test_a_tampered_link_is_refused(part: str) -> None:
    keys = ApprovalKeys([KEY])
    token = keys.sign(_claims(decision="reject"))
    payload, signature = token.split(".")
    if part == "payload":
        body = json.loads(base64.urlsafe_b64decode(payload + "=="))
        body["decision"] = "approve"  # a reject link turned into an approve link
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        token = f"{forged}.{signature}"
    else:
        token = f"{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    with pytest.raises(LinkInvalid, match="signature"):
        open_link(keys, token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "x" * 5000, "e30.e30"])
def test_malformed_links_are_refused(token: str) -> None:
    with pytest.raises(LinkInvalid):
        open_link(ApprovalKeys([KEY]), token)


def test_a_link_signed_with_another_key_is_refused() -> None:
    token = ApprovalKeys([OTHER_KEY]).sign(_claims())
    with pytest.raises(LinkInvalid):
        open_link(ApprovalKeys([KEY]), token)


def test_an_expired_link_says_so() -> None:
    keys = ApprovalKeys([KEY])
    token = keys.sign(_claims(expires=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(LinkExpired, match="expired at") as raised:
        open_link(keys, token)
    assert raised.value.status == 410


def test_keys_rotate_old_links_still_open() -> None:
    token = ApprovalKeys([KEY]).sign(_claims())
    rotated = ApprovalKeys.from_text(f"{OTHER_KEY},{KEY}")
    assert open_link(rotated, token).approver == "alice@contoso.com"
    # The first key signs new links: they open with it alone, not with the retired one.
    fresh = rotated.sign(_claims())
    assert open_link(ApprovalKeys([OTHER_KEY]), fresh).approver == "alice@contoso.com"
    with pytest.raises(LinkInvalid):
        open_link(ApprovalKeys([KEY]), fresh)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ApprovalKeys(["short"])
    with pytest.raises(ValueError, match="at least one"):
        ApprovalKeys.from_text(" , ")


def _proof(keys: ApprovalKeys, request: ContainmentRequest, run_id: UUID, **changes: object) -> str:
    values: dict[str, object] = {
        "run": run_id,
        "params": request.params,
        "decision": "approve",
        "approver": "alice@contoso.com",
        "via": "link",
        "at": datetime.now(UTC),
    }
    values.update(changes)
    return keys.sign(DecisionProof(**values))


def test_a_proven_decision_names_the_approver() -> None:
    keys = ApprovalKeys([KEY])
    request, run = _request(), uuid4()
    answer = ApprovalInput(
        decision="approve",
        reason="ok",
        approver="alice@contoso.com",
        proof=_proof(keys, request, run),
    )
    decided = judge(answer, request, run, keys)
    assert (decided.via, decided.approver, decided.decision) == (
        "link",
        "alice@contoso.com",
        "approve",
    )
    assert verify_proof(keys, answer.proof).via == "link"


def test_a_ui_decision_is_recorded_as_unproven() -> None:
    keys = ApprovalKeys([KEY])
    decided = judge(ApprovalInput(decision="approve", approver="bob"), _request(), uuid4(), keys)
    assert decided.via == "ui"
    assert decided.approver == "bob (identity not proven)"
    assert "Prefect UI" in decided.describe()


@pytest.mark.parametrize(
    "change",
    [
        {"run": "other-run"},
        {"params": "0" * 32},
        {"decision": "reject"},
        {"approver": "mallory@contoso.com"},
    ],
)
def test_a_proof_for_something_else_is_not_trusted(change: dict[str, object]) -> None:
    keys = ApprovalKeys([KEY])
    request, run = _request(), uuid4()
    values = dict(change)
    if values.get("run") == "other-run":
        values["run"] = uuid4()
    proof = _proof(keys, request, run, **values)
    answer = ApprovalInput(decision="approve", approver="alice@contoso.com", proof=proof)
    decided = judge(answer, request, run, keys)
    assert decided.via == "ui"
    assert "does not verify" in decided.approver


def test_a_forged_proof_is_not_trusted() -> None:
    request, run = _request(), uuid4()
    forged = _proof(ApprovalKeys([OTHER_KEY]), request, run)
    answer = ApprovalInput(decision="approve", approver="alice@contoso.com", proof=forged)
    assert judge(answer, request, run, ApprovalKeys([KEY])).via == "ui"


# --- the policy's containment section --------------------------------------------------------

POLICY = """\
version: 1
defaults:
  ticket: {system: servicenow}
  containment:
    approvers:
      - {name: alice@contoso.com, channels: [slack-incoming-webhook/riposte-slack]}
    timeout: 30m
    timeout_channels: [teams-workflow-webhook/riposte-teams]
rules:
  - name: contain-it
    match: {severity_at_least: high}
    playbook: escalate
    containment: {actions: [block_ip, disable_user]}
  - name: auto
    match: {severity: medium}
    playbook: escalate
    containment: {actions: block_ip, automatic: true}
fallback: {playbook: ticket_and_notify}
"""


def test_containment_inherits_the_defaults() -> None:
    policy = parse_policy(POLICY)
    high = evaluate(policy, make_alert(severity="high")).final
    assert high.containment is not None
    assert high.containment.actions == (ActionKind.BLOCK_IP, ActionKind.DISABLE_USER)
    assert [a.name for a in high.containment.approvers] == ["alice@contoso.com"]
    assert high.containment.timeout == timedelta(minutes=30)
    assert high.containment.on_timeout == "reject"
    assert not high.containment.automatic
    assert high.containment_requires_approval
    medium = evaluate(policy, make_alert(severity="medium")).final
    assert medium.containment is not None and medium.containment.automatic
    low = evaluate(policy, make_alert(severity="low")).final
    assert low.containment is None


def test_containment_without_approvers_or_automatic_is_refused() -> None:
    approver = "{name: alice@contoso.com, channels: [slack-incoming-webhook/riposte-slack]}"
    text = POLICY.replace(f"    approvers:\n      - {approver}\n", "")
    with pytest.raises(PolicyError, match="need `approvers`"):
        parse_policy(text)


def test_containment_outside_escalate_is_refused() -> None:
    text = POLICY.replace(
        "playbook: escalate\n    containment: {actions: [block_ip",
        "playbook: ticket_and_notify\n    containment: {actions: [block_ip",
    )
    with pytest.raises(PolicyError, match="the ticket_and_notify playbook does not contain"):
        parse_policy(text)


def test_unknown_actions_and_bad_addresses_are_refused() -> None:
    with pytest.raises(PolicyError, match="actions"):
        parse_policy(POLICY.replace("[block_ip, disable_user]", "[block_ip, nuke_it]"))
    with pytest.raises(PolicyError, match="email"):
        parse_policy(
            POLICY.replace(
                "{name: alice@contoso.com, channels",
                "{name: alice, email: not-an-address, channels",
            )
        )


def test_alerts_sharing_a_ticket_and_targets_make_one_request() -> None:
    from riposte.alerts.containment import plan_actions
    from riposte.alerts.response import Ticket, ref_for
    from tests.alert_factory import entity

    ticket = Ticket(system="servicenow", key="INC0010001", id="x", url="https://t", created=True)

    def request_for(title: str, alert_id: str) -> ContainmentRequest:
        alert = make_alert(
            alert_id, title=title, severity="high", entities=(entity("ip", "203.0.113.9"),)
        )
        actions = plan_actions(alert, [ActionKind.BLOCK_IP], comment="Riposte, policy rule r")
        return ContainmentRequest(
            alert=ref_for(alert),
            alert_title=alert.title,
            severity="high",
            rule="r",
            actions=tuple(actions),
            defender_block="riposte-defender",
            ticket=ticket,
        )

    first = request_for("Access from a suspicious IP", "a1")
    second = request_for("Access from a Tor exit node", "a2")
    assert first.params != second.params  # the indicator titles differ
    assert first.key == second.key  # one request: same ticket, same action on the same IP
    other_ticket = second.model_copy(update={"ticket": ticket.model_copy(update={"id": "y"})})
    assert other_ticket.key != first.key


def test_approval_keys_come_from_the_environment_or_a_file_never_from_prefect(
    tmp_path: Path,
) -> None:
    from riposte.blocks.signing_keys import (
        ApprovalKeysMissing,
        ensure_approval_key,
        load_approval_keys,
    )
    from riposte.settings import Settings

    key_file = tmp_path / "keys" / "approval.key"
    settings = Settings(approval_keys="", approval_key_file=key_file)
    with pytest.raises(ApprovalKeysMissing, match="does not exist"):
        load_approval_keys(settings)
    assert ensure_approval_key(settings) is True
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = key_file.read_text()
    assert ensure_approval_key(settings) is False and key_file.read_text() == first  # kept
    signed = load_approval_keys(settings).sign(
        LinkClaims.new(
            run=uuid4(), request="r", params="p", approver="a@b.c", decision="approve",
            expires=datetime.now(UTC) + timedelta(minutes=5),
        )
    )  # fmt: skip
    assert load_approval_keys(settings).open(signed)["approver"] == "a@b.c"
    key_file.write_text("  \n")
    with pytest.raises(ApprovalKeysMissing, match="is empty"):
        load_approval_keys(settings)
    with pytest.raises(ApprovalKeysMissing, match="RIPOSTE_APPROVAL_KEY_FILE"):
        load_approval_keys(Settings(approval_keys="", approval_key_file=None))
    env = Settings(approval_keys="k" * 40, approval_key_file=None)
    assert load_approval_keys(env).open(load_approval_keys(env).sign(LinkClaims.new(
        run=uuid4(), request="r", params="p", approver="x@y.z", decision="reject",
        expires=datetime.now(UTC) + timedelta(minutes=5),
    )))["decision"] == "reject"  # fmt: skip
