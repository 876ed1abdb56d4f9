"""One reader per training-data format, behind one registry.

Adding a format is one module here (its parser and a ``looks_like`` sniffer) plus one
:class:`Reader` entry in :data:`READERS`. Detection asks the readers in order; the last
one (CSV) takes whatever the others declined.

Formats
-------
``seed-json``  the original document with its own train/test split (:mod:`.seed_json`).
``jsonl``      one raw video record per line (:mod:`.json_lines`).
``csv``        a header row of raw video records (:mod:`.csv_records`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from virality.data import labels
from virality.data.readers import csv_records, json_lines, seed_json
from virality.data.split import Split
from virality.errors import DataValidationError
from virality.ml.features import RawVideos

#: A training format's name, a key of :data:`READERS` (recorded as the artifact's ``data.format``).
DataFormat = str


@dataclass(frozen=True, slots=True)
class Reader:
    """How one format is recognised and read.

    Attributes
    ----------
    name : str
    looks_like : callable ``(data, start, source) -> bool``
        Whether the file (first non-blank byte at ``start``, named ``source``) is in this format.
    read_records : callable ``(data, source) -> RawVideos``, optional
        Raw video records, labelled, split and featurised by :mod:`virality.data.datasets`.
    read_splits : callable ``(data, source) -> (train, test)``, optional
        For formats that carry their own labelled split of features (seed JSON).
    label_views : callable ``(data, source) -> ndarray or None``, optional
        The ``labelViews`` column (label horizon), same rows as ``read_records``.
    """

    name: str
    looks_like: Callable[[bytes, int, str], bool]
    read_records: Callable[[bytes, str], RawVideos] | None = None
    read_splits: Callable[[bytes, str], tuple[Split, Split]] | None = None
    label_views: Callable[[bytes, str], np.ndarray | None] | None = None


def _anything(data: bytes, start: int, source: str) -> bool:
    return True


#: In detection order.
READERS: dict[str, Reader] = {r.name: r for r in (
    Reader("seed-json", seed_json.looks_like, read_splits=seed_json.read_seed_json),
    Reader("jsonl", json_lines.looks_like, read_records=json_lines.read_jsonl,
           label_views=labels.jsonl_label_views),
    Reader("csv", _anything, read_records=csv_records.read_csv, label_views=labels.csv_label_views),
)}


def detect_format(data: bytes, source: str = "") -> DataFormat:
    """The first reader that recognises ``data`` (after a BOM and blank space), by content and name.

    Raises
    ------
    DataValidationError
        An empty file.
    """
    start = len(data) - len(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    if start == len(data):
        raise DataValidationError("the file is empty", location=source or None)
    return next(r.name for r in READERS.values() if r.looks_like(data, start, source))


def reader(fmt: DataFormat) -> Reader:
    """The reader of ``fmt``.

    Raises
    ------
    DataValidationError
        No such format.
    """
    try:
        return READERS[fmt]
    except KeyError:
        raise DataValidationError(f"unknown format {fmt!r}; expected one of {', '.join(READERS)}") from None
