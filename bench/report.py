"""The paper-style comparison from MLflow runs: tables (Markdown, CSV, LaTeX) and a figure.

One row per (dataset, model, preprocessing): test top-1 mean +- std over seeds, n, the difference to
ResNet-18 with a paired t-test over the seeds both have (n >= 2), the published notebook figure where
there is one, and a second table of gradient health per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from bench import tracking
from bench.checkpoint import atomic_write_bytes
from bench.errors import BenchError

BASELINE = "resnet18"
# The notebooks' names for our datasets and models (bench/resources/notebook_results.csv).
NOTEBOOK_DATASETS = {
    "CIFAR-10": "cifar10", "FashionMNIST": "fashionmnist", "SVHN": "svhn", "BloodMNIST": "bloodmnist",
    "TissueMNIST": "tissuemnist", "PCam": "pcam", "PAD-UFES-20": "pad-ufes-20", "Tiny-ImageNet": "tiny-imagenet",
}
NOTEBOOK_MODELS = {
    "ResNet-18": "resnet18", "SE-ResNet-18": "senet18", "CBAM-ResNet-18": "cbam18",
    "GradAttn-NoPE": "gradattn-nope", "GradAttn-LPE": "gradattn-lpe", "GradAttn-RoPE": "gradattn-rope",
}


def published_results() -> pd.DataFrame:
    """The notebooks' final test top-1 (%) per (dataset, model): current versions only, plus Tiny ImageNet's 2025 one."""
    with resources.files("bench").joinpath("resources/notebook_results.csv").open() as handle:
        table = pd.read_csv(handle)
    table = table[~table["notebook_version"].str.contains("superseded")]
    return pd.DataFrame(
        {
            "dataset": table["dataset"].map(NOTEBOOK_DATASETS),
            "model": table["model"].map(NOTEBOOK_MODELS),
            "published_top1": table["test_top1_pct"].astype(float),
        }
    )


def collect_runs(uri: str, experiment: str) -> pd.DataFrame:
    """One row per finished run: the newest run of each (dataset, model, preprocessing, seed)."""
    exp_id = tracking.experiment_id(uri, experiment)
    rows = []
    for run in tracking.runs_of(uri, exp_id, status=tracking.FINISHED):
        tags, metrics = run.data.tags, run.data.metrics
        if "test_top1" not in metrics or "dataset" not in tags or "trial_number" in tags:
            continue  # not a grid run (a study's parent run or one of its trials)
        rows.append(
            {
                "run_id": run.info.run_id,
                "start_time": run.info.start_time,
                "dataset": tags["dataset"],
                "model": tags["model"],
                "seed": int(tags["seed"]),
                "preprocessing": tags.get("preprocessing", "protocol"),
                "top1": 100 * metrics["test_top1"],
                "health": 100 * metrics.get("gradient_health", math.nan),
                "health_notebook": 100 * metrics.get("gradient_health_notebook", math.nan),
                "vanishing": metrics.get("gradient_vanishing_layers", math.nan),
                "exploding": metrics.get("gradient_exploding_layers", math.nan),
            }
        )
    if not rows:
        raise BenchError(f"Experiment {experiment!r} has no finished runs; start some with `bench run` first.")
    frame = pd.DataFrame(rows).sort_values("start_time")
    return frame.drop_duplicates(["dataset", "model", "preprocessing", "seed"], keep="last")


def _paired_p(runs: pd.DataFrame, group: pd.DataFrame) -> float:
    from scipy import stats

    baseline = runs[
        (runs.dataset == group.dataset.iloc[0]) & (runs.model == BASELINE) & (runs.preprocessing == group.preprocessing.iloc[0])
    ].set_index("seed")["top1"]
    ours = group.set_index("seed")["top1"]
    common = ours.index.intersection(baseline.index)
    if len(common) < 2:
        return math.nan
    differences = ours[common] - baseline[common]
    if float(differences.std(ddof=1)) == 0.0:
        return 1.0 if float(differences.mean()) == 0.0 else 0.0
    return float(stats.ttest_rel(ours[common], baseline[common]).pvalue)


def in_paper_order(table: pd.DataFrame, between: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows by dataset, then `between`, then model, datasets and models in registry order (the
    paper's: ResNet-18 first); names the registries do not know come last, alphabetically."""
    from bench import data, models

    def rank(order: list[str]):
        return lambda name: order.index(name) if name in order else len(order)

    ranked = table.assign(_dataset=table.dataset.map(rank(data.names())), _model=table.model.map(rank(models.names())))
    ranked = ranked.sort_values(["_dataset", "dataset", *between, "_model", "model"], kind="stable")
    return ranked.drop(columns=["_dataset", "_model"]).reset_index(drop=True)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """dataset x model: mean, std, n, delta to ResNet-18, paired p, published figure, best flag."""
    rows = []
    for (dataset, model, prep), group in runs.groupby(["dataset", "model", "preprocessing"], sort=False):
        base = runs[(runs.dataset == dataset) & (runs.model == BASELINE) & (runs.preprocessing == prep)]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "preprocessing": prep,
                "top1_mean": group.top1.mean(),
                "top1_std": group.top1.std(ddof=1) if len(group) > 1 else math.nan,
                "n": len(group),
                "delta_vs_resnet18": group.top1.mean() - base.top1.mean() if len(base) and model != BASELINE else math.nan,
                "p_paired": _paired_p(runs, group) if model != BASELINE else math.nan,
            }
        )
    table = pd.DataFrame(rows)
    table = table.merge(published_results(), on=["dataset", "model"], how="left")
    best = table.groupby(["dataset", "preprocessing"])["top1_mean"].transform("max")
    table["best"] = table["top1_mean"] == best
    return in_paper_order(table, between=("preprocessing",))


def health_table(runs: pd.DataFrame) -> pd.DataFrame:
    grouped = runs.groupby(["dataset", "model"], sort=False)  # in_paper_order sorts
    return in_paper_order(grouped.agg(
        health_mean=("health", "mean"),
        health_notebook_mean=("health_notebook", "mean"),
        vanishing_mean=("vanishing", "mean"),
        exploding_mean=("exploding", "mean"),
        n=("health", "size"),
    ).reset_index())


def _fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: a rounding residue never prints as -0.00


def _cell(row, bold: str) -> str:
    text = _fmt(row.top1_mean) + (f" ± {_fmt(row.top1_std)}" if not math.isnan(row.top1_std) else "")
    return f"{bold}{text}{bold}" if row.best else text


def to_markdown(table: pd.DataFrame, health: pd.DataFrame) -> str:
    lines = [
        "| dataset | model | preprocessing | test top-1 % (mean ± std) | n | Δ vs ResNet-18 | paired p | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.dataset} | {row.model} | {row.preprocessing} | {_cell(row, '**')} | {row.n} | "
            f"{_fmt(row.delta_vs_resnet18)} | {_fmt(row.p_paired, 3)} | {_fmt(row.published_top1)} |"
        )
    lines += ["", "| dataset | model | gradient health % | health % (notebook formula) | vanishing | exploding | n |", "|---|---|---|---|---|---|---|"]
    for row in health.itertuples():
        lines.append(
            f"| {row.dataset} | {row.model} | {_fmt(row.health_mean)} | {_fmt(row.health_notebook_mean)} | "
            f"{_fmt(row.vanishing_mean, 1)} | {_fmt(row.exploding_mean, 1)} | {row.n} |"
        )
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    lines = [
        r"\begin{tabular}{lllrrrr}",
        r"\hline",
        r"Dataset & Model & Prep. & Top-1 (\%) & $n$ & $\Delta$ ResNet-18 & Published \\",
        r"\hline",
    ]
    for row in table.itertuples():
        cell = _fmt(row.top1_mean) + (rf" $\pm$ {_fmt(row.top1_std)}" if not math.isnan(row.top1_std) else "")
        if row.best:
            cell = rf"\textbf{{{cell}}}"
        lines.append(
            f"{row.dataset} & {row.model} & {row.preprocessing} & {cell} & {row.n} & "
            f"{_fmt(row.delta_vs_resnet18)} & {_fmt(row.published_top1)} \\\\"
        )
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def plot_comparison(table: pd.DataFrame, path: Path) -> None:
    from bench.plots import pyplot

    plt = pyplot()
    datasets = list(dict.fromkeys(table.dataset))
    model_names = list(dict.fromkeys(table.model))
    width = 0.8 / max(len(model_names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets) + 2), 4.5))
    for i, model in enumerate(model_names):
        part = table[table.model == model].set_index("dataset").reindex(datasets)
        positions = [d + i * width for d in range(len(datasets))]
        ax.bar(positions, part.top1_mean, width, yerr=part.top1_std.fillna(0), capsize=3, label=model)
    ax.set_xticks([d + 0.4 - width / 2 for d in range(len(datasets))], datasets)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Test top-1 per dataset (mean ± std over seeds)")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class ReportFiles:
    markdown: str
    paths: list[Path]


def write_report(uri: str, experiment: str, out: Path) -> ReportFiles:
    runs = collect_runs(uri, experiment)
    table = comparison_table(runs)
    health = health_table(runs)
    markdown = to_markdown(table, health)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "results.md": markdown,
        "results.csv": table.to_csv(index=False),
        "gradient_health.csv": health.to_csv(index=False),
        "results.tex": to_latex(table),
    }
    paths = []
    for name, text in outputs.items():
        atomic_write_bytes(out / name, lambda handle, text=text: handle.write(text.encode()))
        paths.append(out / name)
    figure = out / "results.png"
    plot_comparison(table, figure)
    paths.append(figure)
    return ReportFiles(markdown, paths)
