"""``bench models``: the model catalogue with parameter counts for a given task shape."""

from __future__ import annotations

from typing import Optional

import typer

from bench.cli._app import app
from bench.cli._app import console as make_console
from bench.core.errors import BenchError


@app.command("models")
def models_command(
    num_classes: int = typer.Option(10, "--num-classes", help="Number of classes of the classifier head."),
    in_channels: int = typer.Option(3, "--in-channels", help="Image channels (1 for FashionMNIST)."),
    image_size: int = typer.Option(32, "--image-size", help="Square input side in pixels, for the MAC counts."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Take classes, channels and image size from this dataset, so the counts match its runs."
    ),
    models: str = typer.Option(
        "all", "--models", help="Comma list of names or wildcards, e.g. 'gradattn-*'."
    ),
    timm_pattern: Optional[str] = typer.Option(
        None, "--timm", help="List the timm architectures matching a wildcard instead (e.g. 'resnet*'), usable as timm/NAME."
    ),
) -> None:
    """List the models with their parameter counts (as published, and as protocol mode builds them) and
    their forward multiply-adds per image."""
    import torch
    from rich.table import Table

    from bench import models as registry
    from bench.config.spec import MODE_DEFAULTS
    from bench.models import flops, timm_family

    if dataset is not None:
        from bench import data

        shape = data.get(dataset)
        num_classes, in_channels, image_size = shape.num_classes, shape.in_channels, shape.image_size
    if image_size < 1:
        raise BenchError(f"--image-size must be at least 1 pixel, got {image_size}.")

    protocol = MODE_DEFAULTS["protocol"]

    if timm_pattern is not None:
        names = timm_family.names(timm_pattern)
        if not names:
            raise BenchError(f"No timm architecture matches {timm_pattern!r}; try a wider wildcard such as 'resnet*'.")
        models = ",".join(names)
    shown = f" ({dataset})" if dataset else ""
    table = Table(title=f"Models for {in_channels}-channel {image_size} px images and {num_classes} classes{shown}")
    table.add_column("name", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("published", justify="right", no_wrap=True)
    table.add_column("protocol mode", justify="right", no_wrap=True)
    table.add_column("GMACs", justify="right", no_wrap=True)
    table.add_column("description")
    for name in registry.expand(models):
        info = registry.info(name)
        mode_options = {"init": protocol.init, "encoder": protocol.encoder}
        counts = []
        for options in ({}, {k: v for k, v in mode_options.items() if k in info.options}):
            # Counting needs shapes only: building on the meta device allocates and initialises nothing.
            with torch.device("meta"):
                model = registry.build(name, num_classes, in_channels, **options)
            counts.append(registry.count_parameters(model))
        macs = flops.count(model, in_channels, image_size).forward_macs  # protocol mode's model
        table.add_row(name, info.family, *(f"{c:,}" for c in counts), f"{macs / 1e9:.4g}", info.description)
    make_console().print(table)
