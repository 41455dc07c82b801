"""The ServiceNow and Jira checks of `riposte doctor`: read-only calls proving that the
ticketing block can find, open and annotate the tickets a run needs."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from riposte.deployments.doctor_checks import Finding

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
