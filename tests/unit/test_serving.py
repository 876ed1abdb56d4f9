"""ModelProvider against the in-memory store: load, refresh, fallback, pointer integrity (no AWS).

The moto integration tests (tests/integration/test_predict_loading.py, ..._artifact_safety.py) cover
the same paths through the handler; these pin the provider's decisions one at a time, with a fake
clock and the store's call log instead of an S3 recorder.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.unit.helpers import PINNED_CONFIG
from virality.artifact import ModelArtifact, dump_artifact
from virality.config import PredictSettings
from virality.services.serving import FALLBACK_RETRY_SECONDS, ModelProvider
from virality.services.training import train_file
from virality.store.base import Pointer
from virality.structs import replace
from virality_dev.memstore import MemoryStore, client_error
from virality_dev.synthetic import sample_csv


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def base() -> ModelArtifact:
    return train_file(sample_csv(300, 3), "serving.csv", PINNED_CONFIG, model_version="v-base").artifact


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore("models-bucket", "models/")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _settings(**values: Any) -> PredictSettings:
    return PredictSettings(model_bucket="models-bucket", **values)


def _publish(store: MemoryStore, base: ModelArtifact, version: str) -> tuple[str, str]:
    return store.publish(replace(base, modelVersion=version), f"report of {version}")


def _point(store: MemoryStore, version: str, key: str, sha256: str | None) -> str:
    state = store.read_pointer_lenient()
    return store.write_pointer(Pointer(version=version, key=key, sha256=sha256),
                               None if state is None else state.etag)


def _promote(store: MemoryStore, base: ModelArtifact, version: str) -> str:
    key, sha = _publish(store, base, version)
    return _point(store, version, key, sha)


def _reads(store: MemoryStore) -> list[str]:
    """The primitive calls since the last look (and forget them)."""
    out = [op for op, _ in store.calls]
    store.calls.clear()
    return out


def test_no_bucket_serves_the_bundled_model_and_never_touches_a_store(clock: Clock) -> None:
    provider = ModelProvider(PredictSettings(), None, clock)
    loaded = provider.get()
    assert loaded.source == "bundled" and loaded.model.version.startswith("bundled-")
    assert loaded.load_error == "NotConfigured"
    clock.advance(10 * FALLBACK_RETRY_SECONDS)
    assert not provider.refresh() and provider.get().source == "bundled"


def test_loads_the_pointed_version_once_and_holds_it_without_refresh(store: MemoryStore, base: ModelArtifact,
                                                                     clock: Clock) -> None:
    etag = _promote(store, base, "v1")
    store.calls.clear()
    provider = ModelProvider(_settings(), store, clock)
    loaded = provider.get()
    assert (loaded.source, loaded.model.version, loaded.key, loaded.pointer_etag) == (
        "published", "v1", "models/v1/ml-weights.json", etag)
    assert _reads(store) == ["read", "read"]                     # the pointer, then the weights
    _promote(store, base, "v2")
    store.calls.clear()
    clock.advance(3600)
    assert provider.get().model.version == "v1"                  # MODEL_REFRESH_SECONDS=0: never looks again
    assert _reads(store) == []


def test_refresh_heads_the_pointer_and_swaps_in_a_new_promotion(store: MemoryStore, base: ModelArtifact,
                                                                clock: Clock) -> None:
    _promote(store, base, "v1")
    provider = ModelProvider(_settings(model_refresh_seconds=30), store, clock)
    assert provider.get().model.version == "v1"
    store.calls.clear()
    clock.advance(29)
    assert provider.get().model.version == "v1" and _reads(store) == []     # not due yet
    clock.advance(1)
    assert provider.get().model.version == "v1" and _reads(store) == ["head"]   # due, unchanged: one HEAD
    etag = _promote(store, base, "v2")
    store.calls.clear()
    clock.advance(30)
    loaded = provider.get()
    assert (loaded.model.version, loaded.pointer_etag, loaded.source) == ("v2", etag, "published")
    assert _reads(store) == ["head", "read", "read"]
    assert provider.last_refresh_error is None


def test_nothing_published_serves_the_bundled_model_until_a_promotion_appears(store: MemoryStore,
                                                                             base: ModelArtifact,
                                                                             clock: Clock) -> None:
    provider = ModelProvider(_settings(), store, clock)
    loaded = provider.get()
    assert loaded.source == "bundled" and loaded.load_error is None
    _promote(store, base, "v1")
    clock.advance(FALLBACK_RETRY_SECONDS - 1)
    assert provider.get().source == "bundled"                    # retried at most every FALLBACK_RETRY_SECONDS
    clock.advance(1)
    assert provider.get().model.version == "v1"                  # even with MODEL_REFRESH_SECONDS=0


def test_an_outage_falls_back_then_recovers(store: MemoryStore, base: ModelArtifact, clock: Clock) -> None:
    _promote(store, base, "v1")
    store.fail("read", error=client_error("ServiceUnavailable", 503, "GetObject"))
    provider = ModelProvider(_settings(), store, clock)
    loaded = provider.get()
    assert loaded.source == "bundled" and loaded.load_error == "StorageUnavailable"
    store.clear_faults()
    clock.advance(FALLBACK_RETRY_SECONDS)
    assert provider.get().model.version == "v1"


def test_an_outage_during_refresh_keeps_the_loaded_model(store: MemoryStore, base: ModelArtifact,
                                                         clock: Clock) -> None:
    _promote(store, base, "v1")
    provider = ModelProvider(_settings(model_refresh_seconds=30), store, clock)
    provider.get()
    _promote(store, base, "v2")
    store.fail("read", lambda key: key.endswith("/ml-weights.json"))
    clock.advance(30)
    assert provider.get().model.version == "v1"
    assert provider.last_refresh_error == "StorageUnavailable"
    store.clear_faults()
    clock.advance(30)
    assert provider.get().model.version == "v2" and provider.last_refresh_error is None


@pytest.mark.parametrize(("case", "kind"), [
    ("key-of-another-version", "InvalidPointer"),
    ("traversal-version", "InvalidPointer"),
    ("artifact-names-another-version", "InvalidPointer"),
    ("sha256-mismatch", "InvalidArtifact"),
    ("unparsable-pointer", "InvalidPointer"),
    ("corrupt-weights", "InvalidArtifact"),
    ("missing-weights", "ModelNotFound"),
])
def test_an_inconsistent_pointer_or_artifact_is_refused_and_not_reread(store: MemoryStore, base: ModelArtifact,
                                                                       clock: Clock, case: str, kind: str) -> None:
    key, sha = _publish(store, base, "v1")
    if case == "key-of-another-version":
        _publish(store, base, "v2")
        _point(store, "v1", "models/v2/ml-weights.json", None)
    elif case == "traversal-version":
        _point(store, "../v1", key, sha)
    elif case == "artifact-names-another-version":
        body = dump_artifact(replace(base, modelVersion="v-other"))
        store.put_raw("models/v3/ml-weights.json", body)
        _point(store, "v3", "models/v3/ml-weights.json", hashlib.sha256(body).hexdigest())
    elif case == "sha256-mismatch":
        _point(store, "v1", key, "0" * 64)
    elif case == "unparsable-pointer":
        store.put_raw(store.pointer_key, b'{"version": ')
    elif case == "corrupt-weights":
        store.put_raw("models/v4/ml-weights.json", b'{"schemaVersion": 2}')
        _point(store, "v4", "models/v4/ml-weights.json", None)
    else:
        _point(store, "v9", "models/v9/ml-weights.json", None)
    provider = ModelProvider(_settings(), store, clock)
    loaded = provider.get()
    assert loaded.source == "bundled" and loaded.load_error == kind
    store.calls.clear()
    clock.advance(FALLBACK_RETRY_SECONDS)
    provider.get()
    if case in ("missing-weights", "unparsable-pointer"):
        # Missing weights may yet appear (not a data incident); an unparsable pointer has no state whose
        # ETag could be remembered: both are read again on each retry (at most every FALLBACK_RETRY_SECONDS).
        assert "read" in _reads(store)
    else:
        assert _reads(store) == ["head"]                         # same refused pointer: one HEAD, no read
    _point(store, "v1", key, sha)                               # a valid promotion is picked up
    clock.advance(FALLBACK_RETRY_SECONDS)
    assert provider.get().model.version == "v1"


def test_a_pinned_version_ignores_the_pointer(store: MemoryStore, base: ModelArtifact, clock: Clock) -> None:
    _publish(store, base, "v1")
    _promote(store, base, "v2")
    provider = ModelProvider(_settings(model_version="v1", model_refresh_seconds=1), store, clock)
    loaded = provider.get()
    assert (loaded.source, loaded.model.version) == ("pinned", "v1")
    store.calls.clear()
    clock.advance(5)
    assert provider.get().model.version == "v1" and _reads(store) == []


def test_a_pinned_version_whose_artifact_names_another_is_refused(store: MemoryStore, base: ModelArtifact,
                                                                  clock: Clock) -> None:
    store.put_raw("models/v1/ml-weights.json", dump_artifact(replace(base, modelVersion="v2")))
    loaded = ModelProvider(_settings(model_version="v1"), store, clock).get()
    assert loaded.source == "bundled" and loaded.load_error == "InvalidArtifact"


def test_a_loader_bug_falls_back_with_internal_error(store: MemoryStore, base: ModelArtifact, clock: Clock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import virality.store.base

    _promote(store, base, "v1")

    def exploding(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(virality.store.base, "load_artifact", exploding)
    loaded = ModelProvider(_settings(), store, clock).get()
    assert loaded.source == "bundled" and loaded.load_error == "InternalError"
