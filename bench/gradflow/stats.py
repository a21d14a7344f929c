"""Per-layer gradient statistics, verdicts, health scores and flow patterns (protocol 5.3, 5.4).

Pure functions over the analyzer's records (plain lists of floats), so that the threshold
sensitivity study can recompute verdicts and scores for other thresholds from a stored report
without retraining. ``score`` at the report's own thresholds gives exactly the report's values,
because both go through ``layer_verdict`` and ``mean_norm`` below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from bench.config.thresholds import GradFlowThresholds  # noqa: F401  (re-exported: the analyzer's settings)

HEALTHY, VANISHING, EXPLODING = "healthy", "vanishing", "exploding"


@dataclass(frozen=True)
class NotebookScope:
    """What the original analyzer would have hooked, for its health-score formula (protocol 5.2, 5.3).

    ``hooked``: the modules it registered hooks on (Conv2d, Linear incl. subclasses such as
    ``out_proj``, TransformerEncoderLayer), in ``named_modules`` order; its score divides by their
    number. ``unobservable``: those whose hook could never fire (``out_proj`` of
    ``nn.MultiheadAttention``, a ``linear1`` whose view output an in-place ReLU re-bases); the
    original had no data for them, so they never count as healthy.
    """

    hooked: tuple[str, ...] = ()
    unobservable: tuple[str, ...] = ()


@dataclass
class LayerStats:
    """Statistics of one analysed layer over the analysed batches (protocol 5.3, fixed).

    One record per batch: a module called several times in one forward (CBAM's shared MLP) has its
    calls merged into the statistics of the concatenated output gradient, so its norm is the
    per-call norms summed in quadrature.
    """

    name: str  # fully qualified module name, e.g. "layer4.1.conv1"
    kind: str  # class name, e.g. "Conv2d"
    order: int  # position in forward order (order in which the analysed outputs were produced)
    records: int  # number of batches with a gradient
    calls_per_batch: int
    mean_norm: float  # mean over batches of the L2 norm of the output gradient
    std_norm: float  # population std (ddof 0) of those norms
    mean_gradient: float  # mean over batches of mean |g|
    std_gradient: float  # mean over batches of std(g) (unbiased); the original took the std of these
    max_gradient: float  # mean over batches of max |g|
    min_norm: float
    max_norm: float
    norm_ratio: float  # max_norm / (min_norm + 1e-8), protocol 5.3
    verdict: str  # healthy | vanishing | exploding
    severity: str | None  # None for healthy layers, else "medium" or "high"
    mean_param_grad_norm: float | None = None  # mean over batches of the parameter-gradient norm


def mean_norm(norms: Sequence[float]) -> float:
    return float(np.mean(np.asarray(norms, dtype=np.float64)))


def layer_verdict(norm: float, thresholds: GradFlowThresholds) -> tuple[str, str | None]:
    """Verdict and severity of a layer from its mean norm (protocol 5.3).

    The original's "high" severity lay two decades below the vanishing threshold (1e-8 vs 1e-6)
    and one above the exploding one (100 vs 10); the same ratios apply to other thresholds. Its
    strict inequalities left a norm exactly at a threshold in no class; here it counts as healthy.
    A non-finite norm (a diverged model) is exploding.
    """
    if not math.isfinite(norm) or norm > thresholds.exploding:
        return EXPLODING, "high" if not math.isfinite(norm) or norm > 10 * thresholds.exploding else "medium"
    if norm < thresholds.vanishing:
        return VANISHING, "high" if norm < thresholds.vanishing / 100 else "medium"
    return HEALTHY, None


def layer_statistics(
    name: str,
    kind: str,
    order: int,
    calls_per_batch: int,
    norms: Sequence[float],
    abs_means: Sequence[float],
    stds: Sequence[float],
    abs_maxes: Sequence[float],
    param_norms: Sequence[float],
    thresholds: GradFlowThresholds,
) -> LayerStats:
    values = np.asarray(norms, dtype=np.float64)
    mean = mean_norm(norms)
    verdict, severity = layer_verdict(mean, thresholds)
    return LayerStats(
        name=name,
        kind=kind,
        order=order,
        records=len(values),
        calls_per_batch=calls_per_batch,
        mean_norm=mean,
        std_norm=float(values.std()),
        mean_gradient=float(np.mean(abs_means)),
        std_gradient=float(np.mean(stds)),
        max_gradient=float(np.mean(abs_maxes)),
        min_norm=float(values.min()),
        max_norm=float(values.max()),
        norm_ratio=float(values.max() / (values.min() + 1e-8)),
        verdict=verdict,
        severity=severity,
        mean_param_grad_norm=float(np.mean(param_norms)) if len(param_norms) else None,
    )


def score(
    records: Mapping[str, Sequence[float]],
    thresholds: GradFlowThresholds = GradFlowThresholds(),
    notebook: NotebookScope | None = None,
) -> dict:
    """Health scores and verdict counts from raw per-batch norms alone.

    ``records`` maps layer name -> per-batch output-gradient norms (layers without data are
    skipped). ``health_score`` = healthy / layers with data; ``health_score_notebook`` (only when
    ``notebook`` is given) = healthy layers the original could observe / hooks it registered.
    """
    verdicts = {name: layer_verdict(mean_norm(norms), thresholds)[0] for name, norms in records.items() if len(norms)}
    healthy = [name for name, verdict in verdicts.items() if verdict == HEALTHY]
    out = {
        "health_score": len(healthy) / len(verdicts) if verdicts else 0.0,
        "n_layers": len(verdicts),
        "n_healthy": len(healthy),
        "n_vanishing": sum(v == VANISHING for v in verdicts.values()),
        "n_exploding": sum(v == EXPLODING for v in verdicts.values()),
        "vanishing": [name for name, v in verdicts.items() if v == VANISHING],
        "exploding": [name for name, v in verdicts.items() if v == EXPLODING],
    }
    if notebook is not None:
        observable = set(notebook.hooked) - set(notebook.unobservable)
        healthy_seen = sum(name in observable for name in healthy)
        out["health_score_notebook"] = healthy_seen / len(notebook.hooked) if notebook.hooked else 0.0
    return out


def decay_ratios(norms: Sequence[float]) -> list[float]:
    """norm[i] / norm[i+1] for consecutive layers, skipping zero denominators (protocol 5.4)."""
    return [a / b for a, b in zip(norms[:-1], norms[1:]) if b > 0]


@dataclass
class FlowPatterns:
    """Protocol 5.4 with names kept beside their values and robust summaries of the decay ratios."""

    decay_rates: list[float]  # consecutive ratios in forward order
    decay_rate_median: float | None
    decay_rate_geomean: float | None  # geometric mean of the positive ratios
    decay_rate_mean_notebook: float | None  # arithmetic mean, registration order, as the original
    bottlenecks: list[dict]  # {"name", "mean_norm", "position"}: position = forward index / layers


def flow_patterns(
    forward_names: Sequence[str],
    forward_norms: Sequence[float],
    notebook_norms: Sequence[float],
) -> FlowPatterns:
    """``forward_*``: layers with data in forward order; ``notebook_norms``: the mean norms the
    original would have listed (its observable hooks, in registration order), for its decay mean."""
    ratios = decay_ratios(forward_norms)
    positive = [r for r in ratios if r > 0]
    notebook_ratios = decay_ratios(notebook_norms)
    norms = np.asarray(forward_norms, dtype=np.float64)
    bottlenecks = []
    if len(norms):
        threshold = norms.mean() - 2 * norms.std()
        bottlenecks = [
            {"name": name, "mean_norm": float(norm), "position": index / len(norms)}
            for index, (name, norm) in enumerate(zip(forward_names, norms))
            if 0 < norm < threshold
        ]
    return FlowPatterns(
        decay_rates=ratios,
        decay_rate_median=float(np.median(ratios)) if ratios else None,
        decay_rate_geomean=float(np.exp(np.mean(np.log(positive)))) if positive else None,
        decay_rate_mean_notebook=float(np.mean(notebook_ratios)) if notebook_ratios else None,
        bottlenecks=bottlenecks,
    )
