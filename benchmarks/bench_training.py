"""Strategy training time per 10,000 bars and one-bar inference latency, vs a bare XGBoost.

Run: ``.venv/bin/python benchmarks/bench_training.py [--dataset btcusd_1h_coinbase]``.
Prints a Rich table and writes ``benchmarks/results/training.json``.

Training: each of the five strategies (pva, mrd, vbp, msa, mts), with its default
parameters and seed 0, fitted once on ``BARS`` real bundled bars (the last ``BARS`` before
the final ``HELD_OUT`` of the data set) after a warm-up fit on ``WARM_BARS`` bars (numba
compilation, torch start-up): seconds per 10,000 bars, the whole ``fit`` (features,
labels, encoder training where there is one, the XGBoost head, calibration). The peer is
the bare head: :class:`xgboost.XGBClassifier` with default settings (``random_state=0``)
fitted on as many rows of simple return features (log returns over 1, 2, 3, 5, 10 and 20
bars, 20-bar volatility; label: the next bar's direction), best of ``PEER_REPEAT``.
``ratio`` = our strategy / the bare head: what the full strategy costs over the model
alone.

Inference: ``predict_proba`` of each fitted strategy for the newest bar of the data set
(one the fit never saw), given only the tail of bars it needs: the shortest of ``TAILS``
for which the newest bar's ``p_up`` equals the one computed on the long history (the
features' warm-up and the encoder windows fit in it), scoring that bar alone
(``last=1``, one XGBoost thread: what :meth:`LiveEnsemble.predict` does). Latency p50 and
p99 over ``CALLS`` calls, against the bare XGBoost ``predict_proba`` of one row
(``PEER_CALLS`` calls).
Wall-clock on a shared machine: the p99 of a few hundred calls is the second or third
slowest, noisy by nature.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import xgboost
from rich.console import Console
from rich.table import Table

from _results import write_result
from mlengine import datasets
from mlengine.strategies import registry
from mlengine.strategies.base import Strategy

STRATEGIES = ("pva", "mrd", "vbp", "msa", "mts")
BARS = 10_000
HELD_OUT = 1_000  # bars after the training window: the newest one is predicted
WARM_BARS = 3_000
TAILS = (256, 512, 1024, 2048, 4096, 8192)
CALLS = 200
PEER_CALLS = 1_000
PEER_REPEAT = 3
SEED = 0
LAGS = (1, 2, 3, 5, 10, 20)


def return_features(bars: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Simple return features and the next bar's direction, warm-up and last bar dropped."""
    logc = np.log(bars["close"])
    x = pd.DataFrame({f"ret_{lag}": logc.diff(lag) for lag in LAGS})
    x["vol_20"] = logc.diff().rolling(20).std()
    y = (logc.shift(-1) > logc).astype(int)
    keep = x.notna().all(axis=1) & logc.shift(-1).notna()
    return x[keep], y[keep]


def latencies_ms(fn: Callable[[], object], calls: int) -> np.ndarray:
    """Wall time of each of ``calls`` calls of ``fn``, in ms (after one untimed call)."""
    fn()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def needed_tail(strategy: Strategy, bars: pd.DataFrame) -> tuple[int, float]:
    """The shortest tail of ``TAILS`` whose newest ``p_up`` equals the long history's, and
    that ``p_up``."""
    full = float(strategy.predict_proba(bars)["p_up"].iloc[-1])
    for tail in TAILS:
        p = float(strategy.predict_proba(bars.iloc[-tail:])["p_up"].iloc[-1])
        if np.isfinite(p) and abs(p - full) <= 1e-9:
            return tail, full
    raise AssertionError(f"{strategy.name}: no tail of {TAILS} reproduces p_up={full}")


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="btcusd_1h_coinbase", choices=datasets.names())
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    args = parser.parse_args()
    bars = datasets.load(args.dataset)
    if len(bars) < BARS + HELD_OUT:
        raise SystemExit(f"{args.dataset}: {len(bars)} bars, need {BARS + HELD_OUT}")
    train = bars.iloc[-(BARS + HELD_OUT) : -HELD_OUT]
    history = bars.iloc[-(BARS + HELD_OUT) :]  # the long history ending at the newest bar

    # the peer: the bare head on simple return features, same number of rows
    x, y = return_features(bars.iloc[-(BARS + HELD_OUT + 40) :])
    x_fit, y_fit = x.iloc[:BARS], y.iloc[:BARS]
    fit_times = []
    head = xgboost.XGBClassifier(random_state=SEED)
    for _ in range(PEER_REPEAT):
        head = xgboost.XGBClassifier(random_state=SEED)
        start = time.perf_counter()
        head.fit(x_fit, y_fit)
        fit_times.append(time.perf_counter() - start)
    peer_fit_s = min(fit_times) * 10_000 / len(x_fit)
    row = x.iloc[[-1]]
    peer_lat = latencies_ms(lambda: head.predict_proba(row), PEER_CALLS)
    peer: dict[str, Any] = {
        "rows": len(x_fit),
        "features": list(x.columns),
        "fit_s_per_10k": peer_fit_s,
        "predict_p50_ms": _pct(peer_lat, 50),
        "predict_p99_ms": _pct(peer_lat, 99),
    }

    results: dict[str, dict[str, Any]] = {}
    for name in args.strategies:
        registry.create(name, seed=SEED).fit(train.iloc[:WARM_BARS])  # warm-up
        strategy = registry.create(name, seed=SEED)
        start = time.perf_counter()
        strategy.fit(train)
        fit_s = (time.perf_counter() - start) * 10_000 / len(train)
        tail, p_up = needed_tail(strategy, history)
        recent = history.iloc[-tail:]
        score: Any = strategy.predict_proba  # the five take ``last``; the protocol does not
        newest = functools.partial(score, recent, last=1)
        assert float(newest()["p_up"].iloc[-1]) == p_up, f"{name}: last=1 changes p_up"
        with xgboost.config_context(nthread=1):  # as the live ensemble scores one row
            lat = latencies_ms(newest, CALLS)
        results[name] = {
            "fit_s_per_10k": fit_s,
            "fit_ratio": fit_s / peer_fit_s,
            "tail_bars": tail,
            "p_up_newest": p_up,
            "predict_p50_ms": _pct(lat, 50),
            "predict_p99_ms": _pct(lat, 99),
            "predict_ratio_p50": _pct(lat, 50) / peer["predict_p50_ms"],
            "predict_ratio_p99": _pct(lat, 99) / peer["predict_p99_ms"],
        }
        print(f"{name}: {json.dumps(results[name])}", flush=True)

    payload = {
        "dataset": args.dataset,
        "bars": BARS,
        "seed": SEED,
        "calls": CALLS,
        "peer_calls": PEER_CALLS,
        "cpus": os.cpu_count(),
        "versions": {"xgboost": xgboost.__version__},
        "peer": peer,
        "strategies": results,
    }
    table = Table(title=f"training per 10k {args.dataset} bars and one-bar inference")
    for col in ("model", "fit s/10k", "fit ratio", "tail", "p50 ms", "p99 ms", "p99 ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['fit_s_per_10k']:.2f}",
            f"{r['fit_ratio']:.1f}",
            str(r["tail_bars"]),
            f"{r['predict_p50_ms']:.2f}",
            f"{r['predict_p99_ms']:.2f}",
            f"{r['predict_ratio_p99']:.1f}",
        )
    table.add_row(
        "bare XGBoost",
        f"{peer_fit_s:.3f}",
        "1",
        "1 row",
        f"{peer['predict_p50_ms']:.3f}",
        f"{peer['predict_p99_ms']:.3f}",
        "1",
    )
    Console(width=120).print(table)
    write_result("training", payload)


if __name__ == "__main__":
    main()
