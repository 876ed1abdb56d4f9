"""The retrain function trains with the CLI's defaults (issue 11): lambda by CV, temperature, feature set."""

from __future__ import annotations

import pytest

from tests.integration import retrain_helpers as h
from virality_dev.fakeaws import MODEL_BUCKET

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@pytest.fixture
def model_bucket_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)


def _retrain(s3, retrain_app, lambda_context, key: str, body: bytes):
    put = h.put_training(s3, key, body)
    summary = h.run_one(retrain_app, lambda_context, h.event_for(key, version_id=put["VersionId"]))
    assert summary["status"] == "published", summary
    return h.load_published(s3, summary["version"])[0]


def test_retrain_defaults_are_auto_lambda_and_temperature(s3, retrain_app, lambda_context, model_bucket_env):
    artifact = _retrain(s3, retrain_app, lambda_context, "training-data/q.csv", h.csv_bytes(700, seed=4))
    assert artifact.training.l2Search is not None
    assert artifact.training.l2 == artifact.training.l2Search.chosen
    assert artifact.calibration.method == "temperature" and artifact.calibration.source == "cv"
    assert artifact.featureSet == "full"


def test_retrain_settings_from_the_environment(s3, retrain_app, lambda_context, model_bucket_env, monkeypatch):
    monkeypatch.setenv("TRAIN_L2", "0.001")
    monkeypatch.setenv("TRAIN_CALIBRATION", "none")
    monkeypatch.setenv("TRAIN_FEATURE_SET", "prepublication")
    artifact = _retrain(s3, retrain_app, lambda_context, "training-data/p.csv", h.csv_bytes(700, seed=5))
    assert artifact.training.l2 == 0.001 and artifact.training.l2Search is None
    assert artifact.calibration.method == "none" and artifact.featureSet == "prepublication"
