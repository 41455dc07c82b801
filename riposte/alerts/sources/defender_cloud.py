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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType, Severity, Status
from riposte.alerts.sources import defender_for_apis
from riposte.alerts.sources._common import (
    account_value,
    api_endpoint,
    azure_resource,
    build_alert,
    decoded,
    entity,
    file_entity,
    first_text,
    get,
    guarded,
    has,
    identifier,
    ip_addresses,
    join_path,
    lookup_enum,
    merge,
    nested,
    object_list,
    plain,
    scalar_text,
    text,
    text_items,
    timestamp,
    unique,
)

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

# Names seen for the caller of an API in alert properties, compared with case and punctuation
# removed. No Defender for APIs payload is published, so these are informed guesses; values
# must still be IP addresses to count.
_IP_KEYS = frozenset(
    {
        "clientip",
        "clientipaddress",
        "sourceip",
        "sourceipaddress",
        "callerip",
        "calleripaddress",
        "remoteip",
        "remoteipaddress",
        "attackerip",
        "attackeripaddress",
        "suspiciousip",
        "suspiciousipaddress",
        "clientaddress",
    }
)
_ENDPOINT_KEYS = frozenset(
    {
        "apiendpoint",
        "endpoint",
        "apioperation",
        "apioperationid",
        "operationid",
        "apiendpointid",
        "endpointurl",
        "apiendpointurl",
    }
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
        # An alert without a title still has to be shown and ticketed.
        title=title or f"Untitled alert {alert_id}",
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

_Resolve = Callable[[Any], Mapping[str, Any] | None]


def _index_ids(value: Any, index: dict[str, Mapping[str, Any]]) -> None:
    """Every object of the entity graph that declares an ``$id``, by that id."""
    if isinstance(value, Mapping):
        declared = scalar_text(get(value, "$id"))
        if declared is not None and not has(value, "$ref"):
            index.setdefault(declared.strip(), value)
        for item in value.values():
            _index_ids(item, index)
    elif isinstance(value, list):
        for item in value:
            _index_ids(item, index)


def _resolver(index: Mapping[str, Mapping[str, Any]]) -> _Resolve:
    def resolve(value: Any) -> Mapping[str, Any] | None:
        # A bounded walk: a reference to a reference is followed, a cycle is not.
        for _ in range(8):
            if not isinstance(value, Mapping):
                return None
            if not has(value, "$ref"):
                return value
            ref = scalar_text(get(value, "$ref"))
            value = index.get(ref.strip()) if ref else None
        return None

    return resolve


def _kind(item: Mapping[str, Any]) -> str:
    kind = get(item, "type")
    return kind.strip().lower() if isinstance(kind, str) else ""


def _ip(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    location = nested(item, "location")
    return [entity(EntityType.IP, get(item, "address"), country=get(location, "countryCode"))]


def _host(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    host_name, dns_domain = scalar_text(get(item, "hostName")), scalar_text(get(item, "dnsDomain"))
    fqdn = first_text(
        get(item, "fqdn"), f"{host_name}.{dns_domain}" if host_name and dns_domain else None
    )
    mde_id, azure_id = get(item, "mdatpDeviceId"), get(item, "azureId")
    return [
        entity(
            EntityType.DEVICE,
            first_text(mde_id, fqdn, host_name, azure_id),
            mde_device_id=mde_id,
            dns_name=fqdn or host_name,
            hostname=host_name,
            netbios_name=get(item, "netBiosName"),
            aad_device_id=get(item, "aadDeviceId"),
            azure_resource_id=azure_id,
            os_platform=get(item, "osFamily"),
        ),
        api_endpoint(azure_id),
    ]


def _account_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    name, suffix = scalar_text(get(item, "name")), scalar_text(get(item, "upnSuffix"))
    upn = first_text(
        get(item, "userPrincipalName"), f"{name}@{suffix}" if name and suffix else None
    )
    return {
        "upn": upn,
        "sid": get(item, "sid"),
        "aad_user_id": get(item, "aadUserId"),
        "account_name": name,
        "domain": first_text(get(item, "ntDomain"), get(item, "dnsDomain")),
        "display_name": get(item, "displayName"),
    }


def _account(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    fields = _account_fields(item)
    value = account_value(
        upn=fields["upn"],
        domain=get(item, "ntDomain"),
        name=fields["account_name"],
        aad_id=fields["aad_user_id"],
        sid=fields["sid"],
    )
    return [entity(EntityType.ACCOUNT, value, (), **fields)]


def _hashes(item: Mapping[str, Any], resolve: _Resolve) -> dict[str, str]:
    hashes: dict[str, str] = {}
    listed = get(item, "fileHashes")
    for ref in listed if isinstance(listed, list) else ():
        found = resolve(ref)
        if found is None:
            continue
        algorithm, value = scalar_text(get(found, "algorithm")), scalar_text(get(found, "value"))
        if algorithm and value:
            hashes.setdefault(re.sub(r"[^a-z0-9]", "", algorithm.lower()), value.strip())
    return hashes


def _file(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    hashes = _hashes(item, resolve)
    return [
        file_entity(
            directory=get(item, "directory"),
            name=get(item, "name"),
            sha1=hashes.get("sha1"),
            sha256=hashes.get("sha256"),
            md5=hashes.get("md5"),
        )
    ]


def _process(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    image = resolve(get(item, "imageFile")) or {}
    hashes = _hashes(image, resolve)
    image_path = join_path(get(image, "directory"), get(image, "name"))
    command_line = get(item, "commandLine")
    account = resolve(get(item, "account"))
    host = resolve(get(item, "host")) or {}
    parent = resolve(get(item, "parentProcess")) or {}
    entities: list[Entity | None] = [
        entity(
            EntityType.PROCESS,
            first_text(command_line, image_path),
            pid=get(item, "processId"),
            parent_pid=get(parent, "processId"),
            command_line=command_line,
            image_path=image_path,
            image_sha1=hashes.get("sha1"),
            image_sha256=hashes.get("sha256"),
            mde_device_id=get(host, "mdatpDeviceId"),
            host=first_text(get(host, "fqdn"), get(host, "hostName")),
            # The account a process runs as is context, not a user to act on.
            user=account_value(
                upn=_account_fields(account)["upn"],
                domain=get(account, "ntDomain"),
                name=get(account, "name"),
            )
            if account
            else None,
        )
    ]
    if image:
        entities.extend(_file(image, resolve))
    return entities


def _url(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    return [entity(EntityType.URL, get(item, "url"))]


def _resource(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    return azure_resource(get(item, "resourceId"), resource_name=get(item, "resourceName"))


def _cloud_application(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    app_id, name = get(item, "appId"), get(item, "name")
    return [
        entity(
            EntityType.CLOUD_RESOURCE,
            first_text(app_id, name),
            app_id=app_id,
            display_name=name,
            instance_name=get(item, "instanceName"),
        )
    ]


def _network_connection(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    found: list[Entity | None] = []
    for key in ("sourceAddress", "destinationAddress"):
        address = resolve(get(item, key))
        if address is not None:
            found.extend(_ip(address, resolve))
    return found


def _mailbox(item: Mapping[str, Any], resolve: _Resolve) -> list[Entity | None]:
    address, upn = get(item, "mailboxPrimaryAddress"), get(item, "upn")
    return [
        entity(
            EntityType.ACCOUNT,
            first_text(address, upn),
            upn=upn,
            mailbox=address,
            display_name=get(item, "displayName"),
            aad_user_id=get(item, "aadId"),
        )
    ]


_EntityReader = Callable[[Mapping[str, Any], _Resolve], list[Entity | None]]

_READERS: dict[str, _EntityReader] = {
    "ip": _ip,
    "host": _host,
    "account": _account,
    "file": _file,
    "process": _process,
    "url": _url,
    "azure-resource": _resource,
    "cloud-application": _cloud_application,
    "network-connection": _network_connection,
    "mailbox": _mailbox,
}


def _graph_entities(shape: _Shape) -> list[Entity | None]:
    field, value = shape.read("entities")
    items = object_list(decoded(value), field)
    index: dict[str, Mapping[str, Any]] = {}
    _index_ids(items, index)
    resolve = _resolver(index)

    found: list[Entity | None] = []
    loose_hashes: list[Mapping[str, Any]] = []
    for item in items:
        resolved = resolve(item)
        if resolved is None:
            continue
        kind = _kind(resolved)
        if kind == "filehash":
            loose_hashes.append(resolved)
            continue
        reader = _READERS.get(kind)
        if reader is not None:
            found.extend(reader(resolved, resolve))
        else:
            # Types we have no reader for may still name an API Management operation.
            found.extend(api_endpoint(get(resolved, key)) for key in ("resourceId", "azureId"))

    # A hash listed on its own is usually one of a listed file's hashes: only a hash no file
    # carries is an entity of its own.
    known = {v for e in found if e is not None for k, v in e.attributes.items() if k in _HASHES}
    for item in loose_hashes:
        algorithm = scalar_text(get(item, "algorithm"))
        value = scalar_text(get(item, "value"))
        if value is None or value.strip() in known:
            continue
        name = re.sub(r"[^a-z0-9]", "", (algorithm or "").lower())
        hashes = {name: value} if name in _HASHES else {}
        found.append(entity(EntityType.FILE, value, (), **hashes))
    return found


_HASHES = frozenset({"sha1", "sha256", "md5"})


def _resource_identifiers(shape: _Shape) -> list[Entity | None]:
    field, value = shape.read("resourceIdentifiers")
    found: list[Entity | None] = []
    for item in object_list(decoded(value), field):
        if _kind(item) == "azureresource":
            found.extend(azure_resource(first_text(get(item, "azureResourceId"), get(item, "id"))))
    if shape.kind == "export":
        _, resource = shape.read("azureResourceId", "resourceId")
        found.extend(azure_resource(resource))
    return found


def _property_entities(
    properties: Mapping[Any, Any], *, is_api: bool, named_endpoints: bool
) -> list[Entity | None]:
    found: list[Entity | None] = []
    for key, value in properties.items():
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            continue
        name = re.sub(r"[^a-z0-9]", "", key.lower())
        endpoint = api_endpoint(value)
        if endpoint is not None:
            found.append(endpoint)
        elif is_api and named_endpoints and name in _ENDPOINT_KEYS:
            found.append(entity(EntityType.API_ENDPOINT, value))
        elif name in _IP_KEYS:
            found.extend(entity(EntityType.IP, address) for address in ip_addresses(value))
    return found


def _entities(shape: _Shape, extended: Mapping[str, Any], *, is_api: bool) -> tuple[Entity, ...]:
    found = [
        *_graph_entities(shape),
        *_resource_identifiers(shape),
        *_property_entities(extended, is_api=is_api, named_endpoints=False),
    ]
    # An endpoint named in free text ("GET /orders/{id}") is only a fallback: when the alert
    # names the API Management operation, the text is most likely the same endpoint again.
    if not any(e is not None and e.type is EntityType.API_ENDPOINT for e in found):
        found.extend(
            e
            for e in _property_entities(extended, is_api=is_api, named_endpoints=True)
            if e is not None and e.type is EntityType.API_ENDPOINT
        )
    return merge(found)
