"""The gradient-flow report: its JSON form, the text report of protocol 5.5 and the figure of 5.6."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bench.core.files import atomic_write_bytes
from bench.gradflow import stats
from bench.gradflow.stats import EXPLODING, HEALTHY, VANISHING, FlowPatterns, GradFlowThresholds, LayerStats, NotebookScope

SCHEMA = "gradattn-bench/gradflow/1"
NORM_FLOOR = 1e-10  # protocol 5.6: log10(norm + 1e-10) in the histogram


@dataclass
class GradFlowReport:
    """One analysis: per-layer statistics in forward order and the raw per-batch records.

    ``records`` (output-gradient norm per layer per batch) is all ``stats.score`` needs to
    recompute verdicts and health scores for other thresholds (``report.score(thresholds)``).
    """

    layers: list[LayerStats]  # layers with data, forward order
    not_observed: list[str]  # analysed modules that produced no gradient; never counted
    records: dict[str, list[float]]
    param_grad_norms: dict[str, list[float]]  # per batch, norm of the module's parameter gradients
    hooks_registered: int  # analysed modules hooked
    thresholds: GradFlowThresholds
    health_score: float  # healthy / layers with data
    health_score_notebook: float  # protocol 5.3: healthy the original could see / hooks it registered
    n_vanishing: int
    n_exploding: int
    flow: FlowPatterns
    notebook: NotebookScope
    mode: str = "train"
    batches: int = 0
    batch_size: int = 0  # the largest analysed batch (gradient norms scale with it, protocol 7.7)
    host_syncs: int = 0  # device -> host copies made by the analysis (one per batch)

    @property
    def n_healthy(self) -> int:
        return sum(layer.verdict == HEALTHY for layer in self.layers)

    @property
    def vanishing(self) -> list[LayerStats]:
        return [layer for layer in self.layers if layer.verdict == VANISHING]

    @property
    def exploding(self) -> list[LayerStats]:
        return [layer for layer in self.layers if layer.verdict == EXPLODING]

    def layer(self, name: str) -> LayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def score(self, thresholds: GradFlowThresholds) -> dict:
        """Scores and verdict counts at other thresholds, from the stored records alone."""
        return stats.score(self.records, thresholds, self.notebook)

    def to_dict(self) -> dict:
        out = {"schema": SCHEMA}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "layers":
                value = [asdict(layer) for layer in value]
            elif f.name in ("thresholds", "flow"):
                value = asdict(value)
            elif f.name == "notebook":
                value = {"hooked": list(value.hooked), "unobservable": list(value.unobservable)}
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "GradFlowReport":
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a gradient-flow report of schema {SCHEMA}: {data.get('schema')!r}")
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["layers"] = [LayerStats(**layer) for layer in data["layers"]]
        values["thresholds"] = GradFlowThresholds(**data["thresholds"])
        values["flow"] = FlowPatterns(**data["flow"])
        values["notebook"] = NotebookScope(tuple(data["notebook"]["hooked"]), tuple(data["notebook"]["unobservable"]))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "GradFlowReport":
        return cls.from_dict(json.loads(text))


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def _health_verdict(score: float) -> str:
    # protocol 5.5, line 2
    if score > 0.8:
        return "Excellent gradient flow - the network trains well"
    if score > 0.6:
        return "Good gradient flow - some layers may need attention"
    if score > 0.4:
        return "Moderate gradient flow issues detected"
    return "Poor gradient flow - significant training issues likely"


def _layer_lines(title: str, layers: list[LayerStats], none_text: str) -> list[str]:
    if not layers:
        return [none_text]
    return [f"{title} ({len(layers)}):"] + [
        f"  {layer.name}: {layer.mean_norm:.2e} [{(layer.severity or '').upper()}]" for layer in layers
    ]


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def text_report(report: GradFlowReport) -> str:
    """The text report of protocol 5.5, with both health-score formulas and the not-observed modules."""
    t = report.thresholds
    notebook_healthy = round(report.health_score_notebook * len(report.notebook.hooked))
    lines = [
        "Gradient Flow Analysis Report",
        "=" * 29,
        f"Overall Gradient Health Score: {report.health_score:.2%} "
        f"(healthy / layers with data: {report.n_healthy}/{len(report.layers)})",
        f"Notebook formula (healthy / hooks the original registered): {report.health_score_notebook:.2%} "
        f"({notebook_healthy}/{len(report.notebook.hooked)})",
        f"Verdict: {_health_verdict(report.health_score)}",
        f"Thresholds: vanishing < {t.vanishing:.2e}, exploding > {t.exploding:.2e}; "
        f"{report.batches} batches of up to {report.batch_size}, {report.mode} mode",
        "",
        *_layer_lines("Vanishing Gradient Layers", report.vanishing, "No vanishing gradient issues detected"),
        *_layer_lines("Exploding Gradient Layers", report.exploding, "No exploding gradient issues detected"),
    ]
    if report.flow.bottlenecks:
        lines.append(f"Bottleneck Layers ({len(report.flow.bottlenecks)}):")
        lines += [f"  {b['name']}: {b['mean_norm']:.2e} ({b['position']:.1%} depth)" for b in report.flow.bottlenecks]
    flow = report.flow
    lines += [
        "",
        f"Average gradient decay rate: {_number(flow.decay_rate_median, '.2f')} "
        f"(median of consecutive ratios in forward order; geometric mean {_number(flow.decay_rate_geomean, '.2f')}; "
        f"notebook arithmetic mean {_number(flow.decay_rate_mean_notebook, '.2f')})",
    ]
    if flow.decay_rate_median is not None and flow.decay_rate_median > 10:
        lines.append("  Warning: high decay rate may indicate vanishing gradients")
    elif flow.decay_rate_median is not None and flow.decay_rate_median < 0.1:
        lines.append("  Warning: low decay rate may indicate exploding gradients")
    norms = np.array([layer.mean_norm for layer in report.layers], dtype=np.float64)
    lines += ["", "Layer Statistics Summary:", f"  Total layers analyzed: {len(norms)}"]
    if len(norms):
        lines += [
            f"  Average gradient norm: {norms.mean():.2e}",
            f"  Gradient norm range: {norms.min():.2e} - {norms.max():.2e}",
            f"  Gradient norm std: {norms.std():.2e}",
        ]
    lines.append(
        f"Not observed (analysed modules that produced no gradient): {', '.join(report.not_observed) or 'none'}"
    )
    return "\n".join(lines) + "\n"


def _label_size(count: int) -> float:
    # long qualified names, up to ~45 layers in one panel of a 15 x 12 inch figure
    return max(3.5, min(8.0, 250.0 / max(count, 1)))


def plot(report: GradFlowReport, path: str | Path, dpi: int = 300) -> Path:
    """The 2 x 2 figure of protocol 5.6 with full layer names and a per-batch heat map."""
    from bench.core.plots import pyplot

    plt = pyplot()
    names = [layer.name for layer in report.layers]
    means = np.array([layer.mean_norm for layer in report.layers], dtype=np.float64)
    stds = np.array([layer.std_norm for layer in report.layers], dtype=np.float64)
    index = np.arange(len(names))
    size = _label_size(len(names))
    colours = {HEALTHY: "tab:blue", VANISHING: "tab:red", EXPLODING: "tab:orange"}

    fig, axes = plt.subplots(2, 2, figsize=(15, 12))
    fig.suptitle("Gradient Flow Analysis", fontsize=16)

    ax = axes[0, 0]
    ax.bar(index, means, yerr=stds, capsize=3, color=[colours[layer.verdict] for layer in report.layers])
    ax.set_xticks(index, names, rotation=90, fontsize=size)
    ax.set_ylabel("mean output-gradient norm")
    ax.set_title("Mean gradient norm per layer (red: vanishing, orange: exploding)")
    if (means > 0).any():
        ax.set_yscale("log")

    ax = axes[0, 1]
    heat = np.log10(np.array([report.records[name] for name in names], dtype=np.float64) + NORM_FLOOR)
    image = ax.imshow(heat, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="log10(norm + 1e-10)")
    ax.set_yticks(index, names, fontsize=size)
    ax.set_xlabel("batch")
    ax.set_title("Gradient norm per layer and batch")

    ax = axes[1, 0]
    ax.hist(heat.ravel(), bins=50, alpha=0.7)
    t = report.thresholds
    ax.axvline(math.log10(t.vanishing), color="red", linestyle="--", label=f"Vanishing threshold ({t.vanishing:g})")
    ax.axvline(math.log10(t.exploding), color="orange", linestyle="--", label=f"Exploding threshold ({t.exploding:g})")
    ax.set_xlabel("log10(norm + 1e-10)")
    ax.set_ylabel("count (layer x batch)")
    ax.set_title("Distribution of gradient norms")
    ax.legend()

    ax = axes[1, 1]
    ax.plot(index, means, "b-o", markersize=3)
    ax.fill_between(index, np.clip(means - stds, NORM_FLOOR, None), means + stds, alpha=0.3)
    if (means > 0).any():
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("layer index (forward order)")
    ax.set_ylabel("mean output-gradient norm")
    ax.set_title("Gradient Flow Through Network")

    fig.tight_layout()
    path = Path(path)
    image_format = path.suffix.lstrip(".") or "png"
    try:
        # tight_layout above fits the figure: no bbox_inches="tight", which would draw it a second time
        atomic_write_bytes(path, lambda handle: fig.savefig(handle, format=image_format, dpi=dpi))
    finally:
        plt.close(fig)
    return path


def save(report: GradFlowReport, directory: str | Path, stem: str = "gradflow", dpi: int = 300) -> dict[str, Path]:
    """JSON, text report and figure side by side, each written atomically."""
    directory = Path(directory)
    paths = {kind: directory / f"{stem}.{kind}" for kind in ("json", "txt", "png")}
    _write_text(paths["json"], report.to_json())
    _write_text(paths["txt"], text_report(report))
    plot(report, paths["png"], dpi=dpi)
    return paths
