"""One training upload -> a published version and, if it passes the gate, the pointer.

Idempotency (at-least-once S3 delivery)
---------------------------------------
Each event names its source exactly: ``bucket/key#versionId`` (or ``#etag``
on an unversioned bucket). Before fitting, the retrain claims that source id
with a write-once object (``<prefix>_sources/<sha256>.json``, conditional
``IfNoneMatch='*'``) recording the version id it will publish. A second
delivery finds the claim: if that version exists, it returns it without
training; if not (the first attempt died before publishing), it trains again
and publishes under the *claimed* id, whose write-once put lets exactly one
attempt win. So one event yields at most one version.

Promotion gate
--------------
The pointer moves only when the new model is not worse than the current one
on the new file's test split (each model featurising the raw videos with its
own fitted caps): macro-F1 may drop by at most ``f1_tolerance`` and log-loss
rise by at most ``logloss_tolerance``. Metadata ``force-promote: true`` on
the uploaded object skips the gate. Pointer writes use the ETag read before
(optimistic concurrency) and are retried with the gate re-evaluated.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from .artifact import ModelArtifact, new_version_id, utc_now_iso
from .datasets import Split, load_training_data
from .errors import (
    ArtifactValidationError,
    ModelNotFoundError,
    PointerConflictError,
    VersionExistsError,
)
from .metrics import EvaluationReport
from .model import ViralityModel
from .registry import ModelRegistry, Pointer, SourceObject
from .training import TrainingConfig, evaluate_on, format_report, train_model

FORCE_PROMOTE_METADATA = "force-promote"
MAX_POINTER_ATTEMPTS = 25


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    f1_tolerance: float = 0.03
    logloss_tolerance: float = 0.05


class RetrainSummary(BaseModel):
    """What one record of a retrain event did (returned and logged)."""

    status: str = Field(description="published | duplicate | ignored | failed | submitted (to Spark)")
    sourceBucket: str | None = None
    sourceKey: str
    sourceVersion: str | None = None
    version: str | None = None
    modelKey: str | None = None
    promoted: bool = False
    reason: str
    rows: dict[str, int] | None = None
    metrics: dict[str, float] | None = None
    durationSeconds: float = 0.0
    error: str | None = None
    errorType: str | None = None
    jobRunId: str | None = Field(None, description="EMR Serverless job run training this upload (submitted)")


def _headline(report: EvaluationReport) -> dict[str, float]:
    return {"accuracy": report.accuracy, "macroF1": report.macro_f1, "logLoss": report.log_loss,
            "ece": report.ece, "majorityBaselineAccuracy": report.majority_baseline_accuracy}


def gate(new: EvaluationReport, current: EvaluationReport | None, policy: PromotionPolicy,
         *, force: bool = False, current_version: str | None = None) -> tuple[bool, str]:
    """Whether to promote, and why (both in words for logs and summaries)."""
    if force:
        return True, f"forced by object metadata {FORCE_PROMOTE_METADATA}=true"
    if current is None:
        return True, "no valid current model"
    f1_drop = current.macro_f1 - new.macro_f1
    ll_rise = new.log_loss - current.log_loss
    versus = current_version or "the current model"
    if f1_drop > policy.f1_tolerance:
        return False, (f"macro-F1 {new.macro_f1:.4f} is {f1_drop:.4f} below {versus}'s {current.macro_f1:.4f}; "
                       f"tolerance {policy.f1_tolerance}")
    if ll_rise > policy.logloss_tolerance:
        return False, (f"log-loss {new.log_loss:.4f} is {ll_rise:.4f} above {versus}'s {current.log_loss:.4f}; "
                       f"tolerance {policy.logloss_tolerance}")
    return True, (f"macro-F1 {new.macro_f1:.4f} / log-loss {new.log_loss:.4f} not worse than {versus} "
                  f"({current.macro_f1:.4f} / {current.log_loss:.4f}) beyond tolerance")


def _move_pointer(registry: ModelRegistry, artifact: ModelArtifact, key: str, sha256: str, test: Split,
                  report: EvaluationReport, policy: PromotionPolicy, force: bool) -> tuple[bool, str]:
    evaluated: dict[str, EvaluationReport | None] = {}
    for attempt in range(MAX_POINTER_ATTEMPTS):
        state = registry.read_pointer_lenient()
        current_report = None
        current_version = None
        if state is not None and state.pointer is not None:
            current_version = state.pointer.version
            if current_version not in evaluated:
                try:
                    current, _ = registry.load_key(state.pointer.key, state.pointer.sha256)
                    evaluated[current_version] = evaluate_on(ViralityModel(current), test)
                except (ArtifactValidationError, ModelNotFoundError):
                    evaluated[current_version] = None     # a broken current model never blocks a good one
            current_report = evaluated[current_version]
        promote, reason = gate(report, current_report, policy, force=force, current_version=current_version)
        if not promote:
            return False, reason
        pointer = Pointer(version=artifact.modelVersion, key=key, sha256=sha256, trainedAt=artifact.trainedAt,
                          promotedAt=utc_now_iso(), metrics=_headline(report), previous=current_version,
                          reason=reason)
        try:
            registry.write_pointer(pointer, state.etag if state is not None else None)
            return True, reason
        except PointerConflictError:
            # Someone promoted in between: back off (jittered) and re-run the gate against them.
            time.sleep(min(0.5, 0.01 * 2 ** attempt) * random.random())
    raise PointerConflictError(f"could not move the pointer after {MAX_POINTER_ATTEMPTS} attempts")


def retrain(registry: ModelRegistry, source: SourceObject, config: TrainingConfig,
            policy: PromotionPolicy) -> RetrainSummary:
    """Validate, train, publish and (gate permitting) promote one uploaded file.

    Raises
    ------
    DataValidationError
        The file is not valid training data (nothing is written).
    """
    started = time.perf_counter()
    source_id = f"{source.bucket}/{source.key}#{source.version_id or source.etag}"
    base: dict[str, Any] = {"sourceBucket": source.bucket, "sourceKey": source.key,
                            "sourceVersion": source.version_id}
    ts = load_training_data(source.body, f"s3://{source.bucket}/{source.key}", test_fraction=config.test_fraction,
                            seed=config.seed, tiering=config.tiering)
    rows = {"train": int(ts.train.X.shape[0]), "test": int(ts.test.X.shape[0])}
    version = new_version_id()
    force = source.metadata.get(FORCE_PROMOTE_METADATA, "").strip().lower() == "true"
    claimed = registry.claim_source(source_id, version)
    if claimed is not None:
        version = claimed          # an earlier delivery claimed this event: finish or report its work
        if registry.version_exists(version):
            decision = registry.read_promotion(version)
            if decision is not None:
                return RetrainSummary(status="duplicate", version=version, modelKey=registry.weights_key(version),
                                      promoted=bool(decision.get("promoted")),
                                      reason=f"this event was already processed: {decision.get('reason')}",
                                      rows=rows, durationSeconds=time.perf_counter() - started, **base)
            # Published but the gate never finished (e.g. the pointer write failed): finish it now.
            artifact, sha256 = registry.load_key(registry.weights_key(version))
            report = evaluate_on(ViralityModel(artifact), ts.test)
            return _promote(registry, artifact, registry.weights_key(version), sha256, ts.test, report, policy,
                            force, rows, started, base)
    outcome = train_model(ts, config, model_version=version)
    artifact = outcome.artifact
    try:
        key, sha256 = registry.publish(artifact, format_report(artifact))
    except VersionExistsError:
        return RetrainSummary(status="duplicate", version=version, modelKey=registry.weights_key(version),
                              reason="a concurrent delivery of this event published it", rows=rows,
                              durationSeconds=time.perf_counter() - started, **base)
    return _promote(registry, artifact, key, sha256, ts.test, outcome.test_report, policy, force, rows, started,
                    base)


def _promote(registry: ModelRegistry, artifact: ModelArtifact, key: str, sha256: str, test: Split,
             report: EvaluationReport, policy: PromotionPolicy, force: bool, rows: dict[str, int],
             started: float, base: dict[str, Any]) -> RetrainSummary:
    promoted, reason = _move_pointer(registry, artifact, key, sha256, test, report, policy, force)
    registry.record_promotion(artifact.modelVersion, {"promoted": promoted, "reason": reason,
                                                      "decidedAt": utc_now_iso()})
    return RetrainSummary(status="published", version=artifact.modelVersion, modelKey=key, promoted=promoted,
                          reason=reason, rows=rows, metrics=_headline(report),
                          durationSeconds=round(time.perf_counter() - started, 6), **base)
