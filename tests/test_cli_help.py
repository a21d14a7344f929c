"""The command line as a narrow or piped terminal shows it: `bench run --help` at 80 columns."""

from __future__ import annotations

import re

import typer
from support import bench

BOX = re.compile(r"[│╭╮╰╯─┃┏┓┗┛━]")


def _words(text: str) -> set[str]:
    return set(BOX.sub(" ", text).split())


def _declared_words(command) -> set[str]:
    """Every word the help is written from: the command's text, each option's names, type, help and
    default, and the settings listing after it."""
    import click

    ctx = click.Context(command, info_name="run")
    epilog = command.epilog.replace("\\[", "[")  # written with rich markup escaped
    words = _words(f"{command.help} {epilog} {command.get_usage(ctx)}")
    for param in command.get_params(ctx):
        shown = getattr(param, "display_type_rich", lambda ctx: None)(ctx) or ""
        words |= _words(" ".join([*param.opts, *param.secondary_opts, param.help or "", shown, str(param.default)]))
    return words


def test_run_help_at_80_columns_wraps_whole_words_and_shows_flags_as_flags():
    result = bench("run", "--help", env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout

    from bench.cli import app
    from bench.cli._app import PANELS

    command = typer.main.get_command(app).commands["run"]
    declared = _declared_words(command) | _words(" ".join(PANELS.values())) | {"Options", "Usage:", "python", "-m", "bench"}
    declared |= {f"{word}]" for word in declared}
    shown = BOX.sub(" ", result.stdout).replace("[default: ", "[default:_")
    cut = sorted(word for word in shown.split() if word.replace("[default:_", "") not in declared)
    assert not cut, cut  # a word rich cut or folded into pieces
    for flag in ("--force", "--prune-checkpoints", "--skip-missing", "--log-model", "--help"):
        (line,) = [line for line in lines if re.search(rf"│ {flag}\b", line)]
        assert "<bool>" not in line and not re.search(rf"{flag}\s+<", line), line  # a flag takes no value
    assert re.search(r"--max-epochs\s+<int>", result.stdout)  # an option that takes one says its type
