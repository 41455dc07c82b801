"""`Threshold`: a ``--fail-on METRIC>N[%]`` limit on a report's figures, or on their increase
over a base policy's."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from riposte.playbooks.replay.comparison import Comparison
from riposte.playbooks.replay.report import Report, figures

_THRESHOLD = re.compile(r"^\s*([a-z_0-9]+)\s*>\s*([0-9]+(?:\.[0-9]+)?)\s*(%?)\s*$")
THRESHOLD_METRICS = (
    "changed",
    "tickets",
    "notes",
    "messages",
    "pages",
    "digest_entries",
    "containments",
    "containment_approval",
    "containment_automatic",
    "closed",
    "ignored",
    "suppressed",
    "errors",
    "skipped",
)


@dataclass(frozen=True)
class Threshold:
    """``METRIC>N`` or ``METRIC>N%``: compared with a base policy, the increase (in alerts,
    or in per cent of the base's figure); alone, the figure (or its per cent of the alerts).
    ``skipped`` (inputs not replayed) is always the figure itself."""

    metric: str
    limit: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> Threshold:
        found = _THRESHOLD.match(text)
        if found is None:
            raise ValueError(
                f"--fail-on {text!r}: expected METRIC>N or METRIC>N% (e.g. tickets>10%, "
                "containments>0)"
            )
        metric, number, percent = found.groups()
        if metric not in THRESHOLD_METRICS:
            raise ValueError(
                f"--fail-on {text!r}: unknown metric {metric!r}; known: "
                + ", ".join(THRESHOLD_METRICS)
            )
        return cls(metric=metric, limit=float(number), percent=bool(percent))

    def __str__(self) -> str:
        return f"{self.metric}>{self.limit:g}{'%' if self.percent else ''}"

    def _shown(self, value: float, alerts: float) -> float:
        """The figure compared with the limit: ``value`` itself, or its per cent of ``alerts``."""
        return value if not self.percent else (100 * value / alerts if alerts else 0.0)

    def breached(self, report: Report, comparison: Comparison | None) -> str | None:
        """Why the threshold is crossed, or None."""
        if self.metric == "changed":
            if comparison is None:  # the command line refuses this without a base
                return None
            value = float(comparison.changed)
            base = float(comparison.base.totals.alerts)
            shown = self._shown(value, base)
            if shown > self.limit:
                return f"{self}: {comparison.changed} alert(s) treated differently"
            return None
        if comparison is None or self.metric == "skipped":  # inputs: the same for both
            value = figures(report)[self.metric]
            alerts = report.totals.alerts
            shown = self._shown(value, alerts)
            if shown > self.limit:
                unit = f" ({shown:.1f}% of {alerts} alerts)" if self.percent else ""
                return f"{self}: {value:g}{unit}"
            return None
        before, after = comparison.totals[self.metric]
        increase = after - before
        if self.percent:
            shown = 100 * increase / before if before else (math.inf if increase > 0 else 0.0)
        else:
            shown = increase
        if shown > self.limit:
            percent = f", {shown:+.1f}%" if self.percent and math.isfinite(shown) else ""
            return f"{self}: {before:g} -> {after:g} ({increase:+g}{percent})"
        return None
