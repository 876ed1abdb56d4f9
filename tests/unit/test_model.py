"""The runtime model: probabilities, tiers, scores, batch vs row, exact contributions."""

from __future__ import annotations

import numpy as np
import pytest

from virality import TIER_MIDPOINTS
from virality.artifact import SCHEMA_VERSION, ModelArtifact
from virality.ml.features import FEATURE_NAMES
from virality.ml.model import ViralityModel

MIDPOINTS = np.array([12.5, 35.0, 55.0, 72.5, 90.0])


def _model(weights: np.ndarray, biases: np.ndarray, **extra) -> ViralityModel:
    return ViralityModel(ModelArtifact(schemaVersion=SCHEMA_VERSION, modelVersion="v-unit",
                                       featureNames=list(FEATURE_NAMES), weights=weights.tolist(),
                                       biases=biases.tolist(), trainedAt="2026-01-01T00:00:00.000Z", **extra))


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    rng = np.random.default_rng(99)
    return np.vstack([rng.random((200, 15)), np.zeros((1, 15)), np.ones((1, 15))])


def test_midpoints_are_the_product_constants():
    assert tuple(MIDPOINTS.tolist()) == TIER_MIDPOINTS


def test_predictions_are_consistent(trained, inputs):
    pred = trained.model.predict(inputs)
    P = pred.probabilities
    assert P.shape == (inputs.shape[0], 5)
    assert np.all(P >= 0)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(pred.tiers, P.argmax(axis=1) + 1)
    assert set(pred.tiers.tolist()) <= {1, 2, 3, 4, 5}
    np.testing.assert_array_equal(pred.scores, np.round(P @ MIDPOINTS, 1))
    assert pred.scores.min() >= 0 and pred.scores.max() <= 100
    # one decimal
    np.testing.assert_allclose(pred.scores * 10, np.round(pred.scores * 10), atol=1e-9)


def test_uniform_model_scores_the_mean_midpoint():
    # Given all-zero weights: every tier has probability 1/5
    model = _model(np.zeros((5, 15)), np.zeros(5))
    pred = model.predict(np.full((3, 15), 0.3))
    np.testing.assert_allclose(pred.probabilities, 0.2, rtol=1e-15)
    # Then score = (12.5 + 35 + 55 + 72.5 + 90) / 5 = 53.0 and ties go to the first tier
    assert pred.scores.tolist() == [53.0] * 3
    assert pred.tiers.tolist() == [1] * 3


def test_dominant_bias_picks_that_tier_and_its_midpoint():
    model = _model(np.zeros((5, 15)), np.array([0.0, 0.0, 0.0, 0.0, 100.0]))
    pred = model.predict(np.zeros(15))
    assert pred.tiers.tolist() == [5]
    assert pred.scores.tolist() == [90.0]


def test_score_rounding_by_hand():
    # logits (0, log 3, -inf-ish, ...): p = (1/4, 3/4, 0, 0, 0) -> 12.5/4 + 35*3/4 = 29.375 -> 29.4
    model = _model(np.zeros((5, 15)), np.array([0.0, np.log(3.0), -800.0, -800.0, -800.0]))
    pred = model.predict(np.zeros((1, 15)))
    np.testing.assert_allclose(pred.probabilities[0], [0.25, 0.75, 0, 0, 0], atol=1e-15)
    assert pred.scores.tolist() == [29.4]
    assert pred.tiers.tolist() == [2]


def test_custom_midpoints_are_used():
    model = _model(np.zeros((5, 15)), np.array([0, 0, 0, 0, 50.0]), tierMidpoints=[0, 10, 20, 30, 100])
    assert model.predict(np.zeros(15)).scores.tolist() == [100.0]


def test_batch_equals_row_by_row(trained, inputs):
    batch = trained.model.predict(inputs)
    for i, x in enumerate(inputs):
        one = trained.model.predict(x)
        np.testing.assert_allclose(one.probabilities[0], batch.probabilities[i], rtol=0, atol=1e-13)
        assert one.tiers[0] == batch.tiers[i]
        assert one.scores[0] == batch.scores[i]


def test_predict_row_gives_the_batch_answer(trained, inputs):
    # The single-request path (one dot with the intercepts appended, then plain Python) against
    # the vectorised one: the same rounded probabilities up to one unit of the 6th decimal (the
    # products are summed in another order), the same tier, the same score up to its last rounding.
    batch = trained.model.predict(inputs)
    rounded = np.round(batch.probabilities, 6)
    for i, x in enumerate(inputs.tolist()):
        probs, tier, score = trained.model.predict_row(x)
        np.testing.assert_allclose(probs, rounded[i], rtol=0, atol=1e-6 + 1e-12)
        assert tier == batch.tiers[i]
        assert score == pytest.approx(batch.scores[i], abs=0.1 + 1e-9)
    assert trained.model.predict_row(tuple(inputs[0])) == trained.model.predict_row(inputs[0].tolist())


def test_contributions_add_up_to_the_predicted_logit(trained, inputs):
    model = trained.model
    tiers = model.predict(inputs).tiers
    C = model.contributions(inputs, tiers)
    assert C.shape == inputs.shape
    logits = inputs @ model.coef.T + model.intercept
    k = tiers - 1
    np.testing.assert_allclose(C.sum(axis=1) + model.intercept[k], logits[np.arange(len(k)), k],
                               rtol=0, atol=1e-12)
    # each contribution is coef[tier, j] * x_j
    np.testing.assert_array_equal(C[7], model.coef[k[7]] * inputs[7])


def test_contributions_for_any_tier_sum_to_that_tiers_logit(trained, inputs):
    model = trained.model
    x = inputs[:5]
    for tier in range(1, 6):
        C = model.contributions(x, np.full(5, tier))
        np.testing.assert_allclose(C.sum(axis=1) + model.intercept[tier - 1],
                                   x @ model.coef[tier - 1] + model.intercept[tier - 1], atol=1e-12)


def test_explain_names_every_feature(trained, inputs):
    x = inputs[3]
    tier = int(trained.model.predict(x).tiers[0])
    named = trained.model.explain(x, tier)
    assert list(named) == list(FEATURE_NAMES)
    assert sum(named.values()) + trained.model.intercept[tier - 1] == pytest.approx(
        float(x @ trained.model.coef[tier - 1] + trained.model.intercept[tier - 1]), abs=1e-12)


def test_model_parameters_are_read_only(trained):
    with pytest.raises(ValueError):
        trained.model.coef[0, 0] = 1.0
    with pytest.raises(ValueError):
        trained.model.intercept[0] = 1.0


def test_describe_and_version(trained):
    info = trained.model.describe()
    assert info["modelVersion"] == trained.model.version == "v-test-newton"
    assert info["featureNames"] == list(FEATURE_NAMES)
    assert info["tierMidpoints"] == list(TIER_MIDPOINTS)
    assert info["accuracy"] == trained.test_report.accuracy


def test_featurize_uses_the_models_caps(trained):
    raw = trained.training_set.test.raw
    np.testing.assert_array_equal(trained.model.featurize(raw), trained.training_set.test.X)
