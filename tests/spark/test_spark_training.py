"""The Spark engine against the NumPy trainer on the same rows (real pyspark, ``local[2]``).

Parity is the point: the same rows and lambda must give the same optimum
(objective within 1e-6 relative, in practice ~1e-15) and the same
predictions, and the artifact must be the ordinary artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from virality.artifact import dump_artifact, load_artifact
from virality.errors import DataValidationError
from virality.ml.features import fit_preprocessing
from virality.ml.softmax import class_weights, objective, predict_proba
from virality.ml.solvers import fit
from virality.services.training import TrainingConfig
from virality_dev.synthetic import sample_csv, sample_jsonl
from virality_spark.train import (
    _collect_labelled,
    collect_training_arrays,
    fit_blocks,
    read_records,
    train_spark,
    validated_raw,
)

ROWS = 3000
SEED = 11
#: The exact-objective configuration: one fixed lambda, the raw optimum published.
FIXED = TrainingConfig(l2=1e-3, calibration="none", bootstrap=0)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark") / "videos.csv"
    path.write_bytes(sample_csv(ROWS, SEED))
    return path


@pytest.fixture(scope="module")
def csv_run(spark: Any, csv_path: Path) -> Any:
    return train_spark(spark, str(csv_path), FIXED)


def test_same_optimum_and_predictions_as_numpy_on_the_same_rows(spark: Any, csv_path: Path, csv_run: Any) -> None:
    artifact = csv_run.outcome.artifact
    config = FIXED
    X, y = collect_training_arrays(spark, str(csv_path), config, artifact)
    assert X.shape == (artifact.data.rows.train, 15)
    ref = fit(X, y, l2_reg_strength=config.l2, tol=config.tol)
    assert ref.converged and artifact.training.converged
    spark_obj = artifact.training.finalObjective
    assert abs(spark_obj - ref.objective) <= 1e-6 * abs(ref.objective)
    # The library's objective at the Spark weights, on the NumPy side: the same value again.
    W, b = np.array(artifact.weights), np.array(artifact.biases)
    assert abs(objective(W, b, X, y, config.l2) - ref.objective) <= 1e-6 * abs(ref.objective)
    np.testing.assert_allclose(predict_proba(X, W, b), predict_proba(X, ref.coef, ref.intercept), atol=1e-6)
    # and the test split scores through the ordinary model class identically
    test = csv_run.test
    np.testing.assert_allclose(csv_run.outcome.model.predict_proba(test.X),
                               predict_proba(test.X, ref.coef, ref.intercept), atol=1e-6)


def test_fitted_parameters_come_from_the_full_data(spark: Any, csv_path: Path, csv_run: Any) -> None:
    artifact = csv_run.outcome.artifact
    raw, _ = validated_raw(read_records(spark, str(csv_path)), str(csv_path), 42, 0.2)
    from pyspark.sql import functions as F

    everything, _ = _collect_labelled(raw)
    train, _ = _collect_labelled(raw.where(~F.col("_test")))
    raw.unpersist()
    assert len(everything) == ROWS
    # exact quantiles: the very numbers np.quantile gives on all rows / on the training rows
    np.testing.assert_allclose(artifact.tiering.thresholds, np.quantile(everything.views, [0.2, 0.4, 0.6, 0.8]),
                               rtol=1e-12)
    # (Spark interpolates as lo + (hi - lo) * frac, NumPy in another order: equal to the last bits)
    expected = msgspec.structs.asdict(fit_preprocessing(train))
    assert msgspec.structs.asdict(artifact.preprocessing) == pytest.approx(expected, rel=1e-12)
    assert artifact.training.cluster.quantiles == "exact"
    assert artifact.training.cluster.quantileRelativeError == 0.0


def test_the_artifact_is_the_ordinary_artifact_with_engine_and_cluster_facts(csv_run: Any) -> None:
    artifact = csv_run.outcome.artifact
    body = dump_artifact(artifact)
    again = load_artifact(body)          # schema and checksum validate
    assert dump_artifact(again) == body
    doc = json.loads(body)
    assert doc["training"]["engine"] == "spark"
    cluster = doc["training"]["cluster"]
    assert cluster["master"] == "local[2]" and cluster["executors"] >= 1
    assert cluster["partitions"] >= 1 and cluster["defaultParallelism"] == 2
    # one pass per Newton evaluation plus the training-accuracy pass: a handful, not hundreds
    assert artifact.training.iterations + 2 <= cluster["passes"] <= 3 * artifact.training.iterations + 3
    assert doc["data"]["rows"]["train"] + doc["data"]["rows"]["test"] == ROWS
    assert cluster["evaluationRows"] == doc["data"]["rows"]["test"]
    assert sum(doc["data"]["classCounts"]["train"]) == doc["data"]["rows"]["train"]
    # the hash split holds out about test_fraction of the rows
    assert 0.15 < doc["data"]["rows"]["test"] / ROWS < 0.25


def test_json_lines_of_the_same_records_give_the_same_model(spark: Any, tmp_path: Path, csv_run: Any) -> None:
    path = tmp_path / "videos.jsonl"
    path.write_bytes(sample_jsonl(ROWS, SEED))
    other = train_spark(spark, str(path), FIXED).outcome.artifact
    first = csv_run.outcome.artifact
    assert other.data.format == "jsonl"
    assert other.tiering == first.tiering and other.preprocessing == first.preprocessing
    assert other.data.rows == first.data.rows
    np.testing.assert_allclose(other.weights, first.weights, atol=1e-9)


def test_a_bad_record_is_named_by_key_and_column(spark: Any, tmp_path: Path) -> None:
    lines = sample_csv(50, 3).decode().splitlines()
    header = lines[0].split(",")
    row = lines[7].split(",")
    row[header.index("likes")] = "lots"
    lines[7] = ",".join(row)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as info:
        train_spark(spark, str(path), TrainingConfig())
    assert info.value.column == "likes"
    assert row[header.index("videoId")] in str(info.value) and "'lots'" in str(info.value)


def test_the_split_does_not_depend_on_partitioning(spark: Any, csv_path: Path) -> None:
    from pyspark.sql import functions as F

    df = read_records(spark, str(csv_path))
    keys = []
    for frame in (df, df.repartition(5)):
        raw, key_col = validated_raw(frame, "x", 42, 0.2)
        assert key_col == "videoId"
        keys.append(sorted(r["_key"] for r in raw.where(F.col("_test")).select("_key").collect()))
        raw.unpersist()
    assert keys[0] == keys[1] and len(keys[0]) > 0


def _blocks(spark: Any, X: np.ndarray, y: np.ndarray, n_blocks: int = 4) -> Any:
    parts = [(X[i::n_blocks].copy(), y[i::n_blocks].copy()) for i in range(n_blocks)]
    return spark.sparkContext.parallelize(parts, 2)


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    from virality.data.datasets import load_training_data

    ts = load_training_data(sample_csv(2000, 5), "x.csv")
    return ts.train.X, ts.train.y


def test_balanced_class_weights_reach_the_weighted_numpy_optimum(spark: Any, arrays: Any) -> None:
    X, y = arrays
    counts = np.bincount(y, minlength=5)
    got = fit_blocks(_blocks(spark, X, y), counts, l2=1e-3, class_weight="balanced")
    sw = class_weights(y, 5, "balanced")[y]
    ref = fit(X, y, l2_reg_strength=1e-3, sample_weight=sw)
    assert got.converged
    assert abs(got.objective - ref.objective) <= 1e-6 * ref.objective
    np.testing.assert_allclose(predict_proba(X, got.coef, got.intercept),
                               predict_proba(X, ref.coef, ref.intercept), atol=1e-6)


def test_absent_classes_and_the_warm_start_match_numpy(spark: Any, arrays: Any) -> None:
    X, y = arrays
    keep = y != 4                       # no rows of tier 5
    X, y = X[keep], y[keep]
    counts = np.bincount(y, minlength=5)
    got = fit_blocks(_blocks(spark, X, y), counts, l2=1e-2, warm_start=True)
    ref = fit(X, y, l2_reg_strength=1e-2)
    assert got.warm_start_rows > 0 and got.converged
    assert abs(got.objective - ref.objective) <= 1e-6 * ref.objective
    np.testing.assert_allclose(predict_proba(X, got.coef, got.intercept),
                               predict_proba(X, ref.coef, ref.intercept), atol=1e-6)
    # the warm start leaves only a couple of full passes
    assert got.passes <= 5

