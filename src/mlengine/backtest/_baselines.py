"""Baselines a strategy must beat: buy-and-hold, and random timing with the same exposure.

Random-exposure null. ``position[t]`` is the exposure held over bar ``t`` (for the engine,
the signal decided at the close of ``t − 1``) and ``bar_returns[t]`` the asset's return
over bar ``t``. The gross timing return is ``position[t] · bar_returns[t]``. A random
signal with the same exposure reorders the strategy's own positions:

* ``runs`` (default): the position series is cut into runs of equal consecutive values
  (trades and flat spells) and the runs are shuffled. The share of bars in the market, the
  long/short mix, the position sizes and the holding periods are all kept; only *when*
  the strategy is in the market changes.
* ``bars``: the per-bar positions are shuffled (same share and mix, holding periods lost).

The statistic is the Sharpe ratio of the gross timing returns, for the strategy and for
every random signal alike, so the test is an exact permutation test of timing skill
(costs are judged by the other criteria). p-value = ``(1 + #{null ≥ observed}) / (B + 1)``
(Phipson & Smyth, 2010), never zero. Sharpe ratios of all ``B`` random signals come from
cumulative sums of ``r`` and ``r²`` at the shuffled run boundaries: ``O(B · runs)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mlengine.backtest._psr import ValidityError, as_returns, sharpe_ratio

ShuffleMethod = Literal["runs", "bars"]


@dataclass(frozen=True)
class RandomBaseline:
    """Strategy timing vs ``n_samples`` random signals with the same exposure."""

    sharpe: float
    """Annualised Sharpe of the strategy's gross timing returns."""
    p_value: float
    null_sharpes: np.ndarray
    """Annualised Sharpe of each random signal."""
    method: str
    seed: int
    exposure: float
    """Share of bars with a non-zero position."""
    long_share: float
    """Share of in-market bars that are long."""

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null_sharpes))

    @property
    def null_quantile_95(self) -> float:
        return float(np.quantile(self.null_sharpes, 0.95))


def aligned(
    a: object, b: object, names: tuple[str, str], min_obs: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Two return-like series as arrays; pandas inputs must share one index."""
    if isinstance(a, pd.Series) and isinstance(b, pd.Series) and not a.index.equals(b.index):
        diff = a.index.symmetric_difference(b.index)
        first = diff[0] if len(diff) else "(order differs)"
        raise ValidityError(f"{names[0]} and {names[1]} are not on the same index: {first}")
    x, y = as_returns(a, names[0], min_obs=min_obs), as_returns(b, names[1], min_obs=min_obs)
    if x.size != y.size:
        raise ValidityError(f"{names[0]} has {x.size} values but {names[1]} has {y.size}")
    return x, y


def _sharpe_of_runs(
    values: np.ndarray, lengths: np.ndarray, cum: np.ndarray, cum_sq: np.ndarray, n: int
) -> np.ndarray:
    """Per-period Sharpe of each row's piecewise-constant position (rows = run orders)."""
    ends = np.cumsum(lengths, axis=1)
    starts = ends - lengths
    total = (values * (cum[ends] - cum[starts])).sum(axis=1)
    total_sq = (values**2 * (cum_sq[ends] - cum_sq[starts])).sum(axis=1)
    mean = total / n
    sd = np.sqrt(np.clip((total_sq - n * mean**2) / (n - 1), 0.0, None))
    return np.where(sd > 0.0, mean / np.where(sd > 0.0, sd, 1.0), 0.0)


def random_exposure_baseline(
    bar_returns: object,
    position: object,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    method: ShuffleMethod = "runs",
    periods_per_year: float = 1.0,
) -> RandomBaseline:
    """p-value of the strategy's timing Sharpe against shuffled copies of its positions."""
    r, pos = aligned(bar_returns, position, ("bar_returns", "position"))
    if n_samples < 1:
        raise ValidityError(f"n_samples must be at least 1, got {n_samples}")
    if method not in ("runs", "bars"):
        raise ValidityError(f"method must be 'runs' or 'bars', got {method!r}")
    n = r.size
    if method == "runs":
        starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        values, lengths = pos[starts], np.diff(np.r_[starts, n])
    else:
        values, lengths = pos, np.ones(n, dtype=np.int64)
    cum = np.r_[0.0, np.cumsum(r)]
    cum_sq = np.r_[0.0, np.cumsum(r * r)]
    scale = math.sqrt(periods_per_year)
    observed = _sharpe_of_runs(values[None, :], lengths[None, :], cum, cum_sq, n)[0]

    rng = np.random.default_rng(seed)
    null = np.empty(n_samples)
    # Batches bound memory at about 4 arrays of batch × runs floats.
    batch = max(1, 2_000_000 // max(values.size, 1))
    for lo in range(0, n_samples, batch):
        k = min(batch, n_samples - lo)
        order = rng.permuted(np.broadcast_to(np.arange(values.size), (k, values.size)), axis=1)
        null[lo : lo + k] = _sharpe_of_runs(values[order], lengths[order], cum, cum_sq, n)
    in_market = pos != 0.0
    # A float tolerance so that a shuffle equal to the original (e.g. a single run) ties.
    tol = 1e-12 * max(1.0, abs(observed))
    p_value = (1.0 + np.sum(null >= observed - tol)) / (n_samples + 1.0)
    return RandomBaseline(
        sharpe=float(observed * scale),
        p_value=float(p_value),
        null_sharpes=null * scale,
        method=method,
        seed=seed,
        exposure=float(in_market.mean()),
        long_share=float((pos > 0).sum() / in_market.sum()) if in_market.any() else math.nan,
    )


@dataclass(frozen=True)
class BuyAndHold:
    """The strategy's annualised Sharpe against holding the asset over the same bars."""

    sharpe: float
    asset_sharpe: float
    total_return: float
    asset_total_return: float

    @property
    def excess_sharpe(self) -> float:
        return self.sharpe - self.asset_sharpe


def buy_and_hold(
    returns: object, bar_returns: object, *, periods_per_year: float = 1.0
) -> BuyAndHold:
    """Compare the strategy's net ``returns`` with the asset's ``bar_returns``."""
    ret, asset = aligned(returns, bar_returns, ("returns", "bar_returns"))
    scale = math.sqrt(periods_per_year)
    return BuyAndHold(
        sharpe=sharpe_ratio(ret) * scale,
        asset_sharpe=sharpe_ratio(asset) * scale,
        total_return=float(np.prod(1.0 + ret) - 1.0),
        asset_total_return=float(np.prod(1.0 + asset) - 1.0),
    )
