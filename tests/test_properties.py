"""Property-based tests: random keys, components, gradients, shapes, dtypes, weights and
penalties against scipy.

The reference is ``scipy.linalg.lstsq`` on the stacked arrays built here with
``np.concatenate`` (values, then every gradient in sorted order, components folded
into rows), the value rows centred on their weighted means for an intercept, every
row scaled by the square root of its weight and ``sqrt(alpha) * I`` rows appended
for a penalty.
"""

import numpy as np
import pytest
import scipy.linalg
from builders import (
    as_dtype,
    make_pair,
    make_rank_deficient,
    map_arrays,
    reorder_keys,
    single_block_map,
    to_torch,
)
from builders import weight_map as make_weight_map
from hypothesis import given, settings
from hypothesis import strategies as st
from metatensor import Labels, TensorBlock, TensorMap

from skmetalstsq import TensorMapLstsq

SETTINGS = settings(max_examples=25, deadline=None)
EPS = np.finfo(np.float64).eps


def numpy(array):
    if isinstance(array, np.ndarray):
        return array
    import torch

    return array.detach().cpu().to(torch.float64).numpy()


def parts_by_hand(block, parameters):
    """The values and each gradient of ``block`` as float64 (rows, properties) arrays."""
    n_properties = block.values.shape[-1]
    parts = [numpy(block.values).reshape(-1, n_properties)]
    for parameter in parameters:
        parts.append(numpy(block.gradient(parameter).values).reshape(-1, n_properties))
    return [part.astype(np.float64) for part in parts]


def quantized(tensor):
    """``tensor`` rounded to multiples of 2**-10: exact in float32, and so are 2.5 times
    them (:func:`make_rank_deficient` stays exactly rank-deficient in float32)."""
    return map_arrays(tensor, lambda array: np.round(np.asarray(array) * 1024.0) / 1024.0)


def weighted_system(a_parts, b_parts, weights, fit_intercept):
    """(A, B, x_mean, y_mean): value rows centred on their weighted means (with an
    intercept), every row scaled by the square root of its weight, stacked."""
    x_mean = y_mean = None
    if fit_intercept:
        total = weights[0].sum()
        if total > 0:
            # normalised first: the mean of one row (of weight > 0) is that row
            x_mean = (weights[0] / total) @ a_parts[0]
            y_mean = (weights[0] / total) @ b_parts[0]
        else:
            x_mean = np.zeros(a_parts[0].shape[1])
            y_mean = np.zeros(b_parts[0].shape[1])
        a_parts = [a_parts[0] - x_mean, *a_parts[1:]]
        b_parts = [b_parts[0] - y_mean, *b_parts[1:]]
    roots = [np.sqrt(w)[:, None] for w in weights]
    a = np.concatenate([r * p for r, p in zip(roots, a_parts)], axis=0)
    b = np.concatenate([r * p for r, p in zip(roots, b_parts)], axis=0)
    return a, b, x_mean, y_mean


def reference(a, b, alpha, rcond, driver):
    """scipy's (weights, rank, singular values) on ``a`` and ``b`` with ``sqrt(alpha)``
    rows appended (the rank and singular values of ``a`` itself for the default solve,
    which cuts before the penalty; of the augmented matrix for a LAPACK driver)."""
    n_rows, n_features = a.shape
    if rcond is None:
        rcond = EPS * max(n_rows, n_features)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_features,))
    singular = np.linalg.svd(a, compute_uv=False) if n_rows else np.zeros(0)
    rank = int((singular > rcond * singular[0]).sum()) if singular.size else 0
    penalised = bool((alpha > 0).any())
    if penalised:
        a = np.concatenate([a, np.diag(np.sqrt(alpha))], axis=0)
        b = np.concatenate([b, np.zeros((n_features, b.shape[1]))], axis=0)
    lapack_driver = "gelsy" if driver == "gelsy" else "gelsd"
    weights, _, lapack_rank, _ = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver=lapack_driver)
    if driver in ("gelsy", "gelsd", "gelss") and (penalised or driver == "gelsy"):
        rank = lapack_rank
    return weights.T, rank, singular


def fragile(fit_intercept, weighted, weights, alpha):
    """Whether the centred rows are exactly zero but the weighted means of the LAPACK
    drivers leave rounding noise in them, which no penalty damps: one value row of
    weight > 0 and no other (test_one_weighted_value_row_with_an_intercept_gives_
    zero_weights in tests/test_solvers.py)."""
    weighing = [int((w > 0).sum()) for w in weights]
    unpenalised = bool(np.all(np.asarray(alpha) == 0))
    return fit_intercept and weighted and unpenalised and weighing[0] == 1 and not any(weighing[1:])


@st.composite
def problems(draw):
    n_keys = draw(st.integers(1, 3))
    keys = draw(st.lists(st.integers(0, 20), min_size=n_keys, max_size=n_keys, unique=True))
    gradients = draw(st.sampled_from([(), ("positions",), ("positions", "cell")]))
    n_features = draw(st.integers(1, 8))
    options = dict(
        keys=[(k,) for k in keys],
        n_systems=draw(st.integers(0, 4)),  # 0: blocks without rows
        n_atoms=draw(st.integers(1, 3)),
        n_features=n_features,
        n_targets=draw(st.integers(1, 3)),
        n_components=draw(st.integers(0, 3)),
        gradients=gradients,
    )
    deficient = n_features >= 4 and draw(st.booleans())
    alpha_kind = draw(st.sampled_from(["none", "float", "dict", "per_property"]))
    if alpha_kind == "none":
        alpha = 0.0
    elif alpha_kind == "float":
        alpha = draw(st.sampled_from([0.0, 0.1, 2.0]))
    elif alpha_kind == "dict":
        alpha = {(k,): draw(st.sampled_from([0.0, 0.3, 1.5])) for k in keys}
    else:
        penalties = st.lists(
            st.sampled_from([0.0, 0.5, 2.0]), min_size=n_features, max_size=n_features
        )
        alpha = {(k,): np.array(draw(penalties)) for k in keys}
    every_feature_penalised = all(
        np.all(np.asarray(value) > 0)
        for value in (alpha.values() if isinstance(alpha, dict) else [alpha])
    )
    weighted = draw(st.booleans())
    with_zeros = weighted and draw(st.booleans())
    gradient_weights = None
    if gradients and draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(gradients), min_size=1, unique=True))
        gradient_weights = {p: draw(st.sampled_from([0.0, 0.01, 3.0])) for p in chosen}
    zero_gradient_weight = gradient_weights is not None and 0.0 in gradient_weights.values()
    # gels needs full rank: only on data that has it (rows of weight 0 may take it away)
    full_rank = (not deficient or every_feature_penalised) and not (
        with_zeros or zero_gradient_weight
    )
    drivers = [None, "gelsy", "gelsd", "gelss"] + (["gels"] if full_rank else [])
    return dict(
        options=options,
        seed=draw(st.integers(0, 2**32 - 1)),
        deficient=deficient,
        order=draw(st.permutations(range(n_keys))),
        driver=draw(st.sampled_from(drivers)),
        rcond=draw(st.sampled_from([None, 1e-12, 1e-8])),
        backend=draw(st.sampled_from(["numpy", "torch"])),
        dtype=draw(st.sampled_from(["float64", "float32"])),
        alpha_kind=alpha_kind,
        alpha=alpha,
        fit_intercept=draw(st.booleans()),
        weighted=weighted,
        with_zeros=with_zeros,
        gradient_weights=gradient_weights,
    )


def alpha_parameter(problem, X):
    """The ``alpha`` given to the estimator: as drawn, or a TensorMap per property."""
    if problem["alpha_kind"] != "per_property":
        return problem["alpha"]
    blocks = []
    for key, block in X.items():
        values = problem["alpha"][(int(key.values[0]),)][None, :]
        blocks.append(TensorBlock(values, Labels.range("sample", 1), [], block.properties))
    return TensorMap(X.keys, blocks)


def block_alpha(problem, key):
    alpha = problem["alpha"]
    return alpha[(int(key.values[0]),)] if isinstance(alpha, dict) else alpha


def row_weights_of(problem, sample_weight, key, block, parameters):
    """The weight of every row of each part, by hand: the weight map's values (or 1)
    times the gradient's factor."""
    sizes = [part.shape[0] for part in parts_by_hand(block, parameters)]
    if sample_weight is None:
        weights = [np.ones(size) for size in sizes]
    else:
        weight_block = sample_weight.block(key)
        weights = [np.asarray(weight_block.values, dtype=np.float64).reshape(-1)]
        for parameter in parameters:
            gradient = weight_block.gradient(parameter).values
            weights.append(np.asarray(gradient, dtype=np.float64).reshape(-1))
    factors = problem["gradient_weights"] or {}
    for position, parameter in enumerate(parameters, start=1):
        weights[position] = weights[position] * factors.get(parameter, 1.0)
    return weights


@SETTINGS
@given(problems())
def test_tensor_maps_against_scipy_on_stacked_arrays(problem):
    rng = np.random.default_rng(problem["seed"])
    X, y = make_pair(rng, **problem["options"])
    float32 = problem["dtype"] == "float32"
    if float32:
        X, y = quantized(X), quantized(y)
    if problem["deficient"]:
        X = make_rank_deficient(X)
    y = reorder_keys(y, problem["order"])
    if float32:
        X, y = as_dtype(X, np.float32), as_dtype(y, np.float32)
    sample_weight = None
    if problem["weighted"]:

        def draw_weights(shape):
            weights = rng.uniform(0.2, 2.0, size=shape)
            if problem["with_zeros"]:
                # zero weights on some rows, never on the first row of a block
                weights.reshape(-1)[1::3] = 0.0
            return weights

        sample_weight = make_weight_map(y, draw_weights)
    driver, rcond = problem["driver"], problem["rcond"]
    fit_X, fit_y = X, y
    if problem["backend"] == "torch":
        pytest.importorskip("torch")
        fit_X, fit_y = to_torch(X), to_torch(y)

    model = TensorMapLstsq(
        rcond=rcond,
        driver=driver,
        alpha=alpha_parameter(problem, X),
        fit_intercept=problem["fit_intercept"],
        gradient_weights=problem["gradient_weights"],
    ).fit(fit_X, fit_y, sample_weight=sample_weight)
    prediction = model.predict(fit_X)

    if float32:
        tolerance = dict(rtol=1e-5, atol=1e-6)
    else:
        tolerance = dict(rtol=1e-7, atol=1e-9)
    assert model.weights_.keys == X.keys
    for key, x_block in X.items():
        key_values = tuple(int(v) for v in key.values)
        parameters = sorted(x_block.gradients_list())
        a_parts = parts_by_hand(x_block, parameters)
        b_parts = parts_by_hand(y.block(key), parameters)
        weights = row_weights_of(problem, sample_weight, key, x_block, parameters)
        a, b, x_mean, y_mean = weighted_system(a_parts, b_parts, weights, problem["fit_intercept"])
        alpha = block_alpha(problem, key)
        expected, rank, singular = reference(a, b, alpha, rcond, driver)
        intercept = np.zeros(b.shape[1]) if x_mean is None else y_mean - expected @ x_mean

        block = model.weights_.block(key)
        assert block.samples == y.block(key).properties
        assert block.properties == x_block.properties
        assert numpy(block.values).shape == expected.shape
        assert block.values.dtype == fit_X.block(key).values.dtype
        if fragile(problem["fit_intercept"], sample_weight is not None, weights, alpha):
            continue
        scale = max(1.0, np.abs(expected).max(), np.abs(intercept).max())
        np.testing.assert_allclose(
            numpy(block.values), expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale
        )
        np.testing.assert_allclose(
            numpy(model.intercept_.block(key).values)[:, 0],
            intercept,
            rtol=tolerance["rtol"],
            atol=tolerance["atol"] * scale,
        )
        if driver != "gels":
            assert model.rank_[key_values] == rank
        penalised = bool(np.any(np.asarray(alpha) > 0))
        computed = model.singular_values_[key_values]
        if computed is None and driver in ("gelsd", "gelss") and np.ndim(alpha) == 1:
            # per-property penalties that are all 0 count as a penalty for the
            # LAPACK drivers (tests/test_solvers.py)
            penalised = True
        if driver is None or (driver in ("gelsd", "gelss") and not penalised):
            ours = numpy(computed)
            largest = max(1.0, singular[0] if singular.size else 1.0)
            # the default solve leaves out the zero singular value that centring
            # the value rows of a wide block adds (tests/test_solvers.py)
            dropped = singular.size - ours.size
            assert dropped == 0 or (problem["fit_intercept"] and driver is None and dropped == 1)
            np.testing.assert_allclose(ours, singular[: ours.size], rtol=1e-9, atol=1e-12 * largest)
            np.testing.assert_allclose(singular[ours.size :], 0.0, atol=1e-12 * largest)
        elif driver in ("gelsd", "gelss"):
            assert model.singular_values_[key_values] is None
        # predictions of the values and every gradient, by hand (the intercept
        # on the values only)
        predicted = prediction.block(key)
        by_hand = [part @ expected.T for part in a_parts]
        by_hand[0] = by_hand[0] + intercept
        ours = parts_by_hand(predicted, parameters)
        n_features = a.shape[1]
        norm = max([1.0] + [np.abs(part).max() for part in a_parts if part.size])
        for got, wanted in zip(ours, by_hand):
            assert got.shape == wanted.shape
            np.testing.assert_allclose(
                got,
                wanted,
                rtol=tolerance["rtol"],
                atol=tolerance["atol"] * scale * norm * n_features,
            )
        assert predicted.samples == x_block.samples
        assert predicted.components == x_block.components
        assert predicted.values.dtype == fit_X.block(key).values.dtype


@SETTINGS
@given(
    n_rows=st.integers(1, 12),
    n_features=st.integers(1, 6),
    n_targets=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
    driver=st.sampled_from([None, "gelsy", "gelsd", "gelss"]),
    dtype=st.sampled_from(["float64", "float32"]),
    alpha=st.sampled_from([0.0, 0.5]),
    fit_intercept=st.booleans(),
    weighted=st.booleans(),
)
def test_plain_arrays_against_scipy(
    n_rows, n_features, n_targets, seed, driver, dtype, alpha, fit_intercept, weighted
):
    rng = np.random.default_rng(seed)
    a = (np.round(rng.normal(size=(n_rows, n_features)) * 1024) / 1024).astype(dtype)
    shape = (n_rows,) if n_targets is None else (n_rows, n_targets)
    b = (np.round(rng.normal(size=shape) * 1024) / 1024).astype(dtype)
    sample_weight = rng.uniform(0.2, 2.0, size=n_rows) if weighted else None
    model = TensorMapLstsq(
        rcond=1e-10, driver=driver, alpha=alpha, fit_intercept=fit_intercept
    ).fit(a, b, sample_weight=sample_weight)
    weights = np.ones(n_rows) if sample_weight is None else sample_weight
    b2 = b.reshape(n_rows, -1).astype(np.float64)
    stacked_a, stacked_b, x_mean, y_mean = weighted_system(
        [a.astype(np.float64)], [b2], [weights], fit_intercept
    )
    if fragile(fit_intercept, weighted, [weights], alpha):
        # whatever the weights, the one row is fitted exactly
        np.testing.assert_allclose(model.predict(a), b, rtol=1e-5, atol=1e-5)
        return
    expected, _, _ = reference(stacked_a, stacked_b, alpha, 1e-10, driver)
    intercept = np.zeros(b2.shape[1]) if x_mean is None else y_mean - expected @ x_mean
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-7, atol=1e-9)
    scale = max(1.0, np.abs(expected).max(), np.abs(intercept).max())
    coef = expected[0] if n_targets is None else expected
    assert model.coef_.shape == coef.shape
    assert model.coef_.dtype == np.dtype(dtype)
    np.testing.assert_allclose(
        model.coef_, coef, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale
    )
    np.testing.assert_allclose(
        model.intercept_,
        intercept[0] if n_targets is None else intercept,
        rtol=tolerance["rtol"],
        atol=tolerance["atol"] * scale,
    )
    prediction = model.predict(a)
    assert prediction.shape == b.shape
    by_hand = a.astype(np.float64) @ expected.T + intercept
    np.testing.assert_allclose(
        prediction,
        by_hand[:, 0] if n_targets is None else by_hand,
        rtol=tolerance["rtol"],
        atol=tolerance["atol"] * scale * 4 * n_features,
    )


@given(
    n_rows=st.integers(1, 40),
    n_features=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(["float16", "bfloat16"]),
    driver=st.sampled_from([None, "gelsd", "gels"]),
)
@SETTINGS
def test_torch_half_precision_against_scipy_in_float64(n_rows, n_features, seed, dtype, driver):
    # half-precision data is factorised in float64: the weights are scipy's on the
    # same (rounded) numbers, returned in the data's dtype
    torch = pytest.importorskip("torch")
    half = getattr(torch, dtype)
    rng = np.random.default_rng(seed)
    if driver == "gels" and n_rows < n_features:
        n_rows = n_features
    a = torch.tensor(rng.normal(size=(n_rows, n_features)), dtype=half)
    b = torch.tensor(rng.normal(size=(n_rows, 2)), dtype=half)
    a64, b64 = a.double().numpy(), b.double().numpy()
    if driver == "gels" and np.linalg.matrix_rank(a64) < n_features:
        return
    model = TensorMapLstsq(driver=driver).fit(*single_block_map(a, b))
    expected = scipy.linalg.lstsq(a64, b64, lapack_driver="gelsd")[0].T
    assert model.weights_.block(0).values.dtype == half
    got = model.weights_.block(0).values.double().numpy()
    # the only difference is the final rounding to the half-precision dtype
    rounded = torch.tensor(expected).to(half).double().numpy()
    np.testing.assert_allclose(got, rounded, rtol=1e-2, atol=1e-2 * np.abs(expected).max())
