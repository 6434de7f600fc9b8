"""
Quick start
===========

Fit least-squares weights block by block on a metatensor TensorMap, choose
``rcond`` by cross-validation over systems with scikit-learn, and check the
chosen model on systems it has not seen.

The data is synthetic, so what a good fit looks like is known: the targets are a
linear function of the descriptors plus random noise of standard deviation 0.05.
No model predicts new data better than that noise, so a root mean square error
(RMSE) near 0.05 on held-out systems is a perfect fit. A training RMSE below 0.05
means that some of the noise was fitted.

Run as a script on a desktop, each figure opens in a window. Without a display,
matplotlib draws with its non-interactive Agg backend, which cannot show a
figure: the script then saves each figure as a PNG file in the current directory
and prints its path.
"""

# %%
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import metatensor
import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold, train_test_split

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, metrics
from skmetalstsq.display import CVCurveDisplay, ParityDisplay

NOISE = 0.05
N_SYSTEMS, N_ATOMS, N_FEATURES, N_INFORMATIVE = 40, 2, 40, 8
SCALES = np.logspace(0, -10, N_FEATURES)
rng = np.random.default_rng(0)


def show(figure, filename):
    """Show ``figure``; without a display, save it as ``filename`` and say where.

    The documentation build (sphinx-gallery) draws with Agg too, and keeps the
    figures itself.
    """
    if matplotlib.get_backend().lower() != "agg" or "sphinx_gallery" in sys.modules:
        plt.show()
        return
    path = Path(filename).resolve()
    figure.savefig(path)
    print(f"no display to show the figure on (matplotlib's Agg backend): saved {path}")


# %%
# Descriptors and targets
# -----------------------
#
# Two blocks, keyed by ``o3_lambda`` 0 and 1, with samples ``(system, atom)``
# and an ``o3_mu`` component axis of size ``2 * o3_lambda + 1``, as an
# equivariant descriptor and its target have. The 40 features span ten decades
# of scale, as raw descriptors often do; the targets depend on the 8 largest
# only (scales 1 to about 0.02). The ``o3_lambda=0`` targets also have an offset
# of -2.5, for an intercept to fit.


def make_blocks(o3_lambda, offset):
    """The descriptor block and the target block of one ``o3_lambda``."""
    pairs = [[s, a] for s in range(N_SYSTEMS) for a in range(N_ATOMS)]
    samples = Labels(["system", "atom"], np.array(pairs))
    o3_mu = np.arange(-o3_lambda, o3_lambda + 1).reshape(-1, 1)
    components = [Labels(["o3_mu"], o3_mu)]

    latent = rng.normal(size=(len(samples), len(o3_mu), N_FEATURES))
    weights = np.zeros((N_FEATURES, 1))
    weights[:N_INFORMATIVE] = rng.uniform(0.5, 1.5, size=(N_INFORMATIVE, 1))
    noise = NOISE * rng.normal(size=(len(samples), len(o3_mu), 1))
    targets = latent @ weights + offset + noise

    features, target = Labels.range("feature", N_FEATURES), Labels.range("y", 1)
    x = TensorBlock(latent * SCALES, samples, components, features)
    y = TensorBlock(targets, samples, components, target)
    return x, y


keys = Labels(["o3_lambda"], np.array([[0], [1]]))
(x0, y0), (x1, y1) = make_blocks(0, offset=-2.5), make_blocks(1, offset=0.0)
X, y = TensorMap(keys, [x0, x1]), TensorMap(keys, [y0, y1])
print(X)

# %%
# :class:`~skmetalstsq.IndexedTensorMap` numbers the systems, so that
# scikit-learn's splitters split by system: all the rows of a system (its atoms
# and their components) stay on the same side.

Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
split = train_test_split(Xi, yi, test_size=0.25, random_state=0)
X_train, X_test, y_train, y_test = split
print(f"{len(X_train)} training and {len(X_test)} test systems")

# %%
# Fit, predict, score
# -------------------
#
# Each block gets its own weights, found by least squares over its rows (the
# components are folded into the rows). ``weights_`` and ``intercept_`` are
# TensorMaps with one block per key, and ``predict`` returns a TensorMap laid out
# like ``y``. ``rcond=1e-6`` is a guess; the next section chooses it.

model = TensorMapLstsq(rcond=1e-6, fit_intercept=True).fit(X_train, y_train)
for key, weights in model.weights_.items():
    intercept = model.intercept_.block(key).values[0, 0]
    o3_lambda, shape = key["o3_lambda"], weights.values.shape
    print(f"o3_lambda={o3_lambda}: weights {shape}, intercept {intercept:.3f}")

train_rmse = metrics.rmse(y_train, model.predict(X_train))
test_rmse = metrics.rmse(y_test, model.predict(X_test))
print(f"RMSE: training {train_rmse:.4f}, test {test_rmse:.4f}, noise {NOISE}")

# %%
# Without ``fit_intercept`` the weights are those of :func:`metatensor.lstsq`
# (which has no intercept) on the same TensorMaps.

plain = TensorMapLstsq(rcond=1e-6).fit(X, y)
reference = metatensor.lstsq(X, y, rcond=1e-6)
same = metatensor.allclose(plain.weights_, reference)
print(f"same weights as metatensor.lstsq: {same}")

# %%
# Choose rcond by cross-validation
# --------------------------------
#
# ``rcond`` discards the directions of feature space whose singular value is
# below ``rcond`` times the largest one. Too small, and the fit keeps features
# that carry no signal, whose weights then fit the noise; too large, and it
# discards features that carry signal. ``GridSearchCV`` scores every candidate on
# 5 folds of the training systems, then refits the best one on all of them.

rconds = np.logspace(-12, -1, 12)
search = GridSearchCV(
    TensorMapLstsq(fit_intercept=True),
    {"rcond": rconds},
    cv=KFold(5, shuffle=True, random_state=0),
    scoring=metrics.scorer("neg_rmse"),
)
search.fit(X_train, y_train)

print("  rcond   cross-validated RMSE")
for rcond, score in zip(rconds, search.cv_results_["mean_test_score"]):
    print(f"{rcond:7.0e}   {-score:.4f}")
best_rcond, best_rmse = search.best_params_["rcond"], -search.best_score_
print(f"best rcond: {best_rcond:.0e}, RMSE {best_rmse:.4f} (noise {NOISE})")

# %%
# The validation curve: the cross-validated RMSE of every candidate, with its
# spread over the folds, above the noise that no model can beat.

fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
CVCurveDisplay.from_estimator(search, negate_score=True, ax=ax)
ax.axhline(NOISE, color="gray", linestyle="--", label=f"noise ({NOISE})")
ax.set(yscale="log", ylabel="cross-validated RMSE")
ax.legend()
show(fig, "quickstart_validation_curve.png")

# %%
# Held-out systems
# ----------------
#
# The refitted model predicts the test systems as well as the noise allows: an
# RMSE near 0.05.

prediction = search.predict(X_test)
print(f"test RMSE: {metrics.rmse(y_test, prediction):.4f} (noise {NOISE})")

fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
ParityDisplay.from_predictions(y_test, prediction, ax=ax)
ax.set_title(f"{len(X_test)} held-out systems")
show(fig, "quickstart_parity.png")

# %%
# Next: ``fit(X, y, sample_weight=...)`` weighs systems and ``alpha=`` adds a
# ridge penalty (:doc:`/user_guide/weights`); gradients such as forces are fitted
# with the values when X and y have them (:doc:`soap_energies_forces`); and
# :class:`~skmetalstsq.TensorMapLstsqCV` chooses ``rcond`` (and ``alpha``) from
# one singular value decomposition per block and fold
# (:doc:`rcond_cross_validation`).
