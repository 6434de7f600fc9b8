"""The quick-start example: what it prints and draws, against numpy on stacked arrays."""

import ast
import contextlib
import io
import re
import runpy
import sys
import types
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from sklearn.model_selection import KFold, train_test_split

EXAMPLE = Path(__file__).parents[1] / "examples" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The example run as a script without a display (matplotlib's Agg backend).

    Its namespace, what it printed, the Axes of the figures it drew (in order),
    and the directory it ran in.
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    printed = io.StringIO()
    directory = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as patch:
        # as `python examples/quickstart.py` runs it: not inside the docs build
        patch.delitem(sys.modules, "sphinx_gallery", raising=False)
        patch.chdir(directory)
        try:
            with contextlib.redirect_stdout(printed):
                namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
            drawn = [plt.figure(number).axes for number in plt.get_fignums()]
        finally:
            plt.close("all")
    return namespace, printed.getvalue(), drawn, directory


def _stacked(tensor, block):
    """(rows, systems of the rows) of one block, components folded into rows."""
    block = tensor.block(block)
    values = np.asarray(block.values)
    systems = np.repeat(block.samples.column("system"), values.shape[1])
    return values.reshape(-1, values.shape[-1]), np.asarray(systems)


def _fit(x, y, rcond):
    """Least squares with an intercept: numpy on the centred rows."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    w = np.linalg.lstsq(x - x_mean, y - y_mean, rcond=rcond)[0]
    return w, y_mean - x_mean @ w


def _pooled_rmse(namespace, train_systems, test_systems, rcond):
    """RMSE over every test row of both blocks of a fit on the training rows."""
    squared, count = 0.0, 0
    for block in range(2):
        x, systems = _stacked(namespace["X"], block)
        y, _ = _stacked(namespace["y"], block)
        train, test = np.isin(systems, train_systems), np.isin(systems, test_systems)
        w, c = _fit(x[train], y[train], rcond)
        residuals = x[test] @ w + c - y[test]
        squared += np.sum(residuals**2)
        count += residuals.size
    return np.sqrt(squared / count)


def _split():
    """The training and test systems of train_test_split on 40 systems."""
    return train_test_split(np.arange(40), test_size=0.25, random_state=0)


def _cv_scores(namespace, train_systems):
    """The mean over 5 shuffled folds of the test RMSE of every candidate rcond."""
    folds = KFold(5, shuffle=True, random_state=0).split(train_systems)
    folds = [(train_systems[train], train_systems[test]) for train, test in folds]
    return np.array(
        [
            np.mean([_pooled_rmse(namespace, tr, te, rcond) for tr, te in folds])
            for rcond in namespace["rconds"]
        ]
    )


def _numbers(pattern, out):
    match = re.search(pattern, out)
    assert match, f"no line matching {pattern!r} in:\n{out}"
    return [float(group) for group in match.groups()]


def test_the_data_is_what_the_text_says(quickstart):
    namespace, _, _, _ = quickstart
    X, y = namespace["X"], namespace["y"]
    assert [int(key["o3_lambda"]) for key in X.keys] == [0, 1]
    for block, n_components in ((0, 1), (1, 3)):
        assert X.block(block).values.shape == (80, n_components, 40)
        assert X.block(block).components[0].names == ["o3_mu"]
        # features over ten decades of scale
        x, _ = _stacked(X, block)
        scales = np.sqrt(np.mean(x**2, axis=0))
        assert scales[0] / scales[-1] == pytest.approx(1e10, rel=0.5)
    # the targets are the 8 largest features plus noise of 0.05 and an offset
    assert namespace["NOISE"] == 0.05 and namespace["N_INFORMATIVE"] == 8
    y0, _ = _stacked(y, 0)
    assert np.mean(y0) == pytest.approx(-2.5, abs=0.5)


def test_first_fit_and_its_intercepts(quickstart):
    namespace, out, _, _ = quickstart
    train_systems, test_systems = _split()
    for block, offset in ((0, -2.5), (1, 0.0)):
        x, systems = _stacked(namespace["X"], block)
        y, _ = _stacked(namespace["y"], block)
        train = np.isin(systems, train_systems)
        w, c = _fit(x[train], y[train], 1e-6)
        model = namespace["model"]
        np.testing.assert_allclose(model.weights_.block(block).values, w.T, atol=1e-8)
        np.testing.assert_allclose(model.intercept_.block(block).values, [c], atol=1e-10)
        (printed,) = _numbers(rf"o3_lambda={block}: weights \(1, 40\), intercept (-?[0-9.]+)", out)
        assert printed == pytest.approx(c[0], abs=6e-4)
        # the offset is found, to the noise
        assert c[0] == pytest.approx(offset, abs=0.05)

    train_rmse, test_rmse = _numbers(r"RMSE: training ([0-9.]+), test ([0-9.]+), noise 0.05", out)
    assert train_rmse == pytest.approx(
        _pooled_rmse(namespace, train_systems, train_systems, 1e-6), abs=6e-5
    )
    assert test_rmse == pytest.approx(
        _pooled_rmse(namespace, train_systems, test_systems, 1e-6), abs=6e-5
    )
    # the training RMSE is below the noise: some noise was fitted
    assert train_rmse < 0.05 < test_rmse


def test_plain_weights_are_those_of_numpy_lstsq(quickstart):
    namespace, out, _, _ = quickstart
    assert "same weights as metatensor.lstsq: True" in out
    for block in range(2):
        x, _ = _stacked(namespace["X"], block)
        y, _ = _stacked(namespace["y"], block)
        w = np.linalg.lstsq(x, y, rcond=1e-6)[0]
        np.testing.assert_allclose(namespace["plain"].weights_.block(block).values, w.T)


def test_cross_validated_scores_and_choice(quickstart):
    namespace, out, _, _ = quickstart
    train_systems, test_systems = _split()
    expected = _cv_scores(namespace, train_systems)
    search = namespace["search"]
    np.testing.assert_allclose(-search.cv_results_["mean_test_score"], expected, rtol=1e-7)

    # every candidate's score is printed, then the choice
    table = re.findall(r"^\s*([0-9]e[+-][0-9]+)\s+([0-9.]+)$", out, flags=re.MULTILINE)
    assert [float(rcond) for rcond, _ in table] == pytest.approx(namespace["rconds"])
    np.testing.assert_allclose([float(s) for _, s in table], expected, atol=6e-5)
    best = namespace["rconds"][np.argmin(expected)]
    assert f"best rcond: {best:.0e}, RMSE {expected.min():.4f} (noise 0.05)" in out

    # rcond matters: too small fits the noise, too large cuts signal
    assert 0.05 < expected.min() < 0.06
    assert expected[0] > 1.3 * expected.min()
    assert expected[-1] > 10 * expected.min()
    assert 1e-11 < best < 1e-1

    (test_rmse,) = _numbers(r"test RMSE: ([0-9.]+) \(noise 0.05\)", out)
    held_out = _pooled_rmse(namespace, train_systems, test_systems, best)
    assert test_rmse == pytest.approx(held_out, abs=6e-5)
    assert 0.045 < held_out < 0.06


def test_figures(quickstart):
    namespace, _, shown, _ = quickstart
    assert len(shown) == 2 and all(len(axes) == 1 for axes in shown)
    (curve,), (parity,) = shown
    assert curve.get_xscale() == curve.get_yscale() == "log"
    expected = _cv_scores(namespace, _split()[0])
    drawn = curve.get_lines()[0]
    np.testing.assert_allclose(drawn.get_xdata(), namespace["rconds"])
    np.testing.assert_allclose(drawn.get_ydata(), expected, rtol=1e-7)
    noise = [line for line in curve.get_lines() if line.get_label() == "noise (0.05)"]
    assert noise and set(noise[0].get_ydata()) == {0.05}
    labels = [text.get_text() for text in curve.get_legend().get_texts()]
    assert f"chosen rcond={namespace['search'].best_params_['rcond']:.3g}" in labels

    # one scatter per block, the true test values on the x axis
    scatters = parity.collections
    assert len(scatters) == 2
    _, test_systems = _split()
    for block, scatter in enumerate(scatters):
        y, systems = _stacked(namespace["y"], block)
        true = scatter.get_offsets()[:, 0]
        np.testing.assert_allclose(np.sort(true), np.sort(y[np.isin(systems, test_systems)], None))


FIGURES = ("quickstart_validation_curve.png", "quickstart_parity.png")


def test_without_a_display_the_figures_are_saved_and_said_so(quickstart):
    from matplotlib.image import imread

    _, out, drawn, directory = quickstart
    assert sorted(path.name for path in directory.iterdir()) == sorted(FIGURES)
    said = re.findall(r"^no display to show the figure on .*: saved (.+)$", out, re.MULTILINE)
    assert said == [str(directory / name) for name in FIGURES]
    for name, axes in zip(FIGURES, drawn):
        # the file is the figure drawn, as matplotlib renders it
        figure = axes[0].figure
        rendered = io.BytesIO()
        figure.savefig(rendered, format="png")
        rendered.seek(0)
        np.testing.assert_array_equal(imread(directory / name), imread(rendered))


def test_with_a_display_the_figures_are_shown(quickstart, monkeypatch, tmp_path, capsys):
    import matplotlib.pyplot as plt

    namespace, _, _, _ = quickstart
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(True))
    monkeypatch.chdir(tmp_path)
    figure = plt.figure()
    # a desktop's backend
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "qtagg")
    namespace["show"](figure, "figure.png")
    assert shown == [True]
    # the docs build: Agg, its figures kept by sphinx-gallery
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "agg")
    monkeypatch.setitem(sys.modules, "sphinx_gallery", types.ModuleType("sphinx_gallery"))
    namespace["show"](figure, "figure.png")
    assert shown == [True, True]
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out == ""
    plt.close(figure)


def test_no_cell_ends_with_a_value_to_show():
    """A cell's last statement is not an expression whose value a notebook shows."""
    source = EXAMPLE.read_text()
    cells = source.split("\n# %%\n")[1:]
    assert len(cells) >= 6
    for cell in cells:
        statements = ast.parse(cell).body
        if not statements:
            continue
        last = statements[-1]
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
            called = ast.unparse(last.value.func)
            assert called in ("print", "show"), ast.unparse(last)
        else:
            assert not isinstance(last, ast.Expr), ast.unparse(last)


# ---------------------------------------------------------------------------------
# the README's usage, as a newcomer copies it
# ---------------------------------------------------------------------------------

README = Path(__file__).parents[1] / "README.md"


def test_readme_usage_chooses_rcond_and_alpha_on_the_forces():
    """The README's TensorMapLstsqCV weighs forces in its fits and chooses on them too."""
    from builders import make_pair

    from skmetalstsq import TensorMapLstsq, metrics

    readme = README.read_text()
    usage = readme[readme.index("## Usage") :]
    code = re.search(r"```python\n(.*?)```", usage, re.DOTALL).group(1)
    # the same folds in the README's code and here
    assert "KFold(5, shuffle=True)" in code
    code = code.replace("KFold(5, shuffle=True)", "KFold(5, shuffle=True, random_state=0)")
    X, y = make_pair(np.random.default_rng(0), n_systems=15, noise=0.3)
    namespace = {"X": X, "y": y}
    exec(compile(code, str(README), "exec"), namespace)
    model, Xi, yi = namespace["model"], namespace["Xi"], namespace["yi"]

    # the scores are the forces' RMSE: the mean over the folds of a fit per fold, for
    # every tenth candidate
    forces = metrics.scorer("neg_rmse", gradient="positions")
    splits = list(KFold(5, shuffle=True, random_state=0).split(np.arange(len(Xi))))
    candidates = range(0, len(model.cv_results_["params"]), 10)
    for candidate in candidates:
        params = model.cv_results_["params"][candidate]
        scores = []
        for train, test in splits:
            fit = TensorMapLstsq(gradient_weights={"positions": 0.01}, **params)
            scores.append(forces(fit.fit(Xi[train], yi[train]), Xi[test], yi[test]))
        mean = model.cv_results_["mean_test_score"][candidate]
        assert mean == pytest.approx(np.mean(scores), rel=1e-7), params
    best = model.cv_results_["params"][int(np.argmax(model.cv_results_["mean_test_score"]))]
    assert (model.rcond_, model.alpha_) == (best["rcond"], best["alpha"])


# ---------------------------------------------------------------------------------
# the quick start in the documentation site (one build, shared with test_docs.py)
# ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs():
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    from docs_build import build_docs

    build = build_docs()
    assert build.returncode == 0, build.output[-6000:]
    return build


def test_quickstart_is_first_in_the_gallery_with_its_figure_as_thumbnail(docs, tmp_path):
    from matplotlib.image import imread
    from sphinx_gallery.utils import scale_image

    index = (docs.source / "auto_examples" / "index.rst").read_text()
    thumbnails = re.findall(r"images/thumb/sphx_glr_(\w+)_thumb\.png", index)
    assert thumbnails[0] == "quickstart"
    assert sorted(thumbnails) == sorted(path.stem for path in EXAMPLE.parent.glob("*.py"))

    images = docs.source / "auto_examples" / "images"
    thumbnail = imread(images / "thumb" / "sphx_glr_quickstart_thumb.png")
    # the validation curve (not sphinx-gallery's placeholder), scaled as it scales
    # thumbnails
    scale_image(images / "sphx_glr_quickstart_001.png", tmp_path / "curve.png", 400, 280)
    np.testing.assert_array_equal(thumbnail, imread(tmp_path / "curve.png"))


def test_no_example_output_shows_a_plotting_object(docs):
    from docs_build import script_output

    shown = re.compile(r"^\s*(\[?Text\(|<matplotlib\.|<skmetalstsq\.display\.)", re.MULTILINE)
    for example in sorted(EXAMPLE.parent.glob("*.py")):
        output = script_output(docs, example.stem)
        assert not shown.search(output), f"{example.name}: {shown.search(output).group()}"
    assert "best rcond: " in script_output(docs, "quickstart")
    # sphinx-gallery keeps the figures: the quick start saves none
    assert "no display" not in script_output(docs, "quickstart")
    assert not list((docs.source.parent / "examples").glob("*.png"))


def test_api_sections_are_in_the_left_sidebar(docs):
    page = (docs.html / "api.html").read_text()
    sidebar = page[page.index("bd-sidebar-primary") : page.index("<main")]
    titles = re.findall(r"<h2>(.+?)<a class=\"headerlink\"", page)
    assert len(titles) >= 8
    for title in titles:
        assert f">{title}<" in sidebar, title
    # the page's table of contents once, on the left
    assert page.count('id="pst-page-toc-nav"') == 1
