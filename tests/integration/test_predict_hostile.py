"""Hostile request bodies through the real handler (API Gateway REST proxy events): a JSON 4xx, never a 5xx.

Two classes that answered 500 before (issue 9, section 2):

* bodies nested deeper than the parsers and validators can walk recursively
  (990-1,490 levels fit in 2 kB; the Lambda runtime's recursion limit is 1,000);
* JSON integers too large for a float in any numeric field (a 401-digit
  ``video.postedAt`` raised ``OverflowError``).

Each case is sent base64-encoded (as API Gateway does for binary media types)
and plain, and the answer is checked for shape, status and the field it names.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.integration.test_predict_api import (
    FEATURE_VECTOR,
    FEATURES,
    VIDEO,
    assert_error,
    assert_prediction,
)
from virality.http.api import MAX_NESTING_DEPTH
from virality.ml.features import FEATURE_NAMES
from virality_dev.events import api_event

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


def post_raw(invoke: Any, text: str, base64_body: bool) -> Any:
    return invoke(api_event("POST", "/predict", raw_body=text, base64_body=base64_body))


def nest(depth: int, inner: str = "1", kind: str = "list") -> str:
    """A value nested ``depth`` containers deep around ``inner``."""
    if kind == "list":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


# where the deep value goes (in place of "@D@"), and the field the error must name
PLACES: dict[str, tuple[str, str]] = {
    "features": ('{"features": "@D@"}', "features"),
    "a feature": (json.dumps({"features": {**FEATURES, "likeRate": "@D@"}}), "features.likeRate"),
    "instances[0]": ('{"instances": ["@D@"]}', "instances[0]"),
    "instances[0].features": ('{"instances": [{"features": "@D@"}]}', "instances[0].features"),
    "instances[1].video.views": (json.dumps({"instances": [{"features": FEATURES},
                                                           {"video": {**VIDEO, "views": "@D@"}}]}),
                                 "instances[1].video"),
    "featureVector": ('{"featureVector": "@D@"}', "featureVector"),
    "explain": (json.dumps({"features": FEATURES, "explain": "@D@"}), "explain"),
}

# 990-1,490 were the reported 500s; 201 is past jiter's limit (the stdlib fallback parses it);
# 1,000+ is past the interpreter's recursion limit; 100,000 is ~200 kB, under MAX_BODY_BYTES.
DEPTHS = [MAX_NESTING_DEPTH + 1, 150, 201, 990, 1_000, 1_200, 1_490, 5_000, 100_000]


@pytest.mark.parametrize("base64_body", [True, False], ids=["b64", "plain"])
@pytest.mark.parametrize("kind", ["list", "object"])
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("place", list(PLACES))
def test_deep_bodies_are_a_400_naming_the_field(place: str, depth: int, kind: str, base64_body: bool,
                                                invoke: Any) -> None:
    template, field = PLACES[place]
    text = template.replace('"@D@"', nest(depth, kind=kind))
    details = assert_error(post_raw(invoke, text, base64_body), 400)
    # the field named is where the nesting starts (or the whole body, when the parser itself gave up)
    assert details[0]["field"] in (field, "body") or details[0]["field"].startswith(field), details
    assert str(MAX_NESTING_DEPTH) in details[0]["message"]


@pytest.mark.parametrize("depth", [1_000, 1_490])
def test_deep_bodies_are_refused_with_the_lambda_recursion_limit(depth: int, invoke: Any) -> None:
    # The Lambda Python runtime runs handlers with sys.getrecursionlimit() == 1000; pytest's own
    # frames eat into it here, so this is the stricter setting.
    text = '{"instances": [{"features": ' + nest(depth) + '}]}'
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        result = post_raw(invoke, text, base64_body=False)
    finally:
        sys.setrecursionlimit(old)
    assert_error(result, 400)


def test_the_limit_is_inclusive_and_named_in_the_message(invoke: Any) -> None:
    # A body exactly MAX_NESTING_DEPTH deep is parsed and validated (422: wrong content) ...
    at_limit = '{"features": {"likeRate": ' + nest(MAX_NESTING_DEPTH - 2) + '}}'
    assert_error(post_raw(invoke, at_limit, False), 422, "features.likeRate")
    # ... one level more is refused before validation (400)
    past = '{"features": {"likeRate": ' + nest(MAX_NESTING_DEPTH - 1) + '}}'
    details = assert_error(post_raw(invoke, past, False), 400, "features.likeRate[0]")
    assert f"more than {MAX_NESTING_DEPTH} levels" in details[0]["message"]


def test_deep_duplicate_keys_are_still_refused_by_depth_not_by_recursion(invoke: Any) -> None:
    # duplicated keys force the stdlib parser + the (recursive) duplicate scan
    text = '{"features": {"a": 1, "a": ' + nest(1_200, kind="object") + '}}'
    assert_error(post_raw(invoke, text, False), 400)


# --------------------------------------------------------------------------- huge integers

HUGE = [10**400, -(10**400), 10**309, 2**1100, int("9" * 4_000)]
HUGE_IDS = ["401 digits", "-401 digits", "1e309", "2^1100", "4000 digits"]

NUMERIC_VIDEO_FIELDS = ["views", "likes", "comments", "shares", "saves", "followers", "durationSeconds",
                        "hashtagCount", "captionLength", "postedAt"]


def _cases() -> list[tuple[str, str, str]]:
    """(id, body template with {n}, field the error names) for every numeric field of every kind."""
    cases = []
    for name in FEATURE_NAMES:
        cases.append((f"features.{name}", json.dumps({"features": {**FEATURES, name: "@N@"}}), f"features.{name}"))
    for name in NUMERIC_VIDEO_FIELDS:
        cases.append((f"video.{name}", json.dumps({"video": {**VIDEO, name: "@N@"}}), f"video.{name}"))
    for name in ("shareTrigger", "commentProvocation", "durationSeconds", "hashtagCount", "audioTrendingMatch",
                 "captionScore"):
        cases.append((f"featureVector.{name}", json.dumps({"featureVector": {**FEATURE_VECTOR, name: "@N@"}}),
                      f"featureVector.{name}"))
    cases.append(("batch video.postedAt", json.dumps(
        {"instances": [{"features": FEATURES}, {"video": {**VIDEO, "postedAt": "@N@"}}]}),
        "instances[1].video.postedAt"))
    cases.append(("batch features", json.dumps(
        {"instances": [{"features": {**FEATURES, "likeRate": "@N@"}}]}), "instances[0].features.likeRate"))
    cases.append(("explain", json.dumps({"features": FEATURES, "explain": "@N@"}), "explain"))
    return cases


CASES = _cases()


@pytest.mark.parametrize("number", HUGE, ids=HUGE_IDS)
@pytest.mark.parametrize(("template", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_huge_integers_are_a_422_naming_the_field(template: str, field: str, number: int, invoke: Any) -> None:
    text = template.replace('"@N@"', str(number))
    assert_error(post_raw(invoke, text, base64_body=True), 422, field)


@pytest.mark.parametrize("number", [10**400, int("9" * 4_000)], ids=["401 digits", "4000 digits"])
def test_huge_posted_at_as_a_string_is_a_422_too(number: int, invoke: Any) -> None:
    body = {"video": {**VIDEO, "postedAt": str(number)}}
    assert_error(invoke(api_event("POST", "/predict", body)), 422, "video.postedAt")


def test_large_but_float_sized_integers_still_predict(invoke: Any) -> None:
    # 10**308 fits a float: a count that large is valid (and the answer is finite)
    body = {"video": {**VIDEO, "views": 10**308, "likes": 10**300, "postedAt": 1_700_000_000}}
    result = invoke(api_event("POST", "/predict", body))
    assert result.status == 200, result.body
    assert_prediction(result.body)


# Integers that fit a float but not an int64 (the fast path's NumPy conversion) nor a C long.
FLOAT_SIZED = [2**63, 2**64, 10**308, -(2**64)]


@pytest.mark.parametrize("number", FLOAT_SIZED, ids=["2^63", "2^64", "1e308", "-2^64"])
@pytest.mark.parametrize(("template", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_float_sized_big_integers_are_answered_never_a_5xx(template: str, field: str, number: int,
                                                           invoke: Any) -> None:
    result = post_raw(invoke, template.replace('"@N@"', str(number)), base64_body=False)
    if result.status == 200:
        for p in result.body.get("predictions", [result.body]):
            assert_prediction(p)
    else:
        # out of range for that field (a feature > 1, a negative count, an epoch past year 9999, ...)
        assert_error(result, 422, field)
