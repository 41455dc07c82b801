"""What a playbook decides and does about an alert: the route, the ticket, the messages."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from riposte.alerts.model import Alert, Status


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Route(BaseModel):
    """What a policy action asks of the ticket and the messages, and why (templates see it)."""

    model_config = ConfigDict(frozen=True)

    priority: Priority
    open_ticket: bool
    notify: bool
    reason: str


class TicketDraft(BaseModel):
    """A ticket to find or create, independent of the ticketing system."""

    model_config = ConfigDict(frozen=True)

    correlation_key: str = Field(min_length=1)
    summary: str = Field(min_length=1, max_length=255)
    description: str
    priority: Priority
    source_label: str
    queue: str | None = Field(None, description="ServiceNow assignment group; None: the block's")
    project: str | None = Field(None, description="Jira project key; None: the block's")
    group_key: str | None = Field(
        None,
        description="Key shared by the tickets of a throttled group or an incident: the prefix "
        "of the ServiceNow correlation id, an extra Jira label",
    )


class Ticket(BaseModel):
    """A ticket as it exists in the ticketing system."""

    model_config = ConfigDict(frozen=True)

    system: str
    key: str
    id: str
    url: str
    created: bool = Field(description="False when an existing ticket was found instead")


class Delivery(BaseModel):
    """A chat message that was (or was not) delivered."""

    model_config = ConfigDict(frozen=True)

    channel: str
    delivered: bool
    detail: str = ""
    confirmed: bool = True
    """False when the post was sent and its answer lost: the service most likely has it, and
    it is not posted again (a second post would be a second message)."""


class AlertRef(BaseModel):
    """Which alert to answer, and the revision of it that was seen.

    The revision is what makes a change worth a new response: a different severity (raised, or
    lowered), or the alert reopened after it was resolved. Delivering the same revision twice (a
    sender retry, the webhook and the poll) leads to one response.
    """

    model_config = ConfigDict(frozen=True)

    source: str = Field(
        description="The Defender API: graph, defender_endpoint, cloud_apps or defender_cloud"
    )
    alert_id: str = Field(description="The alert's id in that API")
    revision: str = Field("", description="empty: read the alert to learn it")

    @property
    def key(self) -> str:
        return f"{self.source}:{self.alert_id}:{self.revision}"


def response_revision(alert: Alert) -> str:
    revision = str(alert.severity)
    resolved_before = alert.raw.get("resolvedDateTime") or alert.raw.get("resolvedTime")
    if resolved_before and alert.status != Status.RESOLVED:
        revision += f"-reopened-{resolved_before}"
    return revision


def ref_for(alert: Alert) -> AlertRef:
    return AlertRef(source=alert.source, alert_id=alert.id, revision=response_revision(alert))
