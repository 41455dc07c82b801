"""Jira workflows: the statuses and resolutions of a site, each issue type's workflow and the
transitions it offers from a status, and how a status or a resolution is shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riposte.sandbox.jira.api import API
from riposte.sandbox.state import JiraIssue

# name -> (id, category id, category key, colour)
STATUSES = {
    "To Do": ("10000", 2, "new", "blue-gray"),
    "Open": ("1", 2, "new", "blue-gray"),
    "Reopened": ("4", 2, "new", "blue-gray"),
    "In Progress": ("3", 4, "indeterminate", "yellow"),
    "Done": ("10001", 3, "done", "green"),
    "Resolved": ("5", 3, "done", "green"),
    "Closed": ("6", 3, "done", "green"),
}
# A Jira Cloud site's default resolutions.
RESOLUTIONS = {
    "Done": "10000",
    "Won't Do": "10001",
    "Duplicate": "10002",
    "Cannot Reproduce": "10003",
}
DEFAULT_RESOLUTION = "Done"


@dataclass(frozen=True)
class Transition:
    id: str
    name: str
    to: str
    sources: tuple[str, ...] | None = None  # None: global, from every status but its target
    screen: tuple[str, ...] = ()  # the fields of its screen


@dataclass(frozen=True)
class Workflow:
    initial: str
    transitions: tuple[Transition, ...]


_WORKING = ("Open", "In Progress", "Reopened")
WORKFLOWS = {
    "simplified": Workflow(
        "To Do",
        (
            Transition("11", "To Do", "To Do"),
            Transition("21", "In Progress", "In Progress"),
            Transition("31", "Done", "Done", screen=("resolution",)),
        ),
    ),
    "classic": Workflow(
        "Open",
        (
            Transition("4", "Start Progress", "In Progress", ("Open", "Reopened")),
            Transition("301", "Stop Progress", "Open", ("In Progress",)),
            Transition("5", "Resolve Issue", "Resolved", _WORKING, ("resolution",)),
            Transition("2", "Close Issue", "Closed", _WORKING, ("resolution",)),
            Transition("701", "Close Issue", "Closed", ("Resolved",)),
            Transition("3", "Reopen Issue", "Reopened", ("Resolved", "Closed")),
        ),
    ),
}
WORKFLOW_OF_TYPE = {"Incident": "classic"}  # every other issue type: simplified


def workflow_of(issue_type: str | None) -> Workflow:
    return WORKFLOWS[WORKFLOW_OF_TYPE.get(issue_type or "", "simplified")]


def available_transitions(issue: JiraIssue) -> list[Transition]:
    """The transitions of the issue's workflow from its current status."""
    current = issue.fields.get("status")
    return [
        t
        for t in workflow_of(issue.fields.get("issuetype")).transitions
        if (t.sources is None and t.to != current) or (t.sources and current in t.sources)
    ]


def status_view(base: str, name: str) -> dict[str, Any]:
    status_id, category_id, category_key, colour = STATUSES[name]
    return {
        "self": f"{base}{API}/status/{status_id}",
        "description": "",
        "name": name,
        "id": status_id,
        "statusCategory": {
            "self": f"{base}{API}/statuscategory/{category_id}",
            "id": category_id,
            "key": category_key,
            "colorName": colour,
            "name": {"new": "To Do", "indeterminate": "In Progress", "done": "Done"}[category_key],
        },
    }


def resolution_view(base: str, name: str) -> dict[str, Any]:
    resolution_id = RESOLUTIONS[name]
    return {
        "self": f"{base}{API}/resolution/{resolution_id}",
        "id": resolution_id,
        "name": name,
        "description": "",
    }
