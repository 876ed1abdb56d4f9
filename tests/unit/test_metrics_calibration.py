"""Brier, classwise-ECE, MCE, reliability table and bootstrap intervals against slow reference code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from virality.ml import metrics as M
from virality.ml.metrics import (
    INTERVAL_METRICS,
    bootstrap_interval,
    brier_score,
    classwise_calibration_error,
    evaluate,
    expected_calibration_error,
    log_loss,
    maximum_calibration_error,
    reliability_table,
)
from virality.structs import from_builtins


def _data(n: int = 400, seed: int = 0, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Z = rng.normal(0, 2, (n, 5))
    P = np.exp(Z / temperature)
    P /= P.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in P])     # calibrated at temperature 1
    return y, P


# ---- slow references: plain loops over rows, written from the definitions


def _ref_bins(values, n_bins):
    out = [[] for _ in range(n_bins)]
    for i, v in enumerate(values):
        b = math.floor(v * n_bins)
        out[min(b, n_bins - 1)].append(i)
    return out


def _ref_brier(y, P):
    return sum(sum((P[i, k] - (1.0 if y[i] == k else 0.0)) ** 2 for k in range(P.shape[1]))
               for i in range(len(y))) / len(y)


def _ref_reliability(y, P, n_bins=10):
    conf = [max(row) for row in P]
    rows = []
    for members in _ref_bins(conf, n_bins):
        if not members:
            rows.append((0, None, None))
            continue
        c = sum(conf[i] for i in members) / len(members)
        a = sum(1 for i in members if int(np.argmax(P[i])) == y[i]) / len(members)
        rows.append((len(members), c, a))
    return rows


def _ref_ece(y, P, n_bins=10):
    return sum(cnt * abs(a - c) for cnt, c, a in _ref_reliability(y, P, n_bins) if cnt) / len(y)


def _ref_mce(y, P, n_bins=10):
    return max(abs(a - c) for cnt, c, a in _ref_reliability(y, P, n_bins) if cnt)


def _ref_classwise(y, P, n_bins=10):
    total = 0.0
    for k in range(P.shape[1]):
        err = 0.0
        for members in _ref_bins(P[:, k], n_bins):
            if members:
                freq = sum(1 for i in members if y[i] == k) / len(members)
                mean_p = sum(P[i, k] for i in members) / len(members)
                err += len(members) * abs(freq - mean_p)
        total += err / len(y)
    return total / P.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brier_matches_the_definition_and_sklearn_in_the_binary_case(seed):
    y, P = _data(seed=seed)
    assert brier_score(y, P) == pytest.approx(_ref_brier(y, P), rel=1e-12)
    # binary: the multiclass sum over two classes is twice scikit-learn's one-column score
    yb = (y == 0).astype(int)
    Pb = np.column_stack([1 - P[:, 0], P[:, 0]])
    assert brier_score(yb, Pb) == pytest.approx(2 * skm.brier_score_loss(yb, P[:, 0]), rel=1e-12)


def test_brier_bounds():
    y = np.array([0, 1, 2])
    assert brier_score(y, np.eye(5)[y]) == 0.0
    assert brier_score(y, np.eye(5)[(y + 1) % 5]) == pytest.approx(2.0)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("temperature", [0.4, 1.0, 3.0])
def test_reliability_ece_mce_classwise_match_references(seed, temperature):
    y, P = _data(seed=seed)
    P_t = np.exp(np.log(P) / temperature)
    P_t /= P_t.sum(axis=1, keepdims=True)
    table = reliability_table(y, P_t)
    ref = _ref_reliability(y, P_t)
    assert len(table) == 10 and sum(b.count for b in table) == len(y)
    for b, (cnt, c, a), k in zip(table, ref, range(10), strict=True):
        assert (b.lower, b.upper) == pytest.approx((k / 10, (k + 1) / 10))
        assert b.count == cnt
        if cnt:
            assert b.meanConfidence == pytest.approx(c, rel=1e-12)
            assert b.accuracy == pytest.approx(a, rel=1e-12)
        else:
            assert b.meanConfidence is None and b.accuracy is None
    assert expected_calibration_error(y, P_t) == pytest.approx(_ref_ece(y, P_t), abs=1e-12)
    assert maximum_calibration_error(y, P_t) == pytest.approx(_ref_mce(y, P_t), abs=1e-12)
    assert classwise_calibration_error(y, P_t) == pytest.approx(_ref_classwise(y, P_t), abs=1e-12)


def test_calibration_errors_see_miscalibration():
    # Given labels drawn from P, the same logits sharpened or flattened are miscalibrated
    y, P = _data(n=4000, seed=5)
    sharp = P ** 3 / (P ** 3).sum(axis=1, keepdims=True)
    flat = P ** 0.3 / (P ** 0.3).sum(axis=1, keepdims=True)
    for fn in (expected_calibration_error, classwise_calibration_error, maximum_calibration_error, brier_score):
        assert fn(y, P) < fn(y, sharp)
        assert fn(y, P) < fn(y, flat)
    assert expected_calibration_error(y, P) < 0.03


def test_confidence_one_lands_in_the_last_bin_and_empty_input_is_zero():
    y = np.array([0, 1])
    table = reliability_table(y, np.eye(5)[[0, 2]])
    assert table[-1].count == 2 and table[-1].accuracy == 0.5
    assert maximum_calibration_error(y, np.eye(5)[[0, 2]]) == pytest.approx(0.5)
    empty_y, empty_p = np.zeros(0, dtype=int), np.zeros((0, 5))
    assert brier_score(empty_y, empty_p) == 0.0
    assert classwise_calibration_error(empty_y, empty_p) == 0.0
    assert maximum_calibration_error(empty_y, empty_p) == 0.0


def _ref_bootstrap(metric, y, P, n_resamples, seed, level=0.95):
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y), len(y))
        vals.append(metric(y[idx], P[idx]))
    return np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])


def test_bootstrap_interval_is_the_seeded_percentile_bootstrap():
    y, P = _data(n=300, seed=7)
    got = bootstrap_interval(log_loss, y, P, n_resamples=200, seed=11)
    low, high = _ref_bootstrap(log_loss, y, P, 200, 11)
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)
    assert got.estimate == pytest.approx(log_loss(y, P))
    assert got.low <= got.estimate <= got.high
    assert bootstrap_interval(log_loss, y, P, n_resamples=200, seed=11) == got          # seeded
    assert bootstrap_interval(log_loss, y, P, n_resamples=200, seed=12) != got
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(log_loss, y, P, level=1.0)


def test_bootstrap_interval_covers_the_truth_and_narrows_with_n():
    # accuracy of a calibrated predictor is ~mean max p; the interval width shrinks like 1/sqrt(n)
    widths = []
    for n in (200, 3200):
        y, P = _data(n=n, seed=9)
        iv = bootstrap_interval(M.accuracy, y, P, n_resamples=300, seed=0)
        widths.append(iv.high - iv.low)
        assert iv.low < float(P.max(axis=1).mean()) < iv.high
    assert widths[1] < widths[0] / 2.5


def test_evaluate_intervals_equal_the_generic_bootstrap_of_each_metric():
    y, P = _data(n=500, seed=4)
    report = evaluate(y, P, n_resamples=150, seed=5)
    assert set(report.intervals) == set(INTERVAL_METRICS) == {"accuracy", "macroF1", "logLoss", "ece"}
    for name, fn in INTERVAL_METRICS.items():
        ref = bootstrap_interval(fn, y, P, n_resamples=150, seed=5)
        got = report.intervals[name]
        assert (got.low, got.high, got.estimate) == pytest.approx((ref.low, ref.high, ref.estimate), rel=1e-9)
    assert report.intervals["accuracy"].estimate == pytest.approx(report.accuracy)
    assert report.intervals["macroF1"].estimate == pytest.approx(report.macroF1)
    # the new scalar fields are the standalone functions
    assert report.brier == pytest.approx(brier_score(y, P))
    assert report.classwiseEce == pytest.approx(classwise_calibration_error(y, P))
    assert report.mce == pytest.approx(maximum_calibration_error(y, P))
    assert [b.count for b in report.reliability] == [b.count for b in reliability_table(y, P)]


def test_evaluate_without_resamples_has_no_intervals_and_old_reports_still_parse():
    y, P = _data(n=50)
    assert evaluate(y, P).intervals is None
    old = {"nSamples": 1, "accuracy": 1.0, "confusionMatrix": [[1]], "perClass": [], "macroF1": 1.0,
           "logLoss": 0.1, "ece": 0.0, "majorityBaselineAccuracy": 1.0}
    parsed = from_builtins(old, M.EvaluationReport)
    assert parsed.brier is None and parsed.reliability is None and parsed.intervals is None
