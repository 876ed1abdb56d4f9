"""Retrain Lambda on real export shapes: the preset comes from a sub-prefix or ``x-amz-meta-preset``."""

from __future__ import annotations

import json

import pytest

from tests import export_samples as ex
from tests.integration import retrain_helpers as h
from virality_dev.fakeaws import MODEL_BUCKET
from virality_dev.synthetic import sample_records


@pytest.fixture
def model_bucket_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)


def _scraper_json(rows: int = 600, seed: int = 8) -> bytes:
    return json.dumps(ex.scraper_items(sample_records(rows, seed))).encode()


def test_a_scraper_export_under_its_sub_prefix_is_trained_and_promoted(s3, retrain_app, lambda_context,
                                                                      model_bucket_env) -> None:
    # Given an Apify-style scraper export uploaded under training-data/scraper/
    key = "training-data/scraper/2026-11 export.json"
    put = h.put_training(s3, key, _scraper_json())

    # When S3 notifies the retrain function
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key, version_id=put["VersionId"]))

    # Then the export was read through the scraper preset and published
    assert summary["status"] == "published" and summary["promoted"], summary
    assert summary["rows"]["train"] + summary["rows"]["test"] == 600
    artifact = h.load_published(s3, summary["version"])[0]
    assert artifact.data.format == "scraper:json"


def test_object_metadata_names_the_preset(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    recs = ex.research_api_records(sample_records(600, 9))
    key = "training-data/research/page-1.json"
    h.put_training(s3, key, ex.research_api_response(recs), metadata={"preset": "research-api"})
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))
    assert summary["status"] == "published", summary
    assert h.load_published(s3, summary["version"])[0].data.format == "research-api:json"


def test_the_same_export_without_a_preset_is_rejected_and_nothing_is_written(s3, retrain_app, lambda_context,
                                                                           model_bucket_env) -> None:
    key = "training-data/export.json"
    h.put_training(s3, key, _scraper_json())
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))
    assert summary["status"] == "failed" and summary["errorType"] == "DataValidationError"
    assert h.all_keys(s3) == set()


def test_an_unknown_preset_in_metadata_is_a_data_error(s3, retrain_app, lambda_context, model_bucket_env) -> None:
    key = "training-data/export.json"
    h.put_training(s3, key, _scraper_json(), metadata={"preset": "scrapr"})
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))      # not raised: a retry cannot fix it
    assert summary["status"] == "failed" and "'scrapr' is not a preset" in summary["error"]
    assert h.all_keys(s3) == set()


def test_malformed_cells_name_row_column_and_value_and_nothing_is_written(s3, retrain_app, lambda_context,
                                                                         model_bucket_env) -> None:
    items = ex.scraper_items(sample_records(600, 10))
    items[41]["diggCount"] = "1.2.3K"
    items[500]["createTimeISO"] = "last week"
    key = "training-data/scraper/bad.json"
    h.put_training(s3, key, json.dumps(items).encode())
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key))
    assert summary["status"] == "failed" and summary["errorType"] == "ImportValidationError"
    assert "row 41, column 'diggCount'" in summary["error"] and "'1.2.3K'" in summary["error"]
    assert "row 500, column 'createTimeISO'" in summary["error"] and "'last week'" in summary["error"]
    assert h.all_keys(s3) == set()
