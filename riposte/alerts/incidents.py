"""What a response writes on the alert's Defender incident: tags, owner, status, verdict, a
comment; and the smallest PATCH that gets an incident there from what it holds now."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Microsoft Graph's enums, camelCase as Graph spells them (security-incident-update).
# What a client may set (security-incident-update: active, resolved, redirected; `redirected`
# is Defender's own, when it merges incidents).
IncidentStatus = Literal["active", "resolved"]
IncidentClassification = Literal[
    "unknown", "falsePositive", "truePositive", "informationalExpectedActivity"
]
IncidentDetermination = Literal[
    "unknown",
    "apt",
    "malware",
    "securityPersonnel",
    "securityTesting",
    "unwantedSoftware",
    "other",
    "multiStagedAttack",
    "compromisedAccount",
    "phishing",
    "maliciousUserActivity",
    "notMalicious",
    "notEnoughDataToValidate",
    "confirmedUserActivity",
    "lineOfBusinessApplication",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _tag(value: str) -> str:
    tag = value.strip()
    if not tag or len(tag) > 100 or _CONTROL.search(tag):
        raise ValueError("a tag is 1 to 100 characters, without control characters")
    return tag


Tag = Annotated[str, AfterValidator(_tag)]


def _unique(tags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tags))


class IncidentUpdate(BaseModel):
    """What the policy (a rule's `incident:`) or a playbook asks of the incident.

    Tags are added to the incident's own, never replacing them; the other fields are set when
    they differ. Unset fields are left as they are.

    Example:
        ```yaml
        incident: {tags: [riposte, api-abuse], assign_to: soc-api@example.com}
        ```
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tags: Annotated[tuple[Tag, ...], AfterValidator(_unique)] = Field(
        (), description="Custom tags added to the incident's own"
    )
    assign_to: str | None = Field(
        None, min_length=1, max_length=200, description="Owner of the incident (an address)"
    )
    status: IncidentStatus | None = None
    classification: IncidentClassification | None = None
    determination: IncidentDetermination | None = None
    comment: str | None = Field(
        None, min_length=1, max_length=1000, description="Added once to the incident"
    )

    def merged_over(self, base: IncidentUpdate | None) -> IncidentUpdate:
        """``base`` (the defaults) with this one's fields over it; tags of both."""
        if base is None:
            return self
        ours = {k: v for k, v in self if v is not None and k != "tags"}
        tags = tuple(dict.fromkeys((*base.tags, *self.tags)))
        return base.model_copy(update={**ours, "tags": tags})

    def patch(self, current: dict[str, Any]) -> dict[str, Any]:
        """The PATCH body that brings ``current`` (the incident as Graph returned it) to what
        this asks; empty when it is there already. `customTags` is the whole list (Graph
        replaces it): the incident's tags, then ours that it lacks."""
        body: dict[str, Any] = {}
        existing = [str(t) for t in current.get("customTags") or []]
        missing = [t for t in self.tags if t not in existing]
        if missing:
            body["customTags"] = [*existing, *missing]
        wanted = {
            "assignedTo": self.assign_to,
            "status": self.status,
            "classification": self.classification,
            "determination": self.determination,
        }
        for field, value in wanted.items():
            if value is not None and current.get(field) != value:
                body[field] = value
        return body

    def describe(self) -> str:
        parts = []
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        if self.assign_to:
            parts.append(f"assigned to {self.assign_to}")
        for name in ("status", "classification", "determination"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {value}")
        if self.comment:
            parts.append("a comment")
        return "; ".join(parts) or "nothing"


class AlertTriageUpdate(BaseModel):
    """The owner and verdict a rule sets on the alert itself (its `triage:`), in Graph's
    spelling; each source writes what its API has (`riposte.tasks.alerts.triage_alert`).

    Example:
        ```yaml
        triage: {assign_to: soc-api@example.com, classification: truePositive}
        ```
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    assign_to: str | None = Field(
        None, min_length=1, max_length=200, description="Owner of the alert (an address)"
    )
    classification: IncidentClassification | None = None
    determination: IncidentDetermination | None = None

    def merged_over(self, base: AlertTriageUpdate | None) -> AlertTriageUpdate:
        """``base`` (the defaults) with this one's fields over it."""
        if base is None:
            return self
        return base.model_copy(update={k: v for k, v in self if v is not None})

    def describe(self) -> str:
        parts = [f"assigned to {self.assign_to}"] if self.assign_to else []
        parts += [
            f"{name} {value}"
            for name in ("classification", "determination")
            if (value := getattr(self, name))
        ]
        return "; ".join(parts) or "nothing"


class IncidentWrite(BaseModel):
    """What an incident step did."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    fields: tuple[str, ...] = ()
    """The fields it PATCHed (none when the incident held them already)."""
    comment_added: bool = False
    tags: tuple[str, ...] = ()
    """The incident's custom tags afterwards."""
    assigned_to: str | None = None
    """The incident's owner afterwards."""
    url: str | None = None
