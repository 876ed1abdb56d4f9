"""Retrain failures: bad data is reported (nothing written, no raise); genuine failures raise
and leave nothing half-written; a retry after a genuine failure completes the work.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration import retrain_helpers as h
from virality.store import s3 as registry_module
from virality_dev.fakeaws import MODEL_BUCKET


@pytest.fixture
def baseline(s3, retrain_app, lambda_context, monkeypatch) -> dict[str, Any]:
    """MODEL_BUCKET set and one model already published and promoted."""
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)
    h.put_training(s3, "training-data/baseline.csv", h.csv_bytes(600, seed=21))
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/baseline.csv"))
    assert summary["status"] == "published" and summary["promoted"], summary
    return summary


def _csv_with_cell(row: int, column: str, value: str) -> bytes:
    """The synthetic CSV with one cell replaced (``row`` is the 1-based file line)."""
    lines = h.csv_bytes(600, seed=22).decode().splitlines()
    header = lines[0].split(",")
    cells = lines[row - 1].split(",")
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode()


def _csv_without(column: str) -> bytes:
    lines = h.csv_bytes(600, seed=22).decode().splitlines()
    j = lines[0].split(",").index(column)
    return ("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != j) for line in lines) + "\n").encode()


def _seed_json_with_label(index: int, label: Any) -> bytes:
    doc = json.loads(h.seed_json_bytes(600, seed=22))
    doc["trainSet"]["labels"][index] = label
    return json.dumps(doc).encode()


def _single_tier_csv() -> bytes:
    lines = h.csv_bytes(600, seed=22).decode().splitlines()
    j = lines[0].split(",").index("views")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[j] = "5000"
        out.append(",".join(cells))
    return ("\n".join(out) + "\n").encode()


MALFORMED = {
    # id: (key, body, fragments the error must contain)
    "non-numeric-cell": ("training-data/bad-cell.csv", lambda: _csv_with_cell(5, "likes", "lots"),
                         ["row 5", "column 'likes'", "lots"]),
    "negative-count": ("training-data/negative.csv", lambda: _csv_with_cell(9, "shares", "-3"),
                       ["row 9", "column 'shares'"]),
    "missing-column": ("training-data/no-likes.csv", lambda: _csv_without("likes"),
                       ["row 1", "missing column", "likes"]),
    "ragged-row": ("training-data/ragged.csv", lambda: h.csv_bytes(600, seed=22) + b"v1,2,3\n",
                   ["row 602", "expected 12 fields"]),
    "seed-label-out-of-range": ("training-data/seed.json", lambda: _seed_json_with_label(3, 7),
                                ["trainSet.labels", "row 3", "tier 1..5", "7"]),
    "seed-label-not-a-number": ("training-data/seed2.json", lambda: _seed_json_with_label(0, "viral"),
                                ["trainSet.labels", "row 0"]),
    "single-tier": ("training-data/one-tier.csv", _single_tier_csv, ["one tier"]),
    "empty-file": ("training-data/empty.csv", lambda: b"", ["empty"]),
    "header-only": ("training-data/header.csv", lambda: h.csv_bytes(600, seed=22).split(b"\n")[0] + b"\n",
                    ["no data rows"]),
    "not-utf8": ("training-data/latin1.csv", lambda: "views,caption\n1,caf\xe9\n".encode("latin-1"),
                 ["not UTF-8"]),
    "bad-jsonl-line": ("training-data/bad.jsonl", lambda: b'{"views": 1}\n{oops\n', ["row"]),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_data_is_reported_and_nothing_is_written(s3, retrain_app, lambda_context, baseline, case) -> None:
    key, make_body, fragments = MALFORMED[case]
    # Given a published model and a malformed upload
    h.put_training(s3, key, make_body())
    keys_before, etag_before = h.all_keys(s3), h.pointer_etag(s3)

    # When the retrain function is notified (it must not raise: a retry cannot fix the data)
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))

    # Then a clear failure names the problem, and the model bucket is untouched
    assert summary["status"] == "failed", summary
    assert summary["errorType"] == "DataValidationError"
    assert summary["sourceKey"] == key
    for fragment in fragments:
        assert fragment in summary["error"], (fragment, summary["error"])
    assert "version" not in summary and summary["promoted"] is False
    assert h.all_keys(s3) == keys_before
    assert h.pointer_etag(s3) == etag_before


def test_oversize_file_is_refused_before_download(s3, retrain_app, lambda_context, baseline, monkeypatch) -> None:
    body = h.csv_bytes(600, seed=23)
    monkeypatch.setenv("MAX_TRAINING_BYTES", str(len(body) - 1))
    proxy = h.install_proxy(monkeypatch, retrain_app)
    h.put_training(s3, "training-data/big.csv", body)
    keys_before, etag_before = h.all_keys(s3), h.pointer_etag(s3)

    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/big.csv"))

    assert summary["status"] == "failed" and summary["errorType"] == "TrainingDataTooLargeError"
    assert str(len(body)) in summary["error"] and str(len(body) - 1) in summary["error"]
    assert h.all_keys(s3) == keys_before and h.pointer_etag(s3) == etag_before
    # refused from the HEAD: the body was never downloaded
    assert not [c for c in proxy.calls if c[0] == "get_object" and c[1]["Key"] == "training-data/big.csv"]


def test_file_exactly_at_the_limit_is_accepted(s3, retrain_app, lambda_context, baseline, monkeypatch) -> None:
    body = h.csv_bytes(600, seed=23)
    monkeypatch.setenv("MAX_TRAINING_BYTES", str(len(body)))
    h.put_training(s3, "training-data/fits.csv", body)
    assert h.run_one(retrain_app, lambda_context, h.event_for("training-data/fits.csv"))["status"] == "published"


def test_missing_object_is_reported_and_nothing_is_written(s3, retrain_app, lambda_context, baseline) -> None:
    keys_before, etag_before = h.all_keys(s3), h.pointer_etag(s3)
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/deleted before we got there.csv"))
    assert summary["status"] == "failed" and summary["errorType"] == "TrainingSourceNotFoundError"
    assert "does not exist" in summary["error"]
    assert summary["sourceKey"] == "training-data/deleted before we got there.csv"
    assert h.all_keys(s3) == keys_before and h.pointer_etag(s3) == etag_before


def test_deleted_object_in_versioned_bucket(s3, retrain_app, lambda_context, baseline) -> None:
    # the latest version is a delete marker: no version id in the event -> not found
    h.put_training(s3, "training-data/gone.csv", h.csv_bytes(600, seed=24))
    s3.delete_object(Bucket=h.DATA_BUCKET, Key="training-data/gone.csv")
    keys_before = h.all_keys(s3)
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/gone.csv"))
    assert summary["status"] == "failed" and summary["errorType"] == "TrainingSourceNotFoundError"
    assert h.all_keys(s3) == keys_before


# --------------------------------------------------------------------------- genuine failures


def _assert_nothing_half_written(s3: Any) -> None:
    """Every weights object present is complete and valid; the pointer (if any) names one."""
    for key in h.weights_keys(s3):
        h.load_published(s3, key.split("/")[1])
    if h.pointer(s3) is not None:
        h.assert_pointer_valid(s3)


def test_publish_error_raises_and_leaves_nothing_half_written(s3, retrain_app, lambda_context, baseline,
                                                              monkeypatch) -> None:
    # Given S3 answers 500 InternalError when the new version is published
    def broken_publish(self, artifact, report):
        raise h.client_error("InternalError", 500, "PutObject")

    monkeypatch.setattr(registry_module.ModelRegistry, "publish", broken_publish)
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=25))
    weights_before, etag_before = h.weights_keys(s3), h.pointer_etag(s3)

    # When the retrain runs, the invocation raises (so Lambda's async retry / on-failure destination see it)
    with pytest.raises(retrain_app.RetrainFailedError) as raised:
        retrain_app.lambda_handler(h.event_for("training-data/new.csv"), lambda_context)
    result = json.loads(str(raised.value))["results"][0]
    assert result["status"] == "failed" and "InternalError" in result["error"]

    # Then no new version is visible and the pointer did not move
    assert h.weights_keys(s3) == weights_before
    assert h.pointer_etag(s3) == etag_before
    _assert_nothing_half_written(s3)


def test_genuine_failure_raises_after_every_record_ran(s3, retrain_app, lambda_context, baseline,
                                                       monkeypatch) -> None:
    # One record hits a transient S3 error reading its source; the next record still trains.
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("get_object", lambda kw: kw.get("Key") == "training-data/flaky.csv",
               h.client_error("SlowDown", 503, "GetObject"))
    h.put_training(s3, "training-data/flaky.csv", h.csv_bytes(600, seed=26))
    h.put_training(s3, "training-data/fine.csv", h.csv_bytes(600, seed=27))
    h.put_training(s3, "training-data/bad.csv", b"nope\n1\n")
    event = h.event_for("training-data/flaky.csv")
    for key in ("training-data/fine.csv", "training-data/bad.csv"):
        event["Records"].append(h.event_for(key)["Records"][0])
    weights_before = h.weights_keys(s3)

    with pytest.raises(retrain_app.RetrainFailedError) as raised:
        retrain_app.lambda_handler(event, lambda_context)

    results = json.loads(str(raised.value))["results"]
    assert [r["status"] for r in results] == ["failed", "published", "failed"]
    assert "SlowDown" in results[0]["error"]
    assert results[2]["errorType"] == "DataValidationError"
    assert h.weights_keys(s3) == weights_before | {h.key_for_weights(results[1]["version"])}
    _assert_nothing_half_written(s3)


def test_s3_error_writing_the_weights_then_retry_publishes(s3, retrain_app, lambda_context, baseline,
                                                           monkeypatch) -> None:
    # Given S3 fails (500) exactly when the weights object is written
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: kw["Key"].endswith("/ml-weights.json"))
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=28))
    event = h.event_for("training-data/new.csv")
    weights_before, etag_before = h.weights_keys(s3), h.pointer_etag(s3)

    # When the retrain runs it raises, and nothing is half-written
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)
    assert h.weights_keys(s3) == weights_before
    assert h.pointer_etag(s3) == etag_before
    _assert_nothing_half_written(s3)

    # And when Lambda retries the same event after S3 recovered, the version is published
    proxy.clear_faults()
    summary = h.run_one(retrain_app, lambda_context, event)
    assert summary["status"] == "published", summary
    h.load_published(s3, summary["version"])
    assert h.weights_keys(s3) == weights_before | {h.key_for_weights(summary["version"])}
    _assert_nothing_half_written(s3)


def test_s3_error_writing_the_pointer_keeps_the_version_published(s3, retrain_app, lambda_context, baseline,
                                                                  monkeypatch) -> None:
    # Given S3 fails (500) on the pointer write; force-promote so the gate is not what decides
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: kw["Key"] == h.POINTER_KEY)
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=29), metadata={"force-promote": "true"})
    event = h.event_for("training-data/new.csv")
    weights_before = h.weights_keys(s3)
    pointer_before, etag_before = h.pointer(s3)

    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)

    # Then the new version is completely published, and the pointer unchanged and valid
    new = h.weights_keys(s3) - weights_before
    assert len(new) == 1
    h.load_published(s3, next(iter(new)).split("/")[1])
    assert h.pointer(s3) == (pointer_before, etag_before)
    _assert_nothing_half_written(s3)


def test_retry_after_a_pointer_write_error_promotes_the_version(s3, retrain_app, lambda_context, baseline,
                                                                monkeypatch) -> None:
    # Given the pointer write failed (500) on the first delivery of a force-promoted upload
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: kw["Key"] == h.POINTER_KEY)
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=29), metadata={"force-promote": "true"})
    event = h.event_for("training-data/new.csv")
    weights_before = h.weights_keys(s3)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)
    (new_key,) = h.weights_keys(s3) - weights_before
    version = new_key.split("/")[1]

    # When Lambda retries the event after S3 recovered
    proxy.clear_faults()
    summary = h.run_one(retrain_app, lambda_context, event)

    # Then the retry finishes the job: the same version (no second one) is promoted
    assert summary["version"] == version
    assert h.weights_keys(s3) == weights_before | {new_key}
    assert summary["promoted"] is True, summary
    assert h.assert_pointer_valid(s3)["version"] == version


def test_pointer_conflicts_beyond_the_retry_budget_raise_without_damage(s3, retrain_app, lambda_context, baseline,
                                                                       monkeypatch) -> None:
    # Every conditional pointer write is refused (someone else keeps winning): give up, raise, stay valid.
    monkeypatch.setattr("virality.services.retraining.time.sleep", lambda s: None)
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: kw["Key"] == h.POINTER_KEY,
               h.client_error("PreconditionFailed", 412, "PutObject"))
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=30), metadata={"force-promote": "true"})
    etag_before = h.pointer_etag(s3)

    with pytest.raises(retrain_app.RetrainFailedError) as raised:
        retrain_app.lambda_handler(h.event_for("training-data/new.csv"), lambda_context)

    assert "PointerConflictError" in str(raised.value)
    assert h.pointer_etag(s3) == etag_before
    _assert_nothing_half_written(s3)


def test_corrupt_idempotency_claim_is_a_genuine_failure(s3, retrain_app, lambda_context, baseline,
                                                        monkeypatch) -> None:
    # A 500 while claiming the event: raise (retryable), nothing published.
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: "/_sources/" in kw["Key"])
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=31))
    keys_before, etag_before = h.all_keys(s3), h.pointer_etag(s3)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(h.event_for("training-data/new.csv"), lambda_context)
    assert h.all_keys(s3) == keys_before and h.pointer_etag(s3) == etag_before
