"""The normalized alert: one shape for every Defender API, used by every later step."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Severity(StrEnum):
    """Alert severity, ordered from least to most serious (``unknown`` sorts first)."""

    UNKNOWN = "unknown"
    INFORMATIONAL = "informational"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class Status(StrEnum):
    """Where the alert is in its lifecycle at the source."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    UNKNOWN = "unknown"


class EntityType(StrEnum):
    IP = "ip"
    ACCOUNT = "account"
    DEVICE = "device"
    FILE = "file"
    PROCESS = "process"
    URL = "url"
    CLOUD_RESOURCE = "cloud_resource"
    API_ENDPOINT = "api_endpoint"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone")
    return value.astimezone(UTC)


UTCDateTime = Annotated[datetime, AfterValidator(_utc)]


class Entity(BaseModel):
    """One thing the alert is about.

    ``value`` is the entity's most useful single identifier (an address, a UPN, a device id, a
    hash, a resource id); ``attributes`` keeps the other identifiers the source gave, so a
    policy or a containment step can use them without going back to the payload.
    """

    model_config = ConfigDict(frozen=True)

    type: EntityType
    value: str = Field(min_length=1)
    roles: tuple[str, ...] = ()
    attributes: dict[str, str] = Field(default_factory=dict)


_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _source_name(value: str) -> str:
    if not _SOURCE_RE.match(value):
        raise ValueError("source must be lowercase letters, digits and underscores")
    return value


# The hosts Microsoft's Defender portals live on (commercial and US government clouds).
PORTAL_HOSTS = frozenset(
    {
        "security.microsoft.com",
        "security.microsoft.us",
        "securitycenter.windows.com",
        "securitycenter.microsoft.com",
        "portal.azure.com",
        "portal.azure.us",
        "portal.cloudappsecurity.com",
    }
)
# Defender for Cloud Apps portals are per tenant and region: contoso.eu2.portal.cloudappsecurity.com
PORTAL_HOST_SUFFIXES = (".portal.cloudappsecurity.com", ".portal.cloudappsecurity.us")
# RFC 3986's characters, less the quotes and brackets: nothing that ends a Slack `<url|label>`,
# a markdown link or an HTML attribute.
_URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#@!$&()*+,;=%]+$")


def safe_portal_url(value: str | None) -> str | None:
    """``value`` when it is an https URL on a Defender portal host, else None."""
    if value is None:
        return None
    text = value.strip()
    if not _URL_CHARS.match(text) or len(text) > 2048:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme.lower() != "https"
        or parts.username
        or parts.password
        or port not in (None, 443)
    ):
        return None
    if host in PORTAL_HOSTS or host.endswith(PORTAL_HOST_SUFFIXES):
        return text
    return None


class Alert(BaseModel):
    """A Defender alert, whatever API it came from.

    Open enums from the source (a severity or status we do not know yet) become ``unknown``;
    the raw value stays in ``raw``, the original payload, so nothing the vendor said is lost.
    """

    model_config = ConfigDict(frozen=True)

    source: Annotated[str, AfterValidator(_source_name)]
    id: str = Field(min_length=1)
    provider_id: str | None = None
    title: str
    description: str = ""
    severity: Severity = Severity.UNKNOWN
    status: Status = Status.UNKNOWN
    category: str | None = None
    alert_type: str | None = None
    # The policy that raised the alert, where the source has one (Defender for Cloud Apps): it is
    # the name analysts and routing policies know an alert by, while its id is tenant-specific.
    policy_name: str | None = None
    service_source: str | None = None
    detection_source: str | None = None
    incident_id: str | None = None
    created_at: UTCDateTime
    updated_at: UTCDateTime
    entities: tuple[Entity, ...] = ()
    mitre_techniques: tuple[str, ...] = ()
    portal_url: Annotated[str | None, AfterValidator(safe_portal_url)] = None
    """The alert in its vendor's portal: kept only as an https URL on a portal host of the
    vendor's (an attacker-written link must never become a button or a link in a message)."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def correlation_key(self) -> str:
        """The key kept in external systems (ticket correlation id, Jira label) for this alert.

        Only characters that ServiceNow queries and Jira labels accept verbatim.
        """
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", self.id)
        return f"riposte-{self.source}-{safe}"

    def entities_of(self, kind: EntityType | str) -> list[Entity]:
        kind = EntityType(kind)
        return [e for e in self.entities if e.type == kind]

    def summary(self) -> dict[str, Any]:
        """The alert without its raw payload: what `riposte normalize` prints."""
        return self.model_dump(mode="json", exclude={"raw"})


SortDirection = Literal["asc", "desc"]
