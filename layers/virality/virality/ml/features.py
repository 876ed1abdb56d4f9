"""The 15 model features: schema, raw video -> features, pipeline bridge.

Feature order is part of the model format: column ``j`` of a feature matrix
and column ``j`` of the weight matrix always mean ``FEATURE_NAMES[j]``.
Every model input lies in ``[0, 1]``.

Raw video -> features
---------------------
:func:`extract_features` is the single transformation used by training
(CSV / JSON Lines), serving (``{"video": ...}``) and the CLI, so there is no
training/serving skew. Fitted parameters (:class:`Preprocessing`) are computed
on the training split only and stored in the model artifact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np

from virality.errors import DataValidationError
from virality.structs import Record, described, field_names


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One model input: its name, meaning and valid range."""

    name: str
    description: str
    minimum: float = 0.0
    maximum: float = 1.0


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("shareRate", "shares / views, divided by the fitted cap shareRate (p99 of the training split), clipped"),
    FeatureSpec("commentRate", "comments / views, divided by the fitted cap commentRate, clipped"),
    FeatureSpec("likeRate", "likes / views, divided by the fitted cap likeRate, clipped"),
    FeatureSpec("saveRate", "saves / views, divided by the fitted cap saveRate, clipped"),
    FeatureSpec("shareToLikeRatio", "shares / likes (0 when likes = 0), divided by the fitted cap, clipped"),
    FeatureSpec("commentToLikeRatio", "comments / likes (0 when likes = 0), divided by the fitted cap, clipped"),
    FeatureSpec("durationSeconds", "video duration in seconds / 180, clipped"),
    FeatureSpec("hashtagCount", "number of hashtags / 30, clipped"),
    FeatureSpec("hasTrendingSound", "1 if the video uses a trending sound, else 0"),
    FeatureSpec("captionLength", "caption length in characters / fitted cap (p99), clipped"),
    FeatureSpec("hasFollowerData", "1 if the creator's follower count is known (> 0), else 0"),
    FeatureSpec("followerTier", "log10(1 + followers) / 7 (10M followers = 1), clipped; 0.5 when unknown"),
    FeatureSpec("viewsPerFollower", "log1p(views / followers) / log1p(fitted cap), clipped; 0 when unknown"),
    FeatureSpec("weekdayPosted", "weekday of postedAt in UTC, Monday = 0 ... Sunday = 1 (weekday / 6)"),
    FeatureSpec("hourPosted", "hour of postedAt in UTC / 23"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES = len(FEATURES)
FEATURE_INDEX: dict[str, int] = {name: j for j, name in enumerate(FEATURE_NAMES)}

# Fixed (not fitted) scales: they are product constants, shared with the bridge.
DURATION_CAP_SECONDS = 180.0
HASHTAG_CAP = 30.0
FOLLOWER_LOG10_CAP = 7.0

COUNT_FIELDS = ("views", "likes", "comments", "shares", "saves")
RAW_NUMERIC_FIELDS = (*COUNT_FIELDS, "durationSeconds", "hashtagCount")
RAW_FIELDS = (*COUNT_FIELDS, "followers", "durationSeconds", "hashtagCount", "hasTrendingSound",
              "captionLength", "caption", "postedAt")


class Preprocessing(Record, frozen=True, kw_only=True):
    """Normalisation caps fitted on the training split (99th percentiles).

    A raw ratio ``r`` becomes ``min(r / cap, 1)``; ``viewsPerFollower`` uses
    ``log1p(r) / log1p(cap)``. Caps are strictly positive.
    """

    quantile: Annotated[float, described("Quantile of the training split used as each cap.")] = 0.99
    shareRate: float = 0.01
    commentRate: float = 0.005
    likeRate: float = 0.2
    saveRate: float = 0.02
    shareToLikeRatio: float = 0.2
    commentToLikeRatio: float = 0.1
    captionLength: float = 300.0
    viewsPerFollower: float = 50.0

    def __post_init__(self) -> None:
        for name in CAP_NAMES:
            if not getattr(self, name) > 0:      # also refuses NaN
                raise ValueError(f"{name} must be > 0")


#: The caps of :class:`Preprocessing` (every field but ``quantile``), in its field order.
CAP_NAMES = tuple(name for name in field_names(Preprocessing) if name != "quantile")


@dataclass(frozen=True, slots=True)
class RawVideos:
    """Columns of raw video records, each an array of shape ``(n_samples,)``.

    ``followers`` holds ``nan`` where unknown; ``weekday``/``hour`` are the
    UTC weekday (Monday = 0) and hour of ``postedAt``.
    """

    views: np.ndarray
    likes: np.ndarray
    comments: np.ndarray
    shares: np.ndarray
    saves: np.ndarray
    followers: np.ndarray
    durationSeconds: np.ndarray
    hashtagCount: np.ndarray
    hasTrendingSound: np.ndarray
    captionLength: np.ndarray
    weekday: np.ndarray
    hour: np.ndarray

    def __len__(self) -> int:
        return int(self.views.shape[0])

    def take(self, index: np.ndarray) -> RawVideos:
        """Rows ``index`` of every column."""
        return RawVideos(**{name: getattr(self, name)[index] for name in self.__slots__})


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _raw_ratios(raw: RawVideos) -> dict[str, np.ndarray]:
    with np.errstate(over="ignore"):     # absurd counts overflow to inf, then clip to 1
        return _raw_ratios_unchecked(raw)


def _raw_ratios_unchecked(raw: RawVideos) -> dict[str, np.ndarray]:
    known = np.isfinite(raw.followers) & (raw.followers > 0)
    vpf = np.zeros(len(raw))
    np.divide(raw.views, raw.followers, out=vpf, where=known)
    return {
        "shareRate": _ratio(raw.shares, raw.views),
        "commentRate": _ratio(raw.comments, raw.views),
        "likeRate": _ratio(raw.likes, raw.views),
        "saveRate": _ratio(raw.saves, raw.views),
        "shareToLikeRatio": _ratio(raw.shares, raw.likes),
        "commentToLikeRatio": _ratio(raw.comments, raw.likes),
        "captionLength": raw.captionLength.astype(np.float64),
        "viewsPerFollower": np.where(known, vpf, np.nan),
    }


def fit_preprocessing(raw: RawVideos, quantile: float = 0.99) -> Preprocessing:
    """Fit the normalisation caps on (training) raw videos.

    A cap is the ``quantile`` of the raw values; a degenerate (zero) quantile
    falls back to the largest value, then to the default cap.
    """
    defaults = Preprocessing()
    caps: dict[str, float] = {}
    for name, values in _raw_ratios(raw).items():
        values = values[np.isfinite(values)]
        cap = float(np.quantile(values, quantile)) if values.size else 0.0
        if not cap > 0 and values.size:
            cap = float(values.max())
        caps[name] = cap if cap > 0 else getattr(defaults, name)
    return Preprocessing(quantile=quantile, **caps)


def extract_features(raw: RawVideos, prep: Preprocessing) -> np.ndarray:
    """Turn raw video columns into the model's feature matrix.

    Parameters
    ----------
    raw : RawVideos
        ``n_samples`` validated raw records.
    prep : Preprocessing
        Caps fitted at training time (stored in the artifact).

    Returns
    -------
    X : ndarray of shape (n_samples, 15)
        Columns in :data:`FEATURE_NAMES` order, every value in ``[0, 1]``.
    """
    n = len(raw)
    X = np.empty((n, N_FEATURES), dtype=np.float64)
    ratios = _raw_ratios(raw)
    for name in ("shareRate", "commentRate", "likeRate", "saveRate", "shareToLikeRatio",
                 "commentToLikeRatio", "captionLength"):
        X[:, FEATURE_INDEX[name]] = ratios[name] / getattr(prep, name)
    X[:, FEATURE_INDEX["durationSeconds"]] = raw.durationSeconds / DURATION_CAP_SECONDS
    X[:, FEATURE_INDEX["hashtagCount"]] = raw.hashtagCount / HASHTAG_CAP
    X[:, FEATURE_INDEX["hasTrendingSound"]] = raw.hasTrendingSound > 0
    known = np.isfinite(raw.followers) & (raw.followers > 0)
    X[:, FEATURE_INDEX["hasFollowerData"]] = known
    followers = np.where(known, raw.followers, 0.0)
    X[:, FEATURE_INDEX["followerTier"]] = np.where(
        known, np.log10(1.0 + followers) / FOLLOWER_LOG10_CAP, 0.5)
    vpf = np.where(known, ratios["viewsPerFollower"], 0.0)
    X[:, FEATURE_INDEX["viewsPerFollower"]] = np.log1p(vpf) / math.log1p(prep.viewsPerFollower)
    X[:, FEATURE_INDEX["weekdayPosted"]] = raw.weekday / 6.0
    X[:, FEATURE_INDEX["hourPosted"]] = raw.hour / 23.0
    np.clip(X, 0.0, 1.0, out=X)
    return X


# --------------------------------------------------------------------------- parsing


def parse_posted_at(value: object) -> datetime:
    """Parse ``postedAt``: ISO 8601 (``Z`` or offset; naive means UTC) or epoch seconds.

    Raises
    ------
    ValueError
        With a message naming the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("expected an ISO 8601 timestamp or epoch seconds")
    if isinstance(value, int | float):
        # parse_number first: math.isfinite raises OverflowError on an int beyond float range
        if not math.isfinite(number := parse_number(value, what="epoch seconds")) or number < 0:
            raise ValueError("epoch seconds must be a finite, non-negative number")
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch seconds out of range: {value!r}") from None
    if isinstance(value, str):
        text = value.strip()
        try:
            as_number: float | None = float(text)
        except ValueError:
            as_number = None
        if as_number is not None:
            return parse_posted_at(as_number)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
        try:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"timestamp out of range: {value!r}") from None
    raise ValueError("expected an ISO 8601 timestamp or epoch seconds")


def parse_number(value: object, *, integer_like: bool = False, what: str = "value") -> float:
    """A finite float from a JSON/CSV value (bools and blanks are rejected).

    The one safe conversion of untrusted numbers: every failure, including an
    integer too large for a float, is a ``ValueError``.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("not a number")
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            raise ValueError("empty value, expected a number")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"not a number: {value!r}") from None
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            # not len(str(value)): str() itself refuses ints of more than 4,300 digits
            raise ValueError(f"{what} must be finite, got an integer of about "
                             f"{int(int(value).bit_length() * 0.30103) + 1} digits") from None
    else:
        raise ValueError(f"not a number: {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"must be finite, got {value!r}")
    return number


#: The words a ``hasTrendingSound`` cell may hold (lower case, stripped) and their value; blank = false.
FLAG_WORDS: dict[str, float] = {"1": 1.0, "true": 1.0, "yes": 1.0, "y": 1.0, "t": 1.0,
                                "0": 0.0, "false": 0.0, "no": 0.0, "n": 0.0, "f": 0.0, "": 0.0}


def parse_flag(value: object) -> float:
    """``hasTrendingSound``: true/false, 1/0, yes/no (blank = false)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value in (0, 1):
        return float(value)
    if isinstance(value, str) and (word := value.strip().lower()) in FLAG_WORDS:
        return FLAG_WORDS[word]
    if value is None:
        return 0.0
    raise ValueError(f"expected true/false or 1/0, got {value!r}")


class RawColumnsBuilder:
    """Accumulates validated raw records row by row into :class:`RawVideos`.

    Each ``add`` validates one mapping (CSV row, JSON object, API body) and
    raises :class:`DataValidationError` naming the row and column.
    Counts must be non-negative; ``followers`` may be missing or blank;
    ``captionLength`` may be given directly or derived from ``caption``.
    """

    def __init__(self, location: str | None = None) -> None:
        self.location = location
        self._cols: dict[str, list[float]] = {name: [] for name in RawVideos.__slots__}

    def add(self, record: Mapping[str, object], row: int | None = None) -> None:
        def fail(column: str, message: str) -> DataValidationError:
            return DataValidationError(message, row=row, column=column, location=self.location)

        def count(name: str, value: object) -> float:
            try:
                number = parse_number(value)
            except ValueError as exc:
                raise fail(name, str(exc)) from None
            if number < 0:
                raise fail(name, f"must be >= 0, got {number:g}")
            return number

        def blank(value: object) -> bool:
            return value is None or (isinstance(value, str) and value.strip() == "")

        values: dict[str, float] = {}
        for name in RAW_NUMERIC_FIELDS:
            if name not in record:
                raise fail(name, "missing required field")
            values[name] = count(name, record[name])
        followers = record.get("followers")
        values["followers"] = math.nan if blank(followers) else count("followers", followers)
        try:
            values["hasTrendingSound"] = parse_flag(record.get("hasTrendingSound"))
        except ValueError as exc:
            raise fail("hasTrendingSound", str(exc)) from None
        caption_length = record.get("captionLength")
        if not blank(caption_length):
            values["captionLength"] = count("captionLength", caption_length)
        elif "caption" in record and isinstance(record["caption"], str | type(None)):
            values["captionLength"] = float(len(record["caption"] or ""))
        elif "caption" in record:
            raise fail("caption", "must be a string")
        else:
            raise fail("captionLength", "missing required field (give captionLength or caption)")
        if "postedAt" not in record or record["postedAt"] in (None, ""):
            raise fail("postedAt", "missing required field")
        try:
            posted = parse_posted_at(record["postedAt"])
        except (ValueError, OverflowError, OSError) as exc:
            raise fail("postedAt", str(exc)) from None
        values["weekday"] = float(posted.weekday())
        values["hour"] = float(posted.hour)
        for name, column in self._cols.items():
            column.append(values[name])

    def __len__(self) -> int:
        return len(self._cols["views"])

    def build(self) -> RawVideos:
        return RawVideos(**{name: np.asarray(col, dtype=np.float64) for name, col in self._cols.items()})


# --------------------------------------------------------------------------- bridge

BRIDGE_DEFAULTS: dict[str, float] = {
    "shareTrigger": 5.0,
    "commentProvocation": 5.0,
    "durationSeconds": 30.0,
    "hashtagCount": 5.0,
    "audioTrendingMatch": 0.0,
    "captionScore": 5.0,
}


def _clip01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def feature_vector_to_ml_input(fv: Mapping[str, float | None]) -> np.ndarray:
    """The original ``featureVectorToMLInput`` bridge from the content pipeline.

    Missing (or ``None``) values take the original defaults: shareTrigger 5,
    commentProvocation 5, durationSeconds 30, hashtagCount 5, captionScore 5,
    no trending audio. Engagement rates are unknown to the pipeline and
    default to 0.5, as in the original.

    Returns
    -------
    x : ndarray of shape (15,)
    """
    def get(name: str) -> float:
        value = fv.get(name)
        return BRIDGE_DEFAULTS[name] if value is None else float(value)

    x = np.empty(N_FEATURES, dtype=np.float64)
    values = {
        "shareRate": 0.5,
        "commentRate": 0.5,
        "likeRate": 0.5,
        "saveRate": 0.5,
        "shareToLikeRatio": _clip01(get("shareTrigger") / 10.0),
        "commentToLikeRatio": _clip01(get("commentProvocation") / 10.0),
        "durationSeconds": _clip01(get("durationSeconds") / DURATION_CAP_SECONDS),
        "hashtagCount": _clip01(get("hashtagCount") / HASHTAG_CAP),
        "hasTrendingSound": 1.0 if get("audioTrendingMatch") > 0 else 0.0,
        "captionLength": _clip01(get("captionScore") / 10.0),
        "hasFollowerData": 0.0,
        "followerTier": 0.5,
        "viewsPerFollower": 0.0,
        "weekdayPosted": 0.5,
        "hourPosted": 0.5,
    }
    for name, value in values.items():
        x[FEATURE_INDEX[name]] = value
    return x


# --------------------------------------------------------------------------- feature sets

#: Features computed from counts that exist only after a video is published
#: (its views, likes, comments, shares, saves). ``viewsPerFollower`` and the
#: four rates also share ``views`` with the tier label.
POST_PUBLICATION_FEATURES: tuple[str, ...] = (
    "shareRate", "commentRate", "likeRate", "saveRate", "shareToLikeRatio", "commentToLikeRatio",
    "viewsPerFollower",
)

#: ``full``: all 15 features ("how viral is a video whose counts I know").
#: ``prepublication``: only what is known before posting (duration, hashtags,
#: sound, caption, followers, weekday, hour); the others are held at their
#: pipeline-bridge defaults and get weight 0.
FeatureSet = Literal["full", "prepublication"]
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "full": FEATURE_NAMES,
    "prepublication": tuple(n for n in FEATURE_NAMES if n not in POST_PUBLICATION_FEATURES),
}


def feature_set_mask(feature_set: str) -> np.ndarray:
    """Boolean mask of shape (15,): True for the features ``feature_set`` learns from.

    Raises
    ------
    ValueError
        For an unknown feature set.
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature set must be one of {', '.join(FEATURE_SETS)}, got {feature_set!r}")
    used = set(FEATURE_SETS[feature_set])
    return np.array([name in used for name in FEATURE_NAMES])


def hold_features(X: np.ndarray, feature_set: str) -> np.ndarray:
    """Copy of ``X`` (shape (n_samples, 15)) with the features outside ``feature_set``
    set to their pipeline-bridge defaults (:func:`feature_vector_to_ml_input` of ``{}``)."""
    mask = feature_set_mask(feature_set)
    out = np.array(X, dtype=np.float64, copy=True)
    out[:, ~mask] = feature_vector_to_ml_input({})[~mask]
    return out
