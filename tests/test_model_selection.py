"""scikit-learn model selection on IndexedTensorMaps, every split checked by hand.

The hand computation of a split: slice the systems with ``metatensor.slice``,
fit ``metatensor.lstsq``, predict with numpy (``X @ w.T``) and score with numpy.
"""

import metatensor
import numpy as np
import pytest
from builders import make_pair, map_arrays
from joblib import parallel_config
from metatensor import Labels, TensorBlock, TensorMap
from scipy.stats import loguniform
from sklearn.base import BaseEstimator
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    ShuffleSplit,
    cross_val_score,
    cross_validate,
    learning_curve,
    train_test_split,
    validation_curve,
)
from sklearn.pipeline import make_pipeline

from skmetalstsq import (
    IndexedTensorMap,
    TensorMapFunctionTransformer,
    TensorMapLstsq,
    TensorMapStandardScaler,
    cross_val_predict,
    metrics,
)

N_SYSTEMS = 16
RCONDS = [1e-12, 1e-4, 1e-1]
RTOL = 1e-7

# ---------------------------------------------------------------------------------
# data and the hand computation
# ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    """Per-(system, atom) X and y whose features span 6 orders of magnitude, so
    that rcond changes the fit."""
    rng = np.random.default_rng(0)
    X, y = make_pair(rng, keys=((1,), (6,)), n_systems=N_SYSTEMS, n_features=5, noise=0.3)
    scales = np.logspace(0, -6, 5)
    return map_arrays(X, lambda array: array * scales), y


@pytest.fixture(scope="module")
def per_system_data():
    """Per-atom X and per-system y = (X summed over atoms) w + noise."""
    rng = np.random.default_rng(1)
    X, _ = make_pair(rng, keys=((1,), (6,)), n_systems=N_SYSTEMS, n_atoms=3, n_features=4)
    summed = metatensor.sum_over_samples(X, sample_names="atom")
    blocks = []
    for block in summed.blocks():
        w = rng.normal(size=(4, 1))
        new = TensorBlock(
            block.values @ w + 0.2 * rng.normal(size=(len(block.samples), 1)),
            block.samples,
            [],
            Labels.range("energy", 1),
        )
        gradient = block.gradient("positions")
        new.add_gradient(
            "positions",
            TensorBlock(
                gradient.values @ w + 0.2 * rng.normal(size=(*gradient.values.shape[:-1], 1)),
                gradient.samples,
                gradient.components,
                new.properties,
            ),
        )
        blocks.append(new)
    return X, TensorMap(summed.keys, blocks)


def _slice(tensor, systems):
    systems = np.asarray(systems, dtype=np.int32).reshape(-1, 1)
    return metatensor.slice(tensor, "samples", Labels(["system"], systems))


def _identity(X_fit, X_apply):
    return X_apply


def _standardized(X_fit, X_apply):
    """X_apply standardized with the per-block, per-property statistics of X_fit."""
    blocks = []
    for key, block in X_apply.items():
        fit_values = X_fit.block(key).values
        matrix = fit_values.reshape(-1, fit_values.shape[-1])
        mean, std = matrix.mean(axis=0), matrix.std(axis=0)
        new = TensorBlock(
            (block.values - mean) / std, block.samples, block.components, block.properties
        )
        for parameter, gradient in block.gradients():
            new.add_gradient(
                parameter,
                TensorBlock(
                    gradient.values / std, gradient.samples, gradient.components, new.properties
                ),
            )
        blocks.append(new)
    return TensorMap(X_apply.keys, blocks)


def _summed(X_fit, X_apply):
    return metatensor.sum_over_samples(X_apply, sample_names="atom")


def _matrices(tensor, gradient):
    out = []
    for block in tensor.blocks():
        if gradient is not None:
            block = block.gradient(gradient)
        out.append(block.values.reshape(-1, block.values.shape[-1]))
    return out


def _hand_predict(X_train, y_train, X_test, rcond, transform):
    """Predictions of X_test by metatensor.lstsq weights, as a TensorMap built by hand."""
    weights = metatensor.lstsq(transform(X_train, X_train), y_train, rcond=rcond)
    features = transform(X_train, X_test)
    blocks = []
    for key, block in features.items():
        w_t = weights.block(key).values.T
        new = TensorBlock(
            block.values @ w_t, block.samples, block.components, weights.block(key).samples
        )
        for parameter, gradient in block.gradients():
            new.add_gradient(
                parameter,
                TensorBlock(
                    gradient.values @ w_t, gradient.samples, gradient.components, new.properties
                ),
            )
        blocks.append(new)
    return TensorMap(features.keys, blocks)


def _hand_metric(name, y_true, y_pred, gradient=None):
    """neg_rmse, neg_mae or r2 (greater is better), pooled with numpy."""
    for key, block in y_true.items():  # the layouts must agree row for row
        assert block.samples == y_pred.block(key).samples
    true, pred = _matrices(y_true, gradient), _matrices(y_pred, gradient)
    residuals = np.concatenate([(t - p).ravel() for t, p in zip(true, pred)])
    if name == "neg_rmse":
        return -np.sqrt(np.mean(residuals**2))
    if name == "neg_mae":
        return -np.mean(np.abs(residuals))
    assert name == "r2"
    total = sum(((t - t.mean(axis=0)) ** 2).sum() for t in true)
    return 1.0 - (residuals**2).sum() / total


def _hand_score(X, y, train, test, rcond=None, name="r2", gradient=None, transform=_identity):
    """The score of one split (positions are systems here), by hand."""
    X_train, X_test = _slice(X, train), _slice(X, test)
    y_train, y_test = _slice(y, train), _slice(y, test)
    predicted = _hand_predict(X_train, y_train, X_test, rcond, transform)
    return _hand_metric(name, y_test, predicted, gradient)


def _indexed(X, y):
    return IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")


# ---------------------------------------------------------------------------------
# searches
# ---------------------------------------------------------------------------------

SCORING = {
    "r2": metrics.scorer("r2"),
    "neg_rmse_forces": metrics.scorer("neg_rmse", gradient="positions"),
}


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_multi_metric(data, n_jobs):
    X, y = data
    Xi, yi = _indexed(X, y)
    cv = KFold(4, shuffle=True, random_state=0)
    search = GridSearchCV(
        TensorMapLstsq(driver="gelsd"),
        {"rcond": RCONDS},
        cv=cv,
        scoring=SCORING,
        refit="neg_rmse_forces",
        n_jobs=n_jobs,
        error_score="raise",
    )
    # max_nbytes=1: joblib memory-maps every array for the worker processes
    with parallel_config(max_nbytes=1):
        search.fit(Xi, yi)
    splits = list(cv.split(np.arange(N_SYSTEMS)))
    means = {name: [] for name in SCORING}
    for i, rcond in enumerate(RCONDS):
        for name, metric, gradient in (
            ("r2", "r2", None),
            ("neg_rmse_forces", "neg_rmse", "positions"),
        ):
            hand = [_hand_score(X, y, tr, te, rcond, metric, gradient) for tr, te in splits]
            for k, expected in enumerate(hand):
                got = search.cv_results_[f"split{k}_test_{name}"][i]
                np.testing.assert_allclose(got, expected, rtol=RTOL)
            means[name].append(np.mean(hand))
    assert len(set(np.round(means["neg_rmse_forces"], 6))) == len(RCONDS)  # rcond matters
    best = int(np.argmax(means["neg_rmse_forces"]))
    assert search.best_index_ == best
    assert search.best_params_ == {"rcond": RCONDS[best]}
    expected = metatensor.lstsq(X, y, rcond=RCONDS[best])
    for key, block in search.best_estimator_.weights_.items():
        np.testing.assert_allclose(block.values, expected.block(key).values, rtol=1e-6)
    predicted = search.predict(Xi[[2, 5]])
    assert isinstance(predicted, IndexedTensorMap)


def test_grid_search_single_scorer(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    scorer = metrics.scorer("neg_mae", gradient="positions")
    search = GridSearchCV(
        TensorMapLstsq(), {"rcond": RCONDS}, cv=3, scoring=scorer, error_score="raise"
    ).fit(Xi, yi)
    splits = list(KFold(3).split(np.arange(N_SYSTEMS)))
    means = []
    for i, rcond in enumerate(RCONDS):
        hand = [_hand_score(X, y, tr, te, rcond, "neg_mae", "positions") for tr, te in splits]
        np.testing.assert_allclose(
            [search.cv_results_[f"split{k}_test_score"][i] for k in range(3)], hand, rtol=RTOL
        )
        means.append(np.mean(hand))
    assert search.best_params_ == {"rcond": RCONDS[int(np.argmax(means))]}
    np.testing.assert_allclose(search.score(Xi, yi), scorer(search.best_estimator_, Xi, yi))


def test_randomized_search(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    search = RandomizedSearchCV(
        TensorMapLstsq(),
        {"rcond": loguniform(1e-12, 1e-1)},
        n_iter=4,
        cv=ShuffleSplit(3, test_size=0.25, random_state=1),
        random_state=0,
        error_score="raise",
    ).fit(Xi, yi)
    splits = list(ShuffleSplit(3, test_size=0.25, random_state=1).split(np.arange(N_SYSTEMS)))
    means = []
    for i, rcond in enumerate(search.cv_results_["param_rcond"]):
        hand = [_hand_score(X, y, tr, te, rcond) for tr, te in splits]
        np.testing.assert_allclose(
            [search.cv_results_[f"split{k}_test_score"][i] for k in range(3)], hand, rtol=RTOL
        )
        means.append(np.mean(hand))
    assert search.best_params_["rcond"] == search.cv_results_["param_rcond"][np.argmax(means)]


# ---------------------------------------------------------------------------------
# cross-validation helpers and splitters
# ---------------------------------------------------------------------------------


def test_cross_validate_group_kfold(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    groups = Xi.entries // 4  # four systems per group, given per entry
    cv = GroupKFold(n_splits=4)
    result = cross_validate(
        TensorMapLstsq(rcond=1e-4),
        Xi,
        yi,
        groups=groups,
        cv=cv,
        scoring=SCORING,
        return_train_score=True,
        return_estimator=True,
        error_score="raise",
    )
    splits = list(cv.split(np.arange(N_SYSTEMS), groups=groups))
    for k, (train, test) in enumerate(splits):
        assert len(set(groups[train]) & set(groups[test])) == 0
        for name, metric, gradient in (
            ("r2", "r2", None),
            ("neg_rmse_forces", "neg_rmse", "positions"),
        ):
            np.testing.assert_allclose(
                result[f"test_{name}"][k],
                _hand_score(X, y, train, test, 1e-4, metric, gradient),
                rtol=RTOL,
            )
            np.testing.assert_allclose(
                result[f"train_{name}"][k],
                _hand_score(X, y, train, train, 1e-4, metric, gradient),
                rtol=RTOL,
            )
        weights = metatensor.lstsq(_slice(X, train), _slice(y, train), rcond=1e-4)
        for key, block in result["estimator"][k].weights_.items():
            np.testing.assert_allclose(block.values, weights.block(key).values, rtol=1e-6)


def test_cross_val_score_shuffle_split(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    cv = ShuffleSplit(4, test_size=0.25, random_state=0)
    scores = cross_val_score(TensorMapLstsq(rcond=1e-12), Xi, yi, cv=cv, error_score="raise")
    hand = [_hand_score(X, y, tr, te, 1e-12) for tr, te in cv.split(np.arange(N_SYSTEMS))]
    np.testing.assert_allclose(scores, hand, rtol=RTOL)


def test_validation_curve(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    train_scores, test_scores = validation_curve(
        TensorMapLstsq(),
        Xi,
        yi,
        param_name="rcond",
        param_range=RCONDS,
        cv=KFold(3),
        scoring=metrics.scorer("neg_rmse"),
        error_score="raise",
    )
    for k, (train, test) in enumerate(KFold(3).split(np.arange(N_SYSTEMS))):
        for i, rcond in enumerate(RCONDS):
            np.testing.assert_allclose(
                test_scores[i, k], _hand_score(X, y, train, test, rcond, "neg_rmse"), rtol=RTOL
            )
            np.testing.assert_allclose(
                train_scores[i, k], _hand_score(X, y, train, train, rcond, "neg_rmse"), rtol=RTOL
            )


def test_learning_curve(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    cv = KFold(4, shuffle=True, random_state=2)
    sizes, train_scores, test_scores = learning_curve(
        TensorMapLstsq(rcond=1e-12),
        Xi,
        yi,
        train_sizes=[0.5, 1.0],
        cv=cv,
        error_score="raise",
    )
    assert sizes.tolist() == [6, 12]
    for k, (train, test) in enumerate(cv.split(np.arange(N_SYSTEMS))):
        for i, size in enumerate(sizes):
            subset = train[:size]
            np.testing.assert_allclose(
                test_scores[i, k], _hand_score(X, y, subset, test, 1e-12), rtol=RTOL
            )
            np.testing.assert_allclose(
                train_scores[i, k], _hand_score(X, y, subset, subset, 1e-12), rtol=RTOL
            )


def test_train_test_split(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    X_train, X_test, y_train, y_test = train_test_split(Xi, yi, test_size=0.25, random_state=0)
    train, test = train_test_split(np.arange(N_SYSTEMS), test_size=0.25, random_state=0)
    for got, tensor, systems in (
        (X_train, X, train),
        (X_test, X, test),
        (y_train, y, train),
        (y_test, y, test),
    ):
        assert isinstance(got, IndexedTensorMap)
        np.testing.assert_array_equal(got.entries, systems)
        assert metatensor.equal(got.tensor, _slice(tensor, np.sort(systems)))
    model = TensorMapLstsq(rcond=1e-12).fit(X_train, y_train)
    np.testing.assert_allclose(
        model.score(X_test, y_test), _hand_score(X, y, train, test, 1e-12), rtol=RTOL
    )


# ---------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------


def test_pipeline_scaler_then_lstsq(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    pipeline = make_pipeline(TensorMapStandardScaler(), TensorMapLstsq())
    cv = KFold(4, shuffle=True, random_state=3)
    search = GridSearchCV(
        pipeline,
        {"tensormaplstsq__rcond": RCONDS},
        cv=cv,
        scoring=metrics.scorer("neg_mae", gradient="positions"),
        error_score="raise",
    ).fit(Xi, yi)
    splits = list(cv.split(np.arange(N_SYSTEMS)))
    for i, rcond in enumerate(RCONDS):
        for k, (train, test) in enumerate(splits):
            expected = _hand_score(
                X, y, train, test, rcond, "neg_mae", "positions", transform=_standardized
            )
            np.testing.assert_allclose(
                search.cv_results_[f"split{k}_test_score"][i], expected, rtol=RTOL
            )


def test_pipeline_sum_over_atoms_then_lstsq(per_system_data):
    X, y = per_system_data
    Xi, yi = _indexed(X, y)
    pipeline = make_pipeline(
        TensorMapFunctionTransformer(metatensor.sum_over_samples, kw_args={"sample_names": "atom"}),
        TensorMapLstsq(rcond=1e-12),
    )
    cv = KFold(4, shuffle=True, random_state=4)
    result = cross_validate(
        pipeline,
        Xi,
        yi,
        cv=cv,
        scoring={
            "r2": metrics.scorer("r2"),
            "mae": metrics.scorer("neg_mae", gradient="positions"),
        },
        error_score="raise",
    )
    for k, (train, test) in enumerate(cv.split(np.arange(N_SYSTEMS))):
        np.testing.assert_allclose(
            result["test_r2"][k],
            _hand_score(X, y, train, test, 1e-12, "r2", transform=_summed),
            rtol=RTOL,
        )
        np.testing.assert_allclose(
            result["test_mae"][k],
            _hand_score(X, y, train, test, 1e-12, "neg_mae", "positions", transform=_summed),
            rtol=RTOL,
        )


# ---------------------------------------------------------------------------------
# cross_val_predict
# ---------------------------------------------------------------------------------


def _hand_out_of_fold(X, y, splits, rcond, transform=_identity):
    """Out-of-fold predictions in the layout of y, filled fold by fold by hand.

    Returns {key tuple: (values, positions gradient values)}.
    """
    out = {
        _key(key): (
            np.full(block.values.shape, np.nan),
            np.full(block.gradient("positions").values.shape, np.nan),
        )
        for key, block in y.items()
    }
    for train, test in splits:
        predicted = _hand_predict(
            _slice(X, train), _slice(y, train), _slice(X, test), rcond, transform
        )
        for key, block in y.items():
            values, gradients = out[_key(key)]
            systems = block.samples.column("system")
            rows = np.flatnonzero(np.isin(systems, test))
            values[rows] = predicted.block(key).values
            parents = block.gradient("positions").samples.column("sample")
            gradient_rows = np.flatnonzero(np.isin(systems[parents], test))
            gradients[gradient_rows] = predicted.block(key).gradient("positions").values
    return out


def _key(key):
    return tuple(int(v) for v in key.values)


def _check_out_of_fold(result, y, expected):
    assert result.keys == y.keys
    for key, block in result.items():
        truth = y.block(key)
        values, gradients = expected[_key(key)]
        assert block.samples == truth.samples
        assert block.properties == truth.properties
        assert block.gradient("positions").samples == truth.gradient("positions").samples
        assert not np.isnan(values).any() and not np.isnan(gradients).any()
        np.testing.assert_allclose(block.values, values, rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(
            block.gradient("positions").values, gradients, rtol=1e-6, atol=1e-10
        )


def test_cross_val_predict(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    cv = KFold(4, shuffle=True, random_state=5)
    result = cross_val_predict(TensorMapLstsq(rcond=1e-4), Xi, yi, cv=cv)
    assert isinstance(result, IndexedTensorMap)
    np.testing.assert_array_equal(result.entries, Xi.entries)
    expected = _hand_out_of_fold(X, y, list(cv.split(np.arange(N_SYSTEMS))), 1e-4)
    _check_out_of_fold(result.tensor, y, expected)
    # a metric of the out-of-fold predictions, as for a parity plot
    hand = np.concatenate(
        [(block.values - expected[_key(key)][0]).ravel() for key, block in y.items()]
    )
    np.testing.assert_allclose(metrics.rmse(yi, result), np.sqrt(np.mean(hand**2)), rtol=1e-6)


def test_cross_val_predict_tensor_maps_and_groups(data):
    X, y = data
    groups = np.arange(N_SYSTEMS) % 3
    result = cross_val_predict(TensorMapLstsq(rcond=1e-10), X, y, cv=GroupKFold(3), groups=groups)
    assert isinstance(result, TensorMap)
    splits = list(GroupKFold(3).split(np.arange(N_SYSTEMS), groups=groups))
    _check_out_of_fold(result, y, _hand_out_of_fold(X, y, splits, 1e-10))


def test_cross_val_predict_pipeline_in_parallel(per_system_data):
    X, y = per_system_data
    Xi, yi = _indexed(X, y)
    pipeline = make_pipeline(
        TensorMapFunctionTransformer(metatensor.sum_over_samples, kw_args={"sample_names": "atom"}),
        TensorMapLstsq(rcond=1e-12),
    )
    with parallel_config(max_nbytes=1):
        result = cross_val_predict(pipeline, Xi, yi, cv=5, n_jobs=2)
    splits = list(KFold(5).split(np.arange(N_SYSTEMS)))
    _check_out_of_fold(result.tensor, y, _hand_out_of_fold(X, y, splits, 1e-12, _summed))


def test_cross_val_predict_errors(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    with pytest.raises(
        ValueError,
        match=r"cross_val_predict: the test folds of cv must hold every 'system' entry "
        r"exactly once .* are in no test fold \(\d+ in all\)",
    ):
        cross_val_predict(TensorMapLstsq(), Xi, yi, cv=ShuffleSplit(2, random_state=0))
    overlapping = [(np.arange(8, 16), np.arange(0, 10)), (np.arange(0, 8), np.arange(6, 16))]
    with pytest.raises(ValueError, match=r"\[6, 7, 8, 9\] in more than one \(4 in all\)"):
        cross_val_predict(TensorMapLstsq(), Xi, yi, cv=overlapping)
    with pytest.raises(
        ValueError, match=r"cross_val_predict: X and y index different 'system' entries"
    ):
        cross_val_predict(TensorMapLstsq(), Xi[:10], yi[2:12], cv=2)
    with pytest.raises(TypeError, match="cross_val_predict: X must be a metatensor.TensorMap"):
        cross_val_predict(TensorMapLstsq(), np.zeros((16, 2)), yi)


def test_cross_val_predict_checks_the_splits_before_any_fit(data):
    X, y = data
    Xi, yi = _indexed(X, y)
    # a driver that fit refuses: the splits are checked before any fit
    unfit = TensorMapLstsq(driver="banana")
    train = np.arange(2, N_SYSTEMS)
    with pytest.raises(
        ValueError,
        match=r"^cross_val_predict: the test indices of split 0 of cv hold 16, out of range "
        r"for the 16 'system' entries of X and y",
    ):
        cross_val_predict(unfit, Xi, yi, cv=[(train, np.array([3, N_SYSTEMS]))])
    with pytest.raises(ValueError, match=r"^cross_val_predict: split 1 of cv has no training"):
        cross_val_predict(unfit, Xi, yi, cv=[(train, np.arange(2)), ([], train)])
    with pytest.raises(
        ValueError, match=r"^cross_val_predict: groups must give the group of each of the 16 "
    ):
        cross_val_predict(unfit, Xi, yi, cv=GroupKFold(2), groups=np.arange(5))
    # negative indices count from the end, boolean masks select, as numpy's
    first_half = np.arange(N_SYSTEMS) < 8
    halves = [(np.arange(8, 16) - 16, first_half), (first_half, np.arange(8, 16) - 16)]
    result = cross_val_predict(TensorMapLstsq(rcond=1e-10), Xi, yi, cv=halves)
    expected = _hand_out_of_fold(X, y, list(KFold(2).split(np.arange(N_SYSTEMS))), 1e-10)
    _check_out_of_fold(result.tensor, y, expected)


def test_cross_val_predict_torch(data):
    torch = pytest.importorskip("torch")
    from builders import to_torch

    X, y = data
    Xi, yi = _indexed(to_torch(X), to_torch(y))
    result = cross_val_predict(TensorMapLstsq(rcond=1e-4), Xi, yi.tensor, cv=4)
    assert isinstance(result, IndexedTensorMap)
    assert isinstance(result.tensor.block(0).values, torch.Tensor)
    splits = list(KFold(4).split(np.arange(N_SYSTEMS)))
    expected = _hand_out_of_fold(X, y, splits, 1e-4)
    numpy_result = map_arrays(result.tensor, lambda array: array.numpy())
    _check_out_of_fold(numpy_result, y, expected)


class _Predicts(BaseEstimator):
    """Fits nothing; predicts ``function(X)``, to make odd predictions."""

    def __init__(self, function=None):
        self.function = function

    def fit(self, X, y):
        self.y_ = y
        return self

    def predict(self, X):
        return self.function(self, X)


def _features(estimator, X):
    return X


def _array(estimator, X):
    return np.zeros(len(X))


def _training_targets(estimator, X):
    return estimator.y_


def _features_without_gradients(estimator, X):
    return metatensor.remove_gradients(X.tensor)


def _first_block(estimator, X):
    return metatensor.slice(X.tensor, "samples", Labels(["atom"], np.array([[0]])))


def _without_block_6(estimator, X):
    return metatensor.drop_blocks(X.tensor, Labels(["center_type"], np.array([[6]])))


def _gradients_unless_system_0(estimator, X):
    return metatensor.remove_gradients(X.tensor) if 0 in X.entries else X.tensor


def _one_property_unless_system_0(estimator, X):
    if 0 in X.entries:
        return metatensor.slice(X.tensor, "properties", Labels(["feature"], np.array([[0]])))
    return X.tensor


def test_cross_val_predict_any_layout_of_y(data):
    """Predictions are placed by their labels: an estimator predicting the
    features in y's layout gives the features back."""
    X, y = data
    Xi, yi = _indexed(X, y)
    result = cross_val_predict(
        _Predicts(_features), Xi, yi, cv=KFold(3, shuffle=True, random_state=0)
    )
    assert metatensor.equal(result.tensor, X)
    no_gradients = cross_val_predict(_Predicts(_features_without_gradients), Xi, yi, cv=3).tensor
    assert no_gradients.block(0).gradients_list() == []
    assert metatensor.equal(no_gradients, metatensor.remove_gradients(X))


@pytest.mark.parametrize(
    "function, error, message",
    [
        (_array, TypeError, "predict must return a TensorMap or an IndexedTensorMap, got ndarray"),
        (_training_targets, ValueError, r"block \(center_type=1\) samples are predicted in more"),
        (_first_block, ValueError, r"block \(center_type=1\) has samples of y never predicted"),
        (_without_block_6, ValueError, r"blocks \['\(center_type=6\)'\] of y were never predicted"),
        (_gradients_unless_system_0, ValueError, "has other gradients in different folds"),
        (_one_property_unless_system_0, ValueError, "has other properties in different folds"),
    ],
)
def test_cross_val_predict_bad_predictions(data, function, error, message):
    Xi, yi = _indexed(*data)
    with pytest.raises(error, match=f"cross_val_predict: .*{message}"):
        cross_val_predict(_Predicts(function), Xi, yi, cv=3)


def test_cross_val_predict_predictions_outside_y(data, per_system_data):
    X, y = data
    Xi, yi = _indexed(X, y)
    with pytest.raises(ValueError, match="'positions' gradient that y does not have"):
        cross_val_predict(_Predicts(_features), Xi, metatensor.remove_gradients(y), cv=3)
    fewer_keys = metatensor.drop_blocks(y, Labels(["center_type"], np.array([[6]])))
    with pytest.raises(ValueError, match=r"a block \(center_type=6\) that y does not have"):
        cross_val_predict(_Predicts(_features), Xi, fewer_keys, cv=3)
    renamed = metatensor.rename_dimension(X, "keys", "center_type", "species")
    with pytest.raises(ValueError, match=r"keys are named \['species'\] in the predictions"):
        cross_val_predict(_Predicts(_features), IndexedTensorMap(renamed), yi, cv=3)
    per_atom, per_system = per_system_data
    with pytest.raises(
        ValueError,
        match=r"samples are named \['system', 'atom'\] in the predictions but \['system'\] in y",
    ):
        cross_val_predict(_Predicts(_features), IndexedTensorMap(per_atom), per_system, cv=3)
    first_atoms = metatensor.slice(y, "samples", Labels(["atom"], np.array([[0]])))
    with pytest.raises(ValueError, match=r"block \(center_type=1\) samples that y does not have"):
        cross_val_predict(_Predicts(_features), Xi, first_atoms, cv=3)
    other_atoms = metatensor.rename_dimension(X, "samples", "atom", "site")
    with pytest.raises(ValueError, match=r"samples are named \['system', 'site'\]"):
        cross_val_predict(_Predicts(_features), IndexedTensorMap(other_atoms), yi, cv=3)


def _cuda_available():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed in the tests
        return False
    return torch.cuda.is_available()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not _cuda_available(), reason="no CUDA")),
    ],
)
def test_torch_pipeline_and_cross_val_predict(data, device):
    """Slicing, scaling, fitting and assembling keep torch tensors on their device."""
    torch = pytest.importorskip("torch")
    from builders import to_torch

    X, y = data
    Xi, yi = _indexed(to_torch(X, device=device), to_torch(y, device=device))
    cv = KFold(4)
    pipeline = make_pipeline(TensorMapStandardScaler(), TensorMapLstsq(rcond=1e-4))
    result = cross_val_predict(pipeline, Xi, yi, cv=cv)
    block = result.tensor.block(0)
    assert torch.is_tensor(block.values) and block.values.device.type == device
    assert block.gradient("positions").values.device.type == device
    splits = list(cv.split(np.arange(N_SYSTEMS)))
    expected = _hand_out_of_fold(X, y, splits, 1e-4, transform=_standardized)
    numpy_result = map_arrays(result.tensor, lambda array: array.cpu().numpy())
    _check_out_of_fold(numpy_result, y, expected)
    scores = cross_val_score(pipeline, Xi, yi, cv=cv, error_score="raise")
    hand = [_hand_score(X, y, tr, te, 1e-4, transform=_standardized) for tr, te in splits]
    np.testing.assert_allclose(scores, hand, rtol=1e-6)
    assert Xi[[1, 3]].tensor.block(0).values.device.type == device
