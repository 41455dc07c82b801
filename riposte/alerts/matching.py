"""Policy evaluation: which rules match an alert, why, and what their playbooks would do.

`evaluate` and `explain` are pure: they read the policy and the alert and nothing else, so the
same alert gives the same decision on every worker, in every retry and in `riposte policy
explain`. Everything that needs shared state (throttles, suppression windows, digests) is
decided afterwards by `riposte.alerts.throttle` over the `Evaluation` made here.

Over 500 lines because conditions, allowlists and planning are one decision, and `explain`
must walk the very code `evaluate` runs.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Iterable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict

from riposte.alerts.containment import ActionKind
from riposte.alerts.incidents import AlertTriageUpdate, IncidentUpdate
from riposte.alerts.model import Alert, Entity, EntityType, Severity
from riposte.alerts.policy import (
    DEFAULT_APPROVAL_TIMEOUT,
    Allow,
    Approver,
    Containment,
    Defaults,
    Digest,
    Gating,
    Match,
    OnTimeout,
    Policy,
    Rule,
    RuleParameters,
    Suppress,
    Templates,
    Throttle,
    TicketTarget,
    format_duration,
    validate_playbook_params,
)
from riposte.alerts.response import Priority, Route

# Entity attribute names (compared without case or punctuation) that may hold device tags, as
# a comma- or semicolon-separated list: Graph `tags`, Defender for Endpoint `machineTags`.
DEVICE_TAG_ATTRIBUTES = frozenset({"tags", "tag", "devicetags", "machinetags"})

# Entity attributes that name the same account as the entity value in another form.
ACCOUNT_ATTRIBUTES = frozenset({"upn", "account_name", "mailbox", "sid", "aad_user_id"})

DEFAULT_PRIORITY: dict[Severity, Priority] = {
    Severity.HIGH: Priority.HIGH,
    Severity.MEDIUM: Priority.MEDIUM,
    Severity.LOW: Priority.LOW,
    Severity.INFORMATIONAL: Priority.LOW,
    # Severity not known yet (an enum value newer than this code): worth a person's look.
    Severity.UNKNOWN: Priority.MEDIUM,
}
_PRIORITY_RANK = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}

FALLBACK_RULE = "fallback"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ContainmentPlan(_Frozen):
    """The containment an escalation asks for, with the defaults filled in."""

    actions: tuple[ActionKind, ...]
    approvers: tuple[Approver, ...]
    timeout: timedelta
    on_timeout: OnTimeout
    timeout_channels: tuple[str, ...]
    automatic: bool

    def describe(self) -> str:
        what = ", ".join(str(a).replace("_", " ") for a in self.actions)
        if self.automatic:
            return f"contain at once, without approval: {what}"
        names = ", ".join(a.name for a in self.approvers)
        return (
            f"ask {names} to approve: {what}; if nobody answers within "
            f"{format_duration(self.timeout)}: {self.on_timeout}"
        )


class PlannedAction(_Frozen):
    """What one matching rule (or the fallback) asks for, with the defaults filled in."""

    rule: str
    rule_index: int | None
    playbook: str
    params: dict[str, Any] = {}
    """The playbook's own parameters, as its model validated them (JSON values)."""
    gating: Gating = "ticket"
    opens_ticket: bool = False
    priority: Priority
    ticket: TicketTarget | None
    channels: tuple[str, ...]
    templates: Templates
    containment_requires_approval: bool
    containment: ContainmentPlan | None = None
    throttle: Throttle | None
    group_by_incident: bool
    suppress: Suppress | None
    digest: Digest | None
    incident: IncidentUpdate | None = None
    """What to write on the alert's Defender incident (the rule's `incident:`, over the
    defaults')."""
    triage: AlertTriageUpdate | None = None
    """Owner and verdict to set on the alert (the rule's `triage:`, over the defaults')."""
    allowlisted: str | None = None
    """Why an allowlist covers the alert (then the action is suppressed), or None."""
    described: tuple[str, ...] = ()
    """What the playbook does, in its own words (its `describe`)."""

    def route(self) -> Route:
        """The `Route` the ticket and message templates know."""
        return Route(
            priority=self.priority,
            open_ticket=self.opens_ticket,
            notify=bool(self.channels) and self.opens_ticket,
            reason=f"policy rule '{self.rule}' ({self.playbook})",
        )

    def steps(self) -> list[str]:
        """What the playbook would do, in words (for `explain` and run reports)."""
        if self.allowlisted:
            return [f"nothing: the alert is suppressed because {self.allowlisted}"]
        steps: list[str] = []
        if self.suppress:
            steps.append(
                f"skip it if a response for the same {'+'.join(self.suppress.key)} was made "
                f"in the last {format_duration(self.suppress.window)}"
            )
        steps.extend(self.described)
        return steps


def ticket_steps(action: PlannedAction, notify_verb: str = "post to") -> list[str]:
    """The words for find-or-create a ticket, notify, mark the alert (for `describe`)."""
    steps = []
    target = action.ticket
    where = ""
    if target is not None:
        place = target.queue or target.project
        system = "ServiceNow" if target.system == "servicenow" else "Jira"
        where = f"{system} ticket" + (f" in {place}" if place else "")
    if action.group_by_incident:
        steps.append(
            "if Defender put the alert in an incident: one ticket per incident, later "
            "alerts of the incident become comments on it"
        )
    if action.throttle:
        steps.append(
            f"at most {action.throttle.max_tickets} ticket(s) per "
            f"{'+'.join(action.throttle.key)} per {format_duration(action.throttle.window)}; "
            "further alerts become comments on the open ticket, with a count"
        )
    steps.append(f"find or create a {where or 'ticket'} with priority {action.priority}")
    if action.channels:
        steps.append(f"{notify_verb} {', '.join(action.channels)} with the ticket link")
    steps.append("mark the alert in progress in Defender with a comment linking the ticket")
    if action.incident is not None:
        steps.append(f"on the alert's Defender incident: {action.incident.describe()}")
    if action.triage is not None:
        steps.append(f"on the alert itself: {action.triage.describe()}")
    return steps


class Evaluation(_Frozen):
    """The actions an alert gets: one per matching rule up to the first that stops."""

    alert_source: str
    alert_id: str
    actions: tuple[PlannedAction, ...]

    @property
    def matched_rules(self) -> tuple[str, ...]:
        return tuple(a.rule for a in self.actions if a.rule_index is not None)

    @property
    def playbooks(self) -> tuple[str, ...]:
        return tuple(a.playbook for a in self.actions)

    @property
    def final(self) -> PlannedAction:
        """The action of the rule that stopped the evaluation (or of the fallback)."""
        return self.actions[-1]

    @property
    def used_fallback(self) -> bool:
        return self.actions[-1].rule_index is None


class ConditionCheck(_Frozen):
    """One condition of a rule: what it asks, what the alert has, and whether it held."""

    condition: str
    expected: str
    actual: str
    held: bool
    parts: tuple[tuple[ConditionCheck, ...], ...] = ()
    """For ``any``: the checks of each alternative."""


class RuleCheck(_Frozen):
    index: int
    name: str
    line: int | None
    matched: bool
    continues: bool
    conditions: tuple[ConditionCheck, ...]


class Explanation(_Frozen):
    """Why an alert gets its decision: every rule tried, every condition with its value."""

    policy_origin: str
    alert_source: str
    alert_id: str
    alert_title: str
    checked: tuple[RuleCheck, ...]
    not_reached: tuple[str, ...]
    decision: Evaluation

    def lines(self) -> list[str]:
        out = [f"Alert {self.alert_source}/{self.alert_id}: {self.alert_title}"]
        out.append(f"Policy: {self.policy_origin}")
        for check in self.checked:
            where = f" (line {check.line})" if check.line else ""
            verdict = "MATCHED" if check.matched else "no match"
            suffix = ", continues" if check.matched and check.continues else ""
            out.append(f"  rule {check.index + 1} '{check.name}'{where}: {verdict}{suffix}")
            out.extend(_condition_lines(check.conditions, "    "))
        if self.not_reached:
            out.append(f"  not reached: {', '.join(self.not_reached)}")
        if self.decision.used_fallback:
            out.append("  no rule stopped the evaluation: the fallback applies")
        for action in self.decision.actions:
            out.append(f"Actions of '{action.rule}' (playbook {action.playbook}):")
            if action.params:
                given = json.dumps(action.params, sort_keys=True, ensure_ascii=True)
                out.append(f"  parameters given to the playbook: {given}")
            out.extend(f"  - {step}" for step in action.steps())
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def _condition_lines(checks: Iterable[ConditionCheck], indent: str) -> list[str]:
    out = []
    for c in checks:
        mark = "yes" if c.held else "NO "
        out.append(f"{indent}[{mark}] {c.condition}: want {c.expected}; alert has {c.actual}")
        for number, alternative in enumerate(c.parts, 1):
            out.append(f"{indent}      alternative {number}:")
            out.extend(_condition_lines(alternative, indent + "        "))
    return out


# --- conditions ------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.casefold()))


def _name_matches(value: str | None, patterns: Iterable[str]) -> bool:
    if value is None:
        return False
    folded = value.casefold()
    return any(_glob(p).match(folded) for p in patterns)


def _show(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    if not items:
        return "(none)"
    return items[0] if len(items) == 1 else "any of " + ", ".join(items)


def _opt(value: object) -> str:
    return "(none)" if value is None or value == "" else str(value)


def _ips(alert: Alert) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found = []
    for entity in alert.entities_of(EntityType.IP):
        try:
            found.append(ipaddress.ip_address(entity.value.strip()))
        except ValueError:
            continue
    return found


def _account_names(entity: Entity) -> set[str]:
    names = {entity.value.casefold()}
    names.update(v.casefold() for k, v in entity.attributes.items() if k in ACCOUNT_ATTRIBUTES)
    return names


def device_tags(entity: Entity) -> list[str]:
    """The tags of a device entity, from whichever attribute its source put them in."""
    tags: list[str] = []
    for key, value in entity.attributes.items():
        if re.sub(r"[^a-z]", "", key.lower()) in DEVICE_TAG_ATTRIBUTES:
            tags.extend(t.strip() for t in re.split(r"[,;]", value) if t.strip())
    return tags


def _in_networks(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> bool:
    # An IPv4-mapped IPv6 address (::ffff:203.0.113.5) is the IPv4 address for this purpose.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in networks)


def _technique_matches(have: Iterable[str], want: Iterable[str]) -> bool:
    wanted = [w.casefold() for w in want]
    for technique in have:
        t = technique.casefold()
        if any(t == w or t.startswith(w + ".") for w in wanted):
            return True
    return False


def _check_match(match: Match, alert: Alert) -> list[ConditionCheck]:
    checks: list[ConditionCheck] = []

    def add(name: str, expected: str, actual: str, held: bool) -> None:
        checks.append(ConditionCheck(condition=name, expected=expected, actual=actual, held=held))

    # `any` first: it usually says which product the rule is about.
    if match.any_ is not None:
        alternatives = tuple(tuple(_check_match(m, alert)) for m in match.any_)
        held = any(all(c.held for c in alt) for alt in alternatives)
        checks.append(
            ConditionCheck(
                condition="any",
                expected=f"one of {len(alternatives)} alternatives",
                actual=f"{sum(all(c.held for c in alt) for alt in alternatives)} held",
                held=held,
                parts=alternatives,
            )
        )
    for name, value in (
        ("source", alert.source),
        ("service_source", alert.service_source),
        ("detection_source", alert.detection_source),
        ("alert_type", alert.alert_type),
        ("policy_name", alert.policy_name),
        ("category", alert.category),
    ):
        patterns: tuple[str, ...] | None = getattr(match, name)
        if patterns is not None:
            add(name, _show(patterns), _opt(value), _name_matches(value, patterns))
    if match.severity is not None:
        add("severity", _show(match.severity), alert.severity, alert.severity in match.severity)
    known = alert.severity != Severity.UNKNOWN
    if match.severity_at_least is not None:
        held = known and alert.severity.rank >= match.severity_at_least.rank
        add("severity_at_least", str(match.severity_at_least), alert.severity, held)
    if match.severity_at_most is not None:
        held = known and alert.severity.rank <= match.severity_at_most.rank
        add("severity_at_most", str(match.severity_at_most), alert.severity, held)
    if match.mitre_technique is not None:
        add(
            "mitre_technique",
            _show(match.mitre_technique),
            _show(alert.mitre_techniques),
            _technique_matches(alert.mitre_techniques, match.mitre_technique),
        )
    if match.title_pattern is not None:
        held = re.search(match.title_pattern, alert.title) is not None
        add("title_pattern", f"/{match.title_pattern}/", repr(alert.title), held)
    if match.ip_in is not None:
        ips = _ips(alert)
        held = any(_in_networks(ip, match.ip_in) for ip in ips)
        add("ip_in", _show(match.ip_in), f"IPs {_show(ips)}", held)
    if match.account_in is not None:
        wanted = {a.casefold() for a in match.account_in}
        accounts = alert.entities_of(EntityType.ACCOUNT)
        held = any(_account_names(e) & wanted for e in accounts)
        found = f"accounts {_show(e.value for e in accounts)}"
        add("account_in", _show(match.account_in), found, held)
    if match.device_tag is not None:
        wanted = {t.casefold() for t in match.device_tag}
        tags = [t for e in alert.entities_of(EntityType.DEVICE) for t in device_tags(e)]
        held = any(t.casefold() in wanted for t in tags)
        add("device_tag", _show(match.device_tag), f"device tags {_show(tags)}", held)
    if match.has_incident is not None:
        held = (alert.incident_id is not None) == match.has_incident
        expected = "in an incident" if match.has_incident else "in no incident"
        add("has_incident", expected, f"incident {_opt(alert.incident_id)}", held)
    return checks


# --- allowlists ------------------------------------------------------------------------------


def allowlist_reason(allow: Allow | None, alert: Alert) -> str | None:
    """Why ``allow`` covers the alert, or None when it does not.

    Covered means: the alert has at least one entity of a kind the list names, and every entity
    of those kinds is on the list.
    """
    if allow is None:
        return None
    considered = 0
    allowed: list[str] = []
    if allow.ip_cidrs:
        for entity in alert.entities_of(EntityType.IP):
            considered += 1
            try:
                address = ipaddress.ip_address(entity.value.strip())
            except ValueError:
                return None
            if not _in_networks(address, allow.ip_cidrs):
                return None
            allowed.append(entity.value)
    if allow.accounts:
        wanted = {a.casefold() for a in allow.accounts}
        for entity in alert.entities_of(EntityType.ACCOUNT):
            considered += 1
            if not _account_names(entity) & wanted:
                return None
            allowed.append(entity.value)
    if not considered:
        return None
    return f"every IP and account it names is allowlisted ({', '.join(allowed)})"


# --- evaluation ------------------------------------------------------------------------------


def _priority(
    mapping: dict[Severity, Priority] | None,
    defaults: Defaults,
    alert: Alert,
    at_least: Priority | None,
) -> Priority:
    merged = {**DEFAULT_PRIORITY, **(defaults.priority or {}), **(mapping or {})}
    priority = merged[alert.severity]
    if at_least is not None and mapping is None:
        # A playbook's floor (escalate: high) applies unless the rule names a priority.
        priority = max(priority, at_least, key=_PRIORITY_RANK.__getitem__)
    return priority


def containment_plan(
    params: RuleParameters, defaults: Defaults, requires_approval: bool
) -> ContainmentPlan | None:
    """The rule's containment merged over ``defaults.containment``, or None without actions."""
    merged = (params.containment or Containment()).merged_over(defaults.containment)
    if not merged.actions:
        return None
    automatic = merged.automatic if merged.automatic is not None else not requires_approval
    return ContainmentPlan(
        actions=merged.actions,
        approvers=merged.approvers or (),
        timeout=merged.timeout or DEFAULT_APPROVAL_TIMEOUT,
        on_timeout=merged.on_timeout or "reject",
        timeout_channels=merged.timeout_channels or (),
        automatic=automatic,
    )


def _planned_action(
    policy: Policy, rule: Rule | None, index: int | None, alert: Alert, globally_allowed: str | None
) -> PlannedAction:
    params: RuleParameters = rule if rule is not None else policy.fallback
    defaults = policy.defaults
    name = rule.playbook if rule is not None else policy.fallback.playbook
    info = policy.playbook(name)
    model, problems = validate_playbook_params(info, params.playbook_params)
    if model is None:  # parse_policy refuses these; a hand-built policy may still carry them
        raise ValueError(f"playbook {name}: " + "; ".join(m for _, m in problems))
    channels = params.channels if params.channels is not None else defaults.channels
    if info.pages_oncall:
        channels = tuple(dict.fromkeys((*channels, *defaults.oncall_channels)))
    if not info.notifies:
        # These playbooks post no per-alert message (the digest posts one per period).
        channels = ()
    templates = (params.templates or Templates()).merged_over(defaults.templates)
    approval = params.containment_requires_approval
    requires_approval = approval if approval is not None else defaults.containment_requires_approval
    containment = None
    if info.contains:
        containment = containment_plan(params, defaults, requires_approval)
        if containment is not None:
            requires_approval = not containment.automatic
    action = PlannedAction(
        rule=rule.name if rule is not None else FALLBACK_RULE,
        rule_index=index,
        playbook=name,
        params=model.model_dump(mode="json", by_alias=True),
        gating=info.gating,
        opens_ticket=info.opens_ticket,
        priority=_priority(params.priority, defaults, alert, info.min_priority),
        ticket=(params.ticket or defaults.ticket) if info.opens_ticket else None,
        channels=channels,
        templates=templates,
        containment_requires_approval=requires_approval,
        containment=containment,
        throttle=params.throttle,
        group_by_incident=bool(params.group_by_incident),
        suppress=params.suppress,
        digest=(params.digest or defaults.digest) if info.uses_digest else None,
        incident=(
            params.incident.merged_over(defaults.incident)
            if params.incident is not None
            else defaults.incident
        ),
        triage=(
            params.triage.merged_over(defaults.triage)
            if params.triage is not None
            else defaults.triage
        ),
        allowlisted=globally_allowed or allowlist_reason(params.allow, alert),
    )
    try:
        described = tuple(info.describe(action))
    except Exception as exc:  # words for explain and the report: never worth failing a response
        described = (f"(the {name} playbook's describe failed: {type(exc).__name__}: {exc})",)
    return action.model_copy(update={"described": described})


def explain(policy: Policy, alert: Alert) -> Explanation:
    """Try the rules in order, recording every condition; the decision comes with its reasons."""
    globally = allowlist_reason(policy.allow, alert)
    if globally:
        globally = "the policy's allowlist covers it: " + globally
    checked: list[RuleCheck] = []
    actions: list[PlannedAction] = []
    stopped_at: int | None = None
    for index, rule in enumerate(policy.rules):
        conditions = _check_match(rule.match, alert)
        matched = all(c.held for c in conditions)
        checked.append(
            RuleCheck(
                index=index,
                name=rule.name,
                line=policy.rule_line(index),
                matched=matched,
                continues=rule.continue_,
                conditions=tuple(conditions),
            )
        )
        if matched:
            actions.append(_planned_action(policy, rule, index, alert, globally))
            if not rule.continue_:
                stopped_at = index
                break
    if stopped_at is None:
        actions.append(_planned_action(policy, None, None, alert, globally))
    later = policy.rules[stopped_at + 1 :] if stopped_at is not None else ()
    return Explanation(
        policy_origin=policy.origin,
        alert_source=alert.source,
        alert_id=alert.id,
        alert_title=alert.title,
        checked=tuple(checked),
        not_reached=tuple(r.name for r in later),
        decision=Evaluation(alert_source=alert.source, alert_id=alert.id, actions=tuple(actions)),
    )


def evaluate(policy: Policy, alert: Alert) -> Evaluation:
    """The actions the policy gives ``alert`` (see `explain` for the reasons)."""
    return explain(policy, alert).decision
