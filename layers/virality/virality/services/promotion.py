"""Publish -> gate -> record -> move the pointer: the one way a version reaches ``latest.json``.

Every caller that makes a new model version (the retrain function, the
recalibration audit, the Spark entry point) hands :func:`release` a trained
artifact and the split it was tested on. The steps are one function each,
over a :class:`PublishedVersion`: :func:`publish` -> :func:`gate_and_move_pointer`
(gate, record the decision, move the pointer) -> :func:`record_outcome`. The
protocol, all in the model store (:class:`virality.store.base.ModelStore`):

1. **Publish** write-once: report, then the reference holdout (the
   candidate's test split, at most ``HOLDOUT_MAX_ROWS`` rows), then the
   weights last (a version is visible only once it is complete). Weights
   that already exist are an earlier attempt's: they are the version, and
   are loaded instead of the ones passed in.
2. **Gate** the published version against the champion the pointer names
   (:func:`gate`), on the candidate's test split *and* on the champion's
   reference holdout (data the uploader of this file did not choose).
3. **Record** the decision write-once at ``<version>/decision-<n>.json``:
   promote or not, the ``previous`` version it replaces and the pointer
   ETag it was taken against. Attempt ``n`` is superseded only when the
   pointer provably did not move by it (the conditional write was refused
   or the pointer history never named it); the next attempt re-gates
   against the new champion.
4. **Move the pointer** with ``IfMatch=<that ETag>`` (``IfNoneMatch='*'``
   for the first model), then write the final outcome
   ``<version>/promotion.json`` once.

A call that finds a recorded decision *finishes* it instead of taking a new
one: so a retry after any failed write (report, holdout, weights, decision,
pointer, final record) converges on the same outcome, the pointer moves to
a version at most once per decision, and ``previous`` always names another
version (the pointer state the move replaced). The caller must own the
version id (it generated it, or holds the event's lease, see
:mod:`virality.services.retraining`): two concurrent callers with the same version id
stay safe (every record is write-once, the pointer is compare-and-swap) but
the protocol does not arbitrate between them.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from virality.artifact import ModelArtifact, utc_now_iso
from virality.data.split import Split
from virality.errors import (
    ArtifactValidationError,
    ModelNotFoundError,
    PointerConflictError,
    VersionExistsError,
)
from virality.ml.features import RawVideos
from virality.ml.metrics import EvaluationReport
from virality.ml.model import ViralityModel
from virality.services.training import evaluate_on, format_report
from virality.store.base import ModelStore, Pointer

FORCE_PROMOTE_METADATA = "force-promote"
MAX_POINTER_ATTEMPTS = 25
#: Rows of a version's test split kept as its reference holdout (a seeded sample beyond that).
HOLDOUT_MAX_ROWS = 5000
HOLDOUT_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    """Tolerances of the promotion gate.

    Attributes
    ----------
    f1_tolerance, logloss_tolerance : float
        How much macro-F1 the challenger may lose / log-loss it may gain
        against the champion, on the upload's test split and on the
        champion's reference holdout alike.
    max_sharp_disagreement : float
        Largest share of reference-holdout videos on which the challenger's
        tier may differ from the champion's by two tiers or more, unless the
        challenger has the higher macro-F1 on that holdout's labels.
    """

    f1_tolerance: float = 0.03
    logloss_tolerance: float = 0.05
    max_sharp_disagreement: float = 0.25


@dataclass(frozen=True, slots=True)
class Candidate:
    """A trained model ready to be released.

    Attributes
    ----------
    artifact : ModelArtifact
        Its ``modelVersion`` is the version id; the caller owns it.
    test : Split
        The split it was tested on: the gate's data, and (stored) the reference
        holdout while it is the champion. Raw splits keep their raw videos.
    report_text : str or None
        Human-readable report stored beside it (default: ``format_report``).
    """

    artifact: ModelArtifact
    test: Split
    report_text: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    """What :func:`release` did (or found done)."""

    version: str
    key: str
    sha256: str
    promoted: bool
    reason: str
    previous: str | None
    decision: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    finished_before: bool = False


@dataclass(frozen=True, slots=True)
class ReferenceCheck:
    """Challenger and champion on the champion's reference holdout."""

    new: EvaluationReport
    current: EvaluationReport
    sharp_disagreement: float
    rows: int


def headline(report: EvaluationReport) -> dict[str, float]:
    return {"accuracy": report.accuracy, "macroF1": report.macroF1, "logLoss": report.logLoss,
            "ece": report.ece, "majorityBaselineAccuracy": report.majorityBaselineAccuracy}


# --------------------------------------------------------------------------- the gate


def gate(new: EvaluationReport, current: EvaluationReport | None, policy: PromotionPolicy,
         *, force: bool = False, current_version: str | None = None,
         reference: ReferenceCheck | None = None) -> tuple[bool, str]:
    """Whether to promote, and why (both in words for logs and summaries).

    The challenger must not be worse than the champion beyond the tolerances
    on the upload's own test split, nor (when the champion has a reference
    holdout) on that holdout, and must not disagree sharply with it there.
    """
    if force:
        return True, f"forced by object metadata {FORCE_PROMOTE_METADATA}=true"
    if current is None:
        return True, "no valid current model"
    versus = current_version or "the current model"
    refused = _worse(new, current, policy, versus, "")
    if refused:
        return False, refused
    if reference is not None:
        refused = _worse(reference.new, reference.current, policy, versus,
                         f" on {versus}'s reference holdout ({reference.rows} rows)")
        if refused:
            return False, "reference holdout: " + refused
        # Sharp disagreement is tolerated only where the holdout's own labels side with the challenger
        # (a champion that was itself bad must not block its replacement).
        if (reference.sharp_disagreement > policy.max_sharp_disagreement
                and reference.new.macroF1 <= reference.current.macroF1):
            return False, (f"reference holdout: the tier differs from {versus}'s by 2 or more on "
                           f"{reference.sharp_disagreement:.1%} of its {reference.rows} videos; "
                           f"at most {policy.max_sharp_disagreement:.0%} allowed (force-promote to override)")
    held = "" if reference is None else f"; agrees with it on its reference holdout ({reference.rows} rows)"
    return True, (f"macro-F1 {new.macroF1:.4f} / log-loss {new.logLoss:.4f} not worse than {versus} "
                  f"({current.macroF1:.4f} / {current.logLoss:.4f}) beyond tolerance{held}")


def _worse(new: EvaluationReport, current: EvaluationReport, policy: PromotionPolicy, versus: str,
           where: str) -> str | None:
    f1_drop = current.macroF1 - new.macroF1
    ll_rise = new.logLoss - current.logLoss
    if f1_drop > policy.f1_tolerance:
        return (f"macro-F1 {new.macroF1:.4f} is {f1_drop:.4f} below {versus}'s {current.macroF1:.4f}{where}; "
                f"tolerance {policy.f1_tolerance}")
    if ll_rise > policy.logloss_tolerance:
        return (f"log-loss {new.logLoss:.4f} is {ll_rise:.4f} above {versus}'s {current.logLoss:.4f}{where}; "
                f"tolerance {policy.logloss_tolerance}")
    return None


def reference_check(new: ViralityModel, current: ViralityModel, holdout: Split) -> ReferenceCheck:
    """Both models on ``holdout`` (each featurising raw videos with its own caps)."""
    new_X = new.featurize(holdout.raw) if holdout.raw is not None else holdout.X
    cur_X = current.featurize(holdout.raw) if holdout.raw is not None else holdout.X
    new_tiers = new.predict_proba(new_X).argmax(axis=1)
    cur_tiers = current.predict_proba(cur_X).argmax(axis=1)
    sharp = float(np.mean(np.abs(new_tiers - cur_tiers) >= 2)) if len(new_tiers) else 0.0
    return ReferenceCheck(evaluate_on(new, holdout), evaluate_on(current, holdout), sharp, len(new_tiers))


# --------------------------------------------------------------------------- reference holdout (de)serialisation


def holdout_doc(split: Split, *, max_rows: int = HOLDOUT_MAX_ROWS, seed: int = 0) -> dict[str, Any]:
    """A JSON document of (a seeded sample of at most ``max_rows`` rows of) ``split``."""
    n = int(split.tiers.shape[0])
    index = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    doc: dict[str, Any] = {"schema": HOLDOUT_SCHEMA, "rows": int(index.shape[0]),
                           "tiers": split.tiers[index].astype(int).tolist()}
    if split.raw is not None:
        raw = split.raw.take(index)
        doc["raw"] = {name: [None if not math.isfinite(v) else v for v in getattr(raw, name).astype(float).tolist()]
                      for name in RawVideos.__slots__}
    else:
        doc["X"] = split.X[index].astype(float).tolist()
    return doc


def holdout_from_doc(doc: dict[str, Any], source: str) -> Split:
    """The split stored by :func:`holdout_doc`.

    Raises
    ------
    ArtifactValidationError
        The document is damaged (then the gate runs without a reference holdout).
    """
    try:
        tiers = np.asarray(doc["tiers"], dtype=np.int64)
        if tiers.ndim != 1 or tiers.size == 0 or tiers.min() < 1 or tiers.max() > 5:
            raise ValueError("tiers")
        if "raw" in doc:
            cols = {name: np.asarray([np.nan if v is None else v for v in doc["raw"][name]], dtype=np.float64)
                    for name in RawVideos.__slots__}
            if any(c.shape != tiers.shape for c in cols.values()):
                raise ValueError("raw column length")
            raw = RawVideos(**cols)
            return Split(np.zeros((tiers.size, 15)), tiers, raw)
        X = np.asarray(doc["X"], dtype=np.float64)
        if X.shape != (tiers.size, 15) or not np.isfinite(X).all():
            raise ValueError("X shape")
        return Split(X, tiers, None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactValidationError(f"{source}: invalid reference holdout ({exc})") from None


# --------------------------------------------------------------------------- the protocol


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """A release once its version is published and evaluated: what the gate and the records need.

    Attributes
    ----------
    store : ModelStore
    policy : PromotionPolicy
    force : bool
        Promote whatever the gate says (``force-promote`` object metadata).
    artifact : ModelArtifact
        The published one: an earlier attempt's bytes when it had published the version.
    key, sha256 : str
        Its weights key and the sha256 of their bytes.
    test : Split
        The candidate's test split (the gate's data).
    report : EvaluationReport
        ``artifact`` on ``test``.
    """

    store: ModelStore
    policy: PromotionPolicy
    force: bool
    artifact: ModelArtifact
    key: str
    sha256: str
    test: Split
    report: EvaluationReport

    @property
    def version(self) -> str:
        return self.artifact.modelVersion


def release(registry: ModelStore, candidate: Candidate, policy: PromotionPolicy, *,
            force: bool = False) -> ReleaseOutcome:
    """Publish ``candidate``, gate it, record the decision, move the pointer (module docstring).

    Idempotent per version: calling it again after any failure finishes the
    same decision; after success it only reads the final outcome back.

    Raises
    ------
    PointerConflictError
        The pointer kept moving under us for ``MAX_POINTER_ATTEMPTS`` attempts.
    botocore ClientError
        A genuine S3 failure; nothing is half-written and a retry finishes.
    """
    final = registry.read_promotion(candidate.artifact.modelVersion)
    if final is not None:
        return _outcome(final, finished_before=True)
    published = publish(registry, candidate, policy, force=force)
    decision = gate_and_move_pointer(published)
    return _outcome(record_outcome(published, decision), finished_before=False)


def publish(registry: ModelStore, candidate: Candidate, policy: PromotionPolicy, *,
            force: bool = False) -> PublishedVersion:
    """Step 1: write the version once (holdout, report, weights last) and evaluate what was published."""
    artifact = candidate.artifact
    version = artifact.modelVersion
    # The holdout goes before the weights: a visible version always has its reference holdout.
    registry.put_json_once(registry.holdout_key(version), holdout_doc(candidate.test))
    try:
        key, sha256 = registry.publish(artifact, candidate.report_text or format_report(artifact))
    except VersionExistsError:
        # An earlier attempt at this version published it: those bytes are the version.
        key = registry.weights_key(version)
        artifact, sha256 = registry.load_key(key)
    report = evaluate_on(ViralityModel(artifact), candidate.test)
    return PublishedVersion(registry, policy, force, artifact, key, sha256, candidate.test, report)


def gate_and_move_pointer(published: PublishedVersion) -> dict[str, Any]:
    """Steps 2-4: gate against the champion, record the decision, move the pointer; returns the decision applied.

    A recorded decision is finished first; a new one is taken only when it was
    superseded (the pointer moved, not by it), against the new champion.
    """
    doc = _latest_decision(published)
    if doc is not None and _apply(published, doc, resumed=True):
        return doc
    attempt = 0 if doc is None else int(doc["attempt"]) + 1
    champions: dict[str, tuple[EvaluationReport, ReferenceCheck | None] | None] = {}
    for tries in range(MAX_POINTER_ATTEMPTS):
        doc = _record_decision(published, _decide(published, attempt, champions))
        if _apply(published, doc, resumed=False):
            return doc
        attempt += 1
        # The pointer moved between our read and write: back off (jittered), then decide against the new champion.
        time.sleep(min(0.5, 0.01 * 2 ** tries) * random.random())
    raise PointerConflictError(f"could not move the pointer after {MAX_POINTER_ATTEMPTS} attempts")


def record_outcome(published: PublishedVersion, decision: dict[str, Any]) -> dict[str, Any]:
    """Step 5: the version's final outcome, written once (an earlier writer's stands)."""
    return published.store.record_promotion(published.version, {
        "version": published.version, "key": published.key, "sha256": published.sha256,
        "promoted": bool(decision["promote"]), "reason": decision["reason"], "previous": decision.get("previous"),
        "decision": decision["attempt"], "metrics": headline(published.report), "decidedAt": decision["decidedAt"],
        "finishedAt": utc_now_iso()})


def _outcome(final: dict[str, Any], *, finished_before: bool) -> ReleaseOutcome:
    return ReleaseOutcome(version=str(final["version"]), key=str(final["key"]), sha256=str(final["sha256"]),
                          promoted=bool(final["promoted"]), reason=str(final["reason"]),
                          previous=final.get("previous"), decision=final.get("decision"),
                          metrics=dict(final.get("metrics") or {}), finished_before=finished_before)


def _latest_decision(published: PublishedVersion) -> dict[str, Any] | None:
    store = published.store
    latest, n = None, 0
    while (doc := store.get_json(store.decision_key(published.version, n))) is not None:
        latest, n = doc, n + 1
    return latest


def _decide(published: PublishedVersion, attempt: int,
            champions: dict[str, tuple[EvaluationReport, ReferenceCheck | None] | None]) -> dict[str, Any]:
    """Decision ``attempt``: gate against the champion the pointer names now (``champions`` caches their scores)."""
    version = published.version
    state = published.store.read_pointer_lenient()
    etag = None if state is None else state.etag
    current = None if state is None else state.pointer
    if current is not None and current.version == version:
        # Pointed here by other means (a manual rollback) without a decision of ours: never gate against itself.
        decided = (False, "already the current model (pointed to without a gate decision); not re-gated")
    else:
        current_version = None if current is None else current.version
        if current is not None and current.version not in champions:
            champions[current.version] = _evaluate_champion(published, current)
        found = champions.get(current_version) if current_version else None
        decided = gate(published.report, None if found is None else found[0], published.policy, force=published.force,
                       current_version=current_version, reference=None if found is None else found[1])
    return {"version": version, "attempt": attempt, "promote": decided[0], "reason": decided[1],
            "previous": None if current is None or current.version == version else current.version,
            "previousEtag": etag, "force": published.force, "decidedAt": utc_now_iso(),
            "metrics": headline(published.report)}


def _record_decision(published: PublishedVersion, doc: dict[str, Any]) -> dict[str, Any]:
    """Write decision ``doc`` once; the decision that stands (the first writer's)."""
    key = published.store.decision_key(published.version, int(doc["attempt"]))
    if not published.store.put_json_once(key, doc):
        doc = published.store.get_json(key) or doc
    return doc


def _evaluate_champion(published: PublishedVersion,
                       current: Pointer) -> tuple[EvaluationReport, ReferenceCheck | None] | None:
    store = published.store
    try:
        champion_artifact, _ = store.load_key(current.key, current.sha256)
    except (ArtifactValidationError, ModelNotFoundError):
        return None          # a broken current model never blocks a good one
    champion = ViralityModel(champion_artifact)
    reference = None
    try:
        stored = store.get_json(store.holdout_key(current.version))
        if stored is not None:
            holdout = holdout_from_doc(stored, store.holdout_key(current.version))
            reference = reference_check(ViralityModel(published.artifact), champion, holdout)
    except ArtifactValidationError:
        reference = None     # a damaged holdout weakens the gate to the upload's split; logged by the caller
    return evaluate_on(champion, published.test), reference


def _apply(published: PublishedVersion, doc: dict[str, Any], *, resumed: bool) -> bool:
    """Carry out decision ``doc``; False when it was superseded (the pointer moved, not by it)."""
    if not doc["promote"]:
        return True
    store, version = published.store, published.version
    state = store.read_pointer_lenient()
    if state is not None and state.pointer is not None and state.pointer.version == version:
        return True                                    # moved already (by an earlier attempt of this decision)
    if (None if state is None else state.etag) == doc.get("previousEtag"):
        pointer = Pointer(version=version, key=published.key, sha256=published.sha256,
                          trainedAt=published.artifact.trainedAt, promotedAt=utc_now_iso(),
                          metrics=headline(published.report), previous=doc.get("previous"), reason=doc["reason"],
                          decision=int(doc["attempt"]))
        try:
            store.write_pointer(pointer, doc.get("previousEtag"))
            return True
        except PointerConflictError:
            state = store.read_pointer_lenient()
            if state is not None and state.pointer is not None and state.pointer.version == version:
                return True
            if not resumed:
                return False                           # refused atomically: this decision never applied
    if resumed:
        # Moved on since the decision: did an earlier attempt apply it (response lost, or the final
        # record failed) before somebody else replaced it? Then it is done; re-gating would roll back.
        return any(p.version == version and p.decision == doc["attempt"]
                   for p in store.pointer_history(since=doc["decidedAt"]))
    return False
