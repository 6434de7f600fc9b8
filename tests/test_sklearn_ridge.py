"""scikit-learn's own tests of Ridge and RidgeCV, ported onto TensorMapLstsq(CV).

Ported from ``sklearn/linear_model/tests/test_ridge.py`` (scikit-learn 1.9), with
their data, assertions and tolerances, on plain arrays, on a TensorMap of one block
built from the arrays and on an IndexedTensorMap of it (the kinds of
``sklearn_kinds.py``; TensorMapLstsqCV gets arrays and IndexedTensorMaps, which it
can split). ``Ridge(alpha=a)`` is ``TensorMapLstsq(alpha=a, fit_intercept=True)``,
its solvers are our drivers, and ``RidgeCV(alphas=a, cv=cv)`` is
``TensorMapLstsqCV(alphas=a, rconds=[None], cv=cv, fit_intercept=True)``.
Expected values come from scikit-learn or closed forms, as in the originals.

Ported: test_ridge_regression, its hstacked/vstacked and unpenalized variants,
test_ridge_regression_sample_weights, test_ridge_shapes_type, test_ridge_intercept,
test_ridge_vs_lstsq, test_solver_consistency, test_ridge_gcv_integer_arrays,
test_ridge_gcv_vs_ridge_loo_cv, test_regularization_limits_ridge(_gcv),
test_ridge_gcv_sample_weights, test_ridge_best_score, the dense halves of
_test_ridge_loo, _test_ridge_cv, _test_ridge_diabetes and _test_multi_ridge_diabetes,
test_ridge_regression_custom_scoring, test_ridgecv_alphas_conversion,
test_ridgecv_alphas_zero, test_ridgecv_sample_weight,
test_raises_value_error_if_sample_weights_greater_than_1d, test_ridgecv_int_alphas,
test_ridgecv_alphas_validation, test_ridgecv_alphas_scalar, test_dtype_match,
test_ridge_regression_check_arguments_validity (dense, through the estimator),
test_ridge_regression_dtype_stability, test_ridge_sample_weight_consistency,
test_ridge_cv_results_predictions and test_ridge_cv_multioutput_sample_weight
(through the per-split scores of leave-one-out, which RidgeCV keeps as
``cv_results_`` predictions), test_ridge_cv_custom_multioutput_scorer and the two
metadata routing tests. Where we differ on purpose (the alpha per target of
test_ridge_individual_penalties, a (n, 1) y's coef_ shape, weighted test scores)
the test asserts our documented behaviour (docs/user_guide/weights.rst).

Not ported: solver internals and convergence (_solve_cholesky, _X_CenterStackOp,
_compute_gram/_covariance, sparse_cg/sag/lbfgs iterations, n_iter_, tol,
test_ridge_sag_with_X_fortran), sparse input (refused: dense data is required),
positive=True (not offered), RidgeClassifier(CV) and class weights, the array API
dispatch tests (torch input has its own tests), RidgeCV's efficient leave-one-out
internals (gcv_mode, store_cv_results, the shape of cv_results_ as an array,
alpha_per_target, test_check_gcv_mode_choice), and test_ridge_loo_cv_asym_scoring
(RidgeCV scores explained variance once over all leave-one-out predictions, a
split-wise search scores each one-sample fold, where a variance does not exist).
"""

import numpy as np
import pytest
import sklearn
import sklearn_kinds as kinds
from scipy import linalg
from sklearn import datasets
from sklearn.base import clone
from sklearn.datasets import make_low_rank_matrix, make_regression
from sklearn.linear_model import LinearRegression, Ridge, RidgeCV
from sklearn.metrics import get_scorer, make_scorer, mean_squared_error
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    LeaveOneOut,
)
from sklearn.preprocessing import minmax_scale
from sklearn.utils._testing import (
    assert_allclose,
    assert_almost_equal,
    assert_array_almost_equal,
    assert_array_equal,
)
from sklearn_kinds import KINDS, SPLIT_KINDS

from skmetalstsq import TensorMapLstsq, TensorMapLstsqCV

DRIVERS = [None, "gelsd", "gelss", "gelsy", "gels"]
#: scikit-learn's global_random_seed, 42 by default
SEEDS = [42]
#: RidgeCV's default alphas
RIDGECV_ALPHAS = (0.1, 1.0, 10.0)

diabetes = datasets.load_diabetes()
X_diabetes, y_diabetes = diabetes.data, diabetes.target
ind = np.arange(X_diabetes.shape[0])
np.random.RandomState(0).shuffle(ind)
ind = ind[:200]
X_diabetes, y_diabetes = X_diabetes[ind], y_diabetes[ind]


def ridge(**params):
    """``Ridge(**params)``: an intercept unless told otherwise."""
    return TensorMapLstsq(**{"fit_intercept": True, **params})


def ridge_cv(**params):
    """``RidgeCV(**params)``: an intercept unless told otherwise, and the cut-off at
    rounding level, as Ridge has none."""
    params = {"alphas": RIDGECV_ALPHAS, "rconds": [None], "fit_intercept": True, **params}
    return TensorMapLstsqCV(**params)


def skip_gels_rank_deficient(driver, alpha, X, fit_intercept):
    """``driver="gels"`` refuses rank-deficient blocks without a penalty (documented)."""
    if driver != "gels" or alpha:
        return
    # LAPACK's full rank: rank min(rows, columns), one row fewer once centred
    centred = X - X.mean(axis=0) if fit_intercept else X
    if np.linalg.matrix_rank(centred) < min(X.shape[0] - fit_intercept, X.shape[1]):
        with pytest.raises(np.linalg.LinAlgError, match="needs a full-rank block"):
            ridge(driver=driver, alpha=alpha, fit_intercept=fit_intercept).fit(X, X[:, 0])
        pytest.skip("driver='gels' refuses a rank-deficient block, as documented")


def assert_close_to_ridge_cv(actual, expected, **tolerances):
    """``assert_allclose``, where RidgeCV squeezes the (1, n) of a (n, 1) y to (n,)
    and its intercept_ without fit_intercept is the number 0.0."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if expected.ndim and actual.shape != expected.shape:
        assert actual.shape == (1, *expected.shape)
        actual = actual[0]
    assert_allclose(actual, expected, **tolerances)


@pytest.fixture(params=SEEDS)
def global_random_seed(request):
    return request.param


@pytest.fixture(params=["long", "wide"])
def ols_ridge_dataset(global_random_seed, request):
    """scikit-learn's dataset with OLS and Ridge (alpha=1) solutions, verbatim.

    The last column of X is 1 (the intercept); for "wide", coef_ols is the
    minimum norm solution.
    """
    if request.param == "long":
        n_samples, n_features = 12, 4
    else:
        n_samples, n_features = 4, 12
    k = min(n_samples, n_features)
    rng = np.random.RandomState(global_random_seed)
    X = make_low_rank_matrix(
        n_samples=n_samples, n_features=n_features, effective_rank=k, random_state=rng
    )
    X[:, -1] = 1
    U, s, Vt = linalg.svd(X)
    assert np.all(s > 1e-3)
    U1, U2 = U[:, :k], U[:, k:]
    Vt1, _ = Vt[:k, :], Vt[k:, :]

    if request.param == "long":
        coef_ols = rng.uniform(low=-10, high=10, size=n_features)
        y = X @ coef_ols
        y += U2 @ rng.normal(size=n_samples - n_features) ** 2
    else:
        y = rng.uniform(low=-10, high=10, size=n_samples)
        coef_ols = Vt1.T @ np.diag(1 / s) @ U1.T @ y

    alpha = 1
    d = alpha * np.identity(n_features)
    d[-1, -1] = 0
    coef_ridge = linalg.solve(X.T @ X + d, X.T @ y)

    R_OLS = y - X @ coef_ols
    R_Ridge = y - X @ coef_ridge
    assert np.linalg.norm(R_OLS) < np.linalg.norm(R_Ridge)
    return X, y, coef_ols, coef_ridge


def _make_sparse_offset_regression(
    n_samples=100,
    n_features=100,
    proportion_nonzero=0.5,
    n_informative=10,
    n_targets=1,
    bias=13.0,
    X_offset=30.0,
    noise=30.0,
    shuffle=True,
    random_state=None,
):
    """scikit-learn's helper of test_ridge.py, verbatim (without coef and positive)."""
    X, y, c = make_regression(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_targets=n_targets,
        bias=bias,
        noise=noise,
        shuffle=shuffle,
        coef=True,
        random_state=random_state,
    )
    if n_features == 1:
        c = np.asarray([c])
    X += X_offset
    mask = np.random.RandomState(random_state).binomial(1, proportion_nonzero, X.shape) > 0
    removed_X = X.copy()
    X[~mask] = 0.0
    removed_X[mask] = 0.0
    y -= removed_X.dot(c)
    return X, y


# ---------------------------------------------------------------------------------
# Ridge: TensorMapLstsq(alpha, fit_intercept=True)
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_regression(kind, driver, fit_intercept, ols_ridge_dataset):
    X, y, _, coef = ols_ridge_dataset
    alpha = 1.0

    res_null = y - np.mean(y)
    res_Ridge = y - X @ coef
    R2_Ridge = 1 - np.sum(res_Ridge**2) / np.sum(res_null**2)

    X = X[:, :-1]
    if fit_intercept:
        intercept = coef[-1]
    else:
        X = X - X.mean(axis=0)
        y = y - y.mean()
        intercept = 0
    coef = coef[:-1]

    for sample_weight in (None, np.ones(X.shape[0])):
        model = kinds.fit(ridge(alpha=alpha, driver=driver), kind, X, y, sample_weight)
        assert kinds.intercept(model) == pytest.approx(intercept)
        assert_allclose(kinds.coef(model), coef)
        assert kinds.score(model, kind, X, y) == pytest.approx(R2_Ridge)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("stack", ["hstack", "vstack"])
def test_ridge_regression_stacked_X(kind, driver, fit_intercept, stack, ols_ridge_dataset):
    # [X] with alpha is [X, X] / 2 with alpha / 2, and [X; X], [y; y] with 2 alpha
    X, y, _, coef = ols_ridge_dataset
    n_samples, n_features = X.shape
    alpha = 1.0
    X = X[:, :-1]
    if stack == "hstack":
        model = ridge(alpha=alpha / 2, fit_intercept=fit_intercept, driver=driver)
        X = 0.5 * np.concatenate((X, X), axis=1)
        assert np.linalg.matrix_rank(X) <= min(n_samples, n_features - 1)
        expected = np.r_[coef[:-1], coef[:-1]]
    else:
        model = ridge(alpha=2 * alpha, fit_intercept=fit_intercept, driver=driver)
        X = np.concatenate((X, X), axis=0)
        assert np.linalg.matrix_rank(X) <= min(n_samples, n_features)
        y = np.r_[y, y]
        expected = coef[:-1]
    if fit_intercept:
        intercept = coef[-1]
    else:
        X = X - X.mean(axis=0)
        y = y - y.mean()
        intercept = 0
    kinds.fit(model, kind, X, y)

    assert kinds.intercept(model) == pytest.approx(intercept)
    assert_allclose(kinds.coef(model), expected, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("stack", [None, "hstack", "vstack"])
def test_ridge_regression_unpenalized(kind, driver, fit_intercept, stack, ols_ridge_dataset):
    # alpha=0 is OLS, the minimum norm solution where X is rank-deficient
    X, y, coef, _ = ols_ridge_dataset
    n_samples, n_features = X.shape
    if fit_intercept:
        X = X[:, :-1]
        intercept = coef[-1]
        coef = coef[:-1]
    else:
        intercept = 0
    if stack == "hstack":
        X = 0.5 * np.concatenate((X, X), axis=1)
        coef = np.r_[coef, coef]
    elif stack == "vstack":
        X = np.concatenate((X, X), axis=0)
        y = np.r_[y, y]
    assert np.linalg.matrix_rank(X) <= min(n_samples, n_features)
    skip_gels_rank_deficient(driver, 0.0, X, fit_intercept)
    model = kinds.fit(ridge(alpha=0.0, fit_intercept=fit_intercept, driver=driver), kind, X, y)

    if n_samples > n_features or not fit_intercept:
        assert kinds.intercept(model) == pytest.approx(intercept)
        assert_allclose(kinds.coef(model), coef)
    else:
        # scikit-learn xfails here: with an intercept, the weights of a wide
        # problem are the minimum norm solution of the centred problem (as
        # LinearRegression's), not the minimum norm of (intercept, weights)
        assert_allclose(kinds.predict(model, kind, X), y)
        assert_allclose(X @ coef + intercept, y)
        assert np.linalg.norm(np.r_[kinds.intercept(model), kinds.coef(model)]) > np.linalg.norm(
            np.r_[intercept, coef]
        )
        reference = LinearRegression().fit(X, y)
        assert_allclose(kinds.coef(model), reference.coef_)
        assert kinds.intercept(model) == pytest.approx(reference.intercept_)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 1e-2])
def test_ridge_regression_sample_weights(kind, driver, fit_intercept, alpha, ols_ridge_dataset):
    # ||y - Xw||^2 is (z - Aw)' W (z - Aw) for z = [y, y], A = [X; X] and
    # W[:n] + W[n:] = 1
    X, y, _, coef = ols_ridge_dataset
    n_samples, n_features = X.shape
    sw = np.random.RandomState(0).uniform(low=0, high=1, size=n_samples)

    X = X[:, :-1]
    X = np.concatenate((X, X), axis=0)
    y = np.r_[y, y]
    sw = np.r_[sw, 1 - sw] * alpha
    if fit_intercept:
        intercept = coef[-1]
    else:
        X = X - X.mean(axis=0)
        y = y - y.mean()
        intercept = 0
    model = ridge(alpha=alpha, fit_intercept=fit_intercept, driver=driver)
    kinds.fit(model, kind, X, y, sw)
    coef = coef[:-1]

    assert kinds.intercept(model) == pytest.approx(intercept)
    assert_allclose(kinds.coef(model), coef)


def test_ridge_shapes_type():
    rng = np.random.RandomState(0)
    n_samples, n_features = 5, 10
    X = rng.randn(n_samples, n_features)
    y = rng.randn(n_samples)
    Y1 = y[:, np.newaxis]
    Y = np.c_[y, 1 + y]

    model = ridge()

    model.fit(X, y)
    assert model.coef_.shape == (n_features,)
    assert isinstance(model.coef_, np.ndarray)
    assert isinstance(model.intercept_, float)

    # Ridge squeezes the coef_ of a (n, 1) y to (n_features,); we keep
    # LinearRegression's (1, n_features), as documented
    model.fit(X, Y1)
    assert model.coef_.shape == LinearRegression().fit(X, Y1).coef_.shape == (1, n_features)
    assert model.intercept_.shape == (1,)
    assert isinstance(model.coef_, np.ndarray)
    assert isinstance(model.intercept_, np.ndarray)

    model.fit(X, Y)
    assert model.coef_.shape == (2, n_features)
    assert model.intercept_.shape == (2,)
    assert isinstance(model.coef_, np.ndarray)
    assert isinstance(model.intercept_, np.ndarray)


@pytest.mark.parametrize("estimator", [ridge(), ridge_cv(cv=KFold(5))])
def test_ridge_intercept_type_after_1d_fit(estimator):
    # test_ridge_shapes_type and _test_ridge_cv: numpy.float64, with a shape
    model = clone(estimator).fit(X_diabetes, y_diabetes)
    assert len(model.coef_.shape) == 1
    assert model.intercept_.shape == ()
    assert type(model.intercept_) is np.float64


@pytest.mark.parametrize("kind", ["tensor", "indexed"])
def test_ridge_shapes_on_tensor_maps(kind):
    # the TensorMap counterpart of test_ridge_shapes_type: weights_ and intercept_
    # have one sample per target whatever y's shape
    rng = np.random.RandomState(0)
    X, y = rng.randn(5, 10), rng.randn(5)
    for Y, n_targets in ((y, 1), (y[:, None], 1), (np.c_[y, 1 + y], 2)):
        model = kinds.fit(ridge(), kind, X, Y)
        assert model.weights_.block(0).values.shape == (n_targets, 10)
        assert model.intercept_.block(0).values.shape == (n_targets, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_ridge_intercept(kind):
    # intercepts of several targets, GH issue #708
    rng = np.random.RandomState(0)
    n_samples, n_features = 5, 10
    X = rng.randn(n_samples, n_features)
    y = rng.randn(n_samples)
    Y = np.c_[y, 1.0 + y]

    intercept = kinds.intercept(kinds.fit(ridge(alpha=1.0), kind, X, y))
    model = kinds.fit(ridge(alpha=1.0), kind, X, Y)
    assert_almost_equal(kinds.intercept(model, 2)[0], intercept)
    assert_almost_equal(kinds.intercept(model, 2)[1], intercept + 1.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_ridge_vs_lstsq(kind, driver):
    # alpha=0 is OLS
    rng = np.random.RandomState(0)
    n_samples, n_features = 5, 4
    y = rng.randn(n_samples)
    X = rng.randn(n_samples, n_features)

    model = kinds.fit(ridge(alpha=0.0, fit_intercept=False, driver=driver), kind, X, y)
    ols = LinearRegression(fit_intercept=False).fit(X, y)
    assert_almost_equal(kinds.coef(model), ols.coef_)


def test_ridge_individual_penalties():
    # Ridge takes one alpha per target; alpha here is one float, one per block
    # or one per feature (documented), and an array is refused with what is accepted
    rng = np.random.RandomState(42)
    X, y = rng.randn(20, 10), rng.randn(20, 5)
    message = "TensorMapLstsq.fit: alpha must be a float, a dict of floats by key or a TensorMap"
    with pytest.raises(TypeError, match=message):
        ridge(alpha=np.arange(5)).fit(X, y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", DRIVERS + ["ridgecv"])
@pytest.mark.parametrize(
    "n_samples,dtype,proportion_nonzero",
    [(20, "float32", 0.1), (40, "float32", 1.0), (20, "float64", 0.2)],
)
def test_solver_consistency(kind, solver, proportion_nonzero, n_samples, dtype, global_random_seed):
    if solver == "ridgecv" and kind == "tensor":
        pytest.skip("TensorMapLstsqCV splits arrays and IndexedTensorMaps")
    alpha = 1.0
    noise = 50.0 if proportion_nonzero > 0.9 else 500.0
    X, y = _make_sparse_offset_regression(
        bias=10,
        n_features=30,
        proportion_nonzero=proportion_nonzero,
        noise=noise,
        random_state=global_random_seed,
        n_samples=n_samples,
    )
    X = minmax_scale(X)

    svd_ridge = Ridge(solver="svd", alpha=alpha).fit(X, y)
    X = X.astype(dtype, copy=False)
    y = y.astype(dtype, copy=False)
    if solver == "ridgecv":
        model = ridge_cv(alphas=[alpha], fit_intercept=True)
    else:
        model = ridge(alpha=alpha, driver=solver)
    kinds.fit(model, kind, X, y)
    assert_allclose(kinds.coef(model), svd_ridge.coef_, atol=1e-3, rtol=1e-3)
    assert_allclose(kinds.intercept(model), svd_ridge.intercept_, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("alpha", [1e-16, 1e16], ids=["zero_alpha", "inf_alpha"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("X_shape", [(100, 50), (50, 100)], ids=["tall", "wide"])
def test_regularization_limits_ridge(kind, driver, alpha, fit_intercept, X_shape):
    n_samples, n_features = X_shape
    X, y = make_regression(
        n_samples=n_samples, n_features=n_features, noise=0, bias=10, random_state=42
    )
    expected_coef, expected_intercept = _ridge_regularization_limits(alpha, X, y, fit_intercept)
    model = ridge(alpha=alpha, fit_intercept=fit_intercept, driver=driver)
    kinds.fit(model, kind, X, y)
    atol = 1e-10
    if driver in ("gelsd", "gelss") and alpha < 1:
        # documented: these drivers solve [X; sqrt(alpha) I] (equisolve's way),
        # whose condition number s_1 / sqrt(alpha) bounds their accuracy, where
        # scikit-learn's solvers (and ours by default) filter X's own singular values
        s_1 = np.linalg.norm(X - X.mean(axis=0) if fit_intercept else X, 2)
        atol = np.finfo(float).eps * s_1 / np.sqrt(alpha) * np.linalg.norm(expected_coef)
    assert_allclose(kinds.coef(model), expected_coef, atol=atol)
    assert_allclose(kinds.intercept(model), expected_intercept, atol=atol)


def _ridge_regularization_limits(alpha, X, y, fit_intercept):
    """Expected coef and intercept when alpha is near 0 or inf (scikit-learn's)."""
    if np.isclose(alpha, 0):
        lin_reg = LinearRegression(fit_intercept=fit_intercept).fit(X, y)
        return lin_reg.coef_, lin_reg.intercept_
    return np.zeros(X.shape[1]), np.mean(y) if fit_intercept else 0.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_dtype_match(kind, driver):
    rng = np.random.RandomState(0)
    alpha = 1.0
    n_samples, n_features = 6, 5
    X_64 = rng.randn(n_samples, n_features)
    y_64 = rng.randn(n_samples)
    X_32 = X_64.astype(np.float32)
    y_32 = y_64.astype(np.float32)

    ridge_32 = kinds.fit(ridge(alpha=alpha, driver=driver), kind, X_32, y_32)
    ridge_64 = kinds.fit(ridge(alpha=alpha, driver=driver), kind, X_64, y_64)
    coef_32, coef_64 = kinds.coef(ridge_32), kinds.coef(ridge_64)

    assert coef_32.dtype == X_32.dtype
    assert coef_64.dtype == X_64.dtype
    assert kinds.predict(ridge_32, kind, X_32).dtype == X_32.dtype
    assert kinds.predict(ridge_64, kind, X_64).dtype == X_64.dtype
    assert_allclose(coef_32, coef_64, rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_ridge_regression_dtype_stability(kind, driver):
    random_state = np.random.RandomState(0)
    n_samples, n_features = 6, 5
    X = random_state.randn(n_samples, n_features)
    coef = random_state.randn(n_features)
    y = np.dot(X, coef) + 0.01 * random_state.randn(n_samples)
    results = {}
    for dtype in (np.float32, np.float64):
        model = ridge(alpha=1.0, fit_intercept=False, driver=driver)
        results[dtype] = kinds.coef(kinds.fit(model, kind, X.astype(dtype), y.astype(dtype)))
    assert results[np.float32].dtype == np.float32
    assert results[np.float64].dtype == np.float64
    assert_allclose(results[np.float32], results[np.float64], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("data", ["tall", "wide"])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_ridge_sample_weight_consistency(kind, driver, data, fit_intercept):
    rng = np.random.RandomState(42)
    n_samples = 12
    n_features = n_samples // 2 if data == "tall" else n_samples * 2
    X = rng.rand(n_samples, n_features)
    y = rng.rand(n_samples)
    params = dict(fit_intercept=fit_intercept, alpha=1.0, driver=driver)

    # 1) sample_weight=np.ones(..) is sample_weight=None
    reg = kinds.fit(ridge(**params), kind, X, y)
    coef, intercept = kinds.coef(reg).copy(), kinds.intercept(reg)
    kinds.fit(reg, kind, X, y, np.ones_like(y))
    assert_allclose(kinds.coef(reg), coef, rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg), intercept)

    # 2) a weight of 0 is removing the sample
    sample_weight = rng.uniform(low=0.01, high=2, size=X.shape[0])
    sample_weight[-5:] = 0
    y[-5:] *= 1000
    kinds.fit(reg, kind, X, y, sample_weight)
    coef, intercept = kinds.coef(reg).copy(), kinds.intercept(reg)
    kinds.fit(reg, kind, X[:-5, :], y[:-5], sample_weight[:-5])
    assert_allclose(kinds.coef(reg), coef, rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg), intercept)

    # 3) scaling sample_weight and alpha together changes nothing
    reg2 = ridge(**params).set_params(alpha=np.pi * params["alpha"])
    kinds.fit(reg2, kind, X, y, np.pi * sample_weight)
    assert_allclose(kinds.coef(reg2), coef, rtol=1e-6)
    if fit_intercept:
        assert_allclose(kinds.intercept(reg2), intercept)

    # 4) a weight of 2 is repeating the sample
    X2 = np.concatenate([X, X[: n_samples // 2]], axis=0)
    y2 = np.concatenate([y, y[: n_samples // 2]])
    sample_weight_1 = sample_weight.copy()
    sample_weight_1[: n_samples // 2] *= 2
    sample_weight_2 = np.concatenate([sample_weight, sample_weight[: n_samples // 2]], axis=0)
    reg1 = kinds.fit(ridge(**params), kind, X, y, sample_weight_1)
    reg2 = kinds.fit(ridge(**params), kind, X2, y2, sample_weight_2)
    assert_allclose(kinds.coef(reg1), kinds.coef(reg2))
    if fit_intercept:
        assert_allclose(kinds.intercept(reg1), kinds.intercept(reg2))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("return_intercept", [False, True])
@pytest.mark.parametrize("sample_weight", [None, np.ones(1000)])
def test_ridge_regression_check_arguments_validity(kind, driver, return_intercept, sample_weight):
    # ridge_regression(return_intercept=...) is fit_intercept; the true weights back
    rng = np.random.RandomState(42)
    X = rng.rand(1000, 3)
    true_coefs = [1, 2, 0.1]
    y = np.dot(X, true_coefs)
    true_intercept = 10000.0 if return_intercept else 0.0
    y += true_intercept
    alpha, atol = 1e-3, 1e-4

    model = ridge(alpha=alpha, fit_intercept=return_intercept, driver=driver)
    kinds.fit(model, kind, X, y, sample_weight)
    assert_allclose(kinds.coef(model), true_coefs, rtol=0, atol=atol)
    if return_intercept:
        assert_allclose(kinds.intercept(model), true_intercept, rtol=0, atol=atol)


@pytest.mark.parametrize("kind", ["array", "indexed"])
def test_raises_value_error_if_sample_weights_greater_than_1d(kind):
    # one weight per sample (per entry); the scalars are the next test
    rng = np.random.RandomState(42)
    for n_samples, n_features in zip([2, 3], [3, 2]):
        X = rng.randn(n_samples, n_features)
        y = rng.randn(n_samples)
        sample_weights_OK = rng.randn(n_samples) ** 2 + 1
        kinds.fit(ridge(alpha=1), kind, X, y, sample_weights_OK)
        for not_ok in (sample_weights_OK[:, np.newaxis], sample_weights_OK[np.newaxis, :]):
            with pytest.raises(ValueError, match="TensorMapLstsq.fit: sample_weight must be 1-D"):
                kinds.fit(ridge(alpha=1), kind, X, y, not_ok)


@pytest.mark.parametrize("kind", ["array", "indexed"])
def test_scalar_sample_weights(kind):
    # scikit-learn gives every sample that weight
    rng = np.random.RandomState(42)
    X, y = rng.randn(3, 2), rng.randn(3)
    for sample_weight in (1.0, 2.0):
        model = kinds.fit(ridge(alpha=1), kind, X, y, sample_weight)
        expected = Ridge(alpha=1).fit(X, y, sample_weight=sample_weight)
        assert_allclose(kinds.coef(model), expected.coef_)
        assert kinds.intercept(model) == pytest.approx(expected.intercept_)


@pytest.mark.parametrize("kind", KINDS)
def test_ridge_diabetes_multi_target(kind):
    # _test_ridge_diabetes and _test_multi_ridge_diabetes: two equal targets
    Y = np.vstack((y_diabetes, y_diabetes)).T
    n_features = X_diabetes.shape[1]
    model = kinds.fit(ridge(fit_intercept=False, alpha=1.0), kind, X_diabetes, Y)
    assert kinds.coef(model, 2).shape == (2, n_features)
    Y_pred = kinds.predict(model, kind, X_diabetes, 2)
    kinds.fit(model, kind, X_diabetes, y_diabetes)
    y_pred = kinds.predict(model, kind, X_diabetes)
    assert_array_almost_equal(np.vstack((y_pred, y_pred)).T, Y_pred, decimal=3)
    expected = Ridge(fit_intercept=False).fit(X_diabetes, y_diabetes).score(X_diabetes, y_diabetes)
    assert np.round(kinds.score(model, kind, X_diabetes, y_diabetes), 5) == np.round(expected, 5)


# ---------------------------------------------------------------------------------
# RidgeCV: TensorMapLstsqCV(alphas, rconds=[None], cv)
# ---------------------------------------------------------------------------------


def test_ridge_gcv_integer_arrays():
    n_samples, n_features = 20, 10
    rng = np.random.RandomState(0)
    X = rng.randint(0, 5, size=(n_samples, n_features))
    y = rng.randint(0, 5, size=(n_samples,))

    model = ridge_cv(alphas=[0.1, 1.0, 10.0], scoring="neg_mse", cv=LeaveOneOut())
    model.fit(X, y)
    model_float = clone(model).fit(X.astype(np.float64), y.astype(np.float64))
    # without scoring, RidgeCV keeps the squared errors of leave-one-out
    reference = RidgeCV(alphas=[0.1, 1.0, 10.0], store_cv_results=True)
    reference.fit(X.astype(np.float64), y.astype(np.float64))
    assert model.alpha_ == reference.alpha_
    assert_allclose(model.coef_, reference.coef_)
    splits = [f"split{i}_test_score" for i in range(n_samples)]
    scores = np.array([model.cv_results_[split] for split in splits])
    assert_allclose(-scores, reference.cv_results_)

    assert_allclose(model.coef_, model_float.coef_)
    assert_allclose(
        model.cv_results_["mean_test_score"], model_float.cv_results_["mean_test_score"]
    )
    assert model.cv_results_["mean_test_score"].dtype == np.float64


@pytest.mark.parametrize("kind", SPLIT_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("X_shape", [(11, 8), (11, 20)], ids=["tall", "wide"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("y_shape, noise", [((11,), 1.0), ((11, 1), 30.0), ((11, 3), 150.0)])
def test_ridge_gcv_vs_ridge_loo_cv(kind, dtype, X_shape, y_shape, fit_intercept, noise):
    # a split-wise leave-one-out search equals RidgeCV's efficient one
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
    gcv_ridge = RidgeCV(fit_intercept=fit_intercept, alphas=alphas).fit(X, y)
    loo = ridge_cv(cv=n_samples, fit_intercept=fit_intercept, alphas=alphas, scoring="neg_mse")
    kinds.fit(loo, kind, X.astype(dtype), y.astype(dtype))

    atol = 1e-5 if dtype == np.float32 else 1e-10
    assert loo.alpha_ == pytest.approx(gcv_ridge.alpha_)
    assert_close_to_ridge_cv(kinds.coef(loo, y.ndim), gcv_ridge.coef_, atol=atol)
    assert_close_to_ridge_cv(kinds.intercept(loo, y.ndim), gcv_ridge.intercept_, atol=atol)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
@pytest.mark.parametrize("alpha", [1e-16, 1e16], ids=["zero_alpha", "inf_alpha"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(
    "X_shape", [(100, 50), (50, 50), (50, 100)], ids=["tall", "square", "wide"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regularization_limits_ridge_gcv(kind, alpha, fit_intercept, X_shape, dtype):
    n_samples, n_features = X_shape
    X, y = make_regression(
        n_samples=n_samples, n_features=n_features, noise=0, bias=10, random_state=42
    )
    expected_coef, expected_intercept = _ridge_regularization_limits(alpha, X, y, fit_intercept)
    model = ridge_cv(alphas=[alpha], fit_intercept=fit_intercept)
    kinds.fit(model, kind, X.astype(dtype), y.astype(dtype))

    atol = 1e-5 if dtype == np.float32 else 1e-10
    assert_allclose(kinds.coef(model), expected_coef, atol=atol)
    assert_allclose(kinds.intercept(model), expected_intercept, atol=atol)


@pytest.mark.parametrize("n_features", [8, 20])
@pytest.mark.parametrize(
    "y_shape, fit_intercept, noise",
    [((11,), True, 1.0), ((11, 1), True, 20.0), ((11, 3), True, 150.0), ((11, 3), False, 30.0)],
)
def test_ridge_gcv_sample_weights(fit_intercept, n_features, y_shape, noise):
    # integer weights are repeated samples, kept together by GroupKFold
    alphas = [1e-3, 0.1, 1.0, 10.0, 1e3]
    case = kinds.tiled_sample_weight_case(fit_intercept, n_features, y_shape, noise, alphas)
    X, y, sample_weight, kfold = case.X, case.y, case.sample_weight, case.kfold
    X_tiled, y_tiled, indices, cv = case.X_tiled, case.y_tiled, case.indices, case.cv
    kfold_errors = case.kfold_errors

    for kind in SPLIT_KINDS:
        # the weighted leave-one-out search, in place of RidgeCV's gcv_mode
        loo = ridge_cv(
            alphas=alphas, cv=LeaveOneOut(), scoring="neg_mse", fit_intercept=fit_intercept
        )
        kinds.fit(loo, kind, X, y, sample_weight)
        # each split scores one sample: its error, whatever its weight; the tiled
        # errors add up `weight` copies of it
        best = alphas.index(kfold.alpha_)
        split_errors = -np.array(
            [loo.cv_results_[f"split{i}_test_score"][best] for i in range(X.shape[0])]
        )
        gcv_errors = split_errors * sample_weight

        assert kfold.alpha_ == pytest.approx(loo.alpha_)
        assert_allclose(gcv_errors, kfold_errors.reshape(len(X), -1).mean(axis=1), rtol=1e-3)
        assert_close_to_ridge_cv(kinds.coef(loo, y.ndim), kfold.coef_, rtol=1e-3)
        assert_close_to_ridge_cv(kinds.intercept(loo, y.ndim), kfold.intercept_, rtol=1e-3)

        # and the search on the tiled samples with the same splits is RidgeCV's
        tiled = ridge_cv(
            alphas=alphas,
            cv=list(cv.split(X_tiled, y_tiled, groups=indices)),
            scoring="neg_mse",
            fit_intercept=fit_intercept,
        )
        kinds.fit(tiled, kind, X_tiled, y_tiled)
        assert tiled.alpha_ == pytest.approx(kfold.alpha_)
        assert_close_to_ridge_cv(kinds.coef(tiled, y.ndim), kfold.coef_, rtol=1e-3)
        assert_close_to_ridge_cv(kinds.intercept(tiled, y.ndim), kfold.intercept_, rtol=1e-3)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
@pytest.mark.parametrize("cv", [None, 3])
def test_ridge_best_score(kind, cv):
    X, y = make_regression(n_samples=6, random_state=42)
    model = kinds.fit(ridge_cv(cv=cv, fit_intercept=True), kind, X, y)
    assert hasattr(model, "best_score_")
    assert isinstance(model.best_score_, float)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_ridge_loo(kind):
    # the dense half of _test_ridge_loo: RidgeCV's efficient leave-one-out
    # chooses the alpha of a split-wise leave-one-out search, weighted or not
    alpha_ = RidgeCV(fit_intercept=True).fit(X_diabetes, y_diabetes).alpha_
    loo = ridge_cv(fit_intercept=True, cv=LeaveOneOut(), scoring="neg_mse")
    kinds.fit(loo, kind, X_diabetes, y_diabetes)
    assert loo.alpha_ == pytest.approx(alpha_)
    kinds.fit(loo, kind, X_diabetes, y_diabetes, np.ones(X_diabetes.shape[0]))
    assert loo.alpha_ == pytest.approx(alpha_)

    # several targets
    Y = np.vstack((y_diabetes, y_diabetes)).T
    model = kinds.fit(ridge_cv(fit_intercept=True, cv=KFold(5)), kind, X_diabetes, Y)
    Y_pred = kinds.predict(model, kind, X_diabetes, 2)
    kinds.fit(model, kind, X_diabetes, y_diabetes)
    y_pred = kinds.predict(model, kind, X_diabetes)
    assert_allclose(np.vstack((y_pred, y_pred)).T, Y_pred, rtol=1e-5)


@pytest.mark.parametrize(
    "scoring",
    [
        make_scorer(mean_squared_error, greater_is_better=False),
        make_scorer(lambda x, y: -mean_squared_error(x, y)),
        get_scorer("neg_mean_squared_error"),
    ],
    ids=["make_scorer_loss", "make_scorer_score", "get_scorer"],
)
def test_ridge_loo_sklearn_scorers(scoring):
    # the rest of _test_ridge_loo: scikit-learn's scorers choose the same alpha
    # (20 folds in place of leave-one-out, which choose the same here, to keep it short)
    alpha_ = RidgeCV(fit_intercept=True).fit(X_diabetes, y_diabetes).alpha_
    model = ridge_cv(fit_intercept=False, cv=KFold(20), scoring=scoring)
    model.fit(X_diabetes, y_diabetes)
    expected = ridge_cv(fit_intercept=False, cv=KFold(20), scoring="neg_mse")
    assert model.alpha_ == pytest.approx(expected.fit(X_diabetes, y_diabetes).alpha_)
    assert model.alpha_ == pytest.approx(alpha_)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
@pytest.mark.parametrize("cv", [None, KFold(5)])
def test_ridge_regression_custom_scoring(kind, cv):
    # a custom scorer, and ties go to the first alpha
    def _dummy_score(y_test, y_pred, **kwargs):
        return 0.42

    X_iris, y_iris = datasets.load_iris(return_X_y=True)
    alphas = np.logspace(-2, 2, num=5)
    model = ridge_cv(alphas=alphas, scoring=make_scorer(_dummy_score), cv=cv)
    kinds.fit(model, kind, X_iris, y_iris.astype(float))
    assert model.best_score_ == pytest.approx(0.42)
    assert model.alpha_ == pytest.approx(alphas[0])


def test_ridgecv_alphas_conversion():
    rng = np.random.RandomState(0)
    alphas = (0.1, 1.0, 10.0)
    X, y = rng.randn(5, 5), rng.randn(5)
    model = ridge_cv(alphas=alphas)
    assert model.alphas is alphas
    model.fit(X, y)
    assert model.alphas is alphas
    assert_array_equal(model.alphas, np.asarray(alphas))


@pytest.mark.parametrize("cv", [None, 3])
def test_ridgecv_alphas_zero(cv):
    # RidgeCV refuses alpha = 0 for its efficient leave-one-out (cv=None) only;
    # a split-wise search takes it for every cv
    rng = np.random.RandomState(0)
    X, y = rng.randn(5, 5), rng.randn(5)
    ridge_cv(alphas=(0.0, 1.0, 10.0), cv=cv).fit(X, y)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
@pytest.mark.parametrize("n_samples, n_features", [(6, 5), (5, 10)])
def test_ridgecv_sample_weight(kind, n_samples, n_features):
    # TensorMapLstsqCV weighs the test scores too (documented): it is
    # GridSearchCV(Ridge) with the weights routed to fit and score
    rng = np.random.RandomState(0)
    alphas = (0.1, 1.0, 10.0)
    y = rng.randn(n_samples)
    X = rng.randn(n_samples, n_features)
    sample_weight = 1.0 + rng.rand(n_samples)

    # KFold(5) leaves one sample in most test folds, where R^2 is undefined (nan
    # in scikit-learn, with a warning): the mean squared error is defined there
    cv = KFold(5)
    model = ridge_cv(alphas=alphas, cv=cv, fit_intercept=True, scoring="neg_mse")
    kinds.fit(model, kind, X, y, sample_weight)

    with sklearn.config_context(enable_metadata_routing=True):
        scoring = get_scorer("neg_mean_squared_error").set_score_request(sample_weight=True)
        estimator = Ridge().set_fit_request(sample_weight=True)
        gs = GridSearchCV(estimator, {"alpha": alphas}, cv=cv, scoring=scoring)
        gs.fit(X, y, sample_weight=sample_weight)

    assert model.alpha_ == gs.best_estimator_.alpha
    assert_array_almost_equal(kinds.coef(model), gs.best_estimator_.coef_)


def test_ridgecv_int_alphas():
    X = np.array([[-1.0, -1.0], [-1.0, 0], [-0.8, -1.0], [1.0, 1.0], [1.0, 0.0]])
    y = [1, 1, 1, -1, -1]
    ridge_cv(alphas=(1, 10, 100)).fit(X, y)


@pytest.mark.parametrize(
    "alphas, position, value",
    [((1, -1, -100), 1, "-1"), ((-0.1, -1.0, -10.0), 0, "-0.1"), ((1, 1.0, "1"), 2, "'1'")],
)
def test_ridgecv_alphas_validation(alphas, position, value):
    # a ValueError naming the entry, also for a string (RidgeCV: TypeError)
    rng = np.random.RandomState(0)
    X, y = rng.randn(5, 5), rng.randint(0, 2, 5)
    message = (
        rf"TensorMapLstsqCV.fit: alphas\[{position}\] must be a finite number >= 0, got {value}"
    )
    with pytest.raises(ValueError, match=message):
        ridge_cv(alphas=alphas).fit(X, y)


def test_ridgecv_alphas_scalar():
    rng = np.random.RandomState(0)
    X, y = rng.randn(5, 5), rng.randn(5)
    model = ridge_cv(alphas=1).fit(X, y)
    assert model.alpha_ == 1


@pytest.mark.parametrize("X_shape", [(50, 10), (10, 50)], ids=["tall", "wide"])
@pytest.mark.parametrize("with_sample_weight", [False, True], ids=["no_sw", "with_sw"])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["no_intercept", "with_intercept"])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_ridge_cv_results_predictions(X_shape, with_sample_weight, fit_intercept, n_targets):
    # RidgeCV keeps its leave-one-out predictions; the split scores of a
    # leave-one-out search are their squared errors, against a naive search
    n_samples, n_features = X_shape
    X, y = make_regression(
        n_samples=n_samples, n_features=n_features, n_targets=n_targets, random_state=0
    )
    if with_sample_weight:
        sample_weight = np.ones(shape=(X.shape[0],))
        sample_weight[::2] = 0.5
    else:
        sample_weight = None
    alphas = np.logspace(-5, 7, 5)

    predictions = np.empty(shape=(*y.shape, len(alphas)))
    for alpha_idx, alpha in enumerate(alphas):
        for idx, (train_idx, test_idx) in enumerate(LeaveOneOut().split(X, y)):
            reference = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd")
            if with_sample_weight:
                reference.fit(X[train_idx], y[train_idx], sample_weight=sample_weight[train_idx])
            else:
                reference.fit(X[train_idx], y[train_idx])
            predictions[idx, ..., alpha_idx] = reference.predict(X[test_idx])
    predictions = predictions.reshape(n_samples, -1, len(alphas))
    errors = ((y.reshape(n_samples, -1, 1) - predictions) ** 2).mean(axis=1)
    # scikit-learn's rtol=1e-6 on the predictions, carried to their squared
    # errors: a prediction off by d changes its squared residual r^2 by 2 |r| d + d^2
    d = 1e-6 * np.abs(predictions).max(axis=1)
    for kind in SPLIT_KINDS:
        model = ridge_cv(
            alphas=alphas, cv=LeaveOneOut(), scoring="neg_mse", fit_intercept=fit_intercept
        )
        kinds.fit(model, kind, X, y, sample_weight)
        scores = np.array([model.cv_results_[f"split{i}_test_score"] for i in range(n_samples)])
        assert np.all(np.abs(-scores - errors) <= 2 * np.sqrt(errors) * d + d**2 + 1e-7 * errors)


@pytest.mark.parametrize("kind", SPLIT_KINDS)
@pytest.mark.parametrize("X_shape", [(50, 10), (10, 50)], ids=["tall", "wide"])
def test_ridge_cv_multioutput_sample_weight(kind, X_shape, global_random_seed):
    n_samples, n_features = X_shape
    X, y = make_regression(
        n_samples=n_samples, n_features=n_features, n_targets=2, random_state=global_random_seed
    )
    sample_weight = np.ones(n_samples)

    model = ridge_cv(scoring="neg_mse", cv=LeaveOneOut(), fit_intercept=True)
    kinds.fit(model, kind, X, y, sample_weight)

    reference = Ridge(alpha=model.alpha_)
    y_pred_loo = np.squeeze(
        [
            reference.fit(X[train], y[train], sample_weight=sample_weight[train]).predict(X[test])
            for train, test in LeaveOneOut().split(X)
        ]
    )
    assert_allclose(model.best_score_, -mean_squared_error(y, y_pred_loo))


def _custom_error(y_true, y_pred):
    errors = (y_true - y_pred) ** 2
    mean_errors = np.mean(errors, axis=0)
    if mean_errors.ndim == 1:
        return -np.average(mean_errors, weights=[2, 1])
    return -mean_errors  # pragma: no cover


@pytest.mark.parametrize("kind", ["array", "indexed"])
@pytest.mark.parametrize("X_shape", [(50, 10), (10, 50)], ids=["tall", "wide"])
def test_ridge_cv_custom_multioutput_scorer(kind, X_shape):
    n_samples, n_features = X_shape
    X, y = make_regression(n_samples=n_samples, n_features=n_features, n_targets=2, random_state=0)

    def custom_multioutput_scorer(estimator, X, y):
        """Twice more importance to the second target (scikit-learn's, on arrays)."""
        if kind == "array":
            return -_custom_error(y, estimator.predict(X))
        return -_custom_error(kinds.values(y), kinds.values(estimator.predict(X)))

    # RidgeCV's default cv is leave-one-out
    model = ridge_cv(scoring=custom_multioutput_scorer, cv=LeaveOneOut(), fit_intercept=True)
    kinds.fit(model, kind, X, y)

    reference = Ridge(alpha=model.alpha_)
    y_pred_loo = np.squeeze(
        [
            reference.fit(X[train], y[train]).predict(X[test])
            for train, test in LeaveOneOut().split(X)
        ]
    )
    assert_allclose(model.best_score_, -_custom_error(y, y_pred_loo))


def test_metadata_routing_with_default_scoring():
    with sklearn.config_context(enable_metadata_routing=True):
        ridge_cv().get_metadata_routing()


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_set_score_request_with_default_scoring(kind):
    X, y = make_regression(n_samples=100, n_features=5, random_state=42)
    with sklearn.config_context(enable_metadata_routing=True):
        kinds.fit(ridge_cv(), kind, X, y, np.ones(X.shape[0]))
