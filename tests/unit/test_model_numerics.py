"""Artifact validation guarantees finite predictions; hostile artifacts are refused, never crash the loader.

Issue 9, section 3: an artifact with finite but huge weights (1e308) passed validation, then
answered 500 for one request (NaN in rounding) and ``"score": null`` in a batch; an artifact
nested 100,000 deep raised ``RecursionError`` in the loader.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from virality.artifact import (
    MAX_ABS_PARAMETER,
    MAX_ARTIFACT_DEPTH,
    SCHEMA_VERSION,
    ModelArtifact,
    canonical_checksum,
    dump_artifact,
    load_artifact,
)
from virality.errors import ArtifactValidationError
from virality.http.api import ParsedRequest, dumps_response, predict
from virality.ml.features import FEATURE_NAMES
from virality.ml.model import ViralityModel

PROPERTY = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# Extremes first: hypothesis shrinks toward them, and they are where overflow lives.
EXTREMES = [MAX_ABS_PARAMETER, -MAX_ABS_PARAMETER, 0.0, 1e-300, -1e-300, MAX_ABS_PARAMETER / 3]
parameters = st.sampled_from(EXTREMES) | st.floats(-MAX_ABS_PARAMETER, MAX_ABS_PARAMETER)
unit = st.sampled_from([0.0, 1.0, 0.5, 5e-324]) | st.floats(0.0, 1.0)
inputs = arrays(np.float64, st.tuples(st.integers(1, 8), st.just(15)), elements=unit)


def _artifact(weights: list[list[float]], biases: list[float]) -> ModelArtifact:
    return ModelArtifact(schemaVersion=SCHEMA_VERSION, modelVersion="v-extreme", featureNames=list(FEATURE_NAMES),
                         weights=weights, biases=biases, trainedAt="2026-01-01T00:00:00.000Z")


def _signed_doc(weights: list[list[float]], biases: list[float]) -> bytes:
    """A schema-2 document with a *valid* checksum, bypassing the model's own validation."""
    doc = json.loads(dump_artifact(_artifact([[0.0] * 15] * 5, [0.0] * 5)))
    doc["weights"], doc["biases"] = weights, biases
    doc.pop("checksum")
    doc["checksum"] = canonical_checksum(doc)
    return json.dumps(doc).encode()


def _assert_finite_predictions(model: ViralityModel, X: np.ndarray) -> None:
    out = model.predict(X)
    assert np.isfinite(out.probabilities).all() and (out.probabilities >= 0).all()
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert np.isfinite(out.scores).all() and out.scores.min() >= 0.0 and out.scores.max() <= 100.0
    assert np.isfinite(model.contributions(X, out.tiers)).all()
    for i, row in enumerate(X.tolist()):
        probs, tier, score = model.predict_row(row)
        assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs)
        assert math.isfinite(score) and 0.0 <= score <= 100.0 and 1 <= tier <= 5
        # same answer as the vectorised path (scores agree up to the last rounding step)
        assert score == pytest.approx(float(out.scores[i]), abs=0.1 + 1e-9)


@PROPERTY
@given(arrays(np.float64, (5, 15), elements=parameters), arrays(np.float64, (5,), elements=parameters), inputs)
def test_every_accepted_artifact_predicts_finite_numbers_on_the_unit_cube(weights, biases, X):
    # Given any artifact validation accepts (parameters anywhere in [-MAX, MAX]) ...
    model = ViralityModel(load_artifact(dump_artifact(_artifact(weights.tolist(), biases.tolist()))))
    # ... every input in [0, 1]^15 gets finite probabilities, tiers and scores, on both code paths
    _assert_finite_predictions(model, X)


any_finite = st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 1e154]) | st.floats(
    allow_nan=False, allow_infinity=False)


@PROPERTY
@given(arrays(np.float64, (5, 15), elements=any_finite), arrays(np.float64, (5,), elements=any_finite), inputs)
def test_an_artifact_is_either_refused_for_its_size_or_predicts_finite_numbers(weights, biases, X):
    # Given any finite parameters in a correctly signed file
    try:
        model = ViralityModel(load_artifact(_signed_doc(weights.tolist(), biases.tolist())))
    except ArtifactValidationError as exc:
        # refused: only ever because a parameter is beyond the bound
        assert max(np.abs(weights).max(), np.abs(biases).max()) > MAX_ABS_PARAMETER
        assert "at most" in str(exc)
        return
    _assert_finite_predictions(model, X)


@PROPERTY
@given(arrays(np.float64, (5, 15), elements=parameters), arrays(np.float64, (5,), elements=parameters), inputs,
       st.booleans())
def test_served_responses_never_contain_null_or_nan(weights, biases, X, explain):
    model = ViralityModel(_artifact(weights.tolist(), biases.tolist()))
    for batch in (False, True):
        rows = X if batch else X[:1]
        body = predict(ParsedRequest(batch=batch, explain=explain, X=rows), model)
        text = dumps_response(body)
        assert "null" not in text and "NaN" not in text and "Infinity" not in text
        predictions = json.loads(text)["predictions"] if batch else [json.loads(text)]
        for p in predictions:
            assert 0.0 <= p["score"] <= 100.0 and sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_the_corners_of_the_cube_with_maximal_opposite_parameters():
    # The worst case for cancellation: +MAX and -MAX summed over all 15 features, tiers tied.
    weights = [[MAX_ABS_PARAMETER] * 15, [-MAX_ABS_PARAMETER] * 15, [MAX_ABS_PARAMETER] * 15,
               [0.0] * 15, [-MAX_ABS_PARAMETER] * 15]
    biases = [MAX_ABS_PARAMETER, -MAX_ABS_PARAMETER, MAX_ABS_PARAMETER, 0.0, -MAX_ABS_PARAMETER]
    model = ViralityModel(_artifact(weights, biases))
    _assert_finite_predictions(model, np.array([[0.0] * 15, [1.0] * 15, [1.0, 0.0] * 7 + [1.0]]))


@pytest.mark.parametrize("value", [1e308, -1e308, MAX_ABS_PARAMETER * (1 + 1e-15), 1.7976931348623157e308, 1e7],
                         ids=["1e308", "-1e308", "just over", "max float", "1e7"])
@pytest.mark.parametrize("where", ["weight", "bias"])
def test_parameters_beyond_the_bound_are_refused(value, where):
    weights, biases = [[0.5] * 15 for _ in range(5)], [0.0] * 5
    if where == "weight":
        weights[3][7] = value
    else:
        biases[2] = value
    # by the loader, even with a valid checksum ...
    with pytest.raises(ArtifactValidationError, match="at most"):
        load_artifact(_signed_doc(weights, biases))
    # ... and when built in code (training cannot publish one either)
    with pytest.raises(ValueError, match="at most"):
        _artifact(weights, biases)


def test_the_bound_is_inclusive():
    weights = [[MAX_ABS_PARAMETER] * 15 for _ in range(5)]
    assert load_artifact(_signed_doc(weights, [-MAX_ABS_PARAMETER] * 5)).weights == weights


def test_huge_integer_weights_are_refused_not_an_overflow():
    doc = _signed_doc([[0.5] * 15 for _ in range(5)], [0.0] * 5).decode()
    text = doc.replace('"biases": [0.0', '"biases": [' + "9" * 401, 1)
    assert text != doc
    with pytest.raises(ArtifactValidationError):
        load_artifact(text)


# --------------------------------------------------------------------------- deep documents


def _deep(depth: int) -> bytes:
    return b'{"schemaVersion": 2, "modelVersion": "v", "training": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_ARTIFACT_DEPTH, 990, 1_500, 100_000])
def test_deep_artifacts_are_an_artifact_validation_error(depth):
    with pytest.raises(ArtifactValidationError, match=f"nested more than {MAX_ARTIFACT_DEPTH} levels deep"):
        load_artifact(_deep(depth))


def test_deep_artifact_is_refused_with_the_lambda_recursion_limit():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        with pytest.raises(ArtifactValidationError, match="nested"):
            load_artifact(_deep(100_000))
    finally:
        sys.setrecursionlimit(old)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_refused_even_without_a_checksum(literal):
    # the original format has no checksum, so the checksum's allow_nan=False does not catch these
    doc = {"weights": [[0.5] * 15] * 5, "biases": [0.0] * 5, "featureNames": list(FEATURE_NAMES),
           "numClasses": 5, "trainedAt": "2024-01-01T00:00:00Z", "accuracy": 12345.5}
    text = json.dumps(doc).replace("12345.5", literal)
    with pytest.raises(ArtifactValidationError, match="non-finite"):
        load_artifact(text)
