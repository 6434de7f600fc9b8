"""Least-squares solves on stacked row chunks, for numpy and torch arrays.

A block's linear system is given as row chunks: ``a_parts`` (the values and every
gradient of X, each reshaped to ``(rows, n_features)``) and the matching ``b_parts``
(the same for y). They are never concatenated unless a LAPACK driver asks for the
whole matrix.

The default solve (``driver=None``, :func:`qr_solve`) cuts the rows into chunks of
:data:`CHUNK_ROWS` rows (:func:`row_chunks`), copies each chunk of
``[A | B]`` and takes its QR decomposition (:func:`chunk_factor`), then combines
the triangular factors in order (:func:`fold_factors`): a tall-skinny QR that copies
one chunk at a time, and whose chunks can be factorised in parallel with the same
result. The singular values of the final factor ``R_A`` are those of the stacked
``A``. When none of them is cut by ``rcond`` (full rank), the least-squares solution
is ``R_A^-1 (Q^T B)``, one triangular solve; otherwise the SVD of ``R_A`` gives
LAPACK ``gelsd``'s minimum-norm, rcond-cut solution (:func:`factor_solution`).
:class:`SVDFactorization` keeps that SVD to give the solution for any number of
cut-offs at the cost of one small matrix product each.

Every solve goes through :data:`_BACKENDS`, a small table keyed by the array library.
"""

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.linalg
from scipy.linalg import cython_lapack, lapack

#: Rows of ``[A | B]`` copied for one QR step of the default solve (at least four
#: times the width, see :func:`chunk_rows_for`). 10k rows keep the copy small (16 MB
#: at 200 float64 columns, per thread) and each QR long enough for LAPACK to run at
#: speed; on 182000 x 200 blocks, two threads ran 13% faster than with 20k rows.
CHUNK_ROWS = 10_000


def chunk_rows_for(width):
    """Rows per QR step of the default solve for ``[A | B]`` of ``width`` columns.

    Each step's factor is folded into the previous one at a cost of about
    ``width / rows`` of the step's own QR; four times the width bounds that.
    """
    return max(CHUNK_ROWS, 4 * width)


DRIVERS = ("gels", "gelsy", "gelsd", "gelss")


@dataclass
class Solution:
    """Weights of one block and what the solver could tell about them.

    Attributes
    ----------
    weights : array of shape (n_targets, n_features)
        The least-squares weights, transposed as in ``metatensor.lstsq``.
    rank : int or None
        Effective rank of the stacked X block (None when the driver does not
        report it, i.e. ``"gels"``).
    singular_values : array of shape (min(n_rows, n_features),) or None
        Singular values of the stacked X block, largest first (None for drivers
        that do not compute them: ``"gels"`` and ``"gelsy"``).
    """

    weights: object
    rank: object
    singular_values: object


def default_rcond(n_rows, n_features, dtype_eps):
    """The cut-off used for ``rcond=None``: machine epsilon times the larger dimension.

    This is numpy's and LAPACK's documented default, and is applied identically to
    numpy and torch data.
    """
    return dtype_eps * max(n_rows, n_features)


# ---------------------------------------------------------------------------------
# array-library primitives
# ---------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _lapack(name, dtype_char):
    return lapack.get_lapack_funcs(name, dtype=np.dtype(dtype_char))


@lru_cache(maxsize=512)
def _lwork(name, dtype_char, *shape):
    """Optimal workspace size of a LAPACK routine, queried once per shape."""
    work, info = _lapack(name + "_lwork", dtype_char)(*shape)
    if info != 0:  # pragma: no cover - only on invalid shapes
        raise ValueError(f"LAPACK {name}_lwork{shape} returned info={info}")
    return max(int(np.real(work)), 1)


def _check_info(name, info):
    if info > 0:
        raise np.linalg.LinAlgError(f"LAPACK {name} did not converge (info={info})")
    if info < 0:  # pragma: no cover - argument errors are programming errors
        raise ValueError(f"LAPACK {name}: illegal value in argument {-info}")


@lru_cache(maxsize=2)
def _gesdd_function(prefix):
    """scipy's ``?gesdd`` from ``scipy.linalg.cython_lapack``, as a ctypes function.

    scipy's Python binding of ``?gesdd`` holds the GIL; ctypes releases it during
    the call, so that threads take SVDs concurrently, with the LAPACK library of
    every other call on numpy data.
    """
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = cython_lapack.__pyx_capi__[prefix + "gesdd"]
    address = get_pointer(capsule, get_name(capsule))
    # jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info
    return ctypes.CFUNCTYPE(None, ctypes.c_char_p, *[ctypes.c_void_p] * 13)(address)


def _gesdd(matrix, compute_uv):
    """Thin SVD of a real 2-D array with LAPACK ``?gesdd``, without the GIL.

    Returns ``(u, s, vt)``, or ``s`` when ``compute_uv`` is False.
    """
    dtype = matrix.dtype
    m, n = matrix.shape
    k = min(m, n)
    if k == 0:
        s = np.zeros((0,), dtype=dtype)
        return (np.zeros((m, 0), dtype), s, np.zeros((0, n), dtype)) if compute_uv else s
    a = np.array(matrix, dtype=dtype, order="F")
    s = np.empty(k, dtype=dtype)
    if compute_uv:
        job, u, vt = b"S", np.empty((m, k), dtype, order="F"), np.empty((k, n), dtype, order="F")
        minimum = 4 * k * k + 6 * k + max(m, n)
    else:
        job, u, vt = b"N", np.empty(1, dtype), np.empty(1, dtype)
        minimum = 3 * k + max(max(m, n), 7 * k)
    lwork = max(_lwork("gesdd", dtype.char, m, n, int(compute_uv), 0), minimum)
    work = np.empty(lwork, dtype=dtype)
    iwork = np.empty(8 * k, dtype=np.intc)
    info = ctypes.c_int(0)

    def integer(value):
        return ctypes.byref(ctypes.c_int(value))

    _gesdd_function({"d": "d", "f": "s"}[dtype.char])(
        job,
        integer(m),
        integer(n),
        a.ctypes.data,
        integer(m),
        s.ctypes.data,
        u.ctypes.data,
        integer(m if compute_uv else 1),
        vt.ctypes.data,
        integer(k if compute_uv else 1),
        work.ctypes.data,
        integer(lwork),
        iwork.ctypes.data,
        ctypes.byref(info),
    )
    _check_info("gesdd", info.value)
    return (u, s, vt) if compute_uv else s


class _NumpyBackend:
    """numpy arrays, solved with scipy's LAPACK only.

    numpy and scipy ship separate OpenBLAS builds whose thread pools slow each
    other down when their calls alternate. Workspace sizes are queried once per
    shape. ``?geqrf``, ``?trtrs`` and ``?gesdd`` (called through ctypes) release the
    GIL; scipy's least-squares drivers do not.
    """

    name = "numpy"

    @staticmethod
    def eps(array):
        return float(np.finfo(array.dtype).eps)

    @staticmethod
    def empty(shape, like):
        return np.empty(shape, dtype=like.dtype, order="F")

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def qr_r(matrix):
        """Upper-triangular factor of ``matrix``, whose content is overwritten.

        Returns the first ``min(rows, columns)`` rows of R (a new array).
        """
        char = matrix.dtype.char
        geqrf = _lapack("geqrf", char)
        m, n = matrix.shape
        if m == 0 or n == 0:
            return np.zeros((min(m, n), n), dtype=matrix.dtype)
        qr, _, _, info = geqrf(matrix, lwork=_lwork("geqrf", char, m, n), overwrite_a=True)
        _check_info("geqrf", info)
        return np.triu(qr[: min(m, n)])

    @staticmethod
    def svd(matrix, compute_uv=True):
        return _gesdd(matrix, compute_uv)

    @staticmethod
    def solve_triangular(upper, rhs):
        solution, info = _lapack("trtrs", upper.dtype.char)(upper, rhs)
        if info > 0:  # pragma: no cover - callers only pass full-rank factors
            raise np.linalg.LinAlgError("triangular factor is singular")
        return solution

    @staticmethod
    def lstsq(a, b, rcond, driver):
        if driver == "gels":
            return _scipy_gels(a, b), None, None
        weights, _, rank, singular = scipy.linalg.lstsq(
            a,
            b,
            cond=rcond,
            lapack_driver=driver,
            overwrite_a=True,
            overwrite_b=True,
            check_finite=False,
        )
        return weights, int(rank), singular


def _scipy_gels(a, b):
    """Full-rank QR (or LQ) solve with LAPACK ``?gels``."""
    gels, gels_lwork = scipy.linalg.lapack.get_lapack_funcs(("gels", "gels_lwork"), (a,))
    n_rows, n_features = a.shape
    if n_features > n_rows:
        padded = np.zeros((n_features, b.shape[1]), dtype=b.dtype, order="F")
        padded[:n_rows] = b
        b = padded
    lwork = int(gels_lwork(n_rows, n_features, b.shape[1])[0])
    _, solution, info = gels(a, b, lwork=lwork, overwrite_a=True, overwrite_b=True)
    if info > 0:
        raise np.linalg.LinAlgError(
            "driver 'gels' needs a full-rank matrix, but the stacked X block is "
            "rank-deficient; use driver=None or 'gelsd'"
        )
    return solution[:n_features]


class _TorchBackend:
    """torch tensors on any device, solved with ``torch.linalg``."""

    name = "torch"

    @staticmethod
    def eps(array):
        import torch

        return float(torch.finfo(array.dtype).eps)

    @staticmethod
    def empty(shape, like):
        import torch

        return torch.empty(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def zeros(shape, like):
        import torch

        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def qr_r(matrix):
        import torch

        return torch.linalg.qr(matrix, mode="r")[1]

    @staticmethod
    def svd(matrix, compute_uv=True):
        import torch

        if compute_uv:
            return torch.linalg.svd(matrix, full_matrices=False)
        return torch.linalg.svdvals(matrix)

    @staticmethod
    def solve_triangular(upper, rhs):
        import torch

        return torch.linalg.solve_triangular(upper, rhs, upper=True)

    @staticmethod
    def lstsq(a, b, rcond, driver):
        import torch

        if driver == "gelsy" and a.device.type == "cpu":
            # torch's CPU gelsy passes LAPACK an uninitialised pivot array, which
            # makes its rank and solution depend on stale memory
            # (pytorch/pytorch#187411): use scipy's gelsy on the same memory
            weights, rank, _ = _NumpyBackend.lstsq(
                a.detach().numpy(), b.detach().numpy(), rcond, driver
            )
            return torch.from_numpy(weights), rank, None
        result = torch.linalg.lstsq(a, b, rcond=rcond, driver=driver)
        rank = None if driver == "gels" else int(result.rank)
        singular = result.singular_values if driver in ("gelsd", "gelss") else None
        return result.solution, rank, singular


_BACKENDS = {"numpy": _NumpyBackend, "torch": _TorchBackend}


def array_library(array):
    """Name of the array library of ``array``: ``"numpy"`` or ``"torch"``."""
    if isinstance(array, np.ndarray):
        return "numpy"
    if type(array).__module__.startswith("torch") and hasattr(array, "device"):
        return "torch"
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(array).__name__}")


# ---------------------------------------------------------------------------------
# the solves
# ---------------------------------------------------------------------------------


class Workspace:
    """Scratch memory reused by the QR steps of one thread.

    Copying a chunk into freshly allocated memory costs a page fault per page;
    reusing one buffer per thread avoids it. Only numpy chunks use it.
    """

    def __init__(self):
        self._flat = None

    def matrix(self, shape, like):
        """An uninitialised Fortran-ordered matrix of ``shape``, dtype of ``like``."""
        size = shape[0] * shape[1]
        if self._flat is None or self._flat.dtype != like.dtype or self._flat.size < size:
            self._flat = np.empty(size, dtype=like.dtype)
        return self._flat[:size].reshape(shape, order="F")


def row_chunks(a_parts, b_parts, chunk_rows=CHUNK_ROWS):
    """The row chunks a block is factorised by, each a list of ``(a_rows, b_rows)``.

    Consecutive parts share a chunk, so that many short gradient parts cost one
    QR step; every chunk but the last holds ``chunk_rows`` rows. Only views.
    """
    chunks, pieces, filled = [], [], 0
    step_rows = max(int(chunk_rows), 1)
    for a_part, b_part in zip(a_parts, b_parts):
        start, n_rows = 0, a_part.shape[0]
        while start < n_rows:
            taken = min(step_rows - filled, n_rows - start)
            pieces.append((a_part[start : start + taken], b_part[start : start + taken]))
            start += taken
            filled += taken
            if filled == step_rows:
                chunks.append(pieces)
                pieces, filled = [], 0
    if pieces:
        chunks.append(pieces)
    return chunks


def chunk_factor(pieces, workspace=None):
    """Triangular factor of the QR decomposition of one row chunk of ``[A | B]``.

    Parameters
    ----------
    pieces : list of (a_rows, b_rows)
        One chunk from :func:`row_chunks`.
    workspace : Workspace or None
        Scratch memory of the calling thread, for numpy chunks.

    Returns
    -------
    array of shape (min(rows, width), width), upper triangular
    """
    like = pieces[0][0]
    backend = _BACKENDS[array_library(like)]
    n_features = like.shape[1]
    shape = (sum(a_rows.shape[0] for a_rows, _ in pieces), n_features + pieces[0][1].shape[1])
    if workspace is not None and backend is _NumpyBackend:
        buffer = workspace.matrix(shape, like)
    else:
        buffer = backend.empty(shape, like)
    start = 0
    for a_rows, b_rows in pieces:
        stop = start + a_rows.shape[0]
        buffer[start:stop, :n_features] = a_rows
        buffer[start:stop, n_features:] = b_rows
        start = stop
    return backend.qr_r(buffer)


def fold_factors(factors):
    """Triangular factor of the rows of several factors, combined in order.

    ``qr([R_1; R_2])`` is computed, then ``qr([that; R_3])`` and so on: the
    order is fixed, so the result does not depend on which thread computed
    which factor, nor when.

    Parameters
    ----------
    factors : iterable of upper-triangular arrays of one width
        Consumed in order (it may yield factors as they are computed).

    Returns
    -------
    array or None (no factor)
    """
    total = None
    for factor in factors:
        if total is None:
            total = factor
            continue
        backend = _BACKENDS[array_library(factor)]
        stacked = backend.empty((total.shape[0] + factor.shape[0], factor.shape[1]), factor)
        stacked[: total.shape[0]] = total
        stacked[total.shape[0] :] = factor
        total = backend.qr_r(stacked)
    return total


def r_factor(a_parts, b_parts, chunk_rows=CHUNK_ROWS, map_chunks=None, workspace=None):
    """Triangular factor of the QR decomposition of the stacked ``[A | B]``.

    Each row chunk (:func:`row_chunks`) is copied and factorised on its own, and
    the factors are combined in order (:func:`fold_factors`): one chunk is copied at
    a time, and chunks can be factorised in parallel with the same result.

    Parameters
    ----------
    a_parts, b_parts : lists of 2-D arrays
        Row chunks of the stacked X and y blocks (values, then gradients), of one
        array library, dtype and device.
    chunk_rows : int
        Rows copied per QR step.
    map_chunks : callable or None
        ``map_chunks(chunk_factor, chunks)`` returns the factors in order (e.g. a
        thread pool's ``map``); None factorises them one after the other.
    workspace : Workspace or None
        Scratch memory, when ``map_chunks`` is None.

    Returns
    -------
    array of shape (min(n_rows, width), width)
        Upper triangular (trapezoidal when there are fewer rows than columns),
        with ``width = n_features + n_targets``.
    """
    chunks = row_chunks(a_parts, b_parts, chunk_rows)
    if map_chunks is None:
        factors = (chunk_factor(pieces, workspace) for pieces in chunks)
    else:
        factors = map_chunks(chunk_factor, chunks)
    factor = fold_factors(factors)
    if factor is None:
        like = a_parts[0]
        width = like.shape[1] + b_parts[0].shape[1]
        factor = _BACKENDS[array_library(like)].zeros((0, width), like)
    return factor


def _split(factor, n_features):
    """``R_A`` (at most n_features rows) and ``(Q^T B)`` rows of a factor of ``[A | B]``."""
    top = min(factor.shape[0], n_features)
    return factor[:top, :n_features], factor[:top, n_features:]


def _cut(singular_values, rcond):
    """Number of singular values above ``rcond`` times the largest one."""
    if singular_values.shape[0] == 0:
        return 0
    return int((singular_values > rcond * singular_values[0]).sum())


class SVDFactorization:
    """SVD of a block's stacked ``A``, with ``B`` projected on its left vectors.

    Built from :func:`r_factor` (row chunks of ``[A | B]`` streamed through a QR
    decomposition), then the SVD ``R_A = U S V^T`` of the triangular factor. For
    any cut-off, the minimum-norm solution is ``V_r S_r^-1 (U^T Q^T B)_r``.

    Parameters
    ----------
    a_parts, b_parts : lists of 2-D arrays
        Row chunks of the stacked X and y blocks (values, then gradients).
    chunk_rows : int
        Rows per QR step.
    """

    def __init__(self, a_parts, b_parts, chunk_rows=CHUNK_ROWS):
        like = a_parts[0]
        self._backend = backend = _BACKENDS[array_library(like)]
        self.n_rows = sum(part.shape[0] for part in a_parts)
        self.n_features = like.shape[1]
        self._n_targets = b_parts[0].shape[1]
        self._eps = backend.eps(like)
        r_a, projected = _split(r_factor(a_parts, b_parts, chunk_rows), self.n_features)
        u, self.singular_values, self._vt = backend.svd(r_a)
        self._projected = u.T @ projected

    def rank(self, rcond):
        """Number of singular values above ``rcond`` times the largest one."""
        if rcond is None:
            rcond = default_rcond(self.n_rows, self.n_features, self._eps)
        return _cut(self.singular_values, rcond)

    def solve(self, rcond):
        """Weights of shape (n_targets, n_features) for the cut-off ``rcond``."""
        rank = self.rank(rcond)
        if rank == 0:
            weights = self._backend.zeros((self._n_targets, self.n_features), self._vt)
        else:
            scaled = self._projected[:rank] / self.singular_values[:rank, None]
            weights = (self._vt[:rank].T @ scaled).T
        return Solution(weights, rank, self.singular_values)


def factor_solution(factor, n_features, rcond):
    """The minimum-norm, rcond-cut solution from the triangular factor of ``[A | B]``.

    Singular values of ``R_A`` at most ``rcond`` times the largest are cut.
    When none is cut, the solution is ``R_A^-1 (Q^T B)`` (a triangular solve);
    otherwise it comes from the SVD of ``R_A``, as in :class:`SVDFactorization`.

    Parameters
    ----------
    factor : array of shape (k, n_features + n_targets)
        From :func:`r_factor`.
    n_features : int
    rcond : float
        Relative cut-off (already resolved from None).

    Returns
    -------
    Solution
    """
    backend = _BACKENDS[array_library(factor)]
    n_targets = factor.shape[1] - n_features
    r_a, projected = _split(factor, n_features)
    if r_a.shape[0] == 0 or n_features == 0:
        weights = backend.zeros((n_targets, n_features), factor)
        return Solution(weights, 0, backend.zeros((0,), factor))
    if r_a.shape[0] == n_features:
        singular = backend.svd(r_a, compute_uv=False)
        rank = _cut(singular, rcond)
        if rank == n_features:
            return Solution(backend.solve_triangular(r_a, projected).T, rank, singular)
    u, singular, vt = backend.svd(r_a)
    rank = _cut(singular, rcond)
    if rank == 0:
        return Solution(backend.zeros((n_targets, n_features), factor), 0, singular)
    scaled = (u[:, :rank].T @ projected) / singular[:rank, None]
    return Solution((vt[:rank].T @ scaled).T, rank, singular)


def qr_solve(a_parts, b_parts, rcond, chunk_rows=CHUNK_ROWS, map_chunks=None, workspace=None):
    """LAPACK ``gelsd``'s solution of one block, by a QR of ``[A | B]`` by row chunks.

    :func:`r_factor` then :func:`factor_solution`.

    Parameters
    ----------
    a_parts, b_parts : lists of 2-D arrays
        Row chunks of the stacked X and y blocks.
    rcond : float
        Relative cut-off (already resolved from None).
    chunk_rows, map_chunks, workspace :
        As in :func:`r_factor`.

    Returns
    -------
    Solution
    """
    factor = r_factor(a_parts, b_parts, chunk_rows, map_chunks, workspace)
    return factor_solution(factor, a_parts[0].shape[1], rcond)


def solve(a_parts, b_parts, rcond, driver, device_type="cpu", map_chunks=None, workspace=None):
    """Least-squares weights of one block.

    Parameters
    ----------
    a_parts, b_parts : lists of 2-D arrays
        Row chunks of the X and y blocks (values, then each gradient), all of one
        array library, dtype and device.
    rcond : float or None
        Relative cut-off for small singular values; None is
        :func:`default_rcond`.
    driver : {None, "gels", "gelsy", "gelsd", "gelss"}
        None is :func:`qr_solve`: ``"gelsd"``'s solution, by row chunks of
        :func:`chunk_rows_for` rows. A LAPACK driver stacks the chunks once into a
        Fortran-ordered matrix that LAPACK overwrites (scipy for numpy, torch for
        torch). On CUDA, torch only has ``"gels"``; every other driver uses
        :func:`qr_solve` there, which gives the same minimum-norm, rcond-cut
        solution.
    device_type : str
        ``"cpu"`` or ``"cuda"`` (the torch device type of the data).
    map_chunks, workspace :
        For ``driver=None``, as in :func:`r_factor`.

    Returns
    -------
    Solution
    """
    like = a_parts[0]
    backend = _BACKENDS[array_library(like)]
    n_rows = sum(part.shape[0] for part in a_parts)
    n_features, n_targets = like.shape[1], b_parts[0].shape[1]
    if rcond is None:
        rcond = default_rcond(n_rows, n_features, backend.eps(like))

    if uses_qr_solve(driver, device_type):
        chunk_rows = chunk_rows_for(n_features + n_targets)
        return qr_solve(a_parts, b_parts, rcond, chunk_rows, map_chunks, workspace)

    if n_rows == 0 or n_features == 0:
        weights = backend.zeros((n_targets, n_features), like)
        singular = None if driver in ("gels", "gelsy") else backend.zeros((0,), like)
        return Solution(weights, 0, singular)
    a_matrix = _stacked(backend, a_parts, like)
    b_matrix = _stacked(backend, b_parts, b_parts[0])
    weights, rank, singular = backend.lstsq(a_matrix, b_matrix, rcond, driver)
    return Solution(weights.T, rank, singular)


def uses_qr_solve(driver, device_type):
    """Whether :func:`solve` uses :func:`qr_solve` for this driver and device."""
    return driver is None or (device_type != "cpu" and driver != "gels")


def _stacked(backend, parts, like):
    """Copy ``parts`` one under the other into one Fortran-ordered matrix."""
    n_rows = sum(part.shape[0] for part in parts)
    out = backend.empty((n_rows, like.shape[1]), like)
    start = 0
    for part in parts:
        out[start : start + part.shape[0]] = part
        start += part.shape[0]
    return out


# ---------------------------------------------------------------------------------
# moving arrays between libraries, devices and dtypes
# ---------------------------------------------------------------------------------


def solve_dtype(x_array, y_array):
    """The floating dtype both sides of a block are solved in.

    float32 with float32 stays float32; any other mix (float64, integers) is
    promoted to float64, as numpy's type promotion does.
    """
    if array_library(x_array) == "numpy":
        return np.result_type(x_array.dtype, y_array.dtype, np.float32)
    import torch

    dtype = torch.promote_types(x_array.dtype, y_array.dtype)
    return dtype if dtype.is_floating_point else torch.float64


def convert(array, device=None, dtype=None):
    """``array`` on ``device`` (a torch.device, or None to stay put) with ``dtype``.

    numpy arrays given a device become torch tensors; nothing is copied when
    the array is already of that kind.
    """
    if array_library(array) == "numpy":
        if dtype is not None and not isinstance(dtype, np.dtype):
            dtype = _numpy_dtype(dtype)
        array = array if dtype is None else array.astype(dtype, copy=False)
        if device is None:
            return array
        import torch

        array = torch.from_numpy(array)
        return array.to(device=device)
    if dtype is not None and isinstance(dtype, np.dtype):
        dtype = _torch_dtype(dtype)
    return array.to(device=device or array.device, dtype=dtype or array.dtype)


def convert_like(array, like):
    """``array`` converted to the library, device and dtype of ``like``."""
    if array_library(like) == "numpy":
        if array_library(array) != "numpy":
            array = array.detach().cpu().numpy()
        return array.astype(like.dtype, copy=False)
    return convert(array, device=like.device, dtype=like.dtype)


def _torch_dtype(dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _numpy_dtype(dtype):
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype
