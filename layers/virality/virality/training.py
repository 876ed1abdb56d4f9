"""Training orchestration: data -> fitted softmax -> evaluation -> artifact."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import TIER_MIDPOINTS
from .artifact import (
    SCHEMA_VERSION,
    ClassCounts,
    DataProvenance,
    Metrics,
    ModelArtifact,
    SplitRows,
    TrainingInfo,
    new_version_id,
    utc_now_iso,
)
from .datasets import DataFormat, Split, TrainingSet, load_training_data
from .errors import ConfigurationError
from .features import FEATURE_NAMES
from .metrics import EvaluationReport, evaluate
from .model import ViralityModel
from .softmax import OPTIMIZERS, ProgressCallback, class_weights, fit, predict_labels, predict_proba
from .tiering import Tiering


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Everything that determines the fitted weights (besides the data).

    Attributes
    ----------
    optimizer : {"newton", "gd"}
        ``newton`` reaches the optimum; ``gd`` reproduces the original 200 epochs.
    l2 : float
        ``lambda`` of ``(lambda/2)*||W||^2``.
    class_weight : {"none", "balanced"}
    seed : int
        Split seed (raw formats) and mulberry32 seed (``gd``).
    test_fraction : float
        Share of each tier held out (raw formats).
    tol, max_iter : Newton stopping rule.
    tiering : Tiering or None
        Rule turning views into tiers (raw formats); default quintiles.
    """

    optimizer: str = "newton"
    l2: float = 1e-3
    class_weight: str = "none"
    seed: int = 42
    test_fraction: float = 0.2
    tol: float = 1e-8
    max_iter: int = 100
    tiering: Tiering | None = field(default=None)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigurationError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.class_weight not in ("none", "balanced"):
            raise ConfigurationError(f"class weight must be 'none' or 'balanced', got {self.class_weight!r}")
        if not self.l2 >= 0:
            raise ConfigurationError(f"l2 must be >= 0, got {self.l2!r}")
        if not 0 < self.test_fraction < 1:
            raise ConfigurationError(f"test fraction must lie in (0, 1), got {self.test_fraction!r}")


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    artifact: ModelArtifact
    model: ViralityModel
    test_report: EvaluationReport
    training_set: TrainingSet


def evaluate_on(model: ViralityModel, split: Split) -> EvaluationReport:
    """Metrics of ``model`` on ``split``.

    Raw splits are featurised with the model's *own* fitted caps, so two
    models trained on different files are compared fairly on the same videos.
    """
    X = model.featurize(split.raw) if split.raw is not None else split.X
    return evaluate(split.y, model.predict_proba(X))


def train_model(ts: TrainingSet, config: TrainingConfig | None = None, *, model_version: str | None = None,
                progress: ProgressCallback | None = None) -> TrainingOutcome:
    """Fit, evaluate and package a model from a validated training set."""
    config = config or TrainingConfig()
    started = time.perf_counter()
    weights = class_weights(ts.train.y, 5, config.class_weight)
    sample_weight = None if config.class_weight == "none" else weights[ts.train.y]
    result = fit(ts.train.X, ts.train.y, optimizer=config.optimizer, l2_reg_strength=config.l2,
                 sample_weight=sample_weight, tol=config.tol, max_iter=config.max_iter, seed=config.seed,
                 callback=progress)
    duration = time.perf_counter() - started
    train_pred = predict_labels(ts.train.X, result.coef, result.intercept)
    proba = predict_proba(ts.test.X, result.coef, result.intercept)
    report = evaluate(ts.test.y, proba)
    artifact = ModelArtifact(
        schemaVersion=SCHEMA_VERSION,
        modelVersion=model_version or new_version_id(),
        featureNames=list(FEATURE_NAMES),
        weights=result.coef.tolist(),
        biases=result.intercept.tolist(),
        tierMidpoints=list(TIER_MIDPOINTS),
        trainedAt=utc_now_iso(),
        accuracy=report.accuracy,
        confusionMatrix=report.confusion_matrix,
        training=TrainingInfo(
            optimizer=result.optimizer, l2=config.l2, classWeight=config.class_weight,
            iterations=result.n_iter, finalObjective=result.objective, gradientNorm=result.grad_norm,
            converged=result.converged, tol=config.tol, seed=config.seed,
            testFraction=None if ts.format == "seed-json" else config.test_fraction,
            durationSeconds=round(duration, 6)),
        metrics=Metrics(test=report, trainAccuracy=float(np.mean(train_pred == ts.train.y))),
        data=DataProvenance(
            source=ts.source, sha256=ts.sha256, format=ts.format,
            rows=SplitRows(train=int(ts.train.X.shape[0]), test=int(ts.test.X.shape[0])),
            classCounts=ClassCounts(train=ts.train.class_counts(), test=ts.test.class_counts())),
        preprocessing=ts.preprocessing,
        tiering=ts.tiering,
    )
    return TrainingOutcome(artifact, ViralityModel(artifact), report, ts)


def train_file(data: bytes, source: str, config: TrainingConfig | None = None, *,
               fmt: DataFormat | None = None, model_version: str | None = None,
               progress: ProgressCallback | None = None) -> TrainingOutcome:
    """Parse, validate, split and train from the bytes of a training file."""
    config = config or TrainingConfig()
    ts = load_training_data(data, source, fmt=fmt, test_fraction=config.test_fraction, seed=config.seed,
                            tiering=config.tiering)
    return train_model(ts, config, model_version=model_version, progress=progress)


def format_report(artifact: ModelArtifact) -> str:
    """A human-readable training report (also published beside each version)."""
    lines = [f"model version   {artifact.modelVersion}", f"trained at      {artifact.trainedAt}"]
    if artifact.data:
        d = artifact.data
        lines += [f"data            {d.source} ({d.format}, sha256 {d.sha256[:16]}...)",
                  f"rows            train {d.rows.train}, test {d.rows.test}",
                  f"train per tier  {d.classCounts.train}",
                  f"test per tier   {d.classCounts.test}"]
    if artifact.training:
        t = artifact.training
        lines += [f"optimizer       {t.optimizer} (l2 {t.l2:g}, class weight {t.classWeight})",
                  f"iterations      {t.iterations}, objective {t.finalObjective:.10f}, "
                  f"max|grad| {t.gradientNorm:.2e} ({'converged' if t.converged else 'NOT converged'})",
                  f"train time      {t.durationSeconds * 1000:.1f} ms"]
    if artifact.metrics:
        m = artifact.metrics
        r = m.test
        lines += ["",
                  f"test accuracy   {r.accuracy:.4f}   (majority baseline {r.majority_baseline_accuracy:.4f}, "
                  f"train accuracy {m.trainAccuracy:.4f})",
                  f"macro-F1        {r.macro_f1:.4f}",
                  f"log-loss        {r.log_loss:.4f}",
                  f"ECE (10 bins)   {r.ece:.4f}",
                  "",
                  "tier  precision  recall     f1  support"]
        lines += [f"{c.tier:>4}  {c.precision:9.3f}  {c.recall:6.3f}  {c.f1:5.3f}  {c.support:7d}" for c in r.per_class]
        lines += ["", "confusion matrix (rows = actual tier, columns = predicted)",
                  "      " + "".join(f"{k:>7}" for k in range(1, 6))]
        lines += [f"{k + 1:>4}  " + "".join(f"{v:>7}" for v in row) for k, row in enumerate(r.confusion_matrix)]
    elif artifact.accuracy is not None:
        lines.append(f"test accuracy   {artifact.accuracy:.4f}")
    return "\n".join(lines) + "\n"
