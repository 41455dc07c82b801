"""ServiceNow encoded queries (``sysparm_query``): terms joined by ``^`` (AND) and ``^OR``, then
``ORDERBY``/``ORDERBYDESC``; parsed leniently, as the platform does, and applied to records."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from riposte.sandbox.clock import parse_servicenow_time, servicenow_time
from riposte.sandbox.odata import COMPARE, OPERATOR_OF_SYMBOL

DATE_FIELDS = frozenset(
    {
        "sys_created_on",
        "sys_updated_on",
        "opened_at",
        "resolved_at",
        "closed_at",
        "reopened_time",
    }
)


@dataclass(frozen=True)
class _Condition:
    field: str
    test: Callable[[str], bool]


_TERM_RE = re.compile(
    r"^([a-z_][a-z0-9_.]*?)"
    r"(!=|>=|<=|=|>|<|LIKE|STARTSWITH|ENDSWITH|ISNOTEMPTY|ISEMPTY|IN)(.*)$"
)
_DATE_GENERATE_RE = re.compile(
    r"^javascript:\s*gs\.dateGenerate\(\s*'(\d{4}-\d{2}-\d{2})'\s*,\s*'([^']*)'\s*\)\s*$"
)


# `new GlideDateTime('YYYY-MM-DD HH:MM:SS')`: the string constructor reads UTC.
_GLIDE_DATE_TIME_RE = re.compile(
    r"^javascript:\s*new\s+GlideDateTime\(\s*'(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})'\s*\)\s*$"
)


def _date_value(value: str) -> str | None:
    """A date/time query value as the stored ``YYYY-MM-DD HH:MM:SS`` (UTC), or None when it is
    not one the sandbox evaluates (`gs.dateGenerate('date','time'|'start'|'end')`, a plain
    ``YYYY-MM-DD HH:MM:SS``, or a date)."""
    glide = _GLIDE_DATE_TIME_RE.match(value.strip())
    if glide:
        value = glide.group(1)
    match = _DATE_GENERATE_RE.match(value.strip())
    if match:
        day, time_part = match.groups()
        time_part = {"start": "00:00:00", "end": "23:59:59"}.get(time_part, time_part)
        value = f"{day} {time_part}"
    value = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += " 00:00:00"
    parsed = parse_servicenow_time(value)
    return servicenow_time(parsed) if parsed else None


def _ordered(operator: str, value: str, date: bool) -> Callable[[str], bool] | None:
    test = COMPARE[OPERATOR_OF_SYMBOL[operator]]
    if date:
        bound = _date_value(value)
        if bound is None:
            return None
        return lambda v: bool(v) and test(v, bound)
    try:
        number = float(value)
    except ValueError:
        return lambda v: test(v, value)

    def numeric(v: str) -> bool:
        try:
            return test(float(v), number)
        except ValueError:
            return False

    return numeric


def _condition(field: str, operator: str, value: str) -> _Condition | None:
    """One query term; None when its value cannot be evaluated (the term is then dropped)."""
    date = field in DATE_FIELDS
    if operator in (">", ">=", "<", "<="):
        ordered = _ordered(operator, value, date)
        return _Condition(field, ordered) if ordered else None
    if date and operator in ("=", "!=") and value.startswith("javascript:"):
        normal = _date_value(value)
        if normal is None:
            return None
        value = normal
    tests: dict[str, Callable[[str], bool]] = {
        "=": lambda v: v == value,
        "!=": lambda v: v != value,
        "LIKE": lambda v: value.lower() in v.lower(),
        "STARTSWITH": lambda v: v.lower().startswith(value.lower()),
        "ENDSWITH": lambda v: v.lower().endswith(value.lower()),
        "ISEMPTY": lambda v: v == "",
        "ISNOTEMPTY": lambda v: v != "",
        "IN": lambda v: v in value.split(","),
    }
    return _Condition(field, tests[operator])


def parse_query(
    query: str, known_fields: set[str]
) -> tuple[list[list[_Condition]], list[tuple[str, bool]]]:
    """AND-ed groups of OR-ed conditions, and the ordering.

    Like ServiceNow (without ``glide.invalid_query.returns_no_rows``), a term that does not
    parse, names a field the table does not have, or holds a value that cannot be evaluated is
    dropped, so it can match everything.
    """
    groups: list[list[_Condition]] = []
    order: list[tuple[str, bool]] = []
    for raw_term in query.split("^"):
        term = raw_term.strip()
        if term.startswith("ORDERBYDESC"):
            if term[11:] in known_fields:
                order.append((term[11:], True))
            continue
        if term.startswith("ORDERBY"):
            if term[7:] in known_fields:
                order.append((term[7:], False))
            continue
        alternative = term.startswith("OR") and bool(groups)
        match = _TERM_RE.match(term[2:] if alternative else term)
        if match is None or match.group(1) not in known_fields:
            continue
        condition = _condition(*match.groups())
        if condition is None:
            continue
        if alternative:
            groups[-1].append(condition)
        else:
            groups.append([condition])
    return groups, order


def _by(field: str) -> Callable[[dict[str, str]], str]:
    return lambda record: record.get(field, "")


def select(records: list[dict[str, str]], query: str, known: set[str]) -> list[dict[str, str]]:
    """The records ``query`` matches, in its order (``known``: the fields it may name)."""
    groups, order = parse_query(query, known)
    matching = [
        r for r in records if all(any(c.test(r.get(c.field, "")) for c in g) for g in groups)
    ]
    for field, descending in reversed(order):  # stable sorts, last key first
        matching.sort(key=_by(field), reverse=descending)
    return matching
