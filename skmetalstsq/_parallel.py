"""Solving many blocks with BLAS on one thread, concurrently, in threads or with joblib.

OpenBLAS's results depend on its number of threads, so every LAPACK call of a fit
runs with BLAS on one thread: the weights are the same, bit for bit, whatever
``n_jobs`` and the BLAS thread settings are. The cores are used by solving blocks,
and the row chunks of tall blocks, concurrently, in a pool of threads of this
process:

- with ``n_jobs`` None or 1, as many threads as BLAS may use (threadpoolctl's
  current limit, e.g. ``OPENBLAS_NUM_THREADS``; under ``threadpool_limits(1)``,
  one);
- with ``n_jobs`` > 1 and joblib's threads (the preferred backend), ``n_jobs``
  threads.

Small blocks are solved in groups of similar cost, one task per group, so that
hundreds of them cost a few tasks; blocks taller than one chunk
(:func:`~skmetalstsq._factors.chunk_rows_for`) are factorised chunk by chunk across
the pool. LAPACK's QR, triangular solve and SVD release the GIL, so the threads run
concurrently.

When the caller chose a joblib backend of processes or a cluster
(``joblib.parallel_config(backend="loky")``, ``backend="dask"``), blocks are sent as
plain arrays (TensorBlocks cannot be pickled) in one group per worker, balanced by
their solve cost, and each worker limits its own threads.
"""

import ctypes
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from functools import lru_cache, partial

from joblib import Parallel, delayed, effective_n_jobs
from joblib.parallel import get_active_backend
from threadpoolctl import ThreadpoolController

from ._backends import Workspace
from ._factors import spans_chunks
from ._solvers import solve, uses_factor

#: Blocks cheaper than this many floating-point operations are solved in groups,
#: one pool task per group, so that hundreds of small blocks cost a few tasks.
SMALL_SOLVE_FLOPS = 5e7


def solve_cost(system):
    """Floating-point operations of a QR-based least-squares solve of ``system``."""
    n_columns = system.a_parts[0].shape[1] + system.b_parts[0].shape[1]
    return 2.0 * system.n_rows * n_columns**2 + n_columns**3


# ---------------------------------------------------------------------------------
# thread limits
# ---------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _controller(torch_imported):
    # inspecting the loaded libraries takes milliseconds: do it once per process,
    # and again once torch (which brings its own OpenMP) has been imported
    return ThreadpoolController()


def blas_limit(limits):
    """Context manager limiting BLAS and OpenMP thread pools (threadpoolctl).

    Parameters
    ----------
    limits : int or None
        Threads per pool; None leaves the pools as they are.
    """
    return _controller("torch" in sys.modules).limit(limits=limits)


def blas_threads():
    """The number of threads BLAS may use now (the largest over BLAS libraries)."""
    controllers = _controller("torch" in sys.modules).lib_controllers
    counts = [lib.num_threads for lib in controllers if lib.user_api == "blas"]
    return max(max(counts, default=1), 1)


def _counts_per_thread(lib):
    """Whether the thread count of ``lib`` (a threadpoolctl controller) is per thread.

    OpenMP's count belongs to each calling thread, and so do those of OpenBLAS
    built on OpenMP and of MKL (threadpoolctl sets its thread-local count).
    OpenBLAS built on its own threads (numpy's and scipy's wheels), BLIS and
    FlexiBLAS have one count for the whole process.
    """
    if lib.user_api == "openmp" or lib.internal_api == "mkl":
        return True
    return lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") == "openmp"


def _process_wide_setter(lib):
    """A function setting the process-wide thread count of ``lib`` from any thread.

    threadpoolctl lets one thread change OpenBLAS's count, the first one to set
    it, until that thread ends or leaves a ``with`` block of threadpoolctl, and
    silently ignores the others: a fit from a thread pool or a Jupyter callback
    would keep BLAS multi-threaded. OpenBLAS's own ``openblas_set_num_threads``
    (found under the prefix and suffix threadpoolctl reads the count with) sets
    it from any thread. Older threadpoolctl versions, whose controllers have no
    ``dynlib``, have no such rule either and set it themselves.
    """
    library = getattr(lib, "dynlib", None)
    if lib.internal_api == "openblas" and library is not None:
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                if hasattr(library, f"{prefix}openblas_get_num_threads{suffix}"):
                    return getattr(library, f"{prefix}openblas_set_num_threads{suffix}")
    return lib.set_num_threads


def _torch_mkl_local():
    """``MKL_Set_Num_Threads_Local`` of the MKL built into torch, or None.

    torch's CPU wheels link MKL into ``libtorch_cpu``, where threadpoolctl does
    not see it. MKL follows the calling thread's OpenMP count unless the thread
    has a count of its own, which ``torch.set_num_threads`` gives it.
    """
    import torch

    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in names:
        if "torch_cpu" in name:
            try:
                return ctypes.CDLL(os.path.join(folder, name)).MKL_Set_Num_Threads_Local
            except (OSError, AttributeError):
                continue
    return None


@lru_cache(maxsize=4)
def _thread_counts(torch_imported):
    """The thread counts :func:`single_threaded` sets, found once per process.

    Returns
    -------
    process_wide : list of (get, set) functions
        One count for the whole process each.
    per_thread : ThreadpoolController
        The libraries counting threads per calling thread.
    mkl_local : function or None
        :func:`_torch_mkl_local`, when torch is imported.
    """
    controller = _controller(torch_imported)
    process_wide = [
        (lib.get_num_threads, _process_wide_setter(lib))
        for lib in controller.lib_controllers
        if not _counts_per_thread(lib)
    ]
    per_thread = controller.select(
        filepath=[lib.filepath for lib in controller.lib_controllers if _counts_per_thread(lib)]
    )
    return process_wide, per_thread, _torch_mkl_local() if torch_imported else None


@contextmanager
def _torch_single_threaded(torch, mkl_local):
    """torch's MKL on one thread in the calling thread, restored on exit.

    A thread's first call to torch sets its OpenMP and MKL counts from
    ``torch.set_num_threads``' value, over any limit: that call is made here,
    before the limits are set. Where torch's MKL is not found,
    ``torch.set_num_threads`` sets this thread's counts, and torch's default for
    threads that have not used torch yet, which each thread sets back to its own
    count on exit.
    """
    if torch is None:
        yield
        return
    previous = None if mkl_local is None else mkl_local(1)
    threads = torch.get_num_threads()
    if mkl_local is None:
        torch.set_num_threads(1)
    else:
        mkl_local(1)
    try:
        yield
    finally:
        if mkl_local is None:
            torch.set_num_threads(threads)
        else:
            mkl_local(previous)


_shared_lock = threading.Lock()
_shared_state = {"users": 0, "saved": None}


@contextmanager
def single_threaded():
    """BLAS, OpenMP and torch's intra-op threads on one thread, restored on exit.

    Process-wide counts (OpenBLAS of numpy's and scipy's wheels) are set by the
    first of concurrent users (threads of a pool, of a Dask worker, of the
    caller) and restored by the last one, from any thread. Per-thread counts
    (OpenMP, hence torch's intra-op pool, and MKL) are set and restored by each
    thread for itself.
    """
    torch = sys.modules.get("torch")
    process_wide, per_thread, mkl_local = _thread_counts(torch is not None)
    # the outer limiter restores this thread's counts as they are now, whatever
    # torch's first call and the process-wide settings do to them
    with per_thread.limit(limits=None):
        with _shared_lock:
            if _shared_state["users"] == 0:
                _shared_state["saved"] = [(set_count, get()) for get, set_count in process_wide]
                for set_count, _ in _shared_state["saved"]:
                    set_count(1)
            _shared_state["users"] += 1
        try:
            with _torch_single_threaded(torch, mkl_local), per_thread.limit(limits=1):
                yield
        finally:
            with _shared_lock:
                _shared_state["users"] -= 1
                if _shared_state["users"] == 0:
                    for set_count, threads in _shared_state["saved"]:
                        set_count(threads)
                    _shared_state["saved"] = None


# ---------------------------------------------------------------------------------
# solving
# ---------------------------------------------------------------------------------


def _progress(system, index, n_systems, seconds):
    return (
        f"[TensorMapLstsq] block {system.label} [{index + 1}/{n_systems}]: "
        f"{system.n_rows} x {system.a_parts[0].shape[1]} solved in {seconds:.3f} s"
    )


def _solve_one(system, rcond, driver, workspace, map_chunks=None):
    return solve(system, rcond, driver, map_chunks=map_chunks, workspace=workspace)


def _solve_group(systems, indices, n_systems, rcond, driver, verbose, caller_pid):
    """Solve a group of blocks one after the other, with BLAS on one thread.

    Progress lines are printed as blocks are solved when the worker shares the
    caller's process (and its standard output); a worker process returns them
    for the caller to print.

    Returns
    -------
    (list of Solution, list of str)
    """
    in_caller = os.getpid() == caller_pid
    workspace = Workspace()
    solutions, lines = [], []
    with single_threaded():
        for system, index in zip(systems, indices):
            start = time.perf_counter()
            solutions.append(_solve_one(system, rcond, driver, workspace))
            if verbose:
                line = _progress(system, index, n_systems, time.perf_counter() - start)
                if in_caller:
                    print(line, flush=True)
                else:
                    lines.append(line)
    return solutions, lines


def run_tasks(tasks, n_jobs):
    """Run ``(function, args, cost)`` tasks; results in order.

    Serial runs keep BLAS on one thread for small tasks; parallel runs use
    joblib threads (or the caller's joblib backend), one group of tasks of
    similar total cost per worker, BLAS on one thread.
    """
    n_workers = min(effective_n_jobs(n_jobs), len(tasks))
    if n_workers <= 1:
        results = []
        for function, args, cost in tasks:
            if cost < SMALL_SOLVE_FLOPS:
                with single_threaded():
                    results.append(function(*args))
            else:
                results.append(function(*args))
        return results
    groups = _balanced_groups([cost for _, _, cost in tasks], n_workers)
    with single_threaded():
        grouped = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(_run_group)([tasks[i] for i in group]) for group in groups
        )
    results = [None] * len(tasks)
    for group, group_results in zip(groups, grouped):
        for i, result in zip(group, group_results):
            results[i] = result
    return results


def _run_group(tasks):
    return [function(*args) for function, args, _ in tasks]


def _balanced_groups(costs, n_groups):
    """Split positions into ``n_groups`` groups of similar total cost (greedy LPT).

    Each group lists its positions in increasing order.
    """
    groups = [[] for _ in range(n_groups)]
    totals = [0.0] * n_groups
    for position in sorted(range(len(costs)), key=lambda i: -costs[i]):
        lightest = totals.index(min(totals))
        groups[lightest].append(position)
        totals[lightest] += costs[position]
    return [sorted(group) for group in groups if group]


def _with_workspace(local, function, pieces):
    workspace = local.__dict__.setdefault("workspace", Workspace())
    # OpenMP (hence torch's LAPACK) counts threads per calling thread
    with single_threaded():
        return function(pieces, workspace)


def _solve_in_pool(systems, rcond, driver, verbose, n_threads):
    """Solve every block in a pool of ``n_threads`` threads, BLAS on one thread each.

    Blocks taller than one chunk (default solve, CPU) are solved one at a time,
    their chunks factorised across the pool and folded here in order; the other
    blocks are solved in groups of similar cost, one pool task per group.
    """
    n_systems = len(systems)
    solutions = [None] * n_systems
    pid = os.getpid()
    local = threading.local()
    tall = [
        i
        for i, system in enumerate(systems)
        if system.device_type == "cpu" and uses_factor(driver, "cpu") and spans_chunks(system)
    ]
    others = sorted(set(range(n_systems)) - set(tall))
    with single_threaded(), ThreadPoolExecutor(n_threads) as pool:

        def map_chunks(function, chunks):
            return pool.map(partial(_with_workspace, local, function), chunks)

        for i in tall:
            start = time.perf_counter()
            solutions[i] = _solve_one(systems[i], rcond, driver, None, map_chunks)
            if verbose:
                print(_progress(systems[i], i, n_systems, time.perf_counter() - start), flush=True)

        # large blocks one per task; small ones in two groups per thread, which
        # balance the threads better than one (200 blocks of 300 x 50: -15%)
        costs = [solve_cost(systems[i]) for i in others]
        n_small = sum(cost < SMALL_SOLVE_FLOPS for cost in costs)
        n_groups = min(len(others), len(others) - n_small + 2 * n_threads)
        groups = [[others[j] for j in group] for group in _balanced_groups(costs, n_groups)]
        groups.sort(key=lambda group: -sum(solve_cost(systems[i]) for i in group))
        futures = {
            pool.submit(
                _solve_group,
                [systems[i] for i in group],
                group,
                n_systems,
                rcond,
                driver,
                verbose,
                pid,
            ): group
            for group in groups
        }
        for future in as_completed(futures):
            for i, solution in zip(futures[future], future.result()[0]):
                solutions[i] = solution
    return solutions


def solve_systems(systems, rcond, driver, n_jobs=None, verbose=0):
    """Solve every block system; results in the order of ``systems``.

    Parameters
    ----------
    systems : list of BlockSystem
        Each with ``a_parts``, ``b_parts`` (row chunks), ``device_type`` and a
        ``label`` used in progress messages.
    rcond, driver :
        Passed to :func:`skmetalstsq._solvers.solve`.
    n_jobs : int or None
        joblib's ``n_jobs``; None is one worker unless a ``joblib.parallel_config``
        says otherwise. One worker solves in threads, as many as BLAS may use.
    verbose : int
        Print one line per solved block when > 0.

    Returns
    -------
    list of Solution
    """
    if not systems:
        return []
    n_jobs = effective_n_jobs(n_jobs)
    pid = os.getpid()
    backend, _ = get_active_backend(prefer="threads")
    if n_jobs == 1 or getattr(backend, "uses_threads", False):
        # one worker, or joblib's threads: this process's own pool of threads
        on_cpu = all(system.device_type == "cpu" for system in systems)
        n_threads = (blas_threads() if n_jobs == 1 else n_jobs) if on_cpu else 1
        tall = uses_factor(driver, "cpu") and any(spans_chunks(system) for system in systems)
        if n_threads > 1 and (len(systems) > 1 or tall):
            return _solve_in_pool(systems, rcond, driver, verbose, n_threads)
        indices = list(range(len(systems)))
        return _solve_group(systems, indices, len(systems), rcond, driver, verbose, pid)[0]

    # processes (loky) or a cluster (Dask): one group of blocks per worker
    costs = [solve_cost(system) for system in systems]
    groups = _balanced_groups(costs, min(n_jobs, len(systems)))
    solutions = [None] * len(systems)
    with single_threaded():
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_solve_group)(
                [systems[i] for i in group], group, len(systems), rcond, driver, verbose, pid
            )
            for group in groups
        )
        for group, (group_solutions, lines) in zip(groups, results):
            for line in lines:
                print(line, flush=True)
            for i, solution in zip(group, group_solutions):
                solutions[i] = solution
    return solutions
