"""The Spark entry point end to end: an S3 source -> a published version -> the moved pointer (moto S3).

Spark reads the same bytes from a local copy (no S3 connector offline); the
source identity, claim, version, gate and pointer all go through moto.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.retrain_helpers import all_keys
from virality.store.s3 import ModelRegistry
from virality_dev.fakeaws import DATA_BUCKET, MODEL_BUCKET
from virality_dev.synthetic import sample_csv
from virality_spark.entry import EXIT_DATA, main

KEY = "training-data/videos.parquet"


def _parquet(rows: int, seed: int) -> bytes:
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(sample_csv(rows, seed)))      # typed columns, NaN followers, bool flags
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()


def _argv(path: Path, version: str | None = None) -> list[str]:
    argv = ["--source", f"s3://{DATA_BUCKET}/{KEY}", "--read-path", str(path), "--model-bucket", MODEL_BUCKET,
            "--format", "parquet"]
    return argv + (["--source-version", version] if version else [])


def _summary(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_publishes_once_and_moves_the_pointer(spark: Any, s3: Any, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    body = _parquet(1500, 4)
    put = s3.put_object(Bucket=DATA_BUCKET, Key=KEY, Body=body)
    path = tmp_path / "videos.parquet"
    path.write_bytes(body)
    assert main(_argv(path), spark=spark) == 0
    first = _summary(capsys)
    assert first["status"] == "published" and first["promoted"] is True
    assert first["sourceVersion"] == put["VersionId"]
    registry = ModelRegistry(MODEL_BUCKET)
    assert registry.list_versions() == [first["version"]]
    pointer = registry.read_pointer().pointer
    assert pointer.version == first["version"]
    artifact, _ = registry.load_key(pointer.key, pointer.sha256)         # complete, checksummed, sha256 matches
    assert artifact.training.engine == "spark" and artifact.data.format == "parquet"
    assert artifact.data.source == f"s3://{DATA_BUCKET}/{KEY}"
    # the bytes of the S3 object version, streamed: what the retrain Lambda records for the same upload
    assert artifact.data.sha256 == hashlib.sha256(body).hexdigest()
    # the retrain Lambda's defaults: lambda by CV and temperature, on the (here: whole) driver sample
    assert artifact.training.l2Search is not None
    assert artifact.training.l2 == artifact.training.l2Search.chosen
    assert artifact.training.l2Search.sampleRows == artifact.data.rows.train
    assert artifact.calibration.method == "temperature" and artifact.featureSet == "full"
    # the same object again: nothing new is published, the pointer does not move
    keys_before = all_keys(s3)
    assert main(_argv(path, put["VersionId"]), spark=spark) == 0
    again = _summary(capsys)
    assert again["status"] == "duplicate" and again["version"] == first["version"]
    assert all_keys(s3) == keys_before
    assert registry.read_pointer().pointer == pointer


def test_rejected_data_writes_nothing(spark: Any, s3: Any, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    text = sample_csv(300, 8).decode().replace(",true,", ",maybe,", 1)
    s3.put_object(Bucket=DATA_BUCKET, Key="training-data/bad.csv", Body=text.encode())
    path = tmp_path / "bad.csv"
    path.write_text(text)
    argv = ["--source", f"s3://{DATA_BUCKET}/training-data/bad.csv", "--read-path", str(path),
            "--model-bucket", MODEL_BUCKET]
    assert main(argv, spark=spark) == EXIT_DATA
    out = _summary(capsys)
    assert out["status"] == "failed" and "hasTrendingSound" in out["error"]
    assert all_keys(s3) == set()


class _FailWeightsOnce:
    """An S3 client whose first put of an ml-weights.json fails (the job dies mid-publish)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith("ml-weights.json") and not self.failed:
            self.failed = True
            raise ConnectionError("injected: connection reset while writing the weights")
        return self._client.put_object(**kwargs)


def test_a_run_that_dies_while_publishing_leaves_no_version_and_the_rerun_finishes(
        spark: Any, s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from virality_spark.entry import build_parser, run

    body = _parquet(1500, 6)
    s3.put_object(Bucket=DATA_BUCKET, Key=KEY, Body=body)
    path = tmp_path / "videos.parquet"
    path.write_bytes(body)
    flaky = _FailWeightsOnce(s3)
    args = build_parser().parse_args(_argv(path))
    with pytest.raises(ConnectionError):
        run(args, spark, client_factory=lambda: flaky)
    registry = ModelRegistry(MODEL_BUCKET)
    assert registry.list_versions() == []          # the report may exist; no loadable version does
    assert registry.read_pointer() is None
    claim = registry.claim_key(f"{DATA_BUCKET}/{KEY}#{s3.head_object(Bucket=DATA_BUCKET, Key=KEY)['VersionId']}")
    claimed = json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=claim)["Body"].read())["version"]
    summary = run(args, spark, client_factory=lambda: s3)
    assert summary.status == "published" and summary.version == claimed    # the claimed id, exactly once
    assert registry.list_versions() == [claimed]
    assert registry.read_pointer().pointer.version == claimed
