"""Issue 11: lambda by cross-validation, temperature calibration, prediction modes, label horizon."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from virality.artifact import dump_artifact, load_artifact
from virality.config import RetrainSettings
from virality.data.datasets import load_training_data
from virality.errors import ConfigurationError, DataValidationError
from virality.ml.calibration import calibration_summary, fit_temperature
from virality.ml.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    POST_PUBLICATION_FEATURES,
    feature_vector_to_ml_input,
)
from virality.ml.metrics import expected_calibration_error, log_loss
from virality.ml.model_selection import search_l2, stratified_folds
from virality.ml.softmax import objective, predict_proba, softmax
from virality.ml.solvers import fit
from virality.ml.tiering import assign_tiers, fit_tiering
from virality.services.training import TrainingConfig, train_file, train_model
from virality.structs import replace
from virality_dev.synthetic import sample_csv, sample_jsonl, sample_records

# --------------------------------------------------------------------------- folds


def test_stratified_folds_are_balanced_seeded_and_spread_every_class():
    y = np.repeat(np.arange(5), [40, 33, 27, 12, 7])
    folds = stratified_folds(y, 5, seed=3)
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for k in range(5):
        per_fold = np.bincount(folds[y == k], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1            # each class dealt evenly
    np.testing.assert_array_equal(folds, stratified_folds(y, 5, seed=3))
    assert not np.array_equal(folds, stratified_folds(y, 5, seed=4))
    with pytest.raises(ConfigurationError):
        stratified_folds(y, 1, seed=0)


# --------------------------------------------------------------------------- lambda search


def _brute_force(X, y, grid, folds):
    """Every fold and lambda fitted from scratch by the production Newton solver, to a tight tol."""
    losses = np.empty((folds.max() + 1, len(grid)))
    for f in range(folds.max() + 1):
        tr, va = folds != f, folds == f
        for g, l2 in enumerate(grid):
            r = fit(X[tr], y[tr], l2_reg_strength=l2, tol=1e-10, max_iter=500)
            losses[f, g] = log_loss(y[va], predict_proba(X[va], r.coef, r.intercept))
    return losses


@pytest.mark.parametrize("profile", ["default", "realistic"])
def test_search_picks_the_lambda_of_a_brute_force_reference(profile):
    ts = load_training_data(sample_csv(900, seed=11, profile=profile), "s.csv")
    X, y = ts.train.X, ts.train.y
    grid = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
    result = search_l2(X, y, grid=grid, n_folds=4, seed=5)
    ref = _brute_force(X, y, grid, stratified_folds(y, 4, seed=5))
    np.testing.assert_allclose(result.fold_log_loss, ref, atol=1e-5)
    assert result.chosen == grid[int(np.argmin(ref.mean(axis=0)))]
    # and the whole-split fit at the chosen lambda is that lambda's optimum
    full = fit(X, y, l2_reg_strength=result.chosen, tol=1e-10)
    f_search = objective(result.coef, result.intercept, X, y, result.chosen)
    assert f_search == pytest.approx(full.objective, rel=1e-9)


def test_out_of_fold_logits_come_from_the_fold_that_did_not_see_the_row():
    ts = load_training_data(sample_csv(600, seed=2), "s.csv")
    X, y = ts.train.X, ts.train.y
    result = search_l2(X, y, grid=(1e-4, 1e-2), n_folds=3, seed=1)
    for f in range(3):
        tr, va = result.folds != f, result.folds == f
        r = fit(X[tr], y[tr], l2_reg_strength=result.chosen, tol=1e-10)
        np.testing.assert_allclose(result.oof_logits[va], X[va] @ r.coef.T + r.intercept, atol=1e-4)


def test_search_rejects_a_bad_grid():
    X, y = np.random.default_rng(0).random((50, 15)), np.arange(50) % 5
    for grid in ((), (0.0, 1e-3), (float("nan"),)):
        with pytest.raises(ConfigurationError):
            search_l2(X, y, grid=grid)


# --------------------------------------------------------------------------- warm start


def test_warm_start_reaches_the_same_optimum_in_fewer_iterations(training_set):
    X, y = training_set.train.X, training_set.train.y
    cold = fit(X, y, l2_reg_strength=1e-4)
    near = fit(X, y, l2_reg_strength=1e-3)
    warm = fit(X, y, l2_reg_strength=1e-4, coef_init=near.coef, intercept_init=near.intercept)
    assert warm.converged and warm.n_iter < cold.n_iter
    assert warm.objective == pytest.approx(cold.objective, rel=1e-12)
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-6)
    with pytest.raises(ConfigurationError, match="warm start"):
        fit(X, y, optimizer="gd", coef_init=near.coef)
    with pytest.raises(ValueError, match="warm start"):
        fit(X, y, coef_init=near.coef[:, :3])


# --------------------------------------------------------------------------- temperature


def test_fit_temperature_recovers_the_temperature_of_the_labels():
    rng = np.random.default_rng(4)
    Z = rng.normal(0, 2.5, (6000, 5))
    P = softmax(Z / 0.4)                                   # labels follow logits sharpened by T = 0.4
    y = (P.cumsum(axis=1) > rng.random((6000, 1))).argmax(axis=1)
    temperature = fit_temperature(Z, y)
    assert temperature == pytest.approx(0.4, rel=0.05)
    # it is the minimiser: a fine grid search does no better
    grid = np.linspace(0.2, 0.8, 601)
    losses = [log_loss(y, softmax(Z / t)) for t in grid]
    assert log_loss(y, softmax(Z / temperature)) <= min(losses) + 1e-9


def test_calibration_lowers_out_of_fold_ece_of_a_mis_regularised_fit():
    # Given data on which the original lambda = 0.001 under-fits (under-confident probabilities)
    data = sample_csv(2500, seed=8, profile="realistic")
    raw = train_file(data, "s.csv", TrainingConfig(l2=1e-3, calibration="none"), model_version="raw")
    cal = train_file(data, "s.csv", TrainingConfig(l2=1e-3, calibration="temperature"), model_version="cal")
    c = cal.artifact.calibration
    # Then T < 1 sharpens the probabilities, and the out-of-fold ECE and log-loss fall
    assert c.method == "temperature" and c.source == "cv" and c.temperature < 0.7
    assert c.eceAfter < 0.5 * c.eceBefore
    assert c.logLossAfter < c.logLossBefore
    # And the published weights are the raw optimum divided by T (same arg-max, same serving cost)
    np.testing.assert_allclose(np.array(cal.artifact.weights) * c.temperature, raw.artifact.weights, rtol=1e-12)
    np.testing.assert_allclose(np.array(cal.artifact.biases) * c.temperature, raw.artifact.biases, atol=1e-12)
    assert cal.test_report.accuracy == raw.test_report.accuracy
    # And the test split (never used for T) is better calibrated too
    assert cal.test_report.ece < raw.test_report.ece
    assert cal.test_report.logLoss < raw.test_report.logLoss


def test_calibration_summary_matches_the_metrics():
    rng = np.random.default_rng(1)
    Z, y = rng.normal(0, 1, (300, 5)), rng.integers(0, 5, 300)
    s = calibration_summary(Z, y, 2.0)
    assert s["eceBefore"] == pytest.approx(expected_calibration_error(y, softmax(Z)))
    assert s["logLossAfter"] == pytest.approx(log_loss(y, softmax(Z / 2.0)))


# --------------------------------------------------------------------------- defaults and exact paths


def test_defaults_are_auto_and_temperature_for_newton(trained_auto):
    a = trained_auto.artifact
    s = a.training.l2Search
    assert s is not None and s.folds == 5 and s.seed == 42
    assert s.grid == [10.0 ** e for e in range(-8, 0)]
    assert a.training.l2 == s.chosen == s.grid[int(np.argmin(s.meanLogLoss))]
    assert len(s.meanLogLoss) == len(s.stdLogLoss) == len(s.grid)
    assert a.calibration.method == "temperature" and a.calibration.nSamples == a.data.rows.train
    assert a.featureSet == "full" and a.data.labelColumn == "views"
    assert set(a.metrics.testIntervals) == {"accuracy", "macroF1", "logLoss", "ece"}
    iv = a.metrics.testIntervals["accuracy"]
    assert iv.low <= a.accuracy <= iv.high and iv.nResamples == 1000
    assert a.metrics.test.brier is not None and len(a.metrics.test.reliability) == 10
    # the artifact round-trips with every new field
    assert dump_artifact(load_artifact(dump_artifact(a))) == dump_artifact(a)


def test_auto_beats_the_original_lambda_on_realistic_data():
    data = sample_csv(3000, seed=21, profile="realistic")
    old = train_file(data, "s.csv", TrainingConfig(l2=1e-3, calibration="none"), model_version="old")
    new = train_file(data, "s.csv", model_version="new")
    assert new.artifact.training.l2 < 1e-3
    assert new.test_report.logLoss < old.test_report.logLoss - 0.1
    assert new.test_report.ece < old.test_report.ece
    assert new.test_report.accuracy > old.test_report.accuracy


def test_fixed_lambda_without_calibration_is_todays_exact_optimum(training_set, trained):
    from sklearn.linear_model import LogisticRegression

    # `--l2 0.001 --calibration none` publishes the optimum of today's objective
    X, y = training_set.train.X, training_set.train.y
    a = trained.artifact
    assert a.training.l2 == 1e-3 and a.training.l2Search is None and a.calibration.method == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        clf = LogisticRegression(C=1.0 / (1e-3 * X.shape[0]), tol=1e-10, max_iter=10_000).fit(X, y)
    f_ours = objective(np.array(a.weights), np.array(a.biases), X, y, 1e-3)
    f_sklearn = objective(clf.coef_, clf.intercept_, X, y, 1e-3)
    assert abs(f_ours - f_sklearn) / f_sklearn <= 1e-6
    np.testing.assert_array_equal(np.array(a.weights), fit(X, y, l2_reg_strength=1e-3).coef)


def test_auto_training_is_deterministic(sample_csv_bytes, trained_auto):
    again = train_file(sample_csv_bytes, "sample.csv", model_version="v-test-auto")
    assert again.artifact.weights == trained_auto.artifact.weights            # float-for-float
    assert again.artifact.biases == trained_auto.artifact.biases
    a, b = again.artifact.training.l2Search, trained_auto.artifact.training.l2Search
    assert replace(a, durationSeconds=None) == replace(b, durationSeconds=None)
    assert again.artifact.calibration.temperature == trained_auto.artifact.calibration.temperature
    assert again.artifact.metrics.testIntervals == trained_auto.artifact.metrics.testIntervals


def test_gd_stays_bit_faithful_unless_calibration_is_asked_for(sample_csv_bytes, trained_gd):
    ts = trained_gd.training_set
    assert trained_gd.artifact.calibration is None and trained_gd.artifact.training.l2 == 1e-3
    direct = fit(ts.train.X, ts.train.y, optimizer="gd", seed=42)
    np.testing.assert_array_equal(np.array(trained_gd.artifact.weights), direct.coef)
    with pytest.raises(ConfigurationError, match="auto"):
        TrainingConfig(optimizer="gd", l2="auto")
    with pytest.raises(ConfigurationError, match="prepublication"):
        TrainingConfig(optimizer="gd", feature_set="prepublication")
    cal = train_file(sample_csv_bytes, "s.csv", TrainingConfig(optimizer="gd", calibration="temperature"))
    T = cal.artifact.calibration.temperature
    np.testing.assert_allclose(np.array(cal.artifact.weights) * T, direct.coef, rtol=1e-12)


@pytest.mark.parametrize("kwargs", [{"l2": "fast"}, {"calibration": "isotonic"}, {"feature_set": "pre"},
                                    {"cv_folds": 1}, {"bootstrap": -1}])
def test_invalid_quality_options(kwargs):
    with pytest.raises(ConfigurationError):
        TrainingConfig(**kwargs)


def test_retrain_settings_use_the_same_defaults():
    s = RetrainSettings.from_env({})
    assert s.train_l2 == "auto" and s.train_calibration is None and s.train_feature_set == "full"
    assert s.training_l2() == "auto"
    assert RetrainSettings.from_env({"TRAIN_L2": "auto", "TRAIN_OPTIMIZER": "gd"}).training_l2() is None
    fixed = RetrainSettings.from_env({"TRAIN_L2": "0.001", "TRAIN_CALIBRATION": "none"})
    assert (fixed.train_l2, fixed.train_calibration) == (0.001, "none")
    with pytest.raises(ConfigurationError, match="TRAIN_L2"):
        RetrainSettings.from_env({"TRAIN_L2": "-1"})


# --------------------------------------------------------------------------- prediction modes


def test_prepublication_weights_are_exactly_zero_on_held_features(sample_csv_bytes):
    out = train_file(sample_csv_bytes, "s.csv", TrainingConfig(feature_set="prepublication"))
    W = np.array(out.artifact.weights)
    held = [FEATURE_INDEX[n] for n in POST_PUBLICATION_FEATURES]
    kept = [j for j in range(len(FEATURE_NAMES)) if j not in held]
    assert np.all(W[:, held] == 0.0)
    assert np.all(np.abs(W[:, kept]).max(axis=0) > 0)
    assert out.artifact.featureSet == "prepublication"
    # a featureVector request (pipeline bridge) and a video with the same pre-publication facts agree:
    # the post-publication values cannot move the prediction
    ts = out.training_set
    X = ts.test.X.copy()
    X2 = X.copy()
    X2[:, held] = feature_vector_to_ml_input({})[held]
    np.testing.assert_allclose(out.model.predict_proba(X), out.model.predict_proba(X2), atol=1e-15)


def test_prepublication_is_the_optimum_over_the_kept_features(sample_csv_bytes):
    cfg = TrainingConfig(feature_set="prepublication", l2=1e-3, calibration="none")
    out = train_file(sample_csv_bytes, "s.csv", cfg)
    ts = out.training_set
    kept = np.array([n not in POST_PUBLICATION_FEATURES for n in FEATURE_NAMES])
    direct = fit(ts.train.X[:, kept], ts.train.y, l2_reg_strength=1e-3)
    np.testing.assert_array_equal(np.array(out.artifact.weights)[:, kept], direct.coef)


def _with_label_views(records, factor_seed=0):
    rng = np.random.default_rng(factor_seed)
    out = []
    for r in records:
        r = dict(r)
        # the outcome at the horizon: early views times an independent growth factor
        r["labelViews"] = int(r["views"] * rng.lognormal(0.0, 1.0))
        out.append(r)
    return out


def test_label_views_give_the_tiers_and_views_give_the_features(tmp_path):
    records = _with_label_views(sample_records(800, seed=3))
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    ts = load_training_data(text, "h.jsonl")
    label = np.array([r["labelViews"] for r in records], dtype=float)
    views = np.array([r["views"] for r in records], dtype=float)
    assert ts.label_column == "labelViews"
    tiering = fit_tiering(label)
    assert ts.tiering.thresholds == tiering.thresholds != fit_tiering(views).thresholds
    all_tiers = assign_tiers(label, tiering)
    assert sorted(np.concatenate([ts.train.tiers, ts.test.tiers]).tolist()) == sorted(all_tiers.tolist())
    # features still come from the record's own (early) counts
    plain = load_training_data(sample_jsonl(800, seed=3), "p.jsonl")
    assert plain.label_column == "views"
    assert ts.preprocessing.viewsPerFollower > 0
    # the same via CSV, and the artifact records where the tiers came from
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    for r in records:
        writer.writerow({**r, "followers": "" if r["followers"] is None else r["followers"]})
    csv_ts = load_training_data(buf.getvalue().encode(), "h.csv")
    assert csv_ts.tiering.thresholds == ts.tiering.thresholds
    out = train_model(csv_ts, TrainingConfig(l2=1e-3, calibration="none", bootstrap=0))
    assert out.artifact.data.labelColumn == "labelViews"


def test_label_views_errors_name_row_and_column():
    records = _with_label_views(sample_records(20, seed=1))
    records[6]["labelViews"] = -5
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    with pytest.raises(DataValidationError, match="labelViews") as exc:
        load_training_data(text, "h.jsonl")
    assert exc.value.row == 7 and exc.value.column == "labelViews"
    del records[6]["labelViews"]
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    with pytest.raises(DataValidationError, match="every row") as exc:
        load_training_data(text, "h.jsonl")
    assert exc.value.row == 7


def test_search_handles_absent_and_singleton_classes(small_problem):
    X, y = small_problem
    y = y.copy()
    y[y == 4] = 3                       # tier 5 absent from the training split
    first_two = np.flatnonzero(y == 2)
    y[first_two[1:]] = 1                # tier 3 has a single row: one fold's training part lacks it
    result = search_l2(X, y, grid=(1e-3, 1e-1), n_folds=3, seed=0)
    assert np.all(np.isfinite(result.mean_log_loss)) and np.all(np.isfinite(result.oof_logits))
    P = predict_proba(X, result.coef, result.intercept)
    assert P[:, 4].max() < 1e-10        # the absent tier gets a negligible probability
    ref = fit(X, y, l2_reg_strength=result.chosen, tol=1e-10)
    np.testing.assert_allclose(result.coef, ref.coef, atol=1e-5)


def test_balanced_auto_search_uses_the_weighted_objective(training_set):
    X, y = training_set.train.X, training_set.train.y
    keep = np.flatnonzero((y != 4) | (np.arange(y.size) % 5 == 0))
    X, y = X[keep], y[keep]
    from virality.ml.softmax import class_weights

    sw = class_weights(y, 5, "balanced")[y]
    result = search_l2(X, y, grid=(1e-5, 1e-3), n_folds=3, seed=2, sample_weight=sw)
    ref = fit(X, y, l2_reg_strength=result.chosen, sample_weight=sw, tol=1e-10)
    # the search's whole-split fit (to its own tol 1e-7) is that weighted optimum
    assert objective(result.coef, result.intercept, X, y, result.chosen, sw) == pytest.approx(
        ref.objective, rel=1e-10)
    np.testing.assert_allclose(result.coef, ref.coef, atol=1e-4)
