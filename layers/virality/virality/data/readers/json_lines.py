"""``jsonl``: one raw video record (a JSON object) per line."""

from __future__ import annotations

from virality.data.readers.common import _decode, _parse_training_json
from virality.errors import DataValidationError
from virality.ml.features import (
    RawColumnsBuilder,
    RawVideos,
)


def looks_like(data: bytes, start: int, source: str) -> bool:
    """A JSON object first (after seed JSON declined the file)."""
    return data[start:start + 1] == b"{"


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
