"""Plugins: packages and modules that add models and datasets to the harness, with no fork.

Both ways in register with the decorators our own models and datasets use
(``bench.models.register_model``, ``bench.data.register``):

- an installed package's entry points in the groups ``gradattn_bench.models`` and
  ``gradattn_bench.datasets`` (found with no option, like pytest's ``pytest11``);
- ``--plugin MODULE`` on ``bench run`` / ``bench study`` (``plugins=[...]`` in the Python API), or
  ``plugins = [...]`` in a study file, with the folders of images a study file names.

What a command adds is one picklable ``PluginSet`` (``active()``), which the command hands to every
worker in its context (bench.execution.backends.Context); the worker calls ``use_set`` before its first
run. A process imports its plugins the first time it looks a model or dataset up (the registries'
loader), so before any run spec is resolved.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.core.errors import BenchError

ENTRY_POINT_GROUPS = ("gradattn_bench.models", "gradattn_bench.datasets")


@dataclass(frozen=True)
class PluginSet:
    """Modules to import (and the folders they are found in), and named folders of images."""

    modules: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    folders: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # (name, sorted settings) per folder

    def merged(self, other: "PluginSet") -> "PluginSet":
        return PluginSet(
            tuple(dict.fromkeys([*self.modules, *other.modules])),
            tuple(dict.fromkeys([*self.paths, *other.paths])),
            tuple((dict(self.folders) | dict(other.folders)).items()),
        )

    def folder_settings(self) -> dict[str, dict[str, Any]]:
        return {name: dict(settings) for name, settings in self.folders}


_active = PluginSet()
_imported: set[str] = set()  # what this process has imported already (load is called repeatedly)
_folder_registrar: list[Callable[[str, dict[str, Any]], None]] = []  # set by bench.data


def active() -> PluginSet:
    """What this process uses: the set to hand to workers."""
    return _active


def use(modules: Iterable[str] = (), base: Path | None = None, folders: dict[str, dict[str, Any]] | None = None) -> None:
    """Add plugin modules and folder datasets for this process (and, through ``active()``, its workers).

    ``base`` is the folder a module name may be found in (the working directory for ``--plugin``,
    the study file's folder for its ``plugins``). Imports at once: a broken plugin stops the
    command before any run starts.
    """
    base = Path(base or Path.cwd())
    named = [m.strip() for m in modules if m.strip()]
    files = [base / m for m in named if m.endswith(".py")]  # a file: its folder is where its module is found
    for file in files:
        if not file.is_file():
            raise BenchError(f"The plugin file {file} does not exist; pass a module name or the path of a .py file.")
    modules = tuple(Path(m).stem if m.endswith(".py") else m for m in named)
    folders_searched = [str(file.parent.resolve()) for file in files] + ([str(base.resolve())] if len(files) < len(named) else [])
    added = PluginSet(
        modules,
        tuple(dict.fromkeys(folders_searched)),
        tuple((name, tuple(sorted(settings.items()))) for name, settings in (folders or {}).items()),
    )
    use_set(added)


def use_set(plugins: PluginSet) -> None:
    """Use ``plugins`` beside what this process uses already, and import them now."""
    global _active
    _active = _active.merged(plugins)
    load()


@contextlib.contextmanager
def isolated():
    """Plugins used inside the block are forgotten after it, their modules too, so a later use
    imports (and registers) them afresh; pair it with ``models.isolated()`` and ``data.isolated()``."""
    global _active
    active, imported = _active, set(_imported)
    try:
        yield
    finally:
        for name in _active.modules:
            if name not in active.modules:
                sys.modules.pop(name, None)
        _active = active
        _imported.intersection_update(imported)


def on_folder(registrar: Callable[[str, dict[str, Any]], None]) -> None:
    """How named folders become datasets (bench.data registers its ImageFolder here)."""
    _folder_registrar[:] = [registrar]


def load() -> None:
    """Import every entry-point plugin and every named module not imported in this process yet."""
    for folder in _active.paths:
        if folder not in sys.path:
            sys.path.append(folder)
    for group in ENTRY_POINT_GROUPS:
        for point in entry_points(group=group):
            _import(f"entry point {point.name!r} ({group}, {point.value})", point.value, point.load)
    for module in _active.modules:
        _import(f"plugin module {module!r}", module, lambda module=module: importlib.import_module(module))
    for name, settings in _active.folder_settings().items():
        if f"folder {name}" not in _imported and _folder_registrar:
            _imported.add(f"folder {name}")
            _folder_registrar[0](name, settings)


def _import(what: str, key: str, importer) -> None:
    if key in _imported:
        return
    _imported.add(key)  # once, even when it fails: the error is reported where it happened
    try:
        importer()
    except BenchError as error:  # a clash or a builder with the wrong signature, said by the registry
        raise BenchError(f"The {what} cannot be used: {str(error).rstrip('.')}.") from None
    except Exception as error:
        raise BenchError(
            f"The {what} failed to import ({error.__class__.__name__}: {error}); fix it, or drop it "
            "from --plugin / the study file (an installed package: pip uninstall it)."
        ) from None


def from_study_file(raw: dict[str, Any], path: Path) -> None:
    """A study file's ``plugins = [...]`` (found beside the file too) and ``[datasets.NAME]`` folders."""
    modules = raw.get("plugins", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise BenchError(f"Study file {path}: plugins must be a list of module names, got {modules!r}.")
    folders = raw.get("datasets", {})
    if not isinstance(folders, dict) or not all(isinstance(v, dict) and "root" in v for v in folders.values()):
        raise BenchError(f"Study file {path}: each [datasets.NAME] table needs a root folder of class folders.")
    # Roots relative to the study file, made absolute so workers elsewhere find them.
    resolved = {name: settings | {"root": str((path.parent / settings["root"]).expanduser().resolve())} for name, settings in folders.items()}
    use(modules, base=path.parent, folders=resolved)
