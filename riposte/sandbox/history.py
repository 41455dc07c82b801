"""A history of past alerts of all four sources, for replays, their benchmark and tests.

Every sample alert of the sandbox (`riposte.sandbox.samples`) again and again, a step apart,
each copy with its own id (and, every few copies, its own incident), in the payload shapes the
vendors send, so that a replay meets throttles, incident grouping, suppression and digests as a
week of a real tenant would.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from riposte.sandbox.samples import sample_alerts_by_source

INCIDENT_GROUP = 5
"""Copies of one sample that share an incident."""


def _renamed(source: str, payload: dict[str, Any], copy_no: int) -> dict[str, Any]:
    alert = copy.deepcopy(payload)
    suffix = f"h{copy_no:06d}"
    group = copy_no // INCIDENT_GROUP
    if source == "graph":
        alert["id"] = alert["providerAlertId"] = f"{alert['id']}-{suffix}"
        if alert.get("incidentId"):
            alert["incidentId"] = str(5_000_000 + group)
            alert["incidentWebUrl"] = None
    elif source == "defender_endpoint":
        alert["id"] = f"{alert['id']}-{suffix}"
        if alert.get("incidentId") is not None:
            alert["incidentId"] = 6_000_000 + group
    elif source == "cloud_apps":
        alert["_id"] = f"{int(alert['_id'], 16) + copy_no * 0x100:024x}"
        alert["idValue"] = int(alert["idValue"]) + copy_no * 100
    elif source == "defender_cloud":
        name = f"{alert['name']}-{suffix}"
        alert["id"] = alert["id"].rsplit("/", 1)[0] + "/" + name
        alert["name"] = name
        alert["properties"]["systemAlertId"] = name
    return alert


def history(total: int, end: datetime, days: float = 7.0) -> dict[str, list[dict[str, Any]]]:
    """About ``total`` alerts by source, spread evenly over the ``days`` before ``end``."""
    per_round = sum(len(v) for v in sample_alerts_by_source(end).values())
    rounds = max(1, -(-total // per_round))
    step = timedelta(days=days) / rounds
    out: dict[str, list[dict[str, Any]]] = {}
    made = 0
    for copy_no in range(rounds):
        at = end - timedelta(days=days) + step * copy_no
        for source, payloads in sample_alerts_by_source(at).items():
            for payload in payloads:
                if made >= total:
                    return out
                out.setdefault(source, []).append(_renamed(source, payload, copy_no))
                made += 1
    return out
