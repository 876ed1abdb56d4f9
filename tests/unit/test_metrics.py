"""Evaluation metrics on hand examples, cross-checked against scikit-learn."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from sklearn import metrics as skm

from virality.ml.metrics import (
    EvaluationReport,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    log_loss,
    precision_recall_f1,
)
from virality.structs import from_builtins

# Hand example over 5 classes (class 4 never occurs, class 3 is never predicted).
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 2, 0, 0, 2])
CM = [
    [2, 1, 0, 0, 0],
    [0, 2, 0, 0, 0],
    [2, 0, 2, 0, 0],
    [0, 0, 1, 0, 0],
    [0, 0, 0, 0, 0],
]


def _proba_for(y_pred: np.ndarray, top: float = 0.6) -> np.ndarray:
    """Rows with ``top`` on the predicted class and the rest spread evenly."""
    P = np.full((y_pred.shape[0], 5), (1 - top) / 4)
    P[np.arange(y_pred.shape[0]), y_pred] = top
    return P


def test_confusion_matrix_rows_are_actual_columns_predicted():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 5)
    assert cm.tolist() == CM
    # one actual-3 predicted as 2 sits in row 3, column 2
    assert cm[3, 2] == 1 and cm[2, 3] == 0
    np.testing.assert_array_equal(cm, skm.confusion_matrix(Y_TRUE, Y_PRED, labels=range(5)))


def test_precision_recall_f1_by_hand():
    precision, recall, f1 = precision_recall_f1(np.array(CM))
    np.testing.assert_allclose(precision, [2 / 4, 2 / 3, 2 / 3, 0, 0], rtol=1e-15)
    np.testing.assert_allclose(recall, [2 / 3, 1, 2 / 4, 0, 0], rtol=1e-15)
    np.testing.assert_allclose(f1, [4 / 7, 4 / 5, 4 / 7, 0, 0], rtol=1e-15)
    p, r, f, _ = skm.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=range(5), zero_division=0)
    np.testing.assert_allclose(precision, p)
    np.testing.assert_allclose(recall, r)
    np.testing.assert_allclose(f1, f)


def test_evaluate_hand_example():
    # Given probabilities 0.6 on the predicted tier, 0.1 elsewhere
    report = evaluate(Y_TRUE, _proba_for(Y_PRED))
    assert report.nSamples == 10
    assert report.accuracy == pytest.approx(0.6)
    assert report.confusionMatrix == CM
    # macro-F1 over the classes seen in truth or predictions (0..3): (4/7 + 4/5 + 4/7 + 0) / 4
    assert report.macroF1 == pytest.approx(17 / 35, rel=1e-14)
    assert report.macroF1 == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="macro"), rel=1e-14)
    # log-loss: six rows with p(true) = 0.6, four with 0.1
    assert report.logLoss == pytest.approx(-(6 * math.log(0.6) + 4 * math.log(0.1)) / 10, rel=1e-14)
    # every confidence is 0.6 and accuracy is 0.6: perfectly calibrated
    assert report.ece == pytest.approx(0.0, abs=1e-15)
    # the most frequent actual tier (tier 3, four rows) is 40 %
    assert report.majorityBaselineAccuracy == pytest.approx(0.4)
    per = {c.tier: c for c in report.perClass}
    assert sorted(per) == [1, 2, 3, 4, 5]
    assert (per[2].precision, per[2].recall, per[2].support) == (pytest.approx(2 / 3), 1.0, 2)
    assert per[5].support == 0 and per[5].f1 == 0.0


def test_log_loss_by_hand_and_clipping():
    P = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.0, 1.0, 0.0]])
    y = np.array([0, 2, 0])
    # p(true) = 0.7, 0.5 and 0 (clipped to 1e-15)
    expected = -(math.log(0.7) + math.log(0.5) + math.log(1e-15)) / 3
    assert log_loss(y, P) == pytest.approx(expected, rel=1e-14)
    assert math.isfinite(log_loss(y, P))


def test_ece_by_hand():
    # confidences: bin 9 -> 0.95 right, 0.95 wrong; bin 5 -> 0.55 right; bin 7 -> 0.72, 0.78 right, 0.75 wrong
    conf = [0.95, 0.95, 0.55, 0.72, 0.78, 0.75]
    pred = [0, 1, 0, 1, 0, 1]
    y = np.array([0, 0, 0, 1, 0, 0])
    P = np.array([[c, 1 - c] if p == 0 else [1 - c, c] for c, p in zip(conf, pred, strict=True)])
    # bin 9: 2 * |0.5 - 0.95|, bin 5: 1 * |1 - 0.55|, bin 7: 3 * |2/3 - 0.75|
    expected = (2 * 0.45 + 1 * 0.45 + 3 * (0.75 - 2 / 3)) / 6
    assert expected_calibration_error(y, P) == pytest.approx(expected, rel=1e-12)


def test_ece_puts_confidence_one_in_the_last_bin():
    P = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert expected_calibration_error(np.array([0, 1]), P) == pytest.approx(0.5)


def test_evaluate_agrees_with_sklearn_on_random_data():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(0, 1.5, (400, 5))
    logits[np.arange(400), y] += 1.0
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    report = evaluate(y, P)
    y_pred = P.argmax(axis=1)
    assert report.accuracy == pytest.approx(skm.accuracy_score(y, y_pred), rel=1e-15)
    assert report.confusionMatrix == skm.confusion_matrix(y, y_pred, labels=range(5)).tolist()
    assert report.macroF1 == pytest.approx(skm.f1_score(y, y_pred, average="macro"), rel=1e-12)
    assert report.logLoss == pytest.approx(skm.log_loss(y, P, labels=range(5)), rel=1e-12)
    assert report.majorityBaselineAccuracy == pytest.approx(np.bincount(y).max() / 400)
    p, r, f, s = skm.precision_recall_fscore_support(y, y_pred, labels=range(5), zero_division=0)
    for c in report.perClass:
        k = c.tier - 1
        assert (c.precision, c.recall, c.f1, c.support) == (pytest.approx(p[k]), pytest.approx(r[k]),
                                                              pytest.approx(f[k]), s[k])


def test_evaluate_empty_split_does_not_crash():
    report = evaluate(np.array([], dtype=int), np.zeros((0, 5)))
    assert report.nSamples == 0
    assert report.accuracy == 0.0 and report.majorityBaselineAccuracy == 0.0
    assert report.confusionMatrix == [[0] * 5] * 5


def test_report_serialises_with_camel_case_aliases():
    report = evaluate(Y_TRUE, _proba_for(Y_PRED))
    doc = msgspec.to_builtins(report)
    assert {"nSamples", "accuracy", "confusionMatrix", "perClass", "macroF1", "logLoss", "ece",
            "majorityBaselineAccuracy"} <= set(doc)
    assert from_builtins(doc, EvaluationReport) == report
