"""Blocks solved in threads, with joblib backends and on a Dask cluster, and the
documented paths for a block too tall for memory.

Weights must not depend on how blocks are spread over workers: every parallel fit
is compared bit for bit with a fit on one thread, and with ``metatensor.lstsq``
(an independent computation) to a tolerance.
"""

import functools
import re
import warnings

import joblib
import metatensor
import numpy as np
import pytest
import scipy.linalg
from builders import make_pair, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from threadpoolctl import threadpool_limits

from skmetalstsq import TensorMapLstsq
from skmetalstsq._factors import CHUNK_ROWS
from skmetalstsq._parallel import _balanced_groups, blas_threads, solve_cost

try:
    import torch
except ImportError:  # pragma: no cover - torch is installed in the tests
    torch = None

RCOND = 1e-10


def joined(*pairs):
    """One (X, y) pair holding the blocks of several, keys renumbered."""
    tensors = []
    for side in range(2):
        blocks = [block.copy() for pair in pairs for block in pair[side].blocks()]
        keys = Labels(["center_type"], np.arange(len(blocks)).reshape(-1, 1))
        tensors.append(TensorMap(keys, blocks))
    return tuple(tensors)


@pytest.fixture(scope="module")
def mixed_pair():
    """Twelve small blocks, one mid-sized block and one taller than a chunk."""
    rng = np.random.default_rng(0)
    small = make_pair(rng, keys=[(k,) for k in range(12)], n_targets=2)
    mid = make_pair(rng, keys=[(0,)], n_systems=200, n_atoms=1, n_features=40, n_targets=2)
    # 2 values rows and 2 x 2 x 3 positions gradient rows per system
    n_systems = CHUNK_ROWS // 14 + 1
    tall = make_pair(rng, keys=[(0,)], n_systems=n_systems, n_atoms=2, n_features=6)
    pair = joined(small, mid, tall)
    assert sum(row.shape[0] for row in stacked_rows(pair[0].block(13))) > CHUNK_ROWS
    return pair


def stacked_rows(block):
    n = block.values.shape[-1]
    parts = [block.values.reshape(-1, n)]
    parts += [gradient.values.reshape(-1, n) for _, gradient in block.gradients()]
    return parts


def assert_identical(model, reference):
    assert model.weights_.keys == reference.weights_.keys
    for key, block in reference.weights_.items():
        np.testing.assert_array_equal(
            np.asarray(model.weights_.block(key).values), np.asarray(block.values)
        )
    assert model.rank_ == reference.rank_
    for key, singular in reference.singular_values_.items():
        np.testing.assert_array_equal(np.asarray(model.singular_values_[key]), np.asarray(singular))


def assert_close_to_metatensor(model, X, y):
    expected = metatensor.lstsq(X, y, rcond=RCOND)
    for key, block in expected.items():
        np.testing.assert_allclose(
            np.asarray(model.weights_.block(key).values), block.values, rtol=1e-8, atol=1e-10
        )


@pytest.fixture(scope="module")
def one_thread_fit(mixed_pair):
    """The reference: every block solved one after the other, on one thread."""
    with threadpool_limits(limits=1):
        assert blas_threads() == 1
        return TensorMapLstsq(rcond=RCOND, n_jobs=1).fit(*mixed_pair)


# ---------------------------------------------------------------------------------
# weights independent of the workers
# ---------------------------------------------------------------------------------


def test_one_thread_fit_equals_metatensor(mixed_pair, one_thread_fit):
    assert_close_to_metatensor(one_thread_fit, *mixed_pair)


@pytest.mark.parametrize("n_jobs", [None, 1, 2, 3, -1])
def test_n_jobs_gives_identical_weights(mixed_pair, one_thread_fit, n_jobs):
    model = TensorMapLstsq(rcond=RCOND, n_jobs=n_jobs).fit(*mixed_pair)
    assert_identical(model, one_thread_fit)


def test_blas_thread_count_does_not_change_the_weights(mixed_pair, one_thread_fit):
    with threadpool_limits(limits=2):
        assert blas_threads() == 2
        model = TensorMapLstsq(rcond=RCOND).fit(*mixed_pair)
    assert_identical(model, one_thread_fit)


@pytest.mark.parametrize("driver", ["gelsd", "gelss", "gelsy", "gels"])
def test_n_jobs_gives_identical_weights_with_lapack_drivers(driver):
    rng = np.random.default_rng(1)
    X, y = make_pair(rng, keys=[(k,) for k in range(5)], n_systems=30, n_features=12)
    serial = TensorMapLstsq(rcond=RCOND, driver=driver, n_jobs=1).fit(X, y)
    parallel = TensorMapLstsq(rcond=RCOND, driver=driver, n_jobs=2).fit(X, y)
    assert_identical(parallel, serial)
    assert_close_to_metatensor(parallel, X, y)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_torch_n_jobs_gives_identical_weights(mixed_pair, one_thread_fit):
    X, y = (to_torch(tensor) for tensor in mixed_pair)
    with threadpool_limits(limits=1):
        serial = TensorMapLstsq(rcond=RCOND, n_jobs=1).fit(X, y)
    parallel = TensorMapLstsq(rcond=RCOND, n_jobs=2).fit(X, y)
    pooled = TensorMapLstsq(rcond=RCOND).fit(X, y)
    assert_identical(parallel, serial)
    assert_identical(pooled, serial)
    for key, block in one_thread_fit.weights_.items():
        np.testing.assert_allclose(
            serial.weights_.block(key).values.numpy(), block.values, rtol=1e-9, atol=1e-11
        )


# ---------------------------------------------------------------------------------
# grouping
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "costs, n_groups",
    [([1.0] * 200, 2), ([5.0, 4, 3, 3, 3], 2), ([100.0, 1, 1, 1], 3), ([2.0, 7, 1, 8, 2, 8], 4)],
)
def test_groups_hold_every_block_once_with_balanced_costs(costs, n_groups):
    groups = _balanced_groups(costs, n_groups)
    assert sorted(i for group in groups for i in group) == list(range(len(costs)))
    assert all(group == sorted(group) for group in groups)
    totals = [sum(costs[i] for i in group) for group in groups]
    # greedy longest-first: no group exceeds the lightest by more than one block
    assert max(totals) - min(totals) <= max(costs)
    assert len(groups) == min(n_groups, len(costs))


def test_equal_blocks_are_split_evenly():
    groups = _balanced_groups([3.0] * 200, 2)
    assert [len(group) for group in groups] == [100, 100]


def test_solve_cost_counts_rows_of_values_and_gradients(mixed_pair):
    from skmetalstsq._blocks import block_systems

    X, y = mixed_pair
    systems = block_systems(X, y, None)
    block = X.block(13)
    rows = sum(part.shape[0] for part in stacked_rows(block))
    columns = block.values.shape[-1] + y.block(13).values.shape[-1]
    assert solve_cost(systems[13]) == 2.0 * rows * columns**2 + columns**3


# ---------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------

PROGRESS = re.compile(
    r"^\[TensorMapLstsq\] block \(center_type=(\d+)\) \[(\d+)/14\]: (\d+) x (\d+) "
    r"solved in \d+\.\d{3} s$"
)


def assert_progress(output, X):
    lines = output.strip().splitlines()
    assert len(lines) == len(X.keys)
    seen = {}
    for line in lines:
        match = PROGRESS.match(line)
        assert match, line
        key, position, rows, features = (int(group) for group in match.groups())
        seen[key] = (position, rows, features)
    for position, key in enumerate(X.keys):
        block = X.block(key)
        rows = sum(part.shape[0] for part in stacked_rows(block))
        assert seen[int(key.values[0])] == (position + 1, rows, block.values.shape[-1])


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_verbose_prints_one_line_per_block(mixed_pair, capsys, n_jobs):
    TensorMapLstsq(rcond=RCOND, n_jobs=n_jobs, verbose=1).fit(*mixed_pair)
    assert_progress(capsys.readouterr().out, mixed_pair[0])


def test_not_verbose_prints_nothing(mixed_pair, capsys):
    TensorMapLstsq(rcond=RCOND, n_jobs=2).fit(*mixed_pair)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------
# joblib backends: processes, and a Dask cluster
# ---------------------------------------------------------------------------------


def test_loky_processes_give_identical_weights(mixed_pair, one_thread_fit, capsys):
    with joblib.parallel_config(backend="loky"):
        model = TensorMapLstsq(rcond=RCOND, n_jobs=2, verbose=1).fit(*mixed_pair)
    assert_identical(model, one_thread_fit)
    # worker processes send their progress lines back to be printed here
    assert_progress(capsys.readouterr().out, mixed_pair[0])


@pytest.mark.parametrize("processes", [False, True])
def test_dask_cluster_gives_identical_weights(mixed_pair, one_thread_fit, capsys, processes):
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        # starting a cluster on a machine where another one runs may warn that
        # the default ports are taken; the cluster then picks free ones
        warnings.filterwarnings("ignore", message=".*already in use", category=UserWarning)
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            # in-process workers talk over TCP too, so that blocks are serialised
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address=None,
        )
    with cluster, distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            model = TensorMapLstsq(rcond=RCOND, n_jobs=-1, verbose=1).fit(*mixed_pair)
    assert_identical(model, one_thread_fit)
    assert_progress(capsys.readouterr().out, mixed_pair[0])


# ---------------------------------------------------------------------------------
# the documented paths for a block too tall for memory (docs/parallelism.rst)
# ---------------------------------------------------------------------------------


def one_block(values, targets):
    samples = Labels.range("row", values.shape[0])
    X = TensorMap(
        Labels.single(),
        [TensorBlock(values, samples, [], Labels.range("feature", values.shape[1]))],
    )
    y = TensorMap(
        Labels.single(),
        [TensorBlock(targets, samples, [], Labels.range("energy", targets.shape[1]))],
    )
    return X, y


def tall_rank_deficient(rng, n_rows):
    """Seven columns of rank 5: a combination of two, and one scaled by 1e-3."""
    base = rng.normal(size=(n_rows, 5))
    values = np.column_stack([base, base[:, :2] @ [[1.0], [-2.0]], 1e-3 * base[:, 4]])
    targets = rng.normal(size=(n_rows, 2))
    return values, targets


def test_fit_on_memory_mapped_arrays_equals_gelsd(tmp_path):
    rng = np.random.default_rng(2)
    values, targets = tall_rank_deficient(rng, CHUNK_ROWS + 1234)
    np.save(tmp_path / "x.npy", values)
    np.save(tmp_path / "y.npy", targets)
    X, y = one_block(
        np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    )
    assert isinstance(X.block(0).values, np.memmap)
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    weights, _, rank, singular = scipy.linalg.lstsq(
        values, targets, cond=RCOND, lapack_driver="gelsd"
    )
    np.testing.assert_allclose(model.weights_.block(0).values, weights.T, rtol=1e-8, atol=1e-10)
    assert model.rank_[(0,)] == rank == 5
    np.testing.assert_allclose(model.singular_values_[(0,)][:5], singular[:5], rtol=1e-10)


def test_fit_on_folded_chunk_factors_equals_a_fit_on_every_row():
    # the recipe of the docs, with its own QR: factors of row chunks, folded
    rng = np.random.default_rng(3)
    values, targets = tall_rank_deficient(rng, 3000)
    n_features = values.shape[1]

    def r_factor(a_rows, b_rows):
        stacked = np.hstack([a_rows, b_rows])
        return scipy.linalg.qr(stacked, mode="r")[0][: stacked.shape[1]]

    factors = [r_factor(values[s : s + 700], targets[s : s + 700]) for s in range(0, 3000, 700)]
    factor = functools.reduce(
        lambda r1, r2: scipy.linalg.qr(np.vstack([r1, r2]), mode="r")[0][: r1.shape[1]],
        factors,
    )
    X, y = one_block(
        np.ascontiguousarray(factor[:, :n_features]), np.ascontiguousarray(factor[:, n_features:])
    )
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    weights, _, rank, singular = scipy.linalg.lstsq(
        values, targets, cond=RCOND, lapack_driver="gelsd"
    )
    np.testing.assert_allclose(model.weights_.block(0).values, weights.T, rtol=1e-8, atol=1e-10)
    assert model.rank_[(0,)] == rank
    np.testing.assert_allclose(model.singular_values_[(0,)][:rank], singular[:rank], rtol=1e-10)
