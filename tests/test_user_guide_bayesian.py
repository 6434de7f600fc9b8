"""The code of docs/user_guide/bayesian.rst runs, and every comparison it prints holds."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAGE = Path(__file__).parents[1] / "docs" / "user_guide" / "bayesian.rst"


def test_the_bayesian_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("metatensor.operations")
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", PAGE.read_text())
    assert len(blocks) >= 9
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    try:
        for block in blocks:
            code = "\n".join(line[4:] for line in block.splitlines())
            exec(compile(code, str(PAGE), "exec"), namespace)
    finally:
        plt.close("all")
    out = capsys.readouterr().out
    assert out.count("True") == 8 and "False" not in out, out
    # the figures the text gives
    assert "TensorMapBayesianRidge 0.99, BayesianRidge 0.49" in out, out
    assert "TensorMapBayesianRidge 0.99, BayesianRidge 0.05" in out, out
