"""`riposte doctor`: before the first real alert, prove that every block the policy will use can
do what a run needs, with read-only calls, and say what is missing and how to fix it.

Defender: a token for each API's audience, the application permissions it carries (the token's
`roles` claim) against what the policy's sources, rules and containment need (`NEEDS`), and one
alert listed per source. ServiceNow: incidents readable with their correlation_id, a query on an
impossible correlation_id matching nothing (an instance that drops a term it cannot use matches
everything), work notes readable. Jira: each project, the block's issue type, and every field
Riposte sets on the create screen (createmeta). Every channel the policy names exists
(``--send-test`` posts one marked test message: the only write). The intake's public URL is
https and answers /health. Exit 0 when everything needed is there, 1 with the table of what is not,
2 when it cannot run at all (no Prefect server, no Defender block, a policy that does not
load). Nothing is written unless ``--send-test`` is given.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from riposte.alerts.containment import ActionKind

CANNOT_RUN = 2

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


class CannotRun(RuntimeError):
    pass


# --- what the policy needs ----------------------------------------------------------------


def _policy_sources(policy: Any) -> set[str]:
    found: set[str] = set()

    def walk(match: Any) -> None:
        if match is None:
            return
        for name in match.source or ():
            found.add(str(name).lower())
        for inner in match.any_ or ():
            walk(inner)

    for rule in policy.rules:
        walk(rule.match)
    return {s for s in found if s in ("graph", "defender_endpoint", "cloud_apps", "defender_cloud")}


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


# --- the checks ----------------------------------------------------------------------------


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
    from riposte.blocks.defender import ClientCredentialsAuth

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
            token = ClientCredentialsAuth(creds, _scope(creds, api)).token()
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


# --- ticketing ----------------------------------------------------------------------------

# The fields Riposte sets when it creates a Jira issue (`JiraClient.create`).
JIRA_FIELDS = ("summary", "issuetype", "labels", "priority", "description")


def _get(client: Any, system: str, what: str, path: str, params: dict[str, str]) -> Any:
    from riposte.blocks._http import send

    return send(client._http, system, what, "GET", path, params=params).json()


def check_servicenow(name: str, creds: Any) -> list[Finding]:
    from riposte.blocks.servicenow import SYSTEM

    findings: list[Finding] = []
    label = "read incidents"
    try:
        client = creds.get_client()
        rows = _get(client, SYSTEM, "incident read", client.TABLE, {
            "sysparm_query": "ORDERBYDESCsys_created_on",
            "sysparm_fields": "sys_id,number,correlation_id", "sysparm_limit": "1",
        }).get("result", [])  # fmt: skip
    except Exception as exc:
        return [Finding(name, label, "failed", str(exc)[:300],
                        "check instance_url, username and password; the user needs the itil "
                        "role (read and create incident)")]  # fmt: skip
    if not rows:
        findings.append(Finding(name, label, "ok", "the call succeeded; no incident yet"))
        findings.append(
            Finding(
                name,
                "read incident.correlation_id",
                "note",
                "cannot be verified on an instance without incidents: run the doctor "
                "again once Riposte opened one",
            )  # fmt: skip
        )
    elif "correlation_id" not in rows[0]:
        findings.append(
            Finding(
                name,
                "read incident.correlation_id",
                "failed",
                "incidents come back without correlation_id: tickets could never be found "
                "again, and each alert would open another",
                "give the integration user read (and write) access to incident.correlation_id",
            )  # fmt: skip
        )
    else:
        findings.append(Finding(name, label, "ok", "an incident was read with its correlation_id"))
    impossible = f"riposte-doctor-{secrets.token_hex(8)}"
    try:
        matched = _get(client, SYSTEM, "incident query", client.TABLE, {
            "sysparm_query": f"correlation_id={impossible}",
            "sysparm_fields": "sys_id", "sysparm_limit": "5",
        }).get("result", [])  # fmt: skip
    except Exception as exc:
        matched = None
        findings.append(Finding(name, "query incident by correlation_id", "failed",
                                str(exc)[:300]))  # fmt: skip
    if matched:
        findings.append(
            Finding(
                name,
                "query incident by correlation_id",
                "failed",
                f"a correlation_id no incident has matched {len(matched)} incident(s): "
                "the instance drops a term it cannot use (a field the user cannot read, "
                "or an invalid term) and matches everything",
                "give the user read access to incident.correlation_id, and set the system "
                "property glide.invalid_query.returns_no_rows to true",
            )  # fmt: skip
        )
    elif matched is not None:
        findings.append(Finding(name, "query incident by correlation_id", "ok",
                                "an impossible correlation_id matched nothing"))  # fmt: skip
    if rows:  # an instance that drops an invalid term matches everything with it
        try:
            loose = _get(client, SYSTEM, "invalid query", client.TABLE, {
                "sysparm_query": "riposte_doctor_no_such_field=x",
                "sysparm_fields": "sys_id", "sysparm_limit": "1",
            }).get("result", [])  # fmt: skip
        except Exception:
            loose = []  # refused: the property is on, or the instance errs on it
        if loose:
            findings.append(
                Finding(
                    name,
                    "invalid query terms",
                    "note",
                    "a query on a field that does not exist matched incidents "
                    "(glide.invalid_query.returns_no_rows is false); Riposte checks the "
                    "correlation_id of every record it gets back, so this is safe for it",
                    "set the system property glide.invalid_query.returns_no_rows to true",
                )  # fmt: skip
            )
    try:
        _get(client, SYSTEM, "work notes read", client.JOURNAL, {
            "sysparm_query": "element=work_notes", "sysparm_fields": "sys_id",
            "sysparm_limit": "1",
        })  # fmt: skip
        findings.append(Finding(name, "read work notes (sys_journal_field)", "ok"))
    except Exception as exc:
        findings.append(
            Finding(
                name,
                "read work notes (sys_journal_field)",
                "failed",
                str(exc)[:300],
                "let the integration user read sys_journal_field (an ACL on the table; "
                "the itil role reads work notes of incidents it can read)",
            )  # fmt: skip
        )
    return findings


def check_jira(name: str, creds: Any, projects: Iterable[str]) -> list[Finding]:
    from urllib.parse import quote

    from riposte.blocks.jira import SYSTEM

    findings: list[Finding] = []
    try:
        client = creds.get_client()
    except Exception as exc:
        return [Finding(name, "Jira site", "failed", str(exc)[:300], "check site_url")]
    for project in sorted({p for p in projects if p}):
        where = f"project {project}"
        try:
            _get(client, SYSTEM, "project read", f"/rest/api/3/project/{quote(project)}", {})
        except Exception as exc:
            findings.append(Finding(name, f"{where} exists", "failed", str(exc)[:300],
                                    f"create the project {project}, or give the API token's "
                                    "user Browse projects and Create issues in it"))  # fmt: skip
            continue
        findings.append(Finding(name, f"{where} exists", "ok"))
        try:
            meta = f"/rest/api/3/issue/createmeta/{quote(project)}/issuetypes"
            page = _get(client, SYSTEM, "issue types", meta, {})
        except Exception as exc:
            findings.append(Finding(name, f"{where}: create metadata", "failed", str(exc)[:300]))
            continue
        types = page.get("issueTypes") or page.get("values") or []
        wanted = creds.issue_type
        found = next((t for t in types if str(t.get("name", "")).lower() == wanted.lower()), None)
        if found is None:
            offered = ", ".join(str(t.get("name")) for t in types) or "none"
            findings.append(Finding(name, f"{where}: issue type {wanted}", "failed",
                                    f"the project offers {offered}",
                                    "set the block's issue_type to one of them"))  # fmt: skip
            continue
        findings.append(Finding(name, f"{where}: issue type {wanted}", "ok"))
        path = f"/rest/api/3/issue/createmeta/{quote(project)}/issuetypes/{found['id']}"
        fields: list[dict[str, Any]] = []
        try:
            while True:  # paged: `startAt`, `maxResults`, `total`
                page = _get(client, SYSTEM, "create screen", path,
                            {"startAt": str(len(fields)), "maxResults": "50"})  # fmt: skip
                batch = page.get("fields") or page.get("results") or page.get("values") or []
                fields.extend(batch)
                if not batch or len(fields) >= int(page.get("total", len(fields))):
                    break
        except Exception as exc:
            findings.append(Finding(name, f"{where}: create screen", "failed", str(exc)[:300]))
            continue
        on_screen = {str(f.get("fieldId") or f.get("key")) for f in fields}
        for field in JIRA_FIELDS:
            check = f"{where}: create screen has {field}"
            if field in on_screen:
                findings.append(Finding(name, check, "ok"))
            else:
                findings.append(Finding(name, check, "missing",
                                        f"Riposte sets {field} on every issue it opens",
                                        f"add {field} to the create screen of {project}'s "
                                        f"{wanted} issue type"))  # fmt: skip
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


# --- the command ---------------------------------------------------------------------------


def run_doctor(
    policy_path: str | None,
    sources: list[str] | None,
    defender_block: str,
    send_test: bool = False,
) -> list[Finding]:
    from pathlib import Path

    from riposte.alerts.policy import PolicyError
    from riposte.blocks import (
        BlockCache,
        DefenderCredentials,
        JiraCredentials,
        TicketingCredentials,
    )
    from riposte.deployments.replay_cli import _load_policy
    from riposte.settings import get_settings

    try:
        policy = _load_policy(Path(policy_path) if policy_path else None)
    except PolicyError as exc:
        raise CannotRun(
            "the policy does not load: " + "; ".join(str(p) for p in exc.problems[:5])
        ) from None
    settings = get_settings()
    chosen = sources or sorted(set(settings.poll_source_list))
    unchecked = sorted(_policy_sources(policy) - set(chosen))
    blocks = BlockCache()
    try:
        creds = blocks.load(DefenderCredentials, defender_block)
    except Exception as exc:
        raise CannotRun(f"block {defender_block}: {exc}"[:300]) from None
    findings = check_defender(defender_block, creds, policy, chosen)
    if unchecked:
        findings.append(
            Finding(
                defender_block,
                "sources the policy names",
                "note",
                f"not checked: {', '.join(unchecked)} (only the polled sources, "
                "RIPOSTE_POLL_SOURCES, are checked by default)",
                "give --sources with every source Defender pushes to the intake",
            )  # fmt: skip
        )
    for system, projects in _ticketing(policy).items():
        name = settings.jira_block if system == "jira" else settings.servicenow_block
        try:
            ticketing = blocks.load(TicketingCredentials, name)
        except Exception as exc:
            findings.append(Finding(name, f"{system} block", "failed", str(exc)[:300],
                                    "save the block under that name"))  # fmt: skip
            continue
        if isinstance(ticketing, JiraCredentials):
            wanted = [p or ticketing.project_key for p in projects]
            findings += check_jira(name, ticketing, wanted)
        else:
            findings += check_servicenow(name, ticketing)
    from riposte.deployments.stage import policy_block_refs

    findings += check_channels(policy_block_refs(policy), send_test)
    host = urlsplit(creds.authority_host).hostname or ""
    local = host in ("127.0.0.1", "localhost", "::1")
    findings += check_public_url(_asks_approval(policy), local)
    return findings


def _ticketing(policy: Any) -> dict[str, list[str | None]]:
    """Each ticket system the policy files with, and its Jira projects (None: the block's)."""
    found: dict[str, list[str | None]] = {}
    targets = [policy.defaults.ticket, *(r.ticket for r in [*policy.rules, policy.fallback])]
    for target in targets:
        if target is not None:
            found.setdefault(target.system, []).append(
                target.project if target.system == "jira" else None
            )
    return found


def _asks_approval(policy: Any) -> bool:
    """Whether a rule's containment waits for an approver (whose links need a public URL)."""
    from riposte.alerts.matching import containment_plan

    for params in [*policy.rules, policy.fallback]:
        if not getattr(policy.playbook(str(params.playbook)), "contains", False):
            continue
        requires = params.containment_requires_approval
        if requires is None:
            requires = policy.defaults.containment_requires_approval
        plan = containment_plan(params, policy.defaults, requires)
        if plan is not None and not plan.automatic:
            return True
    return False


def cmd_doctor(args: argparse.Namespace) -> int:
    from riposte.deployments.replay_cli import CannotRun as NoPrefect
    from riposte.deployments.replay_cli import _prefect_for_blocks

    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    try:
        # Before Prefect is imported: it reads its settings once, at import.
        _prefect_for_blocks()
    except NoPrefect as exc:
        print(f"riposte doctor: {exc}", file=sys.stderr)
        return CANNOT_RUN
    try:
        findings = run_doctor(args.policy, sources, args.defender_block, args.send_test)
    except CannotRun as exc:
        print(f"riposte doctor: {exc}", file=sys.stderr)
        return CANNOT_RUN
    blocking = [f for f in findings if f.blocking]
    if args.json:
        report = {"ok": not blocking, "findings": [asdict(f) for f in findings]}
        print(json.dumps(report, indent=2, ensure_ascii=True))
    else:
        for f in findings:
            line = f"{f.status.upper():8} {f.block}: {f.check}"
            if f.detail:
                line += f": {f.detail}"
            print(line)
            if f.fix and f.blocking:
                print(f"         fix: {f.fix}")
        print(f"\n{len(blocking)} problem(s)" if blocking else "\neverything needed is there")
    return 1 if blocking else 0


def add_doctor_command(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check, with read-only calls, that the blocks can do what the policy needs",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--policy", metavar="FILE", help="policy (default: the one in force)")
    doctor.add_argument(
        "--sources",
        help="comma-separated Defender sources to check (default: RIPOSTE_POLL_SOURCES and the "
        "sources the policy's rules name)",
    )
    doctor.add_argument("--defender-block", default="riposte-defender")
    doctor.add_argument(
        "--send-test",
        action="store_true",
        help="post one marked test message to every channel the policy names (the only write)",
    )
    doctor.set_defaults(func=cmd_doctor)
