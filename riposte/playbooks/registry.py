"""The registry: the built-in playbooks, and those ``RIPOSTE_PLAYBOOKS`` and installed packages
add, loaded once per process.

``RIPOSTE_PLAYBOOKS`` is a comma-separated list of importable modules (``acme.playbooks``), or
paths to ``.py`` files or folders (every ``.py`` in it whose name does not start with ``_`` or
``test_``). A package can also ship playbooks through the entry point group
``riposte.playbooks`` (an entry point names a module, or a playbook). Every module-level
`Playbook` of what is loaded is registered. A source that fails to import, or a playbook whose
name is taken, is reported (`LoadProblem`) and left out: the others keep working.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from riposte.alerts.policy import PlaybookCatalog, set_catalog_provider
from riposte.playbooks.api import Playbook
from riposte.playbooks.builtin import BUILTINS

ENTRY_POINT_GROUP = "riposte.playbooks"


@dataclass(frozen=True)
class LoadProblem:
    """A playbook source that could not be used, and why."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


class PlaybookLoadError(RuntimeError):
    """Playbooks that could not be loaded; ``problems`` says which and why."""

    def __init__(self, problems: list[LoadProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Registry:
    """Registered playbooks by name, and the problems met while loading them."""

    playbooks: dict[str, Playbook[Any]] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)

    def add(self, found: Playbook[Any], origin: str) -> None:
        held = self.playbooks.get(found.name)
        if held is found:
            return
        if held is not None:
            self.problems.append(
                LoadProblem(
                    origin,
                    f"playbook {found.name} ({found.where}) has the name of the playbook from "
                    f"{held.origin} ({held.where}); the first one is kept, rename this one",
                )
            )
            return
        found.origin = found.origin or origin
        self.playbooks[found.name] = found

    def get(self, name: str) -> Playbook[Any]:
        if name not in self.playbooks:
            known = ", ".join(sorted(self.playbooks))
            raise KeyError(f"unknown playbook {name!r}; known: {known}")
        return self.playbooks[name]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"does not import: it called sys.exit({exc.code!r})"
    if isinstance(exc, SyntaxError):
        return f"does not import: {exc.msg} at {exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename]
    where = f" ({ours[-1].filename}:{ours[-1].lineno})" if ours else ""
    return f"does not import: {type(exc).__name__}: {exc}{where}"


def _module_from_file(path: Path) -> ModuleType:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"riposte_user_playbooks.{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _playbooks_of(module: ModuleType) -> list[Playbook[Any]]:
    return [value for value in vars(module).values() if isinstance(value, Playbook)]


def _load_module(registry: Registry, origin: str, load: Any, *, helper_ok: bool = False) -> None:
    try:
        module = load()
    except (Exception, SystemExit) as exc:  # a module's sys.exit() must not end the worker
        registry.problems.append(LoadProblem(origin, _reason(exc)))
        return
    found = [module] if isinstance(module, Playbook) else None
    if found is None and isinstance(module, list | tuple):
        found = [p for p in module if isinstance(p, Playbook)]
    if found is None and isinstance(module, ModuleType):
        found = _playbooks_of(module)
    if not found:
        if not helper_ok:  # a folder's helper module (imported by its playbooks) is no problem
            registry.problems.append(LoadProblem(origin, "defines no playbook (`@playbook`)"))
        return
    for item in found:
        registry.add(item, origin)


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.glob("*.py")
            if not p.name.startswith("_") and not p.name.startswith("test_")
        )
    return [path]


def load_registry(spec: str | None = None, *, with_entry_points: bool = True) -> Registry:
    """Built-ins, then every source of ``spec`` (``RIPOSTE_PLAYBOOKS`` by default), then the
    entry points; problems are collected, not raised."""
    if spec is None:
        from riposte.settings import get_settings

        spec = get_settings().playbooks
    registry = Registry()
    for builtin in BUILTINS:
        registry.add(builtin, "built-in")
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        looks_like_path = item.endswith(".py") or os.sep in item or item.startswith(".")
        path = Path(item).expanduser()
        if looks_like_path or path.exists():
            if not path.exists():
                registry.problems.append(LoadProblem(item, "no such file or folder"))
                continue
            if path.is_dir() and str(path.resolve()) not in sys.path:
                # Helpers beside the playbooks import as top-level modules.
                sys.path.insert(0, str(path.resolve()))
            files = _files_of(path)
            if not files:
                registry.problems.append(LoadProblem(item, "folder holds no .py file"))
            for file in files:
                _load_module(
                    registry,
                    str(file),
                    lambda f=file: _module_from_file(f),
                    helper_ok=path.is_dir(),
                )
        else:
            _load_module(registry, item, lambda m=item: importlib.import_module(m))
    if with_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _load_module(registry, f"entry point {ep.name} ({ep.value})", ep.load)
    return registry


_lock = threading.Lock()
_registries: dict[str, Registry] = {}


def registry() -> Registry:
    """This process's registry, loaded on first use (again when ``RIPOSTE_PLAYBOOKS`` changes)."""
    from riposte.settings import get_settings

    spec = get_settings().playbooks
    with _lock:
        found = _registries.get(spec)
        if found is None:
            found = load_registry(spec)
            _registries[spec] = found
    return found


def catalog() -> PlaybookCatalog:
    return registry().playbooks


set_catalog_provider(catalog)
