"""Plugins: packages and modules that add models and datasets to the harness, with no fork.

Both ways in register with the decorators our own models and datasets use
(``bench.models.register_model``, ``bench.data.register``):

- an installed package's entry points in the groups ``gradattn_bench.models`` and
  ``gradattn_bench.datasets`` (found with no option, like pytest's ``pytest11``);
- ``--plugin MODULE`` on ``bench run`` / ``bench study``, or ``plugins = [...]`` in a study file.

Modules named by option, and the folders of images a study file names, reach every worker process
through the environment (``$BENCH_PLUGINS``, ``$BENCH_PLUGIN_PATH``, ``$BENCH_FOLDER_DATASETS``):
local workers inherit it, Ray tasks receive the ``BENCH_`` variables from their parent, Slurm jobs
get sbatch's exported environment. A process imports its plugins the first time it looks a model or
dataset up (the registries' loader), so before any run spec is resolved.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterable

from bench.core.errors import BenchError

ENTRY_POINT_GROUPS = ("gradattn_bench.models", "gradattn_bench.datasets")
ENV_MODULES = "BENCH_PLUGINS"  # comma list of module names
ENV_PATH = "BENCH_PLUGIN_PATH"  # folders (os.pathsep) the modules are imported from
ENV_FOLDERS = "BENCH_FOLDER_DATASETS"  # JSON: name -> ImageFolder settings from a study file

_imported: set[str] = set()  # what this process has imported already (load is called repeatedly)


def use(modules: Iterable[str] = (), base: Path | None = None, folders: dict[str, dict[str, Any]] | None = None) -> None:
    """Add plugin modules and folder datasets for this command and every worker it starts.

    ``base`` is the folder a module name may be found in (the working directory for ``--plugin``,
    the study file's folder for its ``plugins``). Imports at once: a broken plugin stops the
    command before any run starts.
    """
    modules = [m.strip() for m in modules if m.strip()]
    if modules:
        os.environ[ENV_MODULES] = ",".join(dict.fromkeys([*_env_list(ENV_MODULES, ","), *modules]))
        folder = str(Path(base or Path.cwd()).resolve())
        os.environ[ENV_PATH] = os.pathsep.join(dict.fromkeys([*_env_list(ENV_PATH, os.pathsep), folder]))
    if folders:
        os.environ[ENV_FOLDERS] = json.dumps(_env_folders() | folders)
    load()


def load() -> None:
    """Import every entry-point plugin and every named module not imported in this process yet."""
    for folder in _env_list(ENV_PATH, os.pathsep):
        if folder not in sys.path:
            sys.path.append(folder)
    for group in ENTRY_POINT_GROUPS:
        for point in entry_points(group=group):
            _import(f"entry point {point.name!r} ({group}, {point.value})", point.value, point.load)
    for module in _env_list(ENV_MODULES, ","):
        _import(f"plugin module {module!r}", module, lambda module=module: importlib.import_module(module))
    if _env_folders():
        from bench.data import imagefolder

        for name, settings in _env_folders().items():
            if f"folder {name}" not in _imported:
                _imported.add(f"folder {name}")
                imagefolder.register_folder(name, **settings)


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


def _env_list(variable: str, separator: str) -> list[str]:
    return [part for part in os.environ.get(variable, "").split(separator) if part.strip()]


def _env_folders() -> dict[str, dict[str, Any]]:
    return json.loads(os.environ.get(ENV_FOLDERS) or "{}")


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
