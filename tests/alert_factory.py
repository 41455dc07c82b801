"""Build normalized alerts for policy, throttle and template tests, with only the fields a test
cares about given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from riposte.alerts.model import Alert, Entity, EntityType, Severity

T0 = datetime(2024, 6, 12, 9, 14, 3, tzinfo=UTC)


def entity(kind: str, value: str, **attributes: str) -> Entity:
    return Entity(type=EntityType(kind), value=value, attributes=attributes)


def make_alert(
    alert_id: str = "a-1",
    *,
    entities: tuple[Entity, ...] = (),
    at: datetime = T0,
    **fields: Any,
) -> Alert:
    data: dict[str, Any] = {
        "source": "graph",
        "id": alert_id,
        "title": "Something happened",
        "severity": Severity.MEDIUM,
        "created_at": at,
        "updated_at": at,
        "entities": entities,
    }
    data.update(fields)
    return Alert(**data)


def api_alert(
    alert_id: str,
    alert_type: str,
    *,
    ip: str = "203.0.113.45",
    endpoint: str = "apim-contoso-prod/orders-api/get-order",
    minutes: float = 0,
    severity: Severity = Severity.MEDIUM,
) -> Alert:
    """A Defender for APIs alert as the Graph parser makes it."""
    return make_alert(
        alert_id,
        alert_type=alert_type,
        title=f"{alert_type} on {endpoint}",
        severity=severity,
        service_source="microsoftDefenderForCloud",
        detection_source="microsoftDefenderForApiManagement",
        entities=(entity("ip", ip), entity("api_endpoint", endpoint)),
        at=T0 + timedelta(minutes=minutes),
    )
