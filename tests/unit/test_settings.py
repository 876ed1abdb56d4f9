"""Settings read from the environment (virality.config): what a deployment's variables may look like."""

from __future__ import annotations

from typing import Any

import pytest

from virality.config import AuditSettings, PredictSettings, RetrainSettings
from virality.errors import ConfigurationError


def test_values_are_read_from_text_with_surrounding_whitespace_ignored() -> None:
    s = PredictSettings.from_env({"MAX_BATCH": " 50\n", "MODEL_REFRESH_SECONDS": "\t30", "MODEL_PREFIX": " /v2 ",
                                  "MODEL_VERSION": "   "})
    assert (s.max_batch, s.model_refresh_seconds, s.model_prefix, s.model_version) == (50, 30.0, "v2/", None)
    assert AuditSettings.from_env({"AUTO_RECALIBRATE": "True"}).auto_recalibrate is True
    assert AuditSettings.from_env({"AUTO_RECALIBRATE": "false"}).auto_recalibrate is False
    assert RetrainSettings.from_env({"TRAIN_L2": "auto"}).train_l2 == "auto"
    assert RetrainSettings.from_env({"TRAIN_L2": "0.001"}).train_l2 == 0.001


@pytest.mark.parametrize(("settings", "env", "variable"), [
    (PredictSettings, {"MAX_BATCH": "0"}, "MAX_BATCH"),
    (PredictSettings, {"MAX_BATCH": "many"}, "MAX_BATCH"),
    (PredictSettings, {"MAX_BODY_BYTES": "12"}, "MAX_BODY_BYTES"),
    (PredictSettings, {"MODEL_REFRESH_SECONDS": "-1"}, "MODEL_REFRESH_SECONDS"),
    (PredictSettings, {"MODEL_REFRESH_SECONDS": "nan"}, "MODEL_REFRESH_SECONDS"),
    # bytes that are not UTF-8 reach os.environ as lone surrogates
    (PredictSettings, {"MAX_BATCH": "\udcff"}, "MAX_BATCH"),
    (PredictSettings, {"MODEL_PREFIX": "models\udcff"}, "MODEL_PREFIX"),
    (RetrainSettings, {"TRAIN_L2": "-1"}, "TRAIN_L2"),
    (RetrainSettings, {"TRAIN_L2": "nan"}, "TRAIN_L2"),
    (RetrainSettings, {"TRAIN_OPTIMIZER": "lbfgs"}, "TRAIN_OPTIMIZER"),
    (RetrainSettings, {"TRAIN_CALIBRATION": "isotonic"}, "TRAIN_CALIBRATION"),
    (RetrainSettings, {"PROMOTION_MAX_SHARP_DISAGREEMENT": "1.5"}, "PROMOTION_MAX_SHARP_DISAGREEMENT"),
    (RetrainSettings, {"TRAIN_FEATURE_SET": "\udcff"}, "TRAIN_FEATURE_SET"),
    (AuditSettings, {"AUTO_RECALIBRATE": "maybe"}, "AUTO_RECALIBRATE"),
    (AuditSettings, {"CALIBRATION_ECE_THRESHOLD": "1"}, "CALIBRATION_ECE_THRESHOLD"),
])
def test_an_invalid_variable_is_a_configuration_error_naming_it(settings: Any, env: dict[str, str],
                                                                 variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        settings.from_env(env)
