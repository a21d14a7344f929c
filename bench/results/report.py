"""The comparison from MLflow runs: tables (Markdown, CSV, LaTeX) and figures, one row per
configuration, and the verdict across datasets.

A configuration is everything that defines a result except the training seed: dataset, model, mode,
splits and split seed, and every other recorded setting but the analysis-only ones (every
`gradflow.*` and `train.restore_best`: both weight sets are always evaluated, and the analysis
does not change training). Runs of one configuration are its seeds (the newest finished run of each
seed counts; failed, diverged and interrupted seeds are counted beside it); where configurations of
one dataset, model and mode differ, the differing settings become columns. Each row has the chosen
metric's mean with its 95 % interval (over seeds; at one seed the test set's sampling interval),
the difference to the baseline row of the same settings with its interval and test
(`significance.py`), Holm-corrected within the rows compared with one baseline row by one test,
the published notebook figure where the row reproduces it, and warnings (`references.py`). The
gradient-health table is grouped the same way; the verdict across datasets is `verdict.py`'s.

Reading the runs is `runs.py`, the per-dataset rows `rows.py`, the verdict `across.py` (its statistics
`verdict.py`), the text `render.py` and the figures `figures.py`; this module writes them all.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.core.files import atomic_write_bytes
from bench.results.across import across_datasets
from bench.results.render import across_frame, across_latex, to_latex, to_markdown
from bench.results.rows import Options, comparison_table, health_table
from bench.results.runs import SHOWN_METRIC, Predictions, collect_runs, metric_name


@dataclass
class Report:
    """What `bench report` wrote, and its tables as data (what ``bench.report()`` returns)."""

    markdown: str
    paths: list[Path]
    results: pd.DataFrame  # one row per configuration (results.csv)
    health: pd.DataFrame  # gradient health per configuration (gradient_health.csv)
    runs: pd.DataFrame  # every finished run read (runs.csv)
    verdict: pd.DataFrame = field(default_factory=pd.DataFrame)  # across datasets (verdict.csv)
    sentences: list[str] = field(default_factory=list)  # the verdicts in plain words
    logged_to: str | None = None  # the MLflow UI link of the report's run, when logged (bench report --log)

    def _repr_markdown_(self) -> str:  # a notebook shows the report's tables
        return self.markdown


def write_report(uri: str, experiment: str, out: Path, options: Options | None = None) -> Report:
    from bench.results.figures import cost_axes, plot_comparison, plot_cost_front, plot_verdict

    options = options or Options()
    options = Options(metric_name(options.metric), tuple(dict.fromkeys(options.baselines)), options.primary)
    runs, unfinished = collect_runs(uri, experiment, options.metric)
    with tempfile.TemporaryDirectory() as folder:
        table = comparison_table(runs, Predictions(uri, Path(folder)), unfinished, options)
    health = health_table(runs)
    across = across_datasets(runs, table, options)
    markdown = to_markdown(table, health, across, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = across_frame(across)
    outputs = {
        "results.md": markdown,
        "results.csv": table.to_csv(index=False),
        "gradient_health.csv": health.to_csv(index=False),
        "results.tex": to_latex(table, options),
        "runs.csv": runs.to_csv(index=False),
        "verdict.csv": found.to_csv(index=False),
        "verdict.tex": across_latex(across),
        "seeds.csv": across.seeds.to_csv(index=False),
    }
    paths = []
    for name, text in outputs.items():
        atomic_write_bytes(out / name, lambda handle, text=text: handle.write(text.encode()))
        paths.append(out / name)
    figure = out / "results.png"
    atomic_write_bytes(figure, lambda handle: plot_comparison(table, runs, handle, SHOWN_METRIC.get(options.metric, options.metric)))
    paths.append(figure)
    label = SHOWN_METRIC.get(options.metric, options.metric)
    front = out / "cost_front.png"
    if cost_axes(table):
        atomic_write_bytes(front, lambda handle: plot_cost_front(table, handle, label))
        paths.append(front)
    if across.comparisons:
        atomic_write_bytes(out / "verdict.png", lambda handle: plot_verdict(across.comparisons, handle))
        paths.append(out / "verdict.png")
    return Report(markdown, paths, table, health, runs, found, [c.sentence() for c in across.comparisons])
