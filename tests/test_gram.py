"""The default solve's Gram-matrix path against LAPACK on stacked arrays.

Tall numpy blocks are solved from the Cholesky factor of the Gram matrix of their
weighted (and centred) rows, refined once against the rows, when that is accurate
enough; other blocks fall back to the Householder QR factor. Every expected value
is computed independently: ``scipy.linalg.lstsq`` (``gelsd``) on the rows centred,
weighted and stacked with ``numpy.vstack`` by hand (with ``sqrt(alpha) * I`` rows
for a penalty), scikit-learn's ``LinearRegression`` and ``Ridge`` with
``sample_weight``, the true weights of an exact ``y = X w``, or numpy's SVD.

The blocks are built with a prescribed spectrum: the singular values of their
weighted, centred stacked X are given exactly, so that the condition number the
solve sees is known in advance.

Tolerances are forward-error bounds (see :func:`weights_tolerance`): a
backward-stable least-squares solve of condition ``kappa`` and relative residual
``eta`` is accurate to ``eps (kappa + kappa^2 eta)`` (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., chapter 20), and so are the
corrected semi-normal equations after one refinement step, for condition numbers
well below ``eps^-1/2`` (Bjorck, *Numerical Methods for Least Squares Problems*,
1996). The residual of that step is computed on the rows before centring,
``gamma`` times larger than the centred ones: ``eps`` is scaled by ``gamma``.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.linalg
from builders import (
    make_pair,
    replace_stacked,
    stacked,
    weight_map,
    with_singular_values,
)
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.linear_model import LinearRegression, Ridge
from threadpoolctl import threadpool_limits

import skmetalstsq._factors as factors_module
import skmetalstsq._solvers as solvers_module
from skmetalstsq import TensorMapLstsq
from skmetalstsq._backends import NumpyBackend, Workspace
from skmetalstsq._blocks import BlockSystem
from skmetalstsq._factors import gram_matrix, residual_gradient, value_means
from skmetalstsq._solvers import GRAM_CONDITION, solve

EPS = np.finfo(np.float64).eps
LABEL = "(center_type=6, o3_lambda=1)"

#: Room for the dimension-dependent constants of the error bounds (rounding errors
#: of sums of up to 800 rows). Over 20 seeds of test_gram_solve_equals_gelsd, the
#: weights' errors reach 12 times the bound without it (at condition 1, where the
#: QR solve is as far from gelsd), the singular values' 2 times and the
#: intercepts' 1.2 times; the solution before the refinement step is 100 times
#: outside it at condition 9e3 (see
#: test_the_tolerance_tells_the_refined_solution_from_the_unrefined_one).
CONSTANT = 50.0

#: Conditions the Gram path is taken for (GRAM_CONDITION is 1e4).
WELL_CONDITIONED = [1.0, 1e2, 1e3, 9e3]

PER_FEATURE_ALPHA = np.array([0.0, 1.0, 0.5, 2.0, 0.0, 3.0])


# ---------------------------------------------------------------------------------
# data with a prescribed spectrum
# ---------------------------------------------------------------------------------


def split_rows(matrix, sizes):
    """``matrix`` cut into consecutive row parts of the given sizes (views)."""
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == matrix.shape[0]
    return [matrix[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def spectrum(condition, n_rows, n_features):
    """Singular values from ``sqrt(n_rows)`` down by ``condition``, geometrically.

    ``sqrt(n_rows)`` keeps the entries of the rows of order one.
    """
    return np.sqrt(n_rows) * np.geomspace(1.0, 1.0 / condition, n_features)


def prescribed_rows(rng, sizes, singular, row_weights, intercept, offset=5.0):
    """Row parts of X whose weighted (and centred) stack has singular values ``singular``.

    Part 0 is the value rows. With an intercept, the value rows are centred on
    their weighted means before weighting, so the rows are built centred (their
    weighted stack ``M`` has ``sum_i sqrt(w_i) M_i = 0`` over value rows) and
    ``offset`` is added to every value row afterwards: columns of mean
    ``offset``. Without one, the value rows are pushed by ``offset`` before the
    spectrum is set, which makes the columns' means the leading singular
    direction. ``row_weights`` are 1-D arrays of positive weights, one per part.
    """
    root = np.sqrt(np.concatenate(row_weights))
    n_rows, n_features = root.shape[0], len(singular)
    values = slice(0, sizes[0])
    start = rng.normal(size=(n_rows, n_features))
    if intercept:
        direction = np.zeros(n_rows)
        direction[values] = root[values]
        start -= np.outer(direction, direction @ start) / (direction @ direction)
    else:
        start[values] += offset * root[values, None]
    rows = with_singular_values(start, singular) / root[:, None]
    if intercept:
        rows[values] += offset
    return split_rows(rows, sizes)


def targets_of(rng, x_parts, true_weights, noise, intercept, offsets=(3.0, -7.0, 1.5)):
    """``y = X w + noise`` part by part, plus an offset per target on the value rows
    with an intercept (the gradients of a constant are zero)."""
    n_targets = true_weights.shape[1]
    parts = []
    for position, part in enumerate(x_parts):
        y = part @ true_weights + noise * rng.normal(size=(part.shape[0], n_targets))
        if intercept and position == 0:
            y = y + np.asarray(offsets[:n_targets])
        parts.append(y)
    return parts


def random_weights(rng, sizes):
    return [rng.uniform(0.2, 3.0, size=size) for size in sizes]


# ---------------------------------------------------------------------------------
# the independent reference
# ---------------------------------------------------------------------------------


@dataclass
class Reference:
    """scipy's gelsd on the weighted, centred rows stacked by hand, and its bounds."""

    weights: np.ndarray  # (n_targets, n_features)
    intercept: object  # (n_targets,) or None
    rank: int
    singular: np.ndarray  # of the weighted, centred stacked X (no penalty rows)
    condition: float  # of what is solved: the kept singular values, penalty included
    eta: float  # ||residual|| / (||A|| ||w||)
    gamma: float  # ||weighted rows before centring|| / ||weighted centred rows||
    x_mean: object


def gelsd_reference(x_parts, y_parts, row_weights=None, intercept=False, alpha=0.0, rcond=None):
    """The rcond-cut, minimum-norm (ridge) solution by hand.

    ``row_weights``: None or one 1-D array (or None) per part. ``rcond`` None is
    numpy's default, ``eps * max(n_rows, n_features)`` of the block.
    """
    x_parts = [np.asarray(p, dtype=np.float64) for p in x_parts]
    y_parts = [np.asarray(p, dtype=np.float64) for p in y_parts]
    if row_weights is None:
        row_weights = [None] * len(x_parts)
    weights = [
        np.ones(len(p)) if w is None else np.asarray(w) for p, w in zip(x_parts, row_weights)
    ]
    n_features = x_parts[0].shape[1]
    x_mean = y_mean = None
    centred_x, centred_y = list(x_parts), list(y_parts)
    if intercept:
        x_mean = np.average(x_parts[0], axis=0, weights=weights[0])
        y_mean = np.average(y_parts[0], axis=0, weights=weights[0])
        centred_x[0] = x_parts[0] - x_mean
        centred_y[0] = y_parts[0] - y_mean
    root = [np.sqrt(w)[:, None] for w in weights]
    a = np.vstack([r * p for r, p in zip(root, centred_x)])
    b = np.vstack([r * p for r, p in zip(root, centred_y)])
    raw = np.vstack([r * p for r, p in zip(root, x_parts)])
    if rcond is None:
        rcond = EPS * max(a.shape)
    singular = np.linalg.svd(a, compute_uv=False)
    gamma = np.linalg.norm(raw, 2) / singular[0]
    rank = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver="gelsd")[2]
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_features,))
    if alpha.any():
        a = np.vstack([a, np.diag(np.sqrt(alpha))])
        b = np.vstack([b, np.zeros((n_features, b.shape[1]))])
    solution = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver="gelsd")[0]
    kept = np.linalg.svd(a, compute_uv=False)
    kept = kept[kept > rcond * singular[0]]
    residual = np.linalg.norm(b - a @ solution)
    eta = residual / (kept[0] * max(np.linalg.norm(solution), np.finfo(float).tiny))
    intercept_value = None if x_mean is None else y_mean - x_mean @ solution
    return Reference(
        solution.T, intercept_value, rank, singular, kept[0] / kept[-1], eta, gamma, x_mean
    )


def weights_tolerance(reference):
    """Relative (norm-wise) tolerance of the weights: ``C eps gamma (kappa + kappa^2 eta)``.

    The forward error of a backward-stable least-squares solve, on data whose
    rounding errors are relative to the uncentred rows (see the module docstring).
    """
    kappa = reference.condition
    return CONSTANT * EPS * reference.gamma * (kappa + kappa**2 * reference.eta)


def assert_weights_match(weights, intercept, reference, extra_rtol=0.0):
    """Weights (norm-wise) and intercept equal the reference within the bounds.

    ``extra_rtol`` adds a relative tolerance for results rounded to a lower
    precision. The intercept ``y_mean - x_mean w`` inherits the weights' error
    times ``||x_mean||``, and the rounding of that product.
    """
    weights = np.asarray(weights, dtype=np.float64)
    rtol = weights_tolerance(reference)
    norm = np.linalg.norm(reference.weights)
    error = np.linalg.norm(weights - reference.weights)
    assert error <= rtol * norm + extra_rtol * norm, (error / norm, rtol)
    if extra_rtol:
        np.testing.assert_allclose(
            weights, reference.weights, rtol=extra_rtol, atol=(rtol + extra_rtol) * norm
        )
    if reference.intercept is None:
        assert intercept is None or not np.any(intercept)
        return
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    mean_norm = np.linalg.norm(reference.x_mean)
    atol = (mean_norm + 1.0) * (rtol + extra_rtol) * norm + CONSTANT * EPS * (
        np.abs(reference.intercept).max() + mean_norm * norm
    )
    np.testing.assert_allclose(
        intercept, reference.intercept, rtol=extra_rtol, atol=atol, err_msg="intercept"
    )


def assert_gram_singular_values(found, reference):
    """Singular values from the Cholesky factor: ``C eps s_max (gamma + s_max / s_i)``.

    The Gram matrix is exact to ``eps ||A||^2``, so its factor's singular value
    ``s_i`` to ``eps s_max^2 / s_i``, relative ``eps (s_max / s_i)^2``.
    """
    found = np.asarray(found, dtype=np.float64)
    singular = reference.singular
    assert found.shape == singular.shape
    atol = CONSTANT * EPS * singular[0] * (reference.gamma + singular[0] / singular)
    np.testing.assert_array_less(np.abs(found - singular), atol)


def assert_qr_singular_values(found, reference):
    """Singular values from the QR factor (backward stable): ``C eps gamma s_max``."""
    found = np.asarray(found, dtype=np.float64)
    atol = CONSTANT * EPS * reference.gamma * reference.singular[0]
    np.testing.assert_allclose(found, reference.singular, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------
# spies on the solve's two paths
# ---------------------------------------------------------------------------------


class Counter:
    """Wraps a function and counts its calls (from any thread)."""

    def __init__(self, function):
        self.function = function
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append(None)  # list.append is atomic: thread-safe counting
        return self.function(*args, **kwargs)

    @property
    def count(self):
        return len(self.calls)


@pytest.fixture
def paths(monkeypatch):
    """Counts of the Gram pass (``gram_matrix``) and of the QR fallback (``factorize``)."""
    spies = {
        "gram": Counter(solvers_module.gram_matrix),
        "qr": Counter(solvers_module.factorize),
    }
    monkeypatch.setattr(solvers_module, "gram_matrix", spies["gram"])
    monkeypatch.setattr(solvers_module, "factorize", spies["qr"])
    return spies


def make_system(x_parts, y_parts, row_weights=None, intercept=False, alpha=0.0, label=LABEL):
    dtype = np.result_type(x_parts[0].dtype, y_parts[0].dtype)
    return BlockSystem(label, list(x_parts), list(y_parts), dtype, row_weights, intercept, alpha)


def tall_block(
    rng, condition, intercept, sizes=(300, 500), n_features=6, n_targets=2, noise=1e-2, weights=None
):
    """(x_parts, y_parts, row_weights, true_weights) of a weighted block of that condition.

    ``weights``: one 1-D array per part, random (in [0.2, 3]) when None.
    """
    if weights is None:
        weights = random_weights(rng, sizes)
    singular = spectrum(condition, sum(sizes), n_features)
    x_parts = prescribed_rows(rng, list(sizes), singular, weights, intercept)
    true_weights = rng.normal(size=(n_features, n_targets))
    y_parts = targets_of(rng, x_parts, true_weights, noise, intercept)
    return x_parts, y_parts, weights, true_weights


# ---------------------------------------------------------------------------------
# 1. well-conditioned tall blocks: the Gram path equals gelsd
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", WELL_CONDITIONED)
@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("noise", [1e-9, 1e-1])
@pytest.mark.parametrize("alpha", [0.0, 0.3, "per-feature"])
def test_gram_solve_equals_gelsd(paths, condition, intercept, noise, alpha):
    rng = np.random.default_rng(int(np.log10(condition) * 10) + 2 * intercept)
    # the second part with a float weight: a gradient weighted as a whole
    weights = [rng.uniform(0.2, 3.0, size=300), np.full(500, 0.75)]
    x_parts, y_parts, _, _ = tall_block(rng, condition, intercept, noise=noise, weights=weights)
    alpha = PER_FEATURE_ALPHA if alpha == "per-feature" else alpha
    row_weights = [weights[0], 0.75]
    system = make_system(x_parts, y_parts, row_weights, intercept, alpha)
    solution = solve(system, None, None)
    reference = gelsd_reference(x_parts, y_parts, weights, intercept, alpha)
    # the prescribed spectrum is the block's (up to the rounding of its rows)
    np.testing.assert_allclose(reference.singular[0] / reference.singular[-1], condition, rtol=1e-6)
    assert (paths["gram"].count, paths["qr"].count) == (1, 0)
    assert_weights_match(solution.weights, solution.intercept, reference)
    assert_gram_singular_values(solution.singular_values, reference)
    assert solution.rank == reference.rank == 6
    if intercept:
        # columns of large mean: an intercept of the offsets' size was fitted
        assert np.abs(reference.x_mean).min() > 4.0


@pytest.mark.parametrize("condition", WELL_CONDITIONED)
@pytest.mark.parametrize("intercept", [False, True])
def test_exact_targets_give_the_true_weights(paths, condition, intercept):
    rng = np.random.default_rng(7)
    x_parts, y_parts, weights, true_weights = tall_block(rng, condition, intercept, noise=0.0)
    solution = solve(make_system(x_parts, y_parts, weights, intercept), None, None)
    assert paths["qr"].count == 0
    # y = X w is exact but for the rounding of y: eta ~ eps, the bound is C eps gamma kappa
    reference = gelsd_reference(x_parts, y_parts, weights, intercept)
    assert reference.eta < 1e-14
    reference.weights = true_weights.T
    if intercept:
        reference.intercept = np.array([3.0, -7.0])
    assert_weights_match(solution.weights, solution.intercept, reference)


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_values_only_equal_linear_regression_and_ridge(paths, intercept, alpha):
    # one row part (no gradients): scikit-learn's intercept is the same fit
    rng = np.random.default_rng(8)
    x_parts, y_parts, weights, _ = tall_block(rng, 1e3, intercept, sizes=(900,), noise=1e-2)
    solution = solve(make_system(x_parts, y_parts, weights, intercept, alpha), None, None)
    assert paths["qr"].count == 0
    if alpha:
        model = Ridge(alpha=alpha, fit_intercept=intercept, solver="svd")
    else:
        model = LinearRegression(fit_intercept=intercept)
    model.fit(x_parts[0], y_parts[0], sample_weight=weights[0])
    reference = gelsd_reference(x_parts, y_parts, weights, intercept, alpha)
    reference.weights = model.coef_
    if intercept:
        reference.intercept = model.intercept_
    assert_weights_match(solution.weights, solution.intercept, reference)


def test_gradients_without_intercept_equal_weighted_linear_regression(paths):
    rng = np.random.default_rng(9)
    x_parts, y_parts, weights, _ = tall_block(rng, 9e3, False, sizes=(200, 300, 250), noise=1e-3)
    solution = solve(make_system(x_parts, y_parts, weights), None, None)
    assert paths["qr"].count == 0
    model = LinearRegression(fit_intercept=False)
    model.fit(np.vstack(x_parts), np.vstack(y_parts), sample_weight=np.concatenate(weights))
    reference = gelsd_reference(x_parts, y_parts, weights)
    reference.weights = model.coef_
    assert_weights_match(solution.weights, None, reference)


def test_the_tolerance_tells_the_refined_solution_from_the_unrefined_one(monkeypatch):
    # without the refinement step, the Cholesky solution loses kappa^2 eps
    # (2e-8 at 9e3): the bound of these tests is far below that
    rng = np.random.default_rng(10)
    x_parts, y_parts, weights, _ = tall_block(rng, 9e3, False, noise=1e-9)
    system = make_system(x_parts, y_parts, weights)
    reference = gelsd_reference(x_parts, y_parts, weights)
    assert_weights_match(solve(system, None, None).weights, None, reference)

    def no_correction(system, weights, *args, **kwargs):
        return np.zeros(weights.shape)

    monkeypatch.setattr(solvers_module, "residual_gradient", no_correction)
    unrefined = solve(make_system(x_parts, y_parts, weights), None, None).weights
    error = np.linalg.norm(unrefined - reference.weights) / np.linalg.norm(reference.weights)
    assert error > 10 * weights_tolerance(reference)


# --- through the estimator, on TensorMaps ------------------------------------------


def weights_of_rows(weight_block, parameters, gradient_weights):
    """The weight of every row part of a block, from its weight block (values, then
    each gradient in ``parameters`` order, times its gradient weight)."""
    parts = [np.asarray(weight_block.values).reshape(-1)]
    for parameter in parameters:
        factor = (gradient_weights or {}).get(parameter, 1.0)
        parts.append(factor * np.asarray(weight_block.gradient(parameter).values).reshape(-1))
    return parts


def prescribed_maps(
    rng,
    conditions,
    intercept,
    n_features=4,
    n_targets=3,
    n_components=0,
    gradients=("positions", "cell"),
    gradient_weights=None,
    n_systems=30,
    noise=1e-3,
    dtype=np.float64,
):
    """(X, y, sample_weight, rows): TensorMaps whose stacked blocks have the given
    conditions, and for each key the row parts of X and y and the row weights."""
    keys = tuple((k,) for k in range(len(conditions)))
    X, y = make_pair(
        rng,
        keys=keys,
        n_systems=n_systems,
        n_atoms=2,
        n_features=n_features,
        n_targets=n_targets,
        n_components=n_components,
        gradients=gradients,
    )
    sample_weight = weight_map(y, lambda shape: rng.uniform(0.2, 3.0, size=shape))
    x_blocks, y_blocks, rows = [], [], {}
    for (key, x_block), condition in zip(X.items(), conditions):
        parameters = x_block.gradients_list()
        weights = weights_of_rows(sample_weight.block(key), parameters, gradient_weights)
        sizes = [len(w) for w in weights]
        singular = spectrum(condition, sum(sizes), n_features)
        x_parts = prescribed_rows(rng, sizes, singular, weights, intercept)
        x_parts = [p.astype(dtype) for p in x_parts]
        true_weights = rng.normal(size=(n_features, n_targets))
        y_parts = targets_of(rng, x_parts, true_weights, noise, intercept)
        y_parts = [p.astype(dtype) for p in y_parts]
        x_blocks.append(replace_stacked(x_block, np.vstack(x_parts)))
        y_blocks.append(replace_stacked(y.block(key), np.vstack(y_parts)))
        # the rows as the estimator sees them, read back from the blocks
        assert np.array_equal(stacked(x_blocks[-1], parameters), np.vstack(x_parts))
        rows[tuple(int(v) for v in key.values)] = (x_parts, y_parts, weights)
    return TensorMap(X.keys, x_blocks), TensorMap(X.keys, y_blocks), sample_weight, rows


def alpha_map(X, alpha):
    """A TensorMap of per-property penalties for every block of X."""
    blocks = [
        TensorBlock(
            np.asarray(alpha, dtype=np.float64)[None, :], Labels.range("s", 1), [], b.properties
        )
        for b in X.blocks()
    ]
    return TensorMap(X.keys, blocks)


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.5, "per-feature"])
@pytest.mark.parametrize("n_components", [0, 3])
def test_estimator_gram_path_equals_gelsd(paths, intercept, alpha, n_components):
    rng = np.random.default_rng(20 + n_components)
    gradient_weights = {"positions": 0.05, "cell": 2.0}
    X, y, sample_weight, rows = prescribed_maps(
        rng,
        [1e2, 9e3],
        intercept,
        n_components=n_components,
        gradient_weights=gradient_weights,
        n_systems=30 if n_components == 0 else 10,
    )
    per_feature = np.array([0.0, 2.0, 0.3, 1.0])
    penalty = alpha_map(X, per_feature) if alpha == "per-feature" else alpha
    model = TensorMapLstsq(
        alpha=penalty, fit_intercept=intercept, gradient_weights=gradient_weights
    )
    model.fit(X, y, sample_weight=sample_weight)
    assert (paths["gram"].count, paths["qr"].count) == (2, 0)
    for position, (key, (x_parts, y_parts, weights)) in enumerate(rows.items()):
        assert sum(len(p) for p in x_parts) >= 2 * (1 + 4 + 3)  # a tall block
        block_alpha = per_feature if alpha == "per-feature" else alpha
        reference = gelsd_reference(x_parts, y_parts, weights, intercept, block_alpha)
        weights_block = model.weights_.block(position)
        intercept_block = model.intercept_.block(position)
        found_intercept = intercept_block.values[:, 0] if intercept else None
        assert_weights_match(weights_block.values, found_intercept, reference)
        if not intercept:
            np.testing.assert_array_equal(intercept_block.values, 0.0)
        assert_gram_singular_values(model.singular_values_[key], reference)
        assert model.rank_[key] == reference.rank == 4


@pytest.mark.parametrize("intercept", [False, True])
def test_float32_input_is_solved_in_float64_and_rounded(paths, intercept):
    rng = np.random.default_rng(30)
    X, y, sample_weight, rows = prescribed_maps(
        rng, [1e2], intercept, gradients=("positions",), dtype=np.float32
    )
    assert X.block(0).values.dtype == np.float32
    model = TensorMapLstsq(fit_intercept=intercept).fit(X, y, sample_weight=sample_weight)
    assert paths["qr"].count == 0
    x_parts, y_parts, weights = rows[(0,)]
    # the reference: the same float32 numbers, solved in float64; float32 only
    # rounds the result, by at most half a float32 ulp (2^-24 relative, one ulp
    # allowed); the float64 solve's own error (condition 100) is ~1e-13
    reference = gelsd_reference(x_parts, y_parts, weights, intercept)
    found = model.weights_.block(0).values
    assert found.dtype == np.float32
    found_intercept = model.intercept_.block(0).values[:, 0] if intercept else None
    if intercept:
        assert found_intercept.dtype == np.float32
    assert_weights_match(found, found_intercept, reference, extra_rtol=2.0**-23)
    assert model.singular_values_[(0,)].dtype == np.float64
    assert_gram_singular_values(model.singular_values_[(0,)], reference)
    assert model.rank_[(0,)] == 4


# ---------------------------------------------------------------------------------
# 2. which blocks take the Gram path, and the QR fallback
# ---------------------------------------------------------------------------------


def rank_deficient_rows(rng, sizes, n_features=6, rank=3):
    """X = F G: rank ``rank`` whatever the weights."""
    product = rng.normal(size=(sum(sizes), rank)) @ rng.normal(size=(rank, n_features))
    return split_rows(product, sizes)


def fallback_case(rng, case, intercept, sizes=(300, 500)):
    """(x_parts, y_parts, weights, rcond) of a tall block the Gram path refuses."""
    weights = random_weights(rng, sizes)
    rcond = None
    n_rows = sum(sizes)
    if case == "condition 1e6":
        x_parts = prescribed_rows(rng, list(sizes), spectrum(1e6, n_rows, 6), weights, intercept)
    elif case == "condition 1.2e4":  # just above GRAM_CONDITION
        x_parts = prescribed_rows(
            rng, list(sizes), spectrum(1.2 * GRAM_CONDITION, n_rows, 6), weights, intercept
        )
    elif case == "rank-deficient":
        x_parts = rank_deficient_rows(rng, sizes)
        if intercept:
            x_parts[0] = x_parts[0] + 5.0
    else:  # "rcond cut": condition 1e3 (Gram-conditioned), rcond 1e-2 cuts the last value
        singular = np.sqrt(n_rows) * np.array([1.0, 0.5, 0.2, 0.1, 0.05, 1e-3])
        x_parts = prescribed_rows(rng, list(sizes), singular, weights, intercept)
        rcond = 1e-2
    true_weights = rng.normal(size=(6, 2))
    y_parts = targets_of(rng, x_parts, true_weights, 1e-6, intercept)
    return x_parts, y_parts, weights, rcond


FALLBACKS = ["condition 1e6", "condition 1.2e4", "rank-deficient", "rcond cut"]


@pytest.mark.parametrize("case", FALLBACKS)
@pytest.mark.parametrize("intercept", [False, True])
def test_blocks_the_gram_path_refuses_fall_back_to_qr_and_equal_gelsd(paths, case, intercept):
    rng = np.random.default_rng(40 + FALLBACKS.index(case))
    x_parts, y_parts, weights, rcond = fallback_case(rng, case, intercept)
    system = make_system(x_parts, y_parts, weights, intercept)
    solution = solve(system, rcond, None)
    # the Gram pass is made, then the QR factor: once each
    assert (paths["gram"].count, paths["qr"].count) == (1, 1)
    reference = gelsd_reference(x_parts, y_parts, weights, intercept, rcond=rcond)
    expected_rank = {"rank-deficient": 3, "rcond cut": 5}.get(case, 6)
    assert solution.rank == reference.rank == expected_rank
    assert_weights_match(solution.weights, solution.intercept, reference)
    if case != "rank-deficient":
        assert_qr_singular_values(solution.singular_values, reference)
    else:
        # the cut values are rounding errors (~1e-15 s_max): compare the kept ones
        np.testing.assert_allclose(solution.singular_values[:3], reference.singular[:3], rtol=1e-12)
        np.testing.assert_array_less(solution.singular_values[3:], 1e-12 * reference.singular[0])


@pytest.mark.parametrize("case", FALLBACKS)
def test_estimator_falls_back_to_qr_for_each_refused_block(paths, case):
    # two blocks: one the Gram path takes (condition 30, which rcond=1e-2 does
    # not cut either), one it refuses
    rng = np.random.default_rng(50 + FALLBACKS.index(case))
    good = tall_block(rng, 30.0, True)[:3]
    *bad, rcond = fallback_case(rng, case, True)
    keys = Labels(["center_type"], np.array([[1], [8]]))
    x_blocks, y_blocks, w_blocks = [], [], []
    for x_parts, y_parts, weights in (good, bad):
        x_blocks.append(gradient_block(x_parts, "feature"))
        y_blocks.append(gradient_block(y_parts, "target"))
        w_blocks.append(gradient_block([w[:, None] for w in weights], "weight"))
    X, y, w = (TensorMap(keys, blocks) for blocks in (x_blocks, y_blocks, w_blocks))
    model = TensorMapLstsq(rcond=rcond, fit_intercept=True).fit(X, y, sample_weight=w)
    assert (paths["gram"].count, paths["qr"].count) == (2, 1)
    for position, (x_parts, y_parts, weights) in enumerate((good, bad)):
        reference = gelsd_reference(x_parts, y_parts, weights, True, rcond=rcond)
        found = model.weights_.block(position).values
        found_intercept = model.intercept_.block(position).values[:, 0]
        assert_weights_match(found, found_intercept, reference)
        key = (int(keys.values[position, 0]),)
        assert model.rank_[key] == reference.rank


def gradient_block(parts, property_name):
    """A block whose values are ``parts[0]`` and whose one gradient ``g`` is ``parts[1]``
    (no components; the gradient rows go to the samples in turn)."""
    values, gradient = parts
    n_samples = values.shape[0]
    block = TensorBlock(
        np.ascontiguousarray(values),
        Labels.range("system", n_samples),
        [],
        Labels.range(property_name, values.shape[1]),
    )
    sample = np.arange(gradient.shape[0]) % n_samples
    block.add_gradient(
        "g",
        TensorBlock(
            np.ascontiguousarray(gradient),
            Labels(["sample", "row"], np.column_stack([sample, np.arange(gradient.shape[0])])),
            [],
            block.properties,
        ),
    )
    return block


def offset_rows(rng, n_values):
    """Value rows offset by 5 (targets by 100) and 500 weighted gradient rows of
    condition 1e3: ``(x_values, x_gradient, y_values, y_gradient, gradient_weights)``."""
    gradient_weights = rng.uniform(0.2, 3.0, size=500)
    x_values = rng.normal(size=(n_values, 6)) + 5.0
    (x_gradient,) = prescribed_rows(rng, [500], spectrum(1e3, 500, 6), [gradient_weights], False)
    true_weights = rng.normal(size=(6, 2))
    y_values = x_values @ true_weights + 100.0
    y_gradient = x_gradient @ true_weights + 1e-3 * rng.normal(size=(500, 2))
    return x_values, x_gradient, y_values, y_gradient, gradient_weights


@pytest.mark.parametrize("value_weights", ["zeros", "float zero"])
def test_no_weighted_value_row_with_an_intercept(paths, value_weights):
    # the value rows weigh nothing: the intercept is 0 and the weights are the
    # weighted fit of the gradient rows alone; the block is tall and well
    # conditioned, which the Gram path takes (the weighted means are zero and
    # the value rows add nothing to the Gram matrix)
    rng = np.random.default_rng(60)
    x_values, x_gradient, y_values, y_gradient, gradient_weights = offset_rows(rng, 30)
    weights = [np.zeros(30) if value_weights == "zeros" else 0.0, gradient_weights]
    system = make_system([x_values, x_gradient], [y_values, y_gradient], weights, intercept=True)
    solution = solve(system, None, None)
    assert (paths["gram"].count, paths["qr"].count) == (1, 0)
    np.testing.assert_array_equal(solution.intercept, 0.0)
    reference = gelsd_reference([x_gradient], [y_gradient], [gradient_weights])
    assert_weights_match(solution.weights, None, reference)
    assert_gram_singular_values(solution.singular_values, reference)
    assert solution.rank == reference.rank == 6


def test_estimator_with_no_weighted_value_row_and_an_intercept(paths):
    rng = np.random.default_rng(61)
    x_values, x_gradient, y_values, y_gradient, gradient_weights = offset_rows(rng, 50)
    keys = Labels(["center_type"], np.array([[3]]))
    X = TensorMap(keys, [gradient_block([x_values, x_gradient], "feature")])
    y = TensorMap(keys, [gradient_block([y_values, y_gradient], "target")])
    w = TensorMap(keys, [gradient_block([np.zeros((50, 1)), gradient_weights[:, None]], "weight")])
    model = TensorMapLstsq(fit_intercept=True).fit(X, y, sample_weight=w)
    assert paths["qr"].count == 0
    np.testing.assert_array_equal(model.intercept_.block(0).values, 0.0)
    reference = gelsd_reference([x_gradient], [y_gradient], [gradient_weights])
    assert_weights_match(model.weights_.block(0).values, None, reference)
    assert model.rank_[(3,)] == 6


@pytest.mark.parametrize("intercept", [False, True])
def test_the_gram_pass_starts_at_twice_as_many_rows_as_columns(paths, intercept):
    rng = np.random.default_rng(70)
    n_features, n_targets = 5, 2
    width = int(intercept) + n_features + n_targets
    for n_rows, gram_calls in [(2 * width - 1, 0), (2 * width, 1)]:
        paths["gram"].calls.clear()
        x = rng.normal(size=(n_rows, n_features)) + 5.0
        y = rng.normal(size=(n_rows, n_targets))
        weights = [rng.uniform(0.5, 2.0, size=n_rows)]
        solution = solve(make_system([x], [y], weights, intercept), None, None)
        assert paths["gram"].count == gram_calls
        reference = gelsd_reference([x], [y], weights, intercept)
        assert_weights_match(solution.weights, solution.intercept, reference)
        assert solution.rank == reference.rank == n_features


def test_torch_blocks_do_not_take_the_gram_path(paths):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(71)
    x_parts, y_parts, weights, _ = tall_block(rng, 1e2, True)
    system = BlockSystem(
        LABEL,
        [torch.from_numpy(p) for p in x_parts],
        [torch.from_numpy(p) for p in y_parts],
        torch.float64,
        weights,
        True,
    )
    solution = solve(system, None, None)
    assert (paths["gram"].count, paths["qr"].count) == (0, 1)
    reference = gelsd_reference(x_parts, y_parts, weights, True)
    assert_weights_match(solution.weights.numpy(), solution.intercept.numpy(), reference)


# ---------------------------------------------------------------------------------
# 3. many row steps and tasks, in threads
# ---------------------------------------------------------------------------------


@pytest.fixture
def small_steps(monkeypatch):
    """Row steps of 7 rows, tasks of max(20, 4 * width) rows (many of both)."""
    monkeypatch.setattr(factors_module, "GRAM_ROWS", 7)
    monkeypatch.setattr(factors_module, "CHUNK_ROWS", 20)
    tasks = Counter(factors_module._task_gram)
    monkeypatch.setattr(factors_module, "_task_gram", tasks)
    return tasks


def fit_arrays(X, y, sample_weight, **options):
    model = TensorMapLstsq(fit_intercept=True, **options).fit(X, y, sample_weight=sample_weight)
    return [
        (np.array(model.weights_.block(i).values), np.array(model.intercept_.block(i).values))
        for i in range(len(X.keys))
    ], model


def test_many_steps_and_tasks_equal_gelsd_and_are_bit_identical_in_threads(paths, small_steps):
    rng = np.random.default_rng(80)
    # blocks with components: 3-D values, 4-D gradients
    X, y, sample_weight, rows = prescribed_maps(rng, [9e3, 1e3], True, n_components=3, n_systems=8)
    assert X.block(0).values.ndim == 3 and X.block(0).gradient("cell").values.ndim == 4

    serial, model = fit_arrays(X, y, sample_weight, n_jobs=1)
    width = 1 + 4 + 3
    per_task = max(20, 4 * width) // 7
    first = -(-4 * (4 + 3) // 7)  # the first task: at least 4 x (features + targets) rows
    expected_tasks = 0
    for x_parts, _, _ in rows.values():
        steps = -(-sum(len(p) for p in x_parts) // 7)
        expected_tasks += 1 + -(-(steps - first) // per_task) if steps > first else 1
    assert small_steps.count == expected_tasks > 40
    assert paths["qr"].count == 0
    for (key, (x_parts, y_parts, weights)), (found, found_intercept) in zip(rows.items(), serial):
        reference = gelsd_reference(x_parts, y_parts, weights, True)
        assert_weights_match(found, found_intercept[:, 0], reference)
        assert model.rank_[key] == 4

    two_jobs, _ = fit_arrays(X, y, sample_weight, n_jobs=2)
    with threadpool_limits(1):
        one_thread, _ = fit_arrays(X, y, sample_weight)
    with ThreadPoolExecutor(1) as pool:
        from_worker, _ = pool.submit(fit_arrays, X, y, sample_weight, n_jobs=2).result()
    with ThreadPoolExecutor(1) as pool:
        from_worker_default, _ = pool.submit(fit_arrays, X, y, sample_weight).result()
    for other in (two_jobs, one_thread, from_worker, from_worker_default):
        for (weights, intercept), (other_weights, other_intercept) in zip(serial, other):
            np.testing.assert_array_equal(other_weights, weights)
            np.testing.assert_array_equal(other_intercept, intercept)
    assert paths["qr"].count == 0


def test_solve_with_a_thread_pool_is_bit_identical_to_the_sequential_solve(small_steps):
    rng = np.random.default_rng(81)
    x_parts, y_parts, weights, _ = tall_block(rng, 1e3, True, sizes=(400, 600))
    system = make_system(x_parts, y_parts, [weights[0], 0.5], True, 0.2)
    sequential = solve(system, None, None, workspace=Workspace())
    with ThreadPoolExecutor(3) as pool:
        threaded = solve(system, None, None, map_chunks=pool.map)
    np.testing.assert_array_equal(threaded.weights, sequential.weights)
    np.testing.assert_array_equal(threaded.intercept, sequential.intercept)
    np.testing.assert_array_equal(threaded.singular_values, sequential.singular_values)
    reference = gelsd_reference(x_parts, y_parts, [weights[0], np.full(600, 0.5)], True, 0.2)
    assert_weights_match(sequential.weights, sequential.intercept, reference)


# ---------------------------------------------------------------------------------
# 4. driver="gels"
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("condition, qr_calls", [(9e3, 0), (1e6, 1)])
def test_gels_on_a_full_rank_tall_block_equals_gelsd(paths, intercept, condition, qr_calls):
    rng = np.random.default_rng(90)
    X, y, sample_weight, rows = prescribed_maps(rng, [condition], intercept)
    model = TensorMapLstsq(driver="gels", fit_intercept=intercept)
    model.fit(X, y, sample_weight=sample_weight)
    # the Gram path up to GRAM_CONDITION, the QR factor's triangular solve above
    assert paths["qr"].count == qr_calls
    reference = gelsd_reference(*rows[(0,)], intercept)
    found_intercept = model.intercept_.block(0).values[:, 0] if intercept else None
    assert_weights_match(model.weights_.block(0).values, found_intercept, reference)
    # as for every "gels" fit: no rank, no singular values
    assert model.rank_[(0,)] is None
    assert model.singular_values_[(0,)] is None


@pytest.mark.parametrize("intercept", [False, True])
def test_gels_on_a_rank_deficient_tall_block_raises_naming_it(paths, intercept):
    rng = np.random.default_rng(91)
    x_parts = rank_deficient_rows(rng, [300, 500])
    y_parts = [rng.normal(size=(300, 2)), rng.normal(size=(500, 2))]
    keys = Labels(["center_type", "o3_lambda"], np.array([[6, 1]]))
    X = TensorMap(keys, [gradient_block(x_parts, "feature")])
    y = TensorMap(keys, [gradient_block(y_parts, "target")])
    with pytest.raises(
        np.linalg.LinAlgError,
        match=r"TensorMapLstsq.fit: driver 'gels' needs a full-rank block, but block "
        r"\(center_type=6, o3_lambda=1\) is rank-deficient",
    ):
        TensorMapLstsq(driver="gels", fit_intercept=intercept).fit(X, y)
    assert paths["gram"].count == 1


# ---------------------------------------------------------------------------------
# 5. the primitives: Cholesky, dsyrk, the Gram matrix and its refinement
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "matrix",
    [
        np.array([[1.0, 2.0], [2.0, 1.0]]),  # indefinite
        np.array([[1.0, 1.0], [1.0, 1.0]]),  # singular
        np.array([[-1.0, 0.0], [0.0, 2.0]]),
        np.zeros((3, 3)),
    ],
    ids=["indefinite", "singular", "negative", "zero"],
)
def test_cholesky_of_a_matrix_that_is_not_positive_definite_is_none(matrix):
    assert NumpyBackend.cholesky(np.asfortranarray(matrix)) is None


def test_cholesky_reads_the_upper_triangle_and_solves():
    rng = np.random.default_rng(100)
    a = rng.normal(size=(30, 5))
    gram = a.T @ a
    upper = np.asfortranarray(np.triu(gram) + np.tril(np.full((5, 5), 1e3), -1))
    factor = NumpyBackend.cholesky(upper)
    np.testing.assert_allclose(factor, scipy.linalg.cholesky(gram, lower=False), rtol=1e-13)
    np.testing.assert_array_equal(np.tril(factor, -1), 0.0)
    rhs = rng.normal(size=(5, 2))
    np.testing.assert_allclose(
        NumpyBackend.cholesky_solve(factor, rhs), np.linalg.solve(gram, rhs), rtol=1e-12
    )


@pytest.mark.parametrize("n", [0, 1, 7, 60])
def test_symmetric_eigenvalues_read_the_upper_triangle_and_equal_numpy(n):
    rng = np.random.default_rng(102 + n)
    a = rng.normal(size=(3 * n + 1, n))
    gram = a.T @ a
    upper = np.asfortranarray(np.triu(gram) + np.tril(np.full((n, n), 1e3), -1))
    found = NumpyBackend.symmetric_eigenvalues(upper)
    np.testing.assert_allclose(found, np.linalg.eigvalsh(gram), rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(found) >= 0)  # ascending
    np.testing.assert_array_equal(upper, np.triu(gram) + np.tril(np.full((n, n), 1e3), -1))


def test_singular_values_of_the_gram_path_are_those_of_the_weighted_centred_rows(paths):
    rng = np.random.default_rng(103)
    x_parts, y_parts, weights, _ = tall_block(rng, 50.0, True)
    solution = solve(make_system(x_parts, y_parts, weights, intercept=True), None, None)
    assert paths["gram"].count == 1 and paths["qr"].count == 0
    reference = gelsd_reference(x_parts, y_parts, weights, intercept=True)
    np.testing.assert_allclose(solution.singular_values, reference.singular, rtol=1e-12)


def test_eigenvalues_that_do_not_converge_leave_the_block_to_the_qr(paths, monkeypatch):
    rng = np.random.default_rng(104)
    x_parts, y_parts, weights, _ = tall_block(rng, 10.0, True)

    def no_convergence(matrix):
        raise np.linalg.LinAlgError("LAPACK syevd did not converge (info=1)")

    monkeypatch.setattr(NumpyBackend, "symmetric_eigenvalues", staticmethod(no_convergence))
    solution = solve(make_system(x_parts, y_parts, weights, intercept=True), None, None)
    assert paths["gram"].count == 1 and paths["qr"].count == 1
    reference = gelsd_reference(x_parts, y_parts, weights, intercept=True)
    assert_weights_match(solution.weights, solution.intercept, reference)


def test_add_gram_on_workspace_matrices_accumulates_the_upper_triangle():
    rng = np.random.default_rng(101)
    first, second = rng.normal(size=(40, 6)), rng.normal(size=(13, 6)) + 3.0
    workspace = Workspace()
    gram = NumpyBackend.gram(6)
    assert gram.flags.f_contiguous and not gram.any()
    for rows in (first, second, np.zeros((0, 6))):
        matrix = workspace.matrix(rows.shape)
        matrix[:] = rows
        NumpyBackend.add_gram(gram, matrix)
    expected = first.T @ first + second.T @ second
    # sums of 53 products: |error| <= 53 eps sum |a_ki a_kj|
    magnitude = np.abs(first).T @ np.abs(first) + np.abs(second).T @ np.abs(second)
    upper = np.triu_indices(6)
    np.testing.assert_array_less(
        np.abs(gram - expected)[upper], 53 * EPS * magnitude[upper] + 1e-300
    )


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("gram_rows", [7, 1000])
def test_gram_matrix_is_the_upper_triangle_of_the_weighted_centred_rows(
    monkeypatch, intercept, gram_rows
):
    monkeypatch.setattr(factors_module, "GRAM_ROWS", gram_rows)
    rng = np.random.default_rng(102)
    sizes = [45, 30, 12]
    x_parts = [rng.normal(size=(n, 4)) + 5.0 for n in sizes]
    y_parts = [rng.normal(size=(n, 2)) - 2.0 for n in sizes]
    row_weights = [rng.uniform(0.0, 2.0, size=45), 0.25, None]
    system = make_system(x_parts, y_parts, row_weights, intercept)
    weights = [row_weights[0], np.full(30, 0.25), np.ones(12)]
    # by hand: centre the value rows on their weighted means, weight, stack
    x_mean = np.average(x_parts[0], axis=0, weights=weights[0])
    y_mean = np.average(y_parts[0], axis=0, weights=weights[0])
    means = value_means(system)
    if intercept:
        np.testing.assert_allclose(means[0], x_mean, rtol=1e-14)
        np.testing.assert_allclose(means[1], y_mean, rtol=1e-14)
    rows = [np.column_stack([x, y]) for x, y in zip(x_parts, y_parts)]
    if intercept:
        rows[0] = rows[0] - np.r_[x_mean, y_mean]
    c = np.vstack([np.sqrt(w)[:, None] * r for w, r in zip(weights, rows)])
    gram = gram_matrix(system, means if intercept else None)
    assert gram.shape == (6, 6) and gram.dtype == np.float64 and gram.flags.f_contiguous
    upper = np.triu_indices(6)
    magnitude = np.abs(c).T @ np.abs(c)
    np.testing.assert_array_less(
        np.abs(gram - c.T @ c)[upper], 100 * EPS * magnitude[upper] + 1e-300
    )


def test_value_means_of_unweighted_value_rows_are_zero():
    rng = np.random.default_rng(103)
    system = make_system([rng.normal(size=(9, 3)) + 4.0], [rng.normal(size=(9, 1))], [0.0], True)
    x_mean, y_mean = value_means(system)
    np.testing.assert_array_equal(x_mean, 0.0)
    np.testing.assert_array_equal(y_mean, 0.0)


@pytest.mark.parametrize("intercept", [False, True])
def test_residual_gradient_is_that_of_the_weighted_centred_residual(monkeypatch, intercept):
    monkeypatch.setattr(factors_module, "GRAM_ROWS", 7)
    rng = np.random.default_rng(104)
    sizes = [40, 25]
    x_parts = [rng.normal(size=(n, 4)) + 5.0 for n in sizes]
    y_parts = [rng.normal(size=(n, 2)) for n in sizes]
    weights = [rng.uniform(0.1, 2.0, size=40), np.full(25, 1.5)]
    system = make_system(x_parts, y_parts, [weights[0], 1.5], intercept)
    w = rng.normal(size=(4, 2))
    x_mean = np.average(x_parts[0], axis=0, weights=weights[0]) if intercept else None
    offset = rng.normal(size=2) if intercept else None
    found = residual_gradient(system, w, offset, x_mean)
    # by hand: C = A with centred value rows, r = B - C w - c (c on value rows only)
    centred = [x_parts[0] - x_mean if intercept else x_parts[0], x_parts[1]]
    residuals = [
        y_parts[0] - x_parts[0] @ w - (offset if intercept else 0.0),
        y_parts[1] - x_parts[1] @ w,
    ]
    expected = sum(c.T @ (wt[:, None] * r) for c, wt, r in zip(centred, weights, residuals))
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-11)


# ---------------------------------------------------------------------------------
# 6. inputs are not mutated
# ---------------------------------------------------------------------------------


def arrays_of(tensor):
    arrays = []
    for block in tensor.blocks():
        arrays.append(np.array(block.values, copy=True))
        for _, gradient in block.gradients():
            arrays.append(np.array(gradient.values, copy=True))
    return arrays


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inputs_are_not_mutated(paths, small_steps, dtype):
    rng = np.random.default_rng(110)
    X, y, sample_weight, rows = prescribed_maps(
        rng, [1e2, 9e3], True, gradient_weights={"cell": 0.5}, dtype=dtype
    )
    penalty = alpha_map(X, [0.0, 1.0, 0.5, 2.0])
    before = [arrays_of(t) for t in (X, y, sample_weight, penalty)]
    gradient_weights = {"cell": 0.5}
    model = TensorMapLstsq(alpha=penalty, fit_intercept=True, gradient_weights=gradient_weights)
    model.fit(X, y, sample_weight=sample_weight)
    assert paths["qr"].count == 0
    for tensor, arrays in zip((X, y, sample_weight, penalty), before):
        for found, expected in zip(arrays_of(tensor), arrays):
            np.testing.assert_array_equal(found, expected)
            assert found.dtype == expected.dtype
    assert gradient_weights == {"cell": 0.5}
    # and the row parts of a block system, solved directly
    x_parts, y_parts, weights = rows[(1,)]
    copies = [p.copy() for p in (*x_parts, *y_parts, *weights)]
    solve(make_system(x_parts, y_parts, weights, True, 0.3), None, None)
    for found, expected in zip((*x_parts, *y_parts, *weights), copies):
        np.testing.assert_array_equal(found, expected)


# ---------------------------------------------------------------------------------
# 7. the Gram pass stops after the first rows of a badly conditioned block
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("intercept", [False, True])
def test_a_badly_conditioned_block_stops_the_gram_pass_after_its_first_rows(
    paths, small_steps, intercept
):
    rng = np.random.default_rng(90)
    weights = random_weights(rng, (300, 500))
    x_parts = prescribed_rows(rng, [300, 500], spectrum(1e9, 800, 6), weights, intercept)
    y_parts = targets_of(rng, x_parts, rng.normal(size=(6, 2)), 1e-6, intercept)
    system = make_system(x_parts, y_parts, weights, intercept)
    solution = solve(system, None, None)
    # one task of the Gram pass (the first 4 x 8 rows, in 7-row steps), then the QR
    assert small_steps.count == 1
    assert (paths["gram"].count, paths["qr"].count) == (1, 1)
    reference = gelsd_reference(x_parts, y_parts, weights, intercept)
    assert solution.rank == reference.rank == 6
    assert_weights_match(solution.weights, solution.intercept, reference)
    assert_qr_singular_values(solution.singular_values, reference)


def test_first_rows_that_do_not_tell_a_well_conditioned_block_fall_back_and_equal_gelsd(
    paths, small_steps
):
    # the first 40 value rows do not use feature 0: their Gram matrix is singular,
    # while the block's condition number is 10 -- the QR solve then gives the
    # same weights, only later
    rng = np.random.default_rng(91)
    x_parts, y_parts, weights, _ = tall_block(rng, 10.0, False)
    x_parts[0] = x_parts[0].copy()
    x_parts[0][:40, 0] = 0.0
    system = make_system(x_parts, y_parts, weights)
    solution = solve(system, None, None)
    assert small_steps.count == 1
    assert paths["qr"].count == 1
    reference = gelsd_reference(x_parts, y_parts, weights)
    assert_weights_match(solution.weights, solution.intercept, reference)


def test_a_block_badly_conditioned_only_over_all_rows_takes_the_whole_gram_pass(paths, small_steps):
    # the first rows are well-conditioned, the block is not: every task is
    # computed, and the decision on all rows sends it to the QR factor
    rng = np.random.default_rng(92)
    good = rng.normal(size=(40, 6))
    tail = prescribed_rows(rng, [760], spectrum(1e8, 760, 6), [np.ones(760)], False)[0]
    tail *= 1e4  # the rows that dominate the block
    x_parts = [np.vstack([good, tail])]
    y_parts = [x_parts[0] @ rng.normal(size=(6, 1))]
    system = make_system(x_parts, y_parts)
    solution = solve(system, None, None)
    assert small_steps.count > 1
    assert paths["qr"].count == 1
    reference = gelsd_reference(x_parts, y_parts)
    assert_weights_match(solution.weights, solution.intercept, reference)
