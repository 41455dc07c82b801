"""`compare`: two reports of the same alerts side by side, alert by alert and figure by figure."""

from __future__ import annotations

from pydantic import BaseModel

from riposte.playbooks.replay.report import Report, Treatment, figures


class Difference(BaseModel):
    alert: str
    title: str
    changes: dict[str, tuple[str, str]]
    """What changed, by aspect (rules, playbooks, ticket, containment): (base, candidate)."""


class Comparison(BaseModel):
    base: Report
    candidate: Report
    differences: list[Difference]
    changed: int
    totals: dict[str, tuple[float, float]]
    """Each total and noise figure: (base, candidate)."""


def _aspects(t: Treatment, digests: dict[str, str]) -> dict[str, str]:
    return {
        "rules": ", ".join(t.rules) or "-",
        "playbooks": ", ".join(t.playbooks) or "-",
        "ticket": t.ticket_kind,
        "messages": ", ".join(sorted(t.messages)) or "none",
        "digest": ", ".join(digests.get(d, d) for d in t.digest) or "none",
        "containment": "; ".join(t.containment) or "none",
        "closed": "; ".join(t.closed) or "no",
        "dispositions": ", ".join(t.dispositions) or "-",
        "errors": "; ".join(t.errors) or "none",
    }


def compare(base: Report, candidate: Report) -> Comparison:
    """Alert by alert, what ``candidate`` does differently from ``base`` (same alerts)."""
    theirs = {(t.alert, t.created_at): t for t in candidate.alerts}
    differences = []
    for mine in base.alerts:
        other = theirs.get((mine.alert, mine.created_at))
        if other is None:
            continue
        a, b = _aspects(mine, base.digest_channels), _aspects(other, candidate.digest_channels)
        changes = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        if changes:
            differences.append(Difference(alert=mine.alert, title=mine.title, changes=changes))
    fb, fc = figures(base), figures(candidate)
    return Comparison(
        base=base,
        candidate=candidate,
        differences=differences,
        changed=len(differences),
        totals={k: (fb[k], fc[k]) for k in fb},
    )
