"""Helpers shared by the per-source parser tests (tests/test_alerts_*.py): fixtures, detection,
entity and error checks, and the shapes of their property-based tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Entity, EntityType
from riposte.alerts.sources import SOURCES, detect_source, iter_alert_payloads, parse_alert
from tests.parser_properties import parses_or_raises_parse_error

FIXTURES = Path(__file__).parent / "fixtures"
# In this order, so that each test file lists the other sources' fixtures as it always did.
_SOURCE_ORDER = ("graph", "defender_endpoint", "cloud_apps", "defender_cloud")


def only_entity(alert: Alert, kind: EntityType) -> Entity:
    found = alert.entities_of(kind)
    assert len(found) == 1, found
    return found[0]


def fixture_payloads(path: Path) -> list[dict[str, Any]]:
    """The alert objects of a fixture file: one alert, a list, or an envelope."""
    return [dict(p) for p in iter_alert_payloads(json.loads(path.read_text(encoding="utf-8")))]


def typed_items(
    type_key: str,
    kinds: list[str],
    fields: list[str],
    values: st.SearchStrategy[Any],
    max_size: int = 6,
) -> st.SearchStrategy[dict[str, Any]]:
    """Enrichment objects (evidence, entities): one of ``kinds`` under ``type_key``, with up to
    ``max_size`` of ``fields`` holding ``values``."""
    return st.builds(
        lambda kind, found: {type_key: kind, **found},
        st.sampled_from(kinds),
        st.dictionaries(st.sampled_from(fields), values, max_size=max_size),
    )


def field_values(
    items: st.SearchStrategy[Any], values: st.SearchStrategy[Any], max_size: int = 4
) -> st.SearchStrategy[Any]:
    """A value for any field: a JSON value, or a list mixing enrichment objects with them."""
    return st.one_of(values, st.lists(st.one_of(items, values), max_size=max_size))


def arbitrary_payloads(
    fields: list[str], values: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of up to eight keys, known field names or any text."""
    return st.dictionaries(
        st.one_of(st.sampled_from(fields), st.text(max_size=10)), values, max_size=8
    )


@dataclass(frozen=True)
class SourceCase:
    """One Defender API's parser under test, and what its tests read and check."""

    source: str
    parse: Callable[[Any], Alert]
    looks_like: Callable[[Any], bool]

    @property
    def fixtures(self) -> Path:
        return FIXTURES / self.source

    def other_fixtures(self) -> list[Path]:
        """Every other source's fixture files: this source's detector must refuse them all."""
        return [
            path
            for source in _SOURCE_ORDER
            if source != self.source
            for path in sorted((FIXTURES / source).glob("*.json"))
        ]

    def load(self, name: str) -> Any:
        return json.loads((self.fixtures / name).read_text(encoding="utf-8"))

    def parse_error(self, payload: Any) -> AlertParseError:
        with pytest.raises(AlertParseError) as caught:
            self.parse(payload)
        return caught.value

    def assert_detected_only(self, payload: dict[str, Any]) -> None:
        """Only this source's detector claims ``payload``, and it parses as this source."""
        matches = [name for name, (_, looks_like) in SOURCES.items() if looks_like(payload)]
        assert matches == [self.source]
        assert detect_source(payload) == self.source
        assert parse_alert(payload).source == self.source

    def parses_with(self, payload: dict[str, Any], field: str, value: Any) -> None:
        """``payload`` with ``field`` set to ``value`` parses or raises `AlertParseError`."""
        payload[field] = value
        parses_or_raises_parse_error(self.parse, payload)

    def survives(self, payload: Any) -> None:
        """Anything at all parses or raises `AlertParseError`, and the detector answers a bool."""
        parses_or_raises_parse_error(self.parse, payload)
        assert isinstance(self.looks_like(payload), bool)
