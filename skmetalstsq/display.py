"""Pictures of fits on TensorMaps, following scikit-learn's Display API.

Each display is a class whose ``__init__`` stores the data to draw, whose
:meth:`plot` draws it on a matplotlib Axes (a new one by default) and returns the
display, with the Axes in ``ax_``, its Figure in ``figure_`` and the artists drawn
in attributes ending in ``_``; classmethods build the data from a fitted estimator
or from results and plot it at once, as ``sklearn.metrics.PredictionErrorDisplay``
and ``sklearn.model_selection.ValidationCurveDisplay`` do.

- :class:`ParityDisplay`: predicted against true values (or a gradient) of a
  TensorMap target, one colour per block or all blocks pooled, with the RMSE and
  MAE of :mod:`skmetalstsq.metrics` in the legend.
- :class:`CVCurveDisplay`: the cross-validated score against ``rcond`` (or
  ``alpha``) from the ``cv_results_`` of :class:`~skmetalstsq.TensorMapLstsqCV` or
  of a scikit-learn search, the chosen candidate marked.
- :class:`SingularValuesDisplay`: the singular values of each block of a fitted
  :class:`~skmetalstsq.TensorMapLstsq`, relative to the largest, with the rcond
  cut-off.
- :class:`UncertaintyCalibrationDisplay`: observed errors against the predicted
  standard deviations of a :class:`~skmetalstsq.TensorMapBayesianRidge` (binned,
  with the ideal line) and the coverage of its 68 % and 95 % intervals.

matplotlib is only imported when something is drawn; it is not a dependency of
the package.

What a log axis cannot show (a candidate ``rcond=None``, whose cut-off depends
on the rows of each block and fold; a zero; a block without singular values) is
left out of the picture, and said so in a note written in the Axes, also kept in
the display's ``notes_``.
"""

import inspect
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
from metatensor import Labels, TensorMap
from sklearn.exceptions import NotFittedError
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils._plotting import _validate_score_name, _validate_style_kwargs

from ._backends import to_numpy
from ._indexed import unwrap
from ._solvers import default_rcond
from .metrics import TensorMapScorer, _paired_rows, mae, rmse

__all__ = [
    "CVCurveDisplay",
    "ParityDisplay",
    "SingularValuesDisplay",
    "UncertaintyCalibrationDisplay",
]


# ---------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------


def _block_name(names, values):
    """A block key written as ``name=value, name=value`` for legends and notes.

    The key of ``Labels.single()`` (one dimension ``_``) is the empty string:
    matplotlib leaves labels starting with ``_`` out of legends.
    """
    if list(names) == ["_"]:
        return ""
    return ", ".join(f"{n}={int(v)}" for n, v in zip(names, values))


def _axes(ax):
    """``ax``, or the Axes of a new figure when it is None.

    A new figure has matplotlib's constrained layout, which keeps the axis labels
    and the wide tick labels of a log axis (``10^-14``) inside the figure at any
    figure size. An Axes given is drawn on as it is: its figure's layout is the
    caller's.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(layout="constrained")
    return ax


def _write_notes(ax, notes):
    """Write ``notes`` in the lower left corner of ``ax``; the Text, or None."""
    if not notes:
        return None
    return ax.text(
        0.01,
        0.01,
        "\n".join(notes),
        transform=ax.transAxes,
        horizontalalignment="left",
        verticalalignment="bottom",
        fontsize="small",
        color="dimgray",
    )


def _format(value):
    """A parameter value as legends write it: ``1e-06``, ``2.98e-09``, ``None``, ``True``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Real) and not isinstance(value, bool):
        return f"{value:.3g}"
    return str(value)


#: metric names written in capitals in axis labels, as the legends write them
_ACRONYMS = {"rmse": "RMSE", "mae": "MAE", "mse": "MSE", "r2": "R2"}


def _score_label(scoring, negate_score):
    """The y axis label of the scores of ``scoring`` (a scorer's name, or None).

    scikit-learn's ``ValidationCurveDisplay`` convention (a ``neg_`` prefix dropped
    when the scores are negated back, written ``Negative`` otherwise; underscores
    to spaces; a capital first letter), with the metric names of
    :mod:`skmetalstsq.metrics` in capitals: ``"neg_rmse"`` negated reads ``"RMSE"``,
    as scikit-learn writes ``"neg_root_mean_squared_error"`` as
    ``"Root mean squared error"``.
    """
    label = _validate_score_name(None, scoring, negate_score)
    return " ".join(_ACRONYMS.get(word.lower(), word) for word in label.split(" "))


# ---------------------------------------------------------------------------------
# ParityDisplay
# ---------------------------------------------------------------------------------


class ParityDisplay:
    """Predicted against true values of a TensorMap target: a parity plot.

    Every entry of every block is a point, the true value on the x axis and the
    predicted one on the y axis: each block is seen as a (rows, properties)
    matrix, components folded into rows, and all its properties are pooled. The
    identity line ``predicted == true`` is drawn; the legend gives the RMSE and
    MAE of each scatter.

    Use :meth:`from_estimator` or :meth:`from_predictions` to make one; all
    parameters are stored as attributes.

    Parameters
    ----------
    y_true, y_pred : dict of str to numpy.ndarray
        For each scatter (a block, named ``"name=value, ..."`` after its key, or
        ``"all blocks"``), the true and the predicted values, 1-D arrays of the
        same length.
    rmse, mae : dict of str to float
        The errors of each scatter, written in the legend.
    gradient : str or None, default=None
        The gradient compared (None: the values), for the axis labels.

    Attributes
    ----------
    scatter_ : list of matplotlib.collections.PathCollection
        One scatter per entry of ``y_true``, in its order.
    line_ : matplotlib.lines.Line2D
        The identity line.
    ax_ : matplotlib.axes.Axes
        The Axes drawn on.
    figure_ : matplotlib.figure.Figure
        The Figure of ``ax_``.

    See Also
    --------
    sklearn.metrics.PredictionErrorDisplay : the same picture for arrays.
    skmetalstsq.metrics.rmse : the pooled RMSE of the legend.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skmetalstsq.display import ParityDisplay
    >>> display = ParityDisplay(
    ...     y_true={"center_type=1": np.array([0.0, 1.0, 2.0])},
    ...     y_pred={"center_type=1": np.array([0.1, 0.9, 2.0])},
    ...     rmse={"center_type=1": 0.08},
    ...     mae={"center_type=1": 0.07},
    ... ).plot()
    >>> [text.get_text() for text in display.ax_.get_legend().get_texts()]
    ['center_type=1: RMSE 0.08, MAE 0.07']
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")
    """

    def __init__(self, *, y_true, y_pred, rmse, mae, gradient=None):
        self.y_true = y_true
        self.y_pred = y_pred
        self.rmse = rmse
        self.mae = mae
        self.gradient = gradient

    def plot(self, ax=None, *, scatter_kwargs=None, line_kwargs=None):
        """Draw the scatters, the identity line and the legend.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        scatter_kwargs : dict, default=None
            Keyword arguments of every ``Axes.scatter`` call (without a
            ``color``, each scatter takes the next colour of the cycle).
        line_kwargs : dict, default=None
            Keyword arguments of the ``Axes.plot`` call of the identity line.

        Returns
        -------
        display : ParityDisplay
            This display, with ``ax_``, ``figure_``, ``scatter_`` and ``line_`` set.
        """
        check_matplotlib_support(f"{self.__class__.__name__}.plot")
        scatter_kwargs = _validate_style_kwargs({"s": 10, "alpha": 0.6}, scatter_kwargs or {})
        line_kwargs = _validate_style_kwargs(
            {"color": "black", "alpha": 0.7, "linestyle": "--"}, line_kwargs or {}
        )
        ax = _axes(ax)

        self.scatter_ = []
        for name, true in self.y_true.items():
            label = f"RMSE {self.rmse[name]:.3g}, MAE {self.mae[name]:.3g}"
            label = f"{name}: {label}" if name else label
            self.scatter_.append(
                ax.scatter(
                    np.asarray(true), np.asarray(self.y_pred[name]), label=label, **scatter_kwargs
                )
            )
        drawn = [np.asarray(a).ravel() for d in (self.y_true, self.y_pred) for a in d.values()]
        drawn = np.concatenate(drawn) if drawn else np.empty(0)
        low, high = (float(drawn.min()), float(drawn.max())) if drawn.size else (0.0, 1.0)
        (self.line_,) = ax.plot([low, high], [low, high], **line_kwargs)

        what = "values" if self.gradient is None else f"'{self.gradient}' gradient"
        ax.set(xlabel=f"True {what}", ylabel=f"Predicted {what}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend()
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        gradient=None,
        per_block=True,
        sample_weight=None,
        ax=None,
        scatter_kwargs=None,
        line_kwargs=None,
    ):
        """Parity plot of a fitted estimator's predictions on ``X`` against ``y``.

        Parameters
        ----------
        estimator : fitted estimator
            A :class:`~skmetalstsq.TensorMapLstsq`, or anything (a Pipeline
            ending in one) whose ``predict(X)`` returns the layout of ``y``.
        X : metatensor.TensorMap or IndexedTensorMap
            The features to predict from.
        y : metatensor.TensorMap or IndexedTensorMap
            The true targets.
        gradient, per_block, sample_weight, ax, scatter_kwargs, line_kwargs :
            As in :meth:`from_predictions`.

        Returns
        -------
        display : ParityDisplay

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from metatensor import Labels, TensorBlock, TensorMap
        >>> from skmetalstsq import TensorMapLstsq
        >>> from skmetalstsq.display import ParityDisplay
        >>> rng = np.random.default_rng(0)
        >>> samples = Labels.range("system", 20)
        >>> x = TensorBlock(rng.normal(size=(20, 3)), samples, [], Labels.range("feature", 3))
        >>> energy = x.values @ [[1.0], [2.0], [0.5]] + 0.1 * rng.normal(size=(20, 1))
        >>> y = TensorBlock(energy, samples, [], Labels.range("energy", 1))
        >>> keys = Labels(["center_type"], np.array([[1]]))
        >>> X, Y = TensorMap(keys, [x]), TensorMap(keys, [y])
        >>> model = TensorMapLstsq().fit(X, Y)
        >>> display = ParityDisplay.from_estimator(model, X, Y)
        >>> len(display.scatter_), display.ax_.get_xlabel()
        (1, 'True values')
        >>> import matplotlib.pyplot as plt
        >>> plt.close("all")
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        caller = f"{cls.__name__}.from_estimator"
        _check_per_block(per_block, caller)
        y_pred = estimator.predict(X)
        display = cls(**_parity_data(y, y_pred, gradient, per_block, sample_weight, caller))
        return display.plot(ax=ax, scatter_kwargs=scatter_kwargs, line_kwargs=line_kwargs)

    @classmethod
    def from_predictions(
        cls,
        y_true,
        y_pred,
        *,
        gradient=None,
        per_block=True,
        sample_weight=None,
        ax=None,
        scatter_kwargs=None,
        line_kwargs=None,
    ):
        """Parity plot of predicted against true TensorMaps.

        Parameters
        ----------
        y_true, y_pred : metatensor.TensorMap or IndexedTensorMap
            The same keys (in any order) and, in each block, the same samples,
            components and properties (in any order), as
            :func:`skmetalstsq.metrics.rmse` compares them; numpy or torch
            arrays.
        gradient : str or None, default=None
            None draws the values; a gradient parameter (e.g. ``"positions"``)
            draws that gradient.
        per_block : bool, default=True
            True draws one scatter per block, in the order of ``y_true``'s keys,
            labelled by its key with its own RMSE and MAE; False draws every
            block as one scatter, ``"all blocks"``, with the pooled errors.
        sample_weight : None, array-like, TensorMap or IndexedTensorMap, default=None
            Row weights, the kinds :func:`skmetalstsq.metrics.rmse` accepts: they
            weigh the errors of the legend, and rows of weight 0 are not drawn.
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        scatter_kwargs, line_kwargs : dict, default=None
            As in :meth:`plot`.

        Returns
        -------
        display : ParityDisplay

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from metatensor import Labels, TensorBlock, TensorMap
        >>> from skmetalstsq.display import ParityDisplay
        >>> def energies(values):
        ...     samples = Labels.range("system", len(values))
        ...     block = TensorBlock(np.array(values)[:, None], samples, [], Labels.range("e", 1))
        ...     return TensorMap(Labels(["center_type"], np.array([[6]])), [block])
        >>> display = ParityDisplay.from_predictions(energies([1.0, 2.0]), energies([1.0, 4.0]))
        >>> display.scatter_[0].get_label()
        'center_type=6: RMSE 1.41, MAE 1'
        >>> import matplotlib.pyplot as plt
        >>> plt.close("all")
        """
        check_matplotlib_support(f"{cls.__name__}.from_predictions")
        caller = f"{cls.__name__}.from_predictions"
        _check_per_block(per_block, caller)
        display = cls(**_parity_data(y_true, y_pred, gradient, per_block, sample_weight, caller))
        return display.plot(ax=ax, scatter_kwargs=scatter_kwargs, line_kwargs=line_kwargs)


def _check_per_block(per_block, caller):
    if not isinstance(per_block, (bool, np.bool_)):
        raise TypeError(f"{caller}: per_block must be True or False, got {per_block!r}")


def _parity_data(y_true, y_pred, gradient, per_block, sample_weight, caller):
    """The keyword arguments of :class:`ParityDisplay` for two TensorMaps.

    Everything is checked (by the metrics' pairing of the blocks) before any
    error is computed.
    """
    pairs = _paired_rows(y_true, y_pred, gradient, sample_weight, caller)
    keys = unwrap(y_true)[0].keys
    points = {}
    for key, (true, pred, weights) in zip(keys, pairs):
        true, pred = to_numpy(true), to_numpy(pred)
        if weights is not None:
            true, pred = true[weights > 0], pred[weights > 0]
        points[_block_name(key.names, key.values)] = (true.ravel(), pred.ravel())
    data = {"y_true": {}, "y_pred": {}, "rmse": {}, "mae": {}, "gradient": gradient}
    if not per_block:
        name = "all blocks"
        data["y_true"][name] = np.concatenate([true for true, _ in points.values()])
        data["y_pred"][name] = np.concatenate([pred for _, pred in points.values()])
        data["rmse"][name] = rmse(y_true, y_pred, gradient=gradient, sample_weight=sample_weight)
        data["mae"][name] = mae(y_true, y_pred, gradient=gradient, sample_weight=sample_weight)
        return data
    for key, (name, (true, pred)), (_, _, weights) in zip(keys, points.items(), pairs):
        data["y_true"][name], data["y_pred"][name] = true, pred
        if weights is not None and not weights.any():
            # every row of this block weighs 0: no error to give
            data["rmse"][name] = data["mae"][name] = float("nan")
            continue
        block_true = _one_block(y_true, key)
        block_pred = _one_block(y_pred, key)
        block_weight = _one_block_weight(sample_weight, y_true, block_true, key)
        options = {"gradient": gradient, "sample_weight": block_weight}
        data["rmse"][name] = rmse(block_true, block_pred, **options)
        data["mae"][name] = mae(block_true, block_pred, **options)
    return data


def _one_block(data, key):
    """The block ``key`` of a TensorMap or IndexedTensorMap, as the same kind."""
    tensor, wrap = unwrap(data)
    position = tensor.keys.position(key)
    keys = Labels(tensor.keys.names, np.asarray(tensor.keys.values)[position : position + 1])
    single = TensorMap(keys, [tensor.block(position).copy()])
    return wrap(single)


def _one_block_weight(sample_weight, y_true, block_true, key):
    """``sample_weight`` for the one-block ``block_true`` cut from ``y_true``."""
    if sample_weight is None:
        return None
    if isinstance(unwrap(sample_weight)[0], TensorMap):
        return _one_block(sample_weight, key)
    # one weight per entry of y_true: those of the entries the block has
    position = {int(entry): i for i, entry in enumerate(y_true.entries)}
    weights = to_numpy(sample_weight).astype(np.float64).reshape(-1)
    return weights[[position[int(entry)] for entry in block_true.entries]]


# ---------------------------------------------------------------------------------
# CVCurveDisplay
# ---------------------------------------------------------------------------------


class CVCurveDisplay:
    """The cross-validated score of every candidate against ``rcond`` or ``alpha``.

    The mean test score over the splits is drawn against the parameter on a log
    x axis, with a band of one standard deviation either side; the chosen
    candidate is marked. When other parameters vary between the candidates (the
    ``alpha`` of a search over ``rcond`` and ``alpha``), each value of the others
    gets its own curve.

    Candidates that a log axis cannot show are left out, with a note written in
    the Axes (and kept in ``notes_``): ``rcond=None``, whose cut-off (epsilon
    times the larger dimension of each training block) differs from one block
    and fold to the next, and values <= 0 (``rcond=0``, ``alpha=0``).

    Use :meth:`from_estimator` or :meth:`from_cv_results` to make one; all
    parameters are stored as attributes.

    Parameters
    ----------
    param_name : str
        The parameter on the x axis, as its label.
    param_range : array-like of shape (n_candidates,)
        Its value for each candidate (numbers or None).
    mean_test_score, std_test_score : array-like of shape (n_candidates,)
        The mean and standard deviation over the splits of each candidate's
        test score.
    curve_labels : array-like of str of shape (n_candidates,) or None, default=None
        The curve of each candidate, named by the values of the other parameters
        (e.g. ``"alpha=0.1"``); None draws one curve.
    best_index : int or None, default=None
        The position of the chosen candidate, marked; None marks none.
    score_name : str or None, default=None
        The y axis label; None is ``"Score"`` (``"Negative score"`` when the
        scores are negated).
    name : str or None, default=None
        Written in front of the legend labels, to tell displays drawn on the
        same Axes apart.

    Attributes
    ----------
    lines_ : list of matplotlib.lines.Line2D or None
        The mean score of each curve (None with ``std_display_style="errorbar"``).
    fill_between_ : list of matplotlib.collections.PolyCollection or None
        The band of each curve (None unless ``std_display_style="fill_between"``).
    errorbar_ : list of matplotlib.container.ErrorbarContainer or None
        Each curve with its error bars (None unless ``std_display_style="errorbar"``).
    chosen_ : matplotlib.lines.Line2D or None
        The marker of the chosen candidate (None when none is marked or it is
        left out).
    notes_ : list of str
        What is left out of the picture, and why.
    note_ : matplotlib.text.Text or None
        ``notes_`` as written in the Axes.
    ax_ : matplotlib.axes.Axes
        The Axes drawn on.
    figure_ : matplotlib.figure.Figure
        The Figure of ``ax_``.

    See Also
    --------
    sklearn.model_selection.ValidationCurveDisplay : the same picture, from
        ``validation_curve``.
    skmetalstsq.TensorMapLstsqCV : rcond chosen by cross-validation.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmetalstsq.display import CVCurveDisplay
    >>> display = CVCurveDisplay(
    ...     param_name="rcond",
    ...     param_range=[1e-12, 1e-6, 1e-2, None],
    ...     mean_test_score=[0.90, 0.95, 0.50, 0.90],
    ...     std_test_score=[0.02, 0.01, 0.10, 0.02],
    ...     best_index=1,
    ... ).plot()
    >>> display.lines_[0].get_xdata().tolist(), display.ax_.get_xscale()
    ([1e-12, 1e-06, 0.01], 'log')
    >>> display.notes_
    ['rcond=None left out (its cut-off depends on the rows of each block and fold)']
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")
    """

    def __init__(
        self,
        *,
        param_name,
        param_range,
        mean_test_score,
        std_test_score,
        curve_labels=None,
        best_index=None,
        score_name=None,
        name=None,
    ):
        self.param_name = param_name
        self.param_range = param_range
        self.mean_test_score = mean_test_score
        self.std_test_score = std_test_score
        self.curve_labels = curve_labels
        self.best_index = best_index
        self.score_name = score_name
        self.name = name

    def plot(
        self,
        ax=None,
        *,
        negate_score=False,
        score_name=None,
        std_display_style="fill_between",
        line_kwargs=None,
        fill_between_kwargs=None,
        errorbar_kwargs=None,
        chosen_kwargs=None,
    ):
        """Draw the curves, their spread, the chosen candidate and the legend.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        negate_score : bool, default=False
            Draw minus the mean scores: errors rather than the negated errors
            (``neg_rmse``) searches maximise.
        score_name : str or None, default=None
            The y axis label; None is the display's ``score_name``.
        std_display_style : {"fill_between", "errorbar"} or None, default="fill_between"
            How the standard deviation is drawn: a band, error bars, or not.
        line_kwargs : dict, default=None
            Keyword arguments of the ``Axes.plot`` call of each curve. Without a
            ``color``, curves take the colours of matplotlib's cycle, or of the
            colour map viridis, in order, when there are more curves than the
            cycle has colours.
        fill_between_kwargs : dict, default=None
            Keyword arguments of the ``Axes.fill_between`` call of each band. A
            band is its curve's colour at alpha 0.2; bands of several curves are
            lighter and outlined, dotted, in their curve's colour, unless these
            give a colour or an alpha.
        errorbar_kwargs : dict, default=None
            Keyword arguments of the ``Axes.errorbar`` call of each curve.
        chosen_kwargs : dict, default=None
            Keyword arguments of the ``Axes.plot`` call of the chosen candidate's
            marker.

        Returns
        -------
        display : CVCurveDisplay
            This display, with ``ax_``, ``figure_``, ``lines_``,
            ``fill_between_``, ``errorbar_``, ``chosen_`` and ``notes_`` set.
        """
        check_matplotlib_support(f"{self.__class__.__name__}.plot")
        caller = f"{self.__class__.__name__}.plot"
        if std_display_style not in ("fill_between", "errorbar", None):
            raise ValueError(
                f"{caller}: std_display_style must be 'fill_between', 'errorbar' or None, "
                f"got {std_display_style!r}"
            )
        values = [None if v is np.ma.masked else v for v in list(self.param_range)]
        mean = np.asarray(self.mean_test_score, dtype=float)
        std = np.asarray(self.std_test_score, dtype=float)
        labels = self.curve_labels
        labels = [None] * len(values) if labels is None else list(labels)
        if not len(values) == len(mean) == len(std) == len(labels):
            raise ValueError(
                f"{caller}: param_range has {len(values)} candidates, mean_test_score "
                f"{len(mean)}, std_test_score {len(std)} and curve_labels {len(labels)}; "
                "they must have one entry per candidate"
            )
        x, notes = _log_positions(values, self.param_name, caller)
        if negate_score:
            mean = -mean

        ax = _axes(ax)
        line_kwargs = _validate_style_kwargs({"marker": "o", "markersize": 3}, line_kwargs or {})
        errorbar_kwargs = _validate_style_kwargs(
            {"marker": "o", "markersize": 3, "capsize": 2}, errorbar_kwargs or {}
        )
        curves = list(dict.fromkeys(labels))
        given = errorbar_kwargs if std_display_style == "errorbar" else line_kwargs
        palette = _curve_colours(len(curves), given)
        lines, bands, bars, colours = [], [], [], {}
        for k, curve in enumerate(curves):
            pick = {} if palette is None else {"color": palette[k]}
            members = [i for i, label in enumerate(labels) if label == curve and np.isfinite(x[i])]
            if not members:
                notes.append(f"{curve}: no candidate on the log axis, not drawn")
                continue
            members.sort(key=lambda i: x[i])
            label = ", ".join(part for part in (self.name, curve) if part) or "mean test score"
            xs, ys, spread = x[members], mean[members], std[members]
            if std_display_style == "errorbar":
                bar = ax.errorbar(xs, ys, spread, label=label, **pick, **errorbar_kwargs)
                bars.append(bar)
                colour = bar.lines[0].get_color()
            else:
                (line,) = ax.plot(xs, ys, label=label, **pick, **line_kwargs)
                lines.append(line)
                colour = line.get_color()
                if std_display_style == "fill_between":
                    style = _band_style(colour, len(curves), fill_between_kwargs or {})
                    bands.append(ax.fill_between(xs, ys - spread, ys + spread, **style))
            for i in members:
                colours[i] = colour
        if not colours:
            raise ValueError(
                f"{caller}: no candidate can be drawn on a log axis ({'; '.join(notes)})"
            )
        self.lines_ = None if std_display_style == "errorbar" else lines
        self.fill_between_ = bands if std_display_style == "fill_between" else None
        self.errorbar_ = bars if std_display_style == "errorbar" else None

        self.chosen_ = None
        best = self.best_index
        if best is not None:
            if not isinstance(best, Integral) or not 0 <= best < len(values):
                raise ValueError(
                    f"{caller}: best_index must be None or a position in 0..{len(values) - 1}, "
                    f"got {best!r}"
                )
            chosen = f"{self.param_name}={_format(values[best])}"
            if labels[best]:
                chosen += f", {labels[best]}"
            if best in colours:
                style = {
                    "marker": "o",
                    "markersize": 10,
                    "markerfacecolor": "none",
                    "markeredgewidth": 1.5,
                    "linestyle": "none",
                    "color": colours[best],
                }
                style = _validate_style_kwargs(style, chosen_kwargs or {})
                label = f"{self.name}: chosen {chosen}" if self.name else f"chosen {chosen}"
                (self.chosen_,) = ax.plot([x[best]], [mean[best]], label=label, **style)
            else:
                notes.append(f"the chosen candidate ({chosen}) is not drawn")

        if score_name is None:
            score_name = self.score_name
        if score_name is None:
            score_name = _score_label(None, negate_score)
        ax.set_xscale("log")
        ax.set(xlabel=self.param_name, ylabel=score_name)
        ax.legend()
        self.notes_ = notes
        self.note_ = _write_notes(ax, notes)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_cv_results(
        cls,
        cv_results,
        *,
        param="rcond",
        score="score",
        best_index=None,
        negate_score=False,
        score_name=None,
        name=None,
        ax=None,
        std_display_style="fill_between",
        line_kwargs=None,
        fill_between_kwargs=None,
        errorbar_kwargs=None,
        chosen_kwargs=None,
    ):
        """Draw the curves of a ``cv_results_`` dict.

        Parameters
        ----------
        cv_results : dict
            The ``cv_results_`` of :class:`~skmetalstsq.TensorMapLstsqCV`, of
            ``GridSearchCV`` or of ``RandomizedSearchCV``.
        param : str, default="rcond"
            The parameter on the x axis: its key is ``"param_" + param``, or the
            one key ``"param_<step>__" + param`` of a search over a Pipeline.
        score : str, default="score"
            Which scores to draw, ``mean_test_<score>``: ``"score"`` for one
            scorer, the scorer's name in a multi-metric search, or a block name
            of TensorMapLstsqCV's ``per_block`` results (``"center_type=6"``).
        best_index : int or None, default=None
            The position of the chosen candidate, marked; None marks none.
        negate_score : bool, default=False
            Draw minus the mean scores.
        score_name : str or None, default=None
            The y axis label; None names it after ``score`` as
            ``ValidationCurveDisplay`` does, metric names in capitals.
        name : str or None, default=None
            Written in front of the legend labels; None is ``score`` unless it
            is ``"score"``.
        ax, std_display_style, line_kwargs, fill_between_kwargs, errorbar_kwargs, chosen_kwargs :
            As in :meth:`plot`.

        Returns
        -------
        display : CVCurveDisplay

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from skmetalstsq.display import CVCurveDisplay
        >>> results = {
        ...     "param_rcond": np.ma.MaskedArray([1e-8, 1e-4, 1e-8, 1e-4]),
        ...     "param_alpha": np.ma.MaskedArray([0.0, 0.0, 1.0, 1.0]),
        ...     "mean_test_score": np.array([0.9, 0.8, 0.7, 0.6]),
        ...     "std_test_score": np.array([0.1, 0.1, 0.1, 0.1]),
        ... }
        >>> display = CVCurveDisplay.from_cv_results(results, best_index=0)
        >>> [line.get_label() for line in display.lines_]
        ['alpha=0', 'alpha=1']
        >>> display.chosen_.get_label()
        'chosen rcond=1e-08, alpha=0'
        >>> import matplotlib.pyplot as plt
        >>> plt.close("all")
        """
        check_matplotlib_support(f"{cls.__name__}.from_cv_results")
        caller = f"{cls.__name__}.from_cv_results"
        display = cls(
            **_curve_data(
                cv_results, param, score, best_index, score_name, name, negate_score, caller
            )
        )
        return display.plot(
            ax=ax,
            negate_score=negate_score,
            std_display_style=std_display_style,
            line_kwargs=line_kwargs,
            fill_between_kwargs=fill_between_kwargs,
            errorbar_kwargs=errorbar_kwargs,
            chosen_kwargs=chosen_kwargs,
        )

    @classmethod
    def from_estimator(
        cls,
        estimator,
        *,
        param="rcond",
        score=None,
        negate_score=False,
        score_name=None,
        name=None,
        ax=None,
        std_display_style="fill_between",
        line_kwargs=None,
        fill_between_kwargs=None,
        errorbar_kwargs=None,
        chosen_kwargs=None,
    ):
        """Draw the curves of a fitted search, its chosen candidate marked.

        Parameters
        ----------
        estimator : fitted TensorMapLstsqCV, GridSearchCV or RandomizedSearchCV
            Its ``cv_results_`` are drawn, and its ``best_index_`` marked: with
            ``per_block=True``, the choice of the block named by ``score`` (the
            pooled ``"score"`` has no single choice, and nothing is marked); in a
            multi-metric search, the candidate chosen by ``refit``, on any score.
        param : str, default="rcond"
            As in :meth:`from_cv_results`.
        score : str or None, default=None
            As in :meth:`from_cv_results`; None is ``refit`` in a multi-metric
            search and ``"score"`` otherwise.
        negate_score : bool, default=False
            Draw minus the mean scores.
        score_name : str or None, default=None
            The y axis label; None names it after the estimator's ``scoring`` as
            ``ValidationCurveDisplay`` does, metric names in capitals: ``"RMSE"``
            for ``neg_rmse`` with ``negate_score=True``, ``"Negative RMSE"``
            without.
        name, ax, std_display_style, line_kwargs, fill_between_kwargs, errorbar_kwargs, \
chosen_kwargs :
            As in :meth:`from_cv_results`.

        Returns
        -------
        display : CVCurveDisplay

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from metatensor import Labels, TensorBlock, TensorMap
        >>> from skmetalstsq import IndexedTensorMap, TensorMapLstsqCV
        >>> from skmetalstsq.display import CVCurveDisplay
        >>> rng = np.random.default_rng(0)
        >>> samples = Labels.range("system", 30)
        >>> features = rng.normal(size=(30, 3)) * [1.0, 1e-3, 1e-9]
        >>> x = TensorBlock(features, samples, [], Labels.range("feature", 3))
        >>> energy = features @ [1.0, 1.0, 1.0] + 1e-4 * rng.normal(size=30)
        >>> y = TensorBlock(energy[:, None], samples, [], Labels.range("energy", 1))
        >>> X = IndexedTensorMap(TensorMap(Labels.single(), [x]), "system")
        >>> Y = IndexedTensorMap(TensorMap(Labels.single(), [y]), "system")
        >>> model = TensorMapLstsqCV(rconds=[1e-12, 1e-6, 1e-2], cv=3).fit(X, Y)
        >>> display = CVCurveDisplay.from_estimator(model)
        >>> display.chosen_.get_xdata().tolist(), display.ax_.get_ylabel()
        ([1e-06], 'R2')
        >>> import matplotlib.pyplot as plt
        >>> plt.close("all")
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        caller = f"{cls.__name__}.from_estimator"
        if not hasattr(estimator, "cv_results_"):
            raise NotFittedError(
                f"{caller}: {type(estimator).__name__} has no cv_results_; pass a fitted "
                "TensorMapLstsqCV or a fitted search (GridSearchCV, RandomizedSearchCV)"
            )
        scoring = getattr(estimator, "scoring", None)
        if score is None:
            score = "score"
            if getattr(estimator, "multimetric_", False):
                refit = getattr(estimator, "refit", None)
                if not isinstance(refit, str):
                    scores = _score_names(estimator.cv_results_)
                    raise ValueError(
                        f"{caller}: {type(estimator).__name__} scored {scores} and refit "
                        f"is {refit!r}; name the one to draw with score="
                    )
                score = refit
        if score_name is None:
            score_name = _score_label(_scoring_name(estimator, scoring, score), negate_score)
        best = getattr(estimator, "best_index_", None)
        if isinstance(best, dict):
            names = getattr(estimator, "block_names_", {})
            best = next((best[key] for key, n in names.items() if n == score), None)
        data = _curve_data(
            estimator.cv_results_, param, score, best, score_name, name, negate_score, caller
        )
        return cls(**data).plot(
            ax=ax,
            negate_score=negate_score,
            std_display_style=std_display_style,
            line_kwargs=line_kwargs,
            fill_between_kwargs=fill_between_kwargs,
            errorbar_kwargs=errorbar_kwargs,
            chosen_kwargs=chosen_kwargs,
        )


def _curve_colours(n_curves, style):
    """The colour of each of ``n_curves`` curves, or None for the colour cycle's.

    Up to the length of matplotlib's colour cycle, each curve takes the cycle's
    next colour. More curves would repeat its colours: they take ``n_curves``
    colours of the sequential colour map viridis instead, in the curves' order
    (the order of the other parameter's values, e.g. increasing ``alpha``). A
    colour in ``style`` (the keyword arguments of every curve) is kept.
    """
    import matplotlib as mpl

    cycle = mpl.rcParams["axes.prop_cycle"].by_key().get("color", [])
    if n_curves <= len(cycle) or "color" in style:
        return None
    return [tuple(c) for c in mpl.colormaps["viridis"](np.linspace(0.0, 0.9, n_curves))]


#: keyword arguments of a band that set its colour or transparency
_BAND_COLOUR_KEYS = {"color", "c", "facecolor", "fc", "edgecolor", "ec", "alpha"}


def _band_style(colour, n_curves, given):
    """The keyword arguments of the ``fill_between`` call of a curve's band.

    A band alone is its curve's colour at alpha 0.2. Bands of several curves
    overlap, and stacked at 0.2 they blur into one colour: each is lighter
    (alpha 0.08, less with more than 3 curves) and outlined, dotted, in its
    curve's colour, so that the extent of each stays readable where they
    overlap. A colour or alpha in ``given`` (the user's ``fill_between_kwargs``)
    draws every band as a band alone, with it.
    """
    from matplotlib.colors import to_rgba

    if n_curves > 1 and not _BAND_COLOUR_KEYS.intersection(given):
        default = {
            "facecolor": to_rgba(colour, min(0.08, 0.3 / n_curves)),
            "edgecolor": to_rgba(colour, 0.7),
            "linewidth": 0.8,
            "linestyle": ":",
        }
    else:
        default = {"color": colour, "alpha": 0.2}
    return _validate_style_kwargs(default, given)


def _score_names(cv_results):
    return [key[len("mean_test_") :] for key in cv_results if key.startswith("mean_test_")]


def _scoring_name(estimator, scoring, score):
    """The name of the metric of ``score`` (a str), or None when it has none."""
    if isinstance(scoring, TensorMapScorer):
        gradient = "" if scoring.gradient is None else f" of the {scoring.gradient} gradient"
        return scoring.name + gradient
    if isinstance(scoring, str):
        return scoring
    if scoring is None and hasattr(estimator, "block_names_"):
        return "r2"  # TensorMapLstsqCV's default: its score, R^2 of the values
    if isinstance(scoring, Mapping) and score in scoring:
        return _scoring_name(estimator, scoring[score], score) or score
    if isinstance(scoring, (list, tuple, set)) and score in scoring:
        return score
    return None


def _curve_data(cv_results, param, score, best_index, score_name, name, negate, caller):
    """The keyword arguments of :class:`CVCurveDisplay` for a ``cv_results_`` dict."""
    if not isinstance(cv_results, Mapping):
        raise TypeError(
            f"{caller}: cv_results must be a dict (a search's cv_results_), got "
            f"{type(cv_results).__name__}"
        )
    parameters = [key[len("param_") :] for key in cv_results if key.startswith("param_")]
    if param in parameters:
        column = param
    else:
        matches = [p for p in parameters if p.endswith(f"__{param}")]
        if len(matches) != 1:
            found = "several, name one" if matches else "none"
            raise ValueError(
                f"{caller}: cv_results has no single parameter {param!r} (key "
                f"'param_{param}' or 'param_<step>__{param}': {found}); its parameters "
                f"are {parameters}"
            )
        column = matches[0]
    for kind in ("mean", "std"):
        if f"{kind}_test_{score}" not in cv_results:
            raise ValueError(
                f"{caller}: cv_results has no key '{kind}_test_{score}'; the scores it has "
                f"are {_score_names(cv_results)}"
            )
    values = _column(cv_results[f"param_{column}"])
    mean = np.asarray(cv_results[f"mean_test_{score}"], dtype=float)
    if len(mean) != len(values):
        raise ValueError(
            f"{caller}: cv_results has {len(values)} candidates in 'param_{column}' but "
            f"{len(mean)} in 'mean_test_{score}'"
        )
    if best_index is not None and (
        not isinstance(best_index, Integral) or not 0 <= best_index < len(values)
    ):
        raise ValueError(
            f"{caller}: best_index must be None or a position in 0..{len(values) - 1}, "
            f"got {best_index!r}"
        )

    # one curve per combination of the other parameters that vary
    others = {}
    for other in parameters:
        if other == column:
            continue
        column_values = _column(cv_results[f"param_{other}"])
        if len({repr(v) for v in column_values}) > 1:
            others[other] = column_values
    short = {other: other.rsplit("__", 1)[-1] for other in others}
    if len(set(short.values())) < len(short):
        short = {other: other for other in others}
    labels = None
    if others:
        labels = [
            ", ".join(f"{short[o]}={_format(others[o][i])}" for o in others)
            for i in range(len(values))
        ]
    if score_name is None:
        score_name = _score_label(None if score == "score" else score, negate)
    if name is None and score != "score":
        name = score
    return {
        "param_name": param,
        "param_range": values,
        "mean_test_score": mean,
        "std_test_score": np.asarray(cv_results[f"std_test_{score}"], dtype=float),
        "curve_labels": labels,
        "best_index": None if best_index is None else int(best_index),
        "score_name": score_name,
        "name": name,
    }


def _column(values):
    """A ``param_*`` column as a list, masked entries as None."""
    mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
    values = list(np.ma.getdata(values)) if mask is not None else list(values)
    if mask is not None:
        values = [None if m else v for v, m in zip(values, mask)]
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _log_positions(values, param_name, caller):
    """(x of each candidate, nan where a log axis cannot show it; notes of those left out)."""
    x = np.full(len(values), np.nan)
    left_out = {}
    for i, value in enumerate(values):
        if value is None:
            left_out.setdefault(
                f"{param_name}=None left out (its cut-off depends on the rows of each block "
                "and fold)",
                None,
            )
            continue
        if not isinstance(value, Real) or isinstance(value, (bool, np.bool_)):
            raise TypeError(
                f"{caller}: the {param_name} candidates must be numbers or None to be "
                f"drawn on a log axis, got {value!r} at position {i}"
            )
        if not np.isfinite(value) or value <= 0:
            left_out.setdefault(f"{param_name}={_format(value)} left out (not on a log axis)")
            continue
        x[i] = float(value)
    return x, list(left_out)


# ---------------------------------------------------------------------------------
# SingularValuesDisplay
# ---------------------------------------------------------------------------------


class SingularValuesDisplay:
    """The singular values of each block, relative to the largest, and the cut-off.

    A block's singular values (those of its weighted, stacked X block, largest
    first) divided by the largest are drawn against their position on a log y
    axis. ``rcond`` is relative to the largest singular value too: the values
    at or below the horizontal line of the cut-off are cut. One line for all
    blocks when they share the cut-off, else one per block in its colour.

    Blocks without singular values (fitted by a driver that does not compute
    them, or without rows) are left out, as are cut-offs a log axis cannot show
    (None, 0), with a note written in the Axes (and kept in ``notes_``).

    Use :meth:`from_estimator` to make one; all parameters are stored as
    attributes.

    Parameters
    ----------
    singular_values : dict of str to array-like or None
        For each block (named ``"name=value, ..."`` after its key), its singular
        values, or None.
    rcond : float, dict of str to float or None, or None, default=None
        The relative cut-off of every block, or of each block by name; None
        draws none.

    Attributes
    ----------
    lines_ : list of matplotlib.lines.Line2D
        The singular values of each block drawn, in the order of
        ``singular_values``.
    cutoff_lines_ : list of matplotlib.lines.Line2D
        The cut-off lines.
    notes_ : list of str
        What is left out of the picture, and why.
    note_ : matplotlib.text.Text or None
        ``notes_`` as written in the Axes.
    ax_ : matplotlib.axes.Axes
        The Axes drawn on.
    figure_ : matplotlib.figure.Figure
        The Figure of ``ax_``.

    See Also
    --------
    skmetalstsq.TensorMapLstsq : its ``singular_values_`` and ``rcond``.
    CVCurveDisplay : the scores of the cut-offs tried by cross-validation.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmetalstsq.display import SingularValuesDisplay
    >>> display = SingularValuesDisplay(
    ...     singular_values={"center_type=1": [4.0, 2.0, 1e-9], "center_type=6": None},
    ...     rcond=1e-6,
    ... ).plot()
    >>> display.lines_[0].get_ydata().tolist()
    [1.0, 0.5, 2.5e-10]
    >>> display.cutoff_lines_[0].get_label()
    'rcond=1e-06'
    >>> display.notes_
    ['center_type=6: no singular values (its driver does not compute them), not drawn']
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")
    """

    def __init__(self, *, singular_values, rcond=None):
        self.singular_values = singular_values
        self.rcond = rcond

    def plot(self, ax=None, *, line_kwargs=None, cutoff_kwargs=None):
        """Draw each block's relative singular values and the cut-off lines.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        line_kwargs : dict, default=None
            Keyword arguments of the ``Axes.plot`` call of each block.
        cutoff_kwargs : dict, default=None
            Keyword arguments of the ``Axes.axhline`` call of each cut-off.

        Returns
        -------
        display : SingularValuesDisplay
            This display, with ``ax_``, ``figure_``, ``lines_``,
            ``cutoff_lines_`` and ``notes_`` set.
        """
        check_matplotlib_support(f"{self.__class__.__name__}.plot")
        caller = f"{self.__class__.__name__}.plot"
        if isinstance(self.rcond, Mapping):
            cutoffs = {name: self.rcond.get(name) for name in self.singular_values}
        else:
            cutoffs = dict.fromkeys(self.singular_values, self.rcond)
        drawn, notes = {}, []
        for name, values in self.singular_values.items():
            block = name or "the block"
            if values is None:
                notes.append(
                    f"{block}: no singular values (its driver does not compute them), not drawn"
                )
                continue
            values = to_numpy(values).astype(np.float64).reshape(-1)
            if values.size == 0 or not values.max() > 0:
                notes.append(f"{block}: no nonzero singular value, not drawn")
                continue
            drawn[name] = values / values.max()
        if not drawn:
            raise ValueError(
                f"{caller}: no block has singular values to draw ({'; '.join(notes)}); fit "
                "with driver=None, 'gelsd' or 'gelss' (without a penalty) to have them"
            )

        ax = _axes(ax)
        line_kwargs = _validate_style_kwargs({"marker": "o", "markersize": 3}, line_kwargs or {})
        self.lines_, colours = [], {}
        for name, relative in drawn.items():
            positions = np.arange(1, relative.size + 1)
            label = name or "singular values"
            (line,) = ax.plot(positions, relative, label=label, **line_kwargs)
            self.lines_.append(line)
            colours[name] = line.get_color()

        shown = {}
        for name in drawn:
            cutoff, block = cutoffs[name], name or "the block"
            if cutoff is None:
                notes.append(f"{block}: no cut-off given (rcond=None), not drawn")
            elif not cutoff > 0:
                notes.append(f"{block}: rcond={_format(cutoff)} cuts nothing, not drawn")
            else:
                shown[name] = float(cutoff)
        self.cutoff_lines_ = []
        if shown:
            shared = len(set(shown.values())) == 1 and len(shown) == len(drawn)
            for name, cutoff in shown.items():
                label = f"rcond={cutoff:.3g}"
                style = {"color": "black", "linestyle": "--", "linewidth": 1}
                if not shared:
                    label += f" ({name})"
                    style["color"] = colours[name]
                style = _validate_style_kwargs(style, cutoff_kwargs or {})
                self.cutoff_lines_.append(ax.axhline(cutoff, label=label, **style))
                if shared:
                    break

        ax.set_yscale("log")
        ax.set(xlabel="Singular value index (largest first)", ylabel="Singular value / largest")
        ax.legend()
        self.notes_ = notes
        self.note_ = _write_notes(ax, notes)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, X=None, *, ax=None, line_kwargs=None, cutoff_kwargs=None):
        """Draw the singular values of a fitted TensorMapLstsq or TensorMapLstsqCV.

        Parameters
        ----------
        estimator : fitted TensorMapLstsq or TensorMapLstsqCV
            Its ``singular_values_`` are drawn; the cut-off is its ``rcond``, or
            the ``rcond_`` a TensorMapLstsqCV chose (per block when it is a dict).
        X : metatensor.TensorMap or IndexedTensorMap, default=None
            The features the estimator was fitted on. Only read when a cut-off
            is None, the default: float64 epsilon times the larger of the
            number of rows (values and gradients, components folded in) and of
            features of the block, which only X tells; without X such a
            cut-off is not drawn.
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        line_kwargs, cutoff_kwargs : dict, default=None
            As in :meth:`plot`.

        Returns
        -------
        display : SingularValuesDisplay

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from metatensor import Labels, TensorBlock, TensorMap
        >>> from skmetalstsq import TensorMapLstsq
        >>> from skmetalstsq.display import SingularValuesDisplay
        >>> rng = np.random.default_rng(0)
        >>> samples = Labels.range("system", 20)
        >>> features = rng.normal(size=(20, 3)) * [1.0, 1e-2, 1e-8]
        >>> x = TensorBlock(features, samples, [], Labels.range("feature", 3))
        >>> y = TensorBlock(features[:, :1], samples, [], Labels.range("energy", 1))
        >>> keys = Labels(["center_type"], np.array([[1]]))
        >>> X, Y = TensorMap(keys, [x]), TensorMap(keys, [y])
        >>> model = TensorMapLstsq(rcond=1e-6).fit(X, Y)
        >>> display = SingularValuesDisplay.from_estimator(model)
        >>> relative = display.lines_[0].get_ydata()
        >>> int((relative > 1e-6).sum()), model.rank_[(1,)]
        (2, 2)
        >>> import matplotlib.pyplot as plt
        >>> plt.close("all")
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        caller = f"{cls.__name__}.from_estimator"
        if not hasattr(estimator, "singular_values_") or not hasattr(estimator, "weights_"):
            raise NotFittedError(
                f"{caller}: {type(estimator).__name__} has no singular_values_; pass a "
                "fitted TensorMapLstsq or TensorMapLstsqCV"
            )
        keys = estimator.weights_.keys
        names = {
            tuple(int(v) for v in key.values): _block_name(key.names, key.values) for key in keys
        }
        if hasattr(estimator, "rcond_"):
            chosen = estimator.rcond_
        else:
            chosen = getattr(estimator, "rcond", None)
        cutoffs = {}
        for key_values, name in names.items():
            cutoffs[name] = chosen.get(key_values) if isinstance(chosen, dict) else chosen
        if X is not None and any(cutoff is None for cutoff in cutoffs.values()):
            default = _default_cutoffs(X, estimator.weights_, caller)
            cutoffs = {
                name: default[name] if cutoff is None else cutoff
                for name, cutoff in cutoffs.items()
            }
        singular_values = {name: estimator.singular_values_[k] for k, name in names.items()}
        display = cls(singular_values=singular_values, rcond=cutoffs)
        return display.plot(ax=ax, line_kwargs=line_kwargs, cutoff_kwargs=cutoff_kwargs)


def _default_cutoffs(X, weights, caller):
    """Block name -> the cut-off of ``rcond=None`` for the blocks of X fitted as ``weights``."""
    tensor = unwrap(X)[0]
    if not isinstance(tensor, TensorMap):
        raise TypeError(
            f"{caller}: X must be the TensorMap (or IndexedTensorMap) the estimator was "
            f"fitted on, got {type(X).__name__}"
        )
    cutoffs = {}
    for key, fitted in weights.items():
        name = _block_name(key.names, key.values)
        position = tensor.keys.position(key) if tensor.keys.names == weights.keys.names else None
        if position is None:
            raise ValueError(
                f"{caller}: X has no block ({name}), which the estimator was fitted on "
                f"(X's keys are named {list(tensor.keys.names)})"
            )
        block = tensor.block(position)
        n_features = len(block.properties)
        if n_features != len(fitted.properties):
            raise ValueError(
                f"{caller}: block ({name}) has {n_features} properties in X but the "
                f"estimator was fitted on {len(fitted.properties)}"
            )
        n_rows = int(np.prod(block.values.shape[:-1]))
        for _, gradient in block.gradients():
            n_rows += int(np.prod(gradient.values.shape[:-1]))
        cutoffs[name] = default_rcond(n_rows, n_features)
    return cutoffs


# ---------------------------------------------------------------------------------
# UncertaintyCalibrationDisplay
# ---------------------------------------------------------------------------------

#: nominal coverage of the central intervals ``y_pred +- z std`` whose coverage is given
CALIBRATION_LEVELS = (0.68, 0.95)


class UncertaintyCalibrationDisplay:
    """Observed errors against predicted standard deviations: are the error bars honest?

    Every predicted entry (each value or gradient component, of every block and
    property) is a point: its predicted standard deviation on the x axis, its
    absolute error ``|y_pred - y_true|`` on the y axis. The entries are then
    sorted by predicted std and cut into ``n_bins`` bins of (nearly) equal
    counts; each bin is drawn at its root mean predicted variance (x) and the
    root mean squared error of its entries (y). Error bars are honest where the
    bins lie on the identity line, ``RMSE == predicted std``: above it the
    predictions are over-confident, below it under-confident.

    The legend's title gives the coverage of the central 68 % and 95 % intervals,
    ``y_pred +- z std`` with ``z`` the normal quantiles (0.994 and 1.960): the
    fraction of entries whose error is within ``z std``, which is 68 % and
    95 % for honest Gaussian error bars.

    Use :meth:`from_estimator` or :meth:`from_predictions` to make one; all
    parameters are stored as attributes.

    Parameters
    ----------
    y_std, abs_error : numpy.ndarray of shape (n_entries,)
        The predicted std and the absolute error of every entry.
    bin_std, bin_rmse : numpy.ndarray of shape (n_bins,)
        The root mean predicted variance and the RMSE of each bin, smallest std
        first.
    bin_count : numpy.ndarray of shape (n_bins,)
        The number of entries of each bin.
    coverage : dict of float to float
        For each nominal level (0.68 and 0.95), the fraction of entries whose
        interval at that level holds the true value.
    gradient : str or None, default=None
        The gradient compared (None: the values), for the axis labels.

    Attributes
    ----------
    scatter_ : matplotlib.collections.PathCollection
        The entries.
    line_ : matplotlib.lines.Line2D
        The bins.
    ideal_line_ : matplotlib.lines.AxLine
        The identity line, ``RMSE == predicted std``, across the Axes.
    notes_ : list of str
        What is left out of the picture, and why.
    note_ : matplotlib.text.Text or None
        ``notes_`` as written in the Axes.
    ax_ : matplotlib.axes.Axes
        The Axes drawn on.
    figure_ : matplotlib.figure.Figure
        The Figure of ``ax_``.

    See Also
    --------
    skmetalstsq.TensorMapBayesianRidge : predicts a std with ``return_std=True``.
    ParityDisplay : predicted against true values.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skmetalstsq.display import UncertaintyCalibrationDisplay
    >>> y_std = np.array([0.1, 0.1, 1.0, 1.0])
    >>> y_pred = np.array([0.0, 0.0, 0.0, 0.0])
    >>> y_true = np.array([0.05, -0.15, 0.5, 3.0])
    >>> display = UncertaintyCalibrationDisplay.from_predictions(
    ...     y_true, y_pred, y_std, n_bins=2
    ... )
    >>> display.bin_std.tolist(), display.bin_rmse.round(3).tolist()
    ([0.1, 1.0], [0.112, 2.151])
    >>> display.coverage
    {0.68: 0.5, 0.95: 0.75}
    >>> print(display.ax_.get_legend().get_title().get_text())
    within the 68% interval: 50%
    within the 95% interval: 75%
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")
    """

    def __init__(self, *, y_std, abs_error, bin_std, bin_rmse, bin_count, coverage, gradient=None):
        self.y_std = y_std
        self.abs_error = abs_error
        self.bin_std = bin_std
        self.bin_rmse = bin_rmse
        self.bin_count = bin_count
        self.coverage = coverage
        self.gradient = gradient

    def plot(
        self, ax=None, *, log_scale=True, scatter_kwargs=None, line_kwargs=None, ideal_kwargs=None
    ):
        """Draw the entries, the bins, the identity line and the legend.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        log_scale : bool, default=True
            Log x and y axes, where predicted stds spanning orders of magnitude
            (an extrapolating structure's) stay readable. Entries (and bins) of
            zero std or error cannot be drawn on them: they are left out of the
            picture, not of the bins and coverage, with a note.
        scatter_kwargs : dict, default=None
            Keyword arguments of the ``Axes.scatter`` call of the entries.
        line_kwargs : dict, default=None
            Keyword arguments of the ``Axes.plot`` call of the bins.
        ideal_kwargs : dict, default=None
            Keyword arguments of the ``Axes.axline`` call of the identity line.

        Returns
        -------
        display : UncertaintyCalibrationDisplay
            This display, with ``ax_``, ``figure_``, ``scatter_``, ``line_``,
            ``ideal_line_`` and ``notes_`` set.
        """
        check_matplotlib_support(f"{self.__class__.__name__}.plot")
        scatter_kwargs = _validate_style_kwargs(
            {"s": 4, "alpha": 0.3, "color": "tab:blue", "linewidths": 0}, scatter_kwargs or {}
        )
        line_kwargs = _validate_style_kwargs(
            {"color": "tab:red", "marker": "o", "markersize": 4}, line_kwargs or {}
        )
        ideal_kwargs = _validate_style_kwargs(
            {"color": "black", "alpha": 0.7, "linestyle": "--"}, ideal_kwargs or {}
        )
        y_std, abs_error = to_numpy(self.y_std), to_numpy(self.abs_error)
        bin_std, bin_rmse = to_numpy(self.bin_std), to_numpy(self.bin_rmse)
        notes = []
        shown = np.ones(y_std.shape, dtype=bool)
        shown_bins = np.ones(bin_std.shape, dtype=bool)
        if log_scale:
            shown = (y_std > 0) & (abs_error > 0)
            shown_bins = (bin_std > 0) & (bin_rmse > 0)
            if not shown.all():
                notes.append(
                    f"{int((~shown).sum())} entries of zero std or error not drawn (log axes)"
                )
            if not shown_bins.all():
                notes.append(
                    f"{int((~shown_bins).sum())} bins of zero std or RMSE not drawn (log axes)"
                )
        ax = _axes(ax)

        self.scatter_ = ax.scatter(
            y_std[shown], abs_error[shown], label=f"{y_std.size} entries", **scatter_kwargs
        )
        (self.line_,) = ax.plot(
            bin_std[shown_bins],
            bin_rmse[shown_bins],
            label=f"RMSE of {bin_std.size} bins by std",
            **line_kwargs,
        )
        # y = x across the whole Axes, on linear and log axes
        self.ideal_line_ = ax.axline((1, 1), (10, 10), label="ideal: RMSE = std", **ideal_kwargs)
        if log_scale:
            ax.set(xscale="log", yscale="log")
            _two_powers_of_ten(ax)
        what = "values" if self.gradient is None else f"'{self.gradient}' gradient"
        ax.set(xlabel=f"Predicted std of the {what}", ylabel="Absolute error")
        coverage = "\n".join(
            f"within the {_percent(level)} interval: {_percent(fraction)}"
            for level, fraction in self.coverage.items()
        )
        ax.legend(loc="best", fontsize="small", title=coverage, title_fontsize="small")
        self.notes_ = notes
        self.note_ = _write_notes(ax, notes)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        gradient=None,
        n_bins=10,
        ax=None,
        log_scale=True,
        scatter_kwargs=None,
        line_kwargs=None,
        ideal_kwargs=None,
    ):
        """Calibration of a fitted estimator's predicted std on ``X`` against ``y``.

        Parameters
        ----------
        estimator : fitted estimator
            A :class:`~skmetalstsq.TensorMapBayesianRidge`, or anything (a
            Pipeline ending in one) whose ``predict(X, return_std=True)``
            returns the mean and std in the layout of ``y``.
        X : metatensor.TensorMap, IndexedTensorMap or array-like
            The features to predict from.
        y : metatensor.TensorMap, IndexedTensorMap or array-like
            The true targets.
        gradient, n_bins, ax, log_scale, scatter_kwargs, line_kwargs, ideal_kwargs :
            As in :meth:`from_predictions`.

        Returns
        -------
        display : UncertaintyCalibrationDisplay

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from metatensor import Labels, TensorBlock, TensorMap
        >>> from skmetalstsq import TensorMapBayesianRidge
        >>> from skmetalstsq.display import UncertaintyCalibrationDisplay
        >>> rng = np.random.default_rng(0)
        >>> samples = Labels.range("system", 400)
        >>> x = TensorBlock(rng.normal(size=(400, 3)), samples, [], Labels.range("feature", 3))
        >>> energy = x.values @ [[1.0], [2.0], [0.5]] + 0.1 * rng.normal(size=(400, 1))
        >>> y = TensorBlock(energy, samples, [], Labels.range("energy", 1))
        >>> keys = Labels(["center_type"], np.array([[1]]))
        >>> X, Y = TensorMap(keys, [x]), TensorMap(keys, [y])
        >>> model = TensorMapBayesianRidge().fit(X, Y)
        >>> display = UncertaintyCalibrationDisplay.from_estimator(model, X, Y)
        >>> bool(abs(display.coverage[0.95] - 0.95) < 0.03)
        True
        >>> import matplotlib.pyplot as plt
        >>> plt.close("all")
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        caller = f"{cls.__name__}.from_estimator"
        _check_bins(n_bins, caller)
        if not _takes_return_std(estimator):
            raise TypeError(
                f"{caller}: {type(estimator).__name__}.predict takes no return_std; pass an "
                "estimator that predicts a std, such as a fitted TensorMapBayesianRidge"
            )
        y_pred, y_std = estimator.predict(X, return_std=True)
        display = cls(**_calibration_data(y, y_pred, y_std, gradient, n_bins, caller))
        return display.plot(
            ax=ax,
            log_scale=log_scale,
            scatter_kwargs=scatter_kwargs,
            line_kwargs=line_kwargs,
            ideal_kwargs=ideal_kwargs,
        )

    @classmethod
    def from_predictions(
        cls,
        y_true,
        y_pred,
        y_std,
        *,
        gradient=None,
        n_bins=10,
        ax=None,
        log_scale=True,
        scatter_kwargs=None,
        line_kwargs=None,
        ideal_kwargs=None,
    ):
        """Calibration of predicted stds against the errors of the predictions.

        Parameters
        ----------
        y_true, y_pred, y_std : metatensor.TensorMap, IndexedTensorMap or array-like
            The true values, the predicted ones and their predicted std: three
            TensorMaps with the same keys (in any order) and, in each block, the
            same samples, components and properties (in any order), as
            :func:`skmetalstsq.metrics.rmse` compares them; or three arrays of
            the same shape. Every entry of every block and property is pooled.
        gradient : str or None, default=None
            None compares the values; a gradient parameter (e.g.
            ``"positions"``) compares that gradient (TensorMaps only).
        n_bins : int, default=10
            The number of bins of (nearly) equal counts, by predicted std; at
            most one per entry.
        ax : matplotlib.axes.Axes, default=None
            The Axes to draw on; None draws on a new figure.
        log_scale, scatter_kwargs, line_kwargs, ideal_kwargs :
            As in :meth:`plot`.

        Returns
        -------
        display : UncertaintyCalibrationDisplay

        Raises
        ------
        ValueError
            For layouts that differ, a std that is negative, NaN or infinite
            (naming the block), or no entry at all.
        """
        check_matplotlib_support(f"{cls.__name__}.from_predictions")
        caller = f"{cls.__name__}.from_predictions"
        _check_bins(n_bins, caller)
        display = cls(**_calibration_data(y_true, y_pred, y_std, gradient, n_bins, caller))
        return display.plot(
            ax=ax,
            log_scale=log_scale,
            scatter_kwargs=scatter_kwargs,
            line_kwargs=line_kwargs,
            ideal_kwargs=ideal_kwargs,
        )


def _two_powers_of_ten(ax):
    """Extend each log axis of ``ax`` past the nearest powers of ten until it holds two.

    matplotlib labels the minor ticks of a log axis holding fewer, in labels that
    run into each other (``2x10^-1 3x10^-1 ...``). Each power is passed by 2 % of
    a decade, so that it is inside the axis, not on its edge.
    """
    for get, set_ in ((ax.get_xlim, ax.set_xlim), (ax.get_ylim, ax.set_ylim)):
        low, high = np.log10(get())
        while np.floor(high) - np.ceil(low) < 1:
            below, above = np.ceil(low) - 1.02, np.floor(high) + 1.02
            if low - below <= above - high:
                low = below
            else:
                high = above
        set_(10**low, 10**high)


def _percent(fraction):
    """``0.683`` as ``'68.3%'``, ``0.95`` as ``'95%'``."""
    return f"{100 * fraction:.3g}%"


def _check_bins(n_bins, caller):
    if isinstance(n_bins, (bool, np.bool_)) or not isinstance(n_bins, Integral) or n_bins < 1:
        raise ValueError(f"{caller}: n_bins must be an int >= 1, got {n_bins!r}")


def _takes_return_std(estimator):
    """Whether ``estimator.predict`` accepts ``return_std`` (or any keyword)."""
    try:
        parameters = inspect.signature(estimator.predict).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return False
    return any(
        p.name == "return_std" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def _calibration_entries(y_true, y_pred, y_std, gradient, caller):
    """Every entry's (true, predicted, std), float64 numpy 1-D arrays, all checked."""
    kinds = [isinstance(unwrap(data)[0], TensorMap) for data in (y_true, y_pred, y_std)]
    if not any(kinds):
        if gradient is not None:
            raise ValueError(
                f"{caller}: gradient={gradient!r} needs TensorMaps; arrays have no gradients"
            )
        arrays = {}
        for name, data in (("y_true", y_true), ("y_pred", y_pred), ("y_std", y_std)):
            array = to_numpy(data)
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise TypeError(f"{caller}: {name} must hold real numbers, got {array.dtype}")
            arrays[name] = array.astype(np.float64)
        shapes = {name: array.shape for name, array in arrays.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(
                f"{caller}: y_true, y_pred and y_std must have the same shape, got "
                + ", ".join(f"{shape} in {name}" for name, shape in shapes.items())
            )
        for name, array in arrays.items():
            if not np.isfinite(array).all():
                raise ValueError(f"{caller}: {name} has NaN or infinity")
        if (arrays["y_std"] < 0).any():
            raise ValueError(
                f"{caller}: y_std has negative values (the smallest is "
                f"{arrays['y_std'].min():.3g}); a standard deviation is >= 0"
            )
        return tuple(arrays[name].reshape(-1) for name in ("y_true", "y_pred", "y_std"))
    if not all(kinds):
        given = ", ".join(
            f"{name} is {type(unwrap(data)[0]).__name__}"
            for name, data in (("y_true", y_true), ("y_pred", y_pred), ("y_std", y_std))
        )
        raise TypeError(
            f"{caller}: y_true, y_pred and y_std must all be TensorMaps or arrays; {given}"
        )
    pairs = _paired_rows(y_true, y_pred, gradient, None, caller)
    try:
        # the same checks for y_std: y_true's pairing, whose messages call the second side y_pred
        std_pairs = _paired_rows(y_true, y_std, gradient, None, caller)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("y_pred", "y_std")) from None
    where = "values" if gradient is None else f"'{gradient}' gradient"
    true, pred, std = [], [], []
    for key, (block_true, block_pred, _), (_, block_std, _) in zip(
        unwrap(y_true)[0].keys, pairs, std_pairs
    ):
        block_std = to_numpy(block_std).astype(np.float64)
        if (block_std < 0).any():
            raise ValueError(
                f"{caller}: y_std block ({_block_name(key.names, key.values)}) has negative "
                f"{where} (the smallest is {block_std.min():.3g}); a standard deviation is >= 0"
            )
        true.append(to_numpy(block_true).astype(np.float64).reshape(-1))
        pred.append(to_numpy(block_pred).astype(np.float64).reshape(-1))
        std.append(block_std.reshape(-1))
    return tuple(np.concatenate(parts) if parts else np.empty(0) for parts in (true, pred, std))


def _calibration_data(y_true, y_pred, y_std, gradient, n_bins, caller):
    """The keyword arguments of :class:`UncertaintyCalibrationDisplay`."""
    from scipy.special import ndtri

    true, pred, std = _calibration_entries(y_true, y_pred, y_std, gradient, caller)
    if std.size == 0:
        raise ValueError(f"{caller}: there is no entry to compare")
    abs_error = np.abs(pred - true)
    bins = np.array_split(np.argsort(std, kind="stable"), min(n_bins, std.size))
    return {
        "y_std": std,
        "abs_error": abs_error,
        "bin_std": np.array([np.sqrt(np.mean(std[b] ** 2)) for b in bins]),
        "bin_rmse": np.array([np.sqrt(np.mean(abs_error[b] ** 2)) for b in bins]),
        "bin_count": np.array([b.size for b in bins]),
        "coverage": {
            level: float(np.mean(abs_error <= ndtri(0.5 + level / 2) * std))
            for level in CALIBRATION_LEVELS
        },
        "gradient": gradient,
    }
