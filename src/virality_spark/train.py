"""Training on Apache Spark: the same model, objective and artifact as :mod:`virality.services.training`.

Nothing here is a second model. Spark only moves data; every number that
matters comes from the library's own functions, run on Spark's Arrow batches:

* **records -> raw columns**: :class:`virality.ml.features.RawColumnsBuilder`
  validates each record (``mapInPandas``), exactly as the single-node readers do;
* **raw columns -> features, tiers**: :func:`virality.ml.features.extract_features`
  and :func:`virality.ml.tiering.assign_tiers`, per batch;
* **objective**: per block of rows, :meth:`virality.ml.softmax.SoftmaxObjective.chunk_sums` (the
  single-node objective's own data-term sums: weight, loss, gradient, Hessian), added up with
  ``treeAggregate``; the driver's :meth:`~virality.ml.softmax.SoftmaxObjective.finish` divides
  and adds the ``(l2/2)||W||^2`` term. The sum of the blocks' data terms *is* the data term of
  the whole training split, so Newton on it reaches the same optimum as :func:`virality.ml.solvers.fit`.

Fitted parameters come from the full data: tier cut points from every row,
caps from every training row, with Spark's exact ``percentile`` (the same
linear interpolation as ``np.quantile``) up to :data:`EXACT_QUANTILE_MAX_ROWS`
rows, ``percentile_approx`` beyond, its relative error recorded in the artifact.

The split is a hash of a stable row key (an id column when there is one, else
the whole record) with the seed, so reruns and re-partitioning give the same
rows on each side. Unlike the single-node split it is not stratified; with
millions of rows each tier's share differs from ``test_fraction`` by noise only.

Each Newton pass reads the cached feature blocks once and returns the loss,
gradient and Hessian together (on a cluster passes cost, not flops). Above
:data:`WARM_START_MIN_ROWS` training rows, the library's own
:func:`virality.ml.softmax.fit` first runs on a strided subsample on the driver,
so the full data needs about three passes.

Defaults carry over from :func:`virality.services.training.train_model`: ``l2="auto"``
(lambda by cross-validation) and temperature calibration run the library's own
:func:`virality.ml.model_selection.search_l2` (or
:func:`~virality.ml.model_selection.out_of_fold_logits` for a fixed lambda) and
:func:`virality.ml.calibration.fit_temperature` on that same strided driver-side
sample (:func:`driver_sample`, at most about :data:`WARM_START_ROWS` rows: all
of them on small data); the exact Spark Newton fit at the chosen lambda then
runs over every training row, and T is folded into its weights. The artifact
records the sample size (``training.l2Search.sampleRows``,
``calibration.nSamples`` and ``calibration.provenance``).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from virality.artifact import (
    CalibrationInfo,
    ClassCounts,
    ClusterInfo,
    DataProvenance,
    L2Search,
    Metrics,
    ModelArtifact,
    SplitRows,
    TrainingInfo,
    trained_artifact,
    utc_now_iso,
)
from virality.data.labels import LABEL_COLUMN
from virality.data.labels import _value as _label_value
from virality.data.readers.csv_records import REQUIRED_COLUMNS, _SlowPath, _vectorised_csv
from virality.data.split import Split
from virality.errors import ConfigurationError, DataValidationError
from virality.ml.calibration import calibration_summary, fit_temperature, fold_temperature
from virality.ml.features import (
    CAP_NAMES,
    N_FEATURES,
    Preprocessing,
    RawColumnsBuilder,
    RawVideos,
    _raw_ratios,
    extract_features,
    feature_set_mask,
)
from virality.ml.metrics import bootstrap_intervals, evaluate
from virality.ml.model import ViralityModel
from virality.ml.model_selection import out_of_fold_logits, search_l2
from virality.ml.softmax import ABSENT_CLASS_LOGIT_GAP, ChunkSums, SoftmaxObjective, predict_proba
from virality.ml.solvers import fit
from virality.ml.tiering import Tiering, assign_tiers
from virality.services.training import TrainingConfig, TrainingOutcome, _embed_columns
from virality.structs import replace

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

NUM_CLASSES = 5
RAW_SLOTS: tuple[str, ...] = RawVideos.__slots__
#: Columns whose value identifies a video; the first one present keys the split.
KEY_COLUMNS = ("videoId", "video_id", "id")
#: Up to this many rows, quantiles are exact (Spark ``percentile``: it holds one
#: count per distinct value); beyond, ``percentile_approx`` with this accuracy.
EXACT_QUANTILE_MAX_ROWS = 50_000_000
APPROX_QUANTILE_ACCURACY = 100_000
#: Test rows evaluated on the driver (metrics, promotion gate); a deterministic
#: strided sample beyond, recorded as ``evaluationRows`` in the artifact.
EVAL_MAX_ROWS = 1_000_000
WARM_START_MIN_ROWS = 500_000
#: Rows of the driver-side sample (warm start, lambda search, temperature): at most this plus one per block.
WARM_START_ROWS = 200_000
SPLIT_BUCKETS = 1_000_000


def spark_session(master: str | None = "local[*]", app_name: str = "virality-train") -> SparkSession:
    """A SparkSession for training (UTC timestamps, Arrow on, the driver's Python on executors).

    ``master=None`` keeps the master spark-submit gave (EMR Serverless).
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    if master is not None and master.startswith("local"):
        # Local executors must run the very interpreter (and so the very library) of the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # A few hundred shuffle partitions suit a cluster, not one machine's cores.
        builder = builder.config("spark.sql.shuffle.partitions", str(max(2, os.cpu_count() or 2)))
        # local: the driver JVM is the executor and holds the cached blocks (spilled to disk beyond)
        builder = builder.config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
    return (builder
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())


# --------------------------------------------------------------------------- reading


def detect_spark_format(path: str) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from the path's suffix."""
    lower = path.lower().rstrip("/")
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".parquet", ".pq")) or lower.endswith("/"):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    raise ConfigurationError(f"cannot tell the format of {path!r}: name it .csv, .jsonl or .parquet, "
                             "or pass the format")


def read_records(spark: SparkSession, path: str, fmt: str | None = None) -> DataFrame:
    """The raw records as a DataFrame. CSV and JSON values stay strings: the library parses them."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fmt = fmt or detect_spark_format(path)
    if fmt == "csv":
        # One record per line keeps a big file splittable; multi-line captions belong in JSON Lines/Parquet.
        df = spark.read.options(header=True, inferSchema=False, mode="PERMISSIVE", escape='"').csv(path)
    elif fmt == "jsonl":
        df = spark.read.options(primitivesAsString=True, mode="PERMISSIVE").json(path)
    elif fmt == "parquet":
        df = spark.read.parquet(path)
    else:
        raise ConfigurationError(f"format must be csv, jsonl or parquet, got {fmt!r}")
    # Timestamps/dates as ISO text in UTC (the session time zone): parse_posted_at reads them.
    casts = [F.col(f.name).cast("string").alias(f.name) if isinstance(f.dataType, T.TimestampType | T.DateType
                                                                        | T.TimestampNTZType)
             else F.col(f.name) for f in df.schema.fields]
    return df.select(*casts)


def source_sha256(path: str, client_factory: Any = None, *, version_id: str | None = None,
                  etag: str | None = None) -> str:
    """SHA-256 of the bytes of the training source, streamed on the driver (never held in memory).

    The digest :func:`virality.data.datasets.load_training_data` records for the
    same file, so both engines' artifacts name the same data. A local file
    is read in chunks; an ``s3://`` object through
    :func:`virality.store.s3.object_sha256`. A local directory of parts (what
    Spark also reads) hashes its data files' bytes, concatenated in path
    order (names starting with ``_`` or ``.``, which Spark skips, are skipped).

    ``version_id`` (or ``etag``) pins the exact S3 object that was identified.

    Raises
    ------
    ConfigurationError
        An S3 prefix (one object is one training source) or a path that does not exist.
    """
    import hashlib

    from virality.store.s3 import HASH_CHUNK_BYTES, default_client_factory, object_sha256

    if path.startswith(("s3://", "s3a://")):
        bucket, _, key = path.split("://", 1)[1].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ConfigurationError(f"train one S3 object, not a prefix: {path!r}")
        return object_sha256((client_factory or default_client_factory)(), bucket, key, version_id=version_id,
                             etag=etag)
    local = path[len("file://"):] if path.startswith("file://") else path
    if os.path.isdir(local):
        files = []
        for top, dirs, names in os.walk(local):
            dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]     # _temporary/, .staging/
            files += [os.path.join(top, f) for f in names if not f.startswith(("_", "."))]
        files.sort()
    elif os.path.isfile(local):
        files = [local]
    else:
        raise ConfigurationError(f"no such training file: {path!r}")
    digest = hashlib.sha256()
    for name in files:
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _batch_labels(batch: Any) -> tuple[np.ndarray | None, dict[int, str]]:
    """``labelViews`` of a batch (None without the column) and the message of each bad cell, by position.

    The values and rules of :func:`virality.data.labels.read_label_views`: every
    record needs one, parsed by :func:`~virality.ml.features.parse_number`,
    finite and never negative.
    """
    if LABEL_COLUMN not in batch.columns:
        return None, {}
    import pandas as pd

    cells = batch[LABEL_COLUMN]
    # Plain numbers in bulk; anything else (blank, junk, < 0, inf) through the library's own rule.
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    errors: dict[int, str] = {}
    for i in np.flatnonzero(~(np.isfinite(values) & (values >= 0))):
        cell = cells.iloc[i]
        if isinstance(cell, float) and math.isnan(cell):
            cell = None
        try:
            values[i] = _label_value(cell, 0, "")
        except DataValidationError as exc:
            errors[int(i)] = exc.message
    return values, errors


def _validate_batches(location: str):
    """``mapInPandas`` function: records -> the RawVideos columns and the label views, or one error row per bad record.

    ``_label`` is the outcome the tiers come from: ``labelViews`` when the
    source has that column (the label horizon, :mod:`virality.data.labels`), else ``views``.
    """
    import pandas as pd

    def frame(keys: list[str], raw: RawVideos, label: np.ndarray | None) -> pd.DataFrame:
        return pd.DataFrame({"_key": pd.Series(keys, dtype=object),
                             "_errColumn": pd.Series([None] * len(keys), dtype=object),
                             "_errMessage": pd.Series([None] * len(keys), dtype=object),
                             **{name: getattr(raw, name) for name in RAW_SLOTS},
                             "_label": raw.views if label is None else label})

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            keys = batch["_key"].astype(str).tolist()
            labels, label_errors = _batch_labels(batch)
            fast = None if label_errors else _vectorised(batch)
            if fast is not None:
                yield frame(keys, fast, labels)
                continue
            records = batch.drop(columns=["_key"]).to_dict("records")
            builder = RawColumnsBuilder(location=location)
            ok: list[str] = []
            ok_rows: list[int] = []
            errors: list[tuple[str, str | None, str]] = []
            for i, (key, record) in enumerate(zip(keys, records, strict=True)):
                corrupt = record.pop("_corrupt_record", None)
                if isinstance(corrupt, str):
                    errors.append((key, None, f"not a JSON object: {corrupt[:80]!r}"))
                    continue
                if i in label_errors:
                    errors.append((key, LABEL_COLUMN, label_errors[i]))
                    continue
                # Missing values (null, NaN) count as absent, as in a CSV blank or an omitted JSON key.
                clean = {k: v for k, v in record.items()
                         if v is not None and not (isinstance(v, float) and math.isnan(v))}
                try:
                    builder.add(clean)
                except DataValidationError as exc:
                    errors.append((key, exc.column, exc.message))
                    continue
                ok.append(key)
                ok_rows.append(i)
            raw = builder.build()
            out = frame(ok, raw, None if labels is None else labels[ok_rows])
            if errors:
                # object columns: pandas 3's Arrow-backed strings do not survive concat into Spark 4.0
                bad = pd.DataFrame({"_key": pd.Series([e[0] for e in errors], dtype=object),
                                    "_errColumn": pd.Series([e[1] for e in errors], dtype=object),
                                    "_errMessage": pd.Series([e[2] for e in errors], dtype=object),
                                    **{name: np.full(len(errors), np.nan) for name in RAW_SLOTS},
                                    "_label": np.full(len(errors), np.nan)})
                out = pd.concat([out, bad], ignore_index=True)
            yield out

    return run


def _vectorised(batch: Any) -> RawVideos | None:
    """The CSV reader's own bulk conversion of a batch, or None when something is odd (then: row by row).

    Cells become the text a CSV would hold (blank for missing), so CSV, JSON
    strings and typed Parquet columns all take the reader's vectorised path;
    anything it refuses goes through :class:`RawColumnsBuilder`, which names
    the record and column.
    """
    if "_corrupt_record" in batch.columns and batch["_corrupt_record"].notna().any():
        return None
    if not all(c in batch.columns for c in REQUIRED_COLUMNS) or not (
            "captionLength" in batch.columns or "caption" in batch.columns):
        return None
    wanted = [c for c in (*REQUIRED_COLUMNS, "followers", "captionLength", "caption") if c in batch.columns]
    try:
        columns = {c: [_cell(v) for v in batch[c].tolist()] for c in wanted}
        return _vectorised_csv(columns)
    except _SlowPath:
        return None


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))       # a Parquet double of a count, as the CSV would spell it
    return str(value)


def validated_raw(df: DataFrame, source: str, seed: int, test_fraction: float) -> tuple[DataFrame, str | None]:
    """Raw columns with a stable key, the outcome ``_label``, the split flag ``_test`` and per-record errors (persisted).

    Returns the DataFrame and the name of the key column (None: a hash of the
    whole record). Check it with :func:`first_error` before use.
    """
    from pyspark.sql import functions as F

    key_col = next((c for c in KEY_COLUMNS if c in df.columns), None)
    data_cols = [c for c in df.columns if c != "_corrupt_record"]
    if not data_cols:
        raise DataValidationError("no columns", location=source)
    key = (F.col(key_col).cast("string") if key_col
           else F.xxhash64(*[F.col(c) for c in data_cols]).cast("string"))
    keyed = df.withColumn("_key", key)
    schema = ("_key string, _errColumn string, _errMessage string, "
              + ", ".join(f"{name} double" for name in RAW_SLOTS) + ", _label double")
    buckets = F.pmod(F.xxhash64(F.lit(seed), F.col("_key")), F.lit(SPLIT_BUCKETS))
    checked = (keyed.mapInPandas(_validate_batches(source), schema)
               .withColumn("_test", buckets < F.lit(round(test_fraction * SPLIT_BUCKETS)))
               .persist())
    return checked, key_col


def _one_row(df: DataFrame) -> Any:
    """The first row of ``df``; aggregates (and the queries this is used for) always have one."""
    row = df.first()
    if row is None:
        raise RuntimeError("expected a row from Spark, got none")
    return row


def first_error(checked: DataFrame, source: str, key_col: str | None) -> DataValidationError:
    """The error of one bad record of ``checked``, naming its key and column."""
    from pyspark.sql import functions as F

    bad = _one_row(checked.where(F.col("_errMessage").isNotNull()).select("_key", "_errColumn", "_errMessage"))
    what = f"{key_col} {bad['_key']}" if key_col else "a record"
    return DataValidationError(f"{what}: {bad['_errMessage']}", column=bad["_errColumn"], location=source)


# --------------------------------------------------------------------------- fitted parameters


@dataclass(frozen=True, slots=True)
class QuantileMethod:
    exact: bool
    relative_error: float

    @property
    def label(self) -> str:
        return "exact" if self.exact else "approximate"


def _quantiles(df: DataFrame, columns: list[str], probs: list[float], method: QuantileMethod
               ) -> dict[str, list[float | None]]:
    """Per column, the quantiles ``probs`` over its non-null values (None when it has none)."""
    from pyspark.sql import functions as F

    aggs = [(F.percentile(F.col(c), probs) if method.exact
             else F.percentile_approx(F.col(c), probs, APPROX_QUANTILE_ACCURACY)).alias(c) for c in columns]
    row = _one_row(df.agg(*aggs))
    return {c: (list(row[c]) if row[c] is not None else [None] * len(probs)) for c in columns}


def fit_tiering_spark(raw: DataFrame, rule: Tiering | None, method: QuantileMethod, column: str = "_label"
                      ) -> Tiering:
    """:func:`virality.ml.tiering.fit_tiering` over every row of ``raw``'s outcome ``column`` (views or labelViews)."""
    rule = rule or Tiering()
    if rule.method == "thresholds":
        if rule.thresholds is None:
            raise ConfigurationError("tiering method 'thresholds' needs four thresholds")
        return rule
    cuts = _quantiles(raw, [column], list(rule.quantiles), method)[column]
    return replace(rule, thresholds=tuple(float(cast(float, c)) for c in cuts))


def _ratio_batches(batches):
    """``mapInPandas``: raw columns -> the library's raw ratios (non-finite ones become NaN)."""
    import pandas as pd

    for batch in batches:
        raw = RawVideos(**{name: batch[name].to_numpy(dtype=np.float64) for name in RAW_SLOTS})
        yield pd.DataFrame({name: np.where(np.isfinite(v), v, np.nan) for name, v in _raw_ratios(raw).items()})


def fit_preprocessing_spark(train: DataFrame, method: QuantileMethod, quantile: float = 0.99) -> Preprocessing:
    """:func:`virality.ml.features.fit_preprocessing` over every training row."""
    from pyspark.sql import functions as F

    names = list(CAP_NAMES)
    ratios = train.select(*RAW_SLOTS).mapInPandas(_ratio_batches, ", ".join(f"{n} double" for n in names))
    # fit_preprocessing ignores non-finite ratios; Spark's aggregates ignore nulls (not NaN).
    ratios = ratios.select(*[F.when(F.isnan(n), None).otherwise(F.col(n)).alias(n) for n in names])
    if method.exact:
        # Spark's exact percentile keeps a count per distinct value (~70 bytes each, boxed): one column per
        # aggregation, from cached ratios, bounds that to one column's worth (all 8 at once ran a 2 GB
        # local driver out of memory at 4M training rows).
        ratios = ratios.persist()
        row: dict[str, Any] = {}
        for n in names:
            one = _one_row(ratios.agg(F.percentile(F.col(n), quantile).alias("q"), F.max(n).alias("max")))
            row[f"q_{n}"], row[f"max_{n}"] = one["q"], one["max"]
        ratios.unpersist()
    else:
        row = _one_row(ratios.agg(
            *[F.percentile_approx(F.col(n), quantile, APPROX_QUANTILE_ACCURACY).alias(f"q_{n}") for n in names],
            *[F.max(n).alias(f"max_{n}") for n in names])).asDict()
    defaults = Preprocessing()
    caps: dict[str, float] = {}
    for name in names:
        cap = 0.0 if row[f"q_{name}"] is None else float(row[f"q_{name}"])
        if not cap > 0 and row[f"max_{name}"] is not None:
            cap = float(row[f"max_{name}"])
        caps[name] = cap if cap > 0 else getattr(defaults, name)
    return Preprocessing(quantile=quantile, **caps)


# --------------------------------------------------------------------------- feature blocks


def _feature_blocks(prep: Preprocessing, tiering: Tiering):
    """``mapInPandas``: raw columns -> one row per (batch, split) holding the feature block as bytes."""
    import pandas as pd

    def run(batches):
        for batch in batches:
            raw = RawVideos(**{name: batch[name].to_numpy(dtype=np.float64) for name in RAW_SLOTS})
            X = extract_features(raw, prep)
            # tiers from the outcome column (labelViews at the label horizon, else views), as datasets does
            y = (assign_tiers(batch["_label"].to_numpy(dtype=np.float64), tiering) - 1).astype(np.int8)
            test = batch["_test"].to_numpy(dtype=bool)
            rows = []
            for flag in (False, True):
                mask = test == flag
                if mask.any():
                    rows.append((flag, int(mask.sum()), np.ascontiguousarray(X[mask]).tobytes(),
                                 y[mask].tobytes()))
            yield pd.DataFrame(rows, columns=["test", "n", "X", "y"])

    return run


def _decode(row: Any) -> tuple[np.ndarray, np.ndarray]:
    X = np.frombuffer(row["X"], dtype=np.float64).reshape(row["n"], N_FEATURES)
    y = np.frombuffer(row["y"], dtype=np.int8).astype(np.intp)
    return X, y


# --------------------------------------------------------------------------- distributed objective


class SparkObjective:
    """The softmax objective over an RDD of ``(X, y)`` blocks: one pass per evaluation.

    Parameters
    ----------
    blocks : RDD of (ndarray (m, 15), ndarray (m,))
        Class indices ``0..4``.
    l2 : float
    class_weight : ndarray of shape (5,) or None
        Per-class sample weights (None: all ones).
    remap : ndarray of shape (5,)
        Index among the optimised (present) classes, ``-1`` for absent ones.
    """

    def __init__(self, blocks: Any, l2: float, class_weight: np.ndarray | None, remap: np.ndarray,
                 depth: int = 2) -> None:
        self.blocks = blocks
        self.l2 = float(l2)
        self.class_weight = class_weight
        self.remap = remap
        self.depth = depth
        self.passes = 0

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Objective, gradient (K, 16) and Hessian (16K, 16K) at ``theta`` (K, 16)."""
        K, p = theta.shape
        cw, remap = self.class_weight, self.remap
        objective = SoftmaxObjective(K, self.l2)

        def seq(acc: ChunkSums, block: tuple[np.ndarray, np.ndarray]) -> ChunkSums:
            X, y_all = block
            sw = None if cw is None else cw[y_all]
            if X.shape[0] == 0 or (sw is not None and not sw.sum() > 0):
                return acc
            # The single-node objective's own chunk sums; one BLAS thread, as in fit (the
            # executors' cores already run one task each).
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                return acc + objective.chunk_sums(theta, X, remap[y_all], sw, hessian=True)

        sums = self.blocks.treeAggregate(ChunkSums.zero(K, p, hessian=True), seq, ChunkSums.__add__,
                                         depth=self.depth)
        self.passes += 1
        loss, grad, H = objective.finish(theta, sums)
        assert H is not None
        return loss, grad, H


def newton(objective: SparkObjective, theta: np.ndarray, tol: float, max_iter: int
           ) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Damped Newton with Armijo backtracking, as :func:`virality.ml.softmax.fit`; returns (theta, loss, grad, iterations).

    Each evaluation is one pass and brings its Hessian along, so an accepted
    full step needs no extra pass.
    """
    K, p = theta.shape
    # Null direction of the objective (a constant added to every intercept): made definite, step unchanged.
    u_kp = np.zeros((K, p))
    u_kp[:, -1] = 1.0 / math.sqrt(K)
    u = u_kp.ravel()
    loss, grad, H = objective(theta)
    n_iter = 0
    while float(np.abs(grad).max()) > tol and n_iter < max_iter:
        n_iter += 1
        g = grad.ravel()
        mu = max(float(np.trace(H)) / H.shape[0], 1e-12)
        try:
            step = -np.linalg.solve(H + mu * np.outer(u, u), g)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, g, rcond=None)[0]
        slope = float(g @ step)
        if not slope < 0:
            step, slope = -g, -float(g @ g)
        t = 1.0
        slack = 64 * np.finfo(float).eps * abs(loss)
        for _ in range(60):
            new_theta = theta + t * step.reshape(K, p)
            new_loss, new_grad, new_H = objective(new_theta)
            if new_loss <= loss + 1e-4 * t * slope + slack:
                break
            t *= 0.5
        else:
            break
        theta, loss, grad, H = new_theta, new_loss, new_grad, new_H
    return theta, loss, grad, n_iter


def _balanced_weights(counts: np.ndarray, cap_ratio: float = 3.0) -> np.ndarray:
    """:func:`virality.ml.softmax.class_weights` ``"balanced"`` from class counts (no row array needed)."""
    present = counts > 0
    weights = np.zeros(counts.shape[0])
    weights[present] = counts.sum() / (present.sum() * counts[present])
    weights[present] = np.minimum(weights[present], cap_ratio * np.min(weights[present]))
    return weights


@dataclass(frozen=True, slots=True)
class DriverSample:
    """A deterministic subsample of the training blocks, on the driver.

    Attributes
    ----------
    X : ndarray of shape (m, d)
    y : ndarray of shape (m,), class indices
    stride : int
        Every ``stride``-th row of every block was taken (1: all rows).
    """

    X: np.ndarray
    y: np.ndarray
    stride: int

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])


def canonical_order(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row order by content (tier, then the features): independent of the order Spark returns blocks in.

    The lambda search deals rows into folds by position, so the sample needs
    an order that re-partitioning cannot change.
    """
    return np.lexsort((*X.T[::-1], y))


def driver_sample(blocks: Any, n_rows: int, max_rows: int | None = None) -> DriverSample:
    """Every ``ceil(n_rows / max_rows)``-th row of every block, collected (one pass), in :func:`canonical_order`.

    ``max_rows`` defaults to :data:`WARM_START_ROWS`.
    """
    stride = max(1, -(-int(n_rows) // (max_rows or WARM_START_ROWS)))
    parts = blocks.map(lambda b: (b[0][::stride], b[1][::stride])).collect()
    X = np.concatenate([b[0] for b in parts])
    y = np.concatenate([b[1] for b in parts])
    order = canonical_order(X, y)
    return DriverSample(np.ascontiguousarray(X[order]), y[order], stride)


@dataclass(frozen=True, slots=True)
class SparkFit:
    coef: np.ndarray          # (5, 15)
    intercept: np.ndarray     # (5,)
    n_iter: int
    objective: float
    grad_norm: float
    converged: bool
    passes: int
    warm_start_rows: int


def fit_blocks(blocks: Any, counts: np.ndarray, *, l2: float, class_weight: str = "none", tol: float = 1e-8,
               max_iter: int = 100, warm_start: bool | None = None, sample: DriverSample | None = None,
               init: tuple[np.ndarray, np.ndarray] | None = None, n_features: int = N_FEATURES) -> SparkFit:
    """Fit the softmax model on an RDD of ``(X, y)`` blocks with ``counts`` rows per class.

    Parameters
    ----------
    blocks : RDD of (ndarray (m, n_features), ndarray (m,))
    counts : ndarray of shape (5,)
    warm_start : bool or None
        Start from the library's :func:`virality.ml.softmax.fit` on a driver
        sample (None: when one is given, or above :data:`WARM_START_MIN_ROWS` rows).
    sample : DriverSample or None
        An already collected :func:`driver_sample` of ``blocks`` (no extra pass).
    init : (coef (5, n_features), intercept (5,)) or None
        A start fitted on ``sample`` at this ``l2`` (e.g. the lambda search's own fit): skips the sample fit.
    """
    present = np.flatnonzero(counts > 0)
    remap = np.full(NUM_CLASSES, -1)
    remap[present] = np.arange(present.size)
    cw = _balanced_weights(counts) if class_weight == "balanced" else None
    objective = SparkObjective(blocks, l2, cw, remap)
    theta = np.zeros((present.size, n_features + 1))
    n_train = int(counts.sum())
    warm_rows = 0
    if warm_start if warm_start is not None else (sample is not None or n_train > WARM_START_MIN_ROWS):
        # The library's own trainer on a strided sample of every block: a start a few passes from the optimum.
        if sample is None:
            sample = driver_sample(blocks, n_train)
            objective.passes += 1
        Xs, ys = sample.X, sample.y
        if np.array_equal(np.flatnonzero(np.bincount(ys, minlength=NUM_CLASSES) > 0), present):
            if init is None:
                sw = None if cw is None else cw[ys]
                start = fit(Xs, ys, n_classes=NUM_CLASSES, l2_reg_strength=l2, sample_weight=sw,
                            tol=max(tol, 1e-6), max_iter=max_iter)
                init = (start.coef, start.intercept)
            theta = np.column_stack([init[0][present], init[1][present]])
            warm_rows = int(ys.size)
    theta, loss, grad, n_iter = newton(objective, theta, tol, max_iter)
    grad_norm = float(np.abs(grad).max())
    # Canonical form and absent classes exactly as softmax.fit returns them.
    theta[:, -1] -= theta[:, -1].mean()
    coef = np.zeros((NUM_CLASSES, n_features))
    intercept = np.zeros(NUM_CLASSES)
    coef[present] = theta[:, :-1]
    intercept[present] = theta[:, -1]
    if present.size < NUM_CLASSES:
        absent = np.setdiff1d(np.arange(NUM_CLASSES), present)
        intercept[absent] = (np.min(theta[:, -1]) - ABSENT_CLASS_LOGIT_GAP
                             - float(np.abs(theta[:, :-1]).sum(axis=1).max()))
    return SparkFit(coef, intercept, n_iter, loss, grad_norm, grad_norm <= tol, objective.passes, warm_rows)


# --------------------------------------------------------------------------- defaults: lambda and T


@dataclass(frozen=True, slots=True)
class ChosenFit:
    """The exact fit at the chosen lambda, its published (calibrated, 15-column) weights and the records."""

    fit: SparkFit
    l2: float
    coef: np.ndarray              # (5, 15), T folded in
    intercept: np.ndarray         # (5,)
    l2_search: L2Search | None
    calibration: CalibrationInfo | None
    sample_passes: int            # passes spent collecting the driver sample here (0 or 1)


def _choose_and_fit(train_blocks: Any, counts: np.ndarray, config: TrainingConfig) -> ChosenFit:
    """:func:`virality.services.training.train_model`'s steps over Spark blocks.

    lambda search and temperature on one driver sample (the library's own
    code, as on one node), the exact fit over every block, T folded in.
    """
    l2_mode, calibration = config.resolved_l2, config.resolved_calibration
    mask = feature_set_mask(config.feature_set)
    # prepublication: fit the kept columns only (held ones get weight exactly 0, as in train_model)
    fit_rdd = train_blocks if mask.all() else train_blocks.map(lambda b: (b[0][:, mask], b[1]))
    n_train = int(counts.sum())
    cw = _balanced_weights(counts) if config.class_weight == "balanced" else None
    sample = None
    if l2_mode == "auto" or calibration == "temperature":
        sample = driver_sample(fit_rdd, n_train)
    sw = None if sample is None or cw is None else cw[sample.y]
    search = None
    init = None
    if l2_mode == "auto":
        assert sample is not None
        search = search_l2(sample.X, sample.y, n_classes=NUM_CLASSES, grid=config.l2_grid, n_folds=config.cv_folds,
                           seed=config.seed, sample_weight=sw)
        l2 = search.chosen
        init = (search.coef, search.intercept)          # the search's own fit on the sample, polished below
    else:
        l2 = float(l2_mode)
    result = fit_blocks(fit_rdd, counts, l2=l2, class_weight=config.class_weight, tol=config.tol,
                        max_iter=config.max_iter, sample=sample, init=init, n_features=int(mask.sum()))
    coef, intercept = _embed_columns(result.coef, mask), result.intercept
    calibration_info = None
    if calibration == "temperature":
        assert sample is not None
        if search is not None:
            oof = search.oof_logits
        else:
            Xs, ys = sample.X, sample.y

            def fit_fold(tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                r = fit(Xs[tr], ys[tr], l2_reg_strength=l2, sample_weight=None if sw is None else sw[tr],
                        tol=config.tol, max_iter=config.max_iter)     # Newton: deterministic, no seed
                return r.coef, r.intercept

            oof, _ = out_of_fold_logits(Xs, ys, fit_fold, n_folds=config.cv_folds, seed=config.seed)
        temperature = fit_temperature(oof, sample.y)
        calibration_info = CalibrationInfo(
            method="temperature", temperature=temperature, source="cv", nSamples=sample.rows, fittedAt=utc_now_iso(),
            provenance={"sample": "strided driver-side sample of the training split", "stride": str(sample.stride),
                        "trainingRows": str(n_train)},
            **calibration_summary(oof, sample.y, temperature))
        coef, intercept = fold_temperature(coef, intercept, temperature)
    elif config.calibration == "none":
        calibration_info = CalibrationInfo(method="none", temperature=1.0, source="training")
    l2_search = None
    if search is not None:
        assert sample is not None
        l2_search = L2Search(grid=list(search.grid), meanLogLoss=search.mean_log_loss.tolist(),
                             stdLogLoss=search.std_log_loss.tolist(), chosen=search.chosen, folds=search.n_folds,
                             seed=search.seed, durationSeconds=round(search.duration_seconds, 6),
                             sampleRows=sample.rows)
    return ChosenFit(result, l2, coef, intercept, l2_search, calibration_info, int(sample is not None))


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True, slots=True)
class SparkTraining:
    """A trained model plus what the caller needs to publish it."""

    outcome: TrainingOutcome
    test: Split          # the evaluated test rows (raw included: the promotion gate featurises them)


def _executors(spark: SparkSession) -> int:
    sc = spark.sparkContext
    try:
        n = sc._jsc.sc().getExecutorMemoryStatus().size() - 1   # minus the driver
    except Exception:   # private API moved: fall back on the configured count
        n = int(sc.getConf().get("spark.executor.instances", "0") or 0)
    return max(n, 1)


def _collect_labelled(df: DataFrame) -> tuple[RawVideos, np.ndarray]:
    """Rows of ``df`` and their outcome ``_label`` (shape (n,)) on the driver, in key order."""
    pdf: Any = df.select("_key", *RAW_SLOTS, "_label").toPandas()
    pdf = pdf.sort_values("_key", kind="stable")
    return (RawVideos(**{name: pdf[name].to_numpy(dtype=np.float64) for name in RAW_SLOTS}),
            pdf["_label"].to_numpy(dtype=np.float64))


def train_spark(spark: SparkSession, path: str, config: TrainingConfig | None = None, *, fmt: str | None = None,
                source: str | None = None, sha256: str | Callable[[], str] | None = None,
                model_version: str | None = None) -> SparkTraining:
    """Read, validate, split, featurise and fit ``path`` on Spark; the artifact as :func:`train_model` builds it.

    Parameters
    ----------
    path : str
        What Spark reads (local path, ``s3://`` on EMR): a file or a directory of parts.
    source : str
        Provenance name (default ``path``).
    sha256 : str or callable
        SHA-256 of the source bytes, or a function computing it (the entry
        point hashes the exact S3 version); default: streamed from ``path``
        by :func:`source_sha256`, the digest the NumPy trainer records. A
        function runs in a thread on the driver while Spark trains (one
        sequential read of the source; at scale it is as long as the training).

    Raises
    ------
    DataValidationError
    """
    config = config or TrainingConfig()
    if config.optimizer != "newton":
        raise ConfigurationError("the Spark engine runs Newton only (gd reproduces the original on small files)")
    source = source or path
    fmt = fmt or detect_spark_format(path)
    started = time.perf_counter()
    local = path[len("file://"):] if path.startswith("file://") else path
    if not path.startswith(("s3://", "s3a://")) and not os.path.exists(local):
        raise ConfigurationError(f"no such training file: {path!r}")
    # The checksum read overlaps the Spark work (joined when the artifact is built).
    digest = _Background(sha256 if callable(sha256) else (lambda: sha256 or source_sha256(path)))
    return _train(spark, path, config, fmt, source, digest, model_version, started)


class _Background:
    """``fn()`` in a daemon thread: a failed training does not wait for (nor keep the process alive for) it."""

    def __init__(self, fn: Callable[[], str]) -> None:
        self._value: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="source-sha256", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], str]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:    # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def _train(spark: SparkSession, path: str, config: TrainingConfig, fmt: str, source: str, digest: _Background,
           model_version: str | None, started: float) -> SparkTraining:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    records = read_records(spark, path, fmt)
    label_column = LABEL_COLUMN if LABEL_COLUMN in records.columns else "views"
    raw, key_col = validated_raw(records, source, config.seed, config.test_fraction)
    valid = F.col("_errMessage").isNull()
    totals = _one_row(raw.agg(F.sum(valid.cast("long")).alias("ok"), F.sum((~valid).cast("long")).alias("bad")))
    if totals["bad"]:
        raw.unpersist()
        raise first_error(raw, source, key_col)
    n_rows = int(totals["ok"] or 0)
    if n_rows == 0:
        raise DataValidationError("no records", location=source)
    method = (QuantileMethod(True, 0.0) if n_rows <= EXACT_QUANTILE_MAX_ROWS
              else QuantileMethod(False, 1.0 / APPROX_QUANTILE_ACCURACY))
    tiering = fit_tiering_spark(raw, config.tiering, method)
    train_raw = raw.where(~F.col("_test"))
    prep = fit_preprocessing_spark(train_raw, method)
    blocks_df = raw.select(*RAW_SLOTS, "_label", "_test").mapInPandas(_feature_blocks(prep, tiering),
                                                            "test boolean, n long, X binary, y binary")
    blocks = blocks_df.rdd.map(lambda r: (bool(r["test"]), _decode(r))).persist(StorageLevel.MEMORY_AND_DISK)
    train_blocks = blocks.filter(lambda b: not b[0]).map(lambda b: b[1])
    # rows per class, row 0 train, row 1 test (the pass that also fills the cache)
    counts = blocks.map(lambda b: np.outer([not b[0], b[0]], np.bincount(b[1][1], minlength=NUM_CLASSES))) \
        .treeAggregate(np.zeros((2, NUM_CLASSES), dtype=np.int64), np.add, np.add)
    train_counts, test_counts = counts[0], counts[1]
    if train_counts.sum() == 0:
        raise DataValidationError("the training split is empty", location=source)
    if test_counts.sum() == 0:
        raise DataValidationError("the test split is empty (too few rows?)", location=source)
    if int((train_counts > 0).sum()) < 2:
        raise DataValidationError(f"the training split has {int((train_counts > 0).sum())} tier(s); "
                                  "at least 2 are needed", location=source)
    chosen = _choose_and_fit(train_blocks, train_counts, config)
    result, coef, intercept = chosen.fit, chosen.coef, chosen.intercept
    train_correct = train_blocks.map(
        lambda b: int(np.sum((b[0] @ coef.T + intercept).argmax(axis=1) == b[1]))).sum()
    passes = result.passes + chosen.sample_passes + 1
    # The fit is done: free the block cache before the test rows come to the driver (a local driver JVM is
    # also the executor; with the blocks still cached, the 1M-row test collect at 5M rows failed in a 2 GB driver).
    blocks.unpersist()
    # Test split on the driver: every row up to EVAL_MAX_ROWS, else a deterministic hash sample.
    n_test = int(test_counts.sum())
    test_raw_df = raw.where(F.col("_test"))
    if n_test > EVAL_MAX_ROWS:
        keep = F.pmod(F.xxhash64(F.lit(config.seed + 1), F.col("_key")), F.lit(SPLIT_BUCKETS))
        test_raw_df = test_raw_df.where(keep < F.lit(int(SPLIT_BUCKETS * EVAL_MAX_ROWS / n_test)))
    test_raw, test_label = _collect_labelled(test_raw_df)
    test = Split(extract_features(test_raw, prep), assign_tiers(test_label, tiering), test_raw)
    proba = predict_proba(test.X, coef, intercept)
    report = evaluate(test.y, proba)
    intervals = bootstrap_intervals(test.y, proba, n_resamples=config.bootstrap, seed=config.seed) \
        if config.bootstrap else None
    duration = time.perf_counter() - started
    cluster = ClusterInfo(
        master=str(spark.sparkContext.master), sparkVersion=spark.version, executors=_executors(spark),
        defaultParallelism=spark.sparkContext.defaultParallelism,
        partitions=blocks_df.rdd.getNumPartitions(), passes=passes, warmStartRows=result.warm_start_rows,
        quantiles=method.label, quantileRelativeError=method.relative_error, evaluationRows=int(test.X.shape[0]),
        split="xxhash64(seed, key) bucket")
    artifact = trained_artifact(
        coef=coef, intercept=intercept, report=report, model_version=model_version,
        training=TrainingInfo(
            optimizer="newton", l2=chosen.l2, classWeight=config.class_weight, iterations=result.n_iter,
            finalObjective=result.objective, gradientNorm=result.grad_norm, converged=result.converged,
            tol=config.tol, seed=config.seed, testFraction=config.test_fraction,
            durationSeconds=round(duration, 6), engine="spark", cluster=cluster, l2Search=chosen.l2_search),
        metrics=Metrics(test=report, trainAccuracy=float(train_correct) / float(train_counts.sum()),
                        testIntervals=intervals),
        data=DataProvenance(
            source=source, sha256=digest.result(), format=fmt, rows=SplitRows(train=int(train_counts.sum()), test=n_test),
            classCounts=ClassCounts(train=[int(c) for c in train_counts], test=[int(c) for c in test_counts]),
            labelColumn=label_column),
        preprocessing=prep, tiering=tiering, feature_set=config.feature_set, calibration=chosen.calibration,
    )
    raw.unpersist()
    return SparkTraining(TrainingOutcome(artifact, ViralityModel(artifact), report, None), test)  # type: ignore[arg-type]


def collect_training_arrays(spark: SparkSession, path: str, config: TrainingConfig, artifact: ModelArtifact,
                            fmt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact training rows of a Spark run as arrays ``(X (n, 15), y (n,))`` (parity checks, small data)."""
    from pyspark.sql import functions as F

    raw, _ = validated_raw(read_records(spark, path, fmt), path, config.seed, config.test_fraction)
    rv, label = _collect_labelled(raw.where(~F.col("_test")))
    raw.unpersist()
    assert artifact.preprocessing is not None and artifact.tiering is not None
    return extract_features(rv, artifact.preprocessing), assign_tiers(label, artifact.tiering) - 1
