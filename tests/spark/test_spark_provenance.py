"""The Spark artifact names the same data and labels as the NumPy trainer's (real pyspark, ``local[2]``).

* ``data.sha256`` is the SHA-256 of the source *bytes* on both engines.
* A ``labelViews`` column (the label horizon, :mod:`virality.data.labels`) gives
  the tiers on Spark exactly as on one node: the same cut points (fitted on
  every row), the same tier of every row, ``data.labelColumn = "labelViews"``,
  and the same optimum on the same rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from virality.errors import DataValidationError
from virality.ml.softmax import objective
from virality.ml.solvers import fit
from virality.ml.tiering import assign_tiers, fit_tiering
from virality.services.training import TrainingConfig, train_file
from virality_dev.synthetic import sample_csv
from virality_spark.train import collect_training_arrays, train_spark

ROWS = 2500
SEED = 21
FIXED = TrainingConfig(l2=1e-3, calibration="none", bootstrap=0)


def _with_label_views(rows: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A sample CSV plus a labelViews column; its views and labelViews, shape (rows,) each."""
    reader = csv.DictReader(io.StringIO(sample_csv(rows, seed).decode()))
    out = io.StringIO()
    assert reader.fieldnames is not None
    writer = csv.DictWriter(out, [*reader.fieldnames, "labelViews"], lineterminator="\n")
    writer.writeheader()
    views, labels = [], []
    for i, record in enumerate(reader):
        v = float(record["views"])
        # a row-dependent growth to the horizon, so tiers by labelViews differ from tiers by views
        label = float(round(v * (1.0 + ((i * 37) % 11) / 2.0)))
        cell = f"{label:.1f}" if i % 50 == 0 else f"{label:.0f}"
        views.append(v)
        labels.append(label)
        writer.writerow({**record, "labelViews": cell})
    return out.getvalue().encode(), np.asarray(views), np.asarray(labels)


@pytest.fixture(scope="module")
def horizon(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, np.ndarray, np.ndarray]:
    body, views, labels = _with_label_views(ROWS, SEED)
    path = tmp_path_factory.mktemp("horizon") / "horizon.csv"
    path.write_bytes(body)
    return path, body, views, labels


@pytest.fixture(scope="module")
def both(spark: Any, horizon: Any) -> tuple[Any, Any]:
    path, body, _, _ = horizon
    numpy_artifact = train_file(body, str(path), FIXED).artifact
    spark_run = train_spark(spark, str(path), FIXED)
    return numpy_artifact, spark_run


def test_label_views_give_the_tiers_on_spark_as_on_numpy(both: Any, horizon: Any) -> None:
    numpy_artifact, spark_run = both
    _, _, views, labels = horizon
    got = spark_run.outcome.artifact
    assert numpy_artifact.data.labelColumn == got.data.labelColumn == "labelViews"
    # cut points from every row's labelViews (exact quantiles on Spark): the NumPy trainer's, to the last bits
    np.testing.assert_allclose(got.tiering.thresholds, numpy_artifact.tiering.thresholds, rtol=1e-12)
    np.testing.assert_allclose(got.tiering.thresholds, fit_tiering(labels).thresholds, rtol=1e-12)
    # every row's tier: per tier, train + test together, the same counts as NumPy's (splits differ, rows do not)
    spark_total = np.add(got.data.classCounts.train, got.data.classCounts.test)
    numpy_total = np.add(numpy_artifact.data.classCounts.train, numpy_artifact.data.classCounts.test)
    np.testing.assert_array_equal(spark_total, numpy_total)
    np.testing.assert_array_equal(spark_total, np.bincount(assign_tiers(labels, got.tiering) - 1, minlength=5))
    # ... and not the tiers views would give (the file does tell the two apart)
    by_views = np.bincount(assign_tiers(views, fit_tiering(views)) - 1, minlength=5)
    by_views_at_label_cuts = np.bincount(assign_tiers(views, got.tiering) - 1, minlength=5)
    assert not np.array_equal(spark_total, by_views_at_label_cuts)
    assert not np.allclose(fit_tiering(views).thresholds, got.tiering.thresholds)
    assert by_views.sum() == spark_total.sum() == ROWS
    # the test split the promotion gate sees is tiered by labelViews too
    test = spark_run.test
    np.testing.assert_array_equal(np.bincount(test.y, minlength=5), got.data.classCounts.test)


def test_label_views_reach_the_numpy_optimum_on_the_same_rows(spark: Any, horizon: Any, both: Any) -> None:
    path = horizon[0]
    got = both[1].outcome.artifact
    X, y = collect_training_arrays(spark, str(path), FIXED, got)
    np.testing.assert_array_equal(np.bincount(y, minlength=5), got.data.classCounts.train)
    ref = fit(X, y, l2_reg_strength=FIXED.l2, tol=FIXED.tol)
    assert abs(got.training.finalObjective - ref.objective) <= 1e-6 * abs(ref.objective)
    W, b = np.array(got.weights), np.array(got.biases)
    assert abs(objective(W, b, X, y, FIXED.l2) - ref.objective) <= 1e-6 * abs(ref.objective)


@pytest.mark.parametrize(("cell", "message"), [("lots", "'lots'"), ("", "missing value"), ("-5", ">= 0")])
def test_a_bad_label_views_cell_is_named_by_key_and_column(spark: Any, tmp_path: Path, cell: str,
                                                           message: str) -> None:
    body, _, _ = _with_label_views(120, 4)
    rows = list(csv.reader(io.StringIO(body.decode())))
    header = rows[0]
    rows[9][header.index("labelViews")] = cell
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = tmp_path / "bad-horizon.csv"
    path.write_text(out.getvalue())
    with pytest.raises(DataValidationError) as info:
        train_spark(spark, str(path), FIXED)
    assert info.value.column == "labelViews"
    assert rows[9][header.index("videoId")] in str(info.value) and message in str(info.value)
    # the NumPy trainer refuses the same cell, naming the same column
    with pytest.raises(DataValidationError) as numpy_info:
        train_file(out.getvalue().encode(), str(path), FIXED)
    assert numpy_info.value.column == "labelViews"


def test_both_engines_record_the_sha256_of_the_source_bytes(both: Any, horizon: Any, spark: Any,
                                                             tmp_path: Path) -> None:
    numpy_artifact, spark_run = both
    body = horizon[1]
    digest = hashlib.sha256(body).hexdigest()
    assert numpy_artifact.data.sha256 == digest
    assert spark_run.outcome.artifact.data.sha256 == digest
    # the same rows in another order: other bytes, another digest (same name: it is the bytes that are hashed)
    lines = body.split(b"\n")
    lines[1], lines[2] = lines[2], lines[1]
    changed = tmp_path / horizon[0].name
    changed.write_bytes(b"\n".join(lines))
    other = train_spark(spark, str(changed), FIXED).outcome.artifact
    assert other.data.sha256 == hashlib.sha256(changed.read_bytes()).hexdigest() != digest


def test_a_source_that_cannot_be_hashed_fails_the_training_and_publishes_no_digest(spark: Any,
                                                                                    horizon: Any) -> None:
    def unreadable() -> str:
        raise ConnectionError("injected: the checksum read of the source was reset")

    with pytest.raises(ConnectionError, match="checksum read"):
        train_spark(spark, str(horizon[0]), FIXED, sha256=unreadable)


def test_a_missing_source_is_a_configuration_error_before_any_spark_work(spark: Any, tmp_path: Path) -> None:
    from virality.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no such training file"):
        train_spark(spark, str(tmp_path / "gone.csv"), FIXED)
