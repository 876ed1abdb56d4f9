"""The model artifact ``ml-weights.json``: schema (msgspec Structs), checksum, load/dump.

The artifact keeps every field of the original TypeScript file (``weights``
5x15, ``biases`` 5, ``featureNames``, ``numClasses``, ``trainedAt``,
``accuracy`` = test accuracy, ``confusionMatrix``); ``logits = W x + b`` on
the 15 features in [0, 1]. Schema version 2 adds the version, tier
midpoints, training configuration, metrics, provenance, fitted
preprocessing/tiering and a ``checksum``: ``"sha256:"`` + the hex SHA-256
of the canonical JSON (sorted keys, no whitespace) of every other field.
A file in the original format (no ``schemaVersion``) still loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from virality import NUM_CLASSES, TIER_MIDPOINTS
from virality.errors import ArtifactValidationError
from virality.ml.features import FEATURE_NAMES, N_FEATURES, FeatureSet, Preprocessing
from virality.ml.metrics import EvaluationReport, Interval
from virality.ml.tiering import Tiering
from virality.safejson import NestingTooDeepError, check_depth
from virality.structs import Record, described, document, field_names, from_builtins

SCHEMA_VERSION = 2

#: Deepest nesting an artifact may have (a valid one nests 5 levels: metrics.test.confusionMatrix
#: rows); far below the interpreter's recursion limit, which json would otherwise hit.
MAX_ARTIFACT_DEPTH = 64

#: Largest |weight| or |bias| accepted. With x in [0, 1]^15 every logit then lies within
#: 16 * MAX_ABS_PARAMETER of 0, so ``z - max(z)``, ``exp`` and the normalisation are finite and
#: every probability and score a loaded model produces is a finite number (no NaN, no null).
#: Logit gaps past ~745 already give probabilities of exactly 0, so no useful model comes near it.
MAX_ABS_PARAMETER = 1e6


class L2Search(Record, frozen=True, kw_only=True):
    """Cross-validated choice of ``lambda`` (``--l2 auto``)."""

    grid: Annotated[list[float], described("lambda values tried, increasing")]
    meanLogLoss: Annotated[list[float], described("mean held-out log-loss over the folds, per grid value")]
    stdLogLoss: Annotated[list[float], described("standard deviation over the folds, per grid value")]
    chosen: Annotated[float, described("the grid value with the lowest mean held-out log-loss")]
    folds: Annotated[int, described("number of stratified folds")]
    seed: Annotated[int, described("seed of the fold assignment")]
    scoring: Annotated[str, described("the criterion minimised")] = "logLoss"
    durationSeconds: float | None = None
    sampleRows: Annotated[int | None, described(
        "training rows the search ran on when it ran on a subsample (Spark engine: a strided "
        "driver-side sample of the training split; NumPy engine: a strided sample above "
        "TrainingConfig.search_rows); None: the whole training split")] = None


class CalibrationInfo(Record, frozen=True, kw_only=True):
    """Post-hoc calibration folded into the published weights.

    For ``method == "temperature"`` the published ``weights``/``biases`` are the
    raw optimum divided by ``temperature``; ``logits = W x + b`` still holds.
    """

    method: Annotated[Literal["temperature", "none"], described("temperature scaling, or none")]
    temperature: Annotated[float, described("T; the published logits are the raw logits / T")] = 1.0
    source: Annotated[str, described('where T was fitted: "cv" (out-of-fold logits in training), "audit", ...')]
    nSamples: Annotated[int | None, described("rows T was fitted on")] = None
    eceBefore: Annotated[float | None, described("ECE (10 bins) of the raw logits on those rows")] = None
    eceAfter: Annotated[float | None, described("ECE (10 bins) after dividing by T")] = None
    logLossBefore: float | None = None
    logLossAfter: float | None = None
    fittedAt: Annotated[str | None, described("UTC ISO time T was fitted")] = None
    provenance: Annotated[dict[str, str] | None, described(
        "free-form origin of the calibration data (e.g. bucket/key, sha256, window)")] = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:        # also refuses NaN
            raise ValueError("calibration.temperature must be > 0")


class ClusterInfo(Record, frozen=True, kw_only=True):
    """Where a Spark training ran and what it cost (``training.cluster``; engine ``spark`` only)."""

    master: str
    sparkVersion: str
    executors: int
    defaultParallelism: int
    partitions: int
    passes: Annotated[int, described("full passes over the cached training blocks")]
    warmStartRows: Annotated[int, described("rows of the driver-side warm start (0: none)")] = 0
    quantiles: Annotated[str, described("exact | approximate (tier cut points and caps)")]
    quantileRelativeError: float = 0.0
    evaluationRows: Annotated[int, described("test rows evaluated (a hash sample beyond a limit)")]
    split: str


class TrainingInfo(Record, frozen=True, kw_only=True):
    optimizer: str
    l2: Annotated[float, described("lambda of (lambda/2)*||W||^2")]
    classWeight: str = "none"
    iterations: int
    finalObjective: float
    gradientNorm: float
    converged: bool
    tol: float
    seed: int
    testFraction: float | None = None
    durationSeconds: float
    l2Search: Annotated[L2Search | None, described("present when l2 was chosen by cross-validation")] = None
    engine: Annotated[str | None, described("spark when trained on Spark; absent: the NumPy trainer")] = None
    cluster: ClusterInfo | None = None


class SplitRows(Record, frozen=True, kw_only=True):
    train: int
    test: int


class ClassCounts(Record, frozen=True, kw_only=True):
    train: list[int]
    test: list[int]


class DataProvenance(Record, frozen=True, kw_only=True):
    source: str
    sha256: str
    format: str
    rows: SplitRows
    classCounts: ClassCounts
    labelColumn: Annotated[str | None, described('column the tiers came from: "views" or "labelViews"')] = None


class Metrics(Record, frozen=True, kw_only=True):
    test: EvaluationReport
    trainAccuracy: float
    testIntervals: Annotated[dict[str, Interval] | None, described(
        "seeded bootstrap 95% intervals of the test metrics (accuracy, macroF1, logLoss, ece)")] = None


class ModelArtifact(Record, frozen=True, kw_only=True):
    """Schema of ``ml-weights.json`` (both the original and schema version 2)."""

    schemaVersion: Annotated[int | None, described("2 for this format; absent in the original format")] = None
    modelVersion: Annotated[str, described("Version id, e.g. v20261129T101500123456Z-1a2b3c4d")]
    featureNames: list[str]
    numClasses: int = NUM_CLASSES
    weights: Annotated[list[list[float]], described("numClasses x 15; logits = W x + b")]
    biases: list[float]
    tierMidpoints: list[float] = msgspec.field(default_factory=lambda: list(TIER_MIDPOINTS))
    trainedAt: str
    accuracy: Annotated[float | None, described("test accuracy")] = None
    confusionMatrix: list[list[int]] | None = None
    training: TrainingInfo | None = None
    metrics: Metrics | None = None
    data: DataProvenance | None = None
    preprocessing: Preprocessing | None = None
    tiering: Tiering | None = None
    featureSet: Annotated[FeatureSet | None, described(
        'features the model uses; "prepublication" holds post-publication ones at their '
        'defaults (absent = "full")')] = None
    calibration: CalibrationInfo | None = None
    checksum: str | None = None

    def __post_init__(self) -> None:
        if self.numClasses != NUM_CLASSES:
            raise ValueError(f"numClasses must be {NUM_CLASSES}, got {self.numClasses}")
        if list(self.featureNames) != list(FEATURE_NAMES):
            raise ValueError(f"featureNames must be the 15 features in order: {', '.join(FEATURE_NAMES)}")
        if len(self.weights) != NUM_CLASSES or any(len(r) != N_FEATURES for r in self.weights):
            raise ValueError(f"weights must be {NUM_CLASSES} x {N_FEATURES}")
        if len(self.biases) != NUM_CLASSES:
            raise ValueError(f"biases must have {NUM_CLASSES} values")
        if not all(math.isfinite(v) for row in self.weights for v in row) or not all(
                math.isfinite(v) for v in self.biases):
            raise ValueError("weights and biases must be finite")
        if max(abs(v) for row in (*self.weights, self.biases) for v in row) > MAX_ABS_PARAMETER:
            raise ValueError(f"weights and biases must be at most {MAX_ABS_PARAMETER:g} in absolute value "
                             "(larger ones overflow the logits)")
        mids = self.tierMidpoints
        if len(mids) != NUM_CLASSES or not all(0 <= m <= 100 for m in mids) or sorted(mids) != list(mids):
            raise ValueError("tierMidpoints must be 5 increasing values in [0, 100]")

    @property
    def source_kind(self) -> str:
        return "legacy" if self.schemaVersion is None else "v2"


def canonical_checksum(doc: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``doc`` without its ``checksum`` key."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def new_version_id(now: datetime | None = None) -> str:
    """A version id that sorts in creation order: ``vYYYYmmddTHHMMSSffffffZ-<8 hex>``."""
    now = now or datetime.now(UTC)
    return f"v{now.astimezone(UTC):%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} is not allowed")


def load_artifact(data: bytes | str, *, source: str = "ml-weights.json") -> ModelArtifact:
    """Parse and validate an artifact.

    Raises
    ------
    ArtifactValidationError
        Invalid JSON (NaN/Infinity literals included), nesting deeper than
        :data:`MAX_ARTIFACT_DEPTH`, wrong shapes, non-finite values or
        parameters beyond :data:`MAX_ABS_PARAMETER`, wrong feature names or
        order, or (schema 2) a missing or mismatching checksum.
    """
    try:
        doc = check_depth(json.loads(data, parse_constant=_reject_constant), MAX_ARTIFACT_DEPTH)
    except NestingTooDeepError as exc:
        raise ArtifactValidationError(f"{source}: {exc}") from None
    except RecursionError:      # the parser itself gives up past the recursion limit
        raise ArtifactValidationError(f"{source}: nested more than {MAX_ARTIFACT_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactValidationError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ArtifactValidationError(f"{source}: expected a JSON object")
    legacy = "schemaVersion" not in doc
    if legacy:
        # The original file: no version or midpoints; name it by its content.
        raw = data.encode() if isinstance(data, str) else data
        doc = {"modelVersion": "legacy-" + hashlib.sha256(raw).hexdigest()[:12], **doc}
        known = set(field_names(ModelArtifact))
        doc = {k: v for k, v in doc.items() if k in known}
    elif doc.get("schemaVersion") != SCHEMA_VERSION:
        raise ArtifactValidationError(f"{source}: unsupported schemaVersion {doc.get('schemaVersion')!r}")
    if not legacy or "checksum" in doc:
        expected = doc.get("checksum")
        if not isinstance(expected, str):
            raise ArtifactValidationError(f"{source}: missing checksum")
        try:
            actual = canonical_checksum(doc)
        except ValueError:
            raise ArtifactValidationError(f"{source}: contains non-finite numbers") from None
        if actual != expected:
            raise ArtifactValidationError(f"{source}: checksum mismatch (corrupt or modified file)")
    try:
        return from_builtins(doc, ModelArtifact)
    except msgspec.ValidationError as exc:
        raise ArtifactValidationError(f"{source}: {exc}") from None


def artifact_document(artifact: ModelArtifact) -> dict[str, Any]:
    """The JSON document of ``artifact`` with a fresh checksum."""
    try:
        doc = document(artifact, exclude=frozenset({"checksum"}))   # built in code: types checked here
    except msgspec.ValidationError as exc:
        raise ArtifactValidationError(f"artifact {artifact.modelVersion}: {exc}") from None
    doc["checksum"] = canonical_checksum(doc)
    return doc


def dump_artifact(artifact: ModelArtifact) -> bytes:
    """Serialise with a fresh checksum; ``dump(load(dump(a))) == dump(a)`` byte for byte."""
    return (json.dumps(artifact_document(artifact), indent=2, allow_nan=False) + "\n").encode()


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trained_artifact(*, coef: Any, intercept: Any, report: EvaluationReport, training: TrainingInfo,
                     metrics: Metrics, data: DataProvenance, preprocessing: Preprocessing | None,
                     tiering: Tiering | None, feature_set: FeatureSet, calibration: CalibrationInfo | None,
                     model_version: str | None = None) -> ModelArtifact:
    """The artifact of a training run, whatever the engine (NumPy or Spark) that fitted it.

    Parameters
    ----------
    coef : ndarray of shape (5, 15)
    intercept : ndarray of shape (5,)
    report : EvaluationReport
        The test split's metrics (its accuracy and confusion matrix are the headline fields).
    training, metrics, data
        What the engine records about the fit, the evaluation and the rows.
    model_version : str, optional
        A fresh :func:`new_version_id` when not given.
    """
    return ModelArtifact(
        schemaVersion=SCHEMA_VERSION,
        modelVersion=model_version or new_version_id(),
        featureNames=list(FEATURE_NAMES),
        weights=coef.tolist(),
        biases=intercept.tolist(),
        tierMidpoints=list(TIER_MIDPOINTS),
        trainedAt=utc_now_iso(),
        accuracy=report.accuracy,
        confusionMatrix=report.confusionMatrix,
        training=training,
        metrics=metrics,
        data=data,
        preprocessing=preprocessing,
        tiering=tiering,
        featureSet=feature_set,
        calibration=calibration,
    )
