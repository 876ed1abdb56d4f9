"""The predict API through ``lambda_handler``: event files, response shapes, every bad-input class.

No MODEL_BUCKET is set here, so the bundled baseline answers (the loading
behaviour has its own module); what matters is the HTTP contract:
documented shapes for good requests, a JSON 4xx naming the field for bad ones,
never a 5xx and never a traceback.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virality import TIER_MIDPOINTS
from virality.ml.features import FEATURE_NAMES
from virality.services.serving import load_bundled_model
from virality_dev.events import api_event, load_event
from virality_dev.handlers import repo_root
from virality_dev.synthetic import sample_records
from virality_dev.testing import raw_videos_from_records

EVENTS = repo_root() / "events"

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

API_EVENTS = sorted(p.name for p in EVENTS.glob("*.json") if "httpMethod" in json.loads(p.read_text()))


def event_body(name: str) -> dict[str, Any]:
    event = load_event(name)
    text = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"]
    return json.loads(text)


FEATURES: dict[str, float] = event_body("predict-single.json")["features"]
VIDEO: dict[str, Any] = event_body("predict-video.json")["video"]
FEATURE_VECTOR: dict[str, Any] = event_body("predict-feature-vector.json")["featureVector"]


@pytest.fixture(scope="module")
def bundled() -> Any:
    return load_bundled_model()


def post(invoke: Any, body: Any = None, **kwargs: Any) -> Any:
    return invoke(api_event("POST", "/predict", body, **kwargs))


# --------------------------------------------------------------------------- shapes


def assert_prediction(p: dict[str, Any]) -> None:
    """The documented shape of one prediction."""
    assert isinstance(p["score"], float) and 0.0 <= p["score"] <= 100.0
    assert round(p["score"], 1) == p["score"], "score has one decimal"
    assert isinstance(p["tier"], int) and not isinstance(p["tier"], bool) and 1 <= p["tier"] <= 5
    probs = p["probabilities"]
    assert len(probs) == 5 and all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in probs)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert p["tier"] == int(np.argmax(probs)) + 1
    # score = probability-weighted tier midpoints, rounded to 1 decimal
    assert p["score"] == pytest.approx(float(np.dot(probs, TIER_MIDPOINTS)), abs=0.05 + 1e-3)


def assert_single(body: dict[str, Any]) -> None:
    assert_prediction(body)
    assert isinstance(body["modelVersion"], str) and body["modelVersion"]


def assert_error(result: Any, status: int, field: str | None = None) -> list[dict[str, str]]:
    """A JSON 4xx ``{"error", "details": [{"field", "message"}]}``, optionally naming ``field``."""
    assert result.status == status, (result.status, result.body)
    assert result.headers.get("Content-Type") == "application/json"
    body = result.body
    assert set(body) == {"error", "details"}
    assert isinstance(body["error"], str) and body["error"]
    assert body["details"], "details name the offending field"
    for detail in body["details"]:
        assert set(detail) == {"field", "message"}
        assert isinstance(detail["field"], str) and isinstance(detail["message"], str)
    text = json.dumps(body)
    for leak in ("Traceback", 'File "', ".py", "errors.pydantic.dev", "function-after", "constrained-"):
        assert leak not in text, f"internal detail {leak!r} leaked: {text}"
    if field is not None:
        fields = [d["field"] for d in body["details"]]
        assert field in fields, fields
    return body["details"]


# --------------------------------------------------------------------------- events/


def test_api_events_are_api_gateway_rest_proxy_events() -> None:
    assert {"predict-single.json", "predict-video.json", "predict-feature-vector.json", "predict-batch.json",
            "predict-explain.json", "predict-invalid.json", "model-info.json", "health.json"} <= set(API_EVENTS)
    for name in API_EVENTS:
        event = load_event(name)
        assert {"resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
                "pathParameters", "stageVariables", "requestContext", "body", "isBase64Encoded"} <= set(event), name
        assert event["requestContext"]["httpMethod"] == event["httpMethod"], name


def test_logs_carry_the_api_gateway_request_id_as_correlation_id(invoke: Any, predict_app: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # The handler reads requestContext.requestId itself (not through Powertools' JMESPath query):
    # the same field, set on every invocation, never left over from the previous one.
    with caplog.at_level(logging.INFO, logger=predict_app.logger.name):
        assert_error(post(invoke, {"features": {}}, request_id="req-correlated"), 422)
    assert predict_app.logger.get_correlation_id() == "req-correlated"
    lines = [json.loads(predict_app.logger.registered_formatter.format(r)) for r in caplog.records
             if r.getMessage() == "rejected request"]
    assert lines and all(line["correlation_id"] == "req-correlated" for line in lines)
    event = api_event("POST", "/predict", {"features": {name: 0.5 for name in FEATURE_NAMES}})
    del event["requestContext"]["requestId"]
    assert invoke(event).status == 200
    assert predict_app.logger.get_correlation_id() is None


@pytest.mark.parametrize("name", API_EVENTS)
def test_every_event_file_runs_through_the_handler(name: str, invoke: Any) -> None:
    event = load_event(name)
    result = invoke(event)
    assert result.status < 500
    if "invalid" in name:
        assert_error(result, 422)
        return
    assert result.status == 200, result.body
    if event["path"] == "/health":
        assert result.body["status"] == "ok" and result.body["modelVersion"]
    elif event["path"] == "/model":
        assert result.body["featureNames"] == list(FEATURE_NAMES)
    else:
        request = event_body(name)
        if "instances" in request:
            assert set(result.body) == {"predictions", "modelVersion"}
            assert len(result.body["predictions"]) == len(request["instances"])
            for p in result.body["predictions"]:
                assert_prediction(p)
        else:
            assert_single(result.body)
        explained = result.body["predictions"] if "instances" in request else [result.body]
        for p in explained:
            assert ("contributions" in p) == bool(request.get("explain"))


def test_predict_invalid_event_names_the_fields(invoke: Any) -> None:
    details = assert_error(invoke(load_event("predict-invalid.json")), 422)
    fields = {d["field"] for d in details}
    # "high" is not a number, 1.7 is outside [0, 1], -5 is a negative count
    assert {"features.shareRate", "features.likeRate", "video.views"} <= fields


def test_batch_event_keeps_order_and_echoes_video_ids(invoke: Any) -> None:
    body = invoke(load_event("predict-batch.json")).body
    single = invoke(load_event("predict-single.json")).body
    video = invoke(load_event("predict-video.json")).body
    fv = invoke(load_event("predict-feature-vector.json")).body
    preds = body["predictions"]
    assert {k: preds[0][k] for k in ("score", "tier", "probabilities")} == \
        {k: single[k] for k in ("score", "tier", "probabilities")}
    assert preds[1]["videoId"] == "dance-challenge-042" == video["videoId"]
    assert preds[1]["probabilities"] == video["probabilities"]
    assert preds[2]["probabilities"] == fv["probabilities"]
    assert body["modelVersion"] == single["modelVersion"]


def test_explain_contributions_add_up_to_the_predicted_tiers_logit(invoke: Any, bundled: Any) -> None:
    # Given the explain event (a raw video)
    body = invoke(load_event("predict-explain.json")).body
    assert_single(body)
    contributions = body["contributions"]
    assert list(contributions) == list(FEATURE_NAMES)
    # Then sum(contributions) + intercept of the predicted tier == that tier's logit
    record = event_body("predict-explain.json")["video"]
    x = bundled.featurize(raw_videos_from_records([record]))[0]
    logits = bundled.coef @ x + bundled.intercept
    t = body["tier"] - 1
    assert t == int(np.argmax(logits))
    assert sum(contributions.values()) + bundled.intercept[t] == pytest.approx(logits[t], abs=1e-4)


def test_explain_on_a_batch_of_named_features(invoke: Any, bundled: Any) -> None:
    rows = [FEATURES, {n: 0.0 for n in FEATURE_NAMES}, {n: 1.0 for n in FEATURE_NAMES}]
    body = post(invoke, {"instances": [{"features": r} for r in rows], "explain": True}).body
    for row, p in zip(rows, body["predictions"], strict=True):
        x = np.array([row[n] for n in FEATURE_NAMES])
        t = p["tier"] - 1
        assert len(p["contributions"]) == 15
        assert sum(p["contributions"].values()) + bundled.intercept[t] == pytest.approx(
            bundled.coef[t] @ x + bundled.intercept[t], abs=1e-4)


@pytest.mark.parametrize("base64_body", [True, False], ids=["base64", "plain"])
def test_base64_and_plain_bodies_give_the_same_answer(base64_body: bool, invoke: Any) -> None:
    expected = invoke(load_event("predict-single.json")).body
    result = post(invoke, {"features": FEATURES}, base64_body=base64_body)
    assert result.status == 200 and result.body == expected


def test_model_info(invoke: Any) -> None:
    result = invoke(api_event("GET", "/model"))
    assert result.status == 200
    info = result.body
    assert {"modelVersion", "trainedAt", "featureNames", "tierMidpoints", "metrics", "source", "loadError"} <= set(info)
    assert info["featureNames"] == list(FEATURE_NAMES)
    assert info["tierMidpoints"] == list(TIER_MIDPOINTS)
    assert info["source"] == "bundled" and info["modelVersion"].startswith("bundled-")
    assert info["metrics"] is not None and "accuracy" in json.dumps(info["metrics"])
    assert info["loadError"] == "NotConfigured"       # a kind: no setting names or internals


def test_health(invoke: Any) -> None:
    result = invoke(api_event("GET", "/health"))
    assert result.status == 200
    assert result.body["status"] == "ok" and result.body["source"] == "bundled"


# --------------------------------------------------------------------------- raw video == library


def test_raw_video_prediction_equals_the_library_path(invoke: Any, bundled: Any) -> None:
    # Given a raw video, predicting through the API ...
    body = post(invoke, {"video": VIDEO}).body
    # ... equals featurising with the training function and predicting with the model
    expected = bundled.predict(bundled.featurize(raw_videos_from_records([VIDEO])))
    assert body["score"] == float(expected.scores[0])
    assert body["tier"] == int(expected.tiers[0])
    assert body["probabilities"] == pytest.approx(expected.probabilities[0].tolist(), abs=5e-7)


def test_raw_video_batch_equals_the_library_path(invoke: Any, bundled: Any) -> None:
    records = sample_records(25, 3)
    body = post(invoke, {"instances": [{"video": r} for r in records]}).body
    expected = bundled.predict(bundled.featurize(raw_videos_from_records(records)))
    assert [p["videoId"] for p in body["predictions"]] == [r["videoId"] for r in records]
    assert [p["tier"] for p in body["predictions"]] == expected.tiers.tolist()
    assert [p["score"] for p in body["predictions"]] == expected.scores.tolist()
    got = np.array([p["probabilities"] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected.probabilities, atol=5e-7)


def test_a_video_and_its_features_predict_the_same(invoke: Any, bundled: Any) -> None:
    x = bundled.featurize(raw_videos_from_records([VIDEO]))[0]
    as_features = post(invoke, {"features": dict(zip(FEATURE_NAMES, x.tolist(), strict=True))}).body
    as_video = post(invoke, {"video": VIDEO}).body
    assert as_features["probabilities"] == as_video["probabilities"]
    assert as_features["score"] == as_video["score"]


# --------------------------------------------------------------------------- bad input


def with_features(**changes: Any) -> dict[str, Any]:
    features = {**FEATURES, **changes}
    return {"features": {k: v for k, v in features.items() if v is not DROP}}


def with_video(**changes: Any) -> dict[str, Any]:
    video = {**VIDEO, **changes}
    return {"video": {k: v for k, v in video.items() if v is not DROP}}


DROP = object()
FEATURES_JSON = json.dumps({"features": FEATURES})

# (id, body or None, raw text or None, status, field named)
BAD_REQUESTS: list[tuple[str, Any, str | None, int, str]] = [
    ("invalid JSON", None, '{"features": {"likeRate": 0.5', 400, "body"),
    ("trailing garbage", None, FEATURES_JSON + "}", 400, "body"),
    ("empty string body", None, "", 400, "body"),
    ("whitespace body", None, "   ", 400, "body"),
    ("JSON array", [FEATURES], None, 422, "body"),
    ("JSON string", "features", None, 422, "body"),
    ("JSON null", None, "null", 422, "body"),
    ("JSON number", 42, None, 422, "body"),
    ("empty object", {}, None, 422, "body"),
    ("only explain", {"explain": True}, None, 422, "body"),
    ("missing feature", with_features(likeRate=DROP), None, 422, "features.likeRate"),
    ("missing video field", with_video(views=DROP), None, 422, "video.views"),
    ("missing postedAt", with_video(postedAt=DROP), None, 422, "video.postedAt"),
    ("unknown feature", with_features(virality=0.5), None, 422, "features.virality"),
    ("unknown top-level field", {**with_features(), "model": "x"}, None, 422, "model"),
    ("unknown video field", with_video(region="EU"), None, 422, "video.region"),
    ("unknown feature-vector field", {"featureVector": {**FEATURE_VECTOR, "mood": 3}}, None, 422,
     "featureVector.mood"),
    ("duplicated top-level field", None, FEATURES_JSON[:-1] + ', "features": {}}', 400, "features"),
    ("list as number", with_features(likeRate=[0.5]), None, 422, "features.likeRate"),
    ("object as number", with_video(views={"n": 1}), None, 422, "video.views"),
    ("null feature", with_features(likeRate=None), None, 422, "features.likeRate"),
    ("features not an object", {"features": [0.5] * 15}, None, 422, "features"),
    ("string flag", with_video(hasTrendingSound="yes"), None, 422, "video.hasTrendingSound"),
    ("number flag", with_video(hasTrendingSound=1), None, 422, "video.hasTrendingSound"),
    ("number caption", with_video(caption=42), None, 422, "video.caption"),
    ("numeric string feature", with_features(likeRate="0.5"), None, 422, "features.likeRate"),
    ("numeric string count", with_video(views="182000"), None, 422, "video.views"),
    ("numeric string fv", {"featureVector": {"shareTrigger": "8"}}, None, 422, "featureVector.shareTrigger"),
    ("boolean feature", with_features(hasTrendingSound=True), None, 422, "features.hasTrendingSound"),
    ("boolean count", with_video(likes=False), None, 422, "video.likes"),
    ("NaN literal", None, FEATURES_JSON.replace('"likeRate": 0.61', '"likeRate": NaN'), 400, "body"),
    ("Infinity literal", None, FEATURES_JSON.replace('"likeRate": 0.61', '"likeRate": Infinity'), 400, "body"),
    ("-Infinity literal", None, FEATURES_JSON.replace('"likeRate": 0.61', '"likeRate": -Infinity'), 400, "body"),
    ("overflow to infinity", None, FEATURES_JSON.replace('"likeRate": 0.61', '"likeRate": 1e999'), 422,
     "features.likeRate"),
    ("huge integer literal", None, FEATURES_JSON.replace('"likeRate": 0.61', '"likeRate": ' + "9" * 5000), 400,
     "body"),
    ("negative views", with_video(views=-5), None, 422, "video.views"),
    ("negative followers", with_video(followers=-1), None, 422, "video.followers"),
    ("negative duration", with_video(durationSeconds=-0.1), None, 422, "video.durationSeconds"),
    ("negative epoch", with_video(postedAt=-1), None, 422, "video.postedAt"),
    ("feature above 1", with_features(likeRate=1.0000001), None, 422, "features.likeRate"),
    ("feature below 0", with_features(shareRate=-0.01), None, 422, "features.shareRate"),
    ("fv score above 10", {"featureVector": {"captionScore": 10.5}}, None, 422, "featureVector.captionScore"),
    ("unparseable postedAt", with_video(postedAt="last tuesday"), None, 422, "video.postedAt"),
    ("no caption nor length", with_video(caption=DROP), None, 422, "video"),
    ("two kinds in one request", {**with_features(), **with_video()}, None, 422, "body"),
    ("kind plus instances", {**with_features(), "instances": [with_features()]}, None, 422, "body"),
    ("empty batch", {"instances": []}, None, 422, "instances"),
    ("instances not a list", {"instances": with_features()}, None, 422, "instances"),
    ("null batch item", {"instances": [None]}, None, 422, "instances[0]"),
    ("two kinds in one batch item", {"instances": [with_features(), {**with_features(), **with_video()}]}, None,
     422, "instances[1]"),
    ("empty batch item", {"instances": [with_features(), {}]}, None, 422, "instances[1]"),
    ("explain inside a batch item", {"instances": [{**with_features(), "explain": True}]}, None, 422,
     "instances[0].explain"),
    ("explain not a boolean", {**with_features(), "explain": "yes"}, None, 422, "explain"),
]


@pytest.mark.parametrize(("body", "raw", "status", "field"), [c[1:] for c in BAD_REQUESTS],
                         ids=[c[0] for c in BAD_REQUESTS])
@pytest.mark.parametrize("base64_body", [True, False], ids=["b64", "plain"])
def test_bad_input_gets_a_json_4xx_naming_the_field(body: Any, raw: str | None, status: int, field: str,
                                                    base64_body: bool, invoke: Any) -> None:
    text = raw if raw is not None else json.dumps(body)
    result = post(invoke, raw_body=text, base64_body=base64_body)
    assert_error(result, status, field)


def test_missing_body_is_a_400(invoke: Any) -> None:
    event = api_event("POST", "/predict")
    assert event["body"] is None
    assert_error(invoke(event), 400, "body")


def test_invalid_base64_is_a_400(invoke: Any) -> None:
    event = api_event("POST", "/predict", {"features": FEATURES})
    event["body"] = "eyJmZWF0dXJlcyI6!!not*base64"
    assert_error(invoke(event), 400, "body")


def test_base64_of_invalid_utf8_is_a_400(invoke: Any) -> None:
    event = api_event("POST", "/predict", {"features": FEATURES})
    event["body"] = base64.b64encode(b'{"features": "\xff\xfe"}').decode()
    assert_error(invoke(event), 400, "body")


def test_batch_item_errors_include_the_index(invoke: Any) -> None:
    items = [with_features(), with_video(), with_features(likeRate="high"), with_video(views=-1)]
    details = assert_error(post(invoke, {"instances": items}), 422)
    fields = {d["field"] for d in details}
    assert "instances[2].features.likeRate" in fields
    assert "instances[3].video.views" in fields
    assert not any(f.startswith(("instances[0]", "instances[1]")) for f in fields)


def test_every_offending_field_is_listed(invoke: Any) -> None:
    details = assert_error(post(invoke, with_features(likeRate=2, shareRate="x", saveRate=DROP)), 422)
    assert {"features.likeRate", "features.shareRate", "features.saveRate"} <= {d["field"] for d in details}


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH", "3")
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")


def test_batch_limit_is_inclusive(small_limits: None, invoke: Any) -> None:
    result = post(invoke, {"instances": [with_features()] * 3})
    assert result.status == 200 and len(result.body["predictions"]) == 3


def test_batch_over_max_batch_is_rejected(small_limits: None, invoke: Any) -> None:
    details = assert_error(post(invoke, {"instances": [{"featureVector": {}}] * 4}), 413, "instances")
    assert "3" in details[0]["message"]


@pytest.mark.parametrize("base64_body", [True, False], ids=["b64", "plain"])
def test_body_over_max_body_bytes_is_a_413(base64_body: bool, small_limits: None, invoke: Any) -> None:
    body = {"video": {**VIDEO, "caption": "x" * 2048}}
    assert_error(post(invoke, body, base64_body=base64_body), 413, "body")


def test_body_just_under_max_body_bytes_is_accepted(small_limits: None, invoke: Any) -> None:
    body = {"video": {**VIDEO, "caption": ""}}
    padding = 2048 - len(json.dumps(body))
    body["video"]["caption"] = "x" * padding
    assert len(json.dumps(body).encode()) == 2048
    assert post(invoke, body).status == 200


def test_default_max_batch_is_1000(invoke: Any) -> None:
    ok = post(invoke, {"instances": [{"featureVector": {}}] * 1000})
    assert ok.status == 200 and len(ok.body["predictions"]) == 1000
    assert_error(post(invoke, {"instances": [{"featureVector": {}}] * 1001}), 413, "instances")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/predict", "POST"), ("PUT", "/predict", "POST"), ("DELETE", "/predict", "POST"),
    ("POST", "/model", "GET"), ("POST", "/health", "GET"), ("PATCH", "/health", "GET"),
])
def test_wrong_method_is_a_405_with_allow(method: str, path: str, allow: str, invoke: Any) -> None:
    result = invoke(api_event(method, path, {"features": FEATURES}))
    assert_error(result, 405, "method")
    assert result.headers["Allow"] == allow


@pytest.mark.parametrize("path", ["/", "/predictions", "/predict/extra", "/v1/predict", "/model/x"])
def test_unknown_path_is_a_404(path: str, invoke: Any) -> None:
    assert_error(invoke(api_event("POST", path, {"features": FEATURES})), 404, "path")
    assert_error(invoke(api_event("GET", path)), 404, "path")


# --------------------------------------------------------------------------- found while testing


def test_deeply_nested_json_is_a_400_not_a_500(invoke: Any) -> None:
    # json.loads raises RecursionError (not ValueError) past ~1000 levels
    depth = 5000
    text = '{"features": ' + "[" * depth + "]" * depth + "}"
    assert_error(post(invoke, raw_body=text), 400, "body")


@pytest.mark.parametrize("posted_at", [1e20, "1e20", "0001-01-01T00:00:00+05:00"],
                         ids=["epoch overflow", "epoch string overflow", "iso before year 1 in UTC"])
def test_out_of_range_posted_at_is_a_422_not_a_500(posted_at: Any, invoke: Any) -> None:
    assert_error(post(invoke, with_video(postedAt=posted_at)), 422, "video.postedAt")


def test_union_field_errors_name_the_field_without_internal_tags(invoke: Any) -> None:
    # postedAt is "str | number": pydantic reports one error per union member
    details = assert_error(post(invoke, with_video(postedAt=True)), 422)
    assert {d["field"] for d in details} == {"video.postedAt"}


def test_duplicated_nested_field_is_named_with_its_path(invoke: Any) -> None:
    text = '{"instances": [{"featureVector": {}}, {"features": {"likeRate": 0.1, "likeRate": 0.2}}]}'
    assert_error(post(invoke, raw_body=text), 400, "instances[1].features.likeRate")


def test_responses_are_finite_json(invoke: Any) -> None:
    # Extreme but valid raw inputs still give finite probabilities
    body = post(invoke, with_video(views=1e308, likes=1e308, followers=1e-300, durationSeconds=1e308)).body
    assert all(math.isfinite(v) for v in body["probabilities"])
    assert_single(body)



# --------------------------------------------------------------------------- fuzz: never a 5xx


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
_VALID = [{"features": FEATURES}, {"video": VIDEO}, {"featureVector": FEATURE_VECTOR},
          {"instances": [{"features": FEATURES}, {"video": VIDEO}], "explain": True}]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_requests(draw: Any) -> str:
    doc = json.loads(json.dumps(draw(st.sampled_from(_VALID))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_JSON)
        if not _paths(doc):
            break
    return json.dumps(doc, allow_nan=True)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=mutated_requests())
def test_fuzzed_requests_never_get_a_5xx(text: str, invoke: Any) -> None:
    result = post(invoke, raw_body=text, base64_body=False)
    assert result.status in (200, 400, 413, 422), (result.status, text)
    if result.status == 200:
        predictions = result.body.get("predictions", [result.body])
        for p in predictions:
            assert_prediction(p)
    else:
        assert result.body["details"] and all(d["field"] for d in result.body["details"])
