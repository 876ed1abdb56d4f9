"""Training orchestration: data -> fitted softmax -> evaluation -> artifact."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from virality.artifact import (
    CalibrationInfo,
    ClassCounts,
    DataProvenance,
    L2Search,
    Metrics,
    ModelArtifact,
    SplitRows,
    TrainingInfo,
    trained_artifact,
    utc_now_iso,
)
from virality.data.datasets import FileBytes, load_training_data
from virality.data.readers import DataFormat
from virality.data.split import Split, TrainingSet
from virality.errors import ConfigurationError
from virality.ml.calibration import calibration_summary, fit_temperature, fold_temperature
from virality.ml.features import FEATURE_SETS, FeatureSet, feature_set_mask, hold_features
from virality.ml.metrics import EvaluationReport, bootstrap_intervals, evaluate
from virality.ml.model import ViralityModel
from virality.ml.model_selection import DEFAULT_FOLDS, DEFAULT_L2_GRID, out_of_fold_logits, search_l2
from virality.ml.softmax import class_weights, predict_labels, predict_proba
from virality.ml.solvers import ProgressCallback, Solver, fit, make_solver
from virality.ml.tiering import Tiering

#: Training rows above which the lambda search and the temperature run on a sample
#: (:attr:`TrainingConfig.search_rows`): at a million rows the held-out log-losses
#: of neighbouring lambdas are already far apart relative to their fold spread.
DEFAULT_SEARCH_ROWS = 1_000_000


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Everything that determines the fitted weights (besides the data).

    Attributes
    ----------
    optimizer : {"newton", "gd"}
        ``newton`` reaches the optimum; ``gd`` reproduces the original 200 epochs.
    l2 : float, "auto" or None
        ``lambda`` of ``(lambda/2)*||W||^2``; ``"auto"`` picks it by stratified
        k-fold cross-validation on the training split
        (:func:`virality.ml.model_selection.search_l2`). None (default) means
        ``"auto"`` for newton and the original's 0.001 for gd.
    calibration : {"temperature", "none"} or None
        ``temperature`` fits T on out-of-fold logits and publishes ``W/T, b/T``;
        ``none`` publishes the raw optimum. None (default) means temperature
        for newton and none for gd (which stays bit-faithful to the original).
    class_weight : {"none", "balanced"}
    seed : int
        Split seed (raw formats), fold seed, mulberry32 seed (``gd``) and bootstrap seed.
    test_fraction : float
        Share of each tier held out (raw formats).
    tol, max_iter : Newton stopping rule.
    tiering : Tiering or None
        Rule turning views into tiers (raw formats); default quintiles.
    feature_set : {"full", "prepublication"}
        ``prepublication`` learns only from what is known before posting.
    cv_folds : int
        Folds of the lambda search and of the out-of-fold logits.
    l2_grid : tuple of float
        Candidates of ``l2="auto"``.
    bootstrap : int
        Resamples of the test-split intervals (0 = none).
    search_rows : int or None
        Above this many training rows, the lambda search and the out-of-fold
        temperature run on a strided sample of this many rows (recorded as
        ``l2Search.sampleRows``); the fit at the chosen lambda always uses every
        row. Bounds their memory and time, so the ceiling of one retrain Lambda
        is set by the per-row cost of the fit alone (docs/spark.md, "Scaling").
        None: always every row.
    """

    optimizer: str = "newton"
    l2: float | str | None = None
    class_weight: str = "none"
    seed: int = 42
    test_fraction: float = 0.2
    tol: float = 1e-8
    max_iter: int = 100
    tiering: Tiering | None = field(default=None)
    calibration: str | None = None
    feature_set: FeatureSet = "full"
    cv_folds: int = DEFAULT_FOLDS
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    bootstrap: int = 1000
    search_rows: int | None = DEFAULT_SEARCH_ROWS

    def __post_init__(self) -> None:
        self.solver()           # the optimizer name and its options are checked where solvers are made
        if self.class_weight not in ("none", "balanced"):
            raise ConfigurationError(f"class weight must be 'none' or 'balanced', got {self.class_weight!r}")
        if isinstance(self.l2, str):
            if self.l2 != "auto":
                raise ConfigurationError(f"l2 must be a number >= 0 or 'auto', got {self.l2!r}")
            if self.optimizer == "gd":
                raise ConfigurationError("l2 'auto' needs the newton optimizer (gd runs the original's "
                                         "fixed 200 epochs, which do not reach each lambda's optimum)")
        elif self.l2 is not None and not (isinstance(self.l2, int | float) and self.l2 >= 0
                                          and math.isfinite(self.l2)):
            raise ConfigurationError(f"l2 must be >= 0, got {self.l2!r}")
        if self.calibration not in (None, "temperature", "none"):
            raise ConfigurationError(f"calibration must be 'temperature' or 'none', got {self.calibration!r}")
        if self.feature_set not in FEATURE_SETS:
            raise ConfigurationError(f"feature set must be one of {', '.join(FEATURE_SETS)}, "
                                     f"got {self.feature_set!r}")
        if self.feature_set != "full" and self.optimizer == "gd":
            raise ConfigurationError("gd reproduces the original, which uses all 15 features: "
                                     "use newton for the prepublication feature set")
        if not 0 < self.test_fraction < 1:
            raise ConfigurationError(f"test fraction must lie in (0, 1), got {self.test_fraction!r}")
        if self.cv_folds < 2:
            raise ConfigurationError(f"cv folds must be >= 2, got {self.cv_folds!r}")
        if self.bootstrap < 0:
            raise ConfigurationError(f"bootstrap resamples must be >= 0, got {self.bootstrap!r}")
        if self.search_rows is not None and self.search_rows < 2 * self.cv_folds:
            raise ConfigurationError(f"search rows must be >= {2 * self.cv_folds}, got {self.search_rows!r}")

    def solver(self) -> Solver:
        """The solver this configuration trains with (Newton: ``tol``, ``max_iter``; gd: ``seed``)."""
        if self.optimizer == "gd":
            return make_solver("gd", seed=self.seed, tol=self.tol)
        return make_solver(self.optimizer, tol=self.tol, max_iter=self.max_iter)

    @property
    def resolved_l2(self) -> float | str:
        """``"auto"`` or the fixed lambda, after the optimizer's default."""
        if self.l2 is None:
            return "auto" if self.optimizer == "newton" else DEFAULT_FIXED_L2
        return self.l2 if isinstance(self.l2, str) else float(self.l2)

    @property
    def resolved_calibration(self) -> str:
        if self.calibration is None:
            return "temperature" if self.optimizer == "newton" else "none"
        return self.calibration


#: The original's lambda: the default of gd, and what ``--l2 0.001`` reproduces.
DEFAULT_FIXED_L2 = 1e-3


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


def _embed_columns(coef: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Weights of shape (K, 15) from weights over the ``mask`` columns; held features get exactly 0."""
    full = np.zeros((coef.shape[0], mask.shape[0]))
    full[:, mask] = coef
    return full


#: Most row draws of the test-split bootstrap (resamples x test rows): 1,000 resamples up
#: to 2M test rows, fewer above (250 at 8M, a 40M-row file), at least MIN_BOOTSTRAP_RESAMPLES.
#: The draws are the time that grows fastest with the file; the count used is recorded in
#: every interval (``nResamples``), and intervals that narrow matter to 3 decimals at most.
BOOTSTRAP_DRAWS = 2_000_000_000
MIN_BOOTSTRAP_RESAMPLES = 200


def bootstrap_resamples(requested: int, n_test: int) -> int:
    """Resamples of the test-split intervals: ``requested``, capped by :data:`BOOTSTRAP_DRAWS`."""
    cap = max(MIN_BOOTSTRAP_RESAMPLES, BOOTSTRAP_DRAWS // max(1, n_test))
    return min(requested, cap)


def _search_sample(y: np.ndarray, search_rows: int | None) -> np.ndarray | None:
    """Rows of the lambda search and the temperature: every ``ceil(n / search_rows)``-th row,
    or None (all rows) when there are not more than ``search_rows`` or the sample misses a class."""
    n = y.shape[0]
    if search_rows is None or n <= search_rows:
        return None
    rows = np.arange(0, n, -(-n // search_rows))
    present = np.bincount(y) > 0
    return rows if np.array_equal(np.bincount(y[rows], minlength=present.size) > 0, present) else None


def train_model(ts: TrainingSet, config: TrainingConfig | None = None, *, model_version: str | None = None,
                progress: ProgressCallback | None = None) -> TrainingOutcome:
    """Fit, evaluate and package a model from a validated training set.

    Steps: (``l2="auto"``) lambda by cross-validation on the training split;
    the fit at that lambda on the whole training split; (``temperature``) T
    from out-of-fold logits, folded into the weights; metrics on the test
    split, which nothing above has seen.
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    l2_mode, calibration = config.resolved_l2, config.resolved_calibration
    mask = feature_set_mask(config.feature_set)
    X_train = ts.train.X if config.feature_set == "full" else hold_features(ts.train.X, config.feature_set)
    X_test = ts.test.X if config.feature_set == "full" else hold_features(ts.test.X, config.feature_set)
    X_fit, y = (X_train if mask.all() else X_train[:, mask]), ts.train.y   # no 96 B/row copy for "full"
    weights = class_weights(y, 5, config.class_weight)
    sample_weight = None if config.class_weight == "none" else weights[y]
    search = None
    coef_init = intercept_init = None
    rows = _search_sample(y, config.search_rows)
    X_search, y_search = (X_fit, y) if rows is None else (X_fit[rows], y[rows])
    sw_search = sample_weight if rows is None or sample_weight is None else sample_weight[rows]
    if l2_mode == "auto":
        search = search_l2(X_search, y_search, grid=config.l2_grid, n_folds=config.cv_folds, seed=config.seed,
                           sample_weight=sw_search)
        l2 = search.chosen
        coef_init, intercept_init = search.coef, search.intercept      # polish the search's own fit
    else:
        l2 = float(l2_mode)
    result = fit(X_fit, y, l2_reg_strength=l2, sample_weight=sample_weight, solver=config.solver(),
                 callback=progress, coef_init=coef_init, intercept_init=intercept_init)
    coef, intercept = _embed_columns(result.coef, mask), result.intercept
    calibration_info = None
    if calibration == "temperature":
        if search is not None:
            oof = search.oof_logits
        else:
            def fit_fold(tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                r = fit(X_search[tr], y_search[tr], l2_reg_strength=l2, solver=config.solver(),
                        sample_weight=None if sw_search is None else sw_search[tr])
                return r.coef, r.intercept

            oof, _ = out_of_fold_logits(X_search, y_search, fit_fold, n_folds=config.cv_folds, seed=config.seed)
        temperature = fit_temperature(oof, y_search)
        calibration_info = CalibrationInfo(method="temperature", temperature=temperature, source="cv",
                                           nSamples=int(y_search.shape[0]), fittedAt=utc_now_iso(),
                                           **calibration_summary(oof, y_search, temperature))
        coef, intercept = fold_temperature(coef, intercept, temperature)
    elif config.calibration == "none":
        calibration_info = CalibrationInfo(method="none", temperature=1.0, source="training")
    duration = time.perf_counter() - started
    train_pred = predict_labels(X_train, coef, intercept)
    proba = predict_proba(X_test, coef, intercept)
    report = evaluate(ts.test.y, proba)
    intervals = bootstrap_intervals(ts.test.y, proba, n_resamples=bootstrap_resamples(config.bootstrap,
                                                                                      ts.test.y.shape[0]),
                                    seed=config.seed) if config.bootstrap and ts.test.y.shape[0] else None
    l2_search = None
    if search is not None:
        l2_search = L2Search(grid=list(search.grid), meanLogLoss=search.mean_log_loss.tolist(),
                             stdLogLoss=search.std_log_loss.tolist(), chosen=search.chosen,
                             folds=search.n_folds, seed=search.seed,
                             durationSeconds=round(search.duration_seconds, 6),
                             sampleRows=None if rows is None else int(rows.size))
    artifact = trained_artifact(
        coef=coef, intercept=intercept, report=report, model_version=model_version,
        training=TrainingInfo(
            optimizer=result.optimizer, l2=l2, classWeight=config.class_weight,
            iterations=result.n_iter, finalObjective=result.objective, gradientNorm=result.grad_norm,
            converged=result.converged, tol=config.tol, seed=config.seed,
            testFraction=None if ts.format == "seed-json" else config.test_fraction,
            durationSeconds=round(duration, 6), l2Search=l2_search),
        metrics=Metrics(test=report, trainAccuracy=float(np.mean(train_pred == ts.train.y)),
                        testIntervals=intervals),
        data=DataProvenance(
            source=ts.source, sha256=ts.sha256, format=ts.format,
            rows=SplitRows(train=int(ts.train.X.shape[0]), test=int(ts.test.X.shape[0])),
            classCounts=ClassCounts(train=ts.train.class_counts(), test=ts.test.class_counts()),
            labelColumn=ts.label_column),
        preprocessing=ts.preprocessing, tiering=ts.tiering, feature_set=config.feature_set,
        calibration=calibration_info,
    )
    return TrainingOutcome(artifact, ViralityModel(artifact), report, ts)


def train_file(data: bytes | FileBytes, source: str, config: TrainingConfig | None = None, *,
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
        if t.l2Search:
            sr = t.l2Search
            lines += [f"l2 search       {sr.folds}-fold stratified CV (seed {sr.seed}) on the training split, "
                      f"chose l2 {sr.chosen:g}" + (f" in {sr.durationSeconds * 1000:.0f} ms" if sr.durationSeconds
                                                   else "")
                      + (f" (on a {sr.sampleRows}-row driver sample)" if sr.sampleRows is not None else ""),
                      "      l2   held-out log-loss (mean +- std)"]
            lines += [f"  {v:>6.0e}   {m:.4f} +- {sd:.4f}" + ("   <- chosen" if v == sr.chosen else "")
                      for v, m, sd in zip(sr.grid, sr.meanLogLoss, sr.stdLogLoss, strict=True)]
            if len(sr.grid) > 1 and sr.chosen in (sr.grid[0], sr.grid[-1]):
                lines.append("      (the chosen l2 is at the edge of the grid: a wider grid might do better)")
    if artifact.calibration:
        c = artifact.calibration
        if c.method == "temperature":
            lines.append(f"calibration     temperature T = {c.temperature:.4f} (fitted on {c.source}, "
                         f"{c.nSamples} out-of-fold rows): ECE {c.eceBefore:.4f} -> {c.eceAfter:.4f}, "
                         f"log-loss {c.logLossBefore:.4f} -> {c.logLossAfter:.4f}")
        else:
            lines.append("calibration     none (raw optimum published)")
    if artifact.featureSet:
        lines.append(f"feature set     {artifact.featureSet}")
    if artifact.data and artifact.data.labelColumn:
        lines.append(f"tiers from      {artifact.data.labelColumn}")
    if artifact.metrics:
        m = artifact.metrics
        r = m.test
        lines += ["",
                  f"test accuracy   {r.accuracy:.4f}   (majority baseline {r.majorityBaselineAccuracy:.4f}, "
                  f"train accuracy {m.trainAccuracy:.4f})",
                  f"macro-F1        {r.macroF1:.4f}",
                  f"log-loss        {r.logLoss:.4f}",
                  f"ECE (10 bins)   {r.ece:.4f}"]
        if r.brier is not None:
            lines += [f"classwise-ECE   {r.classwiseEce:.4f}",
                      f"MCE (10 bins)   {r.mce:.4f}",
                      f"Brier           {r.brier:.4f}"]
        if m.testIntervals:
            lines += ["", "bootstrap 95% intervals (test split, "
                      f"{next(iter(m.testIntervals.values())).nResamples} resamples)"]
            lines += [f"  {name:<10}  {iv.estimate:.4f}  [{iv.low:.4f}, {iv.high:.4f}]"
                      for name, iv in m.testIntervals.items()]
        if r.reliability:
            lines += ["", "reliability (top-tier confidence bin: rows, mean confidence, accuracy)"]
            lines += [f"  [{b.lower:.1f}, {b.upper:.1f})  {b.count:>7}  {b.meanConfidence:.3f}  {b.accuracy:.3f}"
                      for b in r.reliability if b.count]
        lines += ["", "tier  precision  recall     f1  support"]
        lines += [f"{c.tier:>4}  {c.precision:9.3f}  {c.recall:6.3f}  {c.f1:5.3f}  {c.support:7d}" for c in r.perClass]
        lines += ["", "confusion matrix (rows = actual tier, columns = predicted)",
                  "      " + "".join(f"{k:>7}" for k in range(1, 6))]
        lines += [f"{k + 1:>4}  " + "".join(f"{v:>7}" for v in row) for k, row in enumerate(r.confusionMatrix)]
    elif artifact.accuracy is not None:
        lines.append(f"test accuracy   {artifact.accuracy:.4f}")
    return "\n".join(lines) + "\n"
