"""scikit-learn's leave-one-out tests of ``RidgeCV`` (``sklearn/linear_model/tests/
test_ridge.py``, 1.9) ported onto ``TensorMapLstsqCV(cv="loo")``, keeping their assertions.

RidgeCV's efficient leave-one-out (``cv=None``) is compared with ours; its stored
predictions (``store_cv_results``) are read here through a scorer that records the
held-out predictions it is handed. Not ported: ``gcv_mode``, ``alpha_per_target``,
sparse input, and string scorings that are not names of :mod:`skmetalstsq.metrics`
(``"explained_variance"``: scikit-learn's scorer object is accepted and tested).
Where we differ on purpose: ``coef_`` keeps a (1, n_features) shape for a y of shape
(n, 1) (compared reshaped); with ``alpha=1e-16`` on square and wide data every sample
alone determines a direction, so every score is nan with a ``FitFailedWarning`` (the
refit's weights are still compared).
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import make_regression
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.linear_model.tests.test_ridge import (
    _make_sparse_offset_regression,
    _ridge_regularization_limits,
)
from sklearn.metrics import get_scorer, mean_squared_error
from sklearn.model_selection import LeaveOneOut
from sklearn_kinds import tiled_sample_weight_case

from skmetalstsq import TensorMapLstsqCV


def LOO(**kw):
    kw.setdefault("rconds", [1e-15])
    return TensorMapLstsqCV(cv="loo", **kw)


def test_ridge_gcv_integer_arrays():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 5, size=(20, 10))
    y = rng.randint(0, 5, size=(20,))
    a = LOO(alphas=[0.1, 1.0, 10.0], scoring="neg_mean_squared_error").fit(X, y)
    b = LOO(alphas=[0.1, 1.0, 10.0], scoring="neg_mean_squared_error").fit(
        X.astype(float), y.astype(float)
    )
    assert_allclose(a.coef_, b.coef_)
    assert_allclose(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"])
    assert a.coef_.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("X_shape", [(11, 8), (11, 20)], ids=["tall", "wide"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("y_shape, noise", [((11,), 1.0), ((11, 1), 30.0), ((11, 3), 150.0)])
@pytest.mark.parametrize("scoring", [None, "neg_mse"])
def test_ridge_gcv_vs_ridge_loo_cv(dtype, X_shape, y_shape, fit_intercept, noise, scoring):
    n_samples, n_features = X_shape
    n_targets = y_shape[-1] if len(y_shape) == 2 else 1
    X, y = _make_sparse_offset_regression(
        n_samples=n_samples,
        n_features=n_features,
        n_targets=n_targets,
        random_state=0,
        shuffle=False,
        noise=noise,
        n_informative=5,
    )
    y = y.reshape(y_shape)
    alphas = [1e-3, 0.1, 1.0, 10.0, 1e3]
    loo_ridge = RidgeCV(
        cv=n_samples, fit_intercept=fit_intercept, alphas=alphas, scoring="neg_mean_squared_error"
    ).fit(X, y)
    gcv = LOO(fit_intercept=fit_intercept, alphas=alphas, scoring=scoring).fit(
        X.astype(dtype), y.astype(dtype)
    )
    atol = 1e-5 if dtype == np.float32 else 1e-10
    assert gcv.alpha_ == pytest.approx(loo_ridge.alpha_)
    assert_allclose(gcv.coef_.reshape(loo_ridge.coef_.shape), loo_ridge.coef_, atol=atol)
    assert_allclose(
        np.reshape(gcv.intercept_, np.shape(loo_ridge.intercept_)), loo_ridge.intercept_, atol=atol
    )
    if scoring == "neg_mse" and dtype == np.float64:
        assert_allclose(gcv.best_score_, loo_ridge.best_score_, rtol=1e-9)


@pytest.mark.parametrize("alpha", [1e-16, 1e16], ids=["zero_alpha", "inf_alpha"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(
    "X_shape", [(100, 50), (50, 50), (50, 100)], ids=["tall", "square", "wide"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regularization_limits_ridge_gcv(alpha, fit_intercept, X_shape, dtype):
    n_samples, n_features = X_shape
    X, y = make_regression(
        n_samples=n_samples, n_features=n_features, noise=0, bias=10, random_state=42
    )
    expected_coef, expected_intercept = _ridge_regularization_limits(alpha, X, y, fit_intercept)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gcv = TensorMapLstsqCV(
            alphas=[alpha], rconds=[None], cv="loo", fit_intercept=fit_intercept
        ).fit(X.astype(dtype), y.astype(dtype))
    atol = 1e-5 if dtype == np.float32 else 1e-10
    assert_allclose(gcv.coef_, expected_coef, atol=atol)
    assert_allclose(gcv.intercept_, expected_intercept, atol=atol)
    assert all(issubclass(x.category, FitFailedWarning) for x in w)


def test_ridge_loo_cv_asym_scoring():
    scoring = "explained_variance"
    X, y = _make_sparse_offset_regression(
        n_samples=10,
        n_features=5,
        n_targets=1,
        random_state=0,
        shuffle=False,
        noise=1,
        n_informative=5,
    )
    alphas = [1e-3, 0.1, 1.0, 10.0, 1e3]
    loo_ridge = RidgeCV(cv=10, fit_intercept=True, alphas=alphas, scoring=scoring).fit(X, y)
    gcv = LOO(fit_intercept=True, alphas=alphas, scoring=get_scorer(scoring)).fit(X, y)
    assert gcv.alpha_ == pytest.approx(loo_ridge.alpha_)
    assert_allclose(gcv.coef_, loo_ridge.coef_, rtol=1e-3)
    assert_allclose(gcv.intercept_, loo_ridge.intercept_, rtol=1e-3)


@pytest.mark.parametrize("n_features", [8, 20])
@pytest.mark.parametrize(
    "y_shape, fit_intercept, noise",
    [((11,), True, 1.0), ((11, 1), True, 20.0), ((11, 3), True, 150.0), ((11, 3), False, 30.0)],
)
def test_ridge_gcv_sample_weights(fit_intercept, n_features, y_shape, noise):
    alphas = [1e-3, 0.1, 1.0, 10.0, 1e3]
    case = tiled_sample_weight_case(fit_intercept, n_features, y_shape, noise, alphas)
    X, y, sample_weight, kfold = case.X, case.y, case.sample_weight, case.kfold
    kfold_errors = case.kfold_errors
    gcv = LOO(alphas=alphas, fit_intercept=fit_intercept, scoring="neg_mse").fit(
        X, y, sample_weight=sample_weight
    )
    seen = {}

    def grab(est, X_, y_):
        seen["p"] = est.predict(X_)
        return 0.0

    LOO(alphas=[kfold.alpha_], fit_intercept=fit_intercept, scoring=grab).fit(
        X, y, sample_weight=sample_weight
    )
    gcv_errors = sample_weight.reshape(-1, *([1] * (y.ndim - 1))) * (y - seen["p"]) ** 2
    assert kfold.alpha_ == pytest.approx(gcv.alpha_)
    assert_allclose(gcv_errors, kfold_errors, rtol=1e-3)
    assert_allclose(gcv.coef_.reshape(np.shape(kfold.coef_)), kfold.coef_, rtol=1e-3)
    assert_allclose(gcv.intercept_, kfold.intercept_, rtol=1e-3)


def test_ridge_best_score():
    X, y = make_regression(n_samples=6, random_state=42)
    r = LOO(alphas=[0.1, 1.0, 10.0]).fit(X, y)
    assert isinstance(r.best_score_, float)


def test_ridgecv_alphas_zero():
    rng = np.random.RandomState(0)
    X, y = rng.randn(5, 5), rng.randn(5)
    with pytest.warns(FitFailedWarning, match="leaves a direction of the features"):
        r = LOO(alphas=(0.0, 1.0, 10.0)).fit(X, y)
    assert np.isnan(r.cv_results_["mean_test_score"][0])  # 5 x 5: alpha 0 interpolates
    assert r.alpha_ in (1.0, 10.0)


def test_ridgecv_int_alphas():
    X = np.array([[-1.0, -1.0], [-1.0, 0], [-0.8, -1.0], [1.0, 1.0], [1.0, 0.0]])
    y = [1, 1, 1, -1, -1]
    LOO(alphas=(1, 10, 100)).fit(X, y)


def test_ridgecv_alphas_scalar():
    rng = np.random.RandomState(0)
    X, y = rng.randn(5, 5), rng.randn(5)
    LOO(alphas=1).fit(X, y)


@pytest.mark.parametrize("X_shape", [(50, 10), (10, 50)], ids=["tall", "wide"])
@pytest.mark.parametrize("with_sample_weight", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_ridge_cv_results_predictions(X_shape, with_sample_weight, fit_intercept, n_targets):
    X, y = make_regression(
        n_samples=X_shape[0], n_features=X_shape[1], n_targets=n_targets, random_state=0
    )
    sample_weight = None
    if with_sample_weight:
        sample_weight = np.ones(X.shape[0])
        sample_weight[::2] = 0.5
    alphas = np.logspace(-5, 7, 5)
    seen = {}

    def grab(est, X_, y_):
        seen["p"] = est.predict(X_)
        return 0.0

    for alpha in alphas:
        LOO(alphas=[alpha], fit_intercept=fit_intercept, scoring=grab).fit(
            X, y, sample_weight=sample_weight
        )
        pred = np.empty_like(y)
        for tr, te in LeaveOneOut().split(X):
            r = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd")
            r.fit(X[tr], y[tr], sample_weight=None if sample_weight is None else sample_weight[tr])
            pred[te] = r.predict(X[te])
        assert_allclose(seen["p"], pred, rtol=1e-6)


@pytest.mark.parametrize("X_shape", [(50, 10), (10, 50)], ids=["tall", "wide"])
def test_ridge_cv_multioutput_sample_weight(X_shape):
    X, y = make_regression(n_samples=X_shape[0], n_features=X_shape[1], n_targets=2, random_state=0)
    sw = np.ones(X_shape[0])
    rcv = LOO(alphas=[0.1, 1.0, 10.0], scoring="neg_mean_squared_error").fit(X, y, sample_weight=sw)
    ridge = Ridge(alpha=rcv.alpha_, fit_intercept=False)
    y_pred_loo = np.squeeze(
        [
            ridge.fit(X[tr], y[tr], sample_weight=sw[tr]).predict(X[te])
            for tr, te in LeaveOneOut().split(X)
        ]
    )
    assert_allclose(rcv.best_score_, -mean_squared_error(y, y_pred_loo))


@pytest.mark.parametrize("X_shape", [(50, 10), (10, 50)], ids=["tall", "wide"])
def test_ridge_cv_custom_multioutput_scorer(X_shape):
    X, y = make_regression(n_samples=X_shape[0], n_features=X_shape[1], n_targets=2, random_state=0)

    def custom_error(y_true, y_pred):
        return -np.average(np.mean((y_true - y_pred) ** 2, axis=0), weights=[2, 1])

    def scorer(est, X, y):
        return -custom_error(y, est.predict(X))

    rcv = LOO(alphas=[0.1, 1.0, 10.0], scoring=scorer).fit(X, y)
    ridge = Ridge(alpha=rcv.alpha_, fit_intercept=False)
    y_pred_loo = np.squeeze(
        [ridge.fit(X[tr], y[tr]).predict(X[te]) for tr, te in LeaveOneOut().split(X)]
    )
    assert_allclose(rcv.best_score_, -custom_error(y, y_pred_loo))
