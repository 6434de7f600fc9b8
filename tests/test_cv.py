"""TensorMapLstsqCV against GridSearchCV over TensorMapLstsq(driver="gelsd")."""

import pickle
import re
import runpy
import time
from pathlib import Path

import metatensor
import numpy as np
import pytest
from builders import make_block, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import get_scorer, make_scorer, mean_squared_error
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, ShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError

import skmetalstsq
import skmetalstsq._cv
from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics

RCONDS = [float(r) for r in np.logspace(-12, -1, 12)]
EXAMPLE = Path(__file__).parents[1] / "examples" / "rcond_cross_validation.py"


def decades_pair(
    rng,
    informative=(4, 8),
    n_systems=20,
    n_atoms=1,
    n_features=12,
    n_targets=2,
    n_components=0,
    noise=0.5,
    decades=11,
):
    """(X, y) where the cut-off matters: feature scales span ``decades`` decades.

    Feature j is ``10**(-j * decades / (n_features - 1))`` times a unit-scale
    latent variable; block b's targets depend (with normal weights on the latent
    variables) on its first ``informative[b]`` features only, plus noise. Cutting
    singular values below the last informative scale removes pure over-fitting;
    cutting above it removes signal, so scores vary by tenths and the best rcond
    differs between blocks.
    """
    keys = Labels(["center_type"], np.arange(len(informative)).reshape(-1, 1))
    scales = np.logspace(0, -decades, n_features)
    x_blocks, y_blocks = [], []
    for n_informative in informative:
        latent = make_block(rng, n_systems, n_atoms, n_features, n_components)
        weights = np.zeros((n_features, n_targets))
        weights[:n_informative] = rng.normal(size=(n_informative, n_targets))

        def pair(z, weights=weights):
            y = z @ weights + noise * rng.normal(size=(*z.shape[:-1], n_targets))
            return z * scales, y

        x_values, y_values = pair(latent.values)
        x = TensorBlock(x_values, latent.samples, latent.components, latent.properties)
        targets = Labels.range("target", n_targets)
        y = TensorBlock(y_values, latent.samples, latent.components, targets)
        gradient = latent.gradient("positions")
        x_gradient, y_gradient = pair(gradient.values)
        for block, values in ((x, x_gradient), (y, y_gradient)):
            block.add_gradient(
                "positions",
                TensorBlock(values, gradient.samples, gradient.components, block.properties),
            )
        x_blocks.append(x)
        y_blocks.append(y)
    return (
        IndexedTensorMap(TensorMap(keys, x_blocks), "system"),
        IndexedTensorMap(TensorMap(keys, y_blocks), "system"),
    )


def neg_mae_of_forces(estimator, X, y):
    """A scorer that is not one of skmetalstsq.metrics' own."""
    return -metrics.mae(y, estimator.predict(X), gradient="positions")


def split_scores(results, n_splits, name="score"):
    return np.array([results[f"split{k}_test_{name}"] for k in range(n_splits)])


def from_single_blocks(keys, tensors):
    """One TensorMap of the only block of each of ``tensors``, under ``keys``."""
    return TensorMap(keys, [tensor.block(0).copy() for tensor in tensors])


def single_block(data, position):
    tensor = data.tensor
    keys = Labels(tensor.keys.names, np.asarray(tensor.keys.values)[[position]])
    return data.with_tensor(TensorMap(keys, [tensor.block(position).copy()]))


@pytest.fixture(scope="module")
def data():
    return decades_pair(np.random.default_rng(0))


@pytest.mark.parametrize(
    "scoring, n_jobs, shape",
    [
        (None, None, {}),
        (None, 2, {"n_atoms": 2, "n_components": 2}),
        ("neg_mae", None, {}),
        (metrics.scorer("neg_rmse", gradient="positions"), None, {"n_atoms": 2}),
        (neg_mae_of_forces, None, {}),
    ],
)
def test_matches_grid_search(scoring, n_jobs, shape):
    X, y = decades_pair(np.random.default_rng(1), **shape)
    cv = KFold(4, shuffle=True, random_state=0)
    # a name means the skmetalstsq.metrics scorer of that name
    grid_scoring = metrics.scorer(scoring) if isinstance(scoring, str) else scoring
    search = GridSearchCV(
        TensorMapLstsq(driver="gelsd"), {"rcond": RCONDS}, cv=cv, scoring=grid_scoring
    ).fit(X, y)
    model = TensorMapLstsqCV(rconds=RCONDS, cv=cv, scoring=scoring, n_jobs=n_jobs).fit(X, y)

    expected = split_scores(search.cv_results_, 4)
    # the cut-off matters on this data: the scores differ visibly between candidates
    assert np.ptp(search.cv_results_["mean_test_score"]) > 0.05
    np.testing.assert_allclose(split_scores(model.cv_results_, 4), expected, rtol=0, atol=1e-8)
    for name in ("mean_test_score", "std_test_score"):
        np.testing.assert_allclose(model.cv_results_[name], search.cv_results_[name], atol=1e-8)
    np.testing.assert_array_equal(
        model.cv_results_["rank_test_score"], search.cv_results_["rank_test_score"]
    )
    assert model.rcond_ == search.best_params_["rcond"]
    assert model.best_index_ == search.best_index_
    assert model.best_score_ == pytest.approx(search.best_score_, abs=1e-8)
    assert model.n_splits_ == 4

    reference = metatensor.lstsq(X.tensor, y.tensor, rcond=model.rcond_, driver="gelsd")
    for key, block in reference.items():
        np.testing.assert_allclose(model.weights_.block(key).values, block.values, atol=1e-10)


@pytest.mark.parametrize("group_factors", [False, True])
def test_both_ways_of_factorising_match_grid_search(monkeypatch, group_factors):
    # each split's training rows decomposed directly, or through the QR factors of
    # groups of entries (here: the entries in the same training sets), stacked
    monkeypatch.setattr(skmetalstsq._cv, "_use_group_factors", lambda *args: group_factors)
    X, y = decades_pair(np.random.default_rng(4), n_atoms=2, n_components=2)
    cv = list(ShuffleSplit(4, test_size=0.3, random_state=0).split(np.arange(len(X))))
    rconds = [None, *RCONDS]
    search = GridSearchCV(TensorMapLstsq(driver="gelsd"), {"rcond": rconds}, cv=cv).fit(X, y)
    model = TensorMapLstsqCV(rconds=rconds, cv=cv).fit(X, y)
    np.testing.assert_allclose(
        split_scores(model.cv_results_, 4), split_scores(search.cv_results_, 4), atol=1e-8
    )
    assert model.rcond_ == search.best_params_["rcond"]


def test_the_choice_is_interior(data):
    # on this data neither end of the candidates wins, so choosing is meaningful
    X, y = data
    model = TensorMapLstsqCV(rconds=RCONDS, cv=KFold(4, shuffle=True, random_state=0))
    model.fit(X, y)
    assert 0 < model.best_index_ < len(RCONDS) - 1


@pytest.mark.parametrize("cv_kind", ["int", "group", "shuffle", "list"])
def test_splitters_and_groups(data, cv_kind):
    X, y = data
    groups = np.arange(len(X)) % 5 if cv_kind == "group" else None
    cv = {
        "int": 3,
        "group": GroupKFold(5),
        "shuffle": ShuffleSplit(3, test_size=0.3, random_state=0),
        "list": [(np.arange(0, 14), np.arange(14, 20)), (np.arange(6, 20), np.arange(0, 6))],
    }[cv_kind]
    search = GridSearchCV(TensorMapLstsq(driver="gelsd"), {"rcond": RCONDS}, cv=cv)
    search.fit(X, y, groups=groups)
    model = TensorMapLstsqCV(rconds=RCONDS, cv=cv).fit(X, y, groups=groups)
    n_splits = search.n_splits_
    np.testing.assert_allclose(
        split_scores(model.cv_results_, n_splits),
        split_scores(search.cv_results_, n_splits),
        atol=1e-8,
    )
    assert model.rcond_ == search.best_params_["rcond"]


def test_per_block_matches_a_search_on_each_block(data):
    X, y = data
    cv = KFold(4, shuffle=True, random_state=2)
    model = TensorMapLstsqCV(rconds=RCONDS, cv=cv, per_block=True).fit(X, y)
    splits = list(cv.split(np.arange(len(X))))

    for position, key in enumerate(X.tensor.keys):
        key = tuple(int(v) for v in key.values)
        X_block, y_block = single_block(X, position), single_block(y, position)
        search = GridSearchCV(TensorMapLstsq(driver="gelsd"), {"rcond": RCONDS}, cv=splits)
        search.fit(X_block, y_block)
        name = model.block_names_[key]
        assert name == f"center_type={key[0]}"
        np.testing.assert_allclose(
            split_scores(model.cv_results_, 4, name),
            split_scores(search.cv_results_, 4),
            atol=1e-8,
        )
        np.testing.assert_array_equal(
            model.cv_results_[f"rank_test_{name}"], search.cv_results_["rank_test_score"]
        )
        assert model.rcond_[key] == search.best_params_["rcond"]
        assert model.best_index_[key] == search.best_index_
        reference = metatensor.lstsq(X_block.tensor, y_block.tensor, rcond=model.rcond_[key])
        np.testing.assert_allclose(
            model.weights_.block(position).values, reference.block(0).values, atol=1e-10
        )
    # blocks of different physics want different cut-offs on this data
    assert len(set(model.rcond_.values())) > 1

    # best_score_: the pooled R^2 with each block at its own choice, by hand
    pooled = []
    for train, test in splits:
        predictions = []
        for position, key in enumerate(X.tensor.keys):
            key = tuple(int(v) for v in key.values)
            X_train = single_block(X, position)[train].tensor
            weights = metatensor.lstsq(
                X_train, single_block(y, position)[train].tensor, rcond=model.rcond_[key]
            )
            predictions.append(metatensor.dot(single_block(X, position)[test].tensor, weights))
        predicted = from_single_blocks(X.tensor.keys, predictions)
        pooled.append(metrics.r2(y[test].tensor, predicted))
    assert model.best_score_ == pytest.approx(np.mean(pooled), abs=1e-8)


def test_one_decomposition_per_block_per_fold(data, monkeypatch):
    X, y = data
    created = []

    class Counting(skmetalstsq._cv.SVDFactorization):
        def __init__(self, *args, **kwargs):
            created.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(skmetalstsq._cv, "SVDFactorization", Counting)
    rconds = np.logspace(-12, -1, 20)
    TensorMapLstsqCV(rconds=rconds, cv=3, per_block=True).fit(X, y)
    assert len(created) == 3 * len(X.tensor.keys)


def test_ties_go_to_the_first_candidate_and_none_is_a_candidate():
    # well-conditioned data: every cut-off below 1e-3 keeps every singular value
    X, y = decades_pair(np.random.default_rng(3), n_features=3, informative=(3,), decades=0.5)
    rconds = [1e-13, None, 1e-9, 0.9]
    grid = {"rcond": rconds, "alpha": [0.0]}
    search = GridSearchCV(TensorMapLstsq(driver="gelsd"), grid, cv=3).fit(X, y)
    model = TensorMapLstsqCV(rconds=rconds, cv=3).fit(X, y)
    np.testing.assert_array_equal(
        model.cv_results_["rank_test_score"], search.cv_results_["rank_test_score"]
    )
    np.testing.assert_array_equal(model.cv_results_["rank_test_score"], [1, 1, 1, 4])
    assert model.rcond_ == 1e-13 and search.best_params_["rcond"] == 1e-13
    assert model.cv_results_["params"] == search.cv_results_["params"]
    assert list(model.cv_results_["param_rcond"]) == list(search.cv_results_["param_rcond"])


def test_cv_results_keys(data):
    X, y = data
    grid = {"rcond": RCONDS[:3], "alpha": [0.0]}
    search = GridSearchCV(TensorMapLstsq(driver="gelsd"), grid, cv=3).fit(X, y)
    model = TensorMapLstsqCV(rconds=RCONDS[:3], cv=3, per_block=True).fit(X, y)
    # every key of GridSearchCV's, the fit and score times included
    expected = set(search.cv_results_)
    block_keys = {
        f"{kind}_test_center_type={value}"
        for value in (0, 1)
        for kind in ("split0", "split1", "split2", "mean", "std", "rank")
    }
    assert set(model.cv_results_) == expected | block_keys
    np.testing.assert_array_equal(model.cv_results_["param_rcond"], RCONDS[:3])


def test_torch_data_and_device(data):
    torch = pytest.importorskip("torch")
    X, y = data
    cv = KFold(4, shuffle=True, random_state=0)
    scoring = metrics.scorer("neg_rmse", gradient="positions")
    search = GridSearchCV(
        TensorMapLstsq(driver="gelsd"), {"rcond": RCONDS}, cv=cv, scoring=scoring
    ).fit(X, y)
    expected = split_scores(search.cv_results_, 4)

    X_torch, y_torch = X.with_tensor(to_torch(X.tensor)), y.with_tensor(to_torch(y.tensor))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runs = [((X_torch, y_torch), None), ((X, y), "cpu")] + [((X, y), d) for d in devices[1:]]
    for (X_run, y_run), device in runs:
        model = TensorMapLstsqCV(rconds=RCONDS, cv=cv, scoring=scoring, device=device)
        model.fit(X_run, y_run)
        np.testing.assert_allclose(split_scores(model.cv_results_, 4), expected, atol=1e-8)
        assert model.rcond_ == search.best_params_["rcond"]
        weights = model.weights_.block(0).values
        assert isinstance(weights, torch.Tensor)
        predicted = model.predict(X_run)
        assert type(predicted.tensor.block(0).values) is type(X_run.tensor.block(0).values)


def test_fitted_model_behaves_like_tensormaplstsq(data):
    X, y = data
    model = TensorMapLstsqCV(rconds=RCONDS, cv=3, per_block=True).fit(X, y)
    weights = [
        metatensor.lstsq(single_block(X, b).tensor, single_block(y, b).tensor, rcond)
        for b, rcond in enumerate(model.rcond_.values())
    ]
    expected = from_single_blocks(
        X.tensor.keys,
        [metatensor.dot(single_block(X, b).tensor, w) for b, w in enumerate(weights)],
    )
    predicted = model.predict(X)
    assert isinstance(predicted, IndexedTensorMap)
    assert metatensor.allclose(predicted.tensor, expected, atol=1e-10)
    assert model.score(X, y) == pytest.approx(metrics.r2(y, expected), abs=1e-12)
    assert isinstance(model.predict(X.tensor), TensorMap)

    restored = pickle.loads(pickle.dumps(model))
    assert metatensor.allclose(restored.predict(X).tensor, expected, atol=1e-10)
    assert restored.rcond_ == model.rcond_

    fresh = clone(model)
    assert fresh.get_params() == model.get_params()
    assert not hasattr(fresh, "weights_")

    pipeline = Pipeline(
        [
            ("identity", FunctionTransformer(None)),
            ("lstsq", TensorMapLstsqCV(rconds=RCONDS, cv=3, per_block=True)),
        ]
    ).fit(X, y)
    assert metatensor.allclose(pipeline.predict(X).tensor, expected, atol=1e-10)


def test_nested_in_a_grid_search(data):
    X, y = data
    outer = KFold(3)
    search = GridSearchCV(
        TensorMapLstsqCV(rconds=RCONDS, cv=3), {"per_block": [False, True]}, cv=outer
    ).fit(X, y)
    for k, (train, test) in enumerate(outer.split(np.arange(len(X)))):
        for c, per_block in enumerate([False, True]):
            inner = TensorMapLstsqCV(rconds=RCONDS, cv=3, per_block=per_block)
            expected = inner.fit(X[train], y[train]).score(X[test], y[test])
            assert search.cv_results_[f"split{k}_test_score"][c] == pytest.approx(expected)
    assert hasattr(search.best_estimator_, "rcond_")


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"rconds": []}, ValueError, "rconds is empty"),
        ({"rconds": [1e-6, -1e-3]}, ValueError, r"numbers in \[0, 1\) or None, got -0.001"),
        ({"rconds": [np.nan]}, ValueError, r"numbers in \[0, 1\)"),
        ({"rconds": [1.0]}, ValueError, r"numbers in \[0, 1\) or None, got 1.0 at position 0"),
        ({"rconds": [True]}, ValueError, r"numbers in \[0, 1\) or None, got True"),
        ({"alphas": [-1.0]}, ValueError, r"alphas\[0\] must be a finite number >= 0, got -1.0"),
        ({"alphas": []}, ValueError, "alphas is empty"),
        ({"scoring": "banana"}, InvalidParameterError, "'scoring' parameter"),
        ({"cv": 1}, InvalidParameterError, "'cv' parameter"),
        ({"device": "tpu"}, ValueError, "device must be"),
        (
            {"scoring": metrics.scorer("r2", gradient="cell")},
            ValueError,
            r"'cell' gradient, but block \(center_type=0\) has the gradients \['positions'\]",
        ),
        (
            {"scoring": neg_mae_of_forces, "per_block": True},
            ValueError,
            "per_block=True needs a score per block",
        ),
    ],
)
def test_bad_parameters(data, params, error, message):
    X, y = data
    with pytest.raises(error, match=message):
        TensorMapLstsqCV(**params).fit(X, y)


def test_plain_tensor_maps_are_refused(data):
    X, y = data
    with pytest.raises(TypeError, match=r"X is a metatensor.TensorMap.*IndexedTensorMap\(tensor"):
        TensorMapLstsqCV(cv=3).fit(X.tensor, y.tensor)
    with pytest.raises(TypeError, match="y must be an IndexedTensorMap, got ndarray"):
        TensorMapLstsqCV(cv=3).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="different 'system' entries"):
        TensorMapLstsqCV(cv=3).fit(X[:10], y[5:15])


def test_example_runs(capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runpy.run_path(str(EXAMPLE), run_name="__main__")
    plt.close("all")
    out = capsys.readouterr().out
    assert re.search(r"chosen rcond: [0-9.e+-]+", out)
    assert re.search(r"per block: .*center_type=", out)


# ---------------------------------------------------------------------------------
# scikit-learn's conventions: groups and splits, scalar candidates, callable scorers
# on arrays, GridSearchCV's attributes and result keys
# ---------------------------------------------------------------------------------


def array_pair(seed=0, n_samples=24, n_targets=None, scales=(1.0, 1e-2, 1e-5, 1e-8)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, 4)) * scales
    shape = (n_samples,) if n_targets is None else (n_samples, n_targets)
    y = (X @ rng.normal(size=(4, n_targets or 1))).reshape(shape) + 0.1 * rng.normal(size=shape)
    return X, y


N = 20  # the entries of the data fixture


@pytest.mark.parametrize(
    "cv, groups, message",
    [
        (GroupKFold(3), np.arange(10) % 3, "of the 20 'system' entries of X and y, got 10 entries"),
        (GroupKFold(3), np.arange(30) % 3, "of the 20 'system' entries of X and y, got 30 entries"),
        (3, np.zeros((N, 2)), r"got an array of shape \(20, 2\)"),
        ([(np.arange(10), np.arange(10, 21))], None, "split 0 of cv hold 20, out of range"),
        (
            [(np.arange(10), np.arange(10, 20)), (np.arange(-21, -10), np.arange(10))],
            None,
            "training indices of split 1 of cv hold -21, out of range for the 20 'system'",
        ),
        (
            [(np.arange(10), np.array([10.0, 11.0]))],
            None,
            "integers or booleans, got an array of dtype float64",
        ),
        (
            [(np.arange(N) < 10, np.ones(N + 1, bool))],
            None,
            "boolean mask of 21 values for the 20 'system' entries of X and y",
        ),
        ([(np.array([0, 1, 1]), np.arange(10, 20))], None, "hold the entry 1 more than once"),
        ([(np.array([], int), np.arange(N))], None, "split 0 of cv has no training entries"),
        ([], None, "cv gave no splits"),
    ],
)
def test_groups_and_splits_are_checked_before_any_work(data, monkeypatch, cv, groups, message):
    X, y = data

    def no_work(*args, **kwargs):
        raise AssertionError("the blocks were stacked before the check")

    monkeypatch.setattr(skmetalstsq._cv, "block_systems", no_work)
    with pytest.raises(ValueError, match=rf"TensorMapLstsqCV.fit: .*{message}"):
        TensorMapLstsqCV(rconds=RCONDS[:2], cv=cv).fit(X, y, groups=groups)


def test_negative_and_boolean_split_indices_select_as_in_grid_search(data):
    X, y = data
    cv = [
        (np.arange(-N, -6), np.arange(-6, 0)),  # entries 0..13 and 14..19
        (np.arange(N) >= 6, np.arange(N) < 6),
    ]
    search = GridSearchCV(TensorMapLstsq(driver="gelsd"), {"rcond": RCONDS}, cv=cv).fit(X, y)
    model = TensorMapLstsqCV(rconds=RCONDS, cv=cv).fit(X, y)
    np.testing.assert_allclose(
        split_scores(model.cv_results_, 2), split_scores(search.cv_results_, 2), atol=1e-8
    )


@pytest.mark.parametrize(
    "alphas, rconds",
    [(1.0, None), (np.float64(1.0), 1e-6), (np.array(1.0), np.array(1e-6)), (3, [1e-6])],
)
def test_a_single_candidate_as_a_number(alphas, rconds):
    # RidgeCV(alphas=1.0) takes one alpha; rconds=None is TensorMapLstsq's rcond=None
    X, y = array_pair(scales=(1.0, 0.5, 0.2, 0.1))  # no cut-off below 1e-3 cuts
    model = TensorMapLstsqCV(alphas=alphas, rconds=rconds, cv=3, fit_intercept=True).fit(X, y)
    ridge = Ridge(alpha=float(alphas)).fit(X, y)
    assert model.alpha_ == float(alphas) == RidgeCV(alphas=float(alphas)).fit(X, y).alpha_
    assert model.rcond_ == (None if rconds is None else 1e-6)
    assert len(model.cv_results_["params"]) == 1
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-9)
    np.testing.assert_allclose(model.intercept_, ridge.intercept_, rtol=1e-9)


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"alphas": [np.array([1.0, 2.0]), 3.0]},
            r"alphas must hold numbers .*got array\(\[1., 2.\]\) at position 0",
        ),
        (
            {"alphas": [[1.0, 2.0]]},
            r"alphas must be one candidate or a 1-D list of them, got an array of shape \(1, 2\)",
        ),
        ({"rconds": [[1e-6], [1e-3]]}, r"rconds must be one candidate .* shape \(2, 1\)"),
        (
            {"rconds": [np.array([1e-6, 1e-3]), 1e-3]},
            r"rconds must hold numbers in \[0, 1\) or None, got array",
        ),
        ({"rconds": 2.0}, r"rconds must hold numbers in \[0, 1\) or None, got 2.0 at position 0"),
        ({"alphas": -1}, r"alphas\[0\] must be a finite number >= 0, got -1"),
    ],
)
def test_array_values_where_a_candidate_number_is_expected(params, message):
    X, y = array_pair()
    with pytest.raises(ValueError, match=rf"TensorMapLstsqCV.fit: {message}"):
        TensorMapLstsqCV(cv=3, **params).fit(X, y)


def mse_of_arrays(estimator, X, y):
    """A plain callable scorer that only works on arrays."""
    assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
    assert isinstance(estimator, TensorMapLstsq)
    return -float(np.mean((estimator.predict(X) - y) ** 2))


@pytest.mark.parametrize("n_targets", [None, 2])
@pytest.mark.parametrize(
    "scoring",
    [
        mse_of_arrays,
        make_scorer(mean_squared_error),
        get_scorer("neg_mean_squared_error"),
        get_scorer("r2"),
    ],
)
def test_callable_scorers_get_arrays_as_in_grid_search(scoring, n_targets):
    X, y = array_pair(n_targets=n_targets)
    cv = KFold(4, shuffle=True, random_state=0)
    rconds, alphas = [1e-12, 1e-6, 1e-3], [0.0, 1e-4]
    grid = {"rcond": rconds, "alpha": alphas}
    estimator = TensorMapLstsq(fit_intercept=True)
    search = GridSearchCV(estimator, grid, cv=cv, scoring=scoring).fit(X, y)
    model = TensorMapLstsqCV(
        rconds=rconds, alphas=alphas, cv=cv, scoring=scoring, fit_intercept=True
    ).fit(X, y)
    assert np.ptp(search.cv_results_["mean_test_score"]) > 1e-6
    assert model.cv_results_["params"] == search.cv_results_["params"]
    np.testing.assert_allclose(
        split_scores(model.cv_results_, 4), split_scores(search.cv_results_, 4), rtol=1e-7
    )
    assert model.best_params_ == search.best_params_
    np.testing.assert_allclose(model.predict(X), search.predict(X), rtol=1e-8)


def test_grid_search_attributes(data):
    X, y = data
    cv = KFold(3, shuffle=True, random_state=0)
    grid = {"rcond": RCONDS[::3], "alpha": [0.0, 1e-3]}
    search = GridSearchCV(TensorMapLstsq(), grid, cv=cv).fit(X, y)
    model = TensorMapLstsqCV(rconds=RCONDS[::3], alphas=[0.0, 1e-3], cv=cv).fit(X, y)
    assert set(model.cv_results_) == set(search.cv_results_)
    assert list(model.cv_results_)[:4] == list(search.cv_results_)[:4]
    assert model.best_params_ == search.best_params_
    assert model.best_index_ == search.best_index_
    assert model.best_score_ == pytest.approx(search.best_score_, abs=1e-8)
    assert isinstance(model.refit_time_, float) and model.refit_time_ > 0
    for name in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"):
        times = model.cv_results_[name]
        assert times.shape == search.cv_results_[name].shape == (len(grid["rcond"]) * 2,)
        assert np.all(np.isfinite(times)) and np.all(times >= 0)
    assert np.all(model.cv_results_["mean_fit_time"] > 0)

    per_block = TensorMapLstsqCV(rconds=RCONDS[::3], alphas=[0.0, 1e-3], cv=cv, per_block=True)
    per_block.fit(X, y)
    params = per_block.cv_results_["params"]
    assert per_block.best_params_ == {
        key: params[index] for key, index in per_block.best_index_.items()
    }
    for key, chosen in per_block.best_params_.items():
        assert chosen == {"alpha": per_block.alpha_[key], "rcond": per_block.rcond_[key]}


def test_fit_times_count_the_shared_decomposition_for_every_candidate(data, monkeypatch):
    # a decomposition made to take 20 ms, a scorer 10 ms: each candidate's fit time in
    # a split counts every block's decomposition (2 blocks), its score time its own call
    X, y = data

    class Slow(skmetalstsq._cv.SVDFactorization):
        def __init__(self, *args, **kwargs):
            time.sleep(0.02)
            super().__init__(*args, **kwargs)

    def slow_scorer(estimator, X, y):
        time.sleep(0.01)
        return estimator.score(X, y)

    monkeypatch.setattr(skmetalstsq._cv, "SVDFactorization", Slow)
    rconds = RCONDS[::2]
    model = TensorMapLstsqCV(rconds=rconds, cv=3, scoring=slow_scorer).fit(X, y)
    assert np.all(model.cv_results_["mean_fit_time"] >= 2 * 0.02)
    assert np.all(model.cv_results_["mean_score_time"] >= 0.01)
    # one decomposition per block and split for all the candidates, not one each
    total = model.cv_results_["mean_fit_time"].sum() * 3
    assert total >= len(rconds) * 3 * 2 * 0.02


def test_search_attributes_survive_save_and_load(data, tmp_path):
    X, y = data
    model = TensorMapLstsqCV(rconds=RCONDS[:3], alphas=1e-3, cv=3, per_block=True).fit(X, y)
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    loaded = skmetalstsq.load(path)
    assert loaded.best_params_ == model.best_params_
    assert loaded.refit_time_ == model.refit_time_
    for name in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"):
        np.testing.assert_array_equal(loaded.cv_results_[name], model.cv_results_[name])
    assert loaded.get_params() == model.get_params()
    assert metatensor.equal(loaded.predict(X).tensor, model.predict(X).tensor)


# ---------------------------------------------------------------------------------
# test folds of one value, empty test folds
# ---------------------------------------------------------------------------------


def test_test_folds_of_one_row_score_as_r2_score_defines_a_constant():
    # KFold(5) on 6 weighted rows: four test folds of one row, whose weighted mean
    # does not round back to the value; R^2 is 0.0 there (force_finite), not -1e33
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(3)  # w * y / w is not y in the third test fold
    X = rng.normal(size=(6, 5))
    y = X @ rng.normal(size=5) + 0.3 * rng.normal(size=6)
    weights = rng.uniform(0.5, 3.0, 6)
    alphas = [0.1, 1.0, 10.0]
    model = TensorMapLstsqCV(rconds=[None], alphas=alphas, cv=KFold(5), fit_intercept=True)
    model.fit(X, y, sample_weight=weights)
    expected = np.empty((5, len(alphas)))
    for s, (train, test) in enumerate(KFold(5).split(X)):
        for c, alpha in enumerate(alphas):
            ridge = Ridge(alpha=alpha).fit(X[train], y[train], sample_weight=weights[train])
            predicted = ridge.predict(X[test])
            if len(test) == 1:  # scikit-learn's r2_score needs two rows, then is 0.0 or 1.0
                expected[s, c] = float(np.allclose(predicted, y[test], rtol=0, atol=1e-12))
            else:
                expected[s, c] = r2_score(y[test], predicted, sample_weight=weights[test])
    got = split_scores(model.cv_results_, 5)
    np.testing.assert_array_equal(got[1:], expected[1:])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-10)
    np.testing.assert_allclose(model.cv_results_["mean_test_score"], expected.mean(0), rtol=1e-10)
    assert model.alpha_ == alphas[int(np.argmax(expected.mean(0)))]


def test_score_sums_of_one_value_have_no_deviation():
    # the sums each shard of fit_shards sends: columns of one value have m2 exactly 0,
    # alone or combined, and their mean is that value
    from types import SimpleNamespace

    from skmetalstsq._cv import _scores, score_sums

    b = np.array([[0.1, 0.7, 1.0], [0.1, 0.7, 1.0], [0.1, 0.7, 3.0]])
    a = np.ones((3, 1))
    weights = np.array([0.7, 2.9, 1.3])

    def sums(rows, columns=slice(None)):
        targets = b[rows, columns]
        predict_zero = SimpleNamespace(weights=np.zeros((targets.shape[1], 1)), intercept=None)
        return score_sums(a[rows], targets, weights[rows], [predict_zero], True, "squared")

    deviation = b[:, 2] - np.average(b[:, 2], weights=weights)
    for got in (sums(slice(0, 3)), sums(slice(0, 1)).combine(sums(slice(1, 3)))):
        assert got.m2[0] == 0.0 and got.m2[1] == 0.0
        assert got.mean[0] == 0.1 and got.mean[1] == 0.7
        np.testing.assert_allclose(got.m2[2], (weights * deviation**2).sum(), rtol=1e-14)
    # every column of one value: R^2 of a non-zero residual is 0.0, not -1e33
    constant = sums(slice(0, 3), slice(0, 2))
    score = _scores("r2", constant.losses, constant.m2.sum(), constant.weight_sum * 2)
    assert score.tolist() == [0.0]


@pytest.mark.parametrize("per_block", [False, True])
def test_an_empty_test_fold_scores_nan_and_is_left_out(data, per_block):
    X, y = data
    folds = list(KFold(3, shuffle=True, random_state=0).split(np.arange(len(X))))
    cv = [(np.arange(len(X)), np.zeros(0, dtype=int)), *folds]
    model = TensorMapLstsqCV(rconds=RCONDS, cv=cv, per_block=per_block).fit(X, y)
    search = GridSearchCV(TensorMapLstsq(driver="gelsd"), {"rcond": RCONDS}, cv=folds).fit(X, y)
    got = split_scores(model.cv_results_, 4)
    assert np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1:], split_scores(search.cv_results_, 3), atol=1e-8)
    for name in ("mean_test_score", "std_test_score"):
        np.testing.assert_allclose(model.cv_results_[name], search.cv_results_[name], atol=1e-8)
    if not per_block:
        assert model.rcond_ == search.best_params_["rcond"]
        assert model.best_score_ == pytest.approx(search.best_score_, abs=1e-8)
        return
    # each block's split 0 is nan too; the best score is the mean over the other
    # splits of the pooled R^2 of the blocks' choices, each block fitted alone
    keys = X.tensor.keys
    for name in model.block_names_.values():
        assert np.isnan(model.cv_results_[f"split0_test_{name}"]).all()
    pooled = []
    for train, test in folds:
        predicted = []
        for position, key in enumerate(keys):
            rcond = model.rcond_[tuple(int(v) for v in key.values)]
            block = TensorMapLstsq(driver="gelsd", rcond=rcond)
            block.fit(single_block(X, position)[train], single_block(y, position)[train])
            predicted.append(block.predict(single_block(X, position)[test].tensor))
        pooled.append(metrics.r2(y[test], from_single_blocks(keys, predicted)))
    assert model.best_score_ == pytest.approx(np.mean(pooled), abs=1e-8)


@pytest.mark.parametrize(
    "cv, groups, message",
    [
        (GroupKFold(2), [0, 1, 0], "groups must give the group of each of the 4 shards, got 3"),
        (
            [(np.arange(3), np.array([4]))],
            None,
            "split 0 of cv hold 4, out of range for the 4 shards",
        ),
        ([(np.ones(4, bool), np.ones(3, bool))], None, "mask of 3 values for the 4 shards"),
    ],
)
def test_groups_and_splits_over_shards_are_checked_before_any_shard_is_loaded(cv, groups, message):
    from skmetalstsq.distributed import fit_shards

    def never():
        raise AssertionError("a shard was loaded")

    with pytest.raises(ValueError, match=rf"fit_shards: .*{message}"):
        fit_shards(TensorMapLstsqCV(cv=cv), [never] * 4, groups=groups)


def test_fit_shards_sets_the_search_attributes(data):
    from skmetalstsq.distributed import fit_shards

    X, y = data
    parts = np.array_split(np.arange(len(X)), 4)
    shards = [lambda part=part: (X[part], y[part]) for part in parts]
    search = fit_shards(TensorMapLstsqCV(rconds=RCONDS, cv=2), shards)
    folds = [np.concatenate(parts[:2]), np.concatenate(parts[2:])]
    joined = TensorMapLstsqCV(rconds=RCONDS, cv=[(folds[1], folds[0]), (folds[0], folds[1])])
    joined.fit(X, y)
    assert search.best_params_ == joined.best_params_
    assert search.best_params_ == search.cv_results_["params"][search.best_index_]
    assert isinstance(search.refit_time_, float) and search.refit_time_ > 0
