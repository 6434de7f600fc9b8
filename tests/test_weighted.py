"""Sample weights, ridge penalties and intercepts of TensorMapLstsq and TensorMapLstsqCV.

Every result is checked against an independent computation: scikit-learn's Ridge
and LinearRegression on arrays, scipy.linalg.lstsq (or a numpy SVD) on the stacked
rows of each block scaled by the square roots of their weights, with sqrt(alpha)
rows appended, metatensor.lstsq on maps rescaled by hand, and scikit-learn's
GridSearchCV and cross_validate.
"""

import re

import metatensor
import numpy as np
import pytest
import scipy.linalg
import sklearn
from builders import make_pair, map_arrays
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import make_scorer, r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import skmetalstsq._estimator
from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics

DRIVERS = [None, "gelsd", "gelss", "gelsy", "gels"]
#: cut-off given to the estimator and to scipy: cuts nothing on the data here
RCOND = 1e-12
#: the gradients of the test data, added in this (unsorted) order
GRADIENTS = ("positions", "cell")
KEYS = ((1,), (6,))
#: y's values are shifted by these per block, so that an intercept matters
OFFSETS = {(1,): 3.0, (6,): -2.0}


def raises(error, *parts):
    """pytest.raises matching every one of ``parts`` (literal text) in the message."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in parts)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


def key_tuple(key):
    return tuple(int(v) for v in key.values)


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------


def weighted_pair(seed=0, drop=True, scales=None, n_systems=7):
    """(X, y) TensorMaps with keys (1,) and (6,), 2 components, two gradients.

    y's values (not its gradients) are shifted by :data:`OFFSETS`. With
    ``drop``, system 0 is in no block and system 3 only in the first one, so
    that entry positions are not system numbers and blocks have other entries.
    ``scales`` multiply X's features (values and gradients).
    """
    rng = np.random.default_rng(seed)
    X, y = make_pair(
        rng,
        keys=KEYS,
        n_systems=n_systems,
        n_atoms=2,
        n_features=4,
        n_targets=2,
        n_components=2,
        gradients=GRADIENTS,
    )
    y = TensorMap(
        y.keys,
        [shifted_values(block, OFFSETS[key_tuple(key)]) for key, block in y.items()],
    )
    if scales is not None:
        X = map_arrays(X, lambda array: array * np.asarray(scales))
    if drop:
        kept = [range(1, n_systems), [s for s in range(1, n_systems) if s != 3]]
        X, y = (keep_systems(tensor, kept) for tensor in (X, y))
    return X, y


def shifted_values(block, offset):
    new = TensorBlock(block.values + offset, block.samples, block.components, block.properties)
    for parameter, gradient in block.gradients():
        new.add_gradient(
            parameter,
            TensorBlock(gradient.values, gradient.samples, gradient.components, new.properties),
        )
    return new


def keep_systems(tensor, kept):
    """A copy of ``tensor`` keeping, in block ``b``, the systems ``kept[b]``."""
    blocks = [
        metatensor.slice_block(
            block, "samples", Labels(["system"], np.array(list(systems)).reshape(-1, 1))
        )
        for block, systems in zip(tensor.blocks(), kept)
    ]
    return TensorMap(tensor.keys, blocks)


def indexed(*tensors):
    return tuple(IndexedTensorMap(tensor, "system") for tensor in tensors)


def entry_systems(tensor):
    """The distinct systems of all blocks, sorted: the entries, found by hand."""
    return sorted({int(s) for block in tensor.blocks() for s in block.samples.column("system")})


# ---------------------------------------------------------------------------------
# stacked rows and their weights, by hand
# ---------------------------------------------------------------------------------


def parts(block):
    """Values, then every gradient in sorted parameter order, as 2-D numpy arrays."""
    n_properties = block.values.shape[-1]
    result = [np.asarray(block.values).reshape(-1, n_properties)]
    for parameter in sorted(block.gradients_list()):
        result.append(np.asarray(block.gradient(parameter).values).reshape(-1, n_properties))
    return result


def row_systems(block):
    """The system of every row of each of :func:`parts`, by explicit loops."""
    systems = [int(s) for s in block.samples.column("system")]
    per_sample = int(np.prod([len(c) for c in block.components]))
    result = [np.array([s for s in systems for _ in range(per_sample)])]
    for parameter in sorted(block.gradients_list()):
        gradient = block.gradient(parameter)
        per_row = int(np.prod([len(c) for c in gradient.components]))
        parents = [int(p) for p in gradient.samples.column("sample")]
        result.append(np.array([systems[p] for p in parents for _ in range(per_row)]))
    return result


def system_row_weights(tensor, weight_of, gradient_weights=None):
    """key -> row weights of each part: ``weight_of[system]`` (times the gradient's factor)."""
    gradient_weights = gradient_weights or {}
    result = {}
    for key, block in tensor.items():
        factors = [1.0] + [gradient_weights.get(p, 1.0) for p in sorted(block.gradients_list())]
        result[key_tuple(key)] = [
            factor * np.array([weight_of[s] for s in systems], dtype=float)
            for factor, systems in zip(factors, row_systems(block))
        ]
    return result


def entry_weights_of(tensor, weights):
    """``{system: weight}`` for one weight per entry (sorted systems)."""
    return dict(zip(entry_systems(tensor), weights))


def weight_map(tensor, rng, low=0.1, high=2.0):
    """Random row weights laid out as ``tensor``: its samples, components and
    gradients, and one property."""
    properties = Labels.range("weight", 1)
    blocks = []
    for block in tensor.blocks():
        shape = (*block.values.shape[:-1], 1)
        new = TensorBlock(
            rng.uniform(low, high, shape), block.samples, block.components, properties
        )
        for parameter, gradient in block.gradients():
            shape = (*gradient.values.shape[:-1], 1)
            new.add_gradient(
                parameter,
                TensorBlock(
                    rng.uniform(low, high, shape),
                    gradient.samples,
                    gradient.components,
                    properties,
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def map_row_weights(weights, gradient_weights=None):
    """key -> row weights of each part, read from a weight map."""
    gradient_weights = gradient_weights or {}
    return {
        key_tuple(key): [
            factor * part[:, 0]
            for factor, part in zip(
                [1.0] + [gradient_weights.get(p, 1.0) for p in sorted(block.gradients_list())],
                parts(block),
            )
        ]
        for key, block in weights.items()
    }


def entry_weight_map(tensor, weight_of):
    """A weight map laid out as ``tensor`` holding ``weight_of[system]`` in every row,
    written element by element."""
    properties = Labels.range("weight", 1)

    def filled(part, systems_of_samples):
        values = np.empty((*part.values.shape[:-1], 1))
        for i, system in enumerate(systems_of_samples):
            values[i] = weight_of[system]
        return values

    blocks = []
    for block in tensor.blocks():
        systems = [int(s) for s in block.samples.column("system")]
        new = TensorBlock(filled(block, systems), block.samples, block.components, properties)
        for parameter, gradient in block.gradients():
            parents = [systems[int(p)] for p in gradient.samples.column("sample")]
            new.add_gradient(
                parameter,
                TensorBlock(
                    filled(gradient, parents), gradient.samples, gradient.components, properties
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def rescaled(tensor, weights, gradient_weights=None):
    """``tensor`` with every row multiplied by the square root of its weight in the
    weight map ``weights`` (and of the gradient's factor)."""
    gradient_weights = gradient_weights or {}
    blocks = []
    for key, block in tensor.items():
        weight_block = weights.block(key)
        new = TensorBlock(
            block.values * np.sqrt(weight_block.values),
            block.samples,
            block.components,
            block.properties,
        )
        for parameter, gradient in block.gradients():
            factor = gradient_weights.get(parameter, 1.0)
            scale = np.sqrt(factor * weight_block.gradient(parameter).values)
            new.add_gradient(
                parameter,
                TensorBlock(
                    gradient.values * scale, gradient.samples, gradient.components, new.properties
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


# ---------------------------------------------------------------------------------
# reference solutions
# ---------------------------------------------------------------------------------


def _centred(a_parts, b_parts, w_parts, intercept):
    """Value rows centred by their weighted means (gradient rows as they are)."""
    n_features, n_targets = a_parts[0].shape[1], b_parts[0].shape[1]
    x_mean, y_mean = np.zeros(n_features), np.zeros(n_targets)
    if intercept:
        w = w_parts[0]
        x_mean = w @ a_parts[0] / w.sum()
        y_mean = w @ b_parts[0] / w.sum()
        a_parts = [a_parts[0] - x_mean, *a_parts[1:]]
        b_parts = [b_parts[0] - y_mean, *b_parts[1:]]
    a = np.vstack([np.sqrt(w)[:, None] * part for w, part in zip(w_parts, a_parts)])
    b = np.vstack([np.sqrt(w)[:, None] * part for w, part in zip(w_parts, b_parts)])
    return a, b, x_mean, y_mean


def scipy_fit(X, y, row_weights=None, alpha=0.0, intercept=False):
    """key -> (weights (targets, features), intercept (targets,)).

    scipy.linalg.lstsq on the stacked rows scaled by sqrt(weight), value rows
    centred by their weighted means with an intercept, and diag(sqrt(alpha))
    rows appended (``alpha``: a float, or a dict by key of floats or arrays).
    """
    result = {}
    for key, x_block in X.items():
        k = key_tuple(key)
        a_parts, b_parts = parts(x_block), parts(y.block(key))
        w_parts = row_weights[k] if row_weights else [np.ones(len(p)) for p in a_parts]
        a, b, x_mean, y_mean = _centred(a_parts, b_parts, w_parts, intercept)
        penalty = alpha[k] if isinstance(alpha, dict) else alpha
        penalty = np.broadcast_to(np.asarray(penalty, dtype=float), (a.shape[1],))
        a = np.vstack([a, np.diag(np.sqrt(penalty))])
        b = np.vstack([b, np.zeros((a.shape[1], b.shape[1]))])
        weights = scipy.linalg.lstsq(a, b, cond=RCOND, lapack_driver="gelsd")[0].T
        result[k] = (weights, y_mean - weights @ x_mean)
    return result


def svd_fit(X, y, row_weights=None, alpha=0.0, intercept=False, rcond=RCOND):
    """As :func:`scipy_fit` for a float ``alpha`` (or a dict by key of floats),
    from numpy's SVD of the weighted (centred) stacked block: singular values at
    most ``rcond`` times the largest are cut, then the penalty applies to the rest."""
    result = {}
    for key, x_block in X.items():
        k = key_tuple(key)
        a_parts, b_parts = parts(x_block), parts(y.block(key))
        w_parts = row_weights[k] if row_weights else [np.ones(len(p)) for p in a_parts]
        a, b, x_mean, y_mean = _centred(a_parts, b_parts, w_parts, intercept)
        penalty = alpha[k] if isinstance(alpha, dict) else alpha
        threshold = rcond[k] if isinstance(rcond, dict) else rcond
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        keep = s > threshold * s[0]
        u, s, vt = u[:, keep], s[keep], vt[keep]
        weights = (vt.T @ ((s / (s**2 + penalty))[:, None] * (u.T @ b))).T
        result[k] = (weights, y_mean - weights @ x_mean)
    return result


def predicted_parts(X, solution):
    """key -> predictions of every part of X (the intercept on value rows only)."""
    result = {}
    for key, block in X.items():
        weights, intercept = solution[key_tuple(key)]
        predictions = [part @ weights.T for part in parts(block)]
        predictions[0] = predictions[0] + intercept
        result[key_tuple(key)] = predictions
    return result


def pooled_r2(y, predictions, row_weights=None, part=0, in_rows=None):
    """R^2 pooled over blocks of one part; ``in_rows(key)`` masks the rows scored."""
    residual = total = 0.0
    for key, block in y.items():
        k = key_tuple(key)
        true, pred = parts(block)[part], predictions[k][part]
        w = row_weights[k][part] if row_weights else np.ones(len(true))
        if in_rows is not None:
            w = w * in_rows(block)[part]
        residual += float((w[:, None] * (true - pred) ** 2).sum())
        if w.sum() > 0:
            mean = w @ true / w.sum()
            total += float((w[:, None] * (true - mean) ** 2).sum())
    return 1.0 - residual / total


def pooled_rmse(y, predictions, row_weights=None, part=0, in_rows=None):
    residual = count = 0.0
    for key, block in y.items():
        k = key_tuple(key)
        true, pred = parts(block)[part], predictions[k][part]
        w = row_weights[k][part] if row_weights else np.ones(len(true))
        if in_rows is not None:
            w = w * in_rows(block)[part]
        residual += float((w[:, None] * (true - pred) ** 2).sum())
        count += float(w.sum()) * true.shape[1]
    return float(np.sqrt(residual / count))


def rows_of(systems):
    """``in_rows`` of the rows whose system is in ``systems``."""
    chosen = set(int(s) for s in systems)
    return lambda block: [
        np.array([s in chosen for s in part], dtype=float) for part in row_systems(block)
    ]


def masked(row_weights, tensor, systems):
    """``row_weights`` (None: ones) times 1 for the rows of ``systems``, 0 elsewhere."""
    in_rows = rows_of(systems)
    result = {}
    for key, block in tensor.items():
        k = key_tuple(key)
        masks = in_rows(block)
        base = row_weights[k] if row_weights else [np.ones(len(m)) for m in masks]
        result[k] = [w * m for w, m in zip(base, masks)]
    return result


def assert_fit_equals(model, reference, y, rtol=1e-9, atol=1e-10):
    """weights_ and intercept_ of a TensorMap fit equal the reference, with the layout."""
    assert sorted(key_tuple(key) for key in model.weights_.keys) == sorted(reference)
    for key, block in model.weights_.items():
        weights, intercept = reference[key_tuple(key)]
        np.testing.assert_allclose(block.values, weights, rtol=rtol, atol=atol)
        intercept_block = model.intercept_.block(key)
        assert intercept_block.samples == y.block(key).properties
        assert intercept_block.properties == Labels(["intercept"], np.array([[0]]))
        np.testing.assert_allclose(intercept_block.values[:, 0], intercept, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------
# 1. arrays against scikit-learn
# ---------------------------------------------------------------------------------


ARRAY_CASES = [
    (driver, shape, alpha, fit_intercept)
    for driver in DRIVERS
    for shape in ("tall", "wide")
    for alpha in (0.0, 0.7)
    for fit_intercept in (False, True)
    # "gels" assumes full column rank, which wide data without a penalty lacks
    if not (driver == "gels" and shape == "wide" and alpha == 0.0)
]


@pytest.mark.parametrize("n_targets", [None, 3])
@pytest.mark.parametrize("driver, shape, alpha, fit_intercept", ARRAY_CASES)
def test_arrays_equal_sklearn(driver, shape, alpha, fit_intercept, n_targets):
    rng = np.random.default_rng(0)
    n_samples, n_features = (30, 5) if shape == "tall" else (6, 10)
    A = rng.normal(size=(n_samples, n_features))
    b = rng.normal(size=(n_samples,) if n_targets is None else (n_samples, n_targets)) + 2.0
    w = rng.uniform(0.1, 3.0, size=n_samples)
    if alpha:
        reference = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd")
    else:
        reference = LinearRegression(fit_intercept=fit_intercept)
    reference.fit(A, b, sample_weight=w)

    model = TensorMapLstsq(alpha=alpha, fit_intercept=fit_intercept, driver=driver)
    model.fit(A, b, sample_weight=w)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-9, atol=1e-11)
    # the types of scikit-learn's: numpy.float64 for a 1-D y, an array for a 2-D y,
    # the float 0.0 without an intercept
    assert type(model.intercept_) is type(reference.intercept_)
    assert np.shape(model.intercept_) == np.shape(reference.intercept_)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-9, atol=1e-11)

    A_new = rng.normal(size=(7, n_features))
    predicted = model.predict(A_new)
    assert predicted.shape == reference.predict(A_new).shape
    np.testing.assert_allclose(predicted, reference.predict(A_new), rtol=1e-9, atol=1e-10)

    multioutput = "uniform_average" if n_targets is None else "variance_weighted"
    b_new = rng.normal(size=predicted.shape)
    w_new = rng.uniform(0.1, 3.0, size=7)
    expected = r2_score(
        b_new, reference.predict(A_new), sample_weight=w_new, multioutput=multioutput
    )
    assert model.score(A_new, b_new, sample_weight=w_new) == pytest.approx(expected, abs=1e-12)
    expected = r2_score(b_new, reference.predict(A_new), multioutput=multioutput)
    assert model.score(A_new, b_new) == pytest.approx(expected, abs=1e-12)


def test_arrays_without_weights_equal_sklearn():
    rng = np.random.default_rng(1)
    A, b = rng.normal(size=(25, 4)), rng.normal(size=(25, 2)) - 1.0
    reference = Ridge(alpha=0.3, solver="svd").fit(A, b)
    model = TensorMapLstsq(alpha=0.3, fit_intercept=True).fit(A, b)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-10)
    expected = r2_score(b, reference.predict(A), multioutput="variance_weighted")
    assert model.score(A, b) == pytest.approx(expected, abs=1e-12)


def test_bad_array_weights():
    rng = np.random.default_rng(2)
    A, b = rng.normal(size=(10, 3)), rng.normal(size=10)
    with raises(ValueError, "TensorMapLstsq.fit: sample_weight has 9 weights", "10 samples"):
        TensorMapLstsq().fit(A, b, sample_weight=np.ones(9))
    weights = np.ones(10)
    weights[4] = -1.0
    with raises(ValueError, "TensorMapLstsq.fit: sample_weight has negative weights", "4"):
        TensorMapLstsq().fit(A, b, sample_weight=weights)
    model = TensorMapLstsq().fit(A, b)
    with raises(ValueError, "TensorMapLstsq.score: sample_weight has 3 weights"):
        model.score(A, b, sample_weight=np.ones(3))


# ---------------------------------------------------------------------------------
# 2. TensorMaps with components and gradients against scipy and metatensor
# ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    return weighted_pair()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("gradient_weights", [None, {"positions": 0.25, "cell": 3.0}])
def test_entry_weights_equal_scipy(pair, driver, alpha, gradient_weights):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    assert len(X_indexed) == 6
    w = np.random.default_rng(3).uniform(0.1, 2.0, size=6)
    model = TensorMapLstsq(
        rcond=RCOND, driver=driver, alpha=alpha, gradient_weights=gradient_weights
    ).fit(X_indexed, y_indexed, sample_weight=w)
    row_weights = system_row_weights(X, entry_weights_of(X, w), gradient_weights)
    reference = scipy_fit(X, y, row_weights, alpha)
    assert_fit_equals(model, reference, y)

    expected = pooled_r2(y, predicted_parts(X, reference), row_weights)
    assert model.score(X_indexed, y_indexed, sample_weight=w) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("gradient_weights", [None, {"cell": 0.1}])
@pytest.mark.parametrize("wrapped", [False, True])
def test_weight_map_equals_scipy(pair, driver, gradient_weights, wrapped):
    X, y = pair
    weights = weight_map(y, np.random.default_rng(4))
    sample_weight = IndexedTensorMap(weights, "system") if wrapped else weights
    model = TensorMapLstsq(rcond=RCOND, driver=driver, gradient_weights=gradient_weights)
    model.fit(X, y, sample_weight=sample_weight)
    row_weights = map_row_weights(weights, gradient_weights)
    reference = scipy_fit(X, y, row_weights)
    assert_fit_equals(model, reference, y)
    expected = pooled_r2(y, predicted_parts(X, reference), row_weights)
    assert model.score(X, y, sample_weight=sample_weight) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kind", ["entries", "map"])
@pytest.mark.parametrize("driver", [None, "gelsd"])
def test_weights_equal_metatensor_on_rescaled_maps(pair, kind, driver):
    X, y = pair
    gradient_weights = {"positions": 0.5}
    rng = np.random.default_rng(5)
    if kind == "entries":
        w = rng.uniform(0.1, 2.0, size=6)
        weights = entry_weight_map(y, entry_weights_of(X, w))
        X_fit, y_fit = indexed(X, y)
        sample_weight = w
    else:
        weights = weight_map(y, rng)
        X_fit, y_fit, sample_weight = X, y, weights
    model = TensorMapLstsq(rcond=RCOND, driver=driver, gradient_weights=gradient_weights)
    model.fit(X_fit, y_fit, sample_weight=sample_weight)
    reference = metatensor.lstsq(
        rescaled(X, weights, gradient_weights), rescaled(y, weights, gradient_weights), RCOND
    )
    for key, block in reference.items():
        np.testing.assert_allclose(model.weights_.block(key).values, block.values, rtol=1e-9)
        np.testing.assert_array_equal(model.intercept_.block(key).values, 0.0)


@pytest.mark.parametrize("driver", [None, "gelsd", "gelsy", "gels"])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("weighted", [False, True])
def test_intercept_from_value_rows_only(pair, driver, alpha, weighted):
    X, y = pair
    gradient_weights = {"cell": 0.3}
    X_indexed, y_indexed = indexed(X, y)
    w = np.random.default_rng(6).uniform(0.1, 2.0, size=6) if weighted else None
    model = TensorMapLstsq(
        rcond=RCOND,
        driver=driver,
        alpha=alpha,
        fit_intercept=True,
        gradient_weights=gradient_weights,
    ).fit(X_indexed, y_indexed, sample_weight=w)
    weight_of = entry_weights_of(X, np.ones(6) if w is None else w)
    row_weights = system_row_weights(X, weight_of, gradient_weights)
    reference = scipy_fit(X, y, row_weights, alpha, intercept=True)
    assert_fit_equals(model, reference, y)
    for key in X.keys:
        # the gradients of a constant are zero: the offsets of the values come back
        np.testing.assert_allclose(
            model.intercept_.block(key).values, OFFSETS[key_tuple(key)], atol=0.2
        )

    # the intercept goes into the predicted values, not into their gradients
    predicted = model.predict(X_indexed)
    assert isinstance(predicted, IndexedTensorMap)
    expected = predicted_parts(X, reference)
    for key, block in predicted.tensor.items():
        got = parts(block)
        assert len(got) == 3
        for got_part, expected_part in zip(got, expected[key_tuple(key)]):
            np.testing.assert_allclose(got_part, expected_part, rtol=1e-9, atol=1e-10)
        assert block.samples == X.block(key).samples
        assert block.components == X.block(key).components
        for parameter in GRADIENTS:
            assert block.gradient(parameter).samples == X.block(key).gradient(parameter).samples
    expected_score = pooled_r2(y, expected, row_weights)
    got_score = model.score(X_indexed, y_indexed, sample_weight=w)
    assert got_score == pytest.approx(expected_score, abs=1e-12)


def test_bad_sample_weight_names_the_caller(pair):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    with raises(
        ValueError, "TensorMapLstsq.fit: sample_weight has 5 weights", "6 'system' entries"
    ):
        TensorMapLstsq().fit(X_indexed, y_indexed, sample_weight=np.ones(5))
    with raises(TypeError, "TensorMapLstsq.fit: an array-like sample_weight", "IndexedTensorMap"):
        TensorMapLstsq().fit(X, y, sample_weight=np.ones(6))
    with raises(ValueError, "TensorMapLstsqCV.fit: sample_weight has negative weights"):
        TensorMapLstsqCV(cv=2).fit(X_indexed, y_indexed, sample_weight=-np.ones(6))


def test_bad_sample_weight_of_score_names_the_caller(pair):
    X_indexed, y_indexed = indexed(*pair)
    model = TensorMapLstsq().fit(X_indexed, y_indexed)
    with raises(ValueError, "TensorMapLstsq.score: sample_weight has 7 weights", "6 'system'"):
        model.score(X_indexed, y_indexed, sample_weight=np.ones(7))


def test_intercept_zero_without_fit_intercept(pair):
    X, y = pair
    model = TensorMapLstsq().fit(X, y)
    for key, block in model.intercept_.items():
        assert block.samples == y.block(key).properties
        np.testing.assert_array_equal(block.values, np.zeros((2, 1)))


def test_gradient_weight_zero_drops_the_gradient(pair):
    X, y = pair
    model = TensorMapLstsq(rcond=RCOND, gradient_weights={"cell": 0.0, "positions": 0.0})
    model.fit(X, y)
    # only the values are fitted: scipy on the value rows alone
    for key, block in X.items():
        a, b = parts(block)[0], parts(y.block(key))[0]
        expected = scipy.linalg.lstsq(a, b, cond=RCOND)[0].T
        np.testing.assert_allclose(model.weights_.block(key).values, expected, rtol=1e-9)


# ---------------------------------------------------------------------------------
# 3. alpha per block and per property
# ---------------------------------------------------------------------------------


def alpha_map(X, penalties):
    """A TensorMap of penalties: X's keys, one sample, X's properties."""
    blocks = [
        TensorBlock(
            np.asarray(penalties[key_tuple(key)], dtype=float).reshape(1, -1),
            Labels.range("sample", 1),
            [],
            block.properties,
        )
        for key, block in X.items()
    ]
    return TensorMap(X.keys, blocks)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_alpha_per_block(pair, driver, fit_intercept):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    w = np.random.default_rng(7).uniform(0.1, 2.0, size=6)
    row_weights = system_row_weights(X, entry_weights_of(X, w))
    penalties = {(1,): 0.3, (6,): 20.0}
    reference = scipy_fit(X, y, row_weights, penalties, intercept=fit_intercept)
    for alpha in (penalties, {1: 0.3, 6: 20.0}):
        model = TensorMapLstsq(
            rcond=RCOND, driver=driver, alpha=alpha, fit_intercept=fit_intercept
        ).fit(X_indexed, y_indexed, sample_weight=w)
        assert_fit_equals(model, reference, y)
    # the two blocks have different penalties: one alpha for both gives another fit
    one = scipy_fit(X, y, row_weights, 0.3, intercept=fit_intercept)
    assert not np.allclose(one[(6,)][0], reference[(6,)][0], rtol=1e-3)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_alpha_per_property(pair, driver, fit_intercept):
    X, y = pair
    penalties = {(1,): [0.1, 1.0, 10.0, 0.0], (6,): [5.0, 0.0, 0.5, 50.0]}
    weights = weight_map(y, np.random.default_rng(8))
    row_weights = map_row_weights(weights)
    model = TensorMapLstsq(
        rcond=RCOND, driver=driver, alpha=alpha_map(X, penalties), fit_intercept=fit_intercept
    ).fit(X, y, sample_weight=weights)
    reference = scipy_fit(X, y, row_weights, penalties, intercept=fit_intercept)
    assert_fit_equals(model, reference, y)
    # a penalty per property is not the same as their mean on every property
    mean = scipy_fit(X, y, row_weights, {k: np.mean(v) for k, v in penalties.items()})
    assert not np.allclose(mean[(1,)][0], reference[(1,)][0], rtol=1e-3)


def _alpha_map_with(X, block_of_key):
    """An alpha map whose blocks are ``block_of_key(key, x_block)``."""
    return TensorMap(X.keys, [block_of_key(key, block) for key, block in X.items()])


def _penalty_block(values, properties, n_samples=1):
    return TensorBlock(
        np.asarray(values, dtype=float).reshape(n_samples, -1),
        Labels.range("sample", n_samples),
        [],
        properties,
    )


BAD_ALPHAS = {
    "negative": (lambda X: -1.0, ValueError, ["alpha must be a finite number >= 0", "-1.0"]),
    "nan": (lambda X: float("nan"), ValueError, ["alpha must be a finite number >= 0", "nan"]),
    "infinite": (lambda X: np.inf, ValueError, ["alpha must be a finite number >= 0", "inf"]),
    "string": (
        lambda X: "large",
        TypeError,
        ["alpha must be a float, a dict of floats by key or a TensorMap", "got str"],
    ),
    "bool": (lambda X: True, TypeError, ["alpha must be a float", "got bool"]),
    "dict negative": (
        lambda X: {(1,): 0.1, (6,): -2.0},
        ValueError,
        ["alpha[(6,)] must be a finite number >= 0", "-2.0"],
    ),
    "dict nan": (
        lambda X: {(1,): float("nan"), (6,): 1.0},
        ValueError,
        ["alpha[(1,)] must be a finite number >= 0", "nan"],
    ),
    "dict unknown key": (
        lambda X: {(1,): 0.1, (6,): 0.1, (5,): 0.1},
        ValueError,
        [
            "alpha must give a penalty for every block of X by its key",
            "['center_type']",
            "unknown keys [(5,)]",
            "missing keys []",
        ],
    ),
    "dict missing key": (
        lambda X: {(1,): 0.1},
        ValueError,
        ["unknown keys []", "missing keys [(6,)]"],
    ),
    "map missing block": (
        lambda X: TensorMap(
            Labels(["center_type"], np.array([[1]])),
            [_penalty_block(np.ones(4), X.block(0).properties)],
        ),
        ValueError,
        ["the alpha TensorMap has no block (center_type=6) of X", "['center_type']"],
    ),
    "map other key names": (
        lambda X: TensorMap(
            Labels(["species"], np.array([[1], [6]])),
            [_penalty_block(np.ones(4), block.properties) for block in X.blocks()],
        ),
        ValueError,
        ["the alpha TensorMap has no block (center_type=1) of X", "['species']"],
    ),
    "map other properties": (
        lambda X: _alpha_map_with(
            X,
            lambda key, block: _penalty_block(
                np.ones(len(block.properties) - (key_tuple(key) == (6,))),
                block.properties
                if key_tuple(key) == (1,)
                else Labels.range("feature", len(block.properties) - 1),
            ),
        ),
        ValueError,
        [
            "block (center_type=6) of the alpha TensorMap must have one sample, no "
            "components and X's 4 properties",
            "(1, 3)",
            "other properties",
        ],
    ),
    "map two samples": (
        lambda X: _alpha_map_with(
            X, lambda key, block: _penalty_block(np.ones(8), block.properties, n_samples=2)
        ),
        ValueError,
        ["block (center_type=1) of the alpha TensorMap must have one sample", "(2, 4)"],
    ),
    "map negative": (
        lambda X: alpha_map(X, {(1,): [0.1, 0.1, 0.1, 0.1], (6,): [0.1, -1.0, 0.1, 0.1]}),
        ValueError,
        ["alpha (center_type=6) must be a finite number >= 0"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_ALPHAS))
def test_bad_alpha(pair, case, monkeypatch):
    X, y = pair
    make_alpha, error, message = BAD_ALPHAS[case]

    def no_solve(*args, **kwargs):
        raise AssertionError("solved before alpha was checked")

    monkeypatch.setattr(skmetalstsq._estimator, "solve_systems", no_solve)
    with raises(error, "TensorMapLstsq.fit: ", *message):
        TensorMapLstsq(alpha=make_alpha(X)).fit(X, y)


def test_bad_array_alpha():
    rng = np.random.default_rng(9)
    A, b = rng.normal(size=(8, 2)), rng.normal(size=8)
    with raises(ValueError, "TensorMapLstsq.fit: alpha must be a finite number >= 0, got -0.5"):
        TensorMapLstsq(alpha=-0.5).fit(A, b)


def test_bad_gradient_weights(pair):
    X, y = pair
    with raises(
        ValueError,
        "TensorMapLstsq.fit: gradient_weights names the 'strain' gradient",
        "no block of X has",
        "['cell', 'positions']",
    ):
        TensorMapLstsq(gradient_weights={"strain": 1.0}).fit(X, y)
    with raises(
        ValueError, "TensorMapLstsq.fit: gradient_weights['positions'] must be a finite number"
    ):
        TensorMapLstsq(gradient_weights={"positions": -1.0}).fit(X, y)
    with raises(ValueError, "TensorMapLstsqCV.fit: gradient_weights['cell'] must be a finite"):
        TensorMapLstsqCV(gradient_weights={"cell": float("nan")}, cv=2).fit(*indexed(X, y))


def test_bad_cv_alphas(pair):
    X, y = indexed(*pair)
    with raises(ValueError, "TensorMapLstsqCV.fit: alphas[1] must be a finite number >= 0"):
        TensorMapLstsqCV(alphas=[0.0, -1.0], cv=2).fit(X, y)
    with raises(ValueError, "TensorMapLstsqCV.fit: alphas is empty"):
        TensorMapLstsqCV(alphas=[], cv=2).fit(X, y)


# ---------------------------------------------------------------------------------
# 4. a zero weight drops rows
# ---------------------------------------------------------------------------------


def spoiled(tensor, system, rng):
    """``tensor`` with every row of ``system`` (values and gradients) replaced by
    huge random numbers."""
    blocks = []
    for block in tensor.blocks():
        systems = np.asarray(block.samples.column("system"))
        values = np.array(block.values, copy=True)
        mine = systems == system
        values[mine] = 1e100 * rng.normal(size=values[mine].shape)
        new = TensorBlock(values, block.samples, block.components, block.properties)
        for parameter, gradient in block.gradients():
            gradient_values = np.array(gradient.values, copy=True)
            rows = mine[np.asarray(gradient.samples.column("sample"))]
            gradient_values[rows] = 1e100 * rng.normal(size=gradient_values[rows].shape)
            new.add_gradient(
                parameter,
                TensorBlock(gradient_values, gradient.samples, gradient.components, new.properties),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


@pytest.mark.parametrize("kind", ["entries", "map"])
@pytest.mark.parametrize(
    "driver, alpha, fit_intercept",
    [(None, 0.0, False), (None, 0.5, True), ("gelsd", 0.0, True), ("gelsy", 0.5, False)],
)
def test_zero_weight_drops_rows(pair, kind, driver, alpha, fit_intercept):
    X, y = pair
    rng = np.random.default_rng(10)
    dropped = 4  # a system of both blocks
    systems = entry_systems(X)
    w = rng.uniform(0.1, 2.0, size=len(systems))
    w[systems.index(dropped)] = 0.0
    X_bad, y_bad = spoiled(X, dropped, rng), spoiled(y, dropped, rng)
    options = dict(rcond=RCOND, driver=driver, alpha=alpha, fit_intercept=fit_intercept)
    if kind == "entries":
        model = TensorMapLstsq(**options).fit(*indexed(X_bad, y_bad), sample_weight=w)
    else:
        weights = entry_weight_map(y, entry_weights_of(X, w))
        model = TensorMapLstsq(**options).fit(X_bad, y_bad, sample_weight=weights)

    others = [[s for s in systems if s != dropped and s in entry_systems_of(block)] for block in X]
    X_kept, y_kept = keep_systems(X, others), keep_systems(y, others)
    kept_w = [w[systems.index(s)] for s in systems if s != dropped]
    without = TensorMapLstsq(**options).fit(*indexed(X_kept, y_kept), sample_weight=kept_w)
    for key, block in without.weights_.items():
        np.testing.assert_allclose(model.weights_.block(key).values, block.values, atol=1e-12)
        np.testing.assert_allclose(
            model.intercept_.block(key).values, without.intercept_.block(key).values, atol=1e-12
        )
    # and both are the weighted fit of the rows kept
    reference = scipy_fit(
        X_kept,
        y_kept,
        system_row_weights(X_kept, entry_weights_of(X_kept, kept_w)),
        alpha,
        fit_intercept,
    )
    assert_fit_equals(model, reference, y)


def entry_systems_of(block):
    return {int(s) for s in block.samples.column("system")}


# ---------------------------------------------------------------------------------
# 5. scikit-learn: slicing, routing, clone
# ---------------------------------------------------------------------------------


CV = KFold(3, shuffle=True, random_state=0)


def test_cross_validate_slices_weights_without_routing(pair):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    systems = np.array(entry_systems(X))
    w = np.random.default_rng(11).uniform(0.1, 2.0, size=len(systems))
    options = dict(rcond=RCOND, alpha=0.2, fit_intercept=True, gradient_weights={"cell": 0.5})
    results = cross_validate(
        TensorMapLstsq(**options),
        X_indexed,
        y_indexed,
        cv=CV,
        params={"sample_weight": w},
        return_estimator=True,
        return_indices=True,
    )
    row_weights = system_row_weights(X, entry_weights_of(X, w), options["gradient_weights"])
    for estimator, train, test, score in zip(
        results["estimator"],
        results["indices"]["train"],
        results["indices"]["test"],
        results["test_score"],
    ):
        reference = scipy_fit(X, y, masked(row_weights, X, systems[train]), 0.2, intercept=True)
        assert_fit_equals(estimator, reference, y)
        # without routing, cross_validate gives sample_weight to fit only
        expected = pooled_r2(y, predicted_parts(X, reference), in_rows=rows_of(systems[test]))
        assert score == pytest.approx(expected, abs=1e-12)


def test_grid_search_slices_weights_without_routing(pair):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    systems = np.array(entry_systems(X))
    w = np.random.default_rng(12).uniform(0.1, 2.0, size=len(systems))
    alphas, rconds = [0.0, 3.0, 300.0], [1e-12, 0.5]
    search = GridSearchCV(
        TensorMapLstsq(fit_intercept=True), {"alpha": alphas, "rcond": rconds}, cv=CV
    ).fit(X_indexed, y_indexed, sample_weight=w)
    row_weights = system_row_weights(X, entry_weights_of(X, w))
    splits = list(CV.split(systems))
    for c, params in enumerate(search.cv_results_["params"]):
        for s, (train, test) in enumerate(splits):
            reference = svd_fit(
                X, y, masked(row_weights, X, systems[train]), intercept=True, **params
            )
            # scikit-learn gives sample_weight to a scorer that takes it
            expected = pooled_r2(
                y, predicted_parts(X, reference), row_weights, in_rows=rows_of(systems[test])
            )
            got = search.cv_results_[f"split{s}_test_score"][c]
            assert got == pytest.approx(expected, abs=1e-10)
    reference = svd_fit(X, y, row_weights, intercept=True, **search.best_params_)
    assert_fit_equals(search.best_estimator_, reference, y)
    # the grid is not trivial: the candidates score differently
    assert np.ptp(search.cv_results_["mean_test_score"]) > 1e-3


def test_routing_through_pipeline_grid_search_and_cross_validate(pair):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    systems = np.array(entry_systems(X))
    w = np.random.default_rng(13).uniform(0.1, 2.0, size=len(systems))
    row_weights = system_row_weights(X, entry_weights_of(X, w))
    splits = list(CV.split(systems))
    with sklearn.config_context(enable_metadata_routing=True):
        model = (
            TensorMapLstsq(rcond=RCOND, fit_intercept=True)
            .set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=True)
        )
        pipeline = Pipeline([("identity", FunctionTransformer(None)), ("lstsq", model)])
        results = cross_validate(
            pipeline,
            X_indexed,
            y_indexed,
            cv=CV,
            params={"sample_weight": w},
            return_estimator=True,
            return_indices=True,
        )
        search = GridSearchCV(pipeline, {"lstsq__alpha": [0.0, 3.0, 300.0]}, cv=CV)
        search.fit(X_indexed, y_indexed, sample_weight=w)

        # a weight not requested is refused
        unrequested = Pipeline([("lstsq", TensorMapLstsq())])
        with pytest.raises(UnsetMetadataPassedError, match="sample_weight"):
            unrequested.fit(X_indexed, y_indexed, sample_weight=w)
    assert sklearn.get_config()["enable_metadata_routing"] is False

    for estimator, train, test, score in zip(
        results["estimator"],
        results["indices"]["train"],
        results["indices"]["test"],
        results["test_score"],
    ):
        reference = scipy_fit(X, y, masked(row_weights, X, systems[train]), intercept=True)
        assert_fit_equals(estimator.named_steps["lstsq"], reference, y)
        expected = pooled_r2(
            y, predicted_parts(X, reference), row_weights, in_rows=rows_of(systems[test])
        )
        assert score == pytest.approx(expected, abs=1e-12)

    for c, alpha in enumerate([0.0, 3.0, 300.0]):
        for s, (train, test) in enumerate(splits):
            reference = scipy_fit(
                X, y, masked(row_weights, X, systems[train]), alpha, intercept=True
            )
            expected = pooled_r2(
                y, predicted_parts(X, reference), row_weights, in_rows=rows_of(systems[test])
            )
            got = search.cv_results_[f"split{s}_test_score"][c]
            assert got == pytest.approx(expected, abs=1e-12)
    best = search.best_params_["lstsq__alpha"]
    reference = scipy_fit(X, y, row_weights, best, intercept=True)
    assert_fit_equals(search.best_estimator_.named_steps["lstsq"], reference, y)


def test_clone_and_get_params(pair):
    X, _ = pair
    params = dict(
        rcond=1e-8,
        driver="gelsd",
        alpha={(1,): 0.5, (6,): 2.0},
        fit_intercept=True,
        gradient_weights={"positions": 0.1},
        device=None,
        n_jobs=2,
        verbose=0,
    )
    model = TensorMapLstsq(**params)
    assert model.get_params() == params
    fresh = clone(model)
    assert fresh.get_params() == params
    assert fresh.get_params()["alpha"] is not params["alpha"]

    by_property = TensorMapLstsq(alpha=alpha_map(X, {(1,): np.ones(4), (6,): np.zeros(4)}))
    copied = clone(by_property).get_params()["alpha"]
    assert isinstance(copied, TensorMap)
    assert metatensor.equal(copied, by_property.alpha)

    cv_params = dict(
        rconds=(1e-10, 1e-5),
        alphas=(0.0, 1.0),
        cv=3,
        scoring="neg_rmse",
        per_block=True,
        fit_intercept=True,
        gradient_weights={"cell": 2.0},
        n_jobs=None,
        device=None,
        verbose=0,
    )
    assert clone(TensorMapLstsqCV(**cv_params)).get_params() == cv_params


def test_fit_leaves_parameters_and_inputs_alone(pair):
    X, y = pair
    X_indexed, y_indexed = indexed(X, y)
    alpha = {(1,): 0.5, (6,): 2.0}
    gradient_weights = {"positions": 0.1}
    w = np.linspace(0.5, 1.5, 6)
    w_before = w.copy()
    before = [np.array(block.values, copy=True) for block in y.blocks()]
    model = TensorMapLstsq(alpha=alpha, fit_intercept=True, gradient_weights=gradient_weights)
    model.fit(X_indexed, y_indexed, sample_weight=w)
    assert model.alpha is alpha and alpha == {(1,): 0.5, (6,): 2.0}
    assert model.gradient_weights == {"positions": 0.1}
    np.testing.assert_array_equal(w, w_before)
    for block, values in zip(y.blocks(), before):
        np.testing.assert_array_equal(block.values, values)


# ---------------------------------------------------------------------------------
# 6. TensorMapLstsqCV against GridSearchCV with routing
# ---------------------------------------------------------------------------------


#: each cut-off keeps another number of singular values of the blocks (their ratios
#: to the largest are about 1, 1e-1, 1e-2 and 1e-3), and each penalty changes the fit
CV_RCONDS = [1e-6, 3e-3, 3e-2, 0.3]
CV_ALPHAS = [0.0, 1e-3, 1e-1]
SCALES = [1.0, 1e-1, 1e-2, 1e-3]
CV_GRADIENT_WEIGHTS = {"positions": 0.5, "cell": 0.2}


@pytest.fixture(scope="module")
def cv_pair():
    """Data where both rcond and alpha matter: feature scales span 3 decades."""
    return weighted_pair(seed=14, scales=SCALES, n_systems=7)


def _weighted_rmse_scorer(gradient=None):
    """A routed scikit-learn scorer of skmetalstsq.metrics.rmse, negated."""
    return make_scorer(metrics.rmse, greater_is_better=False, gradient=gradient).set_score_request(
        sample_weight=True
    )


def _routed_search(make_scoring, X, y, sample_weight, fit_intercept=True, cv=CV):
    """GridSearchCV over CV_RCONDS x CV_ALPHAS with sample_weight routed to fit and
    score; ``make_scoring()`` gives the scoring, with routing on."""
    with sklearn.config_context(enable_metadata_routing=True):
        scoring = make_scoring()
        estimator = (
            TensorMapLstsq(
                driver=None,
                fit_intercept=fit_intercept,
                gradient_weights=CV_GRADIENT_WEIGHTS,
            )
            .set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=True)
        )
        search = GridSearchCV(
            estimator, {"rcond": CV_RCONDS, "alpha": CV_ALPHAS}, cv=cv, scoring=scoring
        )
        return search.fit(X, y, sample_weight=sample_weight)


def _split_scores(results, n_splits, name="score"):
    return np.array([results[f"split{k}_test_{name}"] for k in range(n_splits)])


#: TensorMapLstsqCV's scoring, the routed GridSearchCV scoring (made with routing
#: on), and the gradient scored
SCORINGS = {
    "default": (None, lambda: None, None),
    "neg_rmse": ("neg_rmse", _weighted_rmse_scorer, None),
    "positions": (
        metrics.scorer("neg_rmse", gradient="positions"),
        lambda: _weighted_rmse_scorer("positions"),
        "positions",
    ),
}


@pytest.mark.parametrize(
    "scoring_case, weights_kind",
    [("default", "entries"), ("default", "map"), ("neg_rmse", "map"), ("positions", "entries")],
)
def test_cv_matches_routed_grid_search(cv_pair, scoring_case, weights_kind):
    X, y = cv_pair
    X_indexed, y_indexed = indexed(X, y)
    rng = np.random.default_rng(15)
    if weights_kind == "entries":
        sample_weight = rng.uniform(0.1, 2.0, size=len(X_indexed))
    else:
        sample_weight = IndexedTensorMap(weight_map(y, rng), "system")
    scoring, make_grid_scoring, _ = SCORINGS[scoring_case]
    model = TensorMapLstsqCV(
        rconds=CV_RCONDS,
        alphas=CV_ALPHAS,
        cv=CV,
        scoring=scoring,
        fit_intercept=True,
        gradient_weights=CV_GRADIENT_WEIGHTS,
    ).fit(X_indexed, y_indexed, sample_weight=sample_weight)
    search = _routed_search(make_grid_scoring, X_indexed, y_indexed, sample_weight)

    expected = search.cv_results_
    assert model.cv_results_["params"] == expected["params"]
    for name in ("param_alpha", "param_rcond"):
        np.testing.assert_array_equal(
            np.asarray(model.cv_results_[name]), np.asarray(expected[name])
        )
    # the candidates are told apart by the data: no two have close scores
    means = np.sort(expected["mean_test_score"])
    assert np.diff(means).min() > 1e-9
    np.testing.assert_allclose(
        _split_scores(model.cv_results_, 3), _split_scores(expected, 3), rtol=0, atol=1e-8
    )
    for name in ("mean_test_score", "std_test_score"):
        np.testing.assert_allclose(model.cv_results_[name], expected[name], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(model.cv_results_["rank_test_score"], expected["rank_test_score"])
    assert model.best_index_ == search.best_index_
    assert model.best_score_ == pytest.approx(search.best_score_, abs=1e-8)
    assert model.rcond_ == search.best_params_["rcond"]
    assert model.alpha_ == search.best_params_["alpha"]

    refit = TensorMapLstsq(
        rcond=model.rcond_,
        alpha=model.alpha_,
        fit_intercept=True,
        gradient_weights=CV_GRADIENT_WEIGHTS,
    ).fit(X_indexed, y_indexed, sample_weight=sample_weight)
    for key, block in refit.weights_.items():
        np.testing.assert_allclose(model.weights_.block(key).values, block.values, atol=1e-10)
        np.testing.assert_allclose(
            model.intercept_.block(key).values, refit.intercept_.block(key).values, atol=1e-10
        )


def _hand_row_weights(X, sample_weight):
    if isinstance(sample_weight, IndexedTensorMap):
        return map_row_weights(sample_weight.tensor, CV_GRADIENT_WEIGHTS)
    return system_row_weights(X, entry_weights_of(X, sample_weight), CV_GRADIENT_WEIGHTS)


def _score_weights(X, sample_weight):
    """The weights of the scored rows: those given, without the gradient factors."""
    if isinstance(sample_weight, IndexedTensorMap):
        return map_row_weights(sample_weight.tensor)
    return system_row_weights(X, entry_weights_of(X, sample_weight))


@pytest.mark.parametrize("scoring_case", list(SCORINGS))
def test_cv_scores_equal_hand_computation(cv_pair, scoring_case):
    X, y = cv_pair
    X_indexed, y_indexed = indexed(X, y)
    systems = np.array(entry_systems(X))
    w = np.random.default_rng(16).uniform(0.1, 2.0, size=len(systems))
    scoring, _, gradient = SCORINGS[scoring_case]
    model = TensorMapLstsqCV(
        rconds=CV_RCONDS,
        alphas=CV_ALPHAS,
        cv=CV,
        scoring=scoring,
        fit_intercept=True,
        gradient_weights=CV_GRADIENT_WEIGHTS,
    ).fit(X_indexed, y_indexed, sample_weight=w)
    fit_weights = _hand_row_weights(X, w)
    score_weights = _score_weights(X, w)
    part = 0 if gradient is None else 1 + sorted(GRADIENTS).index(gradient)
    for c, params in enumerate(model.cv_results_["params"]):
        for s, (train, test) in enumerate(CV.split(systems)):
            reference = svd_fit(
                X, y, masked(fit_weights, X, systems[train]), intercept=True, **params
            )
            predictions = predicted_parts(X, reference)
            in_test = rows_of(systems[test])
            if scoring is None:
                expected = pooled_r2(y, predictions, score_weights, part, in_test)
            else:
                expected = -pooled_rmse(y, predictions, score_weights, part, in_test)
            got = model.cv_results_[f"split{s}_test_score"][c]
            assert got == pytest.approx(expected, abs=1e-8), (params, s)
    reference = svd_fit(X, y, fit_weights, intercept=True, alpha=model.alpha_, rcond=model.rcond_)
    assert_fit_equals(model, reference, y, rtol=1e-8, atol=1e-9)


def test_cv_per_block_matches_a_search_on_each_block():
    # every block has every system, so that each block alone is split alike
    X, y = weighted_pair(seed=17, drop=False, scales=SCALES, n_systems=9)
    X_indexed, y_indexed = indexed(X, y)
    w = np.random.default_rng(18).uniform(0.1, 2.0, size=len(X_indexed))
    model = TensorMapLstsqCV(
        rconds=CV_RCONDS,
        alphas=CV_ALPHAS,
        cv=CV,
        per_block=True,
        fit_intercept=True,
        gradient_weights=CV_GRADIENT_WEIGHTS,
    ).fit(X_indexed, y_indexed, sample_weight=w)
    assert isinstance(model.rcond_, dict) and isinstance(model.alpha_, dict)
    assert set(model.rcond_) == set(model.alpha_) == {(1,), (6,)}
    for position, key in enumerate(X.keys):
        k = key_tuple(key)
        keys = Labels(X.keys.names, np.array([k]))
        X_block, y_block = (TensorMap(keys, [t.block(position).copy()]) for t in (X, y))
        search = _routed_search(lambda: None, *indexed(X_block, y_block), w)
        name = model.block_names_[k]
        assert name == f"center_type={k[0]}"
        np.testing.assert_allclose(
            _split_scores(model.cv_results_, 3, name),
            _split_scores(search.cv_results_, 3),
            rtol=0,
            atol=1e-8,
        )
        assert model.best_index_[k] == search.best_index_
        assert model.rcond_[k] == search.best_params_["rcond"]
        assert model.alpha_[k] == search.best_params_["alpha"]
        reference = svd_fit(
            X_block,
            y_block,
            system_row_weights(X_block, entry_weights_of(X, w), CV_GRADIENT_WEIGHTS),
            intercept=True,
            alpha=model.alpha_[k],
            rcond=model.rcond_[k],
        )
        weights, intercept = reference[k]
        np.testing.assert_allclose(model.weights_.block(key).values, weights, atol=1e-9)
        np.testing.assert_allclose(model.intercept_.block(key).values[:, 0], intercept, atol=1e-9)


def test_metrics_scorer_takes_routed_weights(cv_pair):
    # skmetalstsq.metrics.scorer in a routed search weighs test scores as the
    # TensorMapLstsqCV with the same scoring does
    X, y = cv_pair
    X_indexed, y_indexed = indexed(X, y)
    w = np.random.default_rng(19).uniform(0.1, 2.0, size=len(X_indexed))
    scoring = metrics.scorer("neg_rmse")
    model = TensorMapLstsqCV(
        rconds=CV_RCONDS,
        alphas=CV_ALPHAS,
        cv=CV,
        scoring=scoring,
        fit_intercept=True,
        gradient_weights=CV_GRADIENT_WEIGHTS,
    ).fit(X_indexed, y_indexed, sample_weight=w)
    search = _routed_search(
        lambda: scoring.set_score_request(sample_weight=True), X_indexed, y_indexed, w
    )
    np.testing.assert_allclose(
        _split_scores(model.cv_results_, 3), _split_scores(search.cv_results_, 3), atol=1e-8
    )
