"""Settings read from the environment, once, at handler entry.

Each field of a settings model is read from the environment variable of the
same name in upper case (``model_bucket`` <- ``MODEL_BUCKET``). The template
(``template.yaml``) sets exactly these names; a test keeps the two in sync.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from virality.errors import ConfigurationError
from virality.ml.softmax import Optimizer

#: Where labelled outcomes are uploaded in the data bucket: audited, never trained on.
OUTCOMES_PREFIX = "outcomes/"


class _EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def env_names(cls) -> list[str]:
        """Environment variable names this model reads."""
        return [name.upper() for name in cls.model_fields]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from ``environ`` (default: ``os.environ``).

        Empty strings count as unset, so a template can pass ``""`` for an
        optional value.

        Raises
        ------
        ConfigurationError
            When a variable is present but invalid.
        """
        env = os.environ if environ is None else environ
        values = {
            name: env[name.upper()]
            for name in cls.model_fields
            if env.get(name.upper(), "") != ""
        }
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"invalid environment: {problems}") from None


def _prefix(value: str) -> str:
    value = value.lstrip("/")
    return value if value.endswith("/") or value == "" else value + "/"


class PredictSettings(_EnvSettings):
    """Configuration of the predict function."""

    model_bucket: str | None = Field(None, description="Bucket holding the model artifacts and pointer.")
    model_prefix: str = Field("models/", description="Key prefix of model versions and latest.json.")
    model_version: str | None = Field(None, description="Pin this version instead of following the pointer.")
    model_refresh_seconds: float = Field(0.0, ge=0, description="Warm containers re-check the pointer this often; 0 = never.")
    max_batch: int = Field(1000, ge=1, le=100_000, description="Largest number of instances in one request.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body (decoded).")

    _norm_prefix = field_validator("model_prefix")(_prefix)


class RetrainSettings(_EnvSettings):
    """Configuration of the retrain function."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)   # not built in the predict function

    model_bucket: str | None = Field(None, description="Bucket the models are written to (default: the event's bucket).")
    model_prefix: str = Field("models/", description="Key prefix of model versions and latest.json.")
    data_bucket: str | None = Field(None, description="Only events from this bucket are trained on (unset: any).")
    training_prefix: str = Field("training-data/", description="Only keys under this prefix are trained on.")
    max_training_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Refuse training objects larger than this.")
    train_optimizer: Optimizer = Field("newton", description="Optimizer: newton (optimum) or gd (seed-faithful).")
    train_l2: float | Literal["auto"] = Field(
        "auto", description="L2 strength lambda, or auto (cross-validated; newton only). gd uses 0.001 for auto.")
    train_class_weight: Literal["none", "balanced"] = Field("none", description="Class weighting of the loss.")
    train_calibration: Literal["temperature", "none"] | None = Field(
        None, description="temperature (default for newton) or none (default for gd, which stays seed-faithful).")
    train_feature_set: Literal["full", "prepublication"] = Field(
        "full", description="full, or prepublication (only what is known before posting).")
    promotion_f1_tolerance: float = Field(0.03, ge=0, description="New model may lose at most this much macro-F1.")
    promotion_logloss_tolerance: float = Field(0.05, ge=0, description="New model may gain at most this much log-loss.")
    promotion_max_sharp_disagreement: float = Field(
        0.25, ge=0, le=1, description="Largest share of the champion's reference holdout on which the new model's "
                                      "tier may differ from the champion's by 2 or more.")

    _norm_prefixes = field_validator("model_prefix", "training_prefix")(_prefix)

    @field_validator("train_l2")
    @classmethod
    def _l2(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not v >= 0:
            raise ValueError("must be a number >= 0 or auto")
        return v

    def training_l2(self) -> float | str | None:
        """``train_l2`` for :class:`virality.services.training.TrainingConfig`: auto means the optimizer's default."""
        return None if self.train_l2 == "auto" and self.train_optimizer == "gd" else self.train_l2

class AuditSettings(_EnvSettings):
    """Configuration of the calibration-audit function."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)   # not built in the predict function

    model_bucket: str | None = Field(None, description="Bucket holding the model artifacts, pointer and audit reports.")
    model_prefix: str = Field("models/", description="Key prefix of model versions, latest.json and audits/.")
    data_bucket: str | None = Field(None, description="Bucket the labelled outcomes are uploaded to.")
    outcomes_prefix: str = Field(OUTCOMES_PREFIX, description="Only keys under this prefix are read as outcomes.")
    audit_window_days: float = Field(7.0, gt=0, description="Audit the outcome objects that arrived in the last N days.")
    audit_min_rows: int = Field(200, ge=1, description="Below this many outcome rows the audit reports insufficient data.")
    calibration_ece_threshold: float = Field(0.15, gt=0, lt=1, description="ECE above this is a calibration alarm.")
    auto_recalibrate: bool = Field(False, description="Fit and publish a temperature-scaled version when the ECE alarms.")
    audit_bootstrap_resamples: int = Field(1000, ge=10, description="Bootstrap resamples of the ECE interval.")
    max_outcome_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Skip outcome objects larger than this.")
    promotion_f1_tolerance: float = Field(0.03, ge=0, description="Recalibrated model may lose at most this much macro-F1.")
    promotion_logloss_tolerance: float = Field(0.05, ge=0, description="Recalibrated model may gain at most this much log-loss.")

    _norm_prefixes = field_validator("model_prefix", "outcomes_prefix")(_prefix)


def l2_value(text: str) -> float | str:
    """``--l2`` on a command line: a number, or ``auto`` (cross-validated).

    Shared by ``virality train`` and the Spark entry point, so both accept the same spellings.
    """
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        import argparse  # only on this error path: the handlers never pay for it

        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
