"""Solvers of the softmax objective: damped Newton (the default) and the original gradient descent.

Both minimise :class:`virality.ml.softmax.SoftmaxObjective` and nothing else: a
solver only asks the objective for ``F``, its gradient and (Newton) its Hessian.
Each solver carries its own options, so a Newton option cannot be given to GD by
mistake; :func:`make_solver` is the one place an optimizer name is resolved.

Optimizers
----------
``newton``  (default) damped Newton on the ``K(d+1) x K(d+1)`` Hessian (80 x 80
            for 5 tiers, 15 features), Armijo backtracking, stopping when
            ``max|grad| <= tol``. Classes absent from ``y`` are left out of the
            optimisation (their optimum intercept is ``-inf``) and get a finite,
            negligible logit afterwards.
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
from typing import Any

import numpy as np

from virality.errors import ConfigurationError, ConvergenceWarning
from virality.ml.softmax import ABSENT_CLASS_LOGIT_GAP, OPTIMIZERS, SoftmaxObjective, TrainingData

#: ``callback(iteration, objective, grad_norm)``, once per iteration or epoch.
ProgressCallback = Callable[[int, float, float], None]


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


def mulberry32(seed: int) -> Iterator[float]:
    """The mulberry32 PRNG of the original TypeScript code, as an iterator of floats in [0, 1)."""
    a = seed & 0xFFFFFFFF
    while True:
        a = (a + 0x6D2B79F5) & 0xFFFFFFFF
        t = ((a ^ (a >> 15)) * (1 | a)) & 0xFFFFFFFF
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & 0xFFFFFFFF)) & 0xFFFFFFFF) ^ t
        yield ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0



# --------------------------------------------------------------------------- gradient descent


@dataclass(frozen=True, slots=True)
class GradientDescent:
    """The original's full-batch gradient descent (``optimizer="gd"``).

    Parameters
    ----------
    seed, epochs, learning_rate, decay
        The original's defaults: mulberry32(42) init, 200 epochs, 0.1 decayed by 0.999 per epoch.
    tol : float
        Only reported (``converged``); GD always runs its epochs.
    """

    seed: int = 42
    epochs: int = 200
    learning_rate: float = 0.1
    decay: float = 0.999
    tol: float = 1e-8
    name = "gd"

    def __post_init__(self) -> None:
        _check_tol(self.tol)

    def solve(self, objective: SoftmaxObjective, data: TrainingData, theta0: np.ndarray | None = None,
              callback: ProgressCallback | None = None) -> FitResult:
        if theta0 is not None:
            raise ConfigurationError("gd starts from the original's seeded weights: no warm start")
        K, d = objective.n_classes, data.X.shape[1]
        rng = mulberry32(self.seed)
        theta = np.zeros((K, d + 1))
        for k in range(K):          # class-major, exactly as the original
            for j in range(d):
                theta[k, j] = (next(rng) - 0.5) * 0.01
        lr = self.learning_rate
        for epoch in range(self.epochs):
            loss, grad = objective.loss_gradient(theta, data)
            theta -= lr * grad
            lr *= self.decay
            if callback is not None:
                callback(epoch + 1, loss, float(np.abs(grad).max()))
        loss, grad = objective.loss_gradient(theta, data)
        grad_norm = float(np.abs(grad).max())
        return FitResult(theta[:, :-1].copy(), theta[:, -1].copy(), self.epochs, loss, grad_norm,
                         grad_norm <= self.tol, self.name)


# --------------------------------------------------------------------------- Newton

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


def _hessian_rows(data: TrainingData, n_classes: int) -> TrainingData:
    """The rows the Hessian is computed on: every ``ceil(n / HESSIAN_ROWS)``-th row.

    Deterministic (a stride, not a random draw). Falls back to all rows when the
    subsample misses a class, whose block would then be singular.
    """
    n = data.n_samples
    if n <= HESSIAN_ROWS:
        return data
    sub = data.every(-(-n // HESSIAN_ROWS))
    return data if np.unique(sub.y).size < n_classes else sub


@dataclass(frozen=True, slots=True)
class NewtonSolver:
    """Damped Newton with Armijo backtracking (``optimizer="newton"``), built from steps.

    Parameters
    ----------
    tol : float
        Stop when ``max|grad| <= tol``.
    max_iter : int
        Iteration cap; reaching it emits :class:`ConvergenceWarning`.
    """

    tol: float = 1e-8
    max_iter: int = 100
    name = "newton"

    def __post_init__(self) -> None:
        _check_tol(self.tol)

    def solve(self, objective: SoftmaxObjective, data: TrainingData, theta0: np.ndarray | None = None,
              callback: ProgressCallback | None = None) -> FitResult:
        """Minimise ``objective`` on ``data`` from ``theta0`` (zeros when None), shape ``(K, d + 1)``."""
        K_all, d = objective.n_classes, data.X.shape[1]
        present = np.flatnonzero(np.bincount(data.y, minlength=K_all) > 0)
        if present.size < K_all:
            # Optimise over the present classes only: an absent class's optimum is b = -inf.
            remap = np.full(K_all, -1)
            remap[present] = np.arange(present.size)
            data = data.relabelled(remap[data.y])
            objective = SoftmaxObjective(int(present.size), objective.l2_reg_strength)
        theta = np.zeros((objective.n_classes, d + 1)) if theta0 is None else theta0[present].copy()
        n_iter = 0
        if data.n_samples > SUBSAMPLE_MIN_ROWS and theta0 is None:
            sub = data.every(data.n_samples // SUBSAMPLE_ROWS)
            if np.unique(sub.y).size == objective.n_classes:
                start = NewtonSolver(max(self.tol, 1e-6), self.max_iter)
                theta, _, _, n_iter = start.iterate(objective, sub, theta, None)
        theta, loss, grad, more = self.iterate(objective, data, theta, callback, n_iter)
        n_iter += more
        grad_norm = float(np.abs(grad).max())
        converged = grad_norm <= self.tol
        if not converged:
            warnings.warn(f"newton stopped after {n_iter} iterations with max|grad| = {grad_norm:.3g} > "
                          f"tol = {self.tol:g}", ConvergenceWarning, stacklevel=3)
        coef, intercept = _expand(theta, present, K_all)
        return FitResult(coef, intercept, n_iter, loss, grad_norm, converged, self.name)

    def iterate(self, objective: SoftmaxObjective, data: TrainingData, theta: np.ndarray,
                callback: ProgressCallback | None, it0: int = 0) -> tuple[np.ndarray, float, np.ndarray, int]:
        """Newton steps from ``theta`` until ``max|grad| <= tol``; returns ``(theta, loss, grad, n_iter)``."""
        K, p = theta.shape
        # The objective is invariant to adding a constant to every intercept; that
        # direction u spans the Hessian's null space. Adding mu * u u^T makes the
        # system definite without changing the step (the gradient is orthogonal to u).
        u_kp = np.zeros((K, p))
        u_kp[:, -1] = 1.0 / math.sqrt(K)
        u = u_kp.ravel()
        loss, grad = objective.loss_gradient(theta, data)
        hess_data = _hessian_rows(data, objective.n_classes)
        n_iter = 0
        H: np.ndarray | None = None
        while float(np.abs(grad).max()) > self.tol and n_iter < self.max_iter:
            n_iter += 1
            if H is None:
                H = objective.hessian(theta, hess_data)
                mu = max(float(np.trace(H)) / H.shape[0], 1e-12)
                H_solve = H + mu * np.outer(u, u)
            step, slope = _direction(H, H_solve, grad.ravel())
            found = _line_search(objective, data, theta, step.reshape(K, p), loss, slope)
            if found is None:
                break               # no decrease representable in float64: stop and report
            t, new_theta, new_loss, new_grad = found
            # Keep the Hessian (a chord step) only while a full step shrinks the gradient
            # tenfold or more: a pass without the Hessian costs a fraction of one with it.
            shrink = float(np.abs(new_grad).max()) / float(np.abs(grad).max())
            if t < 1.0 or shrink > HESSIAN_REUSE_RATIO:
                H = None
            if n_iter > 1 and shrink > 0.5 and hess_data is not data:
                # A step that barely helps (past the first, which starts far away): the
                # subsample Hessian is too poor a model here (tiny subsample, extreme weights).
                # Exact Newton from now on.
                hess_data = data
            theta, loss, grad = new_theta, new_loss, new_grad
            if callback is not None:
                callback(it0 + n_iter, loss, float(np.abs(grad).max()))
        return theta, loss, grad, n_iter


def _direction(H: np.ndarray, H_solve: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, float]:
    """The Newton step for gradient ``g`` and its slope ``g . step`` (< 0), or steepest descent."""
    try:
        step = -np.linalg.solve(H_solve, g)
    except np.linalg.LinAlgError:
        step = -np.linalg.lstsq(H, g, rcond=None)[0]
    slope = float(g @ step)
    if not slope < 0:       # not a descent direction (numerically singular H): use -g
        step, slope = -g, -float(g @ g)
    return step, slope


def _line_search(objective: SoftmaxObjective, data: TrainingData, theta: np.ndarray, step: np.ndarray,
                 loss: float, slope: float) -> tuple[float, np.ndarray, float, np.ndarray] | None:
    """Armijo backtracking from ``t = 1``; ``(t, theta, loss, grad)`` or None when nothing decreases."""
    t = 1.0
    # The slack absorbs rounding once F stops changing in float64.
    slack = 64 * np.finfo(float).eps * abs(loss)
    for _ in range(60):
        new_theta = theta + t * step
        new_loss, new_grad = objective.loss_gradient(new_theta, data)
        if new_loss <= loss + 1e-4 * t * slope + slack:
            return t, new_theta, new_loss, new_grad
        t *= 0.5
    return None


def _expand(theta: np.ndarray, present: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical ``(coef, intercept)`` over all classes: mean intercept 0, absent classes far below."""
    theta = theta.copy()
    theta[:, -1] -= theta[:, -1].mean()         # the objective does not see the shift
    d = theta.shape[1] - 1
    coef = np.zeros((n_classes, d))
    intercept = np.zeros(n_classes)
    coef[present] = theta[:, :-1]
    intercept[present] = theta[:, -1]
    if present.size < n_classes:
        absent = np.setdiff1d(np.arange(n_classes), present)
        # finite stand-in for -inf: below every present logit for any x in [0, 1]^d
        intercept[absent] = (theta[:, -1].min() - ABSENT_CLASS_LOGIT_GAP
                             - float(np.abs(theta[:, :-1]).sum(axis=1).max()))
    return coef, intercept


# --------------------------------------------------------------------------- entry points

Solver = NewtonSolver | GradientDescent
SOLVERS: dict[str, type[NewtonSolver] | type[GradientDescent]] = {"newton": NewtonSolver, "gd": GradientDescent}
assert tuple(SOLVERS) == OPTIMIZERS


def _check_tol(tol: float) -> None:
    if not tol > 0:
        raise ConfigurationError(f"tol must be > 0, got {tol!r}")


def make_solver(optimizer: str = "newton", **options: Any) -> Solver:
    """The solver called ``optimizer`` with its options (``tol``, ``max_iter`` / ``seed``, ``epochs``, ...).

    Raises
    ------
    ConfigurationError
        An unknown optimizer, or an option that solver does not have.
    """
    cls = SOLVERS.get(optimizer)
    if cls is None:
        raise ConfigurationError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigurationError(f"{optimizer}: {exc}") from None


def fit(X: np.ndarray, y: np.ndarray, *, n_classes: int = 5, l2_reg_strength: float = 1e-3,
        sample_weight: np.ndarray | None = None, solver: Solver | None = None,
        callback: ProgressCallback | None = None, coef_init: np.ndarray | None = None,
        intercept_init: np.ndarray | None = None, optimizer: str | None = None, **options: Any) -> FitResult:
    """Fit the softmax classifier.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Class indices ``0..n_classes-1``.
    n_classes : int
    l2_reg_strength : float
        ``lambda`` of the objective, >= 0.
    sample_weight : ndarray of shape (n_samples,) or None
    solver : NewtonSolver or GradientDescent, optional
        Default ``NewtonSolver()``. Shorthand: ``optimizer="gd", epochs=50`` is
        ``solver=make_solver("gd", epochs=50)``.
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
    if solver is None:
        solver = make_solver(optimizer or "newton", **options)
    elif optimizer is not None or options:
        raise ConfigurationError("give either a solver or an optimizer name with its options, not both")
    if not (l2_reg_strength >= 0 and math.isfinite(l2_reg_strength)):
        raise ConfigurationError(f"l2 must be a finite number >= 0, got {l2_reg_strength!r}")
    data = TrainingData.of(X, y, sample_weight, n_classes=n_classes)
    if data.n_samples == 0:
        raise ValueError("cannot fit on zero samples")
    theta0 = _warm_start(coef_init, intercept_init, n_classes, data.X.shape[1])
    # The products here are thin (80 columns, blocks of 16k rows): BLAS threads buy
    # nothing and, on busy cores, cost several times the work (docs/benchmarks.md).
    # One thread also makes results independent of core count.
    from threadpoolctl import threadpool_limits  # only training needs it: keep it off the predict cold start

    with threadpool_limits(limits=1, user_api="blas"):
        return solver.solve(SoftmaxObjective(n_classes, float(l2_reg_strength)), data, theta0, callback)


def _warm_start(coef_init: np.ndarray | None, intercept_init: np.ndarray | None, n_classes: int,
                d: int) -> np.ndarray | None:
    if coef_init is None and intercept_init is None:
        return None
    coef0 = np.zeros((n_classes, d)) if coef_init is None else np.asarray(coef_init, dtype=np.float64)
    b0 = np.zeros(n_classes) if intercept_init is None else np.asarray(intercept_init, dtype=np.float64)
    if coef0.shape != (n_classes, d) or b0.shape != (n_classes,):
        raise ValueError(f"warm start must be ({n_classes}, {d}) and ({n_classes},), "
                         f"got {coef0.shape} and {b0.shape}")
    if not (np.all(np.isfinite(coef0)) and np.all(np.isfinite(b0))):
        raise ValueError("warm start must be finite")
    return np.column_stack([coef0, b0])
