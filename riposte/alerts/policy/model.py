"""The policy as data: the pydantic models from `Match` and `Rule` up to the whole `Policy`.

Every model forbids unknown fields, so a typo in a field name fails the load instead of silently
matching everything. Build a `Policy` with `parse_policy` or `load_policy` to get line numbers.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from riposte.alerts.containment import ActionKind
from riposte.alerts.incidents import AlertTriageUpdate, IncidentUpdate
from riposte.alerts.model import Severity
from riposte.alerts.policy.durations import Duration
from riposte.alerts.policy.fields import (
    BlockRef,
    BlockRefs,
    KeyParts,
    Names,
    Network,
    Networks,
    Pattern,
    Playbook,
    PlaybookName,
    PriorityMap,
    RuleName,
    Severities,
    TemplateName,
    one_or_many,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Layered(_Strict):
    """Settings given in layers (defaults, then the rule): a field left out comes from below."""

    def merged_over(self, base: Self | None) -> Self:
        if base is None:
            return self
        # Nested models are kept as they are (model_dump would turn them into dicts).
        return base.model_copy(update={k: v for k, v in self if v is not None})


class Match(_Strict):
    """Conditions on the alert; all the given ones must hold. A list holds if any item does.

    Names (sources, alert types, categories, policy names) compare without case and accept
    shell wildcards (``API_*``). An alert of unknown severity satisfies neither severity bound,
    so a "low and below" rule never swallows an alert whose severity is not known yet.
    """

    source: Names | None = None
    service_source: Names | None = None
    detection_source: Names | None = None
    alert_type: Names | None = None
    policy_name: Names | None = Field(
        None, description="Defender for Cloud Apps: the policy that raised the alert"
    )
    severity: Severities | None = None
    severity_at_least: Severity | None = None
    severity_at_most: Severity | None = None
    category: Names | None = None
    mitre_technique: Names | None = Field(
        None, description="T1078 also matches its sub-techniques (T1078.004)"
    )
    title_pattern: Pattern | None = Field(
        None, description="Regular expression searched in the title"
    )
    ip_in: Networks | None = Field(None, description="An IP entity inside one of these CIDRs")
    account_in: Names | None = Field(None, description="An account entity among these")
    device_tag: Names | None = Field(None, description="A device entity carrying one of these tags")
    has_incident: bool | None = Field(
        None, description="Whether Defender put the alert in an incident"
    )
    any_: tuple[Match, ...] | None = Field(
        None, alias="any", min_length=1, description="Holds if any of these sub-matches holds"
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Match:
        low, high = self.severity_at_least, self.severity_at_most
        if low is not None and high is not None and low.rank > high.rank:
            raise ValueError("severity_at_least is above severity_at_most: nothing can match")
        return self

    @property
    def is_catch_all(self) -> bool:
        return not any(getattr(self, name) is not None for name in type(self).model_fields)


class TicketTarget(_Strict):
    """Where tickets go: a ServiceNow assignment group (queue) or a Jira project."""

    system: Literal["servicenow", "jira"]
    queue: str | None = Field(None, min_length=1, description="ServiceNow assignment group")
    project: str | None = Field(None, min_length=1, description="Jira project key")

    @model_validator(mode="after")
    def _field_fits_system(self) -> TicketTarget:
        if self.system == "jira" and self.queue is not None:
            raise ValueError("Jira tickets go to a project: use `project`, not `queue`")
        if self.system == "servicenow" and self.project is not None:
            raise ValueError("ServiceNow tickets go to a queue: use `queue`, not `project`")
        return self


class Close(_Strict):
    """How `close_benign` closes the alert at the source."""

    classification: Literal["benign", "false_positive"] = Field(
        "benign", description="benign (real but expected activity) or false_positive"
    )
    reason: str = Field(min_length=3, max_length=1000, description="Shown on the closed alert")


class Throttle(_Strict):
    """At most ``max_tickets`` tickets per key value per window; later alerts become comments.

    Windows are fixed slots aligned on the Unix epoch (UTC): the slot an alert falls in, and so
    the ticket it goes to, is the same whichever worker decides and however often a run is
    retried. A burst that straddles a slot boundary gets one more ticket.
    """

    key: KeyParts
    max_tickets: int = Field(1, ge=1, le=100)
    window: Duration


class Suppress(_Strict):
    """After a response for a key value, drop alerts with the same value for ``window``."""

    key: KeyParts
    window: Duration


class Allow(_Strict):
    """Alerts whose every IP and account (of the kinds listed) is allowed are suppressed.

    Every entity must be allowed, not just one: an attacker's address next to the scanner's
    must not slip through because the scanner is on the list.
    """

    ip_cidrs: Annotated[tuple[Network, ...], BeforeValidator(one_or_many)] = ()
    accounts: Annotated[tuple[str, ...], BeforeValidator(one_or_many)] = ()


class Digest(_Strict):
    """One summary message per channel per period (periods are UTC slots on the epoch)."""

    channel: BlockRef
    period: Duration


class Templates(_Layered):
    """Template file names (in the templates folder from settings, or the built-in ones)."""

    servicenow_description: TemplateName | None = None
    servicenow_work_note: TemplateName | None = None
    jira_description: TemplateName | None = None
    jira_comment: TemplateName | None = None
    slack: TemplateName | None = None
    teams: TemplateName | None = None
    email_subject: TemplateName | None = None
    email_text: TemplateName | None = None
    email_html: TemplateName | None = None
    digest: TemplateName | None = None

    def named(self) -> dict[str, str]:
        return {kind: name for kind, name in self.model_dump(exclude_none=True).items()}


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Approver(_Strict):
    """A person who may approve or reject containment, and where their own links are sent.

    Every approver gets links of their own (signed for them alone): a link forwarded to someone
    else still records the approver it was made for, so send links to personal channels.
    """

    name: str = Field(
        min_length=3, max_length=200, description="Who, as the audit records it (email or UPN)"
    )
    channels: BlockRefs = Field(description="Chat or email blocks that carry this person's links")
    email: str | None = Field(
        None, description="Address for email blocks (default: `name`, when it is an address)"
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_RE.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value

    @property
    def address(self) -> str | None:
        if self.email:
            return self.email
        return self.name if _EMAIL_RE.match(self.name) else None


OnTimeout = Literal["reject", "approve"]


class Containment(_Layered):
    """What a containing playbook (`escalate`, or one declared `contains=True`) may contain, and
    who must say yes first.

    Nothing runs without an approver's yes unless ``automatic: true`` says so. When nobody
    answers within ``timeout``, ``on_timeout`` decides (reject by default) and the
    ``timeout_channels`` are told.
    """

    actions: Annotated[tuple[ActionKind, ...], BeforeValidator(one_or_many)] | None = None
    approvers: tuple[Approver, ...] | None = None
    timeout: Duration | None = None
    on_timeout: OnTimeout | None = None
    timeout_channels: BlockRefs | None = None
    automatic: bool | None = None


DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=1)


class RuleParameters(_Strict):
    """What every playbook may be given; a rule or the fallback leaves out what the defaults
    give. A playbook's own parameters (its `params` model) sit beside these in the rule."""

    # The playbook's own parameters are the extra fields, checked against its model at load.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    ticket: TicketTarget | None = None
    priority: PriorityMap | None = Field(
        None, description="One priority, or a map from alert severity to ticket priority"
    )
    channels: BlockRefs | None = Field(None, description="Chat or email blocks to notify")
    templates: Templates | None = None
    containment_requires_approval: bool | None = Field(
        None, description="false: containment runs without approval (same as containment.automatic)"
    )
    containment: Containment | None = None
    throttle: Throttle | None = None
    group_by_incident: bool | None = None
    suppress: Suppress | None = None
    allow: Allow | None = None
    digest: Digest | None = None
    incident: IncidentUpdate | None = Field(
        None, description="What to write on the alert's Defender incident (tags, owner...)"
    )
    triage: AlertTriageUpdate | None = Field(
        None, description="Owner and verdict set on the alert itself, as far as its API has them"
    )

    @property
    def playbook_params(self) -> dict[str, Any]:
        """The fields of the rule that are the playbook's own parameters."""
        return dict(self.model_extra or {})


class Rule(RuleParameters):
    """When ``match`` holds, run ``playbook`` with these parameters (defaults fill the rest)."""

    name: RuleName
    description: str = ""
    match: Match = Field(default_factory=Match)
    playbook: PlaybookName
    continue_: bool = Field(False, alias="continue")


class Fallback(RuleParameters):
    """What happens to an alert no rule stopped at."""

    playbook: PlaybookName = Playbook.TICKET_AND_NOTIFY.value


RULE_FIELDS = frozenset((info.alias or name) for name, info in Rule.model_fields.items())


class Defaults(_Strict):
    """Parameters every rule inherits unless it gives its own."""

    # Not RuleParameters: here channels and the approval flag are never None; no per-rule fields.
    ticket: TicketTarget | None = None
    priority: PriorityMap | None = None
    channels: BlockRefs = ()
    oncall_channels: BlockRefs = Field(
        (), description="Paged by `escalate` in addition to the rule's channels"
    )
    templates: Templates | None = None
    containment_requires_approval: bool = True
    containment: Containment | None = Field(
        None, description="Approvers, timeout and default outcome every escalation inherits"
    )
    digest: Digest | None = None
    incident: IncidentUpdate | None = Field(
        None, description="What every rule writes on the incident (its tags are added to these)"
    )
    triage: AlertTriageUpdate | None = Field(
        None, description="Owner and verdict every rule sets on the alert (a rule's own win)"
    )
