"""Parser for Microsoft Defender for Endpoint `/api/alerts` alerts, the 2019-era fields included.

The alert's `id` is the API's alert id (``da637472900382838869_1364969609``), the one that
`PATCH /api/alerts/{id}` takes; `provider_id` repeats it because Graph alerts_v2 reports the same
value as `providerAlertId`, which lets an alert read from both APIs be recognised as one.
Enum values are PascalCase here (``InProgress``, ``UnSpecified``); they are read
case-insensitively, and values not known yet become ``unknown`` with `raw` keeping them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType, Severity, Status, safe_portal_url
from riposte.alerts.sources._common import (
    account_value,
    build_alert,
    entity,
    file_entity,
    first_text,
    get,
    guarded,
    has,
    identifier,
    join_path,
    lookup_enum,
    merge,
    object_list,
    plain,
    required_id,
    scalar_text,
    text,
    text_items,
    timestamp,
)

SOURCE = "defender_endpoint"
PORTAL_ALERT_URL = "https://security.microsoft.com/alerts/{id}"
SERVICE_SOURCE = "microsoftDefenderForEndpoint"  # Graph's `serviceSource` for these alerts

_SEVERITIES: dict[str, Severity] = {
    "unspecified": Severity.UNKNOWN,
    "informational": Severity.INFORMATIONAL,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
}
_STATUSES: dict[str, Status] = {
    "unknown": Status.UNKNOWN,
    "new": Status.NEW,
    "inprogress": Status.IN_PROGRESS,
    "resolved": Status.RESOLVED,
}

# Fields only this API sends. Graph alerts_v2 shares `id`, `detectionSource`, `incidentId` and
# `evidence` with it, so these decide.
_MARKERS = (
    "alertCreationTime",
    "lastUpdateTime",
    "firstEventTime",
    "lastEventTime",
    "machineId",
    "computerDnsName",
    "relatedUser",
    "alertUser",
    "alertFiles",
    "alertIps",
    "alertDomains",
    "rbacGroupName",
    "aadTenantId",
)
# Fields of the other Defender APIs: Graph alerts_v2, Defender for Cloud Apps, Defender for Cloud.
_FOREIGN_MARKERS = (
    "providerAlertId",
    "serviceSource",
    "alertWebUrl",
    "createdDateTime",
    "lastUpdateDateTime",
    "_id",
    "properties",
    "systemAlertId",
    "alertType",
    "alertDisplayName",
)


def looks_like(payload: Mapping[str, Any]) -> bool:
    """Whether ``payload`` is a Defender for Endpoint alert rather than another Defender API's."""
    if not isinstance(payload, Mapping) or get(payload, "id") is None:
        return False
    odata_type = get(payload, "@odata.type")
    if isinstance(odata_type, str) and "graph" in odata_type.lower():
        return False
    if any(has(payload, key) for key in _FOREIGN_MARKERS):
        return False
    if any(has(payload, key) for key in _MARKERS):
        return True
    evidence = get(payload, "evidence")
    return isinstance(evidence, list) and any(
        isinstance(item, Mapping) and has(item, "entityType") for item in evidence
    )


@guarded
def parse(payload: Mapping[str, Any]) -> Alert:
    """Turn one Defender for Endpoint alert into an `Alert`; raise `AlertParseError` if not."""
    alert_id = required_id(payload, "id")

    created_at = timestamp(get(payload, "alertCreationTime"), "alertCreationTime")
    updated_at = timestamp(get(payload, "lastUpdateTime"), "lastUpdateTime")
    if created_at is None:
        # The docs make the creation time nullable; the last update is the closest moment known
        # not to precede the alert, so a watermark never skips it.
        created_at = updated_at
    if created_at is None:
        raise AlertParseError("the alert has no creation time", field="alertCreationTime")

    title = text(get(payload, "title"), "title", strict=True)
    return build_alert(
        source=SOURCE,
        id=alert_id,
        provider_id=alert_id,
        title=title,
        description=text(get(payload, "description"), "description", strict=True) or "",
        severity=lookup_enum(get(payload, "severity"), _SEVERITIES, Severity.UNKNOWN),
        status=lookup_enum(get(payload, "status"), _STATUSES, Status.UNKNOWN),
        category=_category(get(payload, "category")),
        alert_type=text(get(payload, "detectorId"), "detectorId"),
        service_source=SERVICE_SOURCE,
        detection_source=text(get(payload, "detectionSource"), "detectionSource"),
        incident_id=identifier(get(payload, "incidentId"), "incidentId"),
        created_at=created_at,
        updated_at=updated_at or created_at,
        entities=_entities(payload),
        # The docs type `mitreTechniques` as a String while every example sends a list.
        mitre_techniques=text_items(get(payload, "mitreTechniques"), "mitreTechniques"),
        # A given link on a portal host wins; any other is refused for the one built here.
        portal_url=safe_portal_url(text(get(payload, "alertWebUrl"), "alertWebUrl"))
        or PORTAL_ALERT_URL.format(id=quote(alert_id, safe="")),
        raw=plain(payload),
    )


def _category(value: Any) -> str | None:
    category = text(value, "category")
    # Alerts from 2019 (custom TI alerts especially) carry the string "null" for no category.
    if category is None or category.strip().lower() == "null":
        return None
    return category


# --- entities --------------------------------------------------------------------------------


def _entities(payload: Mapping[str, Any]) -> tuple[Entity, ...]:
    found: list[Entity | None] = [
        entity(
            EntityType.DEVICE,
            first_text(get(payload, "machineId"), get(payload, "computerDnsName")),
            mde_device_id=get(payload, "machineId"),
            dns_name=get(payload, "computerDnsName"),
            aad_tenant_id=get(payload, "aadTenantId"),
            rbac_group=get(payload, "rbacGroupName"),
        )
    ]
    for item in object_list(get(payload, "evidence"), "evidence"):
        kind = get(item, "entityType")
        reader = _EVIDENCE_READERS.get(kind.strip().lower()) if isinstance(kind, str) else None
        if reader is not None:
            found.extend(reader(item))

    # Before `$expand=evidence` existed (2019), a single alert came with these lists instead.
    for item in object_list(get(payload, "alertFiles"), "alertFiles"):
        found.extend(_file(item))
    for item in object_list(get(payload, "alertIps"), "alertIps"):
        found.append(entity(EntityType.IP, get(item, "ipAddress")))
    # The API documents these "domains" as the URLs related to the alert.
    for item in object_list(get(payload, "alertDomains"), "alertDomains"):
        found.append(entity(EntityType.URL, get(item, "host")))

    entities = merge(found)
    related = [_related_user(get(payload, key)) for key in ("relatedUser", "alertUser")]
    return merge([*entities, *(user for user in related if not _known(user, entities))])


def _related_user(value: Any) -> Entity | None:
    if not isinstance(value, Mapping):
        return None
    name = first_text(get(value, "userName"), get(value, "accountName"))
    domain = get(value, "domainName")
    return entity(
        EntityType.ACCOUNT,
        account_value(
            upn=get(value, "userPrincipalName"),
            domain=domain,
            name=name,
            sid=get(value, "userSid"),
        ),
        upn=get(value, "userPrincipalName"),
        sid=get(value, "userSid"),
        account_name=name,
        domain=domain,
    )


def _known(user: Entity | None, entities: tuple[Entity, ...]) -> bool:
    """Whether the alert's related user is already one of its evidence accounts."""
    if user is None:
        return True
    name = user.attributes.get("account_name", "").lower()
    domain = user.attributes.get("domain", "").lower()
    return any(
        e.type is EntityType.ACCOUNT
        and e.attributes.get("account_name", "").lower() == name
        and e.attributes.get("domain", "").lower() == domain
        for e in entities
    )


def _user(item: Mapping[str, Any]) -> list[Entity | None]:
    upn, sid, aad_id = get(item, "userPrincipalName"), get(item, "userSid"), get(item, "aadUserId")
    name, domain = get(item, "accountName"), get(item, "domainName")
    return [
        entity(
            EntityType.ACCOUNT,
            account_value(upn=upn, domain=domain, name=name, aad_id=aad_id, sid=sid),
            upn=upn,
            sid=sid,
            aad_user_id=aad_id,
            account_name=name,
            domain=domain,
        )
    ]


def _file(item: Mapping[str, Any]) -> list[Entity | None]:
    return [
        file_entity(
            directory=get(item, "filePath"),
            name=get(item, "fileName"),
            sha1=get(item, "sha1"),
            sha256=get(item, "sha256"),
            md5=get(item, "md5"),
            detection_status=get(item, "detectionStatus"),
        )
    ]


def _process(item: Mapping[str, Any]) -> list[Entity | None]:
    # Flat process evidence describes the process's image file with the file fields.
    image_path = join_path(get(item, "filePath"), get(item, "fileName"))
    command_line = get(item, "processCommandLine")
    user = account_value(domain=get(item, "domainName"), name=get(item, "accountName"))
    process = entity(
        EntityType.PROCESS,
        first_text(command_line, image_path),
        pid=get(item, "processId"),
        parent_pid=get(item, "parentProcessId"),
        command_line=command_line,
        image_path=image_path,
        image_sha1=get(item, "sha1"),
        image_sha256=get(item, "sha256"),
        parent_image_path=join_path(
            get(item, "parentProcessFilePath"), get(item, "parentProcessFileName")
        ),
        detection_status=get(item, "detectionStatus"),
        # The account a process runs as is context, not a user to act on (often SYSTEM), so it
        # stays an attribute rather than becoming an account entity.
        user=user,
    )
    entities = [process]
    if scalar_text(get(item, "sha256")) or scalar_text(get(item, "sha1")):
        entities.extend(_file(item))
    return entities


def _ip(item: Mapping[str, Any]) -> list[Entity | None]:
    return [entity(EntityType.IP, get(item, "ipAddress"))]


def _url(item: Mapping[str, Any]) -> list[Entity | None]:
    return [entity(EntityType.URL, get(item, "url"))]


_EVIDENCE_READERS = {
    "user": _user,
    "process": _process,
    "file": _file,
    "ip": _ip,
    "url": _url,
}
