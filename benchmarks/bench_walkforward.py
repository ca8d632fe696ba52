"""A strategy's walk-forward on a bundled real sample, as ``mlengine train`` runs it.

Run: ``.venv/bin/python benchmarks/bench_walkforward.py [--strategy pva] [--dataset D]``.
Prints and writes ``benchmarks/results/walkforward_<strategy>_<dataset>.json``.

The walk-forward of :func:`mlengine.pipeline.evaluate` with the strategy's default
parameters, the default scheme (60-day test windows after 2,000 training bars) and default
costs, timed end to end (features, one model fit per fold, predictions, backtest,
verdict), without a store or run directory. Goal: under 5 minutes on 2 cores per data set;
reported as ``ratio`` = elapsed / 300 s (goal <= 1). Fold fits are sequential.
The OOS figures are printed too, so the time is never quoted apart from what it bought.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _results import write_result
from mlengine import datasets
from mlengine.pipeline import evaluate, strategy_factory
from mlengine.strategies import registry

GOAL_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="pva", choices=registry.names())
    parser.add_argument("--dataset", default="eurusd_1h", choices=datasets.names())
    args = parser.parse_args()
    bars = datasets.load(args.dataset)
    start = time.perf_counter()
    comparison = evaluate({args.strategy: strategy_factory(args.strategy)}, bars, progress=False)
    elapsed = time.perf_counter() - start
    run = comparison.runs[args.strategy]
    m = run.metrics
    result = {
        "strategy": args.strategy,
        "dataset": args.dataset,
        "n_bars": len(bars),
        "n_folds": len(run.folds),
        "n_oos_bars": run.data_range["n_oos_bars"],
        "params": run.params,
        "elapsed_s": round(elapsed, 2),
        "per_fold_s": round(elapsed / len(run.folds), 2),
        "goal_s": GOAL_S,
        "ratio": round(elapsed / GOAL_S, 3),
        "cpus": os.cpu_count(),
        "oos": {
            "direction_accuracy": m.direction_accuracy,
            "sharpe": m.sharpe,
            "max_drawdown": m.max_drawdown,
            "total_return": m.total_return,
            "n_trades": m.n_trades,
            "verdict_score": run.verdict.score,
            "effective": run.verdict.effective,
        },
    }
    print(json.dumps(result, indent=2, default=str))
    write_result(f"walkforward_{args.strategy}_{args.dataset}", result)


if __name__ == "__main__":
    main()
