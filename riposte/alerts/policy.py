"""The policy file: which playbook answers which alert, with which parameters, as validated data.

A policy is YAML. Rules are tried in order; the first one whose every condition holds decides,
unless it says ``continue: true``, in which case its action is kept and the next rules are
tried too. When no rule stops the evaluation, ``fallback`` decides. Every model forbids unknown
fields, so a typo in a field name fails the load instead of silently matching everything.

Errors are reported as ``file:line: field: problem``: the YAML is composed into nodes first, so
each pydantic error location can be mapped back to the line it came from.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from riposte.alerts.containment import ActionKind
from riposte.alerts.incidents import AlertTriageUpdate, IncidentUpdate
from riposte.alerts.model import EntityType, Severity
from riposte.alerts.response import Priority
from riposte.alerts.sync import SyncPolicy

DEFAULT_POLICY_NAME = "built-in default policy"

# A policy is a few hundred lines; a bigger input is a mistake or an attack (alias bombs).
MAX_POLICY_BYTES = 1_000_000
MAX_YAML_NODES = 200_000


class Playbook(StrEnum):
    """The names of the built-in playbooks (``riposte.playbooks.builtin``). A rule may name any
    registered playbook; these are the ones every installation has."""

    TICKET_AND_NOTIFY = "ticket_and_notify"
    CLOSE_BENIGN = "close_benign"
    DIGEST = "digest"
    ESCALATE = "escalate"
    IGNORE = "ignore"


Gating = Literal["ticket", "close", "digest", "ignore", "run"]
"""How the throttles, grouping and suppression windows account for a playbook's response:
``ticket`` (a ticket per alert, group or throttle slot, or a note on the open one), ``close``,
``digest``, ``ignore`` (recorded only) or ``run`` (the playbook runs; no ticket accounting)."""


@runtime_checkable
class PlaybookInfo(Protocol):
    """What the policy needs to know of a playbook: implemented by `riposte.playbooks.Playbook`.

    The domain defines the interface and the playbooks layer implements it, so that imports keep
    pointing down while a rule may name a playbook that a user wrote.
    """

    name: str
    params_model: type[BaseModel]
    opens_ticket: bool
    contains: bool
    uses_digest: bool
    notifies: bool
    pages_oncall: bool
    min_priority: Priority | None
    gating: Gating

    def problems(
        self, params: BaseModel, rule: RuleParameters, defaults: Defaults
    ) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Checks across fields: (location under the rule, message)."""
        ...

    def describe(self, action: Any) -> list[str]:
        """What the playbook does for a `PlannedAction`, in words (explain, run reports)."""
        ...


PlaybookCatalog = Mapping[str, PlaybookInfo]

_catalog_provider: list[Callable[[], PlaybookCatalog]] = []


def set_catalog_provider(provider: Callable[[], PlaybookCatalog]) -> None:
    """Install the function that gives the registered playbooks (done by `riposte.playbooks`)."""
    _catalog_provider[:] = [provider]


def default_catalog() -> PlaybookCatalog:
    """The playbooks of this process: built-ins and those ``RIPOSTE_PLAYBOOKS`` names.

    The registry lives in `riposte.playbooks`, above this layer; it is found at run time, as a
    plugin is, rather than imported (which would make the domain depend on the flows' steps).
    """
    if not _catalog_provider:
        importlib.import_module("riposte.playbooks")
    if not _catalog_provider:  # pragma: no cover - riposte.playbooks installs it on import
        raise RuntimeError("riposte.playbooks did not register its playbook catalog")
    return _catalog_provider[0]()


# --- problems --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class PolicyError(ValueError):
    """A policy file that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid policy")


# --- value types -----------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW = timedelta(days=31)


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"1d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text or _DURATION_RE.sub("", text):
            raise ValueError(f"{value!r} is not a duration like 30m, 1h, 1h30m, 1d")
        seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_RE.findall(text))
    else:
        raise ValueError(f"expected a duration like 30m or 1h, got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    if seconds > MAX_WINDOW.total_seconds():
        raise ValueError("a window longer than 31 days is almost certainly a mistake")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


def _one_or_many(value: Any) -> Any:
    """A single value where a list is expected means a list of one."""
    single = isinstance(value, str | int | float) and not isinstance(value, bool)
    return [value] if single else value


def _non_blank(values: tuple[str, ...]) -> tuple[str, ...]:
    cleaned = tuple(v.strip() for v in values)
    if any(not v for v in cleaned):
        raise ValueError("blank values match nothing; remove them")
    return cleaned


# An empty list would make a condition that never holds: almost always an editing accident.
Names = Annotated[
    tuple[str, ...],
    BeforeValidator(_one_or_many),
    AfterValidator(_non_blank),
    Field(min_length=1),
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError(f"expected an address or CIDR as text, got {type(value).__name__}")
    try:
        # strict: "10.0.0.5/24" is a typo for a host or a network, not something to guess.
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


Network = Annotated[
    IPNetwork, BeforeValidator(_network), PlainSerializer(lambda n: str(n), return_type=str)
]
Networks = Annotated[tuple[Network, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
Severities = Annotated[tuple[Severity, ...], BeforeValidator(_one_or_many), Field(min_length=1)]


def _pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]

_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _slug(value: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError(
            "use lowercase letters, digits, '-' and '_' (at most 63): the name becomes part of "
            "ticket labels and run tags"
        )
    return value


RuleName = Annotated[str, AfterValidator(_slug)]

# A block reference, as the flows load it: `block-type-slug/block-name` or a bare block name.
_BLOCK_RE = re.compile(r"^([a-z0-9][a-z0-9-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _block_ref(value: str) -> str:
    if not _BLOCK_RE.match(value):
        raise ValueError(
            f"{value!r} is not a block reference like slack-incoming-webhook/riposte-slack"
        )
    return value


BlockRef = Annotated[str, AfterValidator(_block_ref)]
BlockRefs = Annotated[tuple[BlockRef, ...], BeforeValidator(_one_or_many)]

_TEMPLATE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


def _template_name(value: str) -> str:
    if not _TEMPLATE_RE.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not a template file name inside the templates folder")
    return value


TemplateName = Annotated[str, AfterValidator(_template_name)]

# The parts a throttle or suppression key may be made of. `entity:<type>` takes the alert's
# entities of that type (all of them, sorted, so the key does not depend on evidence order).
KEY_FIELDS = (
    "source",
    "alert_type",
    "policy_name",
    "category",
    "severity",
    "service_source",
    "detection_source",
    "incident",
    "title",
)
_ENTITY_KEYS = tuple(f"entity:{t.value}" for t in EntityType)


def _key_parts(value: Any) -> Any:
    if isinstance(value, str):
        value = [part for part in re.split(r"[+,]", value)]
    if not isinstance(value, list | tuple):
        return value
    parts = [p.strip() if isinstance(p, str) else p for p in value]
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"key parts are names, got {type(part).__name__}")
        if part not in KEY_FIELDS and part not in _ENTITY_KEYS:
            known = ", ".join((*KEY_FIELDS, *_ENTITY_KEYS))
            hint = difflib.get_close_matches(part, (*KEY_FIELDS, *_ENTITY_KEYS), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"unknown key part {part!r}{did_you_mean}; known: {known}")
    if not parts:
        raise ValueError("a key needs at least one part")
    return tuple(dict.fromkeys(parts))


KeyParts = Annotated[tuple[str, ...], BeforeValidator(_key_parts)]


def _priority_map(value: Any) -> Any:
    """``priority: high`` is shorthand for the same priority whatever the severity."""
    if isinstance(value, str):
        try:
            priority = Priority(value.strip().lower())
        except ValueError:
            known = ", ".join(p.value for p in Priority)
            raise ValueError(f"{value!r} is not a priority ({known})") from None
        return {severity: priority for severity in Severity}
    return value


PriorityMap = Annotated[dict[Severity, Priority], BeforeValidator(_priority_map)]


# --- models ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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

    ip_cidrs: Annotated[tuple[Network, ...], BeforeValidator(_one_or_many)] = ()
    accounts: Annotated[tuple[str, ...], BeforeValidator(_one_or_many)] = ()


class Digest(_Strict):
    """One summary message per channel per period (periods are UTC slots on the epoch)."""

    channel: BlockRef
    period: Duration


class Templates(_Strict):
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

    def merged_over(self, base: Templates | None) -> Templates:
        if base is None:
            return self
        ours = self.model_dump(exclude_none=True)
        return base.model_copy(update=ours)

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


class Containment(_Strict):
    """What a containing playbook (`escalate`, or one declared `contains=True`) may contain, and
    who must say yes first.

    Nothing runs without an approver's yes unless ``automatic: true`` says so. When nobody
    answers within ``timeout``, ``on_timeout`` decides (reject by default) and the
    ``timeout_channels`` are told.
    """

    actions: Annotated[tuple[ActionKind, ...], BeforeValidator(_one_or_many)] | None = None
    approvers: tuple[Approver, ...] | None = None
    timeout: Duration | None = None
    on_timeout: OnTimeout | None = None
    timeout_channels: BlockRefs | None = None
    automatic: bool | None = None

    def merged_over(self, base: Containment | None) -> Containment:
        if base is None:
            return self
        ours = {k: v for k, v in self if v is not None}
        return base.model_copy(update=ours)


DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=1)


_PLAYBOOK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _playbook_name(value: str) -> str:
    if not _PLAYBOOK_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a playbook name: lowercase letters, digits and '_' (at most 63), "
            "starting with a letter"
        )
    return value


PlaybookName = Annotated[str, AfterValidator(_playbook_name)]


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


class Policy(_Strict):
    """A whole policy file. Build it with `parse_policy` or `load_policy` to get line numbers."""

    version: Literal[1] = 1
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    allow: Allow | None = Field(None, description="Applies to every alert, before any rule")
    rules: tuple[Rule, ...] = ()
    fallback: Fallback = Field(default_factory=Fallback)
    sync: SyncPolicy = Field(
        default_factory=SyncPolicy,
        description="How a ticket's resolution resolves its alerts, and the other way round",
    )

    # Where the policy came from and the line of every field, for messages and `explain`.
    _origin: str = PrivateAttr(default="<policy>")
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)
    _sha256: str = PrivateAttr(default="")
    _catalog: Any = PrivateAttr(default=None)

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def catalog(self) -> PlaybookCatalog:
        """The playbooks this policy was checked against (the process's, by default)."""
        return self._catalog if self._catalog is not None else default_catalog()

    def playbook(self, name: str) -> PlaybookInfo:
        """The registered playbook ``name``; `KeyError` naming the known ones otherwise."""
        catalog = self.catalog
        if name not in catalog:
            raise KeyError(f"unknown playbook {name!r}; known: {', '.join(sorted(catalog))}")
        return catalog[name]

    @property
    def sha256(self) -> str:
        return self._sha256

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of ``loc`` (or of its closest located parent) in the file, if known."""
        path = tuple(loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get((), None)

    def rule_line(self, index: int) -> int | None:
        return self.line_of(("rules", index))

    def template_references(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Every template the policy names, with where it names it."""
        if self.defaults.templates:
            for kind, name in self.defaults.templates.named().items():
                yield ("defaults", "templates", kind), name
        for index, rule in enumerate(self.rules):
            if rule.templates:
                for kind, name in rule.templates.named().items():
                    yield ("rules", index, "templates", kind), name
        if self.fallback.templates:
            for kind, name in self.fallback.templates.named().items():
                yield ("fallback", "templates", kind), name

    def warnings(self) -> list[PolicyProblem]:
        """Things that are legal but probably not meant (unreachable rules)."""
        found = []
        for index, rule in enumerate(self.rules):
            if rule.match.is_catch_all and not rule.continue_ and index + 1 < len(self.rules):
                later = ", ".join(r.name for r in self.rules[index + 1 :])
                found.append(
                    PolicyProblem(
                        self._origin,
                        self.rule_line(index),
                        f"rules[{index}].match",
                        f"matches every alert and does not continue: never reached: {later}",
                    )
                )
        return found


# --- semantic checks (across fields, with precise locations) ---------------------------------

Loc = tuple[str | int, ...]


def _names(catalog: PlaybookCatalog, want: Callable[[PlaybookInfo], bool]) -> str:
    return ", ".join(sorted(name for name, info in catalog.items() if want(info)))


def validate_playbook_params(
    info: PlaybookInfo, given: Mapping[str, Any]
) -> tuple[BaseModel | None, list[tuple[Loc, str]]]:
    """``given`` checked against the playbook's parameter model: the model, or the problems
    (location under the rule, message). Unknown names are refused whatever the model says."""
    model = info.params_model
    known = {(f.alias or n) for n, f in model.model_fields.items()} | set(model.model_fields)
    problems: list[tuple[Loc, str]] = []
    for name in given:
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known | RULE_FIELDS), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            theirs = ", ".join(sorted(known)) or "none"
            problems.append(
                (
                    (name,),
                    f"unknown field{did_you_mean}: neither a rule field nor a parameter of the "
                    f"{info.name} playbook (its parameters: {theirs})",
                )
            )
    try:
        validated = model.model_validate({k: v for k, v in given.items() if k in known})
        return (None if problems else validated), problems
    except ValidationError as exc:
        for error in exc.errors():
            problems.append((tuple(error.get("loc", ())), _message(error)))
        return None, problems
    except Exception as exc:  # the playbook's own validator failed: its author's bug, said here
        problems.append(((), f"the {info.name} playbook's parameter model failed: {_why(exc)}"))
        return None, problems


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _parameter_problems(
    loc: Loc, params: RuleParameters, name: str, defaults: Defaults, catalog: PlaybookCatalog
) -> Iterator[tuple[Loc, str]]:
    info = catalog.get(name)
    if info is None:
        yield (*loc, "playbook"), _unknown_playbook(name, catalog)
        return
    model, problems = validate_playbook_params(info, params.playbook_params)
    for sub, message in problems:
        yield (*loc, *sub), message
    if info.opens_ticket and params.ticket is None and defaults.ticket is None:
        yield loc, f"the {name} playbook needs `ticket: {{system, ...}}` here or in defaults"
    if not info.opens_ticket:
        for field in ("throttle", "group_by_incident", "ticket"):
            if getattr(params, field) not in (None, False):
                yield (*loc, field), f"the {name} playbook opens no ticket: remove `{field}`"
    if info.uses_digest and params.digest is None and defaults.digest is None:
        yield loc, f"the {name} playbook needs `digest: {{channel, period}}` here or in defaults"
    if params.digest is not None and not info.uses_digest:
        users = _names(catalog, lambda i: i.uses_digest)
        yield (
            (*loc, "digest"),
            f"the {name} playbook uses no digest (those that do: {users}); remove `digest`",
        )
    if params.containment is not None and not info.contains:
        users = _names(catalog, lambda i: i.contains)
        yield (
            (*loc, "containment"),
            f"the {name} playbook does not contain (those that do: {users}); remove `containment`",
        )
    if info.contains:
        merged = (params.containment or Containment()).merged_over(defaults.containment)
        automatic = merged.automatic or params.containment_requires_approval is False
        if merged.actions and not automatic and not merged.approvers:
            yield (
                (*loc, "containment"),
                (
                    "containment actions need `approvers` (here or in defaults.containment), "
                    "or `automatic: true` to run without approval"
                ),
            )
    if model is not None:
        try:
            own = list(info.problems(model, params, defaults))
        except Exception as exc:  # the playbook's own check failed: its author's bug
            own = [((), f"the {name} playbook's own checks failed: {_why(exc)}")]
        for sub, message in own:
            yield (*loc, *sub), message


def _unknown_playbook(name: str, catalog: PlaybookCatalog) -> str:
    known = ", ".join(sorted(catalog))
    hint = difflib.get_close_matches(name, sorted(catalog), n=1, cutoff=0.75)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown playbook {name!r}{did_you_mean}; known: {known}"


def _unknown_playbooks(data: Any, catalog: PlaybookCatalog) -> Iterator[tuple[Loc, str]]:
    """Unknown playbook names in the raw document, for a policy that failed validation (the
    other checks need a valid policy; this one is worth saying at once)."""
    if not isinstance(data, dict):
        return
    places: list[tuple[Loc, Any]] = []
    rules = data.get("rules")
    if isinstance(rules, list):
        places += [(("rules", i), r) for i, r in enumerate(rules)]
    places.append((("fallback",), data.get("fallback")))
    for loc, item in places:
        name = item.get("playbook") if isinstance(item, dict) else None
        if isinstance(name, str) and _PLAYBOOK_NAME_RE.match(name) and name not in catalog:
            yield (*loc, "playbook"), _unknown_playbook(name, catalog)


def _semantic_problems(policy: Policy, catalog: PlaybookCatalog) -> Iterator[tuple[Loc, str]]:
    seen: dict[str, int] = {}
    for index, rule in enumerate(policy.rules):
        loc: Loc = ("rules", index)
        if rule.name in seen:
            first = seen[rule.name]
            yield (*loc, "name"), f"rule name {rule.name!r} is already used by rules[{first}]"
        seen.setdefault(rule.name, index)
        info = catalog.get(rule.playbook)
        if info is not None and info.gating == "ignore" and rule.continue_:
            yield (*loc, "continue"), "a rule that ignores the alert and continues does nothing"
        yield from _parameter_problems(loc, rule, rule.playbook, policy.defaults, catalog)
    yield from _parameter_problems(
        ("fallback",), policy.fallback, policy.fallback.playbook, policy.defaults, catalog
    )


# --- YAML with line numbers ------------------------------------------------------------------


class _Lines:
    """Line of every mapping key and sequence item of a composed YAML document."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root
        self.lines: dict[Loc, int] = {(): root.start_mark.line + 1}
        self.duplicates: list[tuple[Loc, int, str]] = []
        self._budget = MAX_YAML_NODES
        self._walk(root, ())

    def _walk(self, node: yaml.Node, loc: Loc) -> None:
        # Aliases make a node reachable many times: the budget stops alias bombs and cycles.
        self._budget -= 1
        if self._budget < 0:
            raise _TooBig
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is None:
                    continue
                if name in seen and name != "<<":
                    self.duplicates.append((loc, key.start_mark.line + 1, name))
                seen.add(name)
                self.lines.setdefault((*loc, name), key.start_mark.line + 1)
                self._walk(value, (*loc, name))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.lines.setdefault((*loc, index), item.start_mark.line + 1)
                self._walk(item, (*loc, index))


class _TooBig(Exception):
    pass


_FIELD_PART_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _resolve(lines: dict[Loc, int], loc: Sequence[Any]) -> tuple[Loc, int | None]:
    """Drop the parts of a pydantic location that are not in the file (union member tags).

    A field name that is absent (a missing required field) is kept, so the message names it,
    and the line is its parent's.
    """
    path: list[str | int] = []
    line = lines.get(())
    for part in loc:
        candidate = (*path, part)
        if candidate in lines:
            path.append(part)
            line = lines[candidate]
        elif isinstance(part, str) and _FIELD_PART_RE.match(part) and part != "[key]":
            path.append(part)
            break
    return tuple(path), line


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _all_field_names() -> list[str]:
    names: set[str] = set()
    for model in (
        Policy, Rule, Fallback, Defaults, Match, TicketTarget, Throttle, Suppress,
        Allow, Digest, Templates,
    ):  # fmt: skip
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
    return sorted(names)


def _message(error: Any) -> str:
    kind = error.get("type")
    msg = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        loc = error.get("loc", ())
        name = str(loc[-1]) if loc else ""
        hint = difflib.get_close_matches(name, _all_field_names(), n=1)
        return f"unknown field{f' (did you mean {hint[0]!r}?)' if hint else ''}"
    if kind == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def _problems_from_validation(
    exc: ValidationError, lines: dict[Loc, int], origin: str
) -> list[PolicyProblem]:
    problems: dict[tuple[Loc, str], PolicyProblem] = {}
    for error in exc.errors():
        path, line = _resolve(lines, error.get("loc", ()))
        message = _message(error)
        # Union members each report the same spot; one line per spot and message is enough.
        problems.setdefault((path, message), PolicyProblem(origin, line, format_loc(path), message))
    return sorted(problems.values(), key=lambda p: (p.line or 0, p.field))


def parse_policy(
    text: str, origin: str = "<policy>", catalog: PlaybookCatalog | None = None
) -> Policy:
    """Validate policy ``text`` against the playbooks of ``catalog`` (the process's registered
    playbooks by default); raise `PolicyError` listing every problem with its line."""
    catalog = catalog if catalog is not None else default_catalog()
    if len(text.encode("utf-8", "replace")) > MAX_POLICY_BYTES:
        raise PolicyError(
            [PolicyProblem(origin, None, "(file)", f"larger than {MAX_POLICY_BYTES} bytes")]
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "not valid YAML"
        raise PolicyError([PolicyProblem(origin, line, "(yaml)", problem)]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyProblem(origin, None, "(yaml)", str(exc))]) from None
    if root is None:
        raise PolicyError([PolicyProblem(origin, 1, "(document)", "the policy file is empty")])
    try:
        index = _Lines(root)
    except (_TooBig, RecursionError):
        raise PolicyError(
            [PolicyProblem(origin, None, "(yaml)", "too many nodes (deeply nested aliases?)")]
        ) from None
    problems = [
        PolicyProblem(origin, line, format_loc((*loc, name)), "duplicate key: one would be lost")
        for loc, line, name in index.duplicates
    ]
    if not isinstance(root, yaml.MappingNode):
        problems.append(
            PolicyProblem(origin, index.lines[()], "(document)", "a policy is a mapping of fields")
        )
        raise PolicyError(problems)
    data = yaml.SafeLoader(text).get_single_data()
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        found = problems + _problems_from_validation(exc, index.lines, origin)
        for loc, message in _unknown_playbooks(data, catalog):
            path, line = _resolve(index.lines, loc)
            found.append(PolicyProblem(origin, line, format_loc(path), message))
        raise PolicyError(sorted(found, key=lambda p: (p.line or 0, p.field))) from None
    # An unknown playbook is reported alone, as a schema error is: its rule cannot be checked.
    unknown = list(_unknown_playbooks(data, catalog))
    try:
        semantic = unknown or list(_semantic_problems(policy, catalog))
    except Exception as exc:  # a playbook's code failed in a way the guards did not foresee
        semantic = [((), f"checking the playbooks' parameters failed: {_why(exc)}")]
    for loc, message in semantic:
        path, line = _resolve(index.lines, loc)
        problems.append(PolicyProblem(origin, line, format_loc(path), message))
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.line or 0, p.field)))
    policy._origin = origin
    policy._lines = index.lines
    policy._sha256 = hashlib.sha256(text.encode()).hexdigest()
    policy._catalog = catalog
    return policy


def read_policy_text(path: Path) -> str:
    """The text of a policy file; unreadable files raise `PolicyError` naming the reason."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "is a directory, not a file"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
    raise PolicyError([PolicyProblem(str(path), None, "(file)", reason)])


def load_policy(path: Path, catalog: PlaybookCatalog | None = None) -> Policy:
    return parse_policy(read_policy_text(path), str(path), catalog)


def default_policy_text() -> str:
    return resources.files("riposte").joinpath("policies/default.yaml").read_text(encoding="utf-8")


def default_policy() -> Policy:
    """The policy shipped with Riposte (``riposte/policies/default.yaml``)."""
    return parse_policy(default_policy_text(), DEFAULT_POLICY_NAME)
