"""Fitted linear models as TorchScript-compatible modules on metatensor-torch TensorMaps.

:func:`to_module` turns a fitted :class:`~skmetalstsq.TensorMapLstsq` (or
:class:`~skmetalstsq.TensorMapLstsqCV`, :class:`~skmetalstsq.TensorMapBayesianRidge`,
or a fitted Pipeline of :class:`~skmetalstsq.preprocessing.TensorMapStandardScaler`
steps ending with one) into a ``torch.nn.Module`` that predicts what ``predict``
does, from :class:`metatensor.torch.TensorMap` features, inside TorchScript:
simulation engines and metatrain can load it with ``torch.jit.load``, and the
gradients of its predictions come from autograd through the features. The
module of a TensorMapBayesianRidge also gives the std of its predictions and a
committee drawn from the posterior.

metatensor-torch is imported by :func:`to_module` only, so that this module
imports without it.
"""

import functools
from numbers import Integral

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._blocks import key_text, key_tuple
from ._torch_maps import as_core, to_torch_map

__all__ = ["to_module"]

_CALLER = "export.to_module"


def to_module(estimator, *, n_ensemble=0, random_state=None):
    """A ``torch.nn.Module`` that predicts as a fitted estimator, on metatensor-torch maps.

    Parameters
    ----------
    estimator : TensorMapLstsq, TensorMapLstsqCV, TensorMapBayesianRidge or Pipeline
        Fitted on TensorMaps (metatensor-core or metatensor-torch ones). A
        Pipeline must end with one of those estimators; every step before it
        must be a :class:`~skmetalstsq.preprocessing.TensorMapStandardScaler`
        (or ``"passthrough"``): a scaler folds into the weights and intercept
        of each block, ``w' = w / scale`` and ``c' = c - w' @ mean`` (the mean
        only with ``with_mean=True``), as the scaled values are
        ``(x - mean) / scale`` and the scaled gradients ``g / scale``; for a
        TensorMapBayesianRidge, the posterior covariance folds as
        ``sigma' = sigma / (scale scale^T)``, the centre of the value rows as
        ``offset' = mean + scale * offset``, and each member of the ensemble as
        the weights do.
    n_ensemble : int >= 0, default=0
        Only for a TensorMapBayesianRidge: the number of weight sets drawn
        from the posterior at export, exactly as
        :meth:`~skmetalstsq.TensorMapBayesianRidge.sample_y` draws them with
        ``n_samples=n_ensemble`` and the same ``random_state`` (both call
        :meth:`~skmetalstsq.TensorMapBayesianRidge.sample_weights`).
    random_state : None, int or numpy.random.RandomState, default=None
        Seeds the draws of the ensemble.

    Returns
    -------
    TensorMapLinearModule or TensorMapBayesianModule
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

        For a TensorMapBayesianRidge, a ``TensorMapBayesianModule``: its
        ``forward`` gives the posterior mean as above, and two more methods,
        kept by TorchScript, take the same features:

        - ``std(features)``: what ``predict(X, return_std=True)`` gives as std,
          the standard deviation of a new observation of each value and
          gradient row (each force component its own),
          ``sqrt(x_c^T sigma_ x_c + noise)``, with value rows centred on
          ``X_offset_`` (with an intercept) and the noise of a row of that kind
          (``1 / alpha_`` over ``gradient_weights[parameter]`` for gradient
          rows, ``1 / alpha_`` plus the intercept's variance
          ``1 / (alpha_ * value_weight_sum_)`` for value rows);
        - ``ensemble(features)``: the predictions of the ``n_ensemble``
          members, what ``sample_y(X, n_ensemble, random_state)`` gives: the
          layout of ``forward``'s with one more component, last, named
          ``"sample"`` (values 0 to n_ensemble - 1), in the values and every
          gradient. metatomic's ``energy_ensemble`` output numbers the members
          as properties instead: ``output.components_to_properties("sample")``
          then metatensor's ``remove_dimension`` and ``rename_dimension`` make
          it (see the example :ref:`sphx_glr_auto_examples_bayesian_md.py`).

        The std and the ensemble are computed as the mean is, in the features'
        dtype and on their device, from the buffers ``sigma`` (``sigma_``),
        ``offset`` (the centre of the value rows), ``noise`` (the noise
        variances of a value row and of a gradient row of unit weight),
        ``ensemble_weights`` and ``ensemble_intercept`` (the members, a
        component ``"sample"`` before the features), all in the estimator's
        dtype; ``n_ensemble`` is an attribute. ``ensemble`` raises a
        ``ValueError`` (a ``torch.jit.Error`` once scripted) when the module
        was exported with ``n_ensemble=0``.

    Raises
    ------
    TypeError
        For an estimator that is not one of those above, a Pipeline step that
        the module cannot express (naming it), an estimator fitted on plain
        arrays, an ``n_ensemble`` that is not an int, or an ``n_ensemble`` for
        an estimator without a posterior.
    ValueError
        When a scaler lacks a block of the estimator or has other properties,
        or for a negative ``n_ensemble``.
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

    A TensorMapBayesianRidge gives the std of ``predict(X, return_std=True)`` and
    the committee of ``sample_y``:

    >>> from skmetalstsq import TensorMapBayesianRidge
    >>> bayes = TensorMapBayesianRidge().fit(X, Y)
    >>> module = torch.jit.script(to_module(bayes, n_ensemble=4, random_state=0))
    >>> block = mts.TensorBlock(
    ...     torch.tensor([[3.0, 1.0]], dtype=torch.float64),
    ...     mts.Labels.range("system", 1),
    ...     [],
    ...     mts.Labels.range("feature", 2),
    ... )
    >>> features = mts.TensorMap(mts.Labels.single(), [block])
    >>> _, std = bayes.predict(features, return_std=True)
    >>> torch.allclose(module.std(features).block(0).values, std.block(0).values)
    True
    >>> members = bayes.sample_y(features, n_samples=4, random_state=0)
    >>> torch.allclose(module.ensemble(features).block(0).values, members.block(0).values)
    True
    >>> members.block(0).values.shape  # samples, members, targets
    torch.Size([1, 4, 1])
    """
    model, scalers = _model_and_scalers(estimator)
    bayesian = _is_bayesian(model)
    if isinstance(n_ensemble, (bool, np.bool_)) or not isinstance(n_ensemble, Integral):
        raise TypeError(f"{_CALLER}: n_ensemble must be an int >= 0, got {n_ensemble!r}")
    if n_ensemble < 0:
        raise ValueError(f"{_CALLER}: n_ensemble must be an int >= 0, got {n_ensemble!r}")
    if n_ensemble and not bayesian:
        raise TypeError(
            f"{_CALLER}: n_ensemble={n_ensemble} draws weights from a posterior, which "
            f"{type(model).__name__} does not have: use a TensorMapBayesianRidge"
        )
    check_is_fitted(model)
    if hasattr(model, "coef_"):
        raise TypeError(
            f"{_CALLER}: {type(model).__name__} was fitted on plain arrays; the module "
            "predicts metatensor-torch TensorMaps, so fit it on TensorMaps"
        )
    # the ImportError with the install hint, before torch is used
    module_class = _bayesian_module_class() if bayesian else _module_class()
    weights, intercept = as_core(model.weights_), as_core(model.intercept_)
    steps = {key_tuple(key): _scaler_steps(key, scalers, weights) for key in weights.keys}
    maps = _Maps(weights)
    folded = {
        name: _folded(weights.block(i).values, intercept.block(i).values[:, 0], steps[name])
        for i, name in enumerate(maps.names)
    }
    mean = (
        maps.torch_map({name: w for name, (w, _) in folded.items()}),
        maps.torch_map({name: c[:, None] for name, (_, c) in folded.items()}, intercept),
    )
    if not bayesian:
        return module_class(*mean)
    gradient_weights = {
        str(name): float(weight) for name, weight in (model.gradient_weights or {}).items()
    }
    return module_class(
        *mean,
        *_posterior_maps(model, steps, maps),
        *_ensemble_maps(model, n_ensemble, random_state, steps, maps, intercept),
        gradient_weights,
    )


class _Maps:
    """Per-key arrays as metatensor-torch maps with the keys of the fitted weights,
    in the weights' dtype and on their device."""

    def __init__(self, weights):
        self.weights = weights
        self.names = [key_tuple(key) for key in weights.keys]

    def torch_map(self, values, like=None, components=None, properties=None):
        """``values`` (key tuple -> array) as a metatensor-torch map.

        Samples and properties are those of the blocks of ``like`` (default:
        the weights), unless ``properties`` (Labels) replaces them;
        ``components`` (key tuple -> list of Labels) default to none.
        """
        like = self.weights if like is None else like
        blocks = []
        for i, name in enumerate(self.names):
            block = like.block(i)
            blocks.append(
                TensorBlock(
                    _torch_like(values[name], self.weights.block(i).values),
                    block.samples,
                    [] if components is None else components[name],
                    block.properties if properties is None else properties,
                )
            )
        return to_torch_map(TensorMap(self.weights.keys, blocks))


#: the properties of the noise map of a TensorMapBayesianModule
_NOISE = Labels(["noise"], np.array([[0], [1]], dtype=np.int32))


def _is_bayesian(estimator):
    """Whether ``estimator`` has a posterior to draw from (a TensorMapBayesianRidge),
    told by what it offers, as :func:`_is_linear_model` does."""
    return callable(getattr(estimator, "sample_weights", None))


def _posterior_maps(model, steps, maps):
    """The maps of a TensorMapBayesianRidge's std, with its scalers folded in.

    ``sigma``: values (n_targets, n_features, n_features), the middle axis a
    component named ``"covariance_row"``; ``offset``: the centre of the value
    rows, values (1, n_features); ``noise``: values (n_targets, 2), the noise
    variance of a value row (the intercept's variance included) and that of a
    gradient row of unit weight, ``1 / alpha_``.
    """
    sigma, offset, noise, rows = {}, {}, {}, {}
    for i, name in enumerate(maps.names):
        n_features = len(maps.weights.block(i).properties)
        alpha = np.asarray(model.alpha_[name], dtype=np.float64)
        centre = np.zeros(n_features)
        if model.fit_intercept:
            centre = np.asarray(model.X_offset_[name], dtype=np.float64)
        covariance = np.asarray(model.sigma_[name], dtype=np.float64)
        for scale, mean in steps[name]:
            covariance = covariance / np.outer(scale, scale)
            centre = scale * centre + (0.0 if mean is None else mean)
        value_noise = np.float64(1.0)
        if model.fit_intercept:
            with np.errstate(divide="ignore"):
                value_noise += np.float64(1.0) / model.value_weight_sum_[name]
        noise[name] = np.stack([value_noise / alpha, 1.0 / alpha], axis=1)
        sigma[name], offset[name] = covariance, centre.reshape(1, -1)
        rows[name] = [Labels.range("covariance_row", n_features)]
    # the offset map's blocks: one row, the features as properties
    one_row = TensorMap(
        maps.weights.keys,
        [
            TensorBlock(offset[name], Labels.range("_", 1), [], maps.weights.block(i).properties)
            for i, name in enumerate(maps.names)
        ],
    )
    return (
        maps.torch_map(sigma, components=rows),
        maps.torch_map(offset, one_row),
        maps.torch_map(noise, properties=_NOISE),
    )


def _ensemble_maps(model, n_ensemble, random_state, steps, maps, intercept):
    """The weights and intercepts of ``n_ensemble`` members drawn from the posterior
    (by the estimator's ``sample_weights``, as ``sample_y`` draws them), with the
    scalers folded in: values (n_targets, n_ensemble, n_features) and
    (n_targets, n_ensemble, 1), the middle axis a component named ``"sample"``;
    maps without blocks for ``n_ensemble=0``."""
    if n_ensemble == 0:
        empty = TensorMap(Labels.empty(maps.weights.keys.names), [])
        return to_torch_map(empty), to_torch_map(empty)
    drawn, drawn_intercepts = model.sample_weights(n_ensemble, random_state)
    weights, intercepts, components = {}, {}, {}
    for i, name in enumerate(maps.names):
        w, c = drawn.block(i).values, drawn_intercepts.block(i).values[..., 0]
        w, c = _folded(w, c, steps[name])
        weights[name], intercepts[name] = w, c[..., None]
        components[name] = list(drawn.block(i).components)
    return (
        maps.torch_map(weights, components=components),
        maps.torch_map(intercepts, intercept, components=components),
    )


def _is_linear_model(estimator):
    """Whether ``estimator`` is one of this package's per-block linear models
    (TensorMapLstsq, TensorMapLstsqCV, TensorMapBayesianRidge): an estimator
    offering ``to_module``.

    Told by what the estimator offers rather than by its class, so that the
    estimators' module, whose ``to_module`` calls this one, is not imported here.
    """
    return isinstance(estimator, BaseEstimator) and callable(getattr(estimator, "to_module", None))


def _model_and_scalers(estimator):
    """The linear model and the scalers (in pipeline order) of ``estimator``."""
    from .preprocessing import TensorMapStandardScaler

    accepted = (
        "a fitted TensorMapLstsq, TensorMapLstsqCV, TensorMapBayesianRidge, or a "
        "Pipeline of TensorMapStandardScaler steps ending with one"
    )
    if _is_linear_model(estimator):
        return estimator, []
    if not isinstance(estimator, Pipeline):
        raise TypeError(f"{_CALLER}: expected {accepted}, got {type(estimator).__name__}")
    *steps, (last_name, model) = estimator.steps
    if not _is_linear_model(model):
        raise TypeError(
            f"{_CALLER}: the last step of the Pipeline, '{last_name}' "
            f"({type(model).__name__}), must be a TensorMapLstsq, a TensorMapLstsqCV or a "
            "TensorMapBayesianRidge"
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


def _scaler_steps(key, scalers, fitted):
    """``(scale, mean or None)`` of each scaler for the block ``key``, float64 numpy,
    in the order they fold: the last scaler, next to the model, first."""
    features = fitted.block(key).properties
    steps = []
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
        mean = _as_float64(scaler.mean_.block(position).values[0]) if scaler.with_mean else None
        steps.append((_as_float64(scale.values[0]), mean))
    return steps


def _folded(weights, intercept, steps):
    """Weights (..., n_features) and intercepts (...) with the scalers' ``steps``
    folded in, float64 numpy: ``w' = w / scale``, ``c' = c - w' @ mean``."""
    w, c = _as_float64(weights), _as_float64(intercept)
    for scale, mean in steps:
        w = w / scale
        if mean is not None:
            c = c - w @ mean
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
    # TorchScript resolves a function's annotations from its closure, which holds
    # only the names its body uses, then from this module's globals
    globals().update(mts=mts, torch=torch)

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
            positions = self._positions(features, "TensorMapLinearModule.forward")
            blocks: list[mts.TensorBlock] = []
            for i in range(len(positions)):
                fitted = self.weights.block_by_id(positions[i])
                block = features.block_by_id(i)
                values = block.values
                dtype = self._dtype(values)
                transposed = fitted.values.to(dtype=dtype, device=values.device).T
                intercept = self.intercept.block_by_id(positions[i]).values[:, 0]
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

        def _dtype(self, values: torch.Tensor) -> torch.dtype:
            """Predictions are made in the features' dtype, float64 for integers."""
            return values.dtype if values.is_floating_point() else torch.float64

        def _positions(self, features: mts.TensorMap, caller: str) -> list[int]:
            """The position of each block of ``features`` among the fitted blocks,
            after checking its key and properties (errors name ``caller``)."""
            names = features.keys.names
            if names != self.weights.keys.names:
                raise ValueError(
                    caller
                    + ": keys are named "
                    + _names(names)
                    + " in features but "
                    + _names(self.weights.keys.names)
                    + " were seen in fit"
                )
            positions: list[int] = []
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
                        caller + ": block " + text + " of features was not seen in fit"
                    )
                fitted = self.weights.block_by_id(position)
                properties = features.block_by_id(i).properties
                if properties != fitted.properties:
                    raise ValueError(
                        caller
                        + ": block "
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
                positions.append(position)
            return positions

    TensorMapLinearModule.__module__ = __name__
    TensorMapLinearModule.__qualname__ = "TensorMapLinearModule"
    return TensorMapLinearModule


@functools.cache
def _bayesian_module_class():
    """The :class:`TensorMapBayesianModule` class (imports torch and metatensor-torch)."""
    base = _module_class()
    import metatensor.torch as mts
    import torch

    def _rows_std(rows: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # sqrt(x^T sigma_j x + noise_j) of every row x (the last axis) and target j
        n_features = rows.shape[-1]
        flat = rows.reshape(-1, n_features)
        quadratic = ((flat @ sigma) * flat).sum(-1)  # (n_targets, n_rows)
        shape = list(rows.shape[:-1])
        shape.append(sigma.shape[0])
        return (quadratic + noise.reshape(-1, 1)).sqrt().T.reshape(shape)

    def _members(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # rows @ w_sj for every member s and target j: (..., n_members, n_targets)
        n_targets, n_members, n_features = weights.shape
        flat = weights.transpose(0, 1).reshape(n_members * n_targets, n_features)
        shape = list(rows.shape[:-1])
        shape.append(n_members)
        shape.append(n_targets)
        return (rows.reshape(-1, n_features) @ flat.T).reshape(shape)

    class TensorMapBayesianModule(base):
        """The mean, std and committee of a TensorMapBayesianRidge on metatensor-torch maps.

        Made by :func:`skmetalstsq.export.to_module`, which documents it.

        Parameters
        ----------
        weights, intercept : metatensor.torch.TensorMap
            The posterior mean, as for :class:`TensorMapLinearModule`.
        sigma : metatensor.torch.TensorMap
            Values (n_targets, n_features, n_features): the posterior covariance.
        offset : metatensor.torch.TensorMap
            Values (1, n_features): the centre of the value rows.
        noise : metatensor.torch.TensorMap
            Values (n_targets, 2): the noise variance of a value row and of a
            gradient row of unit weight.
        ensemble_weights, ensemble_intercept : metatensor.torch.TensorMap
            Values (n_targets, n_members, n_features) and (n_targets,
            n_members, 1), the members a component named ``"sample"``.
        gradient_weights : dict
            ``{parameter: weight}`` of the fit (1 for the others).
        """

        gradient_weights: dict[str, float]

        def __init__(
            self,
            weights: mts.TensorMap,
            intercept: mts.TensorMap,
            sigma: mts.TensorMap,
            offset: mts.TensorMap,
            noise: mts.TensorMap,
            ensemble_weights: mts.TensorMap,
            ensemble_intercept: mts.TensorMap,
            gradient_weights: dict[str, float],
        ):
            super().__init__(weights, intercept)
            self.register_buffer("sigma", sigma)
            self.register_buffer("offset", offset)
            self.register_buffer("noise", noise)
            self.register_buffer("ensemble_weights", ensemble_weights)
            self.register_buffer("ensemble_intercept", ensemble_intercept)
            self.gradient_weights = dict(gradient_weights)
            self.n_ensemble = 0
            if len(ensemble_weights) > 0:
                self.n_ensemble = int(ensemble_weights.block_by_id(0).values.shape[1])

        @torch.jit.export
        def std(self, features: mts.TensorMap) -> mts.TensorMap:
            """The std of a new observation of every value and gradient row of
            ``features``, as ``predict(X, return_std=True)`` gives it."""
            positions = self._positions(features, "TensorMapBayesianModule.std")
            blocks: list[mts.TensorBlock] = []
            for i in range(len(positions)):
                block = features.block_by_id(i)
                values = block.values
                dtype, device = self._dtype(values), values.device
                sigma = self.sigma.block_by_id(positions[i]).values.to(dtype=dtype, device=device)
                noise = self.noise.block_by_id(positions[i]).values.to(dtype=dtype, device=device)
                offset = self.offset.block_by_id(positions[i]).values[0]
                targets = self.weights.block_by_id(positions[i]).samples.to(device)
                centred = values.to(dtype) - offset.to(dtype=dtype, device=device)
                std = mts.TensorBlock(
                    _rows_std(centred, sigma, noise[:, 0]), block.samples, block.components, targets
                )
                for parameter, gradient in block.gradients():
                    weight = 1.0
                    if parameter in self.gradient_weights:
                        weight = self.gradient_weights[parameter]
                    std.add_gradient(
                        parameter,
                        mts.TensorBlock(
                            _rows_std(gradient.values.to(dtype), sigma, noise[:, 1] / weight),
                            gradient.samples,
                            gradient.components,
                            targets,
                        ),
                    )
                blocks.append(std)
            return mts.TensorMap(features.keys, blocks)

        @torch.jit.export
        def ensemble(self, features: mts.TensorMap) -> mts.TensorMap:
            """The predictions of every member, as ``sample_y(X, n_ensemble,
            random_state)`` gives them: one more component, last, ``"sample"``."""
            if self.n_ensemble == 0:
                raise ValueError(
                    "TensorMapBayesianModule.ensemble: the module was exported without "
                    "an ensemble; to_module(estimator, n_ensemble=n, random_state=...) "
                    "draws n members"
                )
            positions = self._positions(features, "TensorMapBayesianModule.ensemble")
            blocks: list[mts.TensorBlock] = []
            for i in range(len(positions)):
                block = features.block_by_id(i)
                values = block.values
                dtype, device = self._dtype(values), values.device
                drawn = self.ensemble_weights.block_by_id(positions[i])
                weights = drawn.values.to(dtype=dtype, device=device)
                intercept = self.ensemble_intercept.block_by_id(positions[i]).values[:, :, 0]
                intercept = intercept.to(dtype=dtype, device=device).T  # (members, targets)
                targets = self.weights.block_by_id(positions[i]).samples.to(device)
                components = block.components
                components.append(drawn.components[0].to(device))
                members = mts.TensorBlock(
                    _members(values.to(dtype), weights) + intercept,
                    block.samples,
                    components,
                    targets,
                )
                for parameter, gradient in block.gradients():
                    gradient_components = gradient.components
                    gradient_components.append(drawn.components[0].to(device))
                    members.add_gradient(
                        parameter,
                        mts.TensorBlock(
                            _members(gradient.values.to(dtype), weights),
                            gradient.samples,
                            gradient_components,
                            targets,
                        ),
                    )
                blocks.append(members)
            return mts.TensorMap(features.keys, blocks)

    TensorMapBayesianModule.__module__ = __name__
    TensorMapBayesianModule.__qualname__ = "TensorMapBayesianModule"
    return TensorMapBayesianModule


def __getattr__(name):
    # the module class exists once metatensor-torch is imported (and pickles by name)
    if name == "TensorMapLinearModule":
        return _module_class()
    if name == "TensorMapBayesianModule":
        return _bayesian_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
