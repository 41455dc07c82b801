"""The checks of `riposte doctor` on Defender, the channels and the intake (ServiceNow and Jira:
`riposte.deployments.doctor_ticketing`): each gives `Finding` lines, read-only unless a test
message is asked for."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from riposte.alerts.containment import ActionKind

# What each feature needs, per API: any one of these application permissions (Entra ID names).
NEEDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("graph", "read alerts"): ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"),
    ("graph", "update alerts"): ("SecurityAlert.ReadWrite.All",),
    ("graph", "update incidents"): ("SecurityIncident.ReadWrite.All",),
    ("graph", "read users"): ("User.Read.All", "User.ReadWrite.All"),
    ("graph", "disable users"): ("User.EnableDisableAccount.All", "User.ReadWrite.All"),
    ("graph", "revoke sessions"): ("User.RevokeSessions.All", "User.ReadWrite.All"),
    ("endpoint", "read alerts"): ("Alert.Read.All", "Alert.ReadWrite.All"),
    ("endpoint", "update alerts"): ("Alert.ReadWrite.All",),
    ("endpoint", "read machines"): ("Machine.Read.All", "Machine.ReadWrite.All"),
    ("endpoint", "isolate machines"): ("Machine.Isolate",),
    ("endpoint", "submit indicators"): ("Ti.ReadWrite", "Ti.ReadWrite.All"),
    ("cloud_apps", "read alerts"): ("Investigation.read", "Investigation.manage"),
    ("cloud_apps", "close alerts"): ("Investigation.manage",),
}
_SOURCE_API = {"graph": "graph", "defender_endpoint": "endpoint", "cloud_apps": "cloud_apps"}
_API_NAME = {
    "graph": "Microsoft Graph",
    "endpoint": "Defender for Endpoint",
    "cloud_apps": "Defender for Cloud Apps",
    "arm": "Azure Resource Manager",
}
_CONTAINMENT_NEEDS: dict[ActionKind, tuple[tuple[str, str], ...]] = {
    ActionKind.ISOLATE_DEVICE: (("endpoint", "isolate machines"), ("endpoint", "read machines")),
    ActionKind.RELEASE_DEVICE: (("endpoint", "isolate machines"), ("endpoint", "read machines")),
    ActionKind.BLOCK_IP: (("endpoint", "submit indicators"),),
    ActionKind.BLOCK_URL: (("endpoint", "submit indicators"),),
    ActionKind.BLOCK_FILE: (("endpoint", "submit indicators"),),
    ActionKind.DISABLE_USER: (("graph", "disable users"), ("graph", "read users")),
    ActionKind.REVOKE_SESSIONS: (("graph", "revoke sessions"),),
}


@dataclass
class Finding:
    """One line of the table: a check on a block, and what to do when it failed."""

    block: str
    check: str
    status: str  # ok | missing | failed | note
    detail: str = ""
    fix: str = ""

    @property
    def blocking(self) -> bool:
        return self.status in ("missing", "failed")


# --- what the policy needs of Defender ----------------------------------------------------


def needs(policy: Any, sources: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """Each (API, feature) the policy and sources need, with why."""
    wanted: dict[tuple[str, str], list[str]] = {}

    def add(key: tuple[str, str], why: str) -> None:
        wanted.setdefault(key, [])
        if why not in wanted[key]:
            wanted[key].append(why)

    from riposte.alerts.matching import containment_plan

    rules = [*policy.rules, policy.fallback]
    closes = any(str(rule.playbook) == "close_benign" for rule in rules)
    for source in sources:
        api = _SOURCE_API.get(source)
        if api is None:
            continue
        add((api, "read alerts"), f"source {source}")
        if api != "cloud_apps":
            add((api, "update alerts"), f"source {source}: alerts marked in progress")
        elif closes:  # marked read needs only Investigation.read; closing needs manage
            add((api, "close alerts"), f"source {source}: close_benign")
    for rule in rules:
        name = getattr(rule, "name", "fallback")
        info = policy.playbook(str(rule.playbook))
        if getattr(info, "contains", False):
            # The rule's containment over the defaults', as a response takes it.
            plan = containment_plan(rule, policy.defaults, True)
            for action in plan.actions if plan is not None else ():
                for key in _CONTAINMENT_NEEDS.get(ActionKind(action), ()):
                    add(key, f"rule {name}: containment {action}")
        if rule.incident is not None or policy.defaults.incident is not None:
            where = f"rule {name}: incident:" if rule.incident else "defaults: incident:"
            add(("graph", "update incidents"), where)
    return wanted


# --- Defender -----------------------------------------------------------------------------


def _claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _scope(creds: Any, api: str) -> str:
    return str(
        {
            "graph": creds.graph_scope,
            "endpoint": creds.endpoint_scope,
            "cloud_apps": creds.cloud_apps_scope,
            "arm": creds.arm_scope,
        }[api]
    )


def check_defender(block_name: str, creds: Any, policy: Any, sources: list[str]) -> list[Finding]:

    findings: list[Finding] = []
    wanted = needs(policy, sources)
    apis = sorted({api for api, _ in wanted} | ({"arm"} if "defender_cloud" in sources else set()))
    legacy_mdca = getattr(creds, "cloud_apps_api_token", None) is not None
    for api in apis:
        check = f"token for {_API_NAME[api]}"
        if api == "cloud_apps" and legacy_mdca:
            findings.append(
                Finding(
                    block_name,
                    check,
                    "note",
                    "a legacy Cloud Apps API token is used: its "
                    "permissions are those of the user who made it",
                )  # fmt: skip
            )
            continue
        try:
            token = creds.token_auth(_scope(creds, api)).token()
        except Exception as exc:
            findings.append(
                Finding(
                    block_name,
                    check,
                    "failed",
                    str(exc)[:300],
                    "check tenant_id, client_id and client_secret, and that the app is "
                    f"registered in the tenant; scope {_scope(creds, api)}",
                )  # fmt: skip
            )
            continue
        claims = _claims(token)
        findings.append(
            Finding(block_name, check, "ok", f"audience {claims.get('aud') if claims else '?'}")
        )
        if api == "arm":
            findings.append(
                Finding(
                    block_name,
                    "Azure RBAC for Defender for Cloud alerts",
                    "note",
                    "not in the token: the app needs Security Reader on each subscription "
                    "to read alerts, Security Admin to dismiss or resolve them",
                )  # fmt: skip
            )
            continue
        granted = {r.casefold() for r in (claims or {}).get("roles", [])}
        for (need_api, feature), why in sorted(wanted.items()):
            if need_api != api:
                continue
            any_of = NEEDS[(need_api, feature)]
            label = f"{_API_NAME[api]}: {feature}"
            if claims is None:
                findings.append(
                    Finding(
                        block_name,
                        label,
                        "failed",
                        "the token is not a JWT: the permissions cannot be verified",
                        "check authority_host: Entra ID issues JWT access tokens",
                    )  # fmt: skip
                )

            elif any(r.casefold() in granted for r in any_of):
                held = next(r for r in any_of if r.casefold() in granted)
                findings.append(Finding(block_name, label, "ok", f"{held} ({'; '.join(why)})"))
            else:
                findings.append(
                    Finding(
                        block_name, label, "missing",
                        f"needs {' or '.join(any_of)} for {'; '.join(why)}",
                        f"grant the application permission {any_of[0]} ({_API_NAME[api]}) to "
                        "the app registration, then an admin grants consent",
                    )
                )  # fmt: skip
    for source in sources:
        label = f"list one {source} alert"
        try:
            client = creds.source_client(source)
            # The last hour only: never the tenant's history, which would spend the budgets.
            since = datetime.now(UTC) - timedelta(hours=1)
            first = next(iter(client.list_updated_since(since)), None)
        except Exception as exc:
            fix = "see the permission lines above; check the API's base URL"
            findings.append(Finding(block_name, label, "failed", str(exc)[:300], fix))
            continue
        detail = (
            "the call succeeded (no alert updated in the last hour)"
            if first is None
            else "an alert was read"
        )
        findings.append(Finding(block_name, label, "ok", detail))
    return findings


# --- channels and the intake --------------------------------------------------------------


def check_channels(refs: Iterable[tuple[str, str]], send_test: bool) -> list[Finding]:
    from riposte.alerts.messages import EmailContent
    from riposte.blocks.chat import ChatWebhook
    from riposte.tasks.notify import load_channel

    findings: list[Finding] = []
    seen: set[str] = set()
    for where, ref in refs:
        if ref in seen:
            continue
        seen.add(ref)
        try:
            channel = load_channel(ref)
        except Exception as exc:
            findings.append(Finding(ref, f"channel ({where})", "failed", str(exc)[:300],
                                    "save the block under that name (riposte blocks register, "
                                    "then the Prefect UI or Block.save)"))  # fmt: skip
            continue
        if not send_test:
            findings.append(Finding(ref, f"channel ({where})", "ok", "configured; --send-test "
                                    "posts one test message"))  # fmt: skip
            continue
        text = "Riposte doctor: test message (nothing to do)"
        try:
            if isinstance(channel, ChatWebhook):
                payload: dict[str, Any] = (
                    {"text": text}
                    if channel.kind == "slack"
                    else {"type": "message", "attachments": [{
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "content": {"type": "AdaptiveCard", "version": "1.4", "body": [
                            {"type": "TextBlock", "text": text, "wrap": True}]},
                    }]}
                )  # fmt: skip
                channel.get_client().post(payload)
            else:
                channel.get_client().send(
                    EmailContent(subject=text, text=text, html=f"<p>{text}</p>")
                )
            findings.append(Finding(ref, f"channel ({where})", "ok", "a test message was sent"))
        except Exception as exc:
            fix = "check the webhook URL or SMTP settings"
            findings.append(
                Finding(ref, f"channel ({where}): test message", "failed", str(exc)[:300], fix)
            )
    return findings


def check_public_url(approvals: bool, local: bool) -> list[Finding]:
    """``local``: the blocks point at a sandbox on this machine, whose approvers open links on
    this machine too (the local stack)."""
    import httpx

    from riposte.settings import get_settings

    url = get_settings().public_url
    label = "RIPOSTE_PUBLIC_URL"
    if not url:
        status = "missing" if approvals and not local else "note"
        return [Finding(label, "the intake's public URL", status,
                        "not set: approval links would point at the intake's local address",
                        "set RIPOSTE_PUBLIC_URL to the https address approvers and Defender "
                        "reach the intake at")]  # fmt: skip
    if not url.lower().startswith("https://"):
        scheme = url.split(":", 1)[0][:10]
        return [Finding(label, "the intake's public URL", "failed",
                        f"the URL is {scheme}, not https",
                        "serve the intake behind TLS and give its https address")]  # fmt: skip
    try:
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or '?'}" + (
            f":{parts.port}" if parts.port else ""
        )
    except ValueError as exc:  # a URL that does not parse (no credentials in the message)
        fix = "give the https address approvers and Defender reach the intake at"
        return [Finding(label, "the intake's public URL", "failed", f"not a URL: {exc}", fix)]
    try:
        answer = httpx.get(url.rstrip("/") + "/health", timeout=10)
        ok = answer.status_code == 200
        detail = f"/health answered {answer.status_code}"
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: a URL that does not parse
        ok, detail = False, f"/health did not answer: {type(exc).__name__}"
    if ok:
        return [Finding(label, "the intake answers /health", "ok", shown)]
    return [Finding(label, "the intake answers /health", "failed", detail,
                    "check the intake runs and that this address reaches it")]  # fmt: skip
