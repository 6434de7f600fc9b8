"""The block solves of skmetalstsq._factors and ._solvers against LAPACK on stacked arrays.

Every expected value is computed independently: ``scipy.linalg.lstsq`` or
``numpy.linalg.lstsq`` on the rows stacked with ``numpy.vstack`` (centred on their
weighted means, scaled by the square roots of their weights and stacked with
``sqrt(alpha) * I`` rows by hand), scikit-learn's ``LinearRegression`` and ``Ridge``
with ``sample_weight``, or numpy's SVD by hand.
"""

import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.linalg
from sklearn.linear_model import LinearRegression, Ridge

from skmetalstsq._backends import FACTOR_DTYPE, Workspace, result_dtype
from skmetalstsq._blocks import BlockSystem
from skmetalstsq._factors import (
    CHUNK_ROWS,
    Factor,
    chunk_factor,
    chunk_rows_for,
    factorize,
    fold_factors,
    row_chunks,
)
from skmetalstsq._solvers import (
    DRIVERS,
    SVDFactorization,
    default_rcond,
    factor_solution,
    solve,
    uses_factor,
)

try:
    import torch
except ImportError:  # pragma: no cover - torch is installed in the tests
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
needs_cuda = pytest.mark.skipif(
    torch is None or not torch.cuda.is_available(), reason="CUDA is not available"
)

RCOND = 1e-10
EPS = np.finfo(np.float64).eps
LABEL = "(center_type=8, o3_lambda=1)"
BACKENDS = ["numpy", pytest.param("torch", marks=needs_torch)]
ALL_DRIVERS = [None, *DRIVERS]


# ---------------------------------------------------------------------------------
# systems and independent references
# ---------------------------------------------------------------------------------


def split_rows(matrix, sizes):
    """``matrix`` cut into consecutive row parts of the given sizes (views)."""
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == matrix.shape[0]
    return [matrix[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def random_parts(rng, sizes, n_features, n_targets, dtype=np.float64):
    """Row parts of X and y (as values and gradients would be) and their stack."""
    n_rows = sum(sizes)
    a = rng.normal(size=(n_rows, n_features)).astype(dtype)
    b = rng.normal(size=(n_rows, n_targets)).astype(dtype)
    return split_rows(a, sizes), split_rows(b, sizes), a, b


def rank_deficient(rng, n_rows):
    """Columns: 3 random, one duplicated, one scaled by 1e3, one zero (rank 3)."""
    base = rng.normal(size=(n_rows, 3))
    return np.column_stack([base, base[:, 0], 1e3 * base[:, 1], np.zeros(n_rows)])


def as_numpy(array):
    if torch is not None and torch.is_tensor(array):
        return array.detach().cpu().to(torch.float64).numpy()
    return array


def to_backend(backend, parts, dtype=None):
    """The arrays of ``parts`` as numpy arrays or torch CPU tensors (of ``dtype``)."""
    if backend == "numpy":
        return [np.asarray(part) for part in parts]
    return [torch.tensor(np.asarray(part), dtype=dtype) for part in parts]


def make_system(a_parts, b_parts, row_weights=None, intercept=False, alpha=0.0, label=LABEL):
    """A BlockSystem of the given row parts, returned in their own dtype."""
    a_parts, b_parts = list(a_parts), list(b_parts)
    dtype = result_dtype(a_parts[0], b_parts[0])
    return BlockSystem(label, a_parts, b_parts, dtype, row_weights, intercept, alpha)


def backend_system(backend, a_parts, b_parts, **options):
    """:func:`make_system` on numpy parts converted to ``backend``."""
    return make_system(to_backend(backend, a_parts), to_backend(backend, b_parts), **options)


def gelsd(a, b, rcond=RCOND):
    """(weights as (n_targets, n_features), rank, singular values) from scipy's gelsd."""
    weights, _, rank, singular = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver="gelsd")
    return weights.T, rank, singular


def weights_per_row(parts, row_weights):
    """One float64 weight per row of each part (None: every row weighs 1)."""
    if row_weights is None:
        row_weights = [None] * len(parts)
    return [
        np.ones(len(part)) if w is None else np.broadcast_to(np.asarray(w, float), (len(part),))
        for part, w in zip(parts, row_weights)
    ]


def weighted_stack(a_parts, b_parts, row_weights=None, intercept=False):
    """(A, B, x_mean, y_mean): the rows centred (part 0 on its weighted means, with an
    intercept), scaled by the square roots of their weights, stacked by numpy."""
    a_parts = [np.asarray(p, dtype=np.float64) for p in a_parts]
    b_parts = [np.asarray(p, dtype=np.float64) for p in b_parts]
    weights = weights_per_row(a_parts, row_weights)
    x_mean = y_mean = None
    if intercept:
        total = weights[0].sum()
        if total > 0:
            # normalised first: the mean of one row (of weight > 0) is that row
            x_mean = (weights[0] / total) @ a_parts[0]
            y_mean = (weights[0] / total) @ b_parts[0]
        else:
            x_mean = np.zeros(a_parts[0].shape[1])
            y_mean = np.zeros(b_parts[0].shape[1])
        a_parts[0] = a_parts[0] - x_mean
        b_parts[0] = b_parts[0] - y_mean
    root = [np.sqrt(w)[:, None] for w in weights]
    a = np.vstack([r * p for r, p in zip(root, a_parts)])
    b = np.vstack([r * p for r, p in zip(root, b_parts)])
    return a, b, x_mean, y_mean


def reference(
    a_parts, b_parts, row_weights=None, intercept=False, alpha=0.0, rcond=RCOND, driver="gelsd"
):
    """(weights, intercept) from scipy on the weighted, centred rows stacked with
    ``sqrt(alpha) * I`` rows."""
    a, b, x_mean, y_mean = weighted_stack(a_parts, b_parts, row_weights, intercept)
    n_features = a.shape[1]
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_features,))
    if (alpha > 0).any():
        a = np.vstack([a, np.diag(np.sqrt(alpha))])
        b = np.vstack([b, np.zeros((n_features, b.shape[1]))])
    if a.shape[0] == 0 or n_features == 0:
        weights = np.zeros((b.shape[1], n_features))
    else:
        weights = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver=driver)[0].T
    return weights, None if x_mean is None else y_mean - weights @ x_mean


def factor_solve(system, rcond=RCOND, chunk_rows=None, alpha=0.0):
    return factor_solution(factorize(system, chunk_rows=chunk_rows), rcond, alpha)


def assert_solution(solution, expected, rtol=1e-9, atol=1e-11):
    weights, rank, singular = expected
    np.testing.assert_allclose(as_numpy(solution.weights), weights, rtol=rtol, atol=atol)
    assert solution.rank == rank
    np.testing.assert_allclose(as_numpy(solution.singular_values), singular, rtol=rtol, atol=atol)


def assert_weights(solution, expected, rtol=1e-9, atol=1e-11):
    """Weights (and intercept, when expected) of ``solution`` equal ``expected``."""
    weights, intercept = expected
    np.testing.assert_allclose(as_numpy(solution.weights), weights, rtol=rtol, atol=atol)
    if intercept is None:
        assert solution.intercept is None
    else:
        np.testing.assert_allclose(as_numpy(solution.intercept), intercept, rtol=rtol, atol=atol)


def tall_weighted(rng, sizes=(40, 25), n_features=4, n_targets=2):
    """Row parts and one weight array per part (some rows weigh 0)."""
    a_parts, b_parts, _, _ = random_parts(rng, list(sizes), n_features, n_targets)
    weights = [rng.uniform(0.1, 3.0, size=size) for size in sizes]
    weights[0][::7] = 0.0
    return a_parts, b_parts, weights


# ---------------------------------------------------------------------------------
# row chunks and workspaces
# ---------------------------------------------------------------------------------


def test_row_chunks_cover_every_row_in_order_with_full_chunks():
    a = np.arange(60.0).reshape(30, 2)
    b = -np.arange(30.0).reshape(30, 1)
    sizes = [5, 13, 1, 0, 11]
    chunks = row_chunks(make_system(split_rows(a, sizes), split_rows(b, sizes)), chunk_rows=7)
    lengths = [sum(piece[0].shape[0] for piece in pieces) for pieces in chunks]
    assert lengths == [7, 7, 7, 7, 2]
    pieces = [piece for chunk in chunks for piece in chunk]
    np.testing.assert_array_equal(np.vstack([p[0] for p in pieces]), a)
    np.testing.assert_array_equal(np.vstack([p[1] for p in pieces]), b)
    # no weights, no intercept column
    assert all(p[2] is None and p[3] is None for p in pieces)
    # views of the parts, no copies
    assert all(np.shares_memory(p[0], a) and np.shares_memory(p[1], b) for p in pieces)


def test_row_chunks_carry_square_root_weights_and_the_ones_column():
    rng = np.random.default_rng(20)
    sizes = [9, 4, 6]
    a_parts, b_parts, a, _ = random_parts(rng, sizes, n_features=3, n_targets=1)
    weights = [rng.uniform(size=9), 0.25, None]
    system = make_system(a_parts, b_parts, weights, intercept=True)
    pieces = [piece for chunk in row_chunks(system, chunk_rows=4) for piece in chunk]
    np.testing.assert_array_equal(np.vstack([p[0] for p in pieces]), a)
    expected_scale = [np.sqrt(weights[0]), np.full(4, 0.5), np.ones(6)]
    scale = np.concatenate(
        [
            np.full(p[0].shape[0], 1.0 if p[2] is None else p[2]) if np.ndim(p[2]) == 0 else p[2]
            for p in pieces
        ]
    )
    np.testing.assert_allclose(scale, np.concatenate(expected_scale), rtol=1e-15)
    # the float weight of a whole part stays a float, no weight stays None
    assert all(isinstance(p[2], float) for p in pieces[3:5])
    assert all(p[2] is None for p in pieces[5:])
    ones = np.concatenate([np.full(p[0].shape[0], p[3]) for p in pieces])
    np.testing.assert_array_equal(ones, np.r_[np.ones(9), np.zeros(10)])


def test_chunk_rows_for_is_at_least_four_times_the_width():
    assert chunk_rows_for(3) == CHUNK_ROWS
    assert chunk_rows_for(CHUNK_ROWS) == 4 * CHUNK_ROWS


def test_workspace_matrices_are_float64_fortran_ordered_and_reused():
    workspace = Workspace()
    first = workspace.matrix((6, 4))
    second = workspace.matrix((5, 3))
    assert first.flags.f_contiguous and second.flags.f_contiguous
    assert first.dtype == second.dtype == FACTOR_DTYPE == np.float64
    assert second.shape == (5, 3) and np.shares_memory(first, second)
    larger = workspace.matrix((10, 10))
    assert larger.shape == (10, 10) and larger.flags.f_contiguous


def test_chunk_factor_is_the_triangular_factor_of_the_weighted_rows():
    rng = np.random.default_rng(21)
    a_parts, b_parts, weights = tall_weighted(rng, sizes=(12, 8), n_features=3, n_targets=1)
    system = make_system(a_parts, b_parts, weights, intercept=True)
    (pieces,) = row_chunks(system, chunk_rows=100)
    r = chunk_factor(pieces, Workspace())
    ones = np.r_[np.ones(12), np.zeros(8)]
    w = np.concatenate(weights)
    rows = np.sqrt(w)[:, None] * np.column_stack([ones, np.vstack(a_parts), np.vstack(b_parts)])
    # R is unique up to the signs of its rows: compare R^T R
    assert r.shape == (5, 5) and r.dtype == np.float64
    np.testing.assert_allclose(r.T @ r, rows.T @ rows, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.tril(r, -1), 0.0)


# ---------------------------------------------------------------------------------
# the default solve against gelsd on the stacked arrays
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 40, 10_000])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_factor_solve_equals_stacked_gelsd_on_tall_blocks(chunk_rows, n_targets):
    rng = np.random.default_rng(0)
    a_parts, b_parts, a, b = random_parts(rng, [12, 90, 3, 45], 6, n_targets)
    solution = factor_solve(make_system(a_parts, b_parts), chunk_rows=chunk_rows)
    assert_solution(solution, gelsd(a, b))
    assert solution.intercept is None
    np.testing.assert_allclose(
        solution.weights, np.linalg.lstsq(a, b, rcond=RCOND)[0].T, rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("chunk_rows", [4, 50, 10_000])
def test_factor_solve_rank_deficient_equals_gelsd(chunk_rows):
    rng = np.random.default_rng(1)
    a = rank_deficient(rng, 120)
    b = rng.normal(size=(120, 2))
    sizes = [20, 100]
    system = make_system(split_rows(a, sizes), split_rows(b, sizes))
    solution = factor_solve(system, chunk_rows=chunk_rows)
    weights, rank, singular = gelsd(a, b)
    assert rank == 3
    assert solution.rank == rank
    np.testing.assert_allclose(solution.weights, weights, rtol=1e-9, atol=1e-11)
    # the cut singular values are ~1e-13 or below: compare the kept ones closely
    np.testing.assert_allclose(solution.singular_values[:3], singular[:3], rtol=1e-10)
    np.testing.assert_array_less(solution.singular_values[3:], RCOND * singular[0])


@pytest.mark.parametrize("n_rows", [1, 3, 5])
def test_factor_solve_wide_blocks_give_the_minimum_norm_solution(n_rows):
    rng = np.random.default_rng(2)
    a_parts, b_parts, a, b = random_parts(rng, [n_rows], n_features=8, n_targets=2)
    assert_solution(factor_solve(make_system(a_parts, b_parts), chunk_rows=2), gelsd(a, b))


def test_factor_solve_zero_rows_gives_zero_weights():
    a = np.zeros((0, 4))
    b = np.zeros((0, 2))
    factor = factorize(make_system([a], [b]))
    assert factor.r.shape == (0, 6) and factor.n_rows == 0
    solution = factor_solution(factor, RCOND)
    weights, rank, singular = gelsd(a, b)
    np.testing.assert_array_equal(solution.weights, weights)
    assert solution.weights.shape == (2, 4)
    assert solution.rank == rank == 0
    assert solution.singular_values.shape == singular.shape == (0,)


def test_factor_solve_zero_features():
    rng = np.random.default_rng(3)
    system = make_system([np.zeros((10, 0))], [rng.normal(size=(10, 2))])
    solution = factor_solve(system)
    assert solution.weights.shape == (2, 0)
    assert solution.rank == 0
    assert solution.singular_values.shape == (0,)


@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_float32_is_factorised_in_float64_and_returned_in_float32(driver):
    rng = np.random.default_rng(4)
    a_parts, b_parts, a, b = random_parts(rng, [30, 70], 5, 2, dtype=np.float32)
    system = make_system(a_parts, b_parts)
    assert system.dtype == np.float32
    solution = solve(system, RCOND, driver)
    assert solution.weights.dtype == np.float32
    # numpy.linalg.lstsq computes float32 data in float64 too: the two agree to
    # the rounding of the result to float32, not to float32's own precision
    expected, _, rank, singular = np.linalg.lstsq(a, b, rcond=RCOND)
    assert expected.dtype == np.float32
    np.testing.assert_allclose(solution.weights, expected.T, rtol=1e-6, atol=1e-7)
    if driver != "gels":
        assert solution.rank == rank == 5
    if driver in (None, "gelsd", "gelss"):
        float64_singular = np.linalg.svd(a.astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(solution.singular_values, float64_singular, rtol=1e-12)
        np.testing.assert_allclose(solution.singular_values, singular, rtol=1e-6)


def test_float32_factor_is_float64_when_chunked():
    rng = np.random.default_rng(40)
    a_parts, b_parts, a, b = random_parts(rng, [30, 70], 5, 2, dtype=np.float32)
    factor = factorize(make_system(a_parts, b_parts), chunk_rows=16)
    assert factor.r.dtype == np.float64
    solution = factor_solution(factor, RCOND)
    assert solution.weights.dtype == np.float64
    weights, rank, _ = gelsd(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(solution.weights, weights, rtol=1e-12, atol=1e-13)
    assert solution.rank == rank


def test_factor_solve_does_not_stack_the_rows():
    # a block of 8 MB streamed in chunks of 500 rows: numpy never holds more
    # than a few chunks (tracemalloc sees numpy's allocations)
    rng = np.random.default_rng(5)
    a_parts, b_parts, a, b = random_parts(rng, [4000, 16_000], n_features=49, n_targets=1)
    system = make_system(a_parts, b_parts)
    tracemalloc.start()
    try:
        solution = factor_solve(system, chunk_rows=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * (a.nbytes + b.nbytes)
    assert_solution(solution, gelsd(a, b))


def test_weighted_factor_with_intercept_does_not_stack_the_rows():
    rng = np.random.default_rng(50)
    a_parts, b_parts, a, b = random_parts(rng, [4000, 16_000], n_features=49, n_targets=1)
    weights = [rng.uniform(size=4000), 0.5]
    system = make_system(a_parts, b_parts, weights, intercept=True)
    system.row_scale(0)  # the square roots of the weights are the system's own
    tracemalloc.start()
    try:
        solution = factor_solve(system, chunk_rows=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * (a.nbytes + b.nbytes)
    assert_weights(solution, reference(a_parts, b_parts, weights, intercept=True))


@pytest.mark.parametrize("weighted", [False, True])
def test_chunks_factorised_in_threads_give_identical_factors(weighted):
    rng = np.random.default_rng(6)
    a_parts, b_parts, _, _ = random_parts(rng, [33, 260], n_features=7, n_targets=2)
    options = {}
    if weighted:
        options = dict(row_weights=[rng.uniform(size=33), 2.0], intercept=True, alpha=0.5)
    system = make_system(a_parts, b_parts, **options)
    sequential = factorize(system, chunk_rows=20, workspace=Workspace())
    with ThreadPoolExecutor(3) as pool:
        threaded = factorize(system, chunk_rows=20, map_chunks=pool.map)
        threaded_solution = solve(system, RCOND, None, map_chunks=pool.map)
    np.testing.assert_array_equal(threaded.r, sequential.r)
    assert threaded.n_rows == sequential.n_rows == 293
    # and solve with a thread pool: the same weights as the sequential solve
    np.testing.assert_array_equal(threaded_solution.weights, solve(system, RCOND, None).weights)


def test_fold_factors_of_nothing_is_none():
    assert fold_factors([]) is None


# ---------------------------------------------------------------------------------
# the rcond cut
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_singular_values_at_most_rcond_times_the_largest_are_cut(backend):
    # a diagonal A: QR and SVD are exact, so the cut-off can be met exactly
    singular = np.array([4.0, 2.0, 1.0, 0.5])
    a = np.vstack([np.diag(singular), np.zeros((3, 4))])
    b = np.arange(1.0, 8.0).reshape(7, 1)
    system = backend_system(backend, [a], [b])
    for rcond, kept in [(0.25, 2), (0.2499, 3), (0.125, 3), (0.1249, 4), (0.9, 1)]:
        for solution in (solve(system, rcond, None), factor_solve(system, rcond)):
            expected = np.zeros((1, 4))
            expected[0, :kept] = np.arange(1.0, 5.0)[:kept] / singular[:kept]
            assert solution.rank == kept
            np.testing.assert_allclose(as_numpy(solution.weights), expected, rtol=1e-15)
            np.testing.assert_allclose(as_numpy(solution.singular_values), singular, rtol=1e-15)
        # LAPACK makes the same cut
        lapack_rank = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver="gelsd")[2]
        assert lapack_rank == kept


@pytest.mark.parametrize("margin", [1 - 1e-6, 1 + 1e-6])
def test_rcond_cut_on_graded_singular_values_matches_gelsd(margin):
    rng = np.random.default_rng(7)
    u, _ = np.linalg.qr(rng.normal(size=(50, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    singular = np.logspace(0, -8, 5)
    a = u @ np.diag(singular) @ v.T
    b = rng.normal(size=(50, 1))
    rcond = 1e-4 * margin  # just below / above the third singular value
    system = make_system(split_rows(a, [10, 40]), split_rows(b, [10, 40]))
    solution = factor_solve(system, rcond, chunk_rows=8)
    kept = 3 if margin < 1 else 2
    assert solution.rank == kept
    # by hand: V_r S_r^-1 U_r^T b
    expected = (v[:, :kept] @ ((u[:, :kept].T @ b) / singular[:kept, None])).T
    np.testing.assert_allclose(solution.weights, expected, rtol=1e-6)
    assert_solution(solution, gelsd(a, b, rcond), rtol=1e-6, atol=1e-8)


def test_default_rcond_is_float64_eps_times_the_larger_dimension():
    assert default_rcond(40, 6) == EPS * 40
    assert default_rcond(3, 8) == EPS * 8
    assert default_rcond(0, 0) == 0.0


def test_rcond_none_is_eps_times_the_larger_dimension():
    rng = np.random.default_rng(8)
    a = rank_deficient(rng, 40)
    b = rng.normal(size=(40, 1))
    solution = solve(make_system([a[:15], a[15:]], [b[:15], b[15:]]), None, None)
    assert_solution(solution, gelsd(a, b, EPS * max(a.shape)))
    assert solution.rank == np.linalg.lstsq(a, b, rcond=None)[2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss", "gelsy"])
def test_rcond_none_for_float32_is_float64_eps(backend, driver):
    # a singular value at 1e-9 of the largest: kept by float64's eps * max(m, n)
    # (numpy's default for float32 data too), cut by float32's eps * max(m, n)
    a = np.zeros((6, 3), dtype=np.float32)
    a[[0, 1, 2], [0, 1, 2]] = [2.0, 1.0, 2e-9]
    b = np.arange(1.0, 7.0, dtype=np.float32).reshape(6, 1)
    expected, _, rank, _ = np.linalg.lstsq(a, b, rcond=None)
    assert rank == 3
    system = make_system(to_backend(backend, [a]), to_backend(backend, [b]))
    solution = solve(system, None, driver)
    assert solution.rank == 3
    np.testing.assert_allclose(as_numpy(solution.weights), expected.T, rtol=1e-6)
    assert as_numpy(solution.weights)[0, 2] == pytest.approx(3.0 / 2e-9, rel=1e-6)


def test_svd_factorization_gives_gelsd_for_every_rcond():
    rng = np.random.default_rng(9)
    a = rank_deficient(rng, 80) + 1e-6 * rng.normal(size=(80, 6))
    b = rng.normal(size=(80, 2))
    factor = factorize(make_system(split_rows(a, [30, 50]), split_rows(b, [30, 50])), 16)
    factorization = SVDFactorization(factor)
    np.testing.assert_allclose(
        factorization.singular_values, np.linalg.svd(a, compute_uv=False), rtol=1e-9
    )
    for rcond in [1e-12, 1e-8, 1e-4, 1e-1]:
        weights, rank, _ = gelsd(a, b, rcond)
        assert factorization.rank(rcond) == rank
        solution = factorization.solve(rcond)
        assert solution.rank == rank
        assert solution.intercept is None
        np.testing.assert_allclose(solution.weights, weights, rtol=1e-7, atol=1e-9)
    assert factorization.rank(None) == gelsd(a, b, EPS * 80)[1]


def test_svd_factorization_with_weights_penalty_and_intercept():
    rng = np.random.default_rng(90)
    a_parts, b_parts, weights = tall_weighted(rng)
    system = make_system(a_parts, b_parts, weights, intercept=True)
    factorization = SVDFactorization(factorize(system, chunk_rows=9))
    a, _, _, _ = weighted_stack(a_parts, b_parts, weights, intercept=True)
    np.testing.assert_allclose(
        factorization.singular_values, np.linalg.svd(a, compute_uv=False), rtol=1e-10
    )
    for alpha in [0.0, 0.3, 10.0, np.array([0.0, 1.0, 2.0, 0.5])]:
        expected = reference(a_parts, b_parts, weights, intercept=True, alpha=alpha)
        assert_weights(factorization.solve(RCOND, alpha), expected, rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------------------------
# every driver, numpy and torch
# ---------------------------------------------------------------------------------


def scipy_driver(a, b, driver, rcond=RCOND):
    if driver == "gels":
        return np.linalg.solve(a.T @ a, a.T @ b).T
    return scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver=driver or "gelsd")[0].T


def test_uses_factor():
    assert uses_factor(None, "cpu") and uses_factor("gels", "cpu")
    assert not any(uses_factor(driver, "cpu") for driver in ("gelsd", "gelss", "gelsy"))
    assert all(uses_factor(driver, "cuda") for driver in ALL_DRIVERS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_every_driver_on_full_rank_data(backend, driver):
    rng = np.random.default_rng(10)
    _, _, a, b = random_parts(rng, [60], n_features=5, n_targets=2)
    system = backend_system(backend, [a[:25], a[25:]], [b[:25], b[25:]])
    solution = solve(system, RCOND, driver)
    np.testing.assert_allclose(
        as_numpy(solution.weights), scipy_driver(a, b, driver), rtol=1e-9, atol=1e-12
    )
    assert type(solution.weights) is type(system.a_parts[0])
    assert solution.intercept is None
    if driver == "gels":
        assert solution.rank is None and solution.singular_values is None
    else:
        assert solution.rank == 5
    if driver in (None, "gelsd", "gelss"):
        np.testing.assert_allclose(
            as_numpy(solution.singular_values), np.linalg.svd(a, compute_uv=False), rtol=1e-10
        )
    if driver == "gelsy":
        assert solution.singular_values is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss", "gelsy"])
def test_minimum_norm_drivers_on_rank_deficient_data(backend, driver):
    rng = np.random.default_rng(11)
    a = rank_deficient(rng, 50)
    b = rng.normal(size=(50, 2))
    solution = solve(backend_system(backend, [a], [b]), RCOND, driver)
    np.testing.assert_allclose(as_numpy(solution.weights), gelsd(a, b)[0], rtol=1e-8, atol=1e-10)
    assert solution.rank == 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(30, 6), (4, 6)])
def test_gels_refuses_rank_deficient_data(backend, shape):
    rng = np.random.default_rng(12)
    a = rank_deficient(rng, shape[0])
    system = backend_system(backend, [a], [rng.normal(size=(shape[0], 1))])
    with pytest.raises(
        np.linalg.LinAlgError,
        match=r"TensorMapLstsq.fit: driver 'gels' needs a full-rank block, but block "
        r"\(center_type=8, o3_lambda=1\) is rank-deficient",
    ):
        solve(system, RCOND, "gels")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gels_refuses_a_block_made_rank_deficient_by_zero_weights(backend):
    rng = np.random.default_rng(120)
    a_parts, b_parts, _, _ = random_parts(rng, [3, 20], n_features=4, n_targets=1)
    system = backend_system(backend, a_parts, b_parts, row_weights=[None, 0.0])
    with pytest.raises(np.linalg.LinAlgError, match="driver 'gels' needs a full-rank block"):
        solve(system, RCOND, "gels")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [0.5, np.array([0.5, 1.0, 2.0, 0.1, 3.0, 1.0])])
def test_gels_solves_rank_deficient_data_with_a_penalty_on_every_feature(backend, alpha):
    rng = np.random.default_rng(121)
    a = rank_deficient(rng, 30)
    b = rng.normal(size=(30, 2))
    solution = solve(backend_system(backend, [a], [b], alpha=alpha), RCOND, "gels")
    assert_weights(solution, reference([a], [b], alpha=alpha), rtol=1e-8, atol=1e-10)
    # a penalty on some features only leaves it rank-deficient
    partial = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(np.linalg.LinAlgError, match="driver 'gels' needs a full-rank block"):
        solve(backend_system(backend, [a], [b], alpha=partial), RCOND, "gels")


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_factor_solve_matches_numpy_gelsd(dtype):
    rng = np.random.default_rng(13)
    a_parts, b_parts, a, b = random_parts(rng, [10, 40, 25], n_features=6, n_targets=2)
    torch_dtype = getattr(torch, dtype)
    a_parts = [p.astype(dtype) for p in a_parts]
    b_parts = [p.astype(dtype) for p in b_parts]
    system = make_system(
        to_backend("torch", a_parts, torch_dtype), to_backend("torch", b_parts, torch_dtype)
    )
    factor = factorize(system, chunk_rows=9)
    assert factor.r.dtype == torch.float64
    solution = solve(system, RCOND, None)
    assert solution.weights.dtype == torch_dtype
    # the same float32 data in float64: float32 only rounds the result
    expected = gelsd(np.vstack(a_parts).astype(float), np.vstack(b_parts).astype(float))[0]
    tolerance = {"rtol": 1e-9, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-6}
    np.testing.assert_allclose(as_numpy(solution.weights), expected, **tolerance)
    np.testing.assert_allclose(
        as_numpy(factor_solution(factor, RCOND).weights), expected, rtol=1e-9, atol=1e-12
    )
    assert solution.rank == 6


@needs_torch
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("intercept", [False, True])
def test_torch_half_precision_is_solved_in_float64_and_returned_in_its_dtype(
    dtype, driver, intercept
):
    rng = np.random.default_rng(130)
    torch_dtype = getattr(torch, dtype)
    a = torch.tensor(rng.normal(size=(40, 3)), dtype=torch_dtype)
    b = torch.tensor(rng.normal(size=(40, 2)), dtype=torch_dtype)
    solution = solve(make_system([a], [b], intercept=intercept), RCOND, driver)
    assert solution.weights.dtype == torch_dtype
    if intercept:
        assert solution.intercept.dtype == torch_dtype
    # the reference: the same (half precision) numbers in float64; only the
    # rounding of the result to the dtype separates them
    a64, b64 = a.to(torch.float64).numpy(), b.to(torch.float64).numpy()
    weights, offset = reference([a64], [b64], intercept=intercept)
    rtol = {"float16": 1e-3, "bfloat16": 8e-3}[dtype]
    np.testing.assert_allclose(as_numpy(solution.weights), weights, rtol=rtol, atol=rtol * 1e-2)
    if intercept:
        np.testing.assert_allclose(as_numpy(solution.intercept), offset, rtol=rtol, atol=1e-4)
    if driver != "gels":
        assert solution.rank == 3


# ---------------------------------------------------------------------------------
# row weights
# ---------------------------------------------------------------------------------


def sklearn_fit(model, a_parts, b_parts, row_weights):
    """(weights, intercept) of a scikit-learn model on the stacked rows."""
    weights = np.concatenate(weights_per_row(a_parts, row_weights))
    model.fit(np.vstack(a_parts), np.vstack(b_parts), sample_weight=weights)
    return model.coef_, model.intercept_


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("kind", ["arrays", "floats", "mixed"])
def test_row_weights_for_every_driver(backend, driver, kind):
    rng = np.random.default_rng(30)
    sizes = [30, 25, 12]
    a_parts, b_parts, _, _ = random_parts(rng, sizes, n_features=4, n_targets=2)
    if kind == "arrays":
        weights = [rng.uniform(0.1, 4.0, size=size) for size in sizes]
    elif kind == "floats":
        weights = [2.0, 0.01, 7.5]
    else:
        weights = [rng.uniform(0.1, 4.0, size=30), None, 0.3]
    system = backend_system(backend, a_parts, b_parts, row_weights=weights)
    solution = solve(system, RCOND, driver)
    expected = reference(a_parts, b_parts, weights)
    assert_weights(solution, expected)
    coef, _ = sklearn_fit(LinearRegression(fit_intercept=False), a_parts, b_parts, weights)
    np.testing.assert_allclose(as_numpy(solution.weights), coef, rtol=1e-9, atol=1e-11)
    # the unweighted fit is another one
    unweighted = solve(make_system(a_parts, b_parts), RCOND, driver)
    assert not np.allclose(as_numpy(unweighted.weights), coef, rtol=1e-3)
    if driver in (None, "gelsd", "gelss"):
        a, _, _, _ = weighted_stack(a_parts, b_parts, weights)
        np.testing.assert_allclose(
            as_numpy(solution.singular_values), np.linalg.svd(a, compute_uv=False), rtol=1e-10
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_row_weights_and_intercept_equal_linear_regression(backend, driver):
    rng = np.random.default_rng(31)
    a_parts, b_parts, _, _ = random_parts(rng, [50], n_features=4, n_targets=3)
    b_parts = [b_parts[0] + np.array([3.0, -1.0, 10.0])]
    weights = [rng.uniform(0.0, 2.0, size=50)]
    system = backend_system(backend, a_parts, b_parts, row_weights=weights, intercept=True)
    solution = solve(system, RCOND, driver)
    expected = sklearn_fit(LinearRegression(fit_intercept=True), a_parts, b_parts, weights)
    assert_weights(solution, expected)
    assert_weights(solution, reference(a_parts, b_parts, weights, intercept=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("position", [0, 1])
def test_a_zero_weight_row_changes_nothing(backend, driver, intercept, position):
    rng = np.random.default_rng(32)
    a_parts, b_parts, weights = tall_weighted(rng)
    row = 3 if position == 0 else 5
    weights[position][row] = 0.0
    options = dict(row_weights=weights, intercept=intercept)
    solution = solve(backend_system(backend, a_parts, b_parts, **options), RCOND, driver)
    wild_a = [part.copy() for part in a_parts]
    wild_b = [part.copy() for part in b_parts]
    wild_a[position][row] = 1e8 * rng.normal(size=4)
    wild_b[position][row] = -3e7
    wild = solve(backend_system(backend, wild_a, wild_b, **options), RCOND, driver)
    np.testing.assert_allclose(
        as_numpy(wild.weights), as_numpy(solution.weights), rtol=1e-12, atol=1e-13
    )
    assert wild.rank == solution.rank
    if intercept:
        np.testing.assert_allclose(
            as_numpy(wild.intercept), as_numpy(solution.intercept), rtol=1e-12, atol=1e-13
        )

    # and both are the fit of the other rows
    def without_row(parts):
        return [
            np.delete(part, row, axis=0) if p == position else part for p, part in enumerate(parts)
        ]

    expected = reference(
        without_row(a_parts), without_row(b_parts), without_row(weights), intercept=intercept
    )
    assert_weights(solution, expected)


# ---------------------------------------------------------------------------------
# ridge penalties
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("n_rows", [40, 3])
def test_scalar_alpha_equals_ridge(backend, driver, intercept, n_rows):
    rng = np.random.default_rng(33)
    a_parts, b_parts, _, _ = random_parts(rng, [n_rows], n_features=6, n_targets=2)
    b_parts = [b_parts[0] + 2.0]
    weights = [rng.uniform(0.5, 2.0, size=n_rows)]
    alpha = 0.7
    system = backend_system(
        backend, a_parts, b_parts, row_weights=weights, intercept=intercept, alpha=alpha
    )
    solution = solve(system, RCOND, driver)
    ridge = Ridge(alpha=alpha, fit_intercept=intercept, solver="svd")
    coef, offset = sklearn_fit(ridge, a_parts, b_parts, weights)
    assert_weights(solution, (coef, offset if intercept else None))
    assert_weights(solution, reference(a_parts, b_parts, weights, intercept, alpha))
    # the penalty changes the fit
    assert not np.allclose(coef, reference(a_parts, b_parts, weights, intercept)[0], rtol=1e-3)
    # per-feature penalties all equal to it give the same solution
    same = backend_system(
        backend,
        a_parts,
        b_parts,
        row_weights=weights,
        intercept=intercept,
        alpha=np.full(6, alpha),
    )
    repeated = solve(same, RCOND, driver)
    np.testing.assert_allclose(
        as_numpy(repeated.weights), as_numpy(solution.weights), rtol=1e-10, atol=1e-12
    )
    assert_weights(repeated, (coef, offset if intercept else None))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("sizes", [(30, 20), (4, 0)])
def test_per_feature_alpha_equals_tikhonov_on_the_augmented_matrix(
    backend, driver, intercept, sizes
):
    rng = np.random.default_rng(34)
    a_parts, b_parts, _, _ = random_parts(rng, list(sizes), n_features=6, n_targets=2)
    weights = [rng.uniform(0.5, 2.0, size=sizes[0]), 0.5]
    # two features unpenalised: the wide block (4 rows, 6 features) stays of full
    # rank once augmented with the 4 penalised rows
    alpha = np.array([0.0, 2.0, 0.1, 0.0, 5.0, 1.0])
    system = backend_system(
        backend, a_parts, b_parts, row_weights=weights, intercept=intercept, alpha=alpha
    )
    solution = solve(system, RCOND, driver)
    expected = reference(a_parts, b_parts, weights, intercept, alpha)
    assert_weights(solution, expected, rtol=1e-8, atol=1e-10)
    # by hand, the normal equations of the augmented system
    a, b, _, _ = weighted_stack(a_parts, b_parts, weights, intercept)
    normal = np.linalg.solve(a.T @ a + np.diag(alpha), a.T @ b).T
    np.testing.assert_allclose(as_numpy(solution.weights), normal, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_rcond_cuts_before_the_penalty(intercept, weighted):
    rng = np.random.default_rng(35)
    u, _ = np.linalg.qr(rng.normal(size=(60, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = u @ np.diag([3.0, 2.0, 1.0, 1e-3, 1e-9]) @ v.T + 1.5
    b = rng.normal(size=(60, 2))
    sizes = [45, 15]
    a_parts, b_parts = split_rows(a, sizes), split_rows(b, sizes)
    weights = [rng.uniform(0.5, 2.0, size=45), 1.5] if weighted else None
    alpha, rcond = 1e-6, 1e-2
    system = make_system(a_parts, b_parts, weights, intercept, alpha)
    solution = solve(system, rcond, None)
    # by hand, from numpy's SVD of the weighted (and centred) stacked A
    stacked_a, stacked_b, x_mean, y_mean = weighted_stack(a_parts, b_parts, weights, intercept)
    left, singular, right = np.linalg.svd(stacked_a, full_matrices=False)
    kept = int((singular > rcond * singular[0]).sum())
    filtered = singular[:kept] / (singular[:kept] ** 2 + alpha)
    expected = (right[:kept].T @ (filtered[:, None] * (left[:, :kept].T @ stacked_b))).T
    assert kept == solution.rank
    np.testing.assert_allclose(solution.singular_values, singular, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(solution.weights, expected, rtol=1e-8, atol=1e-10)
    if intercept:
        np.testing.assert_allclose(solution.intercept, y_mean - expected @ x_mean, rtol=1e-8)
    # the ridge solution of every singular value is another one
    ridge = reference(a_parts, b_parts, weights, intercept, alpha)[0]
    assert not np.allclose(solution.weights, ridge, rtol=1e-2)
    # and the cut is made on the block's singular values, whatever the penalty
    assert solve(make_system(a_parts, b_parts, weights, intercept, 10.0), rcond, None).rank == kept


@pytest.mark.parametrize("driver", ["gelsd", "gelss"])
def test_per_feature_penalties_of_zero_are_no_penalty(driver):
    rng = np.random.default_rng(350)
    a_parts, b_parts, a, b = random_parts(rng, [20], n_features=3, n_targets=1)
    solution = solve(make_system(a_parts, b_parts, alpha=np.zeros(3)), RCOND, driver)
    assert_solution(solution, gelsd(a, b))


# ---------------------------------------------------------------------------------
# intercepts
# ---------------------------------------------------------------------------------


def intercept_closed_form(a_parts, b_parts, row_weights, alpha=0.0):
    """Centre part 0 on its weighted mean, solve the stacked centred rows,
    intercept = y_mean - x_mean w, all by hand."""
    w = weights_per_row(a_parts, row_weights)
    x_mean = w[0] @ a_parts[0] / w[0].sum()
    y_mean = w[0] @ b_parts[0] / w[0].sum()
    a = np.vstack([a_parts[0] - x_mean, *a_parts[1:]])
    b = np.vstack([b_parts[0] - y_mean, *b_parts[1:]])
    root = np.sqrt(np.concatenate(w))[:, None]
    a, b = root * a, root * b
    n = a.shape[1]
    weights = np.linalg.solve(a.T @ a + np.diag(np.broadcast_to(alpha, (n,))), a.T @ b).T
    return weights, y_mean - weights @ x_mean


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_intercept_is_fitted_on_value_rows_only(backend, driver, alpha):
    rng = np.random.default_rng(36)
    a_parts, b_parts, _, _ = random_parts(rng, [30, 50], n_features=4, n_targets=2)
    # an offset on the values only, as the gradients of a constant are zero
    b_parts[0] = b_parts[0] + np.array([5.0, -2.0])
    weights = [rng.uniform(0.2, 2.0, size=30), rng.uniform(0.2, 2.0, size=50)]
    system = backend_system(
        backend, a_parts, b_parts, row_weights=weights, intercept=True, alpha=alpha
    )
    solution = solve(system, RCOND, driver)
    assert_weights(solution, intercept_closed_form(a_parts, b_parts, weights, alpha))
    # the same as an unpenalised column of ones on value rows, zeros on gradient rows
    ones = np.r_[np.ones(30), np.zeros(50)][:, None]
    root = np.sqrt(np.concatenate(weights))[:, None]
    augmented = root * np.column_stack([ones, np.vstack(a_parts)])
    target = root * np.vstack(b_parts)
    if alpha:
        augmented = np.vstack(
            [augmented, np.column_stack([np.zeros(4), np.sqrt(alpha) * np.eye(4)])]
        )
        target = np.vstack([target, np.zeros((4, 2))])
    by_column = scipy.linalg.lstsq(augmented, target)[0]
    np.testing.assert_allclose(as_numpy(solution.intercept), by_column[0], rtol=1e-9)
    np.testing.assert_allclose(as_numpy(solution.weights), by_column[1:].T, rtol=1e-9, atol=1e-11)
    # centring every row (an intercept on gradient rows too) is another fit
    everywhere = sklearn_fit(LinearRegression(), a_parts, b_parts, weights)[0]
    assert not np.allclose(as_numpy(solution.weights), everywhere, rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
@pytest.mark.parametrize("value_weights", ["zeros", "float"])
def test_intercept_is_zero_when_no_value_row_weighs_anything(backend, driver, value_weights):
    rng = np.random.default_rng(37)
    a_parts, b_parts, _, _ = random_parts(rng, [10, 40], n_features=4, n_targets=2)
    b_parts[0] = b_parts[0] + 100.0
    gradient_weights = rng.uniform(0.5, 2.0, size=40)
    weights = [np.zeros(10) if value_weights == "zeros" else 0.0, gradient_weights]
    system = backend_system(backend, a_parts, b_parts, row_weights=weights, intercept=True)
    solution = solve(system, RCOND, driver)
    np.testing.assert_array_equal(as_numpy(solution.intercept), np.zeros(2))
    # the weights are the fit of the gradient rows alone
    expected = reference(a_parts[1:], b_parts[1:], [gradient_weights])[0]
    np.testing.assert_allclose(as_numpy(solution.weights), expected, rtol=1e-9, atol=1e-11)
    if driver != "gels":
        assert solution.rank == 4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_intercept_of_a_block_without_rows_is_zero(backend, driver):
    system = backend_system(backend, [np.zeros((0, 3))], [np.zeros((0, 2))], intercept=True)
    solution = solve(system, RCOND, driver)
    np.testing.assert_array_equal(as_numpy(solution.weights), np.zeros((2, 3)))
    np.testing.assert_array_equal(as_numpy(solution.intercept), np.zeros(2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "driver, weights",
    [pytest.param(driver, [0.1], id=f"{driver}-one-row") for driver in ALL_DRIVERS]
    # gels refuses the second: its centred rows are of rank 0
    + [
        pytest.param(driver, [0.1, 0.0], id=f"{driver}-one-of-two-rows")
        for driver in ALL_DRIVERS
        if driver != "gels"
    ],
)
def test_one_weighted_value_row_with_an_intercept_gives_zero_weights(backend, driver, weights):
    # the centred value rows are exactly zero: the weights are 0 and the
    # intercept is the value row's y, for every driver
    a = np.array([[0.3, -1.1, 2.0, 0.7], [5.0, 1.0, -3.0, 2.0]])[: len(weights)]
    b = np.array([[1.5, -0.2], [3.0, 1.0]])[: len(weights)]
    row_weights = [np.array(weights)]
    system = backend_system(backend, [a], [b], row_weights=row_weights, intercept=True)
    solution = solve(system, RCOND, driver)
    np.testing.assert_allclose(as_numpy(solution.weights), np.zeros((2, 4)), atol=1e-12)
    np.testing.assert_allclose(as_numpy(solution.intercept), b[0], rtol=1e-12)
    if driver != "gels":
        assert solution.rank == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss"])
def test_singular_values_of_a_wide_block_with_intercept_are_those_of_its_centred_rows(
    backend, driver
):
    # 3 value rows, 5 features: the centred rows have min(3, 5) = 3 singular
    # values, the last one 0 (centring takes a rank away), as numpy gives them
    rng = np.random.default_rng(380)
    a_parts, b_parts, _, _ = random_parts(rng, [3], n_features=5, n_targets=1)
    solution = solve(backend_system(backend, a_parts, b_parts, intercept=True), RCOND, driver)
    centred = a_parts[0] - a_parts[0].mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    assert singular.shape == (3,)
    np.testing.assert_allclose(as_numpy(solution.singular_values), singular, rtol=1e-10, atol=1e-12)
    assert solution.rank == 2
    assert_weights(solution, reference(a_parts, b_parts, intercept=True))


def test_intercept_is_returned_in_the_data_dtype():
    rng = np.random.default_rng(38)
    a_parts, b_parts, a, b = random_parts(rng, [40], 3, 2, dtype=np.float32)
    solution = solve(make_system(a_parts, b_parts, intercept=True), RCOND, None)
    assert solution.weights.dtype == solution.intercept.dtype == np.float32
    coef, offset = sklearn_fit(LinearRegression(), [a.astype(float)], [b.astype(float)], None)
    np.testing.assert_allclose(solution.weights, coef, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(solution.intercept, offset, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------
# merging factors
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("intercept", [False, True])
def test_merged_factors_of_disjoint_rows_give_the_factor_of_all_rows(backend, intercept):
    rng = np.random.default_rng(39)
    a_parts, b_parts, weights = tall_weighted(rng, sizes=(40, 30), n_features=5, n_targets=2)
    full = backend_system(backend, a_parts, b_parts, row_weights=weights, intercept=intercept)

    def rows(part_slices):
        return backend_system(
            backend,
            [part[s] for part, s in zip(a_parts, part_slices)],
            [part[s] for part, s in zip(b_parts, part_slices)],
            row_weights=[w[s] for w, s in zip(weights, part_slices)],
            intercept=intercept,
        )

    first = factorize(rows([slice(0, 15), slice(0, 22)]), chunk_rows=6)
    second = factorize(rows([slice(15, 40), slice(22, 30)]), chunk_rows=6)
    merged = first.merge(second)
    assert merged.n_rows == 70 and merged.intercept is intercept
    assert (merged.n_features, merged.n_targets) == (5, 2)
    whole = factorize(full)
    for alpha in [0.0, 0.5]:
        ours = factor_solution(merged, RCOND, alpha)
        np.testing.assert_allclose(
            as_numpy(ours.weights),
            as_numpy(factor_solution(whole, RCOND, alpha).weights),
            rtol=1e-10,
            atol=1e-12,
        )
        assert_weights(ours, reference(a_parts, b_parts, weights, intercept, alpha))


def test_merging_factors_of_other_layouts_raises():
    rng = np.random.default_rng(41)
    a_parts, b_parts, _, _ = random_parts(rng, [20], n_features=3, n_targets=1)
    factor = factorize(make_system(a_parts, b_parts))
    assert (factor.n_features, factor.n_targets) == (3, 1)
    wider = factorize(make_system([rng.normal(size=(20, 4))], b_parts))
    with pytest.raises(
        ValueError,
        match=r"cannot merge the factor of 3 features, 1 targets \(intercept=False\) with one "
        r"of 4 features, 1 targets \(intercept=False\)",
    ):
        factor.merge(wider)
    with_intercept = factorize(make_system(a_parts, b_parts, intercept=True))
    with pytest.raises(ValueError, match=r"with one of 3 features, 1 targets \(intercept=True\)"):
        factor.merge(with_intercept)
    more_targets = factorize(make_system(a_parts, [rng.normal(size=(20, 2))]))
    with pytest.raises(ValueError, match=r"with one of 3 features, 2 targets"):
        factor.merge(more_targets)


def test_factor_centred_splits_the_intercept_row():
    rng = np.random.default_rng(42)
    a_parts, b_parts, _, _ = random_parts(rng, [25], n_features=3, n_targets=2)
    factor = factorize(make_system(a_parts, b_parts, intercept=True))
    r_a, projected, head = factor.centred()
    assert r_a.shape == (3, 3) and projected.shape == (3, 2) and head.shape == (1, 6)
    # R_A^T R_A is the Gram matrix of the centred X
    centred = a_parts[0] - a_parts[0].mean(0)
    np.testing.assert_allclose(r_a.T @ r_a, centred.T @ centred, rtol=1e-12)
    assert isinstance(Factor(factor.r, 3, 25, True).to_numpy().r, np.ndarray)


# ---------------------------------------------------------------------------------
# weights that are (not) finite
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss", "gelsy"])
def test_rcond_zero_on_an_exactly_zero_column_gives_finite_weights(backend, driver):
    a = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    b = np.array([[1.0], [1.0], [2.0]])
    solution = solve(backend_system(backend, [a], [b]), 0.0, driver)
    # the minimum-norm solution, by hand: the second column is zero
    expected = np.array([[(1.0 + 2.0 + 6.0) / 14.0, 0.0]])
    np.testing.assert_allclose(as_numpy(solution.weights), expected, rtol=1e-14, atol=1e-15)
    assert solution.rank == 1
    with pytest.raises(np.linalg.LinAlgError, match="driver 'gels' needs a full-rank block"):
        solve(backend_system(backend, [a], [b]), 0.0, "gels")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_weights_that_cannot_be_finite_raise_naming_the_block(backend, driver):
    # w = 1e300 / 1e-300 overflows float64
    system = backend_system(backend, [np.array([[1e-300]])], [np.array([[1e300]])])
    with pytest.raises(
        np.linalg.LinAlgError,
        match=r"TensorMapLstsq.fit: block \(center_type=8, o3_lambda=1\) gives weights that are "
        r"not finite with driver=",
    ):
        solve(system, None, driver)


@pytest.mark.parametrize(
    "library, dtype",
    [("numpy", "float32"), pytest.param("torch", "float16", marks=needs_torch)],
)
@pytest.mark.parametrize("driver", [None, "gelsd"])
def test_weights_that_overflow_the_data_dtype_raise_naming_the_block(library, dtype, driver):
    # finite in float64 (1e40, or 1e8 for float16), not in the dtype they are
    # returned in
    big, small = (1e20, 1e-20) if dtype == "float32" else (1e4, 1e-4)
    a, b = np.array([[small]]), np.array([[big]])
    if library == "numpy":
        system = make_system([a.astype(dtype)], [b.astype(dtype)])
    else:
        system = make_system(
            to_backend("torch", [a], torch.float16), to_backend("torch", [b], torch.float16)
        )
    with pytest.raises(
        np.linalg.LinAlgError, match=r"block \(center_type=8, o3_lambda=1\) gives weights"
    ):
        solve(system, None, driver)


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss", "gelsy"])
def test_cuda_solve_honours_rcond(driver):
    rng = np.random.default_rng(14)
    a = rank_deficient(rng, 60)
    b = rng.normal(size=(60, 2))
    system = make_system([torch.from_numpy(a).cuda()], [torch.from_numpy(b).cuda()])
    assert system.device_type == "cuda"
    solution = solve(system, RCOND, driver)
    assert solution.weights.device.type == "cuda"
    np.testing.assert_allclose(as_numpy(solution.weights), gelsd(a, b)[0], rtol=1e-8, atol=1e-10)
    assert solution.rank == 3


@needs_cuda
@pytest.mark.parametrize("driver", ALL_DRIVERS)
def test_cuda_weights_penalty_and_intercept(driver):
    rng = np.random.default_rng(15)
    a_parts, b_parts, _, _ = random_parts(rng, [30, 40], n_features=4, n_targets=2)
    weights = [rng.uniform(0.5, 2.0, size=30), 0.5]
    alpha = np.array([0.0, 1.0, 0.5, 2.0])
    system = make_system(
        [torch.from_numpy(p).cuda() for p in a_parts],
        [torch.from_numpy(p).cuda() for p in b_parts],
        weights,
        True,
        alpha,
    )
    solution = solve(system, RCOND, driver)
    assert solution.weights.device.type == solution.intercept.device.type == "cuda"
    assert_weights(solution, reference(a_parts, b_parts, weights, True, alpha))


@needs_cuda
def test_cuda_float32_is_returned_in_float32():
    rng = np.random.default_rng(16)
    a_parts, b_parts, a, b = random_parts(rng, [50], 4, 2, dtype=np.float32)
    system = make_system([torch.from_numpy(a).cuda()], [torch.from_numpy(b).cuda()])
    solution = solve(system, RCOND, None)
    assert solution.weights.dtype == torch.float32
    expected = np.linalg.lstsq(a, b, rcond=RCOND)[0].T
    np.testing.assert_allclose(as_numpy(solution.weights), expected, rtol=1e-6, atol=1e-7)
