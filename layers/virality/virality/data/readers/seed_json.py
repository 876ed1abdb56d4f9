"""``seed-json``: the original ``{"featureNames": [...15], "trainSet": {"features": [[15 floats]...],
"labels": [1..5 ...]}, "testSet": {...}}``; features are used as given (they must lie in [0, 1])."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jiter
import numpy as np

from virality.data.readers.common import _parse_training_json
from virality.data.split import Split
from virality.errors import DataValidationError
from virality.ml.features import (
    FEATURE_NAMES,
    N_FEATURES,
)

#: A first line longer than this is not parsed to tell seed JSON from JSON Lines:
#: a seed file written on one line is the whole document, and parsing it twice was
#: the most expensive step of detection.
DETECT_PARSE_BYTES = 1 << 20
_SEED_KEYS = (b'"trainSet"', b'"featureNames"')


def looks_like(data: bytes, start: int, source: str) -> bool:
    """Whether ``data`` (first non-blank byte at ``start``) is one seed document rather than JSON Lines.

    Reads at most the first line, and parses it only when it is shorter than
    :data:`DETECT_PARSE_BYTES`; longer lines are classified by their keys.
    """
    if data[start:start + 1] != b"{" or source.lower().endswith((".jsonl", ".ndjson")):
        return False
    # A seed file is one JSON document (usually spread over many lines or with
    # "trainSet" on its first line); JSON Lines has a whole object per line.
    end = data.find(b"\n", start, start + DETECT_PARSE_BYTES + 1)
    if end < 0 and len(data) - start > DETECT_PARSE_BYTES:
        # A first line longer than the limit: a seed key early on it settles it without
        # scanning a one-line 50 MB document for its end; otherwise look along the whole line.
        window = start + DETECT_PARSE_BYTES
        if any(data.find(k, start, window) >= 0 for k in _SEED_KEYS):
            return True
        end = data.find(b"\n", window)
        end = len(data) if end < 0 else end
        return any(data.find(k, start, end) >= 0 for k in _SEED_KEYS)
    end = len(data) if end < 0 else end
    try:
        obj = jiter.from_json(data[start:end], allow_inf_nan=True)
    except ValueError:      # not a whole document on one line (or too deep): not JSON Lines
        return True
    return isinstance(obj, dict) and ("trainSet" in obj or "featureNames" in obj)


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


#: What a document of plain numbers holds besides its strings and braces: dropped in one
#: pass (``bytes.translate``), what is left is small enough to look at in Python.
_NUMBER_BYTES = b"0123456789+-.eE,[] \t\r\n"


def _plain_numbers(body: bytes) -> bool:
    """True when the only strings are the seed keys and names and nothing else is a word
    (``true``, ``false``, ``null``, ``NaN``): one pass over the document instead of four."""
    rest = body.translate(None, _NUMBER_BYTES)
    parts = rest.split(b'"')
    return len(parts) == _SEED_QUOTES + 1 and all(not p.strip(b"{}:") for p in parts[::2])


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
    plain = len(doc) == 3 and _plain_numbers(body)
    return _seed_split(doc, "trainSet", source, plain), _seed_split(doc, "testSet", source, plain)
