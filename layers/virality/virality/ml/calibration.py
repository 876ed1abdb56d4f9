"""Temperature scaling (Guo et al. 2017), fitted on out-of-fold logits.

One scalar ``T > 0`` divides every logit. It never changes the predicted tier
(the arg-max), only how confident the probabilities are. Because the model is
linear, ``(W x + b) / T = (W / T) x + b / T``: the temperature is folded into
the published weights, so serving is unchanged and the original format's
consumers get calibrated probabilities too.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from virality.ml.metrics import expected_calibration_error, log_loss
from virality.ml.softmax import softmax

#: T is kept inside [1 / BETA_MAX, 1 / BETA_MIN].
BETA_MIN, BETA_MAX = 1e-2, 1e2


def _nll_derivatives(beta: float, Z: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Mean NLL of ``softmax(beta Z)`` and its first two derivatives in ``beta``."""
    S = beta * Z
    S -= S.max(axis=1, keepdims=True)
    P = np.exp(S)
    norm = P.sum(axis=1)
    P /= norm[:, None]
    rows = np.arange(y.shape[0])
    zy = Z[rows, y]
    nll = float(np.mean(np.log(norm) - S[rows, y]))
    mean_z = np.einsum("ij,ij->i", P, Z)
    d1 = float(np.mean(mean_z - zy))
    d2 = float(np.mean(np.einsum("ij,ij->i", P, Z * Z) - mean_z * mean_z))
    return nll, d1, d2


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, tol: float = 1e-10, max_iter: int = 100) -> float:
    """The temperature minimising the mean log-loss of ``softmax(logits / T)``.

    The loss is convex in ``beta = 1/T``; this is safeguarded Newton on
    ``beta`` inside ``[BETA_MIN, BETA_MAX]`` (bisection when a step leaves the
    bracket), deterministic for given inputs.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)
        Out-of-fold logits (never the test split).
    y : ndarray of shape (n_samples,), class indices

    Returns
    -------
    T : float, in ``[1 / BETA_MAX, 1 / BETA_MIN]``
    """
    Z = np.asarray(logits, dtype=np.float64)
    if Z.shape[0] == 0:
        return 1.0
    lo, hi = BETA_MIN, BETA_MAX
    beta = 1.0
    for _ in range(max_iter):
        _, d1, d2 = _nll_derivatives(beta, Z, y)
        if d1 > 0:
            hi = beta
        else:
            lo = beta
        if abs(d1) <= tol:
            break
        step = beta - d1 / d2 if d2 > 0 else math.nan
        beta = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo <= 1e-12 * hi:
            break
    return 1.0 / beta


class CalibrationFigures(TypedDict):
    """What :func:`calibration_summary` measures (the fields of the artifact's ``calibration`` it fills)."""

    eceBefore: float
    eceAfter: float
    logLossBefore: float
    logLossAfter: float


def calibration_summary(logits: np.ndarray, y: np.ndarray, temperature: float) -> CalibrationFigures:
    """ECE (10 bins) and log-loss of ``logits`` before and after dividing by ``temperature``."""
    before = softmax(logits)
    after = softmax(logits / temperature)
    return {"eceBefore": expected_calibration_error(y, before), "eceAfter": expected_calibration_error(y, after),
            "logLossBefore": log_loss(y, before), "logLossAfter": log_loss(y, after)}


def fold_temperature(coef: np.ndarray, intercept: np.ndarray, temperature: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(W / T, b / T)``: the calibrated model in the original format, shapes unchanged."""
    return coef / temperature, intercept / temperature
