"""The Bayesian molecular dynamics example: the exported model's mean, uncertainty
and committee are the estimator's, NVE runs with the uncertainty at every step,
and the uncertainty rises on compressed cells.

The example runs once, as a script in a fresh interpreter (with matplotlib's Agg
backend and warnings as errors, as in pytest), with a timeout; the tests read what
it printed.
"""

import os
import re
import subprocess
import sys

import pytest
from docs_build import ROOT

EXAMPLE = ROOT / "examples" / "bayesian_md.py"

#: the example takes about twenty seconds on two idle cores
TIMEOUT_S = 300

#: runs the example as ``__main__`` (the exported classes are then ``__main__.*``,
#: which TorchScript serialises), then prints the number of figures it drew
_RUNNER = f"""
import runpy
import matplotlib.pyplot as plt
runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
print("figures drawn:", len(plt.get_fignums()))
"""

#: the filters of setup.cfg: warnings are errors, except TorchScript's deprecation
_WARNINGS = ["-W", "error", "-W", "ignore:`torch.jit.:DeprecationWarning"]

NUMBER = r"([0-9.]+(?:e[+-]\d+)?)"


@pytest.fixture(scope="module")
def output():
    """What the example printed."""
    for module in ("ase", "matplotlib", "featomic.torch", "metatomic.torch", "metatomic_ase"):
        # ImportError too: a compiled extension built for another torch raises it
        pytest.importorskip(
            module, reason="the examples extra is not installed", exc_type=ImportError
        )
    env = dict(os.environ, MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, *_WARNINGS, "-c", _RUNNER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed.stdout


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return [float(group) for group in match.groups()]


def test_predicted_std_is_at_the_level_of_the_training_errors(output):
    for kind, unit in (("energies", "meV"), ("forces", "meV/Å")):
        rmse, std = _number(
            rf"training {kind}: RMSE {NUMBER} {unit}, predicted std {NUMBER} {unit}", output
        )
        # calibrated on the data it was fitted on: the evidence's noise level is
        # that of the residuals (a std off by orders of magnitude would not be)
        assert 0.5 * rmse < std < 2.0 * rmse


@pytest.mark.parametrize(
    "name", ["energies", "uncertainties", "ensemble energies", "ensemble forces"]
)
def test_loaded_model_gives_the_estimators_predictions(output, name):
    assert "saved and loaded: Bayesian linear SOAP potential for Cu-Ni" in output
    (difference,) = _number(rf"relative difference to the estimator's {name}: {NUMBER}", output)
    # the std is a square root of a quadratic form with cancellations: rounding
    # of the matrix products in another order, relative to the form's terms
    assert difference < (1e-8 if name == "uncertainties" else 1e-12)


def test_ensemble_follows_metatomics_layout(output):
    assert re.search(r"ensemble properties: \['energy'\], 16 members", output)


def test_nve_runs_with_the_uncertainty_at_every_step(output):
    n_steps, _, n_atoms = _number(r"NVE: (\d+) steps of ([0-9.]+) fs, (\d+) atoms", output)
    assert n_steps >= 50 and n_atoms > 0
    (largest,) = _number(rf"largest change of the total energy: {NUMBER} meV/atom", output)
    assert largest < 0.1
    mean, most = _number(
        rf"energy uncertainty along the trajectory: {NUMBER} meV/atom on average, "
        rf"{NUMBER} meV/atom at most",
        output,
    )
    assert 0 < mean <= most


def test_uncertainty_rises_on_compressed_cells(output):
    rows = re.findall(
        rf"compressed by +{NUMBER} %: uncertainty +{NUMBER} meV/atom, "
        rf"error against EMT +{NUMBER} meV/atom",
        output,
    )
    compressions, uncertainties, errors = ([float(row[i]) for row in rows] for i in range(3))
    assert compressions[0] == 0.0 and compressions[-1] == 10.0
    assert all(b > a for a, b in zip(uncertainties, uncertainties[1:]))
    assert all(b > a for a, b in zip(errors, errors[1:]))
    (most,) = _number(rf"on average, {NUMBER} meV/atom at most", output)
    # far outside the training data, the uncertainty is several times that of
    # every frame of the trajectory
    assert uncertainties[-1] > 3 * most
    (rise,) = _number(
        rf"uncertainty compressed by 10 % / largest along the trajectory: {NUMBER}", output
    )
    assert rise > 3


def test_the_figure_is_drawn(output):
    (n_figures,) = _number(r"figures drawn: (\d+)", output)
    assert n_figures == 1
