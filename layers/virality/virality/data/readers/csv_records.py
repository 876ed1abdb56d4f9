"""``csv``: a header row, then one raw video record per row (see :mod:`virality.ml.features`).

Two paths give identical arrays and the same errors: NumPy's C tokenizer block by block for the
plain files exports write, and the :mod:`csv` module (quotes, lone CRs, captions to measure)."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from virality.data.readers.common import _decode
from virality.errors import DataValidationError
from virality.ml.features import (
    FLAG_WORDS,
    RAW_NUMERIC_FIELDS,
    RawColumnsBuilder,
    RawVideos,
    parse_posted_at,
)

# --------------------------------------------------------------------------- raw records


class _SlowPath(Exception):
    """The vectorised CSV parse met something odd: redo it row by row for a precise error."""


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
        values["hasTrendingSound"] = np.array([FLAG_WORDS[v.strip().lower()] for v in columns["hasTrendingSound"]])
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


_FLAG_KEYS = {int.from_bytes(w.encode().ljust(8, b"\0"), "little"): v for w, v in FLAG_WORDS.items() if w}
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
            out[i] = FLAG_WORDS[_text(B[i]).strip().lower()]
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
