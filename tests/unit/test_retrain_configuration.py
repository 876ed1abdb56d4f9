"""RETRAIN settings -> TrainingConfig / PromotionPolicy, and how a failed retrain is classified."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from virality.config import RetrainSettings
from virality.errors import (
    DataValidationError,
    RetrainInProgressError,
    TrainingDataTooLargeError,
    TrainingSourceNotFoundError,
    retrain_failure_kind,
)
from virality.services.configuration import promotion_policy, training_config
from virality.services.promotion import PromotionPolicy
from virality.services.training import TrainingConfig


def test_defaults_map_to_the_services_defaults() -> None:
    settings = RetrainSettings.from_env({})
    assert training_config(settings) == TrainingConfig(l2="auto")
    assert promotion_policy(settings) == PromotionPolicy()


def test_every_training_and_promotion_setting_is_carried_over() -> None:
    settings = RetrainSettings.from_env({
        "TRAIN_OPTIMIZER": "newton", "TRAIN_L2": "0.01", "TRAIN_CLASS_WEIGHT": "balanced",
        "TRAIN_CALIBRATION": "none", "TRAIN_FEATURE_SET": "prepublication",
        "PROMOTION_F1_TOLERANCE": "0.1", "PROMOTION_LOGLOSS_TOLERANCE": "0.2",
        "PROMOTION_MAX_SHARP_DISAGREEMENT": "0.3"})
    assert training_config(settings) == TrainingConfig(optimizer="newton", l2=0.01, class_weight="balanced",
                                                       calibration="none", feature_set="prepublication")
    assert promotion_policy(settings) == PromotionPolicy(0.1, 0.2, 0.3)


def test_auto_l2_with_gd_means_gds_own_default() -> None:
    config = training_config(RetrainSettings.from_env({"TRAIN_OPTIMIZER": "gd", "TRAIN_L2": "auto"}))
    assert (config.optimizer, config.l2) == ("gd", None)


@pytest.mark.parametrize(("error", "kind"), [
    (DataValidationError("bad", row=3, column="views"), "data"),
    (TrainingDataTooLargeError("big"), "data"),
    (TrainingSourceNotFoundError("gone"), "data"),
    (RetrainInProgressError("busy"), "in_progress"),
    (ClientError({"Error": {"Code": "InternalError"}}, "PutObject"), "retryable"),
    (RuntimeError("a bug"), "retryable"),
])
def test_failures_are_classified_by_type(error: Exception, kind: str) -> None:
    assert retrain_failure_kind(error) == kind
