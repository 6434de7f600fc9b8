"""
Model selection with scikit-learn
=================================

scikit-learn splits data by integer positions; :class:`skmetalstsq.IndexedTensorMap`
numbers the systems of a TensorMap so that ``GridSearchCV``, ``KFold`` and friends split
by system, keeping each system's atoms and force rows together. This notebook

- searches ``rcond`` of :class:`skmetalstsq.TensorMapLstsq` with ``GridSearchCV``,
  scoring energies and forces with :func:`skmetalstsq.metrics.scorer`,
- draws the validation curve (cross-validated error against ``rcond``) with
  :class:`skmetalstsq.display.CVCurveDisplay`,
- and draws a parity plot with :class:`skmetalstsq.display.ParityDisplay` from
  out-of-fold predictions made by :func:`skmetalstsq.model_selection.cross_val_predict`.

The data is synthetic: per-atom descriptors whose features span ten decades of scale,
as raw descriptors often do, and per-system energies (with forces) that are a sum of
atomic contributions of the six largest features plus noise. A
:class:`skmetalstsq.TensorMapFunctionTransformer` sums the descriptors over atoms in the
pipeline, so that they meet the per-system targets.
"""

# %%
import matplotlib.pyplot as plt
import metatensor
import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skmetalstsq import (
    IndexedTensorMap,
    TensorMapFunctionTransformer,
    TensorMapLstsq,
    cross_val_predict,
    metrics,
)
from skmetalstsq.display import CVCurveDisplay, ParityDisplay

rng = np.random.default_rng(0)
N_SYSTEMS, N_FEATURES, N_INFORMATIVE = 20, 40, 8
SCALES = np.logspace(0, -10, N_FEATURES)

# %%
# Per-atom descriptors, per-system energies and forces
# ----------------------------------------------------
#
# Each system has two to four atoms. Samples are ``(system, atom)``; the gradient
# with respect to positions has a row for every atom of the system of each sample.
# The latent features are what the energy depends on; the descriptors see them at
# scales from 1 to 1e-10.

n_atoms = rng.integers(2, 5, size=N_SYSTEMS)
samples = Labels(
    ["system", "atom"], np.array([[s, a] for s in range(N_SYSTEMS) for a in range(n_atoms[s])])
)
gradient_samples = Labels(
    ["sample", "system", "atom"],
    np.array([[i, s, b] for i, (s, _) in enumerate(samples.values) for b in range(n_atoms[s])]),
)
xyz = [Labels.range("xyz", 3)]
features = Labels.range("feature", N_FEATURES)
latent = rng.normal(size=(len(samples), N_FEATURES))
latent_gradient = rng.normal(size=(len(gradient_samples), 3, N_FEATURES))


def per_atom_map(values, gradient_values):
    """A one-block TensorMap of per-atom features with their positions gradient."""
    block = TensorBlock(values, samples, [], features)
    block.add_gradient("positions", TensorBlock(gradient_values, gradient_samples, xyz, features))
    return TensorMap(Labels.single(), [block])


X = per_atom_map(latent * SCALES, latent_gradient * SCALES)

# energies are sums of atomic contributions: sum the latent features over atoms
summed = metatensor.sum_over_samples(per_atom_map(latent, latent_gradient), "atom").block()
weights = np.zeros((N_FEATURES, 1))
weights[:N_INFORMATIVE] = rng.uniform(0.5, 1.5, size=(N_INFORMATIVE, 1))
energy = Labels.range("energy", 1)
y_block = TensorBlock(
    summed.values @ weights + 0.3 * rng.normal(size=(N_SYSTEMS, 1)), summed.samples, [], energy
)
forces = summed.gradient("positions")
y_block.add_gradient(
    "positions",
    TensorBlock(
        forces.values @ weights + 0.3 * rng.normal(size=(*forces.values.shape[:-1], 1)),
        forces.samples,
        forces.components,
        energy,
    ),
)
y = TensorMap(Labels.single(), [y_block])

Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
print(Xi, yi, sep="\n")

# %%
# Search rcond over folds of systems
# ----------------------------------
#
# The pipeline sums the descriptors over atoms, then fits energies and forces
# together. Both errors are scored on every fold; the search keeps the ``rcond``
# with the lowest force error (``refit="forces"``) and refits on all systems.

pipeline = make_pipeline(
    TensorMapFunctionTransformer(metatensor.sum_over_samples, kw_args={"sample_names": "atom"}),
    TensorMapLstsq(driver="gelsd"),
)
rconds = np.logspace(-12, -1, 12)
cv = KFold(5, shuffle=True, random_state=0)
scoring = {
    "energies": metrics.scorer("neg_rmse"),
    "forces": metrics.scorer("neg_rmse", gradient="positions"),
}
search = GridSearchCV(
    pipeline, {"tensormaplstsq__rcond": rconds}, cv=cv, scoring=scoring, refit="forces"
)
search.fit(Xi, yi)

best_rcond = search.best_params_["tensormaplstsq__rcond"]
print(f"best rcond: {best_rcond:.0e}")
print(f"cross-validated force RMSE: {-search.best_score_:.3f}")

# %%
# The validation curve
# --------------------
#
# Too small an ``rcond`` keeps directions that only fit noise; too large a one cuts
# the small-scale features that carry signal. Each score of the search is drawn
# with its spread over the folds (negated back into an error), and the ``rcond``
# chosen by ``refit="forces"`` is marked on both.

fig, ax = plt.subplots(figsize=(6, 4))
for name in scoring:
    CVCurveDisplay.from_estimator(search, score=name, negate_score=True, ax=ax)
ax.set_yscale("log")
ax.set_ylabel("cross-validated RMSE")
fig.tight_layout()

# %%
# Out-of-fold predictions
# -----------------------
#
# :func:`~skmetalstsq.model_selection.cross_val_predict` predicts every system once,
# from a model that did not see it, and puts the predictions in the layout of
# ``yi``: any metric of :mod:`skmetalstsq.metrics` applies to them directly.

predicted = cross_val_predict(search.best_estimator_, Xi, yi, cv=cv)
energy_rmse = metrics.rmse(yi, predicted)
force_rmse = metrics.rmse(yi, predicted, gradient="positions")
print(f"out-of-fold RMSE: energies {energy_rmse:.3f}, forces {force_rmse:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
ParityDisplay.from_predictions(yi, predicted, ax=axes[0])
ParityDisplay.from_predictions(yi, predicted, gradient="positions", ax=axes[1])
axes[0].set(xlabel="reference energies", ylabel="out-of-fold predicted energies")
axes[1].set(xlabel="reference forces", ylabel="out-of-fold predicted forces")
fig.tight_layout()
plt.show()
