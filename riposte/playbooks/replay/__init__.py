"""Replay: past alerts through a policy and its playbooks, simulated in memory.

`simulate` takes alerts in time order through the policy's whole decision (rules, allowlists,
suppression windows, incident grouping, throttles, digests) and runs each playbook's own code
with a `SimulatedContext`: the same `Context` a response gets, whose steps record what they
would do instead of doing it. Nothing is written anywhere and nothing is read but the alerts:
the throttle and suppression state that production keeps in the ticketing system and in
Prefect lives here in one `World`, built up alert by alert, so the thousandth alert sees the
tickets the first 999 opened.

The report counts what a SOC lead looks at: per rule and playbook the alerts matched, tickets
opened, notes, messages per channel, digest entries, containment asked for approval or taken
at once, alerts ignored, suppressed or closed; tickets per 100 alerts, pages per day, the
busiest entity. `compare` sets two reports side by side, alert by alert.

The modules, from the bottom up: `inputs` (reading the alerts), `world` (the simulated state),
`context` (`SimulatedContext`), `report` (the report's models), `simulation` (`simulate`),
`comparison` (`compare`), `thresholds` (``--fail-on``) and `render` (text and markdown).
"""

from riposte.playbooks.replay.comparison import Comparison, Difference, compare
from riposte.playbooks.replay.context import (
    SimulatedContext,
    SimulatedResponse,
    SimulationUnsupported,
)
from riposte.playbooks.replay.inputs import Loaded, Skipped, alert_files, load_alerts
from riposte.playbooks.replay.render import (
    markdown_comparison,
    markdown_report,
    md_text,
    plain,
    text_comparison,
    text_report,
)
from riposte.playbooks.replay.report import (
    Noise,
    Report,
    RuleStats,
    Totals,
    Treatment,
    figures,
)
from riposte.playbooks.replay.simulation import simulate
from riposte.playbooks.replay.thresholds import THRESHOLD_METRICS, Threshold
from riposte.playbooks.replay.world import SIMULATED_URL, Desk, SimTicket, World

__all__ = [
    "SIMULATED_URL",
    "THRESHOLD_METRICS",
    "Comparison",
    "Desk",
    "Difference",
    "Loaded",
    "Noise",
    "Report",
    "RuleStats",
    "SimTicket",
    "SimulatedContext",
    "SimulatedResponse",
    "SimulationUnsupported",
    "Skipped",
    "Threshold",
    "Totals",
    "Treatment",
    "World",
    "alert_files",
    "compare",
    "figures",
    "load_alerts",
    "markdown_comparison",
    "markdown_report",
    "md_text",
    "plain",
    "simulate",
    "text_comparison",
    "text_report",
]
