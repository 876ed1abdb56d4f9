"""The NumPy CSV reader gives exactly what the csv-module reader gives, errors included."""

from __future__ import annotations

import numpy as np
import pytest

from virality.data.datasets import load_training_data
from virality.data.readers import csv_records
from virality.data.readers.csv_records import read_csv
from virality.errors import DataValidationError
from virality.ml.features import RawVideos
from virality_dev.synthetic import sample_csv

HEADER = ["videoId", "views", "likes", "comments", "shares", "saves", "followers", "durationSeconds",
          "hashtagCount", "hasTrendingSound", "captionLength", "postedAt"]
COL = {name: j for j, name in enumerate(HEADER)}


def _rows(n: int) -> list[list[str]]:
    return [[f"v{i}", str(100 * (i + 1)), str(10 + i), "1", "2", "3", str(1000 + i), "30", "4",
             "true" if i % 2 else "false", "50", f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"] for i in range(n)]


def _csv(rows: list[list[str]], eol: str = "\n", final: str = "\n") -> bytes:
    return (eol.join([",".join(HEADER)] + [",".join(r) for r in rows]) + final).encode()


@pytest.fixture
def numpy_path(monkeypatch):
    """read_csv, asserting that every block went through the NumPy path."""

    def parse(data: bytes) -> RawVideos:
        blocks: list[str] = []
        real = csv_records._numpy_block

        def spy(*args):
            out = real(*args)
            blocks.append("numpy")
            return out

        with monkeypatch.context() as m:
            m.setattr(csv_records, "_numpy_block", spy)
            raw = read_csv(data, "x.csv")
        assert blocks, "the NumPy path was not taken"
        return raw

    return parse


def _reference(data: bytes) -> RawVideos:
    return csv_records._read_csv_module(data.decode("utf-8-sig"), "x.csv")


def _assert_same(a: RawVideos, b: RawVideos) -> None:
    for name in RawVideos.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.float64, name
        np.testing.assert_array_equal(x, y, err_msg=name)      # NaN == NaN here, values bit for bit


def test_sample_data_is_identical_to_the_csv_module(numpy_path):
    data = sample_csv(3000, seed=5)
    _assert_same(numpy_path(data), _reference(data))


@pytest.mark.parametrize(("eol", "final"), [("\n", "\n"), ("\r\n", "\r\n"), ("\n", ""), ("\n", "\n\n\n"),
                                            ("\r\n", "\r\n\r\n")])
def test_line_endings_and_trailing_blank_lines(numpy_path, eol, final):
    data = _csv(_rows(20), eol, final)
    raw = numpy_path(data)
    assert len(raw) == 20
    _assert_same(raw, _reference(data))


@pytest.mark.parametrize(("column", "cells"), [
    ("views", [" 2500 ", "1e1", "007", "1.", ".5", "-0", "12345678901234567", "0.1", "123456.789012345", "+3"]),
    ("durationSeconds", ["28.3", "0.30000000000000004", "1E2", "59.999999999999999999", "3", "4", "5", "6", "7",
                         "8"]),
    ("followers", ["", "  ", "0", " 77 ", "12", "1e3", "", "5", "6", "7"]),
    ("hasTrendingSound", ["TRUE", " yes ", "", "Y", "f", "No", "1", "0", "t", "False"]),
    ("postedAt", ["2024-02-29T23:59:59Z", "2025-03-10T23:30:00-01:00", "1741804200", "2025-03-12T18:30:00",
                  "2000-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2025-12-31T23:59:59Z", " 2025-01-01T05:00:00Z",
                  "2025-06-15T10:00:00+05:30", "9999-12-31T23:59:59Z"]),
])
def test_odd_but_valid_cells_match_the_csv_module(numpy_path, column, cells):
    rows = _rows(10)
    for row, cell in zip(rows, cells, strict=True):
        row[COL[column]] = cell
    data = _csv(rows)
    _assert_same(numpy_path(data), _reference(data))


def test_cells_longer_than_the_fixed_width_fields_are_read_exactly():
    rows = _rows(6)
    rows[1][COL["followers"]] = "1" * 40
    rows[2][COL["postedAt"]] = "2025-03-10T23:30:00.000000000000+00:00"
    rows[3][COL["hasTrendingSound"]] = "  true    "
    data = _csv(rows)
    raw = read_csv(data)
    _assert_same(raw, _reference(data))
    assert raw.followers[1] == float("1" * 40)


def test_unicode_in_other_columns_is_fine(numpy_path):
    rows = _rows(6)
    for row in rows:
        row[COL["videoId"]] = "vidéo-🎵"
    data = _csv(rows)
    _assert_same(numpy_path(data), _reference(data))


def test_weekday_and_hour_of_canonical_timestamps_in_bulk(numpy_path):
    # 2024-02-29 was a Thursday (3), 1970-01-01 a Thursday, 2000-01-01 a Saturday (5)
    rows = _rows(3)
    for row, ts in zip(rows, ["2024-02-29T07:00:00Z", "1970-01-01T00:59:59Z", "2000-01-01T23:00:00Z"], strict=True):
        row[COL["postedAt"]] = ts
    raw = numpy_path(_csv(rows))
    assert raw.weekday.tolist() == [3.0, 3.0, 5.0] and raw.hour.tolist() == [7.0, 0.0, 23.0]


# --------------------------------------------------------------------------- errors name the physical line


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(csv_records, "NUMPY_BLOCK_ROWS", 4)


@pytest.mark.parametrize(("column", "value", "fragment"), [
    ("shares", "lots", "not a number"),
    ("views", "nan", "finite"),
    ("likes", "1e400", "finite"),
    ("comments", "-1", ">= 0"),
    ("followers", "-3", ">= 0"),
    ("followers", "NaN", "finite"),
    ("durationSeconds", "", "empty"),
    ("hasTrendingSound", "sometimes", "true/false"),
    ("hasTrendingSound", "truest", "true/false"),
    ("postedAt", "2025-02-30T10:00:00Z", "ISO 8601"),
    ("postedAt", "2025-03-01T24:00:00Z", "ISO 8601"),
    ("postedAt", "2025-13-01T10:00:00Z", "ISO 8601"),
    ("postedAt", "0000-01-01T10:00:00Z", "ISO 8601"),
    ("postedAt", "", "missing"),
])
def test_a_bad_cell_in_a_later_block_names_its_line_and_column(small_blocks, column, value, fragment):
    rows = _rows(20)
    rows[9][COL[column]] = value                  # line 11 (header = line 1), in the third block
    with pytest.raises(DataValidationError) as info:
        load_training_data(_csv(rows), "bad.csv")
    assert (info.value.row, info.value.column) == (11, column)
    assert fragment in info.value.message


def test_a_line_with_extra_fields_is_refused_not_truncated(small_blocks):
    # np.loadtxt with usecols would silently drop the extra field
    rows = _rows(12)
    rows[6].append("surplus")                     # line 8
    with pytest.raises(DataValidationError) as info:
        read_csv(_csv(rows), "x.csv")
    assert info.value.row == 8 and "expected 12 fields, got 13" in str(info.value)


def test_a_line_with_missing_fields_is_refused(small_blocks):
    rows = _rows(12)
    rows[10] = rows[10][:-1]                      # line 12, the last column is missing
    with pytest.raises(DataValidationError) as info:
        read_csv(_csv(rows), "x.csv")
    assert info.value.row == 12 and "got 11" in str(info.value)


def test_blank_and_comma_only_lines_are_skipped_with_physical_line_numbers(small_blocks):
    lines = _csv(_rows(10)).decode().split("\n")
    lines.insert(3, "")                           # line 4
    lines.insert(6, ",,,,,,,,,,,")                # line 7
    bad = lines[9].split(",")                     # line 10
    bad[COL["views"]] = "x"
    lines[9] = ",".join(bad)
    with pytest.raises(DataValidationError) as info:
        read_csv("\n".join(lines).encode(), "x.csv")
    assert (info.value.row, info.value.column) == (10, "views")
    lines[9] = ",".join(_rows(10)[7])
    raw = read_csv("\n".join(lines).encode(), "x.csv")
    assert len(raw) == 10
    _assert_same(raw, _reference("\n".join(lines).encode()))


def test_block_boundaries_do_not_change_the_result(monkeypatch):
    data = sample_csv(500, seed=9)
    whole = read_csv(data)
    monkeypatch.setattr(csv_records, "NUMPY_BLOCK_ROWS", 7)
    _assert_same(read_csv(data), whole)


def test_the_training_set_from_the_numpy_path_equals_the_csv_module_one(monkeypatch, sample_csv_bytes):
    fast = load_training_data(sample_csv_bytes, "s.csv")
    monkeypatch.setattr(csv_records, "_numpy_block", lambda *a: (_ for _ in ()).throw(csv_records._SlowPath()))
    slow = load_training_data(sample_csv_bytes, "s.csv")
    np.testing.assert_array_equal(fast.train.X, slow.train.X)
    np.testing.assert_array_equal(fast.test.X, slow.test.X)
    np.testing.assert_array_equal(fast.train.tiers, slow.train.tiers)
    assert fast.preprocessing == slow.preprocessing
