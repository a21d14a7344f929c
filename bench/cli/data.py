"""``bench data``: which datasets are here, fetching them, and checking the files on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bench.cli._app import app, with_options
from bench.cli._app import console as make_console
from bench.config.options import Places

if TYPE_CHECKING:

    from rich.console import Console

    from bench.data import DataBundle, Dataset

data_app = typer.Typer(help="List, download and check the datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

NAMES_ARGUMENT = typer.Argument(..., help="A dataset, a comma list, or 'all'.")
SPLITS = ("train", "val", "test")


def _root(places: Places) -> Path:
    from bench import data

    return places.data_dir or data.default_data_dir()


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


@data_app.command("list")
@with_options(only=("data_dir",), places=Places)
def list_command(*, places: Places) -> None:
    """Each dataset: present or missing, samples per split, size on disk, classes; how to get the missing."""
    from rich.table import Table

    from bench import data
    from bench.core.errors import BenchError

    root = _root(places)
    table = Table(title=f"Datasets in {root}")
    table.add_column("dataset", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in (*SPLITS, "on disk", "classes"):
        table.add_column(column, justify="right", no_wrap=True)
    hints: list[str] = []
    for name in data.names():
        dataset = data.get(name)
        counts: dict[str, int] = {}
        try:
            if dataset.missing_files(root):
                status = "[red]missing[/]"
                hints.append(dataset.how_to_get(root))
            else:
                counts = dataset.sizes(root)
                status = "[green]present[/]"
        except BenchError as error:
            status = "[yellow]unreadable[/]"
            hints.append(str(error))
        size = dataset.disk_size(root) if counts else 0
        cells = [f"{counts[s]:,}" if s in counts else "-" for s in SPLITS]
        table.add_row(name, status, *cells, human_size(size) if size else "-", str(dataset.num_classes))
    console = make_console()
    console.print(table)
    for hint in hints:
        console.print(hint, soft_wrap=True, highlight=False)


def _download(dataset: Dataset, root: Path, console: Console) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def report(file: str, done: int, total: int) -> None:
            if file not in tasks:
                tasks[file] = progress.add_task(f"{dataset.name}: {file}", total=total or None)
            progress.update(tasks[file], completed=done)

        dataset.download(root, progress=report)


@data_app.command("download")
@with_options(only=("data_dir",), places=Places)
def download_command(name: str = NAMES_ARGUMENT, *, places: Places) -> None:
    """Fetch datasets with checksum verification (PAD-UFES-20 explains its manual download)."""
    from bench import data
    from bench.core.errors import BenchError

    root = _root(places)
    console = make_console()
    failed = 0
    for dataset_name in data.expand(name):
        dataset = data.get(dataset_name)
        if not dataset.missing_files(root):
            console.print(f"{dataset_name}: present in {root}")
            continue
        root.mkdir(parents=True, exist_ok=True)
        try:
            _download(dataset, root, console)
        except BenchError as error:  # report it and go on with the other datasets
            failed += 1
            typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
            continue
        console.print(f"{dataset_name}: downloaded into {root}")
    if failed:
        raise typer.Exit(code=BenchError.exit_code)


def _check_split(bundle: DataBundle, split_name: str, root: Path) -> list[str]:
    """Verify one split (count, label range, first and last image through the eval transform); its table row."""
    import torch

    from bench.core.errors import BenchError

    name, split = bundle.dataset, getattr(bundle, split_name)
    fix = f"the files in {root} are incomplete or damaged; run `bench data download {name}`"
    if len(split) == 0:
        raise BenchError(f"{name}: the {split_name} split is empty; {fix}.")
    low, high = int(split.labels.min()), int(split.labels.max())
    if low < 0 or high >= bundle.num_classes:
        raise BenchError(f"{name}: {split_name} labels span {low}..{high}, outside 0..{bundle.num_classes - 1}; {fix}.")
    # HDF5-backed splits read these from disk; in-memory ones were decoded and checked at load.
    shown = bundle.eval_transform(split.take(torch.tensor(sorted({0, len(split) - 1}))))
    expected = (bundle.in_channels, bundle.image_size, bundle.image_size)
    if tuple(shown.shape[1:]) != expected:
        raise BenchError(
            f"{name}: {split_name} images reach the model as {tuple(shown.shape[1:])}, not {expected}; {fix}."
        )
    seen = int(split.labels.unique().numel())
    stored = "x".join(map(str, split.image_shape))
    return [split_name, f"{len(split):,}", f"{low}..{high}", str(seen), stored, "x".join(map(str, expected))]


@data_app.command("check")
@with_options(only=("data_dir",), places=Places)
def check_command(
    name: str = NAMES_ARGUMENT,
    splits: str = typer.Option("protocol", "--splits", help="protocol, official, or grouped (pad-ufes-20)."),
    *,
    places: Places,
) -> None:
    """Open every split, verify counts, label ranges and image shapes, and print a summary."""
    from rich.table import Table

    from bench import data

    root = _root(places)
    console = make_console()
    for dataset_name in data.expand(name):
        bundle = data.get(dataset_name).load(root, splits=splits)
        table = Table(title=f"{dataset_name} ({splits} splits) in {root}")
        for column in ("split", "samples", "labels", "classes seen", "stored image", "model input"):
            table.add_column(column, no_wrap=True)
        for split_name in SPLITS:
            table.add_row(*_check_split(bundle, split_name, root))
        console.print(table)
        for note in bundle.notes:
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
        console.print(f"{dataset_name}: ok")
