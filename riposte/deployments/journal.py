"""The intake's journal: alerts made durable on the intake's own disk before the sender hears 202.

A sender's alerts are one line of an append-only file, written and fsynced before the intake
answers; the forwarder (`riposte.deployments.intake.Forwarder`) then turns the lines into Prefect
runs at Prefect's pace. So a storm is answered at the speed of a local fsync, and an alert is lost
only with the intake's disk.

The files, in the intake's own folder (`RIPOSTE_INTAKE_JOURNAL`, one per intake: a second process
on the same folder refuses to start):

- `journal-<first entry>-<ns>.jsonl`: entries `{"n": <number>, "refs": [<AlertRef>...]}`, one
  per line, numbered in order, written unbuffered. A line cut short by a crash was never
  acknowledged (the fsync comes before the 202): it is dropped when the journal is opened. A
  write that failed (a full disk) is cut back; if even that fails, the file is never written to
  again, and its unreadable line is skipped when the journal is read.
- `forwarded.json`: the number of the last entry whose runs exist in Prefect, and the runs being
  created for the entries after it (written before they are created). After a crash the same
  runs are asked for again with the same idempotency keys, so Prefect hands back those that
  exist: an alert is never answered by two runs because its entries were regrouped.

Files whose entries were all forwarded are deleted. Nothing else is kept: the runs, their states
and their history are Prefect's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from riposte.alerts.response import AlertRef
from riposte.alerts.run_plan import RunRequest

logger = logging.getLogger("riposte.intake")

SEGMENT_BYTES = 8 * 1024 * 1024
_SEGMENT_PREFIX = "journal-"
_STATE_FILE = "forwarded.json"


class JournalUnavailable(Exception):
    """The journal cannot take these alerts now (disk full, over its size bound, unwritable):
    the sender must be refused, never answered 202."""


class JournalInUse(RuntimeError):
    """Another process holds this journal folder."""


@dataclass(frozen=True)
class Entry:
    number: int
    refs: list[AlertRef]
    size: int
    written_at: float


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_first(path: Path) -> int:
    """The number of a file's first entry: `journal-<first>-<nanoseconds>.jsonl`."""
    return int(path.stem.removeprefix(_SEGMENT_PREFIX).split("-")[0])


def _segment_order(path: Path) -> tuple[int, str]:
    return _segment_first(path), path.name


class Journal:
    """The append-only journal of one intake. `append` is called from the event loop; the disk
    work runs in a thread, and the appends that arrive while one fsync runs share the next."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise JournalInUse(
                f"the intake journal {folder} is in use by another process: give each intake "
                "its own folder (RIPOSTE_INTAKE_JOURNAL)"
            ) from None
        self.forwarded, self.planned_through, self.planned = self._read_state()
        self._pending: list[Entry] = []
        self._pending_bytes = 0
        self._next = self.forwarded + 1
        self._by_number: dict[int, Entry] = {}
        for path in self._segments():
            self._load(path)
        self._pending = [self._by_number[n] for n in sorted(self._by_number)]
        self._pending_alerts = sum(len(e.refs) for e in self._pending)
        del self._by_number
        self._segment: Path | None = None
        self._fd: int | None = None
        self._queue: list[tuple[list[AlertRef], bytes, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.new_entries = asyncio.Event()
        if self._pending:
            self.new_entries.set()

    # -- opening -----------------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"{_SEGMENT_PREFIX}*.jsonl"), key=_segment_order)

    def _read_state(self) -> tuple[int, int, list[RunRequest]]:
        try:
            state = json.loads((self.folder / _STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0, 0, []
        through = int(state["through"])
        runs = [RunRequest.model_validate(r) for r in state["runs"]]
        return through, int(state.get("planned_through", through)), runs

    def _load(self, path: Path) -> None:
        if not path.is_file():  # not a regular file (a device, a dangling link): nothing to read
            return
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            # Cut short by a crash before its fsync: never acknowledged.
            with open(path, "r+b") as file:
                file.truncate(len(data) - len(lines[-1]))
                os.fsync(file.fileno())
            lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
                entry = Entry(
                    int(record["n"]),
                    [AlertRef.model_validate(r) for r in record["refs"]],
                    len(line),
                    time.time(),
                )
            except (ValueError, KeyError, TypeError):
                # Never acknowledged (a write that failed and could not be cut back): the
                # entries after it may have been, so they are read on.
                logger.error("Intake journal %s: an unreadable line, skipped", path)
                continue
            self._next = max(self._next, entry.number + 1)
            if entry.number > self.forwarded:
                # A number seen in an earlier file belonged to a write answered 503 whose
                # lines survived: the later file's entry is the one acknowledged.
                earlier = self._by_number.pop(entry.number, None)
                if earlier is not None:
                    self._pending_bytes -= earlier.size
                self._by_number[entry.number] = entry
                self._pending_bytes += entry.size

    # -- appending ---------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Alerts written and not yet in Prefect runs."""
        return self._pending_alerts

    @property
    def oldest(self) -> float | None:
        """When the oldest entry not yet forwarded was written (or read back at start)."""
        return self._pending[0].written_at if self._pending else None

    async def append(self, refs: list[AlertRef]) -> int:
        """Write ``refs`` as one entry and return its number once it is on disk (fsynced).
        Raises `JournalUnavailable` when it cannot be, and then nothing of it stays."""
        line = json.dumps([r.model_dump() for r in refs]).encode()
        if self._pending_bytes + len(line) > self.max_bytes:
            raise JournalUnavailable(
                f"the journal holds {self._pending_bytes // 1024} KiB not yet handed to Prefect, "
                f"its bound is {self.max_bytes // 1024} KiB"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((refs, line, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued())
        return await future

    async def _write_queued(self) -> None:
        batch: list[tuple[list[AlertRef], bytes, asyncio.Future[int]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                first = self._next
                lines = [
                    b'{"n": %d, "refs": %s}\n' % (first + i, refs_json)
                    for i, (_, refs_json, _) in enumerate(batch)
                ]
                try:
                    await asyncio.to_thread(self._write, first, lines)
                except OSError as exc:
                    self._fail(
                        batch,
                        JournalUnavailable(
                            f"cannot write the journal: {exc.strerror or type(exc).__name__}"
                        ),
                    )
                    continue
                self._next = first + len(lines)
                now = time.time()
                for i, (refs, _, future) in enumerate(batch):
                    self._pending.append(Entry(first + i, refs, len(lines[i]), now))
                    self._pending_bytes += len(lines[i])
                    self._pending_alerts += len(refs)
                    if not future.done():
                        future.set_result(first + i)
                self.new_entries.set()
                batch = []
        except BaseException:
            # Never leave a sender waiting: what was not written is refused.
            failure = JournalUnavailable("the journal stopped")
            self._fail(batch, failure)
            self._fail(self._queue, failure)
            self._queue = []
            raise
        finally:
            self._writer = None

    @staticmethod
    def _fail(
        batch: list[tuple[list[AlertRef], bytes, asyncio.Future[int]]], failure: Exception
    ) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(failure)

    def _write(self, first: int, lines: list[bytes]) -> None:
        """Append ``lines`` and fsync, unbuffered; on failure, cut the file back to where it
        was (which needs no free space), or, if even that fails, never write to it again."""
        if self._fd is None or os.fstat(self._fd).st_size >= SEGMENT_BYTES:
            self._open_segment(first)
        fd = self._fd
        assert fd is not None
        start = os.fstat(fd).st_size
        try:
            data = memoryview(b"".join(lines))
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError:
                self._close_segment()  # the next write starts a file of its own
            raise

    def _open_segment(self, first: int) -> None:
        self._close_segment()
        # A name of its own even for the same first entry: a file left with a failed write's
        # lines is never appended to again.
        path = self.folder / f"{_SEGMENT_PREFIX}{first:012d}-{time.time_ns()}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._segment = path
        _fsync_folder(self.folder)  # the new file's name is durable too

    def _close_segment(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._segment = None

    # -- forwarding --------------------------------------------------------------------------

    def pending(self, limit: int) -> list[Entry]:
        """The oldest entries not yet forwarded, holding at most ``limit`` alerts (at least one
        entry)."""
        taken: list[Entry] = []
        count = 0
        for entry in self._pending:
            if taken and count + len(entry.refs) > limit:
                break
            taken.append(entry)
            count += len(entry.refs)
        return taken

    def plan(self, through: int, runs: list[RunRequest]) -> None:
        """Record, before they are created, the runs that answer the entries up to ``through``:
        after a crash they are asked for again, identical."""
        self._write_state(self.forwarded, through, runs)
        self.planned_through, self.planned = through, runs

    def done(self, through: int) -> None:
        """The runs of every entry up to ``through`` exist in Prefect: forget those entries."""
        self._write_state(through, through, [])
        self.forwarded, self.planned_through, self.planned = through, through, []
        done = [e for e in self._pending if e.number <= through]
        self._pending_bytes -= sum(e.size for e in done)
        self._pending_alerts -= sum(len(e.refs) for e in done)
        self._pending = [e for e in self._pending if e.number > through]
        self._drop_forwarded_segments()

    def _write_state(self, through: int, planned_through: int, runs: list[RunRequest]) -> None:
        state = {
            "through": through,
            "planned_through": planned_through,
            "runs": [r.model_dump() for r in runs],
        }
        tmp = self.folder / f"{_STATE_FILE}.tmp"
        with open(tmp, "wb") as file:
            file.write(json.dumps(state).encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.folder / _STATE_FILE)
        _fsync_folder(self.folder)

    def _drop_forwarded_segments(self) -> None:
        """Delete the files whose entries were all forwarded. The file a write may be running
        on (the last one, while the writer runs) is left alone."""
        segments = self._segments()
        writing = self._writer is not None
        for index, path in enumerate(segments):
            last = index == len(segments) - 1
            if last and writing:
                break
            end = self._next - 1 if last else _segment_first(segments[index + 1]) - 1
            if end > self.forwarded:
                break
            if path == self._segment:
                self._close_segment()
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_segment()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
