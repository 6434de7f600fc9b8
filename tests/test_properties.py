"""Property-based tests: random keys, components, gradients and shapes against scipy.

The reference is ``scipy.linalg.lstsq`` on the stacked arrays built here with
``np.concatenate`` (values, then every gradient, components folded into rows).
"""

import numpy as np
import pytest
import scipy.linalg
from builders import make_pair, make_rank_deficient, reorder_keys, to_torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skmetalstsq import TensorMapLstsq

SETTINGS = settings(max_examples=25, deadline=None)


def numpy(array):
    return array if isinstance(array, np.ndarray) else array.detach().cpu().numpy()


def stacked_by_hand(block, parameters):
    n_properties = block.values.shape[-1]
    parts = [numpy(block.values).reshape(-1, n_properties)]
    for parameter in parameters:
        parts.append(numpy(block.gradient(parameter).values).reshape(-1, n_properties))
    return np.concatenate(parts, axis=0)


def reference(a, b, rcond, driver):
    """scipy's solution, rank and singular values, with rcond=None as numpy's default."""
    if rcond is None:
        rcond = np.finfo(a.dtype).eps * max(a.shape)
    lapack_driver = "gelsy" if driver == "gelsy" else "gelsd"
    weights, _, rank, singular = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver=lapack_driver)
    return weights.T, rank, singular


@st.composite
def problems(draw):
    n_keys = draw(st.integers(1, 3))
    keys = draw(st.lists(st.integers(0, 20), min_size=n_keys, max_size=n_keys, unique=True))
    options = dict(
        keys=[(k,) for k in keys],
        n_systems=draw(st.integers(0, 4)),  # 0: blocks without rows
        n_atoms=draw(st.integers(1, 3)),
        n_features=draw(st.integers(1, 8)),
        n_targets=draw(st.integers(1, 3)),
        n_components=draw(st.integers(0, 3)),
        gradients=draw(st.sampled_from([(), ("positions",), ("positions", "cell")])),
    )
    seed = draw(st.integers(0, 2**32 - 1))
    deficient = options["n_features"] >= 4 and draw(st.booleans())
    # gels needs full rank: only on data that has it
    drivers = [None, "gelsy", "gelsd", "gelss"] + ([] if deficient else ["gels"])
    return dict(
        options=options,
        seed=seed,
        deficient=deficient,
        order=draw(st.permutations(range(n_keys))),
        driver=draw(st.sampled_from(drivers)),
        rcond=draw(st.sampled_from([None, 1e-12, 1e-8])),
        backend=draw(st.sampled_from(["numpy", "torch"])),
    )


@SETTINGS
@given(problems())
def test_tensor_maps_against_scipy_on_stacked_arrays(problem):
    X, y = make_pair(np.random.default_rng(problem["seed"]), **problem["options"])
    if problem["deficient"]:
        X = make_rank_deficient(X)
    y = reorder_keys(y, problem["order"])
    driver, rcond = problem["driver"], problem["rcond"]
    fit_X, fit_y = X, y
    if problem["backend"] == "torch":
        pytest.importorskip("torch")
        fit_X, fit_y = to_torch(X), to_torch(y)

    model = TensorMapLstsq(rcond=rcond, driver=driver).fit(fit_X, fit_y)
    prediction = model.predict(fit_X)

    assert model.weights_.keys == X.keys
    for key, x_block in X.items():
        key_values = tuple(int(v) for v in key.values)
        parameters = x_block.gradients_list()
        a = stacked_by_hand(x_block, parameters)
        b = stacked_by_hand(y.block(key), parameters)
        expected, rank, singular = reference(a, b, rcond, driver)
        weights = model.weights_.block(key)
        assert weights.samples == y.block(key).properties
        assert weights.properties == x_block.properties
        scale = max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(numpy(weights.values), expected, rtol=1e-7, atol=1e-9 * scale)
        if driver != "gels":
            assert model.rank_[key_values] == rank
        if driver in (None, "gelsd", "gelss"):
            np.testing.assert_allclose(
                numpy(model.singular_values_[key_values]), singular, rtol=1e-9, atol=1e-12
            )
        # predictions of the values and every gradient, by hand
        predicted = prediction.block(key)
        n_features = a.shape[1]
        by_hand = stacked_by_hand(x_block, parameters) @ expected.T
        ours = stacked_by_hand(predicted, parameters)
        assert ours.shape == by_hand.shape
        np.testing.assert_allclose(ours, by_hand, rtol=1e-7, atol=1e-9 * scale * n_features)
        assert predicted.samples == x_block.samples
        assert predicted.components == x_block.components


@SETTINGS
@given(
    n_rows=st.integers(1, 12),
    n_features=st.integers(1, 6),
    n_targets=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
    driver=st.sampled_from([None, "gelsy", "gelsd", "gelss"]),
)
def test_plain_arrays_against_scipy(n_rows, n_features, n_targets, seed, driver):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_rows, n_features))
    b = rng.normal(size=(n_rows,) if n_targets is None else (n_rows, n_targets))
    model = TensorMapLstsq(rcond=1e-10, driver=driver).fit(a, b)
    expected = scipy.linalg.lstsq(a, b, cond=1e-10, lapack_driver=driver or "gelsd")[0]
    np.testing.assert_allclose(model.coef_, expected.T, rtol=1e-7, atol=1e-9)
    prediction = model.predict(a)
    assert prediction.shape == b.shape
    np.testing.assert_allclose(prediction, a @ expected, rtol=1e-7, atol=1e-9)
