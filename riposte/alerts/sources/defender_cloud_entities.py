"""Entities of a Defender for Cloud alert: its entity graph (objects declared once with ``$id``
and referred to with ``$ref``), its resource identifiers, and what its extended properties name.

`defender_cloud` finds these fields in whichever shape the alert came in and hands them here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from riposte.alerts.model import Entity, EntityType
from riposte.alerts.sources._common import (
    account_value,
    api_endpoint,
    azure_resource,
    decoded,
    entity,
    file_entity,
    first_text,
    get,
    has,
    join_path,
    merge,
    nested,
    object_list,
    property_entities,
    scalar_text,
)

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


# Alike in shape with `_mailbox` below, but each reader maps its own entity type's fields.
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


def _graph_entities(field: str, value: Any) -> list[Entity | None]:
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


def _resource_identifiers(field: str, value: Any) -> list[Entity | None]:
    found: list[Entity | None] = []
    for item in object_list(decoded(value), field):
        if _kind(item) == "azureresource":
            found.extend(azure_resource(first_text(get(item, "azureResourceId"), get(item, "id"))))
    return found


def alert_entities(
    entities: tuple[str, Any],
    resource_identifiers: tuple[str, Any],
    resource: Any,
    extended: Mapping[str, Any],
    *,
    is_api: bool,
) -> tuple[Entity, ...]:
    """The entities of one alert, from its `entities` graph and its `resourceIdentifiers` (each
    a field path and its value), the resource an export names at its top level, and its
    extended properties; ``is_api`` for a Defender for APIs alert."""
    found = [
        *_graph_entities(*entities),
        *_resource_identifiers(*resource_identifiers),
        *azure_resource(resource),
        *property_entities(extended, named_endpoints=False),
    ]
    # An endpoint named in free text ("GET /orders/{id}") is only a fallback: when the alert
    # names the API Management operation, the text is most likely the same endpoint again.
    if not any(e is not None and e.type is EntityType.API_ENDPOINT for e in found):
        found.extend(
            e
            for e in property_entities(extended, named_endpoints=is_api)
            if e is not None and e.type is EntityType.API_ENDPOINT
        )
    return merge(found)
