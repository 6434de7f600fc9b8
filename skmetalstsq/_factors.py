"""The currency of every fit: the triangular factor of a block's weighted ``[1 | A | B]``.

A block's linear system is given as row parts (:class:`~._blocks.BlockSystem`): the
values and each gradient of X, each reshaped to ``(rows, n_features)``, the same for
y, and optionally a weight for every row. Its :class:`Factor` is the upper-triangular
``R`` of the QR decomposition of the stacked, weighted rows
``sqrt(w) * [1 | A | B]``, where the column of ones (only with an intercept) is 1 on
value rows and 0 on gradient rows. Everything a fit needs follows from ``R``:

- factors of disjoint row sets combine exactly: the factor of their union is the
  factor of the stacked factors (:meth:`Factor.merge`). Row chunks, incremental
  batches, cross-validation folds and shards on other workers all go through it;
- with the column of ones first, the rows and columns of ``R`` after the first are
  the factor of the weighted-centred ``[A | B]``: the intercept is eliminated exactly,
  as scikit-learn's centring does, and is recovered from the first row;
- the solves (:mod:`._solvers`) take the SVD, or a triangular solve, of ``R``.

Rows are streamed in chunks of :func:`chunk_rows_for` rows: each chunk is copied (and
weighted) into float64 scratch memory and factorised on its own, then the chunk
factors are folded in order (:func:`fold_factors`): a tall-skinny QR that copies one
chunk at a time, and whose chunks can be factorised in parallel with the same result.

The same ``R`` is also the Cholesky factor of the Gram matrix ``C^T C`` of those
rows (:func:`gram_matrix`, summed over small cached row steps with BLAS ``dsyrk``):
half the flops at matrix-multiply speed, but only as accurate as ``condition^2 x
eps``. The solves use it for well-conditioned tall blocks, refined against the rows
(:func:`residual_gradient`); everything that keeps or merges factors uses the QR.
"""

from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ._backends import backend_of

#: Rows of ``[A | B]`` copied for one QR step (at least four times the width, see
#: :func:`chunk_rows_for`). 10k rows keep the copy small (16 MB at 200 float64
#: columns, per thread) and each QR long enough for LAPACK to run at speed; on
#: 182000 x 200 blocks, two threads ran 13% faster than with 20k rows.
CHUNK_ROWS = 10_000


def chunk_rows_for(width):
    """Rows per QR step for ``[A | B]`` of ``width`` columns.

    Each step's factor is folded into the previous one at a cost of about
    ``width / rows`` of the step's own QR; four times the width bounds that.
    """
    return max(CHUNK_ROWS, 4 * width)


def spans_chunks(system):
    """Whether the rows of ``system`` are factorised in more than one row chunk."""
    return system.n_rows > chunk_rows_for(system.width)


@dataclass
class Factor:
    """Triangular factor of one block's weighted, stacked ``[1 | A | B]``.

    Attributes
    ----------
    r : array of shape (min(n_rows, width), width)
        Upper triangular (trapezoidal with fewer rows than columns), float64,
        numpy or torch on the data's device. ``width`` is ``n_features +
        n_targets``, plus one leading column of ones when ``intercept``.
    n_features : int
    n_rows : int
        Rows folded in (values and gradients), for the default ``rcond``.
    intercept : bool
        Whether the first column is the intercept's column of ones.
    n_weighted : int or None
        Rows folded in whose weight is not zero (the rows a Bayesian evidence
        counts); None: every row.
    """

    r: object
    n_features: int
    n_rows: int
    intercept: bool = False
    n_weighted: object = None

    @property
    def weighted_rows(self):
        """Rows folded in whose weight is not zero."""
        return self.n_rows if self.n_weighted is None else self.n_weighted

    @property
    def n_targets(self):
        return self.r.shape[1] - self.n_features - int(self.intercept)

    def merge(self, other):
        """The factor of the rows of both factors (the QR of the stacked factors).

        Raises
        ------
        ValueError
            If the two factors are not of the same system layout.
        """
        if (self.n_features, self.n_targets, self.intercept) != (
            other.n_features,
            other.n_targets,
            other.intercept,
        ):
            raise ValueError(
                f"cannot merge the factor of {self.n_features} features, {self.n_targets} "
                f"targets (intercept={self.intercept}) with one of {other.n_features} "
                f"features, {other.n_targets} targets (intercept={other.intercept})"
            )
        r = fold_factors([self.r, other.r])
        weighted = None
        if self.n_weighted is not None or other.n_weighted is not None:
            weighted = self.weighted_rows + other.weighted_rows
        return Factor(r, self.n_features, self.n_rows + other.n_rows, self.intercept, weighted)

    def with_r(self, r):
        """This factor with ``r`` in place of its own (e.g. in another library)."""
        return replace(self, r=r)

    def centred(self):
        """``(R_A, Q^T B, head)``: the factor of the (weighted-centred) system.

        ``R_A`` has at most ``n_features`` rows. ``head`` is the first row of
        ``R`` when there is an intercept (``r11, r12, r13`` give the intercept
        ``(r13 - r12 w) / r11``), else None.
        """
        r, head = self._reduced()
        top = min(r.shape[0], self.n_features)
        return r[:top, : self.n_features], r[:top, self.n_features :], head

    def residual_squares(self):
        """The weighted (centred) sum of squares of each target outside A's column space.

        The squared norms of the target columns of ``R`` below the rows of
        ``R_A`` (of :meth:`centred`): the residual of the least-squares fit
        that no choice of weights can reduce, of shape (n_targets,).
        """
        r, _ = self._reduced()
        top = min(r.shape[0], self.n_features)
        return (r[top:, self.n_features :] ** 2).sum(0)

    def _reduced(self):
        """``(R, head)``: the factor of the (weighted-centred) ``[A | B]`` and the
        first row of the factor when there is an intercept (see :meth:`centred`)."""
        r, head = self.r, None
        if self.intercept:
            if self.r.shape[0] and float(self.r[0, 0]) != 0.0:
                r, head = self.r[1:, 1:], self.r[:1]
            else:
                # no value row weighs anything: the ones column is zero, the
                # intercept stays 0, and the other columns (not triangular once
                # the first is dropped) are factorised again
                rest = self.r[:, 1:]
                backend = backend_of(rest)
                copy = backend.empty(tuple(rest.shape), rest)
                copy[:] = rest
                r = backend.qr_r(copy)
        return r, head

    def to_numpy(self):
        """This factor with ``r`` as a numpy array (for pickling or reducing anywhere)."""
        r = self.r if isinstance(self.r, np.ndarray) else self.r.detach().cpu().numpy()
        return self.with_r(r)


def row_chunks(system, chunk_rows=CHUNK_ROWS):
    """The row chunks a block is factorised by, each a list of pieces.

    A piece is ``(a_rows, b_rows, scale, ones)``: views of consecutive rows of one
    row part, the square roots of their weights (None, a float, or a 1-D array of
    the data's library and device), and the value of the intercept column on
    them (None without an intercept, 1.0 on value rows, 0.0 on gradient rows).
    Consecutive parts share a chunk, so that many short gradient parts cost one
    QR step; every chunk but the last holds ``chunk_rows`` rows.
    """
    chunks, pieces, filled = [], [], 0
    step_rows = max(int(chunk_rows), 1)
    for position, (a_part, b_part) in enumerate(zip(system.a_parts, system.b_parts)):
        scale = system.row_scale(position)
        ones = (1.0 if position == 0 else 0.0) if system.intercept else None
        start, n_rows = 0, a_part.shape[0]
        while start < n_rows:
            taken = min(step_rows - filled, n_rows - start)
            rows = slice(start, start + taken)
            piece_scale = scale[rows] if _is_array(scale) else scale
            pieces.append((a_part[rows], b_part[rows], piece_scale, ones))
            start += taken
            filled += taken
            if filled == step_rows:
                chunks.append(pieces)
                pieces, filled = [], 0
    if pieces:
        chunks.append(pieces)
    return chunks


def _is_array(scale):
    return scale is not None and not isinstance(scale, float)


def _chunk_matrix(pieces, workspace, means=None):
    """One row chunk of the weighted ``[1 | A | B]``, copied into float64 memory.

    Fortran-ordered, of shape (rows, width): the calling thread's
    ``workspace`` for numpy chunks when given, else a new array. With
    ``means`` ``(x_mean, y_mean)``, the value rows of ``[A | B]`` are centred
    on them instead, and there is no column of ones (see :func:`gram_matrix`).
    """
    like, like_b, _, first_ones = pieces[0]
    offset = 0 if first_ones is None or means is not None else 1
    n_features = like.shape[1]
    width = offset + n_features + like_b.shape[1]
    shape = (sum(piece[0].shape[0] for piece in pieces), width)
    if workspace is not None and isinstance(like, np.ndarray):
        buffer = workspace.matrix(shape)
    else:
        buffer = backend_of(like).empty(shape, like)
    a_columns, b_columns = slice(offset, offset + n_features), slice(offset + n_features, None)
    start = 0
    for a_rows, b_rows, scale, ones in pieces:
        stop = start + a_rows.shape[0]
        rows = buffer[start:stop]
        if offset:
            rows[:, 0] = ones
        rows[:, a_columns] = a_rows
        rows[:, b_columns] = b_rows
        if means is not None and ones == 1.0:  # value rows
            rows[:, :n_features] -= means[0]
            rows[:, n_features:] -= means[1]
        if _is_array(scale):
            rows *= scale[:, None]
        elif scale is not None and scale != 1.0:
            rows *= scale
        start = stop
    return buffer


def chunk_factor(pieces, workspace=None):
    """Triangular factor of one row chunk of the weighted ``[1 | A | B]``.

    Parameters
    ----------
    pieces : list of (a_rows, b_rows, scale, ones)
        One chunk from :func:`row_chunks`.
    workspace : Workspace or None
        Scratch memory of the calling thread, for numpy chunks.

    Returns
    -------
    float64 array of shape (min(rows, width), width), upper triangular
    """
    buffer = _chunk_matrix(pieces, workspace)
    return backend_of(buffer).qr_r(buffer)


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
        backend = backend_of(factor)
        stacked = backend.empty((total.shape[0] + factor.shape[0], factor.shape[1]), factor)
        stacked[: total.shape[0]] = total
        stacked[total.shape[0] :] = factor
        total = backend.qr_r(stacked)
    return total


def factorize(system, chunk_rows=None, map_chunks=None, workspace=None):
    """The :class:`Factor` of a block's system, streamed by row chunks.

    Parameters
    ----------
    system : BlockSystem
        Row parts of X and y, row weights, and whether to fit an intercept.
    chunk_rows : int or None
        Rows copied per QR step; None is :func:`chunk_rows_for` the width.
    map_chunks : callable or None
        ``map_chunks(chunk_factor, chunks)`` returns the factors in order (e.g. a
        thread pool's ``map``); None factorises them one after the other.
    workspace : Workspace or None
        Scratch memory, when ``map_chunks`` is None.

    Returns
    -------
    Factor
    """
    like = system.a_parts[0]
    n_features = like.shape[1]
    width = system.width
    if chunk_rows is None:
        chunk_rows = chunk_rows_for(width)
    chunks = row_chunks(system, chunk_rows)
    if map_chunks is None:
        factors = (chunk_factor(pieces, workspace) for pieces in chunks)
    else:
        factors = map_chunks(chunk_factor, chunks)
    r = fold_factors(factors)
    if r is None:
        r = backend_of(like).zeros((0, width), like)
    return Factor(r, n_features, system.n_rows, system.intercept, _weighted_rows(system))


def _weighted_rows(system):
    """The rows of ``system`` whose weight is not zero."""
    if system.row_weights is None:
        return system.n_rows
    count = 0
    for part, weights in zip(system.a_parts, system.row_weights):
        if weights is None or isinstance(weights, float):
            count += part.shape[0] if weights is None or weights != 0.0 else 0
        else:
            count += int(np.count_nonzero(weights))
    return count


# ---------------------------------------------------------------------------------
# the Gram matrix C^T C, whose Cholesky factor is R again
# ---------------------------------------------------------------------------------

#: Rows of ``[A | B]`` copied (and weighted) per update of a Gram matrix: the copy
#: (1.6 MB at 200 columns) is still in cache when ``dsyrk`` reads it. On 200000 x
#: 201, one thread: 1000 rows 0.30 s, 2000 rows 0.36 s, 10000 rows 0.44 s.
GRAM_ROWS = 1000


def gram_tasks(system, first_rows=0):
    """Row steps of :data:`GRAM_ROWS` rows, grouped by :func:`chunk_rows_for` rows.

    Each group is one task: its sums are accumulated step by step, and the
    tasks' sums added in order, whichever thread computed them. With
    ``first_rows``, the first task holds the steps of (at least) that many rows
    only.
    """
    steps = row_chunks(system, GRAM_ROWS)
    if len(steps) == 1:
        return [steps]
    per_task = max(chunk_rows_for(system.width) // GRAM_ROWS, 1)
    first = -(-int(first_rows) // GRAM_ROWS)
    tasks = [steps[:first]] if first else []
    tasks += [steps[start : start + per_task] for start in range(first, len(steps), per_task)]
    return [task for task in tasks if task]


def one_step_rows(tasks, means=None, workspace=None):
    """The copied rows of a block whose rows are one step of ``tasks``, else None.

    A block of at most :data:`GRAM_ROWS` rows is copied (weighted and centred as
    in :func:`gram_matrix`) once, and both its Gram matrix and its residual
    gradient are computed on that copy. This spares small blocks a second pass
    through their row parts, whose Python steps cost more than its arithmetic.
    """
    if len(tasks) != 1 or len(tasks[0]) != 1:
        return None
    return _chunk_matrix(tasks[0][0], workspace, means)


def _in_order(function, tasks, map_chunks, workspace=None):
    """The sum of ``function(task)`` over the tasks, added in order."""
    if map_chunks is None:
        parts = (function(task, workspace) for task in tasks)
    else:
        parts = map_chunks(function, tasks)
    total = None
    for part in parts:
        total = part if total is None else total + part
    return total


def value_means(system):
    """Weighted column means of the value rows of ``X`` and ``y`` (numpy, float64).

    The weights are the squares of :meth:`~._blocks.BlockSystem.row_scale`;
    zero means when no value row weighs anything.
    """
    a_values, b_values = system.a_parts[0], system.b_parts[0]
    scale = system.row_scale(0)
    x_sum, y_sum = np.zeros(a_values.shape[1]), np.zeros(b_values.shape[1])
    total = 0.0
    for start in range(0, a_values.shape[0], GRAM_ROWS):
        rows = slice(start, start + GRAM_ROWS)
        a_rows = np.asarray(a_values[rows], dtype=np.float64)
        b_rows = np.asarray(b_values[rows], dtype=np.float64)
        if _is_array(scale):
            weights = scale[rows] ** 2
            x_sum += weights @ a_rows
            y_sum += weights @ b_rows
            total += float(weights.sum())
        else:
            weight = 1.0 if scale is None else scale**2
            x_sum += weight * a_rows.sum(axis=0)
            y_sum += weight * b_rows.sum(axis=0)
            total += weight * a_rows.shape[0]
    if total == 0.0:
        return x_sum, y_sum
    return x_sum / total, y_sum / total


def _task_gram(means, steps, workspace=None):
    """Upper triangle of ``C^T C`` for the rows of one task (see :func:`gram_matrix`)."""
    gram = None
    for pieces in steps:
        buffer = _chunk_matrix(pieces, workspace, means)
        backend = backend_of(buffer)
        if gram is None:
            gram = backend.gram(buffer.shape[1])
        backend.add_gram(gram, buffer)
    return gram


def gram_matrix(
    system, means=None, map_chunks=None, workspace=None, accept=None, tasks=None, rows=None
):
    """Upper triangle of ``C^T C``, ``C`` a numpy block's weighted ``[A | B]``.

    Its Cholesky factor is the ``R`` of :func:`factorize` (up to rounding and
    the signs of its rows) at half the flops and matrix-multiply speed, but only
    as accurate as ``condition(C)^2 x eps``: solves use it for well-conditioned
    blocks, refined against the rows (:func:`residual_gradient`).

    Parameters
    ----------
    system : BlockSystem
        With numpy row parts.
    means : (x_mean, y_mean) or None
        With an intercept, the weighted means of the value rows
        (:func:`value_means`), subtracted from them as they are copied: the
        Gram matrix of the centred rows, with no column of ones (whose
        elimination from a Gram matrix would cancel digits).
    map_chunks, workspace :
        As in :func:`factorize`.
    accept : callable or None
        ``accept(gram)`` is first called (in this thread) on the Gram matrix of
        the first rows, at least four times the width, when the block has more:
        where it returns False, the pass stops there, and None is returned.
    tasks : list or None
        :func:`gram_tasks` of the system (with the first rows of ``accept``),
        when the caller has them.
    rows : array or None
        :func:`one_step_rows` of the system, when the caller has them: the
        Gram matrix is theirs.

    Returns
    -------
    float64 Fortran-ordered array of shape (width, width), width
    ``n_features + n_targets``, or None
    """
    if rows is not None:
        total = np.zeros((rows.shape[1], rows.shape[1]), order="F")
        backend_of(rows).add_gram(total, rows)
        return total
    function = partial(_task_gram, means)
    first_rows = 0 if accept is None else 4 * system.width
    tasks = list(gram_tasks(system, first_rows) if tasks is None else tasks)
    total = None
    if accept is not None and len(tasks) > 1:
        total = function(tasks.pop(0), workspace)
        if not accept(total):
            return None
    rest = _in_order(function, tasks, map_chunks, workspace)
    if rest is not None:
        total = rest if total is None else total + rest
    if total is None:
        width = system.n_features + system.n_targets
        total = np.zeros((width, width), order="F")
    return total


def gram_factor(system, max_condition, workspace=None):
    """The :class:`Factor` of a well-conditioned numpy block, from its Gram matrix.

    The upper Cholesky factor of the Gram matrix of the weighted (and, with an
    intercept, centred) ``[A | B]`` is the ``R`` of :func:`factorize` after its
    first row, up to rounding and the signs of its rows; with an intercept, that
    first row is ``sqrt(W) [1, x_mean, y_mean]`` (``W`` the value rows' total
    weight), as the QR's elimination of the column of ones gives it. Half the
    flops of the QR at matrix-multiply speed, but only as accurate as
    ``condition^2 x eps``, with no refinement against the rows.

    Parameters
    ----------
    system : BlockSystem
        With numpy row parts.
    max_condition : float
        The largest condition number accepted: of the features' part of the
        factor with its columns scaled to unit norm (LAPACK ``?trcon``'s
        estimate), and of each target given the features (its norm over the
        norm of its residual, whose square the Cholesky factor gets by
        cancellation).

    Returns
    -------
    Factor or None
        None where the Gram matrix is not positive definite in float64 (rank-
        deficient features, targets fitted exactly or collinear) or a condition
        number is above ``max_condition``: :func:`factorize` it then.
    """
    n_features = system.n_features
    means = value_means(system) if system.intercept else None
    gram = gram_matrix(system, means, workspace=workspace)
    backend = backend_of(gram)
    upper = backend.cholesky(gram) if n_features else None
    if upper is None:
        return None
    squares = np.diag(gram)
    scaled = np.asfortranarray(upper[:n_features, :n_features] / np.sqrt(squares[:n_features]))
    residuals = (upper[n_features:, n_features:] ** 2).sum(0)
    if (
        backend.inverse_condition(scaled) * max_condition < 1.0
        or (residuals * max_condition**2 < squares[n_features:]).any()
    ):
        return None
    weighted = _weighted_rows(system)
    if not system.intercept:
        return Factor(upper, n_features, system.n_rows, False, weighted)
    root = np.sqrt(_value_weight(system))
    r = np.zeros((upper.shape[0] + 1, upper.shape[1] + 1))
    r[0, 0] = root
    r[0, 1 : 1 + n_features] = root * means[0]
    r[0, 1 + n_features :] = root * means[1]
    r[1:, 1:] = upper
    return Factor(r, n_features, system.n_rows, True, weighted)


def _value_weight(system):
    """The total weight of the value rows of ``system``."""
    n_values = system.a_parts[0].shape[0]
    scale = system.row_scale(0)
    if scale is None:
        return float(n_values)
    if isinstance(scale, float):
        return scale**2 * n_values
    return float((np.asarray(scale) ** 2).sum())


def _task_residual_gradient(weights, intercept, x_mean, steps, workspace=None):
    """``C^T W (B - C w - c)`` over one task's rows (see :func:`residual_gradient`)."""
    gradient = np.zeros(weights.shape)
    for pieces in steps:
        for a_rows, b_rows, scale, ones in pieces:
            a_rows = np.asarray(a_rows, dtype=np.float64)
            residual = np.asarray(b_rows, dtype=np.float64) - a_rows @ weights
            values = ones == 1.0  # value rows of a system with an intercept
            if values:
                residual -= intercept
            if _is_array(scale):
                residual *= (scale**2)[:, None]
            elif scale is not None and scale != 1.0:
                residual *= scale**2
            gradient += a_rows.T @ residual
            if values:
                gradient -= np.outer(x_mean, residual.sum(axis=0))
    return gradient


def residual_gradient(
    system, weights, intercept=None, x_mean=None, map_chunks=None, tasks=None, rows=None
):
    """``C^T W (B - C w - c)``, the gradient of the weighted residual (numpy only).

    ``C`` is the block's ``A`` with its value rows centred on ``x_mean`` when
    there is an intercept ``c`` (given only on value rows), ``W`` the row
    weights and ``w`` the ``weights`` of shape (n_features, n_targets). The rows
    are read where they are (float64 parts are not copied), task by task as in
    :func:`gram_matrix` (``tasks``, when the caller has them), or from ``rows``,
    the :func:`one_step_rows` of a small block, where its rows are already
    weighted and centred.

    Returns
    -------
    float64 array of shape (n_features, n_targets)
    """
    if rows is not None:
        n = weights.shape[0]
        return rows[:, :n].T @ (rows[:, n:] - rows[:, :n] @ weights)
    function = partial(_task_residual_gradient, weights, intercept, x_mean)
    total = _in_order(function, gram_tasks(system) if tasks is None else tasks, map_chunks)
    return np.zeros(weights.shape) if total is None else total
