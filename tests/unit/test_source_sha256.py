"""Source digests for the Spark engine: the SHA-256 of the bytes, streamed, like the NumPy trainer's.

No Spark here: hashing runs on the driver before any Spark work (local files
directly, S3 objects through the registry seam, against moto).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from virality.data.datasets import load_training_data
from virality.errors import ConfigurationError, TrainingSourceNotFoundError
from virality.store.s3 import object_sha256
from virality_dev.fakeaws import DATA_BUCKET
from virality_dev.synthetic import sample_csv
from virality_spark.train import source_sha256


class _CountingBody:
    """A StreamingBody stand-in that records the size of every read (to prove the object is streamed)."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self.reads: list[int] = []

    def read(self, n: int = -1) -> bytes:
        chunk = self._body.read(n)
        self.reads.append(len(chunk))
        return chunk


class _Recording:
    def __init__(self, client: Any) -> None:
        self._client = client
        self.bodies: list[_CountingBody] = []
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        response = self._client.get_object(**kwargs)
        body = _CountingBody(response["Body"])
        self.bodies.append(body)
        return {**response, "Body": body}


def test_a_local_file_has_the_digest_the_numpy_trainer_records(tmp_path: Path) -> None:
    data = sample_csv(400, 2)
    path = tmp_path / "videos.csv"
    path.write_bytes(data)
    assert source_sha256(str(path)) == load_training_data(data, str(path)).sha256 == hashlib.sha256(data).hexdigest()
    assert source_sha256(f"file://{path}") == hashlib.sha256(data).hexdigest()


def test_a_directory_of_parts_hashes_its_data_files_in_path_order(tmp_path: Path) -> None:
    parts = tmp_path / "table.parquet"
    (parts / "_temporary" / "0").mkdir(parents=True)
    (parts / "part-00001.parquet").write_bytes(b"second")
    (parts / "part-00000.parquet").write_bytes(b"first")
    (parts / "_SUCCESS").write_bytes(b"")
    (parts / ".part-00000.parquet.crc").write_bytes(b"checksum")
    (parts / "_temporary" / "0" / "part-9.parquet").write_bytes(b"uncommitted")
    assert source_sha256(str(parts)) == hashlib.sha256(b"firstsecond").hexdigest()


def test_a_missing_path_or_an_s3_prefix_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such training file"):
        source_sha256(str(tmp_path / "nope.csv"))
    with pytest.raises(ConfigurationError, match="not a prefix"):
        source_sha256("s3://bucket/training-data/")


def test_an_s3_object_is_streamed_in_chunks_and_pinned_to_its_version(s3: Any) -> None:
    old = sample_csv(3000, 1)
    new = sample_csv(3000, 2)
    first = s3.put_object(Bucket=DATA_BUCKET, Key="training-data/big.csv", Body=old)
    s3.put_object(Bucket=DATA_BUCKET, Key="training-data/big.csv", Body=new)
    client = _Recording(s3)
    chunk = 64 * 1024
    # the overwritten version by its id: the old bytes, read one chunk at a time
    got = object_sha256(client, DATA_BUCKET, "training-data/big.csv", version_id=first["VersionId"],
                        chunk_bytes=chunk)
    assert got == hashlib.sha256(old).hexdigest()
    assert client.calls[-1]["VersionId"] == first["VersionId"]
    reads = client.bodies[-1].reads
    assert len(reads) > 2 and max(reads) <= chunk and sum(reads) == len(old)
    # the current object, through the public path of the engine (S3 URI -> default client)
    assert source_sha256(f"s3://{DATA_BUCKET}/training-data/big.csv", client_factory=lambda: s3) == \
        hashlib.sha256(new).hexdigest()


def test_an_s3_object_replaced_since_it_was_identified_is_not_hashed(s3: Any) -> None:
    s3.put_object(Bucket=DATA_BUCKET, Key="training-data/x.csv", Body=b"a,b\n1,2\n")
    stale_etag = '"0123456789abcdef0123456789abcdef"'
    with pytest.raises(Exception) as info:
        object_sha256(s3, DATA_BUCKET, "training-data/x.csv", etag=stale_etag)
    assert "PreconditionFailed" in str(info.value) or "412" in str(info.value)
    with pytest.raises(TrainingSourceNotFoundError):
        object_sha256(s3, DATA_BUCKET, "training-data/missing.csv")
