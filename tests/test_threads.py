"""Fits from any thread are bit-identical, and leave the caller's thread limits alone.

A fit started from a thread other than the main one (a thread pool, a Jupyter
callback, a Dask threaded worker) must run every LAPACK call with BLAS on one
thread, as a fit from the main thread does. numpy's and scipy's OpenBLAS keep one
thread count for the whole process, which recent threadpoolctl versions let only
one thread change; OpenMP (torch's intra-op pool) and MKL keep one per thread. The
block is tall enough for OpenBLAS to use its threads when it may.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.linalg
from builders import as_numpy, single_block_map, to_torch
from threadpoolctl import threadpool_info, threadpool_limits

from skmetalstsq import TensorMapLstsq

DRIVERS = [None, "gelsd", "gelsy", "gels"]
N_THREADS = 8


@pytest.fixture(scope="module")
def arrays():
    """A 16000 x 48 block and three targets."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16000, 48))
    y = x @ rng.normal(size=(48, 3)) + 0.1 * rng.normal(size=(16000, 3))
    return x, y


def pair(arrays, library):
    X, y = single_block_map(*arrays)
    if library == "torch":
        pytest.importorskip("torch")
        return to_torch(X), to_torch(y)
    return X, y


def fit_weights(X, y, driver):
    return as_numpy(TensorMapLstsq(driver=driver).fit(X, y).weights_.block(0).values).copy()


def limits():
    """Thread counts of every BLAS and OpenMP library, as the calling thread sees them."""
    return sorted((info["filepath"], info["num_threads"]) for info in threadpool_info())


def concurrently(function, n_threads, with_caller=False):
    """``function()`` in ``n_threads`` threads started together (and in this thread).

    Returns the results, the calling thread's last.
    """
    barrier = threading.Barrier(n_threads + int(with_caller))

    def task(_):
        barrier.wait()
        return function()

    with ThreadPoolExecutor(n_threads) as pool:
        futures = [pool.submit(task, i) for i in range(n_threads)]
        mine = [task(None)] if with_caller else []
        return [future.result() for future in futures] + mine


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("driver", DRIVERS, ids=str)
def test_same_weights_from_any_thread(arrays, library, driver):
    X, y = pair(arrays, library)
    reference = fit_weights(X, y, driver)
    scipy_driver = "gelsy" if driver == "gelsy" else "gelsd"  # scipy has no "gels"
    expected = scipy.linalg.lstsq(*arrays, lapack_driver=scipy_driver)[0].T
    np.testing.assert_allclose(reference, expected, rtol=1e-9, atol=1e-12)

    with ThreadPoolExecutor(1) as pool:
        one = pool.submit(fit_weights, X, y, driver).result()
    assert np.array_equal(one, reference)

    many = concurrently(lambda: fit_weights(X, y, driver), N_THREADS, with_caller=True)
    identical = [np.array_equal(weights, reference) for weights in many]
    assert all(identical), f"{identical.count(False)} of {len(many)} fits differ"


@pytest.mark.parametrize("driver", DRIVERS, ids=str)
def test_same_weights_after_torch_set_num_threads(arrays, driver):
    # torch.set_num_threads gives the calling thread an MKL count of its own,
    # which MKL prefers to the thread's OpenMP count
    torch = pytest.importorskip("torch")
    X, y = pair(arrays, "torch")
    reference = fit_weights(X, y, driver)
    threads = torch.get_num_threads()

    def fit_after_setting():
        torch.set_num_threads(threads)
        return fit_weights(X, y, driver)

    try:
        many = concurrently(fit_after_setting, N_THREADS, with_caller=True)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(weights, reference) for weights in many)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_thread_limits_restored(arrays, library):
    X, y = pair(arrays, library)
    before = limits()
    fit_weights(X, y, "gelsd")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(fit_weights, X, y, "gelsd").result()
    assert limits() == before

    # each of the pool's threads sees its own limits as they were before the fits
    barrier = threading.Barrier(N_THREADS)

    def fit_after_all_looked():
        seen = limits()
        barrier.wait()
        fit_weights(X, y, None)
        return threading.get_ident(), seen

    def look_once_all_there():
        barrier.wait()
        return threading.get_ident(), limits()

    with ThreadPoolExecutor(N_THREADS) as pool:
        futures = [pool.submit(fit_after_all_looked) for _ in range(N_THREADS)]
        seen = dict(future.result() for future in futures)
        futures = [pool.submit(look_once_all_there) for _ in range(N_THREADS)]
        after = dict(future.result() for future in futures)
    assert seen.keys() == after.keys()
    assert all(after[thread] == seen[thread] for thread in seen)
    assert limits() == before


@pytest.mark.parametrize("in_worker", [False, True], ids=["main thread", "worker thread"])
def test_fit_inside_threadpool_limits(arrays, in_worker):
    X, y = pair(arrays, "numpy")
    reference = fit_weights(X, y, "gelsd")

    def user_code():
        before = limits()
        with threadpool_limits(limits=1):
            inside = limits()
            weights = fit_weights(X, y, "gelsd")
            assert limits() == inside
        return before, weights, limits()

    if in_worker:
        with ThreadPoolExecutor(1) as pool:
            before, weights, after = pool.submit(user_code).result()
    else:
        before, weights, after = user_code()
    assert after == before
    assert np.array_equal(weights, reference)


def blas_limited_in_worker():
    """Whether ``threadpool_limits(1)`` in a new thread limits every BLAS library."""

    def check():
        with threadpool_limits(limits=1, user_api="blas"):
            return all(
                info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas"
            )

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(check).result()


def test_fit_leaves_threadpoolctl_to_other_threads(arrays):
    # threadpoolctl lets one thread at a time change OpenBLAS's process-wide count:
    # a fit must not keep that right, or the caller's limits in other threads are
    # silently ignored
    if not blas_limited_in_worker():
        pytest.skip("another thread of this process holds threadpoolctl's OpenBLAS limits")
    X, y = pair(arrays, "numpy")
    fit_weights(X, y, "gelsd")
    assert blas_limited_in_worker()
