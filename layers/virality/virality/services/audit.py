"""Calibration audit: judge the served model on labelled outcomes that arrived later.

Outcomes
--------
Users upload the final outcome of videos the service scored to
``s3://<data bucket>/<OUTCOMES_PREFIX>...`` (default ``outcomes/``), in the
training formats: raw-record CSV or JSON Lines with the final ``views`` (or a
``labelViews`` column: the view count at the outcome horizon, used for the
label while the features come from the record's own counts), or the original
seed JSON (features and tiers as given). Optional ``predictedVersion`` and
``predictionId`` columns are counted, never required: the model is
deterministic, so the audit re-scores every version it judges on the rows.
Each model labels the rows with its *own* fitted tier cut points.

What it computes
----------------
For the promoted model (and the previous one, for comparison) on every
outcome object that arrived in the window: n, accuracy, macro-F1, log-loss,
Brier score, top-label ECE (10 equal-width bins) with a bootstrap 95%
interval, classwise-ECE, maximum calibration error, the reliability table,
and the population stability index of the outcomes' tier mix against the
model's training mix. Every figure comes from :mod:`virality.ml.metrics`, the
code the trainer uses.

Decision
--------
``insufficient-data`` below ``AUDIT_MIN_ROWS`` rows (no alarm, no
recalibration); ``alarm`` when the ECE exceeds the threshold; else ``ok``.
With ``AUTO_RECALIBRATE`` an alarm fits a temperature ``T`` on one half of
the rows (stratified, seeded) and checks it on the other half; if held-out
log-loss improves, the weights divided by ``T`` are published as a new
version through the registry's write-once publish, the retrain promotion
gate and the pointer protocol.

Idempotency
-----------
A *window* is the exact set of outcome objects read (key, ETag, LastModified).
The report of (window, version) is claimed write-once under
``audits/_windows/``: a second run over the same window writes no second
report. The recalibration of a window is claimed once (``_sources/``, as a
retrain claims its event), whatever the version: a second run publishes
nothing new, and a retry after a crash finishes the claimed version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from virality import NUM_CLASSES
from virality.artifact import CalibrationInfo, ModelArtifact, new_version_id, utc_now_iso
from virality.data.readers import DataFormat, detect_format, reader
from virality.data.split import Split, stratified_split
from virality.errors import (
    ArtifactValidationError,
    DataValidationError,
    ModelNotFoundError,
    TrainingDataTooLargeError,
    TrainingSourceNotFoundError,
    ViralityError,
)
from virality.ml.calibration import calibration_summary, fit_temperature, fold_temperature
from virality.ml.features import RawVideos
from virality.ml.metrics import EvaluationReport, evaluate, population_stability_index
from virality.ml.model import ViralityModel
from virality.ml.tiering import assign_tiers
from virality.store.base import AuditModelStore
from virality.store.s3 import read_source
from virality.structs import Record, document, replace

REPORT_SCHEMA = "virality-audit/1"
#: Optional outcome columns besides the raw-record ones (and ``labelViews``, read as in training).
PREDICTED_VERSION = "predictedVersion"
PREDICTION_ID = "predictionId"
RECALIBRATION_SEED = 20240605


class AuditError(ViralityError):
    """The audit cannot judge a model (e.g. raw outcomes but the model has no fitted tiering)."""


# --------------------------------------------------------------------------- outcome files


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The labelled rows of one outcome file.

    Attributes
    ----------
    source : str
    format : {"seed-json", "csv", "jsonl"}
    raw : RawVideos or None
        Raw formats: the records, featurised by each model with its own caps.
    label_views : ndarray of shape (n_samples,) or None
        Raw formats: ``labelViews`` when the file has that column (every row then), else ``views``.
    X, tiers : ndarray or None
        Seed JSON: features of shape (n_samples, 15) and tiers 1..5 as given.
    predicted_versions : list of (str or None), length n_samples
    prediction_ids : int
        Rows carrying a ``predictionId``.
    """

    source: str
    format: DataFormat
    raw: RawVideos | None = None
    label_views: np.ndarray | None = None
    X: np.ndarray | None = None
    tiers: np.ndarray | None = None
    predicted_versions: list[str | None] = field(default_factory=list)
    prediction_ids: int = 0

    def __len__(self) -> int:
        return len(self.raw) if self.raw is not None else int(self.X.shape[0])  # type: ignore[union-attr]


def _optional_text(value: object, row: int, column: str, source: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | int):
        raise DataValidationError("expected a string", row=row, column=column, location=source or None)
    return str(value).strip()


def _csv_extras(data: bytes, source: str) -> list[tuple[int, dict[str, str]]]:
    """(line, optional columns) of every data row, skipping blank rows as the CSV reader does."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header = [h.strip() for h in next(reader)]
    index = {c: header.index(c) for c in (PREDICTED_VERSION, PREDICTION_ID) if c in header}
    rows = []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        rows.append((reader.line_num, {c: row[i] for c, i in index.items()}))
    return rows


def _jsonl_extras(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line_no, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if line.strip():
            record = json.loads(line)
            rows.append((line_no, {c: record.get(c) for c in (PREDICTED_VERSION, PREDICTION_ID)}))
    return rows


def read_outcomes(data: bytes, source: str = "") -> Outcomes:
    """Parse one outcome file (seed JSON, CSV or JSON Lines).

    Raises
    ------
    DataValidationError
        Naming the row and column, as for training data; also for any file a
        reader chokes on (e.g. nesting too deep), so one bad file never stops
        the audit of the others.
    """
    try:
        return _read_outcomes(data, source)
    except DataValidationError:
        raise
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:
        raise DataValidationError(f"unreadable outcome file ({type(exc).__name__}: {str(exc)[:200]})",
                                  location=source or None) from None


def _read_outcomes(data: bytes, source: str) -> Outcomes:
    fmt = detect_format(data, source)
    fmt_reader = reader(fmt)
    if fmt_reader.read_splits is not None:
        parts = fmt_reader.read_splits(data, source)
        X = np.concatenate([p.X for p in parts])
        tiers = np.concatenate([p.tiers for p in parts])
        if X.shape[0] == 0:
            raise DataValidationError("no outcome rows", location=source or None)
        return Outcomes(source, fmt, X=X, tiers=tiers, predicted_versions=[None] * X.shape[0])
    assert fmt_reader.read_records is not None
    raw = fmt_reader.read_records(data, source)
    extras = _csv_extras(data, source) if fmt == "csv" else _jsonl_extras(data)
    if len(extras) != len(raw):       # both readers skip exactly the blank rows; anything else is a bug
        raise DataValidationError(f"read {len(raw)} records but {len(extras)} rows", location=source or None)
    # the training reader's label horizon, same rules
    label = None if fmt_reader.label_views is None else fmt_reader.label_views(data, source)
    if label is None:
        label = raw.views
    versions = [_optional_text(cols.get(PREDICTED_VERSION), line, PREDICTED_VERSION, source) for line, cols in extras]
    ids = sum(_optional_text(cols.get(PREDICTION_ID), line, PREDICTION_ID, source) is not None
              for line, cols in extras)
    return Outcomes(source, fmt, raw=raw, label_views=label, predicted_versions=versions, prediction_ids=ids)


def outcome_rows(model: ViralityModel, outcomes: Sequence[Outcomes]) -> tuple[np.ndarray, np.ndarray, RawVideos | None]:
    """Features (with the model's caps) and tiers (with the model's cut points) of all outcome rows.

    Returns
    -------
    X : ndarray of shape (n_samples, 15)
    tiers : ndarray of shape (n_samples,), 1..5
    raw : RawVideos or None
        The concatenated raw records when every file is raw (so another model
        can featurise them itself), else None.

    Raises
    ------
    AuditError
        Raw outcomes, but the model has no fitted tier cut points.
    """
    xs: list[np.ndarray] = []
    ts: list[np.ndarray] = []
    raws: list[RawVideos] = []
    for o in outcomes:
        if o.raw is None:
            assert o.X is not None and o.tiers is not None    # seed JSON outcomes carry both
            xs.append(o.X)
            ts.append(o.tiers)
            continue
        tiering = model.artifact.tiering
        if tiering is None or tiering.thresholds is None:
            raise AuditError(f"model {model.version} has no fitted tier cut points; "
                             f"raw outcomes ({o.source}) cannot be labelled for it")
        xs.append(model.featurize(o.raw))
        ts.append(assign_tiers(o.raw.views if o.label_views is None else o.label_views, tiering))
        raws.append(o.raw)
    if not xs:
        return np.zeros((0, len(model.artifact.featureNames))), np.zeros(0, dtype=np.int64), None
    raw = None
    if len(raws) == len(outcomes):
        raw = raws[0] if len(raws) == 1 else RawVideos(**{
            name: np.concatenate([getattr(r, name) for r in raws]) for name in RawVideos.__slots__})
    return np.concatenate(xs), np.concatenate(ts).astype(np.int64), raw


# --------------------------------------------------------------------------- figures


class ModelAudit(Record, frozen=True, kw_only=True):
    """Every figure of one model on the outcome rows."""

    modelVersion: str
    modelKey: str | None = None
    sha256: str | None = None
    rows: int
    accuracy: float | None = None
    macroF1: float | None = None
    logLoss: float | None = None
    brier: float | None = None
    ece: float | None = None
    eceInterval: dict[str, float] | None = None
    classwiseEce: float | None = None
    maxCalibrationError: float | None = None
    reliability: list[dict[str, Any]] | None = None
    intervals: dict[str, dict[str, Any]] | None = None
    confusionMatrix: list[list[int]] | None = None
    tierMix: dict[str, Any] | None = None
    predictionLog: dict[str, Any] | None = None
    error: str | None = None


def training_tier_mix(artifact: ModelArtifact) -> list[int] | None:
    """Rows per tier of the data the model was trained and tested on, or None when not recorded."""
    if artifact.data is None:
        return None
    counts = artifact.data.classCounts
    return [a + b for a, b in zip(counts.train, counts.test, strict=True)]


def audit_figures(model: ViralityModel, X: np.ndarray, tiers: np.ndarray, *, n_resamples: int = 1000,
                  seed: int = 0) -> tuple[ModelAudit, EvaluationReport | None]:
    """The figures of ``model`` on features ``X`` (n_samples, 15) and tiers (n_samples,) 1..5."""
    n = int(tiers.shape[0])
    if n == 0:
        return ModelAudit(modelVersion=model.version, rows=0), None
    y = tiers - 1
    report = evaluate(y, model.predict_proba(X), n_resamples=n_resamples, seed=seed)
    doc = msgspec.to_builtins(report)
    ece_iv = doc["intervals"]["ece"]
    mix = np.bincount(y, minlength=NUM_CLASSES)
    train_mix = training_tier_mix(model.artifact)
    tier_mix: dict[str, Any] = {"outcomes": mix.tolist(), "training": train_mix,
                                "psi": population_stability_index(np.asarray(train_mix), mix) if train_mix else None}
    return ModelAudit(
        modelVersion=model.version, rows=n, accuracy=report.accuracy, macroF1=report.macroF1,
        logLoss=report.logLoss, brier=report.brier, ece=report.ece,
        eceInterval={"low": ece_iv["low"], "high": ece_iv["high"], "level": ece_iv["level"],
                     "nResamples": ece_iv["nResamples"]},
        classwiseEce=report.classwiseEce, maxCalibrationError=report.mce, reliability=doc["reliability"],
        intervals=doc["intervals"], confusionMatrix=report.confusionMatrix, tierMix=tier_mix), report


def _prediction_log(outcomes: Sequence[Outcomes]) -> dict[str, Any]:
    versions = Counter(v for o in outcomes for v in o.predicted_versions if v is not None)
    return {"rowsWithPredictedVersion": sum(versions.values()), "byPredictedVersion": dict(sorted(versions.items())),
            "rowsWithPredictionId": sum(o.prediction_ids for o in outcomes)}


def judge(model: ViralityModel, outcomes: Sequence[Outcomes], *, n_resamples: int = 1000,
          seed: int = 0) -> tuple[ModelAudit, np.ndarray, np.ndarray, RawVideos | None]:
    """Re-score ``model`` on all outcome rows and compute its figures (an unlabellable model gets ``error``)."""
    try:
        X, tiers, raw = outcome_rows(model, outcomes)
    except AuditError as exc:
        return ModelAudit(modelVersion=model.version, rows=0, error=str(exc)), np.zeros((0, 15)), np.zeros(0, int), None
    figures, _ = audit_figures(model, X, tiers, n_resamples=n_resamples, seed=seed)
    return replace(figures, predictionLog=_prediction_log(outcomes)), X, tiers, raw


def decide(figures: ModelAudit, *, threshold: float, min_rows: int) -> dict[str, Any]:
    """``{"status": "insufficient-data" | "alarm" | "ok", "alarm": bool, "reason": str}``."""
    if figures.error:
        return {"status": "insufficient-data", "alarm": False, "reason": figures.error}
    if figures.rows < min_rows:
        return {"status": "insufficient-data", "alarm": False,
                "reason": f"{figures.rows} outcome rows; at least {min_rows} are needed to judge calibration"}
    assert figures.ece is not None
    if figures.ece > threshold:
        return {"status": "alarm", "alarm": True,
                "reason": f"ECE {figures.ece:.4f} is above the threshold {threshold}"}
    return {"status": "ok", "alarm": False, "reason": f"ECE {figures.ece:.4f} is within the threshold {threshold}"}


# --------------------------------------------------------------------------- temperature


def temperature_scaled(artifact: ModelArtifact, temperature: float, version: str,
                       calibration: CalibrationInfo | None = None) -> ModelArtifact:
    """A copy of ``artifact`` with ``W / T`` and ``b / T`` under a new version id (argmax unchanged)."""
    coef, intercept = fold_temperature(np.asarray(artifact.weights), np.asarray(artifact.biases), temperature)
    # Python floats from tolist(); document() checks every type when the copy is written
    return replace(artifact, modelVersion=version, trainedAt=utc_now_iso(), weights=coef.tolist(),
                   biases=intercept.tolist(), checksum=None, calibration=calibration)


def audit_calibration(parent: ModelArtifact, t: float, *, window: str, objects: Sequence[dict[str, Any]],
                      n_fit: int, ece: tuple[float, float], loss: tuple[float, float]) -> CalibrationInfo:
    """The artifact's calibration record of an audit recalibration by ``t``.

    ``temperature`` is the total factor from the raw optimum (the parent's own T times ``t``),
    as :class:`~virality.artifact.CalibrationInfo` defines it; provenance names every outcome object.
    """
    parent_t = parent.calibration.temperature if parent.calibration and parent.calibration.method == "temperature" \
        else 1.0
    provenance = {"parentVersion": parent.modelVersion, "window": window, "auditTemperature": repr(t),
                  "parentTemperature": repr(parent_t)}
    for o in objects:
        provenance[f"outcome:{o['key']}"] = f"versionId={o.get('versionId')} sha256={o.get('sha256')}"
    return CalibrationInfo(method="temperature", temperature=parent_t * t, source="audit", nSamples=n_fit,
                           eceBefore=ece[0], eceAfter=ece[1], logLossBefore=loss[0], logLossAfter=loss[1],
                           fittedAt=utc_now_iso(), provenance=provenance)


# --------------------------------------------------------------------------- the audit run


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """What the run does (the Lambda builds it from :class:`~virality.config.AuditSettings`)."""

    data_bucket: str
    outcomes_prefix: str = "outcomes/"
    window_days: float = 7.0
    min_rows: int = 200
    ece_threshold: float = 0.15
    auto_recalibrate: bool = False
    n_resamples: int = 1000
    max_outcome_bytes: int = 256 * 1024 * 1024
    f1_tolerance: float = 0.03
    logloss_tolerance: float = 0.05


class AuditSummary(Record, frozen=True, kw_only=True):
    """What one audit run did (returned by the handler and logged)."""

    status: str            # audited | duplicate | no-model
    modelVersion: str | None = None
    reportKey: str | None = None
    decision: dict[str, Any] | None = None
    rows: int = 0
    objects: int = 0
    skipped: int = 0
    ece: float | None = None
    eceUpper: float | None = None
    accuracy: float | None = None
    logLoss: float | None = None
    brier: float | None = None
    psi: float | None = None
    recalibration: dict[str, Any] | None = None


def _stamp(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def _iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_window(client: Any, config: AuditConfig, now: datetime) -> tuple[list[Outcomes], list[dict[str, Any]],
                                                                         list[dict[str, Any]], str]:
    """Read every outcome object of the window ``(now - days, now]``.

    Returns the parsed files, their provenance, the skipped files (with row
    and column) and the window id (the exact objects listed).
    """
    from virality.store.s3 import list_objects_between

    since = now - timedelta(days=config.window_days)
    listed = list_objects_between(client, config.data_bucket, config.outcomes_prefix, since, now)
    window_id = json.dumps({"bucket": config.data_bucket, "objects": [[o.key, o.etag, o.last_modified]
                                                                       for o in listed]}, separators=(",", ":"))
    parsed, read, skipped = [], [], []
    for item in listed:
        entry: dict[str, Any] = {"key": item.key, "etag": item.etag, "bytes": item.size,
                                 "lastModified": item.last_modified}
        try:
            source = read_source(client, config.data_bucket, item.key, None, config.max_outcome_bytes)
            entry["versionId"] = source.version_id
            entry["sha256"] = hashlib.sha256(source.body).hexdigest()
            outcomes = read_outcomes(source.body, f"s3://{config.data_bucket}/{item.key}")
        except (DataValidationError, TrainingDataTooLargeError, TrainingSourceNotFoundError) as exc:
            skipped.append(_skipped(entry, exc))
            continue
        parsed.append(outcomes)
        read.append({**entry, "format": outcomes.format, "rows": len(outcomes)})
    return parsed, read, skipped, hashlib.sha256(window_id.encode()).hexdigest()


def _load_previous(store: AuditModelStore, version: str | None) -> tuple[ViralityModel, str, str] | None:
    if not version:
        return None
    try:
        key = store.weights_key(version)
        artifact, sha = store.load_key(key)
        return ViralityModel(artifact), key, sha
    except (ArtifactValidationError, ModelNotFoundError):
        return None


def run_audit(store: AuditModelStore, client: Any, config: AuditConfig,
              now: datetime | None = None) -> tuple[AuditSummary, dict[str, Any] | None]:
    """Audit the promoted model on the outcome window ending at ``now`` and write the report once.

    Parameters
    ----------
    store : AuditModelStore
        The model registry (pointer, versions, reports).
    client : boto3 S3 client for the data bucket.
    now : the end of the window (the scheduled event's time; default: now).

    Returns
    -------
    summary, report : the summary and the report document (None when no model is published).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    outcomes, read, skipped, window = read_window(client, config, now)
    if config.auto_recalibrate:
        finish_pending_recalibration(store, outcomes, window, config)
    state = store.read_pointer()
    if state is None:
        return AuditSummary(status="no-model", decision={"status": "no-model", "alarm": False,
                                                         "reason": "no model is published"}), None
    pointer = state.pointer
    artifact, sha256 = store.load_key(pointer.key, pointer.sha256)
    model = ViralityModel(artifact)

    figures, X, tiers, raw = judge(model, outcomes, n_resamples=config.n_resamples)
    figures = replace(figures, modelKey=pointer.key, sha256=sha256)
    previous = _load_previous(store, pointer.previous)
    previous_figures = None
    if previous is not None:
        previous_figures = replace(judge(previous[0], outcomes, n_resamples=config.n_resamples)[0],
                                   modelKey=previous[1], sha256=previous[2])
    decision = decide(figures, threshold=config.ece_threshold, min_rows=config.min_rows)
    summary = AuditSummary(
        status="audited", modelVersion=model.version, decision=decision, rows=figures.rows, objects=len(read),
        skipped=len(skipped), ece=figures.ece, eceUpper=(figures.eceInterval or {}).get("high"),
        accuracy=figures.accuracy, logLoss=figures.logLoss, brier=figures.brier,
        psi=(figures.tierMix or {}).get("psi"))

    report_key = store.audit_report_key(_stamp(now), model.version)
    claimed = store.claim_audit_window(f"{window}:{model.version}", report_key)
    if claimed is not None:
        existing = store.read_audit_report(claimed)
        if existing is not None:
            return replace(summary, status="duplicate", reportKey=claimed, decision=existing.get("decision"),
                           recalibration=existing.get("recalibration")), existing
        report_key = claimed          # an earlier run claimed this window but died before its report

    recalibration = None
    if decision["alarm"] and config.auto_recalibrate:
        recalibration = recalibrate(store, model, X, tiers, raw, config, window=window, objects=read)
    report = {
        "schema": REPORT_SCHEMA, "auditedAt": utc_now_iso(),
        "window": {"start": _iso(now - timedelta(days=config.window_days)), "end": _iso(now),
                   "days": config.window_days, "id": window},
        "outcomes": {"bucket": config.data_bucket, "prefix": config.outcomes_prefix, "objects": read,
                     "skipped": skipped},
        "settings": {"eceThreshold": config.ece_threshold, "minRows": config.min_rows,
                     "autoRecalibrate": config.auto_recalibrate, "bootstrapResamples": config.n_resamples,
                     "bins": 10},
        "model": document(figures),
        "previous": document(previous_figures) if previous_figures else None,
        "decision": decision,
        "recalibration": recalibration,
    }
    from virality.errors import VersionExistsError

    try:
        store.write_audit_report(report_key, report)
    except VersionExistsError:
        existing = store.read_audit_report(report_key) or report
        return replace(summary, status="duplicate", reportKey=report_key,
                       recalibration=existing.get("recalibration")), existing
    return replace(summary, reportKey=report_key, recalibration=recalibration), report


def _recalibration_id(window: str) -> str:
    return f"audit-recalibration:{window}"


def _check_split(model: ViralityModel, outcomes: Sequence[Outcomes]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            Split]:
    X, tiers, raw = outcome_rows(model, outcomes)
    fit_idx, check_idx = stratified_split(tiers, 0.5, RECALIBRATION_SEED)
    return X, tiers, fit_idx, Split(X[check_idx], tiers[check_idx], raw.take(check_idx) if raw is not None else None)


def finish_pending_recalibration(store: AuditModelStore, outcomes: Sequence[Outcomes], window: str,
                                 config: AuditConfig) -> str | None:
    """Finish a recalibration of this window that an earlier run published but did not see through.

    A crash after the pointer moved (e.g. before ``promotion.json``) leaves the
    recalibrated version promoted, so the retry audits *it* and would never call
    :func:`recalibrate` again. The claim names the version; its held-out half is
    recomputed (same preprocessing and tier cut points as its parent, same seed)
    and :func:`virality.services.promotion.release` finishes the recorded decision.
    Returns the finished version, or None when nothing was pending.
    """
    from virality.services.promotion import Candidate, PromotionPolicy, release

    claim = store.get_json(store.claim_key(_recalibration_id(window)))
    if claim is None:
        return None
    version = str(claim["version"])
    if not store.version_exists(version) or store.read_promotion(version) is not None:
        return None
    artifact, _ = store.load_key(store.weights_key(version))
    *_, check = _check_split(ViralityModel(artifact), outcomes)
    release(store, Candidate(artifact, check), PromotionPolicy(config.f1_tolerance, config.logloss_tolerance))
    return version


def recalibrate(store: AuditModelStore, model: ViralityModel, X: np.ndarray, tiers: np.ndarray,
                raw: RawVideos | None, config: AuditConfig, *, window: str,
                objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit ``T`` on one half of the outcome rows, check it on the other, publish ``W/T`` if log-loss improves.

    Publishing goes through the retrain protocol: a write-once claim of the
    window (one recalibration per window, whatever the model), then
    :func:`virality.services.promotion.release` - the write-once version, the
    promotion gate on the held-out half and the conditional pointer write;
    a retry after a crash finishes the claimed version.
    """
    from virality.services.promotion import Candidate, PromotionPolicy, release

    fit_idx, check_idx = stratified_split(tiers, 0.5, RECALIBRATION_SEED)
    check = Split(X[check_idx], tiers[check_idx], raw.take(check_idx) if raw is not None else None)
    y = tiers - 1
    logits = X @ model.coef.T + model.intercept
    t = fit_temperature(logits[fit_idx], y[fit_idx])
    summary = calibration_summary(logits[check_idx], y[check_idx], t)
    ll_before, ll_after = summary["logLossBefore"], summary["logLossAfter"]
    held_out: dict[str, Any] = {"rows": {"fit": int(fit_idx.size), "check": int(check_idx.size)}, "temperature": t,
                "checkLogLossBefore": ll_before, "checkLogLossAfter": ll_after,
                "checkEceBefore": summary["eceBefore"], "checkEceAfter": summary["eceAfter"]}
    if not ll_after < ll_before:
        return {"status": "rejected", "reason": f"temperature {t:.4f} does not improve held-out log-loss "
                                                f"({ll_after:.4f} vs {ll_before:.4f})", **held_out}
    version = new_version_id()
    claimed = store.claim_source(_recalibration_id(window), version)
    if claimed is not None and store.version_exists(claimed):
        decision = store.read_promotion(claimed)
        if decision is not None:
            return {"status": "duplicate", "version": claimed, "promoted": bool(decision.get("promoted")),
                    "reason": f"this window was already recalibrated: {decision.get('reason')}", **held_out}
    version = claimed or version
    calibration = audit_calibration(model.artifact, t, window=window, objects=objects, n_fit=int(fit_idx.size),
                                    ece=(summary["eceBefore"], summary["eceAfter"]),
                                    loss=(ll_before, ll_after))
    artifact = temperature_scaled(model.artifact, t, version, calibration)
    policy = PromotionPolicy(config.f1_tolerance, config.logloss_tolerance)
    outcome = release(store, Candidate(artifact, check, _recalibration_text(artifact, calibration)), policy)
    return {"status": "duplicate" if outcome.finished_before else "published", "version": outcome.version,
            "modelKey": outcome.key, "promoted": outcome.promoted, "reason": outcome.reason, **held_out}


def _recalibration_text(artifact: ModelArtifact, c: CalibrationInfo) -> str:
    p = c.provenance or {}
    return (f"model version   {artifact.modelVersion}\n"
            f"recalibrated    by the calibration audit from {p.get('parentVersion')}\n"
            f"temperature     {float(p.get('auditTemperature', 'nan')):.6f} on top of the parent's "
            f"(total {c.temperature:.6f}; weights and biases divided by it)\n"
            f"held-out ECE    {c.eceBefore:.4f} -> {c.eceAfter:.4f}\n"
            f"held-out loss   {c.logLossBefore:.4f} -> {c.logLossAfter:.4f}\n"
            f"outcomes        {', '.join(k[len('outcome:'):] for k in p if k.startswith('outcome:'))}\n")


def _skipped(entry: dict[str, Any], exc: Exception) -> dict[str, Any]:
    return {**entry, "error": str(exc), "errorType": type(exc).__name__, "row": getattr(exc, "row", None),
            "column": getattr(exc, "column", None)}


def audit_files(model: ViralityModel, files: Sequence[tuple[str, bytes]], *, ece_threshold: float = 0.15,
                min_rows: int = 200, n_resamples: int = 1000) -> dict[str, Any]:
    """Audit ``model`` on local outcome files ``(name, bytes)``: the report document, no S3, no recalibration.

    Bad files are skipped and reported by row and column, as in the Lambda.
    """
    outcomes, read, skipped = [], [], []
    for name, body in files:
        entry: dict[str, Any] = {"key": name, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        try:
            parsed = read_outcomes(body, name)
        except DataValidationError as exc:
            skipped.append(_skipped(entry, exc))
            continue
        outcomes.append(parsed)
        read.append({**entry, "format": parsed.format, "rows": len(parsed)})
    figures, *_ = judge(model, outcomes, n_resamples=n_resamples)
    return {
        "schema": REPORT_SCHEMA, "auditedAt": utc_now_iso(), "window": None,
        "outcomes": {"bucket": None, "prefix": None, "objects": read, "skipped": skipped},
        "settings": {"eceThreshold": ece_threshold, "minRows": min_rows, "autoRecalibrate": False,
                     "bootstrapResamples": n_resamples, "bins": 10},
        "model": document(figures), "previous": None,
        "decision": decide(figures, threshold=ece_threshold, min_rows=min_rows), "recalibration": None,
    }


# --------------------------------------------------------------------------- text output


def reliability_diagram_text(reliability: Sequence[dict[str, Any]], width: int = 30) -> str:
    """The reliability table as text bars: ``#`` = accuracy, ``|`` marks the mean confidence."""
    lines = ["  bin          rows   conf    acc   gap   accuracy (#) vs confidence (|)"]
    for b in reliability:
        if not b["count"]:
            lines.append(f"  {b['lower']:.1f}-{b['upper']:.1f}  {0:>8}      -      -     -")
            continue
        conf, acc = b["meanConfidence"], b["accuracy"]
        bar = ["#" if i < round(acc * width) else " " for i in range(width)]
        bar[min(width - 1, round(conf * width))] = "|"
        lines.append(f"  {b['lower']:.1f}-{b['upper']:.1f}  {b['count']:>8}  {conf:.3f}  {acc:.3f} "
                     f"{acc - conf:+.2f}   {''.join(bar)}")
    return "\n".join(lines)


def format_audit(report: dict[str, Any]) -> str:
    """A human-readable audit: figures with intervals, the text reliability diagram, the decision."""
    m = report["model"]
    lines = [f"model           {m['modelVersion']}", f"outcome rows    {m['rows']}  "
             f"({len(report['outcomes']['objects'])} file(s) read, {len(report['outcomes']['skipped'])} skipped)"]
    for s in report["outcomes"]["skipped"]:
        lines.append(f"  skipped       {s['key']}: {s['error']}")
    if m.get("ece") is not None:
        iv = m.get("intervals") or {}

        def ci(name: str) -> str:
            return f"  [{iv[name]['low']:.4f}, {iv[name]['high']:.4f}]" if name in iv else ""

        mix = m.get("tierMix") or {}
        lines += [f"accuracy        {m['accuracy']:.4f}{ci('accuracy')}",
                  f"macro-F1        {m['macroF1']:.4f}{ci('macroF1')}",
                  f"log-loss        {m['logLoss']:.4f}{ci('logLoss')}",
                  f"Brier           {m['brier']:.4f}",
                  f"ECE (10 bins)   {m['ece']:.4f}  [{m['eceInterval']['low']:.4f}, {m['eceInterval']['high']:.4f}]"
                  f" 95% bootstrap",
                  f"classwise-ECE   {m['classwiseEce']:.4f}",
                  f"max cal. error  {m['maxCalibrationError']:.4f}",
                  f"tier mix        outcomes {mix.get('outcomes')} vs training {mix.get('training')}"
                  + (f"  PSI {mix['psi']:.4f}" if mix.get("psi") is not None else ""),
                  "", reliability_diagram_text(m["reliability"]), ""]
    prev = report.get("previous")
    if prev and prev.get("ece") is not None:
        lines.append(f"previous        {prev['modelVersion']}: accuracy {prev['accuracy']:.4f}, "
                     f"log-loss {prev['logLoss']:.4f}, ECE {prev['ece']:.4f}")
    d = report["decision"]
    lines.append(f"decision        {d['status'].upper()}: {d['reason']}")
    r = report.get("recalibration")
    if r:
        lines.append(f"recalibration   {r['status']}: T = {r.get('temperature', float('nan')):.4f}, held-out ECE "
                     f"{r.get('checkEceBefore', float('nan')):.4f} -> {r.get('checkEceAfter', float('nan')):.4f}, "
                     f"log-loss {r.get('checkLogLossBefore', float('nan')):.4f} -> "
                     f"{r.get('checkLogLossAfter', float('nan')):.4f}"
                     + (f"; {r['version']} ({'promoted' if r.get('promoted') else 'not promoted'})"
                        if r.get("version") else "") + f" - {r.get('reason', '')}")
    return "\n".join(lines) + "\n"
