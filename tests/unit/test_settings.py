"""Settings read from the environment (virality.config): what a deployment's variables may look like."""

from __future__ import annotations

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


@pytest.mark.parametrize(("env", "variable"), [
    ({"MAX_BATCH": "0"}, "MAX_BATCH"),
    ({"MAX_BATCH": "many"}, "MAX_BATCH"),
    ({"MAX_BODY_BYTES": "12"}, "MAX_BODY_BYTES"),
    ({"MODEL_REFRESH_SECONDS": "-1"}, "MODEL_REFRESH_SECONDS"),
    ({"MODEL_REFRESH_SECONDS": "nan"}, "MODEL_REFRESH_SECONDS"),
    # bytes that are not UTF-8 reach os.environ as lone surrogates
    ({"MAX_BATCH": "\udcff"}, "MAX_BATCH"),
    ({"MODEL_PREFIX": "models\udcff"}, "MODEL_PREFIX"),
])
def test_an_invalid_variable_is_a_configuration_error_naming_it(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        PredictSettings.from_env(env)


@pytest.mark.parametrize(("env", "variable"), [
    ({"TRAIN_L2": "-1"}, "TRAIN_L2"),
    ({"TRAIN_L2": "nan"}, "TRAIN_L2"),
    ({"TRAIN_OPTIMIZER": "lbfgs"}, "TRAIN_OPTIMIZER"),
    ({"TRAIN_CALIBRATION": "isotonic"}, "TRAIN_CALIBRATION"),
    ({"PROMOTION_MAX_SHARP_DISAGREEMENT": "1.5"}, "PROMOTION_MAX_SHARP_DISAGREEMENT"),
    ({"TRAIN_FEATURE_SET": "\udcff"}, "TRAIN_FEATURE_SET"),
])
def test_retrain_settings_name_the_invalid_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        RetrainSettings.from_env(env)
