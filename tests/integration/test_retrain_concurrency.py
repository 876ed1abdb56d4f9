"""Concurrent retrains, duplicate and out-of-order delivery, on moto S3 with threads.

The handler's S3 client is an :class:`~retrain_helpers.S3Proxy`: it makes
moto's conditional puts atomic (as real S3's are) and, in the slow-S3
variants, sleeps a jittered few milliseconds before every get/put/head to
widen the read-then-write windows the optimistic concurrency must survive.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import retrain_helpers as h
from virality_dev.fakeaws import MODEL_BUCKET


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)


def _in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls concurrently (released together); results in order; re-raise any error."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), name=f"retrain-{i}") for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a retrain thread hung"
    if errors:
        raise errors[0]
    return results


def _assert_versions_intact(s3: Any, versions: list[str]) -> None:
    """Each version complete and valid; every model object written exactly once."""
    assert len(set(versions)) == len(versions), versions
    assert h.weights_keys(s3) == {h.key_for_weights(v) for v in versions}
    stored = h.object_versions(s3, MODEL_BUCKET, h.MODEL_PREFIX)
    for v in versions:
        h.load_published(s3, v)
        for name in ("ml-weights.json", "report.txt"):
            assert len(stored[f"{h.MODEL_PREFIX}{v}/{name}"]) == 1, f"{v}/{name} was overwritten"
    for key, ids in stored.items():
        if key != h.POINTER_KEY:
            assert len(ids) == 1, f"{key} written {len(ids)} times"


@pytest.mark.parametrize(("n", "latency"), [(2, None), (8, None), (8, (0.001, 0.008))],
                         ids=["2-threads", "8-threads", "8-threads-slow-s3"])
def test_concurrent_retrains_each_publish_their_own_version(s3, retrain_app, lambda_context, env, monkeypatch,
                                                            n, latency) -> None:
    # Loose tolerances so that most retrains try to move the pointer; every third one forces it.
    monkeypatch.setenv("PROMOTION_F1_TOLERANCE", "0.5")
    monkeypatch.setenv("PROMOTION_LOGLOSS_TOLERANCE", "5")
    h.install_proxy(monkeypatch, retrain_app, latency=latency, seed=n)
    bodies = {}
    for i in range(n):
        key = f"training-data/batch-{i}.csv"
        bodies[key] = h.csv_bytes(600, seed=100 + i)
        h.put_training(s3, key, bodies[key], metadata={"force-promote": "true"} if i % 3 == 0 else None)

    # When n notifications are handled at the same time
    summaries = _in_threads([
        (lambda key=key: h.run_one(retrain_app, lambda_context, h.event_for(key))) for key in bodies])

    # Then there are n distinct, complete versions, none overwritten
    assert [s["status"] for s in summaries] == ["published"] * n, summaries
    versions = [s["version"] for s in summaries]
    _assert_versions_intact(s3, versions)
    for s in summaries:   # each trained on its own file
        assert h.load_published(s3, s["version"])[0].data.sha256 == h.sha256(bodies[s["sourceKey"]])
    # the forced ones were promoted
    assert all(s["promoted"] for i, s in enumerate(summaries) if i % 3 == 0)

    # And the pointer names one of them, with a matching sha256
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] in versions
    # every pointer state ever written named a complete artifact, and no promotion was lost
    history = h.assert_pointer_history_valid(s3)
    promoted = {s["version"] for s in summaries if s["promoted"]}
    assert promoted == {d["version"] for d in history}
    assert len(history) == len(promoted)
    # each move was made against the state it replaced (optimistic concurrency): a chain, oldest first
    chain = list(reversed(history))
    assert chain[0].get("previous") is None
    assert all(later.get("previous") == earlier["version"] for earlier, later in itertools.pairwise(chain))


def test_pointer_contention_with_every_retrain_forced(s3, retrain_app, lambda_context, env, monkeypatch) -> None:
    h.install_proxy(monkeypatch, retrain_app, latency=(0.0, 0.004), seed=7)
    keys = [f"training-data/forced-{i}.csv" for i in range(6)]
    for i, key in enumerate(keys):
        h.put_training(s3, key, h.csv_bytes(600, seed=200 + i), metadata={"Force-Promote": "TRUE"})
    summaries = _in_threads([(lambda key=key: h.run_one(retrain_app, lambda_context, h.event_for(key)))
                             for key in keys])
    assert all(s["status"] == "published" and s["promoted"] for s in summaries), summaries
    versions = [s["version"] for s in summaries]
    _assert_versions_intact(s3, versions)
    history = h.assert_pointer_history_valid(s3)
    assert sorted(d["version"] for d in history) == sorted(versions)   # each forced one held the pointer once
    assert h.assert_pointer_valid(s3)["version"] in versions


# --------------------------------------------------------------------------- duplicates


def test_duplicate_delivery_sequential(s3, retrain_app, lambda_context, env) -> None:
    put = h.put_training(s3, "training-data/once.csv", h.csv_bytes(600, seed=40))
    event = h.event_for("training-data/once.csv", version_id=put["VersionId"])

    first = h.run_one(retrain_app, lambda_context, event)
    keys_after_first, etag_after_first = h.all_keys(s3), h.pointer_etag(s3)
    second = h.run_one(retrain_app, lambda_context, event)

    assert first["status"] == "published" and first["promoted"]
    assert second["status"] == "duplicate", second
    assert second["version"] == first["version"]
    assert second["modelKey"] == first["modelKey"]
    assert second["promoted"] is True   # it is the current model
    assert h.all_keys(s3) == keys_after_first
    assert h.pointer_etag(s3) == etag_after_first


def test_duplicate_delivery_without_version_id_in_the_event(s3, retrain_app, lambda_context, env) -> None:
    # The event carries no versionId: the object's version (from HEAD) identifies the upload.
    h.put_training(s3, "training-data/once.csv", h.csv_bytes(600, seed=41))
    first = h.run_one(retrain_app, lambda_context, h.event_for("training-data/once.csv"))
    second = h.run_one(retrain_app, lambda_context, h.event_for("training-data/once.csv"))
    assert (first["status"], second["status"]) == ("published", "duplicate")
    assert second["version"] == first["version"]
    assert len(h.weights_keys(s3)) == 1


@pytest.mark.parametrize("latency", [None, (0.001, 0.006)], ids=["fast", "slow-s3"])
def test_duplicate_delivery_concurrent(s3, retrain_app, lambda_context, env, monkeypatch, latency) -> None:
    h.install_proxy(monkeypatch, retrain_app, latency=latency, seed=3)
    put = h.put_training(s3, "training-data/once.csv", h.csv_bytes(600, seed=42))
    event = h.event_for("training-data/once.csv", version_id=put["VersionId"])

    a, b = _in_threads([lambda: h.run_one(retrain_app, lambda_context, event)] * 2)

    assert sorted([a["status"], b["status"]]) == ["duplicate", "published"], (a, b)
    assert a["version"] == b["version"]
    _assert_versions_intact(s3, [a["version"]])
    assert h.assert_pointer_valid(s3)["version"] == a["version"]


def test_reupload_of_the_same_key_is_a_new_version(s3, retrain_app, lambda_context, env) -> None:
    first_put = h.put_training(s3, "training-data/daily.csv", h.csv_bytes(600, seed=43))
    first = h.run_one(retrain_app, lambda_context, h.event_for("training-data/daily.csv",
                                                               version_id=first_put["VersionId"]))
    second_put = h.put_training(s3, "training-data/daily.csv", h.csv_bytes(600, seed=43))   # same bytes again
    second = h.run_one(retrain_app, lambda_context, h.event_for("training-data/daily.csv",
                                                                version_id=second_put["VersionId"]))
    assert (first["status"], second["status"]) == ("published", "published")
    assert first["version"] != second["version"]
    _assert_versions_intact(s3, [first["version"], second["version"]])


def test_unversioned_bucket_duplicates_and_reuploads(s3, retrain_app, lambda_context, env) -> None:
    # Without bucket versioning the ETag identifies the upload.
    bucket = "virality-data-unversioned"
    s3.create_bucket(Bucket=bucket)
    h.put_training(s3, "training-data/u.csv", h.csv_bytes(600, seed=44), bucket=bucket)
    first = h.run_one(retrain_app, lambda_context, h.event_for("training-data/u.csv", bucket=bucket))
    again = h.run_one(retrain_app, lambda_context, h.event_for("training-data/u.csv", bucket=bucket))
    h.put_training(s3, "training-data/u.csv", h.csv_bytes(600, seed=45), bucket=bucket)
    changed = h.run_one(retrain_app, lambda_context, h.event_for("training-data/u.csv", bucket=bucket))
    assert [first["status"], again["status"], changed["status"]] == ["published", "duplicate", "published"]
    assert again["version"] == first["version"] != changed["version"]
    _assert_versions_intact(s3, [first["version"], changed["version"]])


def test_out_of_order_delivery(s3, retrain_app, lambda_context, env, monkeypatch) -> None:
    monkeypatch.setenv("PROMOTION_F1_TOLERANCE", "1")
    monkeypatch.setenv("PROMOTION_LOGLOSS_TOLERANCE", "100")
    # Given two uploads of the same key
    body_1, body_2 = h.csv_bytes(600, seed=46), h.csv_bytes(650, seed=47)
    put_1 = h.put_training(s3, "training-data/feed.csv", body_1)
    put_2 = h.put_training(s3, "training-data/feed.csv", body_2)
    event_1 = h.event_for("training-data/feed.csv", version_id=put_1["VersionId"])
    event_2 = h.event_for("training-data/feed.csv", version_id=put_2["VersionId"])

    # When the notification of upload 2 arrives first, then upload 1's, then both again
    late_2 = h.run_one(retrain_app, lambda_context, event_2)
    late_1 = h.run_one(retrain_app, lambda_context, event_1)
    again = [h.run_one(retrain_app, lambda_context, e) for e in (event_1, event_2)]

    # Then each upload yields its own version, trained on its own bytes, and replays change nothing
    assert (late_2["status"], late_1["status"]) == ("published", "published")
    assert late_1["version"] != late_2["version"]
    assert h.load_published(s3, late_2["version"])[0].data.sha256 == h.sha256(body_2)
    assert h.load_published(s3, late_1["version"])[0].data.sha256 == h.sha256(body_1)
    assert [a["status"] for a in again] == ["duplicate", "duplicate"]
    assert [a["version"] for a in again] == [late_1["version"], late_2["version"]]
    _assert_versions_intact(s3, [late_1["version"], late_2["version"]])
    h.assert_pointer_valid(s3)


def test_concurrent_mixed_duplicates_and_distinct_uploads(s3, retrain_app, lambda_context, env,
                                                          monkeypatch) -> None:
    # Four distinct uploads, each delivered twice, all eight deliveries at once on a slow S3.
    h.install_proxy(monkeypatch, retrain_app, latency=(0.0005, 0.005), seed=11)
    events = []
    for i in range(4):
        put = h.put_training(s3, f"training-data/dup-{i}.csv", h.csv_bytes(600, seed=300 + i))
        events.append(h.event_for(f"training-data/dup-{i}.csv", version_id=put["VersionId"]))
    summaries = _in_threads([(lambda e=e: h.run_one(retrain_app, lambda_context, e)) for e in events * 2])
    by_key: dict[str, set[str]] = {}
    for s in summaries:
        assert s["status"] in ("published", "duplicate"), s
        by_key.setdefault(s["sourceKey"], set()).add(s["version"])
    assert all(len(v) == 1 for v in by_key.values()), by_key
    assert sum(s["status"] == "published" for s in summaries) == 4
    _assert_versions_intact(s3, [next(iter(v)) for v in by_key.values()])
    h.assert_pointer_valid(s3)


def test_pointer_moved_between_read_and_write_is_retried_against_the_new_current(
        s3, retrain_app, lambda_context, env, monkeypatch) -> None:
    # Deterministic interleaving: right before retrain A writes the pointer, retrain B promotes.
    monkeypatch.setenv("PROMOTION_F1_TOLERANCE", "1")
    monkeypatch.setenv("PROMOTION_LOGLOSS_TOLERANCE", "100")
    proxy = h.install_proxy(monkeypatch, retrain_app)
    h.put_training(s3, "training-data/base.csv", h.csv_bytes(600, seed=50))
    base = h.run_one(retrain_app, lambda_context, h.event_for("training-data/base.csv"))
    h.put_training(s3, "training-data/a.csv", h.csv_bytes(600, seed=51))
    h.put_training(s3, "training-data/b.csv", h.csv_bytes(600, seed=52))
    interleaved: list[dict[str, Any]] = []

    def promote_b_first(op: str, kwargs: dict[str, Any]) -> None:
        if op == "put_object" and kwargs["Key"] == h.POINTER_KEY and not interleaved:
            interleaved.append({})   # fire once (B's own pointer write passes through here too)
            interleaved[0] = h.run_one(retrain_app, lambda_context, h.event_for("training-data/b.csv"))

    proxy.before(promote_b_first)
    proxy.calls.clear()
    a = h.run_one(retrain_app, lambda_context, h.event_for("training-data/a.csv"))
    b = interleaved[0]

    # A's conditional write lost (stale ETag), it re-read the pointer, re-ran the gate against B, then won
    assert b["status"] == a["status"] == "published" and b["promoted"] and a["promoted"], (a, b)
    assert b["version"] in a["reason"], a["reason"]
    pointer_writes = [c for c in proxy.calls if c[0] == "put_object" and c[1]["Key"] == h.POINTER_KEY]
    assert len(pointer_writes) == 3            # A (refused), B, A again
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == a["version"] and doc["previous"] == b["version"]
    chain = list(reversed(h.assert_pointer_history_valid(s3)))
    assert [d["version"] for d in chain] == [base["version"], b["version"], a["version"]]
