"""Least-squares solves on stacked row chunks, for numpy and torch arrays.

A block's linear system is given as row chunks: ``a_parts`` (the values and every
gradient of X, each reshaped to ``(rows, n_features)``) and the matching ``b_parts``
(the same for y). They are never concatenated unless a LAPACK driver asks for the
whole matrix.

The default solve (``driver=None``) streams the chunks through a QR decomposition of
``[A | B]`` (a tall-skinny QR), then takes the SVD of the small triangular factor.
The singular values and right singular vectors of that factor are those of the
stacked ``A``, so cutting singular values below ``rcond`` times the largest one
gives LAPACK ``gelsd``'s minimum-norm solution, with a memory cost of one chunk
instead of two copies of the stacked matrix. The same factorisation gives the
solution for any number of cut-offs at the cost of one small matrix product each
(:class:`SVDFactorization`).

Every solve goes through :data:`_BACKENDS`, a small table keyed by the array library.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

#: Rows of ``[A | B]`` handed to one QR step of the streaming solve. 20k rows keep
#: the chunk copy small while each QR stays long enough for BLAS to run at speed.
CHUNK_ROWS = 20_000

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


class _NumpyBackend:
    """numpy arrays, solved with scipy's LAPACK bindings only.

    One LAPACK library for every call: numpy and scipy ship separate OpenBLAS
    builds whose thread pools slow each other down when their calls alternate.
    """

    name = "numpy"

    @staticmethod
    def eps(array):
        return float(np.finfo(array.dtype).eps)

    @staticmethod
    def empty(shape, like):
        return np.empty(shape, dtype=like.dtype, order="F")

    @staticmethod
    def qr_r(matrix):
        return scipy.linalg.qr(matrix, mode="r", overwrite_a=True, check_finite=False)[0]

    @staticmethod
    def svd(matrix):
        return scipy.linalg.svd(matrix, full_matrices=False, overwrite_a=True, check_finite=False)

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

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)


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
    def qr_r(matrix):
        import torch

        return torch.linalg.qr(matrix, mode="r")[1]

    @staticmethod
    def svd(matrix):
        import torch

        return torch.linalg.svd(matrix, full_matrices=False)

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

    @staticmethod
    def zeros(shape, like):
        import torch

        return torch.zeros(shape, dtype=like.dtype, device=like.device)


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


def _row_chunks(a_parts, b_parts, chunk_rows):
    """Yield ``(a_rows, b_rows)`` views of at most ``chunk_rows`` rows each."""
    for a_part, b_part in zip(a_parts, b_parts):
        for start in range(0, a_part.shape[0], chunk_rows):
            yield a_part[start : start + chunk_rows], b_part[start : start + chunk_rows]


def _stacked(backend, parts, like):
    """Copy ``parts`` one under the other into one Fortran-ordered matrix."""
    n_rows = sum(part.shape[0] for part in parts)
    out = backend.empty((n_rows, like.shape[1]), like)
    start = 0
    for part in parts:
        out[start : start + part.shape[0]] = part
        start += part.shape[0]
    return out


class SVDFactorization:
    """SVD of a block's stacked ``A``, with ``B`` projected on its left vectors.

    Built by streaming row chunks of ``[A | B]`` through a QR decomposition, then
    taking the SVD ``R_A = U S V^T`` of the triangular factor. For any cut-off,
    the minimum-norm solution is ``V_r S_r^-1 (U^T Q^T B)_r``.

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
        n_targets = b_parts[0].shape[1]
        width = self.n_features + n_targets
        self._eps = backend.eps(like)

        r_factor = None
        for a_rows, b_rows in _row_chunks(a_parts, b_parts, chunk_rows):
            kept = 0 if r_factor is None else r_factor.shape[0]
            buffer = backend.empty((kept + a_rows.shape[0], width), like)
            if kept:
                buffer[:kept] = r_factor
            buffer[kept:, : self.n_features] = a_rows
            buffer[kept:, self.n_features :] = b_rows
            r_factor = backend.qr_r(buffer)
            r_factor = r_factor[: min(r_factor.shape[0], width)]

        if r_factor is None or self.n_features == 0:
            r_factor = backend.zeros((0, width), like)
        top = min(r_factor.shape[0], self.n_features)
        u, self.singular_values, self._vt = backend.svd(r_factor[:top, : self.n_features])
        self._projected = u.T @ r_factor[:top, self.n_features :]
        self._n_targets = n_targets

    def rank(self, rcond):
        """Number of singular values above ``rcond`` times the largest one."""
        if rcond is None:
            rcond = default_rcond(self.n_rows, self.n_features, self._eps)
        if self.singular_values.shape[0] == 0:
            return 0
        cutoff = rcond * self.singular_values[0]
        return int((self.singular_values > cutoff).sum())

    def solve(self, rcond):
        """Weights of shape (n_targets, n_features) for the cut-off ``rcond``."""
        rank = self.rank(rcond)
        if rank == 0:
            weights = self._backend.zeros((self._n_targets, self.n_features), self._vt)
        else:
            scaled = self._projected[:rank] / self.singular_values[:rank, None]
            weights = (self._vt[:rank].T @ scaled).T
        return Solution(weights, rank, self.singular_values)


def solve(a_parts, b_parts, rcond, driver, device_type="cpu"):
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
        A LAPACK driver stacks the chunks once into a Fortran-ordered matrix that
        LAPACK overwrites (scipy for numpy, torch for torch). None is ``"gelsd"``
        for blocks of at most :data:`CHUNK_ROWS` rows, and the streaming
        :class:`SVDFactorization` (same solution, no stacked copy) for taller
        ones. On CUDA, torch only has ``"gels"``; every other driver uses the
        SVD solve there, which gives the same minimum-norm, rcond-cut solution.
    device_type : str
        ``"cpu"`` or ``"cuda"`` (the torch device type of the data).

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

    streaming = device_type != "cpu" or n_rows > CHUNK_ROWS
    if (driver is None and streaming) or (device_type != "cpu" and driver != "gels"):
        return SVDFactorization(a_parts, b_parts).solve(rcond)
    driver = driver or "gelsd"

    if n_rows == 0 or n_features == 0:
        weights = backend.zeros((n_targets, n_features), like)
        singular = None if driver in ("gels", "gelsy") else backend.zeros((0,), like)
        return Solution(weights, 0, singular)
    a_matrix = _stacked(backend, a_parts, like)
    b_matrix = _stacked(backend, b_parts, b_parts[0])
    weights, rank, singular = backend.lstsq(a_matrix, b_matrix, rcond, driver)
    return Solution(weights.T, rank, singular)


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
