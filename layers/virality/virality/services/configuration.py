"""Handler settings -> the services' configuration objects, in one place.

:mod:`virality.config` reads the environment into settings models; the
objects the services take (:class:`~virality.services.training.TrainingConfig`,
:class:`~virality.services.promotion.PromotionPolicy`) live with the services.
The mapping sits here, beside the services, rather than in ``config.py``: the
shared kernel must not import the services (tests/unit/test_architecture.py),
and a handler then only calls these.
"""

from __future__ import annotations

from virality.config import RetrainSettings
from virality.services.promotion import PromotionPolicy
from virality.services.training import TrainingConfig


def training_config(settings: RetrainSettings) -> TrainingConfig:
    """The training options of ``TRAIN_*`` (``TRAIN_L2=auto`` with gd means gd's default lambda)."""
    return TrainingConfig(optimizer=settings.train_optimizer, l2=settings.training_l2(),
                          class_weight=settings.train_class_weight, calibration=settings.train_calibration,
                          feature_set=settings.train_feature_set)


def promotion_policy(settings: RetrainSettings) -> PromotionPolicy:
    """The gate's tolerances of ``PROMOTION_*``."""
    return PromotionPolicy(settings.promotion_f1_tolerance, settings.promotion_logloss_tolerance,
                           settings.promotion_max_sharp_disagreement)
