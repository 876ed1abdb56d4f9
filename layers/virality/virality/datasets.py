"""Training-data readers: seed JSON, CSV and JSON Lines, with row/column errors.

Formats
-------
``seed-json``  the original ``{"featureNames": [...15], "trainSet": {"features":
               [[15 floats]...], "labels": [1..5 ...]}, "testSet": {...}}``;
               features are used as given (they must already lie in [0, 1]).
``csv``        header row of raw video records (see :mod:`virality.features`).
``jsonl``      one raw video record (JSON object) per line.

Raw formats are labelled with :mod:`virality.tiering`, split into train/test
with a seeded stratified split, and turned into features with caps fitted on
the training split only. Nothing here trains: bad data raises
:class:`~virality.errors.DataValidationError` naming the row and column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import NUM_CLASSES
from .errors import DataValidationError
from .features import (
    FEATURE_NAMES,
    N_FEATURES,
    RAW_NUMERIC_FIELDS,
    Preprocessing,
    RawColumnsBuilder,
    RawVideos,
    extract_features,
    fit_preprocessing,
    parse_posted_at,
)
from .tiering import Tiering, assign_tiers, fit_tiering

DataFormat = Literal["seed-json", "csv", "jsonl"]


@dataclass(frozen=True, slots=True)
class Split:
    """One labelled split.

    Attributes
    ----------
    X : ndarray of shape (n_samples, 15), values in [0, 1]
    tiers : ndarray of shape (n_samples,), integers 1..5
    raw : RawVideos or None
        The raw records (raw formats only), so another model can featurise them
        with its own fitted caps (promotion gate).
    """

    X: np.ndarray
    tiers: np.ndarray
    raw: RawVideos | None = None

    @property
    def y(self) -> np.ndarray:
        """Class indices 0..4."""
        return self.tiers - 1

    def class_counts(self) -> list[int]:
        return np.bincount(self.y, minlength=NUM_CLASSES).tolist()


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """A validated, split training file."""

    format: DataFormat
    source: str
    sha256: str
    train: Split
    test: Split
    preprocessing: Preprocessing | None
    tiering: Tiering | None
    label_column: str | None = None     # "views", or "labelViews" (label horizon); None for seed JSON


# --------------------------------------------------------------------------- detection


def detect_format(data: bytes, source: str = "") -> DataFormat:
    """Guess the format from the first non-blank character and, if needed, the name."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    lower = source.lower()
    if head == b"{":
        if lower.endswith((".jsonl", ".ndjson")):
            return "jsonl"
        first_line = data.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
        # A seed file is one JSON document (usually spread over many lines or with
        # "trainSet" on its first line); JSON Lines has a whole object per line.
        try:
            obj = json.loads(first_line)
        except ValueError:
            return "seed-json"
        return "seed-json" if isinstance(obj, dict) and ("trainSet" in obj or "featureNames" in obj) else "jsonl"
    if head == b"":
        raise DataValidationError("the file is empty", location=source or None)
    return "csv"


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text (byte {exc.start})", location=source or None) from None


# --------------------------------------------------------------------------- seed JSON


def _seed_split(doc: Mapping[str, object], name: str, source: str) -> Split:
    where = source or None
    part = doc.get(name)
    if not isinstance(part, dict):
        raise DataValidationError(f"missing object {name!r}", location=where, column=name)
    features, labels = part.get("features"), part.get("labels")
    if not isinstance(features, list):
        raise DataValidationError("must be a list of rows", location=where, column=f"{name}.features")
    if not isinstance(labels, list):
        raise DataValidationError("must be a list of tiers 1..5", location=where, column=f"{name}.labels")
    if len(features) != len(labels):
        raise DataValidationError(f"{len(features)} feature rows but {len(labels)} labels",
                                  location=where, column=name)
    for i, row in enumerate(features):
        if not isinstance(row, list) or len(row) != N_FEATURES:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise DataValidationError(f"expected a list of {N_FEATURES} numbers, got {got}",
                                      location=f"{name}.features", row=i)
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DataValidationError(f"not a number: {value!r}", location=f"{name}.features",
                                          row=i, column=FEATURE_NAMES[j])
            try:
                finite = math.isfinite(value)
            except OverflowError:       # a JSON integer too large for a float
                finite = False
            if not finite:
                raise DataValidationError(f"must be finite, got {value!r}", location=f"{name}.features",
                                          row=i, column=FEATURE_NAMES[j])
            if not 0.0 <= value <= 1.0:
                raise DataValidationError(f"must lie in [0, 1], got {value!r}", location=f"{name}.features",
                                          row=i, column=FEATURE_NAMES[j])
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int | float) or label not in (1, 2, 3, 4, 5):
            raise DataValidationError(f"label must be a tier 1..5, got {label!r}",
                                      location=f"{name}.labels", row=i)
    X = np.array(features, dtype=np.float64).reshape(len(features), N_FEATURES)
    return Split(X, np.array(labels, dtype=np.intp))


def read_seed_json(data: bytes, source: str = "") -> tuple[Split, Split]:
    """Parse and validate the original training-data format."""
    try:
        doc = json.loads(_decode(data, source))
    except ValueError as exc:
        raise DataValidationError(f"invalid JSON: {exc}", location=source or None) from None
    if not isinstance(doc, dict):
        raise DataValidationError("expected a JSON object with featureNames, trainSet, testSet",
                                  location=source or None)
    names = doc.get("featureNames")
    if not isinstance(names, list):
        raise DataValidationError("missing list 'featureNames'", location=source or None, column="featureNames")
    if list(names) != list(FEATURE_NAMES):
        for j, expected in enumerate(FEATURE_NAMES):
            got = names[j] if j < len(names) else None
            if got != expected:
                raise DataValidationError(
                    f"featureNames[{j}] must be {expected!r} (order is part of the format), got {got!r}",
                    location=source or None, column="featureNames")
        raise DataValidationError(f"featureNames has {len(names)} names, expected {N_FEATURES}",
                                  location=source or None, column="featureNames")
    return _seed_split(doc, "trainSet", source), _seed_split(doc, "testSet", source)


# --------------------------------------------------------------------------- raw records


class _SlowPath(Exception):
    """The vectorised CSV parse met something odd: redo it row by row for a precise error."""


_FLAG_WORDS = {"1": 1.0, "true": 1.0, "yes": 1.0, "y": 1.0, "t": 1.0,
               "0": 0.0, "false": 0.0, "no": 0.0, "n": 0.0, "f": 0.0, "": 0.0}
REQUIRED_COLUMNS = (*RAW_NUMERIC_FIELDS, "hasTrendingSound", "postedAt")


def _check_header(header: list[str], source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if "captionLength" not in header and "caption" not in header:
        missing.append("captionLength (or caption)")
    if missing:
        raise DataValidationError(f"missing column(s) {', '.join(missing)}; the header has: {', '.join(header)}",
                                  location=source or None, row=1, column=missing[0])
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataValidationError(f"duplicated column(s) {', '.join(dupes)}", location=source or None, row=1,
                                  column=dupes[0])


def _posted_columns(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTC weekday (Monday = 0) and hour of each ``postedAt``, shape (n,) each."""
    if all(len(v) == 20 and v[10] == "T" and v[19] == "Z" for v in values):
        # Canonical "YYYY-mm-ddTHH:MM:SSZ" (what sample-data and most exports write): parse in bulk.
        try:
            secs = np.asarray([v[:19] for v in values], dtype="datetime64[s]").astype(np.int64)
        except ValueError:
            raise _SlowPath from None
        return ((secs // 86400 + 3) % 7).astype(np.float64), ((secs // 3600) % 24).astype(np.float64)
    try:
        posted = [parse_posted_at(v) for v in values]
    except (ValueError, OverflowError, OSError):
        raise _SlowPath from None
    return (np.array([p.weekday() for p in posted], dtype=np.float64),
            np.array([p.hour for p in posted], dtype=np.float64))


def _vectorised_csv(columns: dict[str, list[str]]) -> RawVideos:
    def numeric(name: str) -> np.ndarray:
        try:
            arr = np.asarray(columns[name], dtype=np.float64)
        except ValueError:
            raise _SlowPath from None
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise _SlowPath
        return arr

    values = {name: numeric(name) for name in RAW_NUMERIC_FIELDS}
    if "followers" in columns:
        followers = [f if f.strip() else "nan" for f in columns["followers"]]
        try:
            arr = np.asarray(followers, dtype=np.float64)
        except ValueError:
            raise _SlowPath from None
        known = ~np.isnan(arr)
        if np.any(np.isinf(arr)) or np.any(arr[known] < 0) or known.sum() != sum(
                1 for f in columns["followers"] if f.strip()):
            raise _SlowPath     # e.g. a literal "nan" cell: let the row-by-row path name it
        values["followers"] = arr
    else:
        values["followers"] = np.full(values["views"].shape, np.nan)
    try:
        values["hasTrendingSound"] = np.array([_FLAG_WORDS[v.strip().lower()] for v in columns["hasTrendingSound"]])
    except KeyError:
        raise _SlowPath from None
    if "captionLength" in columns and all(v.strip() for v in columns["captionLength"]):
        values["captionLength"] = numeric("captionLength")
    elif "caption" in columns and "captionLength" not in columns:
        values["captionLength"] = np.array([len(c) for c in columns["caption"]], dtype=np.float64)
    else:
        raise _SlowPath
    values["weekday"], values["hour"] = _posted_columns(columns["postedAt"])
    return RawVideos(**values)


#: Rows converted to arrays at a time: bounds the memory held as Python strings.
CSV_BLOCK_ROWS = 65_536


def _csv_block(header: list[str], index: dict[str, int], rows: list[list[str]], lines: list[int],
               source: str) -> RawVideos:
    transposed = list(zip(*rows, strict=True))
    columns = {c: list(transposed[j]) for c, j in index.items()}
    try:
        return _vectorised_csv(columns)
    except _SlowPath:
        # Something is off in this block: redo it row by row to name the row and column.
        builder = RawColumnsBuilder(location=source or None)
        for line, row in zip(lines, rows, strict=True):
            builder.add(dict(zip(header, row, strict=True)), row=line)
        return builder.build()


def _concat(parts: list[RawVideos]) -> RawVideos:
    if len(parts) == 1:
        return parts[0]
    return RawVideos(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in RawVideos.__slots__})


def read_csv(data: bytes, source: str = "") -> RawVideos:
    """Parse raw video records from CSV (header row first), in blocks of rows."""
    text = _decode(data, source)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataValidationError("the file is empty", location=source or None) from None
    except csv.Error as exc:
        raise DataValidationError(f"malformed CSV: {exc}", location=source or None, row=1) from None
    _check_header(header, source)
    wanted = [c for c in (*REQUIRED_COLUMNS, "followers", "captionLength", "caption") if c in header]
    index = {c: header.index(c) for c in wanted}
    parts: list[RawVideos] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    width = len(header)
    try:
        for row in reader:
            if len(row) != width or not row[0].strip():
                if not row or all(not cell.strip() for cell in row):
                    continue        # blank line
                if len(row) != width:
                    raise DataValidationError(f"expected {width} fields, got {len(row)}",
                                              location=source or None, row=reader.line_num)
            rows.append(row)
            lines.append(reader.line_num)
            if len(rows) == CSV_BLOCK_ROWS:
                parts.append(_csv_block(header, index, rows, lines, source))
                rows, lines = [], []
    except csv.Error as exc:
        raise DataValidationError(f"malformed CSV: {exc}", location=source or None, row=reader.line_num) from None
    if rows:
        parts.append(_csv_block(header, index, rows, lines, source))
    if not parts:
        raise DataValidationError("no data rows after the header", location=source or None)
    return _concat(parts)


def read_jsonl(data: bytes, source: str = "") -> RawVideos:
    """Parse raw video records from JSON Lines (blank lines are skipped)."""
    text = _decode(data, source)
    builder = RawColumnsBuilder(location=source or None)
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataValidationError(f"invalid JSON: {exc.args[0]}", location=source or None, row=line_no) from None
        if not isinstance(record, dict):
            raise DataValidationError("expected a JSON object", location=source or None, row=line_no)
        builder.add(record, row=line_no)
    if len(builder) == 0:
        raise DataValidationError("no records", location=source or None)
    return builder.build()


# --------------------------------------------------------------------------- split + assemble


def stratified_split(tiers: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: per tier, ``round(n_c * test_fraction)`` rows go to test.

    A tier with at least two rows keeps at least one row on each side.
    Returns sorted index arrays ``(train_idx, test_idx)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataValidationError(f"test fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for tier in np.unique(tiers):
        idx = rng.permutation(np.flatnonzero(tiers == tier))
        n_test = round(idx.size * test_fraction)
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _check_splits(train: Split, test: Split, source: str) -> None:
    if train.X.shape[0] == 0:
        raise DataValidationError("the training split is empty", location=source or None)
    if test.X.shape[0] == 0:
        raise DataValidationError("the test split is empty (too few rows?)", location=source or None)
    n_classes = int(np.unique(train.tiers).size)
    if n_classes < 2:
        raise DataValidationError(f"the training split has {n_classes} tier(s); at least 2 are needed",
                                  location=source or None)


def build_training_set(raw: RawVideos, *, source: str, sha256: str, fmt: DataFormat,
                       test_fraction: float = 0.2, seed: int = 42, tiering: Tiering | None = None,
                       label_views: np.ndarray | None = None) -> TrainingSet:
    """Label, split and featurise raw videos (caps fitted on the training split).

    ``label_views`` (shape (n_samples,)), when given, replaces ``views`` as the
    source of the tiers (see :mod:`virality.labels`).
    """
    outcome = raw.views if label_views is None else label_views
    fitted_tiering = fit_tiering(outcome, tiering)
    tiers = assign_tiers(outcome, fitted_tiering)
    if np.unique(tiers).size < 2:
        raise DataValidationError("all videos fall in one tier; at least 2 are needed", location=source or None)
    train_idx, test_idx = stratified_split(tiers, test_fraction, seed)
    raw_train, raw_test = raw.take(train_idx), raw.take(test_idx)
    prep = fit_preprocessing(raw_train)
    train = Split(extract_features(raw_train, prep), tiers[train_idx], raw_train)
    test = Split(extract_features(raw_test, prep), tiers[test_idx], raw_test)
    _check_splits(train, test, source)
    return TrainingSet(fmt, source, sha256, train, test, prep, fitted_tiering,
                       "views" if label_views is None else "labelViews")


def load_training_data(data: bytes, source: str = "", *, fmt: DataFormat | None = None,
                       test_fraction: float = 0.2, seed: int = 42, tiering: Tiering | None = None) -> TrainingSet:
    """Detect, parse, validate and split a training file.

    Parameters
    ----------
    data : bytes
        The whole file.
    source : str
        Its name (S3 key or path), used in messages and provenance.
    fmt : {"seed-json", "csv", "jsonl"}, optional
        Skip detection.

    Raises
    ------
    DataValidationError
    """
    fmt = fmt or detect_format(data, source)
    digest = hashlib.sha256(data).hexdigest()
    if fmt == "seed-json":
        train, test = read_seed_json(data, source)
        _check_splits(train, test, source)
        return TrainingSet(fmt, source, digest, train, test, None, None)
    raw = read_csv(data, source) if fmt == "csv" else read_jsonl(data, source)
    from .labels import read_label_views

    label_views = read_label_views(data, fmt, source)
    if label_views is not None and label_views.shape[0] != len(raw):
        raise DataValidationError(f"{label_views.shape[0]} labelViews values for {len(raw)} records",
                                  location=source or None, column="labelViews")
    return build_training_set(raw, source=source, sha256=digest, fmt=fmt, test_fraction=test_fraction,
                              seed=seed, tiering=tiering, label_views=label_views)


def records_to_jsonl(records: Iterable[Mapping[str, object]]) -> bytes:
    """Serialise raw records as JSON Lines."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
