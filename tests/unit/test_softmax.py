"""Softmax objective, derivatives, optimizers (Newton + seed-faithful GD), determinism, sklearn agreement."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from virality.errors import ConfigurationError, ConvergenceWarning
from virality.ml import softmax, solvers
from virality.ml.softmax import class_weights, hessian, loss_gradient, objective, predict_proba
from virality.ml.solvers import fit, mulberry32

# --------------------------------------------------------------------------- independent references

_U32 = 1 << 32


def _uint32(x: int) -> int:
    return x % _U32


def _int32(x: int) -> int:
    x %= _U32
    return x - _U32 if x >= 1 << 31 else x


def _js_imul(a: int, b: int) -> int:
    """``Math.imul``: low 32 bits of the product, as a signed int32."""
    return _int32(_uint32(a) * _uint32(b))


def js_mulberry32(seed: int):
    """mulberry32 written against JavaScript number semantics (ToInt32 / ToUint32 / Math.imul).

    JS source::

        var t = a += 0x6D2B79F5;
        t = Math.imul(t ^ t >>> 15, t | 1);
        t ^= t + Math.imul(t ^ t >>> 7, t | 61);
        return ((t ^ t >>> 14) >>> 0) / 4294967296;
    """
    state = {"a": seed}

    def draw() -> float:
        state["a"] += 0x6D2B79F5           # a JS number, not wrapped (exact far below 2**53)
        t = state["a"]
        t = _js_imul(_int32(t) ^ (_uint32(t) >> 15), _int32(t) | 1)
        t = _int32(t) ^ _int32(t + _js_imul(_int32(t) ^ (_uint32(t) >> 7), _int32(t) | 61))
        return _uint32(_int32(t) ^ (_uint32(t) >> 14)) / 4294967296

    return draw


# mulberry32(42) printed by Node.js running the JS source above.
JS_MULBERRY32_SEED42 = (0.6011037519201636, 0.44829055899754167, 0.8524657934904099,
                        0.6697340414393693, 0.17481389874592423)


def reference_gd(X: list[list[float]], y: list[int], n_classes: int = 5, l2: float = 1e-3, epochs: int = 200,
                 lr: float = 0.1, decay: float = 0.999, seed: int = 42) -> tuple[list[list[float]], list[float]]:
    """The original algorithm, slowly, in plain Python floats."""
    n, d = len(X), len(X[0])
    draw = js_mulberry32(seed)
    W = [[(draw() - 0.5) * 0.01 for _ in range(d)] for _ in range(n_classes)]    # class-major
    b = [0.0] * n_classes
    for _ in range(epochs):
        gW = [[0.0] * d for _ in range(n_classes)]
        gb = [0.0] * n_classes
        for x, label in zip(X, y, strict=True):
            z = [b[k] + sum(w * v for w, v in zip(W[k], x, strict=True)) for k in range(n_classes)]
            top = max(z)
            e = [math.exp(v - top) for v in z]
            total = sum(e)
            for k in range(n_classes):
                r = e[k] / total - (1.0 if k == label else 0.0)
                gb[k] += r
                row = gW[k]
                for j in range(d):
                    row[j] += r * x[j]
        for k in range(n_classes):
            for j in range(d):
                W[k][j] -= lr * (gW[k][j] / n + l2 * W[k][j])
            b[k] -= lr * gb[k] / n
        lr *= decay
    return W, b


def _theta_grad(coef, intercept, X, y, l2, sw=None) -> np.ndarray:
    _, gc, gi = loss_gradient(coef, intercept, X, y, l2, sw)
    return np.column_stack([gc, gi]).ravel()


# --------------------------------------------------------------------------- mulberry32


def test_independent_mulberry32_matches_the_javascript_values():
    draw = js_mulberry32(42)
    assert tuple(draw() for _ in range(5)) == JS_MULBERRY32_SEED42


def test_library_mulberry32_matches_javascript_and_independent_reference():
    assert tuple(itertools.islice(mulberry32(42), 5)) == JS_MULBERRY32_SEED42
    for seed in (0, 1, 7, 42, 2**31 - 1, 2**32 - 1):
        draw = js_mulberry32(seed)
        expected = [draw() for _ in range(200)]
        assert list(itertools.islice(mulberry32(seed), 200)) == expected, seed


def test_mulberry32_outputs_lie_in_unit_interval():
    values = list(itertools.islice(mulberry32(123), 2000))
    assert min(values) >= 0.0 and max(values) < 1.0
    assert 0.45 < sum(values) / len(values) < 0.55


# --------------------------------------------------------------------------- softmax / predict_proba


def test_softmax_is_stable_for_huge_logits():
    Z = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4], [710.0, 709.0, 0.0], [1e300, 1e300, -1e300]])
    P = softmax.softmax(Z)
    assert np.all(np.isfinite(P))
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(P[0], [1.0, 0.0, 0.0], atol=1e-300)
    np.testing.assert_allclose(P[1], [1 / 3] * 3, rtol=1e-15)
    np.testing.assert_allclose(P[2], [math.e / (1 + math.e + math.exp(-709)), 1 / (1 + math.e), 0.0],
                               rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(P[3], [0.5, 0.5, 0.0])
    assert Z[0, 0] == 1000.0          # copy=True leaves the input alone


def test_softmax_copy_false_overwrites_input():
    Z = np.array([[0.0, math.log(3.0)]])
    P = softmax.softmax(Z, copy=False)
    assert P is Z
    np.testing.assert_allclose(Z, [[0.25, 0.75]], rtol=1e-15)


def test_predict_proba_rows_sum_to_one_and_match_hand_softmax():
    rng = np.random.default_rng(0)
    X = rng.random((50, 15))
    coef = rng.normal(0, 30, (5, 15))
    intercept = rng.normal(0, 30, 5)
    P = predict_proba(X, coef, intercept)
    assert P.shape == (50, 5)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    z = X[3] @ coef.T + intercept
    e = np.exp(z - z.max())
    np.testing.assert_allclose(P[3], e / e.sum(), rtol=1e-12, atol=1e-300)


# --------------------------------------------------------------------------- objective and derivatives


def test_objective_hand_value_with_equal_logits():
    # Given identical coefficient rows: every class has the same logit, so CE = log 5 for every row
    X = np.random.default_rng(1).random((7, 15))
    y = np.array([0, 1, 2, 3, 4, 0, 1])
    coef, intercept = np.ones((5, 15)), np.full(5, 3.0)
    # Then F = log 5 + (l2 / 2) * ||W||^2, biases not regularised
    assert objective(coef, intercept, X, y, 0.01) == pytest.approx(math.log(5) + 0.005 * 75, rel=1e-14)
    assert objective(np.zeros((5, 15)), np.zeros(5), X, y, 0.01) == pytest.approx(math.log(5), rel=1e-14)


def test_objective_is_finite_for_huge_logits():
    X = np.ones((3, 15))
    y = np.array([0, 1, 2])
    coef = np.zeros((5, 15))
    coef[0] = 1e4
    loss, gc, gi = loss_gradient(coef, np.zeros(5), X, y, 0.0)
    # rows labelled 1 and 2 have CE = 1.5e5 - 0
    assert loss == pytest.approx(2 * 1.5e5 / 3, rel=1e-12)
    assert np.all(np.isfinite(gc)) and np.all(np.isfinite(gi))


@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_central_finite_differences(small_problem, weighted):
    X, y = small_problem
    rng = np.random.default_rng(5)
    coef = rng.normal(0, 0.5, (5, 15))
    intercept = rng.normal(0, 0.5, 5)
    sw = rng.uniform(0.2, 3.0, X.shape[0]) if weighted else None
    l2 = 0.05
    _, gc, gi = loss_gradient(coef, intercept, X, y, l2, sw)
    h = 1e-6
    fd_coef = np.empty_like(coef)
    for k, j in itertools.product(range(5), range(15)):
        up, down = coef.copy(), coef.copy()
        up[k, j] += h
        down[k, j] -= h
        fd_coef[k, j] = (objective(up, intercept, X, y, l2, sw) - objective(down, intercept, X, y, l2, sw)) / (2 * h)
    fd_int = np.empty(5)
    for k in range(5):
        up, down = intercept.copy(), intercept.copy()
        up[k] += h
        down[k] -= h
        fd_int[k] = (objective(coef, up, X, y, l2, sw) - objective(coef, down, X, y, l2, sw)) / (2 * h)
    np.testing.assert_allclose(gc, fd_coef, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gi, fd_int, rtol=1e-5, atol=1e-8)
    # the regulariser acts on coef only: gradients of the intercepts sum to zero
    assert abs(gi.sum()) < 1e-12


@pytest.mark.parametrize("weighted", [False, True])
def test_hessian_matches_finite_differences_of_the_gradient(small_problem, weighted):
    X, y = small_problem
    rng = np.random.default_rng(6)
    coef = rng.normal(0, 0.5, (5, 15))
    intercept = rng.normal(0, 0.5, 5)
    sw = rng.uniform(0.2, 3.0, X.shape[0]) if weighted else None
    l2 = 0.05
    H = hessian(coef, intercept, X, y, l2, sw)
    assert H.shape == (80, 80)
    np.testing.assert_array_equal(H, H.T)
    theta = np.column_stack([coef, intercept])
    h = 1e-5
    fd = np.empty((80, 80))
    for idx in range(80):
        up, down = theta.copy().ravel(), theta.copy().ravel()
        up[idx] += h
        down[idx] -= h
        up, down = up.reshape(5, 16), down.reshape(5, 16)
        fd[:, idx] = (_theta_grad(up[:, :-1], up[:, -1], X, y, l2, sw)
                      - _theta_grad(down[:, :-1], down[:, -1], X, y, l2, sw)) / (2 * h)
    np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-8)
    # convex objective: positive semi-definite
    assert np.linalg.eigvalsh(H).min() > -1e-12


def test_objective_chunking_does_not_change_the_result(small_problem, monkeypatch):
    X, y = small_problem
    rng = np.random.default_rng(8)
    coef, intercept = rng.normal(0, 1, (5, 15)), rng.normal(0, 1, 5)
    full = loss_gradient(coef, intercept, X, y, 0.01)
    H_full = hessian(coef, intercept, X, y, 0.01)
    monkeypatch.setattr(softmax, "CHUNK_ROWS", 7)
    chunked = loss_gradient(coef, intercept, X, y, 0.01)
    assert chunked[0] == pytest.approx(full[0], rel=1e-13)
    np.testing.assert_allclose(chunked[1], full[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hessian(coef, intercept, X, y, 0.01), H_full, rtol=1e-11, atol=1e-15)


def test_integer_sample_weights_equal_duplicated_rows(small_problem):
    X, y = small_problem
    weights = np.where(np.arange(X.shape[0]) % 3 == 0, 2.0, 1.0)
    dup = np.repeat(np.arange(X.shape[0]), weights.astype(int))
    weighted = fit(X, y, sample_weight=weights, l2_reg_strength=0.01)
    duplicated = fit(X[dup], y[dup], l2_reg_strength=0.01)
    np.testing.assert_allclose(weighted.coef, duplicated.coef, atol=1e-7)
    np.testing.assert_allclose(weighted.intercept, duplicated.intercept, atol=1e-7)
    assert weighted.objective == pytest.approx(duplicated.objective, rel=1e-12)


# --------------------------------------------------------------------------- gd: the original algorithm


def test_gd_reproduces_the_original_arithmetic(small_problem):
    # Given a small data set
    X, y = small_problem
    # When the library's gd runs and the slow reference runs on plain Python floats
    result = fit(X, y, optimizer="gd")
    W_ref, b_ref = reference_gd(X.tolist(), y.tolist())
    # Then the weights agree to 1e-9
    np.testing.assert_allclose(result.coef, np.array(W_ref), rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.intercept, np.array(b_ref), rtol=0, atol=1e-9)
    assert result.optimizer == "gd"
    assert result.n_iter == 200
    assert result.converged is False
    assert result.objective == pytest.approx(objective(result.coef, result.intercept, X, y, 1e-3), rel=1e-12)


def test_gd_initialisation_is_class_major_mulberry32(small_problem):
    X, y = small_problem
    # Zero epochs: the returned weights are the initial ones
    result = fit(X, y, optimizer="gd", epochs=0)
    draw = js_mulberry32(42)
    expected = np.array([[(draw() - 0.5) * 0.01 for _ in range(15)] for _ in range(5)])
    np.testing.assert_array_equal(result.coef, expected)
    np.testing.assert_array_equal(result.intercept, np.zeros(5))
    assert result.coef[0, 0] == (JS_MULBERRY32_SEED42[0] - 0.5) * 0.01
    assert result.coef[0, 1] == (JS_MULBERRY32_SEED42[1] - 0.5) * 0.01


def test_gd_honours_seed_and_l2(small_problem):
    X, y = small_problem
    a = fit(X, y, optimizer="gd", seed=42, epochs=5)
    b = fit(X, y, optimizer="gd", seed=43, epochs=5)
    c = fit(X, y, optimizer="gd", seed=42, epochs=5, l2_reg_strength=0.5)
    W_ref, _ = reference_gd(X.tolist(), y.tolist(), seed=43, epochs=5)
    np.testing.assert_allclose(b.coef, W_ref, atol=1e-12)
    assert not np.allclose(a.coef, b.coef, atol=1e-6)
    W_ref, _ = reference_gd(X.tolist(), y.tolist(), l2=0.5, epochs=5)
    np.testing.assert_allclose(c.coef, W_ref, atol=1e-12)


def test_gd_reports_progress_every_epoch(small_problem):
    X, y = small_problem
    seen: list[tuple[int, float, float]] = []
    fit(X, y, optimizer="gd", callback=lambda i, f, g: seen.append((i, f, g)))
    assert [i for i, _, _ in seen] == list(range(1, 201))
    assert seen[-1][1] < seen[0][1]
    assert seen[0][1] == pytest.approx(math.log(5), abs=0.01)    # tiny initial weights


def test_gd_stops_far_from_the_optimum_on_synthetic_data(training_set):
    X, y = training_set.train.X, training_set.train.y
    gd = fit(X, y, optimizer="gd")
    newton = fit(X, y)
    # Newton reaches a clearly lower objective and a far smaller gradient
    assert gd.objective - newton.objective > 0.1
    assert gd.grad_norm > 1e3 * newton.grad_norm
    assert gd.converged is False and newton.converged is True


# --------------------------------------------------------------------------- newton: the optimum


def test_newton_converges_and_reports(training_set):
    X, y = training_set.train.X, training_set.train.y
    seen: list[int] = []
    result = fit(X, y, callback=lambda i, f, g: seen.append(i))
    assert result.optimizer == "newton"
    assert result.converged is True
    assert result.grad_norm <= 1e-8
    assert 1 <= result.n_iter < 100
    assert seen == list(range(1, result.n_iter + 1))
    # reported objective and gradient are those of the returned parameters
    loss, gc, gi = loss_gradient(result.coef, result.intercept, X, y, 1e-3)
    assert result.objective == pytest.approx(loss, rel=1e-12)
    assert max(np.abs(gc).max(), np.abs(gi).max()) <= 1e-8
    # canonical intercepts: mean zero
    assert abs(result.intercept.mean()) < 1e-12


@pytest.mark.parametrize("l2", [1e-3, 1e-2])
def test_newton_reaches_sklearn_optimum(training_set, l2):
    from sklearn.linear_model import LogisticRegression

    X, y = training_set.train.X, training_set.train.y
    n = X.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        clf = LogisticRegression(C=1.0 / (l2 * n), tol=1e-10, max_iter=10_000).fit(X, y)
    f_sklearn = objective(clf.coef_, clf.intercept_, X, y, l2)
    result = fit(X, y, l2_reg_strength=l2)
    f_newton = objective(result.coef, result.intercept, X, y, l2)
    assert abs(f_newton - f_sklearn) / f_sklearn <= 1e-6
    assert f_newton <= f_sklearn * (1 + 1e-9)
    np.testing.assert_allclose(predict_proba(X, result.coef, result.intercept), clf.predict_proba(X), atol=1e-4)


def test_newton_warns_when_it_hits_max_iter(training_set):
    X, y = training_set.train.X, training_set.train.y
    with pytest.warns(ConvergenceWarning, match="newton stopped after 1 iterations"):
        result = fit(X, y, max_iter=1)
    assert result.converged is False
    assert result.n_iter == 1
    assert result.grad_norm > 1e-8


@pytest.mark.parametrize("optimizer", ["newton", "gd"])
def test_fit_is_deterministic_to_the_byte(training_set, optimizer):
    X, y = training_set.train.X, training_set.train.y
    a = fit(X, y, optimizer=optimizer)
    b = fit(X.copy(), y.copy(), optimizer=optimizer)
    assert a.coef.tobytes() == b.coef.tobytes()
    assert a.intercept.tobytes() == b.intercept.tobytes()
    assert a.objective == b.objective and a.n_iter == b.n_iter


def test_fit_accepts_non_contiguous_and_integer_like_inputs(small_problem):
    X, y = small_problem
    reference = fit(X, y)
    fortran = fit(np.asfortranarray(X), y.astype(np.int32))
    np.testing.assert_allclose(fortran.coef, reference.coef, atol=1e-10)


# --------------------------------------------------------------------------- class weights


def test_balanced_class_weights_by_hand():
    # counts 100, 10, 1, 0, 0 over n = 111; three classes present
    y = np.array([0] * 100 + [1] * 10 + [2])
    w = class_weights(y, 5, "balanced")
    raw = np.array([111 / 300, 111 / 30, 111 / 3])
    capped = np.minimum(raw, 3 * raw.min())        # 3x the smallest weight
    np.testing.assert_allclose(w, [*capped, 0.0, 0.0], rtol=1e-15)
    assert w[1] == pytest.approx(3 * w[0]) and w[2] == pytest.approx(3 * w[0])


def test_balanced_weights_without_capping_equalise_class_mass():
    y = np.array([0] * 4 + [1] * 6 + [2] * 10 + [3] * 5 + [4] * 5)
    w = class_weights(y, 5, "balanced")
    np.testing.assert_allclose(w, 30 / (5 * np.array([4, 6, 10, 5, 5])))
    mass = np.bincount(y, weights=w[y])
    np.testing.assert_allclose(mass, 6.0)


@pytest.mark.parametrize("mode", [None, "none"])
def test_unweighted_class_weights_are_ones(mode):
    np.testing.assert_array_equal(class_weights(np.array([0, 0, 1]), 5, mode), np.ones(5))


def test_unknown_class_weight_mode_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="balanced"):
        class_weights(np.array([0, 1]), 5, "inverse")


def test_weighted_fit_reaches_the_weighted_optimum(training_set):
    X, y = training_set.train.X, training_set.train.y
    sw = class_weights(y, 5, "balanced")[y]
    result = fit(X, y, sample_weight=sw)
    _, gc, gi = loss_gradient(result.coef, result.intercept, X, y, 1e-3, sw)
    assert result.converged and max(np.abs(gc).max(), np.abs(gi).max()) <= 1e-8


# --------------------------------------------------------------------------- absent classes


def test_absent_classes_get_finite_parameters_and_negligible_probability(small_problem):
    # Given labels only in {0, 2, 4}
    X, y = small_problem
    y = np.array([0, 2, 4])[y % 3]
    # When fitted over five classes
    result = fit(X, y)
    # Then every parameter is finite and the optimisation converged
    assert result.converged
    assert np.all(np.isfinite(result.coef)) and np.all(np.isfinite(result.intercept))
    np.testing.assert_array_equal(result.coef[[1, 3]], 0.0)
    # And the absent classes get ~0 probability anywhere in [0, 1]^15, corners included
    rng = np.random.default_rng(3)
    probes = np.vstack([rng.random((500, 15)), np.zeros((1, 15)), np.ones((1, 15)),
                        rng.integers(0, 2, (200, 15)).astype(float)])
    P = predict_proba(probes, result.coef, result.intercept)
    assert P[:, [1, 3]].max() < 1e-12
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-14)
    # And the present classes are fitted exactly as a three-class problem
    three = fit(X, y // 2, n_classes=3)
    np.testing.assert_allclose(result.coef[[0, 2, 4]], three.coef, atol=1e-12)
    np.testing.assert_allclose(result.intercept[[0, 2, 4]], three.intercept, atol=1e-12)


# --------------------------------------------------------------------------- large-n warm start


def test_subsampled_warm_start_reaches_the_same_optimum(training_set, monkeypatch):
    X, y = training_set.train.X, training_set.train.y
    baseline = fit(X, y)
    # Given thresholds small enough that this data set takes the subsample path
    monkeypatch.setattr(solvers, "SUBSAMPLE_MIN_ROWS", 500)
    monkeypatch.setattr(solvers, "SUBSAMPLE_ROWS", 100)
    sizes: list[int] = []
    real_loop = solvers.NewtonSolver.iterate

    def spy(self, objective, data, *args, **kwargs):
        sizes.append(data.X.shape[0])
        return real_loop(self, objective, data, *args, **kwargs)

    monkeypatch.setattr(solvers.NewtonSolver, "iterate", spy)
    warm = fit(X, y)
    # Then a subsample was solved first, the full data second ...
    assert len(sizes) == 2 and sizes[0] < X.shape[0] // 5 and sizes[1] == X.shape[0]
    # ... and the optimum is the same
    assert warm.converged and warm.grad_norm <= 1e-8
    assert warm.objective == pytest.approx(baseline.objective, rel=1e-12)
    np.testing.assert_allclose(warm.coef, baseline.coef, atol=1e-6)
    np.testing.assert_allclose(warm.intercept, baseline.intercept, atol=1e-6)


# --------------------------------------------------------------------------- invalid configuration


@pytest.mark.parametrize("kwargs", [
    {"optimizer": "adam"},
    {"optimizer": "lbfgs"},
    {"l2_reg_strength": -1e-3},
    {"l2_reg_strength": math.nan},
    {"l2_reg_strength": math.inf},
    {"tol": 0.0},
    {"tol": -1e-8},
    {"tol": math.nan},
])
def test_invalid_fit_configuration(small_problem, kwargs):
    X, y = small_problem
    with pytest.raises(ConfigurationError):
        fit(X, y, **kwargs)


def test_invalid_fit_data(small_problem):
    X, y = small_problem
    with pytest.raises(ValueError, match="labels"):
        fit(X, y + 1)
    with pytest.raises(ValueError):
        fit(X, y[:-1])
    with pytest.raises(ValueError, match="zero samples"):
        fit(X[:0], y[:0])
