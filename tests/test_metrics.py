"""bench.train.metrics against scikit-learn and hand-computed cases (protocol 4)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from bench.train.metrics import classification_metrics, expected_calibration_error


def _random_case(n: int, k: int, seed: int, absent: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=gen)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % k
    # logits that are informative but imperfect, so every metric is away from its extremes
    logits = torch.randn(n, k, generator=gen) + 2.0 * F.one_hot(labels, k)
    return logits.float(), labels


def _check_against_sklearn(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    report = classification_metrics(logits, labels)
    s = report.scalars
    k = logits.shape[1]
    probs = torch.softmax(logits.double(), dim=1).numpy()
    y, pred = labels.numpy(), probs.argmax(axis=1)
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        assert s[f"precision_{average}"] == pytest.approx(p, abs=1e-12)
        assert s[f"recall_{average}"] == pytest.approx(r, abs=1e-12)
        assert s[f"f1_{average}"] == pytest.approx(f, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a predicted class is absent from y_true
        expected_balanced = skm.balanced_accuracy_score(y, pred)
    assert s["balanced_accuracy"] == pytest.approx(expected_balanced, abs=1e-12)
    assert np.array_equal(report.confusion, skm.confusion_matrix(y, pred, labels=list(range(k))))
    for top in (1, 3, 5):
        if top <= k:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn warns that k = K is trivially 1
                expected = (
                    skm.accuracy_score(y, pred)  # sklearn's top-k takes 1-D scores when K = 2
                    if k == 2
                    else skm.top_k_accuracy_score(y, probs, k=top, labels=list(range(k)))
                )
            assert s[f"top{top}"] == pytest.approx(expected, abs=1e-12)
        else:
            assert f"top{top}" not in s
    p, r, f, support = skm.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    np.testing.assert_allclose(report.per_class["precision"], p, atol=1e-12)
    np.testing.assert_allclose(report.per_class["recall"], r, atol=1e-12)
    np.testing.assert_allclose(report.per_class["f1"], f, atol=1e-12)
    np.testing.assert_array_equal(report.per_class["support"], support)
    assert list(report.per_class.columns) == ["class", "precision", "recall", "f1", "support"]
    return s


def test_multiclass_metrics_match_sklearn():
    logits, labels = _random_case(300, 10, seed=1)
    s = _check_against_sklearn(logits, labels)
    probs = torch.softmax(logits.double(), dim=1).numpy()
    expected_auc = skm.roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro")
    assert s["roc_auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert 0.3 < s["top1"] < 0.95  # the case really is imperfect, so the comparisons mean something
    assert s["test_loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)


def test_binary_metrics_have_top1_only_and_binary_auc():
    logits, labels = _random_case(120, 2, seed=2)
    s = _check_against_sklearn(logits, labels)
    assert "top3" not in s and "top5" not in s
    probs = torch.softmax(logits.double(), dim=1).numpy()
    assert s["roc_auc"] == pytest.approx(skm.roc_auc_score(labels.numpy(), probs[:, 1]), abs=1e-12)


def test_auc_with_tied_scores_matches_sklearn():
    # identical logit rows give tied scores: the mid-rank convention must match sklearn's
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0, 0, 1, 1, 0])
    s = classification_metrics(logits, labels).scalars
    probs = torch.softmax(logits.double(), dim=1).numpy()
    assert s["roc_auc"] == pytest.approx(skm.roc_auc_score(labels.numpy(), probs[:, 1]), abs=1e-12)


def test_absent_class_omits_auc_and_follows_sklearn_label_set():
    # class 2 never occurs in the labels; predictions may still name it
    logits, labels = _random_case(200, 5, seed=3, absent=2)
    logits[:7, 2] += 10.0
    s = _check_against_sklearn(logits, labels)
    assert "roc_auc" not in s
    assert all(math.isfinite(v) for v in s.values())


def test_hand_computed_confidence_entropy_ece_loss():
    probs = torch.tensor([[0.75, 0.25], [0.78, 0.22], [0.95, 0.05], [0.55, 0.45]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    s = classification_metrics(probs.log(), labels, class_names=["neg", "pos"]).scalars
    conf = [0.75, 0.78, 0.95, 0.55]
    assert s["avg_confidence"] == pytest.approx(sum(conf) / 4, abs=1e-12)
    mean = sum(conf) / 4
    assert s["std_confidence"] == pytest.approx(math.sqrt(sum((c - mean) ** 2 for c in conf) / 4), abs=1e-12)
    entropy = [-sum((p + 1e-8) * math.log(p + 1e-8) for p in row) for row in probs.tolist()]
    assert s["avg_entropy"] == pytest.approx(sum(entropy) / 4, abs=1e-12)
    # bins (0.7, 0.8]: conf .75/.78, acc 1/0; (0.9, 1]: .95 right; (0.5, 0.6]: .55 wrong
    expected_ece = abs(0.765 - 0.5) * 2 / 4 + abs(0.95 - 1) / 4 + abs(0.55 - 0) / 4
    assert s["ece"] == pytest.approx(expected_ece, abs=1e-12)
    nll = [-math.log(0.75), -math.log(0.22), -math.log(0.95), -math.log(0.45)]
    assert s["test_loss"] == pytest.approx(sum(nll) / 4, abs=1e-12)
    assert s["top1"] == 0.5


def test_ece_bin_edges_are_lower_exclusive_upper_inclusive():
    # confidence 0 falls in no bin; 0.5 belongs to (0.4, 0.5]; 1.0 to (0.9, 1.0]
    conf = np.array([0.0, 0.5, 1.0])
    correct = np.array([False, True, True])
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5 / 3, abs=1e-15)


def test_per_class_table_uses_class_names_and_confusion_rows_are_true_labels():
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 2])
    report = classification_metrics(logits, labels, class_names=["a", "b", "c"])
    assert report.confusion.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert report.per_class["class"].tolist() == ["a", "b", "c"]
    assert report.per_class["support"].tolist() == [1, 2, 1]
    assert report.per_class["precision"].tolist() == [0.5, 1.0, 1.0]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        classification_metrics(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        classification_metrics(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError):
        classification_metrics(torch.zeros(2, 2), torch.tensor([0, 1]), class_names=["only one"])
