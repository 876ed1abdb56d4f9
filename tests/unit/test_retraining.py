"""claim -> train -> publish -> gate -> record, on the in-memory store, one forced interleaving at a time.

The moto integration tests (tests/integration/test_retrain_protocol.py, ..._concurrency.py) run the
same protocol through the handler; these call :func:`virality.services.retraining.retrain` and
:func:`virality.services.promotion.release` directly, with injected faults and a fake clock, fast.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.unit.helpers import PINNED_CONFIG
from virality.errors import DataValidationError, RetrainInProgressError
from virality.services import retraining
from virality.services.promotion import Candidate, PromotionPolicy, release
from virality.services.retraining import RetrainSummary, retrain
from virality.store.base import Pointer
from virality.store.s3 import SourceObject
from virality.structs import replace
from virality_dev.memstore import MemoryStore
from virality_dev.synthetic import sample_csv

#: Every write of the protocol, by what it writes (the claim is lease 0 of the event).
WRITES = {
    "claim": lambda key: "/_sources/" in key and ".lease-" not in key and ".release-" not in key,
    "holdout": lambda key: key.endswith("/holdout.json"),
    "report": lambda key: key.endswith("/report.txt"),
    "weights": lambda key: key.endswith("/ml-weights.json"),
    "decision": lambda key: "/decision-" in key,
    "pointer": lambda key: key == "models/latest.json",
    "promotion-record": lambda key: key.endswith("/promotion.json"),
}
FORCE = {"force-promote": "true"}


def _kind(key: str) -> str:
    return next(name for name, matches in WRITES.items() if matches(key))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Leases run on this clock; ``sleep`` advances it instead of sleeping."""
    state = {"now": 1_800_000_000.0, "sleeps": 0.0}

    def fake_sleep(seconds: float) -> None:
        state["now"] += seconds
        state["sleeps"] += 1

    monkeypatch.setattr(retraining, "_clock", lambda: state["now"])
    monkeypatch.setattr(retraining, "_sleep", fake_sleep)
    return state


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore("models-bucket", "models/")


def _source(name: str, seed: int, *, metadata: dict[str, str] | None = None, body: bytes | None = None,
            version_id: str = "1") -> SourceObject:
    return SourceObject("data-bucket", f"training-data/{name}.csv", version_id, f'"etag-{name}"',
                        sample_csv(300, seed) if body is None else body, metadata or {})


def _run(store: MemoryStore, source: SourceObject, clock: dict[str, float], *,
         policy: PromotionPolicy | None = None, timeout: float = 900.0) -> RetrainSummary:
    # A copy per delivery, as each one reads the object anew: retrain takes the body over.
    return retrain(store, dataclasses.replace(source), PINNED_CONFIG, policy or PromotionPolicy(),
                   deadline=clock["now"] + timeout)


def _pointer(store: MemoryStore) -> dict[str, Any] | None:
    body = store.body("models/latest.json")
    return None if body is None else json.loads(body)


def _history(store: MemoryStore) -> list[str]:
    """Versions the pointer named, oldest first."""
    return [p.version for p in reversed(store.pointer_history())]


def _decisions(store: MemoryStore, version: str) -> list[dict[str, Any]]:
    return [json.loads(store.body(k) or b"") for k in sorted(store.keys(f"models/{version}/decision-"))]


def _assert_written_once(store: MemoryStore) -> None:
    for key, count in store.write_counts().items():
        if key != "models/latest.json":
            assert count == 1, f"{key} written {count} times"


@pytest.fixture
def champion(store: MemoryStore, clock: dict[str, float]) -> RetrainSummary:
    summary = _run(store, _source("baseline", 21), clock)
    assert summary.status == "published" and summary.promoted, summary
    store.calls.clear()
    return summary


def test_the_first_upload_claims_trains_publishes_gates_and_records_in_that_order(
        store: MemoryStore, clock: dict[str, float]) -> None:
    summary = _run(store, _source("first", 1), clock)
    assert (summary.status, summary.promoted, summary.reason) == ("published", True, "no valid current model")
    assert summary.rows is not None and sum(summary.rows.values()) == 300
    version = summary.version
    assert version is not None and summary.modelKey == f"models/{version}/ml-weights.json"
    # claim, then the version (holdout and report before the weights), then decision, pointer, final record
    assert [_kind(k) for k in store.writes()] == ["claim", "holdout", "report", "weights", "decision",
                                                  "pointer", "promotion-record"]
    pointer = _pointer(store)
    assert pointer is not None and (pointer["version"], pointer["decision"]) == (version, 0)
    assert pointer.get("previous") is None
    final = store.read_promotion(version)
    assert final is not None and final["promoted"] and final["decision"] == 0
    assert final["sha256"] == pointer["sha256"]
    _assert_written_once(store)


def test_a_duplicate_after_the_outcome_reports_it_and_writes_nothing(store: MemoryStore, clock: dict[str, float],
                                                                     champion: RetrainSummary) -> None:
    before = store.snapshot()
    again = _run(store, _source("baseline", 21), clock)
    assert (again.status, again.version, again.promoted) == ("duplicate", champion.version, True)
    assert again.reason.startswith("this event was already processed")
    assert store.snapshot() == before


def test_another_object_version_of_the_same_key_is_a_new_event(store: MemoryStore, clock: dict[str, float],
                                                               champion: RetrainSummary) -> None:
    summary = _run(store, _source("baseline", 22, version_id="2"), clock,
                   policy=PromotionPolicy(f1_tolerance=1, logloss_tolerance=100, max_sharp_disagreement=1))
    assert summary.status == "published" and summary.version != champion.version


def test_bad_data_writes_nothing(store: MemoryStore, clock: dict[str, float]) -> None:
    with pytest.raises(DataValidationError):
        _run(store, _source("bad", 1, body=b"views,likes\n1,2\n"), clock)
    assert store.writes() == [] and store.keys() == set()


def test_the_gate_refuses_a_worse_model_and_the_pointer_stays(store: MemoryStore, clock: dict[str, float],
                                                             champion: RetrainSummary) -> None:
    before = _pointer(store)
    summary = _run(store, _source("challenger", 5), clock, policy=PromotionPolicy(f1_tolerance=-1))
    assert summary.status == "published" and not summary.promoted and "macro-F1" in summary.reason
    assert _pointer(store) == before
    assert summary.version is not None and store.version_exists(summary.version)   # published, not promoted
    (decision,) = _decisions(store, summary.version)
    assert not decision["promote"] and decision["previous"] == champion.version
    final = store.read_promotion(summary.version)
    assert final is not None and not final["promoted"]
    assert "pointer" not in [_kind(k) for k in store.writes()]


@pytest.mark.parametrize("write", list(WRITES))
def test_a_fault_on_each_write_moves_no_pointer_and_the_retry_finishes_the_same_decision(
        store: MemoryStore, clock: dict[str, float], champion: RetrainSummary, write: str) -> None:
    # Given the store answers 500 on one write of the protocol
    store.fail("write", WRITES[write])
    source = _source("new", 70, metadata=FORCE)
    pointer_before = _pointer(store)

    # When the first delivery runs, it raises the storage error, and the pointer did not move
    with pytest.raises(ClientError):
        _run(store, source, clock)
    if write == "promotion-record":
        pointer = _pointer(store)
        assert pointer is not None and pointer["previous"] == champion.version   # moved; the record is missing
    else:
        assert _pointer(store) == pointer_before
    first_attempt = set(store.keys())

    # Then the retry (the store recovered) finishes one version with one decision
    store.clear_faults()
    retry = _run(store, source, clock)
    assert retry.status == "published" and retry.promoted, retry
    assert clock["sleeps"] == 0                    # the failed holder released its lease: no waiting
    pointer = _pointer(store)
    assert pointer is not None and (pointer["version"], pointer["previous"]) == (retry.version, champion.version)
    assert _history(store) == [champion.version, retry.version]
    assert len(_decisions(store, retry.version or "")) == 1
    assert len(store.list_versions()) == 2
    if write != "claim":                           # the retry finished the version the first attempt claimed
        claim = store.claim_key(f"{source.bucket}/{source.key}#{source.version_id}")
        assert claim in first_attempt and json.loads(store.body(claim) or b"")["version"] == retry.version
    _assert_written_once(store)

    # And a late duplicate reports it and writes nothing
    before = store.snapshot()
    late = _run(store, source, clock)
    assert (late.status, late.version, late.promoted) == ("duplicate", retry.version, True)
    assert store.snapshot() == before


def test_a_pointer_moved_between_decision_and_write_is_decided_again(store: MemoryStore, clock: dict[str, float],
                                                                     champion: RetrainSummary) -> None:
    # Given another writer promotes a version just before this delivery's decision is recorded
    interloper = champion.version + "-interloper" if champion.version else "x"
    moved: list[str] = []

    def move_pointer_once(op: str, key: str) -> None:
        if op == "write" and key.endswith("/decision-0.json") and not moved:
            moved.append(key)
            artifact, _ = store.load_key(store.weights_key(champion.version or ""))
            key_, sha = store.publish(replace(artifact, modelVersion=interloper), "interloper")
            state = store.read_pointer()
            assert state is not None
            store.write_pointer(Pointer(version=interloper, key=key_, sha256=sha, previous=state.pointer.version,
                                        decision=0), state.etag)

    store.before(move_pointer_once)
    summary = _run(store, _source("new", 71, metadata=FORCE), clock)

    # Then decision 0 (against the old champion) never applied; decision 1 replaced the interloper
    assert moved and summary.promoted
    decisions = _decisions(store, summary.version or "")
    assert [(d["attempt"], d["previous"]) for d in decisions] == [(0, champion.version), (1, interloper)]
    pointer = _pointer(store)
    assert pointer is not None and (pointer["previous"], pointer["decision"]) == (interloper, 1)
    assert _history(store) == [champion.version, interloper, summary.version]
    final = store.read_promotion(summary.version or "")
    assert final is not None and (final["decision"], final["previous"]) == (1, interloper)


def test_a_duplicate_within_the_holders_lease_writes_nothing_and_asks_for_a_retry(
        store: MemoryStore, clock: dict[str, float]) -> None:
    source = _source("busy", 3)
    source_id = f"{source.bucket}/{source.key}#{source.version_id}"
    holder = retraining.acquire_lease(store, source_id, clock["now"] + 900)      # a delivery still training
    before = store.snapshot()
    with pytest.raises(RetrainInProgressError, match="being processed by another delivery"):
        _run(store, source, clock, timeout=60)
    assert store.snapshot() == before and holder.number == 0


def test_a_crashed_holders_lease_ends_and_the_next_delivery_finishes_its_version(
        store: MemoryStore, clock: dict[str, float], champion: RetrainSummary) -> None:
    # Given a holder that died after publishing: the pointer write failed and so did its release marker
    store.fail("write", lambda key: WRITES["pointer"](key) or ".release-" in key)
    source = _source("crash", 72, metadata=FORCE)
    with pytest.raises(ClientError):
        _run(store, source, clock, timeout=60)
    (published,) = [v for v in store.list_versions() if v != champion.version]
    store.clear_faults()

    # When the next delivery arrives, it waits (on the fake clock) for the lease to end, then takes over
    retry = _run(store, source, clock)
    assert clock["sleeps"] > 0
    assert (retry.status, retry.version, retry.promoted) == ("published", published, True)
    assert any(".lease-1.json" in k for k in store.keys("models/_sources/"))
    assert len(_decisions(store, published)) == 1                    # the recorded decision was finished
    assert _history(store) == [champion.version, published]
    _assert_written_once(store)


def test_release_called_again_only_reads_the_outcome(store: MemoryStore) -> None:
    from virality.data.datasets import load_training_data
    from virality.services.training import train_model

    ts = load_training_data(sample_csv(300, 9), "direct.csv")
    candidate = Candidate(train_model(ts, PINNED_CONFIG, model_version="v-direct").artifact, ts.test)
    done = release(store, candidate, PromotionPolicy())
    assert done.promoted and not done.finished_before and done.decision == 0
    before, writes = store.snapshot(), len(store.writes())
    again = release(store, candidate, PromotionPolicy())
    assert again.finished_before and (again.version, again.sha256, again.promoted) == (
        done.version, done.sha256, done.promoted)
    assert store.snapshot() == before and len(store.writes()) == writes     # not even a refused write
