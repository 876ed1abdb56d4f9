"""Property-based tests (hypothesis): features, predictions, artifact round trip, trainer determinism."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from virality.artifact import MAX_ABS_PARAMETER, SCHEMA_VERSION, ModelArtifact, dump_artifact, load_artifact
from virality.errors import ConvergenceWarning
from virality.ml.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    Preprocessing,
    extract_features,
    fit_preprocessing,
)
from virality.ml.model import ViralityModel
from virality.ml.softmax import objective
from virality.ml.solvers import fit, make_solver
from virality_dev.testing import raw_videos_from_records

PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------- strategies

counts = st.one_of(st.just(0), st.integers(0, 10**18),
                   st.floats(0, 1e300, allow_nan=False, allow_infinity=False),
                   st.integers(0, 10**9).map(str))
followers = st.one_of(st.none(), st.just(""), st.just(0), st.integers(0, 10**15),
                      st.floats(0, 1e300, allow_nan=False, allow_infinity=False))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
posted = st.one_of(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                 timezones=st.one_of(st.none(), offsets)).map(lambda d: d.isoformat()),
    st.integers(0, 4_102_444_800),
    st.floats(0, 4.1e9, allow_nan=False),
)


@st.composite
def raw_records(draw) -> dict[str, object]:
    record: dict[str, object] = {name: draw(counts) for name in ("views", "likes", "comments", "shares", "saves")}
    record["durationSeconds"] = draw(st.one_of(st.integers(0, 10**6), st.floats(0, 1e7, allow_nan=False)))
    record["hashtagCount"] = draw(st.integers(0, 10**6))
    record["postedAt"] = draw(posted)
    f = draw(st.one_of(st.just("absent"), followers))
    if f != "absent":
        record["followers"] = f
    flag = draw(st.one_of(st.just("absent"), st.booleans(), st.sampled_from(["yes", "no", "1", "0", "", "TRUE"])))
    if flag != "absent":
        record["hasTrendingSound"] = flag
    if draw(st.booleans()):
        record["captionLength"] = draw(st.one_of(st.integers(0, 10**6), st.floats(0, 1e9, allow_nan=False)))
    else:
        record["caption"] = draw(st.text(max_size=40))
    return record


unit_features = arrays(np.float64, st.tuples(st.integers(1, 20), st.just(15)),
                       elements=st.floats(0, 1, allow_nan=False))


def _artifact(weights: np.ndarray, biases: np.ndarray, **extra) -> ModelArtifact:
    return ModelArtifact(schemaVersion=SCHEMA_VERSION, modelVersion=extra.pop("modelVersion", "v-prop"),
                         featureNames=list(FEATURE_NAMES), weights=weights.tolist(), biases=biases.tolist(),
                         trainedAt=extra.pop("trainedAt", "2026-01-01T00:00:00.000Z"), **extra)


# --------------------------------------------------------------------------- features


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")   # e.g. 1e300 shares / 1e-300 views
@PROPERTY
@given(st.lists(raw_records(), min_size=1, max_size=8))
def test_features_of_any_valid_record_lie_in_unit_interval(records):
    raw = raw_videos_from_records(records)
    for prep in (Preprocessing(), fit_preprocessing(raw)):
        X = extract_features(raw, prep)
        assert X.shape == (len(records), 15)
        assert np.all(np.isfinite(X)), X
        assert X.min() >= 0.0 and X.max() <= 1.0
        for name in ("hasTrendingSound", "hasFollowerData"):
            assert set(X[:, FEATURE_INDEX[name]].tolist()) <= {0.0, 1.0}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@PROPERTY
@given(st.lists(raw_records(), min_size=2, max_size=6))
def test_featurising_a_batch_equals_featurising_each_record(records):
    prep = fit_preprocessing(raw_videos_from_records(records))
    batch = extract_features(raw_videos_from_records(records), prep)
    for i, record in enumerate(records):
        np.testing.assert_array_equal(extract_features(raw_videos_from_records([record]), prep)[0], batch[i])


# --------------------------------------------------------------------------- prediction


@PROPERTY
@given(unit_features,
       arrays(np.float64, (5, 15), elements=st.floats(-50, 50)),
       arrays(np.float64, (5,), elements=st.floats(-50, 50)))
def test_probabilities_sum_to_one_and_scores_stay_in_range(X, weights, biases):
    model = ViralityModel(_artifact(weights, biases))
    pred = model.predict(X)
    assert np.all(np.isfinite(pred.probabilities)) and np.all(pred.probabilities >= 0)
    np.testing.assert_allclose(pred.probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert pred.scores.min() >= 0.0 and pred.scores.max() <= 100.0
    np.testing.assert_array_equal(pred.tiers, pred.probabilities.argmax(axis=1) + 1)
    # the score is a convex combination of the midpoints, so it lies between the extremes
    assert pred.scores.min() >= 12.5 - 0.05 and pred.scores.max() <= 90.0 + 0.05


# --------------------------------------------------------------------------- artifact


# Parameters beyond MAX_ABS_PARAMETER are refused (they overflow the logits; see test_model_numerics.py).
valid_parameters = st.floats(-MAX_ABS_PARAMETER, MAX_ABS_PARAMETER)


@PROPERTY
@given(arrays(np.float64, (5, 15), elements=valid_parameters),
       arrays(np.float64, (5,), elements=valid_parameters),
       st.one_of(st.none(), st.floats(0, 1)),
       st.text(max_size=30), st.text(min_size=1, max_size=30))
def test_artifact_round_trips_byte_identically(weights, biases, accuracy, trained_at, version):
    artifact = _artifact(weights, biases, accuracy=accuracy, trainedAt=trained_at, modelVersion=version)
    dumped = dump_artifact(artifact)
    loaded = load_artifact(dumped)
    assert dump_artifact(loaded) == dumped
    np.testing.assert_array_equal(np.array(loaded.weights), weights)
    np.testing.assert_array_equal(np.array(loaded.biases), biases)
    assert loaded.modelVersion == version and loaded.trainedAt == trained_at


# --------------------------------------------------------------------------- trainer


@st.composite
def small_data(draw) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(4, 40))
    X = draw(arrays(np.float64, (n, 15), elements=st.floats(0, 1, allow_nan=False)))
    y = draw(arrays(np.intp, (n,), elements=st.integers(0, 4)))
    if np.unique(y).size < 2:
        y[0], y[1] = 0, 1
    return X, y


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_data(), st.sampled_from(["newton", "gd"]), st.sampled_from([1e-3, 1e-2, 0.0]))
def test_trainer_is_deterministic_on_random_data(data, optimizer, l2):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        solver = make_solver(optimizer, **({"epochs": 50} if optimizer == "gd" else {}))
        a = fit(X, y, l2_reg_strength=l2, solver=solver)
        b = fit(X.copy(), y.copy(), l2_reg_strength=l2, solver=solver)
    assert a.coef.tobytes() == b.coef.tobytes()
    assert a.intercept.tobytes() == b.intercept.tobytes()
    assert np.all(np.isfinite(a.coef)) and np.all(np.isfinite(a.intercept))
    # never worse than the all-zero starting point of the objective
    assert a.objective <= objective(np.zeros((5, 15)), np.zeros(5), X, y, l2) + 1e-12
