"""Multinomial logistic regression (softmax): objective, optimizers, prediction.

Pure NumPy: no I/O, no environment. Names follow scikit-learn
(``X, y, coef, intercept, l2_reg_strength, tol, max_iter``).

Objective
---------
For ``n_samples`` rows ``x_i`` with labels ``y_i`` in ``0..K-1`` and sample
weights ``s_i`` (1 unless class-weighted)::

    F(W, b) = sum_i s_i * CE(softmax(W x_i + b), y_i) / sum_i s_i + (l2 / 2) * ||W||_F^2

Biases are not regularised. With ``s_i = 1`` this is scikit-learn's
``LogisticRegression(C=1 / (l2 * n_samples))`` objective.

Optimizers
----------
``newton``  (default) damped Newton on the exact ``K(d+1) x K(d+1)`` Hessian
            (80 x 80 for 5 tiers, 15 features), Armijo backtracking, stopping
            when ``max|grad| <= tol``. Classes absent from ``y`` are left out
            of the optimisation (their optimum intercept is ``-inf``) and get a
            finite, negligible logit afterwards.
``gd``      the original TypeScript algorithm, reproduced exactly: class-major
            init ``(u - 0.5) * 0.01`` with ``u`` from mulberry32(seed), zero
            biases, full-batch gradient descent, learning rate 0.1 decayed by
            0.999 after each epoch, 200 epochs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from virality.errors import ConfigurationError, ConvergenceWarning

Optimizer = Literal["newton", "gd"]
OPTIMIZERS: tuple[str, ...] = ("newton", "gd")

#: Rows per block when streaming over ``X``: bounds temporaries to a few MB
#: whatever ``n_samples`` is, so peak memory stays close to ``X`` itself.
CHUNK_ROWS = 16384

#: Logit gap given to a class that never occurs in the training labels: its
#: probability is ~exp(-30) ~ 1e-13 of the least likely present class.
ABSENT_CLASS_LOGIT_GAP = 30.0


# --------------------------------------------------------------------------- helpers


def softmax(Z: np.ndarray, copy: bool = True) -> np.ndarray:
    """Row-wise softmax, shifted by the row max for stability.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_classes)
    copy : bool
        When False, ``Z`` is overwritten.

    Returns
    -------
    P : ndarray of shape (n_samples, n_classes), rows summing to 1.
    """
    P = np.array(Z, dtype=np.float64, copy=True) if copy else Z
    P -= P.max(axis=1, keepdims=True)
    np.exp(P, out=P)
    P /= P.sum(axis=1, keepdims=True)
    return P


def predict_proba(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Class probabilities.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)

    Returns
    -------
    P : ndarray of shape (n_samples, n_classes)
    """
    Z = X @ coef.T
    Z += intercept
    return softmax(Z, copy=False)


def predict_labels(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Most likely class of each row, in blocks of rows (no (n_samples, n_classes) temporary).

    Returns
    -------
    labels : ndarray of shape (n_samples,), integers in ``0..n_classes-1``
    """
    from threadpoolctl import threadpool_limits  # as in fit: thin products, one BLAS thread

    n = X.shape[0]
    out = np.empty(n, dtype=np.intp)
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n, CHUNK_ROWS):
            Z = X[start:start + CHUNK_ROWS] @ coef.T
            Z += intercept
            out[start:start + CHUNK_ROWS] = Z.argmax(axis=1)
    return out


def mulberry32(seed: int) -> Iterator[float]:
    """The mulberry32 PRNG of the original TypeScript code, as an iterator of floats in [0, 1)."""
    a = seed & 0xFFFFFFFF
    while True:
        a = (a + 0x6D2B79F5) & 0xFFFFFFFF
        t = ((a ^ (a >> 15)) * (1 | a)) & 0xFFFFFFFF
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & 0xFFFFFFFF)) & 0xFFFFFFFF) ^ t
        yield ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0


def class_weights(y: np.ndarray, n_classes: int, mode: str | None, cap_ratio: float = 3.0) -> np.ndarray:
    """Per-class loss weights.

    ``None``/``"none"`` gives ones; ``"balanced"`` gives inverse class
    frequency ``n / (k * n_c)`` over the ``k`` present classes, capped at
    ``cap_ratio`` times the smallest weight (absent classes get 0).

    Returns
    -------
    weights : ndarray of shape (n_classes,)
    """
    if mode in (None, "none"):
        return np.ones(n_classes)
    if mode != "balanced":
        raise ConfigurationError(f"class_weight must be 'none' or 'balanced', got {mode!r}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = y.shape[0] / (present.sum() * counts[present])
    weights[present] = np.minimum(weights[present], cap_ratio * np.min(weights[present]))
    return weights


# --------------------------------------------------------------------------- objective


@dataclass(frozen=True, slots=True)
class _Problem:
    """Training data bound to the objective's constants."""

    X: np.ndarray            # (n_samples, n_features) float64, C-contiguous
    y: np.ndarray            # (n_samples,) int, in 0..n_classes-1
    sample_weight: np.ndarray | None  # (n_samples,) or None for all ones
    sw_sum: float
    l2_reg_strength: float
    n_classes: int

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        n = self.X.shape[0]
        for start in range(0, n, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n)
            sw = None if self.sample_weight is None else self.sample_weight[start:stop]
            yield self.X[start:stop], self.y[start:stop], sw


def _make_problem(X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                  l2_reg_strength: float, n_classes: int) -> _Problem:
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.asarray(y)
    if y.dtype.kind not in "iu":            # integer labels are used as they are (int8 from the readers)
        y = y.astype(np.intp)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n_samples, n_features) and y (n_samples,), got {X.shape} and {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    if sample_weight is not None:
        sample_weight = np.ascontiguousarray(sample_weight, dtype=np.float64)
    sw_sum = float(X.shape[0] if sample_weight is None else sample_weight.sum())
    return _Problem(X, y, sample_weight, sw_sum, float(l2_reg_strength), n_classes)


def _exact_hessian(theta: np.ndarray, prob: _Problem) -> np.ndarray:
    """The Hessian of :func:`_loss_grad_hess` (always computed when asked for)."""
    H = _loss_grad_hess(theta, prob, hessian=True)[2]
    assert H is not None
    return H


def _loss_grad_hess(theta: np.ndarray, prob: _Problem, hessian: bool
                    ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Objective, gradient and (optionally) Hessian at ``theta``, streaming over ``X``.

    Parameters
    ----------
    theta : ndarray of shape (n_classes, n_features + 1)
        Row ``k`` is ``[coef[k], intercept[k]]``.

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_classes, n_features + 1)
    hess : ndarray of shape (n_classes * (n_features + 1),) * 2, or None

    Notes
    -----
    With ``xa = [x, 1]`` and ``v_i = p_i (x) xa_i`` (Kronecker product, length
    ``K(d+1)``), the Hessian of the data term is
    ``sum_i s_i (blockdiag_k(p_ik xa_i xa_i^T) - v_i v_i^T) / sum_i s_i``:
    one ``(m, K(d+1))`` buffer and two GEMMs per block of rows.
    """
    K, p = theta.shape
    W, b = theta[:, :-1], theta[:, -1]
    loss = 0.0
    grad = np.zeros((K, p))
    if hessian:
        outer = np.zeros((K * p, K * p))
        diag_blocks = np.zeros((p, K * p))
        V = np.empty((min(CHUNK_ROWS, prob.X.shape[0]), K, p))
    for Xc, yc, swc in prob.chunks():
        m = Xc.shape[0]
        rows = np.arange(m)
        Z = Xc @ W.T                                      # (m, K)
        Z += b
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        norm = P.sum(axis=1, keepdims=True)
        P /= norm
        ce = np.log(norm[:, 0]) - Z[rows, yc]             # logsumexp(z) - z_y
        loss += float(ce @ swc) if swc is not None else float(ce.sum())
        R = P.copy()
        R[rows, yc] -= 1.0
        if swc is not None:
            R *= swc[:, None]
        grad[:, :-1] += R.T @ Xc
        grad[:, -1] += R.sum(axis=0)
        if hessian:
            Vc = V[:m]
            np.multiply(P[:, :, None], Xc[:, None, :], out=Vc[:, :, :-1])
            Vc[:, :, -1] = P
            V2 = Vc.reshape(m, K * p)
            Vs = V2 if swc is None else V2 * swc[:, None]
            outer += Vs.T @ V2
            # blockdiag part: rows of Xa^T V2 = [Xc^T V2; 1^T V2]
            diag_blocks[:-1] += Xc.T @ Vs
            diag_blocks[-1] += Vs.sum(axis=0)
    loss /= prob.sw_sum
    grad /= prob.sw_sum
    loss += 0.5 * prob.l2_reg_strength * float(np.sum(W * W))
    grad[:, :-1] += prob.l2_reg_strength * W
    if not hessian:
        return loss, grad, None
    H = -outer
    reg = np.zeros(p)
    reg[:-1] = prob.l2_reg_strength * prob.sw_sum
    for k in range(K):
        H[k * p:(k + 1) * p, k * p:(k + 1) * p] += diag_blocks[:, k * p:(k + 1) * p] + np.diag(reg)
    H /= prob.sw_sum
    # symmetrise away rounding so the solver sees an exactly symmetric matrix
    H = 0.5 * (H + H.T)
    return loss, grad, H


#: Rows per block of the class-major gradient pass: a (n_classes, GRAD_CHUNK_ROWS)
#: float64 buffer (320 kB for 5 classes) stays in cache across its four passes.
GRAD_CHUNK_ROWS = 8192


def _loss_grad(theta: np.ndarray, prob: _Problem) -> tuple[float, np.ndarray]:
    """Objective and gradient at ``theta``, class-major: the work array is ``(K, m)``.

    Same values as ``_loss_grad_hess(theta, prob, hessian=False)`` up to rounding,
    at a fraction of the cost: with logits stored class by class, the row max,
    ``exp``, the row sums and the residual are contiguous passes over ``m``
    values per class instead of reductions over 5-element rows.

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_classes, n_features + 1)
    """
    K, p = theta.shape
    W, b = theta[:, :-1], theta[:, -1:]
    n = prob.X.shape[0]
    rows = min(GRAD_CHUNK_ROWS, n)
    ZT = np.empty((K, rows))
    zmax = np.empty(rows)
    norm = np.empty(rows)
    cols = np.arange(rows)
    loss = 0.0
    grad = np.zeros((K, p))
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        Xc, yc = prob.X[start:stop], prob.y[start:stop]
        Z, zm, s, c = ZT[:, :m], zmax[:m], norm[:m], cols[:m]
        np.matmul(W, Xc.T, out=Z)                       # (K, m)
        Z += b
        np.max(Z, axis=0, out=zm)
        Z -= zm
        zy = Z[yc, c]                                    # z_y - max, gathered before exp
        np.exp(Z, out=Z)
        np.sum(Z, axis=0, out=s)
        ce = np.log(s)
        ce -= zy                                         # logsumexp(z) - z_y
        Z /= s                                           # probabilities
        Z[yc, c] -= 1.0                                  # residual P - onehot(y)
        if prob.sample_weight is None:
            loss += float(ce.sum())
        else:
            swc = prob.sample_weight[start:stop]
            loss += float(ce @ swc)
            Z *= swc
        grad[:, :-1] += Z @ Xc
        grad[:, -1] += Z.sum(axis=1)
    loss /= prob.sw_sum
    grad /= prob.sw_sum
    loss += 0.5 * prob.l2_reg_strength * float(np.sum(W * W))
    grad[:, :-1] += prob.l2_reg_strength * W
    return loss, grad


def loss_gradient(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, y: np.ndarray,
                  l2_reg_strength: float = 1e-3, sample_weight: np.ndarray | None = None
                  ) -> tuple[float, np.ndarray, np.ndarray]:
    """Objective value and gradient (see module docstring).

    Parameters
    ----------
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,), integers in ``0..n_classes-1``
    l2_reg_strength : float
    sample_weight : ndarray of shape (n_samples,) or None

    Returns
    -------
    loss : float
    grad_coef : ndarray of shape (n_classes, n_features)
    grad_intercept : ndarray of shape (n_classes,)
    """
    prob = _make_problem(X, y, sample_weight, l2_reg_strength, coef.shape[0])
    theta = np.column_stack([coef, intercept])
    loss, grad = _loss_grad(theta, prob)
    return loss, grad[:, :-1], grad[:, -1]


def objective(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, y: np.ndarray,
              l2_reg_strength: float = 1e-3, sample_weight: np.ndarray | None = None) -> float:
    """Objective value only (see :func:`loss_gradient`)."""
    return loss_gradient(coef, intercept, X, y, l2_reg_strength, sample_weight)[0]


def hessian(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, y: np.ndarray,
            l2_reg_strength: float = 1e-3, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Exact Hessian w.r.t. ``[coef[k], intercept[k]]`` stacked class by class.

    Returns
    -------
    H : ndarray of shape (n_classes * (n_features + 1),) * 2
    """
    prob = _make_problem(X, y, sample_weight, l2_reg_strength, coef.shape[0])
    theta = np.column_stack([coef, intercept])
    return _exact_hessian(theta, prob)


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True, slots=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)
    n_iter : int
        Newton iterations or GD epochs.
    objective : float
        Final objective value (over the classes that were optimised).
    grad_norm : float
        Max-abs gradient at the returned parameters.
    converged : bool
        Whether ``grad_norm <= tol`` at the returned parameters (GD reports it too,
        and with the original 200 epochs it is normally False).
    optimizer : str
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    objective: float
    grad_norm: float
    converged: bool
    optimizer: str


ProgressCallback = Callable[[int, float, float], None]


def fit(X: np.ndarray, y: np.ndarray, *, n_classes: int = 5, optimizer: str = "newton",
        l2_reg_strength: float = 1e-3, sample_weight: np.ndarray | None = None,
        tol: float = 1e-8, max_iter: int = 100, seed: int = 42, epochs: int = 200,
        learning_rate: float = 0.1, decay: float = 0.999,
        callback: ProgressCallback | None = None, coef_init: np.ndarray | None = None,
        intercept_init: np.ndarray | None = None) -> FitResult:
    """Fit the softmax classifier.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Class indices ``0..n_classes-1``.
    n_classes : int
    optimizer : {"newton", "gd"}
    l2_reg_strength : float
        ``lambda`` of the objective, >= 0.
    sample_weight : ndarray of shape (n_samples,) or None
    tol : float
        Newton stops when ``max|grad| <= tol``.
    max_iter : int
        Newton iteration cap; reaching it emits :class:`ConvergenceWarning`.
    seed, epochs, learning_rate, decay : GD settings (the original's defaults).
    callback : callable ``(iteration, objective, grad_norm)``, optional
        Progress hook, called once per iteration/epoch.
    coef_init : ndarray of shape (n_classes, n_features), optional
    intercept_init : ndarray of shape (n_classes,), optional
        Newton warm start (e.g. the optimum at a nearby ``l2``); zeros when not
        given. The optimum does not depend on it, only the iteration count does.
        Not allowed with ``gd``, whose start is part of the original algorithm.

    Returns
    -------
    FitResult
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigurationError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if not (l2_reg_strength >= 0 and math.isfinite(l2_reg_strength)):
        raise ConfigurationError(f"l2 must be a finite number >= 0, got {l2_reg_strength!r}")
    if not tol > 0:
        raise ConfigurationError(f"tol must be > 0, got {tol!r}")
    prob = _make_problem(X, y, sample_weight, l2_reg_strength, n_classes)
    if prob.X.shape[0] == 0:
        raise ValueError("cannot fit on zero samples")
    theta0 = None
    if coef_init is not None or intercept_init is not None:
        if optimizer == "gd":
            raise ConfigurationError("gd starts from the original's seeded weights: no warm start")
        d = prob.X.shape[1]
        coef0 = np.zeros((n_classes, d)) if coef_init is None else np.asarray(coef_init, dtype=np.float64)
        b0 = np.zeros(n_classes) if intercept_init is None else np.asarray(intercept_init, dtype=np.float64)
        if coef0.shape != (n_classes, d) or b0.shape != (n_classes,):
            raise ValueError(f"warm start must be ({n_classes}, {d}) and ({n_classes},), "
                             f"got {coef0.shape} and {b0.shape}")
        if not (np.all(np.isfinite(coef0)) and np.all(np.isfinite(b0))):
            raise ValueError("warm start must be finite")
        theta0 = np.column_stack([coef0, b0])
    # The products here are thin (80 columns, blocks of 16k rows): BLAS threads buy
    # nothing and, on busy cores, cost several times the work (measured in
    # benchmarks/bench_train.py). One thread also makes results independent of core count.
    from threadpoolctl import threadpool_limits  # only training needs it: keep it off the predict cold start

    with threadpool_limits(limits=1, user_api="blas"):
        if optimizer == "gd":
            return _fit_gd(prob, seed, epochs, learning_rate, decay, tol, callback)
        return _fit_newton(prob, tol, max_iter, callback, theta0)


def _fit_gd(prob: _Problem, seed: int, epochs: int, learning_rate: float, decay: float, tol: float,
            callback: ProgressCallback | None) -> FitResult:
    K, d = prob.n_classes, prob.X.shape[1]
    rng = mulberry32(seed)
    theta = np.zeros((K, d + 1))
    for k in range(K):          # class-major, exactly as the original
        for j in range(d):
            theta[k, j] = (next(rng) - 0.5) * 0.01
    lr = learning_rate
    loss = grad_norm = math.nan
    for epoch in range(epochs):
        loss, grad = _loss_grad(theta, prob)
        theta -= lr * grad
        lr *= decay
        if callback is not None:
            callback(epoch + 1, loss, float(np.abs(grad).max()))
    loss, grad = _loss_grad(theta, prob)
    grad_norm = float(np.abs(grad).max())
    return FitResult(theta[:, :-1].copy(), theta[:, -1].copy(), epochs, loss, grad_norm,
                     grad_norm <= tol, "gd")


#: Above this many rows, Newton first runs on a strided subsample of
#: ``SUBSAMPLE_ROWS`` rows and then finishes on the full data: the warm start
#: lands within O(1/sqrt(SUBSAMPLE_ROWS)) of the optimum, so the full data
#: needs only two or three (quadratically convergent) iterations.
SUBSAMPLE_MIN_ROWS = 250_000
SUBSAMPLE_ROWS = 65_536

#: A Newton step whose gradient shrinks by at least this factor keeps its Hessian
#: for the next step; otherwise the Hessian is recomputed.
HESSIAN_REUSE_RATIO = 0.1

#: The Hessian is computed on a strided subsample of at most this many rows (all
#: rows below it). The gradient and the objective always use every row, so the
#: fixed point -- the optimum -- is exact; only the step is approximate, which
#: costs a few cheap iterations of fast linear convergence (contraction about
#: ``1/sqrt(HESSIAN_ROWS)``) against a full Hessian pass of 80 x 80 products per row.
HESSIAN_ROWS = 20_000


def _hessian_problem(prob: _Problem) -> _Problem:
    """The rows the Hessian is computed on: every ``ceil(n / HESSIAN_ROWS)``-th row.

    Deterministic (a stride, not a random draw). Falls back to all rows when the
    subsample misses a class, whose block would then be singular.
    """
    n = prob.X.shape[0]
    if n <= HESSIAN_ROWS:
        return prob
    stride = -(-n // HESSIAN_ROWS)
    y = prob.y[::stride].copy()
    if np.unique(y).size < prob.n_classes:
        return prob
    sw = None if prob.sample_weight is None else prob.sample_weight[::stride].copy()
    return _Problem(np.ascontiguousarray(prob.X[::stride]), y, sw,
                    float(y.shape[0] if sw is None else sw.sum()), prob.l2_reg_strength, prob.n_classes)


def _newton_loop(prob: _Problem, theta: np.ndarray, tol: float, max_iter: int,
                 callback: ProgressCallback | None, it0: int = 0
                 ) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Damped Newton from ``theta``; returns ``(theta, loss, grad, n_iter)``."""
    K, p = theta.shape
    # The objective is invariant to adding a constant to every intercept; that
    # direction u spans the Hessian's null space. Adding mu * u u^T makes the
    # system definite without changing the step (the gradient is orthogonal to u).
    u_kp = np.zeros((K, p))
    u_kp[:, -1] = 1.0 / math.sqrt(K)
    u = u_kp.ravel()
    loss, grad = _loss_grad(theta, prob)
    hess_prob = _hessian_problem(prob)
    n_iter = 0
    H: np.ndarray | None = None
    while float(np.abs(grad).max()) > tol and n_iter < max_iter:
        n_iter += 1
        g = grad.ravel()
        if H is None:
            H = _exact_hessian(theta, hess_prob)
            mu = max(float(np.trace(H)) / H.shape[0], 1e-12)
            H_solve = H + mu * np.outer(u, u)
        try:
            step = -np.linalg.solve(H_solve, g)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, g, rcond=None)[0]
        slope = float(g @ step)
        if not slope < 0:       # not a descent direction (numerically singular H): use -g
            step, slope = -g, -float(g @ g)
        t = 1.0
        # Armijo backtracking; the slack absorbs rounding once F stops changing in float64.
        slack = 64 * np.finfo(float).eps * abs(loss)
        for _ in range(60):
            new_theta = theta + t * step.reshape(K, p)
            new_loss, new_grad = _loss_grad(new_theta, prob)
            if new_loss <= loss + 1e-4 * t * slope + slack:
                break
            t *= 0.5
        else:
            break               # no decrease representable in float64: stop and report
        # Keep the Hessian (a chord step) only while a full step shrinks the gradient
        # tenfold or more: a pass without the Hessian costs a fraction of one with it.
        shrink = float(np.abs(new_grad).max()) / float(np.abs(grad).max())
        if t < 1.0 or shrink > HESSIAN_REUSE_RATIO:
            H = None
        if n_iter > 1 and shrink > 0.5 and hess_prob is not prob:
            # A step that barely helps (past the first, which starts far away): the
            # subsample Hessian is too poor a model here (tiny subsample, extreme weights).
            # Exact Newton from now on.
            hess_prob = prob
        theta, loss, grad = new_theta, new_loss, new_grad
        if callback is not None:
            callback(it0 + n_iter, loss, float(np.abs(grad).max()))
    return theta, loss, grad, n_iter


def _fit_newton(prob: _Problem, tol: float, max_iter: int, callback: ProgressCallback | None,
                theta0: np.ndarray | None = None) -> FitResult:
    K_all, d = prob.n_classes, prob.X.shape[1]
    present = np.flatnonzero(np.bincount(prob.y, minlength=K_all) > 0)
    if present.size < K_all:
        # Optimise over the present classes only: an absent class's optimum is b = -inf.
        remap = np.full(K_all, -1)
        remap[present] = np.arange(present.size)
        prob = _Problem(prob.X, remap[prob.y], prob.sample_weight, prob.sw_sum,
                        prob.l2_reg_strength, int(present.size))
    theta = np.zeros((prob.n_classes, d + 1)) if theta0 is None else theta0[present].copy()
    n_iter = 0
    n_samples = prob.X.shape[0]
    if n_samples > SUBSAMPLE_MIN_ROWS and theta0 is None:
        stride = n_samples // SUBSAMPLE_ROWS
        sw = None if prob.sample_weight is None else prob.sample_weight[::stride].copy()
        sub = _Problem(prob.X[::stride].copy(), prob.y[::stride].copy(), sw,
                       float(sw.sum()) if sw is not None else float(prob.X[::stride].shape[0]),
                       prob.l2_reg_strength, prob.n_classes)
        if np.unique(sub.y).size == prob.n_classes:
            theta, _, _, n_iter = _newton_loop(sub, theta, max(tol, 1e-6), max_iter, None)
    theta, loss, grad, more = _newton_loop(prob, theta, tol, max_iter, callback, n_iter)
    n_iter += more
    grad_norm = float(np.abs(grad).max())
    converged = grad_norm <= tol
    if not converged:
        warnings.warn(f"newton stopped after {n_iter} iterations with max|grad| = {grad_norm:.3g} > tol = {tol:g}",
                      ConvergenceWarning, stacklevel=3)
    # Canonical form: mean intercept 0 (the objective does not see the shift).
    theta[:, -1] -= theta[:, -1].mean()
    coef = np.zeros((K_all, d))
    intercept = np.zeros(K_all)
    coef[present] = theta[:, :-1]
    intercept[present] = theta[:, -1]
    if present.size < K_all:
        absent = np.setdiff1d(np.arange(K_all), present)
        # finite stand-in for -inf: below every present logit for any x in [0, 1]^d
        intercept[absent] = (theta[:, -1].min() - ABSENT_CLASS_LOGIT_GAP
                             - float(np.abs(theta[:, :-1]).sum(axis=1).max()))
    return FitResult(coef, intercept, n_iter, loss, grad_norm, converged, "newton")
