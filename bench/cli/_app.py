"""The Typer app and what its commands share: the console, the declared options, the settings listing.
The command modules import this module, never the package (no circle through ``__init__``)."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, List, Optional

import typer
from typer.core import TyperOption

from bench.core.version import __version__


def _flag_type(display_type_rich):
    """Typer's rich help writes a type beside every option, an on/off flag's too (`--force <bool>`),
    as if it took a value; a flag shows none, as in Click's plain help."""

    @functools.wraps(display_type_rich)
    def shown(self, ctx):
        return None if self.is_flag else display_type_rich(self, ctx)

    return shown


TyperOption.display_type_rich = _flag_type(TyperOption.display_type_rich)

app = typer.Typer(
    name="bench",
    help="Benchmark GradAttn against ResNet-18, SE-ResNet-18 and CBAM-ResNet-18, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def console():
    """The commands' console (bench.execution.progress.make_console), imported when a command runs."""
    from bench.execution.progress import make_console

    return make_console()


PANELS = {"Places": "Where runs go", "Keeping": "What runs keep", "Placement": "Where runs execute", "Seeds": "Seeds"}
BACKEND_HELP = "local (worker processes here), inline (this process, one run after another), ray or slurm."


def with_options(only: tuple[str, ...] = (), unset: dict[str, str] | None = None, **groups: type):
    """Give a command one option per field of each options dataclass in ``groups`` (declared once,
    in bench.config.options, bench.config.spec.Seeds or bench.execution.backends.Placement); the
    command receives each group as one keyword-only argument, built and checked by
    ``bench.config.options.given``. A ``placement`` group also brings ``--backend`` (the command's
    keyword ``backend``), checked against the placement before any work. ``only`` keeps those
    fields; ``unset`` says what an unset field means for this command."""

    def decorate(command):
        from bench.config import options as declared

        params = []
        chosen: dict[str, list[str]] = {}
        for group, cls in groups.items():
            keys = {name: key for name, key in declared.keys(cls).items() if "flag" in key.field.metadata and (not only or name in only)}
            chosen[group] = list(keys)
            if group == "placement":
                option = typer.Option("local", "--backend", help=BACKEND_HELP, rich_help_panel=PANELS["Placement"])
                params.append(inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=option))
            for name, key in keys.items():
                params.append(_option_parameter(name, key, PANELS.get(cls.__name__), (unset or {}).get(name)))
        own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name not in groups and name != "backend"]

        @functools.wraps(command)
        def wrapper(**values):
            given = {group: {name: values.pop(name) for name in chosen[group]} for group in groups}
            if "placement" in groups:  # first an unknown backend or an option of another backend, then the values
                from bench.execution.backends import check

                check(values["backend"], groups["placement"](**given["placement"]))
            built = {group: declared.given(cls, given[group], "command line:") for group, cls in groups.items()}
            return command(**values, **built)

        wrapper.__signature__ = inspect.Signature([*own, *params])
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        return wrapper

    return decorate


def as_keywords(options) -> dict[str, Any]:
    """The options of a group a user gave (its fields not at their default), as the API's keywords."""
    from dataclasses import fields

    return {f.name: getattr(options, f.name) for f in fields(options) if getattr(options, f.name) != f.default}


def _option_parameter(name: str, key, panel: str | None, unset: str | None) -> inspect.Parameter:
    """The Typer option of one declared setting: an on/off flag for a bool, a repeatable option where
    declared so, comma text for a list, else the declared type; None when not given."""
    meta = key.field.metadata
    help_text = key.help_line()
    if unset:
        help_text = f"{meta['help']} Default: {unset}."
    if meta.get("backends"):
        help_text += f" For --backend {' or '.join(meta['backends'])}."
    if key.kind is bool:
        annotation = Optional[bool]
    elif meta.get("repeatable"):
        annotation = Optional[List[str]]
    elif typing.get_origin(key.kind) is tuple:
        annotation = Optional[str]
    else:
        annotation = Optional[key.kind]
    flags = meta["flag"].split(" ")
    option = typer.Option(None, *flags, help=help_text, rich_help_panel=panel, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)


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
