"""The scale test's PostgreSQL: installed from Debian when absent, a throwaway cluster of its own.

initdb in a temporary folder and pg_ctl, no system service; and asyncpg, Prefect's driver for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale.processes import ScaleTestError, apt_install, pip_install, say


def postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def ensure_postgres_installed() -> Path:
    """PostgreSQL's binaries, installed from the Debian archive first when absent."""
    found = postgres_bin()
    if found is not None:
        return found
    apt_install("postgresql", 900)
    found = postgres_bin()
    if found is None:
        raise ScaleTestError("apt-get installed postgresql but no pg_ctl under /usr/lib/postgresql")
    return found


@dataclass
class Postgres:
    """A throwaway cluster of our own: own folder, own port, trust auth on loopback only."""

    bindir: Path
    port: int
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="riposte-pg-")))
    started: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://riposte@127.0.0.1:{self.port}/prefect"

    def _run(self, argv: list[str], timeout: float) -> None:
        # initdb and postgres refuse to run as root: run them as the `postgres` user then.
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=self.folder, **as_user
        )
        if done.returncode != 0:
            raise ScaleTestError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-800:]}")

    def start(self) -> None:
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ScaleTestError("no `postgres` user to run PostgreSQL as") from None
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "riposte",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            120,
        )
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.folder}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=200",
                # A test database: durability is not what is measured.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            90,
        )
        self.started = True
        self._run(
            [
                str(self.bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "riposte",
                "prefect",
            ],
            60,
        )

    def stop(self) -> None:
        if self.started:
            try:
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w"]
                    + ["-t", "30", "stop"],
                    45,
                )
            except (ScaleTestError, subprocess.TimeoutExpired) as exc:
                say(f"pg_ctl stop: {exc}; killing the postmaster")
                with contextlib.suppress(OSError, ValueError):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)


def ensure_asyncpg() -> str:
    """Prefect talks to PostgreSQL through asyncpg: install it only if Prefect came without."""
    if importlib.util.find_spec("asyncpg") is not None:
        return "asyncpg: present"
    pip_install("asyncpg")
    return "asyncpg: installed"
