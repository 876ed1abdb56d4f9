"""A published artifact never takes predict down (moto S3, the real handler, real API Gateway events).

Issue 9, sections 3 and 6b: poisoned artifacts whose sha256 *matches* the pointer (deep JSON,
huge weights), a loader that raises anything at all, pointers whose version, key and artifact
disagree, and what ``GET /model`` may reveal. Each is checked at cold start and on refresh, with
every S3 call the handler makes recorded, so "retries are rate-limited" is proven, not assumed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.integration.helpers import MODEL_BUCKET, version_id
from tests.integration.test_predict_loading import logged, model_info, predict, start
from virality.artifact import dump_artifact
from virality.services.serving import FALLBACK_RETRY_SECONDS
from virality.structs import replace
from virality_dev.events import api_event, load_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

V1, V2, V3 = version_id(1), version_id(2), version_id(3)


def _signed(store: Any, version: str, edit: Any) -> bytes:
    """The artifact of ``version`` edited by ``edit(doc)``, re-signed so its checksum is valid."""
    from virality.artifact import canonical_checksum

    doc = json.loads(dump_artifact(store.artifact(version)))
    edit(doc)
    doc.pop("checksum", None)
    doc["checksum"] = canonical_checksum(doc)
    return json.dumps(doc).encode()


def _deep(depth: int) -> Any:
    def build(store: Any, version: str) -> bytes:
        body = dump_artifact(store.artifact(version))
        # a deep value in an otherwise complete artifact: the loader must refuse it before anything recurses
        return body.replace(b'"schemaVersion": 2', b'"schemaVersion": 2, "x": ' + b"[" * depth + b"]" * depth, 1)
    return build


def _set(path: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        if path == "weight":
            doc["weights"][2][4] = value
        else:
            doc["biases"][1] = value
    return lambda store, version: _signed(store, version, edit)


def _huge_int(store: Any, version: str) -> bytes:
    body = _signed(store, version, lambda d: d["biases"].__setitem__(0, 12345.5))
    return body.replace(b"12345.5", b"9" * 401, 1)


POISONED = {
    "100,000 deep": _deep(100_000),
    "1,490 deep": _deep(1_490),
    "990 deep": _deep(990),
    "weight 1e308": _set("weight", 1e308),
    "bias -1e308": _set("bias", -1e308),
    "weight max float": _set("weight", 1.7976931348623157e308),
    "401-digit bias": _huge_int,
}


def every_route_answers(invoke: Any, version_prefix: str) -> None:
    """/health, /predict (single and batch) and /model all answer 200 with finite numbers."""
    health = invoke(load_event("health.json"))
    assert health.status == 200 and health.body["modelVersion"].startswith(version_prefix), health.body
    single = predict(invoke)
    assert single["modelVersion"].startswith(version_prefix)
    batch = invoke(load_event("predict-batch.json"))
    assert batch.status == 200, batch.body
    for p in (single, *batch.body["predictions"]):
        assert p["score"] is not None and 0.0 <= p["score"] <= 100.0
    assert model_info(invoke)["modelVersion"].startswith(version_prefix)


@pytest.mark.parametrize("poison", list(POISONED))
def test_poisoned_artifact_with_a_matching_sha256_falls_back_and_is_retried_sparingly(
        poison: str, s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given the pointer names a poisoned artifact, and its sha256 is right
    key, sha = store.put_raw(V1, POISONED[poison](store, V1))
    store.point(V1, key, sha)
    model_env()
    start(predict_app, clock)
    # When requests arrive, every route answers with the bundled baseline (no 500, no null score)
    with caplog.at_level(logging.WARNING, logger="virality"):
        every_route_answers(invoke, "bundled-")
    info = model_info(invoke)
    assert info["source"] == "bundled" and info["loadError"] == "InvalidArtifact"
    assert logged(caplog, V1, logging.ERROR), "a data incident is logged as an error, naming the version"
    # And the load was tried once: later requests make no S3 call at all ...
    assert s3_recorder.take() == ["GetObject", "GetObject"]
    every_route_answers(invoke, "bundled-")
    assert s3_recorder.take() == []
    # ... the retry (after the fallback interval) is one HEAD while the refused pointer stays ...
    clock.advance(FALLBACK_RETRY_SECONDS)
    every_route_answers(invoke, "bundled-")
    assert s3_recorder.take() == ["HeadObject"]
    # ... and once a valid model is promoted, the next retry serves it
    store.promote(V2)
    clock.advance(FALLBACK_RETRY_SECONDS)
    every_route_answers(invoke, V2)
    assert model_info(invoke)["loadError"] is None


@pytest.mark.parametrize("poison", list(POISONED))
def test_refresh_never_swaps_in_a_poisoned_artifact(
        poison: str, s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    store.promote(V1)
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    every_route_answers(invoke, V1)
    # Given the pointer moves to a poisoned artifact with a matching sha256
    key, sha = store.put_raw(V2, POISONED[poison](store, V2))
    store.point(V2, key, sha)
    s3_recorder.take()
    clock.advance(30)
    with caplog.at_level(logging.WARNING, logger="virality"):
        every_route_answers(invoke, V1)
    assert model_info(invoke)["lastRefreshError"] == "InvalidArtifact"
    assert logged(caplog, V2, logging.ERROR)
    assert s3_recorder.take() == ["HeadObject", "GetObject", "GetObject"]
    # The refused pointer is not read again: each later refresh is a single HEAD
    clock.advance(30)
    every_route_answers(invoke, V1)
    assert s3_recorder.take() == ["HeadObject"]
    # A valid promotion is picked up as usual
    store.promote(V3)
    clock.advance(30)
    every_route_answers(invoke, V3)
    assert model_info(invoke)["lastRefreshError"] is None


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"), MemoryError(),
                                   RuntimeError("boom"), KeyError("weights"), OverflowError("int too large")],
                         ids=lambda e: type(e).__name__)
def test_any_exception_while_loading_falls_back(
        error: BaseException, monkeypatch: pytest.MonkeyPatch, s3_recorder: Any, store: Any, model_env: Any,
        invoke: Any, predict_app: Any, clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    import virality.store.base

    # Given the loader itself raises something no one planned for (not a library or botocore error)
    store.promote(V1)
    real = virality.store.base.load_artifact

    def exploding(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(virality.store.base, "load_artifact", exploding)
    model_env()
    start(predict_app, clock)
    with caplog.at_level(logging.WARNING, logger="virality"):
        every_route_answers(invoke, "bundled-")
    assert model_info(invoke)["loadError"] == "InternalError"
    # the traceback is in the logs, for us
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    # rate-limited: no S3 call until the retry interval, then only a HEAD for the same pointer
    s3_recorder.take()
    every_route_answers(invoke, "bundled-")
    assert s3_recorder.take() == []
    clock.advance(FALLBACK_RETRY_SECONDS)
    every_route_answers(invoke, "bundled-")
    assert s3_recorder.take() == ["HeadObject"]
    # once the fault is gone and a new version is promoted, the container recovers
    monkeypatch.setattr(virality.store.base, "load_artifact", real)
    store.promote(V2)
    clock.advance(FALLBACK_RETRY_SECONDS)
    every_route_answers(invoke, V2)


# --------------------------------------------------------------------------- pointer integrity


def _version_names_another_artifact(store: Any) -> tuple[str, str, str | None]:
    # the pointer says V1 but its key (and sha256) are V2's
    store.publish(V1)
    key, sha = store.publish(V2)
    return V1, key, sha


def _key_outside_the_prefix(store: Any) -> tuple[str, str, str | None]:
    # a genuine V1 artifact, but stored outside <MODEL_PREFIX><version>/ml-weights.json
    body = dump_artifact(store.artifact(V1))
    key = f"uploads/{V1}/ml-weights.json"
    store.client.put_object(Bucket=MODEL_BUCKET, Key=key, Body=body)
    import hashlib

    return V1, key, hashlib.sha256(body).hexdigest()


def _other_file_name(store: Any) -> tuple[str, str, str | None]:
    store.publish(V1)
    store.client.put_object(Bucket=MODEL_BUCKET, Key=f"models/{V1}/other.json", Body=dump_artifact(store.artifact(V1)))
    return V1, f"models/{V1}/other.json", None


def _artifact_says_another_version(store: Any) -> tuple[str, str, str | None]:
    # the right key for V1, but the bytes there are V2's artifact (sha256 matches those bytes)
    key, sha = store.put_raw(V1, dump_artifact(store.artifact(V2)))
    return V1, key, sha


def _traversal_version(store: Any) -> tuple[str, str, str | None]:
    # key == <prefix><version>/ml-weights.json holds, but the version is not one path segment
    version = f"{V1}/../{V1}"
    key, sha = store.put_raw(version, dump_artifact(store.artifact(version)))
    return version, key, sha


MISMATCHES = {
    "version names another artifact": _version_names_another_artifact,
    "key outside the prefix": _key_outside_the_prefix,
    "key not ml-weights.json": _other_file_name,
    "artifact says another version": _artifact_says_another_version,
    "version with a path": _traversal_version,
}


@pytest.mark.parametrize("mismatch", list(MISMATCHES))
def test_inconsistent_pointer_is_refused_at_cold_start(
        mismatch: str, s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    version, key, sha = MISMATCHES[mismatch](store)
    store.point(version, key, sha)
    model_env()
    start(predict_app, clock)
    with caplog.at_level(logging.WARNING, logger="virality"):
        every_route_answers(invoke, "bundled-")
    info = model_info(invoke)
    assert info["source"] == "bundled" and info["loadError"] == "InvalidPointer"
    assert logged(caplog, "PointerIntegrityError", logging.ERROR), "a data incident: logged as an error"
    # refused once, then left alone until the pointer changes
    s3_recorder.take()
    clock.advance(FALLBACK_RETRY_SECONDS)
    every_route_answers(invoke, "bundled-")
    assert s3_recorder.take() == ["HeadObject"]


@pytest.mark.parametrize("mismatch", list(MISMATCHES))
def test_inconsistent_pointer_is_refused_on_refresh(
        mismatch: str, s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    store.promote(version_id(9))
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    every_route_answers(invoke, version_id(9))
    version, key, sha = MISMATCHES[mismatch](store)
    store.point(version, key, sha)
    clock.advance(30)
    with caplog.at_level(logging.WARNING, logger="virality"):
        every_route_answers(invoke, version_id(9))
    assert model_info(invoke)["lastRefreshError"] == "InvalidPointer"
    assert logged(caplog, "PointerIntegrityError", logging.ERROR)


def test_pinned_version_whose_file_holds_another_version_is_refused(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any) -> None:
    store.put_raw(V1, dump_artifact(store.artifact(V2)))
    model_env(MODEL_VERSION=V1)
    every_route_answers(invoke, "bundled-")
    assert model_info(invoke)["loadError"] == "InvalidArtifact"


def test_consistent_pointer_is_served(s3_recorder: Any, store: Any, model_env: Any, invoke: Any) -> None:
    # the control: version, key and modelVersion agree
    store.promote(V1)
    model_env()
    every_route_answers(invoke, V1)
    assert model_info(invoke)["loadError"] is None


# --------------------------------------------------------------------------- GET /model discloses nothing internal

DATA_SOURCE = "s3://virality-data-123456789012-us-east-1/training-data/2026/12/my videos.csv"


def test_model_info_shows_the_training_file_name_and_sha256_only(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, base_artifact: Any) -> None:
    assert base_artifact.data is not None
    data = replace(base_artifact.data, source=DATA_SOURCE)
    store.promote(V1, data=data)
    model_env()
    info = model_info(invoke)
    assert info["modelVersion"] == V1
    assert info["data"]["source"] == "my videos.csv"
    assert info["data"]["sha256"] == data.sha256
    text = json.dumps(info)
    for internal in ("s3://", "virality-data-", "123456789012", "training-data/", MODEL_BUCKET):
        assert internal not in text, f"{internal!r} disclosed: {text}"


@pytest.mark.parametrize("setup", ["outage", "corrupt", "pointer", "missing"])
def test_model_info_errors_are_kinds_without_buckets_or_keys(
        setup: str, s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    if setup == "corrupt":
        key, sha = store.put_raw(V1, b'{"schemaVersion": 2, "trunc')
        store.point(V1, key, sha)
    elif setup == "pointer":
        store.put_pointer_bytes(b"{not json")
    elif setup == "missing":
        store.point(V1, f"models/{V1}/ml-weights.json", None)
    model_env()
    start(predict_app, clock)
    s3_recorder.outage = setup == "outage"
    with caplog.at_level(logging.WARNING, logger="virality"):
        info = model_info(invoke)
    assert info["source"] == "bundled"
    assert info["loadError"] in ("StorageUnavailable", "InvalidArtifact", "InvalidPointer", "ModelNotFound")
    text = json.dumps(info)
    for internal in ("s3://", MODEL_BUCKET, "models/", "latest.json", "Error:", "http"):
        assert internal not in text, f"{internal!r} disclosed: {text}"
    # ... while the logs keep the details
    assert logged(caplog, MODEL_BUCKET) or logged(caplog, "latest.json") or logged(caplog, "s3.us-east-1")


def test_health_and_model_info_events_still_answer_with_a_poisoned_pointer(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any) -> None:
    # the exact event files of events/, not just api_event(): the routes a load balancer probes
    key, sha = store.put_raw(V1, POISONED["100,000 deep"](store, V1))
    store.point(V1, key, sha)
    model_env()
    for name in ("health.json", "model-info.json", "predict-single.json", "predict-video.json",
                 "predict-feature-vector.json", "predict-explain.json"):
        result = invoke(load_event(name))
        assert result.status == 200, (name, result.body)
    assert invoke(api_event("GET", "/model")).body["loadError"] == "InvalidArtifact"


# --------------------------------------------------------------------------- the CLI writes only consistent pointers


def test_cli_rollback_writes_a_pointer_predict_accepts(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, capsys: pytest.CaptureFixture[str],
        base_artifact: Any) -> None:
    from virality.ml.features import FEATURE_NAMES
    from virality_dev.cli import main

    # Given an original-format file (named by its content, not its directory) and a current model
    legacy = {"weights": base_artifact.weights, "biases": base_artifact.biases,
              "featureNames": list(FEATURE_NAMES), "numClasses": 5, "trainedAt": "2025-01-01T00:00:00.000Z"}
    store.put_raw("legacy-2025", json.dumps(legacy).encode())
    store.promote(V1)
    # When the operator rolls back to it, the pointer names the directory's version ...
    assert main(["rollback", "--bucket", MODEL_BUCKET, "--version", "legacy-2025"]) == 0
    pointer = store.registry.read_pointer().pointer
    assert (pointer.version, pointer.key) == ("legacy-2025", "models/legacy-2025/ml-weights.json")
    # ... which predict serves
    model_env()
    assert model_info(invoke)["source"] == "published" and predict(invoke)["modelVersion"].startswith("legacy-")


def test_cli_rollback_refuses_a_file_holding_another_version(
        s3_recorder: Any, store: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from virality_dev.cli import main

    store.promote(V1)
    store.put_raw(V3, dump_artifact(store.artifact(V2)))        # V3's key holds V2's artifact
    assert main(["rollback", "--bucket", MODEL_BUCKET, "--version", V3]) == 1
    assert "holds modelVersion" in capsys.readouterr().err
    assert store.registry.read_pointer().pointer.version == V1   # untouched
