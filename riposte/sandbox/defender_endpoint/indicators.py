"""Defender for Endpoint indicators: submit or update one (``POST /api/indicators``), list them,
and the sandbox's view of those submitted."""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.defender_endpoint.api import (
    INDICATORS,
    MDE_ROOT,
    control_router,
    field,
    forbidden,
    invalid_body,
    object_body,
    page,
    required_text,
    router,
)
from riposte.sandbox.defender_endpoint.filters import entity_filter
from riposte.sandbox.identity import needs_role
from riposte.sandbox.state import get_state

INDICATOR_TYPES = (
    "FileSha1",
    "FileMd5",
    "CertificateThumbprint",
    "FileSha256",
    "IpAddress",
    "DomainName",
    "Url",
)
INDICATOR_ACTIONS = (
    "Alert",
    "Warn",
    "Block",
    "Audit",
    "BlockAndRemediate",
    "AlertAndBlock",
    "Allowed",
)
INDICATOR_SEVERITIES = ("Informational", "Low", "Medium", "High")
_HEX_LENGTHS = {"FileSha1": 40, "FileSha256": 64, "FileMd5": 32, "CertificateThumbprint": 40}


def _one_of(body: dict[str, Any], name: str, allowed: tuple[str, ...], required: bool) -> Any:
    value = field(body, name)
    if value is None and not required:
        return None
    if value not in allowed:
        raise invalid_body(f"'{value}' is not a valid {name} ({', '.join(allowed)}).")
    return value


def _indicator_value(indicator_type: str, value: str) -> str:
    """The value checked against its type; the API refuses what cannot be that type."""
    stripped = value.strip()
    length = _HEX_LENGTHS.get(indicator_type)
    if length is not None and not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", stripped):
        problem = f"is not a valid {indicator_type} ({length} hexadecimal characters)"
    elif indicator_type == "IpAddress" and "/" in stripped:
        problem = "is a range: CIDR notation is not supported"
    elif indicator_type == "IpAddress" and not _is_ip(stripped):
        problem = "is not a valid IP address"
    elif indicator_type == "DomainName" and ("/" in stripped or " " in stripped):
        problem = "is not a valid domain name"
    elif indicator_type == "Url" and " " in stripped:
        problem = "is not a valid URL"
    else:
        return stripped
    raise invalid_body(f"'{value}' {problem}.")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validated_indicator(body: dict[str, Any]) -> dict[str, Any]:
    indicator_type = _one_of(body, "indicatorType", INDICATOR_TYPES, required=True)
    value = _indicator_value(indicator_type, required_text(body, "indicatorValue"))
    action = _one_of(body, "action", INDICATOR_ACTIONS, required=True)
    generate_alert = field(body, "generateAlert")
    if generate_alert is not None and not isinstance(generate_alert, bool):
        raise invalid_body("generateAlert must be true or false.")
    if action == "Audit" and generate_alert is not True:
        raise invalid_body("generateAlert must be true for an Audit indicator.")
    expiration = field(body, "expirationTime")
    if expiration is not None and (
        not isinstance(expiration, str) or parse_ticks(expiration) is None
    ):
        raise invalid_body(f"'{expiration}' is not a valid expirationTime.")
    groups = field(body, "rbacGroupNames")
    if groups is not None and (
        not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
    ):
        raise invalid_body("rbacGroupNames must be a list of names.")
    return {
        "indicatorValue": value,
        "indicatorType": indicator_type,
        "action": action,
        "title": required_text(body, "title"),
        "description": required_text(body, "description"),
        "severity": _one_of(body, "severity", INDICATOR_SEVERITIES, required=False),
        "expirationTime": expiration,
        "recommendedActions": field(body, "recommendedActions"),
        "rbacGroupNames": groups or [],
        "generateAlert": bool(generate_alert) if generate_alert is not None else None,
        "application": field(body, "application"),
    }


@router.post("/indicators", dependencies=[Depends(needs_role(INDICATORS, forbidden))])
async def submit_indicator(request: Request) -> JSONResponse:
    """Submit or update: an indicator of the same type and value is updated, not repeated."""
    body = await object_body(request)
    state = get_state(request)
    fields = _validated_indicator(body)
    endpoint = state.endpoint
    now = state.graph_clock.next()
    app = state.config.client_id
    wanted = (fields["indicatorType"], fields["indicatorValue"].lower())
    indicator = next(
        (
            i
            for i in endpoint.indicators.values()
            if (i["indicatorType"], i["indicatorValue"].lower()) == wanted
        ),
        None,
    )
    if indicator is None:
        indicator = {
            "id": str(endpoint.next_indicator_id),
            "source": app,
            "sourceType": "AadApp",
            "createdBy": app,
            "createdBySource": "PublicApi",
            "createdByDisplayName": app,
            "creationTimeDateTimeUtc": now,
            **fields,
        }
        endpoint.next_indicator_id += 1
        endpoint.indicators[indicator["id"]] = indicator
    else:
        # `application` applies to new indicators only, as the API documents.
        fields.pop("application")
        indicator.update(fields)
    if indicator.get("generateAlert") is None:
        indicator["generateAlert"] = indicator["action"] in ("Alert", "AlertAndBlock", "Audit")
    indicator["lastUpdateTime"] = now
    indicator["lastUpdatedBy"] = app
    body = {"@odata.context": f"{MDE_ROOT}/$metadata#Indicators/$entity"}
    body.update(copy.deepcopy(indicator))
    return JSONResponse(body)


@router.get("/indicators", dependencies=[Depends(needs_role(INDICATORS, forbidden))])
async def list_indicators(request: Request) -> JSONResponse:
    state = get_state(request)
    predicates = entity_filter(
        request.query_params.get("$filter"),
        (
            "indicatorValue",
            "indicatorType",
            "action",
            "title",
            "severity",
            "application",
            "createdBy",
            "createdByDisplayName",
        ),
        datetimes=("expirationTime", "creationTimeDateTimeUtc"),
        booleans=("generateAlert",),
    )
    matching = [i for i in state.endpoint.indicators.values() if all(p(i) for p in predicates)]
    return JSONResponse(
        {"@odata.context": f"{MDE_ROOT}/$metadata#Indicators", "value": page(request, matching)}
    )


@control_router.get("/indicators")
async def indicators(request: Request) -> list[dict[str, Any]]:
    return copy.deepcopy(list(get_state(request).endpoint.indicators.values()))
