"""TensorMapBayesianRidge: fit, predictive std and memory next to TensorMapLstsq.

Run from the repository root::

    python benchmarks/bench_bayes.py            # 4 blocks of 20000 x 150, 7 repeats
    python benchmarks/bench_bayes.py --quick    # a quarter of the rows, 3 repeats
    python benchmarks/bench_bayes.py -r 11 --features 200 --no-memory

Data (float64, one target, ``--features`` properties, 150 by default): 4 blocks
(one per atom type) of 2000 samples, each with a positions gradient of 6000
samples x 3 (xyz), i.e. 20000 stacked rows per block, as a potential fitted on
energies and forces; ``y = X w + noise`` (std 0.1 on values and gradients), both
intercept and gradients fitted. The rows are made as ``--shards`` shards (8)
of equal size, each from its own seed: a shard's arrays are its only
allocation, and the whole data is every shard's rows written in place into one
array per block.

Measured in one run:

- **fit**: ``TensorMapBayesianRidge().fit(X, y)`` against
  ``TensorMapLstsq(alpha=lambda_ / alpha_, fit_intercept=True).fit(X, y)``, the
  same posterior mean with the penalty given (each block's ratio, found by a
  Bayesian fit beforehand). Goal: at most 1.3 x; the evidence iteration must not
  be a noticeable cost.
- **predict**: ``predict(X, return_std=True)`` against ``predict(X)`` of the
  fitted Bayesian model, on the same X (values and every gradient row). Goal: at
  most 3 x.

Both pairs are timed in the same process, round-robin (one round of warm-up,
then ``--repeats`` rounds), each call after a pause of 0.25 s (outside the
timer) in which BLAS threads of the previous call go idle; the median is used
for the ratios, the minimum printed beside it.

- **peak memory**: each method runs in a fresh process, which loads every
  library and runs the method once on a tiny problem, resets the kernel's peak
  resident size (``VmHWM``, by writing ``5`` to ``/proc/self/clear_refs``), reads
  the resident size (``VmRSS`` of ``/proc/self/status``), then makes the data
  and fits, and reads ``VmHWM`` again: the difference is everything held at the
  peak, the data included (``ru_maxrss`` would count the peak of the warm-up and
  the imports; where ``clear_refs`` cannot be written it is used, and said so).
  ``fit`` makes all shards joined then fits; ``partial_fit`` makes one shard,
  folds it in, drops it, and so on; ``fit_shards`` (no client) is given the
  shards' loaders. For ``TensorMapBayesianRidge`` and ``TensorMapLstsq`` alike,
  in MiB and as a multiple of one shard's input (X and y arrays). The weights of
  ``partial_fit`` and ``fit_shards`` are checked against ``fit``'s.

The run ends with the two goals, met or not, and the load average.
"""

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from peak_memory import peak_added

N_BLOCKS = 4
N_SAMPLES = 2000
#: samples of the positions gradient of each block, 3 rows (xyz) each
N_GRADIENT_SAMPLES = 6000
NOISE = 0.1
#: pause before each timed call (outside the timer)
SETTLE_S = 0.25
#: time of the first method over that of the second, at most
GOALS = {
    "fit": ("bayes fit", "lstsq fit", 1.3),
    "predict": ("predict std", "predict", 3.0),
}
MEMORY_METHODS = (
    "lstsq fit",
    "lstsq partial_fit",
    "lstsq fit_shards",
    "bayes fit",
    "bayes partial_fit",
    "bayes fit_shards",
)


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------


def shard_rows(scale, n_shards):
    """(samples, gradient samples) of one shard of one block."""
    n_samples = max(int(N_SAMPLES * scale) // n_shards, 1)
    return n_samples, max(int(N_GRADIENT_SAMPLES * scale) // n_shards, 1)


def true_weights(n_features):
    return np.random.default_rng(12345).standard_normal((N_BLOCKS, n_features, 1))


def fill_shard(index, values, gradient, y_values, y_gradient):
    """Write the rows of shard ``index`` of every block in place (lists over blocks)."""
    weights = true_weights(values[0].shape[-1])
    for block in range(N_BLOCKS):
        rng = np.random.default_rng([index, block])
        rng.standard_normal(out=values[block])
        rng.standard_normal(out=gradient[block])
        np.matmul(values[block], weights[block], out=y_values[block])
        y_values[block] += 1.5 + NOISE * rng.standard_normal(y_values[block].shape)
        np.matmul(gradient[block], weights[block], out=y_gradient[block])
        y_gradient[block] += NOISE * rng.standard_normal(y_gradient[block].shape)


def empty_arrays(n_samples, n_gradient, n_features):
    """Per block: values, gradient, y values and y gradient, uninitialised."""
    return (
        [np.empty((n_samples, n_features)) for _ in range(N_BLOCKS)],
        [np.empty((n_gradient, 3, n_features)) for _ in range(N_BLOCKS)],
        [np.empty((n_samples, 1)) for _ in range(N_BLOCKS)],
        [np.empty((n_gradient, 3, 1)) for _ in range(N_BLOCKS)],
    )


def maps(arrays, n_parts=1, first_system=0):
    """(X, y) TensorMaps of the arrays of every block (values, gradient, y values, y gradient).

    The arrays hold ``n_parts`` shards one after the other; systems are numbered
    from ``first_system``, each gradient row naming its shard's sample.
    """
    from metatensor import Labels, TensorBlock, TensorMap

    values, gradient, y_values, y_gradient = arrays
    n_features = values[0].shape[1]
    n_samples, n_gradient = values[0].shape[0] // n_parts, gradient[0].shape[0] // n_parts
    systems = np.arange(n_parts * n_samples, dtype=np.int32)
    samples = Labels(["system"], (first_system + systems).reshape(-1, 1))
    rows = np.arange(n_gradient, dtype=np.int32)
    shard = np.repeat(np.arange(n_parts, dtype=np.int32), n_gradient)
    sample = np.tile(rows % n_samples, n_parts) + shard * n_samples
    atom = np.tile(rows // n_samples, n_parts)
    gradient_samples = Labels(
        ["sample", "system", "atom"], np.stack([sample, first_system + sample, atom], axis=1)
    )
    xyz = [Labels.range("xyz", 3)]
    features, energy = Labels.range("feature", n_features), Labels.range("energy", 1)
    x_blocks, y_blocks = [], []
    for block in range(N_BLOCKS):
        x = TensorBlock(values[block], samples, [], features)
        x.add_gradient("positions", TensorBlock(gradient[block], gradient_samples, xyz, features))
        y = TensorBlock(y_values[block], samples, [], energy)
        y.add_gradient("positions", TensorBlock(y_gradient[block], gradient_samples, xyz, energy))
        x_blocks.append(x)
        y_blocks.append(y)
    keys = Labels.range("center_type", N_BLOCKS)
    return TensorMap(keys, x_blocks), TensorMap(keys, y_blocks)


def load_shard(index, scale, n_shards, n_features):
    """(X, y) of shard ``index``: the loader given to fit_shards."""
    n_samples, n_gradient = shard_rows(scale, n_shards)
    arrays = empty_arrays(n_samples, n_gradient, n_features)
    fill_shard(index, *arrays)
    return maps(arrays, first_system=index * n_samples)


def load_joined(scale, n_shards, n_features):
    """(X, y) of every shard's rows, written in place into one array per block."""
    n_samples, n_gradient = shard_rows(scale, n_shards)
    arrays = empty_arrays(n_shards * n_samples, n_shards * n_gradient, n_features)
    for index in range(n_shards):
        parts = [
            [array[index * n : (index + 1) * n] for array in kind]
            for kind, n in zip(arrays, (n_samples, n_gradient, n_samples, n_gradient))
        ]
        fill_shard(index, *parts)
    return maps(arrays, n_parts=n_shards)


def input_bytes(X, y):
    total = 0
    for tensor in (X, y):
        for block in tensor.blocks():
            total += block.values.nbytes
            total += sum(gradient.values.nbytes for _, gradient in block.gradients())
    return total


# ---------------------------------------------------------------------------------
# time
# ---------------------------------------------------------------------------------


def settle():
    gc.collect()
    time.sleep(SETTLE_S)


def penalties(model):
    """``lambda_ / alpha_`` of every block of a fitted TensorMapBayesianRidge."""
    return {key: float(model.lambda_[key][0] / model.alpha_[key][0]) for key in model.alpha_}


def time_all(scale, n_shards, n_features, repeats):
    """Median and minimum seconds of each method, round-robin; and what the fits found."""
    from skmetalstsq import TensorMapBayesianRidge, TensorMapLstsq

    X, y = load_joined(scale, n_shards, n_features)
    bayes = TensorMapBayesianRidge().fit(X, y)
    lstsq = TensorMapLstsq(alpha=penalties(bayes), fit_intercept=True)
    runners = {
        "lstsq fit": lambda: lstsq.fit(X, y),
        "bayes fit": lambda: TensorMapBayesianRidge().fit(X, y),
        "predict": lambda: bayes.predict(X),
        "predict std": lambda: bayes.predict(X, return_std=True),
    }
    times = {method: [] for method in runners}
    for repeat in range(repeats + 1):  # the first round is a warm-up
        for method, runner in runners.items():
            settle()
            start = time.perf_counter()
            runner()
            elapsed = time.perf_counter() - start
            if repeat:
                times[method].append(elapsed)
    difference = max(
        float(
            np.abs(bayes.weights_.block(i).values - lstsq.weights_.block(i).values).max()
            / np.abs(bayes.weights_.block(i).values).max()
        )
        for i in range(N_BLOCKS)
    )
    return {
        "median": {method: statistics.median(values) for method, values in times.items()},
        "minimum": {method: min(values) for method, values in times.items()},
        "input_bytes": input_bytes(X, y),
        "n_iter": {str(key): int(value[0]) for key, value in bayes.n_iter_.items()},
        "ratio": {str(key): value for key, value in penalties(bayes).items()},
        "weights_vs_lstsq": difference,
    }


# ---------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------


def run_method(method, scale, n_shards, n_features):
    """Make the data as ``method`` needs it and fit; the fitted estimator."""
    from skmetalstsq import TensorMapBayesianRidge, TensorMapLstsq
    from skmetalstsq.distributed import fit_shards

    kind, how = method.split(" ")
    if kind == "bayes":
        estimator = TensorMapBayesianRidge()
    else:
        estimator = TensorMapLstsq(alpha=1e-3, fit_intercept=True)
    loaders = [
        functools.partial(load_shard, index, scale, n_shards, n_features)
        for index in range(n_shards)
    ]
    if how == "fit":
        return estimator.fit(*load_joined(scale, n_shards, n_features))
    if how == "partial_fit":
        for loader in loaders:
            estimator.partial_fit(*loader())
        return estimator
    return fit_shards(estimator, loaders)


def memory_of(method, scale, n_shards, n_features):
    """Peak resident memory added (KiB) by making the data and fitting, in this process."""
    run_method(method, 0.01, 2, n_features)  # libraries loaded, BLAS threads started
    gc.collect()
    estimator, extra_kib, exact = peak_added(
        lambda: run_method(method, scale, n_shards, n_features)
    )
    weights = [estimator.weights_.block(i).values.ravel().tolist() for i in range(N_BLOCKS)]
    shard = input_bytes(*load_shard(0, scale, n_shards, n_features))
    return {
        "extra_kib": extra_kib,
        "shard_bytes": shard,
        "weights": weights,
        "method": "VmHWM reset" if exact else "ru_maxrss",
    }


# ---------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------


def child(arguments):
    kind, scale, n_shards, n_features = arguments[:4]
    scale, n_shards, n_features = float(scale), int(n_shards), int(n_features)
    if kind == "time":
        result = time_all(scale, n_shards, n_features, int(arguments[4]))
    else:
        result = memory_of(arguments[4].replace("_", " ", 1), scale, n_shards, n_features)
    print("RESULT " + json.dumps(result))


def run_child(*arguments):
    command = [sys.executable, os.path.abspath(__file__), "--child", *map(str, arguments)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def load_average():
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def header(arguments):
    import numpy
    import scipy
    from threadpoolctl import threadpool_info

    import skmetalstsq

    blas = {(i["internal_api"], i["version"], i["num_threads"]) for i in threadpool_info()}
    n_samples, n_gradient = shard_rows(arguments.scale, arguments.shards)
    rows = arguments.shards * (n_samples + 3 * n_gradient)
    print(
        f"python {platform.python_version()}, numpy {numpy.__version__}, "
        f"scipy {scipy.__version__}, skmetalstsq {skmetalstsq.__version__}, "
        f"{os.cpu_count()} CPUs, BLAS {sorted(blas)}"
    )
    print(
        f"{N_BLOCKS} blocks of {arguments.shards * n_samples} samples + "
        f"{arguments.shards * n_gradient} x 3 positions gradient rows = {rows} stacked rows "
        f"x {arguments.features} features, one target, {arguments.shards} shards"
    )
    print(
        f"repeats {arguments.repeats} (median, minimum beside it); "
        f"load average {load_average()}: compare ratios measured in one run"
    )


def print_times(timing):
    median, minimum = timing["median"], timing["minimum"]
    print(f"\ntime (input {timing['input_bytes'] / 2**20:.1f} MiB)")
    print(f"  {'method':<14}{'median s':>10}{'min s':>9}{'ratio':>8}")
    for method, anchor, _ in GOALS.values():
        for shown in (anchor, method):
            ratio = median[shown] / median[anchor]
            print(f"  {shown:<14}{median[shown]:>10.4f}{minimum[shown]:>9.4f}{ratio:>8.2f}")
    print(
        f"  evidence evaluations per block (n_iter_): {timing['n_iter']}; "
        f"lambda_ / alpha_: "
        + ", ".join(f"{key} {value:.3g}" for key, value in timing["ratio"].items())
    )
    print(
        "  posterior mean / TensorMapLstsq(alpha=lambda_ / alpha_) weights, largest "
        f"difference relative to the largest weight: {timing['weights_vs_lstsq']:.1e}"
    )


def print_memory(memory):
    shard_mib = memory["bayes fit"]["shard_bytes"] / 2**20
    print(
        f"\npeak memory added (data made and fitted; {memory['bayes fit']['method']}), "
        f"one shard's input {shard_mib:.1f} MiB"
    )
    print(f"  {'method':<20}{'MiB':>9}{'/ shard':>9}{'weights / fit':>15}")
    for method, result in memory.items():
        extra = result["extra_kib"] / 1024
        reference = np.array(memory[method.split(" ")[0] + " fit"]["weights"])
        weights = np.array(result["weights"])
        difference = np.abs(weights - reference).max() / np.abs(reference).max()
        print(f"  {method:<20}{extra:>9.1f}{extra / shard_mib:>9.2f}{difference:>15.1e}")


def print_goals(timing):
    print("\ngoals: median time / anchor, in this run")
    for method, anchor, limit in GOALS.values():
        ratio = timing["median"][method] / timing["median"][anchor]
        verdict = "met" if ratio <= limit else "not met"
        print(f"  {method} / {anchor}: {ratio:.2f}   goal <= {limit}   {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--repeats", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the rows")
    parser.add_argument("--features", type=int, default=150)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="3 repeats, a quarter of the rows")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child)
        return
    if arguments.quick:
        arguments.repeats, arguments.scale = 3, 0.25
    header(arguments)
    shape = (arguments.scale, arguments.shards, arguments.features)
    timing = run_child("time", *shape, arguments.repeats)
    print_times(timing)
    if not arguments.no_memory:
        memory = {
            method: run_child("memory", *shape, method.replace(" ", "_"))
            for method in MEMORY_METHODS
        }
        print_memory(memory)
    print_goals(timing)
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
