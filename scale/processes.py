"""The scale test's process supervisor: starting, freezing, killing and sweeping up processes.

Each part runs in a session of its own with its log in the state folder; this process becomes
the subreaper of whatever they start, so that nothing outlives the test. Also the bounded waits
and the error every part of the test raises (`ScaleTestError`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parent.parent


class ScaleTestError(RuntimeError):
    """A part did not start or finish in its bounded time; the message says which and where."""


def say(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise ScaleTestError(f"{what}: not done in {timeout:.0f}s")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def apt_install(package: str, timeout: float) -> None:
    """Install a Debian package from the archive (as root), for a part the test needs."""
    if os.geteuid() != 0:
        raise ScaleTestError(f"{package} is not installed: apt-get install {package} (as root)")
    say(f"installing {package} (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv, limit in (
        (["apt-get", "update"], 300.0),
        (["apt-get", "install", "-y", "--no-install-recommends", package], timeout),
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=limit)
        if done.returncode != 0:
            raise ScaleTestError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")


def pip_install(*requirements: str) -> None:
    """Install Python packages the test needs into this interpreter's environment."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *requirements],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise ScaleTestError(f"pip install {requirements[0]} failed: {done.stderr.strip()[-500:]}")


def become_subreaper() -> None:
    """Orphans of our children (flow-run processes of a killed worker, the postmaster) become
    ours instead of init's, so that the final sweep finds and stops them."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and everything below it: its own, its finished children's (once
    reaped) and its live descendants'."""
    ticks = 0
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy since boot (every process, ours or not)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Processes:
    logs: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc = Proc(name, popen, log_path, log)
        self.started.append(proc)
        return proc

    def wait_http(self, proc: Proc, url: str, timeout: float) -> None:
        def up() -> bool:
            if not proc.alive():
                raise ScaleTestError(f"{proc.name} exited early; see {proc.log_path}")
            return answers(url)

        wait_until(f"{proc.name} at {url} (log {proc.log_path})", up, timeout)

    def freeze_tree(self, proc: Proc) -> list[int]:
        """SIGSTOP ``proc`` (first, so that it starts nothing new) and every process it started:
        nothing of it moves any more, so what it had in flight can be read exactly."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.popen.pid, signal.SIGSTOP)
        tree = descendants(proc.popen.pid)
        signal_all(tree, signal.SIGSTOP)
        return tree

    def kill_frozen(self, proc: Proc, tree: list[int]) -> None:
        """SIGKILL a frozen worker and its flow-run processes, as a lost machine would."""
        signal_all([proc.popen.pid, *tree], signal.SIGKILL)
        proc.popen.wait(timeout=10)
        reap(tree)

    def stop(self, proc: Proc, grace: float = 15) -> None:
        tree = descendants(proc.popen.pid) if proc.alive() else []
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        signal_all(tree, signal.SIGKILL)
        proc.log.close()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                say(f"stopping {proc.name}: {exc}")
        self.started.clear()


def reap(pids: list[int], timeout: float = 10) -> None:
    """Collect the exit of killed orphans (ours, as subreaper), so they leave no zombies."""
    deadline = time.monotonic() + timeout
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (still the worker's child) or already reaped
                waiting.discard(pid)
                continue
            if done:
                waiting.discard(pid)
        time.sleep(0.1)


def sweep_leftovers() -> None:
    """Whatever is still running below us (orphans adopted as subreaper): TERM, then KILL."""
    left = descendants(os.getpid())
    if not left:
        return
    say(f"stopping {len(left)} leftover process(es)")
    signal_all(left, signal.SIGTERM)
    reap(left, timeout=10)
    signal_all(descendants(os.getpid()), signal.SIGKILL)
    reap(left, timeout=5)
