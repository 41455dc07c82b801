"""One parser per Defender API; adding a source is adding one module here and one registry line."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert
from riposte.alerts.sources import cloud_apps, defender_cloud, defender_endpoint, graph

Parser = Callable[[Mapping[str, Any]], Alert]
Detector = Callable[[Mapping[str, Any]], bool]

# name -> (parser, detector). The name is the `source` of every alert the parser makes and the
# `{source}` of the intake route `POST /alerts/{source}`. Each detector rejects the other APIs'
# shapes, so the order does not decide anything; `detect_source` refuses to guess between two.
SOURCES: dict[str, tuple[Parser, Detector]] = {
    graph.SOURCE: (graph.parse, graph.looks_like),
    defender_endpoint.SOURCE: (defender_endpoint.parse, defender_endpoint.looks_like),
    cloud_apps.SOURCE: (cloud_apps.parse, cloud_apps.looks_like),
    defender_cloud.SOURCE: (defender_cloud.parse, defender_cloud.looks_like),
}

SourceName = Literal["graph", "defender_endpoint", "cloud_apps", "defender_cloud"]
"""The names of `SOURCES`, as a type: a flow parameter of this type is a list to pick from in the
Prefect UI's run forms (a test keeps the two the same)."""


def parser_for(source: str) -> Parser:
    try:
        return SOURCES[source][0]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise AlertParseError(f"unknown source '{source}' (known: {known})") from None


def detect_source(payload: Mapping[str, Any]) -> str:
    matches = [name for name, (_, looks_like) in SOURCES.items() if looks_like(payload)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AlertParseError(
            f"this alert looks like more than one Defender API ({', '.join(matches)}); "
            "pass --source"
        )
    raise AlertParseError("cannot tell which Defender API this alert comes from; pass --source")


def iter_alert_payloads(
    document: Any, on_bad_item: Callable[[AlertParseError], None] | None = None
) -> Iterator[Mapping[str, Any]]:
    """Yield the alert objects of a decoded JSON document: one alert, a list, or an envelope.
    An item that is not an object raises `AlertParseError`, or, given ``on_bad_item``, is
    handed to it and skipped."""
    if isinstance(document, list):
        items: list[Any] = document
    elif isinstance(document, Mapping) and isinstance(document.get("value"), list):
        items = document["value"]
    elif isinstance(document, Mapping) and isinstance(document.get("data"), list):
        items = document["data"]
    elif isinstance(document, Mapping):
        items = [document]
    else:
        raise AlertParseError(f"expected a JSON object or list, got {type(document).__name__}")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            bad = AlertParseError(
                f"expected an alert object, got {type(item).__name__}", field=f"[{index}]"
            )
            if on_bad_item is None:
                raise bad
            on_bad_item(bad)
            continue
        yield item


def parse_alert(payload: Mapping[str, Any], source: str | None = None) -> Alert:
    return parser_for(source or detect_source(payload))(payload)
