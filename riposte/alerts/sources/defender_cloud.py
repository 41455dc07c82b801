"""Parser for Microsoft Defender for Cloud security alerts, Defender for APIs alerts among them.

One SecurityAlert reaches us in four shapes, all read here:

- ARM REST, api-version 2022-01-01: ``{id, name, type, properties: {alertType, systemAlertId,
  ..., timeGeneratedUtc, processingEndTimeUtc, resourceIdentifiers: [{azureResourceId, type}]}}``;
- ARM REST, api-version 2020-01-01: the same with ``timeGenerated``/``processingEndTime`` and
  PascalCase keys in ``resourceIdentifiers``;
- continuous export (Event Hub, Logic Apps) and Log Analytics `SecurityAlert` rows: flat and
  PascalCase (``AlertType``, ``SystemAlertId``, ``AlertDisplayName``), with ``Entities`` a graph
  whose objects are declared once (``$id``) and referred to elsewhere (``{"$ref": "2"}``);
  Log Analytics writes lists and objects as JSON strings;
- the Activity Log event ``Microsoft.Security/locations/alerts/activate/action``, whose
  ``properties`` carry ``intent`` and ``remediationSteps`` as JSON strings.

Ids, chosen for the write-back and for de-duplication:

- `id` is the alert's system alert id: the ARM alert name, `SystemAlertId` in an export (the
  `VendorOriginalId` of a Log Analytics row, whose own `SystemAlertId` is Sentinel's), the
  `correlationId` of an Activity Log event. It is the same value in every shape, so an alert
  that arrives twice by two routes is one alert, and short enough for a ticket's correlation id.
- `provider_id` is the alert's ARM resource id,
  ``/subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Security/locations/
  {ascLocation}/alerts/{alertName}``: the path that `resolve`, `dismiss`, `activate` and
  `inProgress` are posted to, and the only place the alert's `ascLocation` is given. Shapes
  without it get it rebuilt from the alert's portal link, which names the same four parts.
  `parse_alert_resource_id` splits it.

`created_at` is when the alert was generated (`timeGeneratedUtc`; else the end of processing,
else the start of the activity) and `updated_at` the end of processing, the latest time ARM
reports. Status `Active` (ARM) and `New` (exports) are `new`; `Dismissed` and `Resolved` are
`resolved`.

Defender for APIs alerts (`alertType` ``API_*``) get their display name, tactic and severity from
`defender_for_apis` when the payload lacks them, an `api_endpoint` entity for the API Management
operation and an `ip` entity for the client address; an undocumented ``API_*`` type is kept.
The entities themselves are read in `defender_cloud_entities`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, Severity, Status
from riposte.alerts.sources import defender_for_apis
from riposte.alerts.sources._common import (
    build_alert,
    decoded,
    get,
    guarded,
    has,
    identifier,
    lookup_enum,
    plain,
    text,
    text_items,
    timestamp,
    unique,
)
from riposte.alerts.sources.defender_cloud_entities import alert_entities

SOURCE = "defender_cloud"
SERVICE_SOURCE = "microsoftDefenderForCloud"  # Graph's `serviceSource` for these alerts
PORTAL_ALERT_URL = (
    "https://portal.azure.com/#blade/Microsoft_Azure_Security/AlertBlade/alertId/{name}"
    "/subscriptionId/{subscription_id}{resource_group}/referencedFrom/alertDeepLink"
    "/location/{location}"
)

_ACTIVATE_OPERATION = "microsoft.security/locations/alerts/activate/action"
_ALERT_RESOURCE_TYPE = "microsoft.security/locations/alerts"

_ALERT_ID_RE = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)(?:/resourceGroups/(?P<group>[^/]+))?"
    r"/providers/Microsoft\.Security/locations/(?P<location>[^/]+)/alerts/(?P<name>[^/]+)",
    re.IGNORECASE,
)
_ALERT_URI_RE = re.compile(
    r"/alertId/(?P<name>[^/?#]+)/subscriptionId/(?P<subscription>[^/?#]+)"
    r"(?:/resourceGroup/(?P<group>[^/?#]+))?(?:/[^?#]*?)?/location/(?P<location>[^/?#]+)",
    re.IGNORECASE,
)

_SEVERITIES: dict[str, Severity] = {
    "informational": Severity.INFORMATIONAL,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
}
_STATUSES: dict[str, Status] = {
    # `Active` is ARM's word for an alert nobody has handled; exports and Log Analytics say `New`.
    "active": Status.NEW,
    "new": Status.NEW,
    "inprogress": Status.IN_PROGRESS,
    "resolved": Status.RESOLVED,
    "dismissed": Status.RESOLVED,
}

# Fields of a SecurityAlert, in `properties` (ARM) or at the top (exports, Log Analytics).
_ALERT_MARKERS = (
    "alertType",
    "systemAlertId",
    "alertDisplayName",
    "compromisedEntity",
    "alertUri",
    "resourceIdentifiers",
    "timeGeneratedUtc",
    "vendorOriginalId",
)


class AlertResourceId(NamedTuple):
    """The parts of an alert's ARM id, which the state-change actions need."""

    subscription_id: str
    resource_group: str | None
    location: str
    name: str

    @property
    def resource_id(self) -> str:
        group = f"/resourceGroups/{self.resource_group}" if self.resource_group else ""
        return (
            f"/subscriptions/{self.subscription_id}{group}/providers/Microsoft.Security"
            f"/locations/{self.location}/alerts/{self.name}"
        )

    @property
    def portal_url(self) -> str:
        group = f"/resourceGroup/{self.resource_group}" if self.resource_group else ""
        return PORTAL_ALERT_URL.format(
            name=self.name,
            subscription_id=self.subscription_id,
            resource_group=group,
            location=self.location,
        )


def parse_alert_resource_id(value: object) -> AlertResourceId | None:
    """Split an alert's ARM id (anything after ``/alerts/{name}`` is ignored), or None."""
    if not isinstance(value, str):
        return None
    match = _ALERT_ID_RE.match(value.strip())
    if match is None:
        return None
    return AlertResourceId(match["subscription"], match["group"], match["location"], match["name"])


def _from_portal_url(value: object) -> AlertResourceId | None:
    if not isinstance(value, str):
        return None
    match = _ALERT_URI_RE.search(value)
    if match is None:
        return None
    return AlertResourceId(match["subscription"], match["group"], match["location"], match["name"])


def looks_like(payload: Mapping[str, Any]) -> bool:
    """Whether ``payload`` is a Defender for Cloud alert rather than another Defender API's."""
    if not isinstance(payload, Mapping) or has(payload, "_id"):
        return False
    if _operation(payload) == _ACTIVATE_OPERATION:
        return True
    properties = get(payload, "properties")
    if isinstance(properties, Mapping):
        kind = get(payload, "type")
        if isinstance(kind, str) and kind.strip().lower() == _ALERT_RESOURCE_TYPE:
            return True
        if parse_alert_resource_id(get(payload, "id")) is not None:
            return True
        return any(has(properties, key) for key in _ALERT_MARKERS)
    return properties is None and any(has(payload, key) for key in _ALERT_MARKERS)


def _operation(payload: Mapping[str, Any]) -> str | None:
    value = get(payload, "operationName")
    if isinstance(value, Mapping):
        value = get(value, "value")
    return value.strip().lower() if isinstance(value, str) else None


# --- shapes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """Where the alert's fields are: ``bag`` holds them, ``prefix`` names them in errors."""

    kind: str  # "arm", "export" or "activity_log"
    top: Mapping[str, Any]
    bag: Mapping[str, Any]
    prefix: str

    def read(self, *names: str) -> tuple[str, Any]:
        """The first of ``names`` with a value (blank text counts as none), and its field path."""
        for name in names:
            value = get(self.bag, name)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                return self.prefix + name, value
        return self.prefix + names[0], None

    def text(self, *names: str, strict: bool = False) -> str | None:
        field, value = self.read(*names)
        return text(value, field, strict=strict)


def _shape(payload: Mapping[str, Any]) -> _Shape:
    properties = get(payload, "properties")
    if _operation(payload) is not None:
        properties = decoded(properties)
        bag = properties if isinstance(properties, Mapping) else {}
        return _Shape("activity_log", payload, bag, "properties.")
    if properties is not None:
        properties = decoded(properties)
        if not isinstance(properties, Mapping):
            raise AlertParseError(
                f"expected an object, got {type(properties).__name__}", field="properties"
            )
        return _Shape("arm", payload, properties, "properties.")
    return _Shape("export", payload, payload, "")


@guarded
def parse(payload: Mapping[str, Any]) -> Alert:
    """Turn one Defender for Cloud alert, in any of its shapes, into an `Alert`."""
    shape = _shape(payload)
    resource = _resource_id(shape)
    alert_id = _alert_id(shape, resource)
    title = _title(shape)

    alert_type = shape.text("alertType")
    known = defender_for_apis.lookup(alert_type)
    if alert_type is None and (known := defender_for_apis.by_display_name(title)) is not None:
        # The Activity Log names the alert but not its type.
        alert_type = known.alert_type
    is_api = defender_for_apis.is_api_alert_type(alert_type)

    description = _description(shape)
    extended = _extended_properties(shape)
    if title is None and known is not None:
        hints = [s for s in extended.values() if isinstance(s, str)]
        title = known.display_name(description, *hints)

    severity = lookup_enum(
        _read_value(shape, "severity", "alertSeverity"), _SEVERITIES, Severity.UNKNOWN
    )
    if severity is Severity.UNKNOWN and known is not None:
        severity = known.severity
    category = _intent(shape) or (known.intent if known is not None else None)

    created_at, updated_at = _times(shape)
    portal_url = shape.text("alertUri", "alertLink", strict=True)
    if portal_url is None and resource is not None:
        portal_url = resource.portal_url

    return build_alert(
        source=SOURCE,
        id=alert_id,
        provider_id=_provider_id(shape, resource),
        title=title,
        description=description,
        severity=severity,
        status=_status(shape),
        category=category,
        alert_type=alert_type,
        service_source=SERVICE_SOURCE,
        detection_source=defender_for_apis.DETECTION_SOURCE if is_api else None,
        created_at=created_at,
        updated_at=updated_at,
        entities=_entities(shape, extended, is_api=is_api),
        mitre_techniques=_techniques(shape),
        portal_url=portal_url,
        raw=plain(payload),
    )


# --- field readers ---------------------------------------------------------------------------


def _read_value(shape: _Shape, *names: str) -> Any:
    _, value = shape.read(*names)
    if isinstance(value, Mapping):
        # The Activity Log wraps its enums: {"value": "Active", "localizedValue": "Active"}.
        value = get(value, "value")
    return value


def _resource_id(shape: _Shape) -> AlertResourceId | None:
    if shape.kind == "activity_log":
        candidates: tuple[Any, ...] = (get(shape.top, "resourceId"), get(shape.top, "id"))
    elif shape.kind == "arm":
        candidates = (get(shape.top, "id"),)
    else:
        candidates = (get(shape.top, "id"), get(shape.top, "alertId"))
    for candidate in candidates:
        parsed = parse_alert_resource_id(candidate)
        if parsed is not None:
            return parsed
    for name in ("alertUri", "alertLink"):
        parsed = _from_portal_url(get(shape.bag, name))
        if parsed is not None:
            return parsed
    return None


def _provider_id(shape: _Shape, resource: AlertResourceId | None) -> str | None:
    if resource is not None:
        return resource.resource_id
    if shape.kind == "arm":
        # Not an alert path, but what ARM called the alert: kept rather than dropped.
        return identifier(get(shape.top, "id"), "id")
    return None


def _alert_id(shape: _Shape, resource: AlertResourceId | None) -> str:
    if shape.kind == "activity_log":
        fields = [(name, get(shape.top, name)) for name in ("correlationId", "eventDataId")]
        fields.append(shape.read("systemAlertId"))
    else:
        fields = [shape.read("vendorOriginalId"), shape.read("systemAlertId")]
        if shape.kind == "arm":
            fields.append(("name", get(shape.top, "name")))
    for field, value in fields:
        alert_id = identifier(value, field)
        if alert_id is not None:
            return alert_id
    if resource is not None:
        return resource.name
    raise AlertParseError("the alert has no id", field=shape.prefix + "systemAlertId")


def _title(shape: _Shape) -> str | None:
    title = shape.text("alertDisplayName", "alertName", "displayName", strict=True)
    if title is None and shape.kind == "activity_log":
        name = get(shape.top, "eventName")
        if isinstance(name, Mapping):
            name = get(name, "value") or get(name, "localizedValue")
        title = text(name, "eventName.value", strict=True)
    return title


def _description(shape: _Shape) -> str:
    if shape.kind == "activity_log":
        description = text(get(shape.top, "description"), "description", strict=True)
        return description or shape.text("description", strict=True) or ""
    return shape.text("description", strict=True) or ""


def _status(shape: _Shape) -> Status:
    value = _read_value(shape, "status")
    if value is None and shape.kind == "activity_log":
        value = get(shape.top, "status")
        value = get(value, "value") if isinstance(value, Mapping) else value
    return lookup_enum(value, _STATUSES, Status.UNKNOWN)


def _intent(shape: _Shape) -> str | None:
    field, value = shape.read("intent", "tactics")
    tactics = [t for t in text_items(value, field) if t.lower() != "unknown"]
    return ", ".join(tactics) or None


def _techniques(shape: _Shape) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("techniques", "subTechniques"):
        field, value = shape.read(name)
        found.extend(text_items(value, field))
    return unique(found)


def _timestamp(shape: _Shape, *names: str, top: bool = False) -> datetime | None:
    """The first of ``names`` that holds a value, read as a timestamp (an error if it is not)."""
    for name in names:
        value = get(shape.top, name) if top else get(shape.bag, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        return timestamp(value, name if top else shape.prefix + name)
    return None


def _times(shape: _Shape) -> tuple[datetime, datetime]:
    if shape.kind == "activity_log":
        created = _timestamp(shape, "eventTimestamp", "submissionTimestamp", top=True)
        if created is None:
            raise AlertParseError("the alert has no time", field="eventTimestamp")
        return created, created
    generated = _timestamp(shape, "timeGeneratedUtc", "timeGenerated")
    processed = _timestamp(shape, "processingEndTimeUtc", "processingEndTime")
    # The start of the activity comes before the alert: only a last resort, read only then.
    created = generated or processed or _timestamp(shape, "startTimeUtc", "startTime")
    if created is None:
        raise AlertParseError(
            "the alert has no generation time", field=shape.prefix + "timeGeneratedUtc"
        )
    # ARM keeps no last-modified time; the end of processing is the latest moment it reports.
    return created, max(created, processed) if processed else created


def _extended_properties(shape: _Shape) -> Mapping[str, Any]:
    if shape.kind == "activity_log":
        # Its `properties` are the alert's extended properties, flattened.
        return shape.bag
    field, value = shape.read("extendedProperties")
    value = decoded(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if not isinstance(value, Mapping):
        raise AlertParseError(f"expected an object, got {type(value).__name__}", field=field)
    return value


# --- entities --------------------------------------------------------------------------------


def _entities(shape: _Shape, extended: Mapping[str, Any], *, is_api: bool) -> tuple[Entity, ...]:
    # An export names its resource at its top level too.
    _, resource = (
        shape.read("azureResourceId", "resourceId") if shape.kind == "export" else ("", None)
    )
    return alert_entities(
        shape.read("entities"),
        shape.read("resourceIdentifiers"),
        resource,
        extended,
        is_api=is_api,
    )
