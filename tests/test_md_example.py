"""The molecular dynamics example: the exported potential gives the fitted energies
and forces, and conserves the total energy in NVE.

The example runs once, as a script in a fresh interpreter (with matplotlib's Agg
backend and warnings as errors, as in pytest), with a timeout; the tests read what
it printed.
"""

import pytest
from docs_build import NUMBER, numbers, run_example


@pytest.fixture(scope="module")
def output():
    """What the example printed."""
    return run_example("linear_potential_md", timeout_s=300)


def test_features_have_one_row_per_structure_and_one_gradient_row_per_atom(output):
    n_structures, n_atoms = numbers(r"(\d+) structures, (\d+) atoms", output)
    n_rows, n_features = numbers(r"values: \((\d+), (\d+)\) torch.float64", output)
    assert n_rows == n_structures
    gradient_rows, xyz, gradient_features = numbers(
        r"positions gradient: \((\d+), (\d+), (\d+)\)", output
    )
    assert (gradient_rows, xyz, gradient_features) == (n_atoms, 3, n_features)


def test_cross_validated_force_error_is_small_against_the_spread_of_the_forces(output):
    (spread,) = numbers(rf"standard deviation of the force components: {NUMBER} meV/Å", output)
    (rcond,) = numbers(rf"rcond {NUMBER},", output)
    (cv_force_rmse,) = numbers(rf"cross-validated force RMSE {NUMBER} meV/Å", output)
    assert 0 < rcond < 1
    # a linear model on summed SOAP fits EMT forces well; misaligned gradient rows or
    # the wrong sign of the forces would not
    assert 0 < cv_force_rmse < 0.1 * spread


def test_loaded_model_gives_the_fitted_energies_and_forces(output):
    assert "saved and loaded: linear SOAP potential for Cu-Ni" in output
    (energies,) = numbers(rf"relative difference to the fitted energies: {NUMBER}", output)
    (forces,) = numbers(rf"relative difference to the fitted forces: {NUMBER}", output)
    assert energies < 1e-8
    assert forces < 1e-8


def test_nve_run_conserves_the_total_energy(output):
    n_steps, timestep, n_atoms = numbers(r"NVE: (\d+) steps of ([0-9.]+) fs, (\d+) atoms", output)
    assert 100 <= n_steps <= 200 and timestep == 1.0 and n_atoms > 0
    (drift,) = numbers(r"total energy drift: (-?[0-9.]+) meV/atom", output)
    (largest,) = numbers(rf"largest change of the total energy: {NUMBER} meV/atom", output)
    (fluctuation,) = numbers(rf"standard deviation of the potential energy: {NUMBER}", output)
    assert abs(drift) <= largest
    # atoms move: the potential energy changes by meV/atom; forces that are not
    # minus the gradient of the energy (wrong sign, misaligned rows) would change
    # the total energy as much
    assert fluctuation > 1.0
    assert largest < 0.02 * fluctuation


def test_trajectory_stays_where_the_model_was_fitted(output):
    (rmse,) = numbers(rf"last frame: force RMSE against EMT {NUMBER} meV/Å", output)
    (spread,) = numbers(rf"standard deviation of the EMT force components: {NUMBER}", output)
    assert 0 < rmse < 0.2 * spread


def test_energy_plot_is_drawn(output):
    (n_figures,) = numbers(r"figures drawn: (\d+)", output)
    assert n_figures == 1
