"""Where a problem is in the file: the YAML composed into nodes with their lines, and pydantic
error locations mapped to ``file:line: field``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from riposte.alerts.policy.document import Policy
from riposte.alerts.policy.fields import did_you_mean
from riposte.alerts.policy.model import (
    Allow,
    Defaults,
    Digest,
    Fallback,
    Match,
    Rule,
    Suppress,
    Templates,
    Throttle,
    TicketTarget,
)
from riposte.alerts.policy.problems import Loc, PolicyError, PolicyProblem, by_line, format_loc

# Far more nodes than a real policy has: more, once aliases are followed, is an alias bomb.
MAX_YAML_NODES = 200_000


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


def line_index(text: str, origin: str) -> tuple[dict[Loc, int], list[PolicyProblem]]:
    """The line of every field of the YAML ``text``, and its duplicate keys as problems.

    Raises `PolicyError` when the text is not YAML, is empty, has too many nodes once aliases
    are followed, or is not a mapping.
    """
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
    return index.lines, problems


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


def located(lines: dict[Loc, int], origin: str, loc: Sequence[Any], message: str) -> PolicyProblem:
    """``message`` about ``loc`` (a pydantic or check location), at its line in the file."""
    path, line = _resolve(lines, loc)
    return PolicyProblem(origin, line, format_loc(path), message)


def _all_field_names() -> list[str]:
    names: set[str] = set()
    for model in (
        Policy, Rule, Fallback, Defaults, Match, TicketTarget, Throttle, Suppress,
        Allow, Digest, Templates,
    ):  # fmt: skip
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
    return sorted(names)


def error_message(error: Any) -> str:
    """The text of one pydantic error, as the user reads it (unknown fields get a hint)."""
    kind = error.get("type")
    msg = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        loc = error.get("loc", ())
        name = str(loc[-1]) if loc else ""
        return f"unknown field{did_you_mean(name, _all_field_names())}"
    if kind == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def problems_from_validation(
    exc: ValidationError, lines: dict[Loc, int], origin: str
) -> list[PolicyProblem]:
    problems: dict[tuple[Loc, str], PolicyProblem] = {}
    for error in exc.errors():
        path, line = _resolve(lines, error.get("loc", ()))
        message = error_message(error)
        # Union members each report the same spot; one line per spot and message is enough.
        problems.setdefault((path, message), PolicyProblem(origin, line, format_loc(path), message))
    return sorted(problems.values(), key=by_line)
