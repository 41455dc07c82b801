"""The ServiceNow incident as the platform keeps it: string-typed records, the state model,
the business rules of a write (resolution, closure, reopening, journal) and the resolution data
policy."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from riposte.sandbox.clock import servicenow_time, utcnow
from riposte.sandbox.servicenow.api import TABLE, snow_error
from riposte.sandbox.state import Reject, SandboxState

JOURNAL_FIELDS = ("work_notes", "comments")
READ_ONLY = frozenset({"sys_id", "sys_created_on", "sys_created_by", "sys_mod_count"})
STATES = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
RESOLVED, CLOSED, CANCELED = "6", "7", "8"
INACTIVE_STATES = frozenset({RESOLVED, CLOSED, CANCELED})
READ_ONLY_STATES = frozenset({CLOSED, CANCELED})  # to the itil role
# The incident's Resolution code choices: those of current releases, then the older ones that
# instances upgraded from them still offer. The Table API stores any string in a choice field;
# the form (and so the analyst controls of the sandbox) offers only these.
CLOSE_CODES = (
    "Duplicate",
    "Known error",
    "No resolution provided",
    "Resolved by caller",
    "Resolved by change",
    "Resolved by problem",
    "Resolved by request",
    "Solution provided",
    "Workaround provided",
    "User error",
    "Solved (Work Around)",
    "Solved (Permanently)",
    "Solved Remotely (Work Around)",
    "Solved Remotely (Permanently)",
    "Not Solved (Not Reproducible)",
    "Not Solved (Too Costly)",
    "Closed/Resolved by Caller",
)
# The data policy on resolved and closed incidents, with the labels its message names.
MANDATORY_WHEN_RESOLVED = {"close_code": "Resolution code", "close_notes": "Resolution notes"}
# Priority is derived from impact and urgency by ServiceNow's data lookup, whatever is sent.
PRIORITY = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("2", "1"): "2",
    ("1", "3"): "3",
    ("2", "2"): "3",
    ("3", "1"): "3",
    ("2", "3"): "4",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
BLANK_FIELDS = (
    "short_description",
    "description",
    "correlation_id",
    "correlation_display",
    "subcategory",
    "caller_id",
    "assigned_to",
    "assignment_group",
    "opened_by",
    "contact_type",
    "close_code",
    "close_notes",
    "resolved_at",
    "resolved_by",
    "closed_at",
    "closed_by",
    "reopened_by",
    "reopened_time",
    "work_notes",
    "comments",
)


def as_string(value: Any) -> str:
    """How ServiceNow stores whatever JSON value it is given: as a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "value" in value:
        return as_string(value["value"])
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def user_sys_id(state: SandboxState, user_name: str, name: str | None = None) -> str:
    """The sys_id of the sys_user whose user name is ``user_name``, made on first use."""
    users = state.servicenow.users
    for sys_id, user in users.items():
        if user["user_name"] == user_name:
            if name:
                user["name"] = name
            return sys_id
    sys_id = hashlib.sha256(f"sys_user|{user_name}".encode()).hexdigest()[:32]
    users[sys_id] = {"sys_id": sys_id, "user_name": user_name, "name": name or user_name}
    return sys_id


def write(
    state: SandboxState,
    record: dict[str, str],
    body: dict[str, Any],
    user_name: str,
    *,
    creating: bool = False,
) -> bool:
    """Apply ``body`` to ``record`` as ``user_name`` would, with the incident's business rules and
    data policy; False when it changed nothing (then nothing is recorded, not even the update).

    Raises `Reject` (403, the data policy) before anything is changed.
    """
    now = servicenow_time(utcnow())
    before = dict(record)
    old_state = "" if creating else before.get("state", "")
    read_only = old_state in READ_ONLY_STATES
    updated = dict(record)
    notes: list[tuple[str, str]] = []
    for name, value in body.items():
        if name in READ_ONLY or name.startswith("sys_"):
            continue
        text = as_string(value)
        if name in JOURNAL_FIELDS:
            # Journal fields are write-only: the text goes to the activity stream, the field
            # itself always reads back empty.
            if text:
                notes.append((name, text))
            continue
        if read_only:
            continue  # a field the itil role may not write on a closed incident: dropped
        updated[name] = text
    updated["priority"] = PRIORITY.get((updated.get("impact", ""), updated.get("urgency", "")), "5")
    new_state = updated.get("state", "1")
    user = user_sys_id(state, user_name)
    if new_state != old_state:
        if new_state in (RESOLVED, CLOSED):
            if not updated.get("resolved_at"):
                updated["resolved_at"] = now
            if not updated.get("resolved_by"):
                updated["resolved_by"] = user
        if new_state == CLOSED:
            updated["closed_at"] = updated.get("closed_at") or now
            updated["closed_by"] = updated.get("closed_by") or user
        if old_state == RESOLVED and new_state not in INACTIVE_STATES:
            # Reopened: the resolution is gone, the reopen is counted and attributed.
            for name in ("close_code", "close_notes", "resolved_at", "resolved_by"):
                updated[name] = ""
            updated["reopen_count"] = str(int(updated.get("reopen_count") or 0) + 1)
            updated["reopened_by"] = user
            updated["reopened_time"] = now
    updated["incident_state"] = new_state
    updated["active"] = "false" if new_state in INACTIVE_STATES else "true"
    if new_state in (RESOLVED, CLOSED):
        missing = [
            label
            for name, label in MANDATORY_WHEN_RESOLVED.items()
            if not updated.get(name, "").strip()
        ]
        if missing:
            raise Reject(
                snow_error(
                    403,
                    "Operation Failed",
                    "Data Policy Exception: \n\tThe following fields are mandatory: "
                    + ", ".join(missing),
                )
            )
    if not creating and not notes and updated == before:
        return False
    record.clear()
    record.update(updated)
    journal = state.servicenow.journals.setdefault(record["sys_id"], [])
    for element, text in notes:
        journal.append(
            {"element": element, "value": text, "sys_created_on": now, "sys_created_by": user_name}
        )
    record["sys_updated_on"] = now
    record["sys_updated_by"] = user_name
    if not creating:
        record["sys_mod_count"] = str(int(record.get("sys_mod_count", "0") or 0) + 1)
    return True


def create_record(state: SandboxState, body: dict[str, Any], user_name: str) -> dict[str, str]:
    """A new incident from ``body``, as ``user_name`` creates it (`Reject` on the data policy)."""
    now = servicenow_time(utcnow())
    record: dict[str, str] = dict.fromkeys(BLANK_FIELDS, "")
    record.update(
        {
            "sys_id": uuid.uuid4().hex,
            "number": f"INC{state.servicenow.next_number:07d}",
            "state": "1",
            "incident_state": "1",
            "active": "true",
            "impact": "3",
            "urgency": "3",
            "priority": "5",
            "severity": "3",
            "category": "inquiry",
            "escalation": "0",
            "reopen_count": "0",
            "opened_at": now,
            "opened_by": user_sys_id(state, user_name),
            "sys_class_name": TABLE,
            "sys_created_on": now,
            "sys_created_by": user_name,
            "sys_mod_count": "0",
        }
    )
    write(state, record, body, user_name, creating=True)
    state.servicenow.next_number += 1
    state.servicenow.records[record["sys_id"]] = record
    return record
