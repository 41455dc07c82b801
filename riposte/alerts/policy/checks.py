"""Checks across fields that need the playbooks: names, parameters, tickets, digests, approvers.

They run on a policy that passed the schema; each problem is (location, message), and the
location is mapped to its line by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from operator import attrgetter
from typing import Any

from pydantic import BaseModel, ValidationError

from riposte.alerts.policy.catalog import PlaybookCatalog, PlaybookInfo
from riposte.alerts.policy.document import Policy
from riposte.alerts.policy.fields import PLAYBOOK_NAME_RE, did_you_mean
from riposte.alerts.policy.lines import error_message
from riposte.alerts.policy.model import (
    RULE_FIELDS,
    Containment,
    Defaults,
    RuleParameters,
)
from riposte.alerts.policy.problems import Loc


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
            hint = did_you_mean(name, known | RULE_FIELDS)
            theirs = ", ".join(sorted(known)) or "none"
            problems.append(
                (
                    (name,),
                    f"unknown field{hint}: neither a rule field nor a parameter of the "
                    f"{info.name} playbook (its parameters: {theirs})",
                )
            )
    try:
        validated = model.model_validate({k: v for k, v in given.items() if k in known})
        return (None if problems else validated), problems
    except ValidationError as exc:
        for error in exc.errors():
            problems.append((tuple(error.get("loc", ())), error_message(error)))
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
    for field, ability, lacking in (
        ("digest", "uses_digest", "uses no digest"),
        ("containment", "contains", "does not contain"),
    ):
        if getattr(params, field) is not None and not getattr(info, ability):
            users = _names(catalog, attrgetter(ability))
            yield (
                (*loc, field),
                f"the {name} playbook {lacking} (those that do: {users}); remove `{field}`",
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
    return f"unknown playbook {name!r}{did_you_mean(name, catalog, cutoff=0.75)}; known: {known}"


def unknown_playbooks(data: Any, catalog: PlaybookCatalog) -> Iterator[tuple[Loc, str]]:
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
        if isinstance(name, str) and PLAYBOOK_NAME_RE.match(name) and name not in catalog:
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


def playbook_problems(policy: Policy, data: Any, catalog: PlaybookCatalog) -> list[tuple[Loc, str]]:
    """The problems of a valid ``policy`` (parsed from ``data``) against ``catalog``."""
    # An unknown playbook is reported alone, as a schema error is: its rule cannot be checked.
    unknown = list(unknown_playbooks(data, catalog))
    try:
        return unknown or list(_semantic_problems(policy, catalog))
    except Exception as exc:  # a playbook's code failed in a way the guards did not foresee
        return [((), f"checking the playbooks' parameters failed: {_why(exc)}")]
