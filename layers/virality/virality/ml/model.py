"""The runtime model: vectorised prediction and exact per-feature explanations."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from math import exp

import numpy as np

from virality.artifact import ModelArtifact
from virality.ml.features import FEATURE_NAMES, Preprocessing, RawVideos, extract_features
from virality.ml.softmax import predict_proba

_mul = operator.mul


@dataclass(frozen=True, slots=True)
class Predictions:
    """Predictions for ``n_samples`` inputs.

    Attributes
    ----------
    probabilities : ndarray of shape (n_samples, 5)
    tiers : ndarray of shape (n_samples,), integers 1..5 (argmax + 1)
    scores : ndarray of shape (n_samples,), 0..100 rounded to 1 decimal
    """

    probabilities: np.ndarray
    tiers: np.ndarray
    scores: np.ndarray


class ViralityModel:
    """A loaded artifact ready to predict.

    Parameters
    ----------
    artifact : ModelArtifact
        A validated artifact (see :func:`virality.artifact.load_artifact`).
    """

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self.coef = np.asarray(artifact.weights, dtype=np.float64)          # (5, 15)
        self.intercept = np.asarray(artifact.biases, dtype=np.float64)      # (5,)
        self.midpoints = np.asarray(artifact.tierMidpoints, dtype=np.float64)
        self.coef.setflags(write=False)
        self.intercept.setflags(write=False)

    @cached_property
    def _row_parts(self) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[float, ...]]:
        # [coef | intercept], shape (5, 16): one dot with (x, 1) gives the logits, intercepts included
        augmented = np.hstack([self.coef, self.intercept[:, None]])
        return augmented.dot, tuple(self.midpoints.tolist())

    def predict_row(self, x: Sequence[float]) -> tuple[list[float], int, float]:
        """One input (15 values): ``(probabilities rounded to 6 decimals, tier, score)``.

        Same arithmetic and rounding as :meth:`predict` (``rint(v * 10**d) / 10**d``),
        with one NumPy call (the logits, as one product with the intercepts appended:
        in Python it costs three times more) and the rest in plain Python: NumPy's
        per-call overhead dominates for one row.
        """
        dot, midpoints = self._row_parts
        logits = dot(np.array((*x, 1.0), dtype=np.float64)).tolist()
        top = max(logits)
        exps = [exp(z - top) for z in logits]
        total = sum(exps)
        probs = [e / total for e in exps]
        tier = probs.index(max(probs)) + 1
        score = min(max(round(sum(map(_mul, probs, midpoints)) * 10) / 10, 0.0), 100.0)
        return [round(p * 1e6) / 1e6 for p in probs], tier, score

    @property
    def version(self) -> str:
        return self.artifact.modelVersion

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """Fitted caps; a model trained on seed JSON (no raw data) uses the defaults."""
        return self.artifact.preprocessing or Preprocessing()

    def featurize(self, raw: RawVideos) -> np.ndarray:
        """Raw videos -> features with this model's fitted caps, shape (n_samples, 15)."""
        return extract_features(raw, self.preprocessing)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Tier probabilities, shape (n_samples, 5), for ``X`` of shape (n_samples, 15)."""
        return predict_proba(np.atleast_2d(X), self.coef, self.intercept)

    def predict(self, X: np.ndarray) -> Predictions:
        """Probabilities, tiers and 0-100 scores for ``X`` of shape (n_samples, 15)."""
        P = self.predict_proba(X)
        tiers = P.argmax(axis=1) + 1
        scores = np.clip(np.round(P @ self.midpoints, 1), 0.0, 100.0)
        return Predictions(P, tiers, scores)

    def contributions(self, X: np.ndarray, tiers: np.ndarray) -> np.ndarray:
        """Exact additive contributions ``coef[tier - 1, j] * x_j`` to the predicted tier's logit.

        The logit is ``intercept[tier - 1] + contributions.sum(axis=1)``.

        Returns
        -------
        ndarray of shape (n_samples, 15)
        """
        X = np.atleast_2d(X)
        return self.coef[np.asarray(tiers) - 1] * X

    def explain(self, x: np.ndarray, tier: int) -> dict[str, float]:
        """Named contributions of one input (shape (15,)) to its tier's logit."""
        row = self.contributions(x[None, :], np.array([tier]))[0]
        return {name: float(v) for name, v in zip(FEATURE_NAMES, row, strict=True)}

    def describe(self) -> Mapping[str, object]:
        a = self.artifact
        return {
            "modelVersion": a.modelVersion,
            "trainedAt": a.trainedAt,
            "featureNames": list(a.featureNames),
            "tierMidpoints": list(a.tierMidpoints),
            "accuracy": a.accuracy,
        }
