"""Backtest engine against vectorbt and backtesting.py, side by side in one process.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--case N ...]`` (all cases by default;
``--case 3`` runs only case 3). Prints a Rich table of seconds and
ratios (ours / peer) and writes ``benchmarks/results/engine.json``.

Each contestant runs several times warm (numba compiled for both), the contestants taking
turns (see :func:`race`); the table shows medians (as the issue's reference figures) and the
ratio of the best runs too; the JSON has both, and the engine and the metrics timed alone.

1. SMA(10/50) long/short, 0.1% commission, 1,000,000 random-walk bars, signals given: our
   ledger + equity + metrics vs vectorbt ``Portfolio.from_signals`` + total return + Sharpe
   (goal <= 0.5).
2. backtesting.py on the first 100,000 of those bars (goal: ours >= 100x faster, same trades).
3. Order intents with stop-loss/take-profit and volatility-target sizing on 1,000,000 bars vs
   the plain case (goal <= 1.5x); vectorbt with ``sl_stop``/``tp_stop`` for the record.
4. Naive vs tz-aware UTC index, ours and vectorbt (vectorbt's tz-aware run is skipped when a
   smaller run projects it beyond 60 s).
5. Cold start: import + first call in a fresh process with the numba cache warm (goal <= 5 s);
   also with an empty cache, for the record.
6. Peak memory of a 1,000,000-bar backtest above the input frame (RSS high-water mark in a
   fresh process; goal <= 300 MB).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from _results import write_result
from mlengine.backtest import CostModel, VolatilityTarget, run_backtest
from mlengine.data.schema import make_bar_frame

N_BIG = 1_000_000
N_BT = 100_000
ROUNDS, RUNS = 4, 3  # timed runs of each contestant: ROUNDS * RUNS
COMMISSION = 0.001
TZ_CAP_S = 60.0
# The SMA strategy pays ~55 log-units of commission over its ~27,600 round trips on a random
# walk; with a huge capital neither engine runs out of money (with 100k, vectorbt stops
# ordering once its cash is tiny and makes a third of the trades).
CAPITAL = 1e30
STOP, TARGET = 0.005, 0.01  # 0.5% and 1% from the decision close (vectorbt: from the entry)
HAS_METRICS = importlib.util.find_spec("mlengine.backtest.metrics") is not None
ROOT = Path(__file__).resolve().parent


def synthetic_bars(n: int, seed: int = 0) -> pd.DataFrame:
    """A geometric random walk of hourly bars (synthetic: a controlled experiment)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[100.0, close[:-1]]
    wick = np.abs(rng.normal(0, 5e-4, n)) * close
    cols = {
        "open": open_,
        "high": np.maximum(open_, close) + wick,
        "low": np.minimum(open_, close) - wick,
        "close": close,
        "volume": np.zeros(n),
    }
    idx = pd.date_range("1990-01-01", periods=n, freq="1h", tz="UTC")
    bars = make_bar_frame(idx, cols, symbol="RW", timeframe="1h")
    bars.attrs["market"] = "crypto"
    return bars


def sma_positions(bars: pd.DataFrame) -> pd.Series:
    close = bars["close"]
    gap = (close.rolling(10).mean() - close.rolling(50).mean()).to_numpy()
    return pd.Series(np.nan_to_num(np.sign(gap)), index=bars.index)


def sma_intents(bars: pd.DataFrame, pos: pd.Series) -> pd.DataFrame:
    """An intent at each crossing, with a stop and a target (``STOP``, ``TARGET``)."""
    p = pos.to_numpy()
    side = np.where((p != np.r_[0.0, p[:-1]]) & (p != 0), p, 0.0)
    close = bars["close"].to_numpy()
    return pd.DataFrame(
        {
            "side": side,
            "stop_loss": np.where(side != 0, close * (1 - STOP * side), np.nan),
            "take_profit": np.where(side != 0, close * (1 + TARGET * side), np.nan),
        },
        index=bars.index,
    )


def race(
    rounds: int = ROUNDS, runs: int = RUNS, **fns: Callable[[], Any]
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Best and median seconds of each function over ``rounds * runs`` timed runs, and its
    last result.

    The contestants take turns, in reverse order every other round, so that slow phases of
    the machine fall on all of them alike. A turn is one untimed run (numba compilation and
    caches at first; later it absorbs the cost of touching memory the other contestant has
    just handed back, which is slow on this virtual machine) and then ``runs`` timed runs in
    a row, each reusing the memory its predecessor freed. As in :mod:`timeit`, the garbage
    collector runs before each timed run and is off during it: a collection triggered inside
    a run walks every live object, the other contestants' results included, and made
    vectorbt's times swing between 0.08 and 0.2 s.
    """
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for turn in range(rounds):
        for name in order if turn % 2 == 0 else order[::-1]:
            fn = fns[name]
            out[name] = None  # free the previous result before the untimed run
            out[name] = fn()
            for _ in range(runs):
                out[name] = None
                gc.collect()
                gc.disable()
                try:
                    start = time.perf_counter()
                    out[name] = fn()
                    times[name].append(time.perf_counter() - start)
                finally:
                    gc.enable()
    best = {name: min(t) for name, t in times.items()}
    return best, {name: statistics.median(t) for name, t in times.items()}, out


COSTS = CostModel.from_fraction(COMMISSION)


@dataclass
class Row:
    """One line of the table: the median of ``ours`` over the median of ``peer``."""

    name: str
    best: dict[str, float]
    median: dict[str, float]
    ours: str
    peer: str
    goal: str
    note: object

    def cells(self) -> tuple[str, ...]:
        a, b = self.median[self.ours], self.median[self.peer]
        best = self.best[self.ours] / self.best[self.peer]
        note = "" if self.note is None else str(self.note)
        if isinstance(self.note, bool):
            note = f"same={self.note}"
        return (self.name, f"{a:.4g}", f"{b:.4g}", f"{a / b:.3f}", f"{best:.3f}", self.goal, note)


def pair(a: str, b: str, best_a: float, best_b: float, med_a: float, med_b: float) -> dict:
    return {
        f"{a}_best_s": best_a,
        f"{b}_best_s": best_b,
        f"{a}_median_s": med_a,
        f"{b}_median_s": med_b,
        "ratio_best": best_a / best_b,
        "ratio_median": med_a / med_b,
    }


def _m(med: dict[str, float], a: str, b: str) -> tuple[float, float]:
    return med[a], med[b]


def ours(bars: pd.DataFrame, signals: pd.DataFrame, **kwargs: Any) -> Any:
    kwargs.setdefault("capital", CAPITAL)
    result = run_backtest(bars, signals, costs=COSTS, **kwargs)
    if HAS_METRICS:
        return result, result.metrics
    r = result.returns.to_numpy()
    sharpe = r.mean() / r.std(ddof=1) * np.sqrt(result.periods_per_year)
    return result, (result.equity.iloc[-1] / result.equity.iloc[0] - 1, sharpe)


def alone(result: Any) -> dict[str, float]:
    """Seconds of ``compute_metrics`` alone on a finished result (not cached: computed anew)."""
    if not HAS_METRICS:
        return {}
    from mlengine.backtest.metrics import compute_metrics

    best, med, _ = race(metrics=lambda: compute_metrics(result))
    return {
        "ours_metrics_only_best_s": best["metrics"],
        "ours_metrics_only_median_s": med["metrics"],
    }


def vbt_runner(bars: pd.DataFrame, pos: pd.Series, naive: bool, **stops: float) -> Callable:
    import vectorbt as vbt

    aware = pd.DatetimeIndex(bars.index)
    idx = aware.tz_localize(None) if naive else aware
    p1, p2 = pos.shift(1, fill_value=0.0).to_numpy(), pos.shift(2, fill_value=0.0).to_numpy()
    close = pd.Series(bars["close"].to_numpy(), index=idx)
    price = pd.Series(bars["open"].to_numpy(), index=idx)
    signals = {
        "entries": (p1 == 1) & (p2 != 1),
        "exits": (p1 == 0) & (p2 == 1),
        "short_entries": (p1 == -1) & (p2 != -1),
        "short_exits": (p1 == 0) & (p2 == -1),
    }
    sig = {k: pd.Series(v, index=idx) for k, v in signals.items()}

    def run() -> Any:
        pf = vbt.Portfolio.from_signals(
            close,
            **sig,
            price=price,
            size=np.inf,
            fees=COMMISSION,
            init_cash=CAPITAL,
            freq="1h",
            **stops,
        )
        return pf, pf.total_return(), pf.sharpe_ratio()

    return run


def backtesting_py(bars: pd.DataFrame, pos: pd.Series, capital: float) -> Callable:
    import backtesting as bt

    signal = pos.to_numpy()

    class Replay(bt.Strategy):
        def init(self) -> None:
            pass

        def next(self) -> None:
            target = signal[len(self.data) - 1]
            if target != np.sign(self.position.size):
                if self.position:
                    self.position.close()
                if target > 0:
                    self.buy(size=0.9999)
                elif target < 0:
                    self.sell(size=0.9999)

    data = bars.rename(columns=str.capitalize).tz_localize(None)

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bt.Backtest(
                data, Replay, cash=capital, commission=COMMISSION, trade_on_close=False
            ).run()

    return run


def in_subprocess(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - start
    return out


COLD_START = """
import json, time
t0 = time.perf_counter()
import numpy as np, pandas as pd
from mlengine.backtest import CostModel, run_backtest
t1 = time.perf_counter()
idx = pd.date_range("2020-01-01", periods=1000, freq="1h", tz="UTC", name="ts")
close = 100 + np.cumsum(np.random.default_rng(0).normal(0, 0.1, 1000))
bars = pd.DataFrame({"open": close, "high": close + 0.1, "low": close - 0.1,
                     "close": close, "volume": 0.0}, index=idx)
bars.attrs.update(symbol="X", timeframe="1h", market="crypto")
sig = pd.DataFrame({"position": np.sign(np.sin(np.arange(1000) / 20))}, index=idx)
t2 = time.perf_counter()
result = run_backtest(bars, sig, costs=CostModel(commission_bps=10))
t3 = time.perf_counter()
result.metrics
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2, "metrics_first_call_s": t4 - t3}))
"""

MEMORY = f"""
import gc, json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
import numpy as np, pandas as pd
from bench_engine import HAS_METRICS, ours, sma_positions, synthetic_bars

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
small = synthetic_bars(2000)
ours(small, pd.DataFrame({{"position": sma_positions(small)}}))
bars = synthetic_bars({N_BIG})
sig = pd.DataFrame({{"position": sma_positions(bars)}})
input_mb = (bars.memory_usage(deep=True).sum() + sig.memory_usage(deep=True).sum()) / 2**20
gc.collect()
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the RSS high-water mark
    method = "VmHWM after reset"
except OSError:
    method = "ru_maxrss (includes building the input)"
base = status("VmRSS")
result = ours(bars, sig)
peak = status("VmHWM") if method.startswith("VmHWM") else (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({{"input_mb": input_mb, "rss_before_mb": base, "peak_rss_mb": peak,
                  "above_input_mb": peak - base, "method": method}}))
"""


def main(cases: set[int]) -> None:
    console = Console(width=140)
    report: dict[str, Any] = {
        "bars": N_BIG,
        "metrics": "mlengine.backtest.metrics.compute_metrics (result.metrics)"
        if HAS_METRICS
        else "minimal: total return + Sharpe",
        "versions": {},
    }
    for mod in ("numba", "vectorbt", "backtesting", "pandas", "numpy"):
        report["versions"][mod] = __import__(mod).__version__
    bars = synthetic_bars(N_BIG)
    pos = sma_positions(bars)
    target = pd.DataFrame({"position": pos})
    rows: list[Row] = []

    # 1. plain SMA vs vectorbt
    if 1 in cases:
        best, med, res = race(
            ours=lambda: ours(bars, target), vbt=vbt_runner(bars, pos, naive=True)
        )
        engine_only, engine_med, _ = race(
            engine=lambda: run_backtest(bars, target, costs=COSTS, capital=CAPITAL)
        )
        ours_eq = res["ours"][0].equity.to_numpy()[:-1]  # the last bar: our final close
        vbt_eq = res["vbt"][0].value().to_numpy()[:-1]
        same_1 = len(res["ours"][0].trades) == int(res["vbt"][0].trades.count())
        report["sma_1m"] = {
            **pair("ours", "vectorbt", best["ours"], best["vbt"], med["ours"], med["vbt"]),
            "ours_engine_only_best_s": engine_only["engine"],
            "ours_engine_only_median_s": engine_med["engine"],
            **alone(res["ours"][0]),
            "goal": "ratio <= 0.5",
            "trades_ours": len(res["ours"][0].trades),
            "trades_vectorbt": int(res["vbt"][0].trades.count()),
            "equity_max_rel_diff": float(np.max(np.abs(ours_eq / vbt_eq - 1))),
        }
        rows.append(Row("1. SMA 1M bars vs vectorbt", best, med, "ours", "vbt", "<= 0.5", same_1))

    # 2. backtesting.py on 100k bars
    if 2 in cases:
        small = bars.iloc[:N_BT]
        small_pos = pos.iloc[:N_BT]
        small_sig = pd.DataFrame({"position": small_pos * 0.9999})
        best, med, res = race(
            ours=lambda: ours(small, small_sig, capital=1e9),
            bt=backtesting_py(small, small_pos, 1e9),
        )
        trades, stats = res["ours"][0].trades, res["bt"]
        closed = trades[trades["exit_reason"] != "end"]
        same = len(closed) == len(stats._trades) and bool(
            (
                closed["entry_time"].dt.tz_localize(None).to_numpy() == stats._trades["EntryTime"]
            ).all()
        )
        engine_only, engine_med, _ = race(
            engine=lambda: run_backtest(small, small_sig, costs=COSTS, capital=1e9)
        )
        report["backtesting_py_100k"] = {
            **pair("ours", "backtesting_py", best["ours"], best["bt"], med["ours"], med["bt"]),
            "ours_engine_only_best_s": engine_only["engine"],
            "ours_engine_only_median_s": engine_med["engine"],
            **alone(res["ours"][0]),
            "speedup_best": best["bt"] / best["ours"],
            "speedup_median": med["bt"] / med["ours"],
            "goal": "speedup >= 100",
            "trades_ours_closed": len(closed),
            "trades_backtesting_py": len(stats._trades),
            "same_trades": same,
        }
        assert len(closed) == len(stats._trades), "backtesting.py made different trades"
        rows.append(Row("2. 100k bars vs backtesting.py", best, med, "ours", "bt", "<= 0.01", same))

    # 3. stops, targets and sizing vs the plain case
    if 3 in cases:
        intents = sma_intents(bars, pos)
        best, med, res = race(
            plain=lambda: ours(bars, target),
            stops=lambda: ours(bars, intents, sizing=VolatilityTarget()),
            vbt=vbt_runner(bars, pos, naive=True),
            vbt_stops=vbt_runner(bars, pos, naive=True, sl_stop=STOP, tp_stop=TARGET),
        )
        trades = res["stops"][0].trades
        report["stops_sizing_1m"] = {
            **pair(
                "ours_stops", "ours_plain", best["stops"], best["plain"], *_m(med, "stops", "plain")
            ),
            "goal": "ratio <= 1.5",
            "vectorbt_ratio_best": best["vbt_stops"] / best["vbt"],
            "vectorbt_ratio_median": med["vbt_stops"] / med["vbt"],
            "trades_ours": len(trades),
            "exit_reasons": trades["exit_reason"].value_counts().to_dict(),
        }
        rows.append(
            Row("3. + SL/TP + sizing vs plain", best, med, "stops", "plain", "<= 1.5", None)
        )
        vbt_stops_ratio = med["vbt_stops"] / med["vbt"]

    # 4. naive vs tz-aware index
    if 4 in cases:
        naive_bars, naive_target = bars.tz_localize(None), target.tz_localize(None)
        naive_bars.attrs = dict(bars.attrs)
        best, med, _ = race(
            aware=lambda: ours(bars, target), naive=lambda: ours(naive_bars, naive_target)
        )
        probe_n = 20_000
        probe, _, _ = race(1, 1, probe=vbt_runner(bars.iloc[:probe_n], pos.iloc[:probe_n], False))
        projected = probe["probe"] * N_BIG / probe_n
        tz_entry: dict[str, Any] = {
            **pair(
                "ours_aware", "ours_naive", best["aware"], best["naive"], *_m(med, "aware", "naive")
            ),
            "vectorbt_naive_median_s": report.get("sma_1m", {}).get("vectorbt_median_s"),
            "vectorbt_aware_probe": {
                "bars": probe_n,
                "s": probe["probe"],
                "projected_1m_s": projected,
            },
        }
        if projected <= TZ_CAP_S:
            start = time.perf_counter()
            vbt_runner(bars, pos, naive=False)()
            t_vbt_tz = time.perf_counter() - start
            tz_entry["vectorbt_aware_s"] = t_vbt_tz
            if tz_entry["vectorbt_naive_median_s"]:
                naive_s = tz_entry["vectorbt_naive_median_s"]
                tz_entry["vectorbt_ratio_aware_vs_naive"] = t_vbt_tz / naive_s
            note = f"vbt aware {t_vbt_tz:.1f}s"
        else:
            tz_entry["vectorbt_aware_s"] = None
            note = f"vbt aware skipped (~{projected:.0f}s)"
        report["tz_index"] = tz_entry
        rows.append(Row("4. ours tz-aware vs naive", best, med, "aware", "naive", "~1", note))

    # 5. cold start
    if 5 in cases:
        warm = in_subprocess(COLD_START)
        with tempfile.TemporaryDirectory() as cache:
            empty = in_subprocess(COLD_START, {"NUMBA_CACHE_DIR": cache})
        report["cold_start"] = {"warm_cache": warm, "empty_cache": empty, "goal": "<= 5 s"}
        cold = warm["import_s"] + warm["first_call_s"]

    # 6. memory
    if 6 in cases:
        mem = in_subprocess(MEMORY)
        report["memory_1m"] = {**mem, "goal": "<= 300 MB above the input"}

    table = Table(title=f"Backtest engine, seconds and ours / peer ({report['metrics']})")
    for col in ("case", "ours med", "peer med", "ratio med", "ratio best", "goal", "note"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row.cells())
    if 5 in cases:
        table.add_row(
            "5. cold start, warm cache: import + 1st call", f"{cold:.3g}", "", "", "", "<= 5"
        )
    if 6 in cases:
        table.add_row(
            "6. peak MB above the input, 1M bars",
            f"{mem['above_input_mb']:.0f}",
            "",
            "",
            "",
            "<= 300",
        )
    console.print(table)
    notes = []
    if 5 in cases:
        notes.append(
            f"cold start with an empty numba cache: {empty['import_s'] + empty['first_call_s']:.2f}"
            f" s; first metrics after the first call: {warm['metrics_first_call_s']:.2f} s warm "
            f"cache, {empty['metrics_first_call_s']:.2f} s empty cache"
        )
    if 3 in cases:
        notes.append(f"vectorbt with SL/TP vs plain: {vbt_stops_ratio:.2f}x (median)")
    notes.append(
        f"{ROUNDS * RUNS} timed warm runs each, taking turns, GC off; 'same' = same trades"
    )
    console.print("; ".join(notes))
    name = "engine" if cases == ALL_CASES else "engine-case-" + "-".join(map(str, sorted(cases)))
    write_result(name, report)


ALL_CASES = {1, 2, 3, 4, 5, 6}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case",
        type=int,
        action="append",
        choices=sorted(ALL_CASES),
        help="run only this case (repeatable; default: all; a subset writes engine-case-N.json)",
    )
    main(set(parser.parse_args().case or ALL_CASES))
