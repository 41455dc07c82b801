"""Reports and comparisons as text for a terminal and as markdown (a Prefect artifact, a file),
with the alerts' own text made safe to show in each."""

from __future__ import annotations

from collections.abc import Callable

from riposte.alerts.plain import code_span, one_line
from riposte.playbooks.replay.comparison import Comparison
from riposte.playbooks.replay.report import Report


def plain(text: str, limit: int = 80) -> str:
    """Alert text shown on a terminal: control and bidirectional characters escaped, one line,
    cut at ``limit``."""
    return one_line(text, limit)


def md_text(text: str, limit: int = 120) -> str:
    """Alert text in a markdown cell (`code_span`): a code span (no link, image or emphasis),
    one line, no pipe of it ending the cell."""
    return code_span(text, limit, cell=True)


def _rule_rows(report: Report) -> list[list[str]]:
    rows = []
    for r in report.rules:
        messages = str(sum(r.messages.values()))
        rows.append(
            [r.rule, r.playbook, str(r.alerts), str(r.tickets), str(r.notes), messages,
             str(r.digest_entries), f"{r.containment_approval}/{r.containment_automatic}",
             str(r.closed), str(r.ignored), str(r.suppressed), str(r.errors)]
        )  # fmt: skip
    return rows


_RULE_HEADER = [
    "rule", "playbook", "alerts", "tickets", "notes", "messages", "digest",
    "contain (approval/auto)", "closed", "ignored", "suppressed", "errors",
]  # fmt: skip


def _window(report: Report) -> str:
    if report.first_alert is None or report.last_alert is None:
        return "no alerts"
    return f"{report.first_alert:%Y-%m-%d %H:%M} to {report.last_alert:%Y-%m-%d %H:%M} UTC"


def _noise_lines(report: Report, show: Callable[[str], str] = plain) -> list[str]:
    t, n = report.totals, report.noise
    busiest = (
        f"{show(n.busiest_entity)} ({n.busiest_entity_alerts} alerts)"
        if n.busiest_entity
        else "none"
    )
    return [
        f"alerts {t.alerts} ({_window(report)}, {n.days:g} day(s)); repeats {report.repeats}; "
        f"skipped {len(report.skipped)}",
        f"tickets {t.tickets} ({n.tickets_per_100_alerts:g} per 100 alerts); notes {t.notes}; "
        f"messages {t.messages}; pages {t.pages} ({n.pages_per_day:g} per day)",
        f"digest entries {t.digest_entries} in {t.digest_messages} digest message(s); "
        f"containment {t.containments} ({t.containment_approval} for approval, "
        f"{t.containment_automatic} automatic)",
        f"closed {t.closed}; ignored {t.ignored}; suppressed {t.suppressed}; "
        f"alert updates {t.alert_updates}; incident updates {t.incident_updates}; "
        f"errors {t.errors}",
        f"busiest entity: {busiest}",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line.rstrip()]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def text_report(report: Report, title: str = "Replay") -> str:
    lines = [f"{title}: policy {report.policy} (sha256 {report.policy_sha256[:12] or '-'})"]
    lines += ["  " + line for line in _noise_lines(report)]
    lines += ["", *_table(_RULE_HEADER, [[plain(c, 40) for c in r] for r in _rule_rows(report)])]
    if report.messages_per_channel:
        lines += ["", "messages per channel:"]
        lines += [f"  {plain(c)}: {n}" for c, n in report.messages_per_channel.items()]
    errors = [t for t in report.alerts if t.errors]
    if errors:
        lines += ["", f"alerts whose playbook failed ({len(errors)}):"]
        for t in errors[:20]:
            lines.append(f"  {plain(t.alert, 60)}: {plain(t.errors[0], 200)}")
    if report.skipped:
        lines += ["", f"skipped ({len(report.skipped)}):"]
        lines += [f"  {plain(str(s), 300)}" for s in report.skipped[:50]]
    return "\n".join(lines)


_FIGURE_HEADER = ["figure", "base", "candidate", "change"]


def _figure_rows(comparison: Comparison) -> list[list[str]]:
    """Each total and noise figure of a comparison: base, candidate and the change."""
    return [[k, f"{a:g}", f"{b:g}", f"{b - a:+g}"] for k, (a, b) in comparison.totals.items()]


def text_comparison(comparison: Comparison, limit: int = 50) -> str:
    base, cand = comparison.base, comparison.candidate
    lines = [
        f"Base: {base.policy}; candidate: {cand.policy}; {base.totals.alerts} alerts, "
        f"{comparison.changed} treated differently",
        "",
        *_table(_FIGURE_HEADER, _figure_rows(comparison)),
    ]
    if comparison.differences:
        lines += ["", "alerts treated differently:"]
        for d in comparison.differences[:limit]:
            lines.append(f"  {plain(d.alert, 200)}  {plain(d.title, 60)}")
            for aspect, (a, b) in d.changes.items():
                lines.append(f"    {aspect}: {plain(a, 200)} -> {plain(b, 200)}")
        more = len(comparison.differences) - limit
        if more > 0:
            lines.append(f"  ... and {more} more (--json or --markdown lists them all)")
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown_report(report: Report, title: str = "Replay") -> str:
    lines = [
        f"# {title}: policy {md_text(report.policy)}",
        "",
        f"Policy sha256 `{report.policy_sha256[:12] or '-'}`; simulated in memory, nothing "
        "was written anywhere.",
        "",
        *(f"- {line}" for line in _noise_lines(report, md_text)),
        "",
        "## Per rule and playbook",
        "",
        *_md_table(
            _RULE_HEADER,
            [[md_text(r[0], 60), md_text(r[1], 60), *r[2:]] for r in _rule_rows(report)],
        ),
    ]
    if report.messages_per_channel:
        lines += ["", "## Messages per channel", ""]
        lines += _md_table(
            ["channel", "messages"],
            [[md_text(c), str(n)] for c, n in report.messages_per_channel.items()],
        )
    errors = [t for t in report.alerts if t.errors]
    if errors:
        lines += ["", "## Alerts whose playbook failed", ""]
        lines += _md_table(
            ["alert", "error"], [[md_text(t.alert), md_text(t.errors[0], 300)] for t in errors]
        )
    if report.skipped:
        lines += ["", "## Skipped inputs", ""]
        lines += _md_table(
            ["input", "problem"],
            [[md_text(s.where), md_text(s.problem, 300)] for s in report.skipped],  # fmt: skip
        )
    return "\n".join(lines)


def markdown_comparison(comparison: Comparison) -> str:
    lines = [
        markdown_report(comparison.base, "Base"),
        "",
        markdown_report(comparison.candidate, "Candidate"),
        "",
        "# Differences",
        "",
        f"{comparison.changed} of {comparison.base.totals.alerts} alerts treated differently.",
        "",
        *_md_table(_FIGURE_HEADER, _figure_rows(comparison)),
    ]
    if comparison.differences:
        lines += ["", "## Alerts treated differently", ""]
        rows = []
        for d in comparison.differences:
            for aspect, (a, b) in d.changes.items():
                rows.append([md_text(d.alert), md_text(d.title, 60), aspect, md_text(a),
                             md_text(b)])  # fmt: skip
        lines += _md_table(["alert", "title", "aspect", "base", "candidate"], rows)
    return "\n".join(lines)
