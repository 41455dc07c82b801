"""The Defender for APIs alert types: display names, MITRE tactic and severity of each.

Source: Microsoft's "Alerts for Defender for APIs" reference (MicrosoftDocs/defender-docs,
`articles/defender-for-cloud/alerts-defender-for-apis.md`, ms.date 06/03/2024). The docs warn that
recent alerts may be undocumented, so a type missing here is kept as it came, never rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from riposte.alerts.model import Severity

PREFIX = "API_"
DETECTION_SOURCE = "microsoftDefenderForApiManagement"  # Graph's `detectionSource` for them


@dataclass(frozen=True)
class ApiAlertType:
    """One documented alert type.

    ``tactic`` is written as the docs write it ("Initial access"); ``intent`` as Defender for
    Cloud's `intent` field spells the same tactic ("InitialAccess"). ``markers`` tell apart the
    display names of a type that has several: the phrase that only the matching name contains.
    """

    alert_type: str
    display_names: tuple[str, ...]
    tactic: str
    intent: str
    severity: Severity
    markers: tuple[str, ...] = ()
    neutral_name: str | None = None

    @property
    def preview(self) -> bool:
        return any(name.startswith("(Preview)") for name in self.display_names)

    def display_name(self, *hints: str | None) -> str:
        """The display name, chosen among several by the phrases found in ``hints``.

        With no telling phrase, a type with several names gets a name true of all of them.
        """
        if len(self.display_names) == 1:
            return self.display_names[0]
        haystack = " ".join(h for h in hints if h).lower()
        for name, marker in zip(self.display_names, self.markers, strict=True):
            if marker in haystack:
                return name
        return self.neutral_name or self.display_names[0]


_MEDIUM, _HIGH = Severity.MEDIUM, Severity.HIGH

_TYPES = (
    ApiAlertType(
        "API_PopulationSpikeInAPITraffic",
        ("Suspicious population-level spike in API traffic to an API endpoint",),
        "Impact",
        "Impact",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_SpikeInAPITraffic",
        ("Suspicious spike in API traffic from a single IP address to an API endpoint",),
        "Impact",
        "Impact",
        _MEDIUM,
    ),
    # The docs list this type twice, once per payload direction, with the same id.
    ApiAlertType(
        "API_SpikeInPayload",
        (
            "Unusually large response payload transmitted between a single IP address and an API "
            "endpoint",
            "Unusually large request body transmitted between a single IP address and an API "
            "endpoint",
        ),
        "Initial access",
        "InitialAccess",
        _MEDIUM,
        markers=("response payload", "request body"),
        # Our wording, used when nothing in the alert says which direction it was.
        neutral_name=(
            "Unusually large payload transmitted between a single IP address and an API endpoint"
        ),
    ),
    ApiAlertType(
        "API_SpikeInLatency",
        (
            "(Preview) Suspicious spike in latency for traffic between a single IP address and "
            "an API endpoint",
        ),
        "Initial access",
        "InitialAccess",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_SprayInRequests",
        (
            "API requests spray from a single IP address to an unusually large number of "
            "distinct API endpoints",
        ),
        "Discovery",
        "Discovery",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_ParameterEnumeration",
        ("Parameter enumeration on an API endpoint",),
        "Initial access",
        "InitialAccess",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_DistributedParameterEnumeration",
        ("Distributed parameter enumeration on an API endpoint",),
        "Initial access",
        "InitialAccess",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_UnseenParamType",
        ("Parameter value(s) with anomalous data types in an API call",),
        "Impact",
        "Impact",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_UnseenParam",
        ("Previously unseen parameter used in an API call",),
        "Impact",
        "Impact",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_AccessFromTorExitNode",
        ("Access from a Tor exit node to an API endpoint",),
        "Pre-attack",
        "PreAttack",
        _MEDIUM,
    ),
    ApiAlertType(
        "API_AccessFromSuspiciousIP",
        ("API Endpoint access from suspicious IP",),
        "Pre-attack",
        "PreAttack",
        _HIGH,
    ),
    ApiAlertType(
        "API_AccessFromSuspiciousUserAgent",
        ("Suspicious User Agent detected",),
        "Execution",
        "Execution",
        _MEDIUM,
    ),
)

ALERT_TYPES: Mapping[str, ApiAlertType] = MappingProxyType({t.alert_type: t for t in _TYPES})

_BY_FOLDED_TYPE = {t.alert_type.casefold(): t for t in _TYPES}


def _folded_name(name: str) -> str:
    name = re.sub(r"^\s*\(preview\)\s*", "", name, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", name).strip().casefold()


_BY_FOLDED_NAME = {_folded_name(n): t for t in _TYPES for n in t.display_names}


def is_api_alert_type(alert_type: object) -> bool:
    """Whether ``alert_type`` names a Defender for APIs alert, documented here or not."""
    return isinstance(alert_type, str) and alert_type.strip().upper().startswith(PREFIX)


def lookup(alert_type: object) -> ApiAlertType | None:
    """The documented type for ``alert_type`` (matched case-insensitively), if there is one."""
    if not isinstance(alert_type, str):
        return None
    return _BY_FOLDED_TYPE.get(alert_type.strip().casefold())


def by_display_name(name: object) -> ApiAlertType | None:
    """The documented type whose display name is ``name``, with or without its "(Preview)"."""
    if not isinstance(name, str):
        return None
    return _BY_FOLDED_NAME.get(_folded_name(name))
