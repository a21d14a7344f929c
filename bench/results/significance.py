"""The statistics of `bench report`: confidence intervals, paired tests and their correction.

Over seeds: a mean's 95 % interval is Student's t with n - 1 degrees of freedom; a difference to the
baseline is taken over the seeds both have (paired), with its t interval, and a paired t-test only
from three pairs on (with two, one degree of freedom makes a p-value meaningless). With a single
seed pair the comparison is over the test examples instead: an exact McNemar test on the
discordant examples and a paired bootstrap interval of the accuracy difference. p-values of one
dataset's comparisons are Holm-corrected together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
MIN_PAIRS_FOR_P = 3
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0  # the interval is reproducible
BOOTSTRAP_CHUNK = 1 << 20  # resampled examples held at once (8 MB of indices, 8 MB of their differences)
T_TEST = "paired t over seeds"
CONSTANT_TOLERANCE = 1e-9  # points: differences closer than this across seeds are one constant difference
MCNEMAR = "exact McNemar over test examples"


def t_interval(values) -> tuple[float, float]:
    """(mean, half-width of its 95 % t interval); the half-width is NaN below two values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if values.size else math.nan
    if values.size < 2:
        return mean, math.nan
    sem = float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, float(stats.t.ppf(0.5 + LEVEL / 2, values.size - 1)) * sem


@dataclass(frozen=True)
class Comparison:
    """Ours minus the baseline, in accuracy points."""

    pairs: int
    delta: float
    low: float
    high: float
    p: float  # NaN where no test applies
    test: str  # which test gave p (and the interval), or why there is none


def paired_over_seeds(ours: dict[int, float], baseline: dict[int, float]) -> Comparison | None:
    """Seed-paired difference; None without a common seed."""
    from scipy import stats

    common = sorted(set(ours) & set(baseline))
    if not common:
        return None
    diffs = np.array([ours[s] - baseline[s] for s in common])
    delta, half = t_interval(diffs)
    p, test = math.nan, f"{T_TEST}: needs n >= {MIN_PAIRS_FOR_P}"
    if len(common) >= MIN_PAIRS_FOR_P:
        # Accuracies are ratios of whole examples: a difference of the same examples on every seed
        # differs between seeds only by rounding (~1e-14), which a t-test would take for certainty.
        if float(np.ptp(diffs)) <= CONSTANT_TOLERANCE:
            test = f"{T_TEST}: undefined, the difference is the same for every seed"
            half = 0.0
        else:
            p, test = float(stats.ttest_rel([ours[s] for s in common], [baseline[s] for s in common]).pvalue), T_TEST
    return Comparison(len(common), delta, delta - half, delta + half, p, test)


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy (points) from its counts: the test set's sampling
    interval of a single run's score."""
    from scipy import stats

    if trials <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + LEVEL / 2))
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return 100 * (centre - half), 100 * (centre + half)


def mcnemar_exact(ours_correct: np.ndarray, baseline_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p: a binomial test of the discordant examples at 1/2."""
    from scipy import stats

    b = int(np.sum(ours_correct & ~baseline_correct))
    c = int(np.sum(~ours_correct & baseline_correct))
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5)))


def paired_bootstrap(
    ours_correct: np.ndarray, baseline_correct: np.ndarray, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[float, float]:
    """95 % percentile interval of the accuracy difference (points), resampling test examples.

    The resamples are drawn a few rows at a time from the one seeded stream, so memory is O(n) for any
    test-set size (a whole resamples x n draw was 2.9 GB at SVHN's 94,563 test examples); the rows,
    and so the interval, are the ones a single draw of every resample gives.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diff = ours_correct.astype(float) - baseline_correct.astype(float)
    rows = max(1, BOOTSTRAP_CHUNK // max(diff.size, 1))
    means = np.empty(samples)
    for start in range(0, samples, rows):
        stop = min(start + rows, samples)
        draws = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = 100 * diff[draws].mean(axis=1)
    tail = 100 * (1 - LEVEL) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_over_examples(ours_correct: np.ndarray, baseline_correct: np.ndarray) -> Comparison:
    """One seed each, the same test examples in the same order: McNemar and a bootstrap interval."""
    low, high = paired_bootstrap(ours_correct, baseline_correct)
    delta = 100 * float(ours_correct.mean() - baseline_correct.mean())
    return Comparison(1, delta, low, high, mcnemar_exact(ours_correct, baseline_correct), f"{MCNEMAR}, bootstrap interval")


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a comparison)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted
