"""TensorMapLstsqCV next to the equivalent GridSearchCV over TensorMapLstsq.

Run from the repository root::

    python benchmarks/bench_cv.py                     # both workloads, 3 repeats
    python benchmarks/bench_cv.py --quick             # 1 repeat, a quarter of the systems
    python benchmarks/bench_cv.py -w rcond-alpha      # one workload
    python benchmarks/bench_cv.py --n-jobs 2          # both searches with n_jobs=2

Data (float64, one target): 4 blocks, each over 240 systems of 4 atoms, with a
positions gradient (4 x 3 rows per atom), i.e. 240 x (4 + 48) = 12480 stacked rows
x 60 properties per block; feature scales span ten decades, so the cut-off matters.
Folds: 5 folds of systems (``KFold(5, shuffle=True, random_state=0)``), the default
score (pooled R^2).

Workloads:

- ``rcond``: 20 rcond candidates (``np.logspace(-12, -1, 20)``).
  ``GridSearchCV(TensorMapLstsq(driver="gelsd"), {"rcond": rconds})``: 100 fits of
  every block, slicing the folds for each, and the refit; against
  ``TensorMapLstsqCV(rconds)``: one decomposition per block per fold, and the refit.
- ``rcond-alpha``: 12 rconds x 10 alphas (``np.logspace(-12, -1, 12)`` x
  ``np.logspace(-10, 2, 10)``), 120 candidates.
  ``GridSearchCV(TensorMapLstsq(), {"rcond": rconds, "alpha": alphas})``: 600 fits of
  every block with the default solve (the rcond cut before the penalty, as
  ``TensorMapLstsqCV`` does), and the refit; against
  ``TensorMapLstsqCV(rconds, alphas)``: still one decomposition per block per fold.

Methods are timed in the same process, alternately, after one warm-up call each.
Times are medians over the repeats; the ratio is GridSearchCV's over
TensorMapLstsqCV's. The largest difference between the split scores of the two
(candidates in the same order: ``ParameterGrid`` sorts ``alpha`` before ``rcond``),
and whether they chose the same candidate, are printed too.
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV

N_BLOCKS, N_SYSTEMS, N_ATOMS, N_FEATURES = 4, 240, 4, 60
N_FOLDS = 5

#: name -> (rcond candidates, alpha candidates or None, the estimator GridSearchCV clones)
WORKLOADS = {
    "rcond": (np.logspace(-12, -1, 20), None, {"driver": "gelsd"}),
    "rcond-alpha": (np.logspace(-12, -1, 12), np.logspace(-10, 2, 10), {}),
}


def make_data(n_systems, seed=0):
    """(X, y) IndexedTensorMaps over systems; feature scales span ten decades."""
    rng = np.random.default_rng(seed)
    samples = Labels(
        ["system", "atom"],
        np.array([[s, a] for s in range(n_systems) for a in range(N_ATOMS)]),
    )
    gradient_samples = Labels(
        ["sample", "system", "atom"],
        np.array([[i, s, a] for i, (s, _) in enumerate(samples.values) for a in range(N_ATOMS)]),
    )
    xyz = [Labels.range("xyz", 3)]
    features, target = Labels.range("feature", N_FEATURES), Labels.range("energy", 1)
    scales = np.logspace(0, -10, N_FEATURES)
    x_blocks, y_blocks = [], []
    for block in range(N_BLOCKS):
        weights = np.zeros((N_FEATURES, 1))
        n_informative = 20 + 10 * block
        weights[:n_informative] = rng.normal(size=(n_informative, 1))
        latent = rng.normal(size=(len(samples), N_FEATURES))
        latent_gradient = rng.normal(size=(len(gradient_samples), 3, N_FEATURES))
        x = TensorBlock(latent * scales, samples, [], features)
        noise = 0.3 * rng.normal(size=(len(samples), 1))
        y = TensorBlock(latent @ weights + noise, samples, [], target)
        x.add_gradient(
            "positions", TensorBlock(latent_gradient * scales, gradient_samples, xyz, features)
        )
        noise = 0.3 * rng.normal(size=(len(gradient_samples), 3, 1))
        y.add_gradient(
            "positions",
            TensorBlock(latent_gradient @ weights + noise, gradient_samples, xyz, target),
        )
        x_blocks.append(x)
        y_blocks.append(y)
    keys = Labels(["center_type"], np.arange(N_BLOCKS).reshape(-1, 1))
    return (
        IndexedTensorMap(TensorMap(keys, x_blocks), "system"),
        IndexedTensorMap(TensorMap(keys, y_blocks), "system"),
    )


def run_grid_search(X, y, cv, n_jobs, workload):
    rconds, alphas, estimator = WORKLOADS[workload]
    grid = {"rcond": list(rconds)}
    if alphas is not None:
        grid["alpha"] = list(alphas)
    return GridSearchCV(TensorMapLstsq(**estimator), grid, cv=cv, n_jobs=n_jobs).fit(X, y)


def run_cv(X, y, cv, n_jobs, workload):
    rconds, alphas, _ = WORKLOADS[workload]
    alphas = (0.0,) if alphas is None else alphas
    return TensorMapLstsqCV(rconds=rconds, alphas=alphas, cv=cv, n_jobs=n_jobs).fit(X, y)


def run_workload(workload, X, y, cv, n_jobs, repeats):
    """Time both searches on one workload and print what they found."""
    rconds, alphas, estimator = WORKLOADS[workload]
    n_candidates = len(rconds) * (1 if alphas is None else len(alphas))
    grid = f"{len(rconds)} rconds" + ("" if alphas is None else f" x {len(alphas)} alphas")
    print(
        f"\n{workload}: {grid} = {n_candidates} candidates x {N_FOLDS} folds, "
        f"GridSearchCV over TensorMapLstsq({', '.join(f'{k}={v!r}' for k, v in estimator.items())})"
    )
    methods = {"GridSearchCV": run_grid_search, "TensorMapLstsqCV": run_cv}
    times = {name: [] for name in methods}
    results = {}
    for name, method in methods.items():  # warm-up
        results[name] = method(X, y, cv, n_jobs, workload)
    for _ in range(repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            method(X, y, cv, n_jobs, workload)
            times[name].append(time.perf_counter() - start)

    search, model = results["GridSearchCV"], results["TensorMapLstsqCV"]
    # split scores are compared candidate by candidate: the same candidates in the same order
    names = list(search.cv_results_["params"][0])
    candidates = [{name: params[name] for name in names} for params in model.cv_results_["params"]]
    assert candidates == list(search.cv_results_["params"]), "candidates in another order"
    difference = max(
        np.abs(
            search.cv_results_[f"split{k}_test_score"] - model.cv_results_[f"split{k}_test_score"]
        ).max()
        for k in range(N_FOLDS)
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:>18}: {median:8.3f} s")
    ratio = medians["GridSearchCV"] / medians["TensorMapLstsqCV"]
    print(f"speed-up of TensorMapLstsqCV over GridSearchCV: {ratio:.1f}x")
    print(f"largest split-score difference: {difference:.1e}")
    chosen = {"rcond": model.rcond_}
    if alphas is not None:
        chosen["alpha"] = model.alpha_
    same = all(search.best_params_[name] == value for name, value in chosen.items())
    print(
        "chosen: "
        + ", ".join(f"{name} {value:.3g}" for name, value in chosen.items())
        + " (TensorMapLstsqCV), "
        + ", ".join(f"{name} {search.best_params_[name]:.3g}" for name in chosen)
        + f" (GridSearchCV): {'the same' if same else 'DIFFERENT'} candidate"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1/4 of the systems")
    parser.add_argument("-r", "--repeats", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument(
        "-w", "--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS)
    )
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    n_systems = N_SYSTEMS // 4 if args.quick else N_SYSTEMS

    X, y = make_data(n_systems)
    n_rows = n_systems * N_ATOMS * (1 + 3 * N_ATOMS)
    cv = KFold(N_FOLDS, shuffle=True, random_state=0)
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{N_BLOCKS} blocks of {n_rows} stacked rows x {N_FEATURES} properties "
        f"({n_systems} systems), n_jobs={args.n_jobs}, {repeats} repeat(s)"
    )
    for workload in args.workloads:
        run_workload(workload, X, y, cv, args.n_jobs, repeats)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
