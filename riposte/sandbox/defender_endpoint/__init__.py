"""Microsoft Defender for Endpoint: ``/api/alerts`` (list, get, update), machines, machine actions
(isolate, release, poll) and indicators (submit or update, list).

`router` serves the API under ``/mde/api``, `control_router` the sandbox's controls under
``/_sandbox/mde``; the modules `alerts`, `indicators` and `machines` (with machine actions)
register their routes on them when imported here (no two of their paths overlap, so the order
does not matter). `filters` is the API's ``$filter``; `api` what every route shares.
"""

from __future__ import annotations

from riposte.sandbox.alert_store import COMMENT_AUTHOR
from riposte.sandbox.defender_endpoint import alerts, indicators, machines
from riposte.sandbox.defender_endpoint.alerts import (
    CLASSIFICATIONS,
    DATETIME_FIELDS,
    DETERMINATIONS,
    NUMBER_FIELDS,
    RETIRED_DETERMINATIONS,
    SEVERITIES,
    STATUSES,
    STRING_FIELDS,
    load_alerts,
    parse_filter,
    present,
)
from riposte.sandbox.defender_endpoint.api import (
    MAX_TOP,
    MDE_ROOT,
    control_router,
    mde_error,
    require_endpoint_token,
    router,
)
from riposte.sandbox.defender_endpoint.indicators import (
    INDICATOR_ACTIONS,
    INDICATOR_SEVERITIES,
    INDICATOR_TYPES,
)
from riposte.sandbox.defender_endpoint.machines import (
    ACTION_TYPES,
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ISOLATION_TYPES,
    machine_record,
    sync_machines,
)

__all__ = [
    "ACTION_TYPES",
    "ACTIVE_STATUSES",
    "CLASSIFICATIONS",
    "COMMENT_AUTHOR",
    "DATETIME_FIELDS",
    "DETERMINATIONS",
    "FINAL_STATUSES",
    "INDICATOR_ACTIONS",
    "INDICATOR_SEVERITIES",
    "INDICATOR_TYPES",
    "ISOLATION_TYPES",
    "MAX_TOP",
    "MDE_ROOT",
    "NUMBER_FIELDS",
    "RETIRED_DETERMINATIONS",
    "SEVERITIES",
    "STATUSES",
    "STRING_FIELDS",
    "alerts",
    "control_router",
    "indicators",
    "load_alerts",
    "machine_record",
    "machines",
    "mde_error",
    "parse_filter",
    "present",
    "require_endpoint_token",
    "router",
    "sync_machines",
]
