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
   leave-one-structure-out, with parity plots of every structure predicted by a
   fit without it, and what they change on the held-out structures.

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
from sklearn.model_selection import GridSearchCV, KFold, LeaveOneOut, train_test_split

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics
from skmetalstsq.display import ParityDisplay, SingularValuesDisplay
from skmetalstsq.model_selection import cross_val_predict

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


def energy_per_atom(tensor):
    """The energies of an IndexedTensorMap, per atom of each structure."""
    block = tensor.tensor.block()
    return block.values[:, 0] / n_atoms[block.samples.column("system")]


prediction = model.predict(X_test)
true_energy, predicted_energy = energy_per_atom(y_test), energy_per_atom(prediction)

energy_rmse = np.sqrt(np.mean((predicted_energy - true_energy) ** 2))
energy_mae = np.mean(np.abs(predicted_energy - true_energy))
force_rmse = metrics.rmse(y_test, prediction, gradient="positions")
force_spread = np.std(y_test.tensor.block().gradient("positions").values)
print(f"test energy RMSE: {1000 * energy_rmse:.2f} meV/atom")
print(f"test energy MAE: {1000 * energy_mae:.2f} meV/atom")
print(f"test force RMSE: {1000 * force_rmse:.1f} meV/Å")
print(f"standard deviation of the test force components: {1000 * force_spread:.1f} meV/Å")

# %%
# Parity plots of the held-out energies (per atom) and force components.


def parity_plots(y_true, y_pred, title):
    """Predicted against reference energies per atom and force components."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    true, predicted = energy_per_atom(y_true), energy_per_atom(y_pred)
    axes[0].plot(true, predicted, ".", alpha=0.6)
    limits = [min(true.min(), predicted.min()), max(true.max(), predicted.max())]
    axes[0].plot(limits, limits, "k--", linewidth=1)
    axes[0].set_xlabel("EMT energy (eV/atom)")
    axes[0].set_ylabel("predicted energy (eV/atom)")
    # the positions gradient is minus the forces: its parity plot is the forces'
    ParityDisplay.from_predictions(y_true, y_pred, gradient="positions", ax=axes[1])
    fig.suptitle(title)


parity_plots(y_test, prediction, f"{len(X_test)} held-out structures")

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
# Both are chosen by leave-one-structure-out: each training structure is left out
# in turn, with its energy and all its force rows, and predicted by a fit on all
# the others. Reference calculations are expensive, so this most data-efficient
# validation is the one to use when there are a few hundred structures or fewer.
# With ``cv="loo"``, :class:`~skmetalstsq.TensorMapLstsqCV` computes it exactly
# from one factorisation of the training data for every penalty of one force
# weight (see :doc:`/user_guide/leave_one_out`); the force weight changes the rows
# that are factorised, so an outer loop goes over the force weights. With
# ``rcond`` fixed at the cut-off chosen above, which drops only the exact zeros
# (every fit without a structure drops the same directions), the held-out
# predictions are those of refits, also for ``alpha=0``.
#
# What to score? Lowering the force weight trades force accuracy for energy
# accuracy, so neither error alone can decide: the force error alone would always
# pick the largest force weight, the energy error alone the smallest. The score is
# minus the sum of the two held-out RMSEs, each divided by the standard deviation
# of its training targets (the error of predicting their mean). It has no unit,
# neither error counts more for having more rows, and a candidate wins only if what
# it gains on one error outweighs what it loses on the other. Under ``cv="loo"``
# the scorer is called once per candidate, on the held-out predictions of all
# structures pooled.

train_block = y_train.tensor.block()
energy_scale = np.std(train_block.values)
force_scale = np.std(train_block.gradient("positions").values)
print(
    f"standard deviations of the training targets: {1000 * energy_scale / atoms_per_structure:.3f}"
    f" meV/atom, {1000 * force_scale:.2f} meV/Å"
)
energy_scorer = metrics.scorer("neg_rmse")


def balanced_score(estimator, X, y):
    """Minus the energy and force RMSEs, each relative to the spread of its targets."""
    energy_error = -energy_scorer(estimator, X, y) / energy_scale
    force_error = -force_scorer(estimator, X, y) / force_scale
    return -(energy_error + force_error)


force_weights = [0.001, 0.01, 0.1, 1.0]
alphas = [0.0, 1e-8, 1e-6]
searches = {}
start = time.perf_counter()
for weight in force_weights:
    searches[weight] = TensorMapLstsqCV(
        rconds=model.rcond_,
        alphas=alphas,
        gradient_weights={"positions": weight},
        cv="loo",
        scoring=balanced_score,
    ).fit(X_train, y_train)
loo_time = time.perf_counter() - start
best_weight = max(force_weights, key=lambda weight: searches[weight].best_score_)
chosen = searches[best_weight]
print(
    f"chosen force weight {best_weight:g}, alpha {chosen.alpha_:g} "
    f"({len(force_weights) * len(alphas)} candidates, {len(X_train)} structures left out, "
    f"{loo_time:.2f} s)"
)

# %%
# The leave-one-structure-out score of every candidate:

print("force weight   alpha      score")
for weight, search in searches.items():
    results = search.cv_results_
    for alpha, score in zip(results["param_alpha"], results["mean_test_score"]):
        print(f"{weight:12g} {alpha:7g} {score:10.5f}")

# %%
# Parity plots of held-out structures
# -----------------------------------
#
# :func:`skmetalstsq.model_selection.cross_val_predict` with ``cv="loo"`` gives the
# prediction of every training structure by the chosen model fitted without it,
# energies and forces, from the same kind of pass. They are those of refits
# without each structure (``cv=LeaveOneOut()``, one fit per structure), to rounding.

chosen_model = TensorMapLstsq(
    rcond=model.rcond_, alpha=chosen.alpha_, gradient_weights={"positions": best_weight}
)
start = time.perf_counter()
held_out = cross_val_predict(chosen_model, X_train, y_train, cv="loo")
held_out_time = time.perf_counter() - start
start = time.perf_counter()
refitted = cross_val_predict(chosen_model, X_train, y_train, cv=LeaveOneOut())
refit_time = time.perf_counter() - start
held_out_block, refitted_block = held_out.tensor.block(), refitted.tensor.block()
energy_difference = np.max(np.abs(held_out_block.values - refitted_block.values))
force_difference = np.max(
    np.abs(
        held_out_block.gradient("positions").values - refitted_block.gradient("positions").values
    )
)
print(f"cv='loo': {held_out_time:.2f} s, LeaveOneOut() refits: {refit_time:.2f} s")
print(
    f"largest difference from the refits: {energy_difference:.1e} eV (energies), "
    f"{force_difference:.1e} eV/Å (forces)"
)

train_energy = energy_per_atom(y_train)
loo_energy_rmse = np.sqrt(np.mean((energy_per_atom(held_out) - train_energy) ** 2))
loo_force_rmse = metrics.rmse(y_train, held_out, gradient="positions")
print(f"leave-one-structure-out energy RMSE: {1000 * loo_energy_rmse:.3f} meV/atom")
print(f"leave-one-structure-out force RMSE: {1000 * loo_force_rmse:.2f} meV/Å")
parity_plots(y_train, held_out, f"{len(X_train)} training structures, each left out in turn")

# %%
# On the test structures, the model refitted on all training structures with the
# chosen force weight and penalty, against the one of the previous sections (force
# weight 1, no penalty):


def errors_on_test_structures(estimator):
    """Energy RMSE (meV/atom) and force RMSE (meV/Å) on the test structures."""
    predicted = estimator.predict(X_test)
    energy_error = np.sqrt(np.mean((energy_per_atom(predicted) - energy_per_atom(y_test)) ** 2))
    return 1000 * energy_error, 1000 * metrics.rmse(y_test, predicted, gradient="positions")


energy_before, force_before = errors_on_test_structures(model)
energy_after, force_after = errors_on_test_structures(chosen)
print(f"test energy RMSE, before -> after: {energy_before:.2f} -> {energy_after:.2f} meV/atom")
print(f"test force RMSE, before -> after: {force_before:.1f} -> {force_after:.1f} meV/Å")

# %%
# A smaller force weight lowers the energy error at little cost in forces: with 48
# force components per energy, the forces determine the weights well whatever
# their weight. The penalty does not help here: EMT data has no noise for it to
# filter out, and a given ``alpha`` weighs more against rows of smaller weight
# (multiplying every row weight by ``c`` is the same as dividing ``alpha`` by
# ``c``), hence the lower scores of small force weights with larger penalties.
# With noisy reference data (DFT energies and forces carry their own errors) the
# penalty usually matters more, and so does the choice of ``alpha``.
#
# The held-out predictions of all structures cost one factorisation, one pass over
# the rows and a small solve per structure, where ``LeaveOneOut()`` refits once per
# structure (and, in a grid search, once per structure and candidate): the timings
# above. The more structures, the larger the gain.

plt.show()
