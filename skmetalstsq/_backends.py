"""Array-library plumbing: numpy (scipy's LAPACK) and torch, devices and dtypes.

Everything that depends on whether a block holds numpy arrays or torch tensors is
here, behind one small table (:data:`BACKENDS`, :func:`backend_of`) of primitives:
allocation, QR, SVD, triangular solves, LAPACK's least-squares drivers and
conversions. The algorithms (:mod:`._factors`, :mod:`._solvers`) only call these.

Every factorisation works in float64 (:data:`FACTOR_DTYPE`), whatever the input
dtype, as ``numpy.linalg.lstsq`` does for float32 data; results are cast back to the
input dtype at the end.
"""

import ctypes
from functools import lru_cache

import numpy as np
import scipy.linalg
from scipy.linalg import cython_blas, cython_lapack, lapack

#: The dtype of every factor and solve.
FACTOR_DTYPE = np.dtype(np.float64)

#: Machine epsilon of :data:`FACTOR_DTYPE`.
FACTOR_EPS = float(np.finfo(FACTOR_DTYPE).eps)


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


def _capsule_function(module, name, n_arguments, n_chars=0):
    """A function of scipy's ``cython_lapack`` or ``cython_blas``, as a ctypes function.

    scipy's Python bindings of some routines hold the GIL; ctypes releases it
    during the call, so that threads run them concurrently, with the LAPACK
    library of every other call on numpy data. Every argument is a pointer
    (Fortran calling convention); the first ``n_chars`` are ``char *`` given as
    bytes.
    """
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = module.__pyx_capi__[name]
    address = get_pointer(capsule, get_name(capsule))
    arguments = [ctypes.c_char_p] * n_chars + [ctypes.c_void_p] * (n_arguments - n_chars)
    return ctypes.CFUNCTYPE(None, *arguments)(address)


#: The routines called through :func:`_capsule_function`: name -> (module, number
#: of arguments, number of leading ``char *`` arguments).
_NATIVE = {
    # jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork, info
    "dgesdd": (cython_lapack, 14, 1),
    "sgesdd": (cython_lapack, 14, 1),
    # m, n, nrhs, a, lda, b, ldb, s, rcond, rank, work, lwork, iwork, info
    "dgelsd": (cython_lapack, 14, 0),
    # jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info
    "dsyevd": (cython_lapack, 11, 2),
    # uplo, trans, n, k, alpha, a, lda, beta, c, ldc
    "dsyrk": (cython_blas, 10, 2),
}


@lru_cache(maxsize=len(_NATIVE))
def _native(name):
    """The LAPACK or BLAS routine ``name`` of :data:`_NATIVE`, called without the GIL."""
    module, n_arguments, n_chars = _NATIVE[name]
    return _capsule_function(module, name, n_arguments, n_chars)


def _int(value):
    """A pointer to a C int holding ``value``, for :func:`_native` routines."""
    return ctypes.byref(ctypes.c_int(value))


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
    _native({"d": "dgesdd", "f": "sgesdd"}[dtype.char])(
        job,
        _int(m),
        _int(n),
        a.ctypes.data,
        _int(m),
        s.ctypes.data,
        u.ctypes.data,
        _int(m if compute_uv else 1),
        vt.ctypes.data,
        _int(k if compute_uv else 1),
        work.ctypes.data,
        _int(lwork),
        iwork.ctypes.data,
        ctypes.byref(info),
    )
    _check_info("gesdd", info.value)
    return (u, s, vt) if compute_uv else s


def _add_gram(gram, matrix):
    """``gram += matrix^T matrix`` on the upper triangle (BLAS ``dsyrk``, no GIL).

    ``gram`` is a Fortran-ordered float64 square array, ``matrix`` a
    Fortran-ordered float64 array with as many columns.
    """
    k, n = matrix.shape
    if k == 0 or n == 0:
        return
    one = ctypes.byref(ctypes.c_double(1.0))
    leading = _int(max(matrix.strides[1] // matrix.itemsize, 1))
    _native("dsyrk")(
        b"U",
        b"T",
        _int(n),
        _int(k),
        one,
        matrix.ctypes.data,
        leading,
        one,
        gram.ctypes.data,
        _int(n),
    )


def _syevd_values(matrix):
    """Eigenvalues, in ascending order, of a symmetric float64 matrix (its upper
    triangle is read): LAPACK ``dsyevd`` without eigenvectors, no GIL."""
    n = matrix.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=FACTOR_DTYPE)
    a = np.array(matrix, dtype=FACTOR_DTYPE, order="F")
    values = np.empty(n, dtype=FACTOR_DTYPE)
    # beyond the minimum of 2 n + 1, room for the blocked tridiagonal reduction
    # (64 columns at a time): 20% faster at n = 200
    work = np.empty((2 + 64) * n + 1, dtype=FACTOR_DTYPE)
    iwork = np.empty(1, dtype=np.intc)
    info = ctypes.c_int(0)
    _native("dsyevd")(
        b"N",
        b"U",
        _int(n),
        a.ctypes.data,
        _int(n),
        values.ctypes.data,
        work.ctypes.data,
        _int(work.shape[0]),
        iwork.ctypes.data,
        _int(1),
        ctypes.byref(info),
    )
    _check_info("syevd", info.value)
    return values


def _gelsd(a, b, rcond):
    """LAPACK ``dgelsd`` on float64 ``a`` (m, n) and ``b`` (m, k), without the GIL.

    ``a`` is overwritten when it is Fortran-ordered float64. Returns
    ``(solution of shape (n, k), rank, singular values)``: the minimum-norm
    solution with singular values at most ``rcond`` times the largest cut.
    """
    m, n = a.shape
    k = b.shape[1]
    a = np.asarray(a, dtype=FACTOR_DTYPE, order="F")
    rhs = np.zeros((max(m, n, 1), k), dtype=FACTOR_DTYPE, order="F")
    rhs[:m] = b
    s = np.empty(max(min(m, n), 1), dtype=FACTOR_DTYPE)
    rank, info = ctypes.c_int(0), ctypes.c_int(0)

    def call(work, lwork, iwork):
        _native("dgelsd")(
            _int(m),
            _int(n),
            _int(k),
            a.ctypes.data,
            _int(max(m, 1)),
            rhs.ctypes.data,
            _int(rhs.shape[0]),
            s.ctypes.data,
            ctypes.byref(ctypes.c_double(rcond)),
            ctypes.byref(rank),
            work.ctypes.data,
            _int(lwork),
            iwork.ctypes.data,
            ctypes.byref(info),
        )

    query, iquery = np.empty(1, dtype=FACTOR_DTYPE), np.empty(1, dtype=np.intc)
    call(query, -1, iquery)
    _check_info("gelsd", info.value)
    work = np.empty(max(int(query[0]), 1), dtype=FACTOR_DTYPE)
    iwork = np.empty(max(int(iquery[0]), 1), dtype=np.intc)
    call(work, work.shape[0], iwork)
    _check_info("gelsd", info.value)
    return rhs[:n], int(rank.value), s[: min(m, n)]


class NumpyBackend:
    """numpy arrays, solved with scipy's LAPACK only.

    numpy and scipy ship separate OpenBLAS builds whose thread pools slow each
    other down when their calls alternate. Workspace sizes are queried once per
    shape. ``?geqrf``, ``?trtrs`` and ``?gesdd`` (called through ctypes) release the
    GIL; scipy's least-squares drivers do not.
    """

    name = "numpy"

    @staticmethod
    def empty(shape, like):
        """An uninitialised float64 Fortran-ordered array (``like`` is ignored)."""
        return np.empty(shape, dtype=FACTOR_DTYPE, order="F")

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=FACTOR_DTYPE)

    @staticmethod
    def vector(values, like):
        """A 1-D float64 numpy array of ``values``."""
        return np.asarray(values, dtype=FACTOR_DTYPE)

    @staticmethod
    def cast(array, dtype):
        return array.astype(dtype, copy=False)

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
        """LAPACK driver ``driver`` ("gelsd", "gelss", "gelsy") on Fortran-ordered
        float64 ``a`` and ``b``, which are overwritten (``"gelsd"`` without the GIL).

        Returns ``(solution, rank, singular values or None)``.
        """
        if driver == "gelsd":
            return _gelsd(a, b, rcond)
        weights, _, rank, singular = scipy.linalg.lstsq(
            a,
            b,
            cond=rcond,
            lapack_driver=driver,
            overwrite_a=True,
            overwrite_b=True,
            check_finite=False,
        )
        return weights, int(rank), singular if driver != "gelsy" else None

    @staticmethod
    def gram(width):
        """A zero float64 Gram matrix of ``width`` columns, for :meth:`add_gram`."""
        return np.zeros((width, width), dtype=FACTOR_DTYPE, order="F")

    @staticmethod
    def add_gram(gram, matrix):
        """``gram += matrix^T matrix`` on the upper triangle of ``gram``.

        ``matrix`` is a Fortran-ordered float64 array (e.g. a :class:`Workspace`
        matrix); BLAS ``dsyrk`` runs without the GIL.
        """
        _add_gram(gram, matrix)

    @staticmethod
    def cholesky(matrix):
        """Upper Cholesky factor of the symmetric ``matrix`` (its upper triangle is
        read), or None when it is not positive definite in float64.

        scipy's binding holds the GIL, but costs less than a call without it on
        the small matrices of the solves (10 us against 30 us at 50 x 50).
        """
        factor, info = _lapack("potrf", matrix.dtype.char)(matrix, lower=0, clean=1)
        if info > 0:
            return None
        _check_info("potrf", info)
        return factor

    @staticmethod
    def cholesky_solve(upper, rhs):
        """``(R^T R)^-1 rhs`` for the upper Cholesky factor ``R`` (as :meth:`cholesky`)."""
        solution, info = _lapack("potrs", upper.dtype.char)(upper, rhs, lower=0)
        _check_info("potrs", info)
        return solution

    @staticmethod
    def symmetric_eigenvalues(matrix):
        """Eigenvalues of the symmetric ``matrix`` (its upper triangle is read),
        ascending (no GIL)."""
        return _syevd_values(matrix)

    @staticmethod
    def inverse_condition(upper):
        """LAPACK ``?trcon``'s estimate of the reciprocal 1-norm condition number of a
        square upper-triangular matrix (O(n^2))."""
        value, info = _lapack("trcon", upper.dtype.char)(upper, norm="1", uplo="U")
        _check_info("trcon", info)
        return float(value)

    @staticmethod
    def diagonal(values, like):
        """A square float64 matrix with ``values`` (1-D numpy) on its diagonal."""
        return np.diag(np.asarray(values, dtype=FACTOR_DTYPE))


class TorchBackend:
    """torch tensors on any device, solved with ``torch.linalg``."""

    name = "torch"

    @staticmethod
    def empty(shape, like):
        import torch

        return torch.empty(shape, dtype=torch.float64, device=like.device)

    @staticmethod
    def zeros(shape, like):
        import torch

        return torch.zeros(shape, dtype=torch.float64, device=like.device)

    @staticmethod
    def vector(values, like):
        import torch

        return torch.as_tensor(np.asarray(values, dtype=FACTOR_DTYPE), device=like.device)

    @staticmethod
    def cast(array, dtype):
        return array.to(dtype=dtype)

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
    def inverse_condition(upper):
        """Reciprocal 2-norm condition number of a square triangular matrix (its SVD)."""
        import torch

        singular = torch.linalg.svdvals(upper)
        return float(singular[-1] / singular[0]) if float(singular[0]) > 0 else 0.0

    @staticmethod
    def diagonal(values, like):
        import torch

        return torch.diag(TorchBackend.vector(values, like))

    @staticmethod
    def lstsq(a, b, rcond, driver):
        """torch's ``driver`` ("gelsd", "gelss", "gelsy"); CPU "gelsy" runs scipy's."""
        import torch

        if driver == "gelsy" and a.device.type == "cpu":
            # torch's CPU gelsy passes LAPACK an uninitialised pivot array, which
            # makes its rank and solution depend on stale memory
            # (pytorch/pytorch#187411): use scipy's gelsy on the same memory
            weights, rank, _ = NumpyBackend.lstsq(
                a.detach().numpy(), b.detach().numpy(), rcond, driver
            )
            return torch.from_numpy(weights), rank, None
        result = torch.linalg.lstsq(a, b, rcond=rcond, driver=driver)
        singular = result.singular_values if driver in ("gelsd", "gelss") else None
        return result.solution, int(result.rank), singular


BACKENDS = {"numpy": NumpyBackend, "torch": TorchBackend}


def array_library(array):
    """Name of the array library of ``array``: ``"numpy"`` or ``"torch"``."""
    if isinstance(array, np.ndarray):
        return "numpy"
    if type(array).__module__.startswith("torch") and hasattr(array, "device"):
        return "torch"
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(array).__name__}")


def backend_of(array):
    """The backend (:class:`NumpyBackend` or :class:`TorchBackend`) of ``array``."""
    return BACKENDS[array_library(array)]


def device_type(array):
    """``"cpu"`` or ``"cuda"``: where ``array`` lives (numpy arrays are on the CPU)."""
    return "cpu" if isinstance(array, np.ndarray) else array.device.type


def device_of(array):
    """The torch device of a tensor, None for a numpy array (:func:`convert`'s
    ``device``: converting an array there puts it back in its library and on its device)."""
    return None if isinstance(array, np.ndarray) else array.device


def all_finite(array):
    """Whether a numpy array or torch tensor holds no NaN or infinity."""
    if isinstance(array, np.ndarray):
        return bool(np.isfinite(array).all())
    import torch

    return bool(torch.isfinite(array).all())


class Workspace:
    """Scratch memory reused by the QR steps of one thread.

    Copying a chunk into freshly allocated memory costs a page fault per page;
    reusing one buffer per thread avoids it. Only numpy chunks use it.
    """

    def __init__(self):
        self._flat = None

    def matrix(self, shape):
        """An uninitialised float64 Fortran-ordered matrix of ``shape``."""
        size = shape[0] * shape[1]
        if self._flat is None or self._flat.size < size:
            self._flat = np.empty(size, dtype=FACTOR_DTYPE)
        return self._flat[:size].reshape(shape, order="F")


# ---------------------------------------------------------------------------------
# moving arrays between libraries, devices and dtypes
# ---------------------------------------------------------------------------------


def result_dtype(x_array, y_array):
    """The dtype of the weights fitted on two arrays (factorised in float64 anyway).

    float32 (or float16, bfloat16) on both sides stays in that dtype; any other
    mix (float64, integers) gives float64, as numpy's type promotion does.
    """
    if array_library(x_array) == "numpy":
        return np.result_type(x_array.dtype, y_array.dtype, np.float16)
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


def to_numpy(array):
    """``array`` as a numpy array: torch tensors are detached and copied to the CPU."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


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
