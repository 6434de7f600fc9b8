"""
Quick start
===========

Fit per-block least-squares weights on a TensorMap with components and gradients,
compare them with :func:`metatensor.lstsq`, and choose ``rcond`` by cross-validation
over systems with scikit-learn.

The data is synthetic: two blocks (``o3_lambda`` 0 and 1), samples ``(system, atom)``,
an ``o3_mu`` component axis (of size ``2 * o3_lambda + 1``), and gradients with respect to
positions, as a descriptor and its target would have.
"""

# %%
import metatensor
import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold, cross_validate

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, metrics

rng = np.random.default_rng(0)
N_SYSTEMS, N_ATOMS, N_FEATURES = 40, 3, 12


def make_block(values_shape, components, properties):
    """A block over (system, atom) samples with a positions gradient."""
    samples = Labels(
        ["system", "atom"],
        np.array([[s, a] for s in range(N_SYSTEMS) for a in range(N_ATOMS)]),
    )
    block = TensorBlock(rng.normal(size=values_shape), samples, components, properties)
    gradient_samples = Labels(
        ["sample", "system", "atom"],
        np.array([[i, s, a] for i, (s, _) in enumerate(samples.values) for a in range(N_ATOMS)]),
    )
    block.add_gradient(
        "positions",
        TensorBlock(
            rng.normal(size=(len(gradient_samples), 3, *values_shape[1:])),
            gradient_samples,
            [Labels.range("xyz", 3), *components],
            properties,
        ),
    )
    return block


def make_data():
    """Descriptors X and targets y = X w + noise, block by block."""
    keys = Labels(["o3_lambda"], np.array([[0], [1]]))
    x_blocks, y_blocks = [], []
    for o3_lambda in (0, 1):
        o3_mu = np.arange(-o3_lambda, o3_lambda + 1).reshape(-1, 1)
        components = [Labels(["o3_mu"], o3_mu)]
        n_components = [len(c) for c in components]
        features = Labels.range("feature", N_FEATURES)
        x = make_block(
            (N_SYSTEMS * N_ATOMS, *n_components, N_FEATURES),
            components,
            features,
        )
        w = rng.normal(size=(N_FEATURES, 1))
        target = Labels.range("target", 1)
        y = TensorBlock(
            x.values @ w + 0.05 * rng.normal(size=(*x.values.shape[:-1], 1)),
            x.samples,
            x.components,
            target,
        )
        gradient = x.gradient("positions")
        y.add_gradient(
            "positions",
            TensorBlock(
                gradient.values @ w + 0.05 * rng.normal(size=(*gradient.values.shape[:-1], 1)),
                gradient.samples,
                gradient.components,
                target,
            ),
        )
        x_blocks.append(x)
        y_blocks.append(y)
    return TensorMap(keys, x_blocks), TensorMap(keys, y_blocks)


X, y = make_data()
print(X)

# %%
# Fit and predict
# ---------------
#
# Values and gradients are fitted together, exactly as :func:`metatensor.lstsq`
# stacks them; ``weights_`` has the same layout as its result.

model = TensorMapLstsq(rcond=1e-10).fit(X, y)
reference = metatensor.lstsq(X, y, rcond=1e-10)
print("same weights as metatensor.lstsq:", metatensor.allclose(model.weights_, reference))

prediction = model.predict(X)
for key, block in prediction.items():
    error = block.values - y.block(key).values
    gradient_error = block.gradient("positions").values - y.block(key).gradient("positions").values
    print(
        f"block o3_lambda={key['o3_lambda']}: values RMSE {np.sqrt(np.mean(error**2)):.4f}, "
        f"gradient RMSE {np.sqrt(np.mean(gradient_error**2)):.4f}"
    )
print(f"pooled R^2 of the values: {model.score(X, y):.4f}")

# %%
# Cross-validate over systems
# ---------------------------
#
# :class:`~skmetalstsq.IndexedTensorMap` lets scikit-learn split the data by
# system: every block and every gradient row follows its system.

Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
cv = KFold(5, shuffle=True, random_state=0)
results = cross_validate(
    TensorMapLstsq(rcond=1e-10),
    Xi,
    yi,
    cv=cv,
    scoring={
        "r2": metrics.scorer("r2"),
        "neg_rmse": metrics.scorer("neg_rmse"),
        "neg_force_rmse": metrics.scorer("neg_rmse", gradient="positions"),
    },
)
print(f"test R^2 per fold: {np.round(results['test_r2'], 4)}")
print(f"test values RMSE: {-results['test_neg_rmse'].mean():.4f}")
print(f"test gradient RMSE: {-results['test_neg_force_rmse'].mean():.4f}")

search = GridSearchCV(
    TensorMapLstsq(),
    {"rcond": np.logspace(-12, -1, 12)},
    cv=cv,
    scoring=metrics.scorer("neg_rmse", gradient="positions"),
)
search.fit(Xi, yi)
print(f"best rcond: {search.best_params_['rcond']:.0e}, gradient RMSE {-search.best_score_:.4f}")
