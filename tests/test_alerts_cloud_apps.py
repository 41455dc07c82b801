"""Tests of the Defender for Cloud Apps alerts parser: documented, captured, properties."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, EntityType, Severity, Status
from riposte.alerts.sources import cloud_apps, iter_alert_payloads
from tests.parser_properties import FAST, json_values, pascal
from tests.source_cases import (
    SourceCase,
    arbitrary_payloads,
    field_values,
    fixture_payloads,
    only_entity,
    typed_items,
)

CASE = SourceCase("cloud_apps", cloud_apps.parse, cloud_apps.looks_like)
FIXTURES = CASE.fixtures
OTHER_FIXTURES = CASE.other_fixtures()
load = CASE.load
parse_error = CASE.parse_error


def alerts_in(name: str) -> list[Alert]:
    return [cloud_apps.parse(p) for p in iter_alert_payloads(load(name))]


def minimal(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "_id": "603f704aaf7417985bbf3b22",
        "title": "t",
        "timestamp": 1621941916475,
        "severityValue": 0,
        "statusValue": 0,
        "resolutionStatusValue": 0,
    }
    payload.update(fields)
    return payload


# --- documented and captured payloads -------------------------------------------------------


def test_documented_alert_gives_its_fields() -> None:
    alert = cloud_apps.parse(load("documented_list_alert.json"))

    assert alert.source == "cloud_apps"
    assert alert.id == "603f704aaf7417985bbf3b22"
    assert alert.provider_id == alert.id
    assert alert.title == "Honeytoken activity"
    assert alert.description.startswith("Contoso user performed 11 suspicious activities")
    assert alert.severity is Severity.MEDIUM
    assert alert.created_at == datetime(2021, 5, 25, 11, 25, 16, 475000, tzinfo=UTC)
    assert alert.service_source == "microsoftDefenderForCloudApps"
    assert alert.portal_url == (
        "https://contoso.portal.cloudappsecurity.com/#/alerts/603f704aaf7417985bbf3b22"
    )


def test_open_alert_that_was_read_is_in_progress() -> None:
    alert = cloud_apps.parse(load("documented_list_alert.json"))

    assert (alert.raw["resolutionStatusValue"], alert.raw["statusValue"]) == (0, 1)
    assert alert.status is Status.IN_PROGRESS
    # The example's resolveTime is older than the alert itself: it never moves time backwards.
    assert alert.updated_at == alert.created_at


def test_policy_rule_entity_gives_the_policy_name_id_and_type() -> None:
    alert = cloud_apps.parse(load("documented_list_alert.json"))

    assert alert.policy_name == "Honeytoken activity"
    assert alert.alert_type == "5bfd18bfab73c36ba10d38ca"
    assert alert.category == "ANOMALY_DETECTION"


def test_documented_entities_become_account_devices_and_service() -> None:
    alert = cloud_apps.parse(load("documented_list_alert.json"))

    account = only_entity(alert, EntityType.ACCOUNT)
    assert account.value == "user1@contoso.com"
    assert account.roles == ("source",)
    assert account.attributes["upn"] == "user1@contoso.com"
    # Microsoft 365 (app 11161) keys its accounts by their Entra object id.
    assert account.attributes["aad_user_id"] == "6204bdaf-ad46-4e99-a25d-374a0532c666"
    assert account.attributes["display_name"] == "user1"

    devices = {e.value: e for e in alert.entities_of(EntityType.DEVICE)}
    assert set(devices) == {"DC1", "DC3", "DC4", "Client1"}
    assert devices["Client1"].roles == ("source",)
    assert devices["DC3"].attributes["mdca_id"] == "55017817-27af-49a7-93d6-8af6c5030fdb"

    service = only_entity(alert, EntityType.CLOUD_RESOURCE)
    assert (service.value, service.attributes["display_name"]) == ("20940", "Active Directory")
    assert len(alert.entities) == 6  # the policy rule and the group tag are not entities


def test_captured_alert_takes_the_policy_from_the_top_level_object() -> None:
    alert = cloud_apps.parse(load("xsoar_capture_alert_with_policy.json"))

    assert alert.policy_name == "block png files"
    assert alert.alert_type == "5f01dce13de79160fbec4150"
    assert alert.category == "FILE"
    assert alert.severity is Severity.LOW


def test_captured_alert_without_resolution_status_but_resolved_is_resolved() -> None:
    alert = cloud_apps.parse(load("xsoar_capture_alert_with_policy.json"))

    assert "resolutionStatusValue" not in alert.raw
    assert alert.status is Status.RESOLVED
    assert alert.updated_at == datetime(2020, 7, 12, 7, 48, 40, 975000, tzinfo=UTC)
    assert alert.raw["handledByUser"] == "null"


def test_captured_account_and_user_of_one_person_merge_and_file_keeps_its_mdca_id() -> None:
    alert = cloud_apps.parse(load("xsoar_capture_alert_with_policy.json"))

    account = only_entity(alert, EntityType.ACCOUNT)
    assert account.value == "dev@demistodev.onmicrosoft.com"
    assert account.attributes["display_name"] == "demisto dev"
    assert account.attributes["email"] == "dev@demistodev.onmicrosoft.com"
    file = only_entity(alert, EntityType.FILE)
    assert file.attributes["name"] == "image (2).png"
    assert file.value == (
        "d10230e2-52db-4ec8-815b-c5484524d078|501f6179-e6f9-457c-9892-1590dee07ede"
    )


def test_list_envelope_gives_each_alert_of_data() -> None:
    travel, download = alerts_in("list_response_envelope.json")

    assert travel.id == "65a1f0c2e4b0a1b2c3d4e5f6"
    assert travel.severity is Severity.HIGH  # only the `severity` name is given
    assert travel.status is Status.NEW  # open and unread
    assert travel.policy_name == "Impossible travel"
    assert [e.value for e in travel.entities_of(EntityType.IP)] == ["203.0.113.45", "192.0.2.77"]
    assert all(e.roles == ("source",) for e in travel.entities_of(EntityType.IP))

    assert download.created_at == datetime(2024, 1, 13, 2, 13, 21, tzinfo=UTC)  # ms as a string
    assert download.status is Status.RESOLVED  # closed as false positive
    assert download.severity is Severity.INFORMATIONAL
    assert download.policy_name is None
    assert only_entity(download, EntityType.ACCOUNT).value == "bob@contoso.com"


def test_html_description_is_stripped_to_text() -> None:
    travel, _ = alerts_in("list_response_envelope.json")

    assert travel.description == (
        "The user alice@contoso.com signed in from Amsterdam, NL and Lagos, NG within 41 minutes.\n"
        "Source IP: 203.0.113.45\n"
        "Source IP: 192.0.2.77\n"
        "Activity & risk score: 8"
    )


def test_markdown_description_is_kept_as_it_is() -> None:
    _, download = alerts_in("list_response_envelope.json")

    assert download.description == "**bob@contoso.com** downloaded 412 files in 5 minutes."


def test_variant_with_unknown_codes_and_nulls_parses_honestly() -> None:
    alert = cloud_apps.parse(load("variant_unknown_codes_and_nulls.json"))

    assert alert.id == "6021998877"
    assert alert.title == "Untitled alert 6021998877"
    assert alert.severity is Severity.UNKNOWN
    assert alert.raw["severityValue"] == 7
    assert alert.status is Status.UNKNOWN
    assert alert.raw["resolutionStatusValue"] == 9
    assert alert.created_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert alert.entities == ()
    assert alert.portal_url is None
    assert alert.description == ""


def test_pascal_case_keys_parse_like_camel_case_keys() -> None:
    camel = cloud_apps.parse(load("documented_list_alert.json"))
    upper = cloud_apps.parse(pascal(load("documented_list_alert.json")))

    assert upper.summary() == camel.summary()


# --- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"severityValue": 0}, Severity.LOW),
        ({"severityValue": 1}, Severity.MEDIUM),
        ({"severityValue": "2"}, Severity.HIGH),
        ({"severityValue": 3}, Severity.INFORMATIONAL),
        ({"severityValue": 4}, Severity.UNKNOWN),
        ({"severityValue": None, "severity": "medium"}, Severity.MEDIUM),
        ({"severityValue": None, "severity": "INFO"}, Severity.INFORMATIONAL),
        ({"severityValue": None, "severity": 2}, Severity.HIGH),
        ({"severityValue": None, "severity": "SEVERE"}, Severity.UNKNOWN),
        ({"severityValue": True}, Severity.UNKNOWN),
    ],
)
def test_severity_comes_from_its_code_else_its_name(
    fields: dict[str, Any], expected: Severity
) -> None:
    assert cloud_apps.parse(minimal(**fields)).severity is expected


@pytest.mark.parametrize(
    ("resolution", "read_state", "resolve_time", "expected"),
    [
        (0, 0, None, Status.NEW),
        (0, 1, None, Status.IN_PROGRESS),
        (0, 1, "2021-05-26T00:00:00Z", Status.IN_PROGRESS),
        (0, 2, None, Status.UNKNOWN),
        (0, None, None, Status.NEW),
        (1, 1, None, Status.RESOLVED),
        (2, 0, None, Status.RESOLVED),
        (3, 1, None, Status.RESOLVED),
        (4, 1, None, Status.RESOLVED),
        (5, 1, None, Status.RESOLVED),
        (6, 1, None, Status.UNKNOWN),
        ("BENIGN", 1, None, Status.RESOLVED),
        ("OPEN", "UNREAD", None, Status.NEW),
        (None, 0, None, Status.NEW),
        (None, 1, None, Status.IN_PROGRESS),
        (None, 2, None, Status.RESOLVED),
        (None, 1, "2021-05-26T00:00:00Z", Status.RESOLVED),
        (None, None, None, Status.UNKNOWN),
        (None, 7, None, Status.UNKNOWN),
    ],
)
def test_status_comes_from_resolution_then_read_state(
    resolution: Any, read_state: Any, resolve_time: str | None, expected: Status
) -> None:
    payload = minimal(
        resolutionStatusValue=resolution, statusValue=read_state, resolveTime=resolve_time
    )

    assert cloud_apps.parse(payload).status is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1621941916475, datetime(2021, 5, 25, 11, 25, 16, 475000, tzinfo=UTC)),
        ("1621941916475", datetime(2021, 5, 25, 11, 25, 16, 475000, tzinfo=UTC)),
        (1621941916475.9, datetime(2021, 5, 25, 11, 25, 16, 475000, tzinfo=UTC)),
        ("2021-05-25T11:25:16.475Z", datetime(2021, 5, 25, 11, 25, 16, 475000, tzinfo=UTC)),
    ],
)
def test_timestamp_is_epoch_milliseconds_in_utc(value: Any, expected: datetime) -> None:
    assert cloud_apps.parse(minimal(timestamp=value)).created_at == expected


@pytest.mark.parametrize("bad", [None, True, "soon", 10**20, -(10**20), [1], {"ms": 1}])
def test_missing_or_unusable_timestamp_is_a_parse_error_naming_it(bad: Any) -> None:
    assert parse_error(minimal(timestamp=bad)).field == "timestamp"


def test_unparseable_resolve_time_is_a_parse_error_naming_it() -> None:
    assert parse_error(minimal(resolveTime="last week")).field == "resolveTime"


def test_resolve_time_as_epoch_milliseconds_is_read_too() -> None:
    alert = cloud_apps.parse(minimal(resolveTime=1621941917475))

    assert alert.updated_at == datetime(2021, 5, 25, 11, 25, 17, 475000, tzinfo=UTC)


@pytest.mark.parametrize("bad_id", [None, "", " ", True, 2.5, {"$oid": "x"}, ["x"]])
def test_missing_or_unusable_id_is_a_parse_error_naming_underscore_id(bad_id: Any) -> None:
    assert parse_error(minimal(_id=bad_id)).field == "_id"


def test_integer_id_becomes_a_string() -> None:
    assert cloud_apps.parse(minimal(_id=15795464)).id == "15795464"


def test_entities_that_are_one_object_are_a_list_of_one_not_a_refusal() -> None:
    alert = cloud_apps.parse(minimal(entities={"type": "ip", "id": "203.0.113.9"}))
    assert alert.id == minimal()["_id"]
    assert cloud_apps.parse(minimal(entities="x")).id == alert.id


def test_object_where_text_is_promised_is_a_parse_error_naming_the_field() -> None:
    assert parse_error(minimal(title=["x"])).field == "title"
    assert parse_error(minimal(description={"html": "x"})).field == "description"
    assert parse_error(minimal(policy={"label": {"x": 1}})).field == "policy.label"


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("plain text", "plain text"),
        ("a &lt; b &amp; c", "a < b & c"),
        ("line one<br>line two<br/>line three", "line one\nline two\nline three"),
        ("<div><span>  spaced   out </span></div>", "spaced out"),
        ("x < y and <unclosed", "x < y and <unclosed"),
    ],
)
def test_html_descriptions_become_readable_text(markup: str, expected: str) -> None:
    assert cloud_apps.parse(minimal(description=markup)).description == expected


def test_ip_entity_falls_back_to_its_label_when_the_id_is_not_an_address() -> None:
    alert = cloud_apps.parse(
        minimal(entities=[{"type": "ip", "id": "ip-entity-17", "label": "198.51.100.4"}])
    )

    assert only_entity(alert, EntityType.IP).value == "198.51.100.4"


def test_unknown_entity_types_and_non_objects_are_skipped() -> None:
    alert = cloud_apps.parse(
        minimal(
            entities=[
                "x",
                None,
                {"type": "groupTag", "id": "g", "label": "All Users"},
                {"type": "app-category", "id": 3},
                {"type": 4, "id": "192.0.2.1"},
                {"type": "IP", "id": "192.0.2.9"},
            ]
        )
    )

    assert [e.value for e in alert.entities] == ["192.0.2.9"]


def test_non_mapping_payload_is_a_parse_error() -> None:
    assert isinstance(parse_error("alert"), AlertParseError)


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_is_detected_as_cloud_apps_only(name: str) -> None:
    for payload in fixture_payloads(FIXTURES / name):
        CASE.assert_detected_only(payload)


@pytest.mark.parametrize("path", OTHER_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_looks_like_rejects_every_other_sources_fixture(path: Path) -> None:
    assert not any(cloud_apps.looks_like(p) for p in fixture_payloads(path))


def test_looks_like_needs_an_underscore_id_and_an_alert_field() -> None:
    assert cloud_apps.looks_like({"_id": "5f1e8acedc065031aad553b7", "timestamp": 1})
    assert not cloud_apps.looks_like({"_id": "5f1e8acedc065031aad553b7"})
    assert not cloud_apps.looks_like({"id": "x", "timestamp": 1})
    assert not cloud_apps.looks_like({"_id": "x", "timestamp": 1, "properties": {}})
    assert not cloud_apps.looks_like("x")  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------

TOP_LEVEL_FIELDS = [
    "_id",
    "timestamp",
    "title",
    "description",
    "isMarkdown",
    "severityValue",
    "severity",
    "statusValue",
    "resolutionStatusValue",
    "resolveTime",
    "entities",
    "policy",
    "URL",
    "intent",
    "stories",
]
ENTITY_FIELDS = ["type", "id", "label", "pa", "em", "saas", "inst", "entityRole", "policyType"]
values = json_values(ENTITY_FIELDS)
entity_items = typed_items(
    "type",
    ["account", "user", "device", "service", "policyRule", "file", "ip", "groupTag"],
    ENTITY_FIELDS,
    values,
)
any_field_value = field_values(entity_items, values)


@FAST
@given(field=st.sampled_from(TOP_LEVEL_FIELDS), value=any_field_value)
def test_any_value_in_any_field_parses_or_raises_alert_parse_error(field: str, value: Any) -> None:
    CASE.parses_with(load("documented_list_alert.json"), field, value)


@FAST
@given(items=st.lists(st.one_of(entity_items, values), max_size=6))
def test_any_entity_list_parses_or_raises_alert_parse_error(items: list[Any]) -> None:
    CASE.parses_with(load("xsoar_capture_alert_with_policy.json"), "entities", items)


@FAST
@given(payload=arbitrary_payloads(TOP_LEVEL_FIELDS, any_field_value))
def test_arbitrary_dicts_raise_nothing_but_alert_parse_error(payload: dict[str, Any]) -> None:
    CASE.survives(payload)


@FAST
@given(millis=st.integers(min_value=0, max_value=253402300799999))
def test_any_epoch_millisecond_in_range_round_trips(millis: int) -> None:
    alert = cloud_apps.parse(minimal(timestamp=millis))

    assert round(alert.created_at.timestamp() * 1000) == millis
