"""Shard loaders for the fit_shards tests: module-level, so that workers can run them.

The tests register this module (and :mod:`builders`) with
``cloudpickle.register_pickle_by_value``, so that the functions travel to Dask
workers by value and the workers need not import the tests. Every loader builds
the whole data set from its seed (small) and returns the rows of one shard, so that
the test process can build the joined data from the same seed.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from builders import make_pair, to_torch, torch_map

from skmetalstsq import IndexedTensorMap

#: ``make_pair`` options of the data every shard is cut from
PAIR = dict(keys=((0,), (1,), (4,)), n_systems=24, n_atoms=2, n_features=4, n_targets=2)


def full_pair(seed, **options):
    """(X, y) TensorMaps of every shard together."""
    return make_pair(np.random.default_rng(seed), **{**PAIR, **options})


def shard_positions(index, n_shards, n_systems=PAIR["n_systems"]):
    """The system positions of shard ``index`` out of ``n_shards`` (near-equal runs)."""
    return np.array_split(np.arange(n_systems), n_shards)[index]


def entry_weights(seed, n_systems=PAIR["n_systems"]):
    """One sample weight per system, in (0.5, 2)."""
    return np.random.default_rng(seed + 1000).uniform(0.5, 2.0, size=n_systems)


def as_kind(tensor, kind, dtype=None, device="cpu"):
    """``tensor`` (numpy) as ``kind``: ``"numpy"``, ``"torch arrays"`` (a metatensor-core
    TensorMap of torch tensors) or ``"torch map"`` (a metatensor.torch.TensorMap),
    with torch ``dtype`` (a name, ``"float64"`` when None) on ``device``."""
    if kind == "numpy":
        return tensor
    import torch

    dtype = getattr(torch, dtype or "float64")
    if kind == "torch arrays":
        return to_torch(tensor, dtype=dtype, device=device)
    return torch_map(tensor, dtype=dtype, device=device)


def load_shard(
    seed,
    index,
    n_shards,
    weighted=False,
    record_dir=None,
    die_marker=None,
    kind="numpy",
    dtype=None,
    device="cpu",
):
    """``(X, y[, sample_weight])`` of one shard, as IndexedTensorMaps.

    Parameters
    ----------
    kind, dtype, device : the arrays of the shard (:func:`as_kind`).
    record_dir : str or None
        Where to write a file named after the shard holding the loading process's id.
    die_marker : str or None
        A path: the first call that finds no file there creates it, then kills its
        own process (as a worker dying in the middle of loading a shard).
    """
    if die_marker is not None and not Path(die_marker).exists():
        Path(die_marker).write_text("died once")
        os._exit(1)
    if record_dir is not None:
        (Path(record_dir) / f"shard_{index}").write_text(str(os.getpid()))
    X, y = (as_kind(tensor, kind, dtype, device) for tensor in full_pair(seed))
    positions = shard_positions(index, n_shards)
    X, y = IndexedTensorMap(X)[positions], IndexedTensorMap(y)[positions]
    if weighted:
        return X, y, entry_weights(seed)[positions]
    return X, y


def load_other_features(seed, n_features):
    """A whole shard of ``full_pair`` data with ``n_features`` features."""
    return full_pair(seed, n_features=n_features)


def load_list(seed):
    """A shard that gives a list, not a tuple."""
    return list(full_pair(seed))


def load_arrays(seed, index, n_shards, n_features=5):
    """``(A, b)`` numpy rows of one shard of a single linear system."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(60, n_features))
    b = A @ rng.normal(size=n_features) + 0.1 * rng.normal(size=60)
    rows = np.array_split(np.arange(60), n_shards)[index]
    return A[rows], b[rows]


def _cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _cuda_available(), reason="CUDA is not available")

#: (shards' kind, their dtype, their device, the estimator's device)
PLACEMENTS = {
    "torch arrays": ("torch arrays", None, "cpu", None),
    "torch map": ("torch map", None, "cpu", None),
    "float32 torch arrays": ("torch arrays", "float32", "cpu", None),
    "float32 torch map": ("torch map", "float32", "cpu", None),
    "numpy, device cpu": ("numpy", None, "cpu", "cpu"),
    "torch map, device cpu": ("torch map", None, "cpu", "cpu"),
    "torch arrays on cuda": pytest.param(
        ("torch arrays", None, "cuda", None), marks=needs_cuda, id="torch arrays on cuda"
    ),
    "numpy, device cuda": pytest.param(
        ("numpy", None, "cpu", "cuda"), marks=needs_cuda, id="numpy, device cuda"
    ),
    "float32 torch map on cuda": pytest.param(
        ("torch map", "float32", "cuda", None), marks=needs_cuda, id="float32 torch map on cuda"
    ),
}
