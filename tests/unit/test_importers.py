"""Importers: real TikTok export shapes -> raw records, through presets and mapping files."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pytest

from tests import export_samples as ex
from virality.data.importers import (
    MAX_REPORTED_PROBLEMS,
    PRESETS,
    ColumnMapping,
    ImportValidationError,
    import_export,
    load_mapped_training_data,
    load_mapping,
    parse_count,
    parse_duration,
    parse_list_length,
    parse_timestamp,
    preset,
    preset_for_object,
    read_join_table,
    to_canonical_csv,
)
from virality.data.readers.csv_records import read_csv
from virality.errors import ConfigurationError, DataValidationError
from virality_dev.synthetic import sample_records
from virality_dev.testing import raw_videos_from_records


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return sample_records(400, 11)


def assert_same_videos(got: Any, want: Any, skip: tuple[str, ...] = ()) -> None:
    for name in want.__slots__:
        if name not in skip:
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), equal_nan=True, err_msg=name)


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(("text", "expected"), [
    ("541.2K", 541_200), ("1.4M", 1_400_000), ("2B", 2_000_000_000), ("1,234", 1234), ("12,345,678", 12_345_678),
    ("12k", 12_000), (" 3.5 m ", 3_500_000), ("0", 0), ("987", 987), (".5K", 500), (1234, 1234), (12.0, 12),
])
def test_counts_as_the_site_shows_them(text: Any, expected: float) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize("bad", ["1.2X", "1,23", "12,3456", "K", "-5", "1.2.3K", "", "nan", "inf", True, None, -3])
def test_malformed_counts_are_rejected(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_count(bad)


@pytest.mark.parametrize(("value", "expected"), [
    ("00:45", 45), ("1:05", 65), ("01:02:03", 3723), ("75:30", 4530), ("0:07.5", 7.5), (31, 31), ("31", 31),
    (12.5, 12.5),
])
def test_durations(value: Any, expected: float) -> None:
    assert parse_duration(value) == expected


def test_duration_in_milliseconds() -> None:
    assert parse_duration(15_300, unit="ms") == 15.3


@pytest.mark.parametrize("bad", ["1:75", "1:2:3:4", "a:30", "1:", "-3", "ten"])
def test_malformed_durations_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("value", "expected"), [
    (["fyp", "dance"], 2), ([], 0), ("fyp, dance,comedy", 3), ("", 0), ("['fyp', 'dance']", 2), ("#fyp,#dance", 2),
    ("fyp,,dance,", 2), ([{"name": "a"}], 1),
])
def test_list_lengths(value: Any, expected: int) -> None:
    assert parse_list_length(value) == expected


@pytest.mark.parametrize(("value", "fmt", "expected"), [
    (1_714_564_800, "auto", "2024-05-01T12:00:00Z"),
    ("1714564800", "auto", "2024-05-01T12:00:00Z"),
    ("2024-05-01 12:00:00", "auto", "2024-05-01T12:00:00Z"),
    ("2024-05-01T14:00:00+02:00", "auto", "2024-05-01T12:00:00Z"),
    ("2024-05-01T12:00:00.000Z", "auto", "2024-05-01T12:00:00Z"),
    (1_714_564_800_000, "epoch-ms", "2024-05-01T12:00:00Z"),
    (1_714_564_800_000, "auto", "2024-05-01T12:00:00Z"),          # too large for seconds: milliseconds
    ("1714564800123", "auto", "2024-05-01T12:00:00Z"),
    ("1714564800", "epoch", "2024-05-01T12:00:00Z"),
    ("01/05/2024 12:00", "%d/%m/%Y %H:%M", "2024-05-01T12:00:00Z"),
])
def test_timestamps(value: Any, fmt: str, expected: str) -> None:
    assert parse_timestamp(value, fmt) == expected


@pytest.mark.parametrize(("value", "fmt"), [("yesterday", "auto"), ("2024-13-01", "auto"), ("abc", "epoch"),
                                             ("2024-05-01", "%d/%m/%Y")])
def test_malformed_timestamps_are_rejected(value: str, fmt: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value, fmt)


# --------------------------------------------------------------------------- presets on real-shaped files


def test_scraper_json_array_gives_back_the_records(records: list[dict[str, Any]]) -> None:
    data = json.dumps(ex.scraper_items(records), indent=1).encode()
    result = import_export(data, "dataset.json", preset("scraper"))
    assert result.shape == "json" and len(result.records) == len(records)
    assert_same_videos(result.raw, raw_videos_from_records(records))
    assert result.records[0]["videoId"] == "7300000000000000000"


def test_scraper_json_lines_and_flattened_csv_with_a_bom(records: list[dict[str, Any]]) -> None:
    jsonl = "".join(json.dumps(item) + "\n\n" for item in ex.scraper_items(records)).encode()
    want = raw_videos_from_records(records)
    got = import_export(jsonl, "items.jsonl", preset("scraper"))
    assert got.shape == "jsonl" and got.rows[:2] == [1, 3]       # source line numbers, blank lines skipped
    assert_same_videos(got.raw, want)
    flat = ex.scraper_csv(records)
    assert flat.startswith(b"\xef\xbb\xbf") and b"authorMeta/fans" in flat and b"hashtags/0/name" in flat
    got = import_export(flat, "export.csv", preset("scraper"))
    assert got.shape == "csv"
    assert_same_videos(got.raw, want)


def test_scraper_tiktok_web_items_with_stats_and_epoch_seconds(records: list[dict[str, Any]]) -> None:
    # The TikTok web "itemStruct" shape: stats.*, authorStats.followerCount, music.original, challenges, desc.
    items = []
    for item in ex.scraper_items(records):
        items.append({"id": item["id"], "desc": item["text"], "createTime": item["createTime"],
                      "stats": {"playCount": item["playCount"], "diggCount": item["diggCount"],
                                "commentCount": item["commentCount"], "shareCount": item["shareCount"],
                                "collectCount": str(item["collectCount"])},
                      "authorStats": ({"followerCount": item["authorMeta"]["fans"]}
                                      if "fans" in item["authorMeta"] else {}),
                      "video": {"duration": item["videoMeta"]["duration"]},
                      "music": {"original": item["musicMeta"]["musicOriginal"]},
                      "challenges": [{"title": h["name"]} for h in item["hashtags"]]})
    result = import_export(json.dumps(items).encode(), "web.json", preset("scraper"))
    assert_same_videos(result.raw, raw_videos_from_records(records))


def test_research_api_response_joined_with_user_info(records: list[dict[str, Any]]) -> None:
    recs = ex.research_api_records(records)
    mapping = preset("research-api")
    users = read_join_table(ex.research_api_users(recs), "users.jsonl", mapping.join)
    result = import_export(ex.research_api_response(recs), "query.json", mapping, users)
    assert result.shape == "json"
    # The Research API does not say whether a sound trends: that feature is constant.
    assert_same_videos(result.raw, raw_videos_from_records(recs), skip=("hasTrendingSound",))
    assert not result.raw.hasTrendingSound.any()
    # Without the user info, followers are unknown (never zero).
    alone = import_export(ex.research_api_response(recs), "query.json", mapping)
    assert np.isnan(alone.raw.followers).all()


def test_research_api_csv_with_text_lists_datetimes_abbreviations_and_extra_columns() -> None:
    data = ("\ufeffid,username,create_time,region_code,video_description,view_count,like_count,comment_count,"
            "share_count,favorites_count,video_duration,hashtag_names,follower_count,effect_ids\n"
            '7301,ana,2024-05-01 12:00:00,US,"hi, #fyp",541.2K,"1,234",12,3,1.4M,00:45,"fyp,dance",2B,\n'
            "7302,bo,1714564800,GB,,987,65,0,0,0,7,,,[]\n").encode()
    result = import_export(data, "research.csv", preset("research-api"))
    first, second = result.records
    assert first == {"videoId": "7301", "views": 541_200, "likes": 1234, "comments": 12, "shares": 3,
                     "saves": 1_400_000, "followers": 2e9, "durationSeconds": 45, "hashtagCount": 2,
                     "hasTrendingSound": False, "captionLength": 8, "postedAt": "2024-05-01T12:00:00Z"}
    assert (second["postedAt"], second["hashtagCount"], second["captionLength"], second["followers"]) == (
        "2024-05-01T12:00:00Z", 0, 0, None)
    assert result.rows == [2, 3]


MALFORMED_SCRAPER_CSV = (
    "id,playCount,diggCount,commentCount,shareCount,collectCount,authorMeta/fans,videoMeta/duration,"
    "createTimeISO,text,musicMeta/musicOriginal\n"
    "1,541.2K,10,1,1,1,100,0:30,2024-05-01T12:00:00.000Z,a,false\n"
    "2,1.2X,10,1,1,1,100,0:30,2024-05-01T12:00:00.000Z,a,false\n"          # bad count
    "3,100,10,1,1,1,100,1:75,2024-05-01T12:00:00.000Z,a,false\n"            # bad duration
    "4,100,10,1,1,1,100,0:30,next tuesday,a,false\n"                        # bad timestamp
    "5,100,-10,1,1,1,100,0:30,2024-05-01T12:00:00.000Z,a,false\n"           # negative
    "6,100,10,1,1,1,100,0:30,2024-05-01T12:00:00.000Z,a,maybe\n"            # bad flag
    "7,,10,1,1,1,100,0:30,2024-05-01T12:00:00.000Z,a,false\n"               # missing views
)


def test_every_malformed_cell_is_named_by_row_column_and_value() -> None:
    with pytest.raises(ImportValidationError) as info:
        import_export(MALFORMED_SCRAPER_CSV.encode(), "bad.csv", preset("scraper"))
    err = info.value
    assert len(err.problems) == 6 and err.more == 0
    found = [(p.row, p.column) for p in err.problems]
    assert found == [(3, "playCount"), (4, "videoMeta.duration"), (5, "createTimeISO"), (6, "diggCount"),
                     (7, "musicMeta.musicOriginal"), (8, "playCount | stats.playCount")]
    text = str(err)
    for value in ("'1.2X'", "'1:75'", "'next tuesday'", "'-10'", "'maybe'"):
        assert value in text
    assert "missing value for views" in text and "bad.csv" in text
    assert (err.row, err.column) == (3, "playCount")          # the first problem, for callers that want one


def test_many_problems_say_how_many_were_not_shown() -> None:
    items = [{"playCount": "lots"} for _ in range(MAX_REPORTED_PROBLEMS + 7)]
    with pytest.raises(ImportValidationError) as info:
        import_export(json.dumps(items).encode(), "big.json", preset("scraper"))
    assert len(info.value.problems) == MAX_REPORTED_PROBLEMS and info.value.more == 7
    assert "and 7 more problem(s) not shown" in str(info.value)
    assert f"{MAX_REPORTED_PROBLEMS + 7} rows could not be converted" in str(info.value)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"), (b"[1, 2]", "expected a JSON object"), (b'[{"a": 1}', "invalid JSON"),
    (b'{"playCount": 1}\n{"playCount": \n', "invalid JSON"), (b"\xff\xfe", "not UTF-8"),
    (b"a,b\n1,2,3\n", "expected 2 fields"), (b"a,a\n1,2\n", "duplicated column"), (b"[" * 100_000, "JSON"),
])
def test_unreadable_exports_are_data_errors(data: bytes, message: str) -> None:
    with pytest.raises(DataValidationError, match=message):
        import_export(data, "x", preset("scraper"))


def test_canonical_csv_is_what_the_project_reads(records: list[dict[str, Any]]) -> None:
    result = import_export(json.dumps(ex.scraper_items(records)).encode(), "d.json", preset("scraper"))
    csv_bytes = to_canonical_csv(result)
    header = csv_bytes.split(b"\n", 1)[0].decode().split(",")
    assert header[:2] == ["videoId", "views"] and "postedAt" in header
    assert_same_videos(read_csv(csv_bytes, "videos.csv"), raw_videos_from_records(records))


def test_mapped_training_set_labels_and_splits_like_a_canonical_file(records: list[dict[str, Any]]) -> None:
    from virality.data.datasets import load_training_data
    from virality_dev.synthetic import sample_csv

    canonical = load_training_data(sample_csv(400, 11), "v.csv")
    mapped = load_mapped_training_data(json.dumps(ex.scraper_items(records)).encode(), "d.json", preset("scraper"))
    assert mapped.format == "scraper:json"
    np.testing.assert_array_equal(mapped.train.tiers, canonical.train.tiers)
    np.testing.assert_allclose(mapped.train.X, canonical.train.X)


# --------------------------------------------------------------------------- mapping files


CUSTOM_EXPORT = [
    {"video": {"stats": {"views": "12.5K", "likes": 900, "comments": 30, "shares": 12}},
     "owner": {"followers": None}, "len": "00:01:05", "tags": "fyp, cats", "sound": {"uses": "1.2M"},
     "created": "01/05/2024 12:00", "caption": "cats!"},
    {"video": {"stats": {"views": "800", "likes": 20, "comments": 1, "shares": 0}},
     "owner": {"followers": "3.1K"}, "len": "9", "tags": "", "sound": {"uses": 40},
     "created": "02/05/2024 23:59", "caption": None},
]
CUSTOM_MAPPING = {
    "name": "my-export",
    "records": "items",
    "fields": {
        "views": "video.stats.views",
        "likes": {"from": "video.stats.likes", "convert": "count"},
        "comments": "video.stats.comments",
        "shares": "video.stats.shares",
        "saves": {"constant": 0},
        "followers": "owner.followers",
        "durationSeconds": {"from": "len", "convert": "duration"},
        "hashtagCount": {"from": "tags", "convert": "list-length"},
        "hasTrendingSound": {"from": "sound.uses", "convert": "threshold", "threshold": "100K"},
        "captionLength": {"from": "caption", "convert": "length", "default": ""},
        "postedAt": {"from": "created", "convert": "timestamp", "format": "%d/%m/%Y %H:%M"},
    },
}


def _check_custom(mapping: ColumnMapping) -> None:
    data = json.dumps({"items": CUSTOM_EXPORT, "next": None}).encode()
    first, second = import_export(data, "export.json", mapping).records
    assert first == {"views": 12_500, "likes": 900, "comments": 30, "shares": 12, "saves": 0, "followers": None,
                     "durationSeconds": 65, "hashtagCount": 2, "hasTrendingSound": 1.0, "captionLength": 5,
                     "postedAt": "2024-05-01T12:00:00Z"}
    assert (second["followers"], second["hasTrendingSound"], second["captionLength"], second["postedAt"]) == (
        3100, 0.0, 0, "2024-05-02T23:59:00Z")


def test_json_mapping_file() -> None:
    _check_custom(load_mapping(json.dumps(CUSTOM_MAPPING).encode(), "my-export.json"))


def test_yaml_mapping_file() -> None:
    pytest.importorskip("yaml")
    import yaml

    _check_custom(load_mapping(yaml.safe_dump(CUSTOM_MAPPING).encode(), "my-export.yaml"))


def test_yaml_without_pyyaml_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)        # as in the Lambda layer
    with pytest.raises(ConfigurationError, match=r"PyYAML .* or write the mapping as JSON"):
        load_mapping(b"fields: {}", "m.yml")


def test_a_preset_printed_as_json_is_a_valid_mapping_file() -> None:
    for name in PRESETS:
        again = load_mapping(json.dumps(preset(name).spec).encode(), f"{name}.json")
        assert again.targets == preset(name).targets and again.name == name


def _with(fields: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **top: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(CUSTOM_MAPPING))
    doc["fields"].update(fields or {})
    for name in drop:
        doc["fields"].pop(name)
    doc.update(top)
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (_with({"viewz": "a"}), "'viewz': not a raw field"),
    (_with({"views": {"from": "a", "convert": "magic"}}), "unknown conversion 'magic'"),
    (_with({"views": {"form": "a"}}), "unknown key\\(s\\) form"),
    (_with(drop=("saves",)), "no rule for saves .*constant"),
    (_with({"views": {"from": "a", "convert": "threshold"}}), "threshold needs"),
    (_with({"postedAt": {"from": "a", "convert": "count"}}), "needs a timestamp conversion"),
    (_with({"views": {"from": "a", "convert": "timestamp"}}), "does not give a number"),
    (_with({"saves": {"constant": "lots"}}), "constant 'lots' is not valid"),
    (_with({"views": {"from": "a", "default": "x"}}), "default 'x' does not convert"),
    (_with({"views": {"from": "a[x]"}}), "invalid path"),
    (_with(extra=1), "unknown key\\(s\\) extra"),
    ([1], "must be an object"),
])
def test_bad_mappings_are_configuration_errors(doc: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_mapping(json.dumps(doc).encode(), "m.json")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigurationError, match="research-api, scraper"):
        preset("tiktok-2019")


# --------------------------------------------------------------------------- retrain selection


@pytest.mark.parametrize(("key", "metadata", "expected"), [
    ("training-data/videos.csv", {}, None),
    ("training-data/scraper/2026-11.json", {}, "scraper"),
    ("training-data/research-api/q1/page-3.json", {}, "research-api"),
    ("training-data/2026/videos.csv", {}, None),
    ("training-data/scraper.json", {}, None),                     # a file name is not a sub-prefix
    ("training-data/export.json", {"preset": "scraper"}, "scraper"),
    ("training-data/scraper/export.json", {"preset": "research-api"}, "research-api"),   # metadata wins
    ("training-data/scraper/videos.csv", {"Preset": " None "}, None),
])
def test_preset_for_object(key: str, metadata: dict[str, str], expected: str | None) -> None:
    assert preset_for_object(key, metadata) == expected


def test_unknown_preset_in_metadata_is_a_data_error() -> None:
    with pytest.raises(DataValidationError, match="preset='scrapr' is not a preset"):
        preset_for_object("training-data/x.json", {"preset": "scrapr"})


def test_a_research_api_error_response_is_reported_not_read_as_a_video() -> None:
    doc = {"data": {}, "error": {"code": "invalid_params", "message": "Invalid max_count", "log_id": "2026"}}
    with pytest.raises(DataValidationError, match=r"no list of records at data\.videos or videos.*invalid_params"):
        import_export(json.dumps(doc).encode(), "page.json", preset("research-api"))


def test_one_json_object_is_one_record() -> None:
    item = ex.scraper_items(sample_records(1, 3))[0]
    result = import_export(json.dumps(item).encode(), "one.json", preset("scraper"))
    assert result.shape == "jsonl" and result.rows == [1] and len(result.records) == 1


def test_a_csv_without_a_required_column_is_one_error_naming_the_header() -> None:
    data = b"Views,Likes\n1,2\n3,4\n"
    with pytest.raises(DataValidationError) as info:
        import_export(data, "sheet.csv", preset("scraper"))
    assert not isinstance(info.value, ImportValidationError)
    assert (info.value.row, info.value.column) == (1, "playCount | stats.playCount")
    assert "no column for views" in str(info.value) and "the header has: Views, Likes" in str(info.value)
