"""The model selection example runs headless and is a valid notebook-style script."""

import ast
import json
import runpy
from pathlib import Path

import matplotlib
import numpy as np
import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "model_selection.py"


def _cells(source):
    """(docstring, [cell source, ...]) split at the ``# %%`` lines, by hand."""
    module = ast.parse(source)
    docstring = ast.get_docstring(module, clean=False)
    cells, current = [], None
    for line in source.splitlines():
        if line.strip() == "# %%":
            current = []
            cells.append(current)
        elif current is not None:
            current.append(line)
    return docstring, ["\n".join(cell) for cell in cells]


def test_cells_parse():
    source = EXAMPLE.read_text()
    docstring, cells = _cells(source)
    title, underline = docstring.strip().splitlines()[:2]
    assert title and set(underline) == {"="} and len(underline) == len(title)
    assert len(cells) >= 4
    # the script is the docstring followed by its cells, nothing in between
    assert source.index("# %%") > source.index(docstring) + len(docstring)
    for number, cell in enumerate(cells):
        compile(cell, f"{EXAMPLE.name} cell {number}", "exec")
    assert "plt.show()" in cells[-1]
    assert sum("plt.show()" in cell for cell in cells) == 1


def test_converts_to_a_notebook(tmp_path):
    sphinx_gallery = pytest.importorskip("sphinx_gallery")
    from sphinx_gallery.notebook import jupyter_notebook, save_notebook
    from sphinx_gallery.py_source_parser import split_code_and_text_blocks

    blocks = split_code_and_text_blocks(str(EXAMPLE))[1]
    kinds = [block[0] for block in blocks]
    assert kinds[0] == "text" and kinds.count("code") >= 4
    gallery_conf = {
        "first_notebook_cell": None,
        "last_notebook_cell": None,
        "notebook_images": False,
        "promote_jupyter_magic": False,
        "pypandoc": False,
        "notebook_extensions": {".ipynb"},
    }
    try:
        notebook = jupyter_notebook(blocks, gallery_conf, str(tmp_path))
    except KeyError as error:  # pragma: no cover - other sphinx-gallery versions
        pytest.skip(f"sphinx-gallery {sphinx_gallery.__version__} needs {error}")
    path = tmp_path / "model_selection.ipynb"
    save_notebook(notebook, str(path))
    saved = json.loads(path.read_text())
    code = [cell for cell in saved["cells"] if cell["cell_type"] == "code"]
    assert len(code) == kinds.count("code")
    for cell in code:
        compile("".join(cell["source"]), "notebook cell", "exec")
    assert any("GridSearchCV(" in "".join(cell["source"]) for cell in code)


def test_runs_headless(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skmetalstsq import IndexedTensorMap, metrics

    monkeypatch.chdir(tmp_path)
    plt.close("all")
    try:
        namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
        assert len(plt.get_fignums()) == 2
    finally:
        plt.close("all")
    out = capsys.readouterr().out

    search, Xi, yi = namespace["search"], namespace["Xi"], namespace["yi"]
    best = search.best_params_["tensormaplstsq__rcond"]
    assert best in namespace["rconds"]
    means = search.cv_results_["mean_test_forces"]
    assert best == namespace["rconds"][int(np.argmax(means))]
    assert f"best rcond: {best:.0e}" in out

    predicted = namespace["predicted"]
    assert isinstance(predicted, IndexedTensorMap)
    np.testing.assert_array_equal(predicted.entries, Xi.entries)
    true = yi.tensor.block().gradient("positions").values
    pred = predicted.tensor.block().gradient("positions").values
    force_rmse = np.sqrt(np.mean((true - pred) ** 2))
    assert force_rmse == pytest.approx(metrics.rmse(yi, predicted, gradient="positions"))
    assert f"forces {force_rmse:.3f}" in out
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory
