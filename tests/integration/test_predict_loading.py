"""How the predict function finds, caches, refreshes and falls back on its model (moto S3).

The handler's S3 client is created lazily by ``virality.store.s3`` through
``default_client_factory``; the ``s3_recorder`` fixture swaps in a moto client
that records every operation, so "no S3 call" is proven, not assumed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
from typing import Any

import pytest

from tests.integration.helpers import MODEL_BUCKET, version_id
from virality.services.serving import FALLBACK_RETRY_SECONDS
from virality.structs import replace
from virality_dev.events import api_event, load_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

PREDICT = "predict-single.json"


def predict(invoke: Any) -> Any:
    result = invoke(load_event(PREDICT))
    assert result.status == 200, result.body
    return result.body


def model_info(invoke: Any) -> dict[str, Any]:
    result = invoke(api_event("GET", "/model"))
    assert result.status == 200, result.body
    return result.body


def logged(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> bool:
    """Whether a log record at ``level`` or above carries ``text`` (the details GET /model no longer shows)."""
    return any(r.levelno >= level and text in str(r.__dict__) for r in caplog.records)


def start(predict_app: Any, clock: Any) -> Any:
    """Create the provider (reads the environment) with the fake clock, before the first request."""
    provider = predict_app.provider()
    provider._clock = clock
    return provider


# --------------------------------------------------------------------------- import / cold start


_IMPORT_PROBE = """
import importlib.util, sys
import boto3, boto3.session, botocore.session

def forbidden(*args, **kwargs):
    raise SystemExit("a boto3 client was created at import time")

boto3.client = forbidden
boto3.session.Session.client = forbidden
botocore.session.Session.create_client = forbidden
from virality_dev.handlers import load_handler
module = load_handler("predict")
assert module._provider is None, "the model must not be loaded at import"
print("xray" if "aws_xray_sdk" in sys.modules else "no-xray")
"""


def test_importing_the_handler_creates_no_boto_client() -> None:
    # A fresh interpreter, so the library's own module-level code runs too
    import os
    import subprocess
    import sys

    from virality_dev.handlers import repo_root

    ROOT = repo_root()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "virality"), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(ROOT / "functions" / "predict" / "app.py")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    # ... and, tracing being off outside Lambda, the X-Ray SDK is not paid for either
    assert proc.stdout.strip() == "no-xray"


_PYDANTIC_PROBE = """
import json, sys
from types import SimpleNamespace
from virality_dev.handlers import load_handler
module = load_handler("predict")
context = SimpleNamespace(function_name="predict", memory_limit_in_mb=128, aws_request_id="r",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:predict")
def call(name, **change):
    with open(f"events/{name}") as f:
        event = {**json.load(f), **change}
    return module.lambda_handler(event, context)["statusCode"]
seen = [call("predict-single.json"), call("predict-video.json"), call("model-info.json"), call("health.json")]
seen.append("pydantic" in sys.modules)
seen.append(call("predict-single.json", body='{"features": {"likeRate": "high"}}', isBase64Encoded=False))
seen.append("pydantic" in sys.modules)
print(json.dumps(seen))
"""


def test_a_cold_start_serving_valid_requests_never_imports_pydantic() -> None:
    # pydantic's import and first model cost ~130 ms of a cold start: the artifact, pointer and settings
    # are msgspec Structs, and the request models are imported only for a request the fast paths decline.
    import os
    import subprocess
    import sys

    from virality_dev.handlers import repo_root

    ROOT = repo_root()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "virality"), str(ROOT / "src")]),
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "Virality"}
    env.pop("MODEL_BUCKET", None)        # the bundled baseline: loaded and validated like a published artifact
    proc = subprocess.run([sys.executable, "-c", _PYDANTIC_PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    *statuses, before, invalid, after = json.loads(proc.stdout.strip().splitlines()[-1])
    # a named-features and a raw-video prediction, GET /model and GET /health, all without pydantic...
    assert statuses == [200, 200, 200, 200] and before is False
    # ... which the first invalid request imports, to name the offending field
    assert invalid == 422 and after is True


def test_without_model_bucket_no_request_creates_a_client(monkeypatch: pytest.MonkeyPatch, invoke: Any) -> None:
    import boto3
    import boto3.session

    def forbidden(*_: Any, **__: Any) -> Any:
        raise AssertionError("a boto3 client was created")

    monkeypatch.setattr(boto3, "client", forbidden)
    monkeypatch.setattr(boto3.session.Session, "client", forbidden)
    assert predict(invoke)["modelVersion"].startswith("bundled-")
    assert invoke(load_event("health.json")).status == 200
    assert model_info(invoke)["source"] == "bundled"


def test_first_invocation_loads_from_s3_and_the_second_makes_no_s3_call(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any) -> None:
    # Given a published, promoted model
    key = store.promote(version_id(1))
    model_env()
    # When the first request arrives, the pointer then the versioned artifact are read
    first = predict(invoke)
    assert first["modelVersion"] == version_id(1)
    assert s3_recorder.take() == ["GetObject", "GetObject"]
    assert s3_recorder.clients_created == 1
    # Then later requests (every route) reuse the module-level model: no S3 call at all
    for _ in range(3):
        assert predict(invoke) == first
    info = model_info(invoke)
    assert invoke(load_event("health.json")).status == 200
    assert s3_recorder.take() == []
    assert s3_recorder.clients_created == 1
    assert info["source"] == "published" and info["key"] == key and info["loadError"] is None
    assert info["modelVersion"] == version_id(1)


def test_a_new_container_loads_again(s3_recorder: Any, store: Any, model_env: Any, invoke: Any,
                                     predict_app: Any) -> None:
    store.promote(version_id(1))
    model_env()
    predict(invoke)
    s3_recorder.take()
    # Given the pointer moved while this container was warm (refresh off)
    store.promote(version_id(2))
    assert predict(invoke)["modelVersion"] == version_id(1)
    # When the container is recycled, the next cold start follows the pointer
    predict_app.reset()
    assert predict(invoke)["modelVersion"] == version_id(2)


# --------------------------------------------------------------------------- pinned version


def test_pinned_version_is_served_even_after_the_pointer_moves(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any) -> None:
    store.publish(version_id(1))
    store.promote(version_id(2))
    model_env(MODEL_VERSION=version_id(1), MODEL_REFRESH_SECONDS="5")
    start(predict_app, clock)
    # The pinned version is loaded directly, without reading the pointer
    assert predict(invoke)["modelVersion"] == version_id(1)
    assert s3_recorder.take() == ["GetObject"]
    info = model_info(invoke)
    assert info["source"] == "pinned" and info["pinnedVersion"] == version_id(1)
    assert info["key"] == f"models/{version_id(1)}/ml-weights.json"
    # When the pointer moves and the refresh interval passes, the pin still wins (and costs no call)
    store.promote(version_id(3))
    clock.advance(60)
    assert predict(invoke)["modelVersion"] == version_id(1)
    assert s3_recorder.take() == []


def test_pinned_version_that_does_not_exist_falls_back_to_bundled(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, caplog: pytest.LogCaptureFixture) -> None:
    store.promote(version_id(1))
    model_env(MODEL_VERSION="v-missing")
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"].startswith("bundled-")
    info = model_info(invoke)
    assert info["source"] == "bundled"
    # GET /model gives the kind; the key is in the logs only
    assert info["loadError"] == "ModelNotFound" and logged(caplog, "v-missing")


# --------------------------------------------------------------------------- refresh


def test_refresh_picks_up_a_new_pointer_only_after_the_interval(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any) -> None:
    store.promote(version_id(1))
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    assert predict(invoke)["modelVersion"] == version_id(1)
    s3_recorder.take()
    # Given a newly promoted model
    store.promote(version_id(2))
    # When less than the interval has passed: the old model, and not even a HEAD
    clock.advance(29)
    assert predict(invoke)["modelVersion"] == version_id(1)
    assert s3_recorder.take() == []
    # When the interval has passed: one HEAD, then the pointer and the new artifact
    clock.advance(1)
    assert predict(invoke)["modelVersion"] == version_id(2)
    assert s3_recorder.take() == ["HeadObject", "GetObject", "GetObject"]
    info = model_info(invoke)
    assert info["source"] == "published" and info["modelVersion"] == version_id(2)
    assert info["refreshSeconds"] == 30
    # And the check restarts the interval
    clock.advance(10)
    predict(invoke)
    assert s3_recorder.take() == []


def test_refresh_with_an_unchanged_pointer_is_a_single_head(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any) -> None:
    store.promote(version_id(1))
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    predict(invoke)
    s3_recorder.take()
    clock.advance(31)
    assert predict(invoke)["modelVersion"] == version_id(1)
    assert s3_recorder.take() == ["HeadObject"]


def test_failed_refresh_keeps_serving_and_logs_a_warning(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    store.promote(version_id(1))
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    predict(invoke)
    s3_recorder.take()
    store.promote(version_id(2))
    # Given S3 fails once the model is loaded
    s3_recorder.outage = True
    clock.advance(31)
    with caplog.at_level(logging.WARNING, logger="virality"):
        # When the refresh is due, the request is still answered by the loaded model
        assert predict(invoke)["modelVersion"] == version_id(1)
    assert s3_recorder.take() == ["HeadObject"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "refresh" in r.getMessage()]
    assert warnings, [r.getMessage() for r in caplog.records]
    info = model_info(invoke)
    assert info["source"] == "published" and info["modelVersion"] == version_id(1)
    assert info["lastRefreshError"] == "StorageUnavailable" and logged(caplog, "EndpointConnectionError")
    # And once S3 is back, the next due refresh swaps the new model in
    s3_recorder.outage = False
    clock.advance(31)
    assert predict(invoke)["modelVersion"] == version_id(2)
    assert model_info(invoke)["lastRefreshError"] is None


def test_refresh_never_swaps_in_a_corrupt_artifact(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    store.promote(version_id(1))
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    predict(invoke)
    # Given the pointer moves to an artifact whose bytes do not match the pointer's sha256
    key, _ = store.publish(version_id(2))
    store.point(version_id(2), key, "0" * 64)
    clock.advance(31)
    # Then the valid model keeps serving, and the failure is reported (its kind; the detail is logged)
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"] == version_id(1)
    info = model_info(invoke)
    assert info["source"] == "published" and info["lastRefreshError"] == "InvalidArtifact"
    assert logged(caplog, "sha256", logging.ERROR)


def test_corrupt_artifact_found_by_refresh_is_logged_as_an_error(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    # "A published artifact that fails validation is never served: log an error" - also on refresh
    store.promote(version_id(1))
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    predict(invoke)
    key, _ = store.put_raw(version_id(2), b'{"schemaVersion": 2, "truncated')
    store.point(version_id(2), key, None)
    clock.advance(31)
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"] == version_id(1)
    assert any(r.levelno == logging.ERROR and version_id(2) in str(r.__dict__) for r in caplog.records), \
        [(r.levelname, r.getMessage()) for r in caplog.records]


def test_custom_model_prefix(s3_recorder: Any, store: Any, model_env: Any, invoke: Any) -> None:
    store.prefix = "custom/models/"
    key = store.promote(version_id(4))
    model_env(MODEL_PREFIX="/custom/models")       # normalised: no leading slash, trailing slash added
    assert predict(invoke)["modelVersion"] == version_id(4)
    assert model_info(invoke)["key"] == key == f"custom/models/{version_id(4)}/ml-weights.json"


# --------------------------------------------------------------------------- bundled fallback


def test_no_model_published_serves_the_bundled_baseline(
        s3_recorder: Any, model_env: Any, invoke: Any, caplog: pytest.LogCaptureFixture) -> None:
    model_env()
    with caplog.at_level(logging.WARNING, logger="virality"):
        body = predict(invoke)
    assert body["modelVersion"].startswith("bundled-")
    assert any(r.levelno == logging.WARNING and "bundled" in r.getMessage() for r in caplog.records)
    info = model_info(invoke)
    assert info["source"] == "bundled" and info["modelVersion"] == body["modelVersion"]
    health = invoke(load_event("health.json"))
    assert health.status == 200 and health.body["source"] == "bundled"


def test_without_model_bucket_the_bundled_model_answers_without_s3(
        s3_recorder: Any, invoke: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"].startswith("bundled-")
    assert s3_recorder.clients_created == 0
    assert model_info(invoke)["loadError"] == "NotConfigured" and logged(caplog, "MODEL_BUCKET")


def test_model_published_after_cold_start_is_picked_up_without_refresh_setting(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any) -> None:
    # Given a container that started before the first model was published (MODEL_REFRESH_SECONDS=0)
    model_env()
    start(predict_app, clock)
    assert predict(invoke)["modelVersion"].startswith("bundled-")
    store.promote(version_id(1))
    # When the fallback retry interval passes, it picks the model up (as for an unreachable S3)
    clock.advance(FALLBACK_RETRY_SECONDS)
    assert predict(invoke)["modelVersion"] == version_id(1)


def test_model_published_later_is_picked_up_by_refresh(
        s3_recorder: Any, store: Any, model_env: Any, invoke: Any, predict_app: Any, clock: Any) -> None:
    model_env(MODEL_REFRESH_SECONDS="30")
    start(predict_app, clock)
    assert predict(invoke)["modelVersion"].startswith("bundled-")
    store.promote(version_id(1))
    clock.advance(30)
    assert predict(invoke)["modelVersion"] == version_id(1)
    assert model_info(invoke)["source"] == "published"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_s3_unreachable_at_cold_start_serves_bundled_then_recovers(
        monkeypatch: pytest.MonkeyPatch, model_env: Any, invoke: Any, predict_app: Any, clock: Any,
        base_artifact: Any, caplog: pytest.LogCaptureFixture) -> None:
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    import virality.store.s3
    from virality.store.s3 import ModelRegistry, Pointer

    # Given an S3 endpoint on a closed loopback port (connection refused at once; no retries)
    port = _free_loopback_port()
    endpoint = f"http://127.0.0.1:{port}"
    config = Config(connect_timeout=0.5, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"})
    monkeypatch.setattr(virality.store.s3, "default_client_factory",
                        lambda: boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config))
    model_env()
    start(predict_app, clock)
    # When the cold start cannot reach S3: the bundled model answers, nothing crashes
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"].startswith("bundled-")
    info = model_info(invoke)
    assert info["source"] == "bundled"
    assert info["loadError"] == "StorageUnavailable" and logged(caplog, "EndpointConnectionError")
    assert invoke(load_event("health.json")).status == 200
    # When S3 comes up (a moto server on that very port) with a published model ...
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)
        client.create_bucket(Bucket=MODEL_BUCKET)
        registry = ModelRegistry(MODEL_BUCKET, "models/", lambda: client)
        artifact = replace(base_artifact, modelVersion=version_id(7))
        key, sha = registry.publish(artifact, "report\n")
        registry.write_pointer(Pointer(version=version_id(7), key=key, sha256=sha), None)
        # ... nothing changes before the fallback retry interval ...
        clock.advance(FALLBACK_RETRY_SECONDS - 1)
        assert predict(invoke)["modelVersion"].startswith("bundled-")
        # ... and afterwards the container recovers, even with MODEL_REFRESH_SECONDS=0
        clock.advance(1)
        assert predict(invoke)["modelVersion"] == version_id(7)
        info = model_info(invoke)
        assert info["source"] == "published" and info["loadError"] is None
    finally:
        server.stop()


# --------------------------------------------------------------------------- corrupt artifacts


def _checksum_mismatch(store: Any, version: str) -> tuple[str, str]:
    doc = json.loads(_dump(store, version))
    doc["weights"][0][0] += 1.0          # tampered weight, stale checksum
    return store.put_raw(version, json.dumps(doc).encode())


def _dump(store: Any, version: str) -> bytes:
    from virality.artifact import dump_artifact

    return dump_artifact(store.artifact(version))


def _truncated(store: Any, version: str) -> tuple[str, str]:
    body = _dump(store, version)
    return store.put_raw(version, body[: len(body) // 2])


def _non_finite(store: Any, version: str) -> tuple[str, str]:
    text = _dump(store, version).decode()
    doc = json.loads(text)
    doc["biases"][0] = float("nan")
    return store.put_raw(version, json.dumps(doc).encode())


CORRUPTIONS = {
    "checksum mismatch": (_checksum_mismatch, "checksum"),
    "truncated JSON": (_truncated, "not valid JSON"),
    "non-finite weights": (_non_finite, "non-finite"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_artifact_is_never_served(kind: str, s3_recorder: Any, store: Any, model_env: Any,
                                          invoke: Any, caplog: pytest.LogCaptureFixture) -> None:
    corrupt, expected = CORRUPTIONS[kind]
    # Given the pointer names a corrupt artifact (the pointer's sha256 matches the corrupt bytes)
    key, sha = corrupt(store, version_id(1))
    store.point(version_id(1), key, sha)
    model_env()
    # When the function starts, the bundled baseline answers instead ...
    with caplog.at_level(logging.ERROR, logger="virality"):
        body = predict(invoke)
    assert body["modelVersion"].startswith("bundled-")
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    # ... and GET /model says why (the kind; the details are in the error log)
    info = model_info(invoke)
    assert info["source"] == "bundled"
    assert info["loadError"] == "InvalidArtifact"
    assert logged(caplog, "ArtifactValidationError", logging.ERROR) and logged(caplog, expected, logging.ERROR)


def test_pointer_sha256_mismatch_is_never_served(s3_recorder: Any, store: Any, model_env: Any,
                                                 invoke: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a valid artifact, but the pointer records other bytes (replaced after promotion)
    key, _ = store.publish(version_id(1))
    store.point(version_id(1), key, hashlib.sha256(b"something else").hexdigest())
    model_env()
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"].startswith("bundled-")
    info = model_info(invoke)
    assert info["source"] == "bundled" and info["loadError"] == "InvalidArtifact"
    assert logged(caplog, "sha256", logging.ERROR)


@pytest.mark.parametrize("pointer", [b"{not json", b'{"version": "v1"}', b"[]"], ids=["garbage", "no key", "array"])
def test_corrupt_pointer_is_reported_and_bundled_served(pointer: bytes, s3_recorder: Any, store: Any,
                                                        model_env: Any, invoke: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    store.publish(version_id(1))
    store.put_pointer_bytes(pointer)
    model_env()
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"].startswith("bundled-")
    info = model_info(invoke)
    assert info["source"] == "bundled" and info["loadError"] == "InvalidPointer"
    assert logged(caplog, "latest.json", logging.ERROR)


def test_pointer_to_a_missing_artifact_falls_back(s3_recorder: Any, store: Any, model_env: Any,
                                                  invoke: Any, caplog: pytest.LogCaptureFixture) -> None:
    store.point("v-gone", "models/v-gone/ml-weights.json", None)
    model_env()
    with caplog.at_level(logging.WARNING, logger="virality"):
        assert predict(invoke)["modelVersion"].startswith("bundled-")
    assert model_info(invoke)["loadError"] == "ModelNotFound" and logged(caplog, "v-gone")


# --------------------------------------------------------------------------- legacy format


def test_legacy_original_format_file_loads(s3_recorder: Any, store: Any, model_env: Any, invoke: Any,
                                           base_artifact: Any) -> None:
    import numpy as np

    from virality.ml.features import FEATURE_NAMES
    from virality.ml.softmax import softmax

    # Given the original TypeScript-era file: no schemaVersion, version, midpoints or checksum
    legacy = {
        "weights": base_artifact.weights, "biases": base_artifact.biases,
        "featureNames": list(FEATURE_NAMES), "numClasses": 5, "trainedAt": "2025-01-01T00:00:00.000Z",
        "accuracy": 0.5, "confusionMatrix": [[0] * 5 for _ in range(5)],
    }
    body = json.dumps(legacy).encode()
    key, sha = store.put_raw("legacy", body)
    store.point("legacy", key, sha)
    model_env()
    # When it is promoted, it is served, named by its content
    served = predict(invoke)
    assert served["modelVersion"] == "legacy-" + hashlib.sha256(body).hexdigest()[:12]
    info = model_info(invoke)
    assert info["source"] == "published" and info["loadError"] is None
    assert info["metrics"] == {"accuracy": 0.5}
    # And it predicts with exactly those weights
    event = load_event(PREDICT)
    features = json.loads(base64.b64decode(event["body"]))["features"]
    x = np.array([features[n] for n in FEATURE_NAMES])
    expected = softmax((np.array(legacy["weights"]) @ x + np.array(legacy["biases"]))[None, :])[0]
    assert served["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert served["tier"] == int(expected.argmax()) + 1
