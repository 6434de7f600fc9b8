"""Fit time and peak memory of TensorMapLstsq next to metatensor.lstsq and LAPACK alone.

Run from the repository root::

    python benchmarks/bench_fit.py             # every workload, 7 repeats
    python benchmarks/bench_fit.py --quick     # 3 repeats, a quarter of the rows
    python benchmarks/bench_fit.py -w W1 W3 -r 11 --no-memory

Workloads (float64, one target, ``rcond=1e-12`` for every method):

- W1: 16 blocks of 4000 samples x 300 properties, no gradients;
- W2: 4 blocks of 2000 samples with a positions gradient of 60000 rows x 3 (xyz),
  i.e. 182000 stacked rows x 200 properties per block (gradient-dominated);
- W3: 200 blocks of 300 samples x 50 properties (overhead-dominated).

Methods, all timed in the same process, round-robin, after one warm-up call each,
each call after a pause of 0.25 s (outside the timer) in which the BLAS threads
of the previous call go idle:

- ``floor``: ``scipy.linalg.lstsq(lapack_driver="gelsd")`` alone, on Fortran-ordered
  ``[values; gradients]`` copies stacked beforehand (outside the timer) that LAPACK
  may overwrite: no stacking, no checks, no copy. Timed with the default number of
  BLAS threads and with BLAS on one thread; the faster of the two is the floor.
- ``metatensor``: ``metatensor.lstsq(X, y, rcond)``, the reference.
- ``skm n_jobs=1`` and ``skm n_jobs=2``: ``TensorMapLstsq(rcond, n_jobs).fit(X, y)``,
  the whole fit (input checks, solve, wrapping the weights into a TensorMap).
  ``n_jobs=1`` solves blocks in as many threads as BLAS may use, each running BLAS
  on one thread;
- ``skm 1 thread``: the ``n_jobs=1`` fit under ``threadpool_limits(limits=1)``, i.e.
  strictly on one thread (``metatensor.lstsq`` keeps BLAS's default threads).

Times are medians over the repeats; ratios are against ``metatensor`` and ``floor``.

Peak memory is measured for each (workload, method) in a fresh Python process:
it builds the data (written in place, so that building leaves no freed peak
behind), runs the method once on a tiny problem to load every library, resets
the kernel's peak resident size (``VmHWM``, by writing ``5`` to
``/proc/self/clear_refs``), reads the resident size, runs the method once and
reads the peak again. The difference is everything the method added at its peak:
numpy copies, LAPACK workspace and thread stacks alike (``tracemalloc`` would miss
LAPACK's workspace). Where ``clear_refs`` cannot be written, ``ru_maxrss`` minus the
resident size before the run is used instead (an upper bound on the same figure
when building the data peaked higher). It is printed as MiB and as a fraction of
the input size (every X and y array).

The environment variables ``OPENBLAS_*`` (e.g. ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE``) are left as they are; every method runs under the same ones,
and the header prints them.

Where ``torch.cuda.is_available()``, each workload is also timed with
``TensorMapLstsq(device="cuda")`` next to ``device="cpu"`` (torch on the CPU) and
numpy data; otherwise that part is skipped with a message.
"""

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

WORKLOADS = {
    # name: (n_blocks, n_samples, n_gradient_rows, n_properties, description)
    "W1": (16, 4000, 0, 300, "16 blocks 4000 x 300, no gradients"),
    "W2": (4, 2000, 60000, 200, "4 blocks 2000 + 60000x3 gradient rows x 200"),
    "W3": (200, 300, 0, 50, "200 blocks 300 x 50"),
}
METHODS = ("floor", "metatensor", "skm n_jobs=1", "skm n_jobs=2", "skm 1 thread")
RCOND = 1e-12
#: pause before each timed call (outside the timer), see :func:`settle`
SETTLE_S = 0.25


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------


def workload_shape(name, scale):
    n_blocks, n_samples, n_gradient_rows, n_properties, _ = WORKLOADS[name]
    n_samples = max(int(n_samples * scale), 1)
    n_gradient_rows = int(n_gradient_rows * scale)
    return n_blocks, n_samples, n_gradient_rows, n_properties


def build(name, scale, seed=0):
    """(X, y) TensorMaps of a workload, every array written in place."""
    from metatensor import Labels, TensorBlock, TensorMap

    n_blocks, n_samples, n_gradient_rows, n_properties = workload_shape(name, scale)
    rng = np.random.default_rng(seed)
    properties = Labels.range("feature", n_properties)
    targets = Labels.range("energy", 1)
    samples = Labels(["system", "atom"], np.stack([np.arange(n_samples)] * 2, axis=1))
    if n_gradient_rows:
        rows = np.arange(n_gradient_rows)
        gradient_samples = Labels(
            ["sample", "system", "atom"],
            np.stack([rows % n_samples, rows % n_samples, rows // n_samples], axis=1),
        )
        xyz = [Labels.range("xyz", 3)]
    x_blocks, y_blocks = [], []
    for _ in range(n_blocks):
        weights = rng.standard_normal((n_properties, 1))
        values = np.empty((n_samples, n_properties))
        rng.standard_normal(out=values)
        x = TensorBlock(values, samples, [], properties)
        y = TensorBlock(values @ weights, samples, [], targets)
        y.values[:] += 0.1 * rng.standard_normal(y.values.shape)
        if n_gradient_rows:
            gradient = np.empty((n_gradient_rows, 3, n_properties))
            rng.standard_normal(out=gradient)
            y_gradient = (gradient.reshape(-1, n_properties) @ weights).reshape(-1, 3, 1)
            x.add_gradient("positions", TensorBlock(gradient, gradient_samples, xyz, properties))
            y.add_gradient("positions", TensorBlock(y_gradient, gradient_samples, xyz, targets))
        x_blocks.append(x)
        y_blocks.append(y)
    keys = Labels.range("center_type", n_blocks)
    return TensorMap(keys, x_blocks), TensorMap(keys, y_blocks)


def input_bytes(X, y):
    total = 0
    for tensor in (X, y):
        for block in tensor.blocks():
            total += block.values.nbytes
            total += sum(gradient.values.nbytes for _, gradient in block.gradients())
    return total


def stacked_arrays(X, y):
    """[values; gradients] of every block of X and y, as metatensor.lstsq stacks them."""
    pairs = []
    for key, x_block in X.items():
        y_block = y.block(key)
        a = [x_block.values.reshape(-1, x_block.values.shape[-1])]
        b = [y_block.values.reshape(-1, y_block.values.shape[-1])]
        for parameter, gradient in x_block.gradients():
            a.append(gradient.values.reshape(-1, gradient.values.shape[-1]))
            y_gradient = y_block.gradient(parameter).values
            b.append(y_gradient.reshape(-1, y_gradient.shape[-1]))
        pairs.append((np.concatenate(a), np.concatenate(b)))
    return pairs


# ---------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------


def make_runner(method, X, y):
    """A function of no argument running ``method`` once on (X, y)."""
    if method == "metatensor":
        import metatensor

        return lambda: metatensor.lstsq(X, y, rcond=RCOND)
    if method == "skm 1 thread":
        from threadpoolctl import threadpool_limits

        from skmetalstsq import TensorMapLstsq

        estimator = TensorMapLstsq(rcond=RCOND, n_jobs=1)

        def fit_on_one_thread():
            with threadpool_limits(limits=1):
                estimator.fit(X, y)

        return fit_on_one_thread
    if method.startswith("skm"):
        from skmetalstsq import TensorMapLstsq

        n_jobs = int(method.rsplit("=", 1)[1])
        estimator = TensorMapLstsq(rcond=RCOND, n_jobs=n_jobs)
        return lambda: estimator.fit(X, y)
    if method.startswith("torch"):
        from skmetalstsq import TensorMapLstsq

        estimator = TensorMapLstsq(rcond=RCOND, device=method.split(":", 1)[1])
        return lambda: estimator.fit(X, y)
    raise ValueError(method)


class Floor:
    """scipy gelsd alone on Fortran-ordered stacked copies prepared beforehand."""

    def __init__(self, X, y):
        self.pairs = stacked_arrays(X, y)
        self.copies = None

    def prepare(self):
        self.copies = None
        gc.collect()
        self.copies = [(np.asfortranarray(a), np.asfortranarray(b)) for a, b in self.pairs]

    def __call__(self):
        import scipy.linalg

        for a, b in self.copies:
            scipy.linalg.lstsq(
                a,
                b,
                cond=RCOND,
                lapack_driver="gelsd",
                overwrite_a=True,
                overwrite_b=True,
                check_finite=False,
            )
        self.copies = None


def settle():
    """Collect garbage and let BLAS threads of the previous call go idle.

    OpenBLAS's threads keep spinning for a while after a call; the next method
    would otherwise start with a core taken by the previous one's threads.
    """
    gc.collect()
    time.sleep(SETTLE_S)


def time_workload(name, scale, repeats, methods):
    """Median seconds of each method on one workload, timed round-robin."""
    from threadpoolctl import threadpool_limits

    X, y = build(name, scale)
    runners = {}
    floor = None
    for method in methods:
        if method == "floor":
            floor = Floor(X, y)
        else:
            runners[method] = make_runner(method, X, y)
    times = {method: [] for method in runners}
    if floor is not None:
        times["floor (BLAS default)"] = []
        times["floor (BLAS 1 thread)"] = []
    for repeat in range(repeats + 1):  # the first round is a warm-up
        for method, runner in runners.items():
            settle()
            start = time.perf_counter()
            runner()
            elapsed = time.perf_counter() - start
            if repeat:
                times[method].append(elapsed)
        if floor is not None:
            for label in ("floor (BLAS default)", "floor (BLAS 1 thread)"):
                floor.prepare()
                settle()
                limit = 1 if "1 thread" in label else None
                with threadpool_limits(limits=limit):
                    start = time.perf_counter()
                    floor()
                    elapsed = time.perf_counter() - start
                if repeat:
                    times[label].append(elapsed)
    medians = {method: statistics.median(values) for method, values in times.items()}
    if floor is not None:
        medians["floor"] = min(medians["floor (BLAS default)"], medians["floor (BLAS 1 thread)"])
    return {"medians": medians, "input_bytes": input_bytes(X, y)}


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_of(name, scale, method):
    """Peak resident memory added by one run of ``method`` (KiB), in this process."""
    from threadpoolctl import threadpool_limits

    # load the libraries and start BLAS threads on a tiny problem first
    tiny_X, tiny_y = build("W1", 0.01)
    warm = Floor(tiny_X, tiny_y) if method == "floor" else make_runner(method, tiny_X, tiny_y)
    if method == "floor":
        warm.prepare()
    warm()
    del warm, tiny_X, tiny_y

    X, y = build(name, scale)
    if method == "floor":
        runner = Floor(X, y)
        runner.prepare()
    else:
        runner = make_runner(method, X, y)
    gc.collect()
    with threadpool_limits(limits=None):
        exact = _reset_peak()
        before = _status_kib("VmRSS")
        runner()
        peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "extra_kib": peak - before,
        "input_bytes": input_bytes(X, y),
        "method": "VmHWM reset" if exact else "ru_maxrss",
    }


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------


def time_cuda(name, scale, repeats):
    import torch

    if not torch.cuda.is_available():
        return None
    X, y = build(name, scale)
    runners = {
        "numpy (skm n_jobs=1)": make_runner("skm n_jobs=1", X, y),
        "torch cpu": make_runner("torch:cpu", X, y),
        "torch cuda": make_runner("torch:cuda", X, y),
    }
    times = {method: [] for method in runners}
    for repeat in range(repeats + 1):
        for method, runner in runners.items():
            settle()
            torch.cuda.synchronize()
            start = time.perf_counter()
            runner()
            torch.cuda.synchronize()
            if repeat:
                times[method].append(time.perf_counter() - start)
    return {method: statistics.median(values) for method, values in times.items()}


# ---------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------


def child(arguments):
    """Run one measurement in this (fresh) process and print it as JSON."""
    kind, name, scale = arguments[0], arguments[1], float(arguments[2])
    if kind == "time":
        repeats, methods = int(arguments[3]), arguments[4].split(",")
        result = time_workload(name, scale, repeats, methods)
    elif kind == "memory":
        result = memory_of(name, scale, arguments[3])
    else:
        result = time_cuda(name, scale, int(arguments[3]))
    print("RESULT " + json.dumps(result))


def run_child(*arguments):
    command = [sys.executable, os.path.abspath(__file__), "--child", *map(str, arguments)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def header(arguments):
    import numpy
    import scipy
    from threadpoolctl import threadpool_info

    import skmetalstsq

    blas = {(i["internal_api"], i["version"], i["num_threads"]) for i in threadpool_info()}
    openblas = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    print(
        f"python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}"
    )
    print(f"skmetalstsq {skmetalstsq.__version__}, {os.cpu_count()} CPUs, BLAS {sorted(blas)}")
    print(f"OPENBLAS_* environment (same for every method): {openblas or 'none'}")
    print(
        f"load average {load_average()}: other processes on this machine disturb "
        "timings; compare ratios measured in one run"
    )
    print(
        f"repeats {arguments.repeats} (median), rows scaled by {arguments.scale}, "
        f"rcond {RCOND}; ratios < 1 are faster / leaner than the reference"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workloads", nargs="+", choices=sorted(WORKLOADS))
    parser.add_argument("-r", "--repeats", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each workload's rows")
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
    cuda = cuda_available()
    summary = {}
    for name in arguments.workloads or sorted(WORKLOADS):
        print(f"\n{name}: {WORKLOADS[name][-1]}" + (" (scaled)" if arguments.scale != 1 else ""))
        timing = run_child("time", name, arguments.scale, arguments.repeats, ",".join(METHODS))
        medians = timing["medians"]
        memory = {}
        if not arguments.no_memory:
            memory = {m: run_child("memory", name, arguments.scale, m) for m in METHODS}
        size_mib = timing["input_bytes"] / 2**20
        print(f"  input {size_mib:.1f} MiB")
        print(
            f"  {'method':<22}{'median s':>10}{'/ metatensor':>14}{'/ floor':>9}"
            + ("" if not memory else f"{'peak +MiB':>11}{'+ / input':>11}{'/ mts +':>9}")
        )
        shown = ["floor (BLAS default)", "floor (BLAS 1 thread)", *METHODS[1:]]
        for method in shown:
            seconds = medians[method]
            line = (
                f"  {method:<22}{seconds:>10.4f}{seconds / medians['metatensor']:>14.2f}"
                f"{seconds / medians['floor']:>9.2f}"
            )
            key = "floor" if method.startswith("floor") else method
            if memory and method != "floor (BLAS 1 thread)":
                extra = memory[key]["extra_kib"] / 1024
                reference = memory["metatensor"]["extra_kib"] / 1024
                line += f"{extra:>11.1f}{extra / size_mib:>11.3f}{extra / reference:>9.2f}"
            print(line)
        if memory:
            print(f"  peak memory measured by {memory['metatensor']['method']}")
        summary[name] = (medians, memory, size_mib)
        if cuda:
            times = run_child("cuda", name, arguments.scale, arguments.repeats)
            reference = times["numpy (skm n_jobs=1)"]
            for method, seconds in times.items():
                print(f"  {method:<22}{seconds:>10.4f}{seconds / reference:>14.2f} (/ numpy)")
    if not cuda:
        print("\nCUDA: torch.cuda.is_available() is False (or torch is missing): skipped")
    print_summary(summary)
    print(f"\nload average at the end: {load_average()}")


def cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_average():
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def print_summary(summary):
    """Ratios per workload, the figures the targets are about."""
    methods = ("skm n_jobs=1", "skm n_jobs=2", "skm 1 thread")
    print("\nsummary: time / metatensor.lstsq (/ LAPACK floor); peak memory added / input")
    print(
        f"  {'':<4}"
        + "".join(f"{method[4:]:>18}" for method in methods)
        + "".join(f"{'mem ' + method[4:]:>18}" for method in methods[:2])
        + f"{'mem metatensor':>18}"
    )
    for name, (medians, memory, size_mib) in summary.items():
        line = f"  {name:<4}"
        for method in methods:
            ratios = (
                f"{medians[method] / medians['metatensor']:.2f} "
                f"({medians[method] / medians['floor']:.2f})"
            )
            line += f"{ratios:>18}"
        if memory:
            for method in (*methods[:2], "metatensor"):
                line += f"{memory[method]['extra_kib'] / 1024 / size_mib:>18.3f}"
        print(line)


if __name__ == "__main__":
    main()
