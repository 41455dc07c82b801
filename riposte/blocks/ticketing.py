"""The interface every ticketing block (ServiceNow, Jira) offers the tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from prefect.blocks.core import Block

from riposte.alerts.response import Ticket, TicketDraft


class TicketingClient(Protocol):
    def find(self, correlation_key: str) -> Ticket | None: ...

    def create(self, draft: TicketDraft) -> Ticket: ...

    def find_or_create(self, draft: TicketDraft) -> Ticket: ...

    def add_note(self, ticket: Ticket, text: str) -> None: ...


class TicketingCredentials(Block, ABC):
    """A ticketing system's credentials; not a block type of its own (an interface)."""

    @abstractmethod
    def get_client(self) -> TicketingClient: ...
