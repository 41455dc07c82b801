"""The alerts a replay reads: files and folders of alerts, parsed, and the inputs skipped."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from riposte.alerts.documents import read_documents
from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert
from riposte.alerts.sources import iter_alert_payloads, parse_alert


class Skipped(BaseModel):
    """An input that was not replayed, and why."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class Loaded:
    alerts: list[Alert] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def alert_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and the ``.json``/``.ndjson``/``.jsonl`` files of the folders named
    (recursively, in name order; dot files and folders left out)."""
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in {".json", ".ndjson", ".jsonl"}
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            yield from found
        else:
            yield path


def load_alerts(paths: Iterable[Path], source: str | None = None) -> Loaded:
    """Every alert of the files and folders named; an unreadable file or an alert that cannot
    be parsed is skipped with one line naming it and the problem, and the rest are kept."""
    loaded = Loaded()
    for path in alert_files(paths):
        try:
            documents = list(
                read_documents(
                    path,
                    on_bad_line=lambda exc, path=path: loaded.skipped.append(  # type: ignore[misc]
                        Skipped(where=str(path), problem=str(exc))
                    ),
                )
            )
        except AlertParseError as exc:
            loaded.skipped.append(Skipped(where=str(path), problem=str(exc)))
            continue
        index = 0
        for document in documents:
            bad: list[AlertParseError] = []
            try:
                payloads = list(iter_alert_payloads(document, on_bad_item=bad.append))
            except AlertParseError as exc:
                loaded.skipped.append(Skipped(where=str(path), problem=str(exc)))
                continue
            loaded.skipped.extend(Skipped(where=str(path), problem=str(exc)) for exc in bad)
            for payload in payloads:
                try:
                    loaded.alerts.append(parse_alert(payload, source))
                except AlertParseError as exc:
                    loaded.skipped.append(
                        Skipped(where=f"{path}: alert [{index}]", problem=str(exc))
                    )
                index += 1
    return loaded
