"""Field readers and entity helpers that the four alert parsers share.

One set of rules (keys matched case-insensitively, every failure an `AlertParseError` naming the
field, entities merged per type and value), so that an alert reads the same whichever API it came
from; where an API's own rules differ, a keyword says so (`identifier`'s ``strip``,
`lookup_enum`'s ``exact``).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType
from riposte.alerts.timestamps import parse_timestamp

logger = logging.getLogger("riposte.alerts")

_T = TypeVar("_T")

# --- field readers ---------------------------------------------------------------------------


def get(mapping: Mapping[Any, Any], key: str) -> Any:
    """``mapping[key]`` with the key matched case-insensitively; None when absent."""
    if key in mapping:
        return mapping[key]
    folded = key.casefold()
    for candidate, value in mapping.items():
        if isinstance(candidate, str) and candidate.casefold() == folded:
            return value
    return None


def has(mapping: Mapping[Any, Any], key: str) -> bool:
    folded = key.casefold()
    return any(isinstance(k, str) and k.casefold() == folded for k in mapping)


def nested(mapping: Mapping[Any, Any], key: str) -> Mapping[Any, Any]:
    value = get(mapping, key)
    return value if isinstance(value, Mapping) else {}


def scalar_text(value: Any) -> str | None:
    """A string, or a number rendered as one; None for anything else or for blank text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def text(value: Any, field: str, *, strict: bool = False) -> str | None:
    """An optional string field; numbers are accepted unless ``strict``, objects never are."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if not strict:
        rendered = scalar_text(value)
        if rendered is not None:
            return rendered
    raise AlertParseError(f"expected a string, got {type(value).__name__}", field=field)


def identifier(value: Any, field: str, *, strip: bool = True) -> str | None:
    """An id sent as a string or as an integer (a float with no fraction counts as one); a
    string id loses its surrounding spaces unless ``strip`` is False."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        return value.strip() if strip else value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    raise AlertParseError(
        f"expected a string or an integer, got {type(value).__name__}", field=field
    )


def required_id(payload: Mapping[str, Any], key: str, *, strip: bool = True) -> str:
    """The alert's id from ``key``; an `AlertParseError` naming it when there is none."""
    alert_id = identifier(get(payload, key), key, strip=strip)
    if alert_id is None:
        raise AlertParseError("the alert has no id", field=key)
    return alert_id


def timestamp(value: Any, field: str) -> datetime | None:
    """The ISO 8601 timestamp in ``value``; None when null, an error when it is not one."""
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise AlertParseError(f"not an ISO 8601 timestamp: {value!r:.80}", field=field)
    return parsed


def decoded(value: Any) -> Any:
    """``value``, or the JSON it holds when it is a string holding a JSON list or object.

    Log Analytics rows and the Activity Log carry lists and objects as strings
    (``"intent": "[\\"Persistence\\"]"``); anything that does not decode stays as it was.
    """
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def text_items(value: Any, field: str) -> tuple[str, ...]:
    """Strings from a list, a JSON list in a string, or a comma-separated string; deduplicated.

    Non-string items are dropped (the raw payload keeps them); an object is an error.
    """
    value = decoded(value)
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise AlertParseError(
            f"expected a list of strings, got {type(value).__name__}", field=field
        )
    return unique(item.strip() for item in items if isinstance(item, str) and item.strip())


def unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def plain(value: Any) -> Any:
    """A copy made of dicts and lists only, so `raw` never shares or wraps the caller's objects."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def lookup_enum(value: Any, table: Mapping[str, _T], default: _T, *, exact: bool = False) -> _T:
    """An open enum read case-insensitively; anything unknown is ``default`` (raw keeps it).
    Spaces, underscores and hyphens are ignored, or with ``exact`` only the spaces around it."""
    if not isinstance(value, str):
        return default
    key = value.strip() if exact else re.sub(r"[\s_-]", "", value)
    return table.get(key.lower(), default)


def guarded(parse: Callable[[Mapping[str, Any]], Alert]) -> Callable[[Any], Alert]:
    """Wrap a parser so that nothing but `AlertParseError` leaves it."""

    @functools.wraps(parse)
    def parser(payload: Any) -> Alert:
        if not isinstance(payload, Mapping):
            raise AlertParseError(f"expected a JSON object, got {type(payload).__name__}")
        try:
            return parse(payload)
        except RecursionError:
            raise AlertParseError("the alert is nested too deeply") from None

    return parser


def build_alert(**fields: Any) -> Alert:
    """The `Alert` of ``fields``; a missing title is one naming the alert (an alert without a
    title still has to be shown and ticketed). Invalid fields are an `AlertParseError`."""
    fields["title"] = fields.get("title") or f"Untitled alert {fields['id']}"
    try:
        return Alert(**fields)
    except ValidationError as exc:
        # Only reachable with payloads no JSON decoder produces (non-string keys, say); the
        # field checks before are meant to catch everything else first.
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        raise AlertParseError(first.get("msg", "invalid alert"), field=field) from None


# --- entities --------------------------------------------------------------------------------

APIM_OPERATION_RE = re.compile(
    r"/providers/microsoft\.apimanagement/service/(?P<service>[^/]+)"
    r"/apis/(?P<api>[^/]+)/operations/(?P<operation>[^/]+)/?$",
    re.IGNORECASE,
)


def attributes(**values: Any) -> dict[str, str]:
    return {name: rendered for name, value in values.items() if (rendered := scalar_text(value))}


def entity(
    kind: EntityType, value: Any, roles: tuple[str, ...] = (), **attrs: Any
) -> Entity | None:
    rendered = scalar_text(value)
    if rendered is None:
        return None
    # Stripped so that the same thing sent with stray spaces merges with itself.
    return Entity(type=kind, value=rendered.strip(), roles=roles, attributes=attributes(**attrs))


def first_text(*values: Any) -> str | None:
    for value in values:
        rendered = scalar_text(value)
        if rendered is not None:
            return rendered
    return None


def join_path(directory: Any, name: Any) -> str | None:
    folder, file_name = scalar_text(directory), scalar_text(name)
    if folder is None or file_name is None:
        return folder or file_name
    if folder.rstrip("\\/").lower().endswith(file_name.lower()):
        return folder
    separator = "/" if "/" in folder and "\\" not in folder else "\\"
    return folder.rstrip("\\/") + separator + file_name


def account_value(
    *, upn: Any = None, domain: Any = None, name: Any = None, aad_id: Any = None, sid: Any = None
) -> str | None:
    """The one identifier an account is known by: UPN, then DOMAIN\\name, Entra id, SID, name."""
    name_text, domain_text = scalar_text(name), scalar_text(domain)
    domain_name = f"{domain_text}\\{name_text}" if domain_text and name_text else None
    return first_text(upn, domain_name, aad_id, sid, name_text)


def file_entity(
    *,
    directory: Any = None,
    name: Any = None,
    sha1: Any = None,
    sha256: Any = None,
    md5: Any = None,
    roles: tuple[str, ...] = (),
    named_by_md5: bool = True,
    **extra: Any,
) -> Entity | None:
    path = join_path(directory, name)
    return entity(
        EntityType.FILE,
        first_text(sha256, sha1, path, md5 if named_by_md5 else None),
        roles,
        sha1=sha1,
        sha256=sha256,
        md5=md5,
        path=path,
        name=name,
        **extra,
    )


def api_endpoint(resource_id: Any, roles: tuple[str, ...] = ()) -> Entity | None:
    """An `api_endpoint` entity if ``resource_id`` names an API Management operation."""
    if not isinstance(resource_id, str):
        return None
    match = APIM_OPERATION_RE.search(resource_id.strip())
    if match is None:
        return None
    service, api, operation = match["service"], match["api"], match["operation"]
    return entity(
        EntityType.API_ENDPOINT,
        f"{service}/{api}/{operation}",
        roles,
        service=service,
        api=api,
        operation=operation,
        resource_id=resource_id.strip(),
    )


def azure_resource(
    resource_id: Any, roles: tuple[str, ...] = (), *, fallback: Any = None, **attrs: Any
) -> list[Entity | None]:
    """A cloud resource (named by its id, else by ``fallback``), and the API endpoint it is when
    it is an API Management operation."""
    return [
        entity(
            EntityType.CLOUD_RESOURCE,
            first_text(resource_id, fallback),
            roles,
            resource_id=resource_id,
            **attrs,
        ),
        api_endpoint(resource_id, roles),
    ]


def ip_addresses(value: Any) -> list[str]:
    """The valid IP addresses in a string that may list several (``"a, b"``)."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in re.split(r"[,;\s]+", value) if is_ip(part.strip())]


def is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


# Names seen for the caller and the endpoint of an API in alert properties (Defender for Cloud's
# `extendedProperties`, which Graph passes on as `additionalData`), compared with case and
# punctuation removed. No Defender for APIs payload is published, so these are informed guesses;
# values must still be IP addresses to count.
PROPERTY_IP_KEYS = frozenset(
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
PROPERTY_ENDPOINT_KEYS = frozenset(
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


def property_entities(
    properties: Mapping[Any, Any],
    *,
    named_endpoints: bool,
    ip_keys: frozenset[str] = PROPERTY_IP_KEYS,
    endpoint_keys: frozenset[str] = PROPERTY_ENDPOINT_KEYS,
    addresses: Callable[[Any], list[str]] = ip_addresses,
) -> list[Entity | None]:
    """The entities a free-form property bag names: an API Management operation in any value,
    client addresses (``addresses``) under ``ip_keys`` and, with ``named_endpoints``, an endpoint
    written as text (``"GET /orders/{id}"``) under ``endpoint_keys``."""
    found: list[Entity | None] = []
    for key, value in properties.items():
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            continue
        name = re.sub(r"[^a-z0-9]", "", key.lower())
        endpoint = api_endpoint(value)
        if endpoint is not None:
            found.append(endpoint)
        elif named_endpoints and name in endpoint_keys:
            found.append(entity(EntityType.API_ENDPOINT, value))
        elif name in ip_keys:
            found.extend(entity(EntityType.IP, address) for address in addresses(value))
    return found


def merge(entities: Iterable[Entity | None]) -> tuple[Entity, ...]:
    """One entity per (type, value): roles are united, the first source of an attribute wins."""
    merged: dict[tuple[EntityType, str], Entity] = {}
    for item in entities:
        if item is None:
            continue
        key = (item.type, item.value)
        seen = merged.get(key)
        if seen is None:
            merged[key] = item
            continue
        merged[key] = seen.model_copy(
            update={
                "roles": unique((*seen.roles, *item.roles)),
                "attributes": {**item.attributes, **seen.attributes},
            }
        )
    return tuple(merged.values())


def object_list(value: Any, field: str) -> list[Mapping[str, Any]]:
    """The objects of a list of enrichment (evidence, entities...), read leniently: null is
    none, non-objects are skipped, a single object where the list belongs (as some exporters
    write Defender for Endpoint alerts) is a list of one, and anything else is no item; both
    with a warning. Identity fields (id, source, time) stay strict elsewhere: an alert is never
    refused for its enrichment."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        logger.warning(
            "alert field %s is one object where a list belongs: read as a list of one", field
        )
        return [value]
    if not isinstance(value, list):
        logger.warning("alert field %s is a %s, not a list: ignored", field, type(value).__name__)
        return []
    return [item for item in value if isinstance(item, Mapping)]
