"""Exact leave-one-structure-out, checked against refits without each entry."""

import numpy as np
import pytest
from builders import example_pair, make_pair, make_rank_deficient, torch_map
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import LeaveOneOut

from skmetalstsq import TensorMapLstsq, TensorMapLstsqCV
from skmetalstsq._torch_maps import is_torch_map
from skmetalstsq.model_selection import cross_val_predict


def assert_maps_close(actual, expected, rtol=1e-9, atol=1e-10):
    assert actual.keys == expected.keys
    for key, block in expected.items():
        other = actual.block(key)
        assert other.samples == block.samples
        np.testing.assert_allclose(other.values, block.values, rtol=rtol, atol=atol)
        assert sorted(other.gradients_list()) == sorted(block.gradients_list())
        for parameter, gradient in block.gradients():
            np.testing.assert_allclose(
                other.gradient(parameter).values, gradient.values, rtol=rtol, atol=atol
            )


def refit_predictions(estimator, X, y):
    """Held-out predictions by refitting without each entry (scikit-learn's LeaveOneOut)."""
    return cross_val_predict(estimator, X, y, cv=LeaveOneOut())


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"alpha": 0.3},
        {"alpha": {(0,): 0.1, (1,): 2.0, (3,): 0.0}},
        {"gradient_weights": {"positions": 0.05, "cell": 3.0}, "alpha": 1e-3},
    ],
)
def test_cross_val_predict_equals_refits(fit_intercept, options):
    X, y = example_pair(seed=3, n_systems=7)
    estimator = TensorMapLstsq(fit_intercept=fit_intercept, **options)
    expected = refit_predictions(estimator, X, y)
    assert_maps_close(cross_val_predict(estimator, X, y, cv="loo"), expected)


def test_rank_deficient_cut_equals_refits():
    """A structural null direction (a repeated feature) is cut in every held-out fit."""
    X, y = make_pair(np.random.default_rng(0), n_systems=8, n_features=4)
    X = make_rank_deficient(X)
    estimator = TensorMapLstsq(rcond=1e-10, fit_intercept=True)
    expected = refit_predictions(estimator, X, y)
    assert_maps_close(cross_val_predict(estimator, X, y, cv="loo"), expected, rtol=1e-7)


def test_values_only_rows_one_by_one_match_ridge_loo():
    """One row per entry: the classic leave-one-out of ridge regression."""
    rng = np.random.default_rng(1)
    A, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    X = TensorMap(
        Labels.single(),
        [TensorBlock(A, Labels.range("system", 30), [], Labels.range("feature", 4))],
    )
    y = TensorMap(
        Labels.single(),
        [TensorBlock(b, Labels.range("system", 30), [], Labels.range("target", 2))],
    )
    alpha = 0.7
    predicted = cross_val_predict(TensorMapLstsq(alpha=alpha), X, y, cv="loo").block(0).values
    hat = A @ np.linalg.solve(A.T @ A + alpha * np.eye(4), A.T)
    residual = b - hat @ b
    closed_form = b - residual / (1 - np.diag(hat))[:, None]
    np.testing.assert_allclose(predicted, closed_form, rtol=1e-12, atol=1e-12)


def test_torch_maps_give_torch_maps():
    torch = pytest.importorskip("torch")
    pytest.importorskip("metatensor.torch")
    X, y = make_pair(np.random.default_rng(2), n_systems=6)
    estimator = TensorMapLstsq(alpha=0.1, fit_intercept=True)
    expected = refit_predictions(estimator, X, y)
    predicted = cross_val_predict(estimator, torch_map(X), torch_map(y), cv="loo")
    assert is_torch_map(predicted)
    block = predicted.block(0)
    assert block.values.dtype == torch.float64
    np.testing.assert_allclose(
        block.values.numpy(), expected.block(0).values, rtol=1e-9, atol=1e-10
    )


def test_singular_entry_is_an_error_naming_block_and_entry():
    """An entry that alone sees a feature: leaving it out leaves that weight undetermined."""
    rng = np.random.default_rng(4)
    A = rng.normal(size=(6, 3))
    A[:, 2] = 0.0
    A[4, 2] = 1.0  # only system 4 sees feature 2
    b = rng.normal(size=(6, 1))
    samples = Labels.range("system", 6)
    X = TensorMap(
        Labels(["center_type"], np.array([[8]])),
        [TensorBlock(A, samples, [], Labels.range("feature", 3))],
    )
    y = TensorMap(X.keys, [TensorBlock(b, samples, [], Labels.range("target", 1))])
    with pytest.raises(ValueError, match=r"block \(center_type=8\).*'system' \[4\]"):
        cross_val_predict(TensorMapLstsq(rcond=1e-12), X, y, cv="loo")
    # a penalty determines it: the refits agree again
    estimator = TensorMapLstsq(alpha=0.5)
    assert_maps_close(
        cross_val_predict(estimator, X, y, cv="loo"), refit_predictions(estimator, X, y)
    )


def test_loo_needs_a_tensormaplstsq_with_one_penalty_per_block():
    X, y = make_pair(np.random.default_rng(5), keys=((0,),), n_systems=4)
    with pytest.raises(TypeError, match="cv=sklearn.model_selection.LeaveOneOut"):
        cross_val_predict(TensorMapLstsqCV(), X, y, cv="loo")
    with pytest.raises(ValueError, match="cv must be 'loo'"):
        cross_val_predict(TensorMapLstsq(), X, y, cv="leave-one-out")
    penalties = TensorMap(
        X.keys,
        [
            TensorBlock(
                np.array([[0.1, 0.2, 0.3, 0.4]]),
                Labels.range("_", 1),
                [],
                X.block(0).properties,
            )
        ],
    )
    with pytest.raises(ValueError, match=r"block \(center_type=0\) has one per feature"):
        cross_val_predict(TensorMapLstsq(alpha=penalties), X, y, cv="loo")


def test_inputs_are_not_mutated():
    X, y = make_pair(np.random.default_rng(6), n_systems=5)
    before = [b.values.copy() for b in X.blocks()] + [b.values.copy() for b in y.blocks()]
    cross_val_predict(TensorMapLstsq(alpha=0.1, fit_intercept=True), X, y, cv="loo")
    after = [b.values for b in X.blocks()] + [b.values for b in y.blocks()]
    for first, second in zip(before, after):
        np.testing.assert_array_equal(first, second)
