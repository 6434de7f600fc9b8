"""The quick-start example runs and its figures agree with metatensor.lstsq."""

import re
import runpy
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "quickstart.py"


def test_quickstart_runs_and_matches_metatensor(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "same weights as metatensor.lstsq: True" in out
    r2 = float(re.search(r"pooled R\^2 of the values: ([0-9.]+)", out).group(1))
    assert 0.99 < r2 <= 1.0
    folds = re.search(r"test R\^2 per fold: \[([^\]]+)\]", out).group(1).split()
    assert len(folds) == 5
    assert re.search(r"best rcond: [0-9.e+-]+, gradient RMSE [0-9.]+", out)
