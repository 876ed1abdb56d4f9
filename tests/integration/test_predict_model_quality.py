"""GET /model tells a client which question the served model answers (feature set) and its calibration."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import version_id
from virality.structs import replace
from virality_dev.events import api_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@pytest.fixture(scope="module")
def prepublication_artifact() -> Any:
    from virality.services.training import TrainingConfig, train_file
    from virality_dev.synthetic import sample_csv

    return train_file(sample_csv(400, 12), "pre.csv", TrainingConfig(feature_set="prepublication")).artifact


def test_model_info_shows_the_feature_set_and_calibration(store: Any, model_env: Any, invoke: Any,
                                                          prepublication_artifact: Any) -> None:
    # Given a promoted prepublication model (temperature-calibrated by default)
    store.base = prepublication_artifact
    store.promote(version_id(3))
    model_env()
    # When GET /model is asked
    result = invoke(api_event("GET", "/model"))
    # Then it names the feature set and the folded-in temperature
    assert result.status == 200, result.body
    info = result.body
    assert info["featureSet"] == "prepublication"
    assert info["calibration"]["method"] == "temperature"
    assert info["calibration"]["temperature"] == prepublication_artifact.calibration.temperature
    assert info["training"]["l2Search"]["chosen"] == info["training"]["l2"]


def test_model_info_of_an_artifact_without_the_new_fields_says_full(store: Any, model_env: Any,
                                                                     invoke: Any) -> None:
    store.promote(version_id(4), featureSet=None, calibration=None)
    model_env()
    info = invoke(api_event("GET", "/model")).body
    assert info["featureSet"] == "full" and info["calibration"] is None


def test_model_info_does_not_show_where_an_audit_calibration_came_from(store: Any, model_env: Any, invoke: Any,
                                                                       prepublication_artifact: Any) -> None:
    # Given a model recalibrated by the audit, whose calibration names the outcome objects it used
    calibration = replace(prepublication_artifact.calibration, source="audit",
                          provenance={"outcome:outcomes/2026-11/export.csv": "versionId=abc sha256=0f"})
    store.base = prepublication_artifact
    store.promote(version_id(5), calibration=calibration)
    model_env()
    # When GET /model is asked
    info = invoke(api_event("GET", "/model")).body
    # Then the temperature and its source are shown, the object keys are not
    assert info["calibration"]["source"] == "audit"
    assert "provenance" not in info["calibration"] and "outcomes/" not in str(info)
