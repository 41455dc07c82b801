"""Parser for Microsoft Graph `security/alerts_v2` alerts (Defender XDR unified alerts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType, Severity, Status
from riposte.alerts.sources._common import (
    account_value,
    azure_resource,
    build_alert,
    entity,
    file_entity,
    first_text,
    get,
    guarded,
    has,
    identifier,
    is_ip,
    join_path,
    lookup_enum,
    merge,
    nested,
    object_list,
    plain,
    property_entities,
    required_id,
    scalar_text,
    text,
    text_items,
    timestamp,
)

SOURCE = "graph"

_GRAPH_NAMESPACE = "microsoft.graph.security."
_GRAPH_ALERT_TYPE = _GRAPH_NAMESPACE + "alert"

# Graph's own enum words; each API's parser keeps the table of its own vocabulary.
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


# Defender for APIs has no published Graph payload, so the names it may use in `additionalData`
# are guesses; keys are compared with case and punctuation removed ("Client IP" == "clientIp").
_ADDITIONAL_IP_KEYS = frozenset(
    {"clientip", "clientipaddress", "sourceip", "sourceipaddress", "callerip", "remoteip"}
)
_ADDITIONAL_ENDPOINT_KEYS = frozenset(
    {"apiendpoint", "endpoint", "apioperation", "apioperationid", "operationid", "apiendpointid"}
)


def _comma_separated_ips(value: Any) -> list[str]:
    return [part.strip() for part in str(value).split(",") if is_ip(part.strip())]


def looks_like(payload: Mapping[str, Any]) -> bool:
    """Whether ``payload`` is a Graph alerts_v2 object rather than another Defender API's alert."""
    if not isinstance(payload, Mapping):
        return False
    odata_type = get(payload, "@odata.type")
    if isinstance(odata_type, str) and odata_type.strip().lstrip("#").lower() == _GRAPH_ALERT_TYPE:
        return True
    if get(payload, "id") is None:
        return False
    if any(has(payload, key) for key in _FOREIGN_MARKERS):
        return False
    if any(get(payload, key) is not None for key in _GRAPH_MARKERS):
        return True
    evidence = get(payload, "evidence")
    if isinstance(evidence, list):
        for item in evidence:
            item_type = get(item, "@odata.type") if isinstance(item, Mapping) else None
            if isinstance(item_type, str) and item_type.lstrip("#").startswith(_GRAPH_NAMESPACE):
                return True
    return False


@guarded
def parse(payload: Mapping[str, Any]) -> Alert:
    """Turn one Graph alerts_v2 object into an `Alert`; raise `AlertParseError` if it cannot."""
    # Unlike the other APIs' ids, a Graph id keeps the spaces around it, as sent.
    alert_id = required_id(payload, "id", strip=False)
    alert_type = _text(payload, "detectorId") or _text(payload, "alertPolicyId")
    title = _text(payload, "title", strict=True)
    created_at = timestamp(get(payload, "createdDateTime"), "createdDateTime")
    if created_at is None:
        raise AlertParseError("the alert has no creation time", field="createdDateTime")
    updated_at = timestamp(get(payload, "lastUpdateDateTime"), "lastUpdateDateTime") or created_at

    return build_alert(
        source=SOURCE,
        id=alert_id,
        provider_id=_text(payload, "providerAlertId"),
        title=title,
        description=_text(payload, "description", strict=True) or "",
        # Graph's enums are camelCase words and evolvable: `unknownFutureValue` or a member
        # added later must not fail the alert; the raw value stays in `raw`.
        severity=lookup_enum(get(payload, "severity"), _SEVERITIES, Severity.UNKNOWN, exact=True),
        status=lookup_enum(get(payload, "status"), _STATUSES, Status.UNKNOWN, exact=True),
        category=_text(payload, "category"),
        alert_type=alert_type,
        service_source=_text(payload, "serviceSource"),
        detection_source=_text(payload, "detectionSource"),
        incident_id=identifier(get(payload, "incidentId"), "incidentId", strip=False),
        created_at=created_at,
        updated_at=updated_at,
        entities=_entities(payload),
        mitre_techniques=_mitre_techniques(payload),
        portal_url=_text(payload, "alertWebUrl"),
        raw=plain(payload),
    )


# --- field readers ---------------------------------------------------------------------------


def _text(payload: Mapping[str, Any], key: str, *, strict: bool = False) -> str | None:
    return text(get(payload, key), key, strict=strict)


def _mitre_techniques(payload: Mapping[str, Any]) -> tuple[str, ...]:
    # Graph documents a list: a string is refused here, where Defender for Endpoint reads one.
    value = get(payload, "mitreTechniques")
    if value is not None and not isinstance(value, list):
        raise AlertParseError(
            f"expected a list of technique ids, got {type(value).__name__}",
            field="mitreTechniques",
        )
    return text_items(value, "mitreTechniques")


# --- entities --------------------------------------------------------------------------------


def _roles(item: Mapping[str, Any]) -> tuple[str, ...]:
    value = get(item, "roles")
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(r for r in value if isinstance(r, str) and r.strip()))


def _first(*sources: Mapping[str, Any], key: str) -> Any:
    """The first usable value of ``key`` among ``sources`` (nested object first, then flat)."""
    for source in sources:
        value = get(source, key)
        if scalar_text(value) is not None:
            return value
    return None


def _account_value(*sources: Mapping[str, Any]) -> str | None:
    return account_value(
        upn=_first(*sources, key="userPrincipalName"),
        domain=_first(*sources, key="domainName"),
        name=_first(*sources, key="accountName"),
        aad_id=_first(*sources, key="azureAdUserId"),
        sid=_first(*sources, key="userSid"),
    )


def _ip(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    return [
        entity(
            EntityType.IP,
            get(item, "ipAddress"),
            roles,
            country=get(item, "countryLetterCode"),
        )
    ]


def _user(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    account = nested(item, "userAccount")
    return [
        entity(
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
    mde_id = get(item, "mdeDeviceId")
    dns_name = get(item, "deviceDnsName")
    aad_id = get(item, "azureAdDeviceId")
    return [
        entity(
            EntityType.DEVICE,
            first_text(mde_id, dns_name, aad_id),
            roles,
            mde_device_id=mde_id,
            dns_name=dns_name,
            aad_device_id=aad_id,
            os_platform=get(item, "osPlatform"),
            # Lets a containment step act on the Azure VM behind the device.
            azure_resource_id=get(nested(item, "vmMetadata"), "resourceId"),
        )
    ]


def _file_entity(details: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    return file_entity(
        directory=get(details, "filePath"),
        name=get(details, "fileName"),
        sha1=get(details, "sha1"),
        sha256=get(details, "sha256"),
        md5=get(details, "md5"),
        roles=roles,
        # Graph's reader never named a file by its MD5 alone (the others do): kept as it was.
        named_by_md5=False,
        size=get(details, "fileSize"),
        publisher=get(details, "filePublisher"),
    )


def _file(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    # Graph nests the file under `fileDetails`; flat copies are read too.
    details = nested(item, "fileDetails") or item
    return [_file_entity(details, roles)]


def _process(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    image = nested(item, "imageFile")
    image_path = join_path(get(image, "filePath"), get(image, "fileName"))
    command_line = get(item, "processCommandLine")
    account = nested(item, "userAccount")
    process = entity(
        EntityType.PROCESS,
        first_text(command_line, image_path),
        roles,
        pid=get(item, "processId"),
        parent_pid=get(item, "parentProcessId"),
        command_line=command_line,
        image_path=image_path,
        image_sha1=get(image, "sha1"),
        image_sha256=get(image, "sha256"),
        mde_device_id=get(item, "mdeDeviceId"),
        # The account a process runs as is context, not a user to act on (often SYSTEM), so it
        # stays an attribute rather than becoming an account entity.
        user=_account_value(account) if account else None,
    )
    entities = [process]
    if scalar_text(get(image, "sha256")) or scalar_text(get(image, "sha1")):
        entities.append(_file_entity(image, roles))
    return entities


def _url(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    return [entity(EntityType.URL, get(item, "url"), roles)]


def _azure_resource(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    resource_name = get(item, "resourceName")
    return azure_resource(
        get(item, "resourceId"),
        roles,
        fallback=resource_name,
        resource_type=get(item, "resourceType"),
        resource_name=resource_name,
    )


def _mailbox(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    account = nested(item, "userAccount")
    upn = get(item, "upn")
    return [
        entity(
            EntityType.ACCOUNT,
            first_text(get(item, "primaryAddress"), upn, _account_value(account)),
            roles,
            upn=scalar_text(upn) or get(account, "userPrincipalName"),
            mailbox=get(item, "primaryAddress"),
            display_name=get(item, "displayName"),
            aad_user_id=get(account, "azureAdUserId"),
        )
    ]


def _cloud_application(item: Mapping[str, Any], roles: tuple[str, ...]) -> list[Entity | None]:
    app_id, name = get(item, "appId"), get(item, "displayName")
    return [
        entity(
            EntityType.CLOUD_RESOURCE,
            first_text(app_id, name),
            roles,
            app_id=app_id,
            display_name=name,
            instance_name=get(item, "instanceName"),
            saas_app_id=get(item, "saasAppId"),
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
    for item in object_list(get(payload, "evidence"), "evidence"):
        odata_type = get(item, "@odata.type")
        if not isinstance(odata_type, str):
            continue
        reader = _EVIDENCE_READERS.get(_type_name(odata_type))
        if reader is not None:
            found.extend(reader(item, _roles(item)))
    additional = get(payload, "additionalData")
    if isinstance(additional, Mapping):
        # A Defender for Cloud alert's extended properties: endpoints named in text count here,
        # next to an API Management operation, unlike in the Defender for Cloud parser. Graph's
        # reader knows fewer key names and reads comma-separated lists only: kept as it was.
        found.extend(
            property_entities(
                additional,
                named_endpoints=True,
                ip_keys=_ADDITIONAL_IP_KEYS,
                endpoint_keys=_ADDITIONAL_ENDPOINT_KEYS,
                addresses=_comma_separated_ips,
            )
        )
    return merge(found)
