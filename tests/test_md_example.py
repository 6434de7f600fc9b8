"""The molecular dynamics example: the exported potential gives the fitted energies
and forces, and conserves the total energy in NVE.

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

EXAMPLE = ROOT / "examples" / "linear_potential_md.py"

#: the example takes about half a minute on two idle cores
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


NUMBER = r"([0-9.]+(?:e[+-]\d+)?)"


def test_features_have_one_row_per_structure_and_one_gradient_row_per_atom(output):
    n_structures, n_atoms = _number(r"(\d+) structures, (\d+) atoms", output)
    n_rows, n_features = _number(r"values: \((\d+), (\d+)\) torch.float64", output)
    assert n_rows == n_structures
    gradient_rows, xyz, gradient_features = _number(
        r"positions gradient: \((\d+), (\d+), (\d+)\)", output
    )
    assert (gradient_rows, xyz, gradient_features) == (n_atoms, 3, n_features)


def test_cross_validated_force_error_is_small_against_the_spread_of_the_forces(output):
    (spread,) = _number(rf"standard deviation of the force components: {NUMBER} meV/Å", output)
    (rcond,) = _number(rf"rcond {NUMBER},", output)
    (cv_force_rmse,) = _number(rf"cross-validated force RMSE {NUMBER} meV/Å", output)
    assert 0 < rcond < 1
    # a linear model on summed SOAP fits EMT forces well; misaligned gradient rows or
    # the wrong sign of the forces would not
    assert 0 < cv_force_rmse < 0.1 * spread


def test_loaded_model_gives_the_fitted_energies_and_forces(output):
    assert "saved and loaded: linear SOAP potential for Cu-Ni" in output
    (energies,) = _number(rf"relative difference to the fitted energies: {NUMBER}", output)
    (forces,) = _number(rf"relative difference to the fitted forces: {NUMBER}", output)
    assert energies < 1e-8
    assert forces < 1e-8


def test_nve_run_conserves_the_total_energy(output):
    n_steps, timestep, n_atoms = _number(r"NVE: (\d+) steps of ([0-9.]+) fs, (\d+) atoms", output)
    assert 100 <= n_steps <= 200 and timestep == 1.0 and n_atoms > 0
    (drift,) = _number(r"total energy drift: (-?[0-9.]+) meV/atom", output)
    (largest,) = _number(rf"largest change of the total energy: {NUMBER} meV/atom", output)
    (fluctuation,) = _number(rf"standard deviation of the potential energy: {NUMBER}", output)
    assert abs(drift) <= largest
    # atoms move: the potential energy changes by meV/atom; forces that are not
    # minus the gradient of the energy (wrong sign, misaligned rows) would change
    # the total energy as much
    assert fluctuation > 1.0
    assert largest < 0.02 * fluctuation


def test_trajectory_stays_where_the_model_was_fitted(output):
    (rmse,) = _number(rf"last frame: force RMSE against EMT {NUMBER} meV/Å", output)
    (spread,) = _number(rf"standard deviation of the EMT force components: {NUMBER}", output)
    assert 0 < rmse < 0.2 * spread


def test_energy_plot_is_drawn(output):
    (n_figures,) = _number(r"figures drawn: (\d+)", output)
    assert n_figures == 1
