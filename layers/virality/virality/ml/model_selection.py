"""Choosing ``lambda`` by stratified k-fold cross-validation (``--l2 auto``).

The search runs on the training split only. For every ``lambda`` of a log
grid (largest first) it fits the whole training split, warm-started from the
previous ``lambda``; then, fold by fold, it fits the fold's training part
starting from that whole-split optimum and scores the held-out part. The
``lambda`` with the lowest mean held-out log-loss wins, and its whole-split
fit is the refit (the caller polishes it with :func:`virality.ml.solvers.fit`).

Work reused, so the search costs a small multiple of one fit:

* along the path, each ``lambda`` starts from the optimum of the previous one;
* across folds, each fold starts from the whole-split optimum at the same
  ``lambda`` (a fold holds ``(k-1)/k`` of the rows, so its optimum is close)
  and reuses the whole-split Hessian there: only gradient passes are needed
  (chord Newton), and a fresh Hessian is computed only if progress stalls;
* above ``HESSIAN_ROWS`` rows, Hessians come from a strided subsample: they
  only steer the steps, every gradient and every loss is exact.

Same data, grid, folds and seed give the same floats (single-threaded BLAS,
fixed order of operations).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from virality.errors import ConfigurationError
from virality.ml.softmax import ABSENT_CLASS_LOGIT_GAP

#: The default grid: one value per decade from 1e-8 to 1e-1.
DEFAULT_L2_GRID: tuple[float, ...] = tuple(10.0 ** e for e in range(-8, 0))
DEFAULT_FOLDS = 5

#: Hessians (which only steer the steps) are computed on at most this many rows.
HESSIAN_ROWS = 65_536
#: Fold fits stop at this max|grad|: held-out log-loss is then exact to ~1e-9.
CV_TOL = 1e-7
CV_MAX_ITER = 100
#: A chord step must shrink max|grad| at least by this factor, else the Hessian is refreshed.
CHORD_RATIO = 0.25


@dataclass(frozen=True, slots=True)
class L2SearchResult:
    """Outcome of :func:`search_l2`.

    Attributes
    ----------
    grid : tuple of float, increasing
    mean_log_loss, std_log_loss : ndarray of shape (n_grid,)
        Mean and (population) standard deviation over folds of the held-out
        log-loss (sample-weighted when weights are given).
    fold_log_loss : ndarray of shape (n_folds, n_grid)
    chosen : float
        Grid value with the lowest mean held-out log-loss (ties: the larger ``lambda``).
    coef, intercept : ndarray of shape (n_classes, n_features), (n_classes,)
        Whole-split fit at ``chosen`` (to ``CV_TOL``).
    oof_logits : ndarray of shape (n_samples, n_classes)
        Out-of-fold logits at ``chosen``: row ``i`` comes from the fold model
        that did not see row ``i``.
    folds : ndarray of shape (n_samples,)
        Fold index of every row.
    seed : int
    duration_seconds : float
    """

    grid: tuple[float, ...]
    mean_log_loss: np.ndarray
    std_log_loss: np.ndarray
    fold_log_loss: np.ndarray
    chosen: float
    coef: np.ndarray
    intercept: np.ndarray
    oof_logits: np.ndarray
    folds: np.ndarray
    seed: int
    duration_seconds: float

    @property
    def n_folds(self) -> int:
        return int(self.fold_log_loss.shape[0])


def stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Seeded stratified fold assignment.

    Per class, rows are shuffled with ``numpy.random.default_rng(seed)`` and
    dealt round-robin, starting where the previous class stopped, so fold
    sizes differ by at most one and every class is spread evenly.

    Parameters
    ----------
    y : ndarray of shape (n_samples,), class indices
    n_folds : int, >= 2
    seed : int

    Returns
    -------
    folds : ndarray of shape (n_samples,), values in ``0..n_folds-1``
    """
    if n_folds < 2:
        raise ConfigurationError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if y.shape[0] < n_folds:
        raise ConfigurationError(f"cross-validation with {n_folds} folds needs at least {n_folds} rows, "
                                 f"got {y.shape[0]}")
    rng = np.random.default_rng(seed)
    folds = np.empty(y.shape[0], dtype=np.intp)
    start = 0
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        folds[idx] = (start + np.arange(idx.size)) % n_folds
        start = (start + idx.size) % n_folds
    return folds


# --------------------------------------------------------------------------- kernels


class _Data:
    """Rows of one fit, stored transposed: ``XaT = [X, 1]^T`` of shape (d + 1, n).

    Class-major logits ``Z = theta @ XaT`` of shape (K, n) make every per-row
    reduction over the K classes an elementwise operation on K long rows,
    which NumPy does far faster than a reduction along a short axis.
    """

    __slots__ = ("XaT", "cols", "sw", "y")

    def __init__(self, X: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> None:
        n = X.shape[0]
        self.XaT = np.empty((X.shape[1] + 1, n))
        self.XaT[:-1] = X.T
        self.XaT[-1] = 1.0
        self.y = y
        self.cols = np.arange(n)
        # weights scaled to mean 1, so every sum below is divided by n
        self.sw = None if sw is None else sw * (n / float(sw.sum()))

    @property
    def n(self) -> int:
        return int(self.XaT.shape[1])


def _probabilities(theta: np.ndarray, XaT: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P, Z, log_norm)``: class-major probabilities (K, n), shifted logits, log of the softmax normaliser."""
    Z = theta @ XaT
    Z -= Z.max(axis=0)
    P = np.exp(Z)
    norm = P.sum(axis=0)
    P /= norm
    return P, Z, np.log(norm)


def _loss_grad(theta: np.ndarray, data: _Data, l2: float) -> tuple[float, np.ndarray]:
    """Objective of :mod:`virality.ml.softmax` and its gradient, shape (K, d + 1)."""
    P, Z, log_norm = _probabilities(theta, data.XaT)
    ce = log_norm - Z[data.y, data.cols]
    P[data.y, data.cols] -= 1.0
    if data.sw is not None:
        loss = float(ce @ data.sw)
        P *= data.sw
    else:
        loss = float(ce.sum())
    grad = P @ data.XaT.T
    loss /= data.n
    grad /= data.n
    W = theta[:, :-1]
    loss += 0.5 * l2 * float(np.sum(W * W))
    grad[:, :-1] += l2 * W
    return loss, grad


def _hessian(theta: np.ndarray, data: _Data, l2: float) -> np.ndarray:
    """Hessian of the objective, shape (K(d+1), K(d+1)), on at most ``HESSIAN_ROWS`` strided rows."""
    K, p = theta.shape
    stride = max(1, -(-data.n // HESSIAN_ROWS))
    XaT = data.XaT[:, ::stride]
    sw = None if data.sw is None else data.sw[::stride]
    m = XaT.shape[1]
    m_total = float(m if sw is None else sw.sum())
    P = _probabilities(theta, XaT)[0]                            # (K, m)
    Ps = P if sw is None else P * sw
    # V[(k, j), i] = p_ik xa_ij; H = (blockdiag_k(sum_i s p_ik xa xa^T) - V_s V^T) / sum s
    V = (P[:, None, :] * XaT[None, :, :]).reshape(K * p, m)
    Vs = V if sw is None else (Ps[:, None, :] * XaT[None, :, :]).reshape(K * p, m)
    H = -(Vs @ V.T)
    D = Vs @ XaT.T                                               # (K p, p): blocks sum_i s p_ik xa xa^T
    for k in range(K):
        H[k * p:(k + 1) * p, k * p:(k + 1) * p] += D[k * p:(k + 1) * p]
    H /= m_total
    for k in range(K):
        idx = np.arange(k * p, k * p + p - 1)
        H[idx, idx] += l2
    return 0.5 * (H + H.T)


def _factor(H: np.ndarray, K: int, p: int) -> np.ndarray:
    """Inverse of ``H`` made definite along the intercept-shift null space (see softmax._newton_loop)."""
    shift = np.zeros((K, p))
    shift[:, -1] = 1.0 / math.sqrt(K)
    u = shift.ravel()
    mu = max(float(np.trace(H)) / H.shape[0], 1e-12)
    A = H + mu * np.outer(u, u)
    try:
        return np.linalg.inv(A)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(A)


def _solve(data: _Data, l2: float, theta: np.ndarray, Hinv: np.ndarray | None, tol: float,
           max_iter: int, want_hinv: bool = False) -> tuple[np.ndarray, float, np.ndarray, np.ndarray | None]:
    """Chord/Newton iterations from ``theta``; returns ``(theta, loss, grad, Hinv)``.

    ``Hinv`` (e.g. from a nearby problem) steers the steps while it keeps
    shrinking the gradient by ``CHORD_RATIO``; otherwise it is recomputed here.
    With ``want_hinv`` the returned ``Hinv`` is always a usable inverse Hessian
    near the solution (computed if needed); otherwise it may be None.
    """
    K, p = theta.shape
    loss, grad = _loss_grad(theta, data, l2)
    gmax = float(np.abs(grad).max())
    for _ in range(max_iter):
        if gmax <= tol:
            break
        if Hinv is None:
            Hinv = _factor(_hessian(theta, data, l2), K, p)
        g = grad.ravel()
        step = -(Hinv @ g)
        slope = float(g @ step)
        if not slope < 0:
            step, slope = -g, -float(g @ g)
        t = 1.0
        slack = 64 * np.finfo(float).eps * abs(loss)
        for _ in range(40):
            new_theta = theta + t * step.reshape(K, p)
            new_loss, new_grad = _loss_grad(new_theta, data, l2)
            if new_loss <= loss + 1e-4 * t * slope + slack:
                break
            t *= 0.5
        else:
            break
        new_gmax = float(np.abs(new_grad).max())
        if t < 1.0 or new_gmax > CHORD_RATIO * gmax:
            Hinv = None
        theta, loss, grad, gmax = new_theta, new_loss, new_grad, new_gmax
    if want_hinv and Hinv is None:
        Hinv = _factor(_hessian(theta, data, l2), K, p)
    return theta, loss, grad, Hinv


def _weighted_log_loss(Z: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> float:
    Z = Z - Z.max(axis=1, keepdims=True)
    ce = np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(y.shape[0]), y]
    return float(np.mean(ce) if sw is None else (ce @ sw) / sw.sum())


def _embed(theta: np.ndarray, present: np.ndarray, K_all: int) -> tuple[np.ndarray, np.ndarray]:
    """Full ``(coef, intercept)`` with finite, negligible logits for classes left out."""
    d = theta.shape[1] - 1
    coef = np.zeros((K_all, d))
    intercept = np.zeros(K_all)
    coef[present] = theta[:, :-1]
    intercept[present] = theta[:, -1] - theta[:, -1].mean()
    if present.size < K_all:
        absent = np.setdiff1d(np.arange(K_all), present)
        intercept[absent] = (intercept[present].min() - ABSENT_CLASS_LOGIT_GAP
                             - float(np.abs(theta[:, :-1]).sum(axis=1).max()))
    return coef, intercept


# --------------------------------------------------------------------------- search


def search_l2(X: np.ndarray, y: np.ndarray, *, n_classes: int = 5, grid: tuple[float, ...] = DEFAULT_L2_GRID,
              n_folds: int = DEFAULT_FOLDS, seed: int = 42, sample_weight: np.ndarray | None = None,
              tol: float = CV_TOL, max_iter: int = CV_MAX_ITER) -> L2SearchResult:
    """Stratified k-fold search of ``lambda`` by mean held-out log-loss.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The training split only.
    y : ndarray of shape (n_samples,), class indices ``0..n_classes-1``
    n_classes : int
    grid : tuple of float
        Candidate ``lambda`` values, each > 0 (sorted here).
    n_folds : int
    seed : int
        Seed of the fold assignment (:func:`stratified_folds`).
    sample_weight : ndarray of shape (n_samples,) or None
        Weights of both the fitted objective and the held-out log-loss.
    tol, max_iter : stopping rule of every fit in the search.

    Returns
    -------
    L2SearchResult
    """
    grid = tuple(sorted(float(v) for v in grid))
    if not grid or not all(v > 0 and math.isfinite(v) for v in grid):
        raise ConfigurationError("the l2 grid must be non-empty finite values > 0")
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    folds = stratified_folds(y, n_folds, seed)
    present = np.flatnonzero(np.bincount(y, minlength=n_classes) > 0)
    remap = np.full(n_classes, -1)
    remap[present] = np.arange(present.size)
    K, p = int(present.size), X.shape[1] + 1
    G = len(grid)
    with threadpool_limits(limits=1, user_api="blas"):
        # 1. whole-split path, largest lambda first, each warm-started from the last
        full = _Data(X, remap[y], sw)
        path_theta = [np.empty(0)] * G
        path_hinv: list[np.ndarray] = [np.empty(0)] * G
        theta = np.zeros((K, p))
        hinv = None
        for g in reversed(range(G)):
            if hinv is not None:
                # tangent predictor: d theta / d lambda = -H^-1 [W, 0], from the previous solution
                dgdl = np.zeros((K, p))
                dgdl[:, :-1] = theta[:, :-1]
                theta = theta - (grid[g] - grid[g + 1]) * (hinv @ dgdl.ravel()).reshape(K, p)
            theta, _, _, hinv = _solve(full, grid[g], theta, hinv, tol, max_iter, want_hinv=True)
            assert hinv is not None           # want_hinv guarantees it
            path_theta[g], path_hinv[g] = theta, hinv
        # 2. folds: start at the whole-split optimum and Hessian of the same lambda
        fold_loss = np.empty((n_folds, G))
        fold_theta: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for f in range(n_folds):
            tr, va = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            y_tr = y[tr]
            here = np.flatnonzero(np.bincount(y_tr, minlength=n_classes) > 0)
            sub_remap = np.full(n_classes, -1)
            sub_remap[here] = np.arange(here.size)
            rows = remap[here]               # rows of the whole-split theta kept in this fold
            data = _Data(X[tr], sub_remap[y_tr], None if sw is None else sw[tr])
            del y_tr
            keep = np.concatenate([np.arange(r * p, (r + 1) * p) for r in rows])
            X_va = X[va]
            per_lambda = []
            offset = np.zeros((here.size, p))
            for g in reversed(range(G)):
                # the fold's optimum sits near the whole-split one, shifted by about
                # the same offset as at the previous lambda
                start = path_theta[g][rows] + offset
                hinv = path_hinv[g] if here.size == K else None
                if hinv is not None:
                    hinv = hinv[np.ix_(keep, keep)]
                theta_f, _, _, _ = _solve(data, grid[g], start, hinv, tol, max_iter)
                offset = theta_f - path_theta[g][rows]
                coef_f, b_f = _embed(theta_f, here, n_classes)
                Z = X_va @ coef_f.T + b_f
                fold_loss[f, g] = _weighted_log_loss(Z, y[va], None if sw is None else sw[va])
                per_lambda.append((coef_f, b_f))
            fold_theta.append(per_lambda[::-1])
            del data
        mean, std = fold_loss.mean(axis=0), fold_loss.std(axis=0)
        # lowest mean; on an exact tie prefer the larger lambda (the simpler model)
        best = max(range(G), key=lambda g: (-mean[g], g))
        oof = np.empty((X.shape[0], n_classes))
        for f in range(n_folds):
            va = np.flatnonzero(folds == f)
            coef_f, b_f = fold_theta[f][best]
            oof[va] = X[va] @ coef_f.T + b_f
    coef, intercept = _embed(path_theta[best], present, n_classes)
    return L2SearchResult(grid, mean, std, fold_loss, grid[best], coef, intercept, oof, folds, seed,
                          time.perf_counter() - started)


def out_of_fold_logits(X: np.ndarray, y: np.ndarray, fit_fold, *, n_folds: int = DEFAULT_FOLDS,
                       seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold logits of any fitting routine (used for one fixed ``lambda``, and for ``gd``).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    fit_fold : callable ``(train_index) -> (coef, intercept)``
    n_folds, seed : as :func:`stratified_folds`.

    Returns
    -------
    oof_logits : ndarray of shape (n_samples, n_classes)
    folds : ndarray of shape (n_samples,)
    """
    folds = stratified_folds(y, n_folds, seed)
    oof: np.ndarray | None = None
    for f in range(n_folds):
        tr, va = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        coef, intercept = fit_fold(tr)
        if oof is None:
            oof = np.empty((X.shape[0], coef.shape[0]))
        oof[va] = X[va] @ coef.T + intercept
    assert oof is not None
    return oof, folds
