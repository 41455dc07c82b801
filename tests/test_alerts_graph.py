"""Tests of the Microsoft Graph alerts_v2 parser: documented examples, edge cases, properties.

Long because Graph has the most evidence types of the four APIs, each read and tested here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import EntityType, Severity, Status
from riposte.alerts.sources import detect_source, graph, parse_alert
from tests.parser_properties import APIM_OPERATION, FAST
from tests.parser_properties import pascal as _pascal
from tests.source_cases import (
    SourceCase,
    arbitrary_payloads,
    field_values,
    only_entity,
    typed_items,
)

CASE = SourceCase("graph", graph.parse, graph.looks_like)
FIXTURES = CASE.fixtures
load = CASE.load
parse_error = CASE.parse_error


def minimal(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "da1",
        "title": "t",
        "severity": "low",
        "status": "new",
        "createdDateTime": "2024-01-02T03:04:05.1234567Z",
    }
    payload.update(fields)
    return payload


# --- documented and realistic payloads ------------------------------------------------------


def test_documented_get_alert_example_gives_its_fields() -> None:
    alert = graph.parse(load("documented_get_alert.json"))

    assert alert.source == "graph"
    assert alert.id == "da637578995287051192_756343937"
    assert alert.provider_id == "da637578995287051192_756343937"
    assert alert.title == "Suspicious execution of hidden file"
    assert alert.description.startswith("A hidden file has been launched.")
    assert alert.severity is Severity.LOW
    assert alert.status is Status.NEW
    assert alert.category == "DefenseEvasion"
    assert alert.alert_type == "e0da400f-affd-43ef-b1d5-afc2eb6f2756"
    assert alert.service_source == "microsoftDefenderForEndpoint"
    assert alert.detection_source == "antivirus"
    assert alert.incident_id == "28282"
    assert alert.mitre_techniques == ("T1564.001",)
    assert alert.portal_url == (
        "https://security.microsoft.com/alerts/da637578995287051192_756343937"
        "?tid=b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c"
    )


def test_seven_fractional_digits_are_truncated_to_microseconds_in_utc() -> None:
    alert = graph.parse(load("documented_get_alert.json"))

    assert alert.created_at == datetime(2021, 4, 27, 12, 19, 27, 721130, tzinfo=UTC)
    assert alert.updated_at == datetime(2021, 5, 2, 14, 19, 1, 326666, tzinfo=UTC)


def test_documented_example_evidence_becomes_device_file_and_process() -> None:
    alert = graph.parse(load("documented_get_alert.json"))

    device = only_entity(alert, EntityType.DEVICE)
    assert device.value == "73e7e2de709dff64ef64b1d0c30e67fab63279db"
    assert device.roles == ("compromised",)
    assert device.attributes["dns_name"] == "tempDns"
    assert device.attributes["os_platform"] == "Windows10"
    assert "aad_device_id" not in device.attributes  # null in the payload
    assert device.attributes["azure_resource_id"].endswith("/virtualMachines/NirLaviTests")

    process = only_entity(alert, EntityType.PROCESS)
    assert process.value == '"MsSense.exe"'
    assert process.attributes["pid"] == "4780"
    assert process.attributes["image_path"] == "C:\\Program Files\\temp\\MsSense.exe"
    assert process.attributes["user"] == "NT AUTHORITY\\SYSTEM"

    # The file evidence and the process image are the same file: one entity.
    file = only_entity(alert, EntityType.FILE)
    assert file.value == "8963a19fb992ad9a76576c5638fd68292cffb9aaac29eb8285f9abf6196a7dec"
    assert file.attributes["sha1"] == "5f1e8acedc065031aad553b710838eb366cfee9a"
    assert file.attributes["name"] == "MsSense.exe"


def test_evidence_types_without_a_reader_are_skipped_but_kept_in_raw() -> None:
    payload = load("documented_get_alert.json")
    alert = graph.parse(payload)

    assert {e.type for e in alert.entities} == {
        EntityType.DEVICE,
        EntityType.FILE,
        EntityType.PROCESS,
    }
    assert alert.raw["evidence"][3]["registryHive"] == "HKEY_LOCAL_MACHINE"


def test_defender_for_apis_alert_carries_its_type_sources_and_severity() -> None:
    alert = graph.parse(load("defender_for_apis_alert.json"))

    assert alert.alert_type == "API_AccessFromSuspiciousIP"
    assert alert.service_source == "microsoftDefenderForCloud"
    assert alert.detection_source == "microsoftDefenderForApiManagement"
    assert alert.severity is Severity.HIGH
    assert alert.title == "API Endpoint access from suspicious IP"
    assert alert.updated_at == datetime(2024, 6, 12, 9, 20, 41, 60000, tzinfo=UTC)


def test_defender_for_apis_alert_names_the_attacker_ip_and_the_api_operation() -> None:
    alert = graph.parse(load("defender_for_apis_alert.json"))

    ip = only_entity(alert, EntityType.IP)
    assert ip.value == "203.0.113.45"
    assert ip.roles == ("attacker",)
    assert ip.attributes == {"country": "NL"}

    endpoint = only_entity(alert, EntityType.API_ENDPOINT)
    assert endpoint.value == "apim-contoso-prod/orders-api/get-order"
    assert endpoint.roles == ("attacked",)
    assert endpoint.attributes["service"] == "apim-contoso-prod"
    assert endpoint.attributes["api"] == "orders-api"
    assert endpoint.attributes["operation"] == "get-order"
    assert endpoint.attributes["resource_id"] == APIM_OPERATION

    resources = {e.value: e for e in alert.entities_of(EntityType.CLOUD_RESOURCE)}
    assert APIM_OPERATION in resources
    assert resources[APIM_OPERATION].attributes["resource_name"] == "get-order"
    assert len(resources) == 2  # the operation and its API Management service


def test_alert_read_without_prefer_header_keeps_unknown_future_value_sources() -> None:
    with_prefer = graph.parse(load("defender_for_apis_alert.json"))
    without = graph.parse(load("defender_for_apis_alert_without_prefer.json"))

    assert without.service_source == "unknownFutureValue"
    assert without.detection_source == "unknownFutureValue"
    assert without.alert_type == "API_AccessFromSuspiciousIP"
    assert without.entities == with_prefer.entities
    assert without.severity is with_prefer.severity


def test_live_style_payload_with_null_classification_and_extra_fields_parses() -> None:
    payload = load("live_style_alert.json")
    alert = graph.parse(payload)

    assert alert.status is Status.IN_PROGRESS
    assert alert.severity is Severity.MEDIUM
    assert alert.incident_id == "1337"
    assert alert.mitre_techniques == ("T1566.002", "T1204.001")
    assert alert.raw == payload
    assert alert.raw["classification"] is None
    assert alert.raw["investigationState"] == "running"
    assert alert.raw["categories"] == ["InitialAccess"]


def test_alert_type_falls_back_to_alert_policy_id_when_detector_id_is_null() -> None:
    alert = graph.parse(load("live_style_alert.json"))

    assert alert.alert_type == "b26a5770-0c38-434a-9380-3a3c2c27bbb3"


def test_mailbox_and_user_evidence_of_one_person_merge_into_one_account() -> None:
    alert = graph.parse(load("live_style_alert.json"))

    account = only_entity(alert, EntityType.ACCOUNT)
    assert account.value == "alice@contoso.com"
    assert account.roles == ("contextual", "compromised")
    assert account.attributes["sid"] == "S-1-5-21-1004336348-1177238915-682003330-1105"
    assert account.attributes["aad_user_id"] == "7e9d1c3a-2b4f-4e6a-8c0d-1f2e3d4c5b6a"
    assert account.attributes["mailbox"] == "alice@contoso.com"
    assert only_entity(alert, EntityType.URL).value == "http://login-contoso.example/verify"
    assert only_entity(alert, EntityType.IP).attributes == {}  # countryLetterCode null


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_is_detected_as_graph(name: str) -> None:
    payload = load(name)

    assert graph.looks_like(payload)
    assert detect_source(payload) == "graph"
    assert parse_alert(payload).source == "graph"


def test_raw_is_a_plain_copy_of_the_payload() -> None:
    payload = load("documented_get_alert.json")
    alert = graph.parse(payload)
    payload["evidence"][0]["mdeDeviceId"] = "changed"

    assert type(alert.raw) is dict
    assert alert.raw["evidence"][0]["mdeDeviceId"] == "73e7e2de709dff64ef64b1d0c30e67fab63279db"


@pytest.mark.parametrize("name", ["documented_get_alert.json", "defender_for_apis_alert.json"])
def test_pascal_case_keys_parse_like_camel_case_keys(name: str) -> None:
    camel = graph.parse(load(name))
    pascal = graph.parse(_pascal(load(name)))

    assert pascal.summary() == camel.summary()


# --- detection ------------------------------------------------------------------------------


def test_looks_like_accepts_graph_alert_without_odata_type() -> None:
    assert graph.looks_like({"id": "x", "serviceSource": "microsoftDefenderForEndpoint"})
    assert graph.looks_like(
        {"id": "x", "evidence": [{"@odata.type": "#microsoft.graph.security.ipEvidence"}]}
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            {
                "id": "da637308392288907382_-880718168",
                "incidentId": 7,
                "severity": "Medium",
                "status": "New",
                "detectionSource": "WindowsDefenderAv",
                "alertCreationTime": "2020-07-21T13:25:02.7Z",
                "machineId": "111e6dd8c833c8a052ea231ec1b19adaf497b625",
                "evidence": [{"entityType": "File", "sha1": "abc"}],
            },
            id="defender-for-endpoint",
        ),
        pytest.param(
            {"_id": "5f1e8acedc065031aad553b7", "timestamp": 1621843200000, "title": "x"},
            id="defender-for-cloud-apps",
        ),
        pytest.param(
            {
                "id": "/subscriptions/s/providers/Microsoft.Security/locations/westeurope/alerts/a",
                "name": "a",
                "type": "Microsoft.Security/Locations/alerts",
                "properties": {"alertType": "API_AccessFromSuspiciousIP", "severity": "High"},
            },
            id="defender-for-cloud-arm",
        ),
        pytest.param({"id": "x", "title": "no graph marker"}, id="bare-id"),
        pytest.param({"serviceSource": "microsoftDefenderForCloud"}, id="no-id"),
        pytest.param({"@odata.type": "#microsoft.graph.alert", "id": "x"}, id="legacy-graph-alert"),
    ],
)
def test_looks_like_rejects_other_defender_apis(payload: dict[str, Any]) -> None:
    assert not graph.looks_like(payload)


def test_looks_like_rejects_non_mappings() -> None:
    assert not graph.looks_like([])  # type: ignore[arg-type]
    assert not graph.looks_like("alert")  # type: ignore[arg-type]


# --- fields ---------------------------------------------------------------------------------


def test_numeric_id_and_incident_id_become_strings() -> None:
    alert = graph.parse(minimal(id=12345, incidentId=28282))

    assert alert.id == "12345"
    assert alert.incident_id == "28282"


@pytest.mark.parametrize("bad_id", [None, "", "   ", True, 1.5, {"v": 1}, ["a"]])
def test_missing_empty_or_non_scalar_id_is_a_parse_error_naming_id(bad_id: Any) -> None:
    assert parse_error(minimal(id=bad_id)).field == "id"


def test_payload_without_id_key_is_a_parse_error_naming_id() -> None:
    payload = minimal()
    del payload["id"]

    assert parse_error(payload).field == "id"


@pytest.mark.parametrize("title", [None, "", "  "])
def test_missing_title_falls_back_to_a_text_naming_the_alert(title: Any) -> None:
    alert = graph.parse(minimal(title=title))

    assert alert.title == "Untitled alert da1"


def test_non_string_title_is_a_parse_error_naming_title() -> None:
    assert parse_error(minimal(title=["a"])).field == "title"
    assert parse_error(minimal(title=3)).field == "title"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("unknown", Severity.UNKNOWN),
        ("informational", Severity.INFORMATIONAL),
        ("low", Severity.LOW),
        ("Medium", Severity.MEDIUM),
        ("HIGH", Severity.HIGH),
        ("unknownFutureValue", Severity.UNKNOWN),
        ("critical", Severity.UNKNOWN),
        (None, Severity.UNKNOWN),
        (3, Severity.UNKNOWN),
    ],
)
def test_severity_is_read_case_insensitively_and_unknown_values_become_unknown(
    raw: Any, expected: Severity
) -> None:
    alert = graph.parse(minimal(severity=raw))

    assert alert.severity is expected
    assert alert.raw["severity"] == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("new", Status.NEW),
        ("inProgress", Status.IN_PROGRESS),
        ("resolved", Status.RESOLVED),
        ("Resolved", Status.RESOLVED),
        ("unknownFutureValue", Status.UNKNOWN),
        (None, Status.UNKNOWN),
        ({}, Status.UNKNOWN),
    ],
)
def test_status_maps_graph_values_and_anything_else_to_unknown(raw: Any, expected: Status) -> None:
    assert graph.parse(minimal(status=raw)).status is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-05-10T11:58:24.7893542Z", datetime(2023, 5, 10, 11, 58, 24, 789354, tzinfo=UTC)),
        ("2023-05-10T11:58:24Z", datetime(2023, 5, 10, 11, 58, 24, tzinfo=UTC)),
        ("2023-05-10T13:58:24.5+02:00", datetime(2023, 5, 10, 11, 58, 24, 500000, tzinfo=UTC)),
        ("2023-05-10T06:28:24-0530", datetime(2023, 5, 10, 11, 58, 24, tzinfo=UTC)),
        ("2023-05-10T11:58:24.123", datetime(2023, 5, 10, 11, 58, 24, 123000, tzinfo=UTC)),
    ],
)
def test_created_date_time_is_read_as_utc(text: str, expected: datetime) -> None:
    alert = graph.parse(minimal(createdDateTime=text))

    assert alert.created_at == expected
    assert alert.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "yesterday",
        "2021-02-30T00:00:00Z",
        "2021-01-01T00:00:00+24:00",
        "2021-01-01T00:00:00+01:75",
        "0001-01-01T00:00:00+01:00",
        "2021-01-01",
        1619525967,
        ["2021-01-01T00:00:00Z"],
    ],
)
def test_missing_or_unparseable_created_date_time_is_a_parse_error(bad: Any) -> None:
    assert parse_error(minimal(createdDateTime=bad)).field == "createdDateTime"


def test_updated_at_falls_back_to_created_at_when_last_update_is_missing() -> None:
    alert = graph.parse(minimal(lastUpdateDateTime=None))

    assert alert.updated_at == alert.created_at


def test_unparseable_last_update_date_time_is_a_parse_error_naming_it() -> None:
    assert parse_error(minimal(lastUpdateDateTime="soon")).field == "lastUpdateDateTime"


def test_mitre_techniques_are_deduplicated_in_order_and_non_strings_dropped() -> None:
    alert = graph.parse(minimal(mitreTechniques=["T1", "T2", "T1", 7, None, "", "T3"]))

    assert alert.mitre_techniques == ("T1", "T2", "T3")


def test_non_list_mitre_techniques_is_a_parse_error_naming_it() -> None:
    assert parse_error(minimal(mitreTechniques="T1190")).field == "mitreTechniques"


def test_non_mapping_payload_is_a_parse_error() -> None:
    assert isinstance(parse_error(["not", "an", "alert"]), AlertParseError)


def test_payload_with_non_string_keys_is_a_parse_error_not_a_validation_error() -> None:
    payload: dict[Any, Any] = minimal()
    payload[1] = "x"

    assert parse_error(payload).field.startswith("raw")


def test_object_where_a_string_is_promised_is_a_parse_error_naming_the_field() -> None:
    assert parse_error(minimal(category={"a": 1})).field == "category"
    assert parse_error(minimal(description=["x"])).field == "description"


# --- evidence -------------------------------------------------------------------------------


def test_evidence_that_is_one_object_is_read_as_a_list_of_one_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Enrichment is read leniently: an exporter that wrote one evidence object instead of a
    list does not cost the alert (identity fields stay strict)."""
    one = {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.9"}
    with caplog.at_level("WARNING", logger="riposte.alerts"):
        alert = graph.parse(minimal(evidence=one))
    assert [e.value for e in alert.entities] == ["203.0.113.9"]
    assert "evidence is one object where a list belongs" in caplog.text
    assert graph.parse(minimal(evidence="not evidence")).entities == ()
    assert parse_error(minimal(id=None)).field == "id"


def test_null_evidence_gives_no_entities() -> None:
    assert graph.parse(minimal(evidence=None)).entities == ()


def test_evidence_items_that_are_not_objects_or_have_no_type_are_skipped() -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                "not an object",
                None,
                7,
                {"ipAddress": "192.0.2.1"},
                {"@odata.type": 5, "ipAddress": "192.0.2.2"},
                {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "192.0.2.3"},
            ]
        )
    )

    assert [e.value for e in alert.entities] == ["192.0.2.3"]


@pytest.mark.parametrize(
    "odata_type",
    [
        "#microsoft.graph.security.ipEvidence",
        "microsoft.graph.security.ipEvidence",
        "#microsoft.graph.security.IpEvidence",
        "ipEvidence",
    ],
)
def test_evidence_type_is_matched_with_or_without_hash_and_namespace(odata_type: str) -> None:
    alert = graph.parse(minimal(evidence=[{"@odata.type": odata_type, "ipAddress": "192.0.2.9"}]))

    assert only_entity(alert, EntityType.IP).value == "192.0.2.9"


def test_evidence_without_a_usable_value_is_skipped() -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": None},
                {"@odata.type": "#microsoft.graph.security.urlEvidence", "url": ""},
                {"@odata.type": "#microsoft.graph.security.deviceEvidence", "roles": ["x"]},
                {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": None},
            ]
        )
    )

    assert alert.entities == ()


def test_duplicate_entities_merge_roles_and_attributes() -> None:
    ip = "#microsoft.graph.security.ipEvidence"
    alert = graph.parse(
        minimal(
            evidence=[
                {"@odata.type": ip, "ipAddress": " 192.0.2.1 ", "roles": ["source"]},
                {
                    "@odata.type": ip,
                    "ipAddress": "192.0.2.1",
                    "roles": ["attacker", "source"],
                    "countryLetterCode": "FR",
                },
            ]
        )
    )

    entity = only_entity(alert, EntityType.IP)
    assert entity.roles == ("source", "attacker")
    assert entity.attributes == {"country": "FR"}


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        (
            {"userPrincipalName": "bob@contoso.com", "accountName": "bob", "domainName": "C"},
            "bob@contoso.com",
        ),
        ({"accountName": "bob", "domainName": "CONTOSO", "userSid": "S-1"}, "CONTOSO\\bob"),
        ({"accountName": "bob", "azureAdUserId": "aad-1", "userSid": "S-1"}, "aad-1"),
        ({"accountName": "bob", "userSid": "S-1-5-21-1"}, "S-1-5-21-1"),
        ({"accountName": "bob"}, "bob"),
    ],
)
def test_user_evidence_value_prefers_upn_then_domain_account_then_ids(
    account: dict[str, Any], expected: str
) -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": account}
            ]
        )
    )

    entity = only_entity(alert, EntityType.ACCOUNT)
    assert entity.value == expected
    assert entity.attributes["account_name"] == "bob"


def test_user_evidence_with_flat_account_fields_is_read_too() -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                {
                    "@odata.type": "#microsoft.graph.security.userEvidence",
                    "userPrincipalName": "eve@contoso.com",
                    "userSid": "S-1-5-21-9",
                }
            ]
        )
    )

    entity = only_entity(alert, EntityType.ACCOUNT)
    assert entity.value == "eve@contoso.com"
    assert entity.attributes == {"upn": "eve@contoso.com", "sid": "S-1-5-21-9"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"mdeDeviceId": "m1", "deviceDnsName": "h1", "azureAdDeviceId": "a1"}, "m1"),
        ({"mdeDeviceId": None, "deviceDnsName": "h1", "azureAdDeviceId": "a1"}, "h1"),
        ({"azureAdDeviceId": "a1"}, "a1"),
    ],
)
def test_device_evidence_value_prefers_mde_id_then_dns_name_then_aad_id(
    fields: dict[str, Any], expected: str
) -> None:
    evidence = {"@odata.type": "#microsoft.graph.security.deviceEvidence", **fields}

    assert (
        only_entity(graph.parse(minimal(evidence=[evidence])), EntityType.DEVICE).value == expected
    )


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"sha256": "s256", "sha1": "s1", "fileName": "a.exe", "filePath": "C:\\t"}, "s256"),
        ({"sha1": "s1", "fileName": "a.exe", "filePath": "C:\\t"}, "s1"),
        ({"fileName": "a.exe", "filePath": "C:\\t\\"}, "C:\\t\\a.exe"),
        ({"fileName": "a.sh", "filePath": "/usr/bin"}, "/usr/bin/a.sh"),
        ({"fileName": "a.exe"}, "a.exe"),
    ],
)
def test_file_evidence_value_prefers_sha256_then_sha1_then_path(
    details: dict[str, Any], expected: str
) -> None:
    nested = {"@odata.type": "#microsoft.graph.security.fileEvidence", "fileDetails": details}
    flat = {"@odata.type": "#microsoft.graph.security.fileEvidence", **details}

    for evidence in (nested, flat):
        entity = only_entity(graph.parse(minimal(evidence=[evidence])), EntityType.FILE)
        assert entity.value == expected


def test_process_without_image_hashes_gives_no_file_and_falls_back_to_image_path() -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                {
                    "@odata.type": "#microsoft.graph.security.processEvidence",
                    "processId": 42,
                    "processCommandLine": None,
                    "imageFile": {"fileName": "cmd.exe", "filePath": "C:\\Windows\\System32"},
                }
            ]
        )
    )

    process = only_entity(alert, EntityType.PROCESS)
    assert process.value == "C:\\Windows\\System32\\cmd.exe"
    assert process.attributes["pid"] == "42"
    assert alert.entities_of(EntityType.FILE) == []


def test_api_management_operation_is_recognised_case_insensitively() -> None:
    resource_id = (
        "/subscriptions/s/resourcegroups/rg/providers/microsoft.apimanagement"
        "/SERVICE/svc/APIS/petstore/OPERATIONS/findPets/"
    )
    alert = graph.parse(
        minimal(
            evidence=[
                {
                    "@odata.type": "#microsoft.graph.security.AzureResourceEvidence",
                    "resourceId": resource_id,
                }
            ]
        )
    )

    endpoint = only_entity(alert, EntityType.API_ENDPOINT)
    assert endpoint.value == "svc/petstore/findPets"
    assert only_entity(alert, EntityType.CLOUD_RESOURCE).value == resource_id


def test_azure_resource_that_is_not_an_api_operation_gives_no_api_endpoint() -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                {
                    "@odata.type": "#microsoft.graph.security.azureResourceEvidence",
                    "resourceId": "/subscriptions/s/providers/Microsoft.ApiManagement/service/svc",
                    "resourceType": "Microsoft.ApiManagement/service",
                }
            ]
        )
    )

    assert alert.entities_of(EntityType.API_ENDPOINT) == []
    resource = only_entity(alert, EntityType.CLOUD_RESOURCE)
    assert resource.attributes["resource_type"] == "Microsoft.ApiManagement/service"


def test_additional_data_endpoint_and_client_ips_become_entities() -> None:
    alert = graph.parse(
        minimal(
            additionalData={
                "Operation": APIM_OPERATION,
                "API endpoint": "GET /orders/{id}",
                "clientIp": "192.0.2.7, 2001:db8::1, not-an-ip",
                "AlertType": "API_SpikeInPayload",
                "nested": {"clientIp": "192.0.2.8"},
            }
        )
    )

    endpoints = {e.value for e in alert.entities_of(EntityType.API_ENDPOINT)}
    assert endpoints == {"apim-contoso-prod/orders-api/get-order", "GET /orders/{id}"}
    assert [e.value for e in alert.entities_of(EntityType.IP)] == ["192.0.2.7", "2001:db8::1"]


def test_mailbox_and_cloud_application_evidence_are_read() -> None:
    alert = graph.parse(
        minimal(
            evidence=[
                {
                    "@odata.type": "#microsoft.graph.security.mailboxEvidence",
                    "primaryAddress": "ops@contoso.com",
                    "roles": ["contextual"],
                },
                {
                    "@odata.type": "#microsoft.graph.security.cloudApplicationEvidence",
                    "appId": 11161,
                    "displayName": "Office 365",
                },
            ]
        )
    )

    assert only_entity(alert, EntityType.ACCOUNT).value == "ops@contoso.com"
    app = only_entity(alert, EntityType.CLOUD_RESOURCE)
    assert app.value == "11161"
    assert app.attributes == {"app_id": "11161", "display_name": "Office 365"}


# --- properties -----------------------------------------------------------------------------

TOP_LEVEL_FIELDS = [
    "id",
    "providerAlertId",
    "incidentId",
    "status",
    "severity",
    "classification",
    "serviceSource",
    "detectionSource",
    "detectorId",
    "alertPolicyId",
    "title",
    "description",
    "category",
    "alertWebUrl",
    "mitreTechniques",
    "createdDateTime",
    "lastUpdateDateTime",
    "evidence",
    "additionalData",
    "@odata.type",
]
EVIDENCE_TYPES = [
    f"#microsoft.graph.security.{name}"
    for name in (
        "ipEvidence",
        "userEvidence",
        "deviceEvidence",
        "fileEvidence",
        "processEvidence",
        "urlEvidence",
        "azureResourceEvidence",
        "mailboxEvidence",
        "cloudApplicationEvidence",
        "registryKeyEvidence",
    )
]
EVIDENCE_FIELDS = [
    "roles",
    "ipAddress",
    "countryLetterCode",
    "userAccount",
    "userPrincipalName",
    "accountName",
    "domainName",
    "mdeDeviceId",
    "deviceDnsName",
    "vmMetadata",
    "fileDetails",
    "imageFile",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "url",
    "resourceId",
    "resourceName",
    "primaryAddress",
    "appId",
    "displayName",
]
TRICKY_TEXT = [
    "",
    " ",
    "unknownFutureValue",
    "2021-04-27T12:19:27.7211305Z",
    "2021-02-30T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2021-01-01T00:00:00+23:59",
    APIM_OPERATION,
    "192.0.2.1",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(TRICKY_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
evidence_items = typed_items(
    "@odata.type", EVIDENCE_TYPES, EVIDENCE_FIELDS, json_values, max_size=5
)
any_field_value = field_values(evidence_items, json_values)


@FAST
@given(field=st.sampled_from(TOP_LEVEL_FIELDS), value=any_field_value)
def test_any_value_in_any_field_parses_or_raises_alert_parse_error(field: str, value: Any) -> None:
    CASE.parses_with(load("documented_get_alert.json"), field, value)


@FAST
@given(items=st.lists(st.one_of(evidence_items, json_values), max_size=6))
def test_any_evidence_list_parses_or_raises_alert_parse_error(items: list[Any]) -> None:
    CASE.parses_with(load("defender_for_apis_alert.json"), "evidence", items)


@FAST
@given(payload=arbitrary_payloads(TOP_LEVEL_FIELDS, any_field_value))
def test_arbitrary_dicts_raise_nothing_but_alert_parse_error(payload: dict[str, Any]) -> None:
    CASE.survives(payload)


known_severities = st.sampled_from([s.value for s in Severity]).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.capitalize(), f" {name} "])
)
offsets = st.one_of(
    st.just("Z"),
    st.just(""),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, datetime]:
    moment = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1)))
    digits = draw(st.integers(min_value=0, max_value=7))
    fraction = draw(st.text(alphabet="0123456789", min_size=digits, max_size=digits))
    offset = draw(offsets)
    if isinstance(offset, int):
        sign = "-" if offset < 0 else "+"
        zone = timezone(timedelta(minutes=offset))
        suffix = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    else:
        zone, suffix = UTC, offset
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + suffix
    micro = int(fraction[:6].ljust(6, "0"))
    expected = moment.replace(microsecond=micro, tzinfo=zone).astimezone(UTC)
    return text, expected


@FAST
@given(
    alert_id=st.one_of(st.text(min_size=1).filter(str.strip), st.integers()),
    severity=st.one_of(known_severities, st.text(max_size=12), st.none()),
    created=timestamps(),
)
def test_generated_valid_alerts_round_trip(
    alert_id: str | int, severity: str | None, created: tuple[str, datetime]
) -> None:
    text, expected_time = created
    alert = graph.parse(minimal(id=alert_id, severity=severity, createdDateTime=text))

    assert alert.id == str(alert_id)
    known = {s.value: s for s in Severity}
    expected_severity = known.get(severity.strip().lower(), Severity.UNKNOWN) if severity else None
    assert alert.severity is (expected_severity or Severity.UNKNOWN)
    assert alert.created_at == expected_time
    assert alert.created_at.utcoffset() == timedelta(0)
    assert alert.updated_at == alert.created_at
