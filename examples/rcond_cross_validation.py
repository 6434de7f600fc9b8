"""
Choosing rcond by cross-validation
==================================

:class:`skmetalstsq.TensorMapLstsqCV` scores every candidate ``rcond`` on every fold
from one singular value decomposition per block and fold, then refits on all the
data with the best one. With ``per_block=True`` each block gets its own choice:
blocks of different physics (species, angular channels) rarely want the same
cut-off.

The data is synthetic: two blocks whose descriptors have scales spanning eleven
decades, as raw descriptors often do. In the first block only the four largest
features carry signal, in the second the eight largest; the others only let the
fit chase noise. Cutting singular values below the last informative scale removes
that over-fitting; cutting above it removes signal.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import KFold

from skmetalstsq import IndexedTensorMap, TensorMapLstsqCV
from skmetalstsq.display import CVCurveDisplay, SingularValuesDisplay

rng = np.random.default_rng(0)
N_SYSTEMS, N_ATOMS, N_FEATURES = 24, 1, 12
SCALES = np.logspace(0, -11, N_FEATURES)


def make_blocks(n_informative):
    """Descriptor and target blocks over (system, atom) samples, with forces."""
    samples = Labels(
        ["system", "atom"],
        np.array([[s, a] for s in range(N_SYSTEMS) for a in range(N_ATOMS)]),
    )
    gradient_samples = Labels(
        ["sample", "system", "atom"],
        np.array([[i, s, a] for i, (s, _) in enumerate(samples.values) for a in range(N_ATOMS)]),
    )
    weights = np.zeros((N_FEATURES, 1))
    signs = rng.choice([-1.0, 1.0], size=(n_informative, 1))
    weights[:n_informative] = signs * rng.uniform(0.5, 1.5, size=(n_informative, 1))
    features, target = Labels.range("feature", N_FEATURES), Labels.range("energy", 1)

    latent = rng.normal(size=(len(samples), N_FEATURES))
    latent_gradient = rng.normal(size=(len(gradient_samples), 3, N_FEATURES))
    x = TensorBlock(latent * SCALES, samples, [], features)
    y = TensorBlock(
        latent @ weights + 0.5 * rng.normal(size=(len(samples), 1)), samples, [], target
    )
    xyz = [Labels.range("xyz", 3)]
    x.add_gradient(
        "positions", TensorBlock(latent_gradient * SCALES, gradient_samples, xyz, features)
    )
    noise = 0.5 * rng.normal(size=(len(gradient_samples), 3, 1))
    y.add_gradient(
        "positions", TensorBlock(latent_gradient @ weights + noise, gradient_samples, xyz, target)
    )
    return x, y


keys = Labels(["center_type"], np.array([[1], [6]]))
pairs = [make_blocks(4), make_blocks(8)]
X = IndexedTensorMap(TensorMap(keys, [x for x, _ in pairs]), "system")
y = IndexedTensorMap(TensorMap(keys, [y for _, y in pairs]), "system")
print(X)

# %%
# Cross-validate 20 candidates over 5 folds of systems
# ----------------------------------------------------
#
# Folds split systems: a system's atoms and its force rows stay together. The
# default score is the estimator's R^2 of the values, pooled over blocks; with
# ``per_block=True`` each block is also scored on its own and gets its own rcond.

rconds = np.logspace(-12, -1, 20)
cv = KFold(5, shuffle=True, random_state=0)
model = TensorMapLstsqCV(rconds=rconds, cv=cv, per_block=True).fit(X, y)
overall = TensorMapLstsqCV(rconds=rconds, cv=cv).fit(X, y)

print(f"chosen rcond: {overall.rcond_:.1e} (one for all blocks)")
print("per block: " + ", ".join(f"center_type={k[0]}: {r:.1e}" for k, r in model.rcond_.items()))
print(f"cross-validated R^2: {overall.best_score_:.4f} with one rcond, ", end="")
print(f"{model.best_score_:.4f} with one per block")

# %%
# The validation curves
# ---------------------
#
# ``cv_results_`` has GridSearchCV's keys; the per-block scores are under the
# block's name (``model.block_names_``), e.g. ``mean_test_center_type=6``.
# :class:`~skmetalstsq.display.CVCurveDisplay` draws the mean test score of every
# candidate with a band of one standard deviation, and marks the chosen one; the
# displays of each block's scores are drawn on the same axes.

fig, ax = plt.subplots(figsize=(6, 4))
CVCurveDisplay.from_estimator(overall, name="all blocks (pooled)", ax=ax)
for name in model.block_names_.values():
    CVCurveDisplay.from_estimator(model, score=name, ax=ax)
ax.set_ylim(max(ax.get_ylim()[0], -0.5), 1.0)
ax.set_ylabel("cross-validated R$^2$")
ax.legend(fontsize="small")
fig.tight_layout()

# %%
# What the cut-offs cut
# ---------------------
#
# :class:`~skmetalstsq.display.SingularValuesDisplay` draws the singular values of
# each block of the refitted model, relative to the largest, with the cut-off each
# block chose: the values under its line are cut. The descriptors' eleven decades of
# scale show as eleven decades of singular values.

fig, ax = plt.subplots(figsize=(6, 4))
SingularValuesDisplay.from_estimator(model, ax=ax)
fig.tight_layout()

# %%
# After the choice, the model is refitted on all systems and predicts like
# :class:`skmetalstsq.TensorMapLstsq`.

print(f"R^2 on the training systems: {model.score(X, y):.4f}")
plt.show()
