"""`simulate`: past alerts in time order through a policy's decision and its playbooks' own
code, in one `World`, counted into a `Report`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from riposte.alerts.approval import ContainmentRequest
from riposte.alerts.matching import evaluate
from riposte.alerts.model import Alert
from riposte.alerts.policy import Policy
from riposte.alerts.response import response_revision
from riposte.alerts.throttle import Disposition, gate
from riposte.playbooks.context import ActionResult
from riposte.playbooks.registry import registry
from riposte.playbooks.replay.context import SimulatedContext
from riposte.playbooks.replay.inputs import Skipped
from riposte.playbooks.replay.report import Noise, Report, RuleStats, Totals, Treatment
from riposte.playbooks.replay.world import World
from riposte.playbooks.runner import RESPONDED


def _containment_kind(request: ContainmentRequest) -> str:
    mode = "automatic" if request.automatic else "approval"
    return f"{mode}: " + ", ".join(f"{a.kind} {a.target}" for a in request.actions)


def _busiest(alerts: Sequence[Alert]) -> tuple[str | None, int]:
    counts: Counter[str] = Counter()
    for alert in alerts:
        for label in {f"{e.type}:{e.value.strip().casefold()}" for e in alert.entities}:
            counts[label] += 1
    if not counts:
        return None, 0
    label, n = min(counts.items(), key=lambda item: (-item[1], item[0]))
    return label, n


def simulate(
    policy: Policy,
    alerts: Iterable[Alert],
    *,
    sha256: str = "",
    skipped: Sequence[Skipped] = (),
    progress: Callable[[int, int], None] | None = None,
    days: float | None = None,
) -> Report:
    """Replay ``alerts`` in time order through ``policy`` and its playbooks, in memory.
    ``days``: the window the alerts were read from, for the per-day figures (default: from the
    first alert to the last, at least one day)."""
    ordered = sorted(alerts, key=lambda a: (a.created_at, a.source, a.id))
    seen: set[tuple[str, str, str]] = set()
    unique: list[Alert] = []
    for alert in ordered:
        key = (alert.source, alert.id, response_revision(alert))
        if key not in seen:
            seen.add(key)
            unique.append(alert)
    world = World(policy)
    found = registry()
    treatments: list[Treatment] = []
    stats: dict[tuple[str, str], RuleStats] = {}
    per_channel: Counter[str] = Counter()
    totals = Totals(alerts=len(unique))
    for number, alert in enumerate(unique, 1):
        treatment = Treatment(
            alert=f"{alert.source}-{alert.id}",
            title=alert.title,
            severity=str(alert.severity),
            created_at=alert.created_at,
            rules=[],
            playbooks=[],
            dispositions=[],
        )
        treatments.append(treatment)
        try:
            actions = evaluate(policy, alert).actions
        except Exception as exc:  # a hand-built policy the loader would refuse
            treatment.errors.append(f"the policy could not decide: {exc}")
            totals.errors += 1
            continue
        # As `decide`: every action is gated first, then carried out in order.
        outcomes = [
            gate(action, alert, at=alert.created_at, tickets=world.ledger(action),
                 suppressions=world)
            for action in actions
        ]  # fmt: skip
        failed = False
        for action, outcome in zip(actions, outcomes, strict=True):
            row = stats.setdefault(
                (action.rule, action.playbook),
                RuleStats(rule=action.rule, playbook=action.playbook),
            )
            row.alerts += 1
            treatment.rules.append(action.rule)
            treatment.playbooks.append(action.playbook)
            if failed:  # production's response stops at the first failure
                treatment.dispositions.append("not carried out")
                continue
            if outcome.disposition not in RESPONDED:
                treatment.dispositions.append(str(outcome.disposition))
                if outcome.disposition == Disposition.IGNORED:
                    row.ignored += 1
                    totals.ignored += 1
                else:
                    row.suppressed += 1
                    totals.suppressed += 1
                continue
            ctx = SimulatedContext(world, alert, action, outcome)
            try:
                playbook = found.get(action.playbook)
                playbook(alert, playbook.params_model.model_validate(action.params), ctx)
            except Exception as exc:
                # As in production: the response fails here, its suppression window is not
                # started, and what its steps did before the failure stays done.
                treatment.errors.append(f"rule {action.rule}: {type(exc).__name__}: {exc}"[:500])
                row.errors += 1
                totals.errors += 1
                failed = True
            else:
                if outcome.suppress_key:
                    world.record_response(outcome.suppress_key, outcome.at)
            _account(ctx, treatment, row, totals, per_channel, world)
        totals.alert_updates += treatment.alert_updated
        totals.incident_updates += treatment.incident_written
        if progress is not None:
            progress(number, len(unique))
    totals.digest_messages = len(world.digests)
    first = unique[0].created_at if unique else None
    last = unique[-1].created_at if unique else None
    if days is None:
        days = max(1.0, (last - first).total_seconds() / 86400) if first and last else 1.0
    busiest, busiest_n = _busiest(unique)
    noise = Noise(
        tickets_per_100_alerts=round(100 * totals.tickets / len(unique), 2) if unique else 0.0,
        pages_per_day=round(totals.pages / days, 4),
        days=round(days, 2),
        busiest_entity=busiest,
        busiest_entity_alerts=busiest_n,
    )
    return Report(
        policy=policy.origin,
        policy_sha256=sha256 or policy.sha256,
        first_alert=first,
        last_alert=last,
        totals=totals,
        noise=noise,
        rules=sorted(stats.values(), key=lambda r: (-r.alerts, r.rule, r.playbook)),
        messages_per_channel=dict(sorted(per_channel.items())),
        alerts=treatments,
        repeats=len(ordered) - len(unique),
        skipped=list(skipped),
        digest_channels={
            key: f"{bucket.channel} from {bucket.start:%Y-%m-%d %H:%M}"
            for key, (bucket, _) in world.digests.items()
        },
    )


def _account(
    ctx: SimulatedContext,
    treatment: Treatment,
    row: RuleStats,
    totals: Totals,
    per_channel: Counter[str],
    world: World,
) -> None:
    """Add what one action's steps did to the alert's treatment and the figures."""
    result: ActionResult = ctx.result
    treatment.dispositions.append(result.disposition)
    if result.ticket is not None:
        treatment.ticket_system.append(f"{result.ticket.system} {ctx.action.priority}")
        if result.ticket_created:
            treatment.tickets_opened.append(result.ticket.key)
            row.tickets += 1
            totals.tickets += 1
        elif result.alert_number is not None:
            treatment.ticket_notes.append(result.ticket.key)
            row.notes += 1
            totals.notes += 1
    for channel in ctx.messages:
        treatment.messages.append(channel)
        row.messages[channel] = row.messages.get(channel, 0) + 1
        per_channel[channel] += 1
        totals.messages += 1
        if channel in world.oncall:
            totals.pages += 1
    if result.digest:
        treatment.digest.append(result.digest)
        row.digest_entries += 1
        totals.digest_entries += 1
    for _, request, new in ctx.requests:
        treatment.containment.append(_containment_kind(request))
        if not new:
            continue
        totals.containments += 1
        if request.automatic:
            row.containment_automatic += 1
            totals.containment_automatic += 1
        else:
            row.containment_approval += 1
            totals.containment_approval += 1
    if result.closed:
        treatment.closed.append(result.closed)
        row.closed += 1
        totals.closed += 1
    if result.alert_update is not None:
        treatment.alert_updated = True
    if result.incident is not None:
        treatment.incident_written = True
