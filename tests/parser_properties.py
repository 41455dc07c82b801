"""Hypothesis strategies and checks shared by the property-based tests of the alert parsers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

APIM_OPERATION = (
    "/subscriptions/6d1a8e52-0f3b-4c77-9a2e-5b8c1d4e7f90/resourceGroups/rg-payments/providers/"
    "Microsoft.ApiManagement/service/apim-contoso-prod/apis/orders-api/operations/get-order"
)
TRICKY_TEXT = [
    "",
    " ",
    "null",
    "unknownFutureValue",
    "InProgress",
    "2021-04-27T12:19:27.7211305Z",
    "2023-03-22 07:27:56.188461+00:00",
    "2021-02-30T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "1621941916475",
    "99999999999999999999",
    '["Persistence"]',
    '{"Client IP": "192.0.2.1"}',
    '[{"$id": "1", "Type": "ip", "Address": "192.0.2.1"}, {"$ref": "1"}]',
    "<p>a &amp; <b>b</b></p>",
    "<!--",
    APIM_OPERATION,
    "/subscriptions/s/providers/Microsoft.Security/locations/westeurope/alerts/a",
    "192.0.2.1",
    "API_SpikeInPayload",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(TRICKY_TEXT),
)


def json_values(keys: list[str] | None = None) -> st.SearchStrategy[Any]:
    """JSON-like values whose objects use ``keys`` (field names the parsers read) or any text."""
    key_strategy = st.text(max_size=8)
    if keys:
        key_strategy = st.one_of(st.sampled_from(keys), key_strategy)
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(key_strategy, children, max_size=4),
        ),
        max_leaves=12,
    )


def parses_or_raises_parse_error(parse: Callable[[Any], Alert], payload: Any) -> Alert | None:
    """Parse ``payload``: it must give a valid alert or raise `AlertParseError`, nothing else."""
    try:
        alert = parse(payload)
    except AlertParseError as exc:
        assert isinstance(exc.field, str)
        assert str(exc)
        return None
    assert isinstance(alert, Alert)
    assert alert.created_at.utcoffset() == timedelta(0)
    assert alert.updated_at.utcoffset() == timedelta(0)
    assert alert.id.strip()
    assert alert.title
    return alert


def pascal(value: Any) -> Any:
    """``value`` with every object key's first letter upper-cased (``$id`` stays as it is)."""
    if isinstance(value, dict):
        return {k[:1].upper() + k[1:]: pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pascal(v) for v in value]
    return value
