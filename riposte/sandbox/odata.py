"""The subset of OData ``$filter`` and ``$orderby`` that Graph accepts on security/alerts_v2, and
the comparisons and literals that Defender for Endpoint's ``$filter`` shares with it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from riposte.alerts.incidents import IncidentClassification, IncidentDetermination
from riposte.sandbox.clock import parse_ticks

DATETIME_FIELDS = frozenset({"createdDateTime", "lastUpdateDateTime"})
STRING_FIELDS = frozenset(
    {
        "severity",
        "status",
        "serviceSource",
        "detectionSource",
        "classification",
        "determination",
        "assignedTo",
    }
)
# Properties of the alert that exist but Graph refuses to filter on (400, as `investigationState`).
NOT_FILTERABLE = frozenset(
    {
        "id",
        "title",
        "description",
        "category",
        "incidentId",
        "providerAlertId",
        "investigationState",
        "resolvedDateTime",
        "firstActivityDateTime",
        "lastActivityDateTime",
        "productName",
        "detectorId",
        "tenantId",
    }
)

SEVERITIES = ("unknown", "informational", "low", "medium", "high")
STATUSES = ("unknown", "new", "inProgress", "resolved")
# Graph's own enums, as the domain spells them (riposte.alerts.incidents).
CLASSIFICATIONS: tuple[str, ...] = get_args(IncidentClassification)
DETERMINATIONS: tuple[str, ...] = get_args(IncidentDetermination)
ENUMS: dict[str, tuple[str, ...]] = {
    "severity": SEVERITIES,
    "status": STATUSES,
    "classification": CLASSIFICATIONS,
    "determination": DETERMINATIONS,
}
OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le")
_OPERATOR_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
# The same comparisons as JQL and ServiceNow's encoded queries write them.
OPERATOR_OF_SYMBOL = {"=": "eq", "!=": "ne", ">": "gt", ">=": "ge", "<": "lt", "<=": "le"}
# Literals, as regular expressions: a quoted string ('' inside is a quote), a DateTimeOffset.
STRING_LITERAL = r"'(?:[^']|'')*'"
DATETIME_LITERAL = r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?"

_TOKEN_RE = re.compile(
    rf"""\s*(?:
        (?P<string>{STRING_LITERAL})
      | (?P<datetime>{DATETIME_LITERAL})
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<other>\S)
    )""",
    re.VERBOSE,
)


class ODataError(ValueError):
    """A query option Graph would answer with 400 BadRequest."""


@dataclass(frozen=True)
class Clause:
    field: str
    operator: str
    value: int | str | None  # ticks for datetime fields, text for the others, None for null

    def matches(self, alert: Mapping[str, Any]) -> bool:
        actual = _comparable(self.field, alert.get(self.field))
        return compare(self.operator, actual, _comparable(self.field, self.value))


def compare(operator: str, actual: Any, expected: Any) -> bool:
    """``actual operator expected``, with OData's null semantics: only eq/ne are meaningful,
    comparisons with null are false."""
    if actual is None or expected is None:
        if operator == "eq":
            return actual is None and expected is None
        if operator == "ne":
            return not (actual is None and expected is None)
        return False
    return COMPARE[operator](actual, expected)


def _comparable(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in DATETIME_FIELDS:
        return value if isinstance(value, int) else parse_ticks(str(value))
    if field == "severity":
        # Enums compare by their underlying value, which follows the declared order.
        return SEVERITIES.index(value) if value in SEVERITIES else -1
    return str(value)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None or match.end() == position:
            break
        kind = match.lastgroup
        if kind is not None:
            tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


def parse_filter(text: str) -> list[Clause]:
    """Clauses of ``field op value [and field op value ...]``; raises `ODataError`."""
    tokens = _tokens(text)
    if not tokens:
        raise ODataError("Invalid filter clause: the filter expression is empty.")
    clauses: list[Clause] = []
    index = 0
    while True:
        if index + 3 > len(tokens):
            at = tokens[index][2] if index < len(tokens) else len(text)
            raise ODataError(f"Invalid filter clause: Syntax error at position {at} in '{text}'.")
        (field_kind, field, field_at), (op_kind, operator, op_at), value_token = tokens[
            index : index + 3
        ]
        if field_kind != "word":
            raise ODataError(
                f"Invalid filter clause: Syntax error at position {field_at} in '{text}'."
            )
        if op_kind != "word" or operator not in OPERATORS:
            raise ODataError(
                f"Invalid filter clause: Syntax error at position {op_at} in '{text}'."
            )
        clauses.append(_clause(field, operator, value_token, text))
        index += 3
        if index == len(tokens):
            return clauses
        kind, word, at = tokens[index]
        if kind != "word" or word != "and":
            raise ODataError(
                f"Invalid filter clause: Syntax error at position {at} in '{text}'"
                " (only 'and' may join comparisons)."
            )
        index += 1


def _clause(field: str, operator: str, token: tuple[str, str, int], text: str) -> Clause:
    kind, raw, at = token
    if field not in DATETIME_FIELDS and field not in STRING_FIELDS:
        if field in NOT_FILTERABLE:
            raise ODataError(
                f"Invalid filter clause: The property '{field}' is not supported in $filter."
            )
        raise ODataError(
            f"Invalid filter clause: Could not find a property named '{field}' on type"
            " 'microsoft.graph.security.alert'."
        )
    if kind == "word" and raw == "null":
        return Clause(field, operator, None)
    if field in DATETIME_FIELDS:
        if kind == "string":
            raise ODataError(
                "Invalid filter clause: A binary operator with incompatible types was detected."
                " Found operand types 'Edm.DateTimeOffset' and 'Edm.String' for operator kind"
                f" '{_OPERATOR_KIND[operator]}'."
            )
        ticks = parse_ticks(raw) if kind == "datetime" else None
        if ticks is None:
            raise ODataError(
                f"Invalid filter clause: Syntax error at position {at} in '{text}':"
                f" '{raw}' is not a valid Edm.DateTimeOffset literal."
            )
        return Clause(field, operator, ticks)
    if kind != "string":
        raise ODataError(
            f"Invalid filter clause: Syntax error at position {at} in '{text}':"
            " string values must be single-quoted."
        )
    value = raw[1:-1].replace("''", "'")
    allowed = ENUMS.get(field)
    if allowed is not None and value not in allowed and value != "unknownFutureValue":
        raise ODataError(
            f"Invalid filter clause: The string '{value}' is not a valid enumeration type constant."
        )
    return Clause(field, operator, value)


def parse_orderby(text: str) -> tuple[str, bool]:
    """``(field, descending)`` for ``createdDateTime|lastUpdateDateTime [asc|desc]``."""
    parts = text.split()
    if (
        not parts
        or len(parts) > 2
        or parts[0] not in DATETIME_FIELDS
        or (len(parts) == 2 and parts[1] not in ("asc", "desc"))
    ):
        raise ODataError(
            f"Invalid $orderby clause '{text}': the alerts can be ordered by createdDateTime or"
            " lastUpdateDateTime, asc or desc."
        )
    return parts[0], len(parts) == 2 and parts[1] == "desc"


def sort_key(field: str) -> Callable[[Mapping[str, Any]], tuple[int, str]]:
    def key(alert: Mapping[str, Any]) -> tuple[int, str]:
        ticks = _comparable(field, alert.get(field))
        return (ticks if isinstance(ticks, int) else -1, str(alert.get("id", "")))

    return key
