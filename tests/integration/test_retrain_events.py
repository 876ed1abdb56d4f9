"""Retrain event handling: poison SQS messages fail alone (partial batch response), malformed
direct S3 records are reported one by one, and buckets other than DATA_BUCKET are refused.

SQS messages have the shape of ``sam local generate-event sqs receive-message``
(``events/retrain-sqs-message.json``) with an S3 notification (``sam local
generate-event s3 put``) as the body.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from tests.integration import retrain_helpers as h
from virality_dev.events import load_event
from virality_dev.fakeaws import DATA_BUCKET, MODEL_BUCKET


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)


def _message(body: Any, message_id: str) -> dict[str, Any]:
    record = copy.deepcopy(load_event("retrain-sqs-message.json")["Records"][0])
    record["messageId"] = message_id
    record["body"] = body if isinstance(body, str) else json.dumps(body)
    return record


def _batch(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(messages)}


def _s3_record_without_s3() -> dict[str, Any]:
    record = copy.deepcopy(h.event_for("training-data/x.csv")["Records"][0])
    del record["s3"]
    return record


POISON_BODIES = {
    "not-json": "not json {",
    "empty-object": {},
    "records-null": {"Records": None},
    "records-string": {"Records": "x"},
    "records-of-int": {"Records": [1]},
    "record-without-s3": {"Records": [_s3_record_without_s3()]},
    "key-not-a-string": {"Records": [{**h.event_for("training-data/x.csv")["Records"][0],
                                      "s3": {"bucket": {"name": DATA_BUCKET}, "object": {"key": 7}}}]},
}


@pytest.mark.parametrize("case", list(POISON_BODIES))
def test_poison_message_fails_alone_and_the_valid_one_trains(s3, retrain_app, lambda_context, env, case) -> None:
    # Given a batch of a poison message between two valid notifications
    h.put_training(s3, "training-data/one.csv", h.csv_bytes(600, seed=90))
    h.put_training(s3, "training-data/two.csv", h.csv_bytes(600, seed=91))
    event = _batch(_message(h.event_for("training-data/one.csv"), "m-1"),
                   _message(POISON_BODIES[case], "m-poison"),
                   _message(h.event_for("training-data/two.csv"), "m-2"))

    # When the handler runs, it does not raise
    response = retrain_app.lambda_handler(event, lambda_context)

    # Then only the poison message is reported for retry / the dead-letter queue
    assert response["batchItemFailures"] == [{"itemIdentifier": "m-poison"}], response
    published = [r for r in response["results"] if r["status"] == "published"]
    assert sorted(r["sourceKey"] for r in published) == ["training-data/one.csv", "training-data/two.csv"]
    assert len(h.weights_keys(s3)) == 2
    h.assert_pointer_valid(s3)


def test_s3_test_event_message_succeeds_without_training(s3, retrain_app, lambda_context, env) -> None:
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-29T10:00:00.000Z",
            "Bucket": DATA_BUCKET, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4"}
    response = retrain_app.lambda_handler(_batch(_message(body, "m-test")), lambda_context)
    assert response["batchItemFailures"] == [] and response["results"] == []
    assert h.all_keys(s3) == set()


def test_genuine_failure_of_one_message_is_retried_alone(s3, retrain_app, lambda_context, env, monkeypatch) -> None:
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("get_object", lambda kw: kw.get("Key") == "training-data/flaky.csv",
               h.client_error("SlowDown", 503, "GetObject"))
    h.put_training(s3, "training-data/flaky.csv", h.csv_bytes(600, seed=92))
    h.put_training(s3, "training-data/fine.csv", h.csv_bytes(600, seed=93))
    h.put_training(s3, "training-data/bad.csv", b"nope\n1\n")
    event = _batch(_message(h.event_for("training-data/flaky.csv"), "m-flaky"),
                   _message(h.event_for("training-data/fine.csv"), "m-fine"),
                   _message(h.event_for("training-data/bad.csv"), "m-bad"))

    response = retrain_app.lambda_handler(event, lambda_context)

    # bad data is reported, not retried (a retry cannot fix it); the transient failure is retried
    assert response["batchItemFailures"] == [{"itemIdentifier": "m-flaky"}], response
    by_key = {r["sourceKey"]: r for r in response["results"]}
    assert by_key["training-data/fine.csv"]["status"] == "published"
    assert by_key["training-data/bad.csv"]["errorType"] == "DataValidationError"
    assert "SlowDown" in by_key["training-data/flaky.csv"]["error"]

    # and the redelivered message then trains
    proxy.clear_faults()
    again = retrain_app.lambda_handler(_batch(_message(h.event_for("training-data/flaky.csv"), "m-flaky")),
                                       lambda_context)
    assert again["batchItemFailures"] == [] and again["results"][0]["status"] == "published"


def test_batch_of_only_poison_fails_as_a_whole(s3, retrain_app, lambda_context, env) -> None:
    # Powertools raises when every item failed: the whole batch goes back to the queue.
    with pytest.raises(BatchProcessingError):
        retrain_app.lambda_handler(_batch(_message({}, "a"), _message("x", "b")), lambda_context)
    assert h.all_keys(s3) == set()


# --------------------------------------------------------------------------- direct S3 events


def test_direct_event_with_malformed_records_reports_each_and_trains_the_rest(s3, retrain_app, lambda_context,
                                                                            env) -> None:
    h.put_training(s3, "training-data/good.csv", h.csv_bytes(600, seed=94))
    event = {"Records": [1, h.event_for("training-data/good.csv")["Records"][0], _s3_record_without_s3(),
                         {**h.event_for("training-data/good.csv")["Records"][0], "eventName": None}]}

    results = h.run(retrain_app, lambda_context, event)   # does not raise: a retry cannot fix the event

    assert [r["status"] for r in results] == ["failed", "published", "failed", "failed"], results
    assert [r.get("errorType") for r in results] == ["MalformedEventError", None, "MalformedEventError",
                                                      "MalformedEventError"]
    assert "record 0" in results[0]["reason"] and "int" in results[0]["error"]
    assert "s3.bucket" in results[2]["error"] and "eventName" in results[3]["error"]
    assert h.weights_keys(s3) == {h.key_for_weights(results[1]["version"])}


@pytest.mark.parametrize("event", [{}, {"Records": None}, {"Records": "x"}, []],
                         ids=["empty", "records-null", "records-string", "not-an-object"])
def test_direct_event_without_records_is_reported(s3, retrain_app, lambda_context, env, event) -> None:
    (result,) = h.run(retrain_app, lambda_context, event)
    assert result["status"] == "failed" and result["errorType"] == "MalformedEventError", result
    assert h.all_keys(s3) == set()


# --------------------------------------------------------------------------- foreign buckets


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "sqs"])
def test_event_from_a_foreign_bucket_is_refused_before_reading(s3, retrain_app, lambda_context, env, monkeypatch,
                                                              wrapped) -> None:
    # Given DATA_BUCKET is configured and an event names another bucket holding valid training data
    monkeypatch.setenv("DATA_BUCKET", DATA_BUCKET)
    s3.create_bucket(Bucket="someone-elses-bucket")
    h.put_training(s3, "training-data/x.csv", h.csv_bytes(600, seed=95), bucket="someone-elses-bucket")
    proxy = h.install_proxy(monkeypatch, retrain_app)
    event = h.event_for("training-data/x.csv", bucket="someone-elses-bucket")
    if wrapped:
        event = _batch(_message(event, "m-foreign"))

    response = retrain_app.lambda_handler(event, lambda_context)

    # Then it is refused (not retried), nothing is read from that bucket and nothing is written
    (result,) = response["results"]
    assert result["status"] == "failed" and result["errorType"] == "ForeignBucketError", result
    assert "DATA_BUCKET" in result["error"]
    assert response.get("batchItemFailures", []) == []
    assert not [c for c in proxy.calls if c[1].get("Bucket") == "someone-elses-bucket"]
    assert h.all_keys(s3) == set()


def test_event_from_the_data_bucket_is_trained_when_data_bucket_is_set(s3, retrain_app, lambda_context, env,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("DATA_BUCKET", DATA_BUCKET)
    h.put_training(s3, "training-data/ok.csv", h.csv_bytes(600, seed=96))
    assert h.run_one(retrain_app, lambda_context, h.event_for("training-data/ok.csv"))["status"] == "published"
