"""Fractal swing detection on 1,000,000 synthetic bars: ours vs two textbook peers.

Run: ``.venv/bin/python benchmarks/bench_swings.py``. Prints a Rich table and writes
``benchmarks/results/swings.json``.

Ours: :func:`mlengine.features.structure.swings` (``method="fractal"``, ``n=3``; a numba
pass, then the table of swings in order of confirmation). The peers build the same table
(direction, level, swing bar, confirmation bar ``n`` bars later, ordered alike) from:

* ``pandas``: the textbook centred window, a bar's high equal to the highest high of the
  ``2n + 1`` bars centred on it (``rolling(2n + 1, center=True).max()``), lows mirrored;
* ``scipy``: :func:`scipy.signal.argrelextrema` with ``np.greater`` / ``np.less`` and
  ``order=n``.

Before timing, the swing sets (swing bar, direction) are compared. Ours is strict (a high
above each of its ``n`` neighbours); the centred window counts a high that ties a neighbour
as a swing, so the two differ only at ties (none expected on continuous random prices, any
found are counted). ``argrelextrema`` is strict too, but clips its window at the ends of
the series: it reports swings in the first and last ``n`` bars, which have fewer than ``n``
neighbours on one side (in the last ``n`` bars: not confirmed yet, a look-ahead) and which
ours leaves out; those edge swings are counted apart, the rest must agree.

Each figure is the best of ``REPEAT`` runs after a warm-up (numba compilation).
``ratio`` = ours / peer.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.signal import argrelextrema

from _results import write_result
from _synthetic import random_walk_bars
from _timing import best
from mlengine.features.structure import swings

N = 1_000_000
REPEAT = 5
K = 3  # bars on each side


def _table(bars: pd.DataFrame, hi: np.ndarray, lo: np.ndarray, n: int) -> pd.DataFrame:
    """The swings table of ours from the positions of swing highs and lows."""
    bar = np.concatenate([hi, lo])
    direction = np.repeat(np.array([1, -1], dtype=np.int64), [len(hi), len(lo)])
    order = np.argsort(bar, kind="stable")  # confirmation = bar + n: the same order
    bar, direction = bar[order], direction[order]
    h, low = bars["high"].to_numpy(), bars["low"].to_numpy()
    idx = bars.index
    return pd.DataFrame(
        {
            "kind": np.full(len(bar), "swing", dtype=object),
            "direction": direction,
            "level": np.where(direction > 0, h[bar], low[bar]),
            "formed": idx.take(bar),
            "confirmed": idx.take(bar + n),
        }
    )


def pandas_swings(bars: pd.DataFrame, n: int = K) -> pd.DataFrame:
    """Swing highs (lows): bars whose high (low) is the max (min) of the centred window."""
    w = 2 * n + 1
    h, low = bars["high"], bars["low"]
    hi = (h == h.rolling(w, center=True).max()).to_numpy()
    lo = (low == low.rolling(w, center=True).min()).to_numpy()
    return _table(bars, np.flatnonzero(hi), np.flatnonzero(lo), n)


def scipy_swings(bars: pd.DataFrame, n: int = K) -> pd.DataFrame:
    """Swing highs (lows) by :func:`scipy.signal.argrelextrema`, strict, ``order=n``; the
    edge swings it finds in the last ``n`` bars are dropped (no confirmation bar yet)."""
    h, low = bars["high"].to_numpy(), bars["low"].to_numpy()
    last = len(h) - n
    (hi,) = argrelextrema(h, np.greater, order=n)
    (lo,) = argrelextrema(low, np.less, order=n)
    return _table(bars, hi[hi < last], lo[lo < last], n)


def _keys(bars: pd.DataFrame, table: pd.DataFrame) -> set[tuple[int, int]]:
    """(swing bar position, direction) of every swing in ``table``."""
    pos = bars.index.get_indexer(pd.DatetimeIndex(table["formed"]))
    return set(zip(pos.tolist(), table["direction"].tolist(), strict=True))


def _compare(bars: pd.DataFrame, ours: set[tuple[int, int]], peer: set[tuple[int, int]]) -> dict:
    """How two swing sets differ, the edge bars (fewer than ``K`` neighbours) apart."""
    m = len(bars)

    def edge(key: tuple[int, int]) -> bool:
        return key[0] < K or key[0] >= m - K

    only_ours = {k for k in ours - peer if not edge(k)}
    only_peer = {k for k in peer - ours if not edge(k)}
    return {
        "n_swings": len(peer),
        "only_ours": len(only_ours),
        "only_peer": len(only_peer),
        "edge_only_peer": len({k for k in peer - ours if edge(k)}),
        "same_inside_edges": not only_ours and not only_peer,
    }


def _ties(bars: pd.DataFrame) -> int:
    """Bars whose high (low) ties the extreme of its centred window with another bar."""
    w = 2 * K + 1
    h, low = bars["high"], bars["low"]
    top = h.rolling(w, center=True).max()
    bottom = low.rolling(w, center=True).min()
    n_top = (h == top).astype(int).rolling(w, center=True).sum()
    n_bottom = (low == bottom).astype(int).rolling(w, center=True).sum()
    return int(((h == top) & (n_top > 1)).sum() + ((low == bottom) & (n_bottom > 1)).sum())


def main() -> None:
    bars = random_walk_bars(N)
    contestants = {
        "ours": functools.partial(swings, bars, n=K),
        "pandas": functools.partial(pandas_swings, bars),
        "scipy": functools.partial(scipy_swings, bars),
    }
    tables = {name: fn() for name, fn in contestants.items()}  # warm-up and the check
    ours_keys = _keys(bars, tables["ours"])
    agreement = {
        peer: _compare(bars, ours_keys, _keys(bars, tables[peer])) for peer in ("pandas", "scipy")
    }
    # the scipy table already drops the last K bars; its first-K-bar swings are the edges
    raw_hi = argrelextrema(bars["high"].to_numpy(), np.greater, order=K)[0]
    raw_lo = argrelextrema(bars["low"].to_numpy(), np.less, order=K)[0]
    agreement["scipy"]["edge_swings_in_last_n_bars_dropped"] = int(
        (raw_hi >= N - K).sum() + (raw_lo >= N - K).sum()
    )
    agreement["pandas"]["tied_extremes"] = _ties(bars)
    # the check before the clock: scipy is strict like ours, so inside the edges it must
    # agree exactly; the centred window may add ties, never drop a swing of ours
    assert agreement["scipy"]["same_inside_edges"], agreement["scipy"]
    assert agreement["pandas"]["only_ours"] == 0, agreement["pandas"]
    assert agreement["pandas"]["only_peer"] <= agreement["pandas"]["tied_extremes"]
    for peer, a in agreement.items():
        print(
            f"{peer}: {a['n_swings']:,} swings; only ours {a['only_ours']}, only {peer} "
            f"{a['only_peer']}, edge swings only {peer} {a['edge_only_peer']}"
        )
    times = {name: best(fn, REPEAT) for name, fn in contestants.items()}
    result = {
        "bars": N,
        "n": K,
        "n_swings_ours": len(tables["ours"]),
        "ours_s": times["ours"],
        "pandas_s": times["pandas"],
        "scipy_s": times["scipy"],
        "ratio_pandas": times["ours"] / times["pandas"],
        "ratio_scipy": times["ours"] / times["scipy"],
        "agreement": agreement,
        "note": (
            "same swings inside the edges; the centred window counts ties (non-strict), "
            "argrelextrema clips its window at the series' ends (edge swings)"
        ),
    }
    table = Table(title=f"fractal swings (n={K}) on {N:,} bars, best of {REPEAT}")
    for col in ("contestant", "seconds", "ours / it", "swings", "same inside edges"):
        table.add_column(col, justify="left" if col == "contestant" else "right")
    table.add_row("ours (numba)", f"{times['ours']:.4f}", "1", f"{len(tables['ours']):,}", "")
    for peer in ("pandas", "scipy"):
        a = agreement[peer]
        table.add_row(
            peer,
            f"{times[peer]:.4f}",
            f"{times['ours'] / times[peer]:.4f}",
            f"{a['n_swings']:,}",
            str(a["same_inside_edges"]),
        )
    Console(width=120).print(table)
    write_result("swings", result)


if __name__ == "__main__":
    main()
