"""The alert's Defender incident (Microsoft Graph `security/incidents`): tags, owner, status and
verdict, and a comment, each written once however many of its alerts ask."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect.context import TaskRunContext

from riposte.alerts.incidents import IncidentUpdate, IncidentWrite
from riposte.blocks.defender import DefenderCredentials
from riposte.tasks._cache import cache_key, exclusive
from riposte.tasks._common import external_call
from riposte.tasks.ledgers import block_identity


def _incident_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    # Keyed by the incident and what is asked of it, not by the alert: every alert of one
    # incident that asks the same takes turns on one lock, and all but the first get the
    # result back Cached, so the incident is written once per change.
    change: IncidentUpdate = params["change"]
    digest = hashlib.sha256(change.model_dump_json().encode()).hexdigest()[:16]
    return cache_key(
        "incident", str(params["incident_id"]), digest, block_identity(params["defender"])
    )


@external_call(_incident_key, name="incident {incident_id}")
def update_incident(
    defender: DefenderCredentials, incident_id: str, change: IncidentUpdate
) -> IncidentWrite:
    """Bring the incident to what ``change`` asks: its tags added to the incident's own (read,
    add, write: Graph replaces the list), owner, status and verdict set where they differ, and
    the comment added unless the incident has it already. A field that already holds the value
    is not written again, so a re-run, or a person's later edit, is left alone.

    Example:
        ```python
        update_incident(defender, "924531", IncidentUpdate(tags=("riposte",)))
        ```
    """
    client = defender.get_client()
    # Read, add, write under a lock on the incident itself: two different changes to one
    # incident (two rules, two playbooks) must not each write a tag list without the other's.
    with exclusive(cache_key("incident-write", incident_id, block_identity(defender))):
        current = client.get_incident(incident_id)
        # Defender merged it into another: write there (a few hops at most).
        for _ in range(3):
            target = current.get("redirectIncidentId")
            if current.get("status") != "redirected" or not target:
                break
            incident_id = str(target)
            current = client.get_incident(incident_id)
        body = change.patch(current)
        after = client.update_incident(incident_id, body) if body else current
        comment_added = False
        if change.comment:
            comments = after.get("comments") or []
            said = {str(c.get("comment")) for c in comments if isinstance(c, dict)}
            if change.comment not in said:
                client.comment_incident(incident_id, change.comment)
                comment_added = True
    return IncidentWrite(
        incident_id=incident_id,
        fields=tuple(sorted(body)),
        comment_added=comment_added,
        tags=tuple(str(t) for t in after.get("customTags") or []),
        assigned_to=after.get("assignedTo"),
        url=after.get("incidentWebUrl"),
    )
