"""fit_shards: shards loaded and factorised in this process or on Dask workers.

Every fit is compared with ``scipy.linalg.lstsq`` on the stacked rows of all shards
joined (or scikit-learn's ``Ridge`` for arrays). The cluster is a
``distributed.LocalCluster`` of two worker processes on the loopback interface, one
for the module; the shard loaders live in :mod:`shard_loaders`, sent to the workers by
value.
"""

import functools
import os
import re
import tracemalloc
import warnings
from pathlib import Path

import builders
import metatensor
import numpy as np
import pytest
import scipy.linalg
import shard_loaders
from builders import as_numpy, stacked
from metatensor import Labels, TensorBlock, TensorMap
from shard_loaders import PLACEMENTS, entry_weights, full_pair, load_shard
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import KFold

from skmetalstsq import (
    IndexedTensorMap,
    TensorMapBayesianRidge,
    TensorMapLstsq,
    TensorMapLstsqCV,
)
from skmetalstsq.distributed import fit_shards

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

ROOT = Path(__file__).parents[1]
N_SHARDS = 5


def rows_per_sample(values):
    """Stacked rows of each sample of a values array: the product of its components."""
    return int(np.prod(values.shape[1:-1]))


def reference(X, y, weights=None, alpha=0.0, fit_intercept=False):
    """``{key tuple: (weights, intercept)}`` from scipy's gelsd on the stacked rows,
    each scaled by the square root of its system's weight (``weights``: one per
    system), with an intercept column on value rows and ``sqrt(alpha)`` rows."""
    result = {}
    for key, x_block in X.items():
        y_block = y.block(y.keys.position(key))
        parameters = sorted(x_block.gradients_list())
        a, b = stacked(x_block, parameters), stacked(y_block, parameters)
        n_features = a.shape[1]
        value_system = np.asarray(x_block.samples.column("system"))
        row_system = [np.repeat(value_system, rows_per_sample(x_block.values))]
        for parameter in parameters:
            gradient = x_block.gradient(parameter)
            owner = value_system[np.asarray(gradient.samples.column("sample"))]
            row_system.append(np.repeat(owner, rows_per_sample(gradient.values)))
        row_system = np.concatenate(row_system)
        w = np.ones(a.shape[0]) if weights is None else weights[row_system]
        if fit_intercept:
            ones = np.zeros((a.shape[0], 1))
            ones[: x_block.values.reshape(-1, n_features).shape[0]] = 1.0
            a = np.hstack([ones, a])
        a, b = a * np.sqrt(w)[:, None], b * np.sqrt(w)[:, None]
        if alpha:
            rows = np.sqrt(alpha) * np.eye(n_features)
            if fit_intercept:
                rows = np.hstack([np.zeros((n_features, 1)), rows])
            a = np.vstack([a, rows])
            b = np.vstack([b, np.zeros((n_features, b.shape[1]))])
        solution = scipy.linalg.lstsq(a, b, cond=1e-12, lapack_driver="gelsd")[0]
        intercept = solution[0] if fit_intercept else np.zeros(b.shape[1])
        result[tuple(int(v) for v in key.values)] = (solution[int(fit_intercept) :].T, intercept)
    return result


def assert_joined_fit(model, X, y, **options):
    """``model`` equals the reference fit on every row of X and y, and its factors
    hold every row (no shard silently left out). ``rtol`` and ``atol``: the
    tolerances (1e-10 and 1e-12; looser for float32 data)."""
    rtol, atol = options.pop("rtol", 1e-10), options.pop("atol", 1e-12)
    expected = reference(X, y, **options)
    assert sorted(model.rank_) == sorted(expected)
    # by position: the fitted maps may be metatensor-torch maps
    keys = [tuple(int(v) for v in values) for values in model.weights_.keys.values]
    for key, (weights, intercept) in expected.items():
        position = keys.index(key)
        np.testing.assert_allclose(
            as_numpy(model.weights_.block(position).values), weights, rtol=rtol, atol=atol
        )
        np.testing.assert_allclose(
            as_numpy(model.intercept_.block(position).values)[:, 0],
            intercept,
            rtol=rtol,
            atol=atol,
        )
        if hasattr(model, "factors_"):
            x_block = X.block(X.keys.position(key))
            assert model.factors_[key].factor.n_rows == stacked(x_block).shape[0]


def loaders(seed=0, n_shards=N_SHARDS, **options):
    return [functools.partial(load_shard, seed, i, n_shards, **options) for i in range(n_shards)]


@pytest.fixture(scope="module")
def client():
    """A client of two single-threaded worker processes, not the default client."""
    cloudpickle.register_pickle_by_value(shard_loaders)
    cloudpickle.register_pickle_by_value(builders)
    with warnings.catch_warnings():
        # another cluster on the machine may hold the default ports: free ones are used
        warnings.filterwarnings("ignore", message=".*already in use", category=UserWarning)
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # the scheduler's HTTP server (health, metrics) would try port 8787 first,
            # and leave a socket behind where another cluster holds it
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()
    cloudpickle.unregister_pickle_by_value(builders)
    cloudpickle.unregister_pickle_by_value(shard_loaders)


def loading_processes(record_dir):
    return {int(path.read_text()) for path in Path(record_dir).glob("shard_*")}


# ---------------------------------------------------------------------------------
# without a client: one shard after the other in this process
# ---------------------------------------------------------------------------------

OPTIONS = {
    "plain": {},
    "weighted": {"weighted": True},
    "ridge and intercept": {"alpha": 0.4, "fit_intercept": True},
    "everything": {"weighted": True, "alpha": 0.4, "fit_intercept": True},
}


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_without_a_client_equals_the_joined_fit(options, tmp_path):
    weighted = options.get("weighted", False)
    params = {k: v for k, v in options.items() if k != "weighted"}
    shards = loaders(weighted=weighted, record_dir=str(tmp_path))
    model = TensorMapLstsq(rcond=1e-12, **params)
    assert fit_shards(model, shards) is model
    X, y = full_pair(0)
    assert_joined_fit(model, X, y, weights=entry_weights(0) if weighted else None, **params)
    assert loading_processes(tmp_path) == {os.getpid()}


def test_delayed_shards_without_a_client():
    shards = [dask.delayed(load_shard)(0, i, N_SHARDS) for i in range(N_SHARDS)]
    model = fit_shards(TensorMapLstsq(rcond=1e-12), shards)
    assert_joined_fit(model, *full_pair(0))


@pytest.mark.parametrize("device", [None, "cpu"])
def test_array_shards_equal_scikit_learn(device):
    if device is not None:
        pytest.importorskip("torch")
    shards = [functools.partial(shard_loaders.load_arrays, 1, i, 3) for i in range(3)]
    A, b = (np.concatenate(parts) for parts in zip(*(shard() for shard in shards)))
    model = TensorMapLstsq(rcond=1e-12, alpha=0.5, fit_intercept=True, device=device)
    fit_shards(model, shards)
    ridge = Ridge(alpha=0.5, solver="svd").fit(A, b)
    assert model.n_features_in_ == 5
    # numpy, as after fit (and scikit-learn), whatever the device
    assert isinstance(model.coef_, np.ndarray)
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_, ridge.intercept_, rtol=1e-10)
    np.testing.assert_allclose(model.predict(A), ridge.predict(A), rtol=1e-10)


def test_partial_fit_adds_rows_to_the_shards():
    shards = loaders()
    model = fit_shards(TensorMapLstsq(rcond=1e-12), shards[:3])
    for shard in shards[3:]:
        model.partial_fit(*shard())
    assert_joined_fit(model, *full_pair(0))


def test_earlier_fits_are_not_merged_into_the_shards():
    other_x, other_y = full_pair(7)
    model = TensorMapLstsq(rcond=1e-12).partial_fit(other_x, other_y)
    fit_shards(model, loaders())
    assert_joined_fit(model, *full_pair(0))
    model = TensorMapLstsq(rcond=1e-12).fit(*shard_loaders.load_arrays(1, 0, 1))
    fit_shards(model, loaders())
    assert not hasattr(model, "coef_")
    assert_joined_fit(model, *full_pair(0))


def test_a_generator_of_shards():
    model = fit_shards(TensorMapLstsq(rcond=1e-12), (shard for shard in loaders()))
    assert_joined_fit(model, *full_pair(0))


def _load_fresh(seed, n_rows, n_features):
    """A shard of arrays written in place: the shard is the only allocation."""
    A = np.empty((n_rows, n_features))
    A[:] = np.arange(n_features) * 0.01 + seed
    A[:, 0] = np.arange(n_rows)
    A[:, 1] = np.sin(np.arange(n_rows))
    b = np.empty(n_rows)
    b[:] = A[:, 0]
    return A, b


def test_without_a_client_one_shard_is_held_at_a_time():
    n_rows, n_features = 100_000, 20
    shard_bytes = n_rows * (n_features + 1) * 8
    shards = [functools.partial(_load_fresh, i, n_rows, n_features) for i in range(4)]
    fit_shards(TensorMapLstsq(), shards[:1])  # everything imported and cached
    tracemalloc.start()
    try:
        fit_shards(TensorMapLstsq(), shards)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one shard, plus one 10000-row chunk buffer per thread
    assert peak < 1.5 * shard_bytes, f"peak {peak / shard_bytes:.2f} shards"


# ---------------------------------------------------------------------------------
# errors (in this process)
# ---------------------------------------------------------------------------------


def test_a_shard_with_another_layout_names_the_shards_and_the_block():
    shards = loaders() + [functools.partial(shard_loaders.load_other_features, 0, 3)]
    with pytest.raises(ValueError) as error:
        fit_shards(TensorMapLstsq(), shards)
    message = str(error.value)
    assert re.match(
        r"fit_shards: block \(center_type=0\) has other features \(properties\) in shard 5 ",
        message,
    ), message
    assert "3 named ['feature'] in shard 5" in message
    # the earlier side holds shards 0 to 4
    assert re.search(r"shards (0 to |0-|0\.\.|up to )4", message), message


def test_a_shard_that_gives_something_else_fails_clearly():
    with pytest.raises(
        TypeError,
        match=r"fit_shards: shard 1 must give \(X, y\) or \(X, y, sample_weight\), got list",
    ):
        fit_shards(TensorMapLstsq(), [loaders()[0], functools.partial(shard_loaders.load_list, 0)])
    X, y = full_pair(0)
    with pytest.raises(TypeError, match=r"shard 0 must give .*, got tuple of length 4"):
        fit_shards(TensorMapLstsq(), [lambda: (X, y, None, None)])


def test_a_shard_whose_data_is_wrong_names_the_shard():
    X, y = full_pair(0)
    with pytest.raises(TypeError, match=r"^fit_shards: shard 1: an array-like sample_weight"):
        fit_shards(TensorMapLstsq(), [lambda: (X, y), lambda: (X, y, np.ones(24))])
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    with pytest.raises(ValueError, match=r"^fit_shards: shard 2: "):
        fit_shards(TensorMapLstsq(), [lambda: (Xi, yi)] * 2 + [lambda: (Xi, yi, -np.ones(24))])


@pytest.mark.parametrize("estimator", [TensorMapLstsq(), TensorMapBayesianRidge()])
def test_shards_whose_rows_all_weigh_zero_are_refused_as_fit_refuses(estimator):
    X, y = full_pair(0)
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    zero = np.zeros(len(Xi))
    with pytest.raises(ValueError, match="every sample weight is zero"):
        clone(estimator).fit(Xi, yi, sample_weight=zero)
    with pytest.raises(
        ValueError, match=r"^fit_shards: every sample weight of every shard is zero"
    ):
        fit_shards(clone(estimator), [lambda: (Xi, yi, zero)] * 2)
    # one shard of positive weight is enough, and equals the fit on that shard
    fitted = fit_shards(clone(estimator), [lambda: (Xi, yi, zero), lambda: (Xi, yi)])
    reference = clone(estimator).fit(Xi, yi)
    for key, block in reference.weights_.items():
        np.testing.assert_allclose(fitted.weights_.block(key).values, block.values, rtol=1e-9)


def _alpha_map(X, keys):
    """A TensorMap of penalties (0.5 per property) for ``keys``, laid out as X's blocks."""
    properties = X.block(0).properties
    blocks = [
        TensorBlock(np.full((1, len(properties)), 0.5), Labels.range("_", 1), [], properties)
        for _ in keys
    ]
    return TensorMap(Labels(X.keys.names, np.array(keys, dtype=np.int32)), blocks)


def test_a_penalty_for_a_key_no_shard_has_is_refused_as_fit_refuses():
    X, y = full_pair(0)
    keys = [tuple(int(v) for v in key.values) for key in X.keys]
    for alpha, message in [
        ({**dict.fromkeys(keys, 0.5), (7,): 0.5}, "alpha must give a penalty for every block"),
        (_alpha_map(X, [*keys, (7,)]), "the alpha TensorMap must have the blocks of X and no"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)) as refused:
            TensorMapLstsq(alpha=alpha).fit(X, y)
        assert "unknown keys [(7,)]" in str(refused.value)
        with pytest.raises(ValueError, match=f"^fit_shards: {re.escape(message)}") as refused:
            fit_shards(TensorMapLstsq(alpha=alpha), [lambda: (X, y)])
        assert "unknown keys [(7,)]" in str(refused.value)
    # a key that only a later shard brings is not unknown once every shard is in
    first = metatensor.drop_blocks(X, Labels(["center_type"], np.array([[4]], dtype=np.int32)))
    first_y = metatensor.drop_blocks(y, Labels(["center_type"], np.array([[4]], dtype=np.int32)))
    alpha = dict.fromkeys(keys, 0.5)
    model = fit_shards(TensorMapLstsq(alpha=alpha), [lambda: (first, first_y), lambda: (X, y)])
    assert len(model.weights_.keys) == 3


def test_shards_must_be_callables_or_delayed():
    with pytest.raises(
        TypeError,
        match=r"fit_shards: shard 1 must be a zero-argument callable or a dask\.delayed "
        r"object, got TensorMap",
    ):
        fit_shards(TensorMapLstsq(), [loaders()[0], full_pair(0)[0]])
    with pytest.raises(ValueError, match=r"fit_shards: shards is empty; give at least one"):
        fit_shards(TensorMapLstsq(), [])


def test_the_estimator_must_be_a_tensor_map_lstsq():
    with pytest.raises(
        TypeError, match=r"fit_shards: estimator must be a TensorMapLstsq.*, got LinearRegression"
    ):
        fit_shards(LinearRegression(), loaders())


def test_parameters_are_checked_before_any_shard_is_loaded(tmp_path):
    with pytest.raises(ValueError, match=r"rcond"):
        fit_shards(TensorMapLstsq(rcond=2.0), loaders(record_dir=str(tmp_path)))
    assert not loading_processes(tmp_path)
    with pytest.raises(ValueError, match=r"fit_shards.*needs driver=None, got driver='gelsd'"):
        fit_shards(TensorMapLstsq(driver="gelsd"), loaders(record_dir=str(tmp_path)))
    assert not loading_processes(tmp_path), "a shard was loaded before the driver was checked"


# ---------------------------------------------------------------------------------
# on a cluster
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_on_a_cluster_equals_the_joined_fit(client, options, tmp_path):
    weighted = options.get("weighted", False)
    params = {k: v for k, v in options.items() if k != "weighted"}
    model = TensorMapLstsq(rcond=1e-12, **params)
    fit_shards(model, loaders(weighted=weighted, record_dir=str(tmp_path)), client=client)
    X, y = full_pair(0)
    assert_joined_fit(model, X, y, weights=entry_weights(0) if weighted else None, **params)
    # loaded on the workers, not here
    workers = set(client.run(os.getpid).values())
    assert loading_processes(tmp_path) <= workers


def test_delayed_shards_on_a_cluster(client):
    shards = [dask.delayed(load_shard)(0, i, N_SHARDS, True) for i in range(N_SHARDS)]
    model = fit_shards(TensorMapLstsq(rcond=1e-12, fit_intercept=True), shards, client=client)
    assert_joined_fit(model, *full_pair(0), weights=entry_weights(0), fit_intercept=True)


def test_the_default_client_is_used(client, tmp_path):
    with distributed.Client(client.scheduler.address) as default:
        assert distributed.default_client() is default
        model = fit_shards(TensorMapLstsq(rcond=1e-12), loaders(record_dir=str(tmp_path)))
    assert_joined_fit(model, *full_pair(0))
    assert os.getpid() not in loading_processes(tmp_path)


def test_a_layout_disagreement_on_a_cluster_names_the_shards_and_the_block(client):
    shards = loaders() + [functools.partial(shard_loaders.load_other_features, 0, 3)]
    with pytest.raises(
        ValueError,
        match=r"fit_shards: block \(center_type=0\) has other features \(properties\) in "
        r"shard 5 than in shard",
    ):
        fit_shards(TensorMapLstsq(), shards, client=client)


def test_a_shard_that_gives_something_else_fails_clearly_on_a_cluster(client):
    shards = loaders(n_shards=2) + [functools.partial(shard_loaders.load_list, 0)]
    with pytest.raises(
        TypeError,
        match=r"fit_shards: shard 2 must give \(X, y\) or \(X, y, sample_weight\), got list",
    ):
        fit_shards(TensorMapLstsq(), shards, client=client)


def test_a_worker_killed_while_loading_a_shard(client, tmp_path):
    # the loader of shard 3 kills its worker the first time; the scheduler runs it
    # again on a restarted worker: the fit completes with every row, or fails
    marker = tmp_path / "died"
    shards = [
        functools.partial(load_shard, 0, i, N_SHARDS, die_marker=str(marker) if i == 3 else None)
        for i in range(N_SHARDS)
    ]
    try:
        model = fit_shards(TensorMapLstsq(rcond=1e-12), shards, client=client)
    except distributed.scheduler.KilledWorker as error:  # pragma: no cover - a clear failure
        assert "load" in str(error)
    else:
        assert_joined_fit(model, *full_pair(0))
    assert marker.exists()


# ---------------------------------------------------------------------------------
# torch data and devices: the results where fit puts them
# ---------------------------------------------------------------------------------


def placement_loaders(placement, weighted=False, n_shards=N_SHARDS):
    kind, dtype, data_device, _ = placement
    options = dict(kind=kind, dtype=dtype, device=data_device, weighted=weighted)
    return loaders(n_shards=n_shards, **options), load_shard(0, 0, 1, **options)


def assert_placed_as_fit(model, fitted, placement):
    """``model``'s weights, intercept and singular values are of the kind, array
    library, device and dtype ``placement`` asks for, as those of ``fitted``."""
    import torch

    kind, dtype, data_device, device = placement
    torch_map = kind == "torch map"
    for name in ("weights_", "intercept_"):
        mine, theirs = getattr(model, name), getattr(fitted, name)
        assert isinstance(mine, torch.ScriptObject) == torch_map, name
        assert type(mine) is type(theirs), name
        for block, other in zip(mine.blocks(), theirs.blocks()):
            values = block.values
            assert isinstance(values, torch.Tensor), name
            assert values.device == torch.device(device or data_device) == other.values.device
            assert values.dtype == getattr(torch, dtype or "float64") == other.values.dtype
    for key, singular in fitted.singular_values_.items():
        assert type(model.singular_values_[key]) is type(singular)
        assert model.singular_values_[key].device == singular.device


@pytest.mark.parametrize("placement", list(PLACEMENTS.values()), ids=list(PLACEMENTS))
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_torch_data_and_devices_equal_the_joined_fit(placement, options):
    pytest.importorskip("torch")
    weighted = options.get("weighted", False)
    params = {k: v for k, v in options.items() if k != "weighted"}
    shards, everything = placement_loaders(placement, weighted)
    device = placement[3]
    model = fit_shards(TensorMapLstsq(rcond=1e-12, device=device, **params), shards)
    tolerances = {"rtol": 1e-4, "atol": 1e-5} if placement[1] == "float32" else {}
    X, y = full_pair(0)
    weights = entry_weights(0) if weighted else None
    assert_joined_fit(model, X, y, weights=weights, **params, **tolerances)
    fitted = TensorMapLstsq(rcond=1e-12, device=device, **params).fit(*everything)
    assert_placed_as_fit(model, fitted, placement)
    # predicts and scores as the fit on the joined data
    X_all, y_all = everything[:2]
    prediction, expected = model.predict(X_all).tensor, fitted.predict(X_all).tensor
    assert type(prediction) is type(expected)
    for position, block in enumerate(expected.blocks()):
        np.testing.assert_allclose(
            as_numpy(prediction.block(position).values),
            as_numpy(block.values),
            **(tolerances or {"rtol": 1e-9, "atol": 1e-11}),
        )
    score = model.score(X_all, y_all, everything[2] if weighted else None)
    expected_score = fitted.score(X_all, y_all, everything[2] if weighted else None)
    np.testing.assert_allclose(score, expected_score, rtol=1e-5 if tolerances else 1e-10)


def test_torch_shards_on_a_cluster(client):
    pytest.importorskip("torch")
    for placement in (PLACEMENTS["torch map"], PLACEMENTS["float32 torch arrays"]):
        shards, everything = placement_loaders(placement, weighted=True)
        model = TensorMapLstsq(rcond=1e-12, alpha=0.4, fit_intercept=True)
        fit_shards(model, shards, client=client)
        float32 = placement[1] == "float32"
        assert_joined_fit(
            model,
            *full_pair(0),
            weights=entry_weights(0),
            alpha=0.4,
            fit_intercept=True,
            **({"rtol": 1e-4, "atol": 1e-5} if float32 else {}),
        )
        fitted = TensorMapLstsq(rcond=1e-12, alpha=0.4, fit_intercept=True).fit(*everything)
        assert_placed_as_fit(model, fitted, placement)
        # cross-validated over the shards: as in this process, where fit puts it
        search = TensorMapLstsqCV(alphas=[0.0, 0.4], fit_intercept=True, cv=KFold(5))
        fit_shards(search, shards, client=client)
        local = fit_shards(clone(search), shards)
        np.testing.assert_allclose(
            search.cv_results_["mean_test_score"],
            local.cv_results_["mean_test_score"],
            rtol=1e-12,
        )
        assert search.best_index_ == local.best_index_
        assert_placed_as_fit(search, local, placement)
        assert_placed_as_fit(search, clone(search).fit(*everything[:2]), placement)


# ---------------------------------------------------------------------------------
# the code of docs/larger_than_memory.rst runs
# ---------------------------------------------------------------------------------


def test_the_larger_than_memory_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("metatensor.learn")
    text = (ROOT / "docs" / "larger_than_memory.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", text)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for block in blocks:
        code = "\n".join(line[4:] for line in block.splitlines())
        exec(compile(code, "larger_than_memory.rst", "exec"), namespace)
    # every comparison the page prints holds
    out = capsys.readouterr().out
    assert out.count("True") == 4 and "False" not in out, out
