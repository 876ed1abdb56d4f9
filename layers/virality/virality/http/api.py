"""The predict API's request -> prediction path.

Used by the predict Lambda (``functions/predict/app.py``), the local HTTP
server and the CLI, so every entry point validates and predicts the same way.
Requests are validated as the pydantic models of :mod:`virality.http.models`
define them, in strict mode: strings where numbers belong, booleans as numbers,
NaN/Infinity, unknown and duplicated fields are all rejected with the offending
field named (``instances[3].features.likeRate``). Bodies of only named features or
only raw videos take typed fast paths that accept exactly what those models
accept; anything else, and every error, is decided by the models themselves.
"""

from __future__ import annotations

import binascii
import itertools
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import jiter
import msgspec
import numpy as np
import orjson
import pybase64

from virality.errors import RequestValidationError
from virality.ml.features import (
    FEATURE_NAMES,
    N_FEATURES,
    RAW_NUMERIC_FIELDS,
    RawColumnsBuilder,
    RawVideos,
    feature_vector_to_ml_input,
    parse_posted_at,
)
from virality.ml.model import ViralityModel
from virality.safejson import NestingTooDeepError, check_depth

if TYPE_CHECKING:
    from virality.http.models import Instance, PredictRequest

#: Deepest nesting a request body may have. A valid request nests at most 4 levels
#: (``{"instances": [{"video": {...}}]}``); this limit is far below the recursion limit
#: of the Lambda Python runtime (1,000), so nothing that walks an accepted body can overflow.
MAX_NESTING_DEPTH = 32

def public_data_provenance(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The provenance GET /model shows: the training file's name and sha256, not where it is stored.

    ``s3://virality-data-<account id>-.../training-data/x.csv`` -> ``x.csv``; a local path -> its name.
    """
    if data is None:
        return None
    source = str(data.get("source", ""))
    return {**data, "source": source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]}


# --------------------------------------------------------------------------- parsing


class _DuplicateKeys(dict):
    """A JSON object that repeated a key (kept so the full path can be reported)."""

    duplicates: list[str]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):      # the common case: one C call, no Python loop
        return out
    out = {}
    duplicates = []
    for key, value in pairs:
        if key in out:
            duplicates.append(key)
        out[key] = value
    if duplicates:
        marked = _DuplicateKeys(out)
        marked.duplicates = duplicates
        return marked
    return out


def _find_duplicates(node: Any, path: str = "") -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if isinstance(node, dict):
        prefix = f"{path}." if path else ""
        found += [{"field": prefix + key, "message": "duplicated field"}
                  for key in getattr(node, "duplicates", ())]
        for key, value in node.items():
            found += _find_duplicates(value, prefix + key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _find_duplicates(value, f"{path}[{i}]")
    return found


def _too_deep(exc: NestingTooDeepError) -> RequestValidationError:
    return RequestValidationError("JSON nested too deeply", [{
        "field": _field_path(exc.parts[:3]) if exc.parts else "body",
        "message": f"nested more than {exc.max_depth} levels deep"}], status=400)


def _bounded(doc: Any) -> Any:
    """``doc``, once proven to nest at most :data:`MAX_NESTING_DEPTH` levels (else a 400 naming where)."""
    try:
        return check_depth(doc, MAX_NESTING_DEPTH)
    except NestingTooDeepError as exc:
        raise _too_deep(exc) from None


def _reject_constant(name: str) -> None:
    raise RequestValidationError("invalid JSON", [{"field": "body", "message": f"{name} is not a JSON number"}],
                                 status=400)


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("function-after[_exactly_one(), Instance]",):
            path += ("." if path else "") + str(part)
    return path or "body"


def decode_body(body: str | None, is_base64: bool, max_bytes: int) -> bytes:
    """The raw request body (API Gateway sends binary-safe bodies base64-encoded)."""
    if body is None or body == "":
        raise RequestValidationError("request body is required", [{"field": "body", "message": "empty body"}],
                                     status=400)
    if is_base64:
        if len(body) > (max_bytes * 4) // 3 + 8:
            raise RequestValidationError(f"request body exceeds {max_bytes} bytes",
                                         [{"field": "body", "message": "too large"}], status=413)
        try:
            # SIMD (pybase64): ~25x binascii's strict a2b_base64 on a 1,000-instance body. Every
            # body it accepts decodes to the same bytes; it also refuses padding after a full quantum.
            raw = pybase64.b64decode(body, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise RequestValidationError("body is marked base64 but is not valid base64",
                                         [{"field": "body", "message": "invalid base64"}], status=400) from None
    else:
        raw = body.encode() if isinstance(body, str) else body
    if len(raw) > max_bytes:
        raise RequestValidationError(f"request body exceeds {max_bytes} bytes",
                                     [{"field": "body", "message": "too large"}], status=413)
    return raw


@dataclass(slots=True)   # not frozen: a frozen dataclass's __init__ costs ~1 µs more, on every request
class ParsedRequest:
    """A validated request.

    Exactly one of ``row`` (a single named-features instance: its 15 values in
    :data:`FEATURE_NAMES` order, no NumPy array: the commonest request), ``X``
    (a batch of named features, shape (n_instances, 15), same column order),
    ``videos`` (raw videos only, as columns of shape (n_instances,), with
    ``video_ids`` their optional ids: the raw-video fast path) and ``instances``
    (validated pydantic instances) is set.
    """

    batch: bool
    explain: bool
    X: np.ndarray | None = None
    instances: Sequence[Instance | PredictRequest] | None = None
    videos: RawVideos | None = None
    video_ids: Sequence[str | None] | None = None
    row: tuple[float, ...] | None = None

    def __len__(self) -> int:
        if self.row is not None:
            return 1
        if self.videos is not None:
            return len(self.videos)
        return len(self.X if self.X is not None else self.instances)  # type: ignore[arg-type]

    def feature_matrix(self) -> np.ndarray | None:
        """The named features, shape (n_instances, 15) (``row`` as one row); None for other kinds."""
        if self.row is not None:
            return np.array([self.row], dtype=np.float64)
        return self.X


_NUMBER_TYPES = frozenset((float, int))

# The named-features fast path: one typed decode (msgspec, in C) that parses and checks
# the whole body at once. Each Struct mirrors its pydantic model exactly (same fields,
# no extra ones, numbers only, each in [0, 1]); msgspec refuses NaN/Infinity literals,
# bools for numbers and numbers beyond float range, as pydantic in strict mode does.
_UnitValue = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
if TYPE_CHECKING:
    _Features = msgspec.Struct
else:   # the 15 fields, generated from FEATURE_NAMES (read back with _feature_values)
    _Features = msgspec.defstruct(
        "_Features", [(name, _UnitValue) for name in FEATURE_NAMES], forbid_unknown_fields=True, gc=False)


class _NamedItem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    features: _Features


class _NamedBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # UNSET, not a default value: the quote count needs to know which keys the text has
    features: _Features | msgspec.UnsetType = msgspec.UNSET
    instances: list[_NamedItem] | msgspec.UnsetType = msgspec.UNSET
    explain: bool | msgspec.UnsetType = msgspec.UNSET


_named_decoder = msgspec.json.Decoder(_NamedBody)
# A _Features' values in FEATURE_NAMES order (its field order): one C call, ~2x attrgetter(*FEATURE_NAMES)
_feature_values = msgspec.structs.astuple
_features_of = operator.attrgetter("features")


def _named_features_fast(raw: bytes, max_batch: int) -> ParsedRequest | None:
    """Accept, without building pydantic objects, a body made only of valid named features.

    Returns None for anything else (other kinds, or any doubt about validity): the
    pydantic path then decides and names every offending field. The typed decode
    accepts exactly what :class:`PredictRequest` accepts for such bodies, except that
    it keeps the last of duplicated keys; this proves the body's *text* has none, by
    counting quotes: without a backslash no string has an escape, so every ``"`` in
    ``raw`` opens or closes a string token. The schema allows no string value, so a
    well-formed body has exactly ``len(keys) + n * 15`` string tokens (``+ n``
    "features" keys in a batch), and a duplicate only adds tokens.

    Raises
    ------
    RequestValidationError
        413 for a valid batch of more than ``max_batch`` instances.
    """
    try:
        body = _named_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    explain = body.explain
    keys = explain is not msgspec.UNSET
    instances = body.instances
    if instances is msgspec.UNSET:      # one instance: the commonest request, kept short
        features = body.features
        if features is msgspec.UNSET or b"\\" in raw or _quotes(raw) != 2 * (1 + keys + N_FEATURES):
            return None
        return ParsedRequest(False, explain is True, row=_feature_values(features))
    if body.features is not msgspec.UNSET or not instances:
        return None
    n = len(instances)
    if n > max_batch:
        raise _batch_too_large(n, max_batch)
    if b"\\" in raw or _quotes(raw) != 2 * (1 + keys + n * (N_FEATURES + 1)):
        return None
    X = np.fromiter(itertools.chain.from_iterable(map(_feature_values, map(_features_of, instances))),
                    dtype=np.float64, count=n * N_FEATURES).reshape(n, N_FEATURES)
    return ParsedRequest(batch=True, explain=explain is True, X=X)


_QUOTE = ord('"')


def _quotes(raw: bytes) -> int:
    """How many ``"`` bytes ``raw`` has (NumPy for long bodies: ~10x ``bytes.count``, a byte-by-byte loop)."""
    if len(raw) < 4096:
        return raw.count(b'"')
    return int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) == _QUOTE))


def _batch_too_large(n: int, max_batch: int) -> RequestValidationError:
    return RequestValidationError(f"batch too large: {n} instances, MAX_BATCH is {max_batch}",
                                  [{"field": "instances", "message": f"at most {max_batch} instances"}], status=413)


_VIDEO_REQUIRED = frozenset((*RAW_NUMERIC_FIELDS, "hasTrendingSound", "postedAt"))
_VIDEO_FIELDS = frozenset((*_VIDEO_REQUIRED, "videoId", "followers", "captionLength", "caption"))
_video_counts = operator.itemgetter(*RAW_NUMERIC_FIELDS)
_VIDEO_ID_MAX = 256
_CAPTION_MAX = 20_000
_EPOCH_WEEKDAY = 3           # 1970-01-01 was a Thursday (Monday = 0)


def _optional_count(value: Any) -> float | None:
    """``value`` as :data:`Count` | None accepts it, as a float (nan for None); None when in doubt."""
    if value is None:
        return math.nan
    if type(value) in _NUMBER_TYPES:
        try:
            number = float(value)
        except OverflowError:
            return None
        if number >= 0.0 and number != math.inf:
            return number
    return None


def _weekday_hour(value: Any) -> tuple[int, int] | None:
    """(UTC weekday, hour) of a ``postedAt`` that :func:`parse_posted_at` accepts; None when in doubt."""
    kind = type(value)
    try:
        if kind is str:
            text = value.strip()
            # float() never accepts a ':' nor two '-' after the sign: such text is a timestamp, not
            # epoch seconds as a string (which parse_posted_at reads first); anything else goes there.
            if ":" not in text and text[1:].count("-") < 2:
                posted = parse_posted_at(value)
            else:
                parsed = datetime.fromisoformat(text)
                posted = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        elif kind in _NUMBER_TYPES and value >= 0 and math.isfinite(value):
            posted = datetime.fromtimestamp(value, tz=UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return posted.weekday(), posted.hour


def _string_values(video: dict[str, Any]) -> int:
    return (type(video.get("videoId")) is str) + (type(video.get("caption")) is str) + (type(video["postedAt"]) is str)


def _videos_fast(doc: dict[str, Any], raw: bytes) -> ParsedRequest | None:
    """Accept, without building pydantic objects, a body made only of valid raw videos.

    The counterpart of :func:`_named_features_fast` for ``video`` instances (a
    single one or a batch): it returns the videos as :class:`RawVideos` columns,
    the same values :class:`RawColumnsBuilder` would collect from the validated
    records, or None whenever anything differs from what :class:`VideoRecord`
    accepts (wrong type, bool for a number, negative or non-finite number, too
    long a string, unknown or missing field, no caption at all, a ``postedAt``
    :func:`parse_posted_at` refuses): the pydantic path then names every
    offending field. Duplicated keys are ruled out by counting quotes as in
    :func:`_named_features_fast` (string tokens = keys + string values); a body
    with escapes is parsed again with the duplicate check instead.
    """
    explain = doc.get("explain", False)
    if type(explain) is not bool or len(doc) - ("explain" in doc) != 1:
        return None
    if "video" in doc:
        items, batch = [doc], False
    elif type(doc.get("instances")) is list and doc["instances"]:
        items, batch = doc["instances"], True
    else:
        return None
    try:
        videos = [item["video"] for item in items]
    except (KeyError, TypeError):
        return None
    if batch and any(len(item) != 1 for item in items):
        return None
    if not all(type(v) is dict and _VIDEO_REQUIRED <= v.keys() <= _VIDEO_FIELDS for v in videos):
        return None
    counts = [_video_counts(v) for v in videos]
    if not set(map(type, itertools.chain.from_iterable(counts))) <= _NUMBER_TYPES:
        return None
    try:
        C = np.array(counts, dtype=np.float64)      # ints beyond float range raise OverflowError
    except OverflowError:
        return None
    if not (np.isfinite(C).all() and np.min(C) >= 0.0):
        return None
    followers: list[float] = []
    caption_lengths: list[float] = []
    trending: list[bool] = []
    weekdays: list[int] = []
    hours: list[int] = []
    ids: list[str | None] = []
    for v in videos:
        f = _optional_count(v.get("followers"))
        length = _optional_count(v.get("captionLength"))
        if f is None or length is None:
            return None
        if length != length:                        # captionLength absent or null: the caption's length
            caption = v.get("caption")
            if type(caption) is not str:
                return None
            length = float(len(caption))
        elif "caption" in v and v["caption"] is not None and type(v["caption"]) is not str:
            return None
        if len(v.get("caption") or "") > _CAPTION_MAX:
            return None
        video_id = v.get("videoId")
        if video_id is not None and (type(video_id) is not str or len(video_id) > _VIDEO_ID_MAX):
            return None
        flag = v["hasTrendingSound"]
        when = _weekday_hour(v["postedAt"])
        if type(flag) is not bool or when is None:
            return None
        followers.append(f)
        caption_lengths.append(length)
        trending.append(flag)
        weekdays.append(when[0])
        hours.append(when[1])
        ids.append(video_id)
    if b"\\" in raw:
        try:
            jiter.from_json(raw, allow_inf_nan=False, catch_duplicate_keys=True)
        except ValueError:
            return None
    else:
        keys = len(doc) + (len(videos) if batch else 0) + sum(map(len, videos))
        if _quotes(raw) != 2 * (keys + sum(map(_string_values, videos))):
            return None
    columns = dict(zip(RAW_NUMERIC_FIELDS, C.T, strict=True))
    videos_columns = RawVideos(
        **columns, followers=np.array(followers), hasTrendingSound=np.array(trending, dtype=np.float64),
        captionLength=np.array(caption_lengths), weekday=np.array(weekdays, dtype=np.float64),
        hour=np.array(hours, dtype=np.float64))
    return ParsedRequest(batch=batch, explain=explain, videos=videos_columns, video_ids=ids)


def _parse_json_stdlib(raw: bytes) -> Any:
    """The reference parser: precise messages, duplicated keys named with their full path."""
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RequestValidationError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestValidationError("invalid JSON", [{"field": "body", "message": str(exc)}], status=400) from None
    except RecursionError:
        raise RequestValidationError("JSON nested too deeply", [{
            "field": "body", "message": f"nested more than {MAX_NESTING_DEPTH} levels deep"}], status=400) from None
    duplicates = _find_duplicates(_bounded(doc))       # recursive, so only on a bounded document
    if duplicates:
        raise RequestValidationError("duplicated field in JSON", duplicates[:50], status=400)
    return doc


def parse_json(raw: bytes) -> Any:
    """Parse a request body: NaN/Infinity literals, duplicated keys and nesting deeper
    than :data:`MAX_NESTING_DEPTH` are errors (400).

    jiter (Rust) does the work; whenever it refuses a body, the standard library
    parses it again to either produce the precise error or, where jiter is merely
    stricter (lone surrogates, nesting depth), the document.
    """
    return _bounded(_parse_json_unbounded(raw))


def _parse_json_unbounded(raw: bytes) -> Any:
    """:func:`parse_json` for bytes whose nesting depth is already proven (the stdlib fallback bounds it anyway)."""
    try:
        return jiter.from_json(raw, allow_inf_nan=False, catch_duplicate_keys=True)
    except ValueError:
        return _parse_json_stdlib(raw)


def parse_predict_request(raw: bytes, max_batch: int) -> ParsedRequest:
    """Validate a request body.

    Raises
    ------
    RequestValidationError
        400 for bad JSON, duplicated keys or nesting deeper than :data:`MAX_NESTING_DEPTH`,
        413 for a batch over ``max_batch``, 422 for schema violations (every offending
        field listed, batch index included).
    """
    fast = _named_features_fast(raw, max_batch)
    if fast is not None:
        return fast
    # A parse without the duplicate-key check (half the cost of one with it): the raw-video
    # fast path rules duplicates out by itself (see _videos_fast); otherwise they are checked below.
    try:
        doc = jiter.from_json(raw, allow_inf_nan=False)
        duplicates_checked = False
    except ValueError:
        doc = _parse_json_stdlib(raw)
        duplicates_checked = True
    if not isinstance(doc, dict):
        raise RequestValidationError("the body must be a JSON object",
                                     [{"field": "body", "message": f"got {type(doc).__name__}"}])
    if isinstance(doc.get("instances"), list) and len(doc["instances"]) > max_batch:
        raise _batch_too_large(len(doc["instances"]), max_batch)
    instances = doc.get("instances")
    first = instances[0] if type(instances) is list and instances else doc
    if type(first) is dict and "video" in first:
        fast = _videos_fast(doc, raw)
        if fast is not None:
            return fast         # its shape (checked exactly) nests 4 levels at most
    # Everything below walks the document recursively (duplicate scan, pydantic): bound it first.
    _bounded(doc)
    if not duplicates_checked:
        doc = _parse_json_unbounded(raw)     # the same bytes: their depth is proven
    # The models decide (and name every error): pydantic is imported on this path only.
    from virality.http import models

    try:
        request = models.PredictRequest.model_validate(doc)
    except models.ValidationError as exc:
        details = [{"field": _field_path(err["loc"]), "message": err["msg"]} for err in exc.errors()[:50]]
        raise RequestValidationError("request validation failed", details) from None
    batch = request.instances is not None
    return ParsedRequest(batch=batch, explain=request.explain,
                         instances=request.instances if batch else [request])


# --------------------------------------------------------------------------- predicting


def instances_to_matrix(instances: Sequence[Instance | PredictRequest], model: ViralityModel) -> np.ndarray:
    """Feature matrix, shape (n_instances, 15), for validated instances of any kind.

    Raw videos of the batch are featurised together by the same function
    training uses, with the serving model's fitted caps.
    """
    X = np.empty((len(instances), N_FEATURES))
    video_rows: list[int] = []
    builder = RawColumnsBuilder()
    for i, inst in enumerate(instances):
        if inst.features is not None:
            X[i] = list(inst.features.__dict__.values())      # fields are declared in FEATURE_NAMES order
        elif inst.video is not None:
            builder.add(inst.video.model_dump(), row=i)
            video_rows.append(i)
        else:
            X[i] = feature_vector_to_ml_input(inst.featureVector.model_dump())  # type: ignore[union-attr]
    if video_rows:
        X[video_rows] = model.featurize(builder.build())
    return X


def predict(request: ParsedRequest, model: ViralityModel) -> dict[str, Any]:
    """The response body for a validated request (single or batch)."""
    row = request.row
    if row is not None and not request.explain:      # the commonest request, kept short
        probabilities, tier, score = model.predict_row(row)
        return {"score": score, "tier": tier, "probabilities": probabilities, "modelVersion": model.version}
    named = request.feature_matrix()
    if named is not None:
        X = named
        ids: Sequence[str | None] = [None] * X.shape[0]
    elif request.videos is not None:
        X = model.featurize(request.videos)
        ids = request.video_ids or [None] * X.shape[0]
    else:
        instances = request.instances or []
        X = instances_to_matrix(instances, model)
        ids = [inst.video.videoId if inst.video is not None else None for inst in instances]
    if not request.batch and not request.explain:
        # One instance: plain-Python arithmetic beats a dozen NumPy calls on a 1 x 15 row.
        probabilities, tier, score = model.predict_row(X[0].tolist())
        single: dict[str, Any] = {"score": score, "tier": tier, "probabilities": probabilities}
        if ids[0] is not None:
            single["videoId"] = ids[0]
        return {**single, "modelVersion": model.version}
    out = model.predict(X)
    probabilities = np.round(out.probabilities, 6).tolist()
    tiers = out.tiers.tolist()
    scores = out.scores.tolist()
    predictions: list[dict[str, Any]] = [
        {"score": score, "tier": tier, "probabilities": probs}
        for score, tier, probs in zip(scores, tiers, probabilities, strict=True)]
    if request.explain:
        contributions = np.round(model.contributions(X, out.tiers), 6) + 0.0
        for item, row in zip(predictions, contributions.tolist(), strict=True):
            item["contributions"] = dict(zip(FEATURE_NAMES, row, strict=True))
    if named is None:
        for item, video_id in zip(predictions, ids, strict=True):
            if video_id is not None:
                item["videoId"] = video_id
    if request.batch:
        return {"predictions": predictions, "modelVersion": model.version}
    return {**predictions[0], "modelVersion": model.version}


def dumps_response(obj: Any) -> str:
    """Response serializer: orjson (far faster than the standard library on large batches).

    Falls back to the standard library for what orjson refuses (e.g. a lone
    surrogate echoed back in a ``videoId``).
    """
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"))
