"""Tests of the Defender for Endpoint alerts parser: documented examples, variants, properties."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import EntityType, Severity, Status
from riposte.alerts.sources import defender_endpoint, iter_alert_payloads
from tests.parser_properties import FAST, json_values, parses_or_raises_parse_error, pascal
from tests.source_cases import (
    SourceCase,
    arbitrary_payloads,
    field_values,
    fixture_payloads,
    only_entity,
    typed_items,
)

CASE = SourceCase("defender_endpoint", defender_endpoint.parse, defender_endpoint.looks_like)
FIXTURES = CASE.fixtures
OTHER_FIXTURES = CASE.other_fixtures()
load = CASE.load
parse_error = CASE.parse_error


def alerts_in(name: str) -> list[dict[str, Any]]:
    return [dict(p) for p in iter_alert_payloads(load(name))]


def minimal(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "da1_2",
        "title": "t",
        "severity": "Low",
        "status": "New",
        "alertCreationTime": "2024-01-02T03:04:05.1234567Z",
    }
    payload.update(fields)
    return payload


# --- documented and captured payloads -------------------------------------------------------


def test_documented_single_alert_gives_its_fields() -> None:
    alert = defender_endpoint.parse(load("documented_get_alert.json"))

    assert alert.source == "defender_endpoint"
    assert alert.id == "da637472900382838869_1364969609"
    assert alert.provider_id == alert.id
    assert alert.title == "Low-reputation arbitrary code executed by signed executable"
    assert alert.description.startswith("Binaries signed by Microsoft")
    assert alert.severity is Severity.LOW
    assert alert.status is Status.NEW
    assert alert.category == "Execution"
    assert alert.alert_type == "17e10bbc-3a68-474a-8aad-faef14d43952"
    assert alert.detection_source == "WindowsDefenderAtp"
    assert alert.service_source == "microsoftDefenderForEndpoint"
    assert alert.incident_id == "1126093"
    assert alert.mitre_techniques == ("T1064", "T1085", "T1220")
    assert alert.created_at == datetime(2021, 1, 26, 20, 33, 57, 722023, tzinfo=UTC)
    assert alert.updated_at == datetime(2021, 1, 26, 20, 33, 59, 200000, tzinfo=UTC)


def test_portal_link_is_built_from_the_id_when_the_api_gives_none() -> None:
    alert = defender_endpoint.parse(load("documented_get_alert.json"))

    assert (
        alert.portal_url == "https://security.microsoft.com/alerts/da637472900382838869_1364969609"
    )


def test_portal_link_quotes_the_id_and_a_given_link_wins() -> None:
    built = defender_endpoint.parse(minimal(id="a/b c"))
    given = "https://security.microsoft.com/alerts/da1_2?tid=t"
    given_link = defender_endpoint.parse(minimal(alertWebUrl=given))
    foreign = defender_endpoint.parse(minimal(alertWebUrl="https://example.test/alert"))

    assert built.portal_url == "https://security.microsoft.com/alerts/a%2Fb%20c"
    assert given_link.portal_url == given
    # A link off the vendor's portal hosts never becomes a button: the built one stands in.
    assert foreign.portal_url == "https://security.microsoft.com/alerts/da1_2"


def test_documented_evidence_gives_device_account_process_and_files() -> None:
    alert = defender_endpoint.parse(load("documented_get_alert.json"))

    device = only_entity(alert, EntityType.DEVICE)
    assert device.value == "111e6dd8c833c8a052ea231ec1b19adaf497b625"
    assert device.attributes["dns_name"] == "temp123.middleeast.corp.microsoft.com"
    assert device.attributes["mde_device_id"] == device.value

    accounts = {e.value: e for e in alert.entities_of(EntityType.ACCOUNT)}
    user = accounts["temp123@microsoft.com"]
    assert user.attributes == {
        "upn": "temp123@microsoft.com",
        "sid": "S-1-5-21-11111607-1111760036-109187956-75141",
        "aad_user_id": "11118379-2a59-1111-ac3c-a51eb4a3c627",
        "account_name": "name",
        "domain": "DOMAIN",
    }
    # relatedUser names another account (temp123) than the evidence (name): both are kept.
    assert accounts["DOMAIN\\temp123"].attributes == {"account_name": "temp123", "domain": "DOMAIN"}

    process = only_entity(alert, EntityType.PROCESS)
    assert process.value == "rundll32.exe  c:\\temp\\suspicious.dll,RepeatAfterMe"
    assert process.attributes["pid"] == "3276"
    assert process.attributes["parent_pid"] == "8420"
    assert process.attributes["image_path"] == "C:\\Windows\\SysWOW64\\rundll32.exe"
    assert process.attributes["parent_image_path"] == "C:\\Windows\\System32\\rundll32.exe"
    assert process.attributes["detection_status"] == "Detected"

    files = {e.attributes["name"]: e for e in alert.entities_of(EntityType.FILE)}
    assert set(files) == {"rundll32.exe", "suspicious.dll"}
    assert files["suspicious.dll"].value == (
        "dc0ade0c95d6db98882bc8fa6707e64353cd6f7767ff48d6a81a6c2aef21c608"
    )
    assert files["suspicious.dll"].attributes["path"] == "c:\\temp\\suspicious.dll"
    assert files["suspicious.dll"].attributes["sha1"] == "8563f95b2f8a284fc99da44500cd51a77c1ff36c"


def test_related_user_already_in_the_evidence_is_not_a_second_account() -> None:
    alert = defender_endpoint.parse(
        minimal(
            relatedUser={"userName": "jdoe", "domainName": "CONTOSO"},
            evidence=[
                {
                    "entityType": "User",
                    "accountName": "JDoe",
                    "domainName": "contoso",
                    "userPrincipalName": "jdoe@contoso.com",
                }
            ],
        )
    )

    assert only_entity(alert, EntityType.ACCOUNT).value == "jdoe@contoso.com"


def test_documented_list_response_is_an_envelope_of_alerts() -> None:
    alerts = [defender_endpoint.parse(p) for p in alerts_in("documented_list_alerts.json")]

    assert [a.id for a in alerts] == ["da637308392288907382_-880718168"]
    assert alerts[0].incident_id == "7587"
    assert alerts[0].category == "SuspiciousActivity"
    assert alerts[0].alert_type is None  # no detectorId in this example


def test_2019_alert_reads_alert_files_ips_and_domains() -> None:
    alert = defender_endpoint.parse(load("documented_2019_alert_with_alert_files.json"))

    file = only_entity(alert, EntityType.FILE)
    assert file.value == "c05823562aee5e6d000b0e041197d5b8303f5aa4eecb49820879b705c926e16e"
    # The 2019 filePath already ends with the file name: it is not appended twice.
    assert file.attributes["path"] == "C:\\Users\\test1212\\AppData\\Local\\Temp\\nsf61D3.tmp.exe"
    assert only_entity(alert, EntityType.IP).value == "91.231.212.53"
    assert only_entity(alert, EntityType.URL).value == "login.bullguard.com"
    assert only_entity(alert, EntityType.DEVICE).value == "986e5df8b73dacd43c8917d17e523e76b13c75cd"
    assert alert.category == "CommandAndControl"


def test_captured_2019_alerts_with_the_string_null_category_have_no_category() -> None:
    alerts = [defender_endpoint.parse(p) for p in alerts_in("xsoar_capture_category_null.json")]

    assert len(alerts) == 3
    assert all(a.category is None for a in alerts)
    assert all(a.raw["category"] == "null" for a in alerts)
    assert [a.incident_id for a in alerts] == ["14", "14", "12"]
    assert [a.severity for a in alerts] == [Severity.MEDIUM, Severity.LOW, Severity.LOW]
    assert all(a.detection_source == "CustomerTI" for a in alerts)


def test_pascal_case_variant_with_nulls_and_unknown_enums_parses_honestly() -> None:
    payload = load("variant_pascal_case_nulls_unknown_enums.json")
    alert = defender_endpoint.parse(payload)

    assert alert.id == "da638412345678901234_-1029384756"
    assert alert.severity is Severity.UNKNOWN
    assert alert.raw["Severity"] == "Critical"
    assert alert.status is Status.UNKNOWN
    assert alert.raw["Status"] == "Dismissed"
    assert alert.title == "Untitled alert da638412345678901234_-1029384756"
    assert alert.description == ""
    assert alert.incident_id == "204817"
    # AlertCreationTime is null: the last update is the closest time known.
    assert alert.created_at == datetime(2024, 2, 11, 8, 20, 44, 17000, tzinfo=UTC)
    assert alert.updated_at == alert.created_at
    assert alert.mitre_techniques == ("T1059.001", "T1105")
    assert only_entity(alert, EntityType.DEVICE).value == "build-agent-07.corp.contoso.com"
    assert only_entity(alert, EntityType.IP).value == "198.51.100.23"
    assert only_entity(alert, EntityType.URL).value == "http://198.51.100.23/stage2.ps1"
    assert only_entity(alert, EntityType.ACCOUNT).value == "CONTOSO\\svc-build"
    assert {e.type for e in alert.entities} == {
        EntityType.DEVICE,
        EntityType.IP,
        EntityType.URL,
        EntityType.ACCOUNT,
    }


def test_in_progress_and_resolved_alerts_map_their_status() -> None:
    first, second = (
        defender_endpoint.parse(p) for p in alerts_in("variant_in_progress_and_resolved.json")
    )

    assert (first.status, first.severity) == (Status.IN_PROGRESS, Severity.HIGH)
    assert (second.status, second.severity) == (Status.RESOLVED, Severity.INFORMATIONAL)
    file = only_entity(first, EntityType.FILE)
    assert file.attributes["path"] == "C:\\Users\\jdoe\\Downloads\\mimikatz.exe"
    assert file.attributes["detection_status"] == "Prevented"


def test_process_without_image_hashes_gives_no_file_and_keeps_its_user_as_context() -> None:
    _, resolved = (
        defender_endpoint.parse(p) for p in alerts_in("variant_in_progress_and_resolved.json")
    )

    process = only_entity(resolved, EntityType.PROCESS)
    assert process.attributes["user"] == "NT AUTHORITY\\SYSTEM"
    assert resolved.entities_of(EntityType.FILE) == []
    assert resolved.entities_of(EntityType.ACCOUNT) == []


@pytest.mark.parametrize(
    "name", ["documented_get_alert.json", "documented_2019_alert_with_alert_files.json"]
)
def test_pascal_case_keys_parse_like_camel_case_keys(name: str) -> None:
    camel = defender_endpoint.parse(load(name))
    upper = defender_endpoint.parse(pascal(load(name)))

    assert upper.summary() == camel.summary()


def test_raw_is_a_plain_copy_of_the_payload() -> None:
    payload = load("documented_get_alert.json")
    alert = defender_endpoint.parse(payload)
    payload["evidence"][0]["accountName"] = "changed"

    assert alert.raw["evidence"][0]["accountName"] == "name"


# --- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("UnSpecified", Severity.UNKNOWN),
        ("Informational", Severity.INFORMATIONAL),
        ("Low", Severity.LOW),
        ("MEDIUM", Severity.MEDIUM),
        ("high", Severity.HIGH),
        ("Critical", Severity.UNKNOWN),
        (None, Severity.UNKNOWN),
        (3, Severity.UNKNOWN),
    ],
)
def test_severity_is_read_case_insensitively_and_unknown_values_become_unknown(
    raw: Any, expected: Severity
) -> None:
    alert = defender_endpoint.parse(minimal(severity=raw))

    assert alert.severity is expected
    assert alert.raw["severity"] == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Unknown", Status.UNKNOWN),
        ("New", Status.NEW),
        ("InProgress", Status.IN_PROGRESS),
        ("inProgress", Status.IN_PROGRESS),
        ("Resolved", Status.RESOLVED),
        ("Suppressed", Status.UNKNOWN),
        (None, Status.UNKNOWN),
    ],
)
def test_status_maps_pascal_case_values_and_anything_else_to_unknown(
    raw: Any, expected: Status
) -> None:
    assert defender_endpoint.parse(minimal(status=raw)).status is expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("null", None), ("NULL", None), ("", None), ("Exploit", "Exploit")]
)
def test_category_string_null_means_none(raw: str, expected: str | None) -> None:
    assert defender_endpoint.parse(minimal(category=raw)).category == expected


def test_numeric_ids_become_strings() -> None:
    alert = defender_endpoint.parse(minimal(id=123456, incidentId=7587.0))

    assert (alert.id, alert.incident_id) == ("123456", "7587")


@pytest.mark.parametrize("bad_id", [None, "", "  ", True, 1.5, {"v": 1}, ["a"]])
def test_missing_or_unusable_id_is_a_parse_error_naming_id(bad_id: Any) -> None:
    assert parse_error(minimal(id=bad_id)).field == "id"


def test_alert_without_any_time_is_a_parse_error_naming_the_creation_time() -> None:
    payload = minimal()
    del payload["alertCreationTime"]

    assert parse_error(payload).field == "alertCreationTime"


@pytest.mark.parametrize("field", ["alertCreationTime", "lastUpdateTime"])
def test_unparseable_time_is_a_parse_error_naming_it(field: str) -> None:
    assert parse_error(minimal(**{field: "yesterday"})).field == field


@pytest.mark.parametrize("field", ["evidence", "alertFiles", "alertIps", "alertDomains"])
def test_an_entity_list_that_is_one_object_is_a_list_of_one_and_never_costs_the_alert(
    field: str,
) -> None:
    """Some exporters write one evidence object instead of a list: enrichment is read
    leniently (a list of one, or nothing for a non-object), identity strictly."""
    one = {"entityType": "Ip", "ipAddress": "203.0.113.9", "host": "203.0.113.9"}
    alert = defender_endpoint.parse(minimal(**{field: one}))
    assert alert.id == minimal()["id"]
    if field in ("evidence", "alertIps"):
        assert "203.0.113.9" in [e.value for e in alert.entities]
    assert defender_endpoint.parse(minimal(**{field: 42})).id == alert.id
    assert parse_error(minimal(**{field: one, "id": None})).field == "id"


def test_object_where_text_is_promised_is_a_parse_error_naming_the_field() -> None:
    assert parse_error(minimal(title={"a": 1})).field == "title"
    assert parse_error(minimal(category=["Execution"])).field == "category"
    assert parse_error(minimal(mitreTechniques={"T1": 1})).field == "mitreTechniques"


def test_unknown_evidence_types_and_items_without_a_value_are_skipped() -> None:
    alert = defender_endpoint.parse(
        minimal(
            evidence=[
                "text",
                None,
                {"entityType": "Registry", "registryKey": "HKLM\\x"},
                {"entityType": "Ip", "ipAddress": None},
                {"entityType": 5, "ipAddress": "192.0.2.1"},
                {"ipAddress": "192.0.2.2"},
                {"entityType": "IP", "ipAddress": " 192.0.2.3 "},
            ]
        )
    )

    assert [e.value for e in alert.entities] == ["192.0.2.3"]


def test_non_mapping_payload_is_a_parse_error() -> None:
    assert isinstance(parse_error(["an", "alert"]), AlertParseError)


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_is_detected_as_defender_endpoint_only(name: str) -> None:
    for payload in fixture_payloads(FIXTURES / name):
        CASE.assert_detected_only(payload)


@pytest.mark.parametrize("path", OTHER_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_looks_like_rejects_every_other_sources_fixture(path: Path) -> None:
    assert not any(defender_endpoint.looks_like(p) for p in fixture_payloads(path))


def test_looks_like_needs_an_id_and_a_field_only_this_api_sends() -> None:
    assert defender_endpoint.looks_like({"id": "x", "machineId": "m"})
    assert defender_endpoint.looks_like({"id": "x", "evidence": [{"entityType": "File"}]})
    assert not defender_endpoint.looks_like({"machineId": "m"})
    assert not defender_endpoint.looks_like({"id": "x", "title": "no marker"})
    assert not defender_endpoint.looks_like({"id": "x", "machineId": "m", "_id": "y"})
    assert not defender_endpoint.looks_like([])  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------

TOP_LEVEL_FIELDS = [
    "id",
    "incidentId",
    "severity",
    "status",
    "category",
    "detectorId",
    "detectionSource",
    "title",
    "description",
    "alertCreationTime",
    "lastUpdateTime",
    "machineId",
    "computerDnsName",
    "mitreTechniques",
    "relatedUser",
    "alertUser",
    "evidence",
    "alertFiles",
    "alertIps",
    "alertDomains",
    "alertWebUrl",
]
EVIDENCE_FIELDS = [
    "entityType",
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "parentProcessId",
    "ipAddress",
    "url",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "userName",
    "host",
]
values = json_values(EVIDENCE_FIELDS)
evidence_items = typed_items(
    "entityType",
    ["User", "Process", "File", "Ip", "Url", "Registry", "Machine"],
    EVIDENCE_FIELDS,
    values,
)
any_field_value = field_values(evidence_items, values)


@FAST
@given(field=st.sampled_from(TOP_LEVEL_FIELDS), value=any_field_value)
def test_any_value_in_any_field_parses_or_raises_alert_parse_error(field: str, value: Any) -> None:
    CASE.parses_with(load("documented_get_alert.json"), field, value)


@FAST
@given(items=st.lists(st.one_of(evidence_items, values), max_size=6))
def test_any_evidence_list_parses_or_raises_alert_parse_error(items: list[Any]) -> None:
    payload = load("documented_2019_alert_with_alert_files.json")
    payload["evidence"] = items
    payload["alertFiles"] = items

    parses_or_raises_parse_error(defender_endpoint.parse, payload)


@FAST
@given(payload=arbitrary_payloads(TOP_LEVEL_FIELDS, any_field_value))
def test_arbitrary_dicts_raise_nothing_but_alert_parse_error(payload: dict[str, Any]) -> None:
    CASE.survives(payload)
