"""Saving estimators to one file that loading cannot turn into running code.

:func:`save` writes, and :func:`load` reads, a zip archive whose members are stored
uncompressed:

``manifest.json``
    The format's name (:data:`FORMAT`) and version (:data:`FORMAT_VERSION`), the
    versions of the libraries that wrote it (for information only), the estimator as
    a tree of JSON values (its class, hyperparameters and fitted attributes), and the
    size and SHA-256 digest of every other member.
``tensors/<n>.mts``
    One per TensorMap of the estimator (``weights_``, ``intercept_``, a scaler's
    ``mean_``, ``var_`` and ``scale_``, a TensorMap ``alpha``), written by
    :func:`metatensor.save` with numpy arrays.
``arrays/<dtype>.mts``
    Every other array (``coef_``, singular values, the columns of ``cv_results_``,
    the triangular factors of partial fits, a Bayesian model's ``alpha_``,
    ``lambda_``, ``sigma_``, ...), one TensorMap per dtype holding one
    block per array (key ``array``, values reshaped to two dimensions).

For every array the manifest records its dtype, shape and memory order (the order of
its axes in memory), its library (numpy or torch) and, for torch, its device: torch
tensors are stored as numpy arrays and turned back into tensors of the same dtype, on
the same device. Arrays come back with the same strides (a view into a larger array
comes back dense, its axes in the same order in memory), so that a loaded estimator
predicts bit for bit as the saved one.

Every member is stored (uncompressed): :func:`load` refuses compressed members,
members that claim more bytes than the file has, and manifests larger than
:data:`MAX_MANIFEST_SIZE` or nested deeper than :data:`MAX_MANIFEST_DEPTH`, before
reading them, so that it never reads more than the file holds, and parses at most
:data:`MAX_MANIFEST_SIZE` bytes of JSON. What it builds is bounded too: each member
and each array block is built at most once (:func:`save` writes every array once,
and a file that refers to one twice is refused), so the arrays total at most the
bytes of the members, and the arrays of strings of the manifest at most
:data:`MAX_MANIFEST_SIZE` bytes together. It then checks every fitted attribute
against what the estimators set (:data:`FITTED`), so that a loaded estimator
predicts, or the file is refused.

Loading only builds the classes of :data:`CLASSES` (with their constructors, which
only store their arguments), the dataclasses of a partial fit's state, Labels,
TensorMaps (metatensor's, or metatensor-torch's for a model fitted on those), numpy
arrays and torch tensors, from JSON values and from arrays read by
metatensor's own loader. Nothing in the file names a function, a module or a class
outside these tables, so a tampered or foreign file can make :func:`load` fail, never
run code.
"""

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
import sys
import zipfile
from dataclasses import fields

import metatensor
import metatensor.io
import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn import config_context
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from ._bayes import TensorMapBayesianRidge
from ._blocks import key_text, key_tuples
from ._cv import TensorMapLstsqCV
from ._estimator import BatchLayout, PartialBlock, TensorMapLstsq
from ._factors import Factor
from ._torch_maps import as_core, is_torch_map, to_torch_map
from .metrics import TensorMapScorer, scorer
from .preprocessing import TensorMapStandardScaler

__all__ = ["load", "save"]

#: The format's name, the first thing :func:`load` checks in the manifest.
FORMAT = "skmetalstsq-model"

#: The version of the format written by :func:`save`; :func:`load` reads versions up
#: to this one.
FORMAT_VERSION = 1

#: The name of the manifest member.
MANIFEST = "manifest.json"

#: The classes a model file may hold, by the name the manifest gives them.
CLASSES = {
    "skmetalstsq.TensorMapLstsq": TensorMapLstsq,
    "skmetalstsq.TensorMapLstsqCV": TensorMapLstsqCV,
    "skmetalstsq.TensorMapBayesianRidge": TensorMapBayesianRidge,
    "skmetalstsq.TensorMapStandardScaler": TensorMapStandardScaler,
    "sklearn.pipeline.Pipeline": Pipeline,
}

#: The dataclasses of a partial fit's state (``factors_``), by name.
RECORDS = {"Factor": Factor, "BatchLayout": BatchLayout, "PartialBlock": PartialBlock}

#: The dtypes of stored arrays.
ARRAY_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)

#: The largest manifest :func:`load` reads, in bytes: a bound of its own, not one
#: the file gives (the manifests :func:`save` writes hold no arrays and are far
#: smaller).
MAX_MANIFEST_SIZE = 64 * 2**20

#: The deepest nesting of JSON arrays and objects :func:`load` parses in a manifest
#: (the manifests :func:`save` writes nest about 20 deep, a Pipeline a few more).
MAX_MANIFEST_DEPTH = 100

_SAVE = "skmetalstsq.save"
_LOAD = "skmetalstsq.load"

#: the date of every member, so that one estimator always gives the same bytes
_DATE = (1980, 1, 1, 0, 0, 0)


# ---------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------


def save(path, estimator):
    """Save an estimator to one file that :func:`load` reads without running code.

    The file is a zip archive: a ``manifest.json`` with the estimator's class,
    hyperparameters and fitted metadata as JSON, and its arrays as metatensor
    ``.mts`` TensorMaps (numpy arrays; torch tensors are stored as numpy arrays with
    their dtype and device recorded, and restored as torch tensors by :func:`load`).
    Everything is checked and encoded before the file is opened; the estimator is
    not changed.

    Parameters
    ----------
    path : str, path-like or binary file object
        Where to write. Any name works; it is a zip archive, which ``unzip -l``
        lists. A path is written atomically: the archive goes to a new file
        beside it, which then replaces the file at ``path`` (keeping its
        permissions), so that a save that fails midway (a full disk) leaves the
        previous file as it was. A file object is written to where it stands.
    estimator : TensorMapLstsq, TensorMapLstsqCV, TensorMapBayesianRidge, \
TensorMapStandardScaler or Pipeline
        Fitted or not. A Pipeline (``sklearn.pipeline.Pipeline``) must have steps
        of these classes (or ``"passthrough"`` / None). Hyperparameters must be
        None, bool, int, float, str, lists, tuples and dicts of these, numpy
        arrays, torch tensors or devices, TensorMaps (e.g. ``alpha``) or scorers
        of :func:`skmetalstsq.metrics.scorer` (with the metadata request of their
        ``set_score_request``, which :func:`load` restores whether metadata
        routing is enabled or not).

    Raises
    ------
    TypeError
        For another class (subclasses and TensorMapFunctionTransformer included),
        a hyperparameter or attribute that cannot be stored without storing code
        (a callable ``scoring``, a ``cv`` splitter object, ...), or an attribute
        named like a method or property of its class. The message names the
        estimator, the step of a Pipeline and the parameter or attribute.
    OSError
        Of the kind ``open(path, "wb")`` raises (``FileNotFoundError`` for a
        missing folder, ``PermissionError``, ...), naming ``path``.

    See Also
    --------
    load : the estimator back from the file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import skmetalstsq
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    >>> model = skmetalstsq.TensorMapLstsq().fit(X, X @ [2.0, -1.0])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "model.zip")
    ...     skmetalstsq.save(path, model)
    ...     loaded = skmetalstsq.load(path)
    >>> np.array_equal(loaded.predict(X), model.predict(X))
    True
    >>> loaded.get_params() == model.get_params()
    True
    """
    _check_destination(path)
    writer = _Writer()
    node = writer.estimator(estimator, "")
    members = writer.members()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(writer.uses_torch),
        "estimator": node,
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()
        },
    }
    text = json.dumps(manifest, indent=1, allow_nan=False)
    if hasattr(path, "write") and not isinstance(path, (str, os.PathLike)):
        _write_archive(path, text, members)
        return
    _replace_atomically(os.fspath(path), lambda stream: _write_archive(stream, text, members))


def _write_archive(stream, text, members):
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(MANIFEST, _DATE), text)
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, _DATE), data)


def _replace_atomically(path, write):
    """Call ``write`` on a new file beside ``path``, then move it onto ``path``.

    A save that fails midway (a full disk) leaves the file at ``path`` as it was and
    no temporary file. The new file gets the permissions an existing file at
    ``path`` had, or those ``open(path, "wb")`` gives a new one (the umask applies);
    a symbolic link at ``path`` keeps pointing to the file it points to.
    """
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    try:
        descriptor, temporary = _new_file(folder, name)
    except OSError as error:  # a missing folder, one not writable, ...: as open(path, "wb")
        raise type(error)(error.errno, f"{_SAVE}: {error.strerror}", path) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass  # a new file: the mode os.open gave it, as open() would
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _new_file(folder, name):
    """A new file ``.<name>.<random>.tmp`` in ``folder``: (descriptor, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def _check_destination(path):
    if not (isinstance(path, (str, os.PathLike)) or hasattr(path, "write")):
        raise TypeError(
            f"{_SAVE}: path must be a str, a path-like object or a binary file object, "
            f"got {type(path).__name__}"
        )


def _versions(uses_torch):
    import sklearn

    from . import __version__

    versions = {
        "skmetalstsq": __version__,
        "scikit-learn": sklearn.__version__,
        "metatensor-core": metatensor.__version__,
        "numpy": np.__version__,
    }
    if uses_torch:
        versions["torch"] = sys.modules["torch"].__version__
    return versions


def _class_name(estimator, where):
    """The manifest's name of ``estimator``'s class (exactly one of :data:`CLASSES`)."""
    for name, cls in CLASSES.items():
        if type(estimator) is cls:
            return name
    kind = type(estimator).__name__
    hint = ""
    if kind == "TensorMapFunctionTransformer":
        hint = (
            " (its func would have to be imported and run when loading; build it again "
            "in code and put the loaded steps in a Pipeline with it)"
        )
    elif any(isinstance(estimator, cls) for cls in CLASSES.values()):
        hint = " (a subclass: loading it as its base class could change what it does)"
    raise TypeError(
        f"{_SAVE}: {where}cannot save a {kind}{hint}; a model file holds only "
        "TensorMapLstsq, TensorMapLstsqCV, TensorMapBayesianRidge, TensorMapStandardScaler and "
        "sklearn.pipeline.Pipeline of them"
    )


def storable_attribute(cls, name):
    """Whether instances of ``cls`` may hold the attribute ``name`` in a model file.

    Any name of an instance attribute is (fitted ones end in ``_``, private ones
    such as the key names of partial fits start with one), except special names
    (``__...``) and names the class itself has (a method or a property).
    """
    return (
        isinstance(name, str)
        and name.isidentifier()
        and not name.startswith("__")
        and not hasattr(cls, name)
    )


def _torch():
    """The torch module if it was imported (no value can be a tensor otherwise)."""
    return sys.modules.get("torch")


def memory_order(strides):
    """The axes of an array from the largest stride to the smallest (ties in order)."""
    return [int(axis) for axis in np.argsort([-abs(s) for s in strides], kind="stable")]


def _two_dimensional(shape):
    rows = shape[0] if len(shape) else 1
    return rows, int(np.prod(shape[1:], dtype=np.int64))


class _Writer:
    """Encodes an estimator as JSON values, collecting its arrays and TensorMaps."""

    def __init__(self):
        self.tensors = []  # numpy TensorMaps, member tensors/<position>.mts
        self.arrays = {}  # dtype name -> 2-D numpy arrays, member arrays/<dtype>.mts
        self.uses_torch = False

    def members(self):
        """Every member but the manifest, by name, as bytes."""
        members = {}
        for position, tensor in enumerate(self.tensors):
            members[f"tensors/{position}.mts"] = _mts_bytes(tensor)
        for dtype, arrays in self.arrays.items():
            keys = Labels(["array"], np.arange(len(arrays), dtype=np.int32).reshape(-1, 1))
            blocks = [
                TensorBlock(
                    array,
                    Labels.range("row", array.shape[0]),
                    [],
                    Labels.range("column", array.shape[1]),
                )
                for array in arrays
            ]
            members[f"arrays/{dtype}.mts"] = _mts_bytes(TensorMap(keys, blocks))
        return members

    def estimator(self, estimator, where):
        name = _class_name(estimator, where)
        label = f"{where}{type(estimator).__name__}"
        params = estimator.get_params(deep=False)
        encoded = {}
        for parameter, value in params.items():
            if isinstance(estimator, Pipeline) and parameter == "steps" and type(value) is list:
                encoded[parameter] = [self._step(step, label) for step in value]
            else:
                encoded[parameter] = self.value(value, f"{label} parameter '{parameter}'")
        attributes = {}
        for attribute, value in vars(estimator).items():
            if attribute in params:
                continue
            if not storable_attribute(type(estimator), attribute):
                raise TypeError(
                    f"{_SAVE}: {label} has the attribute '{attribute}', which a model file "
                    "cannot hold (a special name or a name of its class); delete it before "
                    "saving"
                )
            attributes[attribute] = self.value(value, f"{label} attribute '{attribute}'")
        return {"type": "estimator", "class": name, "params": encoded, "attributes": attributes}

    def _step(self, step, label):
        if type(step) is tuple and len(step) == 2 and type(step[0]) is str:
            name, estimator = step
            where = f"{label} step '{name}': "
            if estimator is None or (type(estimator) is str and estimator == "passthrough"):
                value = estimator
            else:
                value = self.estimator(estimator, where)
            return {"type": "tuple", "items": [name, value]}
        return self.value(step, f"{label} parameter 'steps'")

    def value(self, value, where):
        """``value`` as JSON, its arrays and TensorMaps collected for their members."""
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"type": "float", "value": repr(value)}
        if kind is list:
            return [self.value(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if kind is tuple:
            items = [self.value(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return {"type": "tuple", "items": items}
        if kind is dict:
            items = [
                [self.value(key, f"{where} key {key!r}"), self.value(item, f"{where}[{key!r}]")]
                for key, item in value.items()
            ]
            return {"type": "dict", "items": items}
        if isinstance(value, np.generic) and value.dtype.name in ARRAY_DTYPES:
            return {
                "type": "numpy_scalar",
                "dtype": value.dtype.name,
                "value": self.value(value.item(), where),
            }
        if isinstance(value, np.str_):
            return {"type": "numpy_str", "value": str(value)}
        if isinstance(value, np.ma.MaskedArray):
            return {
                "type": "masked_array",
                "data": self.value(np.ma.getdata(value), where),
                "mask": self.value(np.ma.getmaskarray(value), where),
                "fill_value": self.value(value.fill_value, f"{where} fill value"),
            }
        if kind is np.ndarray:
            return self._ndarray(value, where)
        if isinstance(value, TensorMap):
            return self._tensor_map(value, where)
        if is_torch_map(value):
            return self._tensor_map(as_core(value), where, torch_map=True)
        if isinstance(value, Labels):
            return _labels_json(value)
        if isinstance(value, np.dtype) and value.name in ARRAY_DTYPES:
            return {"type": "numpy_dtype", "name": value.name}
        if kind is TensorMapScorer:
            node = {
                "type": "scorer",
                "name": self.value(value.name, where),
                "gradient": self.value(value.gradient, where),
            }
            request = value.get_metadata_routing().score.requests
            if request != _DEFAULT_SCORE_REQUEST:
                problem = _score_request_problem(request)
                if problem:
                    raise TypeError(f"{_SAVE}: {where} is a scorer whose score request {problem}")
                node["score_request"] = dict(request)
            return node
        if kind in RECORDS.values():
            content = {f.name: self.value(getattr(value, f.name), where) for f in fields(value)}
            return {"type": "record", "class": kind.__name__, "fields": content}
        torch = _torch()
        if torch is not None:
            if isinstance(value, torch.Tensor):
                return self._array(value, where)
            if isinstance(value, torch.dtype):
                return {"type": "torch_dtype", "name": str(value).removeprefix("torch.")}
            if isinstance(value, torch.device):
                return {"type": "torch_device", "value": str(value)}
        if isinstance(value, BaseEstimator):
            return self.estimator(value, f"{where}: ")
        raise TypeError(f"{_SAVE}: {where} is {_describe(value)}, {_UNSTORABLE}")

    def _ndarray(self, array, where):
        if array.dtype.name in ARRAY_DTYPES:
            return self._array(array, where)
        if array.dtype.kind == "O":
            items = [self.value(item, f"{where}[{i}]") for i, item in enumerate(array.reshape(-1))]
            return {"type": "object_array", "shape": list(array.shape), "items": items}
        if array.dtype.kind == "U":
            return {
                "type": "str_array",
                "length": array.dtype.itemsize // 4,
                "shape": list(array.shape),
                "items": [str(item) for item in array.reshape(-1)],
            }
        raise TypeError(f"{_SAVE}: {where} is an array of dtype {array.dtype}, {_UNSTORABLE}")

    def _array(self, array, where):
        """A reference to ``array`` (numpy or torch), stored in its dtype's member."""
        reference = {"type": "array"}
        if isinstance(array, np.ndarray):
            host, strides = array, array.strides
            reference["library"] = "numpy"
        else:
            self.uses_torch = True
            host, strides = _torch_to_numpy(array, where), array.stride()
            reference["library"] = "torch"
            reference["device"] = str(array.device)
        dtype = host.dtype.name
        if dtype not in ARRAY_DTYPES:
            raise TypeError(f"{_SAVE}: {where} is an array of dtype {dtype}, {_UNSTORABLE}")
        order = memory_order(strides)
        stored = np.asarray(host.transpose(order), order="C")
        arrays = self.arrays.setdefault(dtype, [])
        reference.update(dtype=dtype, index=len(arrays), shape=list(host.shape), order=order)
        arrays.append(stored.reshape(_two_dimensional(stored.shape)))
        return reference

    def _tensor_map(self, tensor, where, torch_map=False):
        """A reference to a member holding ``tensor`` with numpy arrays.

        ``torch_map``: whether ``tensor`` is the core view of a
        metatensor.torch.TensorMap, which :func:`load` gives back as one.
        """
        records, blocks, libraries = [], [], set()

        def host(array, what):
            if isinstance(array, np.ndarray):
                libraries.add(("numpy", None))
                values, strides = array, array.strides
            else:
                self.uses_torch = True
                libraries.add(("torch", str(array.device)))
                values, strides = _torch_to_numpy(array, f"{where} {what}"), array.stride()
            if values.dtype.name not in ARRAY_DTYPES:
                raise TypeError(
                    f"{_SAVE}: {where} holds arrays of dtype {values.dtype}, {_UNSTORABLE}"
                )
            records.append(
                {
                    "dtype": values.dtype.name,
                    "shape": list(values.shape),
                    "order": memory_order(strides),
                }
            )
            return values

        for position, block in enumerate(tensor.blocks()):
            new = TensorBlock(
                host(block.values, f"block {position}"),
                block.samples,
                block.components,
                block.properties,
            )
            for parameter in block.gradients_list():
                gradient = block.gradient(parameter)
                new.add_gradient(
                    parameter,
                    TensorBlock(
                        host(gradient.values, f"block {position} gradient '{parameter}'"),
                        gradient.samples,
                        gradient.components,
                        new.properties,
                    ),
                )
            blocks.append(new)
        (library, device), *others = sorted(libraries, key=str) or [("numpy", None)]
        if others:  # pragma: no cover - metatensor refuses such TensorMaps
            raise TypeError(f"{_SAVE}: {where} mixes arrays of several libraries or devices")
        reference = {
            "type": "tensor_map",
            "member": f"tensors/{len(self.tensors)}.mts",
            "library": library,
            "arrays": records,
        }
        if device is not None:
            reference["device"] = device
        if torch_map:
            reference["class"] = "metatensor.torch.TensorMap"
        self.tensors.append(TensorMap(tensor.keys, blocks))
        return reference


#: The score request of a scorer on which set_score_request was not called (a file
#: without ``score_request`` gives it).
_DEFAULT_SCORE_REQUEST = {"sample_weight": None}


def _score_request_problem(request):
    """What is wrong with ``request`` as a scorer's stored score request, or None.

    Its keys are the metadata a scorer takes (``sample_weight``), each value True,
    False, None or an alias (a Python identifier), as ``set_score_request`` takes.
    """
    names = list(_DEFAULT_SCORE_REQUEST)
    if type(request) is not dict or list(request) != names:
        shown = list(request) if type(request) is dict else _what(request)
        return f"must name the metadata {names}, got {shown}"
    for name, alias in request.items():
        alias_name = type(alias) is str and alias.isidentifier()
        if not (alias is None or type(alias) is bool or alias_name):
            return (
                f"for {name!r} must be True, False, None or an alias (a Python identifier), "
                f"got {alias!r}"
            )
    return None


_UNSTORABLE = (
    "which a model file cannot hold: it stores None, bool, int, float, str, lists, "
    "tuples and dicts of them, numpy arrays, torch tensors, TensorMaps, Labels and "
    "skmetalstsq.metrics scorers, never objects whose loading would import or run "
    "code. A hyperparameter used only by fit (cv, scoring) can be set to a storable "
    "value with set_params before saving"
)


def _describe(value):
    kind = type(value)
    name = getattr(value, "__qualname__", None) if callable(value) else None
    text = f"a {kind.__module__}.{kind.__qualname__}"
    return f"{text} ({name})" if name else text


def _torch_to_numpy(tensor, where):
    try:
        return tensor.detach().cpu().numpy()
    except TypeError as error:
        raise TypeError(
            f"{_SAVE}: {where} is a torch tensor of dtype {tensor.dtype}, which numpy "
            f"cannot hold ({error})"
        ) from error


def _mts_bytes(tensor):
    buffer = io.BytesIO()
    metatensor.save(buffer, tensor)
    return buffer.getvalue()


def _labels_json(labels):
    return {
        "type": "labels",
        "names": list(labels.names),
        "values": np.asarray(labels.values).tolist(),
    }


# ---------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------


def load(path, *, device=None):
    """Load an estimator written by :func:`save`, without running code from the file.

    The file is refused, before anything is built, when it is not a zip archive or a
    damaged one (a changed byte, a corrupt header), has a compressed or encrypted
    member or one that claims more bytes than the file has, has no manifest, one
    larger than :data:`MAX_MANIFEST_SIZE` or nested deeper than
    :data:`MAX_MANIFEST_DEPTH`, another format or a newer format version, lacks a
    member or has one the manifest does not list, or a member whose size or content
    differs from the size and SHA-256 digest in the manifest or whose arrays are not
    the size their headers declare; and while building, when it names a class that
    is not one a model file holds (:data:`CLASSES`), holds an array that differs from
    what the manifest records of it, refers to a member or an array block a second
    time, holds arrays of strings of more than :data:`MAX_MANIFEST_SIZE` bytes
    together, Labels with repeated entries, a scorer's metadata request of other
    names or values than ``set_score_request`` takes, or fitted attributes of
    another type, shape or dtype than the estimator sets, or that disagree with
    each other (see :data:`FITTED`). What is read and built is bounded by these
    limits, not by sizes the file gives: no member is inflated, none is read past
    the size the file really has, and none is built twice.

    Parameters
    ----------
    path : str, path-like or seekable binary file object
        A file written by :func:`save` (a zip archive, read from its end: a pipe
        or another stream that cannot seek is refused; read it into an
        ``io.BytesIO`` first).
    device : None, str or torch.device, default=None
        Where torch tensors go: None puts each on the device it was saved from
        (its dtype is always the saved one). A device, e.g. ``"cpu"``, puts them all
        there, e.g. to load on a machine without the GPU a model was fitted on.
        numpy arrays stay numpy arrays. The ``device`` hyperparameter of the
        estimator is not changed.

    Returns
    -------
    estimator : TensorMapLstsq, TensorMapLstsqCV, TensorMapBayesianRidge, \
TensorMapStandardScaler or Pipeline
        With the saved hyperparameters (``get_params()`` equal to the saved
        estimator's) and fitted attributes (arrays bit for bit equal, of the same
        library, dtype and memory layout).

    Raises
    ------
    ValueError
        For a file that is refused (see above); the message names the file and
        what is wrong. Also when torch tensors were saved from a CUDA device that is
        not available here (pass ``device="cpu"``).
    TypeError
        For a ``path`` of another type, or a file object that cannot seek.
    ImportError
        When the file holds torch tensors (or ``device`` is given) and torch is not
        installed.

    See Also
    --------
    save : write the file.
    """
    source = _source_name(path)
    target = None if device is None else _resolve_device(device, source)
    with _opened(path) as stream:
        _check_seekable(stream, source)
        size = stream.seek(0, os.SEEK_END)
        try:
            archive = zipfile.ZipFile(stream)
        except Exception as error:  # whatever zipfile raises of a damaged archive
            raise ValueError(
                f"{_LOAD}: {source} is not a zip archive, so not a file written by {_SAVE} "
                f"({type(error).__name__}: {error})"
            ) from None
        with archive:
            _check_entries(archive.infolist(), size, f"{_LOAD}: {source}: member")
            manifest = _read_manifest(archive, source)
            members = _verified_members(archive, manifest, source)
    reader = _Reader(source, members, target)
    node = manifest.get("estimator")
    try:
        if type(node) is not dict or node.get("type") != "estimator":
            raise reader.refuse("the manifest holds no estimator")
        return reader.estimator(node, "")
    except _Refused as error:
        raise ValueError(str(error)) from None
    except (ImportError, MemoryError):
        raise
    except Exception as error:  # a manifest entry of the wrong shape
        raise ValueError(
            f"{_LOAD}: {source} has a malformed manifest ({type(error).__name__}: {error})"
        ) from error


@contextlib.contextmanager
def _opened(path):
    """A binary stream of ``path``: the file opened (and closed), or the file object."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as stream:
            yield stream
    else:
        yield path


def _check_seekable(stream, source):
    seekable = getattr(stream, "seekable", None)
    if not (callable(seekable) and seekable()):
        raise TypeError(
            f"{_LOAD}: {source} cannot seek, and a zip archive is read from its end: "
            "pass a path to a regular file, or a seekable binary file object such as "
            "io.BytesIO(stream.read())"
        )


def _source_name(path):
    if isinstance(path, (str, os.PathLike)):
        return f"'{os.fspath(path)}'"
    if hasattr(path, "read"):
        name = getattr(path, "name", None)
        return f"'{name}'" if isinstance(name, str) else "the file object"
    raise TypeError(
        f"{_LOAD}: path must be a str, a path-like object or a binary file object, got "
        f"{type(path).__name__}"
    )


def _import_torch(source, why):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{_LOAD}: {source} {why}, which needs torch: pip install 'skmetalstsq[torch]'"
        ) from error
    return torch


def _resolve_device(device, source):
    torch = _import_torch(source, f"was asked to load onto device={device!r}")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{_LOAD}: device must be None, a str or a torch.device, got {type(device).__name__}"
        )
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"{_LOAD}: device={device!r} is not a torch device ({error})") from None


def _read_manifest(archive, source):
    names = archive.namelist()
    if MANIFEST not in names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ValueError(
            f"{_LOAD}: {source} is not a file written by {_SAVE}: it has no member "
            f"'{MANIFEST}' (its members: {shown or 'none'})"
        )
    size = archive.getinfo(MANIFEST).file_size
    if size > MAX_MANIFEST_SIZE:
        raise ValueError(
            f"{_LOAD}: {source}: '{MANIFEST}' has {size} bytes, more than the "
            f"{MAX_MANIFEST_SIZE} that {_LOAD} reads (MAX_MANIFEST_SIZE); {_SAVE} writes "
            "far smaller manifests"
        )
    text = _read_member(archive, MANIFEST, source)
    depth = _json_depth(text)
    if depth > MAX_MANIFEST_DEPTH:
        raise ValueError(
            f"{_LOAD}: {source}: '{MANIFEST}' nests arrays and objects {depth} deep, more "
            f"than the {MAX_MANIFEST_DEPTH} that {_LOAD} parses (MAX_MANIFEST_DEPTH)"
        )
    try:
        manifest = json.loads(text.decode("utf-8"))
    except ValueError as error:  # not UTF-8, not JSON, or an integer too long to read
        raise ValueError(f"{_LOAD}: {source}: '{MANIFEST}' is not valid JSON ({error})") from None
    if type(manifest) is not dict or manifest.get("format") != FORMAT:
        found = manifest.get("format") if type(manifest) is dict else type(manifest).__name__
        raise ValueError(
            f"{_LOAD}: {source} is not a file written by {_SAVE}: its manifest gives the "
            f"format {found!r}, not {FORMAT!r}"
        )
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise ValueError(f"{_LOAD}: {source} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{_LOAD}: {source} has format version {version}, written by a newer "
            f"skmetalstsq; this one reads format versions up to {FORMAT_VERSION}: "
            "upgrade skmetalstsq"
        )
    return manifest


def _verified_members(archive, manifest, source):
    """Every member but the manifest, as bytes, checked against the manifest."""
    listed = manifest.get("members")
    if type(listed) is not dict or not all(type(entry) is dict for entry in listed.values()):
        raise ValueError(f"{_LOAD}: {source}: the manifest's 'members' is malformed")
    present = [name for name in archive.namelist() if name != MANIFEST]
    names = set(present)
    missing = [name for name in listed if name not in names]
    if missing:
        raise ValueError(
            f"{_LOAD}: {source} lacks the member(s) {_some(missing)} that its manifest lists"
        )
    unknown = [name for name in present if name not in listed]
    if unknown:
        raise ValueError(
            f"{_LOAD}: {source} has member(s) {_some(unknown)} that its manifest does not list"
        )
    members = {}
    for name, entry in listed.items():
        size = archive.getinfo(name).file_size
        if size != entry.get("size"):
            # checked before reading, so that no member is read past its recorded size
            raise ValueError(
                f"{_LOAD}: {source}: member '{name}' has {size} bytes, but the manifest "
                f"records {entry.get('size')!r}: the file was changed or damaged"
            )
        data = _read_member(archive, name, source)
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256"):
            raise ValueError(
                f"{_LOAD}: {source}: member '{name}' has SHA-256 {digest}, but the "
                f"manifest records {entry.get('sha256')!r}: the file was changed or damaged"
            )
        _check_mts(data, name, source)
        members[name] = data
    return members


def _some(names, count=5):
    """The first ``count`` of ``names``, for a message."""
    return str(names[:count])[:-1] + (", ...]" if len(names) > count else "]")


def _check_entries(infos, size, what):
    """Refuse zip entries that are not stored, or claim more bytes than ``size``.

    ``what`` starts the messages (e.g. ``"skmetalstsq.load: 'model.zip': member"``).
    :func:`save` (and metatensor) write stored entries only, so that what an entry
    holds is never more than the bytes it takes in the file.
    """
    names, total = set(), 0
    for info in infos:
        name = info.filename
        if name in names:
            raise ValueError(f"{what} '{name}' appears twice: the file was changed or damaged")
        names.add(name)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            kind = (
                "encrypted" if info.flag_bits & 0x1 else f"compressed (method {info.compress_type})"
            )
            raise ValueError(
                f"{what} '{name}' is {kind}; {_SAVE} writes every member stored "
                "(uncompressed), and no other file is read"
            )
        total += info.file_size
        end = info.header_offset + info.compress_size
        if info.compress_size != info.file_size or end > size or total > size:
            raise ValueError(
                f"{what} '{name}' claims {info.file_size} bytes (stored in "
                f"{info.compress_size}, ending at byte {end}), more than the {size} bytes of "
                "the file hold: the file was changed or damaged"
            )


def _read_member(archive, name, source):
    """The bytes of the (checked, stored) member ``name``, read to its size at most."""
    info = archive.getinfo(name)
    try:
        with archive.open(info) as stream:
            data = stream.read(info.file_size + 1)
    except Exception as error:  # whatever zipfile raises of a damaged member (a CRC, ...)
        raise ValueError(
            f"{_LOAD}: {source}: member '{name}' cannot be read, the file was changed or "
            f"damaged ({type(error).__name__}: {error})"
        ) from None
    if len(data) != info.file_size:
        raise ValueError(
            f"{_LOAD}: {source}: member '{name}' has {len(data)} bytes, not the "
            f"{info.file_size} its entry records: the file was changed or damaged"
        )
    return data


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _json_depth(text):
    """The deepest nesting of arrays and objects in the JSON ``text`` (bytes).

    Counted without parsing (the brackets outside strings, a block of bytes at a
    time), so that a deep manifest is refused before the parser recurses into it.
    """
    codes = np.frombuffer(_JSON_STRING.sub(b'""', text), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, len(codes), 2**20):
        chunk = codes[start : start + 2**20]
        opening = (chunk == ord("[")) | (chunk == ord("{"))
        closing = (chunk == ord("]")) | (chunk == ord("}"))
        running = depth + np.cumsum(opening.astype(np.int64) - closing)
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _check_mts(data, name, source):
    """Refuse a member that is not a metatensor file of stored ``.npy`` arrays, each of
    the size its header declares (so that metatensor's reader allocates no more than
    the member holds) and none of objects."""

    def refuse(detail):
        return ValueError(
            f"{_LOAD}: {source}: member '{name}' is not a metatensor TensorMap written by "
            f"{_SAVE} ({detail})"
        )

    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except Exception as error:  # whatever zipfile raises of something else
        raise refuse(f"{type(error).__name__}: {error}") from None
    with inner:
        infos = inner.infolist()
        try:
            _check_entries(infos, len(data), "entry")
        except ValueError as error:
            raise refuse(error) from None
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise refuse(f"entry '{info.filename}' is not a .npy array")
            try:
                with inner.open(info) as stream:
                    shape, _, dtype = _NPY_HEADERS[np.lib.format.read_magic(stream)](stream)
                    offset = stream.tell()
            except Exception as error:  # a damaged entry, another .npy version, ...
                raise refuse(
                    f"entry '{info.filename}' has no valid .npy header: "
                    f"{type(error).__name__}: {error}"
                ) from None
            if dtype.hasobject:
                raise refuse(f"entry '{info.filename}' holds Python objects ({dtype})")
            needed = offset + math.prod(shape) * dtype.itemsize
            if needed != info.file_size:
                raise refuse(
                    f"entry '{info.filename}' declares {dtype} values of shape {shape}, "
                    f"{needed} bytes with its header, but has {info.file_size}"
                )


class _Refused(ValueError):
    """A file refused while building from it (raised as a ValueError by :func:`load`)."""


def _permutation(order, ndim):
    return type(order) is list and sorted(order) == list(range(ndim))


class _Reader:
    """Builds an estimator from manifest values and the (verified) members."""

    def __init__(self, source, members, device):
        self.source = source
        self.members = members
        self.device = device
        self.array_members = {}
        self.referenced = set()  # members and (member, block) built from, once each
        self.string_bytes = 0  # of the str arrays built

    def _once(self, reference, what, where):
        """Refuse a second reference to a member or array block: :func:`save` writes
        each array once, so that what load builds is bounded by the file's size."""
        if reference in self.referenced:
            raise self.refuse(
                f"{where} refers to {what} a second time; {_SAVE} writes every array once, "
                "and load builds each at most once"
            )
        self.referenced.add(reference)

    def refuse(self, text):
        return _Refused(f"{_LOAD}: {self.source}: {text}")

    def estimator(self, node, where):
        name = node["class"]
        cls = CLASSES.get(name) if type(name) is str else None
        if cls is None:
            raise self.refuse(
                f"{where}the class {name!r} is not one a model file may hold "
                f"({', '.join(CLASSES)}); it is not imported"
            )
        label = f"{where}{cls.__name__}"
        params, attributes = node["params"], node["attributes"]
        if type(params) is not dict or type(attributes) is not dict:
            raise self.refuse(f"{label}: params and attributes must be JSON objects")
        known = cls._get_param_names()
        unknown = [parameter for parameter in params if parameter not in known]
        if unknown:
            raise self.refuse(f"{label} has no parameter(s) {unknown} (it has {known})")
        decoded = {}
        for parameter, value in params.items():
            if cls is Pipeline and parameter == "steps" and type(value) is list:
                decoded[parameter] = [self._step(step, label) for step in value]
            else:
                decoded[parameter] = self.value(value, f"{label} parameter '{parameter}'")
        estimator = cls(**decoded)
        for attribute, value in attributes.items():
            if not storable_attribute(cls, attribute):
                raise self.refuse(
                    f"{label} cannot hold the attribute {attribute!r}: a special name or a "
                    "name of its class"
                )
            setattr(estimator, attribute, self.value(value, f"{label} attribute '{attribute}'"))
        if cls is Pipeline:
            self._check_steps(estimator, label)
        else:
            self._check_fitted(estimator, label)
        return estimator

    def _check_fitted(self, estimator, label):
        """Refuse fitted attributes that :meth:`predict` or ``transform`` could not use:
        of another type, shape or dtype, disagreeing with each other, or missing."""
        checks, groups = FITTED[type(estimator)]
        state = vars(estimator)
        public = [name for name in checks if name in state and not name.startswith("_")]
        for position, (first, *others) in enumerate(groups):
            if first in state or (position == 0 and public):
                missing = [name for name in (first, *others) if name not in state]
                if missing:
                    having = first if first in state else public[0]
                    raise self.refuse(
                        f"{label} has the fitted attribute '{having}' but lacks {missing}"
                    )
        for name, check in checks.items():
            if name in state:
                problem = check(state[name], state)
                if problem:
                    raise self.refuse(f"{label} attribute '{name}' {problem}")

    def _check_steps(self, pipeline, label):
        """Refuse Pipeline steps that are not (unique name, estimator of the file) with
        a transformer before the last."""
        steps, names = pipeline.steps, []
        if type(steps) is not list or not steps:
            raise self.refuse(f"{label} parameter 'steps' must be a non-empty list")
        for position, step in enumerate(steps):
            if type(step) is not tuple or len(step) != 2 or type(step[0]) is not str:
                raise self.refuse(f"{label} step {position} must be a (name, estimator) tuple")
            name, estimator = step
            skipped = estimator is None or (type(estimator) is str and estimator == "passthrough")
            if "__" in name or name in names or name in Pipeline._get_param_names():
                raise self.refuse(
                    f"{label} step names must be unique, without '__' and not a parameter "
                    f"name, got {name!r}"
                )
            names.append(name)
            if not skipped and type(estimator) not in CLASSES.values():
                raise self.refuse(f"{label} step {name!r} is {_what(estimator)}, not an estimator")
            if not skipped and position < len(steps) - 1 and not hasattr(estimator, "transform"):
                raise self.refuse(
                    f"{label} step {name!r} is a {type(estimator).__name__}, which does not "
                    "transform, before the last step"
                )

    def _step(self, step, label):
        if type(step) is dict and step.get("type") == "tuple":
            name, value = step["items"]
            if type(value) is dict and value.get("type") == "estimator":
                return (name, self.estimator(value, f"{label} step {name!r}: "))
            return (name, self.value(value, f"{label} step {name!r}"))
        return self.value(step, f"{label} parameter 'steps'")

    def value(self, data, where):
        """The Python value of a manifest value (see ``_Writer.value``)."""
        if data is None or type(data) in (bool, int, float, str):
            return data
        if type(data) is list:
            return [self.value(item, where) for item in data]
        kind = data.get("type") if type(data) is dict else None
        decode = self._DECODERS.get(kind) if type(kind) is str else None
        if decode is None:
            raise self.refuse(f"{where} has a value of unknown type {kind!r}")
        return decode(self, data, where)

    def _float(self, data, where):
        text = data["value"]
        if text not in ("nan", "inf", "-inf"):
            raise self.refuse(f"{where} has the float {text!r}")
        return float(text)

    def _tuple(self, data, where):
        return tuple(self.value(item, where) for item in data["items"])

    def _dict(self, data, where):
        return {self.value(key, where): self.value(item, where) for key, item in data["items"]}

    def _numpy_scalar(self, data, where):
        return self._dtype(data["dtype"], where).type(self.value(data["value"], where))

    def _numpy_str(self, data, where):
        value = data["value"]
        if type(value) is not str:
            raise self.refuse(f"{where} has the numpy string {value!r}")
        return np.str_(value)

    def _masked_array(self, data, where):
        return np.ma.MaskedArray(
            self.value(data["data"], where),
            mask=self.value(data["mask"], where),
            fill_value=self.value(data["fill_value"], where),
        )

    def _object_array(self, data, where):
        shape = self._shape(data["shape"], where)
        items = [self.value(item, where) for item in data["items"]]
        if len(items) != math.prod(shape):
            raise self.refuse(f"{where}: {len(items)} items for an array of shape {shape}")
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(shape)

    def _str_array(self, data, where):
        shape, length = self._shape(data["shape"], where), data["length"]
        items = data["items"]
        valid = type(length) is int and length >= 0 and all(type(item) is str for item in items)
        if not valid or len(items) != math.prod(shape):
            raise self.refuse(f"{where}: a malformed array of strings")
        size = 4 * length * len(items)  # 4 bytes a character
        if self.string_bytes + size > MAX_MANIFEST_SIZE:
            raise self.refuse(
                f"{where}: an array of {len(items)} strings of {length} characters, more "
                f"than the {MAX_MANIFEST_SIZE} bytes (MAX_MANIFEST_SIZE) that load builds "
                f"for all arrays of strings together ({self.string_bytes} before it)"
            )
        self.string_bytes += size
        return np.array(items, dtype=f"<U{length}").reshape(shape)

    def _labels(self, data, where):
        names = data["names"]
        if type(names) is not list or not all(type(name) is str for name in names):
            raise self.refuse(f"{where}: Labels names must be a list of str")
        values = np.array(data["values"], dtype=np.int32).reshape(len(data["values"]), len(names))
        try:
            return Labels(names, values)
        except metatensor.MetatensorError as error:  # repeated entries, invalid names
            raise self.refuse(
                f"{where}: Labels with repeated entries or invalid names ({error})"
            ) from None

    def _numpy_dtype(self, data, where):
        return self._dtype(data["name"], where)

    def _torch_dtype(self, data, where):
        name = data["name"]
        if name not in ARRAY_DTYPES:
            raise self.refuse(f"{where} has the torch dtype {name!r}")
        torch = _import_torch(self.source, "holds torch dtypes")
        return getattr(torch, name)

    def _torch_device(self, data, where):
        torch = _import_torch(self.source, "holds torch devices")
        value = data["value"]
        try:
            return torch.device(value)
        except (RuntimeError, TypeError):
            raise self.refuse(
                f"{where} has the device {value!r}, which torch does not know"
            ) from None

    def _scorer(self, data, where):
        restored = scorer(
            self.value(data["name"], where), gradient=self.value(data["gradient"], where)
        )
        request = data.get("score_request", _DEFAULT_SCORE_REQUEST)
        problem = _score_request_problem(request)
        if problem:
            raise self.refuse(f"{where}: the scorer's score request {problem}")
        if request != _DEFAULT_SCORE_REQUEST:
            with config_context(enable_metadata_routing=True):  # its request, routing on or off
                restored.set_score_request(**request)
        return restored

    def _record(self, data, where):
        cls = RECORDS.get(data["class"]) if type(data["class"]) is str else None
        if cls is None:
            raise self.refuse(f"{where} names the record class {data['class']!r}")
        content = data["fields"]
        names = [f.name for f in fields(cls)]
        if type(content) is not dict or sorted(content) != sorted(names):
            raise self.refuse(f"{where}: a {cls.__name__} must have the fields {names}")
        return cls(**{name: self.value(value, where) for name, value in content.items()})

    def _estimator_value(self, data, where):
        return self.estimator(data, f"{where}: ")

    def _dtype(self, name, where):
        if name not in ARRAY_DTYPES:
            raise self.refuse(f"{where} has the dtype {name!r}; arrays are of {ARRAY_DTYPES}")
        return np.dtype(name)

    def _shape(self, shape, where):
        if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
            raise self.refuse(f"{where} has the shape {shape!r}")
        return tuple(shape)

    def _member(self, name, where, prefix):
        if type(name) is not str or not name.startswith(prefix) or name not in self.members:
            raise self.refuse(f"{where} refers to the member {name!r}, which the file lacks")
        self._once(name, f"the member '{name}'", where)
        try:
            return metatensor.io.load_buffer(self.members[name])
        except Exception as error:  # any failure of the parser is a refused file
            raise self.refuse(f"member '{name}' is not a metatensor TensorMap ({error})") from None

    def _arrays_of(self, dtype, where):
        """The blocks of ``arrays/<dtype>.mts`` by the key ``array``, loaded once."""
        name = f"arrays/{dtype}.mts"
        if name not in self.array_members:
            tensor = self._member(name, where, "arrays/")
            if tensor.keys.names != ["array"]:
                raise self.refuse(f"member '{name}' has keys {tensor.keys.names}, not ['array']")
            self.array_members[name] = {
                int(key.values[0]): block.values for key, block in tensor.items()
            }
        return name, self.array_members[name]

    def _array(self, data, where):
        dtype = self._dtype(data["dtype"], where).name
        shape, order, index = self._shape(data["shape"], where), data["order"], data["index"]
        if not _permutation(order, len(shape)):
            raise self.refuse(f"{where} has the memory order {order!r} for shape {list(shape)}")
        name, arrays = self._arrays_of(dtype, where)
        if type(index) is not int or index not in arrays:
            raise self.refuse(
                f"{where} refers to block {index!r} of member '{name}', which it lacks"
            )
        self._once((name, index), f"block {index} of member '{name}'", where)
        stored = arrays[index]
        permuted = tuple(shape[axis] for axis in order)
        if stored.dtype.name != dtype or stored.shape != _two_dimensional(permuted):
            raise self.refuse(
                f"block {index} of member '{name}' holds {stored.dtype.name} values of shape "
                f"{stored.shape}, but the manifest records for {where} an array of shape "
                f"{list(shape)} ({dtype})"
            )
        values = np.array(stored.reshape(permuted), order="C").transpose(np.argsort(order))
        return self._restore(values, data, where)

    def _restore(self, values, data, where):
        """``values`` as the library (and torch device) the manifest records."""
        library = data["library"]
        if library == "numpy":
            return values
        if library != "torch":
            raise self.refuse(f"{where} has arrays of the library {library!r}")
        torch = _import_torch(self.source, "holds torch tensors")
        saved = data["device"]
        device = self.device
        if device is None:
            try:
                device = torch.device(saved)
            except (RuntimeError, TypeError):
                raise self.refuse(
                    f"{where} has the device {saved!r}, which torch does not know"
                ) from None
        if device.type == "cuda":
            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (device.index or 0) >= available:
                asked = f"saved on {saved}" if self.device is None else f"asked for {device}"
                raise self.refuse(
                    f"{where} holds torch tensors {asked}, but {available} CUDA device(s) "
                    "are available here: load them onto another device with "
                    "skmetalstsq.load(path, device='cpu')"
                )
        return torch.from_numpy(values).to(device)

    def _tensor_map(self, data, where):
        records = data["arrays"]
        tensor = self._member(data["member"], where, "tensors/")
        arrays = []
        for block in tensor.blocks():
            arrays.append(block.values)
            arrays += [block.gradient(p).values for p in block.gradients_list()]
        if type(records) is not list or len(records) != len(arrays):
            raise self.refuse(
                f"member '{data['member']}' holds {len(arrays)} arrays, but the manifest "
                f"records {len(records) if type(records) is list else records!r} for {where}"
            )
        restored = iter(self._tensor_array(a, r, data, where) for a, r in zip(arrays, records))
        blocks = []
        for block in tensor.blocks():
            new = TensorBlock(next(restored), block.samples, block.components, block.properties)
            for parameter in block.gradients_list():
                gradient = block.gradient(parameter)
                new.add_gradient(
                    parameter,
                    TensorBlock(
                        next(restored), gradient.samples, gradient.components, new.properties
                    ),
                )
            blocks.append(new)
        restored_map = TensorMap(tensor.keys, blocks)
        kind = data.get("class", "metatensor.TensorMap")
        if kind == "metatensor.torch.TensorMap":
            if data["library"] != "torch":
                raise self.refuse(f"{where}: a metatensor.torch.TensorMap of numpy arrays")
            return to_torch_map(restored_map)
        if kind != "metatensor.TensorMap":
            raise self.refuse(f"{where} is a TensorMap of the class {kind!r}")
        return restored_map

    def _tensor_array(self, array, record, data, where):
        dtype = self._dtype(record["dtype"], where).name
        shape, order = self._shape(record["shape"], where), record["order"]
        if array.dtype.name != dtype or array.shape != shape or not _permutation(order, len(shape)):
            raise self.refuse(
                f"member '{data['member']}' holds {array.dtype.name} values of shape "
                f"{list(array.shape)}, but the manifest records for {where} {dtype} values "
                f"of shape {list(shape)}"
            )
        values = np.array(array.transpose(order), order="C").transpose(np.argsort(order))
        return self._restore(values, data, where)

    _DECODERS = {
        "float": _float,
        "tuple": _tuple,
        "dict": _dict,
        "numpy_scalar": _numpy_scalar,
        "numpy_str": _numpy_str,
        "masked_array": _masked_array,
        "object_array": _object_array,
        "str_array": _str_array,
        "array": _array,
        "tensor_map": _tensor_map,
        "labels": _labels,
        "numpy_dtype": _numpy_dtype,
        "torch_dtype": _torch_dtype,
        "torch_device": _torch_device,
        "scorer": _scorer,
        "record": _record,
        "estimator": _estimator_value,
    }


# ---------------------------------------------------------------------------------
# fitted attributes
# ---------------------------------------------------------------------------------

# What load checks of the fitted attributes of each class, so that a loaded
# estimator predicts, or the file is refused: each check takes the attribute's
# value and every attribute of the estimator (``state``), and gives what is wrong
# with it (or None). Attributes these tables do not name (ones a user set) are
# loaded as they are. To store a new fitted attribute, add its check here.

_FLOATS = ("float16", "float32", "float64")


def _is_array(value):
    torch = _torch()
    return type(value) is np.ndarray or (torch is not None and isinstance(value, torch.Tensor))


def _dtype_name(array):
    return str(array.dtype).removeprefix("torch.")


def _what(value):
    if _is_array(value):
        return f"an array of {_dtype_name(value)} values of shape {list(value.shape)}"
    if is_torch_map(value):
        return "a metatensor.torch.TensorMap"
    text = repr(value)
    text = text if len(text) <= 40 else f"{text[:37]}..."
    return f"{text} ({type(value).__name__})"


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _float_array(value, ndim):
    """What is wrong with ``value`` as a numpy or torch array of floats of ``ndim``."""
    if not (_is_array(value) and _dtype_name(value) in _FLOATS and value.ndim == ndim):
        return f"must be a {ndim}-D array of floats, got {_what(value)}"
    return None


def _map_of_rows(value, rows=None):
    """What is wrong with ``value`` as a TensorMap of 2-D float blocks (``rows``
    rows each), without components or gradients."""
    tensor = as_core(value) if is_torch_map(value) else value
    if not isinstance(tensor, TensorMap):
        return f"must be a TensorMap, got {_what(value)}"
    for key, block in tensor.items():
        values = block.values
        problem = _float_array(values, 2)
        if problem is None and (block.components or block.gradients_list()):
            problem = "must have no components or gradients"
        if problem is None and rows is not None and values.shape[0] != rows:
            problem = f"must have {rows} row(s), got {values.shape[0]}"
        if problem:
            return f"block {key_text(key)}: {problem}"
    return None


def _fitted_keys(state):
    """The key tuples of ``weights_`` (checked first), or None without it."""
    weights = state.get("weights_")
    return None if weights is None else key_tuples(as_core(weights).keys)


def _per_key(check):
    """A check of a dict with the keys of ``weights_``, each value passing ``check``."""

    def per_key(value, state):
        keys = _fitted_keys(state)
        if type(value) is not dict or list(value) != keys:
            shown = _some(list(value)) if type(value) is dict else _what(value)
            return f"must be a dict with the keys of weights_, {_some(keys)}, got {shown}"
        for key, item in value.items():
            problem = check(item, state)
            if problem:
                return f"[{key}] {problem}"
        return None

    return per_key


def _weights(value, state):
    return _map_of_rows(value)


def _intercept(value, state):
    weights = as_core(state["weights_"])
    if "coef_" in state:  # fitted on arrays: a float (for all targets), or one per target
        targets = weights.block(0).values.shape[0] if len(weights) == 1 else None
        if _is_real(value) and not _is_array(value):
            return None
        if type(value) is np.ndarray and _float_array(value, 1) is None:
            if value.shape == (targets,):
                return None
        return f"must be a float or a 1-D array of {targets} floats, got {_what(value)}"
    problem = _map_of_rows(value)
    if problem:
        return problem
    intercept = as_core(value)
    if intercept.keys != weights.keys:
        return "must have the keys of weights_"
    for key, block in intercept.items():
        expected = weights.block(key)
        if block.values.shape != (len(expected.samples), 1) or block.samples != expected.samples:
            return f"block {key_text(key)} must have one column and the rows of weights_"
    return None


def _rank(value, state):
    return None if _is_int(value) and value >= 0 else f"must be an int >= 0, got {value!r}"


def _singular_values(value, state):
    return None if value is None else _float_array(value, 1)  # None: gelsy's


def _coef(value, state):
    weights = as_core(state["weights_"])
    if len(weights) != 1:
        return f"comes with arrays, but weights_ has {len(weights)} blocks, not 1"
    shape = tuple(weights.block(0).values.shape)
    if type(value) is not np.ndarray or _dtype_name(value) not in _FLOATS:
        return f"must be a numpy array of floats, got {_what(value)}"
    if value.shape != shape and not (shape[0] == 1 and value.shape == shape[1:]):
        return f"must have the shape {shape} of weights_ (or {shape[1:]} for one target)"
    return None


def _n_features_in(value, state):
    coef = state.get("coef_")
    expected = None if coef is None else coef.shape[-1]
    if not _is_int(value) or value != expected:
        return f"must be the number of columns of coef_, {expected}, got {value!r}"
    return None


def _feature_names_in(value, state):
    count = state.get("n_features_in_")
    valid = type(value) is np.ndarray and value.dtype == object and value.shape == (count,)
    if not valid or not all(isinstance(name, str) for name in value):
        return f"must be a 1-D array of {count} str, got {_what(value)}"
    return None


def _factor(value, state):
    """A :class:`PartialBlock` whose factor matches its layout."""
    if type(value) is not PartialBlock:
        return f"must be a PartialBlock, got {_what(value)}"
    factor, layout = value.factor, value.layout
    if type(factor) is not Factor or type(layout) is not BatchLayout:
        return "must hold a Factor and a BatchLayout"
    labels = [layout.features, layout.targets, *layout.components]
    gradients = layout.gradients
    if type(layout.components) is not list or type(gradients) is not dict:
        return "has a BatchLayout whose components or gradients are malformed"
    for parameter, components in gradients.items():
        if type(parameter) is not str or type(components) is not list:
            return "has a BatchLayout whose gradients are malformed"
        labels += components
    if not all(isinstance(item, Labels) for item in labels):
        return "has a BatchLayout that holds something else than Labels"
    if not (_is_int(factor.n_features) and _is_int(factor.n_rows) and factor.n_rows >= 0):
        return "has a Factor whose n_features or n_rows is not an int"
    weighted = factor.n_weighted
    if weighted is not None and not (_is_int(weighted) and 0 <= weighted <= factor.n_rows):
        return (
            f"has a Factor whose n_weighted is {_what(weighted)}, not None or an int in "
            f"[0, n_rows={factor.n_rows}]"
        )
    if type(factor.intercept) is not bool or _float_array(factor.r, 2):
        return f"has a Factor whose r is {_what(factor.r)}, not a 2-D array of floats"
    width = len(layout.features) + len(layout.targets) + factor.intercept
    if factor.n_features != len(layout.features) or factor.r.shape[1] != width:
        return (
            f"has a Factor of {factor.n_features} features and {factor.r.shape[1]} columns "
            f"for {len(layout.features)} features and {len(layout.targets)} targets"
        )
    if str(value.dtype).removeprefix("torch.") not in _FLOATS:
        return f"has the dtype {value.dtype!r}, not a float dtype"
    return None


def _key_names(value, state):
    if "factors_" not in state:
        return None  # left by a partial fit that fit replaced: not read
    names = list(as_core(state["weights_"]).keys.names)
    return None if value == names else f"must be the key names of weights_, {names}"


def _y_ndim(value, state):
    if "factors_" not in state:
        return None  # left by a partial fit that fit replaced: not read
    expected = (state["coef_"].ndim,) if "coef_" in state else (None,)
    return None if value in expected and not isinstance(value, bool) else f"must be in {expected}"


def _bool(value, state):
    return None if type(value) is bool else f"must be a bool, got {_what(value)}"


def _str(value, state):
    return None if type(value) is str else f"must be a str, got {_what(value)}"


def _real(value, state):
    return None if _is_real(value) else f"must be a float, got {_what(value)}"


def _rcond(value, state):
    return None if value is None else _real(value, state)


def _candidate_index(value, state):
    count = len(state["cv_results_"]["params"])
    if not (_is_int(value) and 0 <= value < count):
        return f"must be an int in [0, {count}), the candidates of cv_results_, got {value!r}"
    return None


def _per_block_choice(check):
    """A check of a value, or with per_block a dict of such values by key."""
    per_key = _per_key(check)

    def choice(value, state):
        return per_key(value, state) if state["per_block"] else check(value, state)

    return choice


def _params(value, state):
    if type(value) is not dict or not all(type(name) is str for name in value):
        return f"must be a dict of parameters by name, got {_what(value)}"
    return None


def _seconds(value, state):
    return None if _is_real(value) and value >= 0 else f"must be a float >= 0, got {_what(value)}"


def _cv_results(value, state):
    if type(value) is not dict or type(value.get("params")) is not list:
        return f"must be a dict with 'params', got {_what(value)}"
    count = len(value["params"])
    for name, column in value.items():
        sized = type(column) is list or isinstance(column, np.ndarray)
        if type(name) is not str or not sized or len(column) != count:
            return f"[{name!r}] must be a list or array of {count} values, one per candidate"
    return None


def _n_splits(value, state):
    return None if _is_int(value) and value >= 1 else f"must be an int >= 1, got {value!r}"


def _statistics(value, state):
    problem = _map_of_rows(value, rows=1)
    if problem or value is state["mean_"]:
        return problem
    value, mean = as_core(value), as_core(state["mean_"])
    if value.keys != mean.keys or any(
        block.properties != mean.block(key).properties for key, block in value.items()
    ):
        return "must have the keys and properties of mean_"
    return None


#: The fitted attributes of TensorMapLstsq and TensorMapLstsqCV, in the order they
#: are checked, with what must be true of them.
_LINEAR = {
    "_torch_maps": _bool,
    "weights_": _weights,
    "intercept_": _intercept,
    "rank_": _per_key(_rank),
    "singular_values_": _per_key(_singular_values),
    "coef_": _coef,
    "n_features_in_": _n_features_in,
    "feature_names_in_": _feature_names_in,
    "factors_": _per_key(_factor),
    "_key_names": _key_names,
    "_y_ndim": _y_ndim,
}

#: What TensorMapLstsqCV adds.
_CV = {
    "block_names_": _per_key(_str),
    "cv_results_": _cv_results,
    "n_splits_": _n_splits,
    "best_score_": _real,
    "best_index_": _per_block_choice(_candidate_index),
    "rcond_": _per_block_choice(_rcond),
    "alpha_": _per_block_choice(_real),
    "best_params_": _per_block_choice(_params),
    "refit_time_": _seconds,
}


def _block_shapes(state):
    """Key tuple -> (n_targets, n_features) of each block of ``weights_``."""
    weights = as_core(state["weights_"])
    return {
        key: tuple(block.values.shape)
        for key, block in zip(key_tuples(weights.keys), weights.blocks())
    }


def _posterior(check):
    """A check of a TensorMapBayesianRidge attribute.

    After a fit on TensorMaps, a dict with the keys of ``weights_``, each value passing
    ``check(value, n_targets, n_features)`` with that block's numbers; after a fit on
    arrays, the one block's value, passing ``check(value, None, n_features)`` for a
    1-D y (no target axis, as scikit-learn's) and ``check(value, n_targets,
    n_features)`` for a 2-D y (``coef_``, checked before, gives the numbers).
    """

    def posterior(value, state):
        if "coef_" in state:
            coef = state["coef_"]
            targets = None if coef.ndim == 1 else coef.shape[0]
            return check(value, targets, coef.shape[-1])
        problem = _per_key(lambda item, state: None)(value, state)
        if problem:
            return problem
        for key, (targets, features) in _block_shapes(state).items():
            problem = check(value[key], targets, features)
            if problem:
                return f"[{key}] {problem}"
        return None

    return posterior


def _numpy_of(value, kind, shape, positive=False):
    """What is wrong with ``value`` as a numpy array of ``kind`` ('float' or 'int')
    values of ``shape`` (or, shape None, a scalar of that kind), > 0 with
    ``positive`` (>= 0 for ints)."""
    if shape is None:
        valid = _is_int(value) if kind == "int" else _is_real(value) and not _is_array(value)
        wanted = "an int" if kind == "int" else "a float"
    else:
        kinds = _FLOATS if kind == "float" else ("int8", "int16", "int32", "int64")
        valid = type(value) is np.ndarray and value.dtype.name in kinds and value.shape == shape
        wanted = f"a numpy array of {kind}s of shape {shape}"
    if positive:
        wanted += " >= 0" if kind == "int" else " > 0"
        bound = 0 if kind == "int" else np.finfo(np.float64).tiny
        valid = valid and bool(np.all(np.asarray(value) >= bound))
    return None if valid else f"must be {wanted}, got {_what(value)}"


def _per_target(kind, positive=False):
    """One value per target: an array (n_targets,), or a scalar for a 1-D y."""

    def check(value, targets, features):
        shape = None if targets is None else (targets,)
        return _numpy_of(value, kind, shape, positive)

    return _posterior(check)


def _sigma(value, targets, features):
    square = (features, features)
    return _numpy_of(value, "float", square if targets is None else (targets, *square))


def _x_offset(value, targets, features):
    return _numpy_of(value, "float", (features,))


def _value_weight_sum(value, targets, features):
    if _is_real(value) and not _is_array(value) and value >= 0:
        return None
    return f"must be a float >= 0, got {_what(value)}"


def _scores(value, targets, features):
    def one(item):
        valid = type(item) is np.ndarray and item.dtype.name in _FLOATS and item.ndim == 1
        return valid and item.shape[0] >= 1

    if targets is None:
        return None if one(value) else f"must be a 1-D numpy array of floats, got {_what(value)}"
    if type(value) is list and len(value) == targets and all(one(item) for item in value):
        return None
    return f"must be a list of {targets} 1-D numpy arrays of floats, got {_what(value)}"


#: What TensorMapBayesianRidge adds to TensorMapLstsq's attributes.
_BAYES = {
    "alpha_": _per_target("float", positive=True),
    "lambda_": _per_target("float", positive=True),
    "sigma_": _posterior(_sigma),
    "n_iter_": _per_target("int", positive=True),
    "scores_": _posterior(_scores),
    "X_offset_": _posterior(_x_offset),
    "value_weight_sum_": _posterior(_value_weight_sum),
}

#: What every fitted TensorMapLstsqCV has (files of earlier versions lack the others).
_CV_FITTED = (
    "block_names_",
    "cv_results_",
    "n_splits_",
    "best_score_",
    "best_index_",
    "rcond_",
    "alpha_",
)

#: The fitted attributes of each class a model file holds: (checks, groups). A
#: group's first attribute comes with all the others of the group; the first group
#: is what every fitted estimator has, and comes with any of the others.
FITTED = {
    TensorMapLstsq: (
        _LINEAR,
        [
            ("weights_", "intercept_", "rank_", "singular_values_"),
            ("coef_", "n_features_in_"),
            ("n_features_in_", "coef_"),
            ("feature_names_in_", "n_features_in_"),
            ("factors_", "_key_names", "_y_ndim"),
        ],
    ),
    TensorMapLstsqCV: (
        {**_LINEAR, **_CV},
        [
            ("weights_", "intercept_", "rank_", "singular_values_", *_CV_FITTED),
            ("coef_", "n_features_in_"),
            ("n_features_in_", "coef_"),
            ("feature_names_in_", "n_features_in_"),
        ],
    ),
    TensorMapBayesianRidge: (
        {**_LINEAR, **_BAYES},
        [
            (
                "weights_",
                "intercept_",
                "rank_",
                "singular_values_",
                *(name for name in _BAYES if name != "scores_"),
                "factors_",
                "_key_names",
                "_y_ndim",
            ),
            ("coef_", "n_features_in_"),
            ("n_features_in_", "coef_"),
            ("feature_names_in_", "n_features_in_"),
        ],
    ),
    TensorMapStandardScaler: (
        {"mean_": _statistics, "var_": _statistics, "scale_": _statistics},
        [("mean_", "var_", "scale_")],
    ),
}
