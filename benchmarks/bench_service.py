"""Signal service latency: ``POST /predict`` of one new bar with the five strategies and the
ensemble loaded, against its peer, :meth:`LiveEnsemble.predict` called in the same process.

The live ensemble of the bundled EURUSD 1h sample with the default settings (the five
strategies, gate, calibration) is fitted once and cached under
``benchmarks/results/service_models/`` (git-ignored; ``--refit`` fits it again). The app
runs in-process under uvicorn in a thread, on a temporary DuckDB store holding the sample's
bars up to the first predicted one; an httpx client sends ``--requests`` requests, each one
new bar, walking forward over the last bars of the sample, so the service completes each
from the history it keeps (the first from the store). The decision is the rules provider's
and is logged to the store, as in production. ``--full-requests`` more requests then send
the whole history each (``min_bars`` bars), and the same histories go to
``LiveEnsemble.predict`` directly. Prints p50 / p99 of each and writes
``benchmarks/results/service.json`` (ratio = one-bar service p50 / direct p50; ``ratio_p99``
the same for p99).

    .venv/bin/python benchmarks/bench_service.py [--requests 1000] [--full-requests 200]
        [--refit] [--no-log]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import uvicorn
from rich.console import Console
from rich.table import Table

from _results import RESULTS_DIR, write_result
from mlengine import datasets
from mlengine.data.store import open_store
from mlengine.ensemble.live import LiveEnsemble, live_dir
from mlengine.pipeline import EnsembleConfig
from mlengine.service.app import ServiceSettings, create_app

GOAL_P99_MS = 50.0
MODELS = RESULTS_DIR / "service_models"


def live_ensemble(bars: pd.DataFrame, refit: bool, console: Console) -> LiveEnsemble:
    """The cached live ensemble of ``bars`` with the default settings (fitted when absent)."""
    path = live_dir(MODELS, str(bars.attrs["symbol"]), str(bars.attrs["timeframe"]))
    if not refit and (path / "manifest.json").is_file():
        return LiveEnsemble.load(path)
    console.print(f"fitting the live ensemble of the five strategies on {len(bars):,} bars")
    start = time.perf_counter()
    live = LiveEnsemble.fit(bars, EnsembleConfig(), progress=True)
    live.save(path)
    console.print(f"fitted in {time.perf_counter() - start:.0f} s: {live!r}")
    return live


def payload(tail: pd.DataFrame) -> bytes:
    bars = [
        {"ts": ts.isoformat(), "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for ts, o, h, lo, c, v in zip(
            tail.index,
            *(tail[col].to_numpy().tolist() for col in ("open", "high", "low", "close", "volume")),
            strict=True,
        )
    ]
    body = {"symbol": tail.attrs["symbol"], "timeframe": tail.attrs["timeframe"], "bars": bars}
    return json.dumps(body).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed_posts(client: httpx.Client, bodies: list[bytes]) -> list[float]:
    """Milliseconds of each ``POST /predict`` of ``bodies``, sent one after another."""
    headers = {"content-type": "application/json"}
    out = []
    for body in bodies:
        start = time.perf_counter()
        response = client.post("/predict", content=body, headers=headers)
        out.append((time.perf_counter() - start) * 1000.0)
        response.raise_for_status()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--full-requests", type=int, default=200)
    parser.add_argument("--refit", action="store_true", help="fit the live ensemble again")
    parser.add_argument("--no-log", action="store_true", help="do not log decisions")
    args = parser.parse_args()
    console = Console()
    bars = datasets.load("eurusd_1h")
    live = live_ensemble(bars, args.refit, console)
    n, need, warm = args.requests, live.min_bars, 5
    if len(bars) < need + warm + n:
        raise SystemExit(f"{len(bars)} bars: {n} + {warm} one-bar requests need {need + warm + n}")
    # one-bar request i (after the warm-up) predicts bar `first + warm + i`
    first = len(bars) - n - warm
    singles = [payload(bars.iloc[i : i + 1]) for i in range(first, len(bars))]
    tails = [bars.iloc[end - need + 1 : end + 1] for end in range(len(bars) - n, len(bars))]
    full = [payload(t) for t in tails[-args.full_requests :]] if args.full_requests else []

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"duckdb:///{Path(tmp, 'bench.duckdb').as_posix()}"
        with open_store(db_url) as store:
            store.write_bars(bars.iloc[:first])
        settings = ServiceSettings(db_url=db_url, models_dir=MODELS, log_signals=not args.no_log)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            # warm-up: loads the ensemble and the history from the store, compiles what compiles
            timed_posts(client, singles[:warm])
            service = timed_posts(client, singles[warm:])
            whole = timed_posts(client, full)
        server.should_exit = True
        thread.join(timeout=10)

    direct: list[float] = []
    for tail in tails[:5]:
        live.predict(tail)
    for tail in tails:
        start = time.perf_counter()
        live.predict(tail)
        direct.append((time.perf_counter() - start) * 1000.0)

    p50, p99 = percentiles(service)
    d50, d99 = percentiles(direct)
    result = {
        "p50_ms": p50,
        "p99_ms": p99,
        "direct_p50_ms": d50,
        "direct_p99_ms": d99,
        "ratio": p50 / d50,
        "ratio_p99": p99 / d99,
        "goal_p99_ms": GOAL_P99_MS,
        "requests": n,
        "bars_per_request": 1,
        "history_bars": need,
        "strategies": list(live.strategies),
        "history": live.history,
        "logged": not args.no_log,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    table = Table(
        title=f"POST /predict of one new bar, {n} requests ({', '.join(live.strategies)})"
    )
    for col in ("", "p50 ms", "p99 ms"):
        table.add_column(col)
    table.add_row("service, one new bar (HTTP, uvicorn)", f"{p50:.1f}", f"{p99:.1f}")
    if whole:
        w50, w99 = percentiles(whole)
        result |= {"full_p50_ms": w50, "full_p99_ms": w99, "full_requests": len(whole)}
        table.add_row(
            f"service, {need} bars each ({len(whole)} requests)", f"{w50:.1f}", f"{w99:.1f}"
        )
    table.add_row(f"LiveEnsemble.predict ({need} bars)", f"{d50:.1f}", f"{d99:.1f}")
    table.add_row("ratio one-bar service / direct", f"{p50 / d50:.2f}", f"{p99 / d99:.2f}")
    out = write_result("service", result)
    console.print(table)
    verdict = "meets" if p99 <= GOAL_P99_MS else "misses"
    console.print(f"p99 {p99:.1f} ms {verdict} the goal of {GOAL_P99_MS:.0f} ms; wrote {out}")


if __name__ == "__main__":
    main()
