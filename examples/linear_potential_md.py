"""
From a fit to molecular dynamics: a linear SOAP potential in ASE
================================================================

A linear model of the energy of Cu-Ni alloys, fitted on energies and forces with
:class:`~skmetalstsq.TensorMapLstsqCV`, exported as a TorchScript module and
wrapped with the SOAP calculator into a ``metatomic.torch.AtomisticModel``, the
format that simulation engines load. ASE then runs molecular dynamics with it.

1. rattled and strained Cu-Ni cells, with energies and forces from ASE's
   effective medium theory (EMT) calculator;
2. SOAP power spectra from featomic-torch on metatomic-torch systems, with their
   gradients with respect to positions, reduced to one row per structure by a
   ``torch.nn.Module`` that the exported model uses too;
3. ``rcond`` chosen by cross-validation over structures on the metatensor-torch maps;
4. the SOAP calculator, the reduction and :meth:`TensorMapLstsqCV.to_module()
   <skmetalstsq.TensorMapLstsqCV.to_module>` in one ``AtomisticModel``, saved to a
   file and loaded by metatomic's ASE calculator, whose forces come from autograd;
5. the loaded model gives the fitted energies and forces on the training
   structures, and a short NVE run conserves the total energy.

It needs the ``examples`` extra: ``pip install "skmetalstsq[examples]"``.
"""

# %%
import os
import tempfile

# metatomic checks the signature of a model's forward against typing's Dict, List
# and Optional; TorchScript needs Optional for an argument that may be None
from typing import Dict, List, Optional  # noqa: UP035

import ase.build
import featomic.torch
import matplotlib.pyplot as plt
import metatensor.torch as mts
import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    System,
    systems_to_torch,
)
from metatomic_ase import MetatomicCalculator
from sklearn.model_selection import KFold

from skmetalstsq import IndexedTensorMap, TensorMapLstsqCV, metrics

# %%
# Cu-Ni cells with EMT energies and forces
# ----------------------------------------
#
# As in the SOAP example: fcc cells of 16 atoms with a random Ni fraction, a
# random strain of up to 3 % and atoms displaced by about 0.1 Å, a little more
# than thermal displacements at room temperature, so that the fit covers the
# structures met in the molecular dynamics below.

N_STRUCTURES = 32
SPECIES = [28, 29]
rng = np.random.default_rng(0)


def make_structure(rng):
    """One rattled, strained Cu-Ni fcc cell with its EMT energy and forces."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 2, 1))
    nickel = rng.random(len(atoms)) < rng.uniform(0.1, 0.9)
    atoms.numbers = np.where(nickel, 28, 29)
    strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3))
    atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.calc = EMT()
    atoms.info["energy"] = atoms.get_potential_energy()
    atoms.arrays["forces"] = atoms.get_forces()
    atoms.calc = None
    return atoms


structures = [make_structure(rng) for _ in range(N_STRUCTURES)]
n_atoms = sum(len(atoms) for atoms in structures)
force_spread = np.std(np.concatenate([atoms.arrays["forces"] for atoms in structures]))
print(f"{N_STRUCTURES} structures, {n_atoms} atoms")
print(f"standard deviation of the force components: {1000 * force_spread:.1f} meV/Å")

# %%
# Per-structure SOAP features, the same in training and in the model
# -------------------------------------------------------------------
#
# featomic-torch computes SOAP power spectra on ``metatomic.torch.System``
# objects, which ``metatomic.torch.systems_to_torch`` makes from ASE ``Atoms``.
# There is one block per (central species, pair of neighbour species); as in the
# SOAP example, the species keys move to properties and the atoms of each
# structure are summed, with the operations of ``metatensor.torch``. The species
# are given as explicit ``Labels``: every structure then gets the same properties
# (zeros for a species it lacks), whatever the species present, which matters
# when the model featurises one structure at a time.
#
# The reduction is a ``torch.nn.Module`` compatible with TorchScript, so that
# the exported model reduces exactly as the training data was reduced. In
# training, ``gradients=["positions"]`` keeps the derivatives of the features with
# respect to the positions in the map (they go through the reduction as the
# values do); in the model, the forces come from autograd instead.


class PerStructureSoap(torch.nn.Module):
    """SOAP power spectra of each structure, summed over its atoms.

    Parameters
    ----------
    calculator : featomic.torch.SoapPowerSpectrum
        The descriptor.
    species : list of int
        All the atomic types of the structures to featurise.
    """

    def __init__(self, calculator, species: list[int]):
        super().__init__()
        self.calculator = calculator
        types = torch.tensor(species, dtype=torch.int32)
        pairs = torch.combinations(types, with_replacement=True)
        self.neighbor_types = mts.Labels(["neighbor_1_type", "neighbor_2_type"], pairs)
        self.center_types = mts.Labels(["center_type"], types.reshape(-1, 1))

    def forward(
        self,
        systems: list[System],
        gradients: list[str],
        selected_atoms: Optional[mts.Labels] = None,  # noqa: UP045
    ) -> mts.TensorMap:
        """One row per system, with the features of all species side by side."""
        descriptor = self.calculator(systems, gradients=gradients, selected_samples=selected_atoms)
        descriptor = descriptor.keys_to_properties(self.neighbor_types)
        descriptor = descriptor.keys_to_properties(self.center_types)
        return mts.sum_over_samples(descriptor, "atom")


CUTOFF = 4.5
soap = featomic.torch.SoapPowerSpectrum(
    cutoff={"radius": CUTOFF, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
    density={"type": "Gaussian", "width": 0.4},
    basis={
        "type": "TensorProduct",
        "max_angular": 3,
        "radial": {"type": "Gto", "max_radial": 3},
    },
)
features = PerStructureSoap(soap, SPECIES)

systems = systems_to_torch(structures, dtype=torch.float64)
X = features(systems, gradients=["positions"])
x_block = X.block()
x_gradient = x_block.gradient("positions")
print(
    f"values: {tuple(x_block.values.shape)} {x_block.values.dtype}, samples {x_block.samples.names}"
)
print(f"positions gradient: {tuple(x_gradient.values.shape)}, samples {x_gradient.samples.names}")

# %%
# Targets, and the fit
# --------------------
#
# The energies, with minus the forces as their ``"positions"`` gradient: each
# gradient row ``(sample, system, atom)`` of X takes the force on that atom. The
# targets are a metatensor-torch map too, in float64 like the features.

system_of_row = x_block.samples.column("system").numpy()
energies = torch.tensor([structures[s].info["energy"] for s in system_of_row])
minus_forces = torch.tensor(
    np.stack([-structures[s].arrays["forces"][a] for _, s, a in x_gradient.samples.values.numpy()])
)
energy_block = mts.TensorBlock(
    values=energies.reshape(-1, 1),
    samples=x_block.samples,
    components=[],
    properties=mts.Labels(["energy"], torch.tensor([[0]])),
)
energy_block.add_gradient(
    "positions",
    mts.TensorBlock(
        values=minus_forces.reshape(-1, 3, 1),
        samples=x_gradient.samples,
        components=x_gradient.components,
        properties=energy_block.properties,
    ),
)
y = mts.TensorMap(X.keys, [energy_block])

# %%
# :class:`~skmetalstsq.TensorMapLstsqCV` chooses ``rcond`` by 4-fold
# cross-validation over structures (:class:`~skmetalstsq.IndexedTensorMap` keeps
# the energy and the force rows of a structure together) on the force error, and
# refits on all structures. No intercept: the energy stays a sum of atomic
# contributions, so the model applies to cells of any size.

rconds = np.logspace(-12, -2, 11)
model = TensorMapLstsqCV(
    rconds=rconds,
    cv=KFold(4, shuffle=True, random_state=0),
    scoring=metrics.scorer("neg_rmse", gradient="positions"),
).fit(IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system"))
cv_force_rmse = -np.max(model.cv_results_["mean_test_score"])
print(f"rcond {model.rcond_:.0e}, cross-validated force RMSE {1000 * cv_force_rmse:.1f} meV/Å")

prediction = model.predict(X)
fitted_energies = prediction.block().values[:, 0].numpy()
fitted_forces = -prediction.block().gradient("positions").values[:, :, 0].numpy()

# %%
# The model for simulation engines
# --------------------------------
#
# A metatomic model is a ``torch.nn.Module`` whose ``forward(systems, outputs,
# selected_atoms)`` returns the requested outputs as metatensor-torch maps: here
# ``{"energy": TensorMap}``, one row per system. It computes the per-structure
# features with the module used in training and applies the exported linear
# model, ``model.to_module()``, to them. Its output is laid out as the targets of
# the fit, which are what metatomic expects of an energy: one block of key
# ``_``, samples ``system`` and one property ``energy``. The engine sets
# ``requires_grad`` on the positions when it wants forces, and autograd goes back
# through the linear module, the reduction and the SOAP calculator.


class LinearEnergy(torch.nn.Module):
    """The energy of each system, linear in its per-structure SOAP features.

    Parameters
    ----------
    features : PerStructureSoap
        The features of the fit.
    linear : torch.nn.Module
        The fitted model, exported by ``to_module``.
    """

    def __init__(self, features: PerStructureSoap, linear: torch.nn.Module):
        super().__init__()
        self.features = features
        self.linear = linear

    def forward(
        self,
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[mts.Labels] = None,  # noqa: UP045
    ) -> Dict[str, mts.TensorMap]:  # noqa: UP006
        """The energies of ``systems``, if ``outputs`` asks for them."""
        results: dict[str, mts.TensorMap] = {}
        if "energy" in outputs:
            sample_kind = outputs["energy"].sample_kind
            if sample_kind != "system":
                raise ValueError(
                    "LinearEnergy.forward: energies are predicted per system, "
                    "not per " + sample_kind
                )
            results["energy"] = self.linear(self.features(systems, [], selected_atoms))
        return results


# %%
# ``ModelCapabilities`` tell the engine what the model computes and in which
# units, which atomic types it knows, and how far atoms interact: the SOAP
# cutoff. ``save`` compiles the whole model with TorchScript into one file, which
# is written to a temporary directory here and loaded back by metatomic's ASE
# calculator (``save(path, collect_extensions=directory)`` would also copy the
# compiled featomic-torch library, for engines without a Python environment).

capabilities = ModelCapabilities(
    outputs={"energy": ModelOutput(unit="eV", sample_kind="system")},
    atomic_types=SPECIES,
    interaction_range=CUTOFF,
    length_unit="Angstrom",
    supported_devices=["cpu"],
    dtype="float64",
)
metadata = ModelMetadata(
    name="linear SOAP potential for Cu-Ni",
    description="energies linear in summed SOAP power spectra, fitted on EMT data",
)
potential_model = LinearEnergy(features, model.to_module()).eval()
atomistic = AtomisticModel(potential_model, metadata, capabilities)

with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "linear-soap.pt")
    atomistic.save(path)
    calculator = MetatomicCalculator(path)
print(f"saved and loaded: {calculator.metadata().name}")

# %%
# The loaded model gives the fitted predictions
# ---------------------------------------------
#
# On the training structures, through ASE: the energies equal those that
# ``model.predict`` gave, and the forces from autograd equal minus the predicted
# gradients, which the fit computed from featomic's analytical gradients of the
# same features. The differences are relative to the largest fitted value, and
# the force on atom ``a`` of structure ``s`` is compared with the gradient row
# ``(sample, s, a)``.


def relative_difference(computed, expected):
    """Largest absolute difference, relative to the largest absolute expected value."""
    return np.max(np.abs(computed - expected)) / np.max(np.abs(expected))


model_energies, model_forces = [], []
for atoms in structures:
    atoms = atoms.copy()
    atoms.calc = calculator
    model_energies.append(atoms.get_potential_energy())
    model_forces.append(atoms.get_forces())
model_energies = np.array(model_energies)[system_of_row]
row_atoms = x_gradient.samples.values.numpy()[:, 1:]
model_forces = np.stack([model_forces[s][a] for s, a in row_atoms])

energy_difference = relative_difference(model_energies, fitted_energies)
force_difference = relative_difference(model_forces, fitted_forces)
print(f"relative difference to the fitted energies: {energy_difference:.1e}")
print(f"relative difference to the fitted forces: {force_difference:.1e}")
assert energy_difference < 1e-8 and force_difference < 1e-8

# %%
# Molecular dynamics
# ------------------
#
# A 32-atom Cu-Ni cell with velocities drawn at 300 K, integrated with velocity
# Verlet in the NVE ensemble for 200 steps of 1 fs. Forces that are the exact
# gradient of a smooth energy conserve the total energy, up to the error of the
# integrator.

N_STEPS, TIMESTEP_FS, TEMPERATURE_K = 200, 1.0, 300

cell = ase.build.bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 2, 2))
cell.numbers = np.where(rng.random(len(cell)) < 0.5, 28, 29)
cell.calc = calculator
thermalize_momenta(cell, TEMPERATURE_K, rng=rng)
Stationary(cell)

potential, kinetic = [], []


def record():
    potential.append(cell.get_potential_energy())
    kinetic.append(cell.get_kinetic_energy())


dynamics = VelocityVerlet(cell, timestep=TIMESTEP_FS * units.fs)
dynamics.attach(record, interval=1)
dynamics.run(N_STEPS)
potential, kinetic = np.array(potential), np.array(kinetic)
total = potential + kinetic

per_atom = 1000 / len(cell)
drift = (total[-1] - total[0]) * per_atom
print(f"NVE: {N_STEPS} steps of {TIMESTEP_FS:g} fs, {len(cell)} atoms")
print(f"total energy drift: {drift:.3f} meV/atom")
largest_change = np.max(np.abs(total - total[0])) * per_atom
print(f"largest change of the total energy: {largest_change:.3f} meV/atom")
print(f"standard deviation of the potential energy: {np.std(potential) * per_atom:.3f} meV/atom")

# %%
# The last frame, against EMT: the trajectory stays where the model was fitted.

frame = cell.copy()
frame.calc = EMT()
emt_forces = frame.get_forces()
md_force_rmse = np.sqrt(np.mean((cell.get_forces() - emt_forces) ** 2))
print(f"last frame: force RMSE against EMT {1000 * md_force_rmse:.1f} meV/Å")
print(f"standard deviation of the EMT force components: {1000 * np.std(emt_forces):.1f} meV/Å")

# %%
# Along the trajectory, kinetic and potential energy exchange (on the left, the
# potential and total energies relative to the initial potential energy) while
# their sum stays flat: on the right, magnified a thousand times, what remains
# are the oscillations of velocity Verlet, which shrink with the square of the
# time step, and no visible drift.

time_fs = np.arange(len(total)) * TIMESTEP_FS
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
reference = potential[0]
axes[0].plot(time_fs, (potential - reference) * per_atom, label="potential")
axes[0].plot(time_fs, kinetic * per_atom, label="kinetic")
axes[0].plot(time_fs, (total - reference) * per_atom, label="total")
axes[0].set_ylabel("energy (meV/atom)")
axes[0].legend()
axes[1].plot(time_fs, (total - total[0]) * per_atom * 1000, color="C2")
axes[1].set_ylabel("total energy - initial total energy (µeV/atom)")
for ax in axes:
    ax.set_xlabel("time (fs)")
fig.suptitle(f"NVE with the linear SOAP potential, {len(cell)} atoms, {TEMPERATURE_K} K")

plt.show()
