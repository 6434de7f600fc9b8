"""Solving many blocks: serially or with joblib, without oversubscribing BLAS.

Blocks are sent to workers as plain arrays (TensorBlocks cannot be pickled), in
one group of blocks per worker balanced by their solve cost, so that hundreds of
small blocks cost a handful of tasks. Thread workers each run BLAS on one thread.
Blocks large enough for multi-threaded BLAS are solved one at a time in this
process, with BLAS's own threads, for any ``n_jobs``: BLAS results depend on its
thread count, and this way the weights do not depend on ``n_jobs``.
Any joblib backend chosen by the caller (``joblib.parallel_config``), a Dask
cluster included, is honoured: threads are only preferred.
"""

import time
from dataclasses import dataclass

from joblib import Parallel, delayed, effective_n_jobs
from threadpoolctl import threadpool_limits

from ._solvers import solve

#: Below this many floating-point operations, a block is solved with BLAS on one
#: thread: waking more threads costs more than they save.
SMALL_SOLVE_FLOPS = 5e7


@dataclass
class BlockSystem:
    """The linear system of one block, as plain arrays that any worker can take.

    Attributes
    ----------
    label : str
        The block key, for progress messages.
    a_parts, b_parts : lists of 2-D arrays
        Row chunks of X and y: the values, then each gradient.
    device_type : str
        ``"cpu"`` or ``"cuda"``.
    """

    label: str
    a_parts: list
    b_parts: list
    device_type: str = "cpu"


def solve_cost(system):
    """Floating-point operations of a QR-based least-squares solve of ``system``."""
    n_rows = sum(part.shape[0] for part in system.a_parts)
    n_columns = system.a_parts[0].shape[1] + system.b_parts[0].shape[1]
    return 2.0 * n_rows * n_columns**2 + n_columns**3


def _solve_group(systems, rcond, driver, verbose):
    solutions = []
    for system in systems:
        start = time.perf_counter()
        solutions.append(solve(system.a_parts, system.b_parts, rcond, driver, system.device_type))
        if verbose:
            n_rows = sum(part.shape[0] for part in system.a_parts)
            print(
                f"[TensorMapLstsq] block {system.label}: {n_rows} x "
                f"{system.a_parts[0].shape[1]} solved in "
                f"{time.perf_counter() - start:.3f} s",
                flush=True,
            )
    return solutions


def _balanced_groups(costs, n_groups):
    """Split positions into ``n_groups`` groups of similar total cost (greedy LPT)."""
    groups = [[] for _ in range(n_groups)]
    totals = [0.0] * n_groups
    for position in sorted(range(len(costs)), key=lambda i: -costs[i]):
        lightest = totals.index(min(totals))
        groups[lightest].append(position)
        totals[lightest] += costs[position]
    return [group for group in groups if group]


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
        says otherwise.
    verbose : int
        Print one line per solved block when > 0.

    Returns
    -------
    list of Solution
    """
    costs = [solve_cost(system) for system in systems]
    small = [i for i, cost in enumerate(costs) if cost < SMALL_SOLVE_FLOPS]
    large = [i for i, cost in enumerate(costs) if cost >= SMALL_SOLVE_FLOPS]
    n_workers = min(effective_n_jobs(n_jobs), len(small))
    solutions = [None] * len(systems)
    if n_workers <= 1:
        if small:
            with threadpool_limits(limits=1):
                _solve_into(solutions, small, systems, rcond, driver, verbose)
    else:
        groups = [
            [small[i] for i in group]
            for group in _balanced_groups([costs[i] for i in small], n_workers)
        ]
        # limits BLAS in this process; each worker limits its own threads too
        # (OpenMP, hence torch's MKL, counts threads per calling thread)
        with threadpool_limits(limits=1):
            results = Parallel(n_jobs=n_jobs, prefer="threads")(
                delayed(_solve_group_one_thread)(
                    [systems[i] for i in group], rcond, driver, verbose
                )
                for group in groups
            )
        for group, group_solutions in zip(groups, results):
            for i, solution in zip(group, group_solutions):
                solutions[i] = solution
    # Large blocks are solved one at a time with BLAS's own threads, whatever
    # n_jobs is: BLAS results depend on its thread count, so this keeps every
    # block's weights identical for any n_jobs.
    _solve_into(solutions, large, systems, rcond, driver, verbose)
    return solutions


def _solve_group_one_thread(systems, rcond, driver, verbose):
    with threadpool_limits(limits=1):
        return _solve_group(systems, rcond, driver, verbose)


def _solve_into(solutions, positions, systems, rcond, driver, verbose):
    group = [systems[i] for i in positions]
    for i, solution in zip(positions, _solve_group(group, rcond, driver, verbose)):
        solutions[i] = solution
