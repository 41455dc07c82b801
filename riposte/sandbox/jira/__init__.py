"""Jira Cloud REST API v3: issues with ADF bodies, JQL search paged by token, comments, workflows
and their transitions, the changelog.

Each issue type follows a workflow, whose transition ids are its own (a client reads them from
`GET /issue/{key}/transitions`): Incident the classic one (Open, In Progress, Resolved, Reopened,
Closed; Start Progress 4, Stop Progress 301, Resolve Issue 5, Close Issue 2 and 701, Reopen
Issue 3), every other type a simplified one (To Do, In Progress, Done; global transitions 11,
21, 31). Transitions to a Done-category status carry a screen with the Resolution field (the
workflow sets Done when none is given); leaving the Done category clears the resolution. Every
change of status or resolution is a changelog history with its author. JQL reads date literals
(minute precision) in the account's time zone, and timestamps are written with its offset.
Search reads an index that lags behind every write, not only creations.

`router` serves the API under ``/jira/rest/api/3``; the modules `issues`, `search` and
`transitions` register their routes on it when imported here (no two of their paths overlap, so
the order does not matter). `api` is what every route shares, `workflows` the workflow model,
`jql` the query language.
"""

from __future__ import annotations

from riposte.sandbox.jira import issues, search, transitions
from riposte.sandbox.jira.api import (
    API,
    AUTHOR,
    DATE_FIELDS,
    NOT_ADF,
    adf_problem,
    analyst_account,
    api_account_id,
    jira_error,
    require_basic,
    router,
)
from riposte.sandbox.jira.issues import (
    ALL_FIELDS,
    MAX_CHANGELOG_RESULTS,
    MAX_COMMENT_RESULTS,
    NOT_ON_SCREEN,
    PRIORITIES,
    SETTABLE_FIELDS,
    append_comment,
    inspect,
)
from riposte.sandbox.jira.jql import COMPARISONS, JQL_FIELDS, ORDER_FIELDS, jql_instant, parse_jql
from riposte.sandbox.jira.search import (
    DEFAULT_MAX_RESULTS,
    MAX_RESULTS_IDS_ONLY,
    MAX_RESULTS_WITH_FIELDS,
)
from riposte.sandbox.jira.transitions import apply_transition
from riposte.sandbox.jira.workflows import (
    DEFAULT_RESOLUTION,
    RESOLUTIONS,
    STATUSES,
    WORKFLOW_OF_TYPE,
    WORKFLOWS,
    Transition,
    Workflow,
    available_transitions,
    workflow_of,
)

__all__ = [
    "ALL_FIELDS",
    "API",
    "AUTHOR",
    "COMPARISONS",
    "DATE_FIELDS",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_RESOLUTION",
    "JQL_FIELDS",
    "MAX_CHANGELOG_RESULTS",
    "MAX_COMMENT_RESULTS",
    "MAX_RESULTS_IDS_ONLY",
    "MAX_RESULTS_WITH_FIELDS",
    "NOT_ADF",
    "NOT_ON_SCREEN",
    "ORDER_FIELDS",
    "PRIORITIES",
    "RESOLUTIONS",
    "SETTABLE_FIELDS",
    "STATUSES",
    "WORKFLOWS",
    "WORKFLOW_OF_TYPE",
    "Transition",
    "Workflow",
    "adf_problem",
    "analyst_account",
    "api_account_id",
    "append_comment",
    "apply_transition",
    "available_transitions",
    "inspect",
    "issues",
    "jira_error",
    "jql_instant",
    "parse_jql",
    "require_basic",
    "router",
    "search",
    "transitions",
    "workflow_of",
]
