"""The SOAP example reaches sensible errors on held-out structures.

The example runs once per test session: its output is read from the documentation
build (which executes every example) when Sphinx is installed, and otherwise it is
run here, headless.
"""

import contextlib
import importlib.util
import io
import re
import runpy

import pytest
from docs_build import ROOT, build_docs, numbers, script_output

EXAMPLE = ROOT / "examples" / "soap_energies_forces.py"


def _run_headless():
    pytest.importorskip("featomic", reason="the examples extra is not installed")
    pytest.importorskip("ase", reason="the examples extra is not installed")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    n_figures = len(plt.get_fignums())
    plt.close("all")
    return output.getvalue(), n_figures


@pytest.fixture(scope="module")
def soap():
    """(printed output, number of figures drawn) of the SOAP example."""
    if importlib.util.find_spec("sphinx") is None:
        return _run_headless()
    build = build_docs()
    images = (build.source / "auto_examples" / "images").glob("sphx_glr_soap_energies_forces_0*")
    return script_output(build, "soap_energies_forces"), len(list(images))


def test_dataset_and_split(soap):
    output, _ = soap
    n_structures, n_atoms = numbers(r"(\d+) structures, (\d+) atoms", output)
    n_train, n_test = numbers(r"(\d+) training and (\d+) test structures", output)
    assert n_train + n_test == n_structures
    assert 0 < n_test < n_train
    n_rows, n_features = numbers(r"values: \((\d+), (\d+)\)", output)
    assert n_rows == n_structures
    gradient_rows, xyz, gradient_features = numbers(
        r"positions gradient: \((\d+), (\d+), (\d+)\)", output
    )
    # one gradient row per atom once atoms are summed, x y z, the same features
    assert (gradient_rows, xyz, gradient_features) == (n_atoms, 3, n_features)


def test_grid_search_and_tensormaplstsqcv_agree(soap):
    output, _ = soap
    (grid_rcond,) = numbers(r"GridSearchCV: rcond ([0-9.e+-]+)", output)
    (cv_rcond,) = numbers(r"TensorMapLstsqCV: rcond ([0-9.e+-]+)", output)
    assert grid_rcond == cv_rcond
    (difference,) = numbers(r"force errors: ([0-9.e+-]+) eV/Å", output)
    assert difference < 1e-8
    rank, n_features = numbers(r"training matrix: (\d+) of (\d+)", output)
    assert 0 < rank < n_features  # summed power spectra are rank-deficient


def test_held_out_errors_are_small_against_the_spread_of_the_data(soap):
    output, _ = soap
    _, energy_spread = numbers(r"energy per atom: ([0-9.-]+) \+- ([0-9.]+) eV", output)
    (energy_rmse,) = numbers(r"test energy RMSE: ([0-9.]+) meV/atom", output)
    (energy_mae,) = numbers(r"test energy MAE: ([0-9.]+) meV/atom", output)
    (force_rmse,) = numbers(r"test force RMSE: ([0-9.]+) meV/Å", output)
    (force_spread,) = numbers(r"test force components: ([0-9.]+) meV/Å", output)
    assert 0 < energy_mae <= energy_rmse
    # a linear model on SOAP fits EMT well: a tenth of the spread is a loose bound
    # that a wrong sign of the forces or misaligned gradient rows would break
    assert energy_rmse < 0.1 * 1000 * energy_spread
    assert 0 < force_rmse < 0.1 * force_spread


def test_validation_curve_and_parity_plots_are_drawn(soap):
    _, n_figures = soap
    # validation curve, parity of the test structures, parity of leave-one-out
    assert n_figures == 3


def _score_table(output):
    """{(force weight, alpha): leave-one-structure-out score} of the printed table."""
    rows = re.findall(r"^ *(\d[0-9.e+-]*) +(\d[0-9.e+-]*) +(-?\d+\.\d{5})$", output, re.M)
    return {(float(w), float(a)): float(score) for w, a, score in rows}


def test_force_weight_and_alpha_chosen_by_the_best_leave_one_out_score(soap):
    output, _ = soap
    weight, alpha = numbers(r"chosen force weight ([0-9.e+-]+), alpha ([0-9.e+-]+)", output)
    (n_candidates,) = numbers(r"\((\d+) candidates", output)
    table = _score_table(output)
    assert len(table) == n_candidates > 1
    assert len({w for w, _ in table}) > 1 and len({a for _, a in table}) > 1
    # the printed scores are rounded to 1e-5: the choice is the largest up to rounding
    assert table[weight, alpha] >= max(table.values()) - 1e-5
    assert table[weight, alpha] > table[1.0, 0.0]  # better than the plain fit


def test_held_out_predictions_are_those_of_refits_without_each_structure(soap):
    output, _ = soap
    energy_difference, force_difference = numbers(
        r"difference from the refits: ([0-9.e+-]+) eV \(energies\), ([0-9.e+-]+) eV/Å", output
    )
    # energies of about 1 eV, forces of about 0.5 eV/Å: a formula that is not exact
    # (no re-centring, another subspace) misses by orders of magnitude more
    assert energy_difference < 1e-7
    assert force_difference < 1e-7


def test_chosen_score_is_that_of_the_held_out_predictions(soap):
    output, _ = soap
    energy_scale, force_scale = numbers(
        r"training targets: ([0-9.]+) meV/atom, ([0-9.]+) meV/Å", output
    )
    (energy_rmse,) = numbers(r"leave-one-structure-out energy RMSE: ([0-9.]+) meV/atom", output)
    (force_rmse,) = numbers(r"leave-one-structure-out force RMSE: ([0-9.]+) meV/Å", output)
    weight, alpha = numbers(r"chosen force weight ([0-9.e+-]+), alpha ([0-9.e+-]+)", output)
    # the balanced score of the example: each RMSE relative to its targets' spread
    balanced = -(energy_rmse / energy_scale + force_rmse / force_scale)
    rounding = 0.0005 / energy_scale + 0.005 / force_scale + 5e-6
    assert abs(_score_table(output)[weight, alpha] - balanced) <= rounding
    # leave-one-out errors are small against the spread of the data
    assert 0 < energy_rmse < 0.1 * energy_scale
    assert 0 < force_rmse < 0.1 * force_scale


def test_weighted_fit_lowers_the_held_out_energy_error_at_little_cost_in_forces(soap):
    output, _ = soap
    (energy_rmse,) = numbers(r"test energy RMSE: ([0-9.]+) meV/atom", output)
    (force_rmse,) = numbers(r"test force RMSE: ([0-9.]+) meV/Å", output)
    energy_before, energy_after = numbers(
        r"test energy RMSE, before -> after: ([0-9.]+) -> ([0-9.]+) meV/atom", output
    )
    force_before, force_after = numbers(
        r"test force RMSE, before -> after: ([0-9.]+) -> ([0-9.]+) meV/Å", output
    )
    # "before" is the model of the earlier sections
    assert (energy_before, force_before) == (energy_rmse, force_rmse)
    assert 0 < energy_after < energy_before
    assert 0 < force_after < 1.1 * force_before
