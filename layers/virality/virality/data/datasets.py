"""Loading a training file: detect its format, read it with its reader, label, split and featurise.

The readers (one module per format) are in :mod:`virality.data.readers`; the split and
the assembly of the :class:`~virality.data.split.TrainingSet` in :mod:`virality.data.split`.
Raw formats are labelled with :mod:`virality.ml.tiering`, split into train/test with a
seeded stratified split, and turned into features with caps fitted on the training split
only. Nothing here trains: bad data raises :class:`~virality.errors.DataValidationError`
naming the row and column.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping

from virality.data.readers import DataFormat, detect_format, reader
from virality.data.split import TrainingSet, _build_training_set, _check_splits
from virality.errors import DataValidationError
from virality.ml.features import RawVideos
from virality.ml.tiering import Tiering


class FileBytes:
    """The bytes of a training file, handed over to :func:`load_training_data`.

    A caller that keeps no other reference lets the loader free the file as soon
    as it is tokenised, before the feature table is built: the file (68 B per CSV
    row) is then no longer part of the peak (see docs/spark.md, "Scaling").
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def take(self) -> bytes:
        """The bytes, once; this holder keeps no reference to them afterwards."""
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("the file bytes were already taken")
        return data


def _sha256_beside(data: bytes) -> Callable[[], str]:
    """The file's SHA-256, computed on another thread while this one parses (hashlib releases
    the GIL); call the result to wait for it."""
    box: list[str] = []
    worker = threading.Thread(target=lambda: box.append(hashlib.sha256(data).hexdigest()), daemon=True)
    worker.start()

    def result() -> str:
        worker.join()
        return box[0]

    return result


def load_training_data(data: bytes | FileBytes, source: str = "", *, fmt: DataFormat | None = None,
                       test_fraction: float = 0.2, seed: int = 42, tiering: Tiering | None = None) -> TrainingSet:
    """Detect, parse, validate and split a training file.

    Parameters
    ----------
    data : bytes or FileBytes
        The whole file; handed over as :class:`FileBytes`, it is freed once
        parsed (raw formats), before the features are built.
    source : str
        Its name (S3 key or path), used in messages and provenance.
    fmt : {"seed-json", "csv", "jsonl"}, optional
        Skip detection.

    Raises
    ------
    DataValidationError
    """
    if isinstance(data, FileBytes):
        data = data.take()
    fmt = fmt or detect_format(data, source)
    fmt_reader = reader(fmt)
    digest = _sha256_beside(data)
    if fmt_reader.read_splits is not None:
        train, test = fmt_reader.read_splits(data, source)
        _check_splits(train, test, source)
        return TrainingSet(fmt, source, digest(), train, test, None, None)
    assert fmt_reader.read_records is not None
    raw = fmt_reader.read_records(data, source)
    label_views = None if fmt_reader.label_views is None else fmt_reader.label_views(data, source)
    if label_views is not None and label_views.shape[0] != len(raw):
        raise DataValidationError(f"{label_views.shape[0]} labelViews values for {len(raw)} records",
                                  location=source or None, column="labelViews")
    sha256 = digest()
    del data        # the last reference when the caller handed the file over: freed before the table is built
    # Hand the columns over without keeping `raw`: the split then replaces them one by one.
    columns = {name: getattr(raw, name) for name in RawVideos.__slots__}
    del raw
    return _build_training_set(columns, source=source, sha256=sha256, fmt=fmt, test_fraction=test_fraction,
                               seed=seed, tiering=tiering, label_views=label_views)


def records_to_jsonl(records: Iterable[Mapping[str, object]]) -> bytes:
    """Serialise raw records as JSON Lines."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
