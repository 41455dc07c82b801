"""Realistic alert payloads of every Defender API (Graph, MDE, MDCA, ARM) for demos and tests.

The payloads are the JSON files beside this module, one per source (named as
`sample_alerts_by_source` names it). Their times are relative to the ``now`` a caller gives:
``"${now-9m+41.2333s}"`` is that moment as the API writes a timestamp (Graph's 7 fractional
digits), ``"${now-7m|epoch_ms}"`` the same as Cloud Apps' epoch milliseconds (a number). A term
is a sign and amounts of ``d``, ``h``, ``m`` and ``s`` (seconds may carry a fraction).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from riposte.sandbox.clock import graph_time

TENANT_ID = "4b2462a4-bbee-495a-a0e1-f23ae524cc9c"
SUBSCRIPTION_ID = "9c6a7c7e-5d5b-4e0a-8b1f-3f2f1c0d2e11"
PORTAL = "https://security.microsoft.com"
APIM_OPERATION = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-api/providers/"
    "Microsoft.ApiManagement/service/contoso-apim/apis/orders/operations/get-order"
)
ATTACKER_IP = "185.220.101.34"
USER_ACCOUNT = {
    "accountName": "jdoe",
    "domainName": "CONTOSO",
    "userSid": "S-1-5-21-1340283766-2553427312-3419236532-1107",
    "azureAdUserId": "8b1b4a5c-2f0e-4a7e-9c1d-6e2f3a4b5c6d",
    "userPrincipalName": "jdoe@contoso.com",
    "displayName": "Jane Doe",
}
MDE_DEVICE_ID = "7beae8a5ab9bd2f1b2cbd3b5a8f0e3c8d1f2a4b6"
MDE_SERVER_ID = "0f3c9e1d7a2b4c5d6e7f8091a2b3c4d5e6f70812"
MDCA_PORTAL = "https://contoso.us3.portal.cloudappsecurity.com"
OFFICE_365 = 11161
EXCHANGE_ONLINE = 20893
ASC_LOCATION = "westeurope"
APIM_SERVICE = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-api/providers/"
    "Microsoft.ApiManagement/service/contoso-apim"
)

_TERM = r"([+-])((?:\d+(?:\.\d+)?[dhms])+)"
_TIME_RE = re.compile(rf"^\$\{{now(?P<terms>(?:{_TERM})*)(?P<epoch>\|epoch_ms)?\}}$")
_TERM_RE = re.compile(_TERM)
_AMOUNT_RE = re.compile(r"(\d+)(?:\.(\d+))?([dhms])")
_UNIT = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


def epoch_ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def arm_alert_id(name: str, subscription: str = SUBSCRIPTION_ID, group: str = "rg-api") -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Security/"
        f"locations/{ASC_LOCATION}/alerts/{name}"
    )


def _offset(terms: str) -> timedelta:
    """``-9m+41.2333s`` as a timedelta, to the microsecond (no float on the way)."""
    total = timedelta()
    for sign, amounts in _TERM_RE.findall(terms):
        term = timedelta()
        for whole, fraction, unit in _AMOUNT_RE.findall(amounts):
            if unit == "s":
                micros = int((fraction or "").ljust(6, "0")[:6] or 0)
                term += timedelta(seconds=int(whole), microseconds=micros)
            else:
                term += int(whole) * _UNIT[unit]
        total += -term if sign == "-" else term
    return total


def _expand(value: Any, now: datetime) -> Any:
    """A fresh copy of ``value`` with every time marker written for ``now``."""
    if isinstance(value, dict):
        return {key: _expand(item, now) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, now) for item in value]
    if isinstance(value, str) and (marker := _TIME_RE.match(value)):
        moment = now + _offset(marker["terms"])
        return epoch_ms(moment) if marker["epoch"] else graph_time(moment)
    return value


@cache
def _fixture(source: str) -> list[dict[str, Any]]:
    text = resources.files(__name__).joinpath(f"{source}.json").read_text(encoding="utf-8")
    alerts: list[dict[str, Any]] = json.loads(text)
    return alerts


def _samples(source: str, now: datetime) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = _expand(_fixture(source), now)
    return alerts


def sample_graph_alerts(now: datetime) -> list[dict[str, Any]]:
    """Alerts as Graph returns them, created a few minutes before ``now``."""
    return _samples("graph", now)


def sample_endpoint_alerts(now: datetime) -> list[dict[str, Any]]:
    """Defender for Endpoint ``/api/alerts`` payloads (with ``$expand=evidence``) before ``now``.

    PascalCase enums, numeric incident and investigation ids, flat evidence; the last one has
    the string ``"null"`` category and the missing relations that older alerts still show.
    """
    return _samples("defender_endpoint", now)


def sample_cloud_apps_alerts(now: datetime) -> list[dict[str, Any]]:
    """Defender for Cloud Apps ``/api/v1/alerts/`` payloads raised a few minutes before ``now``.

    String ``_id``, epoch-millisecond ``timestamp``, numeric codes, typed ``entities``; the
    last one carries the top-level ``policy`` object some tenants send.
    """
    return _samples("cloud_apps", now)


def sample_defender_cloud_alerts(now: datetime) -> list[dict[str, Any]]:
    """Defender for Cloud security alerts (ARM, api-version 2022-01-01) raised before ``now``.

    Three are Defender for APIs detections on an API Management operation, with the client IP
    in ``extendedProperties``; the last is a Defender for Servers alert on a VM.
    """
    return _samples("defender_cloud", now)


def sample_alerts_by_source(now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Every sample, by source name as the parsers and `source_client` spell it."""
    return {
        "graph": sample_graph_alerts(now),
        "defender_endpoint": sample_endpoint_alerts(now),
        "cloud_apps": sample_cloud_apps_alerts(now),
        "defender_cloud": sample_defender_cloud_alerts(now),
    }
