"""What a playbook decides and does about an alert: the route, the ticket, the messages."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Route(BaseModel):
    """The decision `classify` takes: what the playbook does for this alert, and why."""

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
