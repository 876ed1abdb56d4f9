"""Real TikTok exports -> the project's raw video records, through a column mapping.

Users get statistics from the TikTok Research API or from scraper exports,
as CSV, JSON Lines, one JSON array, or one JSON document wrapping the list.
A :class:`ColumnMapping` names, for each raw field the model reads, where its
value comes from (a column or a dotted path) and how it is converted. The
converted records go through :class:`virality.ml.features.RawColumnsBuilder`,
the same validation every other reader uses, so imported and canonical data
cannot drift apart.

Mapping format (JSON, or YAML when PyYAML is importable)
---------------------------------------------------------
::

    {"name": "my-export",
     "records": ["data.videos"],          # where the list sits in one JSON document (optional)
     "join": {"on": "username", "key": "username", "as": "user"},   # optional: --join users file
     "fields": {
       "views":            {"from": "stats.playCount", "convert": "count"},
       "durationSeconds":  {"from": "duration", "convert": "duration"},
       "hashtagCount":     {"from": "hashtags[].name", "convert": "list-length", "default": []},
       "hasTrendingSound": {"from": "soundUses", "convert": "threshold", "threshold": 10000},
       "saves":            {"constant": 0},
       "postedAt":         {"from": "created", "convert": "timestamp", "format": "%d/%m/%Y %H:%M"},
       "likes": "diggCount"                 # shorthand: the field's default conversion
     }}

``from`` is a column name, a dotted path into nested JSON (``a.b``, ``a[0].b``,
``a[].b`` for every element of a list), or a list of such alternatives (the
first one present wins). Flattened CSV exports (``authorMeta/fans``,
``hashtags/0/name``) resolve too. ``default`` (a raw value, converted like
the source would be) fills a missing or blank source; without one, a missing
source is an error, except for ``followers`` (unknown) and ``videoId``.

Conversions
-----------
``count``        non-negative count: ``1234``, ``1,234``, ``541.2K``, ``1.4M``, ``2B``
``number``       a plain non-negative number
``duration``     seconds: a number, ``mm:ss`` or ``hh:mm:ss``; ``"unit": "ms"`` for milliseconds
``list-length``  a JSON list's length, or the items of a comma-separated string
``length``       a text's length in characters (captions)
``timestamp``    ``"format"``: ``auto`` (ISO 8601, ``YYYY-MM-DD HH:MM:SS``, epoch seconds or milliseconds),
                 ``epoch``, ``epoch-ms``, or a ``strptime`` pattern; naive times are UTC
``flag``         true/false, 1/0, yes/no; ``"invert": true`` negates
``threshold``    a count compared with ``"threshold"``: ``>=`` is true
``constant``     the same value for every row: ``{"constant": 0}`` (no ``from``)
``text``         kept as text (``videoId``)

Errors
------
Every conversion error names the row (CSV/JSON Lines: 1-based line; JSON
array: 0-based index), the source column and the offending value. Up to
:data:`MAX_REPORTED_PROBLEMS` problems are collected before giving up, and
the message says how many more there were.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from virality.data.split import TrainingSet, build_training_set
from virality.errors import ConfigurationError, DataValidationError
from virality.ml.features import RawColumnsBuilder, RawVideos, parse_flag, parse_number, parse_posted_at

#: Raw fields a mapping may fill, in the column order of the canonical CSV.
CANONICAL_COLUMNS = ("videoId", "views", "likes", "comments", "shares", "saves", "followers", "durationSeconds",
                     "hashtagCount", "hasTrendingSound", "captionLength", "postedAt")
#: Fields that may be absent from a row (followers unknown, no id).
OPTIONAL_FIELDS = frozenset({"followers", "videoId"})
REQUIRED_FIELDS = tuple(c for c in CANONICAL_COLUMNS if c not in OPTIONAL_FIELDS)

CONVERSIONS = ("count", "number", "duration", "list-length", "length", "timestamp", "flag", "threshold",
               "constant", "text")
#: What ``"views": "playCount"`` (a bare source) means for each field.
DEFAULT_CONVERSION = {"videoId": "text", "views": "count", "likes": "count", "comments": "count",
                      "shares": "count", "saves": "count", "followers": "count", "durationSeconds": "duration",
                      "hashtagCount": "list-length", "hasTrendingSound": "flag", "captionLength": "length",
                      "postedAt": "timestamp"}
_SPEC_KEYS = {"from", "convert", "default", "format", "unit", "invert", "threshold", "value", "constant"}

MAX_REPORTED_PROBLEMS = 10
#: Object metadata (``x-amz-meta-preset``) naming the preset of an uploaded training file.
PRESET_METADATA = "preset"


class ImportValidationError(DataValidationError):
    """Several rows of an export failed to convert.

    The first problem gives ``row``/``column``; ``problems`` holds up to
    :data:`MAX_REPORTED_PROBLEMS` of them and ``more`` counts the rest.
    """

    def __init__(self, problems: Sequence[DataValidationError], total: int, location: str | None) -> None:
        self.problems = list(problems)
        self.more = total - len(self.problems)
        first = self.problems[0]
        lines = [str(p) for p in self.problems]
        if total > 1:
            head = f"{location + ': ' if location else ''}{total} rows could not be converted"
            tail = f"\n  ... and {self.more} more problem(s) not shown" if self.more else ""
            message = head + ":\n  " + "\n  ".join(lines) + tail
            DataValidationError.__init__(self, message, location=None)
        else:
            DataValidationError.__init__(self, first.message, row=first.row, column=first.column,
                                         location=first.location)
        self.row, self.column, self.location = first.row, first.column, location or first.location


# --------------------------------------------------------------------------- scalar conversions

_COUNT_RE = re.compile(r"^([0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?|\.[0-9]+)\s*([kmb])?$", re.IGNORECASE)
_SCALE = {None: 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


def parse_count(value: object) -> float:
    """A non-negative count as the site shows it: ``1234``, ``1,234``, ``541.2K``, ``1.4M``, ``2B``.

    Raises
    ------
    ValueError
        Naming the accepted forms.
    """
    if isinstance(value, str):
        text = value.strip()
        match = _COUNT_RE.match(text)
        if match is None:
            if text == "":
                raise ValueError("empty value, expected a count")
            raise ValueError("not a count (expected e.g. 1234, 1,234, 541.2K, 1.4M, 2B)")
        digits, suffix = match.groups()
        # Decimal keeps "541.2K" exactly 541200 (float would give 541200.00000000006).
        number = float(Decimal(digits.replace(",", "")) * _SCALE[suffix.lower() if suffix else None])
    else:
        number = parse_number(value)
    if not math.isfinite(number):
        raise ValueError("must be finite")
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def parse_duration(value: object, unit: str = "s") -> float:
    """Seconds from a number, ``mm:ss`` or ``hh:mm:ss`` (``unit="ms"``: numbers are milliseconds)."""
    if isinstance(value, str) and ":" in value:
        parts = value.strip().split(":")
        if len(parts) not in (2, 3) or not all(re.fullmatch(r"[0-9]+(\.[0-9]+)?", p) for p in parts):
            raise ValueError("not a duration (expected seconds, mm:ss or hh:mm:ss)")
        numbers = [float(p) for p in parts]
        if any(n >= 60 for n in numbers[1:]):
            raise ValueError("minutes and seconds after a ':' must be below 60")
        seconds = 0.0
        for n in numbers:
            seconds = seconds * 60 + n
        return seconds
    try:
        number = parse_number(value)
    except ValueError:
        raise ValueError("not a duration (expected seconds, mm:ss or hh:mm:ss)") from None
    if number < 0:
        raise ValueError("must be >= 0")
    return number / 1000.0 if unit == "ms" else number


def parse_list_length(value: object) -> float:
    """Items of a JSON list, or of a comma-separated string (``"fyp, dance"``; ``['a', 'b']`` too)."""
    if isinstance(value, list | tuple):
        return float(sum(1 for v in value if v is not None and not (isinstance(v, str) and not v.strip())))
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):     # a list written as text by pandas & co.
            text = text[1:-1]
        items = [item.strip().strip("'\"").strip() for item in text.split(",")]
        return float(sum(1 for item in items if item.strip("#")))
    if value is None:
        return 0.0
    raise ValueError("expected a list or a comma-separated string")


#: ``auto`` timestamps at or above this are epoch milliseconds.
EPOCH_MS_FROM = 1e11


def parse_timestamp(value: object, fmt: str = "auto") -> str:
    """Canonical ``YYYY-mm-ddTHH:MM:SSZ`` from ``fmt``: auto, epoch, epoch-ms or a strptime pattern."""
    if fmt == "auto":
        try:
            number = parse_number(value)
        except ValueError:
            number = None
        # 1e11 epoch seconds is the year 5138: a number that large is epoch milliseconds.
        posted = parse_posted_at(number / 1000.0 if number is not None and number >= EPOCH_MS_FROM else value)
    elif fmt in ("epoch", "epoch-ms"):
        try:
            number = parse_number(value)
        except ValueError:
            raise ValueError(f"expected {fmt} (a number)") from None
        posted = parse_posted_at(number / 1000.0 if fmt == "epoch-ms" else number)
    else:
        if not isinstance(value, str):
            raise ValueError(f"expected text in the format {fmt!r}")
        try:
            posted = datetime.strptime(value.strip(), fmt)
        except ValueError:
            raise ValueError(f"does not match the format {fmt!r}") from None
        posted = posted.replace(tzinfo=UTC) if posted.tzinfo is None else posted.astimezone(UTC)
    return posted.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_length(value: object) -> float:
    """Length in characters of a caption (``None`` = empty)."""
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise ValueError("expected text")
    return float(len(value))


# --------------------------------------------------------------------------- paths

_ALL = object()      # "[]": every element of a list


def _parse_path(path: str) -> list[Any]:
    steps: list[Any] = []
    for part in path.split("."):
        match = re.fullmatch(r"([^\[\]]*)((?:\[[0-9]*\])*)", part)
        if match is None or (not match.group(1) and not match.group(2)):
            raise ConfigurationError(f"invalid path {path!r} (use a.b, a[0].b or a[].b)")
        if match.group(1):
            steps.append(match.group(1))
        for index in re.findall(r"\[([0-9]*)\]", match.group(2)):
            steps.append(_ALL if index == "" else int(index))
    return steps


_MISSING = object()


def _walk(obj: Any, steps: Sequence[Any]) -> Any:
    for i, step in enumerate(steps):
        if step is _ALL:
            if not isinstance(obj, list):
                return _MISSING
            found = [_walk(item, steps[i + 1:]) for item in obj]
            return [v for v in found if v is not _MISSING]
        if isinstance(step, int):
            if not isinstance(obj, list) or step >= len(obj):
                return _MISSING
            obj = obj[step]
        else:
            if not isinstance(obj, dict) or step not in obj:
                return _MISSING
            obj = obj[step]
    return obj


@dataclass(frozen=True, slots=True)
class SourcePath:
    """One ``from`` alternative, parsed once."""

    text: str
    steps: tuple[Any, ...]
    flat: re.Pattern[str]     # the same path in a flattened CSV header ("a/0/b", "a.0.b")
    has_all: bool
    # Flattened keys matching ``flat``, per key set: every CSV row shares one header.
    _flat_keys: dict[tuple[Any, ...], tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)
    _last: list[Any] = field(default_factory=lambda: [None, ()], compare=False, repr=False)   # keys, flat keys

    @classmethod
    def parse(cls, text: str) -> SourcePath:
        steps = tuple(_parse_path(text))
        pattern = r"[./]".join(r"([0-9]+)" if s is _ALL else re.escape(str(s)) for s in steps)
        return cls(text, steps, re.compile(pattern), any(s is _ALL for s in steps))

    def resolve(self, record: Mapping[str, Any], keys: tuple[Any, ...] | None = None) -> Any:
        """The value at this path, or ``_MISSING``.

        ``keys`` is ``tuple(record)`` when the caller knows it (a CSV header, shared by every row).
        """
        if self.text in record:
            return record[self.text]
        value = _walk(record, self.steps)
        if value is not _MISSING:
            return value
        # Flattened exports: one column per leaf ("authorMeta/fans", "hashtags/3/name").
        last = self._last
        if keys is not None and keys is last[0]:
            flat_keys = last[1]         # the same CSV header as the row before: no tuple hash
        else:
            flat_keys = self._flat_keys_of(tuple(record) if keys is None else keys)
            if keys is not None:
                last[0], last[1] = keys, flat_keys
        if not flat_keys:
            return _MISSING
        if self.has_all:
            # Blank cells are the columns of hashtags a video does not have (inlined _blank: the hot loop).
            return [v for k in flat_keys
                    if (v := record[k]) is not None and not (isinstance(v, str) and not v.strip())]
        return record[flat_keys[0]]

    def _flat_keys_of(self, keys: tuple[Any, ...]) -> tuple[str, ...]:
        flat_keys = self._flat_keys.get(keys)
        if flat_keys is None:
            if len(self._flat_keys) >= 256:       # JSON records may each have other keys: stay bounded
                self._flat_keys.clear()
            matches = sorted((tuple(int(g) for g in m.groups()), k) for k in keys
                             if isinstance(k, str) and (m := self.flat.fullmatch(k)))
            flat_keys = self._flat_keys[keys] = tuple(k for _, k in matches)
        return flat_keys


# --------------------------------------------------------------------------- mapping


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one raw field is filled: source path(s), conversion and its options."""

    target: str
    convert: str
    sources: tuple[SourcePath, ...] = ()
    default: Any = _MISSING
    fmt: str = "auto"
    unit: str = "s"
    invert: bool = False
    threshold: float = 0.0
    value: Any = None

    @property
    def column(self) -> str:
        return " | ".join(s.text for s in self.sources) if self.sources else self.target

    def convert_value(self, raw: Any) -> Any:
        """Apply the conversion to a present value (``ValueError`` on bad input)."""
        kind = self.convert
        if kind == "count":
            return parse_count(raw)
        if kind == "number":
            number = parse_number(raw)
            if number < 0:
                raise ValueError("must be >= 0")
            return number
        if kind == "duration":
            return parse_duration(raw, self.unit)
        if kind == "list-length":
            return parse_list_length(raw)
        if kind == "length":
            return parse_length(raw)
        if kind == "timestamp":
            return parse_timestamp(raw, self.fmt)
        if kind == "flag":
            flag = parse_flag(raw)
            return 1.0 - flag if self.invert else flag
        if kind == "threshold":
            hit = parse_count(raw) >= self.threshold
            return float(hit != self.invert)
        if kind == "text":
            if isinstance(raw, dict | list):
                raise ValueError("expected text or a number")
            return str(raw)
        raise AssertionError(kind)     # checked when the mapping is built

    def apply(self, record: Mapping[str, Any], row: int | None, location: str | None,
              keys: tuple[Any, ...] | None = None) -> Any:
        """The converted value of this field for one record; ``None`` = unknown (optional fields)."""
        if self.convert == "constant":
            return self.value
        # A blank list cell is an empty list; any other blank cell is missing (try the next alternative).
        empty_ok = self.convert == "list-length"
        used, raw = self.sources[0], _MISSING
        for source in self.sources:
            value = source.resolve(record, keys)
            if value is not _MISSING and (empty_ok or not _blank(value)):
                used, raw = source, value
                break
        if raw is _MISSING or (_blank(raw) and not empty_ok):
            if self.default is not _MISSING:
                raw = self.default
            elif self.target in OPTIONAL_FIELDS:
                return None
            else:
                raise DataValidationError(f"missing value for {self.target}", row=row, column=self.column,
                                          location=location)
        try:
            return self.convert_value(raw)
        except (ValueError, OverflowError, OSError) as exc:
            shown = raw if not isinstance(raw, str) or len(raw) <= 80 else raw[:77] + "..."
            raise DataValidationError(f"{exc}: {shown!r} (for {self.target}, conversion {self.convert})",
                                      row=row, column=used.text, location=location) from None


@dataclass(frozen=True, slots=True)
class Join:
    """Attach a second file's record (e.g. Research API user info) to each row by a key."""

    on: str                 # column of the video rows ("username")
    key: str                # column of the joined rows ("username")
    as_: str = "user"       # joined record is visible as "<as>.<field>" in paths


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """A validated mapping from an export's columns to the raw video fields."""

    name: str
    rules: tuple[FieldRule, ...]
    records: tuple[SourcePath, ...] = ()
    join: Join | None = None
    description: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], name: str = "mapping") -> ColumnMapping:
        """Validate a mapping document (see the module docstring)."""
        if not isinstance(doc, Mapping):
            raise ConfigurationError(f"{name}: a mapping must be an object with 'fields'")
        unknown = set(doc) - {"name", "description", "records", "join", "fields"}
        if unknown:
            raise ConfigurationError(f"{name}: unknown key(s) {', '.join(sorted(unknown))}; "
                                     "expected name, description, records, join, fields")
        name = str(doc.get("name") or name)
        fields = doc.get("fields")
        if not isinstance(fields, Mapping) or not fields:
            raise ConfigurationError(f"{name}: 'fields' must be an object naming a source per raw field")
        rules = [_rule(name, target, spec) for target, spec in fields.items()]
        missing = [t for t in REQUIRED_FIELDS if t not in fields]
        if missing:
            raise ConfigurationError(f"{name}: no rule for {', '.join(missing)} (give a source, or "
                                     '{"constant": ...} when the export lacks it)')
        records = doc.get("records") or ()
        if isinstance(records, str):
            records = (records,)
        if not isinstance(records, list | tuple) or not all(isinstance(r, str) for r in records):
            raise ConfigurationError(f"{name}: 'records' must be a path or a list of paths")
        join = doc.get("join")
        parsed_join = None
        if join is not None:
            if not isinstance(join, Mapping) or not isinstance(join.get("on"), str):
                raise ConfigurationError(f"{name}: 'join' must be {{\"on\": column, \"key\": column, \"as\": name}}")
            parsed_join = Join(join["on"], str(join.get("key") or join["on"]), str(join.get("as") or "user"))
        order = {c: i for i, c in enumerate(CANONICAL_COLUMNS)}
        rules.sort(key=lambda r: order[r.target])
        return cls(name, tuple(rules), tuple(SourcePath.parse(r) for r in records), parsed_join,
                   str(doc.get("description") or ""), dict(doc))

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(r.target for r in self.rules)

    def convert(self, record: Mapping[str, Any], row: int | None, location: str | None = None,
                keys: tuple[Any, ...] | None = None) -> dict[str, Any]:
        """One export record -> one canonical raw record (raises :class:`DataValidationError`)."""
        return {rule.target: rule.apply(record, row, location, keys) for rule in self.rules}


def _rule(mapping: str, target: str, spec: Any) -> FieldRule:
    where = f"{mapping}: field {target!r}"
    if target not in CANONICAL_COLUMNS:
        raise ConfigurationError(f"{where}: not a raw field; expected one of {', '.join(CANONICAL_COLUMNS)}")
    if isinstance(spec, str | list):
        spec = {"from": spec}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: expected a source (text) or an object with 'from' and 'convert'")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                                 f"expected {', '.join(sorted(_SPEC_KEYS))}")
    if "constant" in spec:          # {"constant": 0} is short for {"convert": "constant", "value": 0}
        spec = {"convert": "constant", "value": spec["constant"],
                **{k: v for k, v in spec.items() if k != "constant"}}
    convert = spec.get("convert") or ("constant" if "value" in spec and "from" not in spec
                                      else DEFAULT_CONVERSION[target])
    if convert not in CONVERSIONS:
        raise ConfigurationError(f"{where}: unknown conversion {convert!r}; expected one of {', '.join(CONVERSIONS)}")
    kwargs: dict[str, Any] = {}
    if convert == "constant":
        if "value" not in spec:
            raise ConfigurationError(f"{where}: a constant needs 'value'")
        kwargs["value"] = _constant(where, target, spec["value"])
        return FieldRule(target, convert, **kwargs)
    sources = spec.get("from")
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise ConfigurationError(f"{where}: 'from' must be a column / path or a list of them")
    if convert == "threshold":
        try:
            kwargs["threshold"] = parse_count(spec.get("threshold"))
        except ValueError:
            raise ConfigurationError(f"{where}: a threshold needs a non-negative 'threshold' number") from None
    if "format" in spec:
        if convert != "timestamp" or not isinstance(spec["format"], str):
            raise ConfigurationError(f"{where}: 'format' applies to timestamp conversions only (a string)")
        kwargs["fmt"] = spec["format"]
    if "unit" in spec:
        if convert != "duration" or spec["unit"] not in ("s", "ms"):
            raise ConfigurationError(f"{where}: 'unit' applies to duration conversions only ('s' or 'ms')")
        kwargs["unit"] = spec["unit"]
    if "invert" in spec:
        if convert not in ("flag", "threshold") or not isinstance(spec["invert"], bool):
            raise ConfigurationError(f"{where}: 'invert' (true/false) applies to flag and threshold conversions")
        kwargs["invert"] = spec["invert"]
    if "default" in spec:
        kwargs["default"] = spec["default"]
    if target in ("hasTrendingSound",) and convert not in ("flag", "threshold"):
        raise ConfigurationError(f"{where}: needs a flag, threshold or constant conversion")
    if target == "postedAt" and convert != "timestamp":
        raise ConfigurationError(f"{where}: needs a timestamp conversion")
    if target not in ("postedAt", "videoId", "hasTrendingSound") and convert in ("timestamp", "text", "flag"):
        raise ConfigurationError(f"{where}: a {convert} conversion does not give a number")
    rule = FieldRule(target, convert, tuple(SourcePath.parse(s) for s in sources), **kwargs)
    if rule.default is not _MISSING:
        try:
            rule.convert_value(rule.default)
        except (ValueError, OverflowError, OSError) as exc:
            raise ConfigurationError(f"{where}: default {rule.default!r} does not convert: {exc}") from None
    return rule


def _constant(where: str, target: str, value: Any) -> Any:
    try:
        if target == "postedAt":
            return parse_timestamp(value)
        if target == "hasTrendingSound":
            return parse_flag(value)
        if target == "videoId":
            return str(value)
        return parse_count(value)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: constant {value!r} is not valid: {exc}") from None


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    "research-api": {
        "name": "research-api",
        "description": "TikTok Research API /v2/research/video/query/ video objects (JSON response, "
                       "JSON Lines or CSV of the same fields); follower_count joined from user info",
        "records": ["data.videos", "videos"],
        "join": {"on": "username", "key": "username", "as": "user"},
        "fields": {
            "videoId": {"from": ["id", "video_id"], "convert": "text"},
            "views": {"from": "view_count", "convert": "count"},
            "likes": {"from": "like_count", "convert": "count"},
            "comments": {"from": "comment_count", "convert": "count"},
            "shares": {"from": "share_count", "convert": "count"},
            "saves": {"from": "favorites_count", "convert": "count"},
            "followers": {"from": ["follower_count", "user.follower_count"], "convert": "count"},
            "durationSeconds": {"from": "video_duration", "convert": "duration"},
            "hashtagCount": {"from": "hashtag_names", "convert": "list-length", "default": []},
            # The Research API does not say whether a sound is trending.
            "hasTrendingSound": {"constant": False},
            "captionLength": {"from": "video_description", "convert": "length", "default": ""},
            "postedAt": {"from": "create_time", "convert": "timestamp", "format": "auto"},
        },
    },
    "scraper": {
        "name": "scraper",
        "description": "common scraper export (Apify-style TikTok scraper items, JSON/JSON Lines or CSV "
                       "with flattened 'authorMeta/fans' columns; TikTok web 'stats.*' items too)",
        "fields": {
            "videoId": {"from": "id", "convert": "text"},
            "views": {"from": ["playCount", "stats.playCount"], "convert": "count"},
            "likes": {"from": ["diggCount", "stats.diggCount"], "convert": "count"},
            "comments": {"from": ["commentCount", "stats.commentCount"], "convert": "count"},
            "shares": {"from": ["shareCount", "stats.shareCount"], "convert": "count"},
            "saves": {"from": ["collectCount", "stats.collectCount"], "convert": "count"},
            "followers": {"from": ["authorMeta.fans", "authorStats.followerCount"], "convert": "count"},
            "durationSeconds": {"from": ["videoMeta.duration", "video.duration"], "convert": "duration"},
            "hashtagCount": {"from": ["hashtags[].name", "challenges[].title"], "convert": "list-length",
                             "default": []},
            # An original sound is the creator's own upload, so not a trending one.
            "hasTrendingSound": {"from": ["musicMeta.musicOriginal", "music.original"], "convert": "flag",
                                 "invert": True},
            "captionLength": {"from": ["text", "desc"], "convert": "length", "default": ""},
            "postedAt": {"from": ["createTimeISO", "createTime"], "convert": "timestamp", "format": "auto"},
        },
    },
}


def preset(name: str) -> ColumnMapping:
    """A built-in mapping by name (:data:`PRESETS`)."""
    try:
        return ColumnMapping.from_dict(PRESETS[name], name)
    except KeyError:
        raise ConfigurationError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def load_mapping(data: bytes, source: str = "mapping") -> ColumnMapping:
    """Parse a mapping file: JSON, or YAML (``.yaml``/``.yml``) when PyYAML is importable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{source}: not UTF-8 text") from None
    if source.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ConfigurationError(f"{source}: reading YAML needs PyYAML (pip install pyyaml); "
                                     "or write the mapping as JSON") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{source}: invalid YAML: {exc}") from None
    else:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{source}: invalid JSON: {exc}") from None
    return ColumnMapping.from_dict(doc, Path(source).stem or "mapping")


def resolve_mapping(preset_name: str | None = None, mapping_path: str | None = None) -> ColumnMapping | None:
    """The mapping a command line asks for: ``--preset`` or ``--mapping FILE`` (not both)."""
    if preset_name and mapping_path:
        raise ConfigurationError("give --preset or --mapping, not both")
    if preset_name:
        return preset(preset_name)
    if mapping_path:
        return load_mapping(Path(mapping_path).read_bytes(), mapping_path)
    return None


def preset_for_object(key: str, metadata: Mapping[str, str]) -> str | None:
    """Which preset an uploaded training object asks for, or ``None`` (canonical formats).

    Object metadata ``x-amz-meta-preset`` (``metadata["preset"]`` as S3
    returns it) wins; otherwise a directory of the key named after a preset,
    as in ``training-data/scraper/2026-11.json``. ``preset: none`` (or
    ``canonical``) forces the canonical readers.

    Raises
    ------
    DataValidationError
        The metadata names an unknown preset (retrying cannot fix it).
    """
    chosen = {k.lower(): v for k, v in metadata.items()}.get(PRESET_METADATA)
    if chosen is not None:
        chosen = chosen.strip().lower()
        if chosen in ("", "none", "canonical"):
            return None
        if chosen not in PRESETS:
            raise DataValidationError(f"object metadata {PRESET_METADATA}={chosen!r} is not a preset; "
                                      f"expected one of {', '.join(PRESETS)} or none", location=key)
        return chosen
    for directory in key.split("/")[:-1]:
        if directory in PRESETS:
            return directory
    return None


# --------------------------------------------------------------------------- reading exports


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")       # drops a BOM
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text (byte {exc.start})", location=source or None) from None


def _json(text: str, source: str, row: int | None = None) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise DataValidationError("JSON nested too deeply", location=source or None, row=row) from None
    except ValueError as exc:
        raise DataValidationError(f"invalid JSON: {exc}", location=source or None, row=row) from None


def iter_export_records(data: bytes, source: str = "",
                        records: Sequence[SourcePath] = ()) -> tuple[str, Iterator[tuple[int, Mapping[str, Any]]]]:
    """Detect an export's shape and yield ``(row, record)`` pairs.

    Returns
    -------
    shape : {"csv", "jsonl", "json"}
    rows : iterator of (int, mapping)
        CSV and JSON Lines rows are numbered by line (1-based); elements of a
        JSON array by index (0-based).
    """
    text = _decode(data, source)
    head = text.lstrip()[:1]
    if head == "":
        raise DataValidationError("the file is empty", location=source or None)
    if head not in "[{":
        return "csv", _csv_rows(text, source)
    try:
        doc = json.loads(text)
    except RecursionError:
        raise DataValidationError("JSON nested too deeply", location=source or None) from None
    except ValueError:
        if head == "[":
            _json(text, source)        # raises with the parser's position
        return "jsonl", _jsonl_rows(text, source)
    if isinstance(doc, dict):
        for path in records:
            found = path.resolve(doc)
            if isinstance(found, list):
                doc = found
                break
        else:
            if any(path.steps and path.steps[0] in doc for path in records):
                # e.g. a Research API error response: {"data": {}, "error": {"code": "...", "message": "..."}}
                error = doc.get("error")
                detail = (f"; the document's error: {json.dumps(error)}"
                          if isinstance(error, dict) and error.get("code") not in (None, "ok") else "")
                raise DataValidationError(f"no list of records at {' or '.join(p.text for p in records)}{detail}",
                                          location=source or None)
            return "jsonl", iter([(1, doc)])    # one record (JSON Lines of one line)
    if not isinstance(doc, list):
        raise DataValidationError("expected a JSON array of objects, JSON Lines or CSV", location=source or None)
    return "json", _array_rows(doc, source)


def _array_rows(doc: list[Any], source: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise DataValidationError("expected a JSON object", location=source or None, row=i)
        yield i, item


def _jsonl_rows(text: str, source: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = _json(line, source, row=line_no)
        if not isinstance(record, dict):
            raise DataValidationError("expected a JSON object", location=source or None, row=line_no)
        yield line_no, record


def _csv_rows(text: str, source: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        dupes = sorted({h for h in header if h and header.count(h) > 1})
        if dupes:
            raise DataValidationError(f"duplicated column(s) {', '.join(dupes)}", location=source or None,
                                      row=1, column=dupes[0])
        width = len(header)
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != width:
                raise DataValidationError(f"expected {width} fields, got {len(row)}", location=source or None,
                                          row=reader.line_num)
            yield reader.line_num, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        raise DataValidationError(f"malformed CSV: {exc}", location=source or None, row=reader.line_num) from None


def read_join_table(data: bytes, source: str, join: Join) -> dict[str, Mapping[str, Any]]:
    """Index a second export (e.g. Research API user info) by ``join.key``."""
    _, rows = iter_export_records(data, source, (SourcePath.parse("data.users"), SourcePath.parse("data"),
                                                 SourcePath.parse("users")))
    table: dict[str, Mapping[str, Any]] = {}
    for _row, record in rows:
        key = record.get(join.key)
        if not _blank(key):
            table[str(key).strip()] = record
    return table


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Converted records of one export.

    Attributes
    ----------
    shape : {"csv", "jsonl", "json"}
    records : list of dict
        Canonical raw records (``CANONICAL_COLUMNS`` present in the mapping).
    raw : RawVideos
        The same records validated by :class:`RawColumnsBuilder`.
    rows : list of int
        The source row of each record.
    """

    shape: str
    records: list[dict[str, Any]]
    raw: RawVideos
    rows: list[int]


def import_export(data: bytes, source: str, mapping: ColumnMapping,
                  join: Mapping[str, Mapping[str, Any]] | None = None) -> ImportResult:
    """Convert every record of an export, collecting up to :data:`MAX_REPORTED_PROBLEMS` problems.

    Raises
    ------
    DataValidationError
        The file is unreadable; :class:`ImportValidationError` when rows fail.
    """
    location = source or None
    shape, rows = iter_export_records(data, source, mapping.records)
    builder = RawColumnsBuilder(location)
    problems: list[DataValidationError] = []
    total = 0
    records: list[dict[str, Any]] = []
    row_numbers: list[int] = []
    columns = {r.target: r.column for r in mapping.rules}
    header: tuple[Any, ...] | None = None
    for row, record in rows:
        if shape == "csv" and header is None:
            header = tuple(record)     # every CSV row has the header's keys: hash it once
            _check_csv_header(mapping, header, location)
        if mapping.join is not None and join is not None:
            key = record.get(mapping.join.on)
            match = join.get(str(key).strip()) if not _blank(key) else None
            if match is not None:
                record = {**record, mapping.join.as_: match}
        try:
            converted = mapping.convert(record, row, location, header if shape == "csv" else None)
            canonical = {k: v for k, v in converted.items() if k != "videoId"}
            try:
                builder.add(canonical, row=row)
            except DataValidationError as exc:
                # Name the user's column, not only the raw field it fills.
                column = columns.get(exc.column or "", exc.column)
                raise DataValidationError(f"{exc.message} (for {exc.column})", row=row, column=column,
                                          location=location) from None
        except DataValidationError as exc:
            total += 1
            if len(problems) < MAX_REPORTED_PROBLEMS:
                problems.append(exc)
            continue
        if not problems:
            records.append(converted)
            row_numbers.append(row)
    if problems:
        raise ImportValidationError(problems, total, location)
    if not records:
        raise DataValidationError("no records", location=location)
    return ImportResult(shape, records, builder.build(), row_numbers)


def _check_csv_header(mapping: ColumnMapping, header: tuple[Any, ...], location: str | None) -> None:
    """A required field none of whose sources is a column: one error, not one per row."""
    for rule in mapping.rules:
        if rule.convert == "constant" or rule.default is not _MISSING or rule.target in OPTIONAL_FIELDS:
            continue
        if not any(s.text in header or s._flat_keys_of(header) for s in rule.sources):
            shown = ", ".join(str(h) for h in header[:40]) + (", ..." if len(header) > 40 else "")
            raise DataValidationError(f"no column for {rule.target} (mapping {mapping.name!r} reads it from "
                                      f"{rule.column}); the header has: {shown}", row=1, column=rule.column,
                                      location=location)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def to_canonical_csv(result: ImportResult) -> bytes:
    """The records as the project's raw CSV (``videoId`` only when mapped).

    ``hasTrendingSound`` is written as true/false, ``followers`` blank when unknown.
    """
    present = set(result.records[0]) if result.records else set()
    header = [c for c in CANONICAL_COLUMNS if c in present or c != "videoId"]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for record in result.records:
        writer.writerow([("true" if record[c] else "false") if c == "hasTrendingSound" else _cell(record.get(c))
                         for c in header])
    return buf.getvalue().encode()


def load_mapped_training_data(data: bytes, source: str, mapping: ColumnMapping, *, test_fraction: float = 0.2,
                              seed: int = 42, tiering: Any = None,
                              join: Mapping[str, Mapping[str, Any]] | None = None) -> TrainingSet:
    """Import an export and label/split/featurise it like a canonical raw file.

    Returns
    -------
    TrainingSet
        ``format`` reads ``"<mapping>:<shape>"``, e.g. ``"scraper:json"``.
    """
    result = import_export(data, source, mapping, join)
    return build_training_set(result.raw, source=source, sha256=hashlib.sha256(data).hexdigest(),
                              fmt=f"{mapping.name}:{result.shape}",
                              test_fraction=test_fraction, seed=seed, tiering=tiering)


def preset_loader(key: str, metadata: Mapping[str, str]) -> Callable[..., TrainingSet] | None:
    """The retrain Lambda's hook: a reader for the preset :func:`preset_for_object` picks, or ``None``.

    The reader takes the arguments of :func:`virality.data.datasets.load_training_data`
    (``data, source, *, test_fraction, seed, tiering``).
    """
    name = preset_for_object(key, metadata)
    return None if name is None else functools.partial(load_mapped_training_data, mapping=preset(name))
