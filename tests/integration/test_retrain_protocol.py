"""The retrain protocol, one forced interleaving at a time (moto S3, no sleeps).

Every write of the protocol (claim, report, holdout, weights, decision,
pointer, final promotion record) fails once; then Lambda's retry and a late
duplicate arrive. Duplicates arrive while the lease holder is paused before
each write (a hook in the S3 proxy holds it; the duplicate's injected
``sleep`` lets it go). The clock is the test's, so leases end on demand.

Invariants checked after every scenario (:func:`_assert_protocol_invariants`):
one version per event, one counted decision per version, the pointer
history names that version at most once, ``previous`` is never the version
itself, and a duplicate wrote nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import retrain_helpers as h
from virality.services import retraining
from virality_dev.fakeaws import MODEL_BUCKET


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The protocol's wall clock is ``real + offset``; ``sleep`` advances the offset (never sleeps)."""
    import time

    state: dict[str, Any] = {"offset": 0.0, "sleeps": 0, "on_sleep": None}

    def fake_sleep(seconds: float) -> None:
        state["sleeps"] += 1
        state["offset"] += seconds
        if state["on_sleep"] is not None:
            state["on_sleep"]()

    monkeypatch.setattr(retraining, "_clock", lambda: time.time() + state["offset"])
    monkeypatch.setattr(retraining, "_sleep", fake_sleep)
    return state


@pytest.fixture
def baseline(s3, retrain_app, lambda_context, monkeypatch, clock) -> dict[str, Any]:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)
    h.put_training(s3, "training-data/baseline.csv", h.csv_bytes(600, seed=21))
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/baseline.csv"))
    assert summary["status"] == "published" and summary["promoted"], summary
    return summary


def _decisions(s3: Any, version: str) -> list[dict[str, Any]]:
    keys = sorted(k for k in h.all_keys(s3) if k.startswith(f"{h.MODEL_PREFIX}{version}/decision-"))
    return [json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=k)["Body"].read()) for k in keys]


def _final(s3: Any, version: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=f"{h.MODEL_PREFIX}{version}/promotion.json")["Body"].read())


def _assert_protocol_invariants(s3: Any, version: str) -> list[dict[str, Any]]:
    """One final outcome; the pointer history names ``version`` at most once, never as its own previous."""
    final = _final(s3, version)
    history = h.assert_pointer_history_valid(s3)
    assert all(d.get("previous") != d["version"] for d in history), history
    named = [d for d in history if d["version"] == version]
    assert len(named) == (1 if final["promoted"] else 0), (final, history)
    for d in named:
        assert d["decision"] == final["decision"] and d["previous"] == final["previous"]
    decisions = _decisions(s3, version)
    assert [d["attempt"] for d in decisions] == list(range(len(decisions)))
    counted = decisions[final["decision"]]
    assert (counted["promote"], counted["previous"]) == (final["promoted"], final["previous"])
    # every other version's weights were written once (the protocol never overwrites)
    for key, ids in h.object_versions(s3, MODEL_BUCKET, h.MODEL_PREFIX).items():
        if key != h.POINTER_KEY:
            assert len(ids) == 1, f"{key} written {len(ids)} times"
    return history


def _claim_key(s3: Any) -> str:
    (key,) = [k for k in h.all_keys(s3) if k.startswith(f"{h.MODEL_PREFIX}_sources/")
              and k.endswith(".json") and ".lease-" not in k and ".release-" not in k
              and json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=k)["Body"].read())["source"].endswith(
                  h.object_versions(s3, h.DATA_BUCKET, "training-data/new.csv")["training-data/new.csv"][0])]
    return key


WRITES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "claim": lambda kw: "/_sources/" in kw["Key"] and ".lease-" not in kw["Key"] and ".release-" not in kw["Key"],
    "report": lambda kw: kw["Key"].endswith("/report.txt"),
    "holdout": lambda kw: kw["Key"].endswith("/holdout.json"),
    "weights": lambda kw: kw["Key"].endswith("/ml-weights.json"),
    "decision": lambda kw: "/decision-" in kw["Key"],
    "pointer": lambda kw: kw["Key"] == h.POINTER_KEY,
    "promotion-record": lambda kw: kw["Key"].endswith("/promotion.json"),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_fault_on_each_write_then_retry_then_late_duplicate(s3, retrain_app, lambda_context, baseline,
                                                            monkeypatch, write) -> None:
    # Given S3 answers 500 on one write of the protocol, for a force-promoted upload
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: WRITES[write](kw) and "virality-models" in kw["Bucket"])
    h.put_training(s3, "training-data/new.csv", h.csv_bytes(600, seed=70), metadata={"force-promote": "true"})
    event = h.event_for("training-data/new.csv")
    pointer_before = h.pointer(s3)

    # When the first delivery runs, it raises (retryable) and leaves nothing half-written
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)
    for key in h.weights_keys(s3):
        h.load_published(s3, key.split("/")[1])
    if write == "promotion-record":
        assert h.pointer(s3)[0]["previous"] == baseline["version"]   # it moved; only the final record is missing
    else:
        assert h.pointer(s3) == pointer_before

    # And Lambda retries after S3 recovered: the retry finishes the same version and decision
    proxy.clear_faults()
    retry = h.run_one(retrain_app, lambda_context, event)
    assert retry["status"] == "published" and retry["promoted"], retry
    version = retry["version"]
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == version and doc["previous"] == baseline["version"]
    history = _assert_protocol_invariants(s3, version)
    assert [d["version"] for d in reversed(history)] == [baseline["version"], version]
    assert len(_decisions(s3, version)) == 1          # no second decision was taken
    assert len(h.weights_keys(s3)) == 2

    # Then a late duplicate reports duplicate and writes nothing
    stored, etag = h.object_versions(s3), h.pointer_etag(s3)
    proxy.calls.clear()
    late = h.run_one(retrain_app, lambda_context, event)
    assert (late["status"], late["version"], late["promoted"]) == ("duplicate", version, True), late
    # its only write attempt is the (refused, write-once) claim
    assert [c[1]["Key"] for c in proxy.calls if c[0] == "put_object"] == [_claim_key(s3)]
    assert h.object_versions(s3) == stored and h.pointer_etag(s3) == etag


def test_rejected_version_whose_final_record_failed_is_finished_without_moving(s3, retrain_app, lambda_context,
                                                                              baseline, monkeypatch) -> None:
    monkeypatch.setenv("PROMOTION_F1_TOLERANCE", "0")
    monkeypatch.setenv("PROMOTION_LOGLOSS_TOLERANCE", "0")
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", WRITES["promotion-record"])
    h.put_training(s3, "training-data/worse.json", h.seed_json_bytes(600, seed=71, scramble_train_labels=True))
    event = h.event_for("training-data/worse.json")
    etag = h.pointer_etag(s3)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)
    proxy.clear_faults()
    retry = h.run_one(retrain_app, lambda_context, event)
    assert retry["status"] == "published" and retry["promoted"] is False, retry
    assert h.pointer_etag(s3) == etag
    _assert_protocol_invariants(s3, retry["version"])
    assert len(_decisions(s3, retry["version"])) == 1
    assert h.run_one(retrain_app, lambda_context, event)["status"] == "duplicate"
    assert h.pointer_etag(s3) == etag


def _forced_upload(s3: Any, name: str, seed: int) -> dict[str, Any]:
    h.put_training(s3, f"training-data/{name}.csv", h.csv_bytes(600, seed=seed), metadata={"force-promote": "true"})
    return h.event_for(f"training-data/{name}.csv")


def test_final_record_failed_then_another_version_promoted_retry_never_rolls_back(
        s3, retrain_app, lambda_context, baseline, monkeypatch) -> None:
    # Given A moved the pointer but its final record failed, and then B was promoted over A
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: WRITES["promotion-record"](kw) and "/_sources/" not in kw["Key"])
    event_a = _forced_upload(s3, "a", 72)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event_a, lambda_context)
    proxy.clear_faults()
    b = h.run_one(retrain_app, lambda_context, _forced_upload(s3, "b", 73))
    assert b["promoted"]

    # When A's delivery is retried
    retry = h.run_one(retrain_app, lambda_context, event_a)

    # Then it finishes A's decision (promoted, once) and does not take the pointer back from B
    assert retry["status"] == "published" and retry["promoted"] is True, retry
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == b["version"] and doc["previous"] == retry["version"]
    history = _assert_protocol_invariants(s3, retry["version"])
    assert [d["version"] for d in reversed(history)] == [baseline["version"], retry["version"], b["version"]]
    assert len(_decisions(s3, retry["version"])) == 1


def test_pointer_write_failed_then_another_version_promoted_retry_decides_against_the_new_champion(
        s3, retrain_app, lambda_context, baseline, monkeypatch) -> None:
    # Given A's pointer write failed (500, not applied), then B was promoted
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", WRITES["pointer"])
    event_a = _forced_upload(s3, "a", 74)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event_a, lambda_context)
    proxy.clear_faults()
    b = h.run_one(retrain_app, lambda_context, _forced_upload(s3, "b", 75))

    # When A is retried, its first decision (against the baseline) is provably unapplied: superseded
    retry = h.run_one(retrain_app, lambda_context, event_a)

    assert retry["status"] == "published" and retry["promoted"] is True, retry
    decisions = _decisions(s3, retry["version"])
    assert [d["previous"] for d in decisions] == [baseline["version"], b["version"]]
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == retry["version"] and doc["previous"] == b["version"] and doc["decision"] == 1
    _assert_protocol_invariants(s3, retry["version"])


# --------------------------------------------------------------------------- duplicates during each step


def _only_claims(writers: list[tuple[str, str]]) -> bool:
    """The main thread (the duplicate) attempted no write but the write-once claim."""
    return all(WRITES["claim"]({"Key": key}) for name, key in writers if name == "MainThread")


STEPS = ["report", "holdout", "weights", "decision", "pointer", "promotion-record"]


@pytest.mark.parametrize("step", STEPS)
def test_duplicate_arriving_at_each_step_waits_and_reports_duplicate(s3, retrain_app, lambda_context, baseline,
                                                                     monkeypatch, clock, step) -> None:
    # Given the lease holder paused right before one of its writes
    proxy = h.install_proxy(monkeypatch, retrain_app)
    event = _forced_upload(s3, "dup", 76)
    at_step, go = threading.Event(), threading.Event()
    writers: list[str] = []

    def pause(op: str, kwargs: dict[str, Any]) -> None:
        if op == "put_object":
            writers.append((threading.current_thread().name, kwargs["Key"]))
            if WRITES[step](kwargs) and threading.current_thread().name == "holder" and not at_step.is_set():
                at_step.set()
                assert go.wait(60), "never released"

    proxy.before(pause)
    results: dict[str, Any] = {}
    holder = threading.Thread(target=lambda: results.update(holder=h.run_one(retrain_app, lambda_context, event)),
                              name="holder")
    holder.start()
    assert at_step.wait(60)

    # When a duplicate arrives now: its first wait lets the holder finish
    def let_holder_finish() -> None:
        go.set()
        holder.join(60)

    clock["on_sleep"] = let_holder_finish
    writers.clear()
    dup = h.run_one(retrain_app, lambda_context, event)

    # Then the duplicate reports the holder's outcome and wrote nothing; the holder published
    assert not holder.is_alive()
    assert results["holder"]["status"] == "published", results
    assert (dup["status"], dup["version"], dup["promoted"]) == ("duplicate", results["holder"]["version"], True)
    assert _only_claims(writers), writers     # at most its refused claim
    assert clock["sleeps"] >= 1
    _assert_protocol_invariants(s3, dup["version"])


def test_duplicate_whose_time_runs_out_asks_to_be_retried_and_writes_nothing(
        s3, retrain_app, lambda_context, baseline, monkeypatch, clock) -> None:
    # Given the holder is paused before its weights write (within its lease)
    proxy = h.install_proxy(monkeypatch, retrain_app)
    event = _forced_upload(s3, "slow", 77)
    at_step, go = threading.Event(), threading.Event()

    def pause(op: str, kwargs: dict[str, Any]) -> None:
        if (op == "put_object" and WRITES["weights"](kwargs) and threading.current_thread().name == "holder"
                and not at_step.is_set()):
            at_step.set()
            assert go.wait(60)

    proxy.before(pause)
    results: dict[str, Any] = {}
    holder = threading.Thread(target=lambda: results.update(holder=h.run_one(retrain_app, lambda_context, event)),
                              name="holder")
    holder.start()
    assert at_step.wait(60)
    try:
        keys = h.all_keys(s3)
        # When a duplicate's whole time budget passes (fake clock) without the holder finishing
        with pytest.raises(retrain_app.RetrainFailedError, match="RetrainInProgressError"):
            retrain_app.lambda_handler(event, lambda_context)
        # Then it wrote nothing
        assert h.all_keys(s3) == keys
    finally:
        go.set()
        holder.join(60)
    assert results["holder"]["status"] == "published"
    _assert_protocol_invariants(s3, results["holder"]["version"])


def test_holder_crash_without_release_is_taken_over_after_its_lease(s3, retrain_app, lambda_context, baseline,
                                                                    monkeypatch, clock) -> None:
    # Given the holder died after publishing the weights (its decision write and its release marker both failed)
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", lambda kw: WRITES["decision"](kw) or ".release-" in kw["Key"])
    event = _forced_upload(s3, "crash", 78)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)
    proxy.clear_faults()
    (version,) = {k.split("/")[1] for k in h.weights_keys(s3)} - {baseline["version"]}
    proxy.calls.clear()

    # When the next delivery arrives after the holder's lease ended (clock beyond deadline + margin)
    clock["offset"] = lambda_context.timeout_seconds + retraining.LEASE_MARGIN_SECONDS + 1
    retry = h.run_one(retrain_app, lambda_context, event)

    # Then it took lease 1 and finished the same version without training a second one
    assert (retry["status"], retry["version"], retry["promoted"]) == ("published", version, True), retry
    assert any(c[0] == "put_object" and ".lease-1.json" in c[1]["Key"] for c in proxy.calls)
    assert len(h.weights_keys(s3)) == 2
    _assert_protocol_invariants(s3, version)
    assert h.run_one(retrain_app, lambda_context, event)["status"] == "duplicate"


def test_two_deliveries_after_a_release_take_over_once(s3, retrain_app, lambda_context, baseline, monkeypatch,
                                                       clock) -> None:
    # Given the holder failed on its pointer write (and released its lease)
    proxy = h.install_proxy(monkeypatch, retrain_app)
    proxy.fail("put_object", WRITES["pointer"])
    event = _forced_upload(s3, "twice", 79)
    with pytest.raises(retrain_app.RetrainFailedError):
        retrain_app.lambda_handler(event, lambda_context)
    proxy.clear_faults()

    # When the retry is paused at its pointer write and a duplicate arrives meanwhile
    at_step, go = threading.Event(), threading.Event()
    writers: list[str] = []

    def pause(op: str, kwargs: dict[str, Any]) -> None:
        if op == "put_object":
            writers.append((threading.current_thread().name, kwargs["Key"]))
            if WRITES["pointer"](kwargs) and threading.current_thread().name == "retry" and not at_step.is_set():
                at_step.set()
                assert go.wait(60)

    proxy.before(pause)
    results: dict[str, Any] = {}
    retry = threading.Thread(target=lambda: results.update(retry=h.run_one(retrain_app, lambda_context, event)),
                             name="retry")
    retry.start()
    assert at_step.wait(60)
    clock["on_sleep"] = lambda: (go.set(), retry.join(60))
    writers.clear()
    dup = h.run_one(retrain_app, lambda_context, event)

    # Then the retry holds lease 1 and finishes; the duplicate waited for it and wrote nothing
    assert results["retry"]["status"] == "published" and results["retry"]["promoted"]
    assert dup["status"] == "duplicate" and dup["version"] == results["retry"]["version"]
    assert _only_claims(writers), writers
    assert not [k for k in h.all_keys(s3) if ".lease-2" in k]
    _assert_protocol_invariants(s3, dup["version"])
