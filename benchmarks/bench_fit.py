"""Fit time, GFLOP/s and peak memory of TensorMapLstsq next to metatensor.lstsq and LAPACK.

Run from the repository root::

    python benchmarks/bench_fit.py             # every workload, 7 repeats
    python benchmarks/bench_fit.py --quick     # 3 repeats, a quarter of the rows
    python benchmarks/bench_fit.py -w W1 W3 -r 11 --no-memory --no-accuracy

Workloads (float64, one target, ``rcond=1e-12`` for every method):

- W1: 16 blocks of 4000 samples x 300 properties, no gradients;
- W2: 4 blocks of 2000 samples with a positions gradient of 60000 rows x 3 (xyz),
  i.e. 182000 stacked rows x 200 properties per block (gradient-dominated);
- W3: 200 blocks of 300 samples x 50 properties (overhead-dominated);
- W4: 2 blocks of 40 structures x 1800 properties with a positions gradient of
  16 atoms x 3 per structure, i.e. 1960 stacked rows x 1800 (square and
  rank-deficient, like SOAP with forces): the stacked X of each block is the
  product of random factors of inner size 1400, so its rank is exactly 1400;
- W5: 4 blocks of 500 samples x 2000 properties (wide);
- W6: 2 blocks of 200000 samples x 200 properties (tall, well-conditioned).

``--scale`` multiplies the rows (and W4's rank); the properties stay.

Methods, all timed in the same process, round-robin, after one warm-up call each,
each call after a pause of 0.25 s (outside the timer) in which the BLAS threads
of the previous call go idle:

- ``floor``: ``scipy.linalg.lstsq(lapack_driver="gelsd")`` alone, on Fortran-ordered
  ``[values; gradients]`` copies stacked beforehand (outside the timer) that LAPACK
  may overwrite: no stacking, no checks, no copy. Timed with the default number of
  BLAS threads and with BLAS on one thread; the faster of the two is the floor.
- ``metatensor``: ``metatensor.lstsq(X, y, rcond)``, the reference.
- ``skm n_jobs=1`` and ``skm n_jobs=2``: ``TensorMapLstsq(rcond, n_jobs).fit(X, y)``,
  the whole fit (input checks, solve, wrapping the weights into a TensorMap).
  ``n_jobs=1`` (the default's meaning) solves blocks in as many threads as BLAS
  may use, each running BLAS on one thread;
- ``skm 1 thread``: the ``n_jobs=1`` fit under ``threadpool_limits(limits=1)``, i.e.
  strictly on one thread (``metatensor.lstsq`` keeps BLAS's default threads);
- ``normal eq.``, on the full-rank blocks with at least twice as many rows as
  columns (W1, W2, W3, W6): the normal equations on the stacked copies (outside
  the timer), block after block, timed with BLAS's default threads and on one
  thread, the faster of the two kept (as for the floor):
  ``scipy.linalg.blas.dsyrk`` for ``A^T A`` (no copy of ``A``), ``A^T b``, then
  ``scipy.linalg.cho_factor`` and ``cho_solve``. Its weights lose
  ``condition^2 x eps`` (see the accuracy rows): it is the speed anchor of tall
  blocks, not a solver to use.

Times are the minimum over the repeats (the median is printed beside it): on a
shared machine the minimum is the run least disturbed by other processes. Ratios
are against ``metatensor``, ``floor`` and ``normal eq.``.

GFLOP/s: each fit is given the flops of a Householder QR least-squares solve
followed by the singular values of its triangular factor, per block of ``m``
stacked rows and ``n`` columns, with ``M = max(m, n)`` and ``K = min(m, n)``
(an LQ decomposition for a wide block)::

    flops = 2 M K^2 - 2/3 K^3  (QR)  +  8/3 K^3  (bidiagonalising the K x K triangle)

summed over the blocks. Every default solve computes those singular values (for
the ``rcond`` cut), so the second term counts on every workload; it is
negligible on tall blocks (0.1% on W6). The count is nominal, the same for every
method of a workload, so GFLOP/s compare like inverse times: ``gelsd``
bidiagonalises a near-square block directly (``4 m n^2 - 4/3 n^3``, 28% fewer
flops on W4), and the normal equations perform ``m n^2 + n^3 / 3``, about half.
The machine's limit is measured in the same run, at the start and at the end: a
3000 x 3000 by 3000 x 3000 ``numpy.matmul`` (``2 x 3000^3`` flops), minimum of 3, on 1
and on 2 BLAS threads; ``/ peak`` divides by the best of those rates at the start.

Accuracy (``--no-accuracy`` skips it), on one block of W6's shape (200000 x 200,
rows scaled by ``--scale``):

- condition 1e3, 1e5 and 1e10: ``A = U diag(s) V^T`` with random orthonormal ``U``,
  ``V`` and ``s`` logspaced from 1 to 1/condition, ``y = A w`` for a random ``w``; the
  relative error ``|w_fit - w| / |w|`` of ``TensorMapLstsq()`` (its defaults, rcond
  ``eps x max(m, n)``), of scipy's ``gelsd`` with the same cut-off, and of the
  normal equations, next to ``condition x eps`` (the bound of a backward-stable
  solver, ``y`` being rounded) and ``condition^2 x eps`` (that of the normal
  equations). The default solve takes the block's Gram matrix at condition 1e3 and
  its QR factor (after the Gram pass) at 1e5 and 1e10: the seconds of that one fit,
  BLAS on one thread, show what the QR fall-back costs;
- rank-deficient, rank 150 (``X = F G``, random factors), ``y = X w + noise``: the
  rank and relative difference of ``TensorMapLstsq()``'s weights to scipy
  ``gelsd``'s rcond-cut minimum-norm solution (same cut-off), and the norm of both.

Peak memory is measured for each (workload, method) in a fresh Python process:
it builds the data (written in place, so that building leaves no freed peak
behind), runs the method once on a tiny problem to load every library, resets
the kernel's peak resident size (``VmHWM``, by writing ``5`` to
``/proc/self/clear_refs``), reads the resident size, runs the method once and
reads the peak again. The difference is everything the method added at its peak:
numpy copies, LAPACK workspace and thread stacks alike (``tracemalloc`` would miss
LAPACK's workspace). Where ``clear_refs`` cannot be written, ``ru_maxrss`` minus the
resident size before the run is used instead (an upper bound on the same figure
when building the data peaked higher). It is printed as MiB and as a fraction of
the input size (every X and y array).

The environment variables ``OPENBLAS_*`` (e.g. ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE``) are left as they are; every method runs under the same ones,
and the header prints them.

Where ``torch.cuda.is_available()``, each workload is also timed with
``TensorMapLstsq(device="cuda")`` next to ``device="cpu"`` (torch on the CPU) and
numpy data; otherwise that part is skipped with a message.

The run ends with the goals: ``skm n_jobs=1`` at most 0.35 x ``metatensor`` on W3,
0.8 x on W4 and W5, and at most 1.3 x ``normal eq.`` on W6, met or not in this run.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
from peak_memory import peak_added


@dataclass(frozen=True)
class Workload:
    """Shape of every block of one workload (before ``--scale``)."""

    n_blocks: int
    n_samples: int
    #: samples of the positions gradient, 3 stacked rows (xyz) each
    n_gradient_rows: int
    n_properties: int
    description: str
    #: rank of each stacked X block, None for full rank
    rank: int = None


WORKLOADS = {
    "W1": Workload(16, 4000, 0, 300, "16 blocks 4000 x 300, no gradients"),
    "W2": Workload(4, 2000, 60000, 200, "4 blocks 2000 + 60000x3 gradient rows x 200"),
    "W3": Workload(200, 300, 0, 50, "200 blocks 300 x 50"),
    "W4": Workload(
        2, 40, 640, 1800, "2 blocks 40 + 640x3 gradient rows = 1960 x 1800, rank 1400", 1400
    ),
    "W5": Workload(4, 500, 0, 2000, "4 blocks 500 x 2000 (wide)"),
    "W6": Workload(2, 200000, 0, 200, "2 blocks 200000 x 200 (tall)"),
}
METHODS = ("floor", "metatensor", "skm n_jobs=1", "skm n_jobs=2", "skm 1 thread")
NORMAL = "normal eq."
#: time of ``skm n_jobs=1`` over that of the anchor, at most (see :func:`print_goals`)
GOALS = {
    "W3": ("metatensor", 0.35),
    "W4": ("metatensor", 0.8),
    "W5": ("metatensor", 0.8),
    "W6": (NORMAL, 1.3),
}
RCOND = 1e-12
#: pause before each timed call (outside the timer), see :func:`settle`
SETTLE_S = 0.25
#: side of the square matrices of the matrix-multiply rate
MATMUL_SIDE = 3000
#: rows of the random factor drawn at a time for a low-rank X (temporaries of 16 x rank)
FACTOR_CHUNK = 16
EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------


def workload_shape(name, scale):
    """(n_blocks, n_samples, n_gradient_rows, n_properties, rank) after scaling rows."""
    workload = WORKLOADS[name]
    n_samples = max(int(workload.n_samples * scale), 1)
    n_gradient_rows = int(workload.n_gradient_rows * scale)
    rank = None if workload.rank is None else max(int(workload.rank * scale), 1)
    return workload.n_blocks, n_samples, n_gradient_rows, workload.n_properties, rank


def stacked_rows(name, scale):
    _, n_samples, n_gradient_rows, _, _ = workload_shape(name, scale)
    return n_samples + 3 * n_gradient_rows


def lstsq_flops(m, n):
    """Flops of a QR least-squares solve of ``m x n`` and the triangle's singular values."""
    big, small = max(m, n), min(m, n)
    return 2 * big * small**2 - 2 / 3 * small**3 + 8 / 3 * small**3


def workload_flops(name, scale):
    n_blocks, _, _, n_properties, _ = workload_shape(name, scale)
    return n_blocks * lstsq_flops(stacked_rows(name, scale), n_properties)


def methods_of(name, scale):
    """The methods timed on a workload: ``normal eq.`` only on full-rank tall blocks."""
    n_properties, rank = workload_shape(name, scale)[3:]
    tall = stacked_rows(name, scale) >= 2 * n_properties
    return (*METHODS, NORMAL) if rank is None and tall else METHODS


def _low_rank_rows(rng, n_rows, n_properties, rank):
    """``n_rows`` rows ``F G`` of rank ``rank`` (random ``F`` and ``G``), written in place.

    ``G`` is kept after these rows in the same allocation and ``F`` is drawn
    ``FACTOR_CHUNK`` rows at a time, so that building frees no large temporary
    that a measured method could reuse.
    """
    buffer = np.empty((n_rows + rank, n_properties))
    rows, basis = buffer[:n_rows], buffer[n_rows:]
    rng.standard_normal(out=basis)
    basis /= np.sqrt(rank)
    for start in range(0, n_rows, FACTOR_CHUNK):
        part = rows[start : start + FACTOR_CHUNK]
        np.matmul(rng.standard_normal((part.shape[0], rank)), basis, out=part)
    return rows


def build(name, scale, seed=0):
    """(X, y) TensorMaps of a workload, every array written in place.

    With a rank, the stacked X of a block (values and gradient rows, views of one
    array) is a product of random factors of inner size ``rank``.
    """
    from metatensor import Labels, TensorBlock, TensorMap

    n_blocks, n_samples, n_gradient_rows, n_properties, rank = workload_shape(name, scale)
    rng = np.random.default_rng(seed)
    properties = Labels.range("feature", n_properties)
    targets = Labels.range("energy", 1)
    samples = Labels(["system", "atom"], np.stack([np.arange(n_samples)] * 2, axis=1))
    if n_gradient_rows:
        rows = np.arange(n_gradient_rows)
        gradient_samples = Labels(
            ["sample", "system", "atom"],
            np.stack([rows % n_samples, rows % n_samples, rows // n_samples], axis=1),
        )
        xyz = [Labels.range("xyz", 3)]
    x_blocks, y_blocks = [], []
    for _ in range(n_blocks):
        weights = rng.standard_normal((n_properties, 1))
        if rank is None:
            values = np.empty((n_samples, n_properties))
            rng.standard_normal(out=values)
        else:  # values and gradient rows are views of one stacked low-rank X
            stacked = _low_rank_rows(rng, n_samples + 3 * n_gradient_rows, n_properties, rank)
            values = stacked[:n_samples]
        x = TensorBlock(values, samples, [], properties)
        y = TensorBlock(values @ weights, samples, [], targets)
        y.values[:] += 0.1 * rng.standard_normal(y.values.shape)
        if n_gradient_rows:
            if rank is None:
                gradient = np.empty((n_gradient_rows, 3, n_properties))
                rng.standard_normal(out=gradient)
            else:
                gradient = stacked[n_samples:].reshape(n_gradient_rows, 3, n_properties)
            y_gradient = (gradient.reshape(-1, n_properties) @ weights).reshape(-1, 3, 1)
            x.add_gradient("positions", TensorBlock(gradient, gradient_samples, xyz, properties))
            y.add_gradient("positions", TensorBlock(y_gradient, gradient_samples, xyz, targets))
        x_blocks.append(x)
        y_blocks.append(y)
    keys = Labels.range("center_type", n_blocks)
    return TensorMap(keys, x_blocks), TensorMap(keys, y_blocks)


def single_block(a, b):
    """(X, y) TensorMaps of one block, the values ``a`` and ``b`` (2-D) as they are."""
    from metatensor import Labels, TensorBlock, TensorMap

    samples = Labels.range("system", a.shape[0])
    x = TensorBlock(a, samples, [], Labels.range("feature", a.shape[1]))
    y = TensorBlock(b, samples, [], Labels.range("energy", b.shape[1]))
    return TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])


def input_bytes(X, y):
    total = 0
    for tensor in (X, y):
        for block in tensor.blocks():
            total += block.values.nbytes
            total += sum(gradient.values.nbytes for _, gradient in block.gradients())
    return total


def stacked_arrays(X, y):
    """[values; gradients] of every block of X and y, as metatensor.lstsq stacks them."""
    pairs = []
    for key, x_block in X.items():
        y_block = y.block(key)
        a = [x_block.values.reshape(-1, x_block.values.shape[-1])]
        b = [y_block.values.reshape(-1, y_block.values.shape[-1])]
        for parameter, gradient in x_block.gradients():
            a.append(gradient.values.reshape(-1, gradient.values.shape[-1]))
            y_gradient = y_block.gradient(parameter).values
            b.append(y_gradient.reshape(-1, y_gradient.shape[-1]))
        pairs.append((np.concatenate(a), np.concatenate(b)))
    return pairs


# ---------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------


def make_runner(method, X, y):
    """A function of no argument running ``method`` once on (X, y)."""
    if method == "metatensor":
        import metatensor

        return lambda: metatensor.lstsq(X, y, rcond=RCOND)
    if method == NORMAL:
        return NormalEquations(X, y)
    if method == "skm 1 thread":
        from threadpoolctl import threadpool_limits

        from skmetalstsq import TensorMapLstsq

        estimator = TensorMapLstsq(rcond=RCOND, n_jobs=1)

        def fit_on_one_thread():
            with threadpool_limits(limits=1):
                estimator.fit(X, y)

        return fit_on_one_thread
    if method.startswith("skm"):
        from skmetalstsq import TensorMapLstsq

        n_jobs = int(method.rsplit("=", 1)[1])
        estimator = TensorMapLstsq(rcond=RCOND, n_jobs=n_jobs)
        return lambda: estimator.fit(X, y)
    if method.startswith("torch"):
        from skmetalstsq import TensorMapLstsq

        estimator = TensorMapLstsq(rcond=RCOND, device=method.split(":", 1)[1])
        return lambda: estimator.fit(X, y)
    raise ValueError(method)


class Floor:
    """scipy gelsd alone on Fortran-ordered stacked copies prepared beforehand."""

    def __init__(self, X, y):
        self.pairs = stacked_arrays(X, y)
        self.copies = None

    def prepare(self):
        self.copies = None
        gc.collect()
        self.copies = [(np.asfortranarray(a), np.asfortranarray(b)) for a, b in self.pairs]

    def __call__(self):
        import scipy.linalg

        for a, b in self.copies:
            scipy.linalg.lstsq(
                a,
                b,
                cond=RCOND,
                lapack_driver="gelsd",
                overwrite_a=True,
                overwrite_b=True,
                check_finite=False,
            )
        self.copies = None


def normal_equations(a, b):
    """``(A^T A)^-1 A^T b`` by ``dsyrk``, ``cho_factor`` and ``cho_solve``.

    ``a`` is C-ordered, so ``a.T`` is a Fortran-ordered view that ``dsyrk``
    (``C = a.T a.T^T``, upper triangle) reads without a copy.

    Raises
    ------
    numpy.linalg.LinAlgError
        Where ``A^T A`` is not positive definite in float64.
    """
    import scipy.linalg
    from scipy.linalg import blas

    gram = blas.dsyrk(1.0, a.T, trans=0, lower=0)
    rhs = a.T @ b
    factor = scipy.linalg.cho_factor(gram, lower=False, overwrite_a=True, check_finite=False)
    return scipy.linalg.cho_solve(factor, rhs, overwrite_b=True, check_finite=False)


class NormalEquations:
    """The normal equations of every block, on stacked copies prepared beforehand."""

    def __init__(self, X, y):
        self.pairs = stacked_arrays(X, y)

    def prepare(self):
        """Nothing to prepare: the stacked arrays are only read."""

    def __call__(self):
        for a, b in self.pairs:
            normal_equations(a, b)


def settle():
    """Collect garbage and let BLAS threads of the previous call go idle.

    OpenBLAS's threads keep spinning for a while after a call; the next method
    would otherwise start with a core taken by the previous one's threads.
    """
    gc.collect()
    time.sleep(SETTLE_S)


def _statistics(times):
    """Minimum and median seconds of each method."""
    return {
        "minimum": {method: min(values) for method, values in times.items()},
        "median": {method: statistics.median(values) for method, values in times.items()},
    }


#: methods timed with BLAS's default threads and on one thread, the faster kept
ANCHORS = ("floor", NORMAL)


def anchor_labels(method):
    return f"{method} (BLAS default)", f"{method} (BLAS 1 thread)"


def time_workload(name, scale, repeats, methods):
    """Minimum and median seconds of each method on one workload, timed round-robin."""
    from threadpoolctl import threadpool_limits

    X, y = build(name, scale)
    runners, anchors = {}, {}
    for method in methods:
        if method == "floor":
            anchors[method] = Floor(X, y)
        elif method == NORMAL:
            anchors[method] = NormalEquations(X, y)
        else:
            runners[method] = make_runner(method, X, y)
    times = {method: [] for method in runners}
    for method in anchors:
        times.update({label: [] for label in anchor_labels(method)})
    for repeat in range(repeats + 1):  # the first round is a warm-up
        for method, runner in runners.items():
            settle()
            start = time.perf_counter()
            runner()
            elapsed = time.perf_counter() - start
            if repeat:
                times[method].append(elapsed)
        for method, anchor in anchors.items():
            for label, limit in zip(anchor_labels(method), (None, 1)):
                anchor.prepare()
                settle()
                with threadpool_limits(limits=limit):
                    start = time.perf_counter()
                    anchor()
                    elapsed = time.perf_counter() - start
                if repeat:
                    times[label].append(elapsed)
    result = _statistics(times)
    for method in anchors:
        for values in result.values():
            values[method] = min(values[label] for label in anchor_labels(method))
    result["input_bytes"] = input_bytes(X, y)
    return result


def matmul_rates(repeats=3):
    """GFLOP/s of a ``MATMUL_SIDE``-cubed ``numpy.matmul`` on 1 and 2 BLAS threads (best of)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_SIDE, MATMUL_SIDE))
    b = rng.standard_normal((MATMUL_SIDE, MATMUL_SIDE))
    out = np.empty_like(a)
    rates = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            np.matmul(a, b, out=out)  # starts the threads
            seconds = []
            for _ in range(repeats):
                settle()
                start = time.perf_counter()
                np.matmul(a, b, out=out)
                seconds.append(time.perf_counter() - start)
        rates[str(threads)] = 2 * MATMUL_SIDE**3 / min(seconds) / 1e9
    return rates


def memory_of(name, scale, method):
    """Peak resident memory added by one run of ``method`` (KiB), in this process."""
    from threadpoolctl import threadpool_limits

    # load the libraries and start BLAS threads on a tiny (full-rank, tall) problem first
    tiny_X, tiny_y = build("W1", 0.1)
    warm = Floor(tiny_X, tiny_y) if method == "floor" else make_runner(method, tiny_X, tiny_y)
    if method == "floor":
        warm.prepare()
    warm()
    del warm, tiny_X, tiny_y

    X, y = build(name, scale)
    if method == "floor":
        runner = Floor(X, y)
        runner.prepare()
    else:
        runner = make_runner(method, X, y)
    gc.collect()
    with threadpool_limits(limits=None):
        _, extra_kib, exact = peak_added(runner)
    return {
        "extra_kib": extra_kib,
        "input_bytes": input_bytes(X, y),
        "method": "VmHWM reset" if exact else "ru_maxrss",
    }


# ---------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------

#: conditions of the accuracy blocks
CONDITIONS = (1e3, 1e5, 1e10)
#: rank of the rank-deficient accuracy block
DEFICIENT_RANK = 150


def _conditioned(rng, m, n, condition):
    """``U diag(s) V^T`` of shape (m, n), ``s`` logspaced from 1 to ``1 / condition``."""
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    u *= np.logspace(0, -np.log10(condition), n)
    return u @ v.T


def _skm_weights(a, b):
    """``TensorMapLstsq()``'s weights (defaults), rank and fit seconds on one block.

    The fit runs with BLAS on one thread (its row chunks are not spread over
    threads), so that the seconds compare the two solves of tall blocks.
    """
    from threadpoolctl import threadpool_limits

    from skmetalstsq import TensorMapLstsq

    X, y = single_block(a, b)
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        model = TensorMapLstsq().fit(X, y)
        seconds = time.perf_counter() - start
    return model.weights_.block(0).values.T, next(iter(model.rank_.values())), seconds


def _gelsd(a, b, rcond):
    import scipy.linalg

    weights, _, rank, _ = scipy.linalg.lstsq(
        a, b, cond=rcond, lapack_driver="gelsd", check_finite=False
    )
    return weights, rank


def _relative(w, reference):
    return float(np.linalg.norm(w - reference) / np.linalg.norm(reference))


def accuracy(scale, seed=0):
    """Relative errors of the weights on blocks of W6's shape (see the docstring)."""
    m, n = max(int(WORKLOADS["W6"].n_samples * scale), 1), WORKLOADS["W6"].n_properties
    rcond = EPS * max(m, n)  # TensorMapLstsq's default, given to gelsd too
    rng = np.random.default_rng(seed)
    conditioned = []
    for condition in CONDITIONS:
        a = _conditioned(rng, m, n, condition)
        w = rng.standard_normal((n, 1))
        b = a @ w
        row = {"condition": condition}
        weights, _, row["skm_seconds"] = _skm_weights(a, b)
        row["skm"] = _relative(weights, w)
        row["gelsd"] = _relative(_gelsd(a, b, rcond)[0], w)
        try:
            row["normal"] = _relative(normal_equations(a, b), w)
        except np.linalg.LinAlgError:
            row["normal"] = None  # A^T A not positive definite in float64
        conditioned.append(row)
        del a, b
    rank = min(DEFICIENT_RANK, m)
    a = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    b = a @ rng.standard_normal((n, 1)) + 0.1 * rng.standard_normal((m, 1))
    skm_weights, skm_rank, _ = _skm_weights(a, b)
    gelsd_weights, gelsd_rank = _gelsd(a, b, rcond)
    deficient = {
        "rank": rank,
        "skm_rank": int(skm_rank),
        "gelsd_rank": int(gelsd_rank),
        "difference": _relative(skm_weights, gelsd_weights),
        "skm_norm": float(np.linalg.norm(skm_weights)),
        "gelsd_norm": float(np.linalg.norm(gelsd_weights)),
    }
    return {"shape": [m, n], "rcond": rcond, "conditioned": conditioned, "deficient": deficient}


def print_accuracy(result):
    m, n = result["shape"]
    print(
        f"\naccuracy on one {m} x {n} block (W6's shape), rcond = eps x max(m, n) = "
        f"{result['rcond']:.1e} for TensorMapLstsq() and gelsd"
    )
    print("  y = A w exactly, A = U diag(s) V^T: relative error |w_fit - w| / |w|")
    print(
        f"  {'condition':<11}{'TensorMapLstsq()':>18}{'scipy gelsd':>13}{'normal eq.':>16}"
        f"{'cond x eps':>12}{'cond^2 x eps':>14}{'skm fit s (1 thread)':>22}"
    )
    for row in result["conditioned"]:
        condition = row["condition"]
        normal = "Cholesky fails" if row["normal"] is None else f"{row['normal']:.1e}"
        print(
            f"  {condition:<11.0e}{row['skm']:>18.1e}{row['gelsd']:>13.1e}{normal:>16}"
            f"{condition * EPS:>12.1e}{condition**2 * EPS:>14.1e}{row['skm_seconds']:>22.3f}"
        )
    deficient = result["deficient"]
    print(
        f"  rank-deficient (X = F G of rank {deficient['rank']}, y = X w + noise): rank "
        f"{deficient['skm_rank']} (TensorMapLstsq()) and {deficient['gelsd_rank']} (gelsd); "
        f"|w_skm - w_gelsd| / |w_gelsd| = {deficient['difference']:.1e} "
        f"(|w| {deficient['skm_norm']:.6g} and {deficient['gelsd_norm']:.6g})"
    )


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------


def time_cuda(name, scale, repeats):
    """Minimum and median seconds of numpy, torch CPU and torch CUDA fits."""
    import torch

    if not torch.cuda.is_available():
        return None
    X, y = build(name, scale)
    runners = {
        "numpy (skm n_jobs=1)": make_runner("skm n_jobs=1", X, y),
        "torch cpu": make_runner("torch:cpu", X, y),
        "torch cuda": make_runner("torch:cuda", X, y),
    }
    times = {method: [] for method in runners}
    for repeat in range(repeats + 1):
        for method, runner in runners.items():
            settle()
            torch.cuda.synchronize()
            start = time.perf_counter()
            runner()
            torch.cuda.synchronize()
            if repeat:
                times[method].append(time.perf_counter() - start)
    return _statistics(times)


# ---------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------


def child(arguments):
    """Run one measurement in this (fresh) process and print it as JSON."""
    kind = arguments[0]
    if kind == "matmul":
        result = matmul_rates()
    elif kind == "accuracy":
        result = accuracy(float(arguments[1]))
    elif kind == "time":
        name, scale = arguments[1], float(arguments[2])
        result = time_workload(name, scale, int(arguments[3]), arguments[4].split(","))
    elif kind == "memory":
        result = memory_of(arguments[1], float(arguments[2]), arguments[3])
    else:
        result = time_cuda(arguments[1], float(arguments[2]), int(arguments[3]))
    print("RESULT " + json.dumps(result))


def run_child(*arguments):
    command = [sys.executable, os.path.abspath(__file__), "--child", *map(str, arguments)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def header(arguments):
    import numpy
    import scipy
    from threadpoolctl import threadpool_info

    import skmetalstsq

    blas = {(i["internal_api"], i["version"], i["num_threads"]) for i in threadpool_info()}
    openblas = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    print(
        f"python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}"
    )
    print(f"skmetalstsq {skmetalstsq.__version__}, {os.cpu_count()} CPUs, BLAS {sorted(blas)}")
    print(f"OPENBLAS_* environment (same for every method): {openblas or 'none'}")
    print(
        f"load average {load_average()}: other processes on this machine disturb "
        "timings; compare ratios measured in one run"
    )
    print(
        f"repeats {arguments.repeats} (minimum, median beside it), rows scaled by "
        f"{arguments.scale}, rcond {RCOND}; ratios < 1 are faster / leaner than the reference"
    )


def print_rates(rates, when):
    print(
        f"matmul {MATMUL_SIDE}^3 ({when}): {rates['1']:.1f} GFLOP/s on 1 thread, "
        f"{rates['2']:.1f} GFLOP/s on 2 threads"
    )


def print_workload(name, timing, memory, flops, peak):
    """The table of one workload: times, ratios, GFLOP/s and peak memory."""
    minimum, median = timing["minimum"], timing["median"]
    size_mib = timing["input_bytes"] / 2**20
    normal = NORMAL in minimum
    print(f"  input {size_mib:.1f} MiB, {flops / 1e9:.2f} GFLOP (nominal)")
    print(
        f"  {'method':<26}{'min s':>9}{'median s':>10}{'/ metatensor':>14}{'/ floor':>9}"
        + (f"{'/ normal eq.':>14}" if normal else "")
        + f"{'GFLOP/s':>9}{'/ peak':>8}"
        + ("" if not memory else f"{'peak +MiB':>11}{'+ / input':>11}{'/ mts +':>9}")
    )
    shown = [*anchor_labels("floor"), *METHODS[1:]]
    if normal:
        shown += anchor_labels(NORMAL)
    for method in shown:
        seconds = minimum[method]
        line = (
            f"  {method:<26}{seconds:>9.4f}{median[method]:>10.4f}"
            f"{seconds / minimum['metatensor']:>14.2f}{seconds / minimum['floor']:>9.2f}"
        )
        if normal:
            line += f"{seconds / minimum[NORMAL]:>14.2f}"
        rate = flops / seconds / 1e9
        line += f"{rate:>9.2f}{rate / peak:>8.2f}"
        key = method.split(" (BLAS")[0]  # an anchor's memory is of its default threads
        if memory and not method.endswith("(BLAS 1 thread)"):
            extra = memory[key]["extra_kib"] / 1024
            reference = memory["metatensor"]["extra_kib"] / 1024
            relative = f"{extra / reference:.2f}" if reference > 0 else "-"
            line += f"{extra:>11.1f}{extra / size_mib:>11.3f}{relative:>9}"
        print(line)
    if memory:
        print(f"  peak memory measured by {memory['metatensor']['method']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workloads", nargs="+", choices=sorted(WORKLOADS))
    parser.add_argument("-r", "--repeats", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each workload's rows")
    parser.add_argument("--quick", action="store_true", help="3 repeats, a quarter of the rows")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy rows")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child)
        return
    if arguments.quick:
        arguments.repeats, arguments.scale = 3, 0.25
    header(arguments)
    rates = run_child("matmul")
    print_rates(rates, "start")
    cuda = cuda_available()
    summary = {}
    for name in arguments.workloads or sorted(WORKLOADS):
        scaled = " (scaled)" if arguments.scale != 1 else ""
        print(f"\n{name}: {WORKLOADS[name].description}{scaled}")
        methods = methods_of(name, arguments.scale)
        timing = run_child("time", name, arguments.scale, arguments.repeats, ",".join(methods))
        memory = {}
        if not arguments.no_memory:
            memory = {m: run_child("memory", name, arguments.scale, m) for m in methods}
        flops = workload_flops(name, arguments.scale)
        print_workload(name, timing, memory, flops, max(rates.values()))
        summary[name] = (timing["minimum"], memory, timing["input_bytes"] / 2**20, flops)
        if cuda:
            times = run_child("cuda", name, arguments.scale, arguments.repeats)["minimum"]
            reference = times["numpy (skm n_jobs=1)"]
            for method, seconds in times.items():
                print(
                    f"  {method:<26}{seconds:>9.4f}{seconds / reference:>14.2f} (/ numpy)"
                    f"{flops / seconds / 1e9:>9.2f} GFLOP/s"
                )
    if not cuda:
        print("\nCUDA: torch.cuda.is_available() is False (or torch is missing): skipped")
    if not arguments.no_accuracy:
        print_accuracy(run_child("accuracy", arguments.scale))
    end_rates = run_child("matmul")
    print()
    print_rates(end_rates, "end")
    print_summary(summary, max(rates.values()))
    print_goals(summary)
    print(f"\nload average at the end: {load_average()}")


def cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_average():
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def print_summary(summary, peak):
    """Ratios per workload, the figures the goals are about."""
    methods = ("skm n_jobs=1", "skm n_jobs=2", "skm 1 thread")
    print(
        "\nsummary: minimum time / metatensor.lstsq (/ LAPACK floor); n_jobs=1 / normal eq.; "
        f"GFLOP/s of n_jobs=1 (/ best matmul rate at the start, {peak:.1f}); "
        "peak memory added / input"
    )
    print(
        f"  {'':<4}"
        + "".join(f"{method[4:]:>15}" for method in methods)
        + f"{'/ normal eq.':>14}{'GFLOP/s':>15}"
        + "".join(f"{'mem ' + method[4:]:>14}" for method in methods[:2])
        + f"{'mem metatensor':>16}"
    )
    for name, (minimum, memory, size_mib, flops) in summary.items():
        line = f"  {name:<4}"
        for method in methods:
            ratios = (
                f"{minimum[method] / minimum['metatensor']:.2f} "
                f"({minimum[method] / minimum['floor']:.2f})"
            )
            line += f"{ratios:>15}"
        normal = minimum["skm n_jobs=1"] / minimum[NORMAL] if NORMAL in minimum else None
        line += f"{'-' if normal is None else f'{normal:.2f}':>14}"
        rate = flops / minimum["skm n_jobs=1"] / 1e9
        line += f"{f'{rate:.2f} ({rate / peak:.2f})':>15}"
        if memory:
            for method in methods[:2]:
                line += f"{memory[method]['extra_kib'] / 1024 / size_mib:>14.3f}"
            line += f"{memory['metatensor']['extra_kib'] / 1024 / size_mib:>16.3f}"
        print(line)


def print_goals(summary):
    """Each goal of :data:`GOALS` for the workloads of this run, met or not."""
    goals = []
    for name, (minimum, *_) in summary.items():
        if name in GOALS and GOALS[name][0] in minimum:  # an anchor timed on this shape
            goals.append((name, *GOALS[name]))
    if not goals:
        return
    print("\ngoals: minimum time of skm n_jobs=1 (n_jobs=2) / anchor, in this run")
    for name, anchor, limit in goals:
        minimum = summary[name][0]
        ratio = minimum["skm n_jobs=1"] / minimum[anchor]
        other = minimum["skm n_jobs=2"] / minimum[anchor]
        verdict = "met" if ratio <= limit else "not met"
        print(f"  {name:<4}/ {anchor:<12}{ratio:>6.2f} ({other:.2f})   goal <= {limit:<5}{verdict}")


if __name__ == "__main__":
    main()
