"""Where throttles, incident grouping and suppression windows read their state: the ticketing
system itself and Prefect Variables, never the memory of a process.

- `TicketLedger` answers the throttle and grouping questions from the tickets that exist: a
  group's tickets carry its key (ServiceNow: as the prefix of the correlation id; Jira: as a
  label), and a throttled ticket's key names its window slot and its number in the slot
  (`<group>-<slot>-<n>`). Two workers that decide at the same moment compute the same key, and
  find-or-create makes them share one ticket.
- `VariableSuppressions` keeps, per suppression key, the time of the last response in a Prefect
  Variable (a timestamp is far below the 5000 characters a Variable holds).
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.variables import Variable

from riposte.alerts.response import Ticket
from riposte.alerts.throttle import OpenTicket
from riposte.blocks.ticketing import GroupedTicket, TicketingClient


def slot_of(correlation_key: str, group_key: str) -> tuple[datetime, int] | None:
    """The window slot and number a throttled ticket's key names, or None (an incident key)."""
    rest = correlation_key.removeprefix(group_key + "-")
    slot, _, number = rest.partition("-")
    try:
        return datetime.strptime(slot, "%Y%m%d%H%M%S").replace(tzinfo=UTC), int(number)
    except ValueError:
        return None


def block_identity(block: Block) -> str:
    """Which saved block a step talks through: part of its keys, so two blocks never share."""
    return f"{block.get_block_type_slug()}/{block._block_document_name or 'unsaved'}"


# A record outlives the lag of any search it makes up for, by far; then it is pruned.
RECORD_HOURS = 24


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class TicketRecords:
    """The tickets Riposte created lately, in Prefect Variables, where a later attempt is sure
    to see them: a ticketing system's search may lag behind its writes (Jira Cloud: "recent
    updates might not be immediately visible"), and a retry or a second worker that searched
    only would open the same ticket twice. Written under the ticket's lock, right after the
    create; read before every search, whose `recent` ids make the search see them (Jira's
    `reconcileIssues`).

    One Variable per ticket, named `rtk-<block>-<group>-<correlation key>` (hashed parts), so a
    group's records are found by one name-prefix query.
    """

    def __init__(self, block: str) -> None:
        self.prefix = f"rtk-{_digest(block, 10)}-"

    def _name(self, correlation_key: str, group_key: str | None) -> str:
        group = _digest(group_key, 12) if group_key else "own"
        return f"{self.prefix}{group}-{_digest(correlation_key, 20)}"

    def get(self, correlation_key: str, group_key: str | None) -> Ticket | None:
        return self.held(correlation_key, group_key)[0]

    def held(self, correlation_key: str, group_key: str | None) -> tuple[Ticket | None, str]:
        """The recorded ticket and the key of the alert whose step created it ("" unknown)."""
        with get_client(sync_client=True) as client:
            held = client.read_variable_by_name(self._name(correlation_key, group_key))
        value = held.value if held is not None else None
        by = str(value.get("by") or "") if isinstance(value, dict) else ""
        return _ticket(value), by

    def in_group(self, group_key: str) -> list[Ticket]:
        name = f"{self.prefix}{_digest(group_key, 12)}-"
        return [t for t in (_ticket(v) for v in self._like(name)) if t is not None]

    def _like(self, prefix: str, limit: int = 200) -> list[Any]:
        with get_client(sync_client=True) as client:
            response = client.request(
                "POST",
                "/variables/filter",
                json={"variables": {"name": {"like_": f"{prefix}%"}}, "limit": limit},
            )
            response.raise_for_status()
        return [v.get("value") for v in response.json() if isinstance(v, dict)]

    def _pending_name(self, correlation_key: str, group_key: str | None) -> str:
        # Not under `prefix`: a group's records (`in_group`) must not see these.
        return "rtp-" + self._name(correlation_key, group_key).removeprefix("rtk-")

    def pending(self, correlation_key: str, group_key: str | None) -> tuple[int, str] | None:
        """The floor of a create that was sent and never recorded (its answer lost, or the
        process killed), and the alert whose step sent it: that create may have made the
        ticket."""
        with get_client(sync_client=True) as client:
            held = client.read_variable_by_name(self._pending_name(correlation_key, group_key))
        value = held.value if held is not None else None
        if not isinstance(value, dict) or not isinstance(value.get("floor"), int):
            return None
        if _older(value.get("at"), datetime.now(UTC) - timedelta(hours=RECORD_HOURS)):
            return None  # far older than any search lag: the search shows what it made
        return int(value["floor"]), str(value.get("by") or "")

    def mark_pending(
        self, correlation_key: str, group_key: str | None, floor: int, by: str = ""
    ) -> None:
        """Written before a create (under the ticket's lock), removed once it is recorded."""
        name = self._pending_name(correlation_key, group_key)
        value = {
            "ck": correlation_key,
            "floor": floor,
            "by": by,
            "at": datetime.now(UTC).isoformat(),
        }
        with get_client(sync_client=True) as client:
            try:
                client.create_variable(VariableCreate(name=name, value=value, tags=["riposte"]))
            except ObjectAlreadyExists:
                client.update_variable(VariableUpdate(name=name, value=value))

    def clear_pending(self, correlation_key: str, group_key: str | None) -> None:
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
            client.delete_variable_by_name(self._pending_name(correlation_key, group_key))

    def put(
        self, correlation_key: str, group_key: str | None, ticket: Ticket, by: str = ""
    ) -> None:
        """Record ``ticket``, created by the step of the alert keyed ``by``."""
        value = {"ck": correlation_key, **ticket.model_dump(mode="json", exclude={"created"})}
        value["by"] = by
        value["at"] = datetime.now(UTC).isoformat()
        with get_client(sync_client=True) as client:
            try:
                client.create_variable(
                    VariableCreate(
                        name=self._name(correlation_key, group_key), value=value, tags=["riposte"]
                    )
                )
            except ObjectAlreadyExists:
                return  # another attempt recorded the same ticket
            self._prune(client)

    def _prune(self, client: Any) -> None:
        """Drop some records older than `RECORD_HOURS`: each create looks at 50 (in the order
        of their hashed names, so a different few each time the set changes)."""
        cutoff = datetime.now(UTC) - timedelta(hours=RECORD_HOURS)
        for prefix in (self.prefix, "rtp-" + self.prefix.removeprefix("rtk-")):
            response = client.request(
                "POST",
                "/variables/filter",
                json={
                    "variables": {"name": {"like_": f"{prefix}%"}},
                    "sort": "NAME_ASC",
                    "limit": 50,
                },
            )
            if response.status_code != 200:
                return
            old = [
                v["name"]
                for v in response.json()
                if isinstance(v, dict) and _older(v.get("created"), cutoff)
            ]
            for name in old[:20]:
                with contextlib.suppress(ObjectNotFound):
                    client.delete_variable_by_name(name)


def _older(created: Any, cutoff: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(created)) < cutoff
    except ValueError:
        return False


def _ticket(value: Any) -> Ticket | None:
    if not isinstance(value, dict):
        return None
    try:
        return Ticket.model_validate({**value, "created": False})
    except ValueError:
        return None


class TicketLedger:
    """`ThrottleLedger` over a ticketing client; one lookup per group per decision, which also
    sees the group's tickets a lagging search does not show yet (`TicketRecords`)."""

    def __init__(
        self,
        client: TicketingClient,
        project: str | None = None,
        records: TicketRecords | None = None,
    ) -> None:
        self.client = client
        self.project = project
        self.records = records
        self._groups: dict[str, list[GroupedTicket]] = {}

    def _group(self, key: str) -> list[GroupedTicket]:
        if key not in self._groups:
            recent = [t.id for t in self.records.in_group(key)] if self.records else []
            found = self.client.group(key, project=self.project, recent=recent)
            # Latest first by the slot and number in the key, not by creation time: the order
            # is then the same for every worker, whatever the clocks.
            epoch = datetime.min.replace(tzinfo=UTC)
            found.sort(key=lambda g: slot_of(g.correlation_key, key) or (epoch, 0), reverse=True)
            self._groups[key] = found
        return self._groups[key]

    def count_since(self, key: str, since: datetime) -> int:
        count = 0
        for grouped in self._group(key):
            slot = slot_of(grouped.correlation_key, key)
            if slot is None or slot[0] >= since:
                count += 1
        return count

    def open_ticket_for(self, key: str) -> OpenTicket | None:
        tickets = self._group(key)
        if not tickets:
            return None
        # How many alerts it holds is counted when the comment is written (under a lock), not
        # here: a decision does not read every note of a busy ticket.
        return OpenTicket(key=tickets[0].ticket.key, correlation_key=tickets[0].correlation_key)

    def ticket(self, correlation_key: str) -> Ticket | None:
        """The full ticket (id and link) behind a key this ledger returned."""
        for tickets in self._groups.values():
            for grouped in tickets:
                if grouped.correlation_key == correlation_key:
                    return grouped.ticket
        return None


class NoTickets:
    """The ledger of an action that opens no ticket, or is not throttled or grouped."""

    def count_since(self, key: str, since: datetime) -> int:
        return 0

    def open_ticket_for(self, key: str) -> OpenTicket | None:
        return None


class VariableSuppressions:
    """`SuppressionLedger` over Prefect Variables named after the suppression key."""

    def last_response(self, key: str) -> datetime | None:
        value = Variable.get(key, default=None)
        return datetime.fromisoformat(value) if isinstance(value, str) else None


class NoSuppressions:
    def last_response(self, key: str) -> datetime | None:
        return None


def record_response_time(key: str, at: datetime) -> datetime:
    """Keep the latest response time under ``key``; returns what the Variable holds after.

    Never moves the time back, and two workers recording at once converge: the create that
    loses the race reads again and updates only if its time is later.
    """
    with get_client(sync_client=True) as client:
        for _ in range(5):
            current = client.read_variable_by_name(key)
            if current is None:
                try:
                    client.create_variable(
                        VariableCreate(name=key, value=at.isoformat(), tags=["riposte"])
                    )
                except ObjectAlreadyExists:
                    continue
                return at
            held = datetime.fromisoformat(str(current.value))
            if held >= at:
                return held
            client.update_variable(VariableUpdate(name=key, value=at.isoformat()))
            return at
    raise RuntimeError(f"could not record the response time under {key}")
