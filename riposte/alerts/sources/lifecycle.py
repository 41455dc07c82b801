"""Where an alert stands at its source, read the same way from every Defender API.

A two-way sync between alerts and tickets compares what an alert holds now with what it held
before, to tell that a person resolved, reopened, reassigned or reclassified it in Defender.
`alert_state` reads that from a raw payload of any of the four APIs into one `AlertState`, in
Graph's spelling (status ``new``/``inProgress``/``resolved``, camelCase classification and
determination), with None wherever the API has no such thing:

- Graph alerts_v2: ``status``, ``classification``, ``determination``, ``assignedTo``,
  ``lastUpdateDateTime``.
- Defender for Endpoint: the same in PascalCase and its own names (``CompromisedUser``...),
  ``lastUpdateTime``.
- Defender for Cloud Apps: ``resolutionStatusValue`` and ``statusValue``; the classification is
  how the alert was closed; no determination, owner or update time.
- Defender for Cloud (ARM): ``properties.status`` only.

Pure: no HTTP, no Prefect. The tables of Graph's names and Defender for Endpoint's are here too,
so that the client writing an alert and the reader reading it back agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

from riposte.alerts.incidents import IncidentClassification, IncidentDetermination
from riposte.alerts.sources._common import get, nested
from riposte.alerts.timestamps import parse_timestamp

GraphStatus = Literal["new", "inProgress", "resolved"]

# Graph's enums (security alert: alertClassification, alertDetermination).
CLASSIFICATIONS: tuple[str, ...] = get_args(IncidentClassification)
DETERMINATIONS: tuple[str, ...] = get_args(IncidentDetermination)
# "unknown" is no verdict: the writers leave an alert's classification or determination as it
# is rather than write it, and the reader reports it as None (as it does Graph's null).
UNKNOWN = "unknown"

# Graph's spelling -> Defender for Endpoint's (update-alert.md). That API has no "Unknown" and
# retired `Apt` and `SecurityPersonnel` in August 2022: it refuses them in an update.
ENDPOINT_CLASSIFICATIONS: dict[str, str] = {
    "truePositive": "TruePositive",
    "falsePositive": "FalsePositive",
    "informationalExpectedActivity": "InformationalExpectedActivity",
}
ENDPOINT_DETERMINATIONS: dict[str, str] = {
    "multiStagedAttack": "MultiStagedAttack",
    "maliciousUserActivity": "MaliciousUserActivity",
    "compromisedAccount": "CompromisedUser",
    "malware": "Malware",
    "phishing": "Phishing",
    "unwantedSoftware": "UnwantedSoftware",
    "other": "Other",
    "securityTesting": "SecurityTesting",
    "lineOfBusinessApplication": "LineOfBusinessApplication",
    "confirmedUserActivity": "ConfirmedActivity",
    "notMalicious": "NotMalicious",
    "notEnoughDataToValidate": "InsufficientData",
}
# Read on alerts classified before the retirement, never written.
ENDPOINT_RETIRED_DETERMINATIONS: dict[str, str] = {
    "apt": "Apt",
    "securityPersonnel": "SecurityPersonnel",
}
_ENDPOINT_CLASSIFICATIONS_READ = {v.lower(): k for k, v in ENDPOINT_CLASSIFICATIONS.items()}
_ENDPOINT_DETERMINATIONS_READ = {
    v.lower(): k for k, v in {**ENDPOINT_DETERMINATIONS, **ENDPOINT_RETIRED_DETERMINATIONS}.items()
}

# Defender for Cloud Apps' resolutionStatusValue: 0 OPEN, 1 DISMISSED, 2 RESOLVED (both from
# before the close_* requests), 3 FALSE_POSITIVE, 4 BENIGN, 5 TRUE_POSITIVE.
CLOUD_APPS_RESOLUTIONS: dict[int, str] = {
    0: "OPEN",
    1: "DISMISSED",
    2: "RESOLVED",
    3: "FALSE_POSITIVE",
    4: "BENIGN",
    5: "TRUE_POSITIVE",
}
# How each close_* records the verdict, in Graph's words: benign is "a suspicious but not
# malicious activity, such as a penetration test", Graph's informationalExpectedActivity.
CLOUD_APPS_CLASSIFICATIONS: dict[int, str] = {
    3: "falsePositive",
    4: "informationalExpectedActivity",
    5: "truePositive",
}
# statusValue: 0 UNREAD, 1 READ, 2 ARCHIVED (closing, before resolution statuses existed).
_CLOUD_APPS_UNREAD, _CLOUD_APPS_READ, _CLOUD_APPS_ARCHIVED = 0, 1, 2

# Defender for Cloud's statuses: Active (new), InProgress, Resolved ("closed after handling"),
# Dismissed ("dismissed as false positive"). Both of the last two are closed.
DEFENDER_CLOUD_STATUSES: dict[str, GraphStatus] = {
    "active": "new",
    "inprogress": "inProgress",
    "resolved": "resolved",
    "dismissed": "resolved",
}
_GRAPH_STATUSES: dict[str, GraphStatus] = {
    "new": "new",
    "inprogress": "inProgress",
    "resolved": "resolved",
}


class AlertState(NamedTuple):
    """What a sync compares to tell that someone changed an alert in Defender."""

    source: str
    alert_id: str | None
    status: GraphStatus | None
    """new, inProgress or resolved; None when the API reports none of them (Unknown)."""
    classification: str | None
    """Graph's spelling; None when not classified (or "unknown") or the API has none."""
    determination: str | None
    """Graph's spelling; None when not determined (or "unknown") or the API has none."""
    assigned_to: str | None
    """The owner; None when unassigned or the API has no owner."""
    last_updated: datetime | None
    """When the alert last changed; None where the API does not say (Cloud Apps, ARM)."""
    source_status: str | None
    """The status in the API's own words (``Dismissed``, ``FALSE_POSITIVE``...)."""
    handled_by: str | None = None
    """Who closed it, where the API says so (Cloud Apps' ``handledByUser``)."""


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and value.strip().lower() != "null":
        return value.strip()
    return None


def _verdict(value: Any, known: tuple[str, ...]) -> str | None:
    text = _text(value)
    return text if text in known and text != UNKNOWN else None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def graph_state(payload: Mapping[str, Any]) -> AlertState:
    """A Graph ``security/alerts_v2`` alert's state."""
    status = _text(get(payload, "status"))
    return AlertState(
        source="graph",
        alert_id=_text(get(payload, "id")),
        status=_GRAPH_STATUSES.get(status.lower()) if status else None,
        classification=_verdict(get(payload, "classification"), CLASSIFICATIONS),
        determination=_verdict(get(payload, "determination"), DETERMINATIONS),
        assigned_to=_text(get(payload, "assignedTo")),
        last_updated=parse_timestamp(get(payload, "lastUpdateDateTime")),
        source_status=status,
    )


def endpoint_state(payload: Mapping[str, Any]) -> AlertState:
    """A Defender for Endpoint ``/api/alerts`` alert's state, translated to Graph's names
    (``CompromisedUser`` is compromisedAccount, ``InsufficientData`` notEnoughDataToValidate;
    the retired ``Apt`` and ``SecurityPersonnel`` read as apt and securityPersonnel, and
    ``NotAvailable``, ``Unknown`` as None)."""
    status = _text(get(payload, "status"))
    classification = _text(get(payload, "classification"))
    determination = _text(get(payload, "determination"))
    return AlertState(
        source="defender_endpoint",
        alert_id=_text(get(payload, "id")),
        status=_GRAPH_STATUSES.get(status.lower()) if status else None,
        classification=(
            _ENDPOINT_CLASSIFICATIONS_READ.get(classification.lower()) if classification else None
        ),
        determination=(
            _ENDPOINT_DETERMINATIONS_READ.get(determination.lower()) if determination else None
        ),
        assigned_to=_text(get(payload, "assignedTo")),
        last_updated=parse_timestamp(get(payload, "lastUpdateTime")),
        source_status=status,
    )


def cloud_apps_state(payload: Mapping[str, Any]) -> AlertState:
    """A Defender for Cloud Apps alert's state. Closed (resolutionStatusValue 1-5) is resolved;
    open and unread is new, open and read in progress (the API has no other step: reading it
    is how Riposte acknowledges one). The classification is how it was closed (true positive,
    benign, false positive); the legacy DISMISSED and RESOLVED say none. No owner, no
    determination, no update time: the API has none."""
    resolution = _integer(get(payload, "resolutionStatusValue"))
    read_state = _integer(get(payload, "statusValue"))
    status: GraphStatus | None = None
    if resolution is not None and resolution in CLOUD_APPS_RESOLUTIONS and resolution != 0:
        status = "resolved"
    elif resolution in (0, None) and read_state == _CLOUD_APPS_ARCHIVED:
        status = "resolved"  # closed before resolution statuses existed
    elif resolution in (0, None) and read_state == _CLOUD_APPS_UNREAD:
        status = "new"
    elif resolution in (0, None) and read_state == _CLOUD_APPS_READ:
        status = "inProgress"
    return AlertState(
        source="cloud_apps",
        alert_id=_text(get(payload, "_id")),
        status=status,
        classification=CLOUD_APPS_CLASSIFICATIONS.get(resolution) if resolution else None,
        determination=None,
        assigned_to=None,
        last_updated=None,
        source_status=CLOUD_APPS_RESOLUTIONS.get(resolution) if resolution is not None else None,
        handled_by=_text(get(payload, "handledByUser")) if status == "resolved" else None,
    )


def defender_cloud_state(payload: Mapping[str, Any]) -> AlertState:
    """A Defender for Cloud (ARM) alert's state: only a status (Active is new; Resolved and
    Dismissed are both resolved, `source_status` tells which). ARM keeps no classification,
    owner or update time."""
    status = _text(get(nested(payload, "properties"), "status"))
    return AlertState(
        source="defender_cloud",
        alert_id=_text(get(payload, "id")),
        status=DEFENDER_CLOUD_STATUSES.get(status.lower()) if status else None,
        classification=None,
        determination=None,
        assigned_to=None,
        last_updated=None,
        source_status=status,
    )


STATE_READERS: dict[str, Callable[[Mapping[str, Any]], AlertState]] = {
    "graph": graph_state,
    "defender_endpoint": endpoint_state,
    "cloud_apps": cloud_apps_state,
    "defender_cloud": defender_cloud_state,
}


def alert_state(source: str, payload: Mapping[str, Any]) -> AlertState:
    """The state of an alert of ``source`` (a name of `riposte.alerts.sources.SOURCES`)."""
    try:
        reader = STATE_READERS[source]
    except KeyError:
        known = ", ".join(STATE_READERS)
        raise ValueError(f"unknown alert source '{source}' (known: {known})") from None
    return reader(payload)


def check_verdict(classification: str, determination: str) -> None:
    """Refuse a classification or determination that is not Graph's spelling (ValueError):
    the writers take Graph's names and translate them for each API."""
    if classification not in CLASSIFICATIONS:
        known = ", ".join(CLASSIFICATIONS)
        raise ValueError(f"classification {classification!r} is not Graph's (one of {known})")
    if determination not in DETERMINATIONS:
        known = ", ".join(DETERMINATIONS)
        raise ValueError(f"determination {determination!r} is not Graph's (one of {known})")
