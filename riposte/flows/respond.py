"""The flows that answer alerts: `respond_to_alert` (one alert) and `respond_batch` (many).

Both run the same per-alert response, `answer`: fetch the alert, `decide` with the policy in
force (throttles, incident grouping, suppression), then carry out each outcome with its
playbook (`riposte.playbooks`, built-in or registered): a ticket and messages, a note on an
open ticket, a digest entry, a close at the source, or nothing but a record. Calm traffic gets one
`respond_to_alert` run per alert, each step a task run; a burst gets batches, where each alert is
one task run named after it (`respond graph-<id>`) whose steps are grouped in it
(`riposte.tasks._common.grouped_steps`): a flow run, or a task run per step, costs the Prefect
server far more than the alert's HTTP calls (see the README's figures).

Over 500 lines: the report and the log lines of a response are written here, from the
`Progress` and the `ResponseSummary` the flows fill, so that a Failed run reports as a Completed
one does.
"""

from __future__ import annotations

import contextvars
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from riposte.alerts.model import Alert
from riposte.alerts.plain import code_span, log_text
from riposte.alerts.policy.store import PolicySnapshot
from riposte.alerts.response import AlertRef, Delivery, Ticket, ref_for
from riposte.alerts.sources import SourceName
from riposte.blocks import BlockCache, DefenderCredentials, coalescing
from riposte.flows._common import plan_of, shared_param_docs, stored_flow
from riposte.playbooks.context import (
    DEFAULT_DEFENDER,
    ActionResult,
    NotificationsFailed,
    Plan,
    ResponseContext,
    failure_message,
)
from riposte.playbooks.runner import carry_out, report_problems
from riposte.tasks._common import grouped_steps
from riposte.tasks.alerts import AlertUpdate, fetch_alert
from riposte.tasks.decide import PolicyDecision, current_policy, decide
from riposte.tasks.runs import (
    BATCH_TABLE_KEY,
    alert_run_name,
    batch_run_name,
    response_tags,
    tag_current_run,
)

BATCH_CONCURRENCY = 16


class ResponseSummary(BaseModel):
    alert_id: str
    source: str
    severity: str
    title: str
    portal_url: str | None
    policy: str
    policy_sha256: str
    policy_fallback: bool
    matched_rules: list[str]
    actions: list[ActionResult]

    @property
    def tickets(self) -> list[Ticket]:
        return [a.ticket for a in self.actions if a.ticket is not None]

    @property
    def ticket(self) -> Ticket | None:
        return next(iter(self.tickets), None)

    @property
    def deliveries(self) -> list[Delivery]:
        return [d for a in self.actions for d in a.deliveries]

    @property
    def alert_update(self) -> AlertUpdate | None:
        return next((a.alert_update for a in self.actions if a.alert_update), None)

    @property
    def dispositions(self) -> list[str]:
        return [a.disposition for a in self.actions]


@dataclass
class Progress:
    """How far one alert's response got: the alert once read, the policy's verdict once taken,
    the result of every action started (the one that raised included, with the steps it did)
    and how many of them finished (their playbook returned, their lines were logged). The
    report of a Failed response is written from it."""

    alert: Alert | None = None
    verdict: PolicyDecision | None = None
    results: list[ActionResult] = field(default_factory=list)
    finished: int = 0

    @property
    def unfinished(self) -> list[ActionResult]:
        """The action whose playbook raised, if one did: started, not finished."""
        return self.results[self.finished :]


def answer(
    ref: AlertRef,
    plan: Plan,
    snapshot: PolicySnapshot | None = None,
    blocks: BlockCache | None = None,
    progress: Progress | None = None,
) -> ResponseSummary:
    """The response to one alert revision, as task runs named after the alert.

    ``snapshot`` is the policy to answer with and ``blocks`` the blocks already loaded (a batch
    reads both once); without them, they are read now. Every step that writes is find-or-create
    in the external system and keyed by the alert, or by the ticket the alert goes to (not by
    the run), under a lock: a Retry, a re-run or a duplicate delivery running at the same moment
    finds the step done and gets it back Cached instead of doing it twice.
    """
    logger = get_run_logger()
    report_problems(logger)
    progress = progress if progress is not None else Progress()
    response = ResponseContext(plan, blocks)
    alert: Alert = fetch_alert(response.defender, ref.source, ref.alert_id)
    progress.alert = alert
    if snapshot is None:
        snapshot = current_policy(logger)
    verdict: PolicyDecision = decide(alert, snapshot, plan.ticketing_block, response.blocks)
    progress.verdict = verdict
    results = progress.results

    def finished(result: ActionResult) -> None:
        # The playbook returned: what it did is logged now, and it is not "stopped" by what
        # fails after it (recording the suppression window, the next action).
        for line in outcome_lines(result):
            logger.info("%s-%s: %s", alert.source, log_text(alert.id), line)
        progress.finished += 1

    for action, outcome in zip(verdict.actions, verdict.outcomes, strict=True):
        logger.info(
            "Alert %s (%s): rule %s, %s: %s",
            log_text(alert.id),
            alert.severity,
            outcome.rule,
            outcome.disposition,
            log_text(outcome.reason),
        )
        carry_out(
            response,
            alert,
            action,
            outcome,
            verdict.tickets,
            started=results,
            finished=finished,
        )
    if any(r.failures for r in results):
        # Defanged: Prefect logs the run's final state, message included, as a log row.
        raise NotificationsFailed(log_text(failure_message(results)))
    return ResponseSummary(
        alert_id=alert.id,
        source=alert.source,
        severity=str(alert.severity),
        title=alert.title,
        portal_url=alert.portal_url,
        policy=verdict.policy_origin,
        policy_sha256=verdict.policy_sha256,
        policy_fallback=verdict.policy_fallback,
        matched_rules=list(verdict.matched_rules),
        actions=results,
    )


@stored_flow(
    "respond_to_alert",
    # `<source>-<alert id>`, or a name typed in the Custom run form that starts with it and a
    # space (`graph-<id> after the policy change`).
    alert_run_name("{source}-{alert_id}"),
    log_prints=False,
)
@shared_param_docs
def respond_to_alert(
    alert_id: str,
    source: SourceName = "graph",
    revision: str = "",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> ResponseSummary:
    """Answer one Defender alert as the policy says: a ticket and messages, a note on an open
    ticket, a digest entry, a close at the source, or nothing but a record.

    Parameters name blocks (never secrets). ``ticketing_block`` and ``channel_blocks``
    (`block-type-slug/block-name`) default to what the policy names; given, they override it
    for this run. Without `revision`, the alert is read first to learn it. Running this again
    for an alert that was answered does nothing new; for one whose response failed, it
    finishes what is missing.

    Args:
        alert_id: {shared}
        source: {shared}
        revision: Leave empty: the alert is read to learn it. The intake and the poll fill it
            with the revision they saw (the alert's severity, and `-reopened-<time>` once it
            was reopened): a new revision gets a response of its own.
        defender_block: {shared}
        ticketing_block: {shared}
        channel_blocks: {shared}
    """
    plan = plan_of(defender_block, ticketing_block, channel_blocks)
    ref = AlertRef(source=source, alert_id=alert_id, revision=revision)
    blocks = BlockCache()
    progress = Progress()
    try:
        if not ref.revision:
            alert = fetch_alert(blocks.load(DefenderCredentials, defender_block), source, alert_id)
            progress.alert = alert
            ref = ref_for(alert)
            tag_current_run(response_tags(alert))
        summary = answer(ref, plan, blocks=blocks, progress=progress)
    except Exception as exc:
        # A Failed response still says what it did (a ticket it opened, messages it sent) and
        # what it did not, and carries its tags: the run is found like any other.
        _record_failure(ref, progress, exc)
        raise
    # Tags make the UI's run list filterable by what the policy did.
    tag_current_run(
        [
            "riposte",
            f"source:{summary.source}",
            f"severity:{summary.severity}",
            *(f"rule:{a.rule}" for a in summary.actions),
            *(f"disposition:{a.disposition}" for a in summary.actions),
        ]
    )
    create_markdown_artifact(
        markdown=_report(summary),
        key=_artifact_key(summary.source, summary.alert_id),
        description=_artifact_description(summary.source, summary.alert_id, summary.title),
    )
    return summary


def _record_failure(ref: AlertRef, progress: Progress, exc: Exception) -> None:
    """Tags and report of a response that raised ``exc``, from how far it got. Never raises:
    the run fails with ``exc``, not with a problem of its report."""
    logger = get_run_logger()
    alert, verdict = progress.alert, progress.verdict
    try:
        for action in progress.unfinished:
            # The action that raised logged nothing yet: what its steps did before.
            for line in outcome_lines(action):
                logger.info(
                    "%s-%s: %s (before the failure)", ref.source, log_text(ref.alert_id), line
                )
        tags = ["riposte", f"source:{ref.source}"]
        if alert is not None:
            tags.append(f"severity:{alert.severity}")
        if verdict is not None:
            tags += [f"rule:{o.rule}" for o in verdict.outcomes]
            tags += [f"disposition:{r.disposition}" for r in progress.results]
            tags += [
                f"disposition:{o.disposition}" for o in verdict.outcomes[len(progress.results) :]
            ]
        tag_current_run(tags)
        create_markdown_artifact(
            markdown=_failure_report(ref, progress, exc),
            key=_artifact_key(ref.source, ref.alert_id),
            description=_artifact_description(
                ref.source, ref.alert_id, alert.title if alert else "", failed=True
            ),
        )
    except Exception as problem:  # the report is extra: the run's own error comes first
        logger.warning("The report of this failed response was not written: %s", problem)


@task(
    name="respond",
    task_run_name="respond {ref.source}-{ref.alert_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def respond_in_batch(
    ref: AlertRef, plan: Plan, snapshot: PolicySnapshot, blocks: BlockCache
) -> ResponseSummary:
    """One alert of a batch: its whole response, one task run. Its steps keep their records
    and locks (a Retry of the batch finds them done), and its log says what each did."""
    with grouped_steps():
        return answer(ref, plan, snapshot, blocks)


class BatchSummary(BaseModel):
    answered: int
    failed: list[str]
    dispositions: dict[str, int] = {}


# Its Args are its own: they speak of the alerts of a batch, where the shared ones speak of one.
@stored_flow("respond_batch", batch_run_name, log_prints=False)
def respond_batch(
    alerts: list[AlertRef],
    first_alert: str = "",
    size: int = 0,
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> BatchSummary:
    """Answer a burst of alerts in one run, several at a time, with the policy as it is when
    the batch starts. Each alert is a task run named after it (`respond graph-<id>`), so it is
    found in the UI by the alert's id, and its log says what each step did. A Retry answers
    only what failed: the steps already done are found done.

    Args:
        alerts: The alerts to answer, each by its source, its id in that Defender API and its
            revision (empty: the alert is read to learn it).
        first_alert: Only names the run, `batch-<first_alert>-<size>`; empty: the first of
            `alerts`, as `<source>-<alert id>`.
        size: Only names the run; 0: the number of `alerts`.
        defender_block: The Defender credentials block that reads and updates the alerts
            (`riposte-defender`); another one only for alerts of another tenant.
        ticketing_block: Leave empty: the ticketing the policy names for each alert. Else a
            block (`servicenow-credentials/<name>`, `jira-credentials/<name>`) used instead, for
            this run only.
        channel_blocks: Leave empty: the channels the policy names for each alert. Else chat
            or email blocks (`slack-incoming-webhook/<name>`, `teams-workflow-webhook/<name>`,
            `email-smtp/<name>`) posted to instead, for this run only.
    """
    plan = plan_of(defender_block, ticketing_block, channel_blocks)
    logger = get_run_logger()
    snapshot = current_policy(logger)
    blocks = BlockCache()
    # Alerts of one source that wait for the same write at the same moment share one bulk call
    # where the API has one (Defender for Endpoint, Defender for Cloud Apps).
    with coalescing(), ThreadPoolExecutor(BATCH_CONCURRENCY, thread_name_prefix="alert") as pool:
        # Each thread needs the flow run's context for its task runs to belong to this run.
        futures = [
            (
                ref,
                pool.submit(
                    contextvars.copy_context().run, respond_in_batch, ref, plan, snapshot, blocks
                ),
            )
            for ref in alerts
        ]
        rows: list[dict[str, str]] = []
        failed: list[str] = []
        # The run's message names the system and the reason, not only the alerts: the first
        # failure says it (`Microsoft Graph: ... (HTTP 403)`), the table artifact has them all.
        first_error = ""
        dispositions: Counter[str] = Counter()
        for ref, future in futures:
            try:
                summary = future.result()
            except Exception as exc:
                logger.error(
                    "Response to %s-%s failed: %s",
                    ref.source,
                    log_text(ref.alert_id),
                    log_text(exc),
                )
                failed.append(ref.alert_id)
                first_error = first_error or f"{ref.source}-{ref.alert_id}: {exc}"[:500]
                rows.append(
                    {"alert": f"{ref.source}-{ref.alert_id}", "result": f"FAILED: {exc}"[:1000]}
                )
                continue
            rows.append(_row(summary))
            dispositions.update(summary.dispositions)
    create_table_artifact(
        table=rows, key=BATCH_TABLE_KEY, description=f"Responses to {len(alerts)} alerts"
    )
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(alerts)} responses failed: {', '.join(failed[:20])}; "
            f"first failure: {first_error}"
        )
    return BatchSummary(answered=len(alerts), failed=failed, dispositions=dict(dispositions))


def _row(summary: ResponseSummary) -> dict[str, str]:
    tickets = ", ".join(dict.fromkeys(f"{t.system} {t.key}" for t in summary.tickets))
    update = summary.alert_update
    return {
        "alert": f"{summary.source}-{summary.alert_id}",
        "severity": summary.severity,
        "rule": ", ".join(a.rule for a in summary.actions),
        "disposition": ", ".join(summary.dispositions),
        "ticket": tickets or "none",
        "messages": ", ".join(d.channel for d in summary.deliveries if d.delivered) or "none",
        "alert status": update.status if update else "unchanged",
        "result": "answered",
    }


def _markdown_text(text: str) -> str:
    """``text`` shown as itself in a markdown table cell (`code_span`): a code span (no link,
    autolink, image or emphasis), on one line, control and bidirectional characters escaped,
    and no pipe of it ends the cell (GFM splits cells on them even in code)."""
    return code_span(text, cell=True)


def _artifact_key(source: str, alert_id: str) -> str:
    """``response-<source>-<alert id>``, as Prefect takes keys (lowercase, digits, dashes)."""
    name = f"response-{source}-{alert_id}".lower()
    slug = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")
    return slug[:120]


def _artifact_description(source: str, alert_id: str, title: str, failed: bool = False) -> str:
    """The artifact's description (the UI renders it as markdown): the alert and its title, as
    text."""
    head = f"Response to {source} alert {_markdown_text(alert_id)}"
    if failed:
        head += " (FAILED)"
    if title:
        head += ": " + _markdown_text(title[:200])
    return head[:500]


def outcome_lines(action: ActionResult) -> list[str]:
    """What one action did, as plain lines for the run's logs: the ticket with its link, each
    message, the digest, the close, the containment, the incident and the alert's status.

    The Prefect UI makes every URL of a log line a link: text that comes from the alert or a
    vendor (a close's answer, a message's failure, a containment's targets) is defanged
    (`log_text`); the ticket's link and the containment run's page, ours, stay links."""
    lines: list[str] = []
    ticket = action.ticket
    if ticket is not None:
        if action.alert_number is not None:
            lines.append(f"added as alert {action.alert_number} to {ticket.system} {ticket.key}")
        else:
            verb = "created" if action.ticket_created else "found existing"
            lines.append(f"ticket {verb}: {ticket.system} {ticket.key}")
        lines.append(f"ticket link: {ticket.url}")
    for d in action.deliveries:
        if not d.delivered:
            lines.append(f"message to {d.channel} NOT sent: {log_text(d.detail)}")
        elif not d.confirmed:
            lines.append(f"message to {d.channel} sent, unconfirmed: {log_text(d.detail)}")
        else:
            lines.append(f"message sent to {d.channel}")
    if action.digest:
        lines.append(f"recorded in digest {action.digest}")
    if action.closed:
        lines.append(f"closed at the source: {log_text(action.closed)}")
    if action.containment:
        text, page = _containment(action)
        lines.append(f"containment: {log_text(text)}" + (f": run {page}" if page else ""))
    if action.incident is not None:
        written = ", ".join(action.incident.fields) or "nothing new"
        lines.append(f"incident {log_text(action.incident.incident_id)}: set {written}")
    for note in action.notes:
        lines.append(f"playbook: {log_text(note)}")
    if action.alert_update is not None:
        upd = action.alert_update
        lines.append(f"alert status {'set to' if upd.status_changed else 'left as'} {upd.status}")
    return lines


def _containment(action: ActionResult) -> tuple[str, str | None]:
    """What the action says of its containment, without the page of the contain run it ends
    with; and that page (in the Prefect UI: ours, shown as a link)."""
    page = action.containment_url
    text = action.containment or ""
    return (text.removesuffix(f": run {page}") if page else text), page


# The fields `outcome_lines` walks, for the report's table: markdown cells, not log text.
def _action_lines(action: ActionResult) -> list[str]:
    lines = [f"| rule | `{action.rule}`: {action.playbook}, {action.disposition} |"]
    lines.append(f"| why | {_markdown_text(action.reason)} |")
    ticket = action.ticket
    if ticket is not None:
        if action.alert_number is not None:
            verb = f"added as alert {action.alert_number} to"
        else:
            verb = "created" if action.ticket_created else "found existing"
        lines.append(f"| ticket | {verb} {ticket.system} [{ticket.key}]({ticket.url}) |")
    for d in action.deliveries:
        if not d.delivered:
            result = f"NOT sent: {_markdown_text(d.detail)}"
        elif not d.confirmed:  # sent, its answer lost: not posted again
            result = f"sent, unconfirmed: {_markdown_text(d.detail)}"
        else:
            result = "sent"
        lines.append(f"| message {d.channel} | {result} |")
    if action.digest:
        lines.append(f"| digest | recorded in `{action.digest}` |")
    if action.closed:
        lines.append(f"| closed at the source | {_markdown_text(action.closed)} |")
    if action.containment:
        text, page = _containment(action)
        link = (
            f": [open the containment run]({page}); its outcome is added to the response run "
            "that asked for it once decided"
        )
        lines.append(f"| containment | {_markdown_text(text)}{link if page else ''} |")
    if action.incident is not None:
        written = ", ".join(action.incident.fields) or "nothing new"
        comment = "; comment added" if action.incident.comment_added else ""
        tags = _markdown_text(", ".join(action.incident.tags)) or "none"
        lines.append(
            f"| incident | {_markdown_text(action.incident.incident_id)}: set {written}"
            f"{comment}; tags {tags}; owner "
            f"{_markdown_text(action.incident.assigned_to or '') or 'none'} |"
        )
    for note in action.notes:
        lines.append(f"| playbook | {_markdown_text(note)} |")
    upd = action.alert_update
    if upd is not None:
        status = f"set to {upd.status}" if upd.status_changed else f"left as {upd.status}"
        lines.append(f"| alert status | {status} |")
        comment = "added" if upd.comment_added else "already present / none"
        lines.append(f"| alert comment | {comment} |")
    return lines


def _failure_report(ref: AlertRef, progress: Progress, exc: Exception) -> str:
    """The report of a Failed response: what was done, what was not and why."""
    alert, verdict, results = progress.alert, progress.verdict, progress.results
    error = _markdown_text(f"{type(exc).__name__}: {exc}"[:1000])
    lines = [f"# Response to {ref.source} alert {_markdown_text(ref.alert_id)}: FAILED", ""]
    if alert is not None:
        lines += [f"{_markdown_text(alert.title)} ({alert.severity}).", ""]
    if verdict is not None:
        fallback = (
            " (the last good copy: the policy file is broken)" if verdict.policy_fallback else ""
        )
        lines += [
            f"Policy: {verdict.policy_origin}{fallback}, sha256 `{verdict.policy_sha256[:12]}`.",
            "",
        ]
    lines += [f"**Stopped by**: {error}", ""]
    if alert is None:
        lines.append("**Nothing was done**: the alert could not be read.")
    elif verdict is None:
        lines.append("**Nothing was done**: the policy's decision failed.")
    else:
        lines += ["| step | result |", "|---|---|"]
        for index, action in enumerate(results):
            lines.extend(_action_lines(action))
            if index >= progress.finished:  # its playbook raised: the rest of it was not done
                lines.append(
                    f"| NOT done | the {action.playbook} playbook stopped here: its later steps "
                    "were not done |"
                )
        stopped_at = results[-1].rule if results else "its start"
        for outcome in verdict.outcomes[len(results) :]:
            lines.append(f"| rule | `{outcome.rule}`: {outcome.playbook}, {outcome.disposition} |")
            lines.append(f"| NOT done | not started: the response stopped at `{stopped_at}` |")
    lines += [
        "",
        "Retry this run to finish what is missing: the steps already done come back Cached, "
        "nothing is done twice.",
    ]
    if alert is not None and alert.portal_url:
        target = alert.portal_url.replace("(", "%28").replace(")", "%29")
        lines += ["", f"[Open the alert in Defender]({target})"]
    return "\n".join(lines)


def _report(summary: ResponseSummary) -> str:
    fallback = " (the last good copy: the policy file is broken)" if summary.policy_fallback else ""
    lines = [
        f"# Response to {summary.source} alert {_markdown_text(summary.alert_id)}",
        "",
        f"{_markdown_text(summary.title)} ({summary.severity}).",
        "",
        f"Policy: {summary.policy}{fallback}, sha256 `{summary.policy_sha256[:12]}`.",
        "",
        "| step | result |",
        "|---|---|",
    ]
    for action in summary.actions:
        lines.extend(_action_lines(action))
    if summary.portal_url:  # an https URL on a Defender portal host (`safe_portal_url`)
        target = summary.portal_url.replace("(", "%28").replace(")", "%29")
        lines += ["", f"[Open the alert in Defender]({target})"]
    return "\n".join(lines)
