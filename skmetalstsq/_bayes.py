"""TensorMapBayesianRidge: scikit-learn's BayesianRidge per block and target, from the factor.

Each block is factorised as :class:`~skmetalstsq.TensorMapLstsq` does it: the
triangular factor ``R`` of its weighted ``[1 | A | B]`` (:mod:`._factors`), by the QR of
its rows or, for tall well-conditioned numpy blocks in ``fit``, as the Cholesky factor of
their Gram matrix (:func:`~._factors.gram_factor`). Everything the
evidence needs is then in ``R``: the SVD ``R_A = U S V^T`` of its feature columns, the
projected targets ``c = U^T Q^T B``, the part of each target outside A's column space
(:meth:`~._factors.Factor.residual_squares`) and the number of rows ``N``. For a ratio
``t = lambda / alpha`` the posterior mean is ``w = V diag(s / (s^2 + t)) c``, with

- ``||w||^2 = sum (s c / (s^2 + t))^2``,
- the weighted residual ``sse = sum (c t / (s^2 + t))^2 + residual``,
- the number of well-determined parameters ``gamma = sum s^2 / (s^2 + t)``,

each O(rank) to evaluate: the rows are never read again after the factorisation.
MacKay's updates (scikit-learn's)

``lambda = (gamma + 2 lambda_1) / (||w||^2 + 2 lambda_2)``,
``alpha = (N - gamma + 2 alpha_1) / (sse + 2 alpha_2)``

depend on ``t`` alone, so their fixed point is a root of the scalar function
``h(u) = log(lambda(t) / alpha(t)) - u``, ``u = log t``. It is found by bracketing from
the initial ``u`` in the direction the updates move it (the first trial point is
scikit-learn's first step), then Brent's method to machine precision: tens of
evaluations where plain iteration of the updates can take thousands of steps on
ill-conditioned blocks.
"""

import math
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from joblib import effective_n_jobs
from metatensor import Labels, TensorBlock, TensorMap
from scipy.optimize import brentq
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ._backends import FACTOR_EPS, backend_of, convert_like, to_numpy
from ._blocks import is_floating, key_tuple, key_tuples
from ._estimator import (
    N_JOBS,
    BatchLayout,
    PartialBlock,
    PartialState,
    TensorMapLinearModel,
    TensorMapLstsq,
    merge_partial_states,
)
from ._factors import factorize, gram_factor
from ._indexed import holds_torch_maps, unwrap
from ._parallel import blas_threads, run_tasks, single_threaded, solve_cost
from ._solvers import Solution, default_rcond
from ._torch_maps import as_core, type_name
from ._validation import check_array_like, check_predict_input

#: The largest condition number of a tall block (its features, columns scaled to
#: unit norm, and each target given them) that :meth:`TensorMapBayesianRidge.fit`
#: factorises through its Gram matrix, at half the QR's flops: its posterior is
#: then accurate to about ``1e4^2 x eps``, 2e-8 relative, far below its std
#: (nothing refines it against the rows). :class:`TensorMapLstsq`'s limit too.
GRAM_CONDITION = 1e4

#: Bounds of ``u = log(lambda / alpha)`` searched for the fixed point (exp stays finite).
LOG_RATIO_LIMIT = 700.0


@dataclass
class Hyperpriors:
    """The Gamma hyperpriors, initial values and iteration limits of one fit."""

    alpha_1: float
    alpha_2: float
    lambda_1: float
    lambda_2: float
    alpha_init: object
    lambda_init: object
    max_iter: int
    tol: float
    compute_score: bool


@dataclass
class Posterior:
    """The evidence maximum of one block, every target on its own.

    Attributes
    ----------
    solution : Solution
        Posterior mean weights (n_targets, n_features) and intercept, float64.
    alpha, lambda_ : numpy arrays of shape (n_targets,)
    sigma : numpy array of shape (n_targets, n_features, n_features)
        Posterior covariance of the weights of each target.
    n_iter : numpy int array of shape (n_targets,)
    scores : list of numpy arrays, or None
    x_mean : numpy array of shape (n_features,)
        Weighted means of the value rows of X (zeros without an intercept).
    value_weight : float
        Sum of the weights of the value rows.
    converged : list of bool
    """

    solution: Solution
    alpha: np.ndarray
    lambda_: np.ndarray
    sigma: np.ndarray
    n_iter: np.ndarray
    scores: object
    x_mean: np.ndarray
    value_weight: float
    converged: list


class _Target:
    """The evidence of one target of one block as a function of ``t = lambda / alpha``."""

    def __init__(self, singular, projected, residual, n_rows, n_features, priors):
        self.s, self.s2, self.c = singular, singular**2, projected
        self.residual, self.n_rows, self.n_features = residual, n_rows, n_features
        self.priors = priors
        self.evaluations = 0
        self.scores = []

    def mean(self, t):
        """Posterior mean in the basis of V, for the ratio ``t``."""
        return self.s * self.c / (self.s2 + t)

    def terms(self, t):
        """``(m, ||w||^2, sse, gamma)`` at the ratio ``t``."""
        d = self.s2 + t
        m = self.s * self.c / d
        sse = float(((self.c * (t / d)) ** 2).sum()) + self.residual
        return m, float(m @ m), sse, float((self.s2 / d).sum())

    def update(self, t, record=True):
        """MacKay's ``(alpha, lambda)`` from the posterior at the ratio ``t``.

        Counted in ``evaluations``; with ``compute_score``, the log evidence at
        the new values is appended to ``scores`` (unless ``record`` is False).
        """
        self.evaluations += 1
        p = self.priors
        _, norm, sse, gamma = self.terms(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            lambda_ = np.float64(gamma + 2 * p.lambda_1) / (norm + 2 * p.lambda_2)
            alpha = np.float64(self.n_rows - gamma + 2 * p.alpha_1) / (sse + 2 * p.alpha_2)
        alpha, lambda_ = float(alpha), float(lambda_)
        if record and p.compute_score and alpha > 0 and lambda_ > 0:
            if math.isfinite(alpha) and math.isfinite(lambda_):
                self.scores.append(self.log_evidence(alpha, lambda_))
        return alpha, lambda_

    def step(self, u):
        """``h(u) = log(lambda / alpha) - u`` after one update from ``t = exp(u)``."""
        alpha, lambda_ = self.update(math.exp(u))
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.log(np.float64(lambda_) / alpha)) - u

    def log_evidence(self, alpha, lambda_):
        """scikit-learn's log marginal likelihood at ``(alpha, lambda)`` (N rows)."""
        p = self.priors
        _, norm, sse, _ = self.terms(lambda_ / alpha)
        logdet = -np.log(lambda_ + alpha * self.s2).sum()
        logdet -= (self.n_features - self.s.shape[0]) * math.log(lambda_)
        score = p.lambda_1 * math.log(lambda_) - p.lambda_2 * lambda_
        score += p.alpha_1 * math.log(alpha) - p.alpha_2 * alpha
        score += 0.5 * (
            self.n_features * math.log(lambda_)
            + self.n_rows * math.log(alpha)
            - alpha * sse
            - lambda_ * norm
            + logdet
            - self.n_rows * math.log(2 * math.pi)
        )
        return float(score)


def _fixed_point(target, u0):
    """The root of ``target.step`` the updates reach from ``u0``, and whether it is one.

    The updates move ``u`` by ``h(u)``: trial points go that way from ``u0``, at
    ``|h(u0)|`` (scikit-learn's first step), then twice as far each time, until
    ``h`` changes sign; Brent's method then narrows the bracket to machine
    precision. Where no sign change comes before :data:`LOG_RATIO_LIMIT`, the
    limit is returned (the evidence grows without bound that way).
    """
    limit, max_iter = LOG_RATIO_LIMIT, target.priors.max_iter
    h0 = target.step(u0)
    if h0 == 0.0 or not math.isfinite(h0):
        return u0, math.isfinite(h0)
    if target.evaluations >= max_iter:  # the update from u0 is the answer, as scikit-learn's
        return u0, False
    direction, size = math.copysign(1.0, h0), max(abs(h0), 1e-8)
    a, ha = u0, h0
    while True:
        b = min(max(a + direction * size, -limit), limit)
        hb = target.step(b)
        if not math.isfinite(hb):
            return a, False
        if hb == 0.0:
            return b, True
        if math.copysign(1.0, hb) != direction:
            break
        if abs(b) == limit or target.evaluations >= max_iter:
            return b, False
        a, ha, size = b, hb, 2 * size
    # Brent's method evaluates both ends again, then once per iteration
    budget = max_iter - target.evaluations - 2
    if budget < 1:
        return (a, False) if abs(ha) < abs(hb) else (b, False)
    left, right = min(a, b), max(a, b)
    root, result = brentq(
        target.step,
        left,
        right,
        xtol=1e-14,
        rtol=4 * FACTOR_EPS,
        maxiter=budget,
        full_output=True,
        disp=False,
    )
    return root, result.converged


def _initial_log_ratio(target, priors):
    """``log(lambda_init / alpha_init)``, scikit-learn's defaults where None."""
    alpha = priors.alpha_init
    if alpha is None:
        variance = (float(target.c @ target.c) + target.residual) / max(target.n_rows, 1)
        alpha = 1.0 / (variance + FACTOR_EPS)
    lambda_ = 1.0 if priors.lambda_init is None else priors.lambda_init
    with np.errstate(divide="ignore"):
        u0 = float(np.log(np.float64(lambda_)) - np.log(np.float64(alpha)))
    return min(max(u0, -LOG_RATIO_LIMIT), LOG_RATIO_LIMIT), float(alpha), float(lambda_)


def block_posterior(factor, priors, label, caller):
    """The evidence maximum of one block's :class:`~._factors.Factor`, every target.

    Raises
    ------
    ValueError
        Where the evidence of a target has no finite maximum (``alpha_`` or
        ``lambda_`` infinite), naming the block and the target.
    """
    factor = factor.to_numpy()
    n_features, n_targets = factor.n_features, factor.n_targets
    r_a, projected, head = factor.centred()
    residual = factor.residual_squares()
    # every right singular vector, the null directions' included (as scikit-learn's)
    vt_full, singular, rotated = np.eye(n_features), np.zeros(0), np.zeros((0, n_targets))
    if r_a.shape[0] and n_features:
        u, singular, vt_full = np.linalg.svd(r_a, full_matrices=r_a.shape[0] < n_features)
        rotated = u.T @ projected
    vt = vt_full[: singular.shape[0]]
    squares_full = np.zeros(n_features)
    squares_full[: singular.shape[0]] = singular**2
    weights = np.zeros((n_targets, n_features))
    alphas, lambdas = np.zeros(n_targets), np.zeros(n_targets)
    sigma = np.zeros((n_targets, n_features, n_features))
    n_iter, scores, converged = np.zeros(n_targets, dtype=int), [], []
    for j in range(n_targets):
        target = _Target(
            singular, rotated[:, j], float(residual[j]), factor.weighted_rows, n_features, priors
        )
        u0, alpha0, lambda0 = _initial_log_ratio(target, priors)
        if priors.compute_score:
            target.scores.append(target.log_evidence(alpha0, lambda0))
        root, found = _fixed_point(target, u0)
        n_iter[j] = target.evaluations
        if not factor.weighted_rows:
            raise ValueError(
                f"{caller}: block {label}: every row weighs zero, so its evidence (and error "
                "bars) are undefined; give its rows a positive weight or leave the block out"
            )
        # the posterior at the point found; its evidence ends scores_ in place of the
        # last evaluation's (the same point where the search ended on it)
        alpha, lambda_ = target.update(math.exp(root), record=False)
        if priors.compute_score and len(target.scores) > 1:
            target.scores[-1] = target.log_evidence(alpha, lambda_)
        if not (math.isfinite(alpha) and math.isfinite(lambda_) and alpha > 0 and lambda_ > 0):
            raise ValueError(
                f"{caller}: block {label}, target {j}: the evidence has no finite maximum "
                f"(alpha_={alpha!r}, lambda_={lambda_!r}); the targets are fitted exactly or "
                "are all zero: use alpha_2 > 0 and lambda_2 > 0 (scikit-learn's defaults)"
            )
        mean = target.mean(lambda_ / alpha)
        # scikit-learn's test: one more update changes the weights by less than tol
        alpha_next, lambda_next = target.update(lambda_ / alpha, record=False)
        change = vt.T @ (target.mean(lambda_next / alpha_next) - mean)
        converged.append(found and float(np.abs(change).sum()) < priors.tol)
        weights[j] = vt.T @ mean
        alphas[j], lambdas[j] = alpha, lambda_
        sigma[j] = (vt_full.T / (alpha * squares_full + lambda_)) @ vt_full
        scores.append(np.array(target.scores))
    x_mean, intercept, value_weight = np.zeros(n_features), None, 0.0
    if factor.intercept:
        intercept = np.zeros(n_targets)
        if head is not None:
            r11 = float(head[0, 0])
            x_mean = head[0, 1 : 1 + n_features] / r11
            intercept = head[0, 1 + n_features :] / r11 - weights @ x_mean
            value_weight = r11**2
    rcond = default_rcond(factor.n_rows, n_features)
    rank = int((singular > rcond * singular[0]).sum()) if singular.shape[0] else 0
    padded = np.zeros(min(factor.n_rows, n_features))
    padded[: singular.shape[0]] = singular[: padded.shape[0]]
    solution = Solution(weights, rank, padded, intercept)
    return Posterior(
        solution,
        alphas,
        lambdas,
        sigma,
        n_iter,
        scores if priors.compute_score else None,
        x_mean,
        value_weight,
        converged,
    )


def _factorize(system):
    """The factor of one block's system, BLAS on one thread: through its Gram matrix
    for tall, well-conditioned numpy blocks (:func:`~._factors.gram_factor`), else
    by the QR of its rows."""
    with single_threaded():
        factor = None
        if isinstance(system.a_parts[0], np.ndarray) and system.n_rows >= 2 * system.width:
            factor = gram_factor(system, GRAM_CONDITION)
        return factorize(system) if factor is None else factor


def _layout(x_block, y_block):
    """What every batch of one block must share in a partial fit."""
    gradients = {
        parameter: list(x_block.gradient(parameter).components)
        for parameter in sorted(x_block.gradients_list())
    }
    return BatchLayout(x_block.properties, y_block.properties, list(x_block.components), gradients)


def _fit_block(system, priors, label, caller):
    """The factor of one block's system and its posterior (see :func:`_factor_posterior`)."""
    factor = _factorize(system)
    return factor, _factor_posterior(factor, priors, label, caller)


def _factor_posterior(factor, priors, label, caller):
    """The posterior of one block from its accumulated factor (BLAS on one thread),
    or the ValueError of a block whose evidence has no finite maximum."""
    with single_threaded():
        try:
            return _in_library(block_posterior(factor, priors, label, caller), factor.r)
        except ValueError as error:
            return error


def _key_label(names, key):
    """A key tuple written as ``(name=value, ...)`` for messages."""
    return "(" + ", ".join(f"{name}={value}" for name, value in zip(names, key)) + ")"


def _in_library(posterior, like):
    """``posterior`` with its weights and intercept in the library and device of ``like``."""
    solution = posterior.solution
    intercept = None if solution.intercept is None else convert_like(solution.intercept, like)
    singular = convert_like(solution.singular_values, like)
    posterior.solution = Solution(
        convert_like(solution.weights, like), solution.rank, singular, intercept
    )
    return posterior


def _numpy_dtype(dtype):
    """The numpy dtype of the data dtype ``dtype`` (numpy or torch; float32 for the
    torch dtypes numpy lacks, such as bfloat16)."""
    if isinstance(dtype, np.dtype):
        return dtype
    try:
        return np.dtype(str(dtype).replace("torch.", ""))
    except TypeError:
        return np.dtype(np.float32)


def _kind_noise(parameter, gradient_weights):
    """The weight of a row of this kind with a unit sample weight."""
    if parameter is None:
        return 1.0
    return float((gradient_weights or {}).get(parameter, 1.0))


def _rows_std(rows, sigma, alpha, centre, noise):
    """Predictive std of ``rows`` (2-D, the data's library) for every target.

    ``sigma`` (n_targets, p, p) and ``alpha`` (n_targets,) numpy; ``centre`` the
    value rows' training means (None: not centred); ``noise`` the variance of a
    row's noise times ``alpha`` (``1 / w_kind``, plus ``1 / sum of value weights``
    for the intercept of value rows).
    """
    if centre is not None:
        rows = rows - convert_like(centre, rows)
    out = backend_of(rows).empty((rows.shape[0], alpha.shape[0]), rows)
    for j in range(alpha.shape[0]):
        quadratic = ((rows @ convert_like(sigma[j], rows)) * rows).sum(-1)
        out[:, j] = quadratic + noise / alpha[j]
    return convert_like(out**0.5, rows)  # scratch memory is float64


def _float_rows(array):
    """``array`` in a floating dtype (float64 for integers), for predictions."""
    if is_floating(array):
        return array
    return convert_like(array, np.zeros(0)) if isinstance(array, np.ndarray) else array.double()


class TensorMapBayesianRidge(TensorMapLinearModel):
    """Bayesian ridge regression fitted block by block and target by target.

    scikit-learn's ``sklearn.linear_model.BayesianRidge`` for every block of a
    TensorMap (values with their gradients stacked as rows, as
    :class:`TensorMapLstsq` fits them) and every target property on its own: the
    weights have a Gaussian prior of precision ``lambda_``, each row a Gaussian
    noise of precision ``alpha_ * w`` (``w`` its weight), and both precisions
    maximise the evidence (the marginal likelihood) of that block's target. Plain
    2-D arrays are a TensorMap of one block.

    Each block's weighted ``[1 | A | B]`` is factorised as by
    :class:`TensorMapLstsq` (by its Gram matrix for tall, well-conditioned numpy
    blocks, else by the QR of its rows); the evidence is then maximised from that
    triangular factor alone (its SVD, the projected targets, the residual outside the
    features' column space and the number of rows), so that :meth:`partial_fit`
    and :func:`skmetalstsq.distributed.fit_shards` give the result of :meth:`fit`.

    Parameters
    ----------
    max_iter : int >= 1, default=300
        Most evaluations of the evidence updates per target. MacKay's updates
        (scikit-learn's) depend on ``lambda / alpha`` alone: their fixed point is
        found as a root in ``log(lambda / alpha)``, bracketed from the initial
        values in the direction the updates move it, then by Brent's method to
        machine precision. This takes tens of evaluations, each O(rank) from the
        factor's SVD, where iterating the updates can take thousands of steps on
        ill-conditioned blocks; the fixed point is scikit-learn's at a tight
        ``tol``. ``n_iter_`` counts the evaluations, never more than
        ``max_iter``; where the budget ends first, the result is one update
        from the last point evaluated (with ``max_iter`` 1 or 2, scikit-learn's
        own iterates) and a ``ConvergenceWarning`` names the block.
    tol : float > 0, default=1e-3
        scikit-learn's convergence test, checked at the fixed point found: one
        more update must change the weights by less than ``tol`` (sum of absolute
        changes), else a ``ConvergenceWarning`` names the block and target.
    alpha_1, alpha_2, lambda_1, lambda_2 : float >= 0, default=1e-6
        Shape and rate of the Gamma hyperpriors of ``alpha`` and ``lambda``, as
        in scikit-learn.
    alpha_init : float >= 0 or None, default=None
        Initial ``alpha``; None is 1 / (mean square of the target over the rows,
        weighted, and centred with an intercept): scikit-learn's 1 / Var(y)
        without weights and with an intercept. Without an intercept the square is
        not centred (the factor of ``[A | B]`` holds no column means), where
        scikit-learn centres it anyway: only the starting point and
        ``scores_[0]`` differ, not the fixed point.
    lambda_init : float >= 0 or None, default=None
        Initial ``lambda``; None is 1.
    compute_score : bool, default=False
        Keep the log evidence at every evaluation in ``scores_``.
    fit_intercept : bool, default=True
        Fit an intercept per block and target on the value rows (not a
        probabilistic parameter: a flat prior), by weighted centring.
    gradient_weights : dict or None, default=None
        ``{gradient parameter: float >= 0}`` multiplying the weight of that
        gradient's rows, as in :class:`TensorMapLstsq`.
    device : None, str or torch.device, default=None
        Where the rows are factorised, as in :class:`TensorMapLstsq`; the
        evidence is maximised in numpy from the small factor.
    n_jobs : int or None, default=None
        Workers factorising and fitting blocks concurrently, with joblib's
        meaning (threads preferred); one worker runs as many threads as BLAS may
        use, as in :class:`TensorMapLstsq`. Every LAPACK call runs with BLAS on
        one thread, so the results are the same, bit for bit, for every
        ``n_jobs`` and thread setting.
    verbose : int, default=0
        Print one line per block when > 0.

    Attributes
    ----------
    weights_, intercept_ : TensorMap
        The posterior mean of the weights, and the intercept, as
        :class:`TensorMapLstsq` has them.
    alpha_ : dict
        Key (tuple of ints) -> numpy array (n_targets,): the noise precision of
        a row of weight 1.
    lambda_ : dict
        Key -> numpy array (n_targets,): the precision of the weights' prior.
    sigma_ : dict
        Key -> numpy array (n_targets, n_features, n_features): the posterior
        covariance of the block's weights for each target.
    n_iter_ : dict
        Key -> numpy int array (n_targets,): evaluations of the updates.
    scores_ : dict
        Only with ``compute_score``: key -> list (one per target) of arrays of
        the log evidence at the initial values, then after every evaluation
        (the last at ``alpha_``, ``lambda_``).
    X_offset_ : dict
        Key -> numpy array (n_features,): the weighted means of the value rows
        of X (zeros without an intercept); value rows are centred on them for
        the predictive std.
    value_weight_sum_ : dict
        Key -> float: the sum of the weights of the value rows (the intercept's
        posterior variance is ``1 / (alpha_ * value_weight_sum_)``).
    rank_, singular_values_ : dict
        As in :class:`TensorMapLstsq`.
    factors_ : dict
        Key -> the block's accumulated factor and layout (as
        :meth:`TensorMapLstsq.partial_fit` keeps them), for :meth:`partial_fit`.
    coef_ : numpy.ndarray of shape (n_features,) or (n_targets, n_features)
        Only after a fit on plain arrays. ``intercept_``, ``alpha_``,
        ``lambda_``, ``sigma_``, ``n_iter_``, ``scores_``, ``X_offset_`` and
        ``value_weight_sum_`` are then those of the one block, as scikit-learn's
        ``BayesianRidge`` has them for a 1-D y (numpy floats, an int,
        ``sigma_`` of shape (n_features, n_features)); for a 2-D y, one per
        target (arrays of shape (n_targets, ...), ``scores_`` a list).
    n_features_in_ : int
        Only after a fit on plain arrays: the number of columns of X.

    Notes
    -----
    **Weights are precisions.** A row of weight ``w`` has noise variance
    ``1 / (alpha_ w)`` and the evidence counts rows (values and gradient rows),
    not the sum of weights: scaling every weight by ``k`` leaves the weights and
    their posterior unchanged and divides ``alpha_`` by ``k``. scikit-learn's
    ``BayesianRidge`` reads ``sample_weight`` as repetition counts (its evidence
    counts their sum), which makes group weights such as energies 100 and forces
    1 a posterior many times too confident. Without weights both are the same;
    with weights, this equals ``BayesianRidge(fit_intercept=False)`` on the rows
    centred on their weighted means (with an intercept) and multiplied by
    ``sqrt(w)``. A row of weight zero carries no information (infinite noise):
    it is not counted, as if it were left out (``gradient_weights={"positions":
    0}`` fits the values alone).

    **The posterior mean** is ``TensorMapLstsq(alpha=lambda_ / alpha_)``'s
    weights (per target). Square, wide and rank-deficient blocks are fine: the
    prior sets the null directions, where ``sigma_`` is ``1 / lambda_``.

    Examples
    --------
    >>> import numpy as np
    >>> from skmetalstsq import TensorMapBayesianRidge
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.1 * rng.normal(size=200)
    >>> model = TensorMapBayesianRidge().fit(X, y)
    >>> np.round(model.coef_, 2)
    array([ 0.99, -2.01,  0.51])
    >>> mean, std = model.predict(X[:2], return_std=True)
    >>> np.round(std, 2)
    array([0.1, 0.1])
    """

    _parameter_constraints = {
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "alpha_1": [Interval(Real, 0, None, closed="left")],
        "alpha_2": [Interval(Real, 0, None, closed="left")],
        "lambda_1": [Interval(Real, 0, None, closed="left")],
        "lambda_2": [Interval(Real, 0, None, closed="left")],
        "alpha_init": [None, Interval(Real, 0, None, closed="left")],
        "lambda_init": [None, Interval(Real, 0, None, closed="left")],
        "compute_score": ["boolean"],
        "fit_intercept": ["boolean"],
        "gradient_weights": [dict, None],
        "device": "no_validation",
        "n_jobs": N_JOBS,
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        max_iter=300,
        tol=1.0e-3,
        alpha_1=1.0e-6,
        alpha_2=1.0e-6,
        lambda_1=1.0e-6,
        lambda_2=1.0e-6,
        alpha_init=None,
        lambda_init=None,
        compute_score=False,
        fit_intercept=True,
        gradient_weights=None,
        device=None,
        n_jobs=None,
        verbose=0,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_1 = alpha_1
        self.alpha_2 = alpha_2
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.alpha_init = alpha_init
        self.lambda_init = lambda_init
        self.compute_score = compute_score
        self.fit_intercept = fit_intercept
        self.gradient_weights = gradient_weights
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _priors(self):
        return Hyperpriors(
            float(self.alpha_1),
            float(self.alpha_2),
            float(self.lambda_1),
            float(self.lambda_2),
            self.alpha_init,
            self.lambda_init,
            int(self.max_iter),
            float(self.tol),
            bool(self.compute_score),
        )

    def _rows(self):
        """The least-squares estimator whose checks and factors this fit shares."""
        return TensorMapLstsq(
            fit_intercept=self.fit_intercept,
            gradient_weights=self.gradient_weights,
            device=self.device,
        )

    def _workers(self):
        """Threads for the blocks: ``n_jobs``, or as many as BLAS may use where
        ``n_jobs`` means one worker (as :class:`TensorMapLstsq`)."""
        n_jobs = effective_n_jobs(self.n_jobs)
        return blas_threads() if n_jobs == 1 else self.n_jobs

    def _validated(self, X, y, caller, reset):
        """Arrays checked by scikit-learn in this estimator's name (TensorMaps as they are)."""
        if any(isinstance(unwrap(data)[0], TensorMap) for data in (X, y)):
            return X, y
        check_array_like(X, caller, "X")
        if y is not None:  # scikit-learn's own error for a missing y
            check_array_like(y, caller, "y")
        return validate_data(self, X, y, reset=reset, multi_output=True, y_numeric=True)

    def _take_feature_checks(self, rows):
        """Keep what ``validate_data`` recorded on ``rows`` (a fit on arrays)."""
        for name in ("n_features_in_", "feature_names_in_"):
            if name in rows.__dict__:
                setattr(self, name, rows.__dict__[name])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Maximise the evidence of every block and target; the posterior of the weights.

        Parameters
        ----------
        X, y, sample_weight :
            As in :meth:`TensorMapLstsq.fit`; the weights are relative
            precisions of the rows (see the Notes).

        Returns
        -------
        self : TensorMapBayesianRidge
        """
        caller = "TensorMapBayesianRidge.fit"
        for stale in ("coef_", "n_features_in_", "feature_names_in_"):
            self.__dict__.pop(stale, None)
        torch_maps = holds_torch_maps(X, y)
        X, y = self._validated(X, y, caller, reset=True)
        rows = self._rows()
        X, y, systems, y_ndim, pairs = rows._systems(X, y, sample_weight, caller)
        self._take_feature_checks(rows)
        priors, names = self._priors(), list(X.keys.names)
        # one task per block: its factor, then its posterior
        tasks = [
            (
                _fit_block,
                (system, priors, _key_label(names, key_tuple(key)), caller),
                solve_cost(system),
            )
            for (key, _, _), system in zip(pairs, systems)
        ]
        fitted = run_tasks(tasks, self._workers())
        records = {
            key_tuple(key): PartialBlock(factor, _layout(x_block, y_block), system.dtype)
            for (key, x_block, y_block), (factor, _), system in zip(pairs, fitted, systems)
        }
        self._torch_maps = torch_maps
        state = PartialState(records, names, y_ndim)
        self._solve_factors(state, caller, [posterior for _, posterior in fitted])
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Fold a batch of rows into each block's factor; maximise the evidence on all rows.

        As :meth:`TensorMapLstsq.partial_fit`: the factors of the rows seen are
        kept in ``factors_`` (``width x width`` per block, the size of
        ``sigma_``), and the fitted attributes equal those of :meth:`fit` on
        every batch joined (to rounding), hyperparameters included. :meth:`fit`
        keeps its factors too: a partial fit after it adds to its rows.
        :meth:`fit` starts over.

        Parameters
        ----------
        X, y, sample_weight : as in :meth:`fit`, for one batch.

        Returns
        -------
        self : TensorMapBayesianRidge

        Raises
        ------
        ValueError, TypeError
            For a batch whose layout, or kind (arrays or TensorMaps), differs
            from earlier batches, or a first batch whose rows all weigh zero.
        """
        caller = "TensorMapBayesianRidge.partial_fit"
        first = not hasattr(self, "factors_")
        is_array = not any(isinstance(unwrap(data)[0], TensorMap) for data in (X, y))
        if not first and hasattr(self, "coef_") != is_array:
            kinds = ("arrays", "TensorMaps") if hasattr(self, "coef_") else ("TensorMaps", "arrays")
            raise TypeError(f"{caller}: earlier batches were {kinds[0]}, this one is {kinds[1]}")
        if is_array:  # X's features as seen so far; errors in this estimator's name
            X, y = self._validated(X, y, caller, reset=first)
        weighed = not first and any(record.factor.n_rows for record in self.factors_.values())
        batch = self._factor_batch(X, y, sample_weight, caller, check_weights=not weighed)
        if not first:
            state = PartialState(self.factors_, self._key_names, self._y_ndim)
            batch = merge_partial_states(state, batch, caller)
        self._torch_maps = holds_torch_maps(X, y)
        self._solve_factors(batch, caller)
        return self

    def _factor_batch(self, X, y, sample_weight, caller, reset=True, check_weights=False):
        """The :class:`~._estimator.PartialState` of one batch (checked, then factorised)."""
        rows = self._rows()
        state = rows._factor_batch(X, y, sample_weight, caller, check_weights=check_weights)
        if reset:
            self._take_feature_checks(rows)
        return state

    def _solve_factors(self, state, caller, posteriors=None):
        """Maximise the evidence of every block from its accumulated factor (unless
        ``posteriors`` already holds the result of :func:`_factor_posterior`)."""
        records = state.records
        keys = Labels(
            state.key_names, np.array(list(records), dtype=np.int32).reshape(len(records), -1)
        )
        if posteriors is None:
            priors = self._priors()
            tasks = [
                (
                    _factor_posterior,
                    (record.factor, priors, _key_label(state.key_names, key), caller),
                    (record.factor.r.shape[1]) ** 3,
                )
                for key, record in records.items()
            ]
            posteriors = run_tasks(tasks, self._workers())
        for posterior in posteriors:
            if isinstance(posterior, ValueError):  # the first block's, whichever thread
                raise posterior
        self.factors_ = records
        self._key_names, self._y_ndim = list(state.key_names), state.y_ndim
        layouts = [(record.layout.targets, record.layout.features) for record in records.values()]
        dtypes = [record.dtype for record in records.values()]
        labels = [_key_label(state.key_names, key) for key in records]
        self._set_posteriors(keys, layouts, posteriors, dtypes, labels, state.y_ndim)

    def _set_posteriors(self, keys, layouts, posteriors, dtypes, labels, y_ndim):
        """Set the fitted attributes from one :class:`Posterior` per key."""
        caller = f"{type(self).__name__}"
        late = [
            f"block {label}, target {j}"
            for label, posterior in zip(labels, posteriors)
            for j, converged in enumerate(posterior.converged)
            if not converged
        ]
        if late:
            warnings.warn(
                f"{caller}: the evidence updates did not reach a fixed point within "
                f"max_iter={self.max_iter} evaluations for {', '.join(late)}",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.__dict__.pop("scores_", None)
        solutions = [p.solution.cast(dtype) for p, dtype in zip(posteriors, dtypes)]
        self._set_blocks(keys, layouts, solutions, y_ndim)
        tuples = key_tuples(keys)
        numpy_dtypes = [_numpy_dtype(dtype) for dtype in dtypes]

        def per_key(get):
            return {
                key: get(posterior, dtype)
                for key, posterior, dtype in zip(tuples, posteriors, numpy_dtypes)
            }

        self.alpha_ = per_key(lambda p, dtype: p.alpha.astype(dtype))
        self.lambda_ = per_key(lambda p, dtype: p.lambda_.astype(dtype))
        self.sigma_ = per_key(lambda p, dtype: p.sigma.astype(dtype))
        self.n_iter_ = per_key(lambda p, dtype: p.n_iter)
        self.X_offset_ = per_key(lambda p, dtype: p.x_mean.astype(dtype))
        self.value_weight_sum_ = per_key(lambda p, dtype: float(p.value_weight))
        if self.compute_score:
            self.scores_ = per_key(lambda p, dtype: p.scores)
        if self.verbose:
            for label, posterior in zip(labels, posteriors):
                print(
                    f"[{caller}] block {label}: alpha_={posterior.alpha}, "
                    f"lambda_={posterior.lambda_}, n_iter_={posterior.n_iter}",
                    flush=True,
                )
        if y_ndim is not None:
            self._as_arrays(y_ndim)

    def _as_arrays(self, y_ndim):
        """The per-key attributes of a fit on arrays, shaped as scikit-learn's."""
        for name in ("alpha_", "lambda_", "sigma_", "n_iter_", "scores_", "X_offset_"):
            if name not in self.__dict__:
                continue
            (value,) = getattr(self, name).values()
            if name == "X_offset_":
                pass
            elif y_ndim == 1:
                value = value[0]
                if name == "n_iter_":
                    value = int(value)
            setattr(self, name, value)
        (self.value_weight_sum_,) = self.value_weight_sum_.values()

    def _posterior_of(self, key, n_features):
        """``(sigma (T, p, p), alpha (T,), x_mean, value_weight)`` of one fitted key."""
        if hasattr(self, "coef_"):
            sigma = np.asarray(self.sigma_).reshape(-1, n_features, n_features)
            return sigma, np.atleast_1d(self.alpha_), self.X_offset_, self.value_weight_sum_
        return self.sigma_[key], self.alpha_[key], self.X_offset_[key], self.value_weight_sum_[key]

    def _noise(self, parameter, value_weight):
        """``alpha_`` times the noise variance of a new row of this kind (unit weight),
        plus the intercept's variance on value rows."""
        with np.errstate(divide="ignore"):
            noise = float(np.float64(1.0) / _kind_noise(parameter, self.gradient_weights))
            if parameter is None and self.fit_intercept:
                noise += float(np.float64(1.0) / value_weight)
        return noise

    def predict(self, X, return_std=False):
        """Predict the values and every gradient; with ``return_std``, their std.

        Parameters
        ----------
        X : metatensor.TensorMap, IndexedTensorMap or array-like of shape (n_samples, n_features)
            As in :meth:`TensorMapLstsq.predict`.
        return_std : bool, default=False
            Also return the standard deviation of a new observation of each
            predicted row: ``sqrt(x_c^T sigma_ x_c + 1 / (alpha_ w_kind))``,
            ``w_kind`` the weight of such a row with a unit sample weight (1 for
            values, ``gradient_weights[parameter]`` for gradient rows), with an
            intercept value rows centred on the training weighted means
            (``x_c = x - X_offset_``) and the intercept's own variance
            ``1 / (alpha_ * value_weight_sum_)`` added; gradient rows are not
            centred. scikit-learn's ``BayesianRidge`` centres rows too but leaves
            the intercept's variance out: without an intercept both agree.

        Returns
        -------
        y_mean : same kind as X
            As :meth:`TensorMapLstsq.predict` gives it.
        y_std : same kind as X, only with ``return_std``
            The std of every value and gradient row (force components each
            their own), of the layout of ``y_mean``.
        """
        mean = super().predict(X)
        if not return_std:
            return mean
        caller = f"{type(self).__name__}.predict"
        std = self._map_rows(X, caller, self._std_rows)
        if isinstance(std, np.ndarray) and isinstance(mean, np.ndarray):
            std = std.astype(mean.dtype, copy=False)  # arrays: the mean's dtype, as coef_'s
        return mean, std

    def _std_rows(self, rows, parameter, key, n_features):
        sigma, alpha, x_mean, value_weight = self._posterior_of(key, n_features)
        centre = x_mean if parameter is None and self.fit_intercept else None
        return _rows_std(rows, sigma, alpha, centre, self._noise(parameter, value_weight))

    def _map_rows(self, X, caller, function, extra_component=None):
        """``function(rows, parameter, key, n_features)`` on every row part of X.

        ``rows`` are 2-D (components folded), ``parameter`` None for values;
        ``function`` returns ``(rows, n_targets)`` or, with ``extra_component``
        (Labels), ``(rows, len(extra_component), n_targets)``. The result has
        the kind and layout of :meth:`predict`'s.
        """
        check_is_fitted(self)
        tensor, wrap = unwrap(X)
        if not isinstance(tensor, TensorMap):
            if not hasattr(self, "coef_"):
                raise TypeError(
                    f"{caller}: fitted on TensorMaps, X must be a TensorMap or an "
                    f"IndexedTensorMap, got {type_name(X)}"
                )
            check_array_like(X, caller, "X")
            rows = _float_rows(validate_data(self, X, reset=False))
            out = function(rows, None, None, rows.shape[1])
            if extra_component is not None:
                out = np.moveaxis(out, 1, -1)  # (n, n_targets, n_samples)
            return out[:, 0] if np.ndim(self.coef_) == 1 else out
        if hasattr(self, "coef_"):
            raise TypeError(f"{caller}: fitted on arrays, cannot predict a TensorMap")
        weights_map = as_core(self.weights_)
        positions = check_predict_input(tensor, weights_map, caller)
        fitted_keys = key_tuples(weights_map.keys)
        blocks = []
        for position, block in zip(positions, tensor.blocks()):
            targets = weights_map.block(position).samples
            key, n_features = fitted_keys[position], block.values.shape[-1]
            components = list(block.components)
            if extra_component is not None:
                components.append(extra_component)

            def apply(values, parameter, key=key, n_features=n_features):
                rows = _float_rows(values).reshape(-1, n_features)
                out = function(rows, parameter, key, n_features)
                return out.reshape(tuple(values.shape[:-1]) + tuple(out.shape[1:]))

            mapped = TensorBlock(apply(block.values, None), block.samples, components, targets)
            for parameter, gradient in block.gradients():
                gradient_components = list(gradient.components)
                if extra_component is not None:
                    gradient_components.append(extra_component)
                mapped.add_gradient(
                    parameter,
                    TensorBlock(
                        apply(gradient.values, parameter),
                        gradient.samples,
                        gradient_components,
                        targets,
                    ),
                )
            blocks.append(mapped)
        return wrap(TensorMap(tensor.keys, blocks))

    def sample_y(self, X, n_samples=1, random_state=None):
        """Predictions of weights drawn from the posterior: a committee.

        As ``sklearn.gaussian_process.GaussianProcessRegressor.sample_y``: each
        of the ``n_samples`` members is a draw of every block's weights from
        their posterior ``N(weights_, sigma_)`` and, with an intercept, of the
        intercept given them (``y_mean - X_offset_ . w`` plus its own variance
        ``1 / (alpha_ * value_weight_sum_)``, as in :meth:`predict`'s std),
        without observation noise; one draw gives a value and its gradients.
        The covariance of the members' predictions is :meth:`predict`'s
        variance less the noise of the row. Draws are made for every fitted
        block and target in order, so that a ``random_state`` gives the same
        committee whichever blocks X holds.

        Parameters
        ----------
        X : as in :meth:`predict`
        n_samples : int >= 1, default=1
        random_state : None, int or numpy.random.RandomState, default=None

        Returns
        -------
        y_samples : same kind as X
            For arrays, of shape (n, n_samples) for a 1-D y, (n, n_targets,
            n_samples) for a 2-D y. For a TensorMap, the layout of
            :meth:`predict`'s with one more component, last, named ``"sample"``
            (values 0 to n_samples - 1), in every block and gradient.
        """
        caller = f"{type(self).__name__}.sample_y"
        check_is_fitted(self)
        _check_n_samples(n_samples, caller)
        draws = self._draws(check_random_state(random_state), int(n_samples))
        component = Labels(["sample"], np.arange(n_samples, dtype=np.int32).reshape(-1, 1))

        def predict_draws(rows, parameter, key, n_features):
            weights, intercepts = draws[key]
            out = backend_of(rows).empty((rows.shape[0], n_samples, weights.shape[0]), rows)
            for j in range(weights.shape[0]):
                out[:, :, j] = rows @ convert_like(weights[j].T, rows)
                if parameter is None:
                    out[:, :, j] += convert_like(intercepts[j], rows)
            return convert_like(out, rows)  # scratch memory is float64

        return self._map_rows(X, caller, predict_draws, extra_component=component)

    def sample_weights(self, n_samples=1, random_state=None):
        """Weight sets drawn from the posterior: the committee of :meth:`sample_y`.

        The draws that :meth:`sample_y` predicts with, for the same
        ``n_samples`` and ``random_state``: member ``i`` predicts
        ``x @ w_i + c_i`` on value rows and ``g @ w_i`` on gradient rows.
        :func:`skmetalstsq.export.to_module` exports them.

        Parameters
        ----------
        n_samples : int >= 1, default=1
        random_state : None, int or numpy.random.RandomState, default=None

        Returns
        -------
        weights, intercepts :
            After a fit on TensorMaps, metatensor TensorMaps (numpy, float64)
            laid out as ``weights_`` and ``intercept_`` with one more component,
            named ``"sample"`` (values 0 to n_samples - 1): values of shape
            (n_targets, n_samples, n_features) and (n_targets, n_samples, 1).
            After a fit on arrays, numpy arrays of shape (n_samples,
            n_features) and (n_samples,) for a 1-D y, (n_targets, n_samples,
            n_features) and (n_targets, n_samples) for a 2-D y.
        """
        caller = f"{type(self).__name__}.sample_weights"
        check_is_fitted(self)
        _check_n_samples(n_samples, caller)
        draws = self._draws(check_random_state(random_state), int(n_samples))
        if hasattr(self, "coef_"):
            weights, intercepts = draws[None]
            if np.ndim(self.coef_) == 1:
                return weights[0], intercepts[0]
            return weights, intercepts
        component = Labels(["sample"], np.arange(n_samples, dtype=np.int32).reshape(-1, 1))
        weights_map, intercept_map = as_core(self.weights_), as_core(self.intercept_)
        weight_blocks, intercept_blocks = [], []
        for key, block, intercept in zip(
            key_tuples(weights_map.keys), weights_map.blocks(), intercept_map.blocks()
        ):
            weights, intercepts = draws[key]
            weight_blocks.append(TensorBlock(weights, block.samples, [component], block.properties))
            intercept_blocks.append(
                TensorBlock(
                    intercepts[:, :, None], intercept.samples, [component], intercept.properties
                )
            )
        return (
            TensorMap(weights_map.keys, weight_blocks),
            TensorMap(intercept_map.keys, intercept_blocks),
        )

    def to_module(self, n_ensemble=0, random_state=None):
        """A TorchScript-compatible module: the mean, std and a committee of :meth:`predict`.

        See :func:`skmetalstsq.export.to_module`.

        Parameters
        ----------
        n_ensemble : int >= 0, default=0
            Members drawn from the posterior at export, as by
            :meth:`sample_y` with ``random_state``.
        random_state : None, int or numpy.random.RandomState, default=None

        Returns
        -------
        torch.nn.Module
            Its ``forward`` gives the mean; its ``std`` and ``ensemble`` methods
            :meth:`predict`'s std and :meth:`sample_y`'s committee.
        """
        from .export import to_module

        return to_module(self, n_ensemble=n_ensemble, random_state=random_state)

    def _draws(self, rng, n_samples):
        """Key -> (weights (T, S, p), intercepts (T, S)) drawn from the posterior, numpy."""
        if hasattr(self, "coef_"):
            coef = np.atleast_2d(self.coef_)
            means = {None: (coef, np.atleast_1d(self.intercept_) * np.ones(coef.shape[0]))}
        else:
            weights_map, intercept_map = as_core(self.weights_), as_core(self.intercept_)
            means = {
                key: (to_numpy(block.values), to_numpy(intercept_map.block(i).values)[:, 0])
                for i, (key, block) in enumerate(
                    zip(key_tuples(weights_map.keys), weights_map.blocks())
                )
            }
        draws = {}
        for key, (weights, intercept) in means.items():
            n_targets, n_features = weights.shape
            sigma, alpha, x_mean, value_weight = self._posterior_of(key, n_features)
            drawn = np.empty((n_targets, n_samples, n_features))
            for j in range(n_targets):
                eigenvalues, vectors = np.linalg.eigh(np.asarray(sigma[j], dtype=np.float64))
                root = vectors * np.sqrt(np.maximum(eigenvalues, 0.0))
                drawn[j] = weights[j] + rng.standard_normal((n_samples, n_features)) @ root.T
            # the intercept: the weighted mean of the residual of the value rows,
            # of variance 1 / (alpha_ * value_weight_sum_) given the weights
            offsets = (drawn - weights[:, None, :]) @ np.asarray(x_mean, dtype=np.float64)
            intercepts = intercept[:, None] - offsets
            if self.fit_intercept:
                with np.errstate(divide="ignore"):
                    scale = np.float64(1.0) / np.sqrt(np.asarray(alpha, np.float64) * value_weight)
                intercepts += rng.standard_normal((n_targets, n_samples)) * scale[:, None]
            draws[key] = (drawn, intercepts)
        return draws


def _check_n_samples(n_samples, caller):
    """Refuse an ``n_samples`` that is not an int >= 1."""
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, Integral):
        raise TypeError(f"{caller}: n_samples must be an int >= 1, got {n_samples!r}")
    if n_samples < 1:
        raise ValueError(f"{caller}: n_samples must be an int >= 1, got {n_samples!r}")
