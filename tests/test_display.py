"""The displays draw what independent computations on the stacked arrays give.

Every test checks the artists drawn (their data, labels, legend texts, scales),
never pixels, with matplotlib's Agg backend.
"""

import re
import sys

import matplotlib
import numpy as np
import pytest
import sklearn.metrics
from builders import make_pair, map_arrays, reorder_keys, stacked, to_torch, weight_map
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skmetalstsq import (
    IndexedTensorMap,
    TensorMapBayesianRidge,
    TensorMapLstsq,
    TensorMapLstsqCV,
    metrics,
)
from skmetalstsq.display import (
    CVCurveDisplay,
    ParityDisplay,
    SingularValuesDisplay,
    UncertaintyCalibrationDisplay,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EPS = np.finfo(np.float64).eps


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def raises(error, *parts):
    """pytest.raises matching every one of ``parts`` (literal text) in the message."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in parts)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


def legend_texts(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


def offsets(scatter):
    """(x, y) of the points of a scatter."""
    points = np.asarray(scatter.get_offsets())
    return points[:, 0], points[:, 1]


def band_contains(band, x, low, high):
    """Whether the polygon of a fill_between has the points (x, low) and (x, high)."""
    vertices = band.get_paths()[0].vertices
    for point in zip(x, low):
        assert np.isclose(vertices, point, rtol=1e-12, atol=0).all(1).any(), point
    for point in zip(x, high):
        assert np.isclose(vertices, point, rtol=1e-12, atol=0).all(1).any(), point
    return True


@pytest.fixture
def data():
    return make_pair(np.random.default_rng(0), n_systems=8, n_components=3, noise=0.3)


@pytest.fixture
def indexed():
    X, y = make_pair(np.random.default_rng(1), n_systems=12, noise=0.3)
    return IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")


def hand_prediction(model, X, key, gradient=None):
    """The prediction of one block by numpy: features @ weights.T (no intercept)."""
    block = X.block(key)
    if gradient is not None:
        block = block.gradient(gradient)
    return np.asarray(block.values) @ np.asarray(model.weights_.block(key).values).T


def label(name, true, pred, weights=None):
    rmse = sklearn.metrics.root_mean_squared_error(true, pred, sample_weight=weights)
    mae = sklearn.metrics.mean_absolute_error(true, pred, sample_weight=weights)
    return f"{name}: RMSE {rmse:.3g}, MAE {mae:.3g}"


# ---------------------------------------------------------------------------------
# ParityDisplay
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_parity_per_block_from_estimator(data, gradient):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    display = ParityDisplay.from_estimator(model, X, y, gradient=gradient)

    assert len(display.scatter_) == 2
    expected_labels, everything = [], []
    for scatter, key in zip(display.scatter_, y.keys):
        part = y.block(key) if gradient is None else y.block(key).gradient(gradient)
        true = np.asarray(part.values).ravel()
        pred = hand_prediction(model, X, key, gradient).ravel()
        x_drawn, y_drawn = offsets(scatter)
        np.testing.assert_allclose(x_drawn, true)
        np.testing.assert_allclose(y_drawn, pred, rtol=1e-10, atol=1e-12)
        name = f"center_type={key['center_type']}"
        expected_labels.append(label(name, true, pred))
        everything += [true, pred]
    assert legend_texts(display.ax_) == expected_labels
    everything = np.concatenate(everything)
    np.testing.assert_allclose(display.line_.get_xdata(), [everything.min(), everything.max()])
    np.testing.assert_allclose(display.line_.get_ydata(), [everything.min(), everything.max()])
    what = "values" if gradient is None else "'positions' gradient"
    assert display.ax_.get_xlabel() == f"True {what}"
    assert display.ax_.get_ylabel() == f"Predicted {what}"
    assert display.figure_ is display.ax_.figure
    # components folded into rows, targets pooled: rows x 3 components x 2 targets
    part = y.block(0) if gradient is None else y.block(0).gradient(gradient)
    assert len(offsets(display.scatter_[0])[0]) == np.prod(part.values.shape[:-1]) * 2


def test_parity_pairs_blocks_and_samples_by_labels(data):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    prediction = model.predict(X)
    # y_pred's keys and samples in another order: put back in y_true's order
    order = np.random.default_rng(3).permutation(len(prediction.block(1).samples))
    blocks = []
    for key, block in prediction.items():
        if key["center_type"] == 1:
            samples = Labels(block.samples.names, np.asarray(block.samples.values)[order])
            block = TensorBlock(
                np.asarray(block.values)[order], samples, block.components, block.properties
            )
        else:
            block = TensorBlock(block.values, block.samples, block.components, block.properties)
        blocks.append(block)
    shuffled = reorder_keys(TensorMap(prediction.keys, blocks), [1, 0])
    display = ParityDisplay.from_predictions(y, shuffled)
    for scatter, key in zip(display.scatter_, y.keys):
        _, y_drawn = offsets(scatter)
        np.testing.assert_allclose(y_drawn, hand_prediction(model, X, key).ravel(), rtol=1e-10)


def test_parity_pooled(data):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    display = ParityDisplay.from_estimator(model, X, y, gradient="positions", per_block=False)
    assert len(display.scatter_) == 1
    true = np.concatenate([np.asarray(b.gradient("positions").values).ravel() for b in y])
    pred = np.concatenate([hand_prediction(model, X, key, "positions").ravel() for key in y.keys])
    x_drawn, y_drawn = offsets(display.scatter_[0])
    np.testing.assert_allclose(x_drawn, true)
    np.testing.assert_allclose(y_drawn, pred, rtol=1e-10, atol=1e-12)
    assert legend_texts(display.ax_) == [label("all blocks", true, pred)]


def test_parity_entry_weights(indexed):
    X, y = indexed
    model = TensorMapLstsq().fit(X, y)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, size=len(X))
    weights[[0, 5]] = 0.0
    display = ParityDisplay.from_estimator(model, X, y, sample_weight=weights)
    expected = []
    for scatter, key in zip(display.scatter_, y.tensor.keys):
        block = y.tensor.block(key)
        systems = np.asarray(block.samples.column("system"))
        row_weights = weights[np.searchsorted(X.entries, systems)]
        kept = row_weights > 0
        true = np.asarray(block.values)
        pred = hand_prediction(model, X.tensor, key)
        x_drawn, y_drawn = offsets(scatter)
        np.testing.assert_allclose(x_drawn, true[kept].ravel())
        np.testing.assert_allclose(y_drawn, pred[kept].ravel(), rtol=1e-10)
        entry_weights = np.repeat(row_weights, true.shape[-1])
        name = f"center_type={key['center_type']}"
        expected.append(label(name, true.ravel(), pred.ravel(), entry_weights))
    assert legend_texts(display.ax_) == expected


def test_parity_weight_map_and_a_block_of_zero_weight(data):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    rng = np.random.default_rng(4)
    weights = weight_map(y, lambda shape: rng.uniform(0.1, 1.0, size=shape))
    zero = weights.block(1)
    zero.values[:] = 0.0
    for _, gradient in zero.gradients():
        gradient.values[:] = 0.0
    display = ParityDisplay.from_estimator(model, X, y, gradient="positions", sample_weight=weights)
    key = y.keys[0]
    true = np.asarray(y.block(key).gradient("positions").values)
    pred = hand_prediction(model, X, key, "positions")
    row_weights = np.asarray(weights.block(key).gradient("positions").values)
    entry_weights = np.broadcast_to(row_weights, true.shape).ravel()
    assert legend_texts(display.ax_) == [
        label("center_type=0", true.ravel(), pred.ravel(), entry_weights),
        "center_type=1: RMSE nan, MAE nan",
    ]
    assert len(offsets(display.scatter_[1])[0]) == 0


def test_parity_torch_arrays(data):
    pytest.importorskip("torch")
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    display = ParityDisplay.from_estimator(model, to_torch(X), to_torch(y))
    for scatter, key in zip(display.scatter_, y.keys):
        x_drawn, y_drawn = offsets(scatter)
        np.testing.assert_allclose(x_drawn, np.asarray(y.block(key).values).ravel())
        np.testing.assert_allclose(y_drawn, hand_prediction(model, X, key).ravel(), rtol=1e-10)


def test_parity_styles_and_given_axes(data):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    _, ax = plt.subplots()
    display = ParityDisplay.from_estimator(
        model, X, y, ax=ax, scatter_kwargs={"c": "red"}, line_kwargs={"ls": ":"}
    )
    assert display.ax_ is ax
    assert display.line_.get_linestyle() == ":"
    for scatter in display.scatter_:
        np.testing.assert_allclose(scatter.get_facecolor()[0][:3], [1.0, 0.0, 0.0])


def test_parity_errors_name_the_caller(data):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    with raises(TypeError, "ParityDisplay.from_predictions: per_block must be True or False"):
        ParityDisplay.from_predictions(y, y, per_block="yes")
    with raises(ValueError, "ParityDisplay.from_estimator: block (center_type=0)", "'cell'"):
        ParityDisplay.from_estimator(model, X, y, gradient="cell")
    with raises(TypeError, "ParityDisplay.from_predictions: gradient must be None"):
        ParityDisplay.from_predictions(y, y, gradient=1)
    one = TensorMap(Labels(["center_type"], np.array([[0]])), [y.block(0).copy()])
    with raises(ValueError, "ParityDisplay.from_predictions"):
        ParityDisplay.from_predictions(y, one)


def test_plots_need_matplotlib(monkeypatch, data):
    X, y = data
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with raises(ImportError, "ParityDisplay.from_predictions requires matplotlib"):
        ParityDisplay.from_predictions(y, y)
    with raises(ImportError, "CVCurveDisplay.plot requires matplotlib"):
        CVCurveDisplay(
            param_name="rcond", param_range=[1e-3], mean_test_score=[1], std_test_score=[0]
        ).plot()
    with raises(ImportError, "SingularValuesDisplay.plot requires matplotlib"):
        SingularValuesDisplay(singular_values={"a=1": [1.0]}).plot()


# ---------------------------------------------------------------------------------
# CVCurveDisplay
# ---------------------------------------------------------------------------------


def split_scores(results, name="score"):
    """(n_splits, n_candidates) test scores, from the split keys."""
    keys = sorted(
        (k for k in results if re.fullmatch(rf"split\d+_test_{re.escape(name)}", k)),
        key=lambda k: int(k[5 : k.index("_")]),
    )
    return np.array([results[k] for k in keys])


def test_cv_curve_from_tensor_map_lstsq_cv(indexed):
    X, y = indexed
    rconds = [1e-1, 1e-12, 1e-6, 1e-3]
    model = TensorMapLstsqCV(rconds=rconds, cv=KFold(3)).fit(X, y)
    display = CVCurveDisplay.from_estimator(model)

    scores = split_scores(model.cv_results_)
    order = np.argsort(rconds)
    mean, std = scores.mean(0), scores.std(0)
    assert len(display.lines_) == 1 and len(display.fill_between_) == 1
    assert display.errorbar_ is None
    line = display.lines_[0]
    np.testing.assert_allclose(line.get_xdata(), np.sort(rconds))
    np.testing.assert_allclose(line.get_ydata(), mean[order])
    assert band_contains(
        display.fill_between_[0], np.sort(rconds), (mean - std)[order], (mean + std)[order]
    )
    best = int(np.argmax(mean))
    np.testing.assert_allclose(display.chosen_.get_xdata(), [rconds[best]])
    np.testing.assert_allclose(display.chosen_.get_ydata(), [mean[best]])
    assert display.chosen_.get_color() == line.get_color()
    assert display.ax_.get_xscale() == "log"
    assert display.ax_.get_xlabel() == "rcond"
    assert display.ax_.get_ylabel() == "R2"
    assert legend_texts(display.ax_) == ["mean test score", f"chosen rcond={rconds[best]:.3g}"]
    assert display.notes_ == [] and display.note_ is None


def test_cv_curve_grid_search_over_a_pipeline_with_alpha(indexed):
    X, y = indexed
    rconds, alphas = [1e-10, 1e-5, 1e-2], [0.0, 0.5, 5.0]
    search = GridSearchCV(
        make_pipeline(TensorMapLstsq()),
        {"tensormaplstsq__rcond": rconds, "tensormaplstsq__alpha": alphas},
        cv=KFold(3),
        scoring=metrics.scorer("neg_rmse"),
    ).fit(X, y)
    display = CVCurveDisplay.from_estimator(search, negate_score=True)

    results = search.cv_results_
    scores = split_scores(results)
    labels = [line.get_label() for line in display.lines_]
    assert labels == ["alpha=0", "alpha=0.5", "alpha=5"]
    for line, band, alpha in zip(display.lines_, display.fill_between_, alphas):
        members = [
            i for i, p in enumerate(results["params"]) if p["tensormaplstsq__alpha"] == alpha
        ]
        members.sort(key=lambda i: results["params"][i]["tensormaplstsq__rcond"])
        np.testing.assert_allclose(line.get_xdata(), rconds)
        np.testing.assert_allclose(line.get_ydata(), -scores.mean(0)[members])
        mean, std = -scores.mean(0)[members], scores.std(0)[members]
        assert band_contains(band, rconds, mean - std, mean + std)
    best = results["params"][int(np.argmax(scores.mean(0)))]
    curve = alphas.index(best["tensormaplstsq__alpha"])
    assert display.chosen_.get_color() == display.lines_[curve].get_color()
    np.testing.assert_allclose(display.chosen_.get_xdata(), [best["tensormaplstsq__rcond"]])
    rcond, alpha = best["tensormaplstsq__rcond"], best["tensormaplstsq__alpha"]
    assert display.chosen_.get_label() == f"chosen rcond={rcond:.3g}, alpha={alpha:.3g}"
    assert display.ax_.get_ylabel() == "RMSE"


def test_cv_curve_against_alpha_one_curve_per_rcond_and_zero_left_out(indexed):
    X, y = indexed
    model = TensorMapLstsqCV(rconds=[None, 1e-6], alphas=[0.0, 1e-3, 1.0], cv=3).fit(X, y)
    display = CVCurveDisplay.from_estimator(model, param="alpha")
    assert [line.get_label() for line in display.lines_] == ["rcond=None", "rcond=1e-06"]
    results = model.cv_results_
    scores = split_scores(results)
    for line, rcond in zip(display.lines_, [None, 1e-6]):
        members = [
            i for i, p in enumerate(results["params"]) if p["rcond"] == rcond and p["alpha"] > 0
        ]
        np.testing.assert_allclose(line.get_xdata(), [1e-3, 1.0])
        np.testing.assert_allclose(line.get_ydata(), scores.mean(0)[members])
    assert display.notes_[0] == "alpha=0 left out (not on a log axis)"
    assert display.note_.get_text().startswith("alpha=0 left out")


def test_cv_curve_leaves_rcond_none_out_with_a_note():
    results = {
        "param_rcond": np.ma.MaskedArray(np.array([None, 1e-8, 0.0, 1e-3], dtype=object)),
        "mean_test_score": np.array([0.99, 0.5, 0.4, 0.7]),
        "std_test_score": np.array([0.01, 0.1, 0.1, 0.05]),
    }
    display = CVCurveDisplay.from_cv_results(results, best_index=0)
    np.testing.assert_allclose(display.lines_[0].get_xdata(), [1e-8, 1e-3])
    np.testing.assert_allclose(display.lines_[0].get_ydata(), [0.5, 0.7])
    assert display.chosen_ is None
    assert display.notes_ == [
        "rcond=None left out (its cut-off depends on the rows of each block and fold)",
        "rcond=0 left out (not on a log axis)",
        "the chosen candidate (rcond=None) is not drawn",
    ]
    assert display.note_.get_text() == "\n".join(display.notes_)


def test_cv_curve_per_block_scores(indexed):
    X, y = indexed
    model = TensorMapLstsqCV(rconds=[1e-12, 1e-6, 1e-2], cv=3, per_block=True).fit(X, y)
    _, ax = plt.subplots()
    pooled = CVCurveDisplay.from_estimator(model, ax=ax, name="all blocks")
    assert pooled.chosen_ is None
    colours = {pooled.lines_[0].get_color()}
    for name in model.block_names_.values():
        display = CVCurveDisplay.from_estimator(model, score=name, ax=ax)
        scores = split_scores(model.cv_results_, name)
        np.testing.assert_allclose(display.lines_[0].get_ydata(), scores.mean(0))
        best = int(np.argmax(scores.mean(0)))
        np.testing.assert_allclose(display.chosen_.get_xdata(), [[1e-12, 1e-6, 1e-2][best]])
        assert display.lines_[0].get_label() == name
        assert display.fill_between_[0].get_facecolor()[0][:3] == pytest.approx(
            matplotlib.colors.to_rgb(display.lines_[0].get_color())
        )
        colours.add(display.lines_[0].get_color())
    assert len(colours) == 3
    assert len(ax.get_lines()) == 3 + 2  # three curves, two chosen markers
    assert legend_texts(ax)[0] == "all blocks"


def test_cv_curve_multi_metric_search(indexed):
    X, y = indexed
    rconds = [1e-10, 1e-4, 1e-1]
    scoring = {
        "energies": metrics.scorer("neg_rmse"),
        "forces": metrics.scorer("neg_rmse", gradient="positions"),
    }
    search = GridSearchCV(
        TensorMapLstsq(), {"rcond": rconds}, cv=KFold(3), scoring=scoring, refit="forces"
    ).fit(X, y)
    display = CVCurveDisplay.from_estimator(search, negate_score=True)
    scores = split_scores(search.cv_results_, "forces")
    np.testing.assert_allclose(display.lines_[0].get_ydata(), -scores.mean(0))
    assert display.lines_[0].get_label() == "forces"
    assert display.ax_.get_ylabel() == "RMSE of the positions gradient"
    energies = CVCurveDisplay.from_estimator(search, score="energies", ax=display.ax_)
    # the candidate chosen by refit is marked on every score
    np.testing.assert_allclose(
        energies.chosen_.get_xdata(), [rconds[int(np.argmax(scores.mean(0)))]]
    )
    assert energies.chosen_.get_label().startswith("energies: chosen rcond=")

    no_refit = GridSearchCV(
        TensorMapLstsq(), {"rcond": rconds}, cv=KFold(3), scoring=scoring, refit=False
    ).fit(X, y)
    with raises(ValueError, "CVCurveDisplay.from_estimator", "name the one to draw with score="):
        CVCurveDisplay.from_estimator(no_refit)
    assert CVCurveDisplay.from_estimator(no_refit, score="forces").chosen_ is None


@pytest.mark.parametrize(
    ("scoring", "negated", "plain"),
    [
        ("neg_rmse", "RMSE", "Negative RMSE"),
        ("neg_mae", "MAE", "Negative MAE"),
        ("neg_mse", "MSE", "Negative MSE"),
        ("r2", "Negative R2", "R2"),
    ],
)
def test_cv_curve_names_the_metric_of_a_search(indexed, scoring, negated, plain):
    X, y = indexed
    search = GridSearchCV(
        TensorMapLstsq(), {"rcond": [1e-8, 1e-2]}, cv=KFold(3), scoring=metrics.scorer(scoring)
    ).fit(X, y)
    assert CVCurveDisplay.from_estimator(search, negate_score=True).ax_.get_ylabel() == negated
    assert CVCurveDisplay.from_estimator(search).ax_.get_ylabel() == plain


@pytest.mark.parametrize("negate_score", [True, False])
@pytest.mark.parametrize(
    "scoring", ["neg_root_mean_squared_error", "neg_mean_absolute_error", "neg_mean_squared_error"]
)
def test_cv_curve_labels_a_scikit_learn_scorer_as_validation_curve_display(scoring, negate_score):
    from sklearn.model_selection import ValidationCurveDisplay

    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 3))
    b = A @ [1.0, 2.0, 0.5] + 0.1 * rng.normal(size=30)
    rconds = [1e-8, 1e-2]
    search = GridSearchCV(TensorMapLstsq(), {"rcond": rconds}, cv=KFold(3), scoring=scoring)
    display = CVCurveDisplay.from_estimator(search.fit(A, b), negate_score=negate_score)
    reference = ValidationCurveDisplay.from_estimator(
        TensorMapLstsq(),
        A,
        b,
        param_name="rcond",
        param_range=rconds,
        cv=KFold(3),
        scoring=scoring,
        negate_score=negate_score,
    )
    assert display.ax_.get_ylabel() == reference.ax_.get_ylabel()


def test_cv_curve_bands_of_several_curves_stay_apart():
    rconds, alphas = [1e-8, 1e-4, 1e-1], [1e-3, 1e-2, 1e-1]
    results = {
        "param_rcond": np.ma.MaskedArray(rconds * 3),
        "param_alpha": np.ma.MaskedArray(np.repeat(alphas, 3)),
        "mean_test_score": np.array([0.9, 0.91, 0.5, 0.89, 0.9, 0.5, 0.88, 0.89, 0.5]),
        "std_test_score": np.full(9, 0.05),
    }
    display = CVCurveDisplay.from_cv_results(results)
    colours = [matplotlib.colors.to_rgb(line.get_color()) for line in display.lines_]
    assert len(set(colours)) == 3
    stacked = 1.0
    for band, colour in zip(display.fill_between_, colours):
        (face,), (edge,) = band.get_facecolor(), band.get_edgecolor()
        # each band lighter than one alone, outlined in its curve's colour
        assert tuple(face[:3]) == pytest.approx(colour) and face[3] <= 0.1
        assert tuple(edge[:3]) == pytest.approx(colour) and edge[3] >= 0.5
        assert band.get_linewidth() > 0
        stacked *= 1 - face[3]
    # where all three overlap, what shows through is mostly the background
    assert 1 - stacked < 0.3

    # one curve alone keeps a band of alpha 0.2, without an outline
    (alone,) = CVCurveDisplay.from_cv_results(
        {**results, "param_alpha": np.ma.MaskedArray(np.ones(9))}
    ).fill_between_
    assert alone.get_facecolor()[0][3] == pytest.approx(0.2)
    # an alpha given is every band's
    given = CVCurveDisplay.from_cv_results(results, fill_between_kwargs={"alpha": 0.5})
    assert [band.get_alpha() for band in given.fill_between_] == [0.5] * 3


def test_cv_curve_more_curves_than_the_colour_cycle_each_get_a_colour():
    alphas = np.logspace(-12, -1, 12)
    results = {
        "param_rcond": np.ma.MaskedArray(np.tile([1e-8, 1e-2], 12)),
        "param_alpha": np.ma.MaskedArray(np.repeat(alphas, 2)),
        "mean_test_score": np.linspace(0.5, 0.9, 24),
        "std_test_score": np.full(24, 0.01),
    }
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    assert len(cycle) < 12
    for style in ("fill_between", "errorbar"):
        display = CVCurveDisplay.from_cv_results(results, std_display_style=style)
        lines = display.lines_ or [bar.lines[0] for bar in display.errorbar_]
        colours = {matplotlib.colors.to_rgba(line.get_color()) for line in lines}
        assert len(colours) == 12, style
    # a colour given is kept
    red = CVCurveDisplay.from_cv_results(results, line_kwargs={"color": "red"})
    assert {line.get_color() for line in red.lines_} == {"red"}


@pytest.mark.parametrize("style", ["errorbar", None])
def test_cv_curve_std_styles(style):
    results = {
        "param_rcond": np.ma.MaskedArray([1e-6, 1e-3]),
        "mean_test_score": np.array([0.8, 0.9]),
        "std_test_score": np.array([0.1, 0.2]),
    }
    display = CVCurveDisplay.from_cv_results(results, std_display_style=style)
    assert display.fill_between_ is None
    assert len(display.ax_.collections) == (0 if style is None else 1)
    if style == "errorbar":
        assert display.lines_ is None and len(display.errorbar_) == 1
        np.testing.assert_allclose(display.errorbar_[0].lines[0].get_ydata(), [0.8, 0.9])
    else:
        assert display.errorbar_ is None and len(display.lines_) == 1


def test_cv_curve_errors():
    results = {
        "param_step_a__rcond": np.ma.MaskedArray([1e-6, 1e-3]),
        "param_step_b__rcond": np.ma.MaskedArray([1e-6, 1e-6]),
        "mean_test_score": np.array([0.8, 0.9]),
        "std_test_score": np.array([0.1, 0.2]),
    }
    caller = "CVCurveDisplay.from_cv_results"
    with raises(ValueError, caller, "no single parameter 'rcond'", "several"):
        CVCurveDisplay.from_cv_results(results)
    with raises(ValueError, caller, "no single parameter 'alpha'", "none", "step_a__rcond"):
        CVCurveDisplay.from_cv_results(results, param="alpha")
    with raises(ValueError, caller, "no key 'mean_test_forces'", "['score']"):
        CVCurveDisplay.from_cv_results(results, param="step_a__rcond", score="forces")
    with raises(TypeError, caller, "cv_results must be a dict", "got list"):
        CVCurveDisplay.from_cv_results([1, 2])
    with raises(ValueError, caller, "best_index must be None or a position in 0..1, got 2"):
        CVCurveDisplay.from_cv_results(results, param="step_a__rcond", best_index=2)
    short = {**results, "mean_test_score": np.array([0.8])}
    with raises(ValueError, caller, "2 candidates in 'param_step_a__rcond' but 1"):
        CVCurveDisplay.from_cv_results(short, param="step_a__rcond")
    words = {**results, "param_step_a__rcond": np.ma.MaskedArray(np.array(["a", "b"]))}
    with raises(TypeError, "CVCurveDisplay.plot", "numbers or None", "'a' at position 0"):
        CVCurveDisplay.from_cv_results(words, param="step_a__rcond")
    nothing = {**results, "param_step_a__rcond": np.ma.MaskedArray([0.0, 0.0])}
    with raises(ValueError, "CVCurveDisplay.plot: no candidate can be drawn on a log axis"):
        CVCurveDisplay.from_cv_results(nothing, param="step_a__rcond")
    with raises(ValueError, "CVCurveDisplay.plot: std_display_style must be", "'band'"):
        CVCurveDisplay.from_cv_results(results, param="step_a__rcond", std_display_style="band")
    display = CVCurveDisplay(
        param_name="rcond", param_range=[1e-3, 1e-2], mean_test_score=[1], std_test_score=[0]
    )
    with raises(ValueError, "CVCurveDisplay.plot: param_range has 2 candidates"):
        display.plot()
    with raises(NotFittedError, "CVCurveDisplay.from_estimator: TensorMapLstsqCV has no cv_res"):
        CVCurveDisplay.from_estimator(TensorMapLstsqCV())


# ---------------------------------------------------------------------------------
# SingularValuesDisplay
# ---------------------------------------------------------------------------------


def relative_singular_values(block):
    singular = np.linalg.svd(stacked(block), compute_uv=False)
    return singular / singular[0]


def test_singular_values_with_a_shared_cutoff(data):
    X, y = data
    model = TensorMapLstsq(rcond=1e-2).fit(X, y)
    display = SingularValuesDisplay.from_estimator(model)
    assert [line.get_label() for line in display.lines_] == ["center_type=0", "center_type=1"]
    for line, block in zip(display.lines_, X.blocks()):
        expected = relative_singular_values(block)
        np.testing.assert_allclose(line.get_xdata(), np.arange(1, len(expected) + 1))
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-10)
    assert len(display.cutoff_lines_) == 1
    np.testing.assert_allclose(display.cutoff_lines_[0].get_ydata(), [1e-2, 1e-2])
    assert display.cutoff_lines_[0].get_label() == "rcond=0.01"
    assert display.ax_.get_yscale() == "log"
    assert legend_texts(display.ax_) == ["center_type=0", "center_type=1", "rcond=0.01"]
    assert display.notes_ == [] and display.note_ is None


def test_singular_values_default_cutoff_needs_x(data):
    X, y = data
    model = TensorMapLstsq().fit(X, y)
    without = SingularValuesDisplay.from_estimator(model)
    assert without.cutoff_lines_ == []
    assert without.notes_ == [
        "center_type=0: no cut-off given (rcond=None), not drawn",
        "center_type=1: no cut-off given (rcond=None), not drawn",
    ]
    with_x = SingularValuesDisplay.from_estimator(model, IndexedTensorMap(X, "system"))
    # every block has the same numbers of rows and features: one shared line
    rows, features = stacked(X.block(0)).shape
    assert len(with_x.cutoff_lines_) == 1
    np.testing.assert_allclose(with_x.cutoff_lines_[0].get_ydata()[0], EPS * max(rows, features))
    assert with_x.notes_ == []


def test_singular_values_per_block_cutoffs():
    display = SingularValuesDisplay(
        singular_values={"b=1": np.array([2.0, 1.0, 0.5]), "b=2": np.array([3.0, 3e-3])},
        rcond={"b=1": 1e-1, "b=2": 1e-4},
    ).plot()
    labels = [line.get_label() for line in display.cutoff_lines_]
    assert labels == ["rcond=0.1 (b=1)", "rcond=0.0001 (b=2)"]
    for cutoff, line in zip(display.cutoff_lines_, display.lines_):
        assert cutoff.get_color() == line.get_color()
    np.testing.assert_allclose(display.lines_[1].get_ydata(), [1.0, 1e-3])


def test_singular_values_of_tensor_map_lstsq_cv(indexed):
    X, y = indexed
    model = TensorMapLstsqCV(rconds=[1e-12, 1e-3, 0.3], cv=3, per_block=True).fit(X, y)
    display = SingularValuesDisplay.from_estimator(model)
    chosen = [model.rcond_[(0,)], model.rcond_[(1,)]]
    drawn = [line.get_ydata()[0] for line in display.cutoff_lines_]
    if chosen[0] == chosen[1]:
        assert drawn == pytest.approx([chosen[0]])
    else:
        assert drawn == pytest.approx(chosen)
    for line, block in zip(display.lines_, X.tensor.blocks()):
        np.testing.assert_allclose(line.get_ydata(), relative_singular_values(block), rtol=1e-10)


def test_singular_values_notes_and_torch(data):
    torch = pytest.importorskip("torch")
    X, y = data
    model = TensorMapLstsq(rcond=0.0).fit(to_torch(X), to_torch(y))
    assert isinstance(model.singular_values_[(0,)], torch.Tensor)
    display = SingularValuesDisplay.from_estimator(model)
    np.testing.assert_allclose(
        display.lines_[0].get_ydata(), relative_singular_values(X.block(0)), rtol=1e-10
    )
    assert display.notes_ == [
        "center_type=0: rcond=0 cuts nothing, not drawn",
        "center_type=1: rcond=0 cuts nothing, not drawn",
    ]
    partial = SingularValuesDisplay(
        singular_values={"a=1": [1.0, 0.1], "a=2": None, "a=3": []}, rcond=1e-3
    ).plot()
    assert len(partial.lines_) == 1
    assert partial.notes_ == [
        "a=2: no singular values (its driver does not compute them), not drawn",
        "a=3: no nonzero singular value, not drawn",
    ]
    # the cut-off is not shared by blocks left out: it is the drawn block's
    assert partial.cutoff_lines_[0].get_label() == "rcond=0.001"


def test_singular_values_errors(data):
    X, y = data
    caller = "SingularValuesDisplay.from_estimator"
    with raises(NotFittedError, caller, "TensorMapLstsq has no singular_values_"):
        SingularValuesDisplay.from_estimator(TensorMapLstsq())
    gels = TensorMapLstsq(driver="gels").fit(X, y)
    with raises(ValueError, "SingularValuesDisplay.plot: no block has singular values", "gelsd"):
        SingularValuesDisplay.from_estimator(gels)
    model = TensorMapLstsq().fit(X, y)
    one = TensorMap(Labels(["center_type"], np.array([[0]])), [X.block(0).copy()])
    with raises(ValueError, caller, "X has no block (center_type=1)"):
        SingularValuesDisplay.from_estimator(model, one)
    fewer, _ = make_pair(np.random.default_rng(0), n_features=3)
    with raises(ValueError, caller, "block (center_type=0) has 3 properties in X", "on 4"):
        SingularValuesDisplay.from_estimator(model, fewer)
    with raises(TypeError, caller, "X must be the TensorMap", "got ndarray"):
        SingularValuesDisplay.from_estimator(model, np.zeros((3, 4)))


def _parity_display():
    true = {"center_type=1": np.array([0.0, 1.0, 2.0])}
    pred = {"center_type=1": np.array([0.1, 0.9, 2.0])}
    errors = {"center_type=1": 0.1}
    return ParityDisplay(y_true=true, y_pred=pred, rmse=errors, mae=errors).plot()


def _cv_curve_display():
    return CVCurveDisplay(
        param_name="rcond",
        param_range=[1e-12, 1e-6, 1e-2],
        mean_test_score=[-1.5e-3, -1.2e-3, -2.5e-2],
        std_test_score=[1e-4, 1e-4, 1e-3],
        score_name="Negative RMSE",
    ).plot()


def _singular_values_display():
    singular_values = {
        "o3_lambda=0": np.logspace(0, -17, 40),
        "o3_lambda=1": np.logspace(0, -12, 40),
    }
    return SingularValuesDisplay(singular_values=singular_values, rcond=1e-10).plot()


@pytest.mark.parametrize("draw", [_parity_display, _cv_curve_display, _singular_values_display])
def test_a_new_figure_keeps_its_labels_inside(draw):
    """The labels and tick labels of a display on a figure of its own are not clipped."""
    with matplotlib.rc_context({"figure.figsize": (4, 3)}):
        display = draw()
    figure = display.figure_
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    inside = figure.bbox
    for text in (display.ax_.xaxis.label, display.ax_.yaxis.label):
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= inside.x0 and extent.x1 <= inside.x1, text.get_text()
        assert extent.y0 >= inside.y0 and extent.y1 <= inside.y1, text.get_text()
    # everything drawn of the Axes: tick labels, legend, notes
    drawn = display.ax_.get_tightbbox(renderer)
    assert drawn.x0 >= inside.x0 and drawn.x1 <= inside.x1
    assert drawn.y0 >= inside.y0 and drawn.y1 <= inside.y1


def test_a_single_block_map_is_labelled_without_its_key():
    rng = np.random.default_rng(5)
    samples = Labels.range("system", 10)
    x = TensorBlock(rng.normal(size=(10, 3)), samples, [], Labels.range("feature", 3))
    energy = x.values @ [[1.0], [0.5], [-1.0]] + 0.1 * rng.normal(size=(10, 1))
    y = TensorBlock(energy, samples, [], Labels.range("energy", 1))
    X, Y = TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])
    model = TensorMapLstsq(driver="gelsd").fit(X, Y)
    parity = ParityDisplay.from_estimator(model, X, Y)
    pred = np.asarray(X.block().values) @ np.asarray(model.weights_.block().values).T
    assert legend_texts(parity.ax_) == [label("", energy.ravel(), pred.ravel()).lstrip(": ")]
    singular = SingularValuesDisplay.from_estimator(model)
    assert legend_texts(singular.ax_) == ["singular values"]
    assert singular.notes_ == ["the block: no cut-off given (rcond=None), not drawn"]


# ---------------------------------------------------------------------------------
# UncertaintyCalibrationDisplay
# ---------------------------------------------------------------------------------

#: the normal quantiles of the central 68 % and 95 % intervals, from tables
Z68, Z95 = 0.994457883209753, 1.959963984540054


def known_calibration(seed=0, levels=(0.1, 1.0, 10.0), n=300, scale=1.0):
    """(y_true, y_pred, y_std) where entry i has std ``levels[k]`` and an error of
    ``scale`` times that std: honest error bars for scale 1, shuffled."""
    rng = np.random.default_rng(seed)
    std = np.repeat(levels, n)
    y_pred = rng.normal(size=std.size)
    y_true = y_pred + scale * std * rng.standard_normal(std.size)
    order = rng.permutation(std.size)
    return y_true[order], y_pred[order], std[order]


def expected_calibration(y_true, y_pred, std, levels):
    """Per level of std: RMSE and count; pooled coverage, by numpy on masks."""
    error = np.abs(y_pred - y_true)
    rmse_ = [np.sqrt(np.mean(error[std == level] ** 2)) for level in levels]
    counts = [int((std == level).sum()) for level in levels]
    coverage = {0.68: np.mean(error <= Z68 * std), 0.95: np.mean(error <= Z95 * std)}
    return np.array(rmse_), np.array(counts), coverage


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_calibration_bins_and_coverage_of_arrays(scale):
    levels = (0.1, 1.0, 10.0)
    y_true, y_pred, std = known_calibration(levels=levels, scale=scale)
    display = UncertaintyCalibrationDisplay.from_predictions(y_true, y_pred, std, n_bins=3)
    rmse_, counts, coverage = expected_calibration(y_true, y_pred, std, levels)
    np.testing.assert_allclose(display.bin_std, levels, rtol=1e-14)
    np.testing.assert_allclose(display.bin_rmse, rmse_, rtol=1e-12)
    np.testing.assert_array_equal(display.bin_count, counts)
    assert display.coverage == pytest.approx(coverage, abs=0)
    if scale == 1.0:  # honest error bars: the bins near the line, the nominal coverage
        np.testing.assert_allclose(display.bin_rmse / display.bin_std, 1, atol=0.15)
        assert display.coverage == pytest.approx({0.68: 0.68, 0.95: 0.95}, abs=0.04)
    else:  # over-confident three times: far above the line, far too few inside
        assert (display.bin_rmse > 2 * display.bin_std).all()
        assert display.coverage[0.95] < 0.6
    # what is drawn
    np.testing.assert_allclose(display.line_.get_xdata(), levels, rtol=1e-14)
    np.testing.assert_allclose(display.line_.get_ydata(), rmse_, rtol=1e-12)
    x, y = offsets(display.scatter_)
    np.testing.assert_array_equal(x, std)
    np.testing.assert_allclose(y, np.abs(y_pred - y_true), rtol=0, atol=0)
    assert display.ideal_line_.get_xy1() == (1, 1) and display.ideal_line_.get_xy2() == (10, 10)
    assert display.ax_.get_xscale() == display.ax_.get_yscale() == "log"
    assert legend_texts(display.ax_) == [
        "900 entries",
        "RMSE of 3 bins by std",
        "ideal: RMSE = std",
    ]
    assert display.ax_.get_legend().get_title().get_text() == (
        f"within the 68% interval: {100 * coverage[0.68]:.3g}%\n"
        f"within the 95% interval: {100 * coverage[0.95]:.3g}%"
    )
    assert display.ax_.get_xlabel() == "Predicted std of the values"
    assert display.ax_.get_ylabel() == "Absolute error"
    assert display.notes_ == [] and display.note_ is None


def test_calibration_bins_of_equal_counts_by_std():
    """Bins cut the entries sorted by std into equal counts: the RMS std and RMSE
    of each, and the coverage, against numpy on the sorted arrays."""
    rng = np.random.default_rng(3)
    std = rng.uniform(0.5, 2.0, size=(50, 2))  # two targets, pooled
    y_pred = rng.normal(size=(50, 2))
    y_true = y_pred + std * rng.standard_normal((50, 2))
    display = UncertaintyCalibrationDisplay.from_predictions(y_true, y_pred, std, n_bins=4)
    order = np.argsort(std.ravel())
    sorted_std = std.ravel()[order]
    sorted_error = np.abs(y_pred - y_true).ravel()[order]
    edges = [0, 25, 50, 75, 100]
    for b, (start, stop) in enumerate(zip(edges[:-1], edges[1:])):
        assert display.bin_count[b] == 25
        assert display.bin_std[b] == pytest.approx(
            np.sqrt(np.mean(sorted_std[start:stop] ** 2)), rel=1e-14
        )
        assert display.bin_rmse[b] == pytest.approx(
            np.sqrt(np.mean(sorted_error[start:stop] ** 2)), rel=1e-14
        )
    assert display.coverage[0.95] == np.mean(sorted_error <= Z95 * sorted_std)
    # more bins than entries: one per entry
    one_each = UncertaintyCalibrationDisplay.from_predictions(
        y_true[:3, 0], y_pred[:3, 0], std[:3, 0], n_bins=10
    )
    assert one_each.bin_count.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(one_each.bin_std, np.sort(std[:3, 0]))


def block_like(block, values, gradient_values):
    """A block of ``block``'s metadata (with its positions gradient) holding new arrays."""
    new = TensorBlock(values, block.samples, block.components, block.properties)
    gradient = block.gradient("positions")
    new.add_gradient(
        "positions",
        TensorBlock(gradient_values, gradient.samples, gradient.components, block.properties),
    )
    return new


def reversed_properties(tensor):
    """A copy of ``tensor`` with the properties of every block (and gradient) reversed."""
    blocks = []
    for block in tensor.blocks():
        properties = Labels(block.properties.names, np.asarray(block.properties.values)[::-1])
        new = TensorBlock(block.values[..., ::-1], block.samples, block.components, properties)
        gradient = block.gradient("positions")
        new.add_gradient(
            "positions",
            TensorBlock(
                gradient.values[..., ::-1], gradient.samples, gradient.components, properties
            ),
        )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def rows_of(tensor, gradient):
    """Every entry of the values (or the positions gradient) of every block, 1-D, by numpy."""
    parts = []
    for block in tensor.blocks():
        part = block if gradient is None else block.gradient(gradient)
        parts.append(np.asarray(part.values).ravel())
    return np.concatenate(parts)


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_calibration_of_tensor_maps_pairs_entries_by_labels(data, gradient):
    """TensorMaps: entries paired by labels (y_pred and y_std with their keys and
    properties in other orders), every block, component and property pooled."""
    _, y_true = data
    rng = np.random.default_rng(7)
    std_blocks, pred_blocks = [], []
    for scale, block in zip((0.5, 2.0), y_true.blocks()):  # one std per block and kind
        gradient_shape = block.gradient("positions").values.shape
        std = block_like(
            block, np.full(block.values.shape, scale), np.full(gradient_shape, 0.1 * scale)
        )
        pred = block_like(
            block,
            block.values + scale * rng.standard_normal(block.values.shape),
            block.gradient("positions").values + 0.1 * scale * rng.standard_normal(gradient_shape),
        )
        std_blocks.append(std)
        pred_blocks.append(pred)
    y_std, y_pred = TensorMap(y_true.keys, std_blocks), TensorMap(y_true.keys, pred_blocks)
    display = UncertaintyCalibrationDisplay.from_predictions(
        y_true,
        reorder_keys(reversed_properties(y_pred), [1, 0]),
        reversed_properties(reorder_keys(y_std, [1, 0])),
        gradient=gradient,
        n_bins=2,
    )
    true, pred, std = (rows_of(t, gradient) for t in (y_true, y_pred, y_std))
    levels = sorted(set(std.tolist()))
    rmse_, counts, coverage = expected_calibration(true, pred, std, levels)
    np.testing.assert_allclose(display.bin_std, levels, rtol=1e-14)
    np.testing.assert_allclose(display.bin_rmse, rmse_, rtol=1e-12)
    np.testing.assert_array_equal(display.bin_count, counts)
    assert display.coverage == pytest.approx(coverage, abs=0)
    what = "values" if gradient is None else "'positions' gradient"
    assert display.ax_.get_xlabel() == f"Predicted std of the {what}"


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_calibration_from_bayesian_ridge_on_data_of_known_noise(gradient):
    """Every value and force component has noise of std 0.3, as the model assumes:
    the bins lie on the line and the intervals hold their nominal share."""
    X, y = make_pair(np.random.default_rng(11), n_systems=150, n_features=4, noise=0.3)
    model = TensorMapBayesianRidge().fit(X, y)
    display = UncertaintyCalibrationDisplay.from_estimator(model, X, y, gradient=gradient, n_bins=5)
    mean, std = model.predict(X, return_std=True)
    np.testing.assert_array_equal(display.y_std, rows_of(std, gradient))
    np.testing.assert_array_equal(
        display.abs_error, np.abs(rows_of(mean, gradient) - rows_of(y, gradient))
    )
    np.testing.assert_allclose(display.bin_std, 0.3, rtol=0.05)
    np.testing.assert_allclose(display.bin_rmse, 0.3, rtol=0.15)
    assert display.coverage == pytest.approx({0.68: 0.68, 0.95: 0.95}, abs=0.03)


def test_calibration_from_estimator_on_arrays():
    rng = np.random.default_rng(12)
    A = rng.normal(size=(3000, 5))
    y = A @ rng.normal(size=5) + 2.0 + 0.5 * rng.normal(size=3000)
    model = TensorMapBayesianRidge().fit(A[:1000], y[:1000])
    display = UncertaintyCalibrationDisplay.from_estimator(model, A[1000:], y[1000:])
    mean, std = model.predict(A[1000:], return_std=True)
    error = np.abs(mean - y[1000:])
    expected = {0.68: np.mean(error <= Z68 * std), 0.95: np.mean(error <= Z95 * std)}
    assert display.coverage == pytest.approx(expected, abs=0)
    assert display.coverage == pytest.approx({0.68: 0.68, 0.95: 0.95}, abs=0.03)
    assert display.bin_count.sum() == 2000 and display.bin_count.size == 10


def test_calibration_zero_errors_on_log_axes_are_noted():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.0, 2.5, 3.0, 3.0])
    y_std = np.array([0.5, 0.5, 0.0, 1.0])
    display = UncertaintyCalibrationDisplay.from_predictions(y_true, y_pred, y_std, n_bins=2)
    # bins: std [0.0, 0.5] (errors 0, 0) and [0.5, 1.0] (errors 0.5, 1.0)
    np.testing.assert_allclose(display.bin_std, [np.sqrt(0.125), np.sqrt(0.625)])
    np.testing.assert_allclose(display.bin_rmse, [0.0, np.sqrt(0.625)])
    assert display.coverage == {0.68: 0.5, 0.95: 1.0}  # 0.5 > 0.994 * 0.5, 1 > 0.994
    assert display.notes_ == [
        "2 entries of zero std or error not drawn (log axes)",
        "1 bins of zero std or RMSE not drawn (log axes)",
    ]
    assert display.note_.get_text() == "\n".join(display.notes_)
    x, y = offsets(display.scatter_)
    assert x.tolist() == [0.5, 1.0] and y.tolist() == [0.5, 1.0]
    assert display.line_.get_xdata().tolist() == [np.sqrt(0.625)]
    linear = UncertaintyCalibrationDisplay.from_predictions(
        y_true, y_pred, y_std, n_bins=2, log_scale=False, line_kwargs={"color": "green"}
    )
    assert linear.notes_ == [] and linear.ax_.get_xscale() == "linear"
    assert len(offsets(linear.scatter_)[0]) == 4 and linear.line_.get_color() == "green"
    _, ax = plt.subplots()
    assert UncertaintyCalibrationDisplay.from_predictions(y_true, y_pred, y_std, ax=ax).ax_ is ax


def test_calibration_errors_name_the_caller_and_the_block(data):
    X, y = data
    caller = "UncertaintyCalibrationDisplay.from_predictions"
    negative = map_arrays(y, lambda a: -np.ones_like(a) if a.shape[-1] else a)
    with raises(ValueError, caller, "y_std block (center_type=0) has negative values", "-1"):
        UncertaintyCalibrationDisplay.from_predictions(y, y, negative)
    # y_std of another layout: the error names y_std, not y_pred
    fewer = TensorMap(Labels(["center_type"], np.array([[0]])), [y.block(0).copy()])
    with raises(ValueError, caller, "y_std") as error:
        UncertaintyCalibrationDisplay.from_predictions(y, y, fewer)
    assert "y_pred" not in str(error.value)
    other = [y.block(0).properties, Labels(["target"], np.array([[0], [5]]))]
    renamed = [
        TensorBlock(np.ones_like(block.values), block.samples, block.components, properties)
        for block, properties in zip(y.blocks(), other)
    ]
    renamed = TensorMap(y.keys, renamed)
    with raises(ValueError, caller, "block (center_type=1)", "properties", "in y_std") as error:
        UncertaintyCalibrationDisplay.from_predictions(y, y, renamed)
    assert "y_pred" not in str(error.value)
    ones = map_arrays(y, np.ones_like)
    with raises(TypeError, caller, "all be TensorMaps or arrays", "y_std is ndarray"):
        UncertaintyCalibrationDisplay.from_predictions(y, y, np.ones(3))
    with raises(ValueError, caller, "has no 'cell' gradient"):
        UncertaintyCalibrationDisplay.from_predictions(y, y, ones, gradient="cell")
    arrays = (np.zeros(4), np.zeros(4))
    with raises(ValueError, caller, "same shape", "(4,) in y_true", "(3,) in y_std"):
        UncertaintyCalibrationDisplay.from_predictions(*arrays, np.ones(3))
    with raises(ValueError, caller, "y_std has negative values"):
        UncertaintyCalibrationDisplay.from_predictions(*arrays, -np.ones(4))
    with raises(ValueError, caller, "y_pred has NaN"):
        UncertaintyCalibrationDisplay.from_predictions(np.zeros(4), np.full(4, np.nan), np.ones(4))
    with raises(ValueError, caller, "gradient='positions' needs TensorMaps"):
        UncertaintyCalibrationDisplay.from_predictions(*arrays, np.ones(4), gradient="positions")
    with raises(ValueError, caller, "no entry"):
        UncertaintyCalibrationDisplay.from_predictions(np.zeros(0), np.zeros(0), np.zeros(0))
    for n_bins in (0, 2.5, True):
        with raises(ValueError, caller, "n_bins must be an int >= 1", repr(n_bins)):
            UncertaintyCalibrationDisplay.from_predictions(*arrays, np.ones(4), n_bins=n_bins)
    with raises(TypeError, "from_estimator", "TensorMapLstsq.predict takes no return_std"):
        UncertaintyCalibrationDisplay.from_estimator(TensorMapLstsq().fit(X, y), X, y)


def _calibration_display():
    y_true, y_pred, y_std = known_calibration(levels=(1e-4, 1e-2, 1.0), n=50)
    return UncertaintyCalibrationDisplay.from_predictions(y_true, y_pred, y_std)


def test_a_new_calibration_figure_keeps_its_labels_inside():
    test_a_new_figure_keeps_its_labels_inside(_calibration_display)


def test_calibration_of_indexed_and_torch_maps_is_that_of_numpy_maps(data):
    pytest.importorskip("torch")
    X, y = data
    rng = np.random.default_rng(13)
    y_pred = map_arrays(y, lambda a: a + 0.3 * rng.standard_normal(a.shape))
    y_std = map_arrays(y, lambda a: rng.uniform(0.1, 0.5, size=a.shape))
    reference = UncertaintyCalibrationDisplay.from_predictions(
        y, y_pred, y_std, gradient="positions", n_bins=4
    )
    kinds = {
        "torch": [to_torch(t) for t in (y, y_pred, y_std)],
        "indexed": [IndexedTensorMap(t, "system") for t in (y, y_pred, y_std)],
    }
    for maps in kinds.values():
        display = UncertaintyCalibrationDisplay.from_predictions(
            *maps, gradient="positions", n_bins=4
        )
        np.testing.assert_allclose(display.y_std, reference.y_std, rtol=1e-15)
        np.testing.assert_allclose(display.abs_error, reference.abs_error, rtol=1e-15)
        np.testing.assert_allclose(display.bin_rmse, reference.bin_rmse, rtol=1e-14)
        assert display.coverage == reference.coverage
    # the reference itself, by numpy on the stacked gradient rows
    error = np.abs(rows_of(y_pred, "positions") - rows_of(y, "positions"))
    std = rows_of(y_std, "positions")
    assert reference.coverage[0.95] == np.mean(error <= Z95 * std)
