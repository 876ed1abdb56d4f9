"""Hostile training files are bad data (DataValidationError), never a crash or a silent choice.

Issue 9, section 4: a document nested 100,000 deep, duplicated keys, absurdly wide CSV headers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from virality.data import readers
from virality.data.datasets import load_training_data
from virality.data.readers import csv_records, seed_json
from virality.data.readers.csv_records import MAX_COLUMNS, read_csv
from virality.data.readers.json_lines import read_jsonl
from virality.data.readers.seed_json import read_seed_json
from virality.errors import DataValidationError
from virality.services import training
from virality_dev.synthetic import sample_csv, sample_records

DEPTH = 100_000


def _deep(depth: int = DEPTH) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# --------------------------------------------------------------------------- nesting depth


@pytest.mark.parametrize("source", ["seed.json", "noext", "upload.jsonl"])
def test_deeply_nested_document_is_a_data_error(source):
    # Given a file that is one object nested 100,000 deep (about 600 kB)
    # When it is loaded, by any name, Then it is refused as bad data, not with RecursionError
    with pytest.raises(DataValidationError, match="nested too deeply"):
        load_training_data(_deep(), source)


def test_deeply_nested_seed_value_is_a_data_error(seed_json_doc):
    text = json.dumps(seed_json_doc).replace('"labels": [', '"labels": [' + "[" * DEPTH + "]" * DEPTH + ", ", 1)
    with pytest.raises(DataValidationError, match="nested too deeply"):
        read_seed_json(text.encode(), "seed.json")


def test_deeply_nested_jsonl_line_names_its_line():
    lines = [json.dumps(r) for r in sample_records(4)]
    lines.insert(2, '{"views": ' + "[" * DEPTH + "]" * DEPTH + "}")       # line 3
    with pytest.raises(DataValidationError) as info:
        read_jsonl("\n".join(lines).encode(), "x.jsonl")
    assert info.value.row == 3 and "nested too deeply" in str(info.value)


def test_train_file_reports_deep_json_as_data_error_not_training_failure(monkeypatch):
    # The retrain handler retries everything that is not a ViralityError: this must not be retried
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("fit was called on bad data"))
    with pytest.raises(DataValidationError):
        training.train_file(_deep(), "training-data/deep.json")


# --------------------------------------------------------------------------- duplicated keys


def test_duplicated_top_level_key_is_refused(seed_json_doc):
    # Given a seed file with "trainSet" twice (json.loads kept the last copy, silently)
    text = json.dumps(seed_json_doc)
    test_set = json.dumps(seed_json_doc["testSet"])
    doctored = text[:-1] + ', "trainSet": ' + test_set + "}"
    with pytest.raises(DataValidationError) as info:
        load_training_data(doctored.encode(), "seed.json")
    assert "duplicated key" in str(info.value) and "trainSet" in str(info.value)


def test_duplicated_nested_key_is_refused(seed_json_doc):
    text = json.dumps(seed_json_doc).replace('"labels": [', '"labels": [1], "labels": [', 1)
    with pytest.raises(DataValidationError, match=r"duplicated key.*labels"):
        read_seed_json(text.encode(), "seed.json")


def test_duplicated_key_in_a_jsonl_record_names_its_line():
    lines = [json.dumps(r, separators=(",", ":")) for r in sample_records(5)]
    lines[3] = lines[3][:-1] + ',"views":1}'                                # line 4
    with pytest.raises(DataValidationError) as info:
        load_training_data("\n".join(lines).encode(), "x.jsonl")
    assert info.value.row == 4 and "duplicated key" in str(info.value) and "views" in str(info.value)


# --------------------------------------------------------------------------- wide headers


def _with_extra_columns(n_extra: int, rows: int = 40) -> bytes:
    header, *body = sample_csv(rows, 3).decode().splitlines()
    extra = ",".join(f"x{i}" for i in range(n_extra))
    blanks = "," * (n_extra - 1)
    return "\n".join([f"{header},{extra}", *(f"{line},{blanks}" for line in body)]).encode() + b"\n"


def test_header_of_max_columns_is_accepted():
    data = _with_extra_columns(MAX_COLUMNS - 12)
    assert len(read_csv(data, "wide.csv")) == 40


def test_header_over_max_columns_is_refused_before_the_rows():
    # Given a header of 1,001 columns (the required 12 among them) and valid rows
    data = _with_extra_columns(MAX_COLUMNS - 11)
    # Then the file is refused on line 1, naming the limit
    with pytest.raises(DataValidationError) as info:
        read_csv(data, "wide.csv")
    assert info.value.row == 1 and "1,001 columns" in str(info.value) and "at most 1,000" in str(info.value)


def test_header_only_file_of_100k_columns_is_refused():
    data = ",".join(f"c{i}" for i in range(100_000)).encode() + b"\n"
    with pytest.raises(DataValidationError, match="100,000 columns"):
        load_training_data(data, "wide.csv")


class _NoScan(list):
    """A header that fails the test if it is searched element by element (a quadratic check)."""

    def count(self, value):
        raise AssertionError("header.count() scans the header once per column")

    def index(self, value, *args):
        raise AssertionError("header.index() scans the header once per column")


def test_header_check_is_linear_and_names_duplicates():
    names = [f"c{i}" for i in range(MAX_COLUMNS - 14)] + list(csv_records.REQUIRED_COLUMNS) + ["caption", "c7"]
    with pytest.raises(DataValidationError) as info:
        csv_records._check_header(_NoScan(names), "dup.csv")
    assert info.value.column == "c7" and "duplicated" in str(info.value)
    csv_records._check_header(_NoScan(names[:-1]), "ok.csv")


# --------------------------------------------------------------------------- seed JSON: fast path == checked path


def test_plain_seed_document_takes_the_vectorised_path_and_matches_the_checked_one(seed_json_doc, monkeypatch):
    data = json.dumps(seed_json_doc).encode()
    checked: list[str] = []
    real = seed_json._seed_split_checked
    monkeypatch.setattr(seed_json, "_seed_split_checked", lambda *a: checked.append(a[1]) or real(*a))
    fast_train, fast_test = read_seed_json(data, "seed.json")
    assert checked == []                                       # nothing needed the value-by-value check
    doc = json.loads(data)
    slow_train = real(doc["trainSet"], "trainSet", "seed.json")
    np.testing.assert_array_equal(fast_train.X, slow_train.X)
    np.testing.assert_array_equal(fast_train.tiers, slow_train.tiers)
    assert fast_test.X.shape == (len(seed_json_doc["testSet"]["labels"]), 15)


@pytest.mark.parametrize("value", [True, "0.5", None])
def test_values_numpy_would_convert_silently_still_name_row_and_column(seed_json_doc, value):
    doc = json.loads(json.dumps(seed_json_doc))
    doc["testSet"]["features"][4][1] = value
    with pytest.raises(DataValidationError) as info:
        read_seed_json(json.dumps(doc).encode(), "seed.json")
    assert (info.value.row, info.value.column) == (4, "commentRate")


@pytest.mark.parametrize("word", ["false", "null", "NaN", "Infinity"])
def test_words_among_the_numbers_leave_the_plain_path(seed_json_doc, word):
    doc = json.dumps(seed_json_doc)
    assert seed_json._plain_numbers(doc.encode())
    spoiled = doc.replace("[[", f"[[{word}, ", 1)              # a word in the first feature row
    assert not seed_json._plain_numbers(spoiled.encode())


def test_a_long_first_line_is_classified_without_its_end(monkeypatch):
    monkeypatch.setattr(seed_json, "DETECT_PARSE_BYTES", 64)
    seed_line = b'{"featureNames": [' + b"0," * 100 + b'0], "trainSet": {}}'
    assert readers.detect_format(seed_line) == "seed-json"
    assert readers.detect_format(b"\n" + seed_line[:40] + b" " * 80 + b'"trainSet": 1}\n') == "seed-json"
    jsonl = b'{"views": 1, "caption": "' + b"x" * 200 + b'"}\n{"views": 2, "trainSet": 3}\n'
    assert readers.detect_format(jsonl) == "jsonl"            # the key is on a later line only


def test_handed_over_file_bytes_are_not_kept_by_the_holder():
    """FileBytes gives the loader the only reference, so it can free the file once parsed."""
    from virality.data.datasets import FileBytes, load_training_data
    from virality_dev.synthetic import sample_csv

    data = sample_csv(300, 7)
    handed = FileBytes(data)
    expected = load_training_data(data, "x.csv")
    got = load_training_data(handed, "x.csv")
    assert np.array_equal(got.train.X, expected.train.X) and got.sha256 == expected.sha256
    with pytest.raises(RuntimeError, match="already taken"):
        handed.take()


def test_retrain_hands_the_s3_body_over_to_the_reader(monkeypatch):
    """The retrain path keeps no reference to the body, so the reader can free it once parsed."""
    from virality.services import retraining
    from virality.services.training import TrainingConfig
    from virality.store.s3 import SourceObject

    source = SourceObject("b", "training-data/x.csv", None, '"e"', sample_csv(50, 1), {})
    seen = []

    def loader(data, where, **kwargs):
        seen.append((type(data).__name__, source.body))
        raise DataValidationError("stop here")

    monkeypatch.setattr(retraining, "load_training_data", loader)
    with pytest.raises(DataValidationError, match="stop here"):
        retraining.retrain(None, source, TrainingConfig(), None)      # type: ignore[arg-type]
    assert seen == [("FileBytes", b"")]
