"""Training orchestration end to end on synthetic data."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tests.unit.helpers import PINNED_CONFIG
from virality.data.datasets import load_training_data
from virality.data.split import Split
from virality.errors import ConfigurationError
from virality.ml.features import extract_features
from virality.ml.metrics import evaluate
from virality.ml.softmax import class_weights, loss_gradient, objective
from virality.ml.solvers import fit
from virality.services.training import TrainingConfig, evaluate_on, format_report, train_file, train_model
from virality.structs import replace
from virality_dev.synthetic import sample_csv


def test_newton_model_beats_the_majority_baseline_by_far(trained):
    report = trained.test_report
    assert report.majorityBaselineAccuracy == pytest.approx(0.2, abs=0.01)   # quintile tiers
    assert report.accuracy >= report.majorityBaselineAccuracy + 0.15
    assert report.macroF1 > 0.3
    assert trained.artifact.accuracy == report.accuracy
    assert trained.artifact.metrics.test == report


def test_reported_metrics_are_those_of_the_returned_model(trained):
    ts = trained.training_set
    assert evaluate(ts.test.y, trained.model.predict_proba(ts.test.X)) == trained.test_report
    train_acc = float(np.mean(trained.model.predict(ts.train.X).tiers == ts.train.tiers))
    assert trained.artifact.metrics.trainAccuracy == pytest.approx(train_acc)
    coef, intercept = np.array(trained.artifact.weights), np.array(trained.artifact.biases)
    assert trained.artifact.training.finalObjective == pytest.approx(
        objective(coef, intercept, ts.train.X, ts.train.y, 1e-3), rel=1e-12)


def test_newton_reaches_a_lower_objective_than_gd(trained, trained_gd):
    newton, gd = trained.artifact.training, trained_gd.artifact.training
    assert (newton.optimizer, gd.optimizer) == ("newton", "gd")
    assert gd.iterations == 200 and gd.converged is False
    assert newton.converged is True
    assert gd.finalObjective - newton.finalObjective > 0.1
    assert trained.artifact.metrics.trainAccuracy > trained_gd.artifact.metrics.trainAccuracy


def test_gd_training_equals_the_gd_optimizer_on_the_same_split(trained_gd):
    ts = trained_gd.training_set
    direct = fit(ts.train.X, ts.train.y, optimizer="gd", seed=42)
    np.testing.assert_array_equal(np.array(trained_gd.artifact.weights), direct.coef)


def test_report_is_readable(trained):
    text = format_report(trained.artifact)
    assert "confusion matrix (rows = actual tier, columns = predicted)" in text
    assert "tier  precision  recall     f1  support" in text
    assert f"test accuracy   {trained.test_report.accuracy:.4f}" in text
    assert "v-test-newton" in text and "sample.csv" in text and "converged" in text
    lines = text.splitlines()
    start = lines.index("confusion matrix (rows = actual tier, columns = predicted)")
    header = lines[start + 1].split()
    assert header == ["1", "2", "3", "4", "5"]
    rows = [list(map(int, line.split())) for line in lines[start + 2:start + 7]]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[1:] for r in rows] == trained.test_report.confusionMatrix


def test_report_of_an_original_format_artifact_shows_accuracy(trained):
    legacy = replace(trained.artifact, metrics=None, training=None, data=None)
    text = format_report(legacy)
    assert f"test accuracy   {trained.artifact.accuracy:.4f}" in text
    assert "confusion matrix" not in text


def test_balanced_class_weight_trains_to_the_weighted_optimum(training_set):
    # Given a training set whose tiers are made unbalanced
    keep = np.flatnonzero((training_set.train.tiers != 5) | (np.arange(training_set.train.tiers.size) % 6 == 0))
    train = Split(training_set.train.X[keep], training_set.train.tiers[keep], training_set.train.raw.take(keep))
    ts = type(training_set)(training_set.format, training_set.source, training_set.sha256, train,
                            training_set.test, training_set.preprocessing, training_set.tiering)
    # When trained with and without balanced weights
    balanced = train_model(ts, TrainingConfig(class_weight="balanced", l2=1e-3, calibration="none"),
                           model_version="b")
    plain = train_model(ts, TrainingConfig(l2=1e-3, calibration="none"), model_version="p")
    # Then the weighted model sits at the optimum of the weighted objective
    assert balanced.artifact.training.classWeight == "balanced"
    assert balanced.artifact.training.converged
    sw = class_weights(train.y, 5, "balanced")[train.y]
    _, gc, gi = loss_gradient(np.array(balanced.artifact.weights), np.array(balanced.artifact.biases),
                              train.X, train.y, 1e-3, sw)
    assert max(np.abs(gc).max(), np.abs(gi).max()) <= 1e-8
    # And it predicts the rare tier more often than the unweighted model
    rare_balanced = np.sum(balanced.model.predict(ts.test.X).tiers == 5)
    rare_plain = np.sum(plain.model.predict(ts.test.X).tiers == 5)
    assert rare_balanced > rare_plain


def test_evaluate_on_refeaturises_raw_data_with_the_models_own_caps(trained):
    # Given a second model trained on other data (so its caps differ)
    other = train_file(sample_csv(800, seed=99), "other.csv", PINNED_CONFIG, model_version="v-other")
    assert other.model.preprocessing != trained.model.preprocessing
    split = trained.training_set.test
    # When it is evaluated on the first model's raw test split
    report = evaluate_on(other.model, split)
    # Then the raw videos were featurised with its own caps, not the first model's
    X_own = extract_features(split.raw, other.model.preprocessing)
    assert not np.array_equal(X_own, split.X)
    assert report == evaluate(split.y, other.model.predict_proba(X_own))
    # And a split without raw data is used as given
    no_raw = Split(split.X, split.tiers)
    assert evaluate_on(other.model, no_raw) == evaluate(split.y, other.model.predict_proba(split.X))
    # And a model evaluated on its own split reproduces its training report
    assert evaluate_on(trained.model, split) == trained.test_report


def test_train_file_is_deterministic(sample_csv_bytes, trained):
    again = train_file(sample_csv_bytes, "sample.csv", PINNED_CONFIG, model_version="v-test-newton")
    assert again.artifact.weights == trained.artifact.weights
    assert again.artifact.biases == trained.artifact.biases
    assert again.artifact.metrics == trained.artifact.metrics
    assert again.artifact.preprocessing == trained.artifact.preprocessing


def test_train_file_on_seed_json(seed_json_bytes):
    outcome = train_file(seed_json_bytes, "seed.json", PINNED_CONFIG, model_version="v-seed")
    a = outcome.artifact
    assert a.data.format == "seed-json"
    assert a.training.testFraction is None
    assert a.preprocessing is None and a.tiering is None
    assert a.data.rows.train == 300 and a.data.rows.test == 80
    assert a.training.converged
    ts = load_training_data(seed_json_bytes, "seed.json")
    direct = fit(ts.train.X, ts.train.y)
    np.testing.assert_array_equal(np.array(a.weights), direct.coef)


def test_progress_callback_sees_every_iteration(sample_csv_bytes):
    seen: list[int] = []
    outcome = train_file(sample_csv_bytes, "sample.csv", TrainingConfig(optimizer="gd"),
                         progress=lambda i, f, g: seen.append(i))
    assert seen == list(range(1, 201)) and outcome.artifact.training.iterations == 200


def test_config_is_recorded(sample_csv_bytes):
    config = TrainingConfig(l2=0.01, seed=5, test_fraction=0.25, tol=1e-9)
    a = train_file(sample_csv_bytes, "s.csv", config).artifact
    t = a.training
    assert (t.l2, t.seed, t.testFraction, t.tol) == (0.01, 5, 0.25, 1e-9)
    assert t.gradientNorm <= 1e-9
    assert a.data.rows.test == pytest.approx(0.25 * 1500, abs=3)
    assert msgspec.to_builtins(a)["training"]["l2"] == 0.01


@pytest.mark.parametrize("kwargs", [
    {"optimizer": "sgd"}, {"class_weight": "auto"}, {"l2": -0.1}, {"l2": float("nan")},
    {"test_fraction": 0.0}, {"test_fraction": 1.0}, {"test_fraction": -0.2},
])
def test_invalid_training_config(kwargs):
    with pytest.raises(ConfigurationError):
        TrainingConfig(**kwargs)


def test_above_search_rows_lambda_and_temperature_come_from_a_sample_and_the_fit_uses_every_row():
    from virality.ml.model_selection import search_l2

    ts = load_training_data(sample_csv(3000, 11), "s.csv")
    n = ts.train.y.shape[0]
    config = TrainingConfig(search_rows=800, bootstrap=0, l2_grid=(1e-4, 1e-3, 1e-2))
    art = train_model(ts, config).artifact
    rows = np.arange(0, n, -(-n // 800))
    assert art.training.l2Search.sampleRows == rows.size < n
    assert art.calibration.nSamples == rows.size
    # the search is the one on the sampled rows ...
    search = search_l2(ts.train.X[rows], ts.train.y[rows], grid=config.l2_grid, seed=config.seed)
    assert art.training.l2 == search.chosen
    # ... and the fit at its lambda is the optimum over every training row
    exact = fit(ts.train.X, ts.train.y, l2_reg_strength=search.chosen, tol=1e-10)
    assert abs(art.training.finalObjective - exact.objective) <= 1e-12 * exact.objective
    assert train_model(ts, config).artifact.weights == art.weights          # deterministic
    whole = train_model(ts, TrainingConfig(search_rows=None, bootstrap=0, l2_grid=config.l2_grid)).artifact
    assert whole.training.l2Search.sampleRows is None and whole.calibration.nSamples == n


def test_search_rows_must_leave_every_fold_some_rows():
    with pytest.raises(ConfigurationError, match="search rows"):
        TrainingConfig(search_rows=3)


def test_bootstrap_resamples_are_capped_by_draws_only_for_very_large_test_splits():
    from virality.services.training import BOOTSTRAP_DRAWS, bootstrap_resamples

    assert bootstrap_resamples(1000, 200_000) == 1000
    assert bootstrap_resamples(1000, 2_000_000) == 1000
    assert bootstrap_resamples(1000, 8_000_000) == BOOTSTRAP_DRAWS // 8_000_000 == 250
    assert bootstrap_resamples(1000, 10**9) == 200            # never fewer than MIN_BOOTSTRAP_RESAMPLES
    assert bootstrap_resamples(50, 8_000_000) == 50           # a smaller request is kept
