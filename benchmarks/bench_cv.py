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

- ``loo``: leave-one-structure-out on 2 blocks of 40 features (4 atoms per system), at
  150, 600 and 2400 systems, for two candidate sets: the 12 default ``rconds``, and 12
  ``alphas`` (``np.logspace(-8, 3, 12)``, ``rconds=[1e-12]``).
  ``TensorMapLstsqCV(cv="loo")`` (one factorisation per block and one pass over its rows)
  against ``TensorMapLstsqCV(cv=LeaveOneOut())`` (one decomposition per block and
  system, up to 600 systems), ``GridSearchCV(TensorMapLstsq(), cv=LeaveOneOut())`` (at 150
  systems only) and
  a plain ``TensorMapLstsq().fit``: times as multiples of the plain fit, the largest
  difference of the mean scores against ``LeaveOneOut()`` (exact for alphas; for rconds,
  where the cut-off of a held-out fit may differ from the full fit's), and the peak of
  the memory that numpy allocates (tracemalloc) during ``"loo"`` and the plain fit.

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
import tracemalloc

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold, LeaveOneOut

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics
from skmetalstsq._cv import DEFAULT_RCONDS

N_BLOCKS, N_SYSTEMS, N_ATOMS, N_FEATURES = 4, 240, 4, 60
N_FOLDS = 5

#: name -> (rcond candidates, alpha candidates or None, the estimator GridSearchCV clones)
WORKLOADS = {
    "rcond": (np.logspace(-12, -1, 20), None, {"driver": "gelsd"}),
    "rcond-alpha": (np.logspace(-12, -1, 12), np.logspace(-10, 2, 10), {}),
}


def make_data(n_systems, seed=0, n_blocks=N_BLOCKS, n_features=N_FEATURES):
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
    features, target = Labels.range("feature", n_features), Labels.range("energy", 1)
    scales = np.logspace(0, -10, n_features)
    x_blocks, y_blocks = [], []
    for block in range(n_blocks):
        weights = np.zeros((n_features, 1))
        n_informative = min(20 + 10 * block, n_features)
        weights[:n_informative] = rng.normal(size=(n_informative, 1))
        latent = rng.normal(size=(len(samples), n_features))
        latent_gradient = rng.normal(size=(len(gradient_samples), 3, n_features))
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
    keys = Labels(["center_type"], np.arange(n_blocks).reshape(-1, 1))
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


LOO_SYSTEMS = (150, 600, 2400)
LOO_CANDIDATES = {
    "12 rconds": {"rconds": DEFAULT_RCONDS},
    "12 alphas": {"rconds": [1e-12], "alphas": np.logspace(-8, 3, 12)},
}


def peak_allocated(function):
    """Seconds of one call and the peak of the memory numpy allocated during it (MiB)."""
    tracemalloc.start()
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def run_loo(repeats, n_jobs, systems=LOO_SYSTEMS):
    """Leave-one-structure-out against LeaveOneOut() refits, in multiples of a plain fit."""
    print(
        "\nloo: 2 blocks x 40 features, 4 atoms per system (1 + 12 rows per atom), "
        'scoring="neg_mse" (its mean over LeaveOneOut() splits is the pooled score)'
    )
    for n_systems in systems:
        X, y = make_data(n_systems, n_blocks=2, n_features=40)
        for label, grid in LOO_CANDIDATES.items():
            methods = _loo_methods(X, y, grid, n_jobs, n_systems)
            results = {name: method() for name, method in methods.items()}  # warm-up
            times = {name: [] for name in methods}
            for _ in range(repeats):
                for name, method in methods.items():
                    start = time.perf_counter()
                    method()
                    times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(values) for name, values in times.items()}
            fit = medians["fit"]
            _, loo_peak = peak_allocated(methods["loo"])
            _, fit_peak = peak_allocated(methods["fit"])
            print(
                f"{n_systems:>5} systems, {label}: "
                + ", ".join(f"{name} {m:.3f} s ({m / fit:.1f} fits)" for name, m in medians.items())
            )
            print(f"      peak allocated: loo {loo_peak:.1f} MiB, fit {fit_peak:.1f} MiB")
            if "LeaveOneOut()" in results:
                exact = results["LeaveOneOut()"].cv_results_["mean_test_score"]
                fast = results["loo"].cv_results_["mean_test_score"]
                same = results["loo"].best_index_ == results["LeaveOneOut()"].best_index_
                print(
                    "      largest relative difference of the mean scores against "
                    f"LeaveOneOut(): {np.max(np.abs(fast - exact) / np.abs(exact)):.1e}; "
                    f"same choice: {same}"
                )


def _loo_methods(X, y, grid, n_jobs, n_systems):
    """The timed calls of :func:`run_loo`, by name: one decomposition per system up to
    600 systems (a minute and a half there, growing as the square of the systems),
    GridSearchCV at 150."""

    def search(cv):
        return TensorMapLstsqCV(cv=cv, scoring="neg_mse", n_jobs=n_jobs, **grid).fit(X, y)

    methods = {
        "fit": lambda: TensorMapLstsq(n_jobs=n_jobs).fit(X, y),
        "loo": lambda: search("loo"),
    }
    if n_systems <= 600:
        methods["LeaveOneOut()"] = lambda: search(LeaveOneOut())
    if n_systems <= 150:
        params = {"rcond": list(grid["rconds"])}
        if "alphas" in grid:
            params["alpha"] = list(grid["alphas"])
        scoring = metrics.scorer("neg_mse")
        methods["GridSearchCV"] = lambda: GridSearchCV(
            TensorMapLstsq(), params, cv=LeaveOneOut(), scoring=scoring, n_jobs=n_jobs
        ).fit(X, y)
    return methods


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1/4 of the systems")
    parser.add_argument("-r", "--repeats", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument(
        "-w", "--workloads", nargs="+", choices=[*WORKLOADS, "loo"], default=[*WORKLOADS, "loo"]
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
        if workload == "loo":
            run_loo(repeats, args.n_jobs, LOO_SYSTEMS[:1] if args.quick else LOO_SYSTEMS)
        else:
            run_workload(workload, X, y, cv, args.n_jobs, repeats)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
