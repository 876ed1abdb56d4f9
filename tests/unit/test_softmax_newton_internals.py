"""Newton's fast internals: the class-major gradient pass and the subsampled Hessian.

Neither may change the optimum: the gradient is exact on every row, only the
Newton step uses a Hessian from a strided subsample.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from virality.ml import softmax, solvers
from virality.ml.softmax import loss_gradient, objective
from virality.ml.solvers import fit


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunk", [7, 60, 8192])
def test_class_major_pass_equals_the_row_major_reference(small_problem, weighted, chunk, monkeypatch):
    X, y = small_problem
    rng = np.random.default_rng(5)
    theta = rng.normal(0, 3, (5, 16))
    sw = rng.random(X.shape[0]) + 0.1 if weighted else None
    prob = softmax.TrainingData.of(X, y, sw, n_classes=5)
    obj = softmax.SoftmaxObjective(5, 0.02)
    monkeypatch.setattr(softmax, "GRAD_CHUNK_ROWS", chunk)
    loss, grad = obj.loss_gradient(theta, prob)
    ref_loss, ref_grad, _ = obj.finish(theta, obj.sums(theta, prob, hessian=False))
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-15)


def test_class_major_pass_is_stable_for_huge_logits(small_problem):
    X, y = small_problem
    theta = np.zeros((5, 16))
    theta[:, -1] = [800.0, -800.0, 0.0, 700.0, 1e3]
    loss, grad = softmax.SoftmaxObjective(5, 0.0).loss_gradient(theta, softmax.TrainingData.of(X, y, n_classes=5))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def _spy_hessian_rows(monkeypatch) -> list[int]:
    rows: list[int] = []
    real = softmax.SoftmaxObjective.hessian

    def spy(self, theta, data):
        rows.append(data.X.shape[0])
        return real(self, theta, data)

    monkeypatch.setattr(softmax.SoftmaxObjective, "hessian", spy)
    return rows


@pytest.fixture(scope="module")
def large_problem() -> tuple[np.ndarray, np.ndarray]:
    """30,000 rows: above HESSIAN_ROWS, so the default path subsamples (stride 2)."""
    rng = np.random.default_rng(11)
    X = rng.random((30_000, 15))
    W = rng.normal(0, 1.5, (5, 15))
    y = (X @ W.T + rng.gumbel(size=(30_000, 5))).argmax(axis=1)
    assert X.shape[0] > solvers.HESSIAN_ROWS
    return X, y


@pytest.mark.parametrize("weighted", [False, True])
def test_subsampled_hessian_reaches_the_exact_optimum(large_problem, monkeypatch, weighted):
    X, y = large_problem
    sw = np.where(y == 0, 2.5, 1.0) if weighted else None
    with monkeypatch.context() as m:
        m.setattr(solvers, "HESSIAN_ROWS", X.shape[0])
        exact = fit(X, y, sample_weight=sw)
    rows = _spy_hessian_rows(monkeypatch)
    sub = fit(X, y, sample_weight=sw)
    # Then every Hessian was computed on the subsample only ...
    assert rows and max(rows) <= solvers.HESSIAN_ROWS
    # ... and the fit stops at the same optimum, judged by the exact gradient on all rows
    assert sub.converged and sub.grad_norm <= 1e-8
    _, gc, gi = loss_gradient(sub.coef, sub.intercept, X, y, 1e-3, sw)
    assert max(np.abs(gc).max(), np.abs(gi).max()) <= 1e-8
    assert sub.objective == pytest.approx(exact.objective, rel=1e-12)
    np.testing.assert_allclose(sub.coef, exact.coef, atol=1e-6)


@pytest.mark.parametrize("hessian_rows", [20, 60, 100])
def test_a_poor_subsample_still_converges_to_the_exact_optimum(training_set, monkeypatch, hessian_rows):
    # A subsample with fewer rows than parameters (80) is a poor model of the Hessian:
    # steps that barely shrink the gradient switch Newton to the exact Hessian.
    X, y = training_set.train.X, training_set.train.y
    exact = fit(X, y)
    monkeypatch.setattr(solvers, "HESSIAN_ROWS", hessian_rows)
    sub = fit(X, y)
    assert sub.converged and sub.grad_norm <= 1e-8 and sub.n_iter < 50
    assert sub.objective == pytest.approx(exact.objective, rel=1e-12)


def test_subsampled_hessian_fit_is_deterministic_to_the_byte(training_set, monkeypatch):
    X, y = training_set.train.X, training_set.train.y
    monkeypatch.setattr(solvers, "HESSIAN_ROWS", 150)
    a, b = fit(X, y), fit(X.copy(), y.copy())
    assert a.coef.tobytes() == b.coef.tobytes() and a.intercept.tobytes() == b.intercept.tobytes()
    assert a.n_iter == b.n_iter


def test_subsample_missing_a_class_uses_every_row(monkeypatch):
    # Given a class that only occurs at rows the stride skips
    rng = np.random.default_rng(1)
    X = rng.random((400, 15))
    y = rng.integers(0, 4, 400)
    y[1::4] = np.where(rng.random(100) < 0.2, 4, y[1::4])
    monkeypatch.setattr(solvers, "HESSIAN_ROWS", 100)           # stride 4: rows 0, 4, 8, ...
    assert 4 not in y[::4] and 4 in y
    rows = _spy_hessian_rows(monkeypatch)
    result = fit(X, y, l2_reg_strength=1e-2)
    assert set(rows) == {400} and result.converged


def test_subsampled_hessian_matches_sklearn_on_a_large_problem(large_problem):
    from sklearn.linear_model import LogisticRegression

    X, y = large_problem
    result = fit(X, y)
    assert result.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        clf = LogisticRegression(C=1.0 / (1e-3 * X.shape[0]), tol=1e-10, max_iter=10_000).fit(X, y)
    f_sk = objective(clf.coef_, clf.intercept_, X, y, 1e-3)
    assert result.objective <= f_sk * (1 + 1e-9)
    assert abs(result.objective - f_sk) / f_sk <= 1e-6
