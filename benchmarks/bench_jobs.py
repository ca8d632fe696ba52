"""The cost of one (strategy, fold) job, the unit a run is fanned out in, and Ray's overhead.

Run: ``.venv/bin/python benchmarks/bench_jobs.py [--folds 4] [--dataset eurusd_1h]``.
Prints and writes ``benchmarks/results/jobs.json``.

1. Per strategy (pva, mrd, vbp, msa, mts, default parameters), the jobs of
   :func:`mlengine.backtest.walkforward.predict_folds` on the default scheme of
   :mod:`mlengine.pipeline` (60-day test windows after 2,000 training bars, purge = the
   strategy's label horizon) are built as :class:`FoldJob` and ``--folds`` of them, spread
   evenly from the first fold to the last (the training window grows with the fold, so their
   mean is close to the mean over the run), are run through :func:`run_fold` one after the
   other, as a worker runs them: one thread per numeric library (a cluster runs one task
   per CPU), in a fresh process per strategy so that its peak RSS (``ru_maxrss``: imports,
   data and the job's models) is the strategy's own. Per job: wall seconds, CPU seconds
   (the core-seconds a sizing needs; they are barely inflated when other work shares the
   machine, wall seconds are) and bars (training + predicted window). Each strategy's first
   job is run once untimed, so that imports and compilation are not billed to a job.
   The first and last folds of a longer sample (``--long-dataset``, 2.3 years of BTCUSD 1h)
   are timed the same way, and ``cpu_s_fit`` is, per strategy, the least-squares line of CPU
   seconds against training bars over all the timed jobs: what a sizing for longer
   histories extrapolates from.
2. The fan-out overhead per job: 1,000 trivial jobs through ``executor="local"`` (the peer,
   2 processes, a pool started per call) and ``executor="ray"`` (a local Ray with 2 CPUs,
   started beforehand and reported apart, its workers warm), best of 5; ``fixed_s`` is a
   call of one job per worker, ``marginal_ms_per_job`` = (t(1,000) - fixed) / 998;
   ``ratio_*`` = Ray / local.

Timings are wall-clock on a machine that may be shared with other work: read them as the
order of magnitude a sizing needs, not as a record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from _results import write_result
from _timing import best
from mlengine import datasets
from mlengine.parallel import THREAD_ENV_VARS, run_jobs

STRATEGIES = ("pva", "mrd", "vbp", "msa", "mts")
TRIVIAL_JOBS = 1000
REPEAT = 5
WORKERS = 2
THREADS = "1"


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (``ru_maxrss`` is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spread(n_folds: int, wanted: int) -> list[int]:
    """``wanted`` fold numbers from the first to the last, evenly spaced."""
    return sorted({round(x) for x in np.linspace(0, n_folds - 1, min(wanted, n_folds))})


def time_strategy(name: str, dataset: str, wanted: int) -> dict:
    """In a fresh worker process: time ``wanted`` of the strategy's fold jobs."""
    # imported here, not at the top: the local executor's spawned workers import this
    # script, and its start-up must not carry the strategies' imports (torch)
    from mlengine.backtest.walkforward import FoldJob, run_fold
    from mlengine.data.loader import WalkForwardSplit
    from mlengine.pipeline import (
        DEFAULT_MIN_TRAIN,
        DEFAULT_TEST_SIZE,
        label_horizon,
        strategy_factory,
    )

    bars = datasets.load(dataset)
    factory = strategy_factory(name)
    horizon = label_horizon(factory())
    split = WalkForwardSplit(test_size=DEFAULT_TEST_SIZE, min_train_size=DEFAULT_MIN_TRAIN)
    folds = split.with_purge(horizon).folds(bars)
    chosen = spread(len(folds), wanted)
    last = folds[-1].fold

    def job(k: int) -> FoldJob:
        return FoldJob(name, factory, bars, folds[k], None, None, 0, folds[k].fold == last)

    run_fold(job(chosen[0]))  # warm-up: imports, numba compilation
    rows = []
    for k in chosen:
        wall, cpu = time.perf_counter(), time.process_time()
        run_fold(job(k))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        fold = folds[k]
        rows.append(
            {
                "fold": fold.fold,
                "train_bars": len(fold.train),
                "test_bars": len(fold.test),
                "bars": int(fold.test[-1]) + 1,
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
            }
        )
        print(f"{name} fold {fold.fold}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 3)

    return {
        "n_folds": len(folds),
        "horizon": horizon,
        "timed": rows,
        "mean_wall_s_per_job": mean("wall_s"),
        "mean_cpu_s_per_job": mean("cpu_s"),
        "max_wall_s_per_job": max(r["wall_s"] for r in rows),
        "mean_train_bars": round(mean("train_bars")),
        "mean_test_bars": round(mean("test_bars")),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def in_fresh_process(name: str, dataset: str, wanted: int) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(time_strategy, name, dataset, wanted).result()


def trivial(job: int) -> int:
    return job + 1


def fixed_and_marginal(run: Callable[[int], list[int]]) -> dict:
    """Best of 5 of one job per worker (the fixed cost of a call: the pool start for the
    local executor, a round trip for Ray) and of ``TRIVIAL_JOBS``: the cost per extra job."""
    fixed = best(lambda: run(WORKERS), repeat=REPEAT)
    total = best(lambda: run(TRIVIAL_JOBS), repeat=REPEAT)
    marginal = max(0.0, (total - fixed) / (TRIVIAL_JOBS - WORKERS))
    return {
        "fixed_s": round(fixed, 3),
        "total_s": round(total, 3),
        "ms_per_job": round(1000 * total / TRIVIAL_JOBS, 3),
        "marginal_ms_per_job": round(1000 * marginal, 3),
    }


def fan_out_overhead() -> dict:
    import ray

    def on_ray(n: int) -> list[int]:
        return run_jobs(trivial, list(range(n)), executor="ray", progress=False)

    def local(n: int) -> list[int]:
        return run_jobs(trivial, list(range(n)), executor="local", workers=WORKERS, progress=False)

    start = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    try:
        on_ray(TRIVIAL_JOBS)  # untimed: worker processes started, the function imported
        ray_cost = fixed_and_marginal(on_ray)
    finally:
        ray.shutdown()
    local_cost = fixed_and_marginal(local)

    def ratio(key: str) -> float | None:
        return round(ray_cost[key] / local_cost[key], 3) if local_cost[key] > 0 else None

    return {
        "jobs": TRIVIAL_JOBS,
        "workers": WORKERS,
        "ray_start_s": round(ray_start, 2),
        "ray": ray_cost,
        "local": local_cost,
        "ratio_fixed": ratio("fixed_s"),
        "ratio_ms_per_job": ratio("ms_per_job"),
        "ratio_marginal": ratio("marginal_ms_per_job"),
    }


def linear_fit(rows: list[dict]) -> dict:
    """Least squares CPU seconds = intercept + slope x (training bars / 1,000)."""
    x = np.array([r["train_bars"] / 1000 for r in rows])
    y = np.array([r["cpu_s"] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    return {
        "intercept_s": round(float(intercept), 3),
        "s_per_1k_train_bars": round(float(slope), 3),
    }


def main() -> None:
    from mlengine.pipeline import DEFAULT_MIN_TRAIN, DEFAULT_TEST_SIZE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=4, help="folds timed per strategy")
    parser.add_argument("--dataset", default="eurusd_1h", choices=datasets.names())
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--long-dataset",
        default="btcusd_1h_coinbase",
        help="a longer sample whose first and last folds are timed too ('none': skip)",
    )
    args = parser.parse_args()
    for var in THREAD_ENV_VARS:  # inherited by the spawned worker processes
        os.environ[var] = THREADS
    n_bars = len(datasets.load(args.dataset))
    per_strategy = {
        name: in_fresh_process(name, args.dataset, args.folds)
        for name in args.strategies.split(",")
    }

    long: dict = {}
    if args.long_dataset != "none":
        long = {
            "dataset": args.long_dataset,
            "n_bars": len(datasets.load(args.long_dataset)),
            "strategies": {
                name: in_fresh_process(name, args.long_dataset, 2) for name in per_strategy
            },
        }
    fits = {
        name: linear_fit(timed["timed"] + (long["strategies"][name]["timed"] if long else []))
        for name, timed in per_strategy.items()
    }
    fits["all"] = {
        key: round(sum(fit[key] for fit in fits.values()), 3)
        for key in ("intercept_s", "s_per_1k_train_bars")
    }

    def across(key: str) -> float:
        return round(float(np.mean([s[key] for s in per_strategy.values()])), 3)

    result = {
        "dataset": args.dataset,
        "n_bars": n_bars,
        "scheme": {"test_size": DEFAULT_TEST_SIZE, "min_train_size": DEFAULT_MIN_TRAIN},
        "folds_timed": args.folds,
        "threads_per_job": int(THREADS),
        "strategies": per_strategy,
        "mean_wall_s_per_job": across("mean_wall_s_per_job"),
        "mean_cpu_s_per_job": across("mean_cpu_s_per_job"),
        "max_peak_rss_mb": max(s["peak_rss_mb"] for s in per_strategy.values()),
        "long_history": long,
        "cpu_s_fit": fits,
        "overhead": fan_out_overhead(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "shared_machine": True,
    }
    print(json.dumps(result, indent=2))
    write_result("jobs", result)


if __name__ == "__main__":
    main()
