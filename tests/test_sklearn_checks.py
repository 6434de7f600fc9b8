"""scikit-learn's own estimator checks, on plain arrays; each expected failure says why."""

import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    parametrize_with_checks,
)

from skmetalstsq import TensorMapBayesianRidge, TensorMapLstsq, TensorMapLstsqCV

#: check_fit_score_takes_y calls partial_fit on an estimator fitted by fit: TensorMapLstsq's
#: fit keeps no factors, so partial_fit refuses to continue from it rather than forget
#: fit's rows; test_fit_score_and_partial_fit_take_y checks the rest of that check
LSTSQ_EXPECTED_FAILURES = {
    "check_fit_score_takes_y": (
        "partial_fit after fit is refused: fit keeps no factors to add rows to"
    ),
}


@parametrize_with_checks(
    [TensorMapLstsq(), TensorMapLstsqCV()],
    expected_failed_checks=lambda estimator: (
        LSTSQ_EXPECTED_FAILURES if type(estimator) is TensorMapLstsq else {}
    ),
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_fit_score_and_partial_fit_take_y():
    # check_fit_score_takes_y, with partial_fit on a new estimator: y is the second
    # argument of each, and each accepts (X, y)
    import inspect

    import numpy as np
    from sklearn.base import clone

    rng = np.random.RandomState(0)
    X, y = rng.uniform(size=(30, 3)), (np.arange(30) % 3).astype(float)
    model = TensorMapLstsq()
    for name in ("fit", "score", "partial_fit"):
        assert list(inspect.signature(getattr(model, name)).parameters)[:2] == ["X", "y"]
    model.fit(X, y).score(X, y)
    with pytest.raises(ValueError, match="partial_fit: this estimator was fitted by fit"):
        model.partial_fit(X, y)
    clone(model).partial_fit(X, y).partial_fit(X, y).score(X, y)


#: scikit-learn reads BayesianRidge's sample_weight as repetition counts (its evidence
#: counts their sum); TensorMapBayesianRidge reads them as relative precisions of the
#: rows (its evidence counts rows), so weight 2 is not the row twice
BAYES_EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "sample weights are relative precisions of the rows, not repetition counts: the "
        "evidence counts rows, not the sum of the weights"
    ),
}


@parametrize_with_checks(
    [TensorMapBayesianRidge()], expected_failed_checks=lambda _: BAYES_EXPECTED_FAILURES
)
def test_bayesian_ridge_sklearn_compatible(estimator, check):
    check(estimator)


def test_pandas_column_names():
    # not part of parametrize_with_checks' set for regressors, but pandas users
    # expect feature_names_in_ to be kept and checked
    pytest.importorskip("pandas")
    check_dataframe_column_names_consistency("TensorMapLstsq", TensorMapLstsq())


def test_cv_estimator_on_arrays_equals_grid_search():
    # each row one entry: the scores and the choice of a GridSearchCV over the
    # same candidates and folds, then a refit on every row
    import numpy as np
    import sklearn
    from sklearn.model_selection import GridSearchCV, KFold

    rng = np.random.default_rng(0)
    A = rng.normal(size=(60, 5)) * [1.0, 1.0, 1.0, 1e-4, 1e-7]
    b = A @ rng.normal(size=5) + 0.01 * rng.normal(size=60)
    w = rng.uniform(0.5, 2.0, 60)
    rconds, alphas, cv = [1e-12, 1e-6, 1e-3], [0.0, 0.1], KFold(4)
    model = TensorMapLstsqCV(rconds=rconds, alphas=alphas, cv=cv, fit_intercept=True)
    model.fit(A, b, sample_weight=w)
    with sklearn.config_context(enable_metadata_routing=True):
        estimator = TensorMapLstsq(fit_intercept=True).set_fit_request(sample_weight=True)
        estimator.set_score_request(sample_weight=True)
        search = GridSearchCV(estimator, {"rcond": rconds, "alpha": alphas}, cv=cv)
        search.fit(A, b, sample_weight=w)
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"], rtol=1e-8
    )
    assert model.cv_results_["params"] == search.cv_results_["params"]
    assert model.best_index_ == search.best_index_
    reference = TensorMapLstsq(rcond=model.rcond_, alpha=model.alpha_, fit_intercept=True).fit(
        A, b, sample_weight=w
    )
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-10)
    np.testing.assert_allclose(model.predict(A), reference.predict(A), rtol=1e-10)
    assert model.n_features_in_ == 5


#: scikit-learn's checks that do not feed the estimator arrays: they apply to the
#: TensorMap-only transformers, and must pass
API_CHECKS = {
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_repr",
    "check_estimator_cloneable",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_mixin_order",
    "check_do_not_raise_errors_in_init_or_set_params",
}


@pytest.mark.parametrize("transformer", ["TensorMapStandardScaler", "TensorMapFunctionTransformer"])
def test_transformers_pass_the_checks_that_apply(transformer):
    # the transformers take TensorMaps only: every check that fits them on numpy
    # (or sparse) arrays gets their clear TypeError, as the API reference says;
    # every other check passes
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    import skmetalstsq

    estimator = getattr(skmetalstsq, transformer)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert API_CHECKS <= passed
    for result in results:
        if result["status"] != "failed":
            continue
        message = str(result["exception"])
        if result["exception"].__cause__ is not None:
            message += str(result["exception"].__cause__)
        assert "must be a metatensor.TensorMap" in message, (result["check_name"], message)
