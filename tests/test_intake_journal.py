"""The intake's journal: what survives an intake killed after its 202, a full disk, a torn write,
and a crash between planning runs and creating them. Real files, a real intake process, real
SIGKILL, the real Prefect server of the session."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from riposte.alerts.response import AlertRef
from riposte.alerts.run_plan import plan_runs
from riposte.deployments.journal import Journal, JournalInUse, JournalUnavailable
from riposte.sandbox.samples import sample_graph_alerts
from tests.conftest import INTAKE_TOKEN, wait_until
from tests.servers import free_port
from tests.test_intake import runs_named

AUTH = {"Authorization": f"Bearer {INTAKE_TOKEN}"}


def _ref(n: int) -> AlertRef:
    return AlertRef(source="graph", alert_id=f"j-{n}", revision="high")


def _alert(alert_id: str) -> dict[str, Any]:
    alert = sample_graph_alerts(datetime.now(UTC))[0]
    alert["id"] = alert_id
    return alert


def test_entries_survive_a_reopen_and_forwarded_ones_are_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path, 1 << 20)
        numbers = await asyncio.gather(*(journal.append([_ref(n)]) for n in range(5)))
        assert numbers == [1, 2, 3, 4, 5] and journal.backlog == 5
        journal.done(3)
        journal.close()
        again = Journal(tmp_path, 1 << 20)
        assert [e.refs[0].alert_id for e in again.pending(100)] == ["j-3", "j-4"]
        assert await again.append([_ref(9)]) == 6
        again.done(6)
        assert again.backlog == 0
        assert not list(tmp_path.glob("journal-*.jsonl")), "forwarded files are deleted"
        again.close()

    asyncio.run(scenario())


def test_a_write_cut_short_by_a_crash_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    """The fsync comes before the 202: a line without its end was never acknowledged."""

    async def write() -> None:
        journal = Journal(tmp_path, 1 << 20)
        await journal.append([_ref(1)])
        journal.close()

    asyncio.run(write())
    (segment,) = tmp_path.glob("journal-*.jsonl")
    with segment.open("ab") as file:
        file.write(b'{"n": 2, "refs": [{"source": "gra')
    journal = Journal(tmp_path, 1 << 20)
    assert [e.number for e in journal.pending(100)] == [1]
    assert segment.read_bytes().endswith(b"\n"), "the torn tail is cut off"
    journal.close()


def test_a_second_process_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1 << 20)
    with pytest.raises(JournalInUse, match="RIPOSTE_INTAKE_JOURNAL"):
        Journal(tmp_path, 1 << 20)
    journal.close()


def test_over_its_bound_the_journal_refuses_and_keeps_nothing_of_the_refused(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path, 300)
        await journal.append([_ref(1)])
        with pytest.raises(JournalUnavailable, match="bound"):
            await journal.append([_ref(n) for n in range(2, 10)])
        assert journal.backlog == 1
        journal.close()

    asyncio.run(scenario())


def test_runs_planned_before_a_crash_are_asked_for_again_identically(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path, 1 << 20)
        for n in range(30):
            await journal.append([_ref(n)])
        runs = plan_runs([r for e in journal.pending(1000) for r in e.refs], single_limit=4)
        journal.plan(30, runs)
        journal.close()  # the crash: planned, not created
        again = Journal(tmp_path, 1 << 20)
        assert again.planned_through == 30 and again.forwarded == 0
        assert [r.idempotency_key for r in again.planned] == [r.idempotency_key for r in runs]
        again.close()

    asyncio.run(scenario())


def test_a_full_disk_is_a_503_and_every_202_survives_a_restart(tmp_path: Path) -> None:
    """The intake may write files of 1,500 bytes at most (RLIMIT_FSIZE: the kernel refuses the
    rest of a write, mid-line, as on a full disk). A post that meets the limit gets 503 with
    Retry-After, and its half line is cut off; killed and restarted, the intake holds exactly
    the alerts it answered 202, none it refused, and takes alerts again once there is room."""
    journal = tmp_path / "journal"
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}/api"
    limited = _intake(port, journal, dead, file_size_limit=1500)
    answers: dict[str, int] = {}
    try:
        for n in range(40):
            alert_id = f"full-{n}"
            r = httpx.post(
                f"http://127.0.0.1:{port}/alerts/graph",
                json=_alert(alert_id),
                headers=AUTH,
                timeout=60,
            )
            answers[alert_id] = r.status_code
            if r.status_code == 503:
                assert int(r.headers["Retry-After"]) > 0
                assert "retry later" in r.json()["detail"]
    finally:
        limited.send_signal(signal.SIGKILL)
        limited.wait(30)
    refused = [a for a, code in answers.items() if code == 503]
    accepted = [a for a, code in answers.items() if code == 202]
    assert refused and accepted and len(refused) + len(accepted) == 40, answers
    # Room again (restarted without the limit): alerts are taken, after the ones kept.
    unlimited = _intake(port, journal, dead)
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/alerts/graph",
            json=_alert("full-after"),
            headers=AUTH,
            timeout=60,
        )
        assert r.status_code == 202, r.text
    finally:
        unlimited.send_signal(signal.SIGKILL)
        unlimited.wait(30)
    accepted.append("full-after")

    async def read_back() -> list[str]:
        again = Journal(journal, 1 << 20)
        try:
            return [r.alert_id for e in again.pending(1000) for r in e.refs]
        finally:
            again.close()

    assert asyncio.run(read_back()) == accepted


def _intake(
    port: int, journal: Path, prefect_api: str, file_size_limit: int | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RIPOSTE_INTAKE_PORT": str(port),
        "RIPOSTE_INTAKE_TOKENS": INTAKE_TOKEN,
        "RIPOSTE_INTAKE_JOURNAL": str(journal),
        "PREFECT_API_URL": prefect_api,
    }

    def limit() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "riposte.deployments.intake"], env=env, preexec_fn=limit
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=60, what="the intake process to listen")
    return proc


@pytest.mark.usefixtures("served_flows")
def test_alerts_acknowledged_just_before_a_sigkill_are_answered_after_the_restart(
    prefect_server: str, sandbox: httpx.Client, tmp_path: Path
) -> None:
    """The intake cannot reach Prefect, acknowledges three alerts (one of them twice) and is
    SIGKILLed; restarted on the same journal with Prefect reachable, it starts their responses,
    one each."""
    ids = [f"killed-{free_port()}-{n}" for n in range(3)]
    sandbox.post("/_sandbox/graph/alerts", json=[_alert(i) for i in ids]).raise_for_status()
    journal = tmp_path / "journal"
    port = free_port()
    first = _intake(port, journal, f"http://127.0.0.1:{free_port()}/api")
    try:
        for alert_id in [*ids, ids[0]]:
            r = httpx.post(
                f"http://127.0.0.1:{port}/alerts/graph",
                json=_alert(alert_id),
                headers=AUTH,
                timeout=60,
            )
            assert r.status_code == 202 and r.json()["accepted"][0]["status"] == "queued", r.text
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    second = _intake(port, journal, prefect_server)
    try:

        def answered() -> bool:
            incidents = sandbox.get("/_sandbox/servicenow/incidents").json()
            found = {i for i in ids for inc in incidents if i in inc["record"]["correlation_id"]}
            return found == set(ids)

        wait_until(answered, timeout=120, what="tickets of the alerts acknowledged before the kill")
    finally:
        second.terminate()
        second.wait(30)
    assert [runs_named(f"graph-{i}") for i in ids] == [1, 1, 1]


def test_a_line_left_by_a_failed_write_does_not_hide_the_entries_after_it(tmp_path: Path) -> None:
    """A failed write that could not be cut back leaves half a line (and its entry number) in a
    file; the entries written after it, acknowledged, are all read back, a reused number from
    the later write."""
    first = tmp_path / "journal-000000000001-1.jsonl"
    later = tmp_path / "journal-000000000001-2.jsonl"
    good = json.dumps({"n": 1, "refs": [_ref(1).model_dump()]})
    first.write_text(good[:30] + json.dumps({"n": 1, "refs": [_ref(7).model_dump()]}) + "\n")
    later.write_text(
        json.dumps({"n": 1, "refs": [_ref(2).model_dump()]})
        + "\n"
        + json.dumps({"n": 2, "refs": [_ref(3).model_dump()]})
        + "\n"
    )
    journal = Journal(tmp_path, 1 << 20)
    assert [(e.number, e.refs[0].alert_id) for e in journal.pending(100)] == [
        (1, "j-2"),
        (2, "j-3"),
    ]
    journal.close()
