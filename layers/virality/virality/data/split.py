"""Labelled splits and the training set: the seeded stratified split, features with caps fitted on
the training split only, and the assembly of a :class:`TrainingSet` from raw columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from virality import NUM_CLASSES
from virality.errors import DataValidationError
from virality.ml.features import (
    N_FEATURES,
    Preprocessing,
    RawVideos,
    extract_features,
    fit_preprocessing,
)
from virality.ml.tiering import Tiering, assign_tiers, fit_tiering


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

    format: str                         # a reader name (virality.data.readers.READERS)
    source: str
    sha256: str
    train: Split
    test: Split
    preprocessing: Preprocessing | None
    tiering: Tiering | None
    label_column: str | None = None     # "views", or "labelViews" (label horizon); None for seed JSON


# --------------------------------------------------------------------------- split + assemble


def _distinct(tiers: np.ndarray) -> np.ndarray:
    """``np.unique(tiers)``; by counting (no sort or hash of n values) for small non-negative integers."""
    if tiers.dtype.kind in "iu" and tiers.size and int(tiers.min()) >= 0 and int(tiers.max()) < 1 << 16:
        return np.flatnonzero(np.bincount(tiers)).astype(tiers.dtype)
    return np.unique(tiers)


def stratified_split(tiers: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: per tier, ``round(n_c * test_fraction)`` rows go to test.

    A tier with at least two rows keeps at least one row on each side.
    Returns sorted index arrays ``(train_idx, test_idx)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataValidationError(f"test fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    in_test = np.zeros(tiers.shape[0], dtype=bool)
    for tier in _distinct(tiers):
        idx = rng.permutation(np.flatnonzero(tiers == tier))
        n_test = round(idx.size * test_fraction)
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        in_test[idx[:n_test]] = True
    # sorted index arrays by marking, not by sorting n indices
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def _check_splits(train: Split, test: Split, source: str) -> None:
    if train.X.shape[0] == 0:
        raise DataValidationError("the training split is empty", location=source or None)
    if test.X.shape[0] == 0:
        raise DataValidationError("the test split is empty (too few rows?)", location=source or None)
    n_classes = int(_distinct(train.tiers).size)
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


def _build_training_set(columns: dict[str, np.ndarray], *, source: str, sha256: str, fmt: str,
                        test_fraction: float, seed: int, tiering: Tiering | None,
                        label_views: np.ndarray | None = None) -> TrainingSet:
    outcome = columns["views"] if label_views is None else label_views
    fitted_tiering = fit_tiering(outcome, tiering)
    tiers = assign_tiers(outcome, fitted_tiering)
    del outcome
    if _distinct(tiers).size < 2:
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


def build_training_set(raw: RawVideos, *, source: str, sha256: str, fmt: str,
                       test_fraction: float = 0.2, seed: int = 42, tiering: Tiering | None = None,
                       label_views: np.ndarray | None = None) -> TrainingSet:
    """Label, split and featurise raw videos (caps fitted on the training split).

    ``label_views`` (shape (n_samples,)), when given, replaces ``views`` as the
    source of the tiers (see :mod:`virality.data.labels`).
    """
    columns = {name: getattr(raw, name) for name in RawVideos.__slots__}
    return _build_training_set(columns, source=source, sha256=sha256, fmt=fmt, test_fraction=test_fraction,
                               seed=seed, tiering=tiering, label_views=label_views)
