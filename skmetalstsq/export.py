"""Fitted linear models as TorchScript-compatible modules on metatensor-torch TensorMaps.

:func:`to_module` turns a fitted :class:`~skmetalstsq.TensorMapLstsq` (or
:class:`~skmetalstsq.TensorMapLstsqCV`, or a fitted Pipeline of
:class:`~skmetalstsq.preprocessing.TensorMapStandardScaler` steps ending with
one) into a ``torch.nn.Module`` that predicts what ``predict`` does, from
:class:`metatensor.torch.TensorMap` features, inside TorchScript: simulation
engines and metatrain can load it with ``torch.jit.load``, and the gradients
of its predictions come from autograd through the features.

metatensor-torch is imported by :func:`to_module` only, so that this module
imports without it.
"""

import functools

import numpy as np
from metatensor import TensorBlock, TensorMap
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._blocks import key_text
from ._torch_maps import as_core, to_torch_map

__all__ = ["to_module"]

_CALLER = "export.to_module"


def to_module(estimator):
    """A ``torch.nn.Module`` that predicts as a fitted estimator, on metatensor-torch maps.

    Parameters
    ----------
    estimator : TensorMapLstsq, TensorMapLstsqCV or sklearn.pipeline.Pipeline
        Fitted on TensorMaps (metatensor-core or metatensor-torch ones). A
        Pipeline must end with one of those estimators; every step before it
        must be a :class:`~skmetalstsq.preprocessing.TensorMapStandardScaler`
        (or ``"passthrough"``): a scaler folds into the weights and intercept
        of each block, ``w' = w / scale`` and ``c' = c - w' @ mean`` (the mean
        only with ``with_mean=True``), as the scaled values are
        ``(x - mean) / scale`` and the scaled gradients ``g / scale``.

    Returns
    -------
    TensorMapLinearModule
        A ``torch.nn.Module`` (a ``metatensor.torch.learn.nn.Module``) whose
        ``forward(features: metatensor.torch.TensorMap) ->
        metatensor.torch.TensorMap`` computes, for each block of ``features``,
        ``values @ weights.T + intercept`` and, for each gradient,
        ``gradient @ weights.T``: the keys, samples and components of
        ``features`` (and of its gradients), the target properties seen in fit.
        It holds copies of the weights and intercepts (as
        metatensor.torch.TensorMaps laid out as ``weights_`` and
        ``intercept_``, in its ``weights`` and ``intercept`` buffers) in the
        estimator's dtype (float64 after a fit on float64 numpy data) and on
        its device; ``module.to(device)`` moves them and keeps their dtype. It
        compiles with ``torch.jit.script`` and round-trips through
        ``torch.jit.save`` / ``torch.jit.load``.

    Raises
    ------
    TypeError
        For an estimator that is not one of those above, a Pipeline step that
        the module cannot express (naming it), or an estimator fitted on plain
        arrays.
    ValueError
        When a scaler lacks a block of the estimator or has other properties.
    sklearn.exceptions.NotFittedError
        For an estimator (or scaler) that is not fitted.
    ImportError
        Without metatensor-torch (``pip install 'skmetalstsq[mtorch]'``).

    Notes
    -----
    As :meth:`~skmetalstsq.TensorMapLstsq.predict`, ``forward`` accepts any
    subset of the keys seen in fit, each block with the properties seen in fit
    (an error names the block otherwise), multiplies in the features' dtype
    (float64 for integer features) and on their device (the weights are
    converted when the module is elsewhere), and adds the intercept to the
    values only. Gradients of gradients are not predicted.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import TensorMapLstsq
    >>> from skmetalstsq.export import to_module
    >>> samples, features = Labels.range("system", 3), Labels.range("feature", 2)
    >>> x = TensorBlock(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), samples, [], features)
    >>> y = TensorBlock(x.values @ [[2.0], [-1.0]] + 0.5, samples, [], Labels.range("e", 1))
    >>> X, Y = TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])
    >>> model = TensorMapLstsq(fit_intercept=True).fit(X, Y)
    >>> module = torch.jit.script(to_module(model))
    >>> import metatensor.torch as mts
    >>> block = mts.TensorBlock(
    ...     torch.tensor([[3.0, 1.0]], dtype=torch.float64),
    ...     mts.Labels.range("system", 1),
    ...     [],
    ...     mts.Labels.range("feature", 2),
    ... )
    >>> predicted = module(mts.TensorMap(mts.Labels.single(), [block]))
    >>> predicted.block(0).values
    tensor([[5.5000]], dtype=torch.float64)
    """
    model, scalers = _model_and_scalers(estimator)
    check_is_fitted(model)
    if hasattr(model, "coef_"):
        raise TypeError(
            f"{_CALLER}: {type(model).__name__} was fitted on plain arrays; the module "
            "predicts metatensor-torch TensorMaps, so fit it on TensorMaps"
        )
    module_class = _module_class()  # the ImportError with the install hint, before torch is used
    weights, intercept = as_core(model.weights_), as_core(model.intercept_)
    blocks = [
        (key, block.values, intercept.block(key).values[:, 0]) for key, block in weights.items()
    ]
    if scalers:
        blocks = [(key, *_folded(key, w, c, scalers, weights)) for key, w, c in blocks]
    weight_blocks, intercept_blocks = [], []
    for (key, w, c), (_, block) in zip(blocks, weights.items()):
        w, c = _torch_like(w, block.values), _torch_like(c, block.values)
        weight_blocks.append(TensorBlock(w, block.samples, [], block.properties))
        intercept_blocks.append(
            TensorBlock(c.reshape(-1, 1), block.samples, [], intercept.block(key).properties)
        )
    return module_class(
        to_torch_map(TensorMap(weights.keys, weight_blocks)),
        to_torch_map(TensorMap(weights.keys, intercept_blocks)),
    )


def _is_linear_model(estimator):
    """Whether ``estimator`` is one of this package's per-block linear models
    (TensorMapLstsq, TensorMapLstsqCV): an estimator offering ``to_module``.

    Told by what the estimator offers rather than by its class, so that the
    estimators' module, whose ``to_module`` calls this one, is not imported here.
    """
    return isinstance(estimator, BaseEstimator) and callable(getattr(estimator, "to_module", None))


def _model_and_scalers(estimator):
    """The linear model and the scalers (in pipeline order) of ``estimator``."""
    from .preprocessing import TensorMapStandardScaler

    accepted = (
        "a fitted TensorMapLstsq, TensorMapLstsqCV, or a Pipeline of "
        "TensorMapStandardScaler steps ending with one"
    )
    if _is_linear_model(estimator):
        return estimator, []
    if not isinstance(estimator, Pipeline):
        raise TypeError(f"{_CALLER}: expected {accepted}, got {type(estimator).__name__}")
    *steps, (last_name, model) = estimator.steps
    if not _is_linear_model(model):
        raise TypeError(
            f"{_CALLER}: the last step of the Pipeline, '{last_name}' "
            f"({type(model).__name__}), must be a TensorMapLstsq or a TensorMapLstsqCV"
        )
    scalers = []
    for name, step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if not isinstance(step, TensorMapStandardScaler):
            raise TypeError(
                f"{_CALLER}: the Pipeline step '{name}' ({type(step).__name__}) cannot be "
                "expressed in the module: only TensorMapStandardScaler steps (and "
                "'passthrough') fold into the weights of the last step"
            )
        check_is_fitted(step)
        scalers.append((name, step))
    return model, scalers


def _as_float64(array):
    if isinstance(array, np.ndarray):
        return array.astype(np.float64)
    return array.detach().cpu().numpy().astype(np.float64)


def _folded(key, weights, intercept, scalers, fitted):
    """Weights and intercept of one block with the scalers folded in (float64 numpy).

    The last scaler is next to the model: it is folded first.
    """
    w, c = _as_float64(weights), _as_float64(intercept)
    features = fitted.block(key).properties
    for name, scaler in reversed(scalers):
        position = scaler.scale_.keys.position(key)
        if position is None:
            raise ValueError(
                f"{_CALLER}: the Pipeline step '{name}' (TensorMapStandardScaler) has no "
                f"block {key_text(key)}, which the last step predicts"
            )
        scale = scaler.scale_.block(position)
        if scale.properties != features:
            raise ValueError(
                f"{_CALLER}: block {key_text(key)} has {len(scale.properties)} properties "
                f"named {list(scale.properties.names)} in the Pipeline step '{name}' "
                f"(TensorMapStandardScaler) but {len(features)} named "
                f"{list(features.names)} in the last step; they must be the same"
            )
        w = w / np.asarray(scale.values[0], dtype=np.float64)
        if scaler.with_mean:
            c = c - w @ np.asarray(scaler.mean_.block(position).values[0], dtype=np.float64)
    return w, c


def _torch_like(array, like):
    """A copy of ``array`` as a torch tensor of the dtype and device of ``like``
    (float64 for numpy ``like``, the dtype of the numpy weights otherwise)."""
    import torch

    if isinstance(like, np.ndarray):
        return torch.tensor(np.asarray(array, dtype=like.dtype))
    if isinstance(array, np.ndarray):
        return torch.tensor(array, dtype=like.dtype, device=like.device)
    return array.detach().to(dtype=like.dtype, device=like.device).clone()


# ---------------------------------------------------------------------------------
# the module, defined once metatensor-torch is imported
# ---------------------------------------------------------------------------------


@functools.cache
def _module_class():
    """The :class:`TensorMapLinearModule` class (imports torch and metatensor-torch)."""
    try:
        import metatensor.torch as mts
        import torch
        from metatensor.torch.learn.nn import Module
    except ImportError as error:
        raise ImportError(
            f"{_CALLER} needs metatensor-torch: pip install 'skmetalstsq[mtorch]'"
        ) from error

    def _names(names: list[str]) -> str:
        # as Python prints a list of str, in TorchScript too
        return "['" + "', '".join(names) + "']"

    class TensorMapLinearModule(Module):
        """Per-block linear predictions on metatensor-torch TensorMaps.

        Made by :func:`skmetalstsq.export.to_module`, which documents it.

        Parameters
        ----------
        weights : metatensor.torch.TensorMap
            One block per key: samples are the target properties, properties
            the features, values of shape (n_targets, n_features).
        intercept : metatensor.torch.TensorMap
            The same keys and samples, one property, values of shape
            (n_targets, 1).
        """

        def __init__(self, weights: mts.TensorMap, intercept: mts.TensorMap):
            super().__init__()
            if len(weights) > 0:
                like = weights.block_by_id(0).values
                # what .to(device) converts the TensorMap buffers to: their own dtype
                self._mts_helper = torch.zeros(0, dtype=like.dtype, device=like.device)
            self.register_buffer("weights", weights)
            self.register_buffer("intercept", intercept)

        def forward(self, features: mts.TensorMap) -> mts.TensorMap:
            """Predict every block of ``features`` (values and gradients)."""
            names = features.keys.names
            if names != self.weights.keys.names:
                raise ValueError(
                    "TensorMapLinearModule.forward: keys are named "
                    + _names(names)
                    + " in features but "
                    + _names(self.weights.keys.names)
                    + " were seen in fit"
                )
            blocks: list[mts.TensorBlock] = []
            for i in range(len(features.keys)):
                key = features.keys.entry(i)
                position = self.weights.keys.position(key)
                text = "("
                for j in range(len(names)):
                    text += ", " if j > 0 else ""
                    text += names[j] + "=" + str(int(key.values[j]))
                text += ")"
                if position is None:
                    raise ValueError(
                        "TensorMapLinearModule.forward: block " + text + " of features "
                        "was not seen in fit"
                    )
                fitted = self.weights.block_by_id(position)
                block = features.block_by_id(i)
                properties = block.properties
                if properties != fitted.properties:
                    raise ValueError(
                        "TensorMapLinearModule.forward: block "
                        + text
                        + " has "
                        + str(len(properties))
                        + " properties named "
                        + _names(properties.names)
                        + " in features but "
                        + str(len(fitted.properties))
                        + " named "
                        + _names(fitted.properties.names)
                        + " were seen in fit (they must be the same, in the same order)"
                    )
                values = block.values
                dtype = values.dtype if values.is_floating_point() else torch.float64
                transposed = fitted.values.to(dtype=dtype, device=values.device).T
                intercept = self.intercept.block_by_id(position).values[:, 0]
                targets = fitted.samples.to(values.device)
                predicted = mts.TensorBlock(
                    values.to(dtype) @ transposed + intercept.to(dtype=dtype, device=values.device),
                    block.samples,
                    block.components,
                    targets,
                )
                for parameter, gradient in block.gradients():
                    predicted.add_gradient(
                        parameter,
                        mts.TensorBlock(
                            gradient.values.to(dtype) @ transposed,
                            gradient.samples,
                            gradient.components,
                            targets,
                        ),
                    )
                blocks.append(predicted)
            return mts.TensorMap(features.keys, blocks)

    TensorMapLinearModule.__module__ = __name__
    TensorMapLinearModule.__qualname__ = "TensorMapLinearModule"
    return TensorMapLinearModule


def __getattr__(name):
    # the module class exists once metatensor-torch is imported (and pickles by name)
    if name == "TensorMapLinearModule":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
