"""``virality.services.promotion.release`` called directly, as the audit (recalibration) and Spark paths do.

No event, no claim: the caller owns the version id it generated. The
release publishes, gates, records and moves the pointer; calling it again
(after success or after any failed write) finishes the same decision.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.integration import retrain_helpers as h
from virality.artifact import new_version_id
from virality.data.datasets import load_training_data
from virality.services.promotion import Candidate, PromotionPolicy, release
from virality.services.training import train_model
from virality.store.s3 import ModelRegistry
from virality_dev.fakeaws import MODEL_BUCKET


def _candidate(seed: int, version: str | None = None) -> Candidate:
    ts = load_training_data(h.csv_bytes(600, seed=seed), f"api-{seed}.csv")
    artifact = train_model(ts, model_version=version or new_version_id()).artifact
    return Candidate(artifact, ts.test)


@pytest.fixture
def registry(s3: Any) -> ModelRegistry:
    return ModelRegistry(MODEL_BUCKET, "models/", lambda: boto3.client("s3", region_name="us-east-1"))


def test_release_publishes_gates_records_and_moves_the_pointer(s3, registry) -> None:
    first = release(registry, _candidate(80), PromotionPolicy())
    assert first.promoted and first.reason == "no valid current model" and first.previous is None
    second = release(registry, _candidate(81), PromotionPolicy(f1_tolerance=1, logloss_tolerance=100))

    assert second.promoted and second.previous == first.version and second.decision == 0
    assert "reference holdout" in second.reason          # the champion's stored split was used
    doc = h.assert_pointer_valid(s3)
    assert doc["version"] == second.version and doc["previous"] == first.version
    for v in (first.version, second.version):
        stored = h.all_keys(s3)
        assert {f"models/{v}/{n}" for n in ("ml-weights.json", "report.txt", "holdout.json",
                                            "decision-0.json", "promotion.json")} <= stored


def test_release_again_only_reads_the_outcome(s3, registry) -> None:
    candidate = _candidate(82)
    done = release(registry, candidate, PromotionPolicy())
    before = h.object_versions(s3)
    again = release(registry, candidate, PromotionPolicy())
    assert again.finished_before and (again.version, again.promoted, again.sha256) == (
        done.version, done.promoted, done.sha256)
    assert h.object_versions(s3) == before


def test_release_retried_after_a_pointer_failure_keeps_the_published_bytes(s3, registry, monkeypatch) -> None:
    champion = release(registry, _candidate(83), PromotionPolicy())
    proxy = h.S3Proxy(boto3.client("s3", region_name="us-east-1"))
    proxy.fail("put_object", lambda kw: kw["Key"] == h.POINTER_KEY)
    flaky = ModelRegistry(MODEL_BUCKET, "models/", lambda: proxy)
    version = new_version_id()
    with pytest.raises(ClientError):
        release(flaky, _candidate(84, version), PromotionPolicy(f1_tolerance=1, logloss_tolerance=100,
                                                                max_sharp_disagreement=1))
    published = s3.get_object(Bucket=MODEL_BUCKET, Key=f"models/{version}/ml-weights.json")["Body"].read()

    # A retrained artifact under the same version (new trainedAt): the published bytes stay the version
    proxy.clear_faults()
    outcome = release(flaky, _candidate(84, version), PromotionPolicy(f1_tolerance=1, logloss_tolerance=100,
                                                                      max_sharp_disagreement=1))
    assert outcome.promoted and outcome.previous == champion.version and outcome.decision == 0
    assert outcome.sha256 == h.sha256(published)
    assert h.assert_pointer_valid(s3)["sha256"] == h.sha256(published)
    final = json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=f"models/{version}/promotion.json")["Body"].read())
    assert final["previous"] == champion.version
