"""dfa_block_source_ip: a Defender for APIs playbook. Low severity goes to the daily digest;
anything else gets a Jira ticket, a Teams message when the ticket is new, the alert marked in
progress, and a request to block the source IP in Defender for Endpoint after an approver says
yes in Teams. Only a public source IP is ever blocked, never a private one nor one the rule
lists under `never_block` (partners, scanners): the ticket says why when nothing is blocked.

Register it with `RIPOSTE_PLAYBOOKS=examples/playbooks`; `examples/playbooks/policy.yaml` routes
the Defender for APIs alerts to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork

from riposte.playbooks import (
    Alert,
    Context,
    Defaults,
    RuleParameters,
    Severity,
    playbook,
    public_ips,
)


class Params(BaseModel):
    """What a policy rule may set for this playbook, beside the rule's own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    never_block: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Networks never blocked, whatever the alert says (partners, scanners)",
    )
    digest_at_most: Severity = Field(
        Severity.LOW,
        description="Alerts of this severity or lower go to the digest instead of a ticket",
    )
    block: bool = Field(True, description="Ask the approvers to block the source IP")


def sources_to_block(alert: Alert, params: Params) -> list[str]:
    """The alert's public IPs outside `never_block`."""
    keep = []
    for text in public_ips(alert):
        address = ipaddress.ip_address(text)
        if not any(address.version == n.version and address in n for n in params.never_block):
            keep.append(text)
    return keep


def _checks(
    params: Params, rule: RuleParameters, defaults: Defaults
) -> Iterator[tuple[tuple[str, ...], str]]:
    if params.block and rule.containment is None and defaults.containment is None:
        yield ("block",), "block: true needs `containment: {actions: [block_ip]}` with approvers"


@playbook(opens_ticket=True, contains=True, uses_digest=True, checks=_checks)
def dfa_block_source_ip(alert: Alert, params: Params, ctx: Context) -> None:
    """Digest the low ones; ticket, Teams and an approval-gated block of the public source IP
    for the others."""
    known = alert.severity != Severity.UNKNOWN
    if known and alert.severity.rank <= params.digest_at_most.rank:
        ctx.add_to_digest()
        return
    opened = ctx.ticket()
    if opened.is_new:
        ctx.notify(ticket=opened.ticket)
    ctx.update_alert(opened.ticket)
    # The rule's `incident:` (tags and owner) on the Defender incident, plus a tag of our own
    # naming the API that was hit: written once per incident, whichever alert comes first.
    ctx.update_incident(tags=["defender-for-apis"])
    if not params.block or not opened.is_new:
        return  # a throttled repeat joins the ticket; its first alert asked already
    targets = sources_to_block(alert, params)
    if not targets:
        ctx.note(opened.ticket, "No public source IP outside never_block: nothing to block.")
        return
    ctx.request_containment(["block_ip"], only_targets=targets, ticket=opened.ticket)
