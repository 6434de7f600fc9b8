"""The Bayesian molecular dynamics example: the exported model's mean, uncertainty
and committee are the estimator's, NVE runs with the uncertainty at every step,
and the uncertainty rises on compressed cells.

The example runs once, as a script in a fresh interpreter (with matplotlib's Agg
backend and warnings as errors, as in pytest), with a timeout; the tests read what
it printed.
"""

import re

import pytest
from docs_build import NUMBER, numbers, run_example


@pytest.fixture(scope="module")
def output():
    """What the example printed."""
    return run_example("bayesian_md", timeout_s=300)


def test_predicted_std_is_at_the_level_of_the_training_errors(output):
    for kind, unit in (("energies", "meV"), ("forces", "meV/Å")):
        rmse, std = numbers(
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
    (difference,) = numbers(rf"relative difference to the estimator's {name}: {NUMBER}", output)
    # the std is a square root of a quadratic form with cancellations: rounding
    # of the matrix products in another order, relative to the form's terms
    assert difference < (1e-8 if name == "uncertainties" else 1e-12)


def test_ensemble_follows_metatomics_layout(output):
    assert re.search(r"ensemble properties: \['energy'\], 16 members", output)


def test_nve_runs_with_the_uncertainty_at_every_step(output):
    n_steps, _, n_atoms = numbers(r"NVE: (\d+) steps of ([0-9.]+) fs, (\d+) atoms", output)
    assert n_steps >= 50 and n_atoms > 0
    (largest,) = numbers(rf"largest change of the total energy: {NUMBER} meV/atom", output)
    assert largest < 0.1
    mean, most = numbers(
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
    (most,) = numbers(rf"on average, {NUMBER} meV/atom at most", output)
    # far outside the training data, the uncertainty is several times that of
    # every frame of the trajectory
    assert uncertainties[-1] > 3 * most
    (rise,) = numbers(
        rf"uncertainty compressed by 10 % / largest along the trajectory: {NUMBER}", output
    )
    assert rise > 3


def test_the_figure_is_drawn(output):
    (n_figures,) = numbers(r"figures drawn: (\d+)", output)
    assert n_figures == 1
