"""The Spark engine honours the NumPy trainer's defaults: lambda by CV, temperature calibration, feature sets.

On small data the driver sample is the whole training split, so Spark must
choose the very lambda and T that :func:`virality.services.training.train_model` chooses
on the same rows, and publish the same (calibrated) model. At scale the search
and T come from a strided sample, and the artifact says so; the weights are
still the exact optimum over every training row at the chosen lambda.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from virality.artifact import dump_artifact, load_artifact
from virality.data.split import Split, TrainingSet
from virality.ml.calibration import fold_temperature
from virality.ml.features import feature_set_mask
from virality.ml.softmax import objective, predict_proba
from virality.ml.solvers import fit
from virality.services.training import TrainingConfig, train_model
from virality_dev.synthetic import sample_csv
from virality_spark import train as sparktrain
from virality_spark.train import canonical_order, collect_training_arrays, train_spark

ROWS = 3000
SEED = 11


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark-defaults") / "videos.csv"
    path.write_bytes(sample_csv(ROWS, SEED))
    return path


@pytest.fixture(scope="module")
def default_run(spark: Any, csv_path: Path) -> Any:
    return train_spark(spark, str(csv_path), TrainingConfig())


def _numpy_on_spark_rows(spark: Any, csv_path: Path, run: Any, config: TrainingConfig) -> Any:
    """train_model on exactly Spark's training rows (in the sample's canonical order) and Spark's test rows."""
    artifact = run.outcome.artifact
    X, y = collect_training_arrays(spark, str(csv_path), config, artifact)
    order = canonical_order(X, y)
    ts = TrainingSet(format="csv", source=str(csv_path), sha256="0" * 64, train=Split(X[order], y[order] + 1),
                     test=run.test, preprocessing=artifact.preprocessing, tiering=artifact.tiering)
    return train_model(ts, config)


def test_default_config_chooses_the_same_lambda_and_temperature_as_train_model(
        spark: Any, csv_path: Path, default_run: Any) -> None:
    got = default_run.outcome.artifact
    ref = _numpy_on_spark_rows(spark, csv_path, default_run, TrainingConfig()).artifact
    # the search ran on the whole (small) training split, and the artifact says how many rows it used
    assert got.training.l2Search is not None and ref.training.l2Search is not None
    assert got.training.l2Search.sampleRows == got.data.rows.train
    assert got.training.l2Search.grid == ref.training.l2Search.grid
    assert got.training.l2 == ref.training.l2 == got.training.l2Search.chosen
    np.testing.assert_allclose(got.training.l2Search.meanLogLoss, ref.training.l2Search.meanLogLoss, rtol=1e-9)
    assert got.calibration.method == ref.calibration.method == "temperature"
    assert got.calibration.temperature == pytest.approx(ref.calibration.temperature, rel=1e-6)
    assert got.calibration.temperature != 1.0
    assert got.calibration.nSamples == got.data.rows.train
    assert got.calibration.provenance["stride"] == "1"
    assert got.calibration.eceBefore == pytest.approx(ref.calibration.eceBefore, rel=1e-6)
    assert got.calibration.eceAfter == pytest.approx(ref.calibration.eceAfter, rel=1e-6)
    # the same published (calibrated) model: predictions to 1e-6 on the test split
    X_test = default_run.test.X
    np.testing.assert_allclose(default_run.outcome.model.predict_proba(X_test),
                               predict_proba(X_test, np.array(ref.weights), np.array(ref.biases)), atol=1e-6)
    assert got.training.converged
    assert got.featureSet == "full"
    assert got.metrics.testIntervals is not None and "ece" in got.metrics.testIntervals
    again = load_artifact(dump_artifact(got))          # optional fields round-trip, checksum validates
    assert again.training.l2Search.sampleRows == got.data.rows.train


def test_at_scale_lambda_and_t_come_from_a_recorded_sample_and_the_fit_is_exact_on_all_rows(
        spark: Any, csv_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a 600-row driver sample of the 3000-row file stands in for 200,000 rows of a billion
    monkeypatch.setattr(sparktrain, "WARM_START_ROWS", 600)
    config = TrainingConfig(bootstrap=0)
    run = train_spark(spark, str(csv_path), config)
    got = run.outcome.artifact
    n_train = got.data.rows.train
    stride = -(-n_train // 600)
    sample_rows = got.training.l2Search.sampleRows
    assert stride > 1 and sample_rows < n_train
    assert n_train // stride <= sample_rows <= 600 + got.training.cluster.partitions
    assert got.calibration.nSamples == sample_rows
    assert got.calibration.provenance == {"sample": "strided driver-side sample of the training split",
                                          "stride": str(stride), "trainingRows": str(n_train)}
    assert got.training.cluster.warmStartRows == sample_rows
    # the published weights: the exact all-rows optimum at the chosen lambda, divided by T
    X, y = collect_training_arrays(spark, str(csv_path), config, got)
    l2, T = got.training.l2, got.calibration.temperature
    ref = fit(X, y, l2_reg_strength=l2, tol=config.tol)
    assert abs(got.training.finalObjective - ref.objective) <= 1e-6 * abs(ref.objective)
    W_raw, b_raw = np.array(got.weights) * T, np.array(got.biases) * T
    assert abs(objective(W_raw, b_raw, X, y, l2) - ref.objective) <= 1e-6 * abs(ref.objective)
    W, b = fold_temperature(ref.coef, ref.intercept, T)
    np.testing.assert_allclose(predict_proba(X, np.array(got.weights), np.array(got.biases)),
                               predict_proba(X, W, b), atol=1e-6)


def test_a_fixed_lambda_with_temperature_fits_t_on_out_of_fold_logits_of_the_sample(
        spark: Any, csv_path: Path) -> None:
    config = TrainingConfig(l2=1e-3, calibration="temperature", bootstrap=0)
    run = train_spark(spark, str(csv_path), config)
    got = run.outcome.artifact
    ref = _numpy_on_spark_rows(spark, csv_path, run, config).artifact
    assert got.training.l2Search is None and got.training.l2 == 1e-3
    # lambda = 0.001 under-fits this data: T < 1 sharpens it, as train_model finds on the same rows
    assert got.calibration.temperature == pytest.approx(ref.calibration.temperature, rel=1e-6)
    assert got.calibration.temperature < 1.0
    assert got.calibration.eceAfter < got.calibration.eceBefore
    np.testing.assert_allclose(run.outcome.model.predict_proba(run.test.X),
                               predict_proba(run.test.X, np.array(ref.weights), np.array(ref.biases)), atol=1e-6)


def test_prepublication_holds_the_post_publication_features_at_zero_weight(spark: Any, csv_path: Path) -> None:
    config = TrainingConfig(l2=1e-3, calibration="none", feature_set="prepublication", bootstrap=0)
    got = train_spark(spark, str(csv_path), config).outcome.artifact
    assert got.featureSet == "prepublication"
    mask = feature_set_mask("prepublication")
    W = np.array(got.weights)
    assert not mask.all() and np.all(W[:, ~mask] == 0.0) and np.any(W[:, mask] != 0.0)
    # the exact optimum over the kept columns, as train_model fits them
    X, y = collect_training_arrays(spark, str(csv_path), config, got)
    ref = fit(X[:, mask], y, l2_reg_strength=1e-3, tol=config.tol)
    assert abs(got.training.finalObjective - ref.objective) <= 1e-6 * abs(ref.objective)
    np.testing.assert_allclose(predict_proba(X, W, np.array(got.biases)),
                               predict_proba(X[:, mask], ref.coef, ref.intercept), atol=1e-6)


def test_the_driver_sample_does_not_depend_on_how_rows_are_blocked(spark: Any) -> None:
    from virality.data.datasets import load_training_data
    from virality_spark.train import driver_sample

    ts = load_training_data(sample_csv(900, 2), "x.csv")
    X, y = ts.train.X, ts.train.y
    sc = spark.sparkContext
    four = sc.parallelize([(X[i::4].copy(), y[i::4].copy()) for i in range(4)], 2)
    three = sc.parallelize([(X[i::3][::-1].copy(), y[i::3][::-1].copy()) for i in (2, 0, 1)], 3)
    a, b = driver_sample(four, y.size), driver_sample(three, y.size)
    # all rows (stride 1) in one content order: the folds of the lambda search are the same
    assert a.stride == b.stride == 1 and a.rows == b.rows == y.size
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    small = driver_sample(four, y.size, max_rows=100)
    assert small.stride == -(-y.size // 100) and small.rows <= 100 + 4
