"""Parser for Microsoft Graph `security/alerts_v2` alerts (Defender XDR unified alerts)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType, Severity, Status
from riposte.alerts.sources._common import get as _get
from riposte.alerts.sources._common import guarded as _guarded
from riposte.alerts.sources._common import has as _has
from riposte.alerts.sources._common import join_path as _join_path
from riposte.alerts.sources._common import object_list
from riposte.alerts.sources._common import plain as _plain
from riposte.alerts.sources._common import scalar_text as _scalar_text
from riposte.alerts.timestamps import parse_timestamp

SOURCE = "graph"

_GRAPH_NAMESPACE = "microsoft.graph.security."
_GRAPH_ALERT_TYPE = _GRAPH_NAMESPACE + "alert"

_SEVERITIES: dict[str, Severity] = {
    "unknown": Severity.UNKNOWN,
    "informational": Severity.INFORMATIONAL,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
}

_STATUSES: dict[str, Status] = {
    "new": Status.NEW,
    "inprogress": Status.IN_PROGRESS,
    "in_progress": Status.IN_PROGRESS,
    "resolved": Status.RESOLVED,
}

# Fields that only other Defender APIs send: Defender for Endpoint `/api/alerts`, Defender for
# Cloud Apps, and Defender for Cloud (ARM). Graph alerts share `id`, `detectionSource` and
# `incidentId` with some of them, so these decide ties.
_FOREIGN_MARKERS = (
    "alertCreationTime",
    "machineId",
    "computerDnsName",
    "aadTenantId",
    "firstEventTime",
    "_id",
    "properties",
)
_GRAPH_MARKERS = ("providerAlertId", "serviceSource", "detectionSource", "alertWebUrl")


_APIM_OPERATION_RE = re.compile(
    r"/providers/microsoft\.apimanagement/service/(?P<service>[^/]+)"
    r"/apis/(?P<api>[^/]+)/operations/(?P<operation>[^/]+)/?$",
    re.IGNORECASE,
)

# Defender for APIs has no published Graph payload, so the names it may use in `additionalData`
# are guesses; keys are compared with case and punctuation removed ("Client IP" == "clientIp").
_ADDITIONAL_IP_KEYS = frozenset(
    {"clientip", "clientipaddress", "sourceip", "sourceipaddress", "callerip", "remoteip"}
)
_ADDITIONAL_ENDPOINT_KEYS = frozenset(
    {"apiendpoint", "endpoint", "apioperation", "apioperationid", "operationid", "apiendpointid"}
)


def looks_like(payload: Mapping[str, Any]) -> bool:
    """Whether ``payload`` is a Graph alerts_v2 object rather than another Defender API's alert."""
    if not isinstance(payload, Mapping):
        return False
    odata_type = _get(payload, "@odata.type")
    if isinstance(odata_type, str) and odata_type.strip().lstrip("#").lower() == _GRAPH_ALERT_TYPE:
        return True
    if _get(payload, "id") is None:
        return False
    if any(_has(payload, key) for key in _FOREIGN_MARKERS):
        return False
    if any(_get(payload, key) is not None for key in _GRAPH_MARKERS):
        return True
    evidence = _get(payload, "evidence")
    if isinstance(evidence, list):
        for item in evidence:
            item_type = _get(item, "@odata.type") if isinstance(item, Mapping) else None
            if isinstance(item_type, str) and item_type.lstrip("#").startswith(_GRAPH_NAMESPACE):
                return True
    return False


@_guarded
def parse(payload: Mapping[str, Any]) -> Alert:
    """Turn one Graph alerts_v2 object into an `Alert`; raise `AlertParseError` if it cannot."""
    if not isinstance(payload, Mapping):
        raise AlertParseError(f"expected a JSON object, got {type(payload).__name__}")

    alert_id = _identifier(payload, "id")
    if alert_id is None:
        raise AlertParseError("the alert has no id", field="id")

    alert_type = _optional_text(payload, "detectorId") or _optional_text(payload, "alertPolicyId")
    title = _optional_text(payload, "title", strict=True)
    created_at = _timestamp(payload, "createdDateTime")
    if created_at is None:
        raise AlertParseError("the alert has no creation time", field="createdDateTime")
    updated_at = _timestamp(payload, "lastUpdateDateTime") or created_at

    try:
        return Alert(
            source=SOURCE,
            id=alert_id,
            provider_id=_optional_text(payload, "providerAlertId"),
            # An alert without a title still has to be shown and ticketed.
            title=title or f"Untitled alert {alert_id}",
            description=_optional_text(payload, "description", strict=True) or "",
            severity=_severity(_get(payload, "severity")),
            status=_status(_get(payload, "status")),
            category=_optional_text(payload, "category"),
            alert_type=alert_type,
            service_source=_optional_text(payload, "serviceSource"),
            detection_source=_optional_text(payload, "detectionSource"),
            incident_id=_identifier(payload, "incidentId"),
            created_at=created_at,
            updated_at=updated_at,
            entities=_entities(payload),
            mitre_techniques=_mitre_techniques(payload),
            portal_url=_optional_text(payload, "alertWebUrl"),
            raw=_plain(payload),
        )
    except ValidationError as exc:
        # Only reachable with payloads no JSON decoder produces (non-string keys, say); the
        # field checks above are meant to catch everything else first.
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        raise AlertParseError(first.get("msg", "invalid alert"), field=field) from None


# --- field readers ---------------------------------------------------------------------------


def _optional_text(payload: Mapping[str, Any], key: str, *, strict: bool = False) -> str | None:
    """An optional string field; numbers are accepted unless ``strict``, objects never are."""
    value = _get(payload, key)
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if not strict:
        text = _scalar_text(value)
        if text is not None:
            return text
    raise AlertParseError(f"expected a string, got {type(value).__name__}", field=key)


def _identifier(payload: Mapping[str, Any], key: str) -> str | None:
    value = _get(payload, key)
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    raise AlertParseError(f"expected a string or an integer, got {type(value).__name__}", field=key)


def _severity(value: Any) -> Severity:
    # Graph's enums are evolvable: `unknownFutureValue` or a member added later must not fail
    # the alert; the raw value stays in `raw`.
    if not isinstance(value, str):
        return Severity.UNKNOWN
    return _SEVERITIES.get(value.strip().lower(), Severity.UNKNOWN)


def _status(value: Any) -> Status:
    if not isinstance(value, str):
        return Status.UNKNOWN
    return _STATUSES.get(value.strip().lower(), Status.UNKNOWN)


def _timestamp(payload: Mapping[str, Any], key: str) -> datetime | None:
    """The timestamp in ``key``; None when absent or null, an error when it is not a timestamp."""
    value = _get(payload, key)
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise AlertParseError(f"not an ISO 8601 timestamp: {value!r:.80}", field=key)
    return parsed


def _mitre_techniques(payload: Mapping[str, Any]) -> tuple[str, ...]:
    value = _get(payload, "mitreTechniques")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise AlertParseError(
            f"expected a list of technique ids, got {type(value).__name__}",
            field="mitreTechniques",
        )
    techniques = (item.strip() for item in value if isinstance(item, str) and item.strip())
    return tuple(dict.fromkeys(techniques))


# --- entities --------------------------------------------------------------------------------

_Attributes = dict[str, str]


def _attributes(**values: Any) -> _Attributes:
    return {name: text for name, value in values.items() if (text := _scalar_text(value))}


def _entity(kind: EntityType, value: Any, roles: tuple[str, ...], **attrs: Any) -> Entity | None:
    text = _scalar_text(value)
    if text is None:
        return None
    # Stripped so that the same thing sent with stray spaces merges with itself.
    return Entity(type=kind, value=text.strip(), roles=roles, attributes=_attributes(**attrs))


def _roles(item: Mapping[str, Any]) -> tuple[str, ...]:
    value = _get(item, "roles")
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(r for r in value if isinstance(r, str) and r.strip()))


def _nested(item: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = _get(item, key)
    return value if isinstance(value, Mapping) else {}


def _first(*sources: Mapping[str, Any], key: str) -> Any:
    """The first usable value of ``key`` among ``sources`` (nested object first, then flat)."""
    for source in sources:
        value = _get(source, key)
        if _scalar_text(value) is not None:
            return value
    return None


def _account_value(account: Mapping[str, Any], *flat: Mapping[str, Any]) -> str | None:
    sources = (account, *flat)
    upn = _scalar_text(_first(*sources, key="userPrincipalName"))
    name = _scalar_text(_first(*sources, key="accountName"))
    domain = _scalar_text(_first(*sources, key="domainName"))
    aad_id = _scalar_text(_first(*sources, key="azureAdUserId"))
    sid = _scalar_text(_first(*sources, key="userSid"))
    domain_name = f"{domain}\\{name}" if domain and name else None
    return upn or domain_name or aad_id or sid or name


def _ip(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    return [
        _entity(
            EntityType.IP,
            _get(item, "ipAddress"),
            roles,
            country=_get(item, "countryLetterCode"),
        )
    ]


def _user(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    account = _nested(item, "userAccount")
    return [
        _entity(
            EntityType.ACCOUNT,
            _account_value(account, item),
            roles,
            upn=_first(account, item, key="userPrincipalName"),
            sid=_first(account, item, key="userSid"),
            aad_user_id=_first(account, item, key="azureAdUserId"),
            account_name=_first(account, item, key="accountName"),
            domain=_first(account, item, key="domainName"),
            display_name=_first(account, item, key="displayName"),
        )
    ]


def _device(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    mde_id = _get(item, "mdeDeviceId")
    dns_name = _get(item, "deviceDnsName")
    aad_id = _get(item, "azureAdDeviceId")
    value = _scalar_text(mde_id) or _scalar_text(dns_name) or _scalar_text(aad_id)
    return [
        _entity(
            EntityType.DEVICE,
            value,
            roles,
            mde_device_id=mde_id,
            dns_name=dns_name,
            aad_device_id=aad_id,
            os_platform=_get(item, "osPlatform"),
            # Lets a containment step act on the Azure VM behind the device.
            azure_resource_id=_get(_nested(item, "vmMetadata"), "resourceId"),
        )
    ]


def _file_entity(details: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    path = _join_path(_get(details, "filePath"), _get(details, "fileName"))
    sha256, sha1 = _get(details, "sha256"), _get(details, "sha1")
    return _entity(
        EntityType.FILE,
        _scalar_text(sha256) or _scalar_text(sha1) or path,
        roles,
        sha1=sha1,
        sha256=sha256,
        md5=_get(details, "md5"),
        path=path,
        name=_get(details, "fileName"),
        size=_get(details, "fileSize"),
        publisher=_get(details, "filePublisher"),
    )


def _file(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    # Graph nests the file under `fileDetails`; flat copies are read too.
    details = _nested(item, "fileDetails") or item
    return [_file_entity(details, roles)]


def _process(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    image = _nested(item, "imageFile")
    image_path = _join_path(_get(image, "filePath"), _get(image, "fileName"))
    command_line = _get(item, "processCommandLine")
    account = _nested(item, "userAccount")
    process = _entity(
        EntityType.PROCESS,
        _scalar_text(command_line) or image_path,
        roles,
        pid=_get(item, "processId"),
        parent_pid=_get(item, "parentProcessId"),
        command_line=command_line,
        image_path=image_path,
        image_sha1=_get(image, "sha1"),
        image_sha256=_get(image, "sha256"),
        mde_device_id=_get(item, "mdeDeviceId"),
        # The account a process runs as is context, not a user to act on (often SYSTEM), so it
        # stays an attribute rather than becoming an account entity.
        user=_account_value(account) if account else None,
    )
    entities = [process]
    if _scalar_text(_get(image, "sha256")) or _scalar_text(_get(image, "sha1")):
        entities.append(_file_entity(image, roles))
    return entities


def _url(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    return [_entity(EntityType.URL, _get(item, "url"), roles)]


def _azure_resource(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    resource_id = _get(item, "resourceId")
    resource_name = _get(item, "resourceName")
    resource = _entity(
        EntityType.CLOUD_RESOURCE,
        _scalar_text(resource_id) or _scalar_text(resource_name),
        roles,
        resource_id=resource_id,
        resource_type=_get(item, "resourceType"),
        resource_name=resource_name,
    )
    return [resource, _api_endpoint(resource_id, roles)]


def _api_endpoint(resource_id: Any, roles: tuple[str, ...] = ()) -> Entity | None:
    """An `api_endpoint` entity if ``resource_id`` names an API Management operation."""
    if not isinstance(resource_id, str):
        return None
    match = _APIM_OPERATION_RE.search(resource_id.strip())
    if match is None:
        return None
    service, api, operation = match["service"], match["api"], match["operation"]
    return _entity(
        EntityType.API_ENDPOINT,
        f"{service}/{api}/{operation}",
        roles,
        service=service,
        api=api,
        operation=operation,
        resource_id=resource_id.strip(),
    )


def _mailbox(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    account = _nested(item, "userAccount")
    upn = _get(item, "upn")
    value = (
        _scalar_text(_get(item, "primaryAddress")) or _scalar_text(upn) or _account_value(account)
    )
    return [
        _entity(
            EntityType.ACCOUNT,
            value,
            roles,
            upn=_scalar_text(upn) or _get(account, "userPrincipalName"),
            mailbox=_get(item, "primaryAddress"),
            display_name=_get(item, "displayName"),
            aad_user_id=_get(account, "azureAdUserId"),
        )
    ]


def _cloud_application(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    app_id, name = _get(item, "appId"), _get(item, "displayName")
    return [
        _entity(
            EntityType.CLOUD_RESOURCE,
            _scalar_text(app_id) or _scalar_text(name),
            roles,
            app_id=app_id,
            display_name=name,
            instance_name=_get(item, "instanceName"),
            saas_app_id=_get(item, "saasAppId"),
        )
    ]


_EvidenceReader = Callable[[Mapping[str, Any], tuple[str, ...]], list[Entity | None]]

# Keyed by the lower-cased type name: the docs themselves spell `AzureResourceEvidence` both ways.
_EVIDENCE_READERS: dict[str, _EvidenceReader] = {
    "ipevidence": _ip,
    "userevidence": _user,
    "deviceevidence": _device,
    "fileevidence": _file,
    "processevidence": _process,
    "urlevidence": _url,
    "azureresourceevidence": _azure_resource,
    "mailboxevidence": _mailbox,
    "cloudapplicationevidence": _cloud_application,
}


def _type_name(odata_type: str) -> str:
    """``#microsoft.graph.security.ipEvidence`` -> ``ipevidence``."""
    return odata_type.strip().lstrip("#").rsplit(".", 1)[-1].lower()


def _entities(payload: Mapping[str, Any]) -> tuple[Entity, ...]:
    found: list[Entity | None] = []
    for item in object_list(_get(payload, "evidence"), "evidence"):
        odata_type = _get(item, "@odata.type")
        if not isinstance(odata_type, str):
            continue
        reader = _EVIDENCE_READERS.get(_type_name(odata_type))
        if reader is not None:
            found.extend(reader(item, _roles(item)))
    additional = _get(payload, "additionalData")
    if isinstance(additional, Mapping):
        found.extend(_additional_data_entities(additional))
    return _merge(e for e in found if e is not None)


def _additional_data_entities(data: Mapping[Any, Any]) -> list[Entity | None]:
    entities: list[Entity | None] = []
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            continue
        name = re.sub(r"[^a-z0-9]", "", key.lower())
        endpoint = _api_endpoint(value)
        if endpoint is not None:
            entities.append(endpoint)
        elif name in _ADDITIONAL_ENDPOINT_KEYS:
            entities.append(_entity(EntityType.API_ENDPOINT, value.strip(), ()))
        elif name in _ADDITIONAL_IP_KEYS:
            entities.extend(
                _entity(EntityType.IP, address, ())
                for address in (part.strip() for part in value.split(","))
                if _is_ip(address)
            )
    return entities


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _merge(entities: Iterable[Entity]) -> tuple[Entity, ...]:
    """One entity per (type, value): roles are united, the first source of an attribute wins."""
    merged: dict[tuple[EntityType, str], Entity] = {}
    for entity in entities:
        key = (entity.type, entity.value)
        seen = merged.get(key)
        if seen is None:
            merged[key] = entity
            continue
        merged[key] = seen.model_copy(
            update={
                "roles": tuple(dict.fromkeys((*seen.roles, *entity.roles))),
                "attributes": {**entity.attributes, **seen.attributes},
            }
        )
    return tuple(merged.values())
