"""The Typer app and what its commands share: the console, the backend options, the settings listing.
The command modules import this module, never the package (no circle through ``__init__``)."""


from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import fields
from typing import Any, Callable

import typer

from bench.core.version import __version__

app = typer.Typer(
    name="bench",
    help="Benchmark GradAttn against ResNet-18, SE-ResNet-18 and CBAM-ResNet-18, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def console():
    """A rich Console; printed to a file or a pipe, its tables are never wrapped or cut (logs keep every name)."""
    from rich.console import Console

    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=LOG_WIDTH)


LOG_WIDTH = 1_000  # wider than any table here, so rich never shrinks a column


BACKEND_PANEL = "Where runs execute"


def with_backend(command):
    """Give a command `--backend` and one option per `bench.execution.backends.Placement` field, declared there
    once; the command receives them as its keyword-only `backend` (a name) and `placement`."""
    from bench.execution.backends import Placement, check

    hints = typing.get_type_hints(Placement)
    options = [
        inspect.Parameter(
            "backend", inspect.Parameter.KEYWORD_ONLY, annotation=str,
            default=typer.Option("local", "--backend", help="local (worker processes here), ray or slurm.", rich_help_panel=BACKEND_PANEL),
        )
    ]
    for setting in fields(Placement):
        meta = setting.metadata
        default = "" if meta["default"] is None else f" (default: {meta['default']})"
        help_text = f"{meta['help'].rstrip('.')}{default}. For --backend {' or '.join(meta['backends'])}."
        option = typer.Option(None, meta["flag"], help=help_text, rich_help_panel=BACKEND_PANEL, show_default=False)
        options.append(inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[setting.name], default=option))
    own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name not in ("backend", "placement")]

    @functools.wraps(command)
    def wrapper(**values):
        placement = Placement(**{setting.name: values.pop(setting.name) for setting in fields(Placement)})
        check(values["backend"], placement)  # before any work: an unknown backend or a misplaced option
        return command(**values, placement=placement)

    wrapper.__signature__ = inspect.Signature([*own, *options])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


def listing_settings(schema: Callable[[], Any], where: str) -> type:
    """The class of a command that takes ``--set``: its help ends with every key of ``schema()``, its
    help text and default. Written when help is shown, so the schema's imports (Optuna's, for a study)
    stay out of ``bench --help``."""
    from typer.core import TyperCommand

    class Command(TyperCommand):
        @property
        def epilog(self) -> str:
            from rich.markup import escape

            settings = schema()
            sections = ", ".join(f"[{name}]" for name in settings.sections)
            intro = f"Settings, each --set KEY=VALUE (repeatable) or, in {where}, KEY = VALUE at its top or in its {sections} table:"
            return escape(f"{intro}\n\n{settings.help()}")

        @epilog.setter
        def epilog(self, value: str | None) -> None:  # click sets it from the decorator; ours is written above
            pass

    return Command


def setting_help(schema, key: str) -> str:
    """The help of a first-class option that sets ``key`` of ``schema``."""
    return f"{schema.keys[key].help_line(schema.defaults.get(key))} Same as --set {key}=VALUE."


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gradattn-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """gradattn-bench: train the dataset x model grid, analyse gradient flow, compare runs in MLflow."""
