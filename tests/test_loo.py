"""Exact leave-one-structure-out, checked against refits without each entry."""

import numpy as np
import pytest
from builders import example_pair, make_pair, make_rank_deficient, torch_map
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, LeaveOneOut

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics
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


# ---------------------------------------------------------------------------------
# TensorMapLstsqCV(cv="loo")
# ---------------------------------------------------------------------------------

ALPHAS = [1e-4, 1e-2, 1.0, 100.0]


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_equals_ridgecv_on_arrays(fit_intercept, n_targets):
    rng = np.random.default_rng(7)
    A = rng.normal(size=(30, 6)) + 2.0
    b = A @ rng.normal(size=(6, n_targets)) + 0.5 * rng.normal(size=(30, n_targets)) + 4.0
    b = b[:, 0] if n_targets == 1 else b
    reference = RidgeCV(
        alphas=ALPHAS, fit_intercept=fit_intercept, scoring="neg_mean_squared_error"
    ).fit(A, b)
    model = TensorMapLstsqCV(
        alphas=ALPHAS, rconds=[1e-14], fit_intercept=fit_intercept, cv="loo", scoring="neg_mse"
    ).fit(A, b)
    assert model.alpha_ == reference.alpha_
    np.testing.assert_allclose(model.best_score_, reference.best_score_, rtol=1e-10)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-10, atol=1e-12)
    assert model.n_splits_ == 30


def test_scores_equal_leave_one_out_grid_search_on_indexed_maps():
    """With one scored row per entry, the mean over splits is the pooled score."""
    X, y = make_pair(np.random.default_rng(8), n_systems=9, n_atoms=1, n_targets=1)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    options = {"fit_intercept": True, "gradient_weights": {"positions": 0.2}}
    search = GridSearchCV(
        TensorMapLstsq(rcond=1e-14, **options),
        {"alpha": ALPHAS},
        cv=LeaveOneOut(),
        scoring=metrics.scorer("neg_mse"),
    ).fit(Xi, yi)
    model = TensorMapLstsqCV(
        alphas=ALPHAS, rconds=[1e-14], cv="loo", scoring="neg_mse", **options
    ).fit(Xi, yi)
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"], rtol=1e-9
    )
    assert model.best_params_["alpha"] == search.best_params_["alpha"]
    np.testing.assert_array_equal(
        model.cv_results_["rank_test_score"], search.cv_results_["rank_test_score"]
    )
    assert "split0_test_score" not in model.cv_results_
    assert "std_test_score" not in model.cv_results_


def held_out_errors_by_refits(X, y, options, alpha, sample_weight, gradient):
    """Pooled weighted squared held-out errors of the scored rows, by refitting."""
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    loss = total_weight = 0.0
    for left_out in range(len(Xi)):
        train = np.arange(len(Xi)) != left_out
        model = TensorMapLstsq(rcond=1e-14, alpha=alpha, **options)
        model.fit(Xi[train], yi[train], sample_weight=sample_weight[train])
        predicted = model.predict(Xi[[left_out]]).tensor
        for key, block in yi[[left_out]].tensor.items():
            expected = block if gradient is None else block.gradient(gradient)
            got = predicted.block(key)
            got = got if gradient is None else got.gradient(gradient)
            parents = (
                expected.samples.column("system")
                if gradient is None
                else block.samples.column("system")[expected.samples.column("sample")]
            )
            rows = np.asarray(expected.values).reshape(len(expected.samples), -1)
            rows_got = np.asarray(got.values).reshape(len(expected.samples), -1)
            w = sample_weight[np.searchsorted(Xi.entries, parents)]
            loss += float((w[:, None] * (rows - rows_got) ** 2).sum())
            total_weight += float(w.sum()) * rows.shape[1]
    return -loss / total_weight


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_weighted_scores_equal_refits_by_hand(gradient):
    X, y = example_pair(seed=9, n_systems=6, gradients=("positions",))
    rng = np.random.default_rng(9)
    sample_weight = rng.uniform(0.2, 3.0, size=6)
    options = {"fit_intercept": True, "gradient_weights": {"positions": 0.3}}
    alphas = [1e-3, 0.5]
    model = TensorMapLstsqCV(
        alphas=alphas,
        rconds=[1e-14],
        cv="loo",
        scoring=metrics.scorer("neg_mse", gradient=gradient),
        **options,
    ).fit(IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system"), sample_weight=sample_weight)
    expected = [
        held_out_errors_by_refits(X, y, options, alpha, sample_weight, gradient) for alpha in alphas
    ]
    np.testing.assert_allclose(model.cv_results_["mean_test_score"], expected, rtol=1e-9)


def test_per_block_choice_equals_per_block_refits():
    X, y = example_pair(seed=10, n_systems=6)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    model = TensorMapLstsqCV(
        alphas=ALPHAS, rconds=[1e-14], cv="loo", per_block=True, scoring="neg_rmse"
    ).fit(Xi, yi)
    for key in X.keys:
        key = tuple(int(v) for v in key.values)
        name = model.block_names_[key]
        scores = []
        for alpha in ALPHAS:
            predicted = cross_val_predict(TensorMapLstsq(rcond=1e-14, alpha=alpha), X, y, cv="loo")
            residual = (
                y.block(dict(zip(y.keys.names, key))).values
                - predicted.block(dict(zip(y.keys.names, key))).values
            )
            scores.append(-np.sqrt(np.mean(residual**2)))
        np.testing.assert_allclose(model.cv_results_[f"mean_test_{name}"], scores, rtol=1e-9)
        assert model.alpha_[key] == ALPHAS[int(np.argmax(scores))]


def test_custom_scorer_gets_the_held_out_predictions():
    X, y = make_pair(np.random.default_rng(11), n_systems=7)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    seen = []

    def scoring(estimator, X_test, y_test):
        seen.append(len(X_test))
        return metrics.rmse(y_test, estimator.predict(X_test), gradient="positions")

    model = TensorMapLstsqCV(alphas=ALPHAS[:2], rconds=[1e-14], cv="loo", scoring=scoring)
    model.fit(Xi, yi)
    assert seen == [7, 7]  # once per candidate, on every entry
    for alpha, score in zip(ALPHAS[:2], model.cv_results_["mean_test_score"]):
        predicted = refit_predictions(TensorMapLstsq(rcond=1e-14, alpha=alpha), X, y)
        np.testing.assert_allclose(score, metrics.rmse(y, predicted, gradient="positions"))


def test_undetermined_entry_scores_nan_with_a_warning():
    rng = np.random.default_rng(12)
    A = rng.normal(size=(8, 3))
    A[:, 2] = 0.0
    A[5, 2] = 1.0
    X = TensorMap(
        Labels(["center_type"], np.array([[1]])),
        [TensorBlock(A, Labels.range("system", 8), [], Labels.range("feature", 3))],
    )
    y = TensorMap(
        X.keys,
        [TensorBlock(rng.normal(size=(8, 1)), X.block(0).samples, [], Labels.range("t", 1))],
    )
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    model = TensorMapLstsqCV(alphas=[0.0, 0.1], rconds=[1e-14], cv="loo", scoring="neg_mse")
    match = r"block \(center_type=1\).*'system' \[5\].*alpha=0\.0"
    with pytest.warns(FitFailedWarning, match=match):
        model.fit(Xi, yi)
    assert np.isnan(model.cv_results_["mean_test_score"][0])
    assert model.alpha_ == 0.1
    expected = refit_predictions(TensorMapLstsq(rcond=1e-14, alpha=0.1), X, y)
    score = -np.mean((expected.block(0).values - y.block(0).values) ** 2)
    np.testing.assert_allclose(model.best_score_, score, rtol=1e-10)


def test_loo_takes_no_groups():
    X, y = make_pair(np.random.default_rng(13), n_systems=4)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    with pytest.raises(ValueError, match="LeaveOneGroupOut"):
        TensorMapLstsqCV(cv="loo").fit(Xi, yi, groups=[0, 0, 1, 1])


def test_kfold_results_unchanged_by_the_loo_option():
    X, y = make_pair(np.random.default_rng(14), n_systems=10)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    search = GridSearchCV(
        TensorMapLstsq(rcond=1e-14),
        {"alpha": ALPHAS},
        cv=KFold(3),
        scoring=metrics.scorer("neg_mse"),
    ).fit(Xi, yi)
    model = TensorMapLstsqCV(alphas=ALPHAS, rconds=[1e-14], cv=KFold(3), scoring="neg_mse")
    model.fit(Xi, yi)
    np.testing.assert_allclose(
        model.cv_results_["split1_test_score"], search.cv_results_["split1_test_score"], rtol=1e-9
    )


def test_loo_over_shards_is_refused_naming_the_alternative():
    from skmetalstsq.distributed import fit_shards

    X, y = make_pair(np.random.default_rng(15), n_systems=4)
    with pytest.raises(ValueError, match=r"cv='loo'.*LeaveOneOut\(\)"):
        fit_shards(TensorMapLstsqCV(cv="loo"), [lambda: (X, y), lambda: (X, y)])


def test_bit_identical_for_every_n_jobs_and_thread_count():
    from threadpoolctl import threadpool_limits

    X, y = example_pair(seed=16, n_systems=8)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    options = dict(alphas=ALPHAS, rconds=[1e-14, 1e-3], cv="loo", fit_intercept=True)
    reference = TensorMapLstsqCV(n_jobs=1, **options).fit(Xi, yi)
    runs = [TensorMapLstsqCV(n_jobs=2, **options).fit(Xi, yi)]
    with threadpool_limits(1):
        runs.append(TensorMapLstsqCV(n_jobs=1, **options).fit(Xi, yi))
    for run in runs:
        np.testing.assert_array_equal(
            run.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"]
        )
    predicted = [
        cross_val_predict(TensorMapLstsq(alpha=0.1), X, y, cv="loo", n_jobs=n_jobs)
        for n_jobs in (1, 2)
    ]
    for key, block in predicted[0].items():
        np.testing.assert_array_equal(predicted[1].block(key).values, block.values)


@pytest.mark.parametrize("scoring", ["r2", "neg_mean_squared_error", "mse_scorer"])
def test_scikit_learn_scorers_on_arrays_as_ridgecv(scoring):
    from sklearn.metrics import get_scorer, make_scorer, mean_squared_error

    if scoring == "mse_scorer":
        scoring = make_scorer(mean_squared_error, greater_is_better=False)
    else:
        scoring = get_scorer(scoring)
    rng = np.random.default_rng(17)
    A = rng.normal(size=(25, 4))
    b = A @ rng.normal(size=4) + 0.3 * rng.normal(size=25)
    reference = RidgeCV(alphas=ALPHAS, scoring=scoring, fit_intercept=True).fit(A, b)
    model = TensorMapLstsqCV(
        alphas=ALPHAS, rconds=[1e-14], cv="loo", scoring=scoring, fit_intercept=True
    ).fit(A, b)
    assert model.alpha_ == reference.alpha_
    np.testing.assert_allclose(model.best_score_, reference.best_score_, rtol=1e-10)


def test_scikit_learn_scorers_on_indexed_maps_are_refused_as_in_k_fold():
    from sklearn.metrics import get_scorer

    from skmetalstsq.metrics import UnsupportedScoringError

    X, y = make_pair(np.random.default_rng(18), n_systems=5)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    with pytest.raises(UnsupportedScoringError, match=r"use scoring=skmetalstsq.metrics.scorer"):
        TensorMapLstsqCV(cv="loo", scoring=get_scorer("r2")).fit(Xi, yi)


def test_exactly_singular_entries_give_nan_and_errors_not_linalg_errors():
    """0/1 descriptors: a feature seen by one entry only makes I - H_gg exactly singular."""
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = np.array([1.0, 2.0, 3.0])
    for alphas, features in (([0.0, 1.0], 2), ([0.0], 1)):
        model = TensorMapLstsqCV(alphas=alphas, rconds=[1e-12], cv="loo", scoring="neg_mse")
        with pytest.warns(FitFailedWarning, match=r"'sample' \[0\]"):
            model.fit(X[:, :features], y)
        assert np.isnan(model.cv_results_["mean_test_score"][0])
        if len(alphas) == 2:  # the penalised candidate is determined and chosen
            assert model.alpha_ == 1.0
            expected = refit_predictions(
                TensorMapLstsq(alpha=1.0), *[_one_block(a) for a in (X, y[:, None])]
            )
            score = -np.mean((expected.block(0).values[:, 0] - y) ** 2)
            np.testing.assert_allclose(model.best_score_, score, rtol=1e-12)
    with pytest.raises(ValueError, match=r"'system' \[0\]"):
        cross_val_predict(TensorMapLstsq(), _one_block(X), _one_block(y[:, None]), cv="loo")


def test_undetermined_candidates_score_nan_under_r2_of_constant_targets():
    X = np.array([[1.0], [1e-7], [-1e-7], [0.0]])
    model = TensorMapLstsqCV(alphas=[0.0], rconds=[1e-12], cv="loo")
    with pytest.warns(FitFailedWarning):
        model.fit(X, np.ones(4))
    assert np.isnan(model.best_score_)


def test_per_block_loo_has_no_split_keys():
    X, y = make_pair(np.random.default_rng(19), n_systems=5)
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    model = TensorMapLstsqCV(alphas=ALPHAS, rconds=[1e-14], cv="loo", per_block=True)
    model.fit(Xi, yi)
    assert not [k for k in model.cv_results_ if k.startswith(("split", "std_test"))]
    assert "mean_test_center_type=0" in model.cv_results_


def _one_block(array):
    samples = Labels.range("system", len(array))
    block = TensorBlock(array, samples, [], Labels.range("p", array.shape[1]))
    return TensorMap(Labels.single(), [block])


def test_cuda_maps_give_cuda_maps():
    torch = pytest.importorskip("torch")
    pytest.importorskip("metatensor.torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    X, y = make_pair(np.random.default_rng(20), n_systems=6)
    estimator = TensorMapLstsq(alpha=0.1, fit_intercept=True)
    expected = refit_predictions(estimator, X, y)
    predicted = cross_val_predict(
        estimator, torch_map(X, device="cuda"), torch_map(y, device="cuda"), cv="loo"
    )
    assert predicted.block(0).values.device.type == "cuda"
    np.testing.assert_allclose(
        predicted.block(0).values.cpu().numpy(), expected.block(0).values, rtol=1e-9, atol=1e-10
    )
    model = TensorMapLstsqCV(alphas=ALPHAS, rconds=[1e-14], cv="loo", device="cuda")
    model.fit(IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system"))
    reference = TensorMapLstsqCV(alphas=ALPHAS, rconds=[1e-14], cv="loo").fit(
        IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    )
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"], rtol=1e-9
    )
