"""Training-data readers: seed JSON, CSV and JSON Lines, with row/column errors.

Formats
-------
``seed-json``  the original ``{"featureNames": [...15], "trainSet": {"features":
               [[15 floats]...], "labels": [1..5 ...]}, "testSet": {...}}``;
               features are used as given (they must already lie in [0, 1]).
``csv``        header row of raw video records (see :mod:`virality.ml.features`).
``jsonl``      one raw video record (JSON object) per line.

Raw formats are labelled with :mod:`virality.ml.tiering`, split into train/test
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
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import jiter
import numpy as np

from virality import NUM_CLASSES
from virality.errors import DataValidationError
from virality.ml.features import (
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
from virality.ml.tiering import Tiering, assign_tiers, fit_tiering

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


#: A first line longer than this is not parsed to tell seed JSON from JSON Lines:
#: a seed file written on one line is the whole document, and parsing it twice was
#: the most expensive step of detection.
DETECT_PARSE_BYTES = 1 << 20


def detect_format(data: bytes, source: str = "") -> DataFormat:
    """Guess the format from the first non-blank character and, if needed, the name.

    Reads at most the first line, and parses it only when it is shorter than
    :data:`DETECT_PARSE_BYTES`; longer lines are classified by their keys.
    """
    start = len(data) - len(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    head = data[start:start + 1]
    lower = source.lower()
    if head == b"{":
        if lower.endswith((".jsonl", ".ndjson")):
            return "jsonl"
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        # A seed file is one JSON document (usually spread over many lines or with
        # "trainSet" on its first line); JSON Lines has a whole object per line.
        if end - start > DETECT_PARSE_BYTES:
            return "seed-json" if any(data.find(k, start, end) >= 0 for k in _SEED_KEYS) else "jsonl"
        try:
            obj = jiter.from_json(data[start:end], allow_inf_nan=True)
        except ValueError:      # not a whole document on one line (or too deep): not JSON Lines
            return "seed-json"
        return "seed-json" if isinstance(obj, dict) and ("trainSet" in obj or "featureNames" in obj) else "jsonl"
    if head == b"":
        raise DataValidationError("the file is empty", location=source or None)
    return "csv"


_SEED_KEYS = (b'"trainSet"', b'"featureNames"')


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text (byte {exc.start})", location=source or None) from None


# --------------------------------------------------------------------------- seed JSON


def _seed_split_checked(part: Mapping[str, object], name: str, source: str) -> Split:
    """Validate one split value by value, naming the first bad row and column (the slow path)."""
    where = source or None
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


def _seed_split_fast(part: Mapping[str, object], plain_numbers: bool) -> Split | None:
    """The split as arrays, or None when anything needs the value-by-value check.

    NumPy converts ``True``, ``"0.5"`` and ``None`` silently, so this path is only
    taken when the document holds no string, ``true``/``false`` or ``null`` outside
    the known keys and names (``plain_numbers``); everything NumPy does refuse
    (ragged rows, nested lists, integers beyond float range) or that fails a range
    check goes to the slow path, which names the row and column.
    """
    features, labels = part.get("features"), part.get("labels")
    if not (plain_numbers and isinstance(features, list) and isinstance(labels, list)
            and len(features) == len(labels)):
        return None
    try:
        X = np.array(features, dtype=np.float64)
        tiers = np.array(labels, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if X.shape != (len(features), N_FEATURES) or tiers.shape != (len(labels),):
        return None
    # NaN fails both comparisons, so one pass checks finiteness and range.
    if not (np.all(X >= 0.0) and np.all(X <= 1.0)):
        return None
    if not np.all((tiers >= 1.0) & (tiers <= 5.0)):
        return None
    y = tiers.astype(np.intp)
    if not np.all(y == tiers):          # 2.5 is not a tier; 3.0 is
        return None
    return Split(X, y)


def _seed_split(doc: Mapping[str, object], name: str, source: str, plain_numbers: bool = False) -> Split:
    part = doc.get(name)
    if not isinstance(part, dict):
        raise DataValidationError(f"missing object {name!r}", location=source or None, column=name)
    fast = _seed_split_fast(part, plain_numbers)
    return fast if fast is not None else _seed_split_checked(part, name, source)


#: Quote characters in a seed document whose only strings are its seven keys and the
#: 15 feature names (featureNames, trainSet, testSet, features x2, labels x2).
_SEED_QUOTES = 2 * (7 + N_FEATURES)


def _parse_training_json(data: bytes, source: str, row: int | None = None) -> object:
    """One JSON document from training data: depth-bounded, duplicate keys refused.

    jiter refuses nesting deeper than a few hundred levels (the standard library
    recursed until ``RecursionError``) and duplicated keys (``json`` silently kept
    the last one, e.g. a second ``"trainSet"``). NaN/Infinity parse, so the value
    checks can name them with their row and column.
    """
    try:
        return jiter.from_json(data, allow_inf_nan=True, catch_duplicate_keys=True)
    except ValueError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise DataValidationError(f"not UTF-8 text (byte {bad.start})", location=source or None,
                                      row=row) from None
        message = str(exc)
        if message.startswith("Detected duplicate key"):
            raise DataValidationError(f"duplicated key: {message[len('Detected duplicate key '):]}",
                                      location=source or None, row=row) from None
        if message.startswith("recursion limit exceeded"):
            message = f"nested too deeply ({message})"
        raise DataValidationError(f"invalid JSON: {message}", location=source or None, row=row) from None


def read_seed_json(data: bytes, source: str = "") -> tuple[Split, Split]:
    """Parse and validate the original training-data format."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    doc = _parse_training_json(body, source)
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
    plain = (len(doc) == 3 and body.count(b'"') == _SEED_QUOTES
             and body.find(b"true") < 0 and body.find(b"false") < 0 and body.find(b"null") < 0)
    return _seed_split(doc, "trainSet", source, plain), _seed_split(doc, "testSet", source, plain)


# --------------------------------------------------------------------------- raw records


class _SlowPath(Exception):
    """The vectorised CSV parse met something odd: redo it row by row for a precise error."""


_FLAG_WORDS = {"1": 1.0, "true": 1.0, "yes": 1.0, "y": 1.0, "t": 1.0,
               "0": 0.0, "false": 0.0, "no": 0.0, "n": 0.0, "f": 0.0, "": 0.0}
REQUIRED_COLUMNS = (*RAW_NUMERIC_FIELDS, "hasTrendingSound", "postedAt")


#: More columns than any real export has: refused before any per-column work.
MAX_COLUMNS = 1000


def _check_header(header: list[str], source: str) -> None:
    """Required columns present, none duplicated, at most :data:`MAX_COLUMNS`: linear in the header."""
    where = source or None
    if len(header) > MAX_COLUMNS:
        raise DataValidationError(f"the header has {len(header):,} columns; at most {MAX_COLUMNS:,} are accepted",
                                  location=where, row=1)
    present = set(header)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if "captionLength" not in present and "caption" not in present:
        missing.append("captionLength (or caption)")
    if missing:
        shown = ", ".join(header[:50]) + (f", ... ({len(header)} in all)" if len(header) > 50 else "")
        raise DataValidationError(f"missing column(s) {', '.join(missing)}; the header has: {shown}",
                                  location=where, row=1, column=missing[0])
    if len(present) < len(header):
        dupes = sorted(name for name, n in Counter(header).items() if n > 1)
        raise DataValidationError(f"duplicated column(s) {', '.join(dupes)}", location=where, row=1,
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


def _read_csv_module(text: str, source: str) -> RawVideos:
    """The ``csv``-module reader: any quoting and line ending, in blocks of rows."""
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


def _rows_block(text: str, header: list[str], first_line: int, source: str) -> RawVideos:
    """Rows of one block of lines (no quotes), one by one: blank lines skipped, errors named."""
    width = len(header)
    builder = RawColumnsBuilder(location=source or None)
    for offset, line in enumerate(text.split("\n")):
        line_no = first_line + offset
        row = next(csv.reader([line.removesuffix("\r")]), [])
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise DataValidationError(f"expected {width} fields, got {len(row)}", location=source or None,
                                      row=line_no)
        builder.add(dict(zip(header, row, strict=True)), row=line_no)
    return builder.build()


# --------------------------------------------------------------------------- NumPy CSV reader

#: Width of the byte-string fields the tokenizer fills; a cell that fills one
#: completely may have been cut, so its block is redone row by row.
_TEXT_WIDTH = 32
_FLAG_WIDTH = 9


@dataclass(frozen=True, slots=True)
class _BlockSpec:
    """How :func:`np.loadtxt` tokenizes a block: one dtype field per column of the header."""

    dtype: np.dtype


def _block_spec(header: list[str]) -> _BlockSpec:
    """Every column gets a field, so loadtxt refuses a line with too few or too many fields
    (with ``usecols`` it would silently drop extra ones); unused columns cost one byte."""
    kinds = {c: "f8" for c in (*RAW_NUMERIC_FIELDS, "captionLength")}
    kinds.update(hasTrendingSound=f"S{_FLAG_WIDTH}", postedAt=f"S{_TEXT_WIDTH}", followers=f"S{_TEXT_WIDTH}")
    return _BlockSpec(np.dtype([(c, kinds[c]) if c in kinds else (f"_{j}", "S1") for j, c in enumerate(header)]))


def _text(cell: np.ndarray) -> str:
    return cell.tobytes().rstrip(b"\0").decode()


def _non_negative(values: np.ndarray) -> np.ndarray:
    # NaN fails the comparison; inf fails isfinite
    if not (np.all(values >= 0) and np.all(np.isfinite(values))):
        raise _SlowPath
    return values


def _cells(column: np.ndarray) -> np.ndarray:
    """A byte-string column as a (n, itemsize) uint8 matrix; refuses cells that fill it."""
    column = np.ascontiguousarray(column)           # a field of the structured table is strided
    B = column.view(np.uint8).reshape(column.shape[0], column.dtype.itemsize)
    if np.any(B[:, -1]):
        raise _SlowPath
    return B


def _followers(column: np.ndarray) -> np.ndarray:
    """Follower counts, NaN where the cell is blank."""
    column = np.ascontiguousarray(column)
    B = _cells(column)
    known = ((B != 0) & (B != 32) & (B != 9)).any(axis=1)         # blank or spaces: unknown
    out = np.full(column.shape[0], math.nan)
    try:
        out[known] = column[known].astype(np.float64)
    except ValueError:          # whitespace, words, ...: row by row
        raise _SlowPath from None
    _non_negative(out[known])
    return out


_FLAG_KEYS = {int.from_bytes(w.encode().ljust(8, b"\0"), "little"): v for w, v in _FLAG_WORDS.items() if w}
_FLAG_KEY_ARRAY = np.array(sorted(_FLAG_KEYS), dtype=np.uint64)
_FLAG_KEY_VALUES = np.array([_FLAG_KEYS[k] for k in sorted(_FLAG_KEYS)])


def _flags(column: np.ndarray) -> np.ndarray:
    """``hasTrendingSound`` words (true/false, 1/0, yes/no, ...; case-insensitive)."""
    B = _cells(column)
    head = np.ascontiguousarray(B[:, :8])
    head += ((head >= 65) & (head <= 90)).astype(np.uint8) * np.uint8(32)       # lower-case ASCII
    key = head.view("<u8").ravel()
    where = np.minimum(np.searchsorted(_FLAG_KEY_ARRAY, key), _FLAG_KEY_ARRAY.size - 1)
    known = _FLAG_KEY_ARRAY[where] == key
    out = np.zeros(column.shape[0])
    out[known] = _FLAG_KEY_VALUES[where[known]]
    for i in np.flatnonzero(~known).tolist():        # blank, padded, ...: the reference rule
        try:
            out[i] = _FLAG_WORDS[_text(B[i]).strip().lower()]
        except KeyError:
            raise _SlowPath from None
    return out


def _civil_days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorised days-from-civil)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


_CANONICAL_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_CANONICAL_MARKS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":"), 19: ord("Z")}
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _posted(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC weekday (Monday = 0) and hour of ``postedAt``, shape (n,) each.

    Canonical ``YYYY-mm-ddTHH:MM:SSZ`` cells are validated and converted in bulk
    (what ``datetime.fromisoformat`` accepts of that form); any other cell goes
    through :func:`parse_posted_at`.
    """
    B = _cells(column)
    ok = B[:, 20] == 0
    for col, mark in _CANONICAL_MARKS.items():
        ok &= B[:, col] == mark
    D = B[:, _CANONICAL_DIGITS].astype(np.int64) - 48
    ok &= ((D >= 0) & (D <= 9)).all(axis=1)
    year = D[:, 0] * 1000 + D[:, 1] * 100 + D[:, 2] * 10 + D[:, 3]
    month, day = D[:, 4] * 10 + D[:, 5], D[:, 6] * 10 + D[:, 7]
    hh, mm, ss = D[:, 8] * 10 + D[:, 9], D[:, 10] * 10 + D[:, 11], D[:, 12] * 10 + D[:, 13]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _MONTH_DAYS[np.where(month_ok, month, 0)] + (leap & (month == 2))
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= last_day) & (hh <= 23) & (mm <= 59) & (ss <= 59)
    weekday = ((_civil_days(year, month, day) + 3) % 7).astype(np.float64)     # 1970-01-01: a Thursday
    hour = hh.astype(np.float64)
    for i in np.flatnonzero(~ok).tolist():
        try:
            posted = parse_posted_at(_text(B[i]))
        except (ValueError, OverflowError, OSError):
            raise _SlowPath from None
        weekday[i], hour[i] = posted.weekday(), posted.hour
    return weekday, hour


def _numpy_block(block: bytes, spec: _BlockSpec) -> dict[str, np.ndarray]:
    """One block of whole lines (no quotes, no trailing newline) as RawVideos columns.

    NumPy's C tokenizer (:func:`np.loadtxt`) splits the lines and converts the
    numeric cells (the same correctly rounded conversion as ``float``); words,
    blanks and timestamps are then decoded in bulk from fixed-width byte fields.

    Raises
    ------
    _SlowPath
        For anything this path does not handle exactly as the row-by-row reader
        (a ragged or comma-only line, a bad cell, an odd number): the caller redoes
        the block row by row, which names the line and column of an error.
    """
    try:
        table = np.loadtxt(io.BytesIO(block), delimiter=",", dtype=spec.dtype, comments=None, ndmin=1)
    except ValueError:
        raise _SlowPath from None
    out = {name: _non_negative(table[name]) for name in (*RAW_NUMERIC_FIELDS, "captionLength")}
    out["followers"] = (_followers(table["followers"]) if "followers" in (spec.dtype.names or ())
                        else np.full(table.shape[0], math.nan))
    out["hasTrendingSound"] = _flags(table["hasTrendingSound"])
    out["weekday"], out["hour"] = _posted(table["postedAt"])
    return out


#: Lines per block of the NumPy reader: its temporaries (the tokenized table, the
#: separator offsets) stay around 10 MB whatever the file size.
NUMPY_BLOCK_ROWS = 16_384


def _line_ends(arr: np.ndarray, start: int, end: int, window: int = 1 << 22) -> np.ndarray:
    """Offsets of the newlines in ``arr[start:end]``, then ``end``: searched in 4 MiB windows,
    so the temporary mask is 4 MB rather than the size of the file."""
    parts = [np.flatnonzero(arr[a:min(a + window, end)] == 10) + a for a in range(start, end, window)]
    parts.append(np.array([end]))
    return np.concatenate(parts)


def _read_csv_bytes(data: bytes, start: int, header: list[str], source: str) -> RawVideos:
    """The NumPy reader: blocks of lines, columns preallocated.

    ``data[start:]`` is everything after the header line. Memory: the file, the
    output columns, and per-block temporaries of a few MB.
    """
    spec = _block_spec(header)
    arr = np.frombuffer(data, dtype=np.uint8)
    end = len(data)
    while end > start and data[end - 1] in b"\r\n":     # trailing blank lines (no 68 MB rstrip copy)
        end -= 1
    if end <= start:
        raise DataValidationError("no data rows after the header", location=source or None)
    line_ends = _line_ends(arr, start, end)
    n_lines = line_ends.size
    columns = {name: np.empty(n_lines) for name in RawVideos.__slots__}
    filled = 0
    for i0 in range(0, n_lines, NUMPY_BLOCK_ROWS):
        i1 = min(i0 + NUMPY_BLOCK_ROWS, n_lines)
        b0 = start if i0 == 0 else int(line_ends[i0 - 1]) + 1
        b1 = int(line_ends[i1 - 1])
        try:
            block = _numpy_block(data[b0:b1], spec)
        except _SlowPath:
            raw = _rows_block(data[b0:b1].decode(), header, first_line=2 + i0, source=source)
            block = {name: getattr(raw, name) for name in RawVideos.__slots__}
        m = block["views"].shape[0]
        for name, column in columns.items():
            column[filled:filled + m] = block[name]
        filled += m
    if filled == 0:
        raise DataValidationError("no data rows after the header", location=source or None)
    return RawVideos(**{name: column[:filled] if filled < n_lines else column for name, column in columns.items()})


def read_csv(data: bytes, source: str = "") -> RawVideos:
    """Parse raw video records from CSV (header row first).

    Files without quotes, with ``\\n`` or ``\\r\\n`` line ends and a ``captionLength``
    column (what exports and ``sample-data`` write) are parsed with NumPy's C
    tokenizer, block by block; anything else is read with the :mod:`csv` module. Both give identical arrays
    and the same errors, naming the physical line and the column.
    """
    if not data.isascii():
        _decode(data, source)               # the UTF-8 check, with the byte offset of a bad byte
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    header_end = data.find(b"\n", start)
    header_end = len(data) if header_end < 0 else header_end
    header_line = data[start:header_end].decode().removesuffix("\r")
    header = [h.strip() for h in header_line.split(",")]
    simple = (b'"' not in data and b"\0" not in data and (b"\r" not in data or data.count(b"\r") == data.count(b"\r\n"))
              and bool(header_line.strip()) and (len(header) > MAX_COLUMNS or "captionLength" in header))
    if not simple:      # quotes, lone CRs, captions to measure: the csv module
        return _read_csv_module(data.decode("utf-8-sig"), source)
    _check_header(header, source)
    return _read_csv_bytes(data, header_end + 1, header, source)


def read_jsonl(data: bytes, source: str = "") -> RawVideos:
    """Parse raw video records from JSON Lines (blank lines are skipped).

    Lines are separated by ``\\n`` (or ``\\r\\n``); each is parsed with the same
    depth bound and duplicate-key refusal as seed JSON.
    """
    _decode(data, source)       # one UTF-8 check with the byte offset, instead of one per line
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    builder = RawColumnsBuilder(location=source or None)
    for line_no, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_training_json(line, source, row=line_no)
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


#: Rows featurised at a time: bounds the ratio temporaries of :func:`extract_features`.
FEATURE_BLOCK_ROWS = 65_536


def _features(raw: RawVideos, prep: Preprocessing) -> np.ndarray:
    """``extract_features`` block by block into one (n, 15) array (the same values)."""
    n = len(raw)
    if n <= FEATURE_BLOCK_ROWS:
        return extract_features(raw, prep)
    X = np.empty((n, N_FEATURES))
    for start in range(0, n, FEATURE_BLOCK_ROWS):
        block = slice(start, min(start + FEATURE_BLOCK_ROWS, n))
        X[block] = extract_features(RawVideos(**{name: getattr(raw, name)[block] for name in RawVideos.__slots__}),
                                    prep)
    return X


#: Columns that only hold small integers (0..23) are kept as uint8 in a training set:
#: 21 bytes per row less, and the same features (uint8 / float is float64 in NumPy).
_COMPACT_COLUMNS = {"weekday": np.dtype(np.uint8), "hour": np.dtype(np.uint8),
                    "hasTrendingSound": np.dtype(np.uint8)}


def _split_columns(columns: dict[str, np.ndarray], train_idx: np.ndarray, test_idx: np.ndarray
                   ) -> tuple[RawVideos, RawVideos]:
    """Both splits of raw columns, taken one column at a time and consuming ``columns``.

    Each column's train and test rows go into one new array (the splits are views
    of it) and the old column is released before the next: the extra memory is
    one column, not a second copy of the table.
    """
    n_train = train_idx.size
    train: dict[str, np.ndarray] = {}
    test: dict[str, np.ndarray] = {}
    for name in list(columns):
        column = columns.pop(name)
        both = np.empty(n_train + test_idx.size, dtype=_COMPACT_COLUMNS.get(name, column.dtype))
        np.take(column, train_idx, out=both[:n_train])
        np.take(column, test_idx, out=both[n_train:])
        del column
        train[name], test[name] = both[:n_train], both[n_train:]
    return RawVideos(**train), RawVideos(**test)


def _build_training_set(columns: dict[str, np.ndarray], *, source: str, sha256: str, fmt: DataFormat,
                        test_fraction: float, seed: int, tiering: Tiering | None,
                        label_views: np.ndarray | None = None) -> TrainingSet:
    outcome = columns["views"] if label_views is None else label_views
    fitted_tiering = fit_tiering(outcome, tiering)
    tiers = assign_tiers(outcome, fitted_tiering)
    del outcome
    if np.unique(tiers).size < 2:
        raise DataValidationError("all videos fall in one tier; at least 2 are needed", location=source or None)
    train_idx, test_idx = stratified_split(tiers, test_fraction, seed)
    raw_train, raw_test = _split_columns(columns, train_idx, test_idx)
    prep = fit_preprocessing(raw_train)
    tiers = tiers.astype(np.int8)           # 1..5: one byte per row instead of eight
    train = Split(_features(raw_train, prep), tiers[train_idx], raw_train)
    test = Split(_features(raw_test, prep), tiers[test_idx], raw_test)
    _check_splits(train, test, source)
    return TrainingSet(fmt, source, sha256, train, test, prep, fitted_tiering,
                       "views" if label_views is None else "labelViews")


def build_training_set(raw: RawVideos, *, source: str, sha256: str, fmt: DataFormat,
                       test_fraction: float = 0.2, seed: int = 42, tiering: Tiering | None = None,
                       label_views: np.ndarray | None = None) -> TrainingSet:
    """Label, split and featurise raw videos (caps fitted on the training split).

    ``label_views`` (shape (n_samples,)), when given, replaces ``views`` as the
    source of the tiers (see :mod:`virality.data.labels`).
    """
    columns = {name: getattr(raw, name) for name in RawVideos.__slots__}
    return _build_training_set(columns, source=source, sha256=sha256, fmt=fmt, test_fraction=test_fraction,
                               seed=seed, tiering=tiering, label_views=label_views)


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
    from virality.data.labels import read_label_views

    label_views = read_label_views(data, fmt, source)
    if label_views is not None and label_views.shape[0] != len(raw):
        raise DataValidationError(f"{label_views.shape[0]} labelViews values for {len(raw)} records",
                                  location=source or None, column="labelViews")
    # Hand the columns over without keeping `raw`: the split then replaces them one by one.
    columns = {name: getattr(raw, name) for name in RawVideos.__slots__}
    del raw
    return _build_training_set(columns, source=source, sha256=digest, fmt=fmt, test_fraction=test_fraction,
                               seed=seed, tiering=tiering, label_views=label_views)


def records_to_jsonl(records: Iterable[Mapping[str, object]]) -> bytes:
    """Serialise raw records as JSON Lines."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
