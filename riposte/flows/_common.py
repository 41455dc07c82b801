"""What the flows share: a flow whose result is kept in the shared result storage, the `Plan` of
the blocks a run names, and the descriptions of the parameters every alert flow takes, as the
run forms show them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow

from riposte.playbooks.context import Plan
from riposte.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def stored_flow(
    name: str,
    flow_run_name: str | Callable[[], str] | None = None,
    log_prints: bool | None = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """`prefect.flow`, its result persisted in the shared result storage (the
    `result_storage_block` setting): a Retry, or a run resumed on another worker, gets its
    steps back from there."""
    return flow(
        name=name,
        flow_run_name=flow_run_name,
        persist_result=True,
        result_storage=get_settings().result_storage_block,
        log_prints=log_prints,
    )


def plan_of(
    defender_block: str, ticketing_block: str | None, channel_blocks: list[str] | None
) -> Plan:
    """The blocks a run names (its parameters), as a response takes them."""
    return Plan(
        defender_block=defender_block,
        ticketing_block=ticketing_block,
        channel_blocks=tuple(channel_blocks) if channel_blocks is not None else None,
    )


# Written as in a docstring's `Args:` section: continuation lines indented by 12 spaces.
PARAM_DOCS = {
    "alert_id": """The alert's id in its Defender API, as in its Defender link (or in the name
            of its response run, `<source>-<alert id>`).""",
    "source": """The Defender API the alert comes from: `graph` (Microsoft Graph security
            alerts), `defender_endpoint`, `cloud_apps` or `defender_cloud`.""",
    "defender_block": """The Defender credentials block that reads and updates the alert
            (`riposte-defender`); another one only for an alert of another tenant.""",
    "ticketing_block": """Leave empty: the ticketing the policy names for the alert. Else a
            block (`servicenow-credentials/<name>`, `jira-credentials/<name>`) used instead, for
            this run only.""",
    "channel_blocks": """Leave empty: the channels the policy names for the alert. Else chat
            or email blocks (`slack-incoming-webhook/<name>`, `teams-workflow-webhook/<name>`,
            `email-smtp/<name>`) posted to instead, for this run only.""",
}


def shared_param_docs(fn: F) -> F:
    """``fn`` with each `Args:` entry of its docstring written ``name: {shared}`` given the
    shared description of that parameter (`PARAM_DOCS`). Put it under `@flow`, which reads the
    docstring for the run form."""
    fn.__doc__ = re.sub(
        r"(?m)^( +)(\w+): \{shared\}$",
        lambda m: f"{m[1]}{m[2]}: {PARAM_DOCS[m[2]]}",
        fn.__doc__ or "",
    )
    return fn
