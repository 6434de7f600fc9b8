"""The block solves of skmetalstsq._solvers against LAPACK on the stacked arrays.

Every expected value is computed independently: ``scipy.linalg.lstsq`` or
``numpy.linalg.lstsq`` on the rows stacked with ``numpy.vstack``, or by hand.
"""

import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.linalg

from skmetalstsq._solvers import (
    DRIVERS,
    SVDFactorization,
    Workspace,
    qr_solve,
    r_factor,
    row_chunks,
    solve,
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


def split_rows(matrix, sizes):
    """``matrix`` cut into consecutive row parts of the given sizes (views)."""
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == matrix.shape[0]
    return [matrix[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def system(rng, sizes, n_features, n_targets, dtype=np.float64):
    """Row parts of X and y (as values and gradients would be) and their stack."""
    n_rows = sum(sizes)
    a = rng.normal(size=(n_rows, n_features)).astype(dtype)
    b = rng.normal(size=(n_rows, n_targets)).astype(dtype)
    return split_rows(a, sizes), split_rows(b, sizes), a, b


def gelsd(a, b, rcond=RCOND):
    """(weights as (n_targets, n_features), rank, singular values) from scipy's gelsd."""
    weights, _, rank, singular = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver="gelsd")
    return weights.T, rank, singular


def rank_deficient(rng, n_rows):
    """Columns: 3 random, one duplicated, one scaled by 1e3, one zero (rank 3)."""
    base = rng.normal(size=(n_rows, 3))
    return np.column_stack([base, base[:, 0], 1e3 * base[:, 1], np.zeros(n_rows)])


def as_numpy(array):
    return array.detach().cpu().numpy() if torch is not None and torch.is_tensor(array) else array


def assert_solution(solution, expected, rtol=1e-9, atol=1e-11):
    weights, rank, singular = expected
    np.testing.assert_allclose(as_numpy(solution.weights), weights, rtol=rtol, atol=atol)
    assert solution.rank == rank
    np.testing.assert_allclose(as_numpy(solution.singular_values), singular, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------
# row chunks
# ---------------------------------------------------------------------------------


def test_row_chunks_cover_every_row_in_order_with_full_chunks():
    a = np.arange(60.0).reshape(30, 2)
    b = -np.arange(30.0).reshape(30, 1)
    sizes = [5, 13, 1, 0, 11]
    chunks = row_chunks(split_rows(a, sizes), split_rows(b, sizes), chunk_rows=7)
    lengths = [sum(rows.shape[0] for rows, _ in pieces) for pieces in chunks]
    assert lengths == [7, 7, 7, 7, 2]
    np.testing.assert_array_equal(np.vstack([r for p in chunks for r, _ in p]), a)
    np.testing.assert_array_equal(np.vstack([r for p in chunks for _, r in p]), b)
    # views of the parts, no copies
    assert all(np.shares_memory(rows, a) for pieces in chunks for rows, _ in pieces)


def test_workspace_matrices_are_fortran_ordered_and_reused():
    workspace = Workspace()
    like = np.empty((1, 1))
    first = workspace.matrix((6, 4), like)
    second = workspace.matrix((5, 3), like)
    assert first.flags.f_contiguous and second.flags.f_contiguous
    assert second.shape == (5, 3) and np.shares_memory(first, second)
    assert workspace.matrix((2, 2), np.empty(1, dtype=np.float32)).dtype == np.float32


# ---------------------------------------------------------------------------------
# the default solve against gelsd on the stacked arrays
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 40, 10_000])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_qr_solve_equals_stacked_gelsd_on_tall_blocks(chunk_rows, n_targets):
    rng = np.random.default_rng(0)
    a_parts, b_parts, a, b = system(rng, [12, 90, 3, 45], n_features=6, n_targets=n_targets)
    solution = qr_solve(a_parts, b_parts, RCOND, chunk_rows=chunk_rows)
    assert_solution(solution, gelsd(a, b))
    np.testing.assert_allclose(
        solution.weights, np.linalg.lstsq(a, b, rcond=RCOND)[0].T, rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("chunk_rows", [4, 50, 10_000])
def test_qr_solve_rank_deficient_equals_gelsd(chunk_rows):
    rng = np.random.default_rng(1)
    a = rank_deficient(rng, 120)
    b = rng.normal(size=(120, 2))
    sizes = [20, 100]
    solution = qr_solve(split_rows(a, sizes), split_rows(b, sizes), RCOND, chunk_rows=chunk_rows)
    weights, rank, singular = gelsd(a, b)
    assert rank == 3
    assert solution.rank == rank
    np.testing.assert_allclose(solution.weights, weights, rtol=1e-9, atol=1e-11)
    # the cut singular values are ~1e-13 or below: compare the kept ones closely
    np.testing.assert_allclose(solution.singular_values[:3], singular[:3], rtol=1e-10)
    np.testing.assert_array_less(solution.singular_values[3:], RCOND * singular[0])


@pytest.mark.parametrize("n_rows", [1, 3, 5])
def test_qr_solve_wide_blocks_give_the_minimum_norm_solution(n_rows):
    rng = np.random.default_rng(2)
    a_parts, b_parts, a, b = system(rng, [n_rows], n_features=8, n_targets=2)
    assert_solution(qr_solve(a_parts, b_parts, RCOND, chunk_rows=2), gelsd(a, b))


def test_qr_solve_zero_rows_gives_zero_weights():
    a = np.zeros((0, 4))
    b = np.zeros((0, 2))
    solution = qr_solve([a], [b], RCOND)
    weights, rank, singular = gelsd(a, b)
    np.testing.assert_array_equal(solution.weights, weights)
    assert solution.weights.shape == (2, 4)
    assert solution.rank == rank == 0
    assert solution.singular_values.shape == singular.shape == (0,)


def test_qr_solve_zero_features():
    rng = np.random.default_rng(3)
    solution = qr_solve([np.zeros((10, 0))], [rng.normal(size=(10, 2))], RCOND)
    assert solution.weights.shape == (2, 0)
    assert solution.rank == 0
    assert solution.singular_values.shape == (0,)


def test_qr_solve_float32_stays_float32_and_matches_float64():
    rng = np.random.default_rng(4)
    a_parts, b_parts, a, b = system(rng, [30, 70], n_features=5, n_targets=2, dtype=np.float32)
    solution = qr_solve(a_parts, b_parts, 1e-5, chunk_rows=16)
    assert solution.weights.dtype == np.float32
    assert solution.singular_values.dtype == np.float32
    weights, rank, singular = gelsd(a.astype(np.float64), b.astype(np.float64), 1e-5)
    np.testing.assert_allclose(solution.weights, weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(solution.singular_values, singular, rtol=1e-5)
    assert solution.rank == rank


def test_qr_solve_does_not_stack_the_rows():
    # a block of 8 MB streamed in chunks of 500 rows: numpy never holds more
    # than a few chunks (tracemalloc sees numpy's allocations)
    rng = np.random.default_rng(5)
    a_parts, b_parts, a, b = system(rng, [4000, 16_000], n_features=49, n_targets=1)
    tracemalloc.start()
    try:
        solution = qr_solve(a_parts, b_parts, RCOND, chunk_rows=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * (a.nbytes + b.nbytes)
    assert_solution(solution, gelsd(a, b))


def test_chunks_factorised_in_threads_give_identical_factors():
    rng = np.random.default_rng(6)
    a_parts, b_parts, _, _ = system(rng, [33, 260], n_features=7, n_targets=2)
    sequential = r_factor(a_parts, b_parts, chunk_rows=20)
    with ThreadPoolExecutor(3) as pool:
        threaded = r_factor(a_parts, b_parts, chunk_rows=20, map_chunks=pool.map)
    np.testing.assert_array_equal(threaded, sequential)


# ---------------------------------------------------------------------------------
# the rcond cut
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_singular_values_at_most_rcond_times_the_largest_are_cut(backend):
    # a diagonal A: QR and SVD are exact, so the cut-off can be met exactly
    singular = np.array([4.0, 2.0, 1.0, 0.5])
    a = np.vstack([np.diag(singular), np.zeros((3, 4))])
    b = np.arange(1.0, 8.0).reshape(7, 1)
    if backend == "torch":
        a, b = torch.from_numpy(a), torch.from_numpy(b)
    for rcond, kept in [(0.25, 2), (0.2499, 3), (0.125, 3), (0.1249, 4), (1.0, 0)]:
        solution = qr_solve([a], [b], rcond)
        expected = np.zeros((1, 4))
        expected[0, :kept] = np.arange(1.0, 5.0)[:kept] / singular[:kept]
        assert solution.rank == kept
        np.testing.assert_allclose(as_numpy(solution.weights), expected, rtol=1e-15)
        np.testing.assert_allclose(as_numpy(solution.singular_values), singular, rtol=1e-15)
        # LAPACK makes the same cut (gelsd replaces rcond >= 1 by machine
        # epsilon, gelss does not)
        driver = "gelsd" if rcond < 1 else "gelss"
        lapack_rank = scipy.linalg.lstsq(
            as_numpy(a), as_numpy(b), cond=rcond, lapack_driver=driver
        )[2]
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
    solution = qr_solve(split_rows(a, [10, 40]), split_rows(b, [10, 40]), rcond, chunk_rows=8)
    kept = 3 if margin < 1 else 2
    assert solution.rank == kept
    # by hand: V_r S_r^-1 U_r^T b
    expected = (v[:, :kept] @ ((u[:, :kept].T @ b) / singular[:kept, None])).T
    np.testing.assert_allclose(solution.weights, expected, rtol=1e-6)
    assert_solution(solution, gelsd(a, b, rcond), rtol=1e-6, atol=1e-8)


def test_rcond_none_is_eps_times_the_larger_dimension():
    rng = np.random.default_rng(8)
    a = rank_deficient(rng, 40)
    b = rng.normal(size=(40, 1))
    solution = solve([a[:15], a[15:]], [b[:15], b[15:]], None, None)
    eps = np.finfo(np.float64).eps
    assert_solution(solution, gelsd(a, b, eps * max(a.shape)))
    assert solution.rank == np.linalg.lstsq(a, b, rcond=None)[2]


def test_svd_factorization_gives_gelsd_for_every_rcond():
    rng = np.random.default_rng(9)
    a = rank_deficient(rng, 80) + 1e-6 * rng.normal(size=(80, 6))
    b = rng.normal(size=(80, 2))
    factorization = SVDFactorization(split_rows(a, [30, 50]), split_rows(b, [30, 50]), 16)
    for rcond in [1e-12, 1e-8, 1e-4, 1e-1]:
        weights, rank, _ = gelsd(a, b, rcond)
        solution = factorization.solve(rcond)
        assert solution.rank == rank
        np.testing.assert_allclose(solution.weights, weights, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------
# every driver, numpy and torch
# ---------------------------------------------------------------------------------


def scipy_driver(a, b, driver, rcond=RCOND):
    if driver is None:
        driver = "gelsd"
    if driver == "gels":
        return np.linalg.solve(a.T @ a, a.T @ b).T
    return scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver=driver)[0].T


def to_backend(backend, *arrays):
    if backend == "numpy":
        return arrays
    return tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in arrays)


BACKENDS = ["numpy", pytest.param("torch", marks=needs_torch)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", [None, *DRIVERS])
def test_every_driver_on_full_rank_data(backend, driver):
    rng = np.random.default_rng(10)
    _, _, a, b = system(rng, [60], n_features=5, n_targets=2)
    parts = to_backend(backend, a[:25], a[25:], b[:25], b[25:])
    solution = solve(list(parts[:2]), list(parts[2:]), RCOND, driver)
    np.testing.assert_allclose(
        as_numpy(solution.weights), scipy_driver(a, b, driver), rtol=1e-9, atol=1e-12
    )
    if driver != "gels":
        assert solution.rank == 5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss", "gelsy"])
def test_minimum_norm_drivers_on_rank_deficient_data(backend, driver):
    rng = np.random.default_rng(11)
    a = rank_deficient(rng, 50)
    b = rng.normal(size=(50, 2))
    a_torch, b_torch = to_backend(backend, a, b)
    solution = solve([a_torch], [b_torch], RCOND, driver)
    np.testing.assert_allclose(as_numpy(solution.weights), gelsd(a, b)[0], rtol=1e-8, atol=1e-10)
    assert solution.rank == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_gels_refuses_rank_deficient_data(backend):
    rng = np.random.default_rng(12)
    a, b = to_backend(backend, rank_deficient(rng, 30), rng.normal(size=(30, 1)))
    if backend == "numpy":
        error, message = np.linalg.LinAlgError, "driver 'gels' needs a full-rank"
    else:
        error, message = torch.linalg.LinAlgError, "does not have full rank"
    with pytest.raises(error, match=message):
        solve([a], [b], RCOND, "gels")


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_qr_solve_matches_numpy_gelsd(dtype):
    rng = np.random.default_rng(13)
    a_parts, b_parts, a, b = system(rng, [10, 40, 25], n_features=6, n_targets=2)
    torch_dtype = getattr(torch, dtype)
    solution = qr_solve(
        [torch.tensor(p, dtype=torch_dtype) for p in a_parts],
        [torch.tensor(p, dtype=torch_dtype) for p in b_parts],
        RCOND if dtype == "float64" else 1e-5,
        chunk_rows=9,
    )
    assert solution.weights.dtype == torch_dtype
    tolerance = {"rtol": 1e-9, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-4}
    np.testing.assert_allclose(solution.weights.numpy(), gelsd(a, b)[0], **tolerance)
    assert solution.rank == 6


@needs_cuda
@pytest.mark.parametrize("driver", [None, "gelsd", "gelss", "gelsy"])
def test_cuda_solve_honours_rcond(driver):
    rng = np.random.default_rng(14)
    a = rank_deficient(rng, 60)
    b = rng.normal(size=(60, 2))
    solution = solve(
        [torch.from_numpy(a).cuda()], [torch.from_numpy(b).cuda()], RCOND, driver, "cuda"
    )
    assert solution.weights.device.type == "cuda"
    np.testing.assert_allclose(as_numpy(solution.weights), gelsd(a, b)[0], rtol=1e-8, atol=1e-10)
    assert solution.rank == 3
