"""Probability of backtest overfitting by combinatorially symmetric cross-validation.

Bailey, Borwein, López de Prado & Zhu (2015), "The probability of backtest overfitting",
J. of Computational Finance 20(4). Given a ``T × N`` matrix of per-bar returns of ``N``
configurations:

1. split the rows into ``S`` (even) contiguous blocks of (near) equal size;
2. for each of the ``C(S, S/2)`` ways of choosing half the blocks as the in-sample set
   (the other half is out of sample), pick the configuration ``n*`` with the best
   in-sample Sharpe ratio;
3. its out-of-sample relative rank ``ω = rank / (N + 1)`` (rank 1 = worst of ``N``, ties
   averaged) gives the logit ``λ = ln(ω / (1 − ω))``;
4. ``PBO = share of λ ≤ 0``: how often the in-sample winner ends at or below the
   out-of-sample median.

The performance statistic is the per-period Sharpe ratio (``ddof=1``; zero where a
configuration's returns have no spread in the half). All combinations are evaluated at once
from per-block sums of ``r`` and ``r²`` (a matrix product per batch), not by looping over
slices. Performance degradation is the least-squares line of the selected configuration's
out-of-sample Sharpe on its in-sample Sharpe, plus the probability of an out-of-sample loss.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mlengine.backtest._psr import ValidityError

MAX_SPLITS = 20
_BATCH = 16_384


@dataclass(frozen=True)
class PBOResult:
    """Outcome of :func:`probability_of_backtest_overfitting` (Sharpe ratios per period)."""

    pbo: float
    logits: np.ndarray
    """λ per combination."""
    is_sharpe: np.ndarray
    """In-sample Sharpe of the selected configuration, per combination."""
    oos_sharpe: np.ndarray
    """Out-of-sample Sharpe of the same configuration, per combination."""
    selected: np.ndarray
    """Column index of the in-sample best configuration, per combination."""
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    """Share of combinations where the selected configuration loses out of sample."""
    n_splits: int
    n_configs: int

    @property
    def n_combinations(self) -> int:
        return int(self.logits.size)


def _matrix(returns: object) -> np.ndarray:
    if isinstance(returns, pd.DataFrame):
        frame = returns
    else:
        arr = np.asarray(returns, dtype=np.float64)
        if arr.ndim != 2:
            raise ValidityError(f"trials matrix: expected T × N, got shape {arr.shape}")
        frame = pd.DataFrame(arr)
    try:
        m = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValidityError(f"trials matrix: not numeric ({err})") from None
    bad = np.argwhere(~np.isfinite(m))
    if bad.size:
        row, col = bad[0]
        raise ValidityError(
            f"trials matrix: {len(bad)} non-finite value(s), first at row "
            f"{frame.index[row]!r}, column {frame.columns[col]!r}"
        )
    return m


def _sharpe(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray) -> np.ndarray:
    mean = total / count
    var = (total_sq - count * mean**2) / (count - 1)
    sd = np.sqrt(np.clip(var, 0.0, None))
    # Relative tolerance: a half whose returns do not vary has a rounding-level variance.
    flat = sd <= 1e-12 * np.maximum(np.sqrt(total_sq / count), 1e-300)
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, sd))


def probability_of_backtest_overfitting(returns: object, n_splits: int = 16) -> PBOResult:
    """PBO of choosing the best column of ``returns`` (T bars × N configurations) by CSCV."""
    m = _matrix(returns)
    t, n = m.shape
    if isinstance(n_splits, bool) or n_splits < 2 or n_splits % 2 or n_splits > MAX_SPLITS:
        raise ValidityError(f"n_splits must be even and in [2, {MAX_SPLITS}], got {n_splits}")
    if n < 2:
        raise ValidityError(f"trials matrix: needs at least 2 configurations, got {n}")
    if t < 2 * n_splits:
        raise ValidityError(
            f"trials matrix: {t} rows are too few for {n_splits} splits (need ≥ {2 * n_splits})"
        )
    edges = np.linspace(0, t, n_splits + 1).round().astype(np.int64)
    cum = np.vstack([np.zeros((1, n)), np.cumsum(m, axis=0)])
    cum_sq = np.vstack([np.zeros((1, n)), np.cumsum(m * m, axis=0)])
    block_sum = cum[edges[1:]] - cum[edges[:-1]]  # S × N
    block_sq = cum_sq[edges[1:]] - cum_sq[edges[:-1]]
    block_len = np.diff(edges).astype(np.float64)  # S
    all_sum, all_sq, all_len = block_sum.sum(0), block_sq.sum(0), block_len.sum()

    half = n_splits // 2
    combos = np.array(list(itertools.combinations(range(n_splits), half)), dtype=np.int64)
    chosen = np.zeros((len(combos), n_splits))
    chosen[np.arange(len(combos))[:, None], combos] = 1.0

    selected = np.empty(len(combos), dtype=np.int64)
    is_best = np.empty(len(combos))
    oos_best = np.empty(len(combos))
    rank = np.empty(len(combos))
    for lo in range(0, len(combos), _BATCH):
        g = chosen[lo : lo + _BATCH]
        is_len = (g @ block_len)[:, None]
        is_sum, is_sq = g @ block_sum, g @ block_sq
        sr_is = _sharpe(is_sum, is_sq, is_len)
        sr_oos = _sharpe(all_sum - is_sum, all_sq - is_sq, all_len - is_len)
        best = np.argmax(sr_is, axis=1)
        rows = np.arange(len(g))
        mine = sr_oos[rows, best][:, None]
        below = (sr_oos < mine).sum(axis=1)
        ties = (sr_oos == mine).sum(axis=1)  # includes the selected configuration itself
        selected[lo : lo + len(g)] = best
        is_best[lo : lo + len(g)] = sr_is[rows, best]
        oos_best[lo : lo + len(g)] = mine[:, 0]
        rank[lo : lo + len(g)] = below + (ties + 1) / 2.0  # average rank among ties, 1..N
    omega = rank / (n + 1)
    logits = np.log(omega / (1.0 - omega))
    if np.ptp(is_best) > 0:
        fit = stats.linregress(is_best, oos_best)
        slope, intercept = float(fit.slope), float(fit.intercept)
    else:
        slope, intercept = math.nan, math.nan
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        is_sharpe=is_best,
        oos_sharpe=oos_best,
        selected=selected,
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=float(np.mean(oos_best < 0.0)),
        n_splits=n_splits,
        n_configs=n,
    )
