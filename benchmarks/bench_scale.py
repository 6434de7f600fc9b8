"""Memory and time of fit_shards as the data grows, next to a joined fit and dask.

Run from the repository root::

    python benchmarks/bench_scale.py            # shards of 40000 x 100, 3 repeats
    python benchmarks/bench_scale.py --quick    # shards of 20000 x 40, 1 repeat

Every shard is one block (``center_type=0``) of ``rows x features`` float64 values
and one target, generated from its index by its loader, written in place (the
shard's arrays are its only allocation). Rows of all shards share one set of true
weights. Measured in the same run:

- **peak memory** (``tracemalloc``, which sees numpy's allocations; LAPACK's own
  workspace is not included) of ``fit_shards`` without a client over 2, 8 and 32
  shards, as a multiple of one shard's size (its X and y arrays), against a fit on
  the joined rows (the joined arrays written in place, then ``fit``): the first
  must stay flat, the second grows with the number of shards, its input alone
  (the slow growth of the first, about 4 bytes per row and shard, is the samples'
  arrays of every TensorMap made, which metatensor keeps after the map is gone);
- **time** of ``fit_shards`` on the largest number of shards without a client, and
  on a ``LocalCluster`` of 1 and of 2 single-threaded worker processes (on
  127.0.0.1; shards loaded on the workers), median of ``--repeats``, after one
  warm-up fit that imports everything on the workers;
- ``dask.array.linalg.lstsq`` on the same rows (a dask array with one chunk per
  shard, each chunk made by the same loader on the workers), on the 2-worker
  cluster: its time against ``fit_shards``, and on a rank-deficient case (two
  columns repeat others) the largest error of both against scipy's ``gelsd``
  (minimum-norm solution) relative to its largest weight.
"""

import argparse
import functools
import gc
import os
import platform
import statistics
import time
import tracemalloc
import warnings

import numpy as np

SHARD_COUNTS = (2, 8, 32)
RCOND = 1e-10


# ---------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------


def true_weights(n_features):
    return np.random.default_rng(12345).standard_normal((n_features, 1))


def fill_rows(index, values, targets, deficient=False):
    """Write the rows of shard ``index`` into ``values`` (rows, features) and
    ``targets`` (rows, 1), in place."""
    rng = np.random.default_rng(index)
    rng.standard_normal(out=values)
    if deficient:
        # rank two below the number of features
        values[:, -1] = 2.5 * values[:, 0]
        values[:, -2] = values[:, 1]
    np.matmul(values, true_weights(values.shape[1]), out=targets)
    targets += 0.01 * rng.standard_normal(targets.shape)


def one_block_maps(values, targets, first_row=0):
    from metatensor import Labels, TensorBlock, TensorMap

    rows = np.arange(first_row, first_row + values.shape[0], dtype=np.int32).reshape(-1, 1)
    samples = Labels(["system"], rows)
    keys = Labels(["center_type"], np.array([[0]], dtype=np.int32))
    X = TensorBlock(values, samples, [], Labels.range("feature", values.shape[1]))
    y = TensorBlock(targets, samples, [], Labels.range("energy", 1))
    return TensorMap(keys, [X]), TensorMap(keys, [y])


def load_shard(index, n_rows, n_features, deficient=False):
    """(X, y) TensorMaps of shard ``index``: the shard loader given to fit_shards."""
    values = np.empty((n_rows, n_features))
    targets = np.empty((n_rows, 1))
    fill_rows(index, values, targets, deficient)
    return one_block_maps(values, targets, first_row=index * n_rows)


def load_arrays(index, n_rows, n_features, deficient=False):
    """(values, targets) arrays of shard ``index`` (for dask.array)."""
    values = np.empty((n_rows, n_features))
    targets = np.empty((n_rows, 1))
    fill_rows(index, values, targets, deficient)
    return values, targets


def shards(n_shards, n_rows, n_features, deficient=False):
    return [
        functools.partial(load_shard, index, n_rows, n_features, deficient)
        for index in range(n_shards)
    ]


def joined_arrays(n_shards, n_rows, n_features, deficient=False):
    values = np.empty((n_shards * n_rows, n_features))
    targets = np.empty((n_shards * n_rows, 1))
    for index in range(n_shards):
        rows = slice(index * n_rows, (index + 1) * n_rows)
        fill_rows(index, values[rows], targets[rows], deficient)
    return values, targets


# ---------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------


def traced_peak(function):
    """Peak bytes allocated (tracemalloc) while ``function()`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory(n_rows, n_features):
    from skmetalstsq import TensorMapLstsq
    from skmetalstsq.distributed import fit_shards

    shard_bytes = (n_rows * n_features + n_rows) * 8
    # imports, caches and per-thread buffers first
    fit_shards(TensorMapLstsq(rcond=RCOND), shards(2, n_rows, n_features))
    TensorMapLstsq(rcond=RCOND).fit(*one_block_maps(*joined_arrays(2, n_rows, n_features)))

    def joined_fit(n_shards):
        X, y = one_block_maps(*joined_arrays(n_shards, n_rows, n_features))
        TensorMapLstsq(rcond=RCOND).fit(X, y)

    print(
        f"\npeak memory (tracemalloc) as a multiple of one shard "
        f"({n_rows} x {n_features} + {n_rows} x 1 float64, {shard_bytes / 2**20:.1f} MiB)"
    )
    print(f"{'shards':>7} | {'fit_shards, no client':>22} | {'joined fit (input + fit)':>25}")
    for n_shards in SHARD_COUNTS:
        ours = traced_peak(
            lambda n=n_shards: fit_shards(
                TensorMapLstsq(rcond=RCOND), shards(n, n_rows, n_features)
            )
        )
        joined = traced_peak(lambda n=n_shards: joined_fit(n))
        print(f"{n_shards:>7} | {ours / shard_bytes:>22.2f} | {joined / shard_bytes:>25.2f}")


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def local_cluster(n_workers):
    from dask.distributed import LocalCluster

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*already in use", category=UserWarning)
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # not the default port 8787, which another cluster may hold
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )


def dask_lstsq(n_shards, n_rows, n_features, deficient=False):
    """``dask.array.linalg.lstsq`` on the rows of the shards, one chunk per shard."""
    import dask
    import dask.array as da

    loads = [
        dask.delayed(load_arrays)(index, n_rows, n_features, deficient) for index in range(n_shards)
    ]
    values = da.concatenate(
        [da.from_delayed(load[0], (n_rows, n_features), np.float64) for load in loads]
    )
    targets = da.concatenate([da.from_delayed(load[1], (n_rows, 1), np.float64) for load in loads])
    return da.linalg.lstsq(values, targets)


def relative_error(weights, reference):
    return float(np.max(np.abs(weights - reference)) / np.max(np.abs(reference)))


def times(n_shards, n_rows, n_features, repeats):
    from dask.distributed import Client

    from skmetalstsq import TensorMapLstsq
    from skmetalstsq.distributed import fit_shards

    def ours(client=None, deficient=False, n=n_shards):
        return fit_shards(
            TensorMapLstsq(rcond=RCOND),
            shards(n, n_rows, n_features, deficient),
            client=client,
        )

    serial = median_time(ours, repeats)
    results = {}
    for n_workers in (1, 2):
        with local_cluster(n_workers) as cluster, Client(cluster, set_as_default=False) as client:
            ours(client, n=2 * n_workers)  # every worker imports skmetalstsq
            results[n_workers] = median_time(functools.partial(ours, client), repeats)
            if n_workers == 2:
                import dask

                x, *_ = dask_lstsq(2, n_rows, n_features)
                dask.compute(x, scheduler=client.get)  # warm-up
                lstsq = dask_lstsq(n_shards, n_rows, n_features)
                dask_time = median_time(
                    lambda lstsq=lstsq: dask.compute(*lstsq, scheduler=client.get), repeats
                )
                errors = deficient_errors(client, n_rows, n_features, ours)
    print(f"\ntime of fit_shards on {n_shards} shards (median of {repeats}):")
    print(f"  no client (this process)  {serial:8.3f} s")
    print(f"  LocalCluster, 1 worker    {results[1]:8.3f} s")
    print(
        f"  LocalCluster, 2 workers   {results[2]:8.3f} s   "
        f"(2 workers / 1 worker: {results[2] / results[1]:.2f})"
    )
    print(
        f"  dask.array.linalg.lstsq, 2 workers {dask_time:8.3f} s   "
        f"(fit_shards / dask: {results[2] / dask_time:.2f})"
    )
    rank, ours_error, dask_error, dask_rank = errors
    print(
        f"\nrank-deficient rows (rank {rank} of {n_features} features), 4 shards: "
        f"largest error against scipy gelsd, relative to its largest weight:"
    )
    print(f"  fit_shards               {ours_error:.1e}")
    print(f"  dask.array.linalg.lstsq  {dask_error:.1e}   (its rank: {dask_rank})")


def deficient_errors(client, n_rows, n_features, ours):
    import dask
    import scipy.linalg

    values, targets = joined_arrays(4, n_rows, n_features, deficient=True)
    reference, _, rank, _ = scipy.linalg.lstsq(values, targets, cond=RCOND, lapack_driver="gelsd")
    model = ours(client, deficient=True, n=4)
    ours_error = relative_error(model.weights_.block(0).values.T, reference)
    # its singular values (square roots of eigenvalues of R^T R) are not computed:
    # they are NaN where an eigenvalue rounds below zero
    x, _, dask_rank, _ = dask_lstsq(4, n_rows, n_features, deficient=True)
    x, dask_rank = dask.compute(x, dask_rank, scheduler=client.get)
    dask_error = relative_error(x, reference)
    return rank, ours_error, dask_error, int(dask_rank)


def header(args, n_rows, n_features):
    import dask
    import numpy
    import scipy

    print(
        f"bench_scale: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, numpy {numpy.__version__}, "
        f"scipy {scipy.__version__}, dask {dask.__version__}"
    )
    print(
        f"shards of {n_rows} x {n_features}, {args.repeats} repeats, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shards of 20000 x 40, 1 repeat")
    parser.add_argument("-r", "--repeats", type=int, default=None, help="timing repeats")
    parser.add_argument("--no-dask", action="store_true", help="memory only")
    args = parser.parse_args()
    # shards taller than one 10000-row chunk, whose buffer would otherwise dominate
    n_rows, n_features = (20_000, 40) if args.quick else (40_000, 100)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    header(args, n_rows, n_features)
    memory(n_rows, n_features)
    if not args.no_dask:
        times(SHARD_COUNTS[-1], n_rows, n_features, args.repeats)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
