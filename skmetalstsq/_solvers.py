"""Weights from a block's triangular factor, or from LAPACK's least-squares drivers.

The default solve (``driver=None``) and ``"gels"`` solve from a block's triangular
factor. For tall numpy blocks it is first found as the Cholesky factor of the
block's Gram matrix (:func:`_gram_solution`): where that block is well-conditioned
and nothing is cut, its solution, refined once against the rows, is the answer.
Otherwise they take the :class:`~._factors.Factor` of the block (its weighted
``[1 | A | B]`` streamed through a QR decomposition) and solve from it
(:func:`factor_solution`):

- no penalty and no singular value cut by ``rcond``: ``R_A^-1 (Q^T B)``, one
  triangular solve;
- otherwise the SVD ``R_A = U S V^T``: the singular values at most ``rcond`` times the
  largest are cut (those of the weighted, centred X block), and the ridge penalty
  filters the others, ``w = V_r diag(s / (s^2 + alpha)) (U^T Q^T B)_r``; without a
  penalty this is LAPACK ``gelsd``'s minimum-norm, rcond-cut solution. A penalty per
  feature (diagonal Tikhonov) solves ``min ||S_r V_r^T w - c_r||^2 + sum_j alpha_j
  w_j^2`` from the same SVD;
- the intercept, when fitted, follows from the first row of ``R``.

:class:`SVDFactorization` keeps the SVD of one factor to give the solution for any
number of (rcond, alpha) candidates at the cost of one small matrix product each.

The LAPACK drivers ``"gelsd"``, ``"gelss"`` and ``"gelsy"`` get the weighted, centred
rows stacked once into one float64 matrix, with ``sqrt(alpha)`` rows appended for a
ridge penalty (so that ``rcond`` cuts the singular values of that augmented matrix).
"""

from dataclasses import dataclass
from functools import partial

import numpy as np

from ._backends import FACTOR_EPS, all_finite, backend_of
from ._factors import (
    factorize,
    gram_matrix,
    gram_tasks,
    one_step_rows,
    residual_gradient,
    spans_chunks,
    value_means,
)

DRIVERS = ("gels", "gelsy", "gelsd", "gelss")

#: The largest condition number of a block's weighted (and centred) X that the
#: default solve takes through its Gram matrix (:func:`_gram_solution`). The
#: Cholesky factor's solution loses ``condition^2 x eps`` (2e-8 at 1e4) and one
#: refinement step against the rows brings it back to the QR solve's accuracy;
#: its singular values are accurate to ``eps x (s_max / s_i)^2`` relative.
GRAM_CONDITION = 1e4


@dataclass
class Solution:
    """Weights of one block and what the solver could tell about them.

    Attributes
    ----------
    weights : array of shape (n_targets, n_features)
        The least-squares weights, transposed as in ``metatensor.lstsq``.
    rank : int or None
        Effective rank of the weighted (and centred) stacked X block, None for
        ``"gels"``.
    singular_values : array of shape (min(n_rows, n_features),) or None
        Singular values of the weighted (and centred) stacked X block, largest
        first (None for ``"gels"`` and ``"gelsy"``, which do not compute them).
    intercept : array of shape (n_targets,) or None
        The intercept of each target, None when none is fitted.
    """

    weights: object
    rank: object
    singular_values: object
    intercept: object = None

    def cast(self, dtype):
        """This solution with weights and intercept in ``dtype``."""
        backend = backend_of(self.weights)
        intercept = None if self.intercept is None else backend.cast(self.intercept, dtype)
        return Solution(
            backend.cast(self.weights, dtype), self.rank, self.singular_values, intercept
        )


def default_rcond(n_rows, n_features):
    """The cut-off used for ``rcond=None``: float64 epsilon times the larger dimension.

    This is ``numpy.linalg.lstsq``'s default (which computes float32 data in
    float64 too), for every dtype and array library.
    """
    return FACTOR_EPS * max(n_rows, n_features)


def _cut(singular_values, rcond):
    """Number of singular values above ``rcond`` times the largest one."""
    if singular_values.shape[0] == 0:
        return 0
    return int((singular_values > rcond * singular_values[0]).sum())


def _is_scalar(alpha):
    return np.ndim(alpha) == 0


def _penalised(alpha):
    """Whether ``alpha`` (a float or one per feature) penalises any feature."""
    if isinstance(alpha, float):
        return alpha > 0
    return bool(np.any(np.asarray(alpha) > 0))


def _intercept(factor, head, weights):
    """The intercept from the first row ``head`` of R: ``(r13 - r12 w) / r11``."""
    if not factor.intercept:
        return None
    backend = backend_of(weights)
    if head is None:
        return backend.zeros((factor.n_targets,), weights)
    n = factor.n_features
    return (head[0, 1 + n :] - weights @ head[0, 1 : 1 + n]) / head[0, 0]


def _diagonal_penalty(backend, m, rhs, alpha):
    """``min ||m w - rhs||^2 + sum_j alpha_j w_j^2`` (minimum norm), as (n_targets, n)."""
    n, n_targets = m.shape[1], rhs.shape[1]
    stacked = backend.empty((m.shape[0] + n, n + n_targets), m)
    stacked[: m.shape[0], :n] = m
    stacked[: m.shape[0], n:] = rhs
    stacked[m.shape[0] :, :n] = backend.diagonal(np.sqrt(alpha), m)
    stacked[m.shape[0] :, n:] = 0.0
    r = backend.qr_r(stacked)
    r_a, projected = r[:n, :n], r[:n, n:]
    if (np.asarray(alpha) > 0).all():
        return backend.solve_triangular(r_a, projected).T
    u, singular, vt = backend.svd(r_a)
    rank = _cut(singular, default_rcond(n, n))
    scaled = (u[:, :rank].T @ projected) / singular[:rank, None]
    return (vt[:rank].T @ scaled).T


def factor_solution(factor, rcond, alpha=0.0):
    """The rcond-cut, ridge-penalised solution from a block's :class:`Factor`.

    Parameters
    ----------
    factor : Factor
    rcond : float
        Relative cut-off (already resolved from None).
    alpha : float or 1-D numpy array of n_features floats
        Ridge penalty, for every feature or per feature.

    Returns
    -------
    Solution, in float64
    """
    backend = backend_of(factor.r)
    n_features, n_targets = factor.n_features, factor.n_targets
    r_a, projected, head = factor.centred()
    weights = None
    if r_a.shape[0] == 0 or n_features == 0:
        weights = backend.zeros((n_targets, n_features), factor.r)
        rank, singular = 0, backend.zeros((0,), factor.r)
    elif _is_scalar(alpha) and alpha == 0 and r_a.shape[0] == n_features:
        singular = backend.svd(r_a, compute_uv=False)
        rank = _cut(singular, rcond)
        if rank == n_features:
            weights = backend.solve_triangular(r_a, projected).T
    if weights is None and backend.name == "numpy" and _is_scalar(alpha) and alpha == 0:
        # the minimum-norm, rcond-cut solution without forming singular vectors
        weights, rank, singular = backend.lstsq(np.array(r_a, order="F"), projected, rcond, "gelsd")
        weights = weights.T
    if weights is None:
        u, singular, vt = backend.svd(r_a)
        rank = _cut(singular, rcond)
        weights = _svd_weights(backend, u, singular, vt, projected, rank, alpha, factor.r)
    singular = _padded(backend, singular, min(factor.n_rows, n_features))
    return Solution(weights, rank, singular, _intercept(factor, head, weights))


def _padded(backend, singular, size):
    """Singular values with zeros appended up to ``size``.

    The centred rows of a block with an intercept have one rank less than their
    number, and its factor one row less: the missing values are zeros.
    """
    missing = size - singular.shape[0]
    if missing <= 0:
        return singular
    padded = backend.zeros((size,), singular)
    padded[: singular.shape[0]] = singular
    return padded


def _svd_weights(backend, u, singular, vt, projected, rank, alpha, like):
    """Weights from an SVD ``R_A = U S V^T`` with ``rank`` values kept."""
    if rank == 0:
        return backend.zeros((projected.shape[1], vt.shape[1]), like)
    kept = u[:, :rank].T @ projected
    return _kept_weights(backend, singular[:rank], vt[:rank], kept, alpha)


def _kept_weights(backend, singular, vt, kept, alpha):
    """Weights from the kept singular values and ``(U^T Q^T B)_r`` rows ``kept``."""
    if _is_scalar(alpha):
        filtered = kept * (singular / (singular**2 + alpha))[:, None]
        return (vt.T @ filtered).T
    return _diagonal_penalty(backend, singular[:, None] * vt, kept, alpha)


class SVDFactorization:
    """SVD of a block's factor, for the solution at any (rcond, alpha).

    For any cut-off keeping ``r`` singular values and any penalty ``alpha``, the
    solution is ``V_r diag(s_r / (s_r^2 + alpha)) (U^T Q^T B)_r``.

    Parameters
    ----------
    factor : Factor
    """

    def __init__(self, factor):
        self.factor = factor
        self.n_rows, self.n_features = factor.n_rows, factor.n_features
        self._backend = backend = backend_of(factor.r)
        r_a, projected, self._head = factor.centred()
        u, self.singular_values, self._vt = backend.svd(r_a)
        self._projected = u.T @ projected

    @property
    def vt(self):
        """Right singular vectors of ``R_A``, one per row (as many as singular values)."""
        return self._vt

    @property
    def projected(self):
        """``U^T Q^T B``: the targets in the basis of the left singular vectors."""
        return self._projected

    @property
    def head(self):
        """The first row of ``R`` (intercept, weighted means) or None, as in
        :meth:`~._factors.Factor.centred`."""
        return self._head

    def rank(self, rcond):
        """Number of singular values above ``rcond`` times the largest one."""
        if rcond is None:
            rcond = default_rcond(self.n_rows, self.n_features)
        return _cut(self.singular_values, rcond)

    def solve(self, rcond, alpha=0.0):
        """The :class:`Solution` (float64) for the cut-off ``rcond`` and penalty ``alpha``."""
        rank = self.rank(rcond)
        if rank == 0:
            shape = (self.factor.n_targets, self.n_features)
            weights = self._backend.zeros(shape, self.factor.r)
        else:
            weights = _kept_weights(
                self._backend,
                self.singular_values[:rank],
                self._vt[:rank],
                self._projected[:rank],
                alpha,
            )
        intercept = _intercept(self.factor, self._head, weights)
        size = min(self.n_rows, self.n_features)
        return Solution(
            weights, rank, _padded(self._backend, self.singular_values, size), intercept
        )


def uses_factor(driver, device_type):
    """Whether :func:`solve` solves from the block's factor for this driver and device.

    The default solve and ``"gels"`` do, and on CUDA (where torch only has
    ``"gels"``) every driver does.
    """
    return driver in (None, "gels") or device_type != "cpu"


def solve(system, rcond, driver, map_chunks=None, workspace=None):
    """Least-squares weights of one block.

    Parameters
    ----------
    system : BlockSystem
        Row parts of X and y, row weights, intercept and penalty.
    rcond : float or None
        Relative cut-off for small singular values; None is :func:`default_rcond`.
    driver : {None, "gels", "gelsy", "gelsd", "gelss"}
        None and ``"gels"`` solve from the block's factor; ``"gels"`` assumes full
        rank and raises on a rank-deficient block. A LAPACK driver stacks the rows
        once into a Fortran-ordered float64 matrix that LAPACK overwrites (scipy
        for numpy, torch for torch; on CUDA every driver but ``"gels"`` solves
        from the factor, which gives ``"gelsd"``'s solution).
    map_chunks, workspace :
        As in :func:`~._factors.factorize`.

    Returns
    -------
    Solution, in the system's dtype

    Raises
    ------
    numpy.linalg.LinAlgError
        For ``"gels"`` on a rank-deficient block, or weights that are not finite.
    """
    if rcond is None:
        rcond = default_rcond(system.n_rows, system.n_features)
    solution = None
    if driver in (None, "gels") and _tall_numpy(system):
        solution = _gram_solution(system, 0.0 if driver else rcond, map_chunks, workspace)
    if solution is None:
        solution = _solution(system, rcond, driver, map_chunks, workspace)
    elif driver == "gels":  # which reports no rank and no singular values
        solution = Solution(solution.weights, None, None, solution.intercept)
    with np.errstate(over="ignore"):
        cast = solution.cast(system.dtype)
    if not (all_finite(cast.weights) and (cast.intercept is None or all_finite(cast.intercept))):
        raise np.linalg.LinAlgError(
            f"TensorMapLstsq.fit: block {system.label} gives weights that are not finite "
            f"with driver={driver!r} and rcond={rcond!r} (returned in {system.dtype}); use "
            "rcond=None (or a larger cut-off) to cut its smallest singular values, or "
            "float64 data"
        )
    return cast


def _solution(system, rcond, driver, map_chunks, workspace):
    """The solve of :func:`solve` when the Gram matrix's was not taken."""
    if driver == "gels":
        return _full_rank_solution(system, map_chunks, workspace)
    if driver is None and _one_gelsd_call(system):
        return _driver_solution(system, rcond, "gelsd")
    if uses_factor(driver, system.device_type):
        factor = factorize(system, map_chunks=map_chunks, workspace=workspace)
        return factor_solution(factor, rcond, system.alpha)
    return _driver_solution(system, rcond, driver)


def _numpy_on_cpu(system):
    return system.device_type == "cpu" and backend_of(system.a_parts[0]).name == "numpy"


def _tall_numpy(system):
    """Whether ``system`` is a numpy block with at least twice as many rows as columns."""
    return _numpy_on_cpu(system) and system.n_rows >= 2 * system.width


def _gram_solution(system, rcond, map_chunks=None, workspace=None):
    """The solution from the Cholesky factor of the block's Gram matrix, refined.

    ``R = chol(C^T C)`` of the weighted (and, with an intercept, centred) ``C =
    A`` is the factor of the QR solve up to rounding, at half its flops and
    matrix-multiply speed. Its solution ``w = (R^T R + alpha)^-1 C^T W B``
    loses ``condition^2 x eps``; one step of refinement against the rows, ``w
    += (R^T R + alpha)^-1 (C^T W (B - C w) - alpha w)`` (the corrected
    semi-normal equations), brings it back to the accuracy of the QR solve.

    Returns
    -------
    Solution (float64) or None
        None, after the Gram pass only, when that is not accurate enough: the
        Gram matrix is not positive definite in float64, or the condition
        number of the weighted, centred X block (from its singular values, the
        square roots of the Gram matrix's eigenvalues) is above
        :data:`GRAM_CONDITION`, or ``rcond`` cuts a singular value.
        The caller solves from the QR factor then. The pass stops early when
        its first rows already show a badly conditioned block
        (:func:`_first_rows_accepted`).
    """
    backend = backend_of(system.a_parts[0])
    n = system.n_features
    if n == 0:
        return None
    x_mean = y_mean = means = None
    if system.intercept:
        x_mean, y_mean = means = value_means(system)
    tasks = gram_tasks(system, 4 * system.width)
    rows = one_step_rows(tasks, means, workspace)
    accept = partial(_first_rows_accepted, n)
    gram = gram_matrix(system, means, map_chunks, workspace, accept, tasks, rows)
    factor = None if gram is None else backend.cholesky(gram[:n, :n])
    if factor is None:
        return None
    # the singular values of R are the square roots of the Gram matrix's
    # eigenvalues, found at half the cost of R's SVD and as accurately
    try:
        eigenvalues = backend.symmetric_eigenvalues(gram[:n, :n])
    except np.linalg.LinAlgError:  # LAPACK did not converge
        return None
    singular = np.sqrt(np.maximum(eigenvalues[::-1], 0.0))
    if singular[-1] * GRAM_CONDITION < singular[0] or singular[-1] <= rcond * singular[0]:
        return None
    penalty = None
    if _penalised(system.alpha):
        penalty = np.broadcast_to(np.asarray(system.alpha, dtype=np.float64), (n,))
        factor = backend.cholesky(gram[:n, :n] + np.diag(penalty))
    weights = backend.cholesky_solve(factor, gram[:n, n:])
    intercept = None if x_mean is None else y_mean - x_mean @ weights
    correction = residual_gradient(system, weights, intercept, x_mean, map_chunks, tasks, rows)
    if penalty is not None:
        correction -= penalty[:, None] * weights
    weights = weights + backend.cholesky_solve(factor, correction)
    if x_mean is not None:
        intercept = y_mean - x_mean @ weights
    return Solution(np.ascontiguousarray(weights.T), n, singular, intercept)


def _first_rows_accepted(n_features, gram):
    """Whether the Gram pass of a tall block goes on after its first rows.

    It stops where their Gram matrix is not positive definite, or LAPACK
    ``?trcon`` estimates the condition number of its Cholesky factor above 100
    times :data:`GRAM_CONDITION`: the block is then most likely too badly
    conditioned for the Gram matrix, and only those rows' pass is spent before
    the QR. Either way the decision is made again on all rows.
    """
    backend = backend_of(gram)
    factor = backend.cholesky(gram[:n_features, :n_features])
    if factor is None:
        return False
    return backend.inverse_condition(factor) * 100 * GRAM_CONDITION >= 1.0


def _one_gelsd_call(system):
    """Whether the default solve of ``system`` is one LAPACK ``gelsd`` call.

    For square and wide numpy blocks (fewer rows than twice the columns) of one
    row chunk without a penalty: their weighted, centred rows are copied once (as
    one chunk would be), and ``gelsd`` (without the GIL) gives the same
    minimum-norm, rcond-cut solution as the factor's with fewer flops, since it
    bidiagonalises the block once and never forms singular vectors. On taller
    blocks the factor's QR and triangular solve are faster (4000 x 300: 0.97 s
    against 1.39 s for 16 blocks).
    """
    return (
        _numpy_on_cpu(system)
        and _is_scalar(system.alpha)
        and system.alpha == 0
        and system.n_rows < 2 * system.width
        and not spans_chunks(system)
    )


def _full_rank_solution(system, map_chunks, workspace):
    """``"gels"``: the factor's triangular solve, after checking that it has full rank.

    The check is LAPACK ``?trcon``'s condition estimate of the triangular factor
    (numpy), or its singular values (torch, and blocks with fewer rows than
    features); a ridge penalty on every feature makes any block full rank.
    """
    factor = factorize(system, map_chunks=map_chunks, workspace=workspace)
    r_a, _, _ = factor.centred()
    backend = backend_of(factor.r)
    if r_a.shape[0] == 0 or r_a.shape[1] == 0:
        inverse_condition = 1.0
    elif r_a.shape[0] == r_a.shape[1]:
        inverse_condition = backend.inverse_condition(r_a)
    else:
        singular = backend.svd(r_a, compute_uv=False)
        inverse_condition = float(singular[-1] / singular[0]) if float(singular[0]) else 0.0
    limit = default_rcond(system.n_rows, system.n_features)
    if inverse_condition <= limit and not np.all(np.asarray(system.alpha) > 0):
        raise np.linalg.LinAlgError(
            f"TensorMapLstsq.fit: driver 'gels' needs a full-rank block, but block "
            f"{system.label} is rank-deficient (reciprocal condition number about "
            f"{inverse_condition:.1e}); use driver=None or 'gelsd', which cut small "
            "singular values, or a ridge penalty alpha > 0"
        )
    solution = factor_solution(factor, 0.0, system.alpha)
    rank = 0 if r_a.shape[0] == 0 else None
    return Solution(solution.weights, rank, None, solution.intercept)


def _driver_solution(system, rcond, driver):
    """A LAPACK driver on the weighted, centred (and penalised) stacked rows."""
    a, b, x_mean, y_mean = _stacked(system)
    backend = backend_of(a)
    if driver == "gelsy" and rcond == 0:
        # gelsy keeps an exactly zero diagonal of its factor at rcond=0 and divides
        # by it; the smallest positive cut-off drops exact zeros only
        rcond = float(np.finfo(np.float64).tiny)
    if a.shape[0] == 0 or a.shape[1] == 0:
        weights = backend.zeros((b.shape[1], a.shape[1]), a)
        singular = None if driver == "gelsy" else backend.zeros((0,), a)
        rank = 0
    else:
        weights, rank, singular = backend.lstsq(a, b, rcond, driver)
        weights = weights.T
        if _penalised(system.alpha):
            singular = None  # of the augmented matrix: not the block's
    intercept = None
    if system.intercept:
        intercept = y_mean - weights @ x_mean
    return Solution(weights, rank, singular, intercept)


def _stacked(system):
    """Rows of the system stacked into float64 Fortran-ordered ``A`` and ``B``.

    Value rows are centred on their weighted means when an intercept is fitted,
    rows are multiplied by the square roots of their weights, and ``sqrt(alpha)``
    rows (zero in ``B``) are appended for a penalty.

    Returns
    -------
    (A, B, x_mean, y_mean), the means None without an intercept
    """
    like = system.a_parts[0]
    backend = backend_of(like)
    n, t = system.n_features, system.n_targets
    penalised = _penalised(system.alpha)
    n_rows = system.n_rows + (n if penalised else 0)
    a = backend.empty((n_rows, n), like)
    b = backend.empty((n_rows, t), like)
    x_mean = y_mean = None
    start = 0
    for position, (a_part, b_part) in enumerate(zip(system.a_parts, system.b_parts)):
        rows = slice(start, start + a_part.shape[0])
        a[rows] = a_part
        b[rows] = b_part
        if position == 0 and system.intercept:
            x_mean, y_mean = _weighted_means(backend, a[rows], b[rows], system.row_scale(0))
            a[rows] -= x_mean
            b[rows] -= y_mean
        scale = system.row_scale(position)
        if scale is not None:
            a[rows] *= scale if isinstance(scale, float) else scale[:, None]
            b[rows] *= scale if isinstance(scale, float) else scale[:, None]
        start = rows.stop
    if penalised:
        alpha = np.broadcast_to(np.asarray(system.alpha, dtype=np.float64), (n,))
        a[start:] = backend.diagonal(np.sqrt(alpha), like)
        b[start:] = 0.0
    return a, b, x_mean, y_mean


def _weighted_means(backend, a, b, scale):
    """Column means of the value rows ``a`` and ``b``, weighted by ``scale**2``."""
    if scale is None or isinstance(scale, float):
        if a.shape[0] == 0 or scale == 0.0:
            return backend.zeros((a.shape[1],), a), backend.zeros((b.shape[1],), a)
        return a.mean(0), b.mean(0)
    weights = scale**2
    total = float(weights.sum())
    if total == 0.0:
        return backend.zeros((a.shape[1],), a), backend.zeros((b.shape[1],), a)
    # normalised first, so that one weighted row's mean is that row exactly
    weights = weights / total
    return weights @ a, weights @ b
