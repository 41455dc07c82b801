"""Parser for Microsoft Defender for Cloud Apps `/api/v1/alerts/` alerts.

Choices, each for the write-back or the policies that come after:

- `id` is the alert's `_id` (24 hex characters; the docs type it int, so an integer is accepted
  too): the primary key that fetch, read/unread and the close filters take; `provider_id` too.
- `timestamp` is epoch milliseconds; it is `created_at`. The API has no last-update time, so
  `updated_at` is the resolve time when there is one, else the creation time.
- Status: a closed resolution (`resolutionStatusValue` 1 dismissed ... 5 true positive) is
  `resolved`. An open alert is `new` while unread (or when its read state is not given) and
  `in_progress` once read: MDCA has no "in progress" state, and marking an alert read is the
  only acknowledgement it offers short of closing it (so a write-back of "in progress" marks it
  read, and reads back the same). Payloads from before `resolutionStatusValue` existed are
  `resolved` when archived or when they carry a resolve time. Codes not documented: `unknown`.
- Severity comes from `severityValue` (0 low, 1 medium, 2 high, 3 informational), else from the
  `severity` name.
- The policy that raised the alert (top-level `policy`, else the `policyRule` entity) gives
  `policy_name` (its label), `alert_type` (its id) and `category` (its type, e.g. ``FILE``).
- `description` is HTML unless `isMarkdown`: tags are stripped to text.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType, Severity, Status
from riposte.alerts.sources._common import (
    build_alert,
    entity,
    first_text,
    get,
    guarded,
    has,
    is_ip,
    lookup_enum,
    merge,
    object_list,
    plain,
    required_id,
    scalar_text,
    text,
    timestamp,
)

SOURCE = "cloud_apps"
SERVICE_SOURCE = "microsoftDefenderForCloudApps"  # Graph's `serviceSource` for these alerts

# MDCA's app id for Microsoft 365: its accounts are keyed by their Entra object id.
_MICROSOFT_365_APP_ID = "11161"
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

_SEVERITY_VALUES: dict[int, Severity] = {
    0: Severity.LOW,
    1: Severity.MEDIUM,
    2: Severity.HIGH,
    3: Severity.INFORMATIONAL,
}
_SEVERITY_NAMES: dict[str, Severity] = {
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "informational": Severity.INFORMATIONAL,
    "info": Severity.INFORMATIONAL,
}

_OPEN = 0
# resolutionStatusValue: 0 OPEN, 1 DISMISSED, 2 RESOLVED, 3 FALSE_POSITIVE, 4 BENIGN,
# 5 TRUE_POSITIVE
_RESOLUTION_NAMES: dict[str, int] = {
    "open": 0,
    "dismissed": 1,
    "resolved": 2,
    "falsepositive": 3,
    "benign": 4,
    "truepositive": 5,
}
_CLOSED = frozenset({1, 2, 3, 4, 5})
# statusValue: 0 UNREAD, 1 READ, 2 ARCHIVED
_UNREAD, _READ, _ARCHIVED = 0, 1, 2
_READ_STATE_NAMES: dict[str, int] = {"unread": 0, "read": 1, "archived": 2}

# Fields only this API's alerts send, besides `_id`.
_MARKERS = (
    "timestamp",
    "severityValue",
    "statusValue",
    "resolutionStatusValue",
    "idValue",
    "threatScore",
    "stories",
    "intent",
    "isSystemAlert",
    "contextId",
    "entities",
    "policy",
)
_FOREIGN_MARKERS = ("properties", "providerAlertId", "alertCreationTime", "systemAlertId")


def looks_like(payload: Mapping[str, Any]) -> bool:
    """Whether ``payload`` is a Defender for Cloud Apps alert rather than another Defender API's."""
    if not isinstance(payload, Mapping) or get(payload, "_id") is None:
        return False
    if any(has(payload, key) for key in _FOREIGN_MARKERS):
        return False
    return any(has(payload, key) for key in _MARKERS)


@guarded
def parse(payload: Mapping[str, Any]) -> Alert:
    """Turn one Defender for Cloud Apps alert into an `Alert`; raise `AlertParseError` if not."""
    alert_id = required_id(payload, "_id")

    created_at = _epoch_ms(get(payload, "timestamp"), "timestamp")
    if created_at is None:
        raise AlertParseError("the alert has no timestamp", field="timestamp")
    resolved_at = _resolve_time(get(payload, "resolveTime"))

    entities_field = object_list(get(payload, "entities"), "entities")
    policy, where = _policy(get(payload, "policy"), entities_field)
    title = text(get(payload, "title"), "title", strict=True)
    return build_alert(
        source=SOURCE,
        id=alert_id,
        provider_id=alert_id,
        title=title,
        description=_description(payload),
        severity=_severity(payload),
        status=_status(payload, resolved_at),
        category=text(get(policy, "policyType"), f"{where}.policyType"),
        alert_type=text(get(policy, "id"), f"{where}.id"),
        policy_name=text(get(policy, "label"), f"{where}.label"),
        service_source=SERVICE_SOURCE,
        created_at=created_at,
        updated_at=max(created_at, resolved_at) if resolved_at else created_at,
        entities=_entities(entities_field),
        portal_url=text(get(payload, "URL"), "URL", strict=True),
        raw=plain(payload),
    )


# --- field readers ---------------------------------------------------------------------------


def _integer(value: Any) -> int | None:
    """An integer sent as a number or as a string of digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,20}\s*", value):
        return int(value)
    return None


def _epoch_ms(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    millis = _integer(value)
    if millis is None and isinstance(value, float) and math.isfinite(value):
        millis = int(value)
    if millis is None:
        if isinstance(value, str):
            # An ISO timestamp where milliseconds are documented is still unambiguous.
            return timestamp(value, field)
        raise AlertParseError(
            f"expected epoch milliseconds, got {type(value).__name__}", field=field
        )
    try:
        return datetime.fromtimestamp(millis / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise AlertParseError(f"epoch milliseconds out of range: {millis}", field=field) from None


def _resolve_time(value: Any) -> datetime | None:
    # Captured payloads write "null" for an alert nobody resolved.
    if isinstance(value, str) and value.strip().lower() in ("", "null"):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch_ms(value, "resolveTime")
    return timestamp(value, "resolveTime")


def _severity(payload: Mapping[str, Any]) -> Severity:
    number = _integer(get(payload, "severityValue"))
    if number is not None:
        return _SEVERITY_VALUES.get(number, Severity.UNKNOWN)
    severity = get(payload, "severity")
    number = _integer(severity)
    if number is not None:
        return _SEVERITY_VALUES.get(number, Severity.UNKNOWN)
    return lookup_enum(severity, _SEVERITY_NAMES, Severity.UNKNOWN)


def _code(
    payload: Mapping[str, Any], keys: tuple[str, ...], names: Mapping[str, int]
) -> int | None:
    """A numeric status code from the first of ``keys`` present, given as a number or a name."""
    for key in keys:
        value = get(payload, key)
        if value is None:
            continue
        number = _integer(value)
        if number is None and isinstance(value, str):
            number = names.get(re.sub(r"[\s_-]", "", value).lower())
        return -1 if number is None else number
    return None


def _status(payload: Mapping[str, Any], resolved_at: datetime | None) -> Status:
    resolution = _code(payload, ("resolutionStatusValue", "resolutionStatus"), _RESOLUTION_NAMES)
    read_state = _code(payload, ("statusValue", "status"), _READ_STATE_NAMES)
    if resolution is not None and resolution in _CLOSED:
        return Status.RESOLVED
    if resolution is not None and resolution != _OPEN:
        return Status.UNKNOWN
    if resolution is None and (read_state == _ARCHIVED or resolved_at is not None):
        # Before resolution statuses, closing an alert archived it and set its resolve time.
        return Status.RESOLVED
    if read_state == _UNREAD or (read_state is None and resolution == _OPEN):
        return Status.NEW
    if read_state == _READ:
        return Status.IN_PROGRESS
    return Status.UNKNOWN


def _description(payload: Mapping[str, Any]) -> str:
    description = text(get(payload, "description"), "description", strict=True) or ""
    if get(payload, "isMarkdown") is True:
        return description
    return _html_to_text(description)


class _TextExtractor(HTMLParser):
    _BREAKS = frozenset({"br", "p", "div", "li", "tr", "ul", "ol", "table", "h1", "h2", "h3"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_to_text(markup: str) -> str:
    if "<" not in markup and "&" not in markup:
        return markup
    extractor = _TextExtractor()
    try:
        extractor.feed(markup)
        extractor.close()
    except (AssertionError, ValueError):
        # HTMLParser gives up on some malformed markup; the unescaped text is still readable.
        return html.unescape(markup)
    lines = (
        re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(extractor.parts).split("\n")
    )
    return "\n".join(line for line in lines if line)


def _policy(value: Any, entities: list[Mapping[str, Any]]) -> tuple[Mapping[str, Any], str]:
    """The policy that raised the alert and where it was: the top-level object, else an entity."""
    if isinstance(value, Mapping):
        return value, "policy"
    for item in entities:
        kind = get(item, "type")
        if isinstance(kind, str) and kind.strip().lower() == "policyrule":
            return item, "entities[policyRule]"
    return {}, "policy"


# --- entities --------------------------------------------------------------------------------


def _roles(item: Mapping[str, Any]) -> tuple[str, ...]:
    role = scalar_text(get(item, "entityRole"))
    # MDCA writes "Source"/"Related"; Graph's roles are lower-case words.
    return (role.strip().lower(),) if role else ()


def _account(item: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    account_id, upn, email = get(item, "id"), get(item, "pa"), get(item, "em")
    saas = scalar_text(get(item, "saas"))
    id_text = scalar_text(account_id)
    entra = (
        id_text if saas == _MICROSOFT_365_APP_ID and id_text and _GUID_RE.match(id_text) else None
    )
    return entity(
        EntityType.ACCOUNT,
        first_text(upn, email, account_id, get(item, "label")),
        roles,
        upn=upn,
        email=email,
        aad_user_id=entra,
        mdca_id=account_id,
        display_name=get(item, "label"),
        saas_app_id=saas,
        instance=get(item, "inst"),
    )


def _user(item: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    user_id, label = get(item, "id"), get(item, "label")
    upn = first_text(user_id, label)
    return entity(
        EntityType.ACCOUNT,
        upn,
        roles,
        upn=upn if upn and "@" in upn else None,
        display_name=label,
    )


def _device(item: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    device_id, name = get(item, "id"), get(item, "label")
    return entity(
        EntityType.DEVICE, first_text(name, device_id), roles, name=name, mdca_id=device_id
    )


def _ip(item: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    address = first_text(get(item, "id"), get(item, "label"))
    if address is None or not is_ip(address.strip()):
        address = first_text(get(item, "label"))
    return entity(EntityType.IP, address, roles)


def _file(item: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    # A file has no hash or path here; its MDCA id is what the files API takes.
    file_id, name = get(item, "id"), get(item, "label")
    return entity(EntityType.FILE, first_text(file_id, name), roles, name=name, mdca_id=file_id)


def _service(item: Mapping[str, Any], roles: tuple[str, ...]) -> Entity | None:
    app_id, name = get(item, "id"), get(item, "label")
    return entity(
        EntityType.CLOUD_RESOURCE,
        first_text(app_id, name),
        roles,
        app_id=app_id,
        display_name=name,
    )


_READERS = {
    "account": _account,
    "user": _user,
    "device": _device,
    "ip": _ip,
    "file": _file,
    "service": _service,
}


def _entities(items: list[Mapping[str, Any]]) -> tuple[Entity, ...]:
    # `policyRule` is the policy (read above) and `groupTag` a user group: neither is acted on.
    found: list[Entity | None] = []
    for item in items:
        kind = get(item, "type")
        reader = _READERS.get(kind.strip().lower()) if isinstance(kind, str) else None
        if reader is not None:
            found.append(reader(item, _roles(item)))
    return merge(found)
