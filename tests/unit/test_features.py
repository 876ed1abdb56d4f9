"""Feature schema, raw video -> features, postedAt parsing, pipeline bridge, record validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from virality.errors import DataValidationError
from virality.ml.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURES,
    N_FEATURES,
    Preprocessing,
    RawColumnsBuilder,
    extract_features,
    feature_vector_to_ml_input,
    fit_preprocessing,
    parse_flag,
    parse_number,
    parse_posted_at,
)
from virality_dev.testing import named_features_to_vector, raw_videos_from_records

EXPECTED_NAMES = (
    "shareRate", "commentRate", "likeRate", "saveRate", "shareToLikeRatio", "commentToLikeRatio",
    "durationSeconds", "hashtagCount", "hasTrendingSound", "captionLength", "hasFollowerData",
    "followerTier", "viewsPerFollower", "weekdayPosted", "hourPosted",
)

# Deliberately non-default, distinct caps so a swapped column shows up.
PREP = Preprocessing(shareRate=0.02, commentRate=0.005, likeRate=0.2, saveRate=0.05,
                     shareToLikeRatio=0.5, commentToLikeRatio=0.4, captionLength=600.0,
                     viewsPerFollower=99.0)


def features_of(record: dict[str, object], prep: Preprocessing = PREP) -> dict[str, float]:
    X = extract_features(raw_videos_from_records([record]), prep)
    assert X.shape == (1, N_FEATURES)
    return dict(zip(FEATURE_NAMES, X[0].tolist(), strict=True))


# --------------------------------------------------------------------------- schema


def test_schema_has_the_15_features_in_the_exact_order():
    assert FEATURE_NAMES == EXPECTED_NAMES
    assert N_FEATURES == 15
    assert [f.name for f in FEATURES] == list(EXPECTED_NAMES)
    assert all(FEATURE_INDEX[name] == j for j, name in enumerate(EXPECTED_NAMES))


def test_schema_ranges_are_unit_interval_and_every_feature_is_described():
    for spec in FEATURES:
        assert (spec.minimum, spec.maximum) == (0.0, 1.0), spec.name
        assert len(spec.description) > 10, spec.name


# --------------------------------------------------------------------------- extract_features


def test_extract_features_matches_hand_computed_values(make_record):
    # Given a Wednesday 18:30 UTC video with known followers and caps chosen by hand
    record = make_record()
    # When it is featurised
    got = features_of(record)
    # Then every value follows the documented formula
    expected = {
        "shareRate": (50 / 10_000) / 0.02,            # 0.25
        "commentRate": (40 / 10_000) / 0.005,         # 0.8
        "likeRate": (800 / 10_000) / 0.2,             # 0.4
        "saveRate": (100 / 10_000) / 0.05,            # 0.2
        "shareToLikeRatio": (50 / 800) / 0.5,         # 0.125
        "commentToLikeRatio": (40 / 800) / 0.4,       # 0.125
        "durationSeconds": 45 / 180,                  # 0.25
        "hashtagCount": 6 / 30,                       # 0.2
        "hasTrendingSound": 1.0,
        "captionLength": 150 / 600,                   # 0.25
        "hasFollowerData": 1.0,
        "followerTier": math.log10(1 + 9_999) / 7,    # 4/7
        "viewsPerFollower": math.log1p(10_000 / 9_999) / math.log1p(99.0),
        "weekdayPosted": 2 / 6,                       # 2025-03-12 is a Wednesday
        "hourPosted": 18 / 23,
    }
    assert list(got) == list(EXPECTED_NAMES)
    for name in EXPECTED_NAMES:
        assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name
    assert got["followerTier"] == pytest.approx(4 / 7, rel=1e-12)


def test_extract_features_clips_every_value_to_unit_interval(make_record):
    # Given a record whose ratios and scales all exceed their caps
    record = make_record(views=100, likes=50, comments=90, shares=500, saves=300, followers=10**9,
                         durationSeconds=600, hashtagCount=45, captionLength=5_000)
    got = features_of(record)
    # Then each such feature is clipped at exactly 1
    for name in ("shareRate", "commentRate", "likeRate", "saveRate", "shareToLikeRatio",
                 "commentToLikeRatio", "durationSeconds", "hashtagCount", "captionLength", "followerTier"):
        assert got[name] == 1.0, name
    # 100 views from 1e9 followers: log1p(1e-7) / log1p(99), tiny but positive
    assert got["viewsPerFollower"] == pytest.approx(math.log1p(1e-7) / math.log1p(99.0), rel=1e-9)


def test_zero_views_and_zero_likes_give_zero_ratios_not_nan(make_record):
    got = features_of(make_record(views=0, likes=0, comments=5, shares=5, saves=5))
    for name in ("shareRate", "commentRate", "likeRate", "saveRate", "shareToLikeRatio", "commentToLikeRatio",
                 "viewsPerFollower"):
        assert got[name] == 0.0, name


def test_all_outputs_are_finite_and_in_unit_interval_on_synthetic_data(training_set):
    for split in (training_set.train, training_set.test):
        assert np.all(np.isfinite(split.X))
        assert split.X.min() >= 0.0 and split.X.max() <= 1.0
        assert split.X.shape[1] == 15


@pytest.mark.parametrize("followers", [None, "", "   ", 0, "missing-key"])
def test_unknown_followers_give_documented_defaults(make_record, followers):
    # Given a record whose follower count is absent, null, blank or zero
    record = make_record(drop=("followers",)) if followers == "missing-key" else make_record(followers=followers)
    # When featurised
    got = features_of(record)
    # Then the follower features take their "unknown" values
    assert got["hasFollowerData"] == 0.0
    assert got["followerTier"] == 0.5
    assert got["viewsPerFollower"] == 0.0


def test_trending_sound_is_binary(make_record):
    assert features_of(make_record(hasTrendingSound=False))["hasTrendingSound"] == 0.0
    assert features_of(make_record(hasTrendingSound="yes"))["hasTrendingSound"] == 1.0
    assert features_of(make_record(drop=("hasTrendingSound",)))["hasTrendingSound"] == 0.0


# --------------------------------------------------------------------------- caption vs captionLength


def test_caption_text_gives_its_length(make_record):
    record = make_record(drop=("captionLength",), caption="hello world #fyp")   # 16 characters
    assert features_of(record)["captionLength"] == pytest.approx(16 / 600)
    raw = raw_videos_from_records([record])
    assert raw.captionLength.tolist() == [16.0]


def test_caption_length_wins_over_caption(make_record):
    raw = raw_videos_from_records([make_record(captionLength=42, caption="abc")])
    assert raw.captionLength.tolist() == [42.0]


def test_blank_caption_length_falls_back_to_caption(make_record):
    raw = raw_videos_from_records([make_record(captionLength="", caption="abcde")])
    assert raw.captionLength.tolist() == [5.0]


def test_null_caption_counts_as_empty(make_record):
    raw = raw_videos_from_records([make_record(drop=("captionLength",), caption=None)])
    assert raw.captionLength.tolist() == [0.0]


def test_neither_caption_nor_caption_length_is_an_error(make_record):
    with pytest.raises(DataValidationError) as info:
        raw_videos_from_records([make_record(drop=("captionLength",))])
    assert info.value.column == "captionLength"
    assert "caption" in str(info.value)


def test_non_string_caption_is_an_error(make_record):
    with pytest.raises(DataValidationError) as info:
        raw_videos_from_records([make_record(drop=("captionLength",), caption=123)])
    assert info.value.column == "caption"


# --------------------------------------------------------------------------- postedAt


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("2025-03-12T18:30:00Z", _utc(2025, 3, 12, 18, 30)),
    ("2025-03-12T18:30:00+02:00", _utc(2025, 3, 12, 16, 30)),
    ("2025-03-12T01:30:00+05:00", _utc(2025, 3, 11, 20, 30)),    # crosses midnight backwards
    ("2025-03-12T22:15:00-03:00", _utc(2025, 3, 13, 1, 15)),      # crosses midnight forwards
    ("2025-03-12T18:30:00", _utc(2025, 3, 12, 18, 30)),           # naive means UTC
    ("  2025-03-12T18:30:00Z ", _utc(2025, 3, 12, 18, 30)),
    (0, _utc(1970, 1, 1)),
    (1_741_804_200, _utc(2025, 3, 12, 18, 30)),
    (1_741_804_200.75, _utc(2025, 3, 12, 18, 30, 0) .replace(microsecond=750_000)),
    ("1741804200", _utc(2025, 3, 12, 18, 30)),
])
def test_parse_posted_at_accepted_forms(value, expected):
    parsed = parse_posted_at(value)
    assert parsed == expected
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01T00:00:00Z", "", "12:30", -1, -0.5, math.nan,
                                   math.inf, True, None, [], {"t": 1}])
def test_parse_posted_at_rejects_garbage(value):
    with pytest.raises(ValueError):
        parse_posted_at(value)


@pytest.mark.parametrize(("posted", "weekday", "hour"), [
    ("2025-03-10T00:00:00Z", 0, 0),              # Monday midnight
    ("2025-03-16T23:59:59Z", 6, 23),             # Sunday 23:59
    ("2025-03-10T23:30:00-01:00", 1, 0),         # Monday evening at -01:00 is Tuesday 00:30 UTC
    (0, 3, 0),                                   # epoch 0 was a Thursday
])
def test_weekday_and_hour_use_utc(make_record, posted, weekday, hour):
    got = features_of(make_record(postedAt=posted))
    assert got["weekdayPosted"] == pytest.approx(weekday / 6)
    assert got["hourPosted"] == pytest.approx(hour / 23)


@pytest.mark.parametrize("posted", ["next tuesday", "2025-02-30T00:00:00Z", -5, 10**30])
def test_bad_posted_at_is_reported_with_row_and_column(make_record, posted):
    builder = RawColumnsBuilder(location="videos.jsonl")
    with pytest.raises(DataValidationError) as info:
        builder.add(make_record(postedAt=posted), row=12)
    err = info.value
    assert (err.row, err.column, err.location) == (12, "postedAt", "videos.jsonl")
    assert "row 12" in str(err) and "'postedAt'" in str(err) and "videos.jsonl" in str(err)


# --------------------------------------------------------------------------- record validation


@pytest.mark.parametrize(("column", "value", "fragment"), [
    ("views", -1, ">= 0"),
    ("likes", "abc", "not a number"),
    ("comments", "nan", "finite"),
    ("shares", "inf", "finite"),
    ("saves", "-Infinity", "finite"),
    ("saves", math.nan, "finite"),
    ("durationSeconds", True, "not a number"),
    ("hashtagCount", False, "not a number"),
    ("hashtagCount", None, "not a number"),
    ("views", "", "empty"),
    ("views", [1], "not a number"),
    ("followers", -5, ">= 0"),
    ("followers", "many", "not a number"),
    ("followers", "NaN", "finite"),
    ("followers", True, "not a number"),
    ("hasTrendingSound", "maybe", "true/false"),
    ("hasTrendingSound", 2, "true/false"),
    ("captionLength", -3, ">= 0"),
    ("captionLength", "long", "not a number"),
])
def test_invalid_field_names_row_and_column(make_record, column, value, fragment):
    # Given a builder that already holds one good row
    builder = RawColumnsBuilder(location="upload.csv")
    builder.add(make_record(), row=2)
    # When a record with one bad field is added
    with pytest.raises(DataValidationError) as info:
        builder.add(make_record(**{column: value}), row=7)
    # Then the error names the row, the column and the problem
    err = info.value
    assert err.row == 7
    assert err.column == column
    assert fragment in err.message
    assert str(err).startswith("upload.csv, row 7, column " + repr(column) + ": ")
    # And nothing of the bad record was kept
    assert len(builder) == 1
    assert len(builder.build()) == 1


@pytest.mark.parametrize("column", ["views", "likes", "comments", "shares", "saves", "durationSeconds",
                                    "hashtagCount", "postedAt"])
def test_missing_required_field_is_named(make_record, column):
    with pytest.raises(DataValidationError) as info:
        RawColumnsBuilder().add(make_record(drop=(column,)), row=3)
    assert info.value.column == column
    assert info.value.row == 3
    assert "missing" in str(info.value)


def test_raw_videos_from_records_numbers_rows_from_zero(make_record):
    records = [make_record(), make_record(), make_record(likes=-2)]
    with pytest.raises(DataValidationError) as info:
        raw_videos_from_records(records, location="api")
    assert (info.value.row, info.value.column) == (2, "likes")


@pytest.mark.parametrize(("value", "expected"), [
    (True, 1.0), (False, 0.0), (1, 1.0), (0, 0.0), (1.0, 1.0), ("TRUE", 1.0), (" yes ", 1.0), ("t", 1.0),
    ("y", 1.0), ("1", 1.0), ("false", 0.0), ("No", 0.0), ("0", 0.0), ("", 0.0), (None, 0.0),
])
def test_parse_flag_accepted_words(value, expected):
    assert parse_flag(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(" 12 ", 12.0), ("1e3", 1000.0), (7, 7.0), (2.5, 2.5)])
def test_parse_number_accepts_numbers_and_numeric_text(value, expected):
    assert parse_number(value) == expected


def test_builder_columns_hold_validated_values(make_record):
    builder = RawColumnsBuilder()
    builder.add(make_record(views="1000", followers=None, hasTrendingSound="no", postedAt=0), row=0)
    builder.add(make_record(), row=1)
    raw = builder.build()
    assert len(raw) == 2
    assert raw.views.tolist() == [1000.0, 10_000.0]
    assert math.isnan(raw.followers[0]) and raw.followers[1] == 9_999.0
    assert raw.hasTrendingSound.tolist() == [0.0, 1.0]
    assert raw.weekday.tolist() == [3.0, 2.0]
    assert raw.hour.tolist() == [0.0, 18.0]
    assert raw.take(np.array([1])).views.tolist() == [10_000.0]


# --------------------------------------------------------------------------- fitted caps


def test_fit_preprocessing_uses_the_99th_percentile(make_record):
    # Given 101 videos with share rates 0, 0.001, ..., 0.100
    records = [make_record(views=1000, shares=i) for i in range(101)]
    prep = fit_preprocessing(raw_videos_from_records(records))
    # Then the cap is the (linearly interpolated) 99th percentile: 0.099
    assert prep.shareRate == pytest.approx(0.099, rel=1e-12)
    assert prep.quantile == 0.99
    # and a constant feature's cap is that constant
    assert prep.likeRate == pytest.approx(0.8)


def test_degenerate_caps_fall_back_to_max_then_default(make_record):
    # Given 300 videos without saves and one with a single share
    records = [make_record(shares=0, saves=0) for _ in range(300)] + [make_record(shares=10, saves=0)]
    prep = fit_preprocessing(raw_videos_from_records(records))
    # Then the zero quantile falls back to the largest share rate ...
    assert prep.shareRate == pytest.approx(10 / 10_000)
    # ... and an all-zero feature keeps the default cap
    assert prep.saveRate == Preprocessing().saveRate


def test_unknown_followers_are_ignored_when_fitting_views_per_follower(make_record):
    records = [make_record(views=500, followers=100), make_record(views=10**9, followers=None)]
    prep = fit_preprocessing(raw_videos_from_records(records), quantile=0.5)
    assert prep.viewsPerFollower == pytest.approx(5.0)


def test_preprocessing_rejects_non_positive_caps():
    with pytest.raises(ValueError):
        Preprocessing(shareRate=0.0)


# --------------------------------------------------------------------------- pipeline bridge

BRIDGE_DEFAULT_VECTOR = {
    "shareRate": 0.5, "commentRate": 0.5, "likeRate": 0.5, "saveRate": 0.5,
    "shareToLikeRatio": 5 / 10, "commentToLikeRatio": 5 / 10, "durationSeconds": 30 / 180,
    "hashtagCount": 5 / 30, "hasTrendingSound": 0.0, "captionLength": 5 / 10,
    "hasFollowerData": 0.0, "followerTier": 0.5, "viewsPerFollower": 0.0,
    "weekdayPosted": 0.5, "hourPosted": 0.5,
}


def _named(x: np.ndarray) -> dict[str, float]:
    assert x.shape == (15,) and x.dtype == np.float64
    return dict(zip(FEATURE_NAMES, x.tolist(), strict=True))


def test_bridge_defaults_match_the_original():
    got = _named(feature_vector_to_ml_input({}))
    assert got == pytest.approx(BRIDGE_DEFAULT_VECTOR, abs=1e-15)


def test_bridge_none_values_take_defaults():
    fv = dict.fromkeys(("shareTrigger", "commentProvocation", "durationSeconds", "hashtagCount",
                        "audioTrendingMatch", "captionScore"))
    assert _named(feature_vector_to_ml_input(fv)) == pytest.approx(BRIDGE_DEFAULT_VECTOR, abs=1e-15)


def test_bridge_maps_each_input_to_its_feature():
    fv = {"shareTrigger": 7, "commentProvocation": 2, "durationSeconds": 90, "hashtagCount": 3,
          "audioTrendingMatch": 0.4, "captionScore": 8}
    got = _named(feature_vector_to_ml_input(fv))
    expected = {**BRIDGE_DEFAULT_VECTOR, "shareToLikeRatio": 0.7, "commentToLikeRatio": 0.2,
                "durationSeconds": 0.5, "hashtagCount": 0.1, "hasTrendingSound": 1.0, "captionLength": 0.8}
    assert got == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(("name", "value", "feature", "expected"), [
    ("shareTrigger", 15, "shareToLikeRatio", 1.0),
    ("shareTrigger", -3, "shareToLikeRatio", 0.0),
    ("commentProvocation", 11, "commentToLikeRatio", 1.0),
    ("commentProvocation", -0.1, "commentToLikeRatio", 0.0),
    ("durationSeconds", 400, "durationSeconds", 1.0),
    ("durationSeconds", -10, "durationSeconds", 0.0),
    ("hashtagCount", 100, "hashtagCount", 1.0),
    ("captionScore", 12, "captionLength", 1.0),
    ("captionScore", -1, "captionLength", 0.0),
    ("audioTrendingMatch", 0, "hasTrendingSound", 0.0),
    ("audioTrendingMatch", 1e-6, "hasTrendingSound", 1.0),
    ("audioTrendingMatch", 3, "hasTrendingSound", 1.0),
    ("audioTrendingMatch", -1, "hasTrendingSound", 0.0),
])
def test_bridge_clamps_and_thresholds(name, value, feature, expected):
    got = _named(feature_vector_to_ml_input({name: value}))
    assert got[feature] == expected
    # the other features keep their defaults
    others = {k: v for k, v in got.items() if k != feature}
    assert others == pytest.approx({k: v for k, v in BRIDGE_DEFAULT_VECTOR.items() if k != feature}, abs=1e-15)


def test_named_features_to_vector_orders_by_schema():
    named = {name: (j + 1) / 100 for j, name in reversed(list(enumerate(FEATURE_NAMES)))}
    x = named_features_to_vector(named)
    assert x.tolist() == [(j + 1) / 100 for j in range(15)]
    with pytest.raises(KeyError):
        named_features_to_vector({k: v for k, v in named.items() if k != "hourPosted"})


@pytest.mark.parametrize("column", ["views", "followers", "captionLength"])
def test_integer_too_large_for_a_float_is_a_data_error(make_record, column):
    # Given a JSON integer (unbounded in Python) that no float can hold
    record = make_record(**{column: 10**400})
    # When it is validated, Then it is a DataValidationError naming row and column, not an OverflowError
    with pytest.raises(DataValidationError) as info:
        RawColumnsBuilder().add(record, row=4)
    assert (info.value.row, info.value.column) == (4, column)
