"""One interface over every Defender alert API, so that tasks never branch on the source.

Each API reads and writes alerts its own way; `AlertSourceClient` is what they have in common.
Get one with `DefenderCredentials.source_client(name)`:

```python
source = defender.source_client("cloud_apps")
for payload in source.list_updated_since(watermark):
    ...
source.close(alert_id, "false_positive", "Known scanner, see INC0010001")
```

A ticket's lifecycle goes back to the alert with `resolve` and `reopen` (classification and
determination in Graph's spelling, whatever the API), and `alert_state` reads an alert's payload
into the same `AlertState` for every API, so that a person's change in Defender can be told.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from riposte.alerts.sources.lifecycle import AlertState

CloseVerdict = Literal["benign", "false_positive", "true_positive"]
"""How a playbook closes an alert; each API records it in its own spelling."""

# Source names, fixed: the parsers in `riposte.alerts.sources` use the same ones.
GRAPH = "graph"
DEFENDER_ENDPOINT = "defender_endpoint"
CLOUD_APPS = "cloud_apps"
DEFENDER_CLOUD = "defender_cloud"
SOURCE_NAMES = (GRAPH, DEFENDER_ENDPOINT, CLOUD_APPS, DEFENDER_CLOUD)


@runtime_checkable
class AlertSourceClient(Protocol):
    """Read and answer the alerts of one Defender API, whatever its shape.

    Payloads are returned raw, as the API sends them; the parser of the same ``source`` name
    turns them into an `Alert`. Every write is safe to repeat.
    """

    @property
    def source(self) -> str:
        """The source name (one of `SOURCE_NAMES`)."""
        ...

    def list_updated_since(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        """Alerts updated at or after ``since`` (all when None), oldest first, each once."""
        ...

    def get(self, alert_id: str) -> dict[str, Any]:
        """The full alert; `ServiceNotFoundError` if there is none with that id."""
        ...

    def mark_in_progress(self, alert_id: str) -> bool:
        """Move a new alert to "in progress"; an alert already further along is left alone.

        False when the API has no such state (Defender for Cloud Apps: the alert is marked
        read instead).
        """
        ...

    def comment(self, alert_id: str, text: str) -> bool:
        """Add a comment; False when the API has no comments (Defender for Cloud, and Defender
        for Cloud Apps outside of closing)."""
        ...

    def has_comment(self, alert_id: str, needle: str) -> bool:
        """Whether a comment containing ``needle`` is already there (False where there are no
        comments), so that a repeated step does not comment twice."""
        ...

    def close(self, alert_id: str, verdict: CloseVerdict, reason: str) -> None:
        """Resolve the alert with a verdict, recording ``reason`` where the API keeps one."""
        ...

    def acknowledge(
        self, current: dict[str, Any], comment: str | None = None, marker: str | None = None
    ) -> Acknowledged:
        """Mark the alert whose payload is ``current`` (read moments ago) in progress, and add
        ``comment`` unless a comment containing ``marker`` (default: the comment) is there,
        in as few calls as the API allows, without reading the alert again."""
        ...

    def triage(self, alert_id: str, wanted: dict[str, str]) -> Triage:
        """Set owner (`assignedTo`), `classification` and `determination`, given in Graph's
        spelling (camelCase), as far as the API has them: each written only where it differs,
        in the API's own spelling; the others are reported, never guessed."""
        ...

    def resolve(
        self, alert_id: str, classification: str, determination: str, comment: str, marker: str
    ) -> Resolution:
        """Resolve the alert with a classification and determination in Graph's spelling
        (``unknown``: none given, the alert keeps what it holds), and add ``comment`` unless a
        comment containing ``marker`` is there already.

        Compare-then-write: nothing at all is written when the alert is resolved with that
        verdict already, so a repeat changes nothing. ``marker`` should name this resolution
        (the ticket and the moment it closed), not only the ticket, or a later resolution of the
        same ticket would go without its comment. What the API cannot record is reported in
        `Resolution.unsupported`, never approximated."""
        ...

    def reopen(self, alert_id: str, comment: str, marker: str) -> Resolution:
        """Put a resolved alert back in progress (Defender for Cloud: active), with ``comment``
        unless a comment containing ``marker`` is there; an alert that is not resolved is left
        alone. An API that cannot reopen writes nothing and says so in `unsupported`."""
        ...

    def alert_state(self, payload: dict[str, Any]) -> AlertState:
        """The alert's state (status, classification, determination, owner, last update) in
        Graph's spelling, from a payload this client returned."""
        ...


class Triage(NamedTuple):
    written: tuple[str, ...]
    """The fields this call wrote (none when the alert held them already)."""
    unsupported: tuple[str, ...] = ()
    """The fields the API cannot set on an alert (and why, after a colon)."""


class Resolution(NamedTuple):
    """What `resolve` or `reopen` did to one alert."""

    changed: tuple[str, ...]
    """The fields written (`status`, `classification`, `determination`), in Graph's names;
    empty when the alert was in that state already."""
    comment_added: bool
    unsupported: tuple[str, ...] = ()
    """What the API cannot do of what was asked (and why, after a colon)."""


class Acknowledged(NamedTuple):
    payload: dict[str, Any]
    """The alert's payload as it is after the writes (``current`` with what was changed)."""
    status_changed: bool
    comment_added: bool


def comments_contain(comments: Any, needle: str) -> bool:
    """Whether any comment of a ``[{"comment": ...}]`` list contains ``needle``."""
    if not isinstance(comments, Iterable) or isinstance(comments, str | bytes):
        return False
    return any(isinstance(c, dict) and needle in str(c.get("comment") or "") for c in comments)
