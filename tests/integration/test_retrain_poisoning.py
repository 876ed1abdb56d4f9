"""The promotion gate cannot be poisoned by the file it judges.

The attack (issue 9, section 5): an upload whose view counts are inverted
(rank by rank) while every engagement rate stays the same. Its tiers are
inverted, so a model trained on it looks excellent on its *own* test split
and the champion looks terrible there. The gate therefore also compares
challenger and champion on the champion's reference holdout
(``<version>/holdout.json``, written once when the champion was published):
data the uploader of this file did not choose.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest

from tests.integration import retrain_helpers as h
from virality_dev.events import api_event
from virality_dev.fakeaws import MODEL_BUCKET

COUNTS = ("likes", "comments", "shares", "saves")


def _inverted_views(body: bytes) -> bytes:
    """Swap view counts by rank (most viewed <-> least viewed), scaling counts so every rate is unchanged."""
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    views = np.array([float(r["views"]) for r in rows])
    order = np.argsort(views, kind="stable")
    inverted = np.empty_like(views)
    inverted[order] = views[order[::-1]]
    for row, old, new in zip(rows, views, inverted, strict=True):
        ratio = new / old if old > 0 else 1.0
        row["views"] = str(int(new))
        for name in COUNTS:
            row[name] = str(round(float(row[name]) * ratio))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


POISON = _inverted_views(h.csv_bytes(2000, seed=64))
# Highly engaging (a like for every five views), with views a few times the followers: what the poisoned
# upload teaches the model to rank low, since its rates now go with low tiers.
VIRAL = {"views": 400_000, "likes": 80_000, "comments": 8_000, "shares": 16_000, "saves": 13_333,
         "followers": 80_000, "durationSeconds": 21, "hashtagCount": 4, "hasTrendingSound": True,
         "captionLength": 60, "postedAt": "2026-11-20T18:00:00Z"}


@pytest.fixture
def champion(s3, retrain_app, lambda_context, monkeypatch) -> dict[str, Any]:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)
    h.put_training(s3, "training-data/clean.csv", h.csv_bytes(2000, seed=60))
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/clean.csv"))
    assert summary["status"] == "published" and summary["promoted"], summary
    return summary


def _predict_viral(predict_app: Any, lambda_context: Any) -> dict[str, Any]:
    response = predict_app.lambda_handler(api_event("POST", "/predict", {"video": VIRAL}), lambda_context)
    assert response["statusCode"] == 200, response
    return json.loads(response["body"])


def test_poisoned_upload_is_refused_on_the_reference_holdout(s3, retrain_app, predict_app, lambda_context,
                                                            champion, monkeypatch) -> None:
    # Given the champion serves a highly engaging video in a high tier
    before = _predict_viral(predict_app, lambda_context)
    pointer_before = h.pointer(s3)

    # When an upload with inverted view counts (rates unchanged) arrives, not forced
    h.put_training(s3, "training-data/poisoned.csv", POISON)
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/poisoned.csv"))

    # Then it is published as a candidate only, refused on the champion's reference holdout
    assert summary["status"] == "published" and summary["promoted"] is False, summary
    assert summary["reason"].startswith("reference holdout:"), summary["reason"]
    assert champion["version"] in summary["reason"]
    assert h.pointer(s3) == pointer_before
    # and the video keeps its tier and score
    predict_app.reset()
    assert _predict_viral(predict_app, lambda_context) == before
    # and the candidate really is the attack: served (pinned by MODEL_VERSION), it demotes the video
    monkeypatch.setenv("MODEL_VERSION", summary["version"])
    predict_app.reset()
    poisoned = _predict_viral(predict_app, lambda_context)
    assert poisoned["tier"] < before["tier"], (poisoned, before)


def test_without_the_reference_holdout_the_poison_passes(s3, retrain_app, lambda_context, champion) -> None:
    # The attack the rule stops: the upload's own test split alone lets it through (the gate before this rule).
    s3.delete_object(Bucket=MODEL_BUCKET, Key=f"{h.MODEL_PREFIX}{champion['version']}/holdout.json")
    h.put_training(s3, "training-data/poisoned.csv", POISON)
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/poisoned.csv"))
    assert summary["promoted"] is True, summary
    assert "reference holdout" not in summary["reason"]


def test_forced_poisoned_upload_is_promoted(s3, retrain_app, lambda_context, champion) -> None:
    h.put_training(s3, "training-data/poisoned.csv", POISON, metadata={"force-promote": "true"})
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/poisoned.csv"))
    assert summary["promoted"] is True and "force-promote" in summary["reason"]
    assert h.assert_pointer_valid(s3)["previous"] == champion["version"]


def test_clean_upload_is_still_promoted_and_checked_on_the_holdout(s3, retrain_app, lambda_context,
                                                                  champion) -> None:
    h.put_training(s3, "training-data/clean-2.csv", h.csv_bytes(2000, seed=67))
    summary = h.run_one(retrain_app, lambda_context, h.event_for("training-data/clean-2.csv"))
    assert summary["promoted"] is True, summary
    assert "reference holdout" in summary["reason"]


def test_reference_holdout_is_written_once_with_each_version(s3, retrain_app, lambda_context, champion) -> None:
    key = f"{h.MODEL_PREFIX}{champion['version']}/holdout.json"
    doc = json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=key)["Body"].read())
    assert doc["rows"] == champion["rows"]["test"] == len(doc["tiers"])
    assert set(doc["raw"]) >= {"views", "likes", "followers"}
    assert len(h.object_versions(s3, MODEL_BUCKET, key)[key]) == 1
