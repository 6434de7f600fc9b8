"""skmetalstsq.save / skmetalstsq.load: bit-identical round trips, and files refused.

A loaded estimator is compared with the one that was saved: every hyperparameter and
fitted attribute (type, dtype, strides, device and every bit), and predictions with
``np.array_equal`` / ``torch.equal``. Tampered and foreign files are built by
rewriting the members of a saved file.
"""

import dataclasses
import errno
import io
import json
import math
import os
import pickle
import re
import stat
import struct
import subprocess
import sys
import zipfile

import metatensor
import numpy as np
import pytest
import sklearn
from builders import example_pair, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline

import skmetalstsq
from skmetalstsq import (
    IndexedTensorMap,
    TensorMapBayesianRidge,
    TensorMapFunctionTransformer,
    TensorMapLstsq,
    TensorMapLstsqCV,
    TensorMapStandardScaler,
    metrics,
)

# ---------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------


def _torch():
    return sys.modules.get("torch")


def _is_torch_map(value):
    torch = _torch()
    return torch is not None and isinstance(value, torch.ScriptObject)


def assert_same(loaded, saved, where="estimator"):
    """``loaded`` is ``saved``, to the bit, with the same types, dtypes and layouts."""
    torch = _torch()
    if _is_torch_map(saved):
        assert _is_torch_map(loaded), where
        assert loaded._type().qualified_name() == saved._type().qualified_name(), where
        assert_same(_core(loaded), _core(saved), where)
        return
    assert type(loaded) is type(saved), f"{where}: {type(loaded)} != {type(saved)}"
    if isinstance(saved, np.ma.MaskedArray):
        assert_same(np.ma.getdata(loaded), np.ma.getdata(saved), f"{where} data")
        assert_same(np.ma.getmaskarray(loaded), np.ma.getmaskarray(saved), f"{where} mask")
        assert_same(loaded.fill_value, saved.fill_value, f"{where} fill value")
    elif isinstance(saved, np.ndarray):
        assert loaded.dtype == saved.dtype, where
        assert loaded.shape == saved.shape, where
        _assert_layout(loaded, saved, where)
        if saved.dtype == object:
            for i, (a, b) in enumerate(zip(loaded.reshape(-1), saved.reshape(-1))):
                assert_same(a, b, f"{where}[{i}]")
        else:
            assert np.array_equal(loaded, saved, equal_nan=saved.dtype.kind == "f"), where
    elif torch is not None and isinstance(saved, torch.Tensor):
        assert loaded.dtype == saved.dtype, where
        assert loaded.device == saved.device, where
        _assert_layout(loaded, saved, where)
        assert torch.equal(loaded, saved), where
    elif isinstance(saved, TensorMap):
        assert loaded.keys == saved.keys, where
        for position, (a, b) in enumerate(zip(loaded.blocks(), saved.blocks())):
            _assert_same_block(a, b, f"{where} block {position}")
    elif isinstance(saved, Labels):
        assert loaded.names == saved.names and loaded == saved, where
    elif isinstance(saved, (list, tuple)):
        assert len(loaded) == len(saved), where
        for i, (a, b) in enumerate(zip(loaded, saved)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(saved, dict):
        assert list(loaded) == list(saved), where
        for key in saved:
            assert_same(key, next(k for k in loaded if k == key), f"{where} key {key!r}")
            assert_same(loaded[key], saved[key], f"{where}[{key!r}]")
    elif isinstance(saved, float):
        assert loaded == saved or (math.isnan(loaded) and math.isnan(saved)), where
    elif dataclasses.is_dataclass(saved):
        for field in dataclasses.fields(saved):
            name = field.name
            assert_same(getattr(loaded, name), getattr(saved, name), f"{where}.{name}")
    elif isinstance(saved, metrics.TensorMapScorer):
        assert (loaded.name, loaded.gradient) == (saved.name, saved.gradient), where
    elif hasattr(saved, "get_params"):
        assert_same(vars(loaded), vars(saved), f"{where} ({type(saved).__name__})")
    else:
        assert loaded == saved, f"{where}: {loaded!r} != {saved!r}"


def _assert_layout(loaded, saved, where):
    """The same order of axes in memory, and the same strides when ``saved`` is dense
    (C- or Fortran-ordered, or with permuted axes; a view of a larger buffer comes
    back dense)."""

    def strides(array):
        if isinstance(array, np.ndarray):
            return [s // array.itemsize for s in array.strides]
        return list(array.stride())

    def order(array):
        return sorted(
            (axis for axis, n in enumerate(array.shape) if n > 1),
            key=lambda axis: -abs(strides(array)[axis]),
        )

    assert order(loaded) == order(saved), where
    dense, step = {}, 1
    for axis in reversed(order(saved)):
        dense[axis], step = step, step * saved.shape[axis]
    if all(strides(saved)[axis] == dense[axis] for axis in dense):
        assert all(strides(loaded)[axis] == dense[axis] for axis in dense), where


def _assert_same_block(loaded, saved, where):
    assert loaded.samples == saved.samples, where
    assert len(loaded.components) == len(saved.components), where
    for a, b in zip(loaded.components, saved.components):
        assert a == b, where
    assert loaded.properties == saved.properties, where
    assert_same(loaded.values, saved.values, f"{where} values")
    assert loaded.gradients_list() == saved.gradients_list(), where
    for parameter in saved.gradients_list():
        _assert_same_block(
            loaded.gradient(parameter), saved.gradient(parameter), f"{where} {parameter}"
        )


def _core(torch_map):
    """A metatensor-torch TensorMap as a metatensor TensorMap, built here."""

    def labels(torch_labels):
        values = torch_labels.values.cpu().numpy().astype(np.int32)
        return Labels(list(torch_labels.names), values.reshape(len(values), -1))

    def block(torch_block):
        core = TensorBlock(
            torch_block.values,
            labels(torch_block.samples),
            [labels(c) for c in torch_block.components],
            labels(torch_block.properties),
        )
        for parameter, gradient in torch_block.gradients():
            core.add_gradient(parameter, block(gradient))
        return core

    return TensorMap(labels(torch_map.keys), [block(b) for b in torch_map.blocks()])


def assert_same_prediction(loaded, saved):
    """Predictions (TensorMaps, arrays or metatensor-torch maps) equal to the bit."""
    if isinstance(saved, IndexedTensorMap):
        assert np.array_equal(loaded.entries, saved.entries)
        loaded, saved = loaded.tensor, saved.tensor
    assert_same(loaded, saved, "prediction")


def roundtrip(estimator, tmp_path, **load_options):
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, estimator)
    return skmetalstsq.load(path, **load_options)


# ---------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------


def _data():
    return example_pair(0)


def _indexed():
    X, y = _data()
    return IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")


def _alpha_map(X):
    """A TensorMap alpha: one penalty per property of each block of X."""
    blocks = [
        TensorBlock(
            np.linspace(0.0, 0.5, len(block.properties))[None, :],
            Labels.range("_", 1),
            [],
            block.properties,
        )
        for block in X.blocks()
    ]
    return TensorMap(X.keys, blocks)


def _lstsq():
    X, y = _data()
    model = TensorMapLstsq(
        fit_intercept=True,
        alpha={(0,): 0.1, (1,): 0.0, (3,): np.array([0.0, 0.1, 0.2, 0.3, 0.4])},
        gradient_weights={"positions": 0.5, "cell": 2.0},
    )
    return model.fit(X, y), X


def _gelsy():
    X, y = _data()
    return TensorMapLstsq(driver="gelsy", rcond=1e-8).fit(X, y), X


def _alpha_tensor_map():
    X, y = _data()
    return TensorMapLstsq(alpha=_alpha_map(X)).fit(X, y), X


def _arrays(n_targets):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(30, 4))
    b = A @ rng.normal(size=(4, n_targets or 1)) + 0.1 * rng.normal(size=(30, n_targets or 1))
    b = b[:, 0] if n_targets is None else b
    return TensorMapLstsq(fit_intercept=True).fit(A, b), rng.normal(size=(7, 4))


def _dataframe():
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(2)
    A = pandas.DataFrame(rng.normal(size=(20, 3)), columns=["a", "b", "c"])
    model = TensorMapLstsq().fit(A, rng.normal(size=20))
    return model, A


def _batches():
    X, y = _data()
    first = [
        metatensor.slice(t, "samples", Labels(["system"], np.array([[0], [1]]))) for t in (X, y)
    ]
    rest = [
        metatensor.slice(t, "samples", Labels(["system"], np.array([[2], [3], [4]])))
        for t in (X, y)
    ]
    return first, rest


def _partial_fit():
    (x1, y1), (x2, y2) = _batches()
    model = TensorMapLstsq(fit_intercept=True, alpha=0.01).partial_fit(x1, y1)
    return model.partial_fit(x2, y2), x1


def _cv():
    X, y = _indexed()
    model = TensorMapLstsqCV(
        rconds=[1e-12, None, 1e-3], alphas=(0.0, 1e-2), cv=3, fit_intercept=True
    )
    return model.fit(X, y), X


def _cv_per_block():
    X, y = _indexed()
    scorer = metrics.scorer("neg_rmse", gradient="positions")
    model = TensorMapLstsqCV(rconds=(1e-12, 1e-6, 1e-2), cv=3, per_block=True, scoring=scorer)
    return model.fit(X, y), X


def _scaler():
    X, _ = _data()
    return TensorMapStandardScaler().fit(X), X


def _pipeline():
    X, y = _data()
    model = make_pipeline(TensorMapStandardScaler(with_mean=False), TensorMapLstsq(alpha=0.1))
    return model.fit(X, y), X


def _pipeline_cv():
    X, y = _indexed()
    model = Pipeline(
        [
            ("scale", TensorMapStandardScaler()),
            ("skip", "passthrough"),
            ("fit", TensorMapLstsqCV(rconds=[1e-10, 1e-4], cv=2, fit_intercept=True)),
        ]
    )
    return model.fit(X, y), X


CASES = {
    "lstsq": _lstsq,
    "gelsy": _gelsy,
    "alpha_tensor_map": _alpha_tensor_map,
    "arrays_1d": lambda: _arrays(None),
    "arrays_2d": lambda: _arrays(3),
    "dataframe": _dataframe,
    "partial_fit": _partial_fit,
    "cv": _cv,
    "cv_per_block": _cv_per_block,
    "scaler": _scaler,
    "pipeline": _pipeline,
    "pipeline_cv": _pipeline_cv,
}


def _predict(model, X):
    if isinstance(model, TensorMapStandardScaler):
        return model.transform(X)
    return model.predict(X)


@pytest.mark.parametrize("case", CASES)
def test_round_trip_predicts_bit_identically(case, tmp_path):
    model, X = CASES[case]()
    loaded = roundtrip(model, tmp_path)
    assert type(loaded) is type(model)
    assert_same(loaded, model)
    assert_same(loaded.get_params(), model.get_params(), "get_params()")
    assert_same_prediction(_predict(loaded, X), _predict(model, X))


def test_partial_fit_continues_bit_identically_after_loading(tmp_path):
    (x1, y1), (x2, y2) = _batches()
    model = TensorMapLstsq(fit_intercept=True).partial_fit(x1, y1)
    loaded = roundtrip(model, tmp_path)
    model.partial_fit(x2, y2)
    loaded.partial_fit(x2, y2)
    assert_same(loaded, model)
    assert_same_prediction(loaded.predict(x2), model.predict(x2))


def test_arrays_keep_their_memory_layout(tmp_path):
    model, _ = _lstsq()
    rng = np.random.default_rng(3)
    model.fortran_ = np.asfortranarray(rng.normal(size=(4, 3)))
    model.transposed_ = rng.normal(size=(2, 3, 4)).transpose(2, 0, 1)
    model.view_ = rng.normal(size=(6, 8))[::2, 1:5]
    model.empty_ = np.zeros((0, 3), dtype=np.float32)
    model.scalar_ = np.array(2.5)
    loaded = roundtrip(model, tmp_path)
    assert loaded.fortran_.strides == model.fortran_.strides
    assert loaded.transposed_.strides == model.transposed_.strides
    assert loaded.view_.strides == (32, 8)  # a view comes back dense, in its order
    assert loaded.empty_.shape == (0, 3) and loaded.empty_.dtype == np.float32
    assert loaded.scalar_.shape == () and loaded.scalar_ == 2.5
    assert_same(loaded, model)


def test_unfitted_estimator_keeps_its_parameters(tmp_path):
    model = TensorMapLstsqCV(rconds=np.logspace(-10, -2, 5), alphas=[0.0, 0.5], cv=4)
    loaded = roundtrip(model, tmp_path)
    assert_same(loaded, model)
    assert not hasattr(loaded, "weights_")
    X, y = _indexed()
    assert_same_prediction(loaded.fit(X, y).predict(X), model.fit(X, y).predict(X))


def test_non_finite_floats_and_numpy_scalars_round_trip(tmp_path):
    model, _ = _lstsq()
    model.score_history_ = [float("nan"), float("inf"), -float("inf"), np.float32(1.5)]
    model.best_ = {"count": np.int64(3), "flag": np.bool_(True), "name": "x"}
    loaded = roundtrip(model, tmp_path)
    assert_same(loaded.score_history_, model.score_history_)
    assert_same(loaded.best_, model.best_)


def test_file_objects_and_deterministic_bytes(tmp_path):
    model, X = _cv()
    first, second = io.BytesIO(), io.BytesIO()
    skmetalstsq.save(first, model)
    skmetalstsq.save(second, model)
    assert first.getvalue() == second.getvalue()
    loaded = skmetalstsq.load(io.BytesIO(first.getvalue()))
    assert_same(loaded, model)


def test_file_is_a_zip_of_a_manifest_and_mts_members(tmp_path):
    model, _ = _lstsq()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        weights = metatensor.io.load_buffer(archive.read("tensors/0.mts"))
    assert names[0] == "manifest.json"
    assert set(names[1:]) == set(manifest["members"])
    assert all(name.endswith(".mts") for name in names[1:])
    assert manifest["format"] == "skmetalstsq-model" and manifest["format_version"] == 1
    node = manifest["estimator"]
    assert node["class"] == "skmetalstsq.TensorMapLstsq"
    assert node["params"]["fit_intercept"] is True
    # a member is a plain metatensor file: the weights read back by metatensor alone
    assert weights.keys == model.weights_.keys
    for ours, theirs in zip(weights.blocks(), model.weights_.blocks()):
        assert np.array_equal(ours.values, theirs.values)


def test_save_changes_nothing_and_checks_before_writing(tmp_path):
    model, _ = _lstsq()
    before = pickle.dumps(model)
    roundtrip(model, tmp_path)
    assert pickle.dumps(model) == before
    bad = TensorMapLstsqCV(cv=KFold(3))
    path = tmp_path / "refused.zip"
    with pytest.raises(TypeError):
        skmetalstsq.save(path, bad)
    assert not path.exists()


def test_a_save_that_fails_midway_keeps_the_previous_file(tmp_path, monkeypatch):
    model, X = _lstsq()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    before = path.read_bytes()
    written = zipfile.ZipFile.writestr
    calls = []

    def disk_full(archive, *args, **kwargs):
        # the manifest is written, then the disk is full
        calls.append(args[0])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return written(archive, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        skmetalstsq.save(path, TensorMapLstsq(alpha=1.0).fit(*_data()))
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]
    monkeypatch.undo()
    assert_same_prediction(skmetalstsq.load(path).predict(X), model.predict(X))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_save_gives_the_permissions_open_gives(tmp_path):
    model, _ = _scaler()
    path, reference = tmp_path / "model.zip", tmp_path / "reference"
    with open(reference, "wb"):
        pass
    skmetalstsq.save(path, model)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)
    # an existing file keeps its permissions, as when open() truncates it
    path.chmod(0o640)
    skmetalstsq.save(path, model)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # through a symbolic link, the file it points to is written, and the link kept
    link = tmp_path / "link.zip"
    link.symlink_to(path)
    path.write_bytes(b"old")
    skmetalstsq.save(link, model)
    assert link.is_symlink() and path.read_bytes() != b"old"
    assert_same(skmetalstsq.load(link), model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.zip", "model.zip", "reference"]


# ---------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------


def _torch_cases():
    torch = pytest.importorskip("torch")
    X, y = _data()
    return {
        "float32": lambda: TensorMapLstsq(fit_intercept=True).fit(
            to_torch(X, torch.float32), to_torch(y, torch.float32)
        ),
        "float64": lambda: TensorMapLstsq(alpha=0.1).fit(to_torch(X), to_torch(y)),
        "device_cpu": lambda: TensorMapLstsq(device="cpu").fit(X, y),
        "torch_device_param": lambda: TensorMapLstsq(device=torch.device("cpu")).fit(X, y),
        "partial_fit": lambda: TensorMapLstsq().partial_fit(
            to_torch(X, torch.float32), to_torch(y, torch.float32)
        ),
        "arrays_device_cpu": lambda: TensorMapLstsq(device="cpu").fit(
            np.asarray(X.block(0).values[:, 0]), np.asarray(y.block(0).values[:, 0])
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["float32", "float64", "device_cpu", "torch_device_param", "partial_fit", "arrays_device_cpu"],
)
def test_torch_round_trip(case, tmp_path):
    torch = pytest.importorskip("torch")
    model = _torch_cases()[case]()
    loaded = roundtrip(model, tmp_path)
    assert_same(loaded, model)
    if hasattr(model, "coef_"):
        X = np.asarray(_data()[0].block(0).values[:, 0])
        assert np.array_equal(loaded.predict(X), model.predict(X))
        return
    assert isinstance(loaded.weights_.block(0).values, torch.Tensor)
    X, _ = _data()
    for inputs in (X, to_torch(X, loaded.weights_.block(0).values.dtype)):
        assert_same_prediction(loaded.predict(inputs), model.predict(inputs))


def test_metatensor_torch_maps_round_trip(tmp_path):
    pytest.importorskip("metatensor.torch")
    from skmetalstsq._torch_maps import to_torch_map

    X, y = _data()
    tX, ty = to_torch_map(to_torch(X)), to_torch_map(to_torch(y))
    model = TensorMapLstsq(fit_intercept=True).fit(tX, ty)
    if not _is_torch_map(model.weights_):
        pytest.skip("this version fits metatensor-torch maps into metatensor TensorMaps")
    loaded = roundtrip(model, tmp_path)
    assert_same(loaded, model)
    assert_same_prediction(loaded.predict(tX), model.predict(tX))


def _on_device(path, device):
    """Rewrite every torch device recorded in the manifest at ``path``."""

    def change(node):
        if isinstance(node, dict):
            if "device" in node and node.get("library") == "torch":
                node["device"] = device
            for value in node.values():
                change(value)
        elif isinstance(node, list):
            for value in node:
                change(value)

    edit_manifest(path, change)


def test_cuda_tensors_without_cuda_are_refused_unless_a_device_is_given(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    X, y = _data()
    model = TensorMapLstsq().fit(to_torch(X), to_torch(y))
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    _on_device(path, "cuda:0")
    with pytest.raises(ValueError, match=r"saved on cuda:0, but 0 CUDA device\(s\) are available"):
        skmetalstsq.load(path)
    with pytest.raises(ValueError, match=r"asked for cuda, but 0 CUDA device\(s\)"):
        skmetalstsq.load(path, device="cuda")
    loaded = skmetalstsq.load(path, device="cpu")
    assert_same(loaded, model)


def test_load_device_must_be_a_torch_device(tmp_path):
    pytest.importorskip("torch")
    model, _ = _lstsq()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    with pytest.raises(ValueError, match=r"device='banana' is not a torch device"):
        skmetalstsq.load(path, device="banana")
    with pytest.raises(TypeError, match=r"device must be None, a str or a torch.device, got int"):
        skmetalstsq.load(path, device=3)
    # numpy arrays stay numpy arrays whatever the device
    assert_same(skmetalstsq.load(path, device="cpu"), model)


@pytest.mark.parametrize(
    "value, match",
    [
        ({"type": "torch_dtype", "name": "complex64"}, r"attribute 'x_' has the torch dtype"),
        (
            {"type": "torch_device", "value": "banana"},
            r"attribute 'x_' has the device 'banana', which torch does not know",
        ),
    ],
    ids=["torch_dtype", "torch_device"],
)
def test_load_refuses_unknown_torch_values(saved, value, match):
    pytest.importorskip("torch")
    edit_manifest(saved, lambda m: _attribute(m, value))
    with pytest.raises(ValueError, match=match):
        skmetalstsq.load(saved)


def test_load_refuses_tensors_of_an_unknown_device(tmp_path):
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = TensorMapLstsq().fit(to_torch(X, torch.float32), to_torch(y, torch.float32))
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    _on_device(path, "banana")
    with pytest.raises(ValueError, match=r"has the device 'banana', which torch does not know"):
        skmetalstsq.load(path)


def test_torch_tensors_need_torch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = TensorMapLstsq().fit(to_torch(X, torch.float32), to_torch(y, torch.float32))
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"holds torch tensors, which needs torch: pip install"):
        skmetalstsq.load(path)
    with pytest.raises(
        ImportError, match=r"was asked to load onto device='cpu', which needs torch"
    ):
        skmetalstsq.load(path, device="cpu")


def test_cuda_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    X, y = _data()
    model = TensorMapLstsq(fit_intercept=True).fit(
        to_torch(X, torch.float32, "cuda"), to_torch(y, torch.float32, "cuda")
    )
    loaded = roundtrip(model, tmp_path)
    assert loaded.weights_.block(0).values.device.type == "cuda"
    assert_same(loaded, model)
    inputs = to_torch(X, torch.float32, "cuda")
    assert_same_prediction(loaded.predict(inputs), model.predict(inputs))
    on_cpu = roundtrip(model, tmp_path, device="cpu")
    assert on_cpu.weights_.block(0).values.device.type == "cpu"
    cpu_inputs = to_torch(X, torch.float32)
    assert_same_prediction(on_cpu.predict(cpu_inputs), model.predict(cpu_inputs))


# ---------------------------------------------------------------------------------
# what save refuses
# ---------------------------------------------------------------------------------


def my_scorer(estimator, X, y):
    return 0.0


class MyLstsq(TensorMapLstsq):
    pass


@pytest.mark.parametrize(
    "estimator, match",
    [
        (
            TensorMapLstsqCV(scoring=my_scorer),
            r"TensorMapLstsqCV parameter 'scoring' is a builtins.function \(my_scorer\), "
            r"which a model file cannot hold",
        ),
        (
            TensorMapLstsqCV(cv=KFold(3)),
            r"TensorMapLstsqCV parameter 'cv' is a sklearn.model_selection._split.KFold, "
            r"which a model file cannot hold.*set_params",
        ),
        (
            make_pipeline(TensorMapFunctionTransformer(), TensorMapLstsq()),
            r"Pipeline step 'tensormapfunctiontransformer': cannot save a "
            r"TensorMapFunctionTransformer \(its func would have to be imported",
        ),
        (
            Pipeline([("fit", TensorMapLstsqCV(cv=KFold(2)))]),
            r"Pipeline step 'fit': TensorMapLstsqCV parameter 'cv' is a ",
        ),
        (MyLstsq(), r"cannot save a MyLstsq \(a subclass"),
        (LinearRegression(), r"cannot save a LinearRegression; a model file holds only"),
        (
            TensorMapLstsq(alpha=np.array([1j])),
            r"TensorMapLstsq parameter 'alpha' is an array of dtype complex128",
        ),
        (
            TensorMapLstsq(gradient_weights={"positions": object()}),
            r"TensorMapLstsq parameter 'gradient_weights'\['positions'\] is a builtins.object",
        ),
    ],
    ids=[
        "callable_scoring",
        "cv_splitter",
        "function_transformer",
        "pipeline_step_parameter",
        "subclass",
        "foreign_estimator",
        "complex_array",
        "object_in_dict",
    ],
)
def test_save_refuses_what_cannot_be_stored_safely(estimator, match, tmp_path):
    with pytest.raises(TypeError, match=match):
        skmetalstsq.save(tmp_path / "model.zip", estimator)


def test_save_refuses_arrays_of_other_dtypes(tmp_path):
    X, y = _data()
    complex_alpha = TensorMap(
        X.keys,
        [
            TensorBlock(np.zeros((1, 5), dtype=complex), Labels.range("_", 1), [], b.properties)
            for b in X.blocks()
        ],
    )
    with pytest.raises(
        TypeError, match=r"TensorMapLstsq parameter 'alpha' holds arrays of dtype complex128"
    ):
        skmetalstsq.save(tmp_path / "model.zip", TensorMapLstsq(alpha=complex_alpha))
    torch = pytest.importorskip("torch")
    model = TensorMapLstsq().fit(X, y)
    model.extra_ = torch.zeros(2, dtype=torch.bfloat16)
    with pytest.raises(
        TypeError,
        match=r"attribute 'extra_' is a torch tensor of dtype torch.bfloat16, which numpy cannot",
    ):
        skmetalstsq.save(tmp_path / "model.zip", model)


def test_save_refuses_unstorable_and_shadowing_attributes(tmp_path):
    model, _ = _lstsq()
    model.cache_ = object()
    with pytest.raises(TypeError, match=r"TensorMapLstsq attribute 'cache_' is a builtins.object"):
        skmetalstsq.save(tmp_path / "model.zip", model)
    del model.cache_
    model.predict = None
    with pytest.raises(TypeError, match=r"has the attribute 'predict', which a model file"):
        skmetalstsq.save(tmp_path / "model.zip", model)


def test_save_refuses_a_path_of_another_type():
    with pytest.raises(TypeError, match=r"skmetalstsq.save: path must be a str, a path-like"):
        skmetalstsq.save(3, TensorMapLstsq())
    with pytest.raises(TypeError, match=r"skmetalstsq.load: path must be a str, a path-like"):
        skmetalstsq.load(3)


# ---------------------------------------------------------------------------------
# what load refuses
# ---------------------------------------------------------------------------------


calls = []


def _mark():
    calls.append("unpickled")
    return "unpickled"


class _Payload:
    """Unpickling this calls :func:`_mark`."""

    def __reduce__(self):
        return (_mark, ())


def read_members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def edit_manifest(path, change):
    """Rewrite the manifest at ``path`` with ``change(manifest)`` (in place)."""
    members = read_members(path)
    manifest = json.loads(members["manifest.json"])
    change(manifest)
    members["manifest.json"] = json.dumps(manifest)
    write_members(path, members)


def replace_member(path, name, data, update_digest=True):
    import hashlib

    members = read_members(path)
    members[name] = data
    manifest = json.loads(members["manifest.json"])
    manifest["members"][name]["size"] = len(data)
    if update_digest:
        manifest["members"][name]["sha256"] = hashlib.sha256(data).hexdigest()
    members["manifest.json"] = json.dumps(manifest)
    write_members(path, members)


def _mts(tensor):
    buffer = io.BytesIO()
    metatensor.save(buffer, tensor)
    return buffer.getvalue()


@pytest.fixture
def saved(tmp_path):
    """A saved fitted TensorMapLstsq (TensorMaps, arrays, dicts) and its path."""
    model, _ = _lstsq()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    return path


def _attribute(manifest, value):
    """Give the estimator of the manifest the attribute ``x_`` = ``value``."""
    manifest["estimator"]["attributes"]["x_"] = value


def _weights(manifest):
    return manifest["estimator"]["attributes"]["weights_"]


def _array_reference(manifest):
    """The first array reference of the manifest (a singular values array)."""
    items = manifest["estimator"]["attributes"]["singular_values_"]["items"]
    return items[0][1]


@pytest.mark.parametrize(
    "content",
    [b"not a model", pickle.dumps(_Payload())],
    ids=["garbage", "pickle"],
)
def test_load_refuses_what_is_not_a_zip(content, tmp_path):
    path = tmp_path / "model.zip"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model.zip' is not a zip archive, so not a file written"):
        skmetalstsq.load(path)
    assert calls == []


def test_load_refuses_a_foreign_zip(tmp_path):
    X, _ = _data()
    path = tmp_path / "features.mts"
    metatensor.save(path, X)
    with pytest.raises(ValueError, match=r"it has no member 'manifest.json' \(its members: "):
        skmetalstsq.load(path)


def test_load_refuses_a_manifest_that_is_not_json(saved):
    members = read_members(saved)
    members["manifest.json"] = b"{not json"
    write_members(saved, members)
    with pytest.raises(ValueError, match=r"'manifest.json' is not valid JSON"):
        skmetalstsq.load(saved)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda m: m.update(format="numpy-archive"),
            r"its manifest gives the format 'numpy-archive', not 'skmetalstsq-model'",
        ),
        (lambda m: m.pop("format"), r"its manifest gives the format None"),
        (
            lambda m: m.update(format_version=2),
            r"has format version 2, written by a newer skmetalstsq; this one reads format "
            r"versions up to 1",
        ),
        (lambda m: m.update(format_version="1"), r"has an invalid format version '1'"),
    ],
    ids=["magic", "no_magic", "newer_version", "invalid_version"],
)
def test_load_refuses_another_format_or_version(saved, change, match):
    edit_manifest(saved, change)
    with pytest.raises(ValueError, match=match):
        skmetalstsq.load(saved)


@pytest.mark.parametrize("name", ["builtins.eval", "os.system", "sklearn.linear_model.Ridge"])
def test_load_refuses_an_unknown_class(saved, name):
    edit_manifest(saved, lambda m: m["estimator"].update({"class": name}))
    with pytest.raises(ValueError, match=rf"the class '{name}' is not one a model file may hold"):
        skmetalstsq.load(saved)


def test_load_refuses_an_unknown_class_in_a_pipeline(tmp_path):
    model, _ = _pipeline()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)

    def change(manifest):
        step = manifest["estimator"]["params"]["steps"][1]["items"][1]
        step["class"] = "subprocess.Popen"

    edit_manifest(path, change)
    with pytest.raises(
        ValueError, match=r"Pipeline step 'tensormaplstsq': the class 'subprocess.Popen' is not"
    ):
        skmetalstsq.load(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda m: m["estimator"]["attributes"].update(rank_={"type": "pickle", "data": "x"}),
            r"attribute 'rank_' has a value of unknown type 'pickle'",
        ),
        (
            lambda m: m["estimator"]["params"].update(banana=1),
            r"TensorMapLstsq has no parameter\(s\) \['banana'\]",
        ),
        (
            lambda m: m["estimator"]["attributes"].update(predict=1),
            r"TensorMapLstsq cannot hold the attribute 'predict'",
        ),
        (
            lambda m: m["estimator"]["attributes"].update(__class__=1),
            r"TensorMapLstsq cannot hold the attribute '__class__'",
        ),
        (
            lambda m: _array_reference(m).update(dtype="object"),
            r"has the dtype 'object'; arrays are of",
        ),
        (
            lambda m: m["estimator"]["attributes"].update(
                x_={"type": "record", "class": "PartialState", "fields": {}}
            ),
            r"attribute 'x_' names the record class 'PartialState'",
        ),
        (
            lambda m: m["estimator"].update(params=[]),
            r"TensorMapLstsq: params and attributes must be JSON objects",
        ),
        (
            lambda m: m["estimator"]["attributes"].update(x_={"type": "dict", "items": [1]}),
            r"has a malformed manifest \(TypeError",
        ),
        (
            lambda m: m.update(estimator=[]),
            r"the manifest holds no estimator",
        ),
        (
            lambda m: m.update(members=[]),
            r"the manifest's 'members' is malformed",
        ),
        (
            lambda m: _attribute(m, {"type": "float", "value": "1.0"}),
            r"attribute 'x_' has the float '1.0'",
        ),
        (
            lambda m: _attribute(m, {"type": "object_array", "shape": [3], "items": [1]}),
            r"attribute 'x_': 1 items for an array of shape \(3,\)",
        ),
        (
            lambda m: _attribute(
                m, {"type": "str_array", "length": -1, "shape": [1], "items": ["a"]}
            ),
            r"attribute 'x_': a malformed array of strings",
        ),
        (
            lambda m: _attribute(m, {"type": "labels", "names": [1], "values": []}),
            r"attribute 'x_': Labels names must be a list of str",
        ),
        (
            lambda m: _attribute(m, {"type": "numpy_str", "value": 1}),
            r"attribute 'x_' has the numpy string 1",
        ),
        (
            lambda m: _attribute(m, {"type": "record", "class": "Factor", "fields": {"r": None}}),
            r"a Factor must have the fields \['r', 'n_features', 'n_rows', 'intercept', "
            r"'n_weighted'\]",
        ),
        (
            lambda m: _array_reference(m).update(shape=[-1]),
            r"has the shape \[-1\]",
        ),
        (
            lambda m: _array_reference(m).update(library="jax"),
            r"has arrays of the library 'jax'",
        ),
        (
            lambda m: _weights(m).update({"class": "metatensor.torch.TensorMap"}),
            r"attribute 'weights_': a metatensor.torch.TensorMap of numpy arrays",
        ),
        (
            lambda m: _weights(m).update({"class": "mypackage.Map"}),
            r"attribute 'weights_' is a TensorMap of the class 'mypackage.Map'",
        ),
    ],
    ids=[
        "unknown_type",
        "unknown_parameter",
        "method_name",
        "special_name",
        "object_dtype",
        "unknown_record",
        "params_not_object",
        "malformed",
        "no_estimator",
        "members_not_object",
        "finite_float_tagged",
        "object_array_items",
        "str_array",
        "labels_names",
        "numpy_str",
        "record_fields",
        "negative_shape",
        "unknown_library",
        "torch_map_of_numpy",
        "unknown_tensor_map_class",
    ],
)
def test_load_refuses_unknown_or_malformed_values(saved, change, match):
    edit_manifest(saved, change)
    with pytest.raises(ValueError, match=match):
        skmetalstsq.load(saved)


def test_load_refuses_a_missing_member(saved):
    members = read_members(saved)
    del members["arrays/float64.mts"]
    write_members(saved, members)
    with pytest.raises(
        ValueError, match=r"lacks the member\(s\) \['arrays/float64.mts'\] that its manifest lists"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_member_the_manifest_does_not_list(saved):
    members = read_members(saved)
    members["payload.pkl"] = pickle.dumps(TensorMapLstsq())
    write_members(saved, members)
    with pytest.raises(
        ValueError, match=r"has member\(s\) \['payload.pkl'\] that its manifest does not list"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_changed_member(saved):
    X, _ = _data()
    replace_member(saved, "tensors/0.mts", _mts(X), update_digest=False)
    with pytest.raises(
        ValueError, match=r"member 'tensors/0.mts' has SHA-256 [0-9a-f]{64}, but the manifest"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_member_of_another_size(saved):
    edit_manifest(saved, lambda m: m["members"]["tensors/1.mts"].update(size=10))
    with pytest.raises(
        ValueError, match=r"member 'tensors/1.mts' has \d+ bytes, but the manifest records 10"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_reference_to_a_member_it_lacks(saved):
    def change(manifest):
        manifest["estimator"]["attributes"]["weights_"]["member"] = "../../etc/passwd"

    edit_manifest(saved, change)
    with pytest.raises(
        ValueError, match=r"refers to the member '../../etc/passwd', which the file"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_member_that_is_no_tensor_map(saved):
    replace_member(saved, "tensors/0.mts", b"not a TensorMap")
    with pytest.raises(ValueError, match=r"member 'tensors/0.mts' is not a metatensor TensorMap"):
        skmetalstsq.load(saved)


def test_load_refuses_a_tensor_map_other_than_the_manifest_records(saved):
    # a valid TensorMap with other blocks, its digest updated to match
    X, _ = _data()
    replace_member(saved, "tensors/0.mts", _mts(X))
    with pytest.raises(
        ValueError,
        match=r"member 'tensors/0.mts' holds 9 arrays, but the manifest records 3 for "
        r"TensorMapLstsq attribute 'weights_'",
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_tensor_map_array_of_another_shape(saved):
    def change(manifest):
        manifest["estimator"]["attributes"]["weights_"]["arrays"][1]["shape"] = [3, 4]

    edit_manifest(saved, change)
    with pytest.raises(
        ValueError,
        match=r"member 'tensors/0.mts' holds float64 values of shape \[3, 5\], but the manifest "
        r"records for TensorMapLstsq attribute 'weights_' float64 values of shape \[3, 4\]",
    ):
        skmetalstsq.load(saved)


def test_load_refuses_an_array_of_another_shape(saved):
    edit_manifest(saved, lambda m: _array_reference(m).update(shape=[6]))
    with pytest.raises(
        ValueError,
        match=r"block \d+ of member 'arrays/float64.mts' holds float64 values of shape \(5, 1\), "
        r"but the manifest records for .* an array of shape \[6\] \(float64\)",
    ):
        skmetalstsq.load(saved)


def test_load_refuses_an_array_block_it_lacks(saved):
    edit_manifest(saved, lambda m: _array_reference(m).update(index=99))
    with pytest.raises(ValueError, match=r"refers to block 99 of member 'arrays/float64.mts'"):
        skmetalstsq.load(saved)


def test_load_refuses_an_invalid_memory_order(saved):
    edit_manifest(saved, lambda m: _array_reference(m).update(order=[1]))
    with pytest.raises(ValueError, match=r"has the memory order \[1\] for shape \[5\]"):
        skmetalstsq.load(saved)


def test_load_never_unpickles_an_array_member(saved):
    # a member whose .npy array is a pickled object, with a matching digest
    members = read_members(saved)
    with zipfile.ZipFile(io.BytesIO(members["arrays/float64.mts"])) as inner:
        content = {name: inner.read(name) for name in inner.namelist()}
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload()
    buffer = io.BytesIO()
    np.save(buffer, payload, allow_pickle=True)
    name = next(name for name in content if name.endswith("/values.npy"))
    content[name] = buffer.getvalue()
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(rebuilt, "w") as inner:
        for member, data in content.items():
            inner.writestr(member, data)
    replace_member(saved, "arrays/float64.mts", rebuilt.getvalue())
    with pytest.raises(ValueError, match=r"member 'arrays/float64.mts' is not a metatensor"):
        skmetalstsq.load(saved)
    assert calls == []


def test_array_member_keys_must_be_array(saved):
    X, _ = _data()
    replace_member(saved, "arrays/float64.mts", _mts(X))
    with pytest.raises(
        ValueError, match=r"member 'arrays/float64.mts' has keys \['center_type'\], not \['array'\]"
    ):
        skmetalstsq.load(saved)


# ---------------------------------------------------------------------------------
# damaged and hostile files
# ---------------------------------------------------------------------------------


def _data_offset(path, name):
    """Where the bytes of the (stored) member ``name`` start in the file at ``path``."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    header = path.read_bytes()[info.header_offset : info.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _directory_entry(content, name):
    """Where the central directory entry of ``name`` starts in the zip ``content``."""
    (start,) = struct.unpack("<I", content[-6:-2])  # from the end of central directory
    while True:
        name_length, extra_length, comment_length = struct.unpack(
            "<HHH", content[start + 28 : start + 34]
        )
        if content[start + 46 : start + 46 + name_length] == name.encode():
            return start
        start += 46 + name_length + extra_length + comment_length


def _flip(path, position):
    content = bytearray(path.read_bytes())
    content[position] ^= 0x20
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("name", ["manifest.json", "tensors/0.mts", "arrays/float64.mts"])
def test_load_refuses_a_flipped_byte_inside_a_member(saved, name):
    _flip(saved, _data_offset(saved, name) + 100)
    with pytest.raises(
        ValueError,
        match=rf"model.zip': member '{name}' cannot be read, the file was changed or damaged "
        r"\(BadZipFile: Bad CRC-32",
    ):
        skmetalstsq.load(saved)


def test_any_flipped_byte_is_refused_or_changes_nothing(tmp_path):
    model, X = _scaler()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    content = path.read_bytes()
    positions = range(0, len(content), len(content) // 150 | 1)  # every part of the file
    refused = 0
    for position in positions:
        path.write_bytes(content)
        _flip(path, position)
        try:
            loaded = skmetalstsq.load(path)
        except ValueError as error:
            assert "model.zip" in str(error)
            refused += 1
        else:  # a byte zip readers ignore (a date, a version)
            assert_same(loaded, model)
    assert refused > 0.9 * len(positions)


def test_load_refuses_a_corrupt_member_header(saved):
    with zipfile.ZipFile(saved) as archive:
        offset = archive.getinfo("tensors/1.mts").header_offset
    content = bytearray(saved.read_bytes())
    content[offset : offset + 4] = b"XXXX"
    saved.write_bytes(bytes(content))
    with pytest.raises(
        ValueError, match=r"member 'tensors/1.mts' cannot be read, .* \(BadZipFile: Bad magic"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_corrupt_directory(saved):
    content = bytearray(saved.read_bytes())
    directory = _directory_entry(content, "arrays/float64.mts")
    content[directory + 42 : directory + 46] = struct.pack("<I", 2**31)  # its offset
    saved.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"model.zip': member '.*' claims \d+ bytes .* more than"):
        skmetalstsq.load(saved)


def test_load_refuses_a_deeply_nested_manifest(saved):
    members = read_members(saved)
    text = members["manifest.json"].decode()
    nested = "[" * 100_000 + "]" * 100_000
    members["manifest.json"] = text.replace('"weights_":', f'"x_": {nested}, "weights_":', 1)
    write_members(saved, members)
    with pytest.raises(
        ValueError, match=r"'manifest.json' nests arrays and objects 100003 deep, more than the 100"
    ):
        skmetalstsq.load(saved)


@pytest.mark.parametrize("depth", [95, 400])
def test_load_nesting_within_the_limit_or_refused(saved, depth):
    # a depth json parses, which the manifest's reader would recurse into
    edit_manifest(saved, lambda m: _attribute(m, json.loads("[" * depth + "]" * depth)))
    if depth + 3 <= skmetalstsq.persistence.MAX_MANIFEST_DEPTH:
        assert skmetalstsq.load(saved).x_ == json.loads("[" * depth + "]" * depth)
    else:
        with pytest.raises(ValueError, match=rf"nests arrays and objects {depth + 3} deep"):
            skmetalstsq.load(saved)


def test_brackets_in_strings_are_not_nesting(saved):
    edit_manifest(saved, lambda m: _attribute(m, ["[[[{" * 1000, '\\"[[[', "]]]}" * 5]))
    assert skmetalstsq.load(saved).x_ == ["[[[{" * 1000, '\\"[[[', "]]]}" * 5]


def test_load_refuses_repeated_labels_entries(saved):
    edit_manifest(
        saved, lambda m: _attribute(m, {"type": "labels", "names": ["a"], "values": [[1], [1]]})
    )
    with pytest.raises(ValueError, match=r"attribute 'x_': Labels with repeated entries"):
        skmetalstsq.load(saved)


def test_load_refuses_a_manifest_larger_than_its_limit(saved, monkeypatch):
    size = len(read_members(saved)["manifest.json"])
    monkeypatch.setattr(skmetalstsq.persistence, "MAX_MANIFEST_SIZE", size - 1)
    with pytest.raises(
        ValueError, match=rf"'manifest.json' has {size} bytes, more than the {size - 1} that"
    ):
        skmetalstsq.load(saved)


@pytest.mark.parametrize("name", ["manifest.json", "tensors/0.mts"])
def test_load_refuses_compressed_members(saved, name):
    members = read_members(saved)
    with zipfile.ZipFile(saved, "w") as archive:
        for member, data in members.items():
            compression = zipfile.ZIP_DEFLATED if member == name else zipfile.ZIP_STORED
            archive.writestr(member, data, compress_type=compression)
    with pytest.raises(
        ValueError, match=rf"member '{name}' is compressed \(method 8\); skmetalstsq.save writes"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_member_claiming_more_than_the_file(saved):
    # the central directory claims 300 MB for the stored manifest, in a file of 14 KB
    content = bytearray(saved.read_bytes())
    directory = _directory_entry(content, "manifest.json")
    content[directory + 20 : directory + 28] = struct.pack("<II", 300 * 2**20, 300 * 2**20)
    saved.write_bytes(bytes(content))
    with pytest.raises(
        ValueError,
        match=r"member 'manifest.json' claims 314572800 bytes .* more than the \d+ bytes of the",
    ):
        skmetalstsq.load(saved)


def _rebuild_mts(data, change):
    """The .mts ``data`` with ``change(entries)`` applied to its {name: bytes}."""
    with zipfile.ZipFile(io.BytesIO(data)) as inner:
        entries = {name: inner.read(name) for name in inner.namelist()}
    compression = change(entries) or zipfile.ZIP_STORED
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(rebuilt, "w", compression=compression) as inner:
        for name, content in entries.items():
            inner.writestr(name, content)
    return rebuilt.getvalue()


def _huge_header(entries):
    # a values array whose header declares 10^12 float64 values
    name = next(name for name in entries if name.endswith("/values.npy"))
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    np.lib.format.write_array_header_1_0(buffer, header)
    entries[name] = buffer.getvalue() + entries[name][-8:]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda entries: zipfile.ZIP_DEFLATED, r"entry 'keys.npy' is compressed \(method 8\)"),
        (
            _huge_header,
            r"entry 'blocks/0/values.npy' declares float64 values of shape \(1000000, 1000000\), "
            r"8000000000128 bytes with its header, but has 136",
        ),
        (lambda entries: entries.update(x=b"1"), r"entry 'x' is not a .npy array"),
        (
            lambda entries: entries.update({"keys.npy": b"\x93NUMPY\x09\x00"}),
            r"entry 'keys.npy' has no valid .npy header",
        ),
    ],
    ids=["compressed", "huge_header", "not_npy", "npy_version"],
)
def test_load_refuses_hostile_mts_members(saved, change, match):
    members = read_members(saved)
    replace_member(saved, "tensors/0.mts", _rebuild_mts(members["tensors/0.mts"], change))
    with pytest.raises(
        ValueError, match=r"member 'tensors/0.mts' is not a metatensor TensorMap .*" + match
    ):
        skmetalstsq.load(saved)


_PEAK_MEMORY = """
import sys
import skmetalstsq

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

before = peak()
try:
    skmetalstsq.load(sys.argv[1])
except ValueError as error:
    print("refused:", error)
print("growth_kib:", peak() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_loading_a_compression_bomb_allocates_nothing_large(saved, tmp_path):
    # a manifest of 300 MB of JSON that deflates to a file of 1.4 MB (0.3 MB with
    # compresslevel=9, slower to write)
    members = read_members(saved)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("manifest.json", "w", force_zip64=True) as stream:
            stream.write(members["manifest.json"][:-1])
            padding = b" " * 2**20
            for _ in range(300):
                stream.write(padding)
            stream.write(b"}")
        for name, data in members.items():
            if name != "manifest.json":
                archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    assert bomb.stat().st_size < 2 * 2**20
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, str(bomb)], capture_output=True, text=True, check=True
    )
    assert "refused: skmetalstsq.load: '" in run.stdout
    assert "member 'manifest.json' is compressed" in run.stdout
    growth = int(run.stdout.split("growth_kib:")[1])
    assert growth < 4 * 1024, run.stdout


# ---------------------------------------------------------------------------------
# fitted attributes of the wrong type, shape or dtype
# ---------------------------------------------------------------------------------


def _partial_fit_arrays():
    model, A = _arrays(3)
    b = A @ np.ones((4, 3))
    return TensorMapLstsq(fit_intercept=True).partial_fit(A, b).partial_fit(A, 2 * b), A


def _cv_arrays():
    _, A = _arrays(None)
    return TensorMapLstsqCV(alphas=(0.0, 1.0), cv=3).fit(A, A @ np.arange(4.0)), A


FITTED_CASES = {**CASES, "partial_fit_arrays": _partial_fit_arrays, "cv_arrays": _cv_arrays}


def _estimator_nodes(node, where=""):
    """Every estimator node of a manifest's estimator (a Pipeline's steps too)."""
    yield where, node
    if node["class"] == "sklearn.pipeline.Pipeline":
        for step in node["params"]["steps"]:
            name, value = step["items"]
            if isinstance(value, dict):
                yield from _estimator_nodes(value, f"Pipeline step '{name}': ")


def _fitted_attributes(model, tmp_path):
    """(path of the saved model, [(where, attribute)] of its fitted attributes)."""
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    manifest = json.loads(read_members(path)["manifest.json"])
    found = []
    for position, (where, node) in enumerate(_estimator_nodes(manifest["estimator"])):
        found += [(position, where, name) for name in node["attributes"]]
    return path, found


@pytest.mark.parametrize("case", FITTED_CASES)
def test_load_refuses_every_fitted_attribute_of_another_type(case, tmp_path):
    model, _ = FITTED_CASES[case]()
    assert_every_fitted_attribute_of_another_type_refused(model, tmp_path)


def assert_every_fitted_attribute_of_another_type_refused(model, tmp_path):
    """Each fitted attribute of the saved ``model`` replaced by "banana" is refused,
    by a message naming the file, the estimator and the attribute."""
    path, found = _fitted_attributes(model, tmp_path)
    assert found
    original = path.read_bytes()
    for position, where, name in found:
        if name in ("_key_names", "_y_ndim") and not any(n == "factors_" for _, _, n in found):
            continue

        def change(manifest, position=position, name=name):
            nodes = list(_estimator_nodes(manifest["estimator"]))
            nodes[position][1]["attributes"][name] = "banana"

        path.write_bytes(original)
        edit_manifest(path, change)
        with pytest.raises(ValueError, match=rf"model.zip': {where}\w+ attribute '{name}' "):
            skmetalstsq.load(path)


def _attributes(manifest):
    return manifest["estimator"]["attributes"]


def _cv_results_column(manifest, name):
    return dict(_attributes(manifest)["cv_results_"]["items"])[name]


def _swap(first, second):
    def change(manifest):
        attributes = _attributes(manifest)
        attributes[first], attributes[second] = attributes[second], attributes[first]

    return change


def _swap_with_alpha(name):
    """Swap the attribute ``name`` with the TensorMap ``alpha`` (each member is
    referred to once)."""

    def change(manifest):
        attributes, params = _attributes(manifest), manifest["estimator"]["params"]
        attributes[name], params["alpha"] = params["alpha"], attributes[name]

    return change


@pytest.mark.parametrize(
    "case, change, match",
    [
        (
            "lstsq",
            lambda m: _attributes(m).update(weights_=5),
            r"TensorMapLstsq attribute 'weights_' must be a TensorMap, got 5 \(int\)",
        ),
        (
            "lstsq",
            lambda m: _attributes(m).pop("intercept_"),
            r"TensorMapLstsq has the fitted attribute 'weights_' but lacks \['intercept_'\]",
        ),
        (
            "lstsq",
            lambda m: _attributes(m)["rank_"]["items"].pop(),
            r"attribute 'rank_' must be a dict with the keys of weights_, \[\(0,\), \(1,\), "
            r"\(3,\)\], got \[\(0,\), \(1,\)\]",
        ),
        (
            "lstsq",
            lambda m: _attributes(m)["rank_"]["items"][0].__setitem__(1, -1),
            r"attribute 'rank_' \[\(0,\)\] must be an int >= 0, got -1",
        ),
        (
            "lstsq",
            _swap("singular_values_", "rank_"),
            r"attribute 'rank_' \[\(0,\)\] must be an int >= 0, got array\(",
        ),
        (
            "lstsq",
            _swap("weights_", "intercept_"),
            r"attribute 'intercept_' block \(center_type=0\) must have one column and the rows",
        ),
        (
            "alpha_tensor_map",
            _swap_with_alpha("weights_"),
            r"attribute 'intercept_' block \(center_type=0\) must have one column and the rows",
        ),
        (
            "arrays_2d",
            lambda m: _attributes(m)["coef_"].update(shape=[4, 3], order=[1, 0]),
            r"attribute 'coef_' must have the shape \(3, 4\) of weights_",
        ),
        (
            "arrays_2d",
            lambda m: _attributes(m).update(n_features_in_=5),
            r"attribute 'n_features_in_' must be the number of columns of coef_, 4, got 5",
        ),
        (
            "arrays_2d",
            lambda m: _attributes(m).pop("n_features_in_"),
            r"has the fitted attribute 'coef_' but lacks \['n_features_in_'\]",
        ),
        (
            "dataframe",
            lambda m: _attributes(m)["feature_names_in_"]["items"].pop(),
            r"attribute 'feature_names_in_': 2 items for an array of shape \(3,\)",
        ),
        (
            "dataframe",
            lambda m: _attributes(m)["feature_names_in_"]["items"].__setitem__(0, 1),
            r"attribute 'feature_names_in_' must be a 1-D array of 3 str",
        ),
        (
            "partial_fit",
            lambda m: _attributes(m)["factors_"]["items"][0][1]["fields"]["factor"][
                "fields"
            ].update(n_features=4),
            r"attribute 'factors_' \[\(0,\)\] has a Factor of 4 features and 9 columns for 5 "
            r"features and 3 targets",
        ),
        (
            "partial_fit",
            lambda m: _attributes(m).update(_key_names=["system"]),
            r"attribute '_key_names' must be the key names of weights_, \['center_type'\]",
        ),
        (
            "partial_fit",
            lambda m: _attributes(m).update(_y_ndim=2),
            r"attribute '_y_ndim' must be in \(None,\)",
        ),
        (
            "cv",
            lambda m: _attributes(m).update(best_index_=6),
            r"attribute 'best_index_' must be an int in \[0, 6\), the candidates of cv_results_",
        ),
        (
            "cv",
            lambda m: _cv_results_column(m, "params").pop(),
            r"attribute 'cv_results_' \['mean_fit_time'\] must be a list or array of 5 values",
        ),
        (
            "cv",
            lambda m: _attributes(m).update(alpha_={"type": "tuple", "items": []}),
            r"attribute 'alpha_' must be a float, got \(\) \(tuple\)",
        ),
        (
            "cv_per_block",
            lambda m: _attributes(m).update(rcond_=0.1),
            r"attribute 'rcond_' must be a dict with the keys of weights_",
        ),
        (
            "cv_per_block",
            lambda m: m["estimator"]["params"].update(per_block=False),
            r"attribute 'best_index_' must be an int in \[0, 3\)",
        ),
        (
            "scaler",
            _swap("var_", "mean_"),
            None,
        ),
        (
            "scaler",
            lambda m: _attributes(m).pop("scale_"),
            r"TensorMapStandardScaler has the fitted attribute 'mean_' but lacks \['scale_'\]",
        ),
    ],
    ids=[
        "weights_5",
        "missing_intercept",
        "rank_keys",
        "negative_rank",
        "swapped_rank",
        "swapped_weights",
        "alpha_as_weights",
        "coef_shape",
        "n_features_in",
        "missing_n_features_in",
        "feature_names_count",
        "feature_names_type",
        "factor_width",
        "key_names",
        "y_ndim",
        "best_index",
        "cv_results_length",
        "alpha_type",
        "per_block_rcond",
        "per_block_param",
        "scaler_swap_loads",
        "missing_scale",
    ],
)
def test_load_refuses_inconsistent_fitted_attributes(case, change, match, tmp_path):
    model, X = FITTED_CASES[case]()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    edit_manifest(path, change)
    if match is None:  # consistent, only other numbers: loads, and predicts
        _predict(skmetalstsq.load(path), X)
        return
    with pytest.raises(ValueError, match=r"model.zip': .*" + match):
        skmetalstsq.load(path)


def _steps(manifest):
    return manifest["estimator"]["params"]["steps"]


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda m: _steps(m).reverse(),
            r"Pipeline step 'tensormaplstsq' is a TensorMapLstsq, which does not transform, "
            r"before the last step",
        ),
        (
            lambda m: _steps(m)[1]["items"].__setitem__(0, "tensormapstandardscaler"),
            r"Pipeline step names must be unique, without '__' and not a parameter name, got "
            r"'tensormapstandardscaler'",
        ),
        (
            lambda m: _steps(m)[1]["items"].__setitem__(1, 5),
            r"Pipeline step 'tensormaplstsq' is 5 \(int\), not an estimator",
        ),
        (lambda m: _steps(m).__setitem__(1, 5), r"Pipeline step 1 must be a \(name, estimator\)"),
        (lambda m: _steps(m).clear(), r"Pipeline parameter 'steps' must be a non-empty list"),
    ],
    ids=["order", "repeated_name", "number_step", "number", "empty"],
)
def test_load_refuses_malformed_pipeline_steps(change, match, tmp_path):
    model, _ = _pipeline()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    edit_manifest(path, change)
    with pytest.raises(ValueError, match=r"model.zip': " + match):
        skmetalstsq.load(path)


def test_load_refuses_strings_longer_than_a_manifest(saved):
    edit_manifest(
        saved,
        lambda m: _attribute(
            m, {"type": "str_array", "length": 10**9, "shape": [1], "items": ["a"]}
        ),
    )
    with pytest.raises(
        ValueError, match=r"attribute 'x_': an array of 1 strings of 1000000000 characters, more"
    ):
        skmetalstsq.load(saved)


def test_load_refuses_a_member_referred_to_twice(saved):
    # one member parsed and copied once per reference would make a small file build
    # much more than it holds: save writes every TensorMap to a member of its own
    edit_manifest(saved, lambda m: _attribute(m, [_weights(m)] * 3))
    with pytest.raises(
        ValueError,
        match=r"model.zip': TensorMapLstsq attribute 'x_' refers to the member "
        r"'tensors/0.mts' a second time; skmetalstsq.save writes every array once",
    ):
        skmetalstsq.load(saved)


def test_load_refuses_an_array_block_referred_to_twice(saved):
    edit_manifest(saved, lambda m: _attribute(m, [dict(_array_reference(m))] * 3))
    with pytest.raises(
        ValueError,
        match=r"model.zip': TensorMapLstsq attribute 'x_' refers to block \d+ of member "
        r"'arrays/float64.mts' a second time",
    ):
        skmetalstsq.load(saved)


def _references(node):
    """The members and (member, block) of arrays that the manifest ``node`` refers to."""
    found = []
    if type(node) is dict and node.get("type") == "tensor_map":
        found.append(node["member"])
    elif type(node) is dict and node.get("type") == "array":
        found.append((f"arrays/{node['dtype']}.mts", node["index"]))
    for child in node.values() if type(node) is dict else node:
        if type(child) in (dict, list):
            found += _references(child)
    return found


def test_every_saved_member_and_array_block_is_referred_to_once(tmp_path):
    # what load requires of a file is what save writes, in every case
    for case in CASES:
        model, _ = CASES[case]()
        path = tmp_path / f"{case}.zip"
        skmetalstsq.save(path, model)
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            blocks = {
                name: len(metatensor.io.load_buffer(archive.read(name)).keys)
                for name in manifest["members"]
                if name.startswith("arrays/")
            }
        references = _references(manifest["estimator"])
        tensors = [name for name in manifest["members"] if name.startswith("tensors/")]
        arrays = [(name, index) for name, count in blocks.items() for index in range(count)]
        assert sorted(map(str, references)) == sorted(map(str, tensors + arrays)), case


def test_load_refuses_more_strings_than_a_manifest_in_total(saved, monkeypatch):
    # each array of strings under the limit, all of them together over it
    monkeypatch.setattr(skmetalstsq.persistence, "MAX_MANIFEST_SIZE", 2**20)
    strings = {"type": "str_array", "length": 2**17 - 1, "shape": [1], "items": ["a"]}
    edit_manifest(saved, lambda m: _attribute(m, [strings] * 2))
    assert skmetalstsq.load(saved).x_[1].dtype == np.dtype(f"<U{2**17 - 1}")
    edit_manifest(saved, lambda m: _attribute(m, [strings] * 3))
    with pytest.raises(
        ValueError,
        match=r"model.zip': TensorMapLstsq attribute 'x_': an array of 1 strings of 131071 "
        r"characters, more than the 1048576 bytes \(MAX_MANIFEST_SIZE\) that load builds for "
        r"all arrays of strings together \(1048568 before it\)",
    ):
        skmetalstsq.load(saved)


def _repeated_strings(manifest):
    strings = {"type": "str_array", "shape": [1], "length": 2**24 - 1, "items": ["a"]}
    _attribute(manifest, [strings] * 40)


def _repeated_member(manifest):
    _attribute(manifest, [manifest["estimator"]["attributes"]["big_map_"]] * 200)


def _repeated_block(manifest):
    _attribute(manifest, [manifest["estimator"]["attributes"]["big_array_"]] * 200)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    "change, match",
    [
        (_repeated_strings, r"more than the 67108864 bytes \(MAX_MANIFEST_SIZE\)"),
        (_repeated_member, r"refers to the member 'tensors/\d+.mts' a second time"),
        (_repeated_block, r"refers to block \d+ of member 'arrays/float64.mts' a second time"),
    ],
    ids=["strings", "member", "array_block"],
)
def test_loading_repeated_references_allocates_nothing_large(change, match, tmp_path):
    # a small file whose manifest builds the same 64 MiB of strings, or the same 8 MiB
    # member or array block, again and again (2.5 GiB before load refused them)
    model, _ = _lstsq()
    big = np.zeros((1024, 1024))  # 8 MiB
    model.big_array_ = big
    model.big_map_ = TensorMap(
        Labels.range("key", 1),
        [TensorBlock(big, Labels.range("sample", 1024), [], Labels.range("property", 1024))],
    )
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    edit_manifest(path, change)
    assert path.stat().st_size < 20 * 2**20
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, str(path)], capture_output=True, text=True, check=True
    )
    assert f"refused: skmetalstsq.load: '{path}'" in run.stdout, run.stdout
    assert re.search(match, run.stdout), run.stdout
    growth = int(run.stdout.split("growth_kib:")[1])
    assert growth < 192 * 1024, run.stdout


def test_load_refuses_a_stream_that_cannot_seek(saved):
    class Unseekable(io.RawIOBase):
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self.data.readinto(buffer)

    match = (
        r"skmetalstsq.load: the file object cannot seek, and a zip archive is read from its "
        r"end: pass a path to a regular file, or a seekable binary file object such as "
        r"io.BytesIO\(stream.read\(\)\)"
    )
    with pytest.raises(TypeError, match=match):
        skmetalstsq.load(Unseekable(saved.read_bytes()))
    reading, writing = os.pipe()
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe, pytest.raises(TypeError, match=match):
        skmetalstsq.load(pipe)


def test_save_into_a_missing_folder_names_the_path_given(tmp_path):
    path = tmp_path / "missing" / "model.zip"
    with pytest.raises(FileNotFoundError) as error:
        skmetalstsq.save(path, TensorMapLstsq())
    assert error.value.filename == str(path)
    assert str(error.value) == (
        f"[Errno {errno.ENOENT}] skmetalstsq.save: {os.strerror(errno.ENOENT)}: '{path}'"
    )
    assert not (tmp_path / "missing").exists()


@pytest.fixture
def metadata_routing():
    """scikit-learn's metadata routing enabled, and restored after the test."""
    enabled = sklearn.get_config()["enable_metadata_routing"]
    sklearn.set_config(enable_metadata_routing=True)
    yield
    sklearn.set_config(enable_metadata_routing=enabled)


def _requested_cv(request):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(12, 3))
    b = A @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=12)
    scoring = metrics.scorer("r2").set_score_request(sample_weight=request)
    return TensorMapLstsqCV(cv=2, scoring=scoring).fit(A, b)


@pytest.mark.parametrize("request_", [True, False, "weights", None])
@pytest.mark.parametrize("routing_on_load", [True, False])
def test_scorer_metadata_request_round_trips(request_, routing_on_load, metadata_routing, tmp_path):
    model = _requested_cv(request_)
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    sklearn.set_config(enable_metadata_routing=routing_on_load)
    loaded = skmetalstsq.load(path)
    requests = loaded.scoring.get_metadata_routing().score.requests
    assert requests == {"sample_weight": request_}
    assert loaded.get_params() == model.get_params()
    assert loaded.scoring != metrics.scorer("r2") or request_ is None
    assert sklearn.get_config()["enable_metadata_routing"] is routing_on_load


@pytest.mark.parametrize(
    "request_, match",
    [
        ({"sample_weight": "not an alias"}, r"for 'sample_weight' must be True, False, None or"),
        ({"sample_weight": 1}, r"for 'sample_weight' must be True, False, None or an alias"),
        ({"sample_weight": True, "groups": True}, r"must name the metadata \['sample_weight'\]"),
        ({}, r"must name the metadata \['sample_weight'\], got \[\]"),
        ([True], r"must name the metadata \['sample_weight'\], got \[True\] \(list\)"),
    ],
    ids=["not_identifier", "int", "unknown_name", "empty", "list"],
)
def test_load_refuses_a_malformed_scorer_request(request_, match, metadata_routing, tmp_path):
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, _requested_cv(True))
    edit_manifest(
        path, lambda m: m["estimator"]["params"]["scoring"].update(score_request=request_)
    )
    with pytest.raises(
        ValueError,
        match=r"model.zip': TensorMapLstsqCV parameter 'scoring': the scorer's score request "
        + match,
    ):
        skmetalstsq.load(path)


def test_save_refuses_a_scorer_request_load_would_refuse(metadata_routing, tmp_path):
    scoring = metrics.scorer("r2").set_score_request(sample_weight="$WARN$")
    with pytest.raises(
        TypeError,
        match=r"TensorMapLstsqCV parameter 'scoring' is a scorer whose score request for "
        r"'sample_weight' must be True, False, None or an alias \(a Python identifier\), "
        r"got '\$WARN\$'",
    ):
        skmetalstsq.save(tmp_path / "model.zip", TensorMapLstsqCV(scoring=scoring))


def test_load_names_a_few_of_many_unlisted_members(saved):
    members = read_members(saved)
    members.update({f"extra/{i}": b"" for i in range(1000)})
    write_members(saved, members)
    with pytest.raises(ValueError, match=r"\['extra/0', .*'extra/4', \.\.\.\] that its manifest"):
        skmetalstsq.load(saved)


def test_fit_after_partial_fit_loads(tmp_path):
    # fit leaves the partial fit's key names behind, which nothing reads without factors_
    (x1, y1), _ = _batches()
    X, y = _data()
    model = TensorMapLstsq().partial_fit(x1, y1).fit(X, y)
    loaded = roundtrip(model, tmp_path)
    assert_same(loaded, model)
    assert_same_prediction(loaded.predict(X), model.predict(X))


# ---------------------------------------------------------------------------------
# TensorMapBayesianRidge
# ---------------------------------------------------------------------------------

BAYES_GRADIENT_WEIGHTS = {"positions": 0.5, "cell": 2.0}


def _bayes_maps(fit_intercept=True, convert=lambda tensor: tensor, partial=False):
    """Fitted (or partially fitted) on the first systems; the others as a next batch."""
    (x1, y1), (x2, y2) = _batches()
    X, _ = _data()
    model = TensorMapBayesianRidge(
        fit_intercept=fit_intercept, compute_score=True, gradient_weights=BAYES_GRADIENT_WEIGHTS
    )
    (model.partial_fit if partial else model.fit)(convert(x1), convert(y1))
    return model, convert(X), (convert(x2), convert(y2))


def _bayes_float32():
    torch = pytest.importorskip("torch")
    return _bayes_maps(convert=lambda tensor: to_torch(tensor, torch.float32))


def _bayes_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return _bayes_maps(convert=lambda tensor: to_torch(tensor, torch.float32, "cuda"))


def _bayes_torch_maps():
    pytest.importorskip("metatensor.torch")
    from skmetalstsq._torch_maps import to_torch_map

    model, X, batch = _bayes_maps(convert=lambda tensor: to_torch_map(to_torch(tensor)))
    if not _is_torch_map(model.weights_):
        pytest.skip("this version fits metatensor-torch maps into metatensor TensorMaps")
    return model, X, batch


def _bayes_arrays(n_targets, dtype=np.float64):
    rng = np.random.default_rng(4)
    A = rng.normal(size=(50, 4)).astype(dtype)
    shape = (4,) if n_targets is None else (4, n_targets)
    b = (A @ rng.normal(size=shape) + 1.5 + 0.2 * rng.normal(size=(50, *shape[1:]))).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=50)
    model = TensorMapBayesianRidge(compute_score=True).fit(A[:30], b[:30], sample_weight=w[:30])
    return model, rng.normal(size=(7, 4)).astype(dtype), (A[30:], b[30:], w[30:])


def _bayes_pipeline():
    X, y = _data()
    (x2, y2), _ = _batches()
    model = make_pipeline(
        TensorMapStandardScaler(), TensorMapBayesianRidge(gradient_weights=BAYES_GRADIENT_WEIGHTS)
    )
    return model.fit(X, y), X, (x2, y2)


BAYES_CASES = {
    "maps": _bayes_maps,
    "maps_no_intercept": lambda: _bayes_maps(fit_intercept=False),
    "maps_partial_fit": lambda: _bayes_maps(partial=True),
    "torch_float32": _bayes_float32,
    "torch_cuda": _bayes_cuda,
    "metatensor_torch_maps": _bayes_torch_maps,
    "arrays_1d": lambda: _bayes_arrays(None),
    "arrays_2d": lambda: _bayes_arrays(2),
    "arrays_float32": lambda: _bayes_arrays(None, np.float32),
    "pipeline": _bayes_pipeline,
}

#: the cases without torch
BAYES_NUMPY_CASES = [
    "maps",
    "maps_no_intercept",
    "maps_partial_fit",
    "arrays_1d",
    "arrays_2d",
    "arrays_float32",
    "pipeline",
]


def _bayes_step(model, X):
    """The TensorMapBayesianRidge of ``model`` and what it predicts from ``X``."""
    if isinstance(model, Pipeline):
        return model[-1], model[:-1].transform(X)
    return model, X


def bayes_outputs(model, X):
    """Everything a TensorMapBayesianRidge (or a Pipeline ending in one) gives of X:
    predict, predict(return_std=True), sample_y and sample_weights with seeds."""
    bayes, features = _bayes_step(model, X)
    return {
        "predict": model.predict(X),
        "predict_std": model.predict(X, return_std=True),
        "sample_y": bayes.sample_y(features, n_samples=3, random_state=0),
        "sample_weights": bayes.sample_weights(n_samples=2, random_state=np.random.RandomState(1)),
    }


@pytest.mark.parametrize("case", BAYES_CASES)
def test_bayes_round_trip_keeps_everything(case, tmp_path):
    model, X, _ = BAYES_CASES[case]()
    bayes, _ = _bayes_step(model, X)
    assert hasattr(bayes, "sigma_") and hasattr(bayes, "factors_")
    assert case.startswith("arrays") == hasattr(bayes, "coef_")
    loaded = roundtrip(model, tmp_path)
    assert type(loaded) is type(model)
    assert_same(loaded, model)  # every fitted attribute: type, dtype, layout, bits
    assert_same(loaded.get_params(), model.get_params(), "get_params()")
    expected = bayes_outputs(model, X)
    for name, output in bayes_outputs(loaded, X).items():
        assert_same(output, expected[name], name)


@pytest.mark.parametrize("case", BAYES_CASES)
def test_bayes_partial_fit_continues_bit_identically_after_loading(case, tmp_path):
    model, X, batch = BAYES_CASES[case]()
    loaded = roundtrip(model, tmp_path)
    for estimator in (model, loaded):
        bayes, _ = _bayes_step(estimator, X)
        features = batch[0] if bayes is estimator else estimator[:-1].transform(batch[0])
        if len(batch) == 3:
            bayes.partial_fit(features, batch[1], sample_weight=batch[2])
        else:
            bayes.partial_fit(features, batch[1])
    assert_same(loaded, model)
    expected = bayes_outputs(model, X)
    for name, output in bayes_outputs(loaded, X).items():
        assert_same(output, expected[name], name)


@pytest.mark.parametrize("case", [case for case in BAYES_CASES if not case.startswith("arrays")])
def test_bayes_to_module_after_loading_is_the_original_module(case, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("metatensor.torch")
    from skmetalstsq._torch_maps import is_torch_map, to_torch_map
    from skmetalstsq.export import to_module

    model, X, _ = BAYES_CASES[case]()
    loaded = roundtrip(model, tmp_path)
    features = X if is_torch_map(X) else to_torch_map(X)
    if not isinstance(_core(features).block(0).values, torch.Tensor):
        features = to_torch_map(to_torch(X))
    modules = [to_module(m, n_ensemble=4, random_state=3) for m in (model, loaded)]
    for method in ("forward", "std", "ensemble"):
        ours, theirs = (getattr(module, method)(features) for module in modules)
        assert_same(ours, theirs, method)
    buffers = [dict(module.named_buffers()) for module in modules]
    assert list(buffers[0]) == list(buffers[1])
    for name, buffer in buffers[1].items():
        assert_same(buffers[0][name], buffer, name)


def test_bayes_fitted_on_cuda_loads_on_the_cpu(tmp_path):
    torch = pytest.importorskip("torch")
    model, X, _ = _bayes_cuda()
    loaded = roundtrip(model, tmp_path, device="cpu")
    assert loaded.weights_.block(0).values.device.type == "cpu"
    assert all(record.factor.r.device.type == "cpu" for record in loaded.factors_.values())
    for name in ("alpha_", "lambda_", "sigma_", "X_offset_"):
        assert_same(getattr(loaded, name), getattr(model, name), name)
    inputs = to_torch(_data()[0], torch.float32)
    mean, std = loaded.predict(inputs, return_std=True)
    expected_mean, expected_std = model.predict(X, return_std=True)
    for ours, theirs in ((mean, expected_mean), (std, expected_std)):
        for a, b in zip(ours.blocks(), theirs.blocks()):
            torch.testing.assert_close(a.values, b.values.cpu(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_bayes_loaded_from_arrays_is_sklearns_bayesian_ridge(fit_intercept, tmp_path):
    # the loaded model against an independent fit: scikit-learn at its fixed point
    from sklearn.linear_model import BayesianRidge

    rng = np.random.default_rng(8)
    A = rng.normal(size=(40, 3)) + 0.3
    b = A @ np.array([0.5, -1.0, 2.0]) + 0.7 + 0.3 * rng.normal(size=40)
    model = TensorMapBayesianRidge(fit_intercept=fit_intercept).fit(A, b)
    loaded = roundtrip(model, tmp_path)
    reference = BayesianRidge(fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000)
    reference.fit(A, b)
    for name in ("coef_", "intercept_", "alpha_", "lambda_", "sigma_"):
        np.testing.assert_allclose(
            getattr(loaded, name), getattr(reference, name), rtol=1e-7, atol=1e-12, err_msg=name
        )
    mean, std = loaded.predict(A[:5], return_std=True)
    expected_mean, expected_std = reference.predict(A[:5], return_std=True)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-9)
    if fit_intercept:  # plus the intercept's own variance, which scikit-learn leaves out
        expected_std = np.sqrt(expected_std**2 + 1.0 / (reference.alpha_ * len(A)))
    np.testing.assert_allclose(std, expected_std, rtol=1e-7)


@pytest.mark.parametrize("case", BAYES_NUMPY_CASES)
def test_load_refuses_every_bayes_attribute_of_another_type(case, tmp_path):
    model, _, _ = BAYES_CASES[case]()
    assert_every_fitted_attribute_of_another_type_refused(model, tmp_path)


def _first_item(name):
    """The manifest value of ``name``'s first block (a per-key dict)."""
    return lambda m: _attributes(m)[name]["items"][0]


def _set(name, value):
    return lambda m: _attributes(m).__setitem__(name, value)


def _set_first(name, value):
    return lambda m: _first_item(name)(m).__setitem__(1, value)


def _drop_first(name):
    return lambda m: _attributes(m)[name]["items"].pop(0)


def _swap_first_scores_with_sigma(manifest):
    # scores_ is checked after sigma_; each array block is referred to once
    sigma, scores = _first_item("sigma_")(manifest), _first_item("scores_")(manifest)[1]
    sigma[1], scores[0] = scores[0], sigma[1]


def _numpy_scalar(value, dtype="float64"):
    return {"type": "numpy_scalar", "dtype": dtype, "value": value}


def _factor_fields(m):
    return _first_item("factors_")(m)[1]["fields"]["factor"]["fields"]


@pytest.mark.parametrize(
    "case, change, match",
    [
        (
            "maps",
            _drop_first("alpha_"),
            r"attribute 'alpha_' must be a dict with the keys of weights_, \[\(0,\), \(1,\), "
            r"\(3,\)\], got \[\(1,\), \(3,\)\]",
        ),
        (
            "maps",
            _swap("alpha_", "X_offset_"),
            r"attribute 'alpha_' \[\(0,\)\] must be a numpy array of floats of shape \(3,\) > 0, "
            r"got an array of float64 values of shape \[5\]",
        ),
        (
            "maps",
            _swap("lambda_", "n_iter_"),
            r"attribute 'lambda_' \[\(0,\)\] must be a numpy array of floats of shape \(3,\) > 0, "
            r"got an array of int64 values",
        ),
        (
            "maps",
            _swap("sigma_", "alpha_"),
            r"attribute 'alpha_' \[\(0,\)\] must be a numpy array of floats of shape \(3,\) > 0, "
            r"got an array of float64 values of shape \[3, 5, 5\]",
        ),
        (
            "maps",
            lambda m: _first_item("sigma_")(m)[1].update(shape=[3, 5, 4], order=[0, 1, 2]),
            r"block \d+ of member 'arrays/float64.mts' holds float64 values of shape "
            r"\(3, 25\), but the manifest records for TensorMapBayesianRidge attribute "
            r"'sigma_' an array of shape \[3, 5, 4\]",
        ),
        (
            "maps",
            _swap_first_scores_with_sigma,
            r"attribute 'sigma_' \[\(0,\)\] must be a numpy array of floats of shape "
            r"\(3, 5, 5\), got an array of float64 values of shape \[\d+\]",
        ),
        (
            "maps",
            _set_first("n_iter_", _numpy_scalar(7, "int64")),
            r"attribute 'n_iter_' \[\(0,\)\] must be a numpy array of ints of shape \(3,\) >= 0, "
            r"got (np\.int64\()?7\)? \(int64\)",
        ),
        (
            "maps",
            lambda m: _first_item("scores_")(m)[1].pop(),
            r"attribute 'scores_' \[\(0,\)\] must be a list of 3 1-D numpy arrays of floats",
        ),
        (
            "maps",
            _swap("X_offset_", "sigma_"),
            r"attribute 'sigma_' \[\(0,\)\] must be a numpy array of floats of shape "
            r"\(3, 5, 5\), got an array of float64 values of shape \[5\]",
        ),
        (
            "maps",
            _set_first("value_weight_sum_", -1.0),
            r"attribute 'value_weight_sum_' \[\(0,\)\] must be a float >= 0, got -1.0 \(float\)",
        ),
        (
            "maps",
            _drop_first("value_weight_sum_"),
            r"attribute 'value_weight_sum_' must be a dict with the keys of weights_",
        ),
        (
            "maps",
            lambda m: _attributes(m).pop("sigma_"),
            r"TensorMapBayesianRidge has the fitted attribute 'weights_' but lacks \['sigma_'\]",
        ),
        (
            "maps",
            lambda m: _factor_fields(m).update(n_weighted=10**6),
            r"attribute 'factors_' \[\(0,\)\] has a Factor whose n_weighted is 1000000 \(int\), "
            r"not None or an int in \[0, n_rows=",
        ),
        (
            "maps",
            lambda m: _factor_fields(m).update(n_weighted=-1),
            r"has a Factor whose n_weighted is -1 \(int\)",
        ),
        (
            "arrays_1d",
            _set("alpha_", _numpy_scalar(-1.0)),
            r"attribute 'alpha_' must be a float > 0, got (np\.float64\()?-1.0\)? \(float64\)",
        ),
        (
            "arrays_1d",
            _set("lambda_", _numpy_scalar({"type": "float", "value": "nan"})),
            r"attribute 'lambda_' must be a float > 0, got (np\.float64\()?nan\)? \(float64\)",
        ),
        (
            "arrays_1d",
            _swap("sigma_", "X_offset_"),
            r"attribute 'sigma_' must be a numpy array of floats of shape \(4, 4\), got an array "
            r"of float64 values of shape \[4\]",
        ),
        (
            "arrays_1d",
            _set("n_iter_", -3),
            r"attribute 'n_iter_' must be an int >= 0, got -3 \(int\)",
        ),
        (
            "arrays_1d",
            _set("scores_", [1.0]),
            r"attribute 'scores_' must be a 1-D numpy array of floats, got \[1.0\] \(list\)",
        ),
        (
            "arrays_1d",
            _set("_y_ndim", 2),
            r"attribute '_y_ndim' must be in \(1,\)",
        ),
        (
            "arrays_2d",
            _set("alpha_", 1.0),
            r"attribute 'alpha_' must be a numpy array of floats of shape \(2,\) > 0, got 1.0",
        ),
        (
            "arrays_2d",
            _swap("sigma_", "X_offset_"),
            r"attribute 'sigma_' must be a numpy array of floats of shape \(2, 4, 4\)",
        ),
        (
            "arrays_2d",
            lambda m: _attributes(m)["scores_"].pop(),
            r"attribute 'scores_' must be a list of 2 1-D numpy arrays of floats",
        ),
        (
            "arrays_2d",
            _set("value_weight_sum_", "1.0"),
            r"attribute 'value_weight_sum_' must be a float >= 0, got '1.0' \(str\)",
        ),
        (
            "arrays_2d",
            _set("_y_ndim", 1),
            r"attribute '_y_ndim' must be in \(2,\)",
        ),
    ],
    ids=[
        "alpha_keys",
        "alpha_shape",
        "lambda_dtype",
        "sigma_as_alpha",
        "sigma_member_shape",
        "sigma_shape",
        "n_iter_scalar",
        "scores_count",
        "x_offset_as_sigma",
        "negative_value_weight_sum",
        "value_weight_sum_keys",
        "missing_sigma",
        "n_weighted_above_rows",
        "negative_n_weighted",
        "arrays_negative_alpha",
        "arrays_nan_lambda",
        "arrays_sigma_shape",
        "arrays_negative_n_iter",
        "arrays_scores_list",
        "arrays_y_ndim",
        "arrays_2d_alpha_scalar",
        "arrays_2d_sigma_shape",
        "arrays_2d_scores_count",
        "arrays_2d_value_weight_sum",
        "arrays_2d_y_ndim",
    ],
)
def test_load_refuses_damaged_bayes_attributes(case, change, match, tmp_path):
    model, X, _ = BAYES_CASES[case]()
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    edit_manifest(path, change)
    with pytest.raises(ValueError, match=r"model.zip': .*" + match):
        skmetalstsq.load(path)


def test_bayes_attributes_of_another_fit_are_refused(tmp_path):
    # save checks nothing of fitted attributes: the sigma_ of a fit of three targets
    # on a model of two is written, and refused by load
    X, y = _data()
    two = metatensor.slice(y, "properties", Labels(["target"], np.array([[0], [1]])))
    model = TensorMapBayesianRidge().fit(X, two)
    path = tmp_path / "model.zip"
    skmetalstsq.save(path, model)
    assert skmetalstsq.load(path).sigma_[(0,)].shape == (2, 5, 5)
    model.sigma_ = TensorMapBayesianRidge().fit(X, y).sigma_
    skmetalstsq.save(path, model)
    with pytest.raises(
        ValueError,
        match=r"model.zip': TensorMapBayesianRidge attribute 'sigma_' \[\(0,\)\] must be a "
        r"numpy array of floats of shape \(2, 5, 5\), got an array of float64 values of "
        r"shape \[3, 5, 5\]",
    ):
        skmetalstsq.load(path)
