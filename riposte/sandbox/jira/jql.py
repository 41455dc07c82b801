"""The JQL the Jira simulator reads: ``field op value`` clauses (``=``, ``!=``, ``~``, ``in``,
``not in``, and comparisons of dates) joined by AND, then ORDER BY; date literals read in the
account's time zone, or periods counted from now."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from riposte.sandbox.clock import parse_jira_time, utcnow
from riposte.sandbox.jira.api import DATE_FIELDS, bad
from riposte.sandbox.odata import COMPARE, OPERATOR_OF_SYMBOL
from riposte.sandbox.state import JiraIssue, SandboxState

_JQL_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>!=|>=|<=|=|>|<|~|,|\(|\))
      | (?P<word>[^\s=!~<>,()"']+)
    )""",
    re.VERBOSE,
)
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*-\d+$")
JQL_FIELDS = {
    "labels": "labels",
    "project": "project",
    "key": "key",
    "issuekey": "key",
    "id": "key",
    "status": "status",
    "summary": "summary",
    "priority": "priority",
    "issuetype": "issuetype",
    "type": "issuetype",
    "updated": "updated",
    "updateddate": "updated",
    "created": "created",
    "createddate": "created",
    "resolved": "resolutiondate",
    "resolutiondate": "resolutiondate",
}
ORDER_FIELDS = ("created", "updated", "key")
COMPARISONS = (">", ">=", "<", "<=")
_DATE_FORMATS = ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d")
_PERIOD_RE = re.compile(r"^([+-]?)\s*((?:\d+\s*[wdhm]\s*)+)$")
_PERIOD_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}


# A test of an issue against one clause: the issue and the fields search sees for it.
Test = Callable[[JiraIssue, dict[str, Any]], bool]


@dataclass(frozen=True)
class _Jql:
    conditions: list[Test]
    order: list[tuple[str, bool]]


def _jql_tokens(jql: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(jql):
        match = _JQL_TOKEN.match(jql, position)
        if match is None or match.end() == position:
            if jql[position:].strip():
                raise bad(f"Error in the JQL Query: unexpected character at {position}.")
            break
        kind = match.lastgroup
        if kind is not None:
            text = match.group(kind)
            if kind == "string":
                text = re.sub(r"\\(.)", r"\1", text[1:-1])
            tokens.append((kind, text))
        position = match.end()
    return tokens


def parse_jql(state: SandboxState, jql: str) -> _Jql:
    tokens = _jql_tokens(jql)
    position = 0

    def peek_word(offset: int = 0) -> str | None:
        at = position + offset
        if at < len(tokens) and tokens[at][0] == "word":
            return tokens[at][1].lower()
        return None

    def expect_value() -> str:
        nonlocal position
        if position >= len(tokens) or tokens[position][0] not in ("word", "string"):
            raise bad("Error in the JQL Query: Expecting a value but got the end of the query.")
        value = tokens[position][1]
        position += 1
        return value

    conditions: list[Test] = []
    while position < len(tokens) and not (peek_word() == "order" and peek_word(1) == "by"):
        name = peek_word()
        if name is None:
            raise bad(
                f"Error in the JQL Query: Expecting a field name but got '{tokens[position][1]}'."
            )
        if name not in JQL_FIELDS:
            raise bad(
                f"Field '{tokens[position][1]}' does not exist or you do not have permission to"
                " view it."
            )
        position += 1
        if peek_word() == "in" or (peek_word() == "not" and peek_word(1) == "in"):
            negate = peek_word() == "not"
            position += 2 if negate else 1
            if position >= len(tokens) or tokens[position] != ("op", "("):
                raise bad("Error in the JQL Query: Expecting '(' after 'in'.")
            position += 1
            values = [expect_value()]
            while position < len(tokens) and tokens[position] == ("op", ","):
                position += 1
                values.append(expect_value())
            if position >= len(tokens) or tokens[position] != ("op", ")"):
                raise bad("Error in the JQL Query: Expecting ')' to close the list.")
            position += 1
            operator = "not in" if negate else "in"
        else:
            if position >= len(tokens) or tokens[position][0] != "op":
                raise bad("Error in the JQL Query: Expecting an operator after the field name.")
            operator = tokens[position][1]
            dated = JQL_FIELDS[name] in DATE_FIELDS
            allowed = ("=", "!=", *COMPARISONS) if dated else ("=", "!=", "~")
            if operator not in allowed:
                raise bad(
                    f"The operator '{operator}' is not supported by the '{tokens[position - 1][1]}'"
                    " field."
                )
            position += 1
            values = [expect_value()]
        field = JQL_FIELDS[name]
        if field in DATE_FIELDS:
            conditions.append(_date_condition(state, name, field, operator, values))
        else:
            conditions.append(_condition(state, field, operator, values))
        if position == len(tokens) or (peek_word() == "order" and peek_word(1) == "by"):
            break
        joiner = peek_word()
        if joiner == "and":
            position += 1
            continue
        if joiner == "or":
            raise bad("Error in the JQL Query: the sandbox supports only AND between clauses.")
        raise bad(
            f"Error in the JQL Query: Expecting AND or ORDER BY but got '{tokens[position][1]}'."
        )
    order: list[tuple[str, bool]] = []
    if position < len(tokens):
        position += 2
        while True:
            field = peek_word() or ""
            if field not in ORDER_FIELDS:
                shown = tokens[position][1] if position < len(tokens) else ""
                raise bad(f"Not able to sort using field '{shown}'.")
            position += 1
            descending = False
            if peek_word() in ("asc", "desc"):
                descending = peek_word() == "desc"
                position += 1
            order.append((field, descending))
            if position < len(tokens) and tokens[position] == ("op", ","):
                position += 1
                continue
            if position < len(tokens):
                raise bad(f"Error in the JQL Query: unexpected '{tokens[position][1]}'.")
            break
    if not conditions:
        # Jira Cloud refuses queries that would walk the whole instance.
        raise bad(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to"
            " your query."
        )
    return _Jql(conditions, order)


def jql_instant(state: SandboxState, name: str, value: str) -> datetime:
    """A JQL date literal as a UTC instant: an absolute one (minute precision at most) is read in
    the account's time zone, a period (``-5d``, ``4w 2d``, ``-15m``) counts from now."""
    text = value.strip()
    for layout in _DATE_FORMATS:
        try:
            local = datetime.strptime(text, layout)
        except ValueError:
            continue
        return local.replace(tzinfo=ZoneInfo(state.jira.time_zone)).astimezone(UTC)
    period = _PERIOD_RE.match(text)
    if period:
        sign, parts = period.groups()
        delta = timedelta()
        for amount, unit in re.findall(r"(\d+)\s*([wdhm])", parts):
            delta += int(amount) * _PERIOD_UNITS.get(unit, timedelta(minutes=1))
        return utcnow() + (-delta if sign == "-" else delta)
    raise bad(
        f"Date value '{value}' for field '{name}' is invalid. Valid formats include:"
        " 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period"
        " format e.g. '-5d', '4w 2d'."
    )


def _date_condition(
    state: SandboxState, name: str, field: str, operator: str, values: list[str]
) -> Test:
    (value,) = values
    bound = jql_instant(state, name, value)

    def test(issue: JiraIssue, fields: dict[str, Any]) -> bool:
        stored = fields.get(field)
        moment = parse_jira_time(stored) if isinstance(stored, str) else None
        return moment is not None and COMPARE[OPERATOR_OF_SYMBOL[operator]](moment, bound)

    return test


def _condition(state: SandboxState, field: str, operator: str, values: list[str]) -> Test:
    if field == "project":
        projects = {p.upper() for p in state.config.jira_projects}
        for value in values:
            if value.upper() not in projects:
                raise bad(f"The value '{value}' does not exist for the field 'project'.")
    if field == "key":
        for value in values:
            if not _KEY_RE.match(value) and not value.isdigit():
                raise bad(f"The issue key '{value}' for field 'key' is invalid.")
            if state.jira.find(value) is None:
                raise bad(f"An issue with key '{value}' does not exist for field 'key'.")

    def actual(issue: JiraIssue, fields: dict[str, Any]) -> list[str]:
        if field == "labels":
            return list(fields.get("labels") or [])
        if field == "key":
            return [issue.key, issue.id]
        return [str(fields.get(field) or "")]

    def normal(value: str) -> str:
        return value if field == "labels" else value.lower()

    wanted = {normal(v) for v in values}

    def test(issue: JiraIssue, fields: dict[str, Any]) -> bool:
        have = {normal(v) for v in actual(issue, fields)}
        if operator == "~":
            return any(w in h for w in wanted for h in have)
        hit = bool(have & wanted)
        return not hit if operator in ("!=", "not in") else hit

    return test
