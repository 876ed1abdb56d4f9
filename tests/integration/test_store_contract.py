"""The model-store contract, run against S3 (moto) and the in-memory store alike.

The services' unit tests run on :class:`virality_dev.memstore.MemoryStore`; these assertions
keep it from drifting from S3: not-found, write-once, the pointer's ETag compare-and-swap,
the versioned pointer history and damaged records behave the same on both backends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from virality.artifact import ModelArtifact
from virality.errors import (
    ArtifactValidationError,
    ModelNotFoundError,
    PointerConflictError,
    VersionExistsError,
)
from virality.store.base import AuditModelStore, Pointer
from virality.store.s3 import AuditStore
from virality_dev.fakeaws import MODEL_BUCKET, moto_s3
from virality_dev.memstore import MemoryStore


@dataclass
class Backend:
    store: AuditModelStore
    put_raw: Callable[[str, bytes], None]       # a plain, unconditional put_object


@pytest.fixture(params=["memory", "s3"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryStore(MODEL_BUCKET, "models/")
        yield Backend(memory, lambda key, body: memory.put_raw(key, body) and None)
        return
    with moto_s3() as client:
        yield Backend(AuditStore(MODEL_BUCKET, "models/", lambda: client),
                      lambda key, body: client.put_object(Bucket=MODEL_BUCKET, Key=key, Body=body) and None)


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    from tests.unit.helpers import PINNED_CONFIG
    from virality.services.training import train_file
    from virality_dev.synthetic import sample_csv

    return train_file(sample_csv(300, 5), "contract.csv", PINNED_CONFIG, model_version="v-contract-1").artifact


def _pointer(version: str, **extra: Any) -> Pointer:
    return Pointer(version=version, key=f"models/{version}/ml-weights.json", **extra)


def _md5_etag(body: bytes) -> str:
    return f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'


def test_an_empty_store_has_nothing(backend: Backend) -> None:
    store = backend.store
    assert store.read_pointer() is None and store.read_pointer_lenient() is None
    assert store.pointer_etag() is None
    assert store.list_versions() == [] and store.pointer_history() == []
    assert store.get_json("models/x/decision-0.json") is None and store.read_promotion("x") is None
    assert not store.version_exists("x")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        store.load_key(store.weights_key("x"))


def test_publish_is_write_once_and_weights_come_last(backend: Backend, artifact: ModelArtifact) -> None:
    store = backend.store
    key, sha = store.publish(artifact, "report of v-contract-1")
    assert key == "models/v-contract-1/ml-weights.json" and store.version_exists("v-contract-1")
    loaded, digest = store.load_key(key, sha)
    assert digest == sha and loaded.modelVersion == artifact.modelVersion
    assert store.list_versions() == ["v-contract-1"]
    with pytest.raises(VersionExistsError, match="already exists"):
        store.publish(artifact, "a second report")
    with pytest.raises(ArtifactValidationError, match="does not match"):
        store.load_key(key, "0" * 64)


def test_a_report_left_by_a_failed_attempt_does_not_block_the_version(backend: Backend,
                                                                      artifact: ModelArtifact) -> None:
    backend.put_raw(backend.store.report_key("v-contract-1"), b"from an attempt that died")
    assert not backend.store.version_exists("v-contract-1")
    key, _ = backend.store.publish(artifact, "report")
    assert backend.store.version_exists("v-contract-1") and key.endswith("/ml-weights.json")


def test_a_version_is_listed_only_by_its_weights(backend: Backend) -> None:
    backend.put_raw("models/v1/report.txt", b"r")
    backend.put_raw("models/v2/ml-weights.json", b"{}")
    backend.put_raw("models/nested/v3/ml-weights.json", b"{}")
    assert backend.store.list_versions() == ["v2"]


def test_json_records_are_write_once_and_the_first_writer_wins(backend: Backend) -> None:
    store = backend.store
    assert store.put_json_once("models/_sources/a.json", {"n": 1})
    assert not store.put_json_once("models/_sources/a.json", {"n": 2})
    assert store.get_json("models/_sources/a.json") == {"n": 1}
    assert store.claim_source("bucket/key#v1", "v-a") is None
    assert store.claim_source("bucket/key#v1", "v-b") == "v-a"
    assert store.record_promotion("v-a", {"promoted": True}) == {"promoted": True}
    assert store.record_promotion("v-a", {"promoted": False}) == {"promoted": True}
    assert store.read_promotion("v-a") == {"promoted": True}


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b""])
def test_a_damaged_record_is_an_error_not_a_guess(backend: Backend, body: bytes) -> None:
    backend.put_raw("models/v1/decision-0.json", body)
    with pytest.raises(ArtifactValidationError, match="not a JSON object"):
        backend.store.get_json("models/v1/decision-0.json")


def test_the_pointer_is_compare_and_swap_on_its_etag(backend: Backend) -> None:
    store = backend.store
    first = store.write_pointer(_pointer("v1"), None)
    assert first == store.pointer_etag() == _md5_etag(_pointer("v1").to_json())
    with pytest.raises(PointerConflictError):
        store.write_pointer(_pointer("v2"), None)             # "only if absent", but it exists
    with pytest.raises(PointerConflictError):
        store.write_pointer(_pointer("v2"), '"0123456789abcdef0123456789abcdef"')
    second = store.write_pointer(_pointer("v2", previous="v1"), first)
    state = store.read_pointer()
    assert state is not None and state.etag == second != first
    assert (state.pointer.version, state.pointer.previous) == ("v2", "v1")
    with pytest.raises(PointerConflictError):
        store.write_pointer(_pointer("v3"), first)            # stale ETag: somebody moved it since


def test_the_pointer_history_holds_every_write(backend: Backend) -> None:
    store = backend.store
    etag = None
    for n in range(1, 4):
        etag = store.write_pointer(_pointer(f"v{n}", decision=0), etag)
    backend.put_raw(store.pointer_key, b"{broken")               # unreadable versions are skipped
    # As a set: S3's LastModified has millisecond resolution and ties break on (random) version ids,
    # so the protocol only ever asks whether a version is in the history, never its rank.
    history = store.pointer_history()
    assert sorted(p.version for p in history) == ["v1", "v2", "v3"] and len(history) == 3
    assert all(p.decision == 0 for p in history)
    assert store.pointer_history(since="2999-01-01T00:00:00Z") == []


def test_a_corrupt_pointer_fails_loudly_but_can_be_replaced_by_its_etag(backend: Backend) -> None:
    store = backend.store
    backend.put_raw(store.pointer_key, b'{"version": 7}')
    with pytest.raises(ArtifactValidationError, match="invalid pointer"):
        store.read_pointer()
    broken = store.read_pointer_lenient()
    assert broken is not None and broken.pointer is None and broken.etag == store.pointer_etag()
    store.write_pointer(_pointer("v1"), broken.etag)
    state = store.read_pointer()
    assert state is not None and state.pointer.version == "v1"


def test_a_pointer_nested_past_the_recursion_limit_is_corrupt_not_a_crash(backend: Backend) -> None:
    store = backend.store
    depth = 5000
    backend.put_raw(store.pointer_key, b'{"version": "v", "key": "k", "metrics": {"a": ' + b"[" * depth
                    + b"]" * depth + b"}}")
    with pytest.raises(ArtifactValidationError, match="invalid pointer"):
        store.read_pointer()
    broken = store.read_pointer_lenient()         # so promotion can still replace it
    assert broken is not None and broken.pointer is None
    store.write_pointer(_pointer("v1"), broken.etag)
    assert store.pointer_history()[0].version == "v1"


def test_lease_and_release_keys_sit_beside_the_claim(backend: Backend) -> None:
    store = backend.store
    claim = store.lease_key("b/k#1", 0)
    assert claim == store.claim_key("b/k#1") and claim.startswith("models/_sources/") and claim.endswith(".json")
    assert store.lease_key("b/k#1", 2) == claim[:-5] + ".lease-2.json"
    assert store.release_key("b/k#1", 0) == claim[:-5] + ".release-0.json"


def test_audit_reports_are_write_once_and_windows_claimed_once(backend: Backend) -> None:
    store = backend.store
    key = store.audit_report_key("20261201T000000Z", "v1")
    assert store.claim_audit_window("w1:v1", key) is None
    assert store.claim_audit_window("w1:v1", "another") == key
    store.write_audit_report(key, {"ece": 0.1})
    with pytest.raises(VersionExistsError):
        store.write_audit_report(key, {"ece": 0.2})
    assert store.read_audit_report(key) == {"ece": 0.1}
    assert store.read_audit_report(store.audit_report_key("x", "v9")) is None
    assert store.list_audit_reports() == [key]                  # the window claims are not reports
