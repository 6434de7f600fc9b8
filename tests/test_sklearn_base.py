"""scikit-learn's own tests of LinearRegression, ported onto TensorMapLstsq.

Ported from ``sklearn/linear_model/tests/test_base.py`` (scikit-learn 1.9), with
their data, assertions and tolerances, on plain arrays, on a TensorMap of one block
built from them and on an IndexedTensorMap of it (``sklearn_kinds.py``).
``LinearRegression()`` is ``TensorMapLstsq(rcond=1e-6, fit_intercept=True)``: its
``tol=1e-6`` is scipy.linalg.lstsq's cut-off (docs/user_guide/weights.rst), and
``fit_intercept=False`` drops the intercept. Expected values come from
scikit-learn, scipy.linalg.lstsq or the closed form of weighted least squares.

Ported: test_linear_regression, test_linear_regression_vs_lstsq,
test_linear_regression_sample_weights,
test_raises_value_error_if_sample_weights_greater_than_1d, test_fit_intercept,
test_linear_regression_multiple_outcome, test_inplace_data_preprocessing (inputs
are never changed, for TensorMapLstsqCV too; copy_X does not exist) and
test_linear_regression_sample_weight_consistency.

Not ported: sparse input (refused: dense data is required), positive=True (not
offered), the private preprocessing helpers (_preprocess_data, _rescale_data,
make_dataset), the array API tests (torch input has its own tests) and the
classifier's predict_proba.
"""

import numpy as np
import pytest
import sklearn_kinds as kinds
from scipy import linalg
from sklearn.datasets import make_regression
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import add_dummy_feature
from sklearn.utils._testing import assert_allclose, assert_array_almost_equal
from sklearn_kinds import KINDS, SPLIT_KINDS

from skmetalstsq import TensorMapLstsq, TensorMapLstsqCV

#: scikit-learn's global_random_seed, 42 by default
SEED = 42


def linear_regression(fit_intercept=True, tol=1e-6):
    """``LinearRegression(fit_intercept, tol)``."""
    return TensorMapLstsq(rcond=tol, fit_intercept=fit_intercept)


@pytest.mark.parametrize("kind", KINDS)
def test_linear_regression(kind):
    X = np.array([[1.0], [2.0]])
    Y = np.array([1.0, 2.0])
    reg = kinds.fit(linear_regression(), kind, X, Y)
    assert_array_almost_equal(kinds.coef(reg), [1])
    assert_array_almost_equal(kinds.intercept(reg), [0])
    assert_array_almost_equal(kinds.predict(reg, kind, X), [1, 2])

    # degenerate input
    X = np.array([[1.0]])
    Y = np.array([0.0])
    reg = kinds.fit(linear_regression(), kind, X, Y)
    assert_array_almost_equal(kinds.coef(reg), [0])
    assert_array_almost_equal(kinds.intercept(reg), [0])
    assert_array_almost_equal(kinds.predict(reg, kind, X), [0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_regression_vs_lstsq(kind, dtype):
    # as good as scipy.linalg.lstsq, scikit-learn issue #33032
    rng = np.random.RandomState(1137)
    n_samples = 500_000
    x1 = rng.rand(n_samples)
    x2 = 0.3 * x1 + 0.1 * rng.rand(n_samples)
    X = np.column_stack([x1, x2])
    y = X @ [0.5, 2.0] + 0.1 * rng.rand(n_samples)
    X = X.astype(dtype)
    y = y.astype(dtype)

    coef_scipy = linalg.lstsq(X, y)[0]
    coef = kinds.coef(kinds.fit(linear_regression(fit_intercept=False), kind, X, y))

    rmse_scipy = np.linalg.norm(y - X @ coef_scipy)
    rmse = np.linalg.norm(y - X @ coef)
    assert rmse == pytest.approx(rmse_scipy, rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_regression_sample_weights(kind, fit_intercept):
    rng = np.random.RandomState(SEED)
    n_samples, n_features = 6, 5
    X = rng.normal(size=(n_samples, n_features))
    y = rng.normal(size=n_samples)
    sample_weight = 1.0 + rng.uniform(size=n_samples)

    reg = kinds.fit(
        linear_regression(fit_intercept=fit_intercept, tol=1e-16), kind, X, y, sample_weight
    )
    coefs1, inter1 = kinds.coef(reg), kinds.intercept(reg)
    assert coefs1.shape == (X.shape[1],)

    # closed form of weighted least squares: (X^T W X)^-1 X^T W y
    W = np.diag(sample_weight)
    X_aug = X if not fit_intercept else add_dummy_feature(X)
    coefs2 = linalg.solve(X_aug.T @ W @ X_aug, X_aug.T @ W @ y)
    if not fit_intercept:
        assert_allclose(coefs1, coefs2)
    else:
        assert_allclose(coefs1, coefs2[1:])
        assert_allclose(inter1, coefs2[0])


@pytest.mark.parametrize("kind", ["array", "indexed"])
@pytest.mark.parametrize("n_samples, n_features", [(2, 3), (3, 2)])
def test_raises_value_error_if_sample_weights_greater_than_1d(kind, n_samples, n_features):
    rng = np.random.RandomState(0)
    X = rng.randn(n_samples, n_features)
    y = rng.randn(n_samples)
    kinds.fit(linear_regression(), kind, X, y, rng.randn(n_samples) ** 2 + 1)
    with pytest.raises(ValueError, match="TensorMapLstsq.fit: sample_weight must be 1-D"):
        kinds.fit(linear_regression(), kind, X, y, np.ones((n_samples, 1)))


@pytest.mark.parametrize("kind", ["array", "indexed"])
@pytest.mark.parametrize("n_samples, n_features", [(2, 3), (3, 2)])
def test_scalar_sample_weights(kind, n_samples, n_features):
    rng = np.random.RandomState(0)
    X = rng.randn(n_samples, n_features)
    y = rng.randn(n_samples)
    for sample_weight in (1.0, 2.0):
        reg = kinds.fit(linear_regression(), kind, X, y, sample_weight)
        expected = LinearRegression().fit(X, y, sample_weight=sample_weight)
        assert_allclose(kinds.coef(reg), expected.coef_)


def test_fit_intercept():
    # shapes of coef_
    X2 = np.array([[0.38349978, 0.61650022], [0.58853682, 0.41146318]])
    X3 = np.array([[0.27677969, 0.70693172, 0.01628859], [0.08385139, 0.20692515, 0.70922346]])
    y = np.array([1, 1])

    lr2_without_intercept = linear_regression(fit_intercept=False).fit(X2, y)
    lr2_with_intercept = linear_regression().fit(X2, y)
    lr3_without_intercept = linear_regression(fit_intercept=False).fit(X3, y)
    lr3_with_intercept = linear_regression().fit(X3, y)

    assert lr2_with_intercept.coef_.shape == lr2_without_intercept.coef_.shape
    assert lr3_with_intercept.coef_.shape == lr3_without_intercept.coef_.shape
    assert lr2_without_intercept.coef_.ndim == lr3_without_intercept.coef_.ndim


@pytest.mark.parametrize("kind", KINDS)
def test_linear_regression_multiple_outcome(kind):
    rng = np.random.RandomState(0)
    X, y = make_regression(random_state=rng)
    Y = np.vstack((y, y)).T
    n_features = X.shape[1]

    reg = kinds.fit(linear_regression(), kind, X, Y)
    assert kinds.coef(reg, 2).shape == (2, n_features)
    Y_pred = kinds.predict(reg, kind, X, 2)
    kinds.fit(reg, kind, X, y)
    y_pred = kinds.predict(reg, kind, X)
    assert_array_almost_equal(np.vstack((y_pred, y_pred)).T, Y_pred, decimal=3)


@pytest.mark.parametrize(
    "kind, estimator",
    [(kind, linear_regression()) for kind in KINDS]
    + [
        (kind, TensorMapLstsqCV(alphas=[0.0, 1.0], cv=2, fit_intercept=True))
        for kind in SPLIT_KINDS
    ],
)
@pytest.mark.parametrize("use_sw", [True, False])
def test_inplace_data_preprocessing(kind, estimator, use_sw):
    # X, y and sample_weight are never changed (there is no copy_X=False)
    rng = np.random.RandomState(SEED)
    original_X_data = rng.randn(10, 12)
    original_y_data = rng.randn(10, 2)
    original_sw_data = rng.rand(10)

    X, y, sample_weight = kinds.as_kind(
        kind,
        original_X_data.copy(),
        original_y_data.copy(),
        original_sw_data.copy() if use_sw else None,
    )
    estimator.fit(X, y, sample_weight=sample_weight)
    assert_allclose(kinds.values(X), original_X_data)
    assert_allclose(kinds.values(y), original_y_data)
    if use_sw:
        assert_allclose(np.ravel(kinds.values(sample_weight)), original_sw_data)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("X_shape", [(10, 5), (10, 20), (100, 100)])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_linear_regression_sample_weight_consistency(kind, X_shape, fit_intercept):
    rng = np.random.RandomState(SEED)
    n_samples, n_features = X_shape
    X = rng.rand(n_samples, n_features)
    y = rng.rand(n_samples)

    reg = kinds.fit(linear_regression(fit_intercept=fit_intercept), kind, X, y)
    coef, intercept = kinds.coef(reg).copy(), kinds.intercept(reg)

    # 1) sample_weight=np.ones(..) is sample_weight=None; 2), a number, is the
    # next test
    kinds.fit(reg, kind, X, y, np.ones_like(y))
    assert_allclose(kinds.coef(reg), coef, rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg), intercept)

    # 3) scaling sample_weight changes nothing, cf. np.average()
    sample_weight = rng.uniform(low=0.01, high=2, size=X.shape[0])
    kinds.fit(reg, kind, X, y, sample_weight)
    coef, intercept = kinds.coef(reg).copy(), kinds.intercept(reg)
    kinds.fit(reg, kind, X, y, np.pi * sample_weight)
    assert_allclose(kinds.coef(reg), coef, rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg), intercept)

    # 4) a weight of 0 is removing the sample
    sample_weight_0 = sample_weight.copy()
    sample_weight_0[-5:] = 0
    y[-5:] *= 1000
    kinds.fit(reg, kind, X, y, sample_weight_0)
    coef_0, intercept_0 = kinds.coef(reg).copy(), kinds.intercept(reg)
    kinds.fit(reg, kind, X[:-5], y[:-5], sample_weight[:-5])
    assert_allclose(kinds.coef(reg), coef_0, rtol=1e-5)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg), intercept_0)

    # 5) a weight of 2 is repeating the sample
    X2 = np.concatenate([X, X[: n_samples // 2]], axis=0)
    y2 = np.concatenate([y, y[: n_samples // 2]])
    sample_weight_1 = sample_weight.copy()
    sample_weight_1[: n_samples // 2] *= 2
    sample_weight_2 = np.concatenate([sample_weight, sample_weight[: n_samples // 2]], axis=0)
    reg1 = kinds.fit(linear_regression(fit_intercept=fit_intercept), kind, X, y, sample_weight_1)
    reg2 = kinds.fit(linear_regression(fit_intercept=fit_intercept), kind, X2, y2, sample_weight_2)
    assert_allclose(kinds.coef(reg1), kinds.coef(reg2), rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg1), kinds.intercept(reg2))


@pytest.mark.parametrize("kind", ["array", "indexed"])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_linear_regression_scalar_sample_weight(kind, fit_intercept):
    # step 2) of test_linear_regression_sample_weight_consistency: a number
    # is sample_weight=None
    rng = np.random.RandomState(SEED)
    X, y = rng.rand(10, 5), rng.rand(10)
    reg = kinds.fit(linear_regression(fit_intercept=fit_intercept), kind, X, y)
    coef, intercept = kinds.coef(reg).copy(), kinds.intercept(reg)
    kinds.fit(reg, kind, X, y, 123.0)
    assert_allclose(kinds.coef(reg), coef, rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg), intercept)
