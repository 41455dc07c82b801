"""The interface every ticketing block (ServiceNow, Jira) offers the tasks."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field

from riposte.alerts.model import UTCDateTime
from riposte.alerts.response import Ticket, TicketDraft

# How many tickets of one group a lookup returns (newest first): more than a throttle may open in
# one window (at most 100), and older ones never decide anything.
GROUP_LOOKUP_LIMIT = 100

# Every correlation key Riposte writes starts with it (an alert's, an incident's, a throttle
# slot's: `Alert.correlation_key`, `riposte.alerts.throttle`); Jira issues also carry the label.
CORRELATION_PREFIX = "riposte-"
RIPOSTE_LABEL = "riposte"

TicketStatus = Literal["open", "resolved", "closed"]

# A throttled group's tickets are keyed `<group key>-<window slot, 14 digits>-<n>`.
_SLOT_SUFFIX = re.compile(r"^-\d{14}-\d{1,3}$")


def in_group(correlation_key: str, group_key: str) -> bool:
    """Whether a ticket keyed ``correlation_key`` belongs to the group ``group_key``: the
    incident's own key, or a throttle slot's key under it (never a longer group's key)."""
    if correlation_key == group_key:
        return True
    rest = correlation_key.removeprefix(group_key)
    return rest != correlation_key and _SLOT_SUFFIX.match(rest) is not None


class GroupedTicket(BaseModel):
    """A ticket found under a group key, with the correlation key it carries."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    correlation_key: str


class TicketChange(BaseModel):
    """A ticket that Riposte opened, as it is after its last change: what a sync compares."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    correlation_key: str
    status: TicketStatus = Field(
        description="open; resolved (ServiceNow Resolved, a Jira Done-category status other "
        "than Closed); closed (ServiceNow Closed or Canceled, Jira Closed)"
    )
    resolution: str | None = Field(
        description="ServiceNow close_code, Jira resolution name; None while unresolved"
    )
    resolution_notes: str | None = Field(
        description="ServiceNow close_notes; None for Jira, which has no such field"
    )
    updated_at: UTCDateTime = Field(description="the last change, in UTC")
    updated_by: str = Field(
        description="who made the last change: ServiceNow user name, Jira accountId"
    )
    resolved_by: str | None = Field(
        description="who resolved it (user name, accountId); None while unresolved"
    )
    by_riposte: bool = Field(
        description="the last change was made by the integration's own user (its own write)"
    )


class TicketWrite(BaseModel):
    """What a compare-then-write call did: ``changed`` False when the ticket already was as asked
    (or cannot be made so), ``detail`` says which."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    changed: bool
    status: TicketStatus = Field(description="the ticket's status after the call")
    detail: str


class TicketingClient(ABC):
    """Tickets keyed by the alert's correlation key, kept in the ticketing system itself."""

    search_lags: ClassVar[bool] = False
    """True when the system's search may not show a ticket for a while after it was created
    (Jira Cloud's index): the steps then keep records of what they created."""

    @abstractmethod
    def find(
        self, correlation_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> Ticket | None:
        """The ticket carrying exactly this correlation key, if any (``project``: Jira only).
        ``recent``: ids of tickets created lately, which a lagging search must include."""

    @abstractmethod
    def create(self, draft: TicketDraft) -> Ticket: ...

    @abstractmethod
    def add_note(self, ticket: Ticket, text: str) -> None: ...

    @abstractmethod
    def own_notes(self, ticket: Ticket) -> list[str]:
        """The notes the credentials' own account wrote, oldest first: the only ones whose
        markers the ticket sync trusts (anyone who can comment on a ticket can write text)."""

    @abstractmethod
    def notes(self, ticket: Ticket) -> list[str]:
        """The text of the ticket's notes (ServiceNow work notes, Jira comments), oldest first,
        so that a note is added only if it is not there yet."""

    @abstractmethod
    def group(
        self, group_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> list[GroupedTicket]:
        """The tickets opened under ``group_key`` (see `in_group`), newest first; ``recent`` as
        for `find`."""

    @abstractmethod
    def description(self, ticket: Ticket) -> str:
        """The ticket's description as text (what Riposte wrote when it opened it)."""

    @abstractmethod
    def correlation_key(self, ticket: Ticket) -> str:
        """The correlation key the ticket carries ("" when it carries none of Riposte's)."""

    @abstractmethod
    def by_key(self, key: str) -> Ticket | None:
        """The ticket whose human key (ServiceNow number, Jira issue key) is ``key``."""

    @abstractmethod
    def changed_since(self, since: datetime, project: str | None = None) -> list[TicketChange]:
        """The tickets Riposte opened (correlation key under `CORRELATION_PREFIX`) whose last
        change is at or after ``since``, every page read, oldest change first. ``project``: a
        Jira project (None: every project); ServiceNow ignores it."""

    @abstractmethod
    def status(self, ticket: Ticket) -> TicketStatus:
        """The ticket's status now: open, resolved or closed."""

    @abstractmethod
    def resolve(self, ticket: Ticket, resolution: str, notes: str) -> TicketWrite:
        """Resolve the ticket with ``resolution`` (ServiceNow close code, Jira resolution name)
        and ``notes``, unless it is resolved or closed already (then nothing is written)."""

    @abstractmethod
    def reopen(self, ticket: Ticket, notes: str) -> TicketWrite:
        """Take a resolved ticket back to work, with ``notes`` as a note, unless it is open
        already or cannot be reopened (then nothing is written)."""

    def creation_floor(self, project: str | None = None) -> int | None:
        """For a system whose search lags: a mark taken before a create, below anything created
        after it, so that `created_since` can read what a create whose answer was lost made.
        None: the system needs none (its search reads what was written)."""
        return None

    def created_since(
        self, correlation_key: str, floor: int, *, project: str | None = None
    ) -> Ticket | None:
        """The ticket keyed ``correlation_key`` among those created after ``floor`` (see
        `creation_floor`), read without the lagging search."""
        return None

    def find_or_create(self, draft: TicketDraft) -> Ticket:
        """The ticket for this correlation key, created only if none exists yet.

        The key lives in the external system, so a crash between a create and the commit of the
        task's result is healed by the next attempt finding the ticket.
        """
        return self.find(draft.correlation_key, project=draft.project) or self.create(draft)


class TicketingCredentials(Block, ABC):
    """A ticketing system's credentials; not a block type of its own (an interface)."""

    @abstractmethod
    def get_client(self) -> TicketingClient: ...
