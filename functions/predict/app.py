"""predict Lambda: POST /predict, GET /model, GET /health behind API Gateway (REST, proxy).

Thin by design: routes validate with :mod:`virality.http.api`, ask the
module-level :class:`~virality.services.serving.ModelProvider` for the model (loaded
once per cold start, refreshed per ``MODEL_REFRESH_SECONDS``) and return.
"""

# ruff: noqa: E402 - the imports follow gc.disable() on purpose (see below)
from __future__ import annotations

import gc
import os

# In Lambda, no cyclic garbage collection while this module imports (Powertools, NumPy:
# collections that find almost nothing); frozen and re-enabled at the end of the module.
_IN_LAMBDA = "AWS_LAMBDA_FUNCTION_NAME" in os.environ
if _IN_LAMBDA:
    gc.disable()

from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.utilities.typing import LambdaContext

from virality import __version__
from virality.config import PredictSettings
from virality.errors import RequestValidationError
from virality.http.api import (
    MAX_NESTING_DEPTH,
    decode_body,
    dumps_response,
    parse_predict_request,
    public_data_provenance,
)
from virality.http.api import (
    predict as predict_body,
)
from virality.observability import capture_lambda_handler, logger, metrics
from virality.services.serving import ModelProvider
from virality.structs import document

if TYPE_CHECKING:  # resolved at runtime only by openapi_schema(), see there
    from aws_lambda_powertools.event_handler.openapi.params import Body

    from virality.http.models import BatchPredictResponse, Health, ModelInfo, PredictRequest, PredictResponse

app = APIGatewayRestResolver(serializer=dumps_response)

#: The model cache of this container: created on the first invocation, not at import.
_provider: ModelProvider | None = None


def provider() -> ModelProvider:
    global _provider
    if _provider is None:
        _provider = ModelProvider.from_settings(PredictSettings.from_env())
    return _provider


def reset() -> None:
    """Forget the loaded model (a new container, as far as this module is concerned)."""
    global _provider
    _provider = None


#: JSON response contents documented by a model of virality.http.models, with its name. The pydantic
#: models are the OpenAPI document's only use of pydantic here, so openapi_schema() imports them and
#: fills in each "model" when it generates the document, and a cold start never imports pydantic.
_DOCUMENTED: list[tuple[dict[str, Any], str]] = []


def _json_body(model: str) -> dict[str, Any]:
    content: dict[str, Any] = {}
    _DOCUMENTED.append((content, model))
    return {"application/json": content}


_ERRORS: dict[int, Any] = {
    400: {"description": "Malformed body: invalid JSON or base64, duplicated field, nesting deeper than "
                         f"{MAX_NESTING_DEPTH} levels", "content": _json_body("ErrorResponse")},
    404: {"description": "Unknown path", "content": _json_body("ErrorResponse")},
    405: {"description": "Method not allowed on this path", "content": _json_body("ErrorResponse")},
    413: {"description": "Body or batch too large", "content": _json_body("ErrorResponse")},
    422: {"description": "Invalid request: the details name every offending field",
          "content": _json_body("ErrorResponse")},
}


@app.post(
    "/predict",
    summary="Predict virality",
    description="Score one video (features, raw video or pipeline feature vector) or a batch of them.",
    responses={200: {"description": "Prediction(s)", "content": {"application/json": {
        "schema": {"oneOf": [{"$ref": "#/components/schemas/PredictResponse"},
                             {"$ref": "#/components/schemas/BatchPredictResponse"}]}}}},
               **_ERRORS},
)
def predict(request: Annotated[PredictRequest, Body(description="One instance or a batch")] = None  # type: ignore[assignment]
            ) -> PredictResponse | BatchPredictResponse:
    # The annotation documents the body for OpenAPI; validation is ours (faster, clearer errors).
    event = app.current_event
    models = provider()
    settings = models.settings
    raw = decode_body(event.body, bool(event.is_base64_encoded), settings.max_body_bytes)
    parsed = parse_predict_request(raw, settings.max_batch)
    loaded = models.get()
    body = predict_body(parsed, loaded.model)
    n = len(parsed)
    metrics.add_metric(name="PredictionsServed", unit=MetricUnit.Count, value=n)
    if parsed.batch:
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=n)
    metrics.add_metadata(key="model_version", value=loaded.model.version)
    return body  # type: ignore[return-value]


@app.get("/model", summary="The loaded model", responses={200: {
    "description": "Model information", "content": _json_body("ModelInfo")}})
def model_info() -> ModelInfo:
    p = provider()
    loaded = p.get()
    a = loaded.model.artifact
    metrics.add_metric(name="ModelInfoRequests", unit=MetricUnit.Count, value=1)
    return {  # type: ignore[return-value]
        **p.status(),
        "modelVersion": a.modelVersion,
        "trainedAt": a.trainedAt,
        "featureNames": list(a.featureNames),
        "tierMidpoints": list(a.tierMidpoints),
        "training": msgspec.to_builtins(a.training) if a.training else None,
        "metrics": msgspec.to_builtins(a.metrics) if a.metrics else (
            {"accuracy": a.accuracy} if a.accuracy is not None else None),
        # the training file's name and sha256, never its bucket (account id) or path
        "data": public_data_provenance(msgspec.to_builtins(a.data)) if a.data else None,
        "featureSet": a.featureSet or "full",
        # provenance names outcome objects (keys, version ids): kept in the artifact, not shown to API clients
        "calibration": document(a.calibration, exclude=frozenset({"provenance"})) if a.calibration else None,
    }


@app.get("/health", summary="Liveness: 200 when a model is loaded", responses={200: {
    "description": "A model is loaded", "content": _json_body("Health")}})
def health() -> Health:
    loaded = provider().get()
    metrics.add_metric(name="HealthChecks", unit=MetricUnit.Count, value=1)
    return {"status": "ok", "modelVersion": loaded.model.version, "source": loaded.source}  # type: ignore[return-value]


def _error(status: int, message: str, details: list[dict[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body={"error": message, "details": details or []}, headers=headers)


def _count_error(kind: str) -> None:
    if is_metrics_disabled():       # single_metric does not honour POWERTOOLS_METRICS_DISABLED itself
        return
    with single_metric(name="RequestErrors", unit=MetricUnit.Count, value=1,
                       namespace=metrics.namespace, default_dimensions=metrics.default_dimensions) as metric:
        metric.add_dimension(name="ErrorKind", value=kind)


@app.exception_handler(RequestValidationError)
def _bad_request(exc: RequestValidationError) -> Response:
    kind = {400: "MalformedBody", 413: "TooLarge"}.get(exc.status, "Validation")
    _count_error(kind)
    logger.info("rejected request", extra={"status": exc.status, "error": exc.message, "details": exc.details[:5]})
    return _error(exc.status, exc.message, exc.details)


_ROUTES = {"/predict": ("POST",), "/model": ("GET",), "/health": ("GET",), "/openapi.json": ("GET",)}


@app.exception_handler(NotFoundError)
def _not_found(_: NotFoundError) -> Response:
    path = app.current_event.path
    allowed = _ROUTES.get(path.rstrip("/") or "/")
    if allowed:
        _count_error("MethodNotAllowed")
        return _error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {app.current_event.http_method} not allowed on {path}",
                      [{"field": "method", "message": f"allowed: {', '.join(allowed)}"}],
                      headers={"Allow": ", ".join(allowed)})
    _count_error("NotFound")
    return _error(HTTPStatus.NOT_FOUND, f"no route {path}", [{"field": "path", "message": "unknown path"}])


@app.exception_handler(Exception)
def _internal(exc: Exception) -> Response:
    # Outermost edge: log the traceback for us, never send it to the caller.
    logger.exception("unhandled error")
    _count_error("Internal")
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document of these routes, generated from the pydantic models."""
    # The route annotations name Body and the models; importing them (Powertools' OpenAPI machinery,
    # pydantic) is a visible share of the cold start, so they are resolved only here, when the
    # document is generated.
    from aws_lambda_powertools.event_handler.openapi.params import Body

    from virality.http import models

    for content, name in _DOCUMENTED:
        content["model"] = getattr(models, name)
    globals().update(Body=Body, **{name: getattr(models, name) for name in (
        "BatchPredictResponse", "Health", "ModelInfo", "PredictRequest", "PredictResponse")})
    return app.get_openapi_schema(
        title="Virality prediction API", version=__version__,
        summary="Predict how viral a TikTok video will be (softmax over 5 tiers, 0-100 score)",
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> dict[str, Any]:
    return openapi_schema()


def _after_restore() -> None:
    # SnapStart: a restored snapshot may be older than the refresh interval; re-check the pointer.
    if _provider is not None and _provider.loaded is not None:
        _provider.refresh()


def _before_snapshot() -> None:
    # SnapStart: load the model during the snapshot so restored containers start warm.
    provider().get()


try:  # only present in the Lambda Python runtime with SnapStart
    from snapshot_restore_py import register_after_restore, register_before_snapshot
except ImportError:  # pragma: no cover - outside SnapStart
    pass
else:  # pragma: no cover
    register_before_snapshot(_before_snapshot)
    register_after_restore(_after_restore)


# In a Lambda environment everything imported so far lives as long as the container: move
# it out of the cyclic garbage collector's reach, so later collections (the rest of the cold
# start, warm invocations) never rescan it (its effect on the cold start: docs/benchmarks.md,
# cold start). Not done elsewhere (tests reimport this
# module many times in one process).
if _IN_LAMBDA:
    gc.freeze()
    gc.enable()


def _request_id(event: Any) -> Any:
    """``requestContext.requestId`` of an API Gateway event, None when absent (as Powertools' JMESPath query)."""
    context = event.get("requestContext") if isinstance(event, dict) else None
    return context.get("requestId") if isinstance(context, dict) else None


@logger.inject_lambda_context
@metrics.log_metrics(capture_cold_start_metric=True)
@capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The correlation id that correlation_id_path=API_GATEWAY_REST would set, read with two dict
    # lookups instead of a JMESPath query: ~10 µs less per request, a tenth of a warm one.
    logger.set_correlation_id(_request_id(event))
    return app.resolve(event, context)
