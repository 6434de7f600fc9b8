"""TensorMapLstsq on torch data: CPU for every driver, float32, and CUDA where present."""

import gc
import pickle

import metatensor
import numpy as np
import pytest
import scipy.linalg
from builders import (
    as_numpy,
    assert_weights_close,
    assert_weights_layout,
    example_pair,
    make_rank_deficient,
    map_arrays,
    nearly_deficient,
    single_block_map,
    stacked,
    to_torch,
)

from skmetalstsq import TensorMapLstsq

torch = pytest.importorskip("torch")

DRIVERS = [None, "gels", "gelsy", "gelsd", "gelss"]
#: every driver but "gels", which assumes full rank and ignores rcond
RCOND_DRIVERS = [None, "gelsy", "gelsd", "gelss"]
RCOND = 1e-10

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def key_tuple(key):
    return tuple(int(v) for v in key.values)


def lstsq_by_hand(X, y, rcond):
    """numpy's gelsd on every stacked block: key -> (weights, rank, singular values)."""
    results = {}
    for key, x_block in X.items():
        a = stacked(x_block)
        b = stacked(y.block(key), x_block.gradients_list())
        weights, _, rank, singular = np.linalg.lstsq(a, b, rcond=rcond)
        results[key_tuple(key)] = (weights.T, rank, singular)
    return results


# ---------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_weights_equal_metatensor(driver):
    X, y = example_pair(4)
    Xt, yt = to_torch(X), to_torch(y)
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(Xt, yt)
    assert_weights_layout(model.weights_, X, y)
    assert_weights_close(model.weights_, metatensor.lstsq(Xt, yt, rcond=RCOND, driver=driver))
    for block in model.weights_.blocks():
        assert isinstance(block.values, torch.Tensor)
        assert block.values.dtype == torch.float64
        assert block.values.device.type == "cpu"


@pytest.mark.parametrize("driver", RCOND_DRIVERS)
@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_rank_deficient_equals_metatensor(driver, device):
    X, y = example_pair(5)
    X = make_rank_deficient(X)
    Xt, yt = to_torch(X), to_torch(y)
    model = TensorMapLstsq(rcond=RCOND, driver=driver, device=device).fit(Xt, yt)
    # torch's own gelsy depends on stale memory: compare with gelsd, whose
    # minimum-norm solution gelsy also gives
    reference = metatensor.lstsq(Xt, yt, rcond=RCOND, driver="gelsd")
    assert_weights_close(model.weights_, reference)
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, RCOND))
    for key, (_, rank, _) in lstsq_by_hand(X, y, RCOND).items():
        assert model.rank_[key] == rank == 3


@pytest.mark.parametrize("driver", RCOND_DRIVERS)
@pytest.mark.parametrize("device", [None, "cpu"])
def test_rcond_none_is_numpy_default(driver, device):
    X, y = nearly_deficient(7)
    model = TensorMapLstsq(rcond=None, driver=driver, device=device).fit(to_torch(X), to_torch(y))
    eps = np.finfo(np.float64).eps
    for key, x_block in X.items():
        a = stacked(x_block)
        b = stacked(y.block(key), x_block.gradients_list())
        expected = torch.linalg.lstsq(
            torch.from_numpy(a), torch.from_numpy(b), rcond=eps * max(a.shape), driver="gelsd"
        )
        # the data tells numpy's default from torch's former eps-only default
        assert int(expected.rank) == a.shape[1] - 1
        assert int(torch.linalg.matrix_rank(torch.from_numpy(a), rtol=eps)) == a.shape[1]
        weights = model.weights_.block(key).values
        assert isinstance(weights, torch.Tensor)
        np.testing.assert_allclose(as_numpy(weights), expected.solution.numpy().T, atol=1e-9)
        np.testing.assert_allclose(
            as_numpy(weights), np.linalg.lstsq(a, b, rcond=None)[0].T, atol=1e-9
        )
        assert model.rank_[key_tuple(key)] == a.shape[1] - 1


@pytest.mark.parametrize(
    "backend, device", [("torch", None), ("numpy", "cpu"), ("torch", "cpu"), ("numpy", None)]
)
def test_weights_and_predictions_array_library(backend, device):
    X, y = example_pair(9)
    fit_X, fit_y = (to_torch(X), to_torch(y)) if backend == "torch" else (X, y)
    model = TensorMapLstsq(rcond=RCOND, device=device).fit(fit_X, fit_y)
    solved_with_torch = backend == "torch" or device is not None
    library = torch.Tensor if solved_with_torch else np.ndarray
    for block in model.weights_.blocks():
        assert isinstance(block.values, library)
    for singular in model.singular_values_.values():
        assert isinstance(singular, library)
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=RCOND))
    # predict answers in the library of its input, whatever the weights are
    for inputs, kind in ((X, np.ndarray), (to_torch(X), torch.Tensor)):
        prediction = model.predict(inputs)
        for key, block in prediction.items():
            assert isinstance(block.values, kind)
            expected = np.einsum(
                "...f,tf->...t",
                X.block(key).values,
                metatensor.lstsq(X, y, rcond=RCOND).block(key).values,
            )
            np.testing.assert_allclose(as_numpy(block.values), expected, rtol=1e-9, atol=1e-11)
            for _, gradient in block.gradients():
                assert isinstance(gradient.values, kind)


def test_plain_tensors():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    model = TensorMapLstsq(rcond=RCOND).fit(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(model.coef_, np.linalg.lstsq(a, b, rcond=RCOND)[0].T, atol=1e-12)


@pytest.mark.parametrize("driver", DRIVERS)
def test_float32_stays_float32(driver):
    X, y = example_pair(11)
    model = TensorMapLstsq(rcond=1e-5, driver=driver).fit(
        to_torch(X, torch.float32), to_torch(y, torch.float32)
    )
    for block in model.weights_.blocks():
        assert block.values.dtype == torch.float32
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=1e-5), rtol=1e-4, atol=1e-4)
    for block in model.predict(to_torch(X, torch.float32)).blocks():
        assert block.values.dtype == torch.float32


@pytest.mark.parametrize("driver", DRIVERS)
def test_float32_with_float64_is_solved_in_float64(driver):
    X, y = example_pair(12)
    X32 = to_torch(X, torch.float32)
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(X32, to_torch(y))
    for block in model.weights_.blocks():
        assert block.values.dtype == torch.float64
    # the reference solves the float32 values, upcast
    upcast = map_arrays(X, lambda array: array.astype(np.float32).astype(np.float64))
    assert_weights_close(model.weights_, metatensor.lstsq(upcast, y, rcond=RCOND))


@pytest.mark.parametrize("driver", [None, "gelsd", "gelss"])
def test_float32_is_factorised_in_float64_with_float64_rcond(driver):
    # a tall float32 block whose second column is 0.05 x the first's scale:
    # float32's eps x max(m, n) would cut its second singular value
    rng = np.random.default_rng(13)
    a = rng.normal(size=(500_000, 2)) * [1.0, 0.05]
    b = a @ [[1.0], [2.0]]
    for library in ("numpy", "torch"):
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        X, y = single_block_map(a32, b32)
        if library == "torch":
            X, y = to_torch(X), to_torch(y)
        model = TensorMapLstsq(rcond=None, driver=driver).fit(X, y)
        weights = model.weights_.block(0).values
        assert weights.dtype == (np.float32 if library == "numpy" else torch.float32)
        expected = np.linalg.lstsq(a32, b32, rcond=None)[0].T
        assert model.rank_[(0,)] == 2
        np.testing.assert_allclose(as_numpy(weights), expected, rtol=1e-4)
        np.testing.assert_allclose(as_numpy(weights), [[1.0, 2.0]], rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_solved_in_float64(dtype):
    # the reference: numpy's lstsq on the half-precision values, in float64
    dtype = getattr(torch, dtype)
    X, y = example_pair(21)
    X_half, y_half = to_torch(X, dtype), to_torch(y, dtype)
    model = TensorMapLstsq().fit(X_half, y_half)
    for key, block in model.weights_.items():
        assert block.values.dtype == dtype
        x_block = X_half.block(key)
        a = stacked(map_arrays(X_half, torch.Tensor.double).block(key))
        b = stacked(map_arrays(y_half, torch.Tensor.double).block(key), x_block.gradients_list())
        expected = np.linalg.lstsq(a, b, rcond=None)[0].T
        np.testing.assert_allclose(block.values.double().numpy(), expected, rtol=2e-2, atol=1e-2)


def test_gelsy_does_not_depend_on_stale_memory():
    # torch's CPU gelsy reads an uninitialised pivot array (pytorch/pytorch#187411):
    # leave non-zero integers where it is likely to be allocated, then fit
    a = np.eye(5)
    a[0, :] = 0.0  # rank 4
    b = np.ones((5, 1))
    expected, _, rank, _ = scipy.linalg.lstsq(a, b, cond=RCOND, lapack_driver="gelsy")
    X, y = single_block_map(a, b)
    Xt, yt = to_torch(X), to_torch(y)
    for _ in range(20):
        for size in (5, 16, 64):
            garbage = torch.full((size,), 3, dtype=torch.int32)
            del garbage
            garbage = torch.full((size,), 3, dtype=torch.int64)
            del garbage
        gc.collect()
        model = TensorMapLstsq(rcond=RCOND, driver="gelsy").fit(Xt, yt)
        assert model.rank_[(0,)] == rank == 4
        np.testing.assert_allclose(as_numpy(model.weights_.block(0).values), expected.T)


def test_pickled_torch_weights_stay_torch():
    X, y = example_pair(14)
    model = TensorMapLstsq(rcond=RCOND, device="cpu").fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    for key, block in model.weights_.items():
        other = restored.weights_.block(key)
        assert isinstance(other.values, torch.Tensor)
        assert other.values.dtype == block.values.dtype
        assert torch.equal(other.values, block.values)


def test_factor_solve_used_on_cuda_honours_rcond():
    # On CUDA every driver but "gels" solves from the block's factor; run that
    # solve on CPU tensors so that it is checked without a GPU.
    from skmetalstsq._blocks import BlockSystem
    from skmetalstsq._factors import factorize
    from skmetalstsq._solvers import default_rcond, factor_solution

    rng = np.random.default_rng(15)
    for n_rows, n_features in [(40, 6), (3, 6), (0, 4), (25, 1)]:
        a = rng.normal(size=(n_rows, n_features))
        if n_features >= 4 and n_rows:
            a[:, -1] = 2.0 * a[:, 0]
        b = rng.normal(size=(n_rows, 2))
        parts = [torch.from_numpy(a[: n_rows // 2]), torch.from_numpy(a[n_rows // 2 :])]
        b_parts = [torch.from_numpy(b[: n_rows // 2]), torch.from_numpy(b[n_rows // 2 :])]
        factor = factorize(BlockSystem("(k=0)", parts, b_parts, torch.float64))
        for rcond in (RCOND, None, 0.5):
            cut = default_rcond(n_rows, n_features) if rcond is None else rcond
            solution = factor_solution(factor, cut)
            expected, _, rank, singular = np.linalg.lstsq(a, b, rcond=rcond)
            np.testing.assert_allclose(solution.weights.numpy(), expected.T, rtol=1e-9, atol=1e-11)
            assert solution.rank == rank
            np.testing.assert_allclose(solution.singular_values.numpy(), singular, atol=1e-11)


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("driver", RCOND_DRIVERS)
@pytest.mark.parametrize("rcond", [RCOND, None, 1e-3])
def test_cuda_honours_rcond_on_rank_deficient_data(driver, rcond):
    X, y = example_pair(16)
    X = make_rank_deficient(X)
    model = TensorMapLstsq(rcond=rcond, driver=driver, device="cuda").fit(X, y)
    cpu = TensorMapLstsq(rcond=rcond, driver="gelsd").fit(X, y)
    for key, block in model.weights_.items():
        assert block.values.device.type == "cuda"
        np.testing.assert_allclose(
            as_numpy(block.values), cpu.weights_.block(key).values, rtol=1e-8, atol=1e-10
        )
    assert model.rank_ == cpu.rank_
    for key, (weights, rank, _) in lstsq_by_hand(X, y, rcond).items():
        assert model.rank_[key] == rank
        np.testing.assert_allclose(
            as_numpy(model.weights_.block(key).values), weights, rtol=1e-8, atol=1e-10
        )


@needs_cuda
def test_cuda_gels_on_full_rank_data():
    X, y = example_pair(17)
    model = TensorMapLstsq(rcond=RCOND, driver="gels", device="cuda").fit(X, y)
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=RCOND), rtol=1e-8)


@needs_cuda
@pytest.mark.parametrize("driver", DRIVERS)
def test_cuda_data_stays_on_cuda(driver):
    X, y = example_pair(18)
    Xc, yc = to_torch(X, device="cuda"), to_torch(y, device="cuda")
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(Xc, yc)
    for block in model.weights_.blocks():
        assert block.values.device.type == "cuda"
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=RCOND), rtol=1e-8)
    for block in model.predict(Xc).blocks():
        assert block.values.device.type == "cuda"
    for block in model.predict(X).blocks():
        assert isinstance(block.values, np.ndarray)


@needs_cuda
def test_cuda_float32_and_empty_block():
    X, y = example_pair(19)
    Xc = to_torch(X, torch.float32, device="cuda")
    yc = to_torch(y, torch.float32, device="cuda")
    model = TensorMapLstsq(rcond=1e-5).fit(Xc, yc)
    for block in model.weights_.blocks():
        assert block.values.dtype == torch.float32
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=1e-5), rtol=1e-3, atol=1e-3)
    a, b = single_block_map(np.zeros((0, 3)), np.zeros((0, 2)))
    empty = TensorMapLstsq(device="cuda").fit(a, b)
    assert empty.rank_[(0,)] == 0
    np.testing.assert_array_equal(as_numpy(empty.weights_.block(0).values), np.zeros((2, 3)))


@needs_cuda
def test_cuda_n_jobs_gives_identical_weights():
    X, y = example_pair(20)
    serial = TensorMapLstsq(rcond=RCOND, device="cuda", n_jobs=1).fit(X, y)
    parallel = TensorMapLstsq(rcond=RCOND, device="cuda", n_jobs=2).fit(X, y)
    for key, block in serial.weights_.items():
        assert torch.equal(parallel.weights_.block(key).values, block.values)
