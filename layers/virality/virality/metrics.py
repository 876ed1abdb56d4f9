"""Classification metrics for the five virality tiers (pure NumPy).

Labels here are class indices ``0..n_classes-1``; reports name them tiers 1..5.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field


class ClassReport(BaseModel):
    tier: int
    precision: float
    recall: float
    f1: float
    support: int


class EvaluationReport(BaseModel):
    """Metrics of a model on one labelled split."""

    n_samples: int = Field(alias="nSamples")
    accuracy: float
    confusion_matrix: list[list[int]] = Field(alias="confusionMatrix",
                                              description="rows = actual tier, columns = predicted tier")
    per_class: list[ClassReport] = Field(alias="perClass")
    macro_f1: float = Field(alias="macroF1")
    log_loss: float = Field(alias="logLoss")
    ece: float = Field(description="expected calibration error of the top-tier confidence, 10 equal-width bins")
    majority_baseline_accuracy: float = Field(alias="majorityBaselineAccuracy",
                                              description="accuracy of always predicting the most frequent tier of this split")

    model_config = {"populate_by_name": True}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 5) -> np.ndarray:
    """Counts, shape (n_classes, n_classes): rows = actual, columns = predicted."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def population_stability_index(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    """PSI of two distributions over the same categories (e.g. the tier mix).

    ``sum_k (a_k - e_k) * ln(a_k / e_k)`` over the shares ``a = actual / sum(actual)`` and
    ``e = expected / sum(expected)``; a share of 0 is raised to ``eps`` (then both are
    renormalised) so an empty category costs a large but finite amount. Rule of thumb:
    < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a major shift.

    Parameters
    ----------
    expected : ndarray of shape (n_categories,), counts or shares (e.g. the training tier mix)
    actual : ndarray of shape (n_categories,), counts or shares (e.g. the outcomes' tier mix)

    Returns
    -------
    float
        >= 0; 0 when the two mixes are equal.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.sum() <= 0 or a.sum() <= 0 or (e < 0).any() or (a < 0).any():
        raise ValueError("expected and actual must be non-negative 1-D counts of the same length, each with a positive sum")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def log_loss(y_true: np.ndarray, proba: np.ndarray, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood, probabilities clipped to ``[eps, 1]``."""
    p = np.clip(proba[np.arange(y_true.shape[0]), y_true], eps, 1.0)
    return float(-np.mean(np.log(p)))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the top-label confidence over ``n_bins`` equal-width bins of [0, 1]."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(float(correct[mask].mean()) - float(confidence[mask].mean()))
    return total / max(1, y_true.shape[0])


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def evaluate(y_true: np.ndarray, proba: np.ndarray) -> EvaluationReport:
    """All test-split metrics.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)

    Macro-F1 averages over the classes present in ``y_true`` or predicted.
    """
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    precision, recall, f1 = precision_recall_f1(cm)
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    counts = cm.sum(axis=1)
    n = int(y_true.shape[0])
    return EvaluationReport(
        n_samples=n,
        accuracy=float(np.mean(y_pred == y_true)) if n else 0.0,
        confusion_matrix=cm.tolist(),
        per_class=[ClassReport(tier=k + 1, precision=float(precision[k]), recall=float(recall[k]),
                               f1=float(f1[k]), support=int(counts[k])) for k in range(n_classes)],
        macro_f1=float(f1[seen].mean()) if seen.any() else 0.0,
        log_loss=log_loss(y_true, proba) if n else 0.0,
        ece=expected_calibration_error(y_true, proba),
        majority_baseline_accuracy=float(counts.max() / n) if n else 0.0,
    )
