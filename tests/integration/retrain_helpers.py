"""Helpers shared by the retrain integration tests (moto S3, handlers loaded by path).

Nothing here is a fixture: the shared fixtures live in ``tests/conftest.py``.
The helpers upload training files, build notifications, run the retrain
handler and check the invariants every test cares about: a published
version is complete and valid, the pointer names a complete artifact whose
sha256 matches, and nothing was written when nothing should have been.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from virality.artifact import ModelArtifact, load_artifact
from virality.data.datasets import load_training_data
from virality.ml.features import FEATURE_NAMES
from virality_dev.events import s3_put_event
from virality_dev.fakeaws import DATA_BUCKET, MODEL_BUCKET
from virality_dev.synthetic import sample_csv

TRAINING_PREFIX = "training-data/"
MODEL_PREFIX = "models/"
POINTER_KEY = MODEL_PREFIX + "latest.json"


# --------------------------------------------------------------------------- data


@lru_cache(maxsize=64)
def csv_bytes(rows: int = 600, seed: int = 1) -> bytes:
    """The synthetic CSV (cached: bytes are immutable and generation is deterministic)."""
    return sample_csv(rows, seed)


@lru_cache(maxsize=16)
def seed_json_bytes(rows: int = 600, seed: int = 1, *, scramble_train_labels: bool = False,
                    label_seed: int = 0) -> bytes:
    """A training file in the original seed-JSON format, built from synthetic features.

    With ``scramble_train_labels`` the training labels are drawn at random (the
    features carry no signal about them) while the test split keeps its true
    labels: a model trained on it is much worse on its own test split.
    """
    ts = load_training_data(csv_bytes(rows, seed), "synthetic.csv")
    train_labels = ts.train.tiers.tolist()
    if scramble_train_labels:
        train_labels = np.random.default_rng(label_seed).integers(1, 6, size=len(train_labels)).tolist()
    doc = {
        "featureNames": list(FEATURE_NAMES),
        "trainSet": {"features": ts.train.X.tolist(), "labels": train_labels},
        "testSet": {"features": ts.test.X.tolist(), "labels": ts.test.tiers.tolist()},
    }
    return json.dumps(doc).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- S3 + events


def put_training(s3: Any, key: str, body: bytes, *, bucket: str = DATA_BUCKET,
                 metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Upload a training file; returns the put_object response (``VersionId``, ``ETag``)."""
    return s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata or {})


def event_for(key: str, *, version_id: str | None = None, bucket: str = DATA_BUCKET) -> dict[str, Any]:
    """The S3 put notification for ``key`` (URL-encoded the way S3 sends it)."""
    return s3_put_event(bucket, key, version_id=version_id)


def run(app: Any, ctx: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Invoke the retrain handler; returns the per-record summaries."""
    response = app.lambda_handler(event, ctx)
    assert set(response) <= {"results", "batchItemFailures"}, response   # the latter for SQS batches
    return response["results"]


def run_one(app: Any, ctx: Any, event: dict[str, Any]) -> dict[str, Any]:
    results = run(app, ctx, event)
    assert len(results) == 1, results
    return results[0]


def all_keys(s3: Any, bucket: str = MODEL_BUCKET) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def object_versions(s3: Any, bucket: str = MODEL_BUCKET, prefix: str = "") -> dict[str, list[str]]:
    """Key -> every stored S3 object version id (newest first), delete markers excluded."""
    out: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            out.setdefault(item["Key"], []).append(item["VersionId"])
    return out


def weights_keys(s3: Any, bucket: str = MODEL_BUCKET, prefix: str = MODEL_PREFIX) -> set[str]:
    return {k for k in all_keys(s3, bucket) if k.startswith(prefix) and k.endswith("/ml-weights.json")}


def pointer(s3: Any, bucket: str = MODEL_BUCKET, key: str = POINTER_KEY) -> tuple[dict[str, Any], str] | None:
    """The pointer document and its ETag, or None."""
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(obj["Body"].read()), obj["ETag"]


def pointer_etag(s3: Any, bucket: str = MODEL_BUCKET, key: str = POINTER_KEY) -> str | None:
    found = pointer(s3, bucket, key)
    return None if found is None else found[1]


def load_published(s3: Any, version: str, *, bucket: str = MODEL_BUCKET,
                   prefix: str = MODEL_PREFIX) -> tuple[ModelArtifact, bytes]:
    """Assert ``version`` is completely published (weights valid, report beside it)."""
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}{version}/ml-weights.json")["Body"].read()
    artifact = load_artifact(body, source=version)        # validates shapes and the checksum
    assert artifact.modelVersion == version
    report = s3.get_object(Bucket=bucket, Key=f"{prefix}{version}/report.txt")["Body"].read().decode()
    assert version in report and "macro-F1" in report
    return artifact, body


def assert_pointer_valid(s3: Any, *, bucket: str = MODEL_BUCKET, prefix: str = MODEL_PREFIX,
                         doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pointer names a complete artifact whose bytes hash to the pointer's sha256."""
    if doc is None:
        found = pointer(s3, bucket, prefix + "latest.json")
        assert found is not None, "no pointer"
        doc = found[0]
    assert {"version", "key", "sha256", "trainedAt", "metrics"} <= set(doc), doc
    assert doc["key"] == f"{prefix}{doc['version']}/ml-weights.json"
    artifact, body = load_published(s3, doc["version"], bucket=bucket, prefix=prefix)
    assert sha256(body) == doc["sha256"]
    assert artifact.trainedAt == doc["trainedAt"]
    return doc


def assert_pointer_history_valid(s3: Any, *, bucket: str = MODEL_BUCKET) -> list[dict[str, Any]]:
    """Every pointer object version ever written named a complete, valid artifact."""
    docs = []
    for vid in object_versions(s3, bucket, POINTER_KEY).get(POINTER_KEY, []):
        doc = json.loads(s3.get_object(Bucket=bucket, Key=POINTER_KEY, VersionId=vid)["Body"].read())
        assert_pointer_valid(s3, bucket=bucket, doc=doc)
        docs.append(doc)
    return docs


def client_error(code: str = "InternalError", status: int = 500, operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


# --------------------------------------------------------------------------- client wrapper


Hook = Callable[[str, dict[str, Any]], None]


class S3Proxy:
    """Wraps a boto3 S3 client to inject faults and latency.

    ``fail(op, predicate)`` makes ``op`` raise a ClientError 500 when
    ``predicate(kwargs)`` holds; ``latency`` sleeps (jittered) before every
    get/put/head. Conditional puts (``IfMatch`` / ``IfNoneMatch``) run under a
    lock: real S3 evaluates the condition and writes atomically, while moto
    checks and then stores in two Python steps that threads can interleave.
    """

    def __init__(self, client: Any, *, latency: tuple[float, float] | None = None, seed: int = 0) -> None:
        self._client = client
        self._latency = latency
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._cond_lock = threading.Lock()
        self._faults: list[tuple[str, Callable[[dict[str, Any]], bool], ClientError]] = []
        self._hooks: list[Hook] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def fail(self, op: str, predicate: Callable[[dict[str, Any]], bool] = lambda kw: True,
             error: ClientError | None = None) -> None:
        self._faults.append((op, predicate, error or client_error(operation=op)))

    def clear_faults(self) -> None:
        self._faults.clear()

    def before(self, hook: Hook) -> None:
        """Call ``hook(op, kwargs)`` before every get/put/head (e.g. to interleave another writer)."""
        self._hooks.append(hook)

    def _before(self, op: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((op, {k: v for k, v in kwargs.items() if k != "Body"}))
        if self._latency is not None:
            with self._rng_lock:
                delay = self._rng.uniform(*self._latency)
            time.sleep(delay)
        for hook in list(self._hooks):
            hook(op, kwargs)
        for fault_op, predicate, error in self._faults:
            if fault_op == op and predicate(kwargs):
                raise error

    def put_object(self, **kwargs: Any) -> Any:
        self._before("put_object", kwargs)
        if "IfMatch" in kwargs or "IfNoneMatch" in kwargs:
            with self._cond_lock:
                return self._client.put_object(**kwargs)
        return self._client.put_object(**kwargs)

    def get_object(self, **kwargs: Any) -> Any:
        self._before("get_object", kwargs)
        return self._client.get_object(**kwargs)

    def head_object(self, **kwargs: Any) -> Any:
        self._before("head_object", kwargs)
        return self._client.head_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def install_proxy(monkeypatch: Any, retrain_app: Any, **kwargs: Any) -> S3Proxy:
    """Make the retrain handler use an :class:`S3Proxy` around a fresh moto-backed client."""
    import boto3

    proxy = S3Proxy(boto3.client("s3", region_name="us-east-1"), **kwargs)
    monkeypatch.setattr(retrain_app.s3_client, "_client", proxy)
    return proxy


def key_for_weights(version: str, prefix: str = MODEL_PREFIX) -> str:
    return f"{prefix}{version}/ml-weights.json"


__all__ = [
    "DATA_BUCKET", "MODEL_BUCKET", "MODEL_PREFIX", "POINTER_KEY", "TRAINING_PREFIX", "S3Proxy",
    "all_keys", "assert_pointer_history_valid", "assert_pointer_valid", "client_error", "csv_bytes",
    "event_for", "install_proxy", "key_for_weights", "load_published", "object_versions", "pointer",
    "pointer_etag", "put_training", "run", "run_one", "seed_json_bytes", "sha256", "weights_keys",
]
