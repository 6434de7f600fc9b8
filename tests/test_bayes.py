"""TensorMapBayesianRidge against scikit-learn's BayesianRidge, closed forms and coverage."""

import numpy as np
import pytest
from builders import make_pair, stacked, weight_map
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import BayesianRidge

from skmetalstsq import TensorMapBayesianRidge, TensorMapLstsq

try:
    import torch

    CUDA = torch.cuda.is_available()
except ImportError:  # torch is optional
    CUDA = False

#: scikit-learn's iteration, run to its fixed point
TIGHT = dict(tol=1e-10, max_iter=10_000)


def sklearn_fixed_point(A, b, fit_intercept, **params):
    """scikit-learn's BayesianRidge at a tight tol (checked to have converged)."""
    reference = BayesianRidge(fit_intercept=fit_intercept, **TIGHT, **params).fit(A, b)
    assert reference.n_iter_ < TIGHT["max_iter"]
    return reference


def tall_data(seed=0, n=60, p=5, noise=0.3, conditioning=1.0, n_targets=None):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, p)) * np.logspace(0, -np.log10(conditioning), p) + 0.5
    shape = (p,) if n_targets is None else (p, n_targets)
    y = A @ rng.normal(size=shape) + 2.0 + noise * rng.normal(size=(n,) + shape[1:])
    return A, y


def weighted_rows(A, b, weights, fit_intercept, n_values=None):
    """Rows centred on the weighted means of the value rows (with an intercept) and
    multiplied by sqrt(w): scikit-learn's data equal to a weighted fit.

    The first ``n_values`` rows (all by default) are value rows; the others are
    gradient rows, which are not centred. Returns (A, b, x_mean, y_mean).
    """
    A, b = np.array(A, dtype=np.float64), np.array(b, dtype=np.float64)
    n_values = len(A) if n_values is None else n_values
    x_mean, y_mean = np.zeros(A.shape[1]), 0.0
    if fit_intercept:
        x_mean = np.average(A[:n_values], axis=0, weights=weights[:n_values])
        y_mean = np.average(b[:n_values], weights=weights[:n_values])
        A[:n_values] -= x_mean
        b[:n_values] -= y_mean
    scale = np.sqrt(weights)
    return A * scale[:, None], b * scale, x_mean, y_mean


def assert_same_posterior(model, reference, rtol=1e-7):
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=rtol)
    np.testing.assert_allclose(model.lambda_, reference.lambda_, rtol=rtol)
    np.testing.assert_allclose(model.sigma_, reference.sigma_, rtol=rtol, atol=1e-14)


# ---------------------------------------------------------------------------------
# plain arrays: scikit-learn's BayesianRidge
# ---------------------------------------------------------------------------------


DATA = {
    "tall": dict(),
    "ill-conditioned": dict(conditioning=1e4),
    "wide": dict(n=12, p=30),
}


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("data", list(DATA.values()), ids=list(DATA))
def test_arrays_equal_sklearn(fit_intercept, data):
    # the default tol reaches scikit-learn's fixed point, reached there at tol=1e-10;
    # on wide data, sigma_ holds the prior's 1 / lambda_ in the null directions, as
    # scikit-learn's does
    A, y = tall_data(**data)
    model = TensorMapBayesianRidge(fit_intercept=fit_intercept).fit(A, y)
    reference = sklearn_fixed_point(A, y, fit_intercept)
    assert_same_posterior(model, reference)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.X_offset_, reference.X_offset_, rtol=1e-12, atol=1e-15)
    # scikit-learn's types and shapes
    assert model.coef_.shape == reference.coef_.shape
    assert model.sigma_.shape == reference.sigma_.shape
    for name in ("alpha_", "lambda_"):
        assert isinstance(getattr(model, name), np.float64)
    assert isinstance(model.n_iter_, int)
    np.testing.assert_allclose(model.predict(A), reference.predict(A), rtol=1e-9)


def test_fixed_point_where_sklearn_iterates_for_long():
    # a weak signal: MacKay's updates creep to their fixed point (scikit-learn's
    # default tol stops them 1e-3 away); the root search reaches it in tens of
    # evaluations, at the default tol
    rng = np.random.default_rng(2)
    A = rng.normal(size=(40, 30))
    rng.normal(size=70)  # skipped
    y = A @ (0.1 * rng.normal(size=30)) + rng.normal(size=40)
    model = TensorMapBayesianRidge(fit_intercept=False).fit(A, y)
    reference = BayesianRidge(tol=1e-14, max_iter=100_000, fit_intercept=False).fit(A, y)
    assert 1000 < reference.n_iter_ < 100_000
    assert model.n_iter_ < 30
    assert_same_posterior(model, reference, rtol=1e-10)
    stopped = BayesianRidge(fit_intercept=False).fit(A, y)
    assert abs(stopped.lambda_ / reference.lambda_ - 1) > 1e-3


def test_scores_end_at_sklearn_evidence():
    A, y = tall_data(seed=1)
    model = TensorMapBayesianRidge(compute_score=True).fit(A, y)
    reference = sklearn_fixed_point(A, y, True, compute_score=True)
    assert isinstance(model.scores_, np.ndarray)
    np.testing.assert_allclose(model.scores_[-1], reference.scores_[-1], rtol=1e-10)
    np.testing.assert_allclose(model.scores_[0], reference.scores_[0], rtol=1e-10)
    assert len(model.scores_) == model.n_iter_ + 1  # initial values, then each evaluation


def test_hyperpriors_and_initial_values_as_sklearn():
    A, y = tall_data(seed=2)
    params = dict(alpha_1=2.0, alpha_2=0.5, lambda_1=3.0, lambda_2=0.1, alpha_init=1.0)
    model = TensorMapBayesianRidge(**params, lambda_init=1e-3).fit(A, y)
    reference = sklearn_fixed_point(A, y, True, **params, lambda_init=1e-3)
    assert_same_posterior(model, reference)


def test_two_targets_each_their_own_sklearn_fit():
    A, Y = tall_data(seed=3, n_targets=2)
    Y[:, 1] *= 10.0
    model = TensorMapBayesianRidge().fit(A, Y)
    assert model.coef_.shape == (2, 5)
    assert model.sigma_.shape == (2, 5, 5)
    assert model.alpha_.shape == model.lambda_.shape == model.n_iter_.shape == (2,)
    for j in range(2):
        reference = sklearn_fixed_point(A, Y[:, j], True)
        np.testing.assert_allclose(model.coef_[j], reference.coef_, rtol=1e-7)
        np.testing.assert_allclose(model.alpha_[j], reference.alpha_, rtol=1e-7)
        np.testing.assert_allclose(model.lambda_[j], reference.lambda_, rtol=1e-7)
        np.testing.assert_allclose(model.sigma_[j], reference.sigma_, rtol=1e-7)
        np.testing.assert_allclose(model.intercept_[j], reference.intercept_, rtol=1e-9)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_weighted_arrays_equal_sklearn_on_scaled_rows(fit_intercept):
    A, y = tall_data(seed=4)
    weights = np.random.default_rng(4).uniform(0.2, 5.0, len(y))
    model = TensorMapBayesianRidge(fit_intercept=fit_intercept).fit(A, y, sample_weight=weights)
    A_w, y_w, x_mean, y_mean = weighted_rows(A, y, weights, fit_intercept)
    reference = sklearn_fixed_point(A_w, y_w, False)
    assert_same_posterior(model, reference)
    np.testing.assert_allclose(
        model.intercept_, y_mean - x_mean @ reference.coef_, rtol=1e-9, atol=1e-12
    )


def test_weights_are_relative_precisions():
    # every weight times k: the same weights and posterior, alpha_ divided by k
    # (exactly so without the alpha_2 rate, which does not scale)
    A, y = tall_data(seed=5)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, len(y))
    model = TensorMapBayesianRidge(alpha_2=0.0).fit(A, y, sample_weight=weights)
    scaled = TensorMapBayesianRidge(alpha_2=0.0).fit(A, y, sample_weight=100.0 * weights)
    np.testing.assert_allclose(scaled.coef_, model.coef_, rtol=1e-10)
    np.testing.assert_allclose(scaled.intercept_, model.intercept_, rtol=1e-10)
    np.testing.assert_allclose(scaled.sigma_, model.sigma_, rtol=1e-9)
    np.testing.assert_allclose(scaled.lambda_, model.lambda_, rtol=1e-9)
    np.testing.assert_allclose(scaled.alpha_, model.alpha_ / 100.0, rtol=1e-9)
    # and the evidence counts rows: not scikit-learn's repetition counts
    repeated = BayesianRidge(**TIGHT).fit(A, y, sample_weight=100.0 * weights)
    assert not np.isclose(repeated.alpha_, scaled.alpha_, rtol=1e-2)


# ---------------------------------------------------------------------------------
# closed forms: square, wide and rank-deficient blocks
# ---------------------------------------------------------------------------------


def assert_evidence_fixed_point(model, A, b, fit_intercept=False):
    """The posterior and MacKay's equations, from the stacked rows with numpy."""
    alpha, lambda_ = float(model.alpha_), float(model.lambda_)
    n, p = A.shape
    if fit_intercept:
        A, b = A - A.mean(0), b - b.mean()
    sigma = np.linalg.inv(alpha * A.T @ A + lambda_ * np.eye(p))
    mean = alpha * sigma @ A.T @ b
    scale = np.abs(sigma).max()
    np.testing.assert_allclose(model.sigma_, sigma, rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(model.coef_, mean, rtol=1e-7, atol=1e-9 * np.abs(mean).max())
    gamma = p - lambda_ * np.trace(sigma)
    sse = np.sum((b - A @ mean) ** 2)
    np.testing.assert_allclose(lambda_, (gamma + 2e-6) / (mean @ mean + 2e-6), rtol=1e-7)
    np.testing.assert_allclose(alpha, (n - gamma + 2e-6) / (sse + 2e-6), rtol=1e-7)


@pytest.mark.parametrize("shape", [(12, 12), (8, 20), (30, 6)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_square_wide_and_rank_deficient_blocks_closed_form(shape, fit_intercept):
    rng = np.random.default_rng(6)
    n, p = shape
    A = rng.normal(size=(n, p))
    if n > p:
        A[:, -1] = A[:, 0] - A[:, 1]  # rank-deficient
    b = A @ rng.normal(size=p) + 0.1 * rng.normal(size=n)
    model = TensorMapBayesianRidge(fit_intercept=fit_intercept).fit(A, b)
    assert_evidence_fixed_point(model, A, b, fit_intercept)
    if n > p or n - fit_intercept < p:
        # a null direction keeps the prior's variance 1 / lambda_
        null = np.linalg.svd(A - A.mean(0) if fit_intercept else A)[2][-1]
        np.testing.assert_allclose(null @ model.sigma_ @ null, 1.0 / model.lambda_, rtol=1e-6)


def test_posterior_mean_is_ridge_at_lambda_over_alpha():
    X, y = make_pair(np.random.default_rng(7), n_targets=1, noise=0.2)
    weights = weight_map(y, lambda shape: np.random.default_rng(8).uniform(0.5, 2.0, shape))
    model = TensorMapBayesianRidge(gradient_weights={"positions": 0.3})
    model.fit(X, y, sample_weight=weights)
    for key in model.alpha_:
        ratio = float(model.lambda_[key][0] / model.alpha_[key][0])
        ridge = TensorMapLstsq(
            alpha=ratio, fit_intercept=True, gradient_weights={"positions": 0.3}
        ).fit(X, y, sample_weight=weights)
        labels = Labels(["center_type"], np.array([key]))
        np.testing.assert_allclose(
            model.weights_.block(labels[0]).values,
            ridge.weights_.block(labels[0]).values,
            rtol=1e-9,
        )
        np.testing.assert_allclose(
            model.intercept_.block(labels[0]).values,
            ridge.intercept_.block(labels[0]).values,
            rtol=1e-9,
        )


# ---------------------------------------------------------------------------------
# TensorMaps: each block and target is scikit-learn's fit of its weighted rows
# ---------------------------------------------------------------------------------


def block_reference(x_block, y_block, weight_block, target, fit_intercept, gradient_weight):
    """scikit-learn's fixed point on one block's stacked, weighted rows."""
    parameters = sorted(x_block.gradients_list())
    A = stacked(x_block, parameters)
    b = stacked(y_block, parameters)[:, target]
    weights = stacked(weight_block, parameters)[:, 0]
    n_values = np.prod(x_block.values.shape[:-1])
    weights[n_values:] *= gradient_weight
    A_w, b_w, x_mean, y_mean = weighted_rows(A, b, weights, fit_intercept, n_values)
    reference = sklearn_fixed_point(A_w, b_w, False)
    return reference, y_mean - x_mean @ reference.coef_, x_mean


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_blocks_equal_sklearn_on_their_weighted_rows(fit_intercept):
    X, y = make_pair(np.random.default_rng(9), n_components=2, n_targets=2, noise=0.3)
    weights = weight_map(y, lambda shape: np.random.default_rng(10).uniform(0.5, 3.0, shape))
    model = TensorMapBayesianRidge(
        fit_intercept=fit_intercept, gradient_weights={"positions": 0.1}
    ).fit(X, y, sample_weight=weights)
    for key, x_block in X.items():
        k = tuple(int(v) for v in key.values)
        for target in range(2):
            reference, intercept, x_mean = block_reference(
                x_block, y.block(key), weights.block(key), target, fit_intercept, 0.1
            )
            weights_block = model.weights_.block(key).values[target]
            np.testing.assert_allclose(weights_block, reference.coef_, rtol=1e-7)
            np.testing.assert_allclose(model.alpha_[k][target], reference.alpha_, rtol=1e-7)
            np.testing.assert_allclose(model.lambda_[k][target], reference.lambda_, rtol=1e-7)
            np.testing.assert_allclose(model.sigma_[k][target], reference.sigma_, rtol=1e-7)
            np.testing.assert_allclose(
                model.intercept_.block(key).values[target, 0], intercept, rtol=1e-8, atol=1e-12
            )
            np.testing.assert_allclose(model.X_offset_[k], x_mean, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------
# predictive std and posterior draws
# ---------------------------------------------------------------------------------


def test_std_without_intercept_is_sklearn():
    A, y = tall_data(seed=11)
    model = TensorMapBayesianRidge(fit_intercept=False).fit(A, y)
    reference = sklearn_fixed_point(A, y, False)
    new = np.random.default_rng(12).normal(size=(7, 5))
    mean, std = model.predict(new, return_std=True)
    ref_mean, ref_std = reference.predict(new, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-8)
    np.testing.assert_allclose(std, ref_std, rtol=1e-8)


def test_std_with_intercept_is_the_posterior_predictive():
    # rows centred on the training weighted means, plus the intercept's variance
    A, y = tall_data(seed=13)
    weights = np.random.default_rng(13).uniform(0.5, 2.0, len(y))
    model = TensorMapBayesianRidge().fit(A, y, sample_weight=weights)
    new = np.random.default_rng(14).normal(size=(6, 5)) * 3
    x_mean = np.average(A, axis=0, weights=weights)
    centred = new - x_mean
    variance = np.einsum("ij,jk,ik->i", centred, model.sigma_, centred)
    variance += 1.0 / model.alpha_ + 1.0 / (model.alpha_ * weights.sum())
    _, std = model.predict(new, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(variance), rtol=1e-10)


def test_std_of_values_and_gradients():
    X, y = make_pair(np.random.default_rng(15), n_components=2, n_targets=2)
    model = TensorMapBayesianRidge(gradient_weights={"positions": 0.25}).fit(X, y)
    new, _ = make_pair(np.random.default_rng(16), n_components=2, n_targets=2, n_systems=3)
    mean, std = model.predict(new, return_std=True)
    for key, block in new.items():
        k = tuple(int(v) for v in key.values)
        sigma, alpha = model.sigma_[k], model.alpha_[k]
        value_weight = model.value_weight_sum_[k]
        assert np.isclose(value_weight, np.prod(X.block(key).values.shape[:-1]))  # unit weights
        values = block.values - model.X_offset_[k]
        gradient = block.gradient("positions").values
        for j in range(2):
            expected = np.einsum("...i,ij,...j->...", values, sigma[j], values)
            expected += 1.0 / alpha[j] + 1.0 / (alpha[j] * value_weight)
            np.testing.assert_allclose(std.block(key).values[..., j], np.sqrt(expected), rtol=1e-10)
            expected = np.einsum("...i,ij,...j->...", gradient, sigma[j], gradient)
            expected += 1.0 / (alpha[j] * 0.25)
            np.testing.assert_allclose(
                std.block(key).gradient("positions").values[..., j], np.sqrt(expected), rtol=1e-10
            )
        assert std.block(key).samples == mean.block(key).samples
        assert std.block(key).components == mean.block(key).components
        assert std.block(key).properties == mean.block(key).properties
        gradient_std = std.block(key).gradient("positions")
        assert gradient_std.samples == mean.block(key).gradient("positions").samples
        assert gradient_std.components == mean.block(key).gradient("positions").components


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_coverage_on_data_of_known_noise(fit_intercept):
    # the 68% and 95% intervals of new observations hold 68% and 95% of them
    rng = np.random.default_rng(17)
    w = rng.normal(size=8)
    A = rng.normal(size=(400, 8))
    intercept = 1.5 if fit_intercept else 0.0
    y = A @ w + intercept + 0.5 * rng.normal(size=400)
    model = TensorMapBayesianRidge(fit_intercept=fit_intercept).fit(A, y)
    new = rng.normal(size=(20000, 8)) * 2
    observed = new @ w + intercept + 0.5 * rng.normal(size=20000)
    mean, std = model.predict(new, return_std=True)
    z = np.abs(observed - mean) / std
    assert abs(np.mean(z < 1.0) - 0.6827) < 0.015
    assert abs(np.mean(z < 1.96) - 0.95) < 0.01


def test_sample_y_draws_from_the_posterior():
    A, y = tall_data(seed=18)
    model = TensorMapBayesianRidge().fit(A, y)
    new = np.random.default_rng(19).normal(size=(3, 5)) * 2
    draws = model.sample_y(new, n_samples=20000, random_state=0)
    assert draws.shape == (3, 20000)
    np.testing.assert_array_equal(draws, model.sample_y(new, 20000, random_state=0))
    assert not np.array_equal(draws, model.sample_y(new, 20000, random_state=1))
    # mean and covariance of the predictions of weights and intercept drawn from
    # the posterior (no observation noise)
    centred = new - model.X_offset_
    covariance = centred @ model.sigma_ @ centred.T + 1.0 / (model.alpha_ * len(y))
    np.testing.assert_allclose(
        draws.mean(1), model.predict(new), atol=4 * np.sqrt(covariance.max() / 20000)
    )
    np.testing.assert_allclose(np.cov(draws), covariance, rtol=0.05)


def test_sample_y_of_two_targets_and_of_tensor_maps():
    A, Y = tall_data(seed=20, n_targets=2)
    model = TensorMapBayesianRidge().fit(A, Y)
    assert model.sample_y(A[:4], n_samples=3).shape == (4, 2, 3)
    X, y = make_pair(np.random.default_rng(21), n_components=2, n_targets=2)
    model = TensorMapBayesianRidge(fit_intercept=False).fit(X, y)
    samples = model.sample_y(X, n_samples=4, random_state=3)
    for key, block in X.items():
        drawn = samples.block(key)
        assert drawn.components[-1] == Labels.range("sample", 4).rename("sample", "sample")
        assert drawn.values.shape == (*block.values.shape[:-1], 4, 2)
        gradient = drawn.gradient("positions")
        assert gradient.components[-1].names == ["sample"]
        assert gradient.values.shape == (*block.gradient("positions").values.shape[:-1], 4, 2)
    # a value and its gradients share one draw: rows equal to some value rows,
    # given as gradient rows, are predicted the same by every member
    x_block = X.block(0)
    probe = TensorBlock(x_block.values, x_block.samples, x_block.components, x_block.properties)
    probe.add_gradient(
        "positions",
        TensorBlock(
            x_block.values[:, None],
            Labels(
                ["sample", "system", "atom"],
                np.c_[np.arange(len(x_block.samples)), x_block.samples.values],
            ),
            [Labels.range("xyz", 1), *x_block.components],
            x_block.properties,
        ),
    )
    probe_map = TensorMap(Labels(["center_type"], np.array([[0]])), [probe])
    drawn = model.sample_y(probe_map, n_samples=4, random_state=3).block(0)
    np.testing.assert_allclose(drawn.gradient("positions").values[:, 0], drawn.values, rtol=1e-12)
    # the same committee whichever blocks X holds
    np.testing.assert_array_equal(drawn.values, samples.block(0).values)


# ---------------------------------------------------------------------------------
# partial fits, threads, dtypes, errors
# ---------------------------------------------------------------------------------


def split_systems(tensor, systems):
    """The rows of ``tensor`` of the given systems (values and gradients)."""
    import metatensor

    selection = Labels(["system"], np.array(systems).reshape(-1, 1))
    return metatensor.slice(tensor, "samples", selection)


def assert_same_fit(model, reference, rtol=1e-9):
    for key, block in reference.weights_.items():
        np.testing.assert_allclose(model.weights_.block(key).values, block.values, rtol=rtol)
        np.testing.assert_allclose(
            model.intercept_.block(key).values, reference.intercept_.block(key).values, rtol=rtol
        )
    for name in ("alpha_", "lambda_", "sigma_", "X_offset_"):
        for key, value in getattr(reference, name).items():
            np.testing.assert_allclose(getattr(model, name)[key], value, rtol=rtol, atol=1e-14)


def test_partial_fit_equals_fit():
    X, y = make_pair(np.random.default_rng(22), n_systems=9, n_components=2)
    weights = weight_map(y, lambda shape: np.random.default_rng(23).uniform(0.5, 2.0, shape))
    params = dict(gradient_weights={"positions": 0.5})
    reference = TensorMapBayesianRidge(**params).fit(X, y, sample_weight=weights)
    model = TensorMapBayesianRidge(**params)
    for systems in ([0, 1, 2], [3, 4, 5, 6], [7, 8]):
        model.partial_fit(
            split_systems(X, systems),
            split_systems(y, systems),
            sample_weight=split_systems(weights, systems),
        )
    assert_same_fit(model, reference)
    # a partial fit after fit adds to fit's rows
    again = TensorMapBayesianRidge(**params)
    again.fit(
        split_systems(X, [0, 1, 2, 3]),
        split_systems(y, [0, 1, 2, 3]),
        sample_weight=split_systems(weights, [0, 1, 2, 3]),
    )
    again.partial_fit(
        split_systems(X, [4, 5, 6, 7, 8]),
        split_systems(y, [4, 5, 6, 7, 8]),
        sample_weight=split_systems(weights, [4, 5, 6, 7, 8]),
    )
    assert_same_fit(again, reference)


def test_partial_fit_on_arrays_equals_fit():
    A, y = tall_data(seed=24, n=90)
    reference = TensorMapBayesianRidge().fit(A, y)
    model = TensorMapBayesianRidge()
    for rows in np.array_split(np.arange(90), 3):
        model.partial_fit(A[rows], y[rows])
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=1e-10)
    np.testing.assert_allclose(model.sigma_, reference.sigma_, rtol=1e-10)
    with pytest.raises(ValueError, match="X has 4 features, but TensorMapBayesianRidge"):
        model.partial_fit(A[:5, :4], y[:5])


def test_bit_identical_for_every_n_jobs():
    X, y = make_pair(np.random.default_rng(25), keys=tuple((k,) for k in range(6)), n_components=2)
    fits = [TensorMapBayesianRidge(n_jobs=n_jobs).fit(X, y) for n_jobs in (1, 2, 3)]
    for other in fits[1:]:
        for key, block in fits[0].weights_.items():
            np.testing.assert_array_equal(other.weights_.block(key).values, block.values)
        for name in ("alpha_", "lambda_", "sigma_"):
            for key, value in getattr(fits[0], name).items():
                np.testing.assert_array_equal(getattr(other, name)[key], value)


def test_float32_factorised_in_float64_returned_in_float32():
    A, y = tall_data(seed=26)
    model = TensorMapBayesianRidge().fit(A.astype(np.float32), y.astype(np.float32))
    reference = TensorMapBayesianRidge().fit(
        A.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    )
    assert model.coef_.dtype == np.float32 and model.sigma_.dtype == np.float32
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-6)
    mean, std = model.predict(A[:3].astype(np.float32), return_std=True)
    assert mean.dtype == std.dtype == np.float32


def test_no_finite_evidence_maximum_names_the_block():
    X, y = make_pair(np.random.default_rng(27))
    zeros = TensorMap(
        y.keys,
        [TensorBlock(0 * b.values, b.samples, b.components, b.properties) for b in y.blocks()],
    )
    X_values = TensorMap(
        X.keys,
        [TensorBlock(b.values, b.samples, b.components, b.properties) for b in X.blocks()],
    )
    with pytest.raises(ValueError, match=r"block \(center_type=0\), target 0: the evidence"):
        TensorMapBayesianRidge(alpha_2=0.0, fit_intercept=False).fit(X_values, zeros)


def test_convergence_warning_names_the_block():
    A, y = tall_data(seed=28)
    with pytest.warns(ConvergenceWarning, match="max_iter=2 evaluations for block"):
        TensorMapBayesianRidge(max_iter=2).fit(A, y)


def test_sample_y_and_predict_errors():
    A, y = tall_data(seed=29)
    model = TensorMapBayesianRidge().fit(A, y)
    with pytest.raises(ValueError, match="n_samples must be an int >= 1, got 0"):
        model.sample_y(A, n_samples=0)
    with pytest.raises(TypeError, match="n_samples must be an int >= 1, got 2.5"):
        model.sample_y(A, n_samples=2.5)
    X, Y = make_pair(np.random.default_rng(30))
    with pytest.raises(TypeError, match="fitted on arrays, cannot predict a TensorMap"):
        model.predict(X, return_std=True)
    tensor_model = TensorMapBayesianRidge().fit(X, Y)
    with pytest.raises(TypeError, match="fitted on TensorMaps, X must be a TensorMap"):
        tensor_model.sample_y(A)


def test_clone_and_params_as_sklearn():
    model = TensorMapBayesianRidge(max_iter=10, alpha_init=2.0)
    assert clone(model).get_params() == model.get_params()
    assert set(BayesianRidge().get_params()) - {"copy_X"} <= set(model.get_params())


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="CUDA is not available")),
    ],
)
def test_torch_data_and_devices_give_the_numpy_fit(device):
    torch = pytest.importorskip("torch")
    from builders import to_torch

    X, y = make_pair(np.random.default_rng(31), n_components=2)
    reference = TensorMapBayesianRidge().fit(X, y)
    X_torch, y_torch = to_torch(X, device=device), to_torch(y, device=device)
    model = TensorMapBayesianRidge(device=device).fit(X_torch, y_torch)
    mean, std = model.predict(X_torch, return_std=True)
    drawn = model.sample_y(X_torch, n_samples=3, random_state=0)
    expected_mean, expected_std = reference.predict(X, return_std=True)
    expected_draws = reference.sample_y(X, n_samples=3, random_state=0)
    for key in expected_std.keys:
        for ours, theirs in ((std, expected_std), (mean, expected_mean), (drawn, expected_draws)):
            values = ours.block(key).values
            assert isinstance(values, torch.Tensor) and values.device.type == device
            np.testing.assert_allclose(
                values.cpu().numpy(), theirs.block(key).values, rtol=1e-9, atol=1e-12
            )
            gradient = ours.block(key).gradient("positions").values.cpu().numpy()
            np.testing.assert_allclose(
                gradient, theirs.block(key).gradient("positions").values, rtol=1e-9, atol=1e-12
            )
    for name in ("alpha_", "lambda_", "sigma_"):
        for key, value in getattr(reference, name).items():
            np.testing.assert_allclose(getattr(model, name)[key], value, rtol=1e-9)


def test_indexed_tensor_maps_give_their_kind():
    from skmetalstsq import IndexedTensorMap

    X, y = make_pair(np.random.default_rng(32))
    model = TensorMapBayesianRidge().fit(
        IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    )
    mean, std = model.predict(IndexedTensorMap(X, "system"), return_std=True)
    assert isinstance(mean, IndexedTensorMap) and isinstance(std, IndexedTensorMap)
    reference = TensorMapBayesianRidge().fit(X, y)
    _, expected = reference.predict(X, return_std=True)
    for key, block in expected.items():
        np.testing.assert_allclose(std.tensor.block(key).values, block.values, rtol=1e-12)
    drawn = model.sample_y(IndexedTensorMap(X, "system"), n_samples=2, random_state=0)
    assert isinstance(drawn, IndexedTensorMap)


def test_fit_shards_equals_fit():
    import functools

    import shard_loaders

    from skmetalstsq import IndexedTensorMap
    from skmetalstsq.distributed import fit_shards

    shards = [functools.partial(shard_loaders.load_shard, 0, i, 3, weighted=True) for i in range(3)]
    params = dict(gradient_weights={"positions": 0.5})
    model = TensorMapBayesianRidge(**params)
    assert fit_shards(model, shards) is model
    X, y = shard_loaders.full_pair(0)
    reference = TensorMapBayesianRidge(**params).fit(
        IndexedTensorMap(X), IndexedTensorMap(y), sample_weight=shard_loaders.entry_weights(0)
    )
    assert_same_fit(model, reference)
    # shards of arrays
    shards = [functools.partial(shard_loaders.load_arrays, 1, i, 3) for i in range(3)]
    A, b = (np.concatenate(parts) for parts in zip(*(shard() for shard in shards)))
    model = fit_shards(TensorMapBayesianRidge(), shards)
    reference = TensorMapBayesianRidge().fit(A, b)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=1e-10)
    np.testing.assert_allclose(model.sigma_, reference.sigma_, rtol=1e-10)
    assert model.n_features_in_ == 5


def test_verbose_prints_one_line_per_block(capsys):
    X, y = make_pair(np.random.default_rng(33))
    TensorMapBayesianRidge(verbose=1).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[TensorMapBayesianRidge] block (center_type=0): alpha_=")


def test_bit_identical_for_every_blas_thread_setting():
    from threadpoolctl import threadpool_limits

    X, y = make_pair(np.random.default_rng(34), keys=((0,), (1,), (2,)), n_features=30)
    model = TensorMapBayesianRidge().fit(X, y)
    with threadpool_limits(1):
        single = TensorMapBayesianRidge().fit(X, y)
    for key, value in model.sigma_.items():
        np.testing.assert_array_equal(single.sigma_[key], value)
        np.testing.assert_array_equal(single.alpha_[key], model.alpha_[key])


def test_rows_of_weight_zero_are_left_out():
    # a gradient of weight zero, or samples of weight zero, is the fit without them
    X, y = make_pair(np.random.default_rng(35), n_components=2)
    values_only = TensorMapBayesianRidge(gradient_weights={"positions": 0.0}).fit(X, y)
    without = TensorMapBayesianRidge().fit(*(drop_gradients(t) for t in (X, y)))
    assert_same_fit(values_only, without, rtol=1e-10)
    A, b = tall_data(seed=36)
    weights = np.ones(len(b))
    weights[::3] = 0.0
    model = TensorMapBayesianRidge().fit(A, b, sample_weight=weights)
    kept = weights > 0
    reference = TensorMapBayesianRidge().fit(A[kept], b[kept])
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=1e-10)
    np.testing.assert_allclose(model.sigma_, reference.sigma_, rtol=1e-10)
    # through partial fits too
    model = TensorMapBayesianRidge()
    model.partial_fit(A[:30], b[:30], sample_weight=weights[:30])
    model.partial_fit(A[30:], b[30:], sample_weight=weights[30:])
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=1e-10)


def drop_gradients(tensor):
    blocks = [
        TensorBlock(block.values, block.samples, block.components, block.properties)
        for block in tensor.blocks()
    ]
    return TensorMap(tensor.keys, blocks)


def test_gram_factor_is_the_qr_factor_or_none():
    # the factor of well-conditioned tall blocks from their Gram matrix: the QR's
    # up to the signs of its rows; None where it would not be accurate
    from skmetalstsq._blocks import BlockSystem
    from skmetalstsq._factors import factorize, gram_factor

    rng = np.random.default_rng(37)
    A = rng.normal(size=(300, 6)) + 2.0
    B = A @ rng.normal(size=(6, 2)) + 0.1 * rng.normal(size=(300, 2))
    weights = rng.uniform(0.5, 2.0, 300)
    for intercept in (True, False):
        system = BlockSystem("(k=0)", [A], [B], np.float64, [weights], intercept)
        gram, qr = gram_factor(system, 1e4), factorize(system)
        np.testing.assert_allclose(np.abs(gram.r), np.abs(qr.r), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(gram.residual_squares(), qr.residual_squares(), rtol=1e-9)
        assert (gram.n_rows, gram.weighted_rows, gram.intercept) == (300, 300, intercept)

    def system(a, b):
        return BlockSystem("(k=0)", [a], [b], np.float64, None, True)

    deficient = A.copy()
    deficient[:, -1] = deficient[:, 0]
    assert gram_factor(system(deficient, B), 1e4) is None
    exact = np.c_[A @ np.ones(6), B[:, 0]]
    assert gram_factor(system(A, exact), 1e4) is None
    collinear = np.c_[B[:, 0], 2 * B[:, 0]]
    assert gram_factor(system(A, collinear), 1e4) is None
    close = A.copy()
    close[:, -1] = close[:, 0] + 1e-6 * rng.normal(size=300)
    assert gram_factor(system(close, B), 1e4) is None
    # and the fit of such blocks (QR) is scikit-learn's too
    model = TensorMapBayesianRidge().fit(close, B[:, 0])
    reference = sklearn_fixed_point(close, B[:, 0], True)
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=1e-7)
    np.testing.assert_allclose(model.lambda_, reference.lambda_, rtol=1e-7)


@pytest.mark.parametrize("max_iter", [1, 2])
def test_a_few_iterations_equal_scikit_learn_s_and_the_budget_holds(max_iter):
    A, y = tall_data(seed=3)
    with pytest.warns(ConvergenceWarning):
        model = TensorMapBayesianRidge(max_iter=max_iter).fit(A, y)
    reference = BayesianRidge(max_iter=max_iter).fit(A, y)
    assert model.n_iter_ == reference.n_iter_ == max_iter
    np.testing.assert_allclose(model.lambda_, reference.lambda_, rtol=1e-10)
    np.testing.assert_allclose(model.alpha_, reference.alpha_, rtol=1e-10)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10)
    for budget in (3, 4, 5, 7):
        with pytest.warns(ConvergenceWarning):
            assert TensorMapBayesianRidge(max_iter=budget).fit(A, y).n_iter_ <= budget


def test_array_errors_name_the_bayesian_model():
    with pytest.raises(ValueError, match="TensorMapBayesianRidge does not accept missing values"):
        TensorMapBayesianRidge().fit(np.array([[np.nan, 1.0], [1.0, 2.0]]), [1.0, 2.0])
    with pytest.raises(ValueError, match="required by TensorMapBayesianRidge"):
        TensorMapBayesianRidge().fit(np.zeros((0, 2)), np.zeros(0))


def test_std_of_float32_arrays_has_the_mean_s_dtype():
    A, y = tall_data(seed=4)
    model = TensorMapBayesianRidge().fit(A.astype(np.float32), y)
    mean, std = model.predict(A.astype(np.float32), return_std=True)
    assert std.dtype == mean.dtype == model.coef_.dtype


def test_a_block_whose_rows_all_weigh_zero_is_refused_naming_it():
    X, y = make_pair(np.random.default_rng(5), keys=((0,), (6,)), n_systems=6)
    weights = weight_map(y, np.ones)
    zero = weights.block({"center_type": 6})
    zero.values[:] = 0.0
    zero.gradient("positions").values[:] = 0.0
    with pytest.raises(ValueError, match=r"block \(center_type=6\): every row weighs zero"):
        TensorMapBayesianRidge().fit(X, y, sample_weight=weights)
