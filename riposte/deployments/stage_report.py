"""How a `riposte replay --stage` report reads: plain text for the terminal, markdown for
``--markdown`` (the report itself is gathered by `riposte.deployments.stage`)."""

from __future__ import annotations

from typing import Any


def as_text(report: dict[str, Any]) -> str:
    """The report as the terminal shows it."""
    from riposte.playbooks.replay import plain

    lines = [
        f"Staged {report['alerts']} alert(s) in a fresh sandbox (--approve {report['approve']}): "
        f"{len(report['responses']) - len(report['failed'])} response(s) completed, "
        f"{len(report['failed'])} failed; repeats {report['repeats']}; skipped "
        f"{len(report['skipped'])}",
        "",
        f"tickets ({len(report['tickets'])}):",
    ]
    for t in report["tickets"]:
        lines.append(
            f"  {t['system']} {plain(str(t['key']))}: {plain(str(t['title']), 70)} "
            f"(priority {t['priority']}, {t['notes']} note(s))"
        )
    lines.append(f"messages ({sum(report['messages'].values())}):")
    lines += [f"  {plain(k)}: {n}" for k, n in report["messages"].items()]
    lines += [f"    {m['channel']}: {plain(m['text'], 100)}" for m in report["message_texts"]]
    lines.append(f"approvals asked ({len(report['approvals'])}):")
    for a in report["approvals"]:
        who = "automatic" if a["automatic"] else ", ".join(a["approvers"])
        lines.append(
            f"  {plain(a['alert'], 60)} ({a['rule']}): {plain('; '.join(a['actions']), 80)} "
            f"[{who}] -> {a['state']}: {plain(a['outcome'], 400)}"
        )
    lines.append(
        f"containment: {len(report['machine_actions'])} machine action(s), "
        f"{len(report['indicators'])} indicator(s), {len(report['users'])} user(s) changed"
    )
    for action in report["machine_actions"]:
        lines.append(f"  {action['type']} on {plain(str(action['machineId']))}: {action['status']}")
    for indicator in report["indicators"]:
        lines.append(
            f"  indicator {plain(str(indicator['indicatorValue']))} "
            f"({indicator['indicatorType']}): {indicator['action']}"
        )
    lines.append(f"alert and incident updates ({len(report['updates'])}):")
    for update in report["updates"][:100]:
        lines.append(f"  {plain(update['record'], 70)}: {plain('; '.join(update['changes']), 200)}")
    if report["failed"]:
        lines.append(f"failed responses ({len(report['failed'])}):")
        for row in report["failed"]:
            lines.append(f"  {plain(row['alert'], 70)}: {plain(row.get('reason', ''), 300)}")
    for item in report["skipped"]:
        lines.append(f"skipped {plain(item['where'], 100)}: {plain(item['problem'], 200)}")
    return "\n".join(lines)


def as_markdown(report: dict[str, Any]) -> str:
    """The report as `--markdown` writes it."""
    from riposte.playbooks.replay import md_text

    lines = [
        "# Staging run",
        "",
        f"{report['alerts']} alert(s) answered for real in a fresh sandbox (--approve "
        f"{report['approve']}); {len(report['failed'])} response(s) failed.",
        "",
        "## Tickets",
        "",
        "| system | ticket | title | priority | notes |",
        "|---|---|---|---|---|",
    ]
    for t in report["tickets"]:
        lines.append(
            f"| {t['system']} | {md_text(str(t['key']))} | {md_text(str(t['title']))} | "
            f"{md_text(str(t['priority']))} | {t['notes']} |"
        )
    lines += ["", "## Messages", "", "| channel | messages |", "|---|---|"]
    lines += [f"| {md_text(k)} | {n} |" for k, n in report["messages"].items()]
    lines += ["", "| channel | message |", "|---|---|"]
    lines += [f"| {m['channel']} | {md_text(m['text'])} |" for m in report["message_texts"]]
    lines += ["", "## Approvals and containment", "", "| alert | actions | asked | outcome |",
              "|---|---|---|---|"]  # fmt: skip
    for a in report["approvals"]:
        who = "automatic" if a["automatic"] else ", ".join(a["approvers"])
        lines.append(
            f"| {md_text(a['alert'])} | {md_text('; '.join(a['actions']))} | {md_text(who)} | "
            f"{md_text(a['outcome'], 300)} |"
        )
    lines += ["", "## Alert and incident updates", "", "| record | changes |", "|---|---|"]
    lines += [
        f"| {md_text(u['record'])} | {md_text('; '.join(u['changes']), 400)} |"
        for u in report["updates"]
    ]
    if report["failed"]:
        lines += ["", "## Failed responses", "", "| alert | reason |", "|---|---|"]
        lines += [
            f"| {md_text(r['alert'])} | {md_text(r.get('reason', ''), 300)} |"
            for r in report["failed"]
        ]
    return "\n".join(lines)
