"""ServiceNow Table API for the incident table and its journal (read-only): string-typed records,
lax queries, the incident state model and the resolution data policy.

Incident states are the platform's (strings): 1 New, 2 In Progress, 3 On Hold, 6 Resolved,
7 Closed, 8 Canceled. Resolving or closing needs a resolution code and resolution notes (the data
policy answers 403 "Data Policy Exception" without them); resolved, closed and canceled incidents
are inactive; setting a resolved incident back to an open state reopens it: the resolution fields
are cleared and the reopen count, `reopened_by` and `reopened_time` are set. Closed and canceled
incidents are read-only to the itil role: the Table API drops the fields it may not write and
answers 200. Every write records `sys_updated_on` (UTC) and `sys_updated_by` (the user name of
whoever wrote); a write that changes nothing is no update at all, as with GlideRecord.

`router` serves the API under ``/servicenow/api/now/table``; the routes are all in `tables` (the
catch-all of other tables must come last). `incidents` is the incident model, `query` the
encoded queries, `api` what every route shares.
"""

from __future__ import annotations

from riposte.sandbox.servicenow import tables
from riposte.sandbox.servicenow.api import JOURNAL_TABLE, TABLE, require_basic, router, snow_error
from riposte.sandbox.servicenow.incidents import (
    BLANK_FIELDS,
    CANCELED,
    CLOSE_CODES,
    CLOSED,
    INACTIVE_STATES,
    JOURNAL_FIELDS,
    MANDATORY_WHEN_RESOLVED,
    PRIORITY,
    READ_ONLY,
    READ_ONLY_STATES,
    RESOLVED,
    STATES,
    as_string,
    create_record,
    user_sys_id,
    write,
)
from riposte.sandbox.servicenow.query import DATE_FIELDS, parse_query, select
from riposte.sandbox.servicenow.tables import (
    CHOICE_LABELS,
    DEFAULT_LIMIT,
    REFERENCE_TABLES,
    inspect,
)

__all__ = [
    "BLANK_FIELDS",
    "CANCELED",
    "CHOICE_LABELS",
    "CLOSED",
    "CLOSE_CODES",
    "DATE_FIELDS",
    "DEFAULT_LIMIT",
    "INACTIVE_STATES",
    "JOURNAL_FIELDS",
    "JOURNAL_TABLE",
    "MANDATORY_WHEN_RESOLVED",
    "PRIORITY",
    "READ_ONLY",
    "READ_ONLY_STATES",
    "REFERENCE_TABLES",
    "RESOLVED",
    "STATES",
    "TABLE",
    "as_string",
    "create_record",
    "inspect",
    "parse_query",
    "require_basic",
    "router",
    "select",
    "snow_error",
    "tables",
    "user_sys_id",
    "write",
]
