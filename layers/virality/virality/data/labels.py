"""The optional label horizon: a ``labelViews`` column (CSV) or field (JSON Lines).

When a raw training file carries ``labelViews`` (the view count at the outcome
horizon, e.g. seven days after posting), tiers come from it, while features
still come from the record's own, earlier counts: the model becomes an
early-signal forecaster. Without it, tiers come from ``views`` as before.

This is a separate, small pass over the file so the main readers stay as
they are; it runs only when the file mentions ``labelViews`` at all.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from virality.errors import DataValidationError
from virality.ml.features import parse_number

LABEL_COLUMN = "labelViews"


def _value(value: object, row: int, source: str) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise DataValidationError("missing value: when the labelViews column is present every row needs it",
                                  location=source or None, row=row, column=LABEL_COLUMN)
    try:
        number = parse_number(value)
    except ValueError as exc:
        raise DataValidationError(str(exc), location=source or None, row=row, column=LABEL_COLUMN) from None
    if number < 0:
        raise DataValidationError(f"must be >= 0, got {number:g}", location=source or None, row=row,
                                  column=LABEL_COLUMN)
    return number


def _csv_label_views(text: str, source: str) -> np.ndarray | None:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    if LABEL_COLUMN not in header:
        return None
    j = header.index(LABEL_COLUMN)
    out = []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue            # the same blank-line rule as datasets.read_csv
        out.append(_value(row[j] if j < len(row) else None, reader.line_num, source))
    return np.asarray(out, dtype=np.float64)


def _jsonl_label_views(text: str, source: str) -> np.ndarray | None:
    records = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not any(isinstance(r, dict) and LABEL_COLUMN in r for _, r in records):
        return None
    return np.asarray([_value(r.get(LABEL_COLUMN), n, source) for n, r in records], dtype=np.float64)


def _text_with_labels(data: bytes) -> str | None:
    return data.decode("utf-8-sig") if LABEL_COLUMN.encode() in data else None


def csv_label_views(data: bytes, source: str = "") -> np.ndarray | None:
    """``labelViews`` of every CSV record, shape (n_samples,), or None when the file has none.

    Call after the main reader accepted the file (same rows, same order).

    Raises
    ------
    DataValidationError
        A row without a value, or a negative or non-numeric one, named by row and column.
    """
    text = _text_with_labels(data)
    return None if text is None else _csv_label_views(text, source)


def jsonl_label_views(data: bytes, source: str = "") -> np.ndarray | None:
    """``labelViews`` of every JSON Lines record (see :func:`csv_label_views`)."""
    text = _text_with_labels(data)
    return None if text is None else _jsonl_label_views(text, source)
