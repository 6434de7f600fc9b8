"""TensorMapLstsqCV over shards against GridSearchCV on the joined data."""

from functools import partial

import metatensor
import numpy as np
import pytest
from builders import as_numpy, make_pair, weight_map
from shard_loaders import PLACEMENTS as SHARD_PLACEMENTS
from shard_loaders import as_kind
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics
from skmetalstsq.distributed import fit_shards

N_SHARDS = 6
RCONDS = [1e-12, 1e-4, 1e-2]
ALPHAS = [0.0, 0.5]


def shard(seed, weighted=False):
    X, y = make_pair(np.random.default_rng(seed), keys=((0,), (1,)), n_systems=5, n_components=2)
    if weighted:
        return X, y, None
    return X, y


def joined():
    """Every shard joined, indexed by shard: one entry per shard."""
    Xs, ys = zip(*[shard(s) for s in range(N_SHARDS)])
    X = metatensor.join(list(Xs), axis="samples", different_keys="union", add_dimension="shard")
    y = metatensor.join(list(ys), axis="samples", different_keys="union", add_dimension="shard")
    return IndexedTensorMap(X, "shard"), IndexedTensorMap(y, "shard")


SCORINGS = [None, "neg_rmse", metrics.scorer("neg_mae", gradient="positions")]


@pytest.mark.parametrize("scoring", SCORINGS)
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_scores_equal_grid_search_on_the_joined_data(scoring, fit_intercept):
    shards = [partial(shard, s) for s in range(N_SHARDS)]
    cv = KFold(3)
    search = TensorMapLstsqCV(
        rconds=RCONDS, alphas=ALPHAS, cv=cv, scoring=scoring, fit_intercept=fit_intercept
    )
    assert fit_shards(search, shards) is search
    X, y = joined()
    sk_scoring = metrics.scorer(scoring) if isinstance(scoring, str) else scoring
    reference = GridSearchCV(
        TensorMapLstsq(fit_intercept=fit_intercept),
        {"rcond": RCONDS, "alpha": ALPHAS},
        cv=cv,
        scoring=sk_scoring,
    ).fit(X, y)
    for s in range(3):
        np.testing.assert_allclose(
            search.cv_results_[f"split{s}_test_score"],
            reference.cv_results_[f"split{s}_test_score"],
            rtol=1e-8,
        )
    assert search.cv_results_["params"] == reference.cv_results_["params"]
    assert search.best_index_ == reference.best_index_
    for key, block in reference.best_estimator_.weights_.items():
        np.testing.assert_allclose(search.weights_.block(key).values, block.values, rtol=1e-9)
        np.testing.assert_allclose(
            search.intercept_.block(key).values,
            reference.best_estimator_.intercept_.block(key).values,
            atol=1e-12,
        )
    # the fitted model predicts like the refitted search
    prediction = search.predict(X)
    expected = reference.predict(X)
    for key, block in expected.tensor.items():
        np.testing.assert_allclose(prediction.tensor.block(key).values, block.values, atol=1e-10)


def test_groups_split_the_shards():
    shards = [partial(shard, s) for s in range(N_SHARDS)]
    groups = np.array([0, 0, 1, 1, 2, 2])
    search = fit_shards(TensorMapLstsqCV(rconds=RCONDS, cv=GroupKFold(3)), shards, groups=groups)
    X, y = joined()
    reference = GridSearchCV(
        TensorMapLstsq(), {"rcond": RCONDS, "alpha": [0.0]}, cv=GroupKFold(3)
    ).fit(X, y, groups=groups)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"], rtol=1e-8
    )


def test_per_block_choice_over_shards():
    shards = [partial(shard, s) for s in range(N_SHARDS)]
    search = fit_shards(
        TensorMapLstsqCV(rconds=RCONDS, alphas=ALPHAS, cv=3, per_block=True), shards
    )
    X, y = joined()
    model = TensorMapLstsqCV(rconds=RCONDS, alphas=ALPHAS, cv=KFold(3), per_block=True).fit(X, y)
    assert search.rcond_ == model.rcond_ and search.alpha_ == model.alpha_
    for name in model.cv_results_:
        if name.startswith("mean_test"):
            np.testing.assert_allclose(search.cv_results_[name], model.cv_results_[name], rtol=1e-8)


def test_cv_results_have_the_keys_of_fit_with_times():
    shards = [partial(shard, s) for s in range(N_SHARDS)]
    search = fit_shards(TensorMapLstsqCV(rconds=RCONDS, alphas=ALPHAS, cv=2), shards)
    model = TensorMapLstsqCV(rconds=RCONDS, alphas=ALPHAS, cv=KFold(2)).fit(*joined())
    assert set(search.cv_results_) == set(model.cv_results_)
    n_candidates = len(RCONDS) * len(ALPHAS)
    for name in ("fit", "score"):
        for statistic in ("mean", "std"):
            seconds = search.cv_results_[f"{statistic}_{name}_time"]
            assert seconds.shape == (n_candidates,)
            assert np.all(np.isfinite(seconds)) and np.all(seconds >= 0)
        # each split's time is the same for every candidate: counted in full
        # (fit) or shared equally (score)
        means = search.cv_results_[f"mean_{name}_time"]
        np.testing.assert_allclose(means, means[0], rtol=1e-12)
        assert means[0] > 0
    assert search.refit_time_ >= 0


def test_a_custom_scorer_is_refused():
    shards = [partial(shard, s) for s in range(3)]
    with pytest.raises(ValueError, match="fit_shards: cross-validation over shards scores with"):
        fit_shards(TensorMapLstsqCV(cv=3, scoring=lambda est, X, y: 0.0), shards)


def test_shards_of_arrays_are_refused_at_the_first_shard():
    loaded = []

    def arrays(index):
        loaded.append(index)
        rng = np.random.default_rng(index)
        return rng.normal(size=(4, 3)), rng.normal(size=4)

    shards = [partial(arrays, s) for s in range(4)]
    with pytest.raises(
        TypeError, match="^fit_shards: shard 0: cross-validation over shards needs TensorMaps"
    ):
        fit_shards(TensorMapLstsqCV(cv=2), shards)
    assert loaded == [0]  # no other shard was loaded, none was factorised


def test_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")
    cloudpickle = pytest.importorskip("cloudpickle")
    import builders

    cloudpickle.register_pickle_by_value(builders)
    shards = [partial(shard, s) for s in range(N_SHARDS)]
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        search = fit_shards(TensorMapLstsqCV(rconds=RCONDS, alphas=ALPHAS, cv=3), shards, client)
    local = fit_shards(TensorMapLstsqCV(rconds=RCONDS, alphas=ALPHAS, cv=3), shards)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-12
    )
    assert set(search.cv_results_) == set(local.cv_results_)
    assert np.all(search.cv_results_["mean_fit_time"] > 0)


# ---------------------------------------------------------------------------------
# torch data and devices
# ---------------------------------------------------------------------------------


#: the placements of test_distributed.py but the float32 torch map ones
PLACEMENTS = {
    name: placement
    for name, placement in SHARD_PLACEMENTS.items()
    if "float32 torch map" not in name
}


def placed_shard(seed, placement, weighted):
    """Shard ``seed`` as ``placement`` asks, with a TensorMap of row weights in (0.5, 2)."""
    kind, dtype, device, _ = placement
    X, y = shard(seed)
    data = [as_kind(X, kind, dtype, device), as_kind(y, kind, dtype, device)]
    if weighted:
        rng = np.random.default_rng(seed + 100)
        data.append(weight_map(y, lambda shape: rng.uniform(0.5, 2.0, size=shape)))
    return tuple(data)


def joined_placed(placement, weighted):
    """Every shard joined, indexed by shard: ``(X, y)`` in numpy, ``(X, y)`` as
    ``placement`` asks, and the keyword arguments of the weights."""
    kind, dtype, device, _ = placement
    parts = list(
        zip(*[placed_shard(s, ("numpy", None, "cpu", None), weighted) for s in range(N_SHARDS)])
    )
    tensors = [
        metatensor.join(list(p), axis="samples", different_keys="union", add_dimension="shard")
        for p in parts
    ]
    weights = {"sample_weight": tensors[2]} if weighted else {}
    numpy_data = [IndexedTensorMap(t, "shard") for t in tensors[:2]]
    placed = [IndexedTensorMap(as_kind(t, kind, dtype, device), "shard") for t in tensors[:2]]
    return numpy_data, placed, weights


@pytest.mark.parametrize("placement", list(PLACEMENTS.values()), ids=list(PLACEMENTS))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["no intercept", "intercept"])
def test_torch_data_and_devices(placement, weighted, fit_intercept):
    torch = pytest.importorskip("torch")
    kind, dtype, data_device, device = placement
    shards = [partial(placed_shard, s, placement, weighted) for s in range(N_SHARDS)]
    options = dict(rconds=RCONDS, alphas=ALPHAS, cv=KFold(3), fit_intercept=fit_intercept)
    search = fit_shards(TensorMapLstsqCV(device=device, **options), shards)
    numpy_data, placed, weights = joined_placed(placement, weighted)
    # the scores and weights of the search on the joined numpy data
    reference = TensorMapLstsqCV(**options).fit(*numpy_data, **weights)
    float32 = dtype == "float32"
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"],
        reference.cv_results_["mean_test_score"],
        rtol=1e-4 if float32 else 1e-8,
    )
    assert search.best_index_ == reference.best_index_
    for name in ("weights_", "intercept_"):
        for position, block in enumerate(getattr(reference, name).blocks()):
            np.testing.assert_allclose(
                as_numpy(getattr(search, name).block(position).values),
                block.values,
                rtol=1e-4 if float32 else 1e-9,
                atol=1e-5 if float32 else 1e-12,
            )
    # where the search on the joined data puts them
    fitted = TensorMapLstsqCV(device=device, **options).fit(*placed, **weights)
    for name in ("weights_", "intercept_"):
        mine, theirs = getattr(search, name), getattr(fitted, name)
        assert isinstance(mine, torch.ScriptObject) == (kind == "torch map"), name
        assert type(mine) is type(theirs), name
        for block, other in zip(mine.blocks(), theirs.blocks()):
            assert isinstance(block.values, torch.Tensor)
            assert block.values.device == torch.device(device or data_device)
            assert block.values.device == other.values.device
            assert block.values.dtype == getattr(torch, dtype or "float64") == other.values.dtype
    # predicts and scores as the search on the joined data
    X, y = placed
    for position, block in enumerate(fitted.predict(X).tensor.blocks()):
        np.testing.assert_allclose(
            as_numpy(search.predict(X).tensor.block(position).values),
            as_numpy(block.values),
            rtol=1e-4 if float32 else 1e-9,
            atol=1e-5 if float32 else 1e-11,
        )
    np.testing.assert_allclose(
        search.score(X, y), fitted.score(X, y), rtol=1e-5 if float32 else 1e-10
    )
