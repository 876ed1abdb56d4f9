"""Retrain loop end to end on moto S3: upload -> retrain handler -> predict handler serves it.

Also: URL-encoded keys, the three training formats, the exact object version,
the recursive-invocation guard, SQS-wrapped notifications and multi-record
events.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from tests.integration import retrain_helpers as h
from virality_dev.events import api_event, load_event, s3_put_event, sqs_wrap
from virality_dev.fakeaws import DATA_BUCKET, MODEL_BUCKET
from virality_dev.synthetic import sample_jsonl


@pytest.fixture
def model_bucket_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)


def _call(predict_app: Any, ctx: Any, event: dict[str, Any]) -> tuple[int, Any]:
    response = predict_app.lambda_handler(event, ctx)
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], json.loads(body)


def _predict_single_body() -> dict[str, Any]:
    event = load_event("predict-single.json")
    return json.loads(base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"])


# --------------------------------------------------------------------------- the full loop


def test_upload_retrain_then_predict_serves_the_new_version(s3, retrain_app, predict_app, lambda_context,
                                                           model_bucket_env) -> None:
    # Given a CSV uploaded under training-data/
    body = h.csv_bytes(800, seed=3)
    put = h.put_training(s3, "training-data/videos.csv", body)

    # When S3 notifies the retrain function
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/videos.csv",
                                                                 version_id=put["VersionId"]))

    # Then a new version is published and promoted (nothing was published before)
    assert summary["status"] == "published", summary
    assert summary["promoted"] is True
    assert summary["sourceKey"] == "training-data/videos.csv"
    assert summary["sourceVersion"] == put["VersionId"]
    assert summary["rows"]["train"] + summary["rows"]["test"] == 800
    assert {"accuracy", "macroF1", "logLoss"} <= set(summary["metrics"])
    assert summary["durationSeconds"] >= 0
    version = summary["version"]
    assert summary["modelKey"] == f"models/{version}/ml-weights.json"

    artifact, weights = h.load_published(s3, version)
    assert artifact.data is not None and artifact.data.sha256 == h.sha256(body)
    assert artifact.data.format == "csv"
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == version and doc["sha256"] == h.sha256(weights)
    assert doc["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])

    # And the predict function (a new container) serves exactly that version
    status, info = _call(predict_app, lambda_context, api_event("GET", "/model"))
    assert status == 200, info
    assert info["modelVersion"] == version
    assert info["source"] == "published"
    assert info["key"] == f"models/{version}/ml-weights.json"
    status, prediction = _call(predict_app, lambda_context, api_event("POST", "/predict", _predict_single_body()))
    assert status == 200, prediction
    assert prediction["modelVersion"] == version
    assert 0 <= prediction["score"] <= 100


def test_second_upload_is_served_by_a_fresh_predict_container(s3, retrain_app, predict_app, lambda_context,
                                                              model_bucket_env, monkeypatch) -> None:
    # Loose promotion tolerances: this test is about the loop, not the gate.
    monkeypatch.setenv("PROMOTION_F1_TOLERANCE", "1")
    monkeypatch.setenv("PROMOTION_LOGLOSS_TOLERANCE", "100")
    h.put_training(s3, "training-data/a.csv", h.csv_bytes(600, seed=1))
    first = h.run_one(retrain_app, lambda_context, h.event_for("training-data/a.csv"))
    status, info = _call(predict_app, lambda_context, api_event("GET", "/model"))
    assert info["modelVersion"] == first["version"]

    h.put_training(s3, "training-data/b.csv", h.csv_bytes(600, seed=2))
    second = h.run_one(retrain_app, lambda_context, h.event_for("training-data/b.csv"))
    assert second["status"] == "published" and second["promoted"] is True
    assert second["version"] > first["version"], "version ids sort in creation order"

    predict_app.reset()  # a new container
    status, info = _call(predict_app, lambda_context, api_event("GET", "/model"))
    assert status == 200 and info["modelVersion"] == second["version"]
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == second["version"] and doc["previous"] == first["version"]
    # both versions stay published
    assert h.weights_keys(s3) == {h.key_for_weights(first["version"]), h.key_for_weights(second["version"])}


def test_custom_model_prefix_and_default_model_bucket(s3, retrain_app, lambda_context, monkeypatch) -> None:
    # Given MODEL_BUCKET unset (models go to the event's bucket) and a custom MODEL_PREFIX
    monkeypatch.setenv("MODEL_PREFIX", "ml/virality")
    h.put_training(s3, "training-data/x.csv", h.csv_bytes(600, seed=4))
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/x.csv"))
    assert summary["status"] == "published", summary
    assert summary["modelKey"] == f"ml/virality/{summary['version']}/ml-weights.json"
    h.load_published(s3, summary["version"], bucket=DATA_BUCKET, prefix="ml/virality/")
    h.assert_pointer_valid(s3, bucket=DATA_BUCKET, prefix="ml/virality/")
    assert h.all_keys(s3, MODEL_BUCKET) == set()


# --------------------------------------------------------------------------- keys and formats


@pytest.mark.parametrize(("real_key", "key_in_event"), [
    ("training-data/my file.csv", "training-data/my+file.csv"),
    ("training-data/a+b.csv", "training-data/a%2Bb.csv"),
    ("training-data/vidéos été/données 1+1.csv",
     "training-data/vid%C3%A9os+%C3%A9t%C3%A9/donn%C3%A9es+1%2B1.csv"),
], ids=["space-as-plus", "literal-plus", "unicode"])
def test_url_encoded_keys_are_decoded(s3, retrain_app, lambda_context, model_bucket_env,
                                      real_key, key_in_event) -> None:
    body = h.csv_bytes(600, seed=5)
    h.put_training(s3, real_key, body)
    # the helper's encoding is the one S3 uses
    assert h.event_for(real_key)["Records"][0]["s3"]["object"]["key"] == key_in_event

    summary = h.run_one(retrain_app, lambda_context, s3_put_event(DATA_BUCKET, key_in_event, encoded=True))

    assert summary["status"] == "published", summary
    assert summary["sourceKey"] == real_key
    artifact, _ = h.load_published(s3, summary["version"])
    assert artifact.data.sha256 == h.sha256(body)
    assert artifact.data.source == f"s3://{DATA_BUCKET}/{real_key}"


def test_undecoded_key_is_not_found(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    # "a+b.csv" sent as "a+b.csv" means "a b.csv", which does not exist: a clear failure, no raise
    h.put_training(s3, "training-data/a+b.csv", h.csv_bytes(600, seed=5))
    summary = h.run_one(retrain_app, lambda_context, s3_put_event(DATA_BUCKET, "training-data/a+b.csv", encoded=True))
    assert summary["status"] == "failed" and summary["sourceKey"] == "training-data/a b.csv"
    assert summary["errorType"] == "TrainingSourceNotFoundError"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "seed-json"])
def test_all_three_formats(s3, retrain_app, lambda_context, model_bucket_env, fmt) -> None:
    body, key = {
        "csv": (h.csv_bytes(600, seed=6), "training-data/videos.csv"),
        "jsonl": (sample_jsonl(600, seed=6), "training-data/videos.jsonl"),
        "seed-json": (h.seed_json_bytes(600, seed=6), "training-data/training-data.json"),
    }[fmt]
    h.put_training(s3, key, body)
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))
    assert summary["status"] == "published", summary
    artifact, _ = h.load_published(s3, summary["version"])
    assert artifact.data.format == fmt
    assert artifact.data.sha256 == h.sha256(body)
    # raw formats carry their fitted preprocessing; seed JSON features are used as given
    assert (artifact.preprocessing is None) == (fmt == "seed-json")
    h.assert_pointer_valid(s3)


def test_jsonl_is_detected_without_a_jsonl_extension(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    body = sample_jsonl(600, seed=8)
    h.put_training(s3, "training-data/upload-without-extension", body)
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/upload-without-extension"))
    assert summary["status"] == "published", summary
    assert h.load_published(s3, summary["version"])[0].data.format == "jsonl"


def test_the_exact_object_version_of_the_event_is_read(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    # Given two uploads to the same key of a versioned bucket
    first_body, second_body = h.csv_bytes(600, seed=11), h.csv_bytes(700, seed=12)
    first = h.put_training(s3, "training-data/same.csv", first_body)
    second = h.put_training(s3, "training-data/same.csv", second_body)
    assert first["VersionId"] != second["VersionId"]

    # When the (late) notification of the first upload arrives
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/same.csv",
                                                                 version_id=first["VersionId"]))

    # Then the model was trained on the first body, not on the latest one
    assert summary["status"] == "published", summary
    assert summary["sourceVersion"] == first["VersionId"]
    artifact, _ = h.load_published(s3, summary["version"])
    assert artifact.data.sha256 == h.sha256(first_body)
    assert artifact.data.rows.train + artifact.data.rows.test == 600


def test_event_for_a_version_that_does_not_exist_fails_cleanly(s3, retrain_app, lambda_context,
                                                               model_bucket_env) -> None:
    h.put_training(s3, "training-data/same.csv", h.csv_bytes(600, seed=11))
    before = h.all_keys(s3)
    summary = h.run_one(retrain_app, lambda_context,
                        h.event_for("training-data/same.csv", version_id="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"))
    assert summary["status"] == "failed" and summary["errorType"] == "TrainingSourceNotFoundError"
    assert h.all_keys(s3) == before


# --------------------------------------------------------------------------- the recursive-invocation guard


@pytest.mark.parametrize("key", [
    "other/videos.csv",
    "videos.csv",
    "training-data-old/videos.csv",
    "models/v20260101T000000000000Z-00000000/ml-weights.json",
    "models/latest.json",
])
def test_keys_outside_training_prefix_or_under_models_are_ignored(s3, retrain_app, lambda_context,
                                                                  model_bucket_env, key) -> None:
    h.put_training(s3, key, h.csv_bytes(600, seed=1))
    model_before, data_before = h.all_keys(s3, MODEL_BUCKET), h.all_keys(s3, DATA_BUCKET)

    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))

    assert summary["status"] == "ignored", summary
    assert summary["sourceKey"] == key and "version" not in summary
    assert h.all_keys(s3, MODEL_BUCKET) == model_before == set()
    assert h.all_keys(s3, DATA_BUCKET) == data_before


@pytest.mark.parametrize("training_prefix", [None, "/"], ids=["default-prefix", "misconfigured-root-prefix"])
def test_own_output_in_the_same_bucket_is_never_trained_on(s3, retrain_app, lambda_context, monkeypatch,
                                                           training_prefix) -> None:
    # Given MODEL_BUCKET unset (default: the event's bucket), possibly with a trigger/prefix
    # misconfigured to cover the whole bucket, and a published model in that bucket
    if training_prefix is not None:
        monkeypatch.setenv("TRAINING_PREFIX", training_prefix)
    h.put_training(s3, "training-data/v.csv", h.csv_bytes(600, seed=1))
    first = h.run_one(retrain_app, lambda_context, h.event_for("training-data/v.csv"))
    assert first["status"] == "published"
    before = h.all_keys(s3, DATA_BUCKET)
    pointer_etag = h.pointer_etag(s3, DATA_BUCKET)

    # When the notifications of the function's own writes come back
    for key in (f"models/{first['version']}/ml-weights.json", f"models/{first['version']}/report.txt",
                "models/latest.json"):
        summary = h.run_one(retrain_app, lambda_context, h.event_for(key))
        # Then they are ignored and nothing is written
        assert summary["status"] == "ignored", summary
        assert "MODEL_PREFIX" in summary["reason"]
    assert h.all_keys(s3, DATA_BUCKET) == before
    assert h.pointer_etag(s3, DATA_BUCKET) == pointer_etag
    assert h.all_keys(s3, MODEL_BUCKET) == set()


def test_non_create_events_are_ignored(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    h.put_training(s3, "training-data/v.csv", h.csv_bytes(600, seed=1))
    event = h.event_for("training-data/v.csv")
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    summary = h.run_one(retrain_app, lambda_context, event)
    assert summary["status"] == "ignored"
    assert h.all_keys(s3) == set()


# --------------------------------------------------------------------------- SQS and multi-record events


def test_sqs_wrapped_notification(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    h.put_training(s3, "training-data/queued file.csv", h.csv_bytes(600, seed=2))
    summary = h.run_one(retrain_app, lambda_context, sqs_wrap(h.event_for("training-data/queued file.csv")))
    assert summary["status"] == "published", summary
    assert summary["sourceKey"] == "training-data/queued file.csv"
    h.load_published(s3, summary["version"])
    h.assert_pointer_valid(s3)


def test_sqs_s3_test_event_is_ignored(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-29T10:00:00.000Z",
                  "Bucket": DATA_BUCKET, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3e"}
    event = sqs_wrap({})
    event["Records"][0]["body"] = json.dumps(test_event)
    response = retrain_app.lambda_handler(event, lambda_context)
    assert [r["status"] for r in response["results"]] in ([], ["ignored"]), response
    assert h.all_keys(s3) == set()


def test_sqs_message_that_is_not_json_is_skipped(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    h.put_training(s3, "training-data/v.csv", h.csv_bytes(600, seed=2))
    event = sqs_wrap(h.event_for("training-data/v.csv"))
    garbage = copy.deepcopy(event["Records"][0])
    garbage["body"] = "not json {"
    event["Records"].insert(0, garbage)
    results = h.run(retrain_app, lambda_context, event)
    assert [r["status"] for r in results] == ["published"]


def test_multi_record_event_reports_each_record(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    # Given one good and one malformed upload notified in one event (plus an ignored key)
    h.put_training(s3, "training-data/good.csv", h.csv_bytes(600, seed=3))
    h.put_training(s3, "training-data/bad.csv", b"views,likes\n1,2\n")
    h.put_training(s3, "elsewhere/x.csv", h.csv_bytes(600, seed=3))
    event = h.event_for("training-data/good.csv")
    for key in ("training-data/bad.csv", "elsewhere/x.csv"):
        event["Records"].append(h.event_for(key)["Records"][0])

    # When the handler runs, it does not raise (bad data is not retryable)
    results = h.run(retrain_app, lambda_context, event)

    # Then each record has its own summary, in order
    assert [r["status"] for r in results] == ["published", "failed", "ignored"]
    assert [r["sourceKey"] for r in results] == ["training-data/good.csv", "training-data/bad.csv", "elsewhere/x.csv"]
    assert "missing column" in results[1]["error"]
    assert h.weights_keys(s3) == {h.key_for_weights(results[0]["version"])}
    assert h.assert_pointer_valid(s3)["version"] == results[0]["version"]


def test_sqs_batch_reports_each_message(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    h.put_training(s3, "training-data/one.csv", h.csv_bytes(600, seed=3))
    h.put_training(s3, "training-data/two.jsonl", sample_jsonl(600, seed=4))
    event = sqs_wrap(h.event_for("training-data/one.csv"))
    event["Records"].append(sqs_wrap(h.event_for("training-data/two.jsonl"))["Records"][0])
    event["Records"].append(sqs_wrap(h.event_for("training-data/missing.csv"))["Records"][0])
    results = h.run(retrain_app, lambda_context, event)
    assert [r["status"] for r in results] == ["published", "published", "failed"]
    assert results[0]["version"] != results[1]["version"]
    assert len(h.weights_keys(s3)) == 2
