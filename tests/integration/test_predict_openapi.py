"""The committed OpenAPI document (docs/openapi.json) matches the code and the handler's answers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from virality.ml.features import FEATURE_NAMES
from virality_dev.events import api_event, load_event
from virality_dev.handlers import repo_root

ROOT = repo_root()

jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

DOC_PATH = ROOT / "docs" / "openapi.json"
REGENERATE = "run `make openapi` (or `python scripts/gen_openapi.py`) and commit docs/openapi.json"


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    assert DOC_PATH.exists(), f"docs/openapi.json is missing: {REGENERATE}"
    return json.loads(DOC_PATH.read_text())


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema 2020-12 validator for ``schema`` whose ``#/components/...`` refs resolve in ``doc``."""
    root = {**schema, "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    operation = doc["paths"][path][method]
    return operation["responses"][str(status)]["content"]["application/json"]["schema"]


def assert_valid(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    errors = sorted(validator(doc, schema).iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


# --------------------------------------------------------------------------- in sync


def test_committed_document_is_in_sync_with_the_code(predict_app: Any, committed: dict[str, Any]) -> None:
    generated = predict_app.openapi_schema()
    assert generated == committed, f"docs/openapi.json is out of date: {REGENERATE}"


def test_committed_file_is_exactly_what_the_generator_writes(predict_app: Any) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_openapi", ROOT / "scripts" / "gen_openapi.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert DOC_PATH.read_text() == gen.render(predict_app.openapi_schema()), REGENERATE


def test_handler_serves_the_same_document(invoke: Any, committed: dict[str, Any]) -> None:
    result = invoke(api_event("GET", "/openapi.json"))
    assert result.status == 200
    assert result.body == committed


# --------------------------------------------------------------------------- content


def test_documents_the_three_routes(committed: dict[str, Any]) -> None:
    assert committed["openapi"].startswith("3.")
    paths = committed["paths"]
    assert set(paths) == {"/predict", "/model", "/health"}
    assert set(paths["/predict"]) == {"post"}
    assert set(paths["/model"]) == {"get"}
    assert set(paths["/health"]) == {"get"}
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/PredictRequest"
    responses = paths["/predict"]["post"]["responses"]
    assert {"200", "400", "405", "413", "422"} <= set(responses)
    for status in ("400", "405", "413", "422"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"] == \
            "#/components/schemas/ErrorResponse"


def test_request_components(committed: dict[str, Any]) -> None:
    schemas = committed["components"]["schemas"]
    assert {"PredictRequest", "NamedFeatures", "VideoRecord", "PipelineFeatureVector", "Instance",
            "PredictResponse", "BatchPredictResponse", "ErrorResponse", "ModelInfo", "Health"} <= set(schemas)

    request = schemas["PredictRequest"]
    assert {"features", "video", "featureVector", "instances", "explain"} == set(request["properties"])
    assert request["additionalProperties"] is False

    named = schemas["NamedFeatures"]
    assert list(named["properties"]) == list(FEATURE_NAMES)
    assert sorted(named["required"]) == sorted(FEATURE_NAMES)
    assert named["additionalProperties"] is False
    for name, prop in named["properties"].items():
        assert prop["type"] == "number", name
        assert prop["minimum"] == 0 and prop["maximum"] == 1, name
        assert prop.get("description"), name

    video = schemas["VideoRecord"]
    assert {"views", "likes", "comments", "shares", "saves", "durationSeconds", "hashtagCount",
            "hasTrendingSound", "postedAt"} <= set(video["required"])
    assert {"followers", "captionLength", "caption"} <= set(video["properties"]) - set(video["required"])
    assert video["properties"]["views"]["minimum"] == 0

    fv = schemas["PipelineFeatureVector"]
    assert set(fv["properties"]) == {"shareTrigger", "commentProvocation", "durationSeconds", "hashtagCount",
                                     "audioTrendingMatch", "captionScore"}
    assert not fv.get("required")


# --------------------------------------------------------------------------- examples validate


def _body(name: str) -> Any:
    event = load_event(name)
    return json.loads(base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"])


@pytest.mark.parametrize("name", ["predict-single.json", "predict-video.json", "predict-feature-vector.json",
                                  "predict-batch.json", "predict-explain.json"])
def test_event_requests_validate_against_the_request_schema(name: str, committed: dict[str, Any]) -> None:
    assert_valid(committed, {"$ref": "#/components/schemas/PredictRequest"}, _body(name))


def test_invalid_event_request_does_not_validate(committed: dict[str, Any]) -> None:
    errors = list(validator(committed, {"$ref": "#/components/schemas/PredictRequest"}).iter_errors(
        _body("predict-invalid.json")))
    assert errors


@pytest.mark.parametrize("name", ["predict-single.json", "predict-video.json", "predict-feature-vector.json",
                                  "predict-batch.json", "predict-explain.json"])
def test_prediction_responses_validate(name: str, invoke: Any, committed: dict[str, Any]) -> None:
    result = invoke(load_event(name))
    assert result.status == 200
    assert_valid(committed, response_schema(committed, "/predict", "post", 200), result.body)


@pytest.mark.parametrize(("name", "path"), [("model-info.json", "/model"), ("health.json", "/health")])
def test_get_responses_validate(name: str, path: str, invoke: Any, committed: dict[str, Any]) -> None:
    result = invoke(load_event(name))
    assert result.status == 200
    assert_valid(committed, response_schema(committed, path, "get", 200), result.body)


@pytest.mark.parametrize(("event", "status"), [
    (api_event("POST", "/predict", raw_body="{oops"), 400),
    (api_event("POST", "/predict", {"features": {"likeRate": 3}}), 422),
    (api_event("GET", "/predict"), 405),
    (api_event("POST", "/predict", {"instances": [{"featureVector": {}}] * 1001}), 413),
], ids=["400", "422", "405", "413"])
def test_error_responses_validate(event: dict[str, Any], status: int, invoke: Any,
                                  committed: dict[str, Any]) -> None:
    result = invoke(event)
    assert result.status == status
    assert_valid(committed, response_schema(committed, "/predict", "post", status), result.body)


def test_not_found_response_validates_as_error(invoke: Any, committed: dict[str, Any]) -> None:
    result = invoke(api_event("GET", "/nowhere"))
    assert result.status == 404
    assert_valid(committed, {"$ref": "#/components/schemas/ErrorResponse"}, result.body)


def test_schemas_are_not_vacuous(invoke: Any, committed: dict[str, Any]) -> None:
    # The validator really resolves the $refs: a response that breaks the documented ranges is caught
    body = invoke(load_event("predict-single.json")).body
    schema = response_schema(committed, "/predict", "post", 200)
    for broken in ({**body, "tier": 6}, {**body, "score": 100.5}, {**body, "probabilities": [0.5]},
                   {k: v for k, v in body.items() if k != "modelVersion"}):
        assert list(validator(committed, schema).iter_errors(broken)), broken
