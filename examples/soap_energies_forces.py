"""
Energies and forces from SOAP descriptors
=========================================

A linear model of the energy of Cu-Ni alloys on SOAP power spectra, fitted on
energies and forces together, with ``rcond`` chosen by cross-validation over
structures.

The whole workflow of an atomistic practitioner, on data generated here in a few
seconds:

1. rattled and strained Cu-Ni cells, with energies and forces from ASE's
   effective medium theory (EMT) calculator;
2. SOAP power spectra and their gradients with respect to positions from
   featomic, reduced to one row per structure;
3. targets as a TensorMap whose ``"positions"`` gradient is minus the forces;
4. ``rcond`` chosen by cross-validation over structures, with ``GridSearchCV`` and
   with :class:`~skmetalstsq.TensorMapLstsqCV`;
5. errors on held-out structures, a validation curve and parity plots;
6. the weight of the forces against the energies and a ridge penalty, chosen by
   cross-validation, and what they change on the held-out structures.

It needs the ``examples`` extra: ``pip install "skmetalstsq[examples]"``.
"""

# %%
import time

import ase.build
import featomic
import matplotlib.pyplot as plt
import metatensor
import numpy as np
from ase.calculators.emt import EMT
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold, train_test_split

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics
from skmetalstsq.display import ParityDisplay, SingularValuesDisplay

# %%
# A small dataset: Cu-Ni cells with EMT energies and forces
# ---------------------------------------------------------
#
# Each structure is an fcc cell of 16 atoms with a random Ni fraction, a random
# strain of up to 3 % and atoms displaced by about 0.05 Å. EMT gives the energy
# (eV) and the forces (eV/Å) of each one.

N_STRUCTURES = 48
rng = np.random.default_rng(0)


def make_structure(rng):
    """One rattled, strained Cu-Ni fcc cell with its EMT energy and forces."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 2, 1))
    nickel = rng.random(len(atoms)) < rng.uniform(0.1, 0.9)
    atoms.numbers = np.where(nickel, 28, 29)
    strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3))
    atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = EMT()
    atoms.info["energy"] = atoms.get_potential_energy()
    atoms.arrays["forces"] = atoms.get_forces()
    atoms.calc = None
    return atoms


structures = [make_structure(rng) for _ in range(N_STRUCTURES)]
n_atoms = np.array([len(atoms) for atoms in structures])
energies = np.array([atoms.info["energy"] for atoms in structures])
print(f"{N_STRUCTURES} structures, {n_atoms.sum()} atoms")
print(f"energy per atom: {np.mean(energies / n_atoms):.3f} +- {np.std(energies / n_atoms):.3f} eV")

# %%
# SOAP power spectra with their gradients
# ---------------------------------------
#
# featomic returns one block per (central species, pair of neighbour species),
# with samples ``(system, atom)`` and a ``"positions"`` gradient whose samples are
# ``(sample, system, atom)``: the derivative of row ``sample`` with respect to the
# position of ``atom``.

calculator = featomic.SoapPowerSpectrum(
    cutoff={"radius": 4.5, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
    density={"type": "Gaussian", "width": 0.4},
    basis={
        "type": "TensorProduct",
        "max_angular": 3,
        "radial": {"type": "Gto", "max_radial": 3},
    },
)
descriptor = calculator.compute(structures, gradients=["positions"])
print(descriptor.keys)

# %%
# The energy of a structure is modelled as a sum of atomic energies, each a linear
# function of its atom's power spectrum with weights that depend on the atom's
# species. Moving the species keys to properties puts the features of every
# species side by side in one block (zeros where a species is absent), and summing
# over the atoms of each structure gives one row per structure.
# :func:`metatensor.sum_over_samples` sums the gradients too: the gradient rows
# become the derivatives of a structure's summed features with respect to the
# position of each of its atoms, one row per atom, with an ``xyz`` component.
#
# The central species could also stay a key, giving one block per species, but
# the energy is known per structure, not per species: the fit needs one block.
# All structures are computed together, so every structure gets the same
# properties; to featurise new structures later, pass the same species to
# ``keys_to_properties`` as explicit ``Labels``.

descriptor = descriptor.keys_to_properties(["neighbor_1_type", "neighbor_2_type"])
descriptor = descriptor.keys_to_properties("center_type")
X = metatensor.sum_over_samples(descriptor, sample_names="atom")
x_block = X.block()
x_gradient = x_block.gradient("positions")
print(f"values: {x_block.values.shape}, samples {x_block.samples.names}")
print(f"positions gradient: {x_gradient.values.shape}, samples {x_gradient.samples.names}")

# %%
# Targets: energies, and minus the forces as their positions gradient
# -------------------------------------------------------------------
#
# The target block has the samples of X, and a ``"positions"`` gradient with the
# samples and ``xyz`` component of X's gradient. The gradient of the energy with
# respect to the positions is minus the force, so fitting gradients fits forces.
# Each gradient row ``(sample, system, atom)`` takes the force on that atom.

systems = x_block.samples.column("system")
minus_forces = np.stack(
    [-structures[system].arrays["forces"][atom] for _, system, atom in x_gradient.samples.values]
)
energy_block = TensorBlock(
    values=energies[systems].reshape(-1, 1),
    samples=x_block.samples,
    components=[],
    properties=Labels(["energy"], np.array([[0]])),
)
energy_block.add_gradient(
    "positions",
    TensorBlock(
        values=minus_forces.reshape(-1, 3, 1),
        samples=x_gradient.samples,
        components=x_gradient.components,
        properties=energy_block.properties,
    ),
)
y = TensorMap(X.keys, [energy_block])

# %%
# Held-out structures
# -------------------
#
# :class:`~skmetalstsq.IndexedTensorMap` numbers the structures, so scikit-learn's
# splitters pick structures: a structure's energy row and all its force rows stay
# together.

Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
X_train, X_test, y_train, y_test = train_test_split(Xi, yi, test_size=0.25, random_state=0)
print(f"{len(X_train)} training and {len(X_test)} test structures")

# %%
# Choosing rcond by cross-validation over structures
# --------------------------------------------------
#
# Energies and forces are stacked in one least-squares problem, as
# :func:`metatensor.lstsq` does. ``rcond`` cuts the singular values of that stacked
# matrix below ``rcond`` times the largest one. The summed power spectra are
# strongly correlated, and some of their combinations vanish exactly, so the
# cut-off decides which directions of feature space the model uses.
#
# ``GridSearchCV`` with two scorers records the energy and the force error of every
# candidate on every fold, and refits with the candidate of lowest force error.

rconds = np.logspace(-12, -1, 12)
cv = KFold(5, shuffle=True, random_state=0)
force_scorer = metrics.scorer("neg_rmse", gradient="positions")
search = GridSearchCV(
    TensorMapLstsq(driver="gelsd"),
    {"rcond": rconds},
    cv=cv,
    scoring={"energy": metrics.scorer("neg_rmse"), "forces": force_scorer},
    refit="forces",
)
start = time.perf_counter()
search.fit(X_train, y_train)
search_time = time.perf_counter() - start
print(f"GridSearchCV: rcond {search.best_params_['rcond']:.0e} ({search_time:.2f} s)")

# %%
# :class:`~skmetalstsq.TensorMapLstsqCV` makes the same choice from one singular
# value decomposition per fold, instead of one least-squares solve per fold and
# candidate, and refits on all training structures.

start = time.perf_counter()
model = TensorMapLstsqCV(rconds=rconds, cv=cv, scoring=force_scorer).fit(X_train, y_train)
cv_time = time.perf_counter() - start
difference = np.max(
    np.abs(model.cv_results_["mean_test_score"] - search.cv_results_["mean_test_forces"])
)
print(f"TensorMapLstsqCV: rcond {model.rcond_:.0e} ({cv_time:.2f} s)")
print(f"largest difference of the cross-validated force errors: {difference:.1e} eV/Å")
rank, n_features = model.rank_[(0,)], X.block().values.shape[1]
print(f"effective rank of the stacked training matrix: {rank} of {n_features}")

# %%
# The validation curve
# --------------------
#
# Cross-validated errors against ``rcond`` (all structures have 16 atoms, so the
# energy error per atom is the energy error divided by 16). On the right, the
# singular values of the stacked training matrix relative to the largest: every
# ``rcond`` below the gap between the smallest non-zero singular value and the
# exact zeros keeps the same directions, hence the plateau. Larger cut-offs
# discard directions the data need, and the errors grow. EMT data has no noise,
# so nothing is gained by cutting more; with noisy reference data the curve
# usually has a minimum at a larger ``rcond``.

results = search.cv_results_
atoms_per_structure = n_atoms[0]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
for ax, name, scale, unit in [
    (axes[0], "energy", 1000 / atoms_per_structure, "meV/atom"),
    (axes[1], "forces", 1000, "meV/Å"),
]:
    mean = -results[f"mean_test_{name}"] * scale
    std = results[f"std_test_{name}"] * scale
    ax.plot(rconds, mean, "o-", label="GridSearchCV")
    ax.fill_between(rconds, mean - std, mean + std, alpha=0.3)
    ax.set_ylabel(f"{name} RMSE ({unit})")
axes[1].plot(
    rconds, -model.cv_results_["mean_test_score"] * 1000, "x", color="k", label="TensorMapLstsqCV"
)
for ax in axes[:2]:
    ax.axvline(model.rcond_, color="k", linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rcond")
    ax.legend()
SingularValuesDisplay.from_estimator(model, X_train, ax=axes[2])
_ = fig.suptitle("5-fold cross-validation over the training structures")

# %%
# Errors on held-out structures
# -----------------------------
#
# The model refitted with the chosen ``rcond`` on all training structures,
# evaluated on the test structures it has never seen.

prediction = model.predict(X_test)
true_block, predicted_block = y_test.tensor.block(), prediction.tensor.block()
test_atoms = n_atoms[true_block.samples.column("system")]
true_energy = true_block.values[:, 0] / test_atoms
predicted_energy = predicted_block.values[:, 0] / test_atoms

energy_rmse = np.sqrt(np.mean((predicted_energy - true_energy) ** 2))
energy_mae = np.mean(np.abs(predicted_energy - true_energy))
force_rmse = metrics.rmse(y_test, prediction, gradient="positions")
force_spread = np.std(true_block.gradient("positions").values)
print(f"test energy RMSE: {1000 * energy_rmse:.2f} meV/atom")
print(f"test energy MAE: {1000 * energy_mae:.2f} meV/atom")
print(f"test force RMSE: {1000 * force_rmse:.1f} meV/Å")
print(f"standard deviation of the test force components: {1000 * force_spread:.1f} meV/Å")

# %%
# Parity plots of the held-out energies (per atom) and force components.

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
axes[0].plot(true_energy, predicted_energy, ".", alpha=0.6)
limits = [
    min(true_energy.min(), predicted_energy.min()),
    max(true_energy.max(), predicted_energy.max()),
]
axes[0].plot(limits, limits, "k--", linewidth=1)
axes[0].set_xlabel("EMT energy (eV/atom)")
axes[0].set_ylabel("predicted energy (eV/atom)")
# the positions gradient is minus the forces: its parity plot is the forces'
ParityDisplay.from_predictions(y_test, prediction, gradient="positions", ax=axes[1])
_ = fig.suptitle(f"{len(X_test)} held-out structures")

# %%
# Weighing forces against energies, and a ridge penalty
# -----------------------------------------------------
#
# Every row of the stacked problem has counted the same so far: each structure has
# one energy and 48 force components, so the forces dominate the fit. The
# ``gradient_weights`` parameter multiplies the weight of the gradient rows
# (``{"positions": 0.01}``: the squared error of a force component counts a
# hundredth of that of an energy), and ``alpha`` adds a ridge penalty
# :math:`\alpha \lVert w \rVert^2` to the directions that ``rcond`` keeps (see
# :doc:`/user_guide/weights`).
#
# ``GridSearchCV`` scores every (force weight, alpha) pair with the chosen
# ``rcond`` on the same folds, recording the energy and the force error. Lowering
# the force weight trades force accuracy for energy accuracy, so no single error
# decides: ``refit`` picks the candidate whose two cross-validated errors, each
# relative to that of the plain fit (force weight 1, no penalty), sum lowest. A
# candidate is then only chosen if what it gains on one error outweighs what it
# loses on the other.

force_weights = [0.001, 0.01, 0.1, 1.0]
alphas = [0.0, 1e-8, 1e-6]


def balanced_errors(cv_results):
    """Position of the candidate of lowest energy + force error, each relative to
    the plain fit's."""
    plain = cv_results["params"].index({"alpha": 0.0, "gradient_weights": {"positions": 1.0}})
    relative = (
        cv_results["mean_test_energy"] / cv_results["mean_test_energy"][plain]
        + cv_results["mean_test_forces"] / cv_results["mean_test_forces"][plain]
    )
    return int(np.argmin(relative))


weighted_search = GridSearchCV(
    TensorMapLstsq(rcond=model.rcond_),
    {
        "gradient_weights": [{"positions": weight} for weight in force_weights],
        "alpha": alphas,
    },
    cv=cv,
    scoring={"energy": metrics.scorer("neg_rmse"), "forces": force_scorer},
    refit=balanced_errors,
)
start = time.perf_counter()
weighted_search.fit(X_train, y_train)
weighted_time = time.perf_counter() - start
best = weighted_search.best_params_
print(
    f"chosen force weight {best['gradient_weights']['positions']:g}, alpha {best['alpha']:g} "
    f"({len(force_weights) * len(alphas)} candidates, {weighted_time:.2f} s)"
)

# %%
# The cross-validated errors of every candidate (energies per atom, as above):

results = weighted_search.cv_results_
print("force weight   alpha   energy (meV/atom)   forces (meV/Å)")
for params, energy, forces in zip(
    results["params"], results["mean_test_energy"], results["mean_test_forces"]
):
    weight, alpha = params["gradient_weights"]["positions"], params["alpha"]
    energy, forces = -1000 * energy / atoms_per_structure, -1000 * forces
    print(f"{weight:12g} {alpha:7g} {energy:19.2f} {forces:16.1f}")

# %%
# On the held-out structures, the model refitted with the chosen force weight and
# penalty against the one of the previous sections (force weight 1, no penalty):


def held_out_errors(estimator):
    """Energy RMSE (meV/atom) and force RMSE (meV/Å) on the test structures."""
    predicted = estimator.predict(X_test)
    energy = predicted.tensor.block().values[:, 0] / test_atoms
    energy_error = np.sqrt(np.mean((energy - true_energy) ** 2))
    return 1000 * energy_error, 1000 * metrics.rmse(y_test, predicted, gradient="positions")


energy_before, force_before = held_out_errors(model)
energy_after, force_after = held_out_errors(weighted_search.best_estimator_)
print(f"test energy RMSE, before -> after: {energy_before:.2f} -> {energy_after:.2f} meV/atom")
print(f"test force RMSE, before -> after: {force_before:.1f} -> {force_after:.1f} meV/Å")

# %%
# A smaller force weight lowers the energy error at little cost in forces: with 48
# force components per energy, the forces determine the weights well whatever
# their weight, and below 0.01 neither error changes much. The penalty does not
# help here: EMT data has no noise for it to filter out, and a given ``alpha``
# weighs more against rows of smaller weight (multiplying every row weight by
# ``c`` is the same as dividing ``alpha`` by ``c``), hence the larger errors of
# small force weights with ``alpha=1e-6``. With noisy reference data (DFT energies
# and forces carry their own errors) the penalty usually matters more;
# :class:`~skmetalstsq.TensorMapLstsqCV` with ``alphas=`` then scores every
# ``(rcond, alpha)`` pair of one force weight from one decomposition per fold.

plt.show()
