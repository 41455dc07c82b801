"""The interface every ticketing block (ServiceNow, Jira) offers the tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod

from prefect.blocks.core import Block

from riposte.alerts.response import Ticket, TicketDraft


class TicketingClient(ABC):
    """Tickets keyed by the alert's correlation key, kept in the ticketing system itself."""

    @abstractmethod
    def find(self, correlation_key: str) -> Ticket | None:
        """The ticket carrying exactly this correlation key, if any."""

    @abstractmethod
    def create(self, draft: TicketDraft) -> Ticket: ...

    @abstractmethod
    def add_note(self, ticket: Ticket, text: str) -> None: ...

    def find_or_create(self, draft: TicketDraft) -> Ticket:
        """The ticket for this correlation key, created only if none exists yet.

        The key lives in the external system, so a crash between a create and the commit of the
        task's result is healed by the next attempt finding the ticket.
        """
        return self.find(draft.correlation_key) or self.create(draft)


class TicketingCredentials(Block, ABC):
    """A ticketing system's credentials; not a block type of its own (an interface)."""

    @abstractmethod
    def get_client(self) -> TicketingClient: ...
