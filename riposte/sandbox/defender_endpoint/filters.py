"""Defender for Endpoint's ``$filter``: ``field op value`` clauses joined by ``and``, on the OData
comparisons and literals of `riposte.sandbox.odata`.

MDE has its own grammar beside Graph's (`odata.parse_filter`): property names match
case-insensitively, and its 400s are worded as MDE words them. Alerts take numbers and null as
values (`riposte.sandbox.defender_endpoint.alerts`); machine actions and indicators take
booleans, compare their strings with eq and ne only, and read operators in any case
(`entity_filter`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.defender_endpoint.api import bad_request
from riposte.sandbox.odata import COMPARE, DATETIME_LITERAL, STRING_LITERAL

_OPERATOR = r"(?P<op>eq|ne|gt|ge|lt|le)"
ALERT_CLAUSE = re.compile(
    rf"^\s*(?P<field>[A-Za-z]+)\s+{_OPERATOR}\s+"
    rf"(?P<value>{STRING_LITERAL}|-?\d+|null|{DATETIME_LITERAL})\s*$"
)
ENTITY_CLAUSE = re.compile(
    rf"^\s*(?P<field>[A-Za-z]+)\s+{_OPERATOR}\s+"
    rf"(?P<value>{STRING_LITERAL}|true|false|{DATETIME_LITERAL})\s*$",
    re.IGNORECASE,
)
Predicate = Callable[[dict[str, Any]], bool]


def clauses(
    text: str, fields: dict[str, str], pattern: re.Pattern[str]
) -> Iterator[tuple[str, str, str]]:
    """``(property, operator, raw value)`` of each clause, one at a time (so a clause's value is
    refused before the next clause is read); ``fields`` maps lowercase names to properties."""
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = pattern.match(part)
        if match is None:
            raise bad_request(f"Invalid filter clause: syntax error in '{part.strip()}'.")
        field = fields.get(match["field"].lower())
        if field is None:
            raise bad_request(
                f"Invalid filter clause: the property '{match['field']}' is not supported in"
                " $filter (supported: " + ", ".join(sorted(fields.values())) + ")."
            )
        yield field, match["op"], match["value"]


def datetime_value(field: str, raw: str) -> int:
    """The ticks of a DateTimeOffset literal (a quoted one is not)."""
    value = parse_ticks(raw) if not raw.startswith("'") else None
    if value is None:
        raise bad_request(
            f"Invalid filter clause: '{raw}' is not a valid DateTimeOffset for {field}."
        )
    return value


def quoted_value(field: str, raw: str) -> str:
    if not raw.startswith("'"):
        raise bad_request(f"Invalid filter clause: {field} values must be quoted.")
    return raw[1:-1].replace("''", "'")


def entity_filter(
    text: str | None,
    strings: tuple[str, ...],
    datetimes: tuple[str, ...] = (),
    booleans: tuple[str, ...] = (),
) -> list[Predicate]:
    """A ``$filter`` over an entity's string, datetime and boolean properties (none or an empty
    one: no test); anything else is the API's 400."""
    if not text:
        return []
    fields = {name.lower(): name for name in (*strings, *datetimes, *booleans)}
    predicates: list[Predicate] = []
    for field, operator, raw in clauses(text, fields, ENTITY_CLAUSE):
        op = operator.lower()
        if field in datetimes:
            predicates.append(_compare_ticks(field, op, datetime_value(field, raw)))
            continue
        if op not in ("eq", "ne"):
            raise bad_request(f"Invalid filter clause: '{op}' cannot compare {field}.")
        if field in booleans:
            if raw.lower() not in ("true", "false"):
                raise bad_request(f"Invalid filter clause: {field} is true or false.")
            value: Any = raw.lower() == "true"
        else:
            value = quoted_value(field, raw)
        predicates.append(_compare_value(field, op, value))
    return predicates


def _compare_ticks(field: str, op: str, wanted: int) -> Predicate:
    def check(entity: dict[str, Any]) -> bool:
        actual = parse_ticks(str(entity.get(field) or ""))
        # An entity without the time matches no comparison, ne included (not OData's null rule).
        return actual is not None and COMPARE[op](actual, wanted)

    return check


def _compare_value(field: str, op: str, wanted: Any) -> Predicate:
    def check(entity: dict[str, Any]) -> bool:
        return (entity.get(field) == wanted) == (op == "eq")

    return check
