"""Training-data readers: the three formats, detection, split, caps, and bad data named by row/column."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from virality.data.datasets import load_training_data, records_to_jsonl
from virality.data.readers import csv_records, detect_format
from virality.data.readers.csv_records import read_csv
from virality.data.readers.json_lines import read_jsonl
from virality.data.readers.seed_json import read_seed_json
from virality.data.split import stratified_split
from virality.errors import DataValidationError
from virality.ml.features import FEATURE_NAMES, RawVideos, extract_features, fit_preprocessing
from virality.ml.tiering import Tiering, assign_tiers
from virality.services import training
from virality_dev.synthetic import sample_records

HEADER = ["videoId", "views", "likes", "comments", "shares", "saves", "followers", "durationSeconds",
          "hashtagCount", "hasTrendingSound", "captionLength", "postedAt"]


def _csv(rows: list[list[object]], header: list[str] = HEADER) -> bytes:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _good_rows(n: int = 30) -> list[list[object]]:
    """n valid CSV rows with views 100, 200, ... (so quantile tiers are balanced)."""
    return [[f"v{i}", 100 * (i + 1), 10 + i, 1, 2, 3, 1000 + i, 30, 4, "true" if i % 2 else "false", 50,
             f"2025-03-{1 + i % 28:02d}T12:00:00Z"] for i in range(n)]


def _raw_equal(a: RawVideos, b: RawVideos) -> None:
    for name in RawVideos.__slots__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _load_error(data: bytes, source: str = "data.csv", **kwargs) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_training_data(data, source, **kwargs)
    return info.value


# --------------------------------------------------------------------------- the three formats


def test_seed_json_loads_as_given(seed_json_bytes, seed_json_doc):
    ts = load_training_data(seed_json_bytes, "seed.json")
    assert ts.format == "seed-json"
    assert ts.source == "seed.json"
    assert ts.sha256 == hashlib.sha256(seed_json_bytes).hexdigest()
    np.testing.assert_array_equal(ts.train.X, np.array(seed_json_doc["trainSet"]["features"]))
    assert ts.train.tiers.tolist() == seed_json_doc["trainSet"]["labels"]
    assert ts.test.tiers.tolist() == seed_json_doc["testSet"]["labels"]
    assert ts.train.y.tolist() == [t - 1 for t in seed_json_doc["trainSet"]["labels"]]
    assert ts.train.raw is None and ts.preprocessing is None and ts.tiering is None
    assert sum(ts.train.class_counts()) == 300 and len(ts.train.class_counts()) == 5


def test_seed_json_on_one_line_is_detected(seed_json_doc):
    data = json.dumps(seed_json_doc).encode()
    assert detect_format(data, "x") == "seed-json"
    assert load_training_data(data).train.X.shape == (300, 15)


def test_csv_and_jsonl_of_the_same_records_give_identical_training_sets(sample_csv_bytes, sample_jsonl_bytes):
    a = load_training_data(sample_csv_bytes, "s.csv")
    b = load_training_data(sample_jsonl_bytes, "s.jsonl")
    assert (a.format, b.format) == ("csv", "jsonl")
    np.testing.assert_array_equal(a.train.X, b.train.X)
    np.testing.assert_array_equal(a.test.X, b.test.X)
    np.testing.assert_array_equal(a.train.tiers, b.train.tiers)
    assert a.preprocessing == b.preprocessing and a.tiering == b.tiering
    _raw_equal(a.train.raw, b.train.raw)


def test_raw_format_training_set_is_labelled_split_and_featurised(training_set, sample_csv_bytes):
    ts = training_set
    assert ts.sha256 == hashlib.sha256(sample_csv_bytes).hexdigest()
    n_train, n_test = ts.train.X.shape[0], ts.test.X.shape[0]
    assert n_train + n_test == 1500
    assert set(ts.train.tiers.tolist()) == {1, 2, 3, 4, 5}
    # tiers follow the fitted cut points on views
    np.testing.assert_array_equal(ts.train.tiers, assign_tiers(ts.train.raw.views, ts.tiering))
    assert ts.tiering.method == "quantile" and len(ts.tiering.thresholds) == 4


def test_caps_are_fitted_on_the_training_split_only(training_set):
    ts = training_set
    assert ts.preprocessing == fit_preprocessing(ts.train.raw)
    np.testing.assert_array_equal(ts.train.X, extract_features(ts.train.raw, ts.preprocessing))
    np.testing.assert_array_equal(ts.test.X, extract_features(ts.test.raw, ts.preprocessing))
    everything = RawVideos(**{name: np.concatenate([getattr(ts.train.raw, name), getattr(ts.test.raw, name)])
                              for name in RawVideos.__slots__})
    assert fit_preprocessing(everything) != ts.preprocessing


def test_fixed_threshold_tiering_is_used_when_configured():
    rule = Tiering(method="thresholds", thresholds=(500, 1000, 1500, 2000))
    ts = load_training_data(_csv(_good_rows(30)), "t.csv", tiering=rule)
    assert ts.tiering == rule
    views = np.concatenate([ts.train.raw.views, ts.test.raw.views])
    tiers = np.concatenate([ts.train.tiers, ts.test.tiers])
    expected = 1 + (views >= 500).astype(int) + (views >= 1000) + (views >= 1500) + (views >= 2000)
    np.testing.assert_array_equal(tiers, expected)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(("data", "source", "expected"), [
    (b'{"featureNames": []}', "", "seed-json"),
    (b'{\n  "featureNames": []\n}', "", "seed-json"),
    (b'\xef\xbb\xbf  \n{"trainSet": {}}', "", "seed-json"),
    (b'{"views": 1}\n{"views": 2}\n', "", "jsonl"),
    (b'{"featureNames": []}\n', "upload.JSONL", "jsonl"),
    (b'{"views": 1}\n', "x.ndjson", "jsonl"),
    (b"views,likes\n1,2\n", "x.json", "csv"),
    (b"\n\nviews,likes\n1,2\n", "", "csv"),
])
def test_detect_format(data, source, expected):
    assert detect_format(data, source) == expected


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n", b"\xef\xbb\xbf"])
def test_empty_file_is_rejected(data):
    err = _load_error(data, "empty.csv")
    assert "empty" in str(err) and "empty.csv" in str(err)


def test_explicit_format_skips_detection(sample_jsonl_bytes):
    ts = load_training_data(sample_jsonl_bytes, "noext", fmt="jsonl")
    assert ts.format == "jsonl"


# --------------------------------------------------------------------------- stratified split


def test_stratified_split_is_seeded_deterministic_and_about_80_20_per_tier():
    tiers = np.repeat([1, 2, 3, 4, 5], [100, 57, 33, 11, 2])
    train, test = stratified_split(tiers, 0.2, seed=42)
    again_train, again_test = stratified_split(tiers, 0.2, seed=42)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    # a partition of all rows, sorted
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(tiers.size))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    # per tier: round(n_c * 0.2) held out (>= 1 when the tier has >= 2 rows)
    assert np.bincount(tiers[test], minlength=6)[1:].tolist() == [20, 11, 7, 2, 1]
    # another seed picks other rows
    other_train, _ = stratified_split(tiers, 0.2, seed=43)
    assert not np.array_equal(train, other_train)


def test_split_seed_changes_the_training_set_but_not_its_sizes(sample_csv_bytes, training_set):
    other = load_training_data(sample_csv_bytes, "sample.csv", seed=43)
    assert other.train.class_counts() == training_set.train.class_counts()
    assert not np.array_equal(other.train.raw.views, training_set.train.raw.views)
    same = load_training_data(sample_csv_bytes, "sample.csv", seed=42)
    np.testing.assert_array_equal(same.train.X, training_set.train.X)


def test_split_fraction_must_be_inside_unit_interval():
    with pytest.raises(DataValidationError):
        stratified_split(np.array([1, 1, 2, 2]), 1.0, seed=1)


# --------------------------------------------------------------------------- bad CSV


def test_missing_column_is_named():
    header = [h for h in HEADER if h != "likes"]
    rows = [[v for h, v in zip(HEADER, row, strict=True) if h != "likes"] for row in _good_rows(5)]
    err = _load_error(_csv(rows, header))
    assert err.column == "likes" and err.row == 1
    assert "missing column" in str(err) and "likes" in str(err)


def test_missing_caption_and_caption_length_is_named():
    header = [h for h in HEADER if h != "captionLength"]
    rows = [row[:10] + row[11:] for row in _good_rows(5)]
    err = _load_error(_csv(rows, header))
    assert "captionLength (or caption)" in str(err)


def test_duplicated_column_is_named():
    header = [*HEADER, "views"]
    rows = [[*row, 5] for row in _good_rows(5)]
    err = _load_error(_csv(rows, header))
    assert err.column == "views" and "duplicated" in str(err)


@pytest.mark.parametrize(("column", "value", "fragment"), [
    ("shares", "lots", "not a number"),
    ("views", "nan", "finite"),
    ("likes", "inf", "finite"),
    ("saves", "-inf", "finite"),
    ("comments", "-1", ">= 0"),
    ("followers", "-3", ">= 0"),
    ("followers", "NaN", "finite"),
    ("durationSeconds", "", "empty"),
    ("hasTrendingSound", "sometimes", "true/false"),
    ("captionLength", "-2", ">= 0"),
    ("postedAt", "not-a-date", "ISO 8601"),
    ("postedAt", "", "missing"),
])
def test_bad_cell_names_line_and_column(column, value, fragment):
    # Given a CSV whose 4th data row (line 5; the header is line 1) has one bad cell
    rows = _good_rows(10)
    rows[3][HEADER.index(column)] = value
    # When loaded, Then the error names line 5 and the column, and nothing is returned
    err = _load_error(_csv(rows), "bad.csv")
    assert (err.row, err.column, err.location) == (5, column, "bad.csv")
    assert fragment in err.message
    assert str(err).startswith(f"bad.csv, row 5, column {column!r}: ")


def test_row_numbers_are_physical_lines_even_after_blank_lines():
    text = _csv(_good_rows(6)).decode().split("\n")
    text.insert(2, "")                      # blank line 3
    lines = text[:]
    bad = lines[5].split(",")               # line 6
    bad[HEADER.index("views")] = "x"
    lines[5] = ",".join(bad)
    err = _load_error("\n".join(lines).encode())
    assert (err.row, err.column) == (6, "views")


def test_ragged_row_names_its_line():
    rows = _good_rows(6)
    rows[2] = rows[2][:-2]                  # line 4 has 10 fields
    err = _load_error(_csv(rows))
    assert err.row == 4
    assert "expected 12 fields, got 10" in str(err)


def test_header_only_csv_is_rejected():
    err = _load_error(_csv([]))
    assert "no data rows" in str(err)


def test_non_utf8_csv_is_rejected():
    data = _csv(_good_rows(3))[:-20] + b"\xff\xfe caf\xe9\n"
    err = _load_error(data, "latin1.csv")
    assert "UTF-8" in str(err) and "latin1.csv" in str(err)


def test_fewer_than_two_tiers_is_rejected():
    rows = _good_rows(10)
    for row in rows:
        row[1] = 500                       # every video has the same views
    err = _load_error(_csv(rows))
    assert "one tier" in str(err)


def test_empty_test_split_is_rejected():
    # five videos, one per tier: round(1 * 0.2) = 0 rows of each tier reach the test split
    err = _load_error(_csv(_good_rows(5)))
    assert "test split is empty" in str(err)


def test_bad_data_is_never_trained_on(monkeypatch):
    def fail_if_called(*args, **kwargs):
        raise AssertionError("fit was called on bad data")

    monkeypatch.setattr(training, "fit", fail_if_called)
    rows = _good_rows(30)
    rows[7][HEADER.index("likes")] = "-4"
    with pytest.raises(DataValidationError) as info:
        training.train_file(_csv(rows), "bad.csv")
    assert (info.value.row, info.value.column) == (9, "likes")


def test_bom_and_crlf_and_quoted_commas_are_fine():
    header = [*HEADER[:10], "caption", "postedAt"]
    rows = [[*r[:10], '"hi, there ""you"""', r[11]] for r in _good_rows(10)]
    data = b"\xef\xbb\xbf" + _csv(rows, header).replace(b"\n", b"\r\n")
    raw = read_csv(data, "x.csv")
    assert len(raw) == 10
    assert raw.captionLength.tolist() == [len('hi, there "you"')] * 10


# --------------------------------------------------------------------------- CSV fast path == slow path


@pytest.fixture
def both_paths(monkeypatch):
    """Parse with the vectorised path (asserting it was taken) and with the row-by-row path."""

    # Two vectorised paths: the byte-level reader (files without quotes) and the column
    # conversion after the csv module (quoted files); either counts as "fast".
    fast_paths = ("_vectorised_csv", "_numpy_block")

    def parse(data: bytes) -> tuple[RawVideos, RawVideos]:
        calls: list[str] = []

        def fast_only(real):
            def wrapper(*args):
                out = real(*args)          # a _SlowPath here skips the append
                calls.append("fast")
                return out
            return wrapper

        with monkeypatch.context() as m:
            for name in fast_paths:
                m.setattr(csv_records, name, fast_only(getattr(csv_records, name)))
            fast = read_csv(data, "x.csv")
        assert calls == ["fast"], "the vectorised path was not taken"

        def slow(*args):
            raise csv_records._SlowPath

        with monkeypatch.context() as m:
            for name in fast_paths:
                m.setattr(csv_records, name, slow)
            slow_raw = read_csv(data, "x.csv")
        return fast, slow_raw

    return parse


def test_fast_and_slow_csv_paths_agree_on_sample_data(both_paths, sample_csv_bytes):
    # The sample has blank followers cells and true/false flags
    fast, slow = both_paths(sample_csv_bytes)
    assert np.isnan(fast.followers).any()
    _raw_equal(fast, slow)


def test_fast_and_slow_csv_paths_agree_with_caption_text_and_odd_values(both_paths):
    header = [h if h != "captionLength" else "caption" for h in HEADER]
    rows = _good_rows(12)
    rows[0][HEADER.index("captionLength")] = '"a, b"'
    rows[1][HEADER.index("captionLength")] = ""
    rows[2][HEADER.index("captionLength")] = "  padded  "
    rows[3][HEADER.index("followers")] = ""
    rows[4][HEADER.index("followers")] = "  "
    rows[5][HEADER.index("hasTrendingSound")] = " YES "
    rows[6][HEADER.index("hasTrendingSound")] = ""
    rows[7][HEADER.index("postedAt")] = "2025-03-10T23:30:00-01:00"
    rows[8][HEADER.index("postedAt")] = "1741804200"
    rows[9][HEADER.index("postedAt")] = "2025-03-12T18:30:00"
    rows[10][HEADER.index("views")] = " 2500 "
    rows[11][HEADER.index("durationSeconds")] = "1e1"
    fast, slow = both_paths(_csv(rows, header))
    _raw_equal(fast, slow)
    assert fast.captionLength[:3].tolist() == [4.0, 0.0, 10.0]
    assert np.isnan(fast.followers[3]) and np.isnan(fast.followers[4])
    assert fast.hasTrendingSound[5:7].tolist() == [1.0, 0.0]
    assert (fast.weekday[7], fast.hour[7]) == (1.0, 0.0)
    assert (fast.weekday[8], fast.hour[8]) == (2.0, 18.0)


def test_slow_path_uses_caption_where_caption_length_is_blank():
    header = [*HEADER, "caption"]
    rows = [[*r, "abc"] for r in _good_rows(4)]
    rows[1][HEADER.index("captionLength")] = ""
    raw = read_csv(_csv(rows, header))
    assert raw.captionLength.tolist() == [50.0, 3.0, 50.0, 50.0]


# --------------------------------------------------------------------------- bad JSON Lines


def _jsonl(records: list[dict]) -> bytes:
    return records_to_jsonl(records)


def test_jsonl_invalid_json_names_the_line():
    lines = _jsonl(sample_records(5)).decode().splitlines()
    lines.insert(2, '{"views": 12,')           # line 3
    err = _load_error("\n".join(lines).encode(), "x.jsonl")
    assert err.row == 3 and "invalid JSON" in str(err) and "row 3" in str(err)


def test_jsonl_non_object_line_is_rejected():
    data = _jsonl(sample_records(3)) + b"[1, 2, 3]\n"
    err = _load_error(data, "x.jsonl")
    assert err.row == 4 and "JSON object" in str(err)


@pytest.mark.parametrize(("column", "value", "fragment"), [
    ("views", -1, ">= 0"), ("likes", "many", "not a number"), ("shares", True, "not a number"),
    ("saves", None, "not a number"),
])
def test_jsonl_bad_field_names_line_and_column(column, value, fragment):
    records = sample_records(6)
    records[4][column] = value                 # line 5
    err = _load_error(_jsonl(records), "x.jsonl")
    assert (err.row, err.column) == (5, column)
    assert fragment in err.message


def test_jsonl_huge_integer_is_a_data_error():
    # JSON integers are unbounded: 10**400 cannot become a float and must be reported, not crash
    records = sample_records(6)
    records[4]["views"] = 10**400              # line 5
    err = _load_error(_jsonl(records), "x.jsonl")
    assert (err.row, err.column) == (5, "views")


def test_jsonl_nan_literal_is_rejected():
    records = sample_records(4)
    text = _jsonl(records).decode().splitlines()
    text[1] = text[1].replace('"likes":', '"likes":NaN,"x":', 1)
    err = _load_error("\n".join(text).encode(), "x.jsonl")
    assert (err.row, err.column) == (2, "likes") and "finite" in str(err)


def test_jsonl_missing_field_is_named():
    records = sample_records(4)
    del records[0]["hashtagCount"]
    err = _load_error(_jsonl(records), "x.jsonl")
    assert (err.row, err.column) == (1, "hashtagCount") and "missing" in str(err)


def test_jsonl_blank_lines_are_skipped_and_only_blank_is_rejected():
    records = sample_records(3)
    data = b"\n" + _jsonl(records).replace(b"\n", b"\n\n")
    raw = read_jsonl(data, "x.jsonl")
    assert len(raw) == 3
    with pytest.raises(DataValidationError, match="no records"):
        read_jsonl(b"\n \n", "x.jsonl")


def test_jsonl_non_utf8_is_rejected():
    err = _load_error(b'{"views": "caf\xe9"}\n', "x.jsonl")
    assert "UTF-8" in str(err)


# --------------------------------------------------------------------------- bad seed JSON


def _seed_error(doc: dict) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        read_seed_json(json.dumps(doc).encode(), "seed.json")
    return info.value


def _copy(doc: dict) -> dict:
    return json.loads(json.dumps(doc))


@pytest.mark.parametrize("label", [0, 6, 2.5, "3", True, None, -1])
def test_seed_label_outside_1_to_5_names_the_row(seed_json_doc, label):
    doc = _copy(seed_json_doc)
    doc["testSet"]["labels"][17] = label
    err = _seed_error(doc)
    assert err.row == 17
    assert "testSet.labels" in str(err) and "row 17" in str(err) and "1..5" in str(err)


def test_seed_float_label_with_integer_value_is_accepted(seed_json_doc):
    doc = _copy(seed_json_doc)
    doc["trainSet"]["labels"][0] = 3.0
    train, _ = read_seed_json(json.dumps(doc).encode())
    assert train.tiers[0] == 3


@pytest.mark.parametrize(("value", "fragment"), [
    (1.5, "[0, 1]"), (-0.1, "[0, 1]"), ("0.5", "not a number"), (True, "not a number"), (None, "not a number"),
])
def test_seed_bad_feature_value_names_row_and_column(seed_json_doc, value, fragment):
    doc = _copy(seed_json_doc)
    doc["trainSet"]["features"][42][6] = value
    err = _seed_error(doc)
    assert (err.row, err.column, err.location) == (42, "durationSeconds", "trainSet.features")
    assert fragment in str(err)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_seed_non_finite_feature_is_rejected(seed_json_doc, literal):
    doc = _copy(seed_json_doc)
    doc["trainSet"]["features"][5][0] = 0.123456789
    text = json.dumps(doc).replace("0.123456789", literal, 1)
    with pytest.raises(DataValidationError) as info:
        read_seed_json(text.encode(), "seed.json")
    assert (info.value.row, info.value.column) == (5, "shareRate") and "finite" in str(info.value)


def test_seed_huge_integer_feature_is_a_data_error(seed_json_doc):
    # JSON integers are unbounded; 10**400 is not a finite float
    doc = _copy(seed_json_doc)
    doc["trainSet"]["features"][3][2] = 10**400
    err = _seed_error(doc)
    assert (err.row, err.column) == (3, "likeRate")


def test_seed_wrong_feature_order_is_named(seed_json_doc):
    doc = _copy(seed_json_doc)
    names = doc["featureNames"]
    names[3], names[4] = names[4], names[3]
    err = _seed_error(doc)
    assert err.column == "featureNames"
    assert "featureNames[3] must be 'saveRate'" in str(err) and "order" in str(err)


@pytest.mark.parametrize(("names", "fragment"), [
    (list(FEATURE_NAMES[:14]), "featureNames[14]"),
    ([*FEATURE_NAMES, "extra"], "16 names"),
    (None, "missing list 'featureNames'"),
    ("shareRate,commentRate", "missing list 'featureNames'"),
])
def test_seed_wrong_feature_names(seed_json_doc, names, fragment):
    doc = _copy(seed_json_doc)
    doc["featureNames"] = names
    assert fragment in str(_seed_error(doc))


def test_seed_row_of_wrong_length_names_the_row(seed_json_doc):
    doc = _copy(seed_json_doc)
    doc["trainSet"]["features"][9] = doc["trainSet"]["features"][9][:14]
    err = _seed_error(doc)
    assert err.row == 9 and "got 14" in str(err)


def test_seed_structural_errors(seed_json_doc):
    doc = _copy(seed_json_doc)
    del doc["testSet"]
    assert "testSet" in str(_seed_error(doc))
    doc = _copy(seed_json_doc)
    doc["trainSet"]["labels"].pop()
    assert "300 feature rows but 299 labels" in str(_seed_error(doc))
    doc = _copy(seed_json_doc)
    doc["trainSet"]["features"] = {"a": 1}
    assert _seed_error(doc).column == "trainSet.features"
    with pytest.raises(DataValidationError, match="invalid JSON"):
        read_seed_json(b'{"featureNames": [', "seed.json")
    with pytest.raises(DataValidationError, match="expected a JSON object"):
        read_seed_json(b"[1, 2]", "seed.json")


def test_seed_single_class_training_split_is_rejected(seed_json_doc):
    doc = _copy(seed_json_doc)
    doc["trainSet"]["labels"] = [3] * 300
    err = _load_error(json.dumps(doc).encode(), "seed.json")
    assert "at least 2" in str(err)


def test_seed_empty_split_is_rejected(seed_json_doc):
    doc = _copy(seed_json_doc)
    doc["testSet"] = {"features": [], "labels": []}
    assert "test split is empty" in str(_load_error(json.dumps(doc).encode(), "seed.json"))
    doc = _copy(seed_json_doc)
    doc["trainSet"] = {"features": [], "labels": []}
    assert "training split is empty" in str(_load_error(json.dumps(doc).encode(), "seed.json"))


def test_seed_non_utf8_is_rejected():
    err = _load_error(b'{"featureNames": ["\xe9"]}', "seed.json")
    assert "UTF-8" in str(err)
