"""Four realistic Graph alerts_v2 payloads (MDE, two Defender for APIs, identity) for demos."""

from __future__ import annotations

from datetime import datetime, timedelta
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
