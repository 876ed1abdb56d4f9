"""Settings read from the environment, once, at handler entry.

Each field of a settings model is read from the environment variable of the
same name in upper case (``model_bucket`` <- ``MODEL_BUCKET``). The template
(``template.yaml``) sets exactly these names; a test keeps the two in sync.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, Self

import msgspec

from virality.errors import ConfigurationError
from virality.ml.features import FeatureSet
from virality.ml.softmax import Optimizer
from virality.structs import described, field_names

#: Where labelled outcomes are uploaded in the data bucket: audited, never trained on.
OUTCOMES_PREFIX = "outcomes/"


class _EnvSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: Fields holding a key prefix, normalised by :func:`_prefix` (``"/models"`` -> ``"models/"``).
    _PREFIXES: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name in self._PREFIXES:
            msgspec.structs.force_setattr(self, name, _prefix(getattr(self, name)))

    @classmethod
    def env_names(cls) -> list[str]:
        """Environment variable names this model reads."""
        return [name.upper() for name in field_names(cls)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from ``environ`` (default: ``os.environ``).

        Surrounding whitespace is ignored and empty strings count as unset, so a
        template can pass ``""`` for an optional value. Numbers and booleans
        (``true``/``false``/``1``/``0``, any case) are read from their text.

        Raises
        ------
        ConfigurationError
            When a variable is present but invalid, naming it (the first one, when several are).
        """
        env = os.environ if environ is None else environ
        values = {}
        for name in field_names(cls):
            text = env.get(name.upper(), "").strip()
            if not text:
                continue
            try:
                text.encode()
            except UnicodeError:    # undecodable bytes in the environment arrive as lone surrogates
                raise ConfigurationError(f"invalid environment: {name.upper()}: not valid UTF-8 text") from None
            values[name] = text
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigurationError(f"invalid environment: {_env_problem(exc)}") from None


def _env_problem(exc: msgspec.ValidationError) -> str:
    # msgspec ends a field's error with " - at `$.<field>`"; __post_init__ errors name the variable themselves.
    message, at, path = str(exc).rpartition(" - at `$.")
    return f"{path.rstrip('`').upper()}: {message}" if at else str(exc)


def _prefix(value: str) -> str:
    value = value.lstrip("/")
    return value if value.endswith("/") or value == "" else value + "/"


class PredictSettings(_EnvSettings, frozen=True, kw_only=True):
    """Configuration of the predict function."""

    _PREFIXES = ("model_prefix",)

    model_bucket: Annotated[str | None, described("Bucket holding the model artifacts and pointer.")] = None
    model_prefix: Annotated[str, described("Key prefix of model versions and latest.json.")] = "models/"
    model_version: Annotated[str | None, described("Pin this version instead of following the pointer.")] = None
    model_refresh_seconds: Annotated[float, described(
        "Warm containers re-check the pointer this often; 0 = never.", ge=0)] = 0.0
    max_batch: Annotated[int, described("Largest number of instances in one request.", ge=1, le=100_000)] = 1000
    max_body_bytes: Annotated[int, described("Largest accepted request body (decoded).", ge=1024)] = 1_048_576


class RetrainSettings(_EnvSettings, frozen=True, kw_only=True):
    """Configuration of the retrain function."""

    _PREFIXES = ("model_prefix", "training_prefix")

    model_bucket: Annotated[str | None, described("Bucket the models are written to (default: the event's bucket).")] = None
    model_prefix: Annotated[str, described("Key prefix of model versions and latest.json.")] = "models/"
    data_bucket: Annotated[str | None, described("Only events from this bucket are trained on (unset: any).")] = None
    training_prefix: Annotated[str, described("Only keys under this prefix are trained on.")] = "training-data/"
    max_training_bytes: Annotated[int, described("Refuse training objects larger than this.", ge=1)] = 512 * 1024 * 1024
    train_optimizer: Annotated[Optimizer, described("Optimizer: newton (optimum) or gd (seed-faithful).")] = "newton"
    train_l2: Annotated[float | Literal["auto"], described(
        "L2 strength lambda, or auto (cross-validated; newton only). gd uses 0.001 for auto.")] = "auto"
    train_class_weight: Annotated[Literal["none", "balanced"], described("Class weighting of the loss.")] = "none"
    train_calibration: Annotated[Literal["temperature", "none"] | None, described(
        "temperature (default for newton) or none (default for gd, which stays seed-faithful).")] = None
    train_feature_set: Annotated[FeatureSet, described(
        "full, or prepublication (only what is known before posting).")] = "full"
    promotion_f1_tolerance: Annotated[float, described("New model may lose at most this much macro-F1.", ge=0)] = 0.03
    promotion_logloss_tolerance: Annotated[float, described("New model may gain at most this much log-loss.", ge=0)] = 0.05
    promotion_max_sharp_disagreement: Annotated[float, described(
        "Largest share of the champion's reference holdout on which the new model's "
        "tier may differ from the champion's by 2 or more.", ge=0, le=1)] = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.train_l2, float) and not self.train_l2 >= 0:     # also refuses NaN
            raise ValueError("TRAIN_L2: must be a number >= 0 or auto")

    def training_l2(self) -> float | str | None:
        """``train_l2`` for :class:`virality.services.training.TrainingConfig`: auto means the optimizer's default."""
        return None if self.train_l2 == "auto" and self.train_optimizer == "gd" else self.train_l2


class AuditSettings(_EnvSettings, frozen=True, kw_only=True):
    """Configuration of the calibration-audit function."""

    _PREFIXES = ("model_prefix", "outcomes_prefix")

    model_bucket: Annotated[str | None, described("Bucket holding the model artifacts, pointer and audit reports.")] = None
    model_prefix: Annotated[str, described("Key prefix of model versions, latest.json and audits/.")] = "models/"
    data_bucket: Annotated[str | None, described("Bucket the labelled outcomes are uploaded to.")] = None
    outcomes_prefix: Annotated[str, described("Only keys under this prefix are read as outcomes.")] = OUTCOMES_PREFIX
    audit_window_days: Annotated[float, described("Audit the outcome objects that arrived in the last N days.", gt=0)] = 7.0
    audit_min_rows: Annotated[int, described("Below this many outcome rows the audit reports insufficient data.", ge=1)] = 200
    calibration_ece_threshold: Annotated[float, described("ECE above this is a calibration alarm.", gt=0, lt=1)] = 0.15
    auto_recalibrate: Annotated[bool, described("Fit and publish a temperature-scaled version when the ECE alarms.")] = False
    audit_bootstrap_resamples: Annotated[int, described("Bootstrap resamples of the ECE interval.", ge=10)] = 1000
    max_outcome_bytes: Annotated[int, described("Skip outcome objects larger than this.", ge=1)] = 256 * 1024 * 1024
    promotion_f1_tolerance: Annotated[float, described("Recalibrated model may lose at most this much macro-F1.", ge=0)] = 0.03
    promotion_logloss_tolerance: Annotated[float, described(
        "Recalibrated model may gain at most this much log-loss.", ge=0)] = 0.05


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
