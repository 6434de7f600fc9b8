"""
Error bars in the simulation: a Bayesian linear potential with its uncertainty
==============================================================================

A linear model of the energy of Cu-Ni alloys, fitted on energies and forces with
:class:`~skmetalstsq.TensorMapBayesianRidge`, gives with each prediction how far
to trust it. Exported with its posterior, it becomes a ``metatomic.torch``
model with three outputs, following metatomic's conventions:

- ``energy``, the posterior mean;
- ``energy_uncertainty``, the standard deviation of the energy (eV), with the
  metadata of ``energy``: what ``predict(X, return_std=True)`` gives;
- ``energy_ensemble``, the energies of a committee of weight sets drawn from the
  posterior at export (property ``energy`` numbered 0 to n-1, with the
  gradients with respect to positions when asked for them): what ``sample_y``
  gives with the same ``random_state``.

metatomic's ASE calculator runs molecular dynamics with it and reads the
uncertainty at every step; on structures unlike the training data, here cells
compressed by up to 10 %, the uncertainty rises with the error.

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

from skmetalstsq import TensorMapBayesianRidge

# %%
# Training data: Cu-Ni cells with EMT energies and forces
# -------------------------------------------------------
#
# As in the molecular dynamics example: fcc cells of 16 atoms with a random Ni
# fraction, a random strain of up to 3 % and atoms displaced by about 0.1 Å, with
# energies and forces from ASE's effective medium theory (EMT) calculator.

N_STRUCTURES = 24
SPECIES = [28, 29]
LATTICE = 3.58
rng = np.random.default_rng(0)


def make_structure(rng):
    """One rattled, strained Cu-Ni fcc cell with its EMT energy and forces."""
    atoms = ase.build.bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat((2, 2, 1))
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
print(f"{N_STRUCTURES} structures, {sum(len(atoms) for atoms in structures)} atoms")

# %%
# Per-structure SOAP features
# ---------------------------
#
# SOAP power spectra from featomic-torch, with the species moved to properties
# and the atoms of each structure summed, in a TorchScript-compatible module that
# the exported model uses too (see the molecular dynamics example for the
# details). In training, ``gradients=["positions"]`` keeps the derivatives of the
# features with respect to the positions.


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
X = features(systems_to_torch(structures, dtype=torch.float64), gradients=["positions"])
x_block = X.block()
x_gradient = x_block.gradient("positions")
print(
    f"features: {tuple(x_block.values.shape)}, positions gradient {tuple(x_gradient.values.shape)}"
)

# %%
# Targets, and the Bayesian fit
# -----------------------------
#
# The energies, with minus the forces as their ``"positions"`` gradient.

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
# :class:`~skmetalstsq.TensorMapBayesianRidge` puts a Gaussian prior of precision
# ``lambda_`` on the weights and a Gaussian noise of precision ``alpha_ * w`` on
# each row of weight ``w``, and chooses both precisions by maximising the
# evidence. The weights are relative precisions: a force component (in eV/Å)
# of weight 10 has a noise variance ten times smaller than an energy (in eV) of
# a 16-atom cell, and the evidence sets the one noise level of both. No
# intercept: the energy stays a sum of atomic contributions, for cells of any
# size.
#
# The posterior mean is a ridge fit, ``TensorMapLstsq(alpha=lambda_ / alpha_)``;
# what the Bayesian fit adds is the posterior covariance ``sigma_`` of the
# weights, from which come the std of a prediction and the committee.

FORCE_WEIGHT = 10.0
model = TensorMapBayesianRidge(fit_intercept=False, gradient_weights={"positions": FORCE_WEIGHT})
model.fit(X, y)
(key,) = model.alpha_
alpha, lambda_ = model.alpha_[key][0], model.lambda_[key][0]
print(f"ridge penalty lambda_ / alpha_ = {lambda_ / alpha:.1e}")
print(
    f"noise std: {1000 / np.sqrt(alpha):.1f} meV for an energy, "
    f"{1000 / np.sqrt(FORCE_WEIGHT * alpha):.1f} meV/Å for a force component"
)

mean, std = model.predict(X, return_std=True)
energy_residual = (mean.block().values - y.block().values).numpy()
force_residual = (
    mean.block().gradient("positions").values - y.block().gradient("positions").values
).numpy()
energy_std = std.block().values.numpy()
force_std = std.block().gradient("positions").values.numpy()
print(
    f"training energies: RMSE {1000 * np.sqrt(np.mean(energy_residual**2)):.1f} meV, "
    f"predicted std {1000 * np.sqrt(np.mean(energy_std**2)):.1f} meV (root mean square)"
)
print(
    f"training forces: RMSE {1000 * np.sqrt(np.mean(force_residual**2)):.1f} meV/Å, "
    f"predicted std {1000 * np.sqrt(np.mean(force_std**2)):.1f} meV/Å (root mean square)"
)

# %%
# On the training data, the predicted std is at the level of the errors: the
# noise precisions chosen by the evidence account for what the linear model
# cannot fit.

# %%
# The model for simulation engines
# --------------------------------
#
# ``model.to_module(n_ensemble=N_ENSEMBLE, random_state=0)`` exports the
# posterior: its ``forward`` gives the mean, its ``std`` method the standard
# deviation of ``predict(X, return_std=True)`` and its ``ensemble`` method the
# predictions of ``N_ENSEMBLE`` weight sets drawn from the posterior at export,
# the same as ``model.sample_y(X, N_ENSEMBLE, random_state=0)``. The ensemble has
# the members as a last component named ``"sample"``; metatomic's
# ``energy_ensemble`` numbers them as the property ``energy``, which three
# metatensor operations give (they carry the gradients along).
#
# metatomic asks for gradients of an output in two ways: by autograd through the
# positions (the engine's forces, from ``energy``), or as explicit gradients in
# the output (``ModelOutput(explicit_gradients=["positions"])``), which the
# model computes here from featomic's gradients of the features.

N_ENSEMBLE = 16


class BayesianEnergy(torch.nn.Module):
    """The energy of each system, its uncertainty and a committee of energies.

    Parameters
    ----------
    features : PerStructureSoap
        The features of the fit.
    linear : torch.nn.Module
        The fitted model, exported by ``to_module`` with an ensemble.
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
        """The outputs of ``systems`` that ``outputs`` asks for."""
        for name, output in outputs.items():
            if output.sample_kind != "system":
                raise ValueError(
                    "BayesianEnergy.forward: " + name + " is predicted per system, "
                    "not per " + output.sample_kind
                )
        results: dict[str, mts.TensorMap] = {}
        x = self.features(systems, [], selected_atoms)
        if "energy" in outputs:
            results["energy"] = self.linear(x)
        if "energy_uncertainty" in outputs:
            results["energy_uncertainty"] = self.linear.std(x)
        if "energy_ensemble" in outputs:
            gradients = outputs["energy_ensemble"].explicit_gradients
            if len(gradients) > 0:
                x = self.features(systems, gradients, selected_atoms)
            members = self.linear.ensemble(x).components_to_properties("sample")
            members = mts.remove_dimension(members, "properties", "energy")
            results["energy_ensemble"] = mts.rename_dimension(
                members, "properties", "sample", "energy"
            )
        return results


capabilities = ModelCapabilities(
    outputs={
        "energy": ModelOutput(unit="eV", sample_kind="system"),
        "energy_uncertainty": ModelOutput(unit="eV", sample_kind="system"),
        "energy_ensemble": ModelOutput(
            unit="eV", sample_kind="system", explicit_gradients=["positions"]
        ),
    },
    atomic_types=SPECIES,
    interaction_range=CUTOFF,
    length_unit="Angstrom",
    supported_devices=["cpu"],
    dtype="float64",
)
metadata = ModelMetadata(
    name="Bayesian linear SOAP potential for Cu-Ni",
    description="energies linear in summed SOAP power spectra, with their posterior",
)
linear = model.to_module(n_ensemble=N_ENSEMBLE, random_state=0)
atomistic = AtomisticModel(BayesianEnergy(features, linear).eval(), metadata, capabilities)

# %%
# The model is saved to a file and loaded by metatomic's ASE calculator. Its
# uncertainty is per system: the calculator's own check of per-atom
# uncertainties does not apply, and ``additional_outputs`` asks for it at every
# step instead, next to the energy and the forces.

with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "bayesian-soap.pt")
    atomistic.save(path)
    calculator = MetatomicCalculator(
        path,
        additional_outputs={"energy_uncertainty": ModelOutput(unit="eV", sample_kind="system")},
        check_consistency=True,
    )
print(f"saved and loaded: {calculator.metadata().name}")

# %%
# The loaded model gives what the estimator gives
# -----------------------------------------------
#
# On the training structures, all at once: the energies equal ``predict``'s, the
# uncertainties the std of ``predict(X, return_std=True)``, and the committee's
# energies and their positions gradients ``sample_y(X, N_ENSEMBLE,
# random_state=0)``'s. The differences are relative to the largest value.


def relative_difference(computed, expected):
    """Largest absolute difference, relative to the largest absolute expected value."""
    computed, expected = np.asarray(computed), np.asarray(expected)
    return np.max(np.abs(computed - expected)) / np.max(np.abs(expected))


outputs = calculator.run_model(
    structures,
    {
        "energy": ModelOutput(unit="eV", sample_kind="system"),
        "energy_uncertainty": ModelOutput(unit="eV", sample_kind="system"),
        "energy_ensemble": ModelOutput(
            unit="eV", sample_kind="system", explicit_gradients=["positions"]
        ),
    },
)
members = model.sample_y(X, N_ENSEMBLE, random_state=0)  # (rows, member, target)
ensemble = outputs["energy_ensemble"].block()
differences = {
    "energies": relative_difference(outputs["energy"].block().values.detach(), mean.block().values),
    "uncertainties": relative_difference(
        outputs["energy_uncertainty"].block().values.detach(), std.block().values
    ),
    "ensemble energies": relative_difference(
        ensemble.values.detach(), members.block().values[..., 0]
    ),
    "ensemble forces": relative_difference(
        ensemble.gradient("positions").values.detach(),
        members.block().gradient("positions").values[..., 0],
    ),
}
for name, difference in differences.items():
    print(f"relative difference to the estimator's {name}: {difference:.1e}")
print(f"ensemble properties: {ensemble.properties.names}, {len(ensemble.properties)} members")

# %%
# Molecular dynamics, with the uncertainty at every step
# ------------------------------------------------------
#
# A 32-atom Cu-Ni cell at 300 K, integrated with velocity Verlet in the NVE
# ensemble; the calculator computes the energy uncertainty with the forces at
# every step.

N_STEPS, TIMESTEP_FS, TEMPERATURE_K = 100, 1.0, 300

cell = ase.build.bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat((2, 2, 2))
cell.numbers = np.where(rng.random(len(cell)) < 0.5, 28, 29)
cell.calc = calculator
thermalize_momenta(cell, TEMPERATURE_K, rng=rng)
Stationary(cell)

total, uncertainty = [], []


def record():
    total.append(cell.get_potential_energy() + cell.get_kinetic_energy())
    uncertainty.append(calculator.additional_outputs["energy_uncertainty"].block().values.item())


dynamics = VelocityVerlet(cell, timestep=TIMESTEP_FS * units.fs)
dynamics.attach(record, interval=1)
dynamics.run(N_STEPS)
total, uncertainty = np.array(total), np.array(uncertainty)

per_atom = 1000 / len(cell)
largest_change = np.max(np.abs(total - total[0])) * per_atom
print(f"NVE: {N_STEPS} steps of {TIMESTEP_FS:g} fs, {len(cell)} atoms")
print(f"largest change of the total energy: {largest_change:.3f} meV/atom")
print(
    f"energy uncertainty along the trajectory: {uncertainty.mean() * per_atom:.3f} meV/atom "
    f"on average, {uncertainty.max() * per_atom:.3f} meV/atom at most"
)

# %%
# Away from the training data
# ---------------------------
#
# The last frame of the trajectory, its cell compressed by up to 10 % (every
# length shrunk, the atoms with it): far outside the 3 % strains of the
# training set. The uncertainty rises with the compression, and so does the
# error against EMT. The uncertainty is a warning, not a bound: far from the
# data, where a linear model in these features no longer holds, the error grows
# faster than the std of the model.

compressions = np.linspace(0.0, 0.10, 6)
compressed_uncertainty, compressed_error = [], []
for compression in compressions:
    atoms = cell.copy()
    atoms.set_cell(atoms.cell[:] * (1 - compression), scale_atoms=True)
    atoms.calc = calculator
    energy = atoms.get_potential_energy()
    compressed_uncertainty.append(
        calculator.additional_outputs["energy_uncertainty"].block().values.item()
    )
    atoms.calc = EMT()
    compressed_error.append(abs(energy - atoms.get_potential_energy()))
compressed_uncertainty, compressed_error = (
    np.array(compressed_uncertainty),
    np.array(compressed_error),
)
for compression, sigma, error in zip(compressions, compressed_uncertainty, compressed_error):
    print(
        f"compressed by {100 * compression:4.1f} %: uncertainty {sigma * per_atom:8.3f} meV/atom, "
        f"error against EMT {error * per_atom:8.3f} meV/atom"
    )
rise = compressed_uncertainty[-1] / uncertainty.max()
print(f"uncertainty compressed by 10 % / largest along the trajectory: {rise:.1f}")

# %%
# On the left, the uncertainty along the trajectory stays at the level of that of
# the training cells (root mean square, per atom: it falls as the cells grow);
# on the right, it grows with the compression as the error does.

time_fs = np.arange(len(uncertainty)) * TIMESTEP_FS
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
training_atoms = np.array([len(structures[s]) for s in system_of_row])
training_level = 1000 * np.sqrt(np.mean((energy_std[:, 0] / training_atoms) ** 2))
axes[0].plot(time_fs, uncertainty * per_atom, label="trajectory")
axes[0].axhline(training_level, color="C1", linestyle="--", label="training cells")
axes[0].set_ylim(bottom=0)
axes[0].legend(loc="lower right")
axes[0].set_xlabel("time (fs)")
axes[0].set_ylabel("energy uncertainty (meV/atom)")
axes[0].set_title(f"NVE, {len(cell)} atoms, {TEMPERATURE_K} K")
axes[1].semilogy(100 * compressions, compressed_uncertainty * per_atom, "o-", label="uncertainty")
axes[1].semilogy(100 * compressions, compressed_error * per_atom, "s--", label="error against EMT")
axes[1].set_xlabel("compression of the cell (%)")
axes[1].set_ylabel("meV/atom")
axes[1].set_title("the last frame, compressed")
axes[1].legend()

plt.show()
