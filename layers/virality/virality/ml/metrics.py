"""Classification metrics for the five virality tiers (pure NumPy).

Labels here are class indices ``0..n_classes-1``; reports name them tiers 1..5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np

from virality.structs import Record, described


class Report(Record, frozen=True, forbid_unknown_fields=False):
    """Base of the metrics records. Unlike the rest of the artifact, a metric this code does not know
    is ignored, not refused: a model a later version trained (and measured more) still loads."""


class ClassReport(Report, frozen=True, kw_only=True):
    tier: int
    precision: float
    recall: float
    f1: float
    support: int


class ReliabilityBin(Report, frozen=True, kw_only=True):
    """One equal-width confidence bin of a reliability table."""

    lower: Annotated[float, described("inclusive lower edge of the bin")]
    upper: Annotated[float, described("upper edge (exclusive, except 1.0 for the last bin)")]
    count: Annotated[int, described("rows whose top-tier confidence falls in the bin")]
    meanConfidence: Annotated[float | None, described("None when the bin is empty")] = None
    accuracy: Annotated[float | None, described("share of those rows predicted correctly; None when empty")] = None


class Interval(Report, frozen=True, kw_only=True):
    """A point estimate with a bootstrap percentile interval."""

    estimate: Annotated[float, described("the metric on the full split")]
    low: Annotated[float, described("lower end of the percentile interval")]
    high: Annotated[float, described("upper end of the percentile interval")]
    level: Annotated[float, described("coverage of the interval")] = 0.95
    nResamples: int
    seed: int


class EvaluationReport(Report, frozen=True, kw_only=True):
    """Metrics of a model on one labelled split."""

    nSamples: int
    accuracy: float
    confusionMatrix: Annotated[list[list[int]], described("rows = actual tier, columns = predicted tier")]
    perClass: list[ClassReport]
    macroF1: float
    logLoss: float
    ece: Annotated[float, described("expected calibration error of the top-tier confidence, 10 equal-width bins")]
    majorityBaselineAccuracy: Annotated[float, described("accuracy of always predicting the most frequent tier of this split")]
    # Added with the model-quality work; optional so earlier artifacts still load.
    brier: Annotated[float | None, described("multiclass Brier score, sum over tiers (0 = perfect, max 2)")] = None
    classwiseEce: Annotated[float | None, described("mean over tiers of each tier's ECE, 10 equal-width bins")] = None
    mce: Annotated[float | None, described("maximum calibration error over the 10 top-label bins")] = None
    reliability: Annotated[list[ReliabilityBin] | None, described("per top-label confidence bin: count, mean confidence, accuracy")] = None
    intervals: Annotated[dict[str, Interval] | None, described("bootstrap 95% intervals of accuracy, macroF1, logLoss and ece")] = None


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
    """ECE of the top-label confidence over ``n_bins`` equal-width bins of [0, 1].

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)
    n_bins : int

    Returns
    -------
    float
        ``sum_b |#correct_b - sum of confidences_b| / n``, i.e. the count-weighted
        mean ``|accuracy_b - confidence_b|``; 0.0 when there are no rows.
    """
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    bins = _bin_index(confidence, n_bins)
    gap = np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(bins, weights=confidence,
                                                                             minlength=n_bins)
    return float(np.abs(gap).sum()) / max(1, y_true.shape[0])


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of ``sum_k (p_ik - [y_i = k])^2``.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)

    Returns
    -------
    float
        In ``[0, 2]``; 0 for perfect, confident predictions. (Not halved: this is
        the original Brier (1950) sum over classes.)
    """
    n = y_true.shape[0]
    if n == 0:
        return 0.0
    sq = np.einsum("ij,ij->i", proba, proba)                 # sum_k p_ik^2
    sq -= 2.0 * proba[np.arange(n), y_true]
    return float(np.mean(sq) + 1.0)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # equal-width bins of [0, 1]; confidence 1.0 falls in the last bin
    return np.minimum((confidence * n_bins).astype(np.intp), n_bins - 1)


def reliability_table(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> list[ReliabilityBin]:
    """Top-label reliability table over ``n_bins`` equal-width bins of [0, 1].

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)
    n_bins : int

    Returns
    -------
    list of ReliabilityBin, length ``n_bins``
        Per bin: count, mean top-label confidence and accuracy. ECE is
        ``sum_b count_b |accuracy_b - confidence_b| / n``.
    """
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    bins = _bin_index(confidence, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    table = []
    for b in range(n_bins):
        c = int(counts[b])
        table.append(ReliabilityBin(lower=b / n_bins, upper=(b + 1) / n_bins, count=c,
                                    meanConfidence=float(conf_sum[b] / c) if c else None,
                                    accuracy=float(acc_sum[b] / c) if c else None))
    return table


def maximum_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """MCE: the largest ``|accuracy - confidence|`` over the non-empty top-label bins.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)
    n_bins : int
        Equal-width bins of [0, 1], as :func:`expected_calibration_error`.

    Returns
    -------
    float
        0.0 when there are no rows.
    """
    gaps = [abs(b.accuracy - b.meanConfidence) for b in reliability_table(y_true, proba, n_bins)
            if b.accuracy is not None and b.meanConfidence is not None]
    return float(max(gaps)) if gaps else 0.0


def classwise_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Classwise-ECE (Kull et al. 2019): the mean over classes of each class's ECE.

    For class ``k`` the rows are binned by ``p_ik`` (equal-width bins of [0, 1])
    and each bin compares the mean ``p_ik`` with the observed frequency of
    ``y_i = k``; the class's error is the count-weighted mean absolute gap.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)
    n_bins : int

    Returns
    -------
    float
        Mean over all ``n_classes`` classes; 0.0 when there are no rows.
    """
    n, n_classes = proba.shape
    if n == 0:
        return 0.0
    total = 0.0
    for k in range(n_classes):
        pk = proba[:, k]
        hit = (y_true == k).astype(np.float64)
        bins = _bin_index(pk, n_bins)
        p_sum = np.bincount(bins, weights=pk, minlength=n_bins)
        h_sum = np.bincount(bins, weights=hit, minlength=n_bins)
        total += float(np.abs(p_sum - h_sum).sum()) / n      # |sum p - sum hit| = count * |mean gap|
    return total / n_classes


def bootstrap_interval(metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray,
                       proba: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> Interval:
    """Seeded percentile-bootstrap interval of ``metric(y_true, proba)``.

    Rows are resampled with replacement ``n_resamples`` times from
    ``numpy.random.default_rng(seed)``; the interval is the
    ``(1 - level)/2`` and ``(1 + level)/2`` percentiles of the resampled values.

    Parameters
    ----------
    metric : callable ``(y_true, proba) -> float``
        E.g. :func:`log_loss`, :func:`expected_calibration_error`, or
        ``lambda y, p: accuracy(y, p)``.
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)
    n_resamples : int
    level : float in (0, 1)
    seed : int
        Same seed and inputs give the same interval.

    Returns
    -------
    Interval
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    n = int(y_true.shape[0])
    estimate = float(metric(y_true, proba))
    if n == 0:
        return Interval(estimate=estimate, low=estimate, high=estimate, level=level,
                        nResamples=n_resamples, seed=seed)
    values = np.empty(n_resamples)
    r = 0
    for block in _resample_blocks(n, n_resamples, seed):
        for idx in block:
            values[r] = metric(y_true[idx], proba[idx])
            r += 1
    return _percentile_interval(estimate, values, level, n_resamples, seed)


#: Bootstrap index matrices are built this many entries at a time (bounds memory).
_BLOCK_ENTRIES = 1 << 22


def _resample_blocks(n: int, n_resamples: int, seed: int):
    """Yield ``(m, n)`` blocks of bootstrap row indices, ``n_resamples`` rows in all.

    Every resample is one ``rng.integers(0, n, n)`` call, so the draws do not
    depend on the block size and every caller with the same seed sees the
    same resamples.
    """
    rng = np.random.default_rng(seed)
    per_block = max(1, _BLOCK_ENTRIES // max(1, n))
    done = 0
    while done < n_resamples:
        m = min(per_block, n_resamples - done)
        yield np.stack([rng.integers(0, n, n) for _ in range(m)])
        done += m


def _percentile_interval(estimate: float, values: np.ndarray, level: float, n_resamples: int,
                         seed: int) -> Interval:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate=estimate, low=float(low), high=float(high), level=level,
                    nResamples=n_resamples, seed=seed)


def bootstrap_intervals(y_true: np.ndarray, proba: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
                        level: float = 0.95, n_bins: int = 10) -> dict[str, Interval]:
    """Bootstrap intervals of every metric in :data:`INTERVAL_METRICS`, vectorised over resamples.

    Same resamples and values as :func:`bootstrap_interval` on each metric
    (a test checks it), at a small fraction of the cost: per-row quantities are
    computed once and each resample only gathers and bins them.
    """
    n, n_classes = proba.shape
    pred = proba.argmax(axis=1)
    confidence = proba.max(axis=1)
    correct = (pred == y_true).astype(np.float64)
    nll = -np.log(np.clip(proba[np.arange(n), y_true], 1e-15, 1.0))
    bins = _bin_index(confidence, n_bins)
    cell = y_true * n_classes + pred
    values = {name: np.empty(n_resamples) for name in INTERVAL_METRICS}
    r = 0
    for idx in _resample_blocks(n, n_resamples, seed):
        m = idx.shape[0]
        rows = slice(r, r + m)
        values["accuracy"][rows] = correct[idx].mean(axis=1)
        values["logLoss"][rows] = nll[idx].mean(axis=1)
        offset = (np.arange(m) * n_bins)[:, None]
        b = (bins[idx] + offset).ravel()
        gap = (np.bincount(b, weights=correct[idx].ravel(), minlength=m * n_bins)
               - np.bincount(b, weights=confidence[idx].ravel(), minlength=m * n_bins))
        values["ece"][rows] = np.abs(gap.reshape(m, n_bins)).sum(axis=1) / n
        kk = n_classes * n_classes
        cm = np.bincount((cell[idx] + (np.arange(m) * kk)[:, None]).ravel(),
                         minlength=m * kk).reshape(m, n_classes, n_classes).astype(np.float64)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        predicted, actual = cm.sum(axis=1), cm.sum(axis=2)
        # F1 = 2 tp / (predicted + actual): the same value as 2PR/(P+R), and 0 where tp = 0
        denom = predicted + actual
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        seen = denom > 0
        values["macroF1"][rows] = (f1 * seen).sum(axis=1) / np.maximum(1, seen.sum(axis=1))
        r += m
    estimates = {name: float(fn(y_true, proba)) for name, fn in INTERVAL_METRICS.items()}
    return {name: _percentile_interval(estimates[name], values[name], level, n_resamples, seed)
            for name in INTERVAL_METRICS}


def accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Share of rows whose most probable class is ``y_true`` (0.0 when empty)."""
    return float(np.mean(proba.argmax(axis=1) == y_true)) if y_true.shape[0] else 0.0


def macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``y_true`` or predicted (as :func:`evaluate`)."""
    cm = confusion_matrix(y_true, proba.argmax(axis=1), proba.shape[1])
    f1 = precision_recall_f1(cm)[2]
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(f1[seen].mean()) if seen.any() else 0.0


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


#: Metrics that get a bootstrap interval in :func:`evaluate`, by report name.
INTERVAL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "macroF1": macro_f1, "logLoss": log_loss, "ece": expected_calibration_error,
}


def evaluate(y_true: np.ndarray, proba: np.ndarray, *, n_resamples: int = 0, seed: int = 0) -> EvaluationReport:
    """All test-split metrics.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,), class indices
    proba : ndarray of shape (n_samples, n_classes)
    n_resamples : int
        Bootstrap resamples for the 95% intervals of :data:`INTERVAL_METRICS`;
        0 (default) skips them.
    seed : int
        Bootstrap seed.

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
        nSamples=n,
        accuracy=float(np.mean(y_pred == y_true)) if n else 0.0,
        confusionMatrix=cm.tolist(),
        perClass=[ClassReport(tier=k + 1, precision=float(precision[k]), recall=float(recall[k]),
                               f1=float(f1[k]), support=int(counts[k])) for k in range(n_classes)],
        macroF1=float(f1[seen].mean()) if seen.any() else 0.0,
        logLoss=log_loss(y_true, proba) if n else 0.0,
        ece=expected_calibration_error(y_true, proba),
        majorityBaselineAccuracy=float(counts.max() / n) if n else 0.0,
        brier=brier_score(y_true, proba),
        classwiseEce=classwise_calibration_error(y_true, proba),
        mce=maximum_calibration_error(y_true, proba),
        reliability=reliability_table(y_true, proba),
        intervals=bootstrap_intervals(y_true, proba, n_resamples=n_resamples, seed=seed) if n_resamples and n else None,
    )
