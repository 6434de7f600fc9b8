"""Exact leave-one-entry-out from one factorisation of each block.

Leaving out all the rows of one entry (a system: its value rows with their
components, and every gradient row) is exact with the segmented formula of
Liland, Skogholt and Indahl (IEEE Access 12:17349, 2024): with the full fit's
weighted residuals ``e_g`` on the entry's rows and the entry's diagonal block
``H_gg`` of the hat matrix, the held-out weighted residuals are
``(I - H_gg)^-1 e_g``.

Everything comes from the block's :class:`~._factors.Factor` ``R`` and its SVD
``R_A = U S V^T`` (:class:`~._solvers.SVDFactorization`): for a candidate
``(rcond, alpha)`` keeping ``r`` singular values, the hat matrix of the weighted,
centred rows is ``q q^T + Z_r diag(1 / (s_r^2 + alpha)) Z_r^T``, where ``Z`` are the
weighted, centred rows projected on the right singular vectors (``Z = C V``) and
``q`` the normalised square roots of the value rows' weights (the intercept's
column, which is not penalised: held-out fits re-centre). One streamed pass over
the rows, entry by entry, gives each entry's ``Z_g`` (its rows x the rank); each
candidate then costs one small solve per entry (its rows x its rows).

For ``alpha`` this equals refitting without the entry. For a cut-off, the held-out
fit keeps the full fit's singular subspace (as generalised cross-validation of a
truncated SVD and PRESS of principal-component regression do); it equals refits
when the cut drops the same directions.
"""

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from joblib import effective_n_jobs
from metatensor import TensorBlock, TensorMap

from ._backends import FACTOR_DTYPE, convert_like, to_numpy
from ._blocks import gradient_parameters
from ._factors import chunk_rows_for, factorize
from ._indexed import entry_positions
from ._parallel import blas_threads, run_tasks, single_threaded, solve_cost
from ._solvers import SVDFactorization, default_rcond

#: Smallest eigenvalue of ``I - H_gg`` below which leaving an entry out leaves a
#: direction its remaining rows do not determine: its held-out residuals are nan.
SINGULAR_LIMIT = 1e-10


@dataclass
class LeaveOneOut:
    """Leave-one-entry-out results of one block for every candidate.

    Attributes
    ----------
    losses : numpy array of shape (n_candidates,)
        Weighted sums of squared (or absolute) held-out residuals of the scored
        rows; nan for a candidate with an entry in ``singular``.
    total : float
        Weighted sum of squared deviations of the scored targets from their
        weighted column means.
    count : float
        Sum of the weights of the scored rows, times the number of targets.
    singular : list of numpy arrays
        For each candidate, the positions of the entries whose removal leaves a
        direction undetermined (``I - H_gg`` singular).
    residuals : list or None
        With ``predictions=True``: for each candidate, the held-out residuals of
        every row part (a float64 numpy array shaped like the part of y), nan on
        the rows of ``singular`` entries.
    """

    losses: np.ndarray
    total: float
    count: float
    singular: list
    residuals: list = field(default=None, repr=False)


def _numpy(part):
    """A float64 numpy view or copy of a row part (numpy or torch, any device)."""
    return np.asarray(to_numpy(part), dtype=FACTOR_DTYPE)


def _row_weights(system, position):
    """Weights of the rows of part ``position`` as a float64 array."""
    n = system.a_parts[position].shape[0]
    weights = None if system.row_weights is None else system.row_weights[position]
    if weights is None:
        return np.ones(n)
    if isinstance(weights, float):
        return np.full(n, weights)
    return np.asarray(weights, dtype=FACTOR_DTYPE)


def _ranks(factorization, candidates):
    """The number of singular values each candidate keeps (none that are zero)."""
    singular = np.asarray(factorization.singular_values)
    positive = int((singular > 0).sum())
    return [min(factorization.rank(rcond), positive) for rcond, _ in candidates]


def _by_rows(x, z, b, root_weight, full, members, undetermined):
    """Held-out residuals from each entry's hat block (see :meth:`_HeldOut._entries`).

    ``x``, ``z``: the entries' scaled rows (entries, rows, coordinates), in
    original units and weighted; ``full``: the full fit's scaled weights;
    ``undetermined``: by candidate, the entries whose system is singular (solved
    with an identity in its place, their residuals to be discarded).
    """
    residuals = {}
    identity = np.eye(x.shape[1])
    for c, n in members:
        x_n, z_n = x[..., :n], z[..., :n]
        residual = b - x_n @ full[:n]
        complement = identity - z_n @ z_n.transpose(0, 2, 1)
        complement[undetermined[c]] = identity
        weighted = np.linalg.solve(complement, root_weight[..., None] * residual)
        residuals[c] = residual + x_n @ (z_n.transpose(0, 2, 1) @ weighted)
    return residuals


def _by_coordinates(x, z, b, root_weight, full, members, undetermined):
    """Held-out residuals from each entry's downdated Gram matrix (see
    :meth:`_HeldOut._entries`); one Cholesky factor ``L`` serves every number
    of kept coordinates: the held-out predictions keeping ``k`` of them are the
    partial sums of ``(x L^-T)_j (L^-1 rhs)_j`` over ``j < k``. A factor that
    breaks down keeps its leading block (see :func:`_cholesky`)."""
    size = x.shape[-1]
    z_t = z.transpose(0, 2, 1)
    downdated = np.eye(size) - z_t @ z
    rhs = full - z_t @ (root_weight[..., None] * b)
    if len(members) == 1 or size == 0:
        downdated[undetermined[members[0][0]]] = np.eye(size)
        weights = np.linalg.solve(downdated, rhs) if size else rhs
        return {c: b - x[..., :n] @ weights[:, :n] for c, n in members}
    factor = _cholesky(downdated)
    solved = np.linalg.solve(factor, np.concatenate([rhs, x.transpose(0, 2, 1)], axis=2))
    projected, basis = solved[..., : b.shape[-1]], solved[..., b.shape[-1] :]
    predictions = np.cumsum(basis.transpose(0, 2, 1)[..., None] * projected[:, None], axis=2)
    return {c: b - predictions[:, :, n - 1] if n else b.copy() for c, n in members}


def _cholesky(matrices):
    """Cholesky factors of a stack of symmetric matrices.

    A matrix that is not positive definite keeps the factor of its leading
    positive definite block, then identity rows: its larger leading blocks are
    singular, which the exact test of :func:`_smallest_eigenvalue` reports.
    """
    try:
        return np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        pass
    factors = np.empty_like(matrices)
    for e, matrix in enumerate(matrices):
        factors[e], info = scipy.linalg.lapack.dpotrf(matrix, lower=True, clean=True)
        if info > 0:
            factors[e, info - 1 :] = np.eye(len(matrix))[info - 1 :]
    return factors


def _smallest_eigenvalue(matrix):
    """The smallest eigenvalue of a symmetric matrix (inf for an empty one)."""
    return float(np.linalg.eigvalsh(matrix)[0]) if len(matrix) else np.inf


def _entry_chunks(counts, chunk_rows):
    """Consecutive entry ranges whose rows add up to about ``chunk_rows``."""
    bounds = [0]
    total = 0
    for entry, count in enumerate(counts):
        if total and total + count > chunk_rows:
            bounds.append(entry)
            total = 0
        total += count
    bounds.append(len(counts))
    return [(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]


def leave_one_out(system, rows, candidates, scored, statistic, predictions=False):
    """Held-out residuals of every entry of one block, for every candidate.

    Parameters
    ----------
    system : BlockSystem
        The block's rows, weights and intercept; ``alpha`` is ignored (the
        candidates give it).
    rows : list of 1-D integer numpy arrays
        For each row part, the entry position of every row.
    candidates : list of (rcond, alpha)
        Cut-offs (resolved from None) and scalar penalties.
    scored : (int, numpy array or None)
        The scored row part, and the weights of its rows (None: 1).
    statistic : ``"squared"`` or ``"absolute"``
    predictions : bool, default=False
        Whether to keep every row's held-out residual.

    Returns
    -------
    LeaveOneOut
    """
    with single_threaded():  # the same bits whichever thread and n_jobs run it
        return _leave_one_out(system, rows, candidates, scored, statistic, predictions)


def _leave_one_out(system, rows, candidates, scored, statistic, predictions):
    held_out = _HeldOut(system, candidates, scored, statistic)
    if predictions:
        held_out.residuals = [
            [np.empty((len(r), system.n_targets)) for r in rows] for _ in candidates
        ]
    n_entries = 1 + max((int(r.max()) for r in rows if r.size), default=-1)
    counts = sum(np.bincount(r, minlength=n_entries) for r in rows)
    order = [np.argsort(r, kind="stable") for r in rows]
    sorted_entries = [r[o] for r, o in zip(rows, order)]
    for start, stop in _entry_chunks(counts, chunk_rows_for(system.width)):
        chunk = []
        for position, (entries, o) in enumerate(zip(sorted_entries, order)):
            lo, hi = np.searchsorted(entries, [start, stop])
            chunk.append((position, o[lo:hi], entries[lo:hi]))
        held_out.add(chunk)
    return held_out.result()


class _HeldOut:
    """The streamed pass of :func:`leave_one_out` over one block's entries.

    Coordinates: the intercept's normalised column ``q`` (with an intercept) and
    the right singular vectors ``V``. In them, the Gram matrix of all weighted,
    centred rows is ``diag(1, s^2)`` and ``[A | B]``'s cross products are
    ``[0, s * U^T Q^T B]``; an entry's rows ``Z_g`` (weighted) give its own
    ``G_g = Z_g^T Z_g`` and ``h_g``, and its held-out weights solve the leading
    ``(1 +) rank`` equations of ``(diag(1, s^2 + alpha) - G_g) w = rhs - h_g``.
    These are scaled by ``diag(1, s^2 + alpha)^(-1/2)`` to ``I - G~``, whose
    Cholesky factor ``L`` serves every rank at once: a leading block's factor is
    the leading block of ``L``, so the held-out predictions keeping ``k``
    coordinates are partial sums of ``(rows L^-T)_j (L^-1 rhs)_j``. An entry for
    which the smallest eigenvalue of ``I - G~`` (that of ``I - H_gg``) is at or
    below :data:`SINGULAR_LIMIT` leaves a kept direction undetermined.
    """

    def __init__(self, system, candidates, scored, statistic):
        self.system, self.scored, self.statistic = system, scored, statistic
        factorization = SVDFactorization(factorize(system))
        singular = np.asarray(factorization.singular_values)
        self.vt = np.asarray(factorization.vt)
        n_features, n_targets = system.n_features, system.n_targets
        self.x_mean, self.y_mean = np.zeros(n_features), np.zeros(n_targets)
        self.root_total = 0.0  # square root of the value rows' summed weights
        head = factorization.head
        if head is not None:
            head = np.asarray(head)[0]
            self.x_mean = head[1 : 1 + n_features] / head[0]
            self.y_mean = head[1 + n_features :] / head[0]
            self.root_total = abs(float(head[0]))
        self.offset = int(system.intercept and self.root_total > 0)
        self.rhs = np.concatenate(
            [
                np.zeros((self.offset, n_targets)),
                singular[:, None] * np.asarray(factorization.projected),
            ]
        )
        self.gram = np.concatenate([np.ones(self.offset), singular**2])
        ranks = _ranks(factorization, candidates)
        # candidates grouped by penalty: one Cholesky factor per entry and penalty
        self.by_alpha = {}
        for c, ((_, alpha), rank) in enumerate(zip(candidates, ranks)):
            self.by_alpha.setdefault(float(alpha), []).append((c, self.offset + rank))
        self.losses = np.zeros(len(candidates))
        self.singular = [[] for _ in candidates]
        self.residuals = None

    def add(self, chunk):
        """Held-out residuals of the entries whose rows are ``chunk``: for each row
        part, ``(position, row indices, entry of each row)``."""
        system = self.system
        entry = np.concatenate([entries for _, _, entries in chunk])
        grouped = np.argsort(entry, kind="stable")
        entry = entry[grouped]
        part = np.concatenate([np.full(len(index), p) for p, index, _ in chunk])[grouped]
        index = np.concatenate([index for _, index, _ in chunk])[grouped]
        a = np.concatenate([_numpy(system.a_parts[p][i]) for p, i, _ in chunk])[grouped]
        b = np.concatenate([_numpy(system.b_parts[p][i]) for p, i, _ in chunk])[grouped]
        weights = np.concatenate([_row_weights(system, p)[i] for p, i, _ in chunk])
        root_weight = np.sqrt(weights[grouped])
        value_row = part == 0
        a[value_row] -= self.x_mean
        b[value_row] -= self.y_mean
        # each row in the coordinates (q, V), in original units
        rows = np.empty((len(entry), self.offset + self.vt.shape[0]))
        if self.offset:
            rows[:, 0] = value_row / self.root_total
        rows[:, self.offset :] = a @ self.vt.T
        starts = np.flatnonzero(np.r_[True, entry[1:] != entry[:-1]])
        sizes = np.diff(np.r_[starts, len(entry)])
        for size in np.unique(sizes):
            first = starts[sizes == size]
            take = first[:, None] + np.arange(size)  # (entries, rows of each)
            held_out = self._entries(rows[take], b[take], root_weight[take])
            for c, residual in held_out.items():
                self._record(c, residual, entry[first], part[take], index[take])

    def _entries(self, rows, b, root_weight):
        """Held-out residuals (entries, rows, targets) of every candidate, by
        candidate; nan for an entry without which a kept direction is undetermined.

        In coordinates scaled by ``diag(1, s^2 + alpha)^(-1/2)``, all rows'
        penalised Gram matrix is the identity and the full fit's weights are the
        scaled ``rhs``. Entries with fewer rows than kept coordinates solve with
        their hat block ``I - Z Z^T`` (rows x rows), the others with the
        downdated Gram matrix ``I - Z^T Z`` (coordinates x coordinates).
        """
        z = root_weight[..., None] * rows
        suspects = self._suspects(z)
        held_out = {}
        for alpha, members in self.by_alpha.items():
            size = max(n for _, n in members)
            scale = self._scale(alpha, size)
            x = rows[..., :size] * scale  # scaled rows, original units
            z_scaled = root_weight[..., None] * x
            full = scale[:, None] * self.rhs[:size]  # the full fit's scaled weights
            undetermined = {}
            for c, n in members:
                undetermined[c] = np.zeros(len(rows), dtype=bool)
                for e in suspects:
                    downdated = np.eye(n) - z_scaled[e, :, :n].T @ z_scaled[e, :, :n]
                    undetermined[c][e] = _smallest_eigenvalue(downdated) <= SINGULAR_LIMIT
            solve = _by_rows if rows.shape[1] < size else _by_coordinates
            residuals = solve(x, z_scaled, b, root_weight, full, members, undetermined)
            for c, _ in members:
                residuals[c][undetermined[c]] = np.nan
            held_out.update(residuals)
        return held_out

    def _scale(self, alpha, size):
        """``diag(1, s^2 + alpha)^(-1/2)`` over the first ``size`` coordinates."""
        return 1.0 / np.sqrt(self.gram[:size] + alpha * (np.arange(size) >= self.offset))

    def _suspects(self, z):
        """Entries for which some candidate may leave a direction undetermined.

        ``I - H_gg`` is smallest for the candidate keeping the most directions with
        the smallest penalty, and its smallest eigenvalue is at least one minus the
        trace of ``H_gg`` (the entry's summed leverage): entries of a summed
        leverage below ``1 - SINGULAR_LIMIT`` are determined for every candidate.
        """
        size = max(n for members in self.by_alpha.values() for _, n in members)
        scale = self._scale(min(self.by_alpha), size)
        leverage = ((z[..., :size] * scale) ** 2).sum(axis=(1, 2))
        return np.flatnonzero(leverage >= 1.0 - SINGULAR_LIMIT)

    def _record(self, c, held_out, entries, part, index):
        """Add candidate ``c``'s held-out residuals to the losses (and residuals)."""
        singular = np.isnan(held_out).any(axis=(1, 2))
        self.singular[c].extend(entries[singular].tolist())
        scored_part, score_weights = self.scored
        in_scored = part == scored_part
        errors = held_out[in_scored]
        errors = errors**2 if self.statistic == "squared" else np.abs(errors)
        if score_weights is not None:
            errors = errors * score_weights[index[in_scored]][:, None]
        self.losses[c] += float(np.nansum(errors))
        if self.residuals is not None:
            for position in np.unique(part):
                mask = part == position
                self.residuals[c][position][index[mask]] = held_out[mask]

    def result(self):
        """The :class:`LeaveOneOut` of the entries added."""
        part, score_weights = self.scored
        b = _numpy(self.system.b_parts[part])
        weights = np.ones(len(b)) if score_weights is None else score_weights
        weight_sum = float(weights.sum())
        total = 0.0
        if weight_sum > 0:
            mean = weights @ b / weight_sum
            total = float((weights[:, None] * (b - mean) ** 2).sum())
        singular = [np.unique(np.array(s, dtype=np.int64)) for s in self.singular]
        losses = np.where([s.size > 0 for s in singular], np.nan, self.losses)
        return LeaveOneOut(losses, total, weight_sum * b.shape[1], singular, self.residuals)


def row_entries(block, parameters, sample, entries):
    """Entry position of every row of each row part (values, then gradients)."""
    position = entry_positions(entries, block.samples.column(sample))
    rows = [np.repeat(position, n_component_rows(block))]
    for parameter in parameters:
        gradient = block.gradient(parameter)
        parent = np.asarray(gradient.samples.column("sample"))
        rows.append(np.repeat(position[parent], n_component_rows(gradient)))
    return rows


def n_component_rows(block):
    """Rows that each sample of ``block`` spans once its components are folded in."""
    return int(np.prod([len(component) for component in block.components], dtype=np.int64))


def leave_one_out_blocks(systems, rows, candidates, scored, statistic, n_jobs, predictions=False):
    """:func:`leave_one_out` of every block, the blocks run as parallel tasks (in
    as many threads as BLAS may use where ``n_jobs`` means one worker, as
    :class:`~skmetalstsq.TensorMapLstsq` solves them).

    ``candidates`` is one list of (rcond or None, alpha) for all blocks, or one
    list per block; a None cut-off is resolved with the block's full size.
    ``scored`` is (each block's scored row part, each block's weights of those
    rows or None). Returns one :class:`LeaveOneOut` per block.
    """
    tasks = []
    for b, (system, entries) in enumerate(zip(systems, rows)):
        block_candidates = candidates[b] if isinstance(candidates[0], list) else candidates
        resolved = [
            (default_rcond(system.n_rows, system.n_features) if r is None else r, alpha)
            for r, alpha in block_candidates
        ]
        args = (system, entries, resolved, (scored[0][b], scored[1][b]), statistic, predictions)
        tasks.append((leave_one_out, args, solve_cost(system)))
    return run_tasks(tasks, blas_threads() if effective_n_jobs(n_jobs) == 1 else n_jobs)


def held_out_tensor(keys, y, systems, residuals):
    """The held-out predictions ``y - residuals`` as a TensorMap in the layout of ``y``.

    ``keys``: the key of each system (X's order); ``residuals``: for each system,
    the held-out residuals of each row part (as :attr:`LeaveOneOut.residuals`
    gives them for one candidate). The arrays take the library, device and
    dtype of y's.
    """
    blocks = {}
    for key, system, parts in zip(keys, systems, residuals):
        y_block = y.block(key)
        predicted = [_numpy(b) - r for b, r in zip(system.b_parts, parts)]
        values = convert_like(predicted[0].reshape(y_block.values.shape), y_block.values)
        block = TensorBlock(values, y_block.samples, y_block.components, y_block.properties)
        for parameter, part in zip(gradient_parameters(y_block), predicted[1:]):
            gradient = y_block.gradient(parameter)
            gradient_values = convert_like(part.reshape(gradient.values.shape), gradient.values)
            block.add_gradient(
                parameter,
                TensorBlock(
                    gradient_values, gradient.samples, gradient.components, y_block.properties
                ),
            )
        blocks[y.keys.position(key)] = block
    return TensorMap(y.keys, [blocks[position] for position in range(len(y.keys))])
