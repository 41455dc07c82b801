"""The field types of a policy: names, networks, patterns, references and keys, each validated.

Each type is an ``Annotated`` alias whose validators turn YAML values into the value the models
hold, or raise a `ValueError` whose text is the problem shown to the user.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

from riposte.alerts.model import EntityType, Severity
from riposte.alerts.response import Priority


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``name``, or nothing."""
    hint = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def one_or_many(value: Any) -> Any:
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
    BeforeValidator(one_or_many),
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
Networks = Annotated[tuple[Network, ...], BeforeValidator(one_or_many), Field(min_length=1)]
Severities = Annotated[tuple[Severity, ...], BeforeValidator(one_or_many), Field(min_length=1)]


def _pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]


def _matching(regex: re.Pattern[str], problem: str) -> Callable[[str], str]:
    """A validator refusing what ``regex`` does not match; ``problem`` may name ``{value!r}``."""

    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(problem.format(value=value))
        return value

    return check


RuleName = Annotated[
    str,
    AfterValidator(
        _matching(
            re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$"),
            "use lowercase letters, digits, '-' and '_' (at most 63): the name becomes part of "
            "ticket labels and run tags",
        )
    ),
]

# A block reference, as the flows load it: `block-type-slug/block-name` or a bare block name.
BlockRef = Annotated[
    str,
    AfterValidator(
        _matching(
            re.compile(r"^([a-z0-9][a-z0-9-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$"),
            "{value!r} is not a block reference like slack-incoming-webhook/riposte-slack",
        )
    ),
]
BlockRefs = Annotated[tuple[BlockRef, ...], BeforeValidator(one_or_many)]

# Path parts below the templates folder; the lookahead refuses '..' anywhere in the name.
TemplateName = Annotated[
    str,
    AfterValidator(
        _matching(
            re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"),
            "{value!r} is not a template file name inside the templates folder",
        )
    ),
]

PLAYBOOK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

PlaybookName = Annotated[
    str,
    AfterValidator(
        _matching(
            PLAYBOOK_NAME_RE,
            "{value!r} is not a playbook name: lowercase letters, digits and '_' (at most 63), "
            "starting with a letter",
        )
    ),
]

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
            hint = did_you_mean(part, (*KEY_FIELDS, *_ENTITY_KEYS))
            raise ValueError(f"unknown key part {part!r}{hint}; known: {known}")
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


class Playbook(StrEnum):
    """The names of the built-in playbooks (``riposte.playbooks.builtin``). A rule may name any
    registered playbook; these are the ones every installation has."""

    TICKET_AND_NOTIFY = "ticket_and_notify"
    CLOSE_BENIGN = "close_benign"
    DIGEST = "digest"
    ESCALATE = "escalate"
    IGNORE = "ignore"
