"""Across datasets: does a model beat a baseline on the datasets where both ran with the same settings?

The statistics follow rliable (Agarwal et al., "Deep RL at the edge of the statistical precipice",
NeurIPS 2021; google-research/rliable), computed here on the runs' scores (%):

- probability of improvement: per dataset, the chance that a seed of the model scores above a seed
  of the baseline (the Mann-Whitney U statistic over all seed pairs divided by their number, ties
  counting one half), averaged over the datasets;
- the interquartile mean (25 % trimmed mean) of chance-normalised scores, (score - chance) /
  (100 - chance) with chance = 100 / classes, over every run of every dataset;
- the mean rank among the compared models (per dataset, by mean score; 1 is best);
- each with a 95 % stratified bootstrap interval: seeds resampled with replacement within each
  dataset and model, the datasets kept.

The test over datasets is a Wilcoxon signed-rank test on the per-dataset differences of mean
scores (exact with few datasets), beside the sign count. A verdict says "helps" only where the
probability of improvement's interval lies above 1/2 and the Wilcoxon test rejects at 5 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.results.cost import CostRatio

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
POWER = 0.80
MAX_SEEDS_SHOWN = 1000


Scores = dict[str, dict[str, np.ndarray]]  # model -> dataset -> the scores of its seeds (%)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def shown(self, digits: int = 2) -> str:
        if math.isnan(self.value):
            return ""
        if math.isnan(self.low):
            return f"{self.value:.{digits}f} [no interval: one seed]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


# -- point estimates (rliable's definitions) -----------------------------------------------------


def improvement_probability(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> float:
    """P(ours > theirs) per dataset over every pair of seeds (ties one half), averaged over datasets."""
    per_dataset = []
    for dataset in ours:
        x, y = np.asarray(ours[dataset], float), np.asarray(theirs[dataset], float)
        above = (x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum()
        per_dataset.append(above / (x.size * y.size))
    return float(np.mean(per_dataset))


def normalised(scores: dict[str, np.ndarray], classes: dict[str, int]) -> np.ndarray:
    """Every run's score as (score - chance) / (100 - chance), chance = 100 / classes, flattened."""
    parts = []
    for dataset, values in scores.items():
        chance = 100.0 / classes[dataset] if classes.get(dataset) else 0.0
        parts.append((np.asarray(values, float) - chance) / (100.0 - chance))
    return np.concatenate(parts) if parts else np.array([])


def interquartile_mean(values: np.ndarray) -> float:
    """The 25 % trimmed mean over all runs (rliable's aggregate_iqm: scipy's trim_mean, axis None)."""
    from scipy import stats

    return float(stats.trim_mean(np.asarray(values, float), proportiontocut=0.25, axis=None)) if len(values) else math.nan


def mean_ranks(scores: Scores, datasets: list[str]) -> dict[str, float]:
    """Each model's rank by mean score on each dataset (1 best, ties averaged), averaged over datasets."""
    from scipy import stats

    models = list(scores)
    ranks = np.zeros(len(models))
    for dataset in datasets:
        means = np.array([np.mean(scores[m][dataset]) for m in models])
        ranks += stats.rankdata(-means)
    return {m: float(r / len(datasets)) for m, r in zip(models, ranks)}


# -- intervals: the stratified bootstrap ---------------------------------------------------------------


def _resampled(scores: Scores, rng: np.random.Generator) -> Scores:
    """One stratified bootstrap draw: each (model, dataset)'s seeds resampled with replacement."""
    return {m: {d: v[rng.integers(0, v.size, v.size)] for d, v in by.items()} for m, by in scores.items()}


def bootstrap(statistic, scores: Scores, samples: int = BOOTSTRAP_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % percentile interval of ``statistic(scores)`` (a float or a vector) under the
    stratified bootstrap; reproducible (a fixed seed)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    arrays = {m: {d: np.asarray(v, float) for d, v in by.items()} for m, by in scores.items()}
    draws = np.array([statistic(_resampled(arrays, rng)) for _ in range(samples)])
    tail = 100 * (1 - LEVEL) / 2
    return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)


def _no_interval(statistic, scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Resampling one seed gives it back every time: no interval, rather than one that reads as certain."""
    missing = np.full(np.shape(statistic(scores)), np.nan)
    return missing, missing


# -- the test over datasets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRank:
    datasets: int
    better: int
    worse: int
    ties: int
    p: float  # Wilcoxon signed-rank, two-sided; NaN where every difference is zero
    method: str
    smallest_p: float  # the smallest p this many datasets can give (exact test)


def signed_rank(differences: list[float]) -> SignedRank:
    """Wilcoxon signed-rank over per-dataset mean differences (exact for up to 25 datasets without
    ties or zeros), and the sign count. Differences within 1e-9 points of zero are ties."""
    from scipy import stats

    d = np.asarray(differences, float)
    d = np.where(np.abs(d) < 1e-9, 0.0, d)
    better, worse = int((d > 0).sum()), int((d < 0).sum())
    nonzero = d[d != 0]
    smallest = 2.0 / 2 ** len(nonzero) if len(nonzero) else math.nan
    if not len(nonzero):
        return SignedRank(len(d), better, worse, len(d) - better - worse, math.nan, "every difference is zero", smallest)
    exact = len(nonzero) <= 25 and len(np.unique(np.abs(nonzero))) == len(nonzero)
    method = "exact" if exact else "approx"
    p = float(stats.wilcoxon(nonzero, method=method).pvalue)
    return SignedRank(len(d), better, worse, len(d) - better - worse, min(1.0, p), f"Wilcoxon signed-rank ({method})", min(1.0, smallest))


# -- how many seeds ---------------------------------------------------------------------------------------


def resolvable_difference(pooled_sd: float, seeds: int) -> float:
    """The smallest seed-paired difference (points) a paired t-test at 5 % finds with 80 % power, given
    the pooled seed spread of one configuration (a difference's spread is taken as sqrt(2) times it)."""
    from scipy import stats

    if seeds < 2 or not math.isfinite(pooled_sd):
        return math.nan
    spread = math.sqrt(2) * pooled_sd
    return float((stats.t.ppf(1 - ALPHA / 2, seeds - 1) + stats.t.ppf(POWER, seeds - 1)) * spread / math.sqrt(seeds))


def seeds_needed(pooled_sd: float, difference: float) -> int | None:
    """The fewest seeds whose resolvable difference is at most ``difference``; None past 1000."""
    if not (math.isfinite(pooled_sd) and math.isfinite(difference)) or difference == 0:
        return None
    for seeds in range(2, MAX_SEEDS_SHOWN + 1):
        if resolvable_difference(pooled_sd, seeds) <= abs(difference):
            return seeds
    return None


# -- one comparison ----------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One model against one baseline over the datasets where both ran with the same settings."""

    model: str
    baseline: str
    family: str  # the settings the datasets share: mode, splits and any override
    datasets: list[str]
    seeds: list[int]  # per dataset, the fewer of the two models' seed counts
    improvement: Estimate
    iqm: Estimate
    iqm_baseline: Estimate
    rank: Estimate
    rank_baseline: Estimate
    test: SignedRank
    role: str  # primary, exploratory, or baseline-only
    differences: dict[str, float] = field(default_factory=dict)  # dataset -> mean difference (points)
    cost: CostRatio | None = None  # the model's cost over the baseline's (bench.results.cost)

    @property
    def conclusion(self) -> str:
        significant = not math.isnan(self.test.p) and self.test.p < ALPHA
        if significant and self.improvement.low > 0.5:
            return "helps"
        if significant and self.improvement.high < 0.5:
            return "hurts"
        return "not shown to help" if self.improvement.value >= 0.5 or math.isnan(self.improvement.value) else "not shown to differ"

    def sentence(self) -> str:
        """The verdict in plain words, e.g. "gradattn-rope vs resnet18 on 8 datasets, 3 seeds each:
        P(improvement) 0.61 [0.48, 0.74], better on 5 of 8 (Wilcoxon p = 0.25): not shown to help"."""
        seeds = f"{self.seeds[0]} seed{'s' if self.seeds[0] > 1 else ''} each" if len(set(self.seeds)) == 1 else f"{min(self.seeds)}-{max(self.seeds)} seeds"
        p = "no test: every difference is zero" if math.isnan(self.test.p) else f"Wilcoxon p = {self.test.p:.2g}"
        words = (
            f"{self.model} vs {self.baseline} on {len(self.datasets)} dataset{'s' if len(self.datasets) > 1 else ''}, {seeds}: "
            f"P(improvement) {self.improvement.shown()}, better on {self.test.better} of {self.test.datasets} ({p}): {self.conclusion}"
        )
        if min(self.seeds) < 2:
            words += "; one seed measures one training run, not the architecture: add seeds (bench run ... --seeds 42,43,44)"
        if self.test.smallest_p >= ALPHA:
            words += f" (with {self.test.datasets} dataset{'s' if self.test.datasets > 1 else ''} no p below {self.test.smallest_p:.2g} is possible)"
        if self.cost is not None and self.cost.words():
            words += f"; at {self.cost.words()}"
        return words if self.role != "exploratory" else f"[exploratory] {words}"


def compare(model: str, baseline: str, scores: Scores, classes: dict[str, int], family: str, role: str) -> Comparison:
    """``model`` against ``baseline`` on the datasets both have in ``scores`` (the family's)."""
    datasets = [d for d in scores[model] if d in scores[baseline]]
    pair = {model: {d: scores[model][d] for d in datasets}, baseline: {d: scores[baseline][d] for d in datasets}}
    everyone = {m: {d: by[d] for d in datasets} for m, by in scores.items() if all(d in by for d in datasets)}
    classes_of = {d: classes.get(d, 0) for d in datasets}

    def poi(s):
        return improvement_probability(s[model], s[baseline])

    def iqms(s):
        return np.array([interquartile_mean(normalised(s[model], classes_of)), interquartile_mean(normalised(s[baseline], classes_of))])

    def ranks(s):
        found = mean_ranks(s, datasets)
        return np.array([found[model], found[baseline]])

    seeds = [min(len(pair[model][d]), len(pair[baseline][d])) for d in datasets]
    interval = bootstrap if min(seeds) >= 2 else _no_interval
    low, high = interval(poi, pair)
    improvement = Estimate(poi(pair), float(low), float(high))
    low, high = interval(iqms, pair)
    point = iqms(pair)
    rank_low, rank_high = interval(ranks, everyone)
    rank_point = ranks(everyone)
    differences = {d: float(np.mean(pair[model][d]) - np.mean(pair[baseline][d])) for d in datasets}
    return Comparison(
        model, baseline, family, datasets, seeds,
        improvement, Estimate(point[0], low[0], high[0]), Estimate(point[1], low[1], high[1]),
        Estimate(rank_point[0], rank_low[0], rank_high[0]), Estimate(rank_point[1], rank_low[1], rank_high[1]),
        signed_rank(list(differences.values())), role, differences,
    )
