"""Multinomial logistic regression (softmax): prediction and the training objective.

Pure NumPy: no I/O, no environment. Names follow scikit-learn
(``X, y, coef, intercept, l2_reg_strength, tol, max_iter``). The solvers that
minimise the objective are in :mod:`virality.ml.solvers`.

Objective
---------
For ``n_samples`` rows ``x_i`` with labels ``y_i`` in ``0..K-1`` and sample
weights ``s_i`` (1 unless class-weighted)::

    F(W, b) = sum_i s_i * CE(softmax(W x_i + b), y_i) / sum_i s_i + (l2 / 2) * ||W||_F^2

Biases are not regularised. With ``s_i = 1`` this is scikit-learn's
``LogisticRegression(C=1 / (l2 * n_samples))`` objective.

:class:`SoftmaxObjective` computes it with one method per quantity. The data
term of any chunk of rows comes back as *sums* (:class:`ChunkSums`), which add
up across chunks; :meth:`SoftmaxObjective.finish` divides by the total weight
and adds the penalty. The single-node solvers add chunks in a loop, the Spark
trainer adds them with ``treeAggregate``: the same numbers either way.

Parameters are handled as ``theta``, shape ``(K, d + 1)``: row ``k`` is
``[coef[k], intercept[k]]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from virality.errors import ConfigurationError

#: The optimizers :mod:`virality.ml.solvers` provides (the one list; settings and configs use this type).
Optimizer = Literal["newton", "gd"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)

#: Rows per block when streaming over ``X``: bounds temporaries to a few MB
#: whatever ``n_samples`` is, so peak memory stays close to ``X`` itself.
CHUNK_ROWS = 16384

#: Rows per block of the class-major gradient pass: a (n_classes, GRAD_CHUNK_ROWS)
#: float64 buffer (320 kB for 5 classes) stays in cache across its four passes.
GRAD_CHUNK_ROWS = 8192

#: Logit gap given to a class that never occurs in the training labels: its
#: probability is ~exp(-30) ~ 1e-13 of the least likely present class.
ABSENT_CLASS_LOGIT_GAP = 30.0


# --------------------------------------------------------------------------- prediction


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
class TrainingData:
    """Rows to fit, validated once: ``X`` float64 C-contiguous, integer labels, optional weights.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,), integers in ``0..n_classes-1``
    sample_weight : ndarray of shape (n_samples,) or None (all ones)
    sw_sum : float
        ``sum_i s_i`` (``n_samples`` without weights).
    """

    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None
    sw_sum: float

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, *,
           n_classes: int) -> TrainingData:
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
        return cls(X, y, sample_weight, float(X.shape[0] if sample_weight is None else sample_weight.sum()))

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """``(X, y, sample_weight)`` blocks of at most ``rows`` rows (views, no copies)."""
        n = self.n_samples
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            sw = None if self.sample_weight is None else self.sample_weight[start:stop]
            yield self.X[start:stop], self.y[start:stop], sw

    def every(self, stride: int) -> TrainingData:
        """Every ``stride``-th row (a deterministic subsample, copied contiguous)."""
        sw = None if self.sample_weight is None else self.sample_weight[::stride].copy()
        X = np.ascontiguousarray(self.X[::stride])
        return TrainingData(X, self.y[::stride].copy(), sw, float(X.shape[0] if sw is None else sw.sum()))

    def relabelled(self, y: np.ndarray) -> TrainingData:
        """The same rows with other labels (e.g. absent classes removed)."""
        return TrainingData(self.X, y, self.sample_weight, self.sw_sum)


@dataclass(slots=True)
class ChunkSums:
    """Sums of the data term over some rows; ``a + b`` covers both sets of rows.

    Attributes
    ----------
    weight : float
        ``sum_i s_i``.
    loss : float
        ``sum_i s_i CE_i``.
    grad : ndarray of shape (K, d + 1)
        ``sum_i s_i (p_i - onehot(y_i)) [x_i, 1]``.
    hess : ndarray of shape (K(d + 1), K(d + 1)) or None
        ``sum_i s_i (blockdiag_k(p_ik xa_i xa_i^T) - v_i v_i^T)`` with ``v_i = p_i (x) xa_i``.
    """

    weight: float
    loss: float
    grad: np.ndarray
    hess: np.ndarray | None = None

    def __add__(self, other: ChunkSums) -> ChunkSums:
        hess = None if self.hess is None or other.hess is None else self.hess + other.hess
        return ChunkSums(self.weight + other.weight, self.loss + other.loss, self.grad + other.grad, hess)

    @staticmethod
    def zero(n_classes: int, n_params: int, *, hessian: bool) -> ChunkSums:
        """The neutral element (``treeAggregate``'s zero value)."""
        hess = np.zeros((n_classes * n_params,) * 2) if hessian else None
        return ChunkSums(0.0, 0.0, np.zeros((n_classes, n_params)), hess)


@dataclass(frozen=True, slots=True)
class SoftmaxObjective:
    """``F(theta)``: weighted mean cross-entropy plus ``(l2/2)||W||^2``, one method per quantity.

    Parameters
    ----------
    n_classes : int
    l2_reg_strength : float
        ``lambda`` >= 0; intercepts are not penalised.
    """

    n_classes: int
    l2_reg_strength: float

    # -- one chunk of rows: sums of the data term -------------------------------------------------

    def chunk_sums(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
                   *, hessian: bool = False) -> ChunkSums:
        """Data-term sums over the rows ``X`` (row-major; the reference computation).

        Parameters
        ----------
        theta : ndarray of shape (K, d + 1)
        X : ndarray of shape (m, d)
        y : ndarray of shape (m,)
        sample_weight : ndarray of shape (m,) or None
        hessian : bool
            Also sum the Hessian (two GEMMs with one ``(m, K(d+1))`` buffer).
        """
        K, p = theta.shape
        W, b = theta[:, :-1], theta[:, -1]
        m = X.shape[0]
        rows = np.arange(m)
        Z = X @ W.T                                      # (m, K)
        Z += b
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        norm = P.sum(axis=1, keepdims=True)
        P /= norm
        ce = np.log(norm[:, 0]) - Z[rows, y]             # logsumexp(z) - z_y
        loss = float(ce @ sample_weight) if sample_weight is not None else float(ce.sum())
        R = P.copy()
        R[rows, y] -= 1.0
        if sample_weight is not None:
            R *= sample_weight[:, None]
        grad = np.empty((K, p))
        grad[:, :-1] = R.T @ X
        grad[:, -1] = R.sum(axis=0)
        weight = float(m if sample_weight is None else sample_weight.sum())
        if not hessian:
            return ChunkSums(weight, loss, grad)
        V = np.empty((m, K, p))
        np.multiply(P[:, :, None], X[:, None, :], out=V[:, :, :-1])
        V[:, :, -1] = P
        V2 = V.reshape(m, K * p)
        Vs = V2 if sample_weight is None else V2 * sample_weight[:, None]
        H = -(Vs.T @ V2)
        # blockdiag part: rows of Xa^T Vs = [X^T Vs; 1^T Vs]
        diag = np.empty((p, K * p))
        diag[:-1] = X.T @ Vs
        diag[-1] = Vs.sum(axis=0)
        for k in range(K):
            H[k * p:(k + 1) * p, k * p:(k + 1) * p] += diag[:, k * p:(k + 1) * p]
        return ChunkSums(weight, loss, grad, H)

    # -- totals -> the objective ------------------------------------------------------------------

    def finish(self, theta: np.ndarray, sums: ChunkSums) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Means over all rows plus the penalty: ``(F, grad (K, d+1), Hessian or None)``."""
        K, p = theta.shape
        W = theta[:, :-1]
        lam = self.l2_reg_strength
        loss = sums.loss / sums.weight + 0.5 * lam * float(np.sum(W * W))
        grad = sums.grad / sums.weight
        grad[:, :-1] += lam * W
        if sums.hess is None:
            return loss, grad, None
        H = sums.hess / sums.weight
        reg = np.zeros(p)
        reg[:-1] = lam
        for k in range(K):
            H[k * p:(k + 1) * p, k * p:(k + 1) * p] += np.diag(reg)
        # symmetrise away rounding so a solver sees an exactly symmetric matrix
        return loss, grad, 0.5 * (H + H.T)

    # -- whole data sets ----------------------------------------------------------------------------

    def loss_gradient(self, theta: np.ndarray, data: TrainingData) -> tuple[float, np.ndarray]:
        """``F`` and its gradient ``(K, d + 1)`` over every row, class-major.

        Same values as summing :meth:`chunk_sums` up to rounding, at a fraction of
        the cost: with logits stored class by class, the row max, ``exp``, the row
        sums and the residual are contiguous passes over ``m`` values per class
        instead of reductions over 5-element rows.
        """
        K, p = theta.shape
        W, b = theta[:, :-1], theta[:, -1:]
        n = data.n_samples
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
            Xc, yc = data.X[start:stop], data.y[start:stop]
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
            if data.sample_weight is None:
                loss += float(ce.sum())
            else:
                swc = data.sample_weight[start:stop]
                loss += float(ce @ swc)
                Z *= swc
            grad[:, :-1] += Z @ Xc
            grad[:, -1] += Z.sum(axis=1)
        total, g, _ = self.finish(theta, ChunkSums(data.sw_sum, loss, grad))
        return total, g

    def sums(self, theta: np.ndarray, data: TrainingData, *, hessian: bool) -> ChunkSums:
        """:meth:`chunk_sums` added over every chunk of ``data``."""
        K, p = theta.shape
        acc = ChunkSums.zero(K, p, hessian=hessian)
        for X, y, sw in data.chunks():
            acc = acc + self.chunk_sums(theta, X, y, sw, hessian=hessian)
        return acc

    def hessian(self, theta: np.ndarray, data: TrainingData) -> np.ndarray:
        """The exact Hessian over every row, shape ``(K(d+1), K(d+1))``, class by class."""
        H = self.finish(theta, self.sums(theta, data, hessian=True))[2]
        assert H is not None
        return H


def _theta(coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    return np.column_stack([coef, intercept])


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
    K = coef.shape[0]
    loss, grad = SoftmaxObjective(K, float(l2_reg_strength)).loss_gradient(
        _theta(coef, intercept), TrainingData.of(X, y, sample_weight, n_classes=K))
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
    K = coef.shape[0]
    return SoftmaxObjective(K, float(l2_reg_strength)).hessian(
        _theta(coef, intercept), TrainingData.of(X, y, sample_weight, n_classes=K))
