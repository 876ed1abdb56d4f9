"""The request and response models of the predict API (pydantic, strict mode).

They are the API's contract: the OpenAPI document is generated from them, and a
request the fast paths of :mod:`virality.http.api` decline is validated by
:class:`PredictRequest`, whose errors name every offending field. Neither happens in
the cold start of a request the fast paths accept, so this module (and pydantic) is
imported only then: by :func:`virality.http.api.parse_predict_request` on its slow
path and by the predict function's ``openapi_schema()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    create_model,
    model_validator,
)

from virality import NUM_CLASSES
from virality.ml.features import FEATURES, parse_posted_at

__all__ = ["BatchPredictResponse", "ErrorDetail", "ErrorResponse", "Health", "Instance", "ModelInfo",
           "NamedFeatures", "PipelineFeatureVector", "PredictRequest", "PredictResponse", "Prediction",
           "ValidationError", "VideoRecord"]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[float, Field(ge=0.0)]
Score10 = Annotated[float, Field(ge=0.0, le=10.0)]

NamedFeatures: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "NamedFeatures",
    __config__=_STRICT,
    __doc__="The 15 model features, each a finite number in [0, 1] (all required).",
    **{f.name: (Unit, Field(description=f.description)) for f in FEATURES},
)


def _check_posted_at(value: Any) -> Any:
    # Runs before the str|number union so an error names the field once, not once per union member.
    # Only ValueError becomes a 422 in a pydantic validator: anything else here would be a 500.
    try:
        parse_posted_at(value)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"epoch seconds out of range ({type(exc).__name__})") from None
    return value


class VideoRecord(BaseModel):
    """A raw video record, turned into features exactly as in training."""

    model_config = _STRICT

    videoId: str | None = Field(None, max_length=256, description="Optional caller id, echoed back")
    views: Count
    likes: Count
    comments: Count
    shares: Count
    saves: Count
    followers: Count | None = Field(None, description="Creator's follower count; omit when unknown")
    durationSeconds: Count
    hashtagCount: Count
    hasTrendingSound: StrictBool
    captionLength: Count | None = Field(None, description="Caption length in characters (or give caption)")
    caption: str | None = Field(None, max_length=20_000)
    postedAt: Annotated[str | Count, BeforeValidator(_check_posted_at)] = Field(
        description="ISO 8601 timestamp (naive = UTC) or epoch seconds")

    @model_validator(mode="after")
    def _caption(self) -> VideoRecord:
        if self.captionLength is None and self.caption is None:
            raise ValueError("give captionLength or caption")
        return self


class PipelineFeatureVector(BaseModel):
    """The content pipeline's partial feature vector (the original ``featureVectorToMLInput``)."""

    model_config = _STRICT

    shareTrigger: Score10 | None = Field(None, description="0-10, default 5")
    commentProvocation: Score10 | None = Field(None, description="0-10, default 5")
    durationSeconds: Count | None = Field(None, description="seconds, default 30")
    hashtagCount: Count | None = Field(None, description="default 5")
    audioTrendingMatch: Count | None = Field(None, description="> 0 means trending audio")
    captionScore: Score10 | None = Field(None, description="0-10, default 5")


_KINDS = ("features", "video", "featureVector")


def _exactly_one_of(*names: str) -> Callable[[dict[str, Any]], None]:
    """JSON-schema hook documenting the "exactly one of" rule the model validators enforce.

    Omitting a kind is how to not give it, so the document does not offer ``null`` for them.
    """
    def extra(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [{"required": [name]} for name in names]
        for name in names:
            prop = schema["properties"][name]
            options = [s for s in prop.pop("anyOf", []) if s.get("type") != "null"]
            if len(options) == 1:
                prop.update(options[0])
            elif options:
                prop["anyOf"] = options
            prop.pop("default", None)
    return extra


class Instance(BaseModel):
    """One input: exactly one of ``features``, ``video`` or ``featureVector``."""

    model_config = ConfigDict(**_STRICT, json_schema_extra=_exactly_one_of(*_KINDS))

    features: NamedFeatures | None = None
    video: VideoRecord | None = None
    featureVector: PipelineFeatureVector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Instance:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_KINDS)}" + (f" (got {', '.join(given)})" if given else ""))
        return self


class PredictRequest(BaseModel):
    """A single instance (one of ``features``/``video``/``featureVector``) or a batch (``instances``)."""

    model_config = ConfigDict(**_STRICT, json_schema_extra=_exactly_one_of(*_KINDS, "instances"))

    features: NamedFeatures | None = None
    video: VideoRecord | None = None
    featureVector: PipelineFeatureVector | None = None
    instances: list[Instance] | None = Field(None, min_length=1, description="A batch, up to MAX_BATCH instances")
    explain: StrictBool = Field(False, description="Add per-feature contributions to the predicted tier's logit")

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        given = [k for k in (*_KINDS, "instances") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of features, video, featureVector or instances"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


class Prediction(BaseModel):
    model_config = ConfigDict(defer_build=True)   # response shape: built only for the OpenAPI document
    score: float = Field(ge=0, le=100, description="0-100: sum of tier probabilities x tier midpoints, 1 decimal")
    tier: int = Field(ge=1, le=5, description="most probable tier (1 = lowest, 5 = highest)")
    probabilities: list[float] = Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)
    contributions: dict[str, float] | None = Field(
        None, description="explain=true: coefficient x feature value for the predicted tier (exact for a linear model)")
    videoId: str | None = None


class PredictResponse(Prediction):
    modelVersion: str


class BatchPredictResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)   # response shape: built only for the OpenAPI document
    predictions: list[Prediction]
    modelVersion: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(defer_build=True)   # response shape: built only for the OpenAPI document
    field: str
    message: str


class ErrorResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)   # response shape: built only for the OpenAPI document
    error: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ModelInfo(BaseModel):
    model_config = ConfigDict(defer_build=True)   # response shape: built only for the OpenAPI document
    modelVersion: str
    trainedAt: str
    featureNames: list[str]
    tierMidpoints: list[float]
    source: str = Field(description="published (pointer), pinned (MODEL_VERSION) or bundled (baseline)")
    key: str | None = Field(None, description="Key of the served ml-weights.json under the model prefix")
    loadError: str | None = Field(None, description=(
        "Why the bundled baseline is served, as a kind: NotConfigured, ModelNotFound, StorageUnavailable, "
        "InvalidPointer, InvalidArtifact or InternalError (details are logged, never returned)"))
    lastRefreshError: str | None = Field(None, description="Kind of the last failed refresh (same kinds)")
    refreshSeconds: float
    pinnedVersion: str | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    data: dict[str, Any] | None = Field(None, description=(
        "Training data provenance: source is the file name only (no bucket or path), sha256 of its bytes"))
    featureSet: str = Field("full", description="full, or prepublication: only what is known before posting "
                                                "(post-publication features have weight 0)")
    calibration: dict[str, Any] | None = Field(None, description="temperature folded into the weights, if any")


class Health(BaseModel):
    model_config = ConfigDict(defer_build=True)   # response shape: built only for the OpenAPI document
    status: str
    modelVersion: str
    source: str
