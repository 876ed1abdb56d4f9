"""``virality train DATA --engine spark``: the ordinary artifact, written by the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from virality.artifact import load_artifact
from virality_dev.cli import EXIT_DATA, main
from virality_dev.synthetic import sample_csv, sample_jsonl


def test_train_with_the_spark_engine_writes_a_valid_artifact(spark: Any, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "videos.jsonl"
    data.write_bytes(sample_jsonl(1200, 9))
    out = tmp_path / "ml-weights.json"
    assert main(["train", str(data), "--engine", "spark", "--l2", "0.01", "--out", str(out)]) == 0
    artifact = load_artifact(out.read_bytes())
    doc = json.loads(out.read_text())
    assert doc["training"]["engine"] == "spark" and doc["training"]["l2"] == 0.01
    assert artifact.data.format == "jsonl" and artifact.training.converged
    assert "test accuracy" in capsys.readouterr().out
    assert spark.sparkContext._jsc is not None          # the CLI left the running session alone


def test_train_with_the_spark_engine_and_the_default_options(spark: Any, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "videos.csv"
    data.write_bytes(sample_csv(1500, 6))
    out = tmp_path / "ml-weights.json"
    assert main(["train", str(data), "--engine", "spark", "--bootstrap", "50", "--out", str(out)]) == 0
    artifact = load_artifact(out.read_bytes())
    t = artifact.training
    # as the NumPy engine: lambda by 5-fold CV, temperature folded in, full feature set, test intervals
    assert t.engine == "spark" and t.l2Search is not None and t.l2Search.folds == 5
    assert t.l2 == t.l2Search.chosen and t.l2Search.sampleRows == artifact.data.rows.train
    assert artifact.calibration.method == "temperature" and artifact.calibration.nSamples == artifact.data.rows.train
    assert artifact.featureSet == "full"
    assert artifact.metrics.testIntervals["accuracy"].nResamples == 50
    report = capsys.readouterr().out
    assert "l2 search" in report and "calibration     temperature" in report
    assert f"{artifact.data.rows.train}-row driver sample" in report


def test_the_spark_engine_takes_the_feature_set_and_calibration_options(spark: Any, tmp_path: Path) -> None:
    data = tmp_path / "videos.jsonl"
    data.write_bytes(sample_jsonl(1200, 9))
    out = tmp_path / "ml-weights.json"
    assert main(["train", str(data), "--engine", "spark", "--l2", "0.001", "--calibration", "none",
                 "--feature-set", "prepublication", "--bootstrap", "0", "--out", str(out)]) == 0
    artifact = load_artifact(out.read_bytes())
    assert artifact.training.l2 == 0.001 and artifact.training.l2Search is None
    assert artifact.calibration.method == "none" and artifact.featureSet == "prepublication"


def test_seed_json_is_refused_by_the_spark_engine_with_one_line(spark: Any, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "seed.json"
    data.write_text("{}")
    assert main(["train", str(data), "--engine", "spark", "--format", "seed-json"]) == EXIT_DATA
    assert "raw records" in capsys.readouterr().err


def test_parquet_without_the_spark_engine_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "videos.parquet"
    data.write_bytes(b"PAR1")
    assert main(["train", str(data), "--format", "parquet"]) == EXIT_DATA
    assert "--engine spark" in capsys.readouterr().err
