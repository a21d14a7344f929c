"""Test-set metrics of protocol section 4, plus what the original lacked (confusion matrix,
per-class table, balanced accuracy, ROC-AUC).

Everything is computed from the full logits and labels of a split, in float64 on the CPU, so the
numbers do not depend on batch size or device. The definitions follow the protocol exactly; where the
protocol delegates to scikit-learn (precision/recall/F1), the same conventions are reproduced here and
the tests check them against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import pandas as pd

TOP_K = (1, 3, 5)  # protocol 4: top-1/3/5, k capped at the class count
ECE_BINS = 10  # protocol 4
ENTROPY_EPS = 1e-8  # protocol 4: added inside both factors of -sum p log p


@dataclass
class ClassificationReport:
    scalars: dict[str, float]
    confusion: np.ndarray  # K x K, rows = true class, columns = predicted class
    per_class: "pd.DataFrame" = field(repr=False)  # class, precision, recall, f1, support
    # per example, in split order: what paired tests across models need
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str] | None = None
) -> ClassificationReport:
    """All metrics of one split from its logits [N, K] and integer labels [N]."""
    import pandas as pd

    logits, labels = _validated(logits, labels)
    num_classes = logits.shape[1]
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    elif len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} logit columns")

    probs = torch.softmax(logits, dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = predicted == labels
    y_true, y_pred = labels.numpy(), predicted.numpy()
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1, support = _per_class_prf(confusion)

    scalars: dict[str, float] = {"test_loss": float(F.cross_entropy(logits, labels))}
    for k in TOP_K:
        if k <= num_classes:
            scalars[f"top{k}"] = top_k_accuracy(logits, labels, k)
    scalars.update(_averaged_prf(confusion, precision, recall, f1, support))
    scalars["avg_confidence"] = float(confidence.mean())
    scalars["std_confidence"] = float(confidence.std(correction=0))
    p = probs + ENTROPY_EPS
    scalars["avg_entropy"] = float((-(p * p.log()).sum(dim=1)).mean())
    scalars["ece"] = expected_calibration_error(confidence.numpy(), correct.numpy())
    scalars["balanced_accuracy"] = float(recall[support > 0].mean())
    auc = roc_auc(probs.numpy(), y_true)
    if auc is not None:
        scalars["roc_auc"] = auc

    per_class = pd.DataFrame(
        {"class": list(class_names), "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    return ClassificationReport(scalars=scalars, confusion=confusion, per_class=per_class, labels=y_true, predictions=y_pred)


def _validated(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"need logits [N, K] and labels [N] with N > 0, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}")
    return logits, labels


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits (protocol 4)."""
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).double().mean())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # scikit-learn's zero_division=0: an undefined ratio counts as 0
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _per_class_prf(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support.astype(np.float64))
    f1 = _safe_divide(2 * tp, predicted + support)  # = 2PR/(P+R), 0 where undefined
    return precision, recall, f1, support


def _averaged_prf(
    confusion: np.ndarray, precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, support: np.ndarray
) -> dict[str, float]:
    # protocol 4 delegates to sklearn, whose macro average runs over the classes present in the
    # true or the predicted labels, not over all K columns
    present = (support > 0) | (confusion.sum(axis=0) > 0)
    weights = support / support.sum()
    out = {}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(values[present].mean())
        out[f"{name}_weighted"] = float((values * weights).sum())
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of protocol 4: equal-width bins, a sample is in bin b iff lower_b < conf <= upper_b."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    accuracy = correct.astype(np.float64)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lower) & (confidence <= upper)
        if in_bin.any():
            ece += abs(confidence[in_bin].mean() - accuracy[in_bin].mean()) * in_bin.mean()
    return float(ece)


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    # Mann-Whitney U with mid-ranks for ties = area under the ROC curve
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(probs: np.ndarray, y_true: np.ndarray) -> float | None:
    """One-vs-rest macro AUC (K > 2) or the AUC of class 1 (K = 2); None if some class is absent."""
    num_classes = probs.shape[1]
    if num_classes < 2 or np.bincount(y_true, minlength=num_classes).min() == 0:
        return None
    if num_classes == 2:
        return _binary_auc(probs[:, 1], y_true == 1)
    return float(np.mean([_binary_auc(probs[:, c], y_true == c) for c in range(num_classes)]))
