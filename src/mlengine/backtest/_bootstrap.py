"""Block-bootstrap confidence interval of the annualised Sharpe ratio (via ``arch``).

Returns are serially dependent (volatility clustering, overlapping positions), so the
i.i.d. bootstrap understates the spread of the Sharpe estimate. Blocks of consecutive bars
are resampled instead: the stationary bootstrap (Politis & Romano, 1994; geometric block
lengths) or the circular block bootstrap (Politis & Romano, 1992; fixed length), both from
:mod:`arch.bootstrap`.

Block length, unless given: ``optimal_block_length`` of arch (Politis & White, 2004, with
the correction of Patton, Politis & White, 2009), computed on the returns *and* on their
squares, taking the larger and rounding up — the Sharpe ratio depends on the first two
moments, and the dependence of the second (volatility clustering) is usually the longer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from arch.bootstrap import CircularBlockBootstrap, StationaryBootstrap, optimal_block_length

from mlengine.backtest._psr import ValidityError, as_returns

BootstrapKind = Literal["stationary", "circular"]
CIMethod = Literal["percentile", "basic", "bc", "bca", "norm"]
MIN_BOOTSTRAP_OBS = 20


@dataclass(frozen=True)
class SharpeCI:
    """A bootstrap confidence interval of the annualised Sharpe ratio."""

    sharpe: float
    """Point estimate, annualised (per-period Sharpe · √periods_per_year)."""
    lower: float
    upper: float
    level: float
    method: str
    kind: str
    block_length: int
    reps: int
    seed: int
    periods_per_year: float


def block_length(returns: object, kind: BootstrapKind = "stationary") -> int:
    """Optimal block length for bootstrapping the Sharpe ratio of ``returns`` (≥ 1)."""
    r = as_returns(returns, min_obs=MIN_BOOTSTRAP_OBS)
    if not np.ptp(r) > 0.0:
        return 1
    square = (r - r.mean()) ** 2
    series = np.column_stack([r, square]) if np.ptp(square) > 0.0 else r
    lengths = optimal_block_length(series)[kind]
    return max(1, math.ceil(float(np.nanmax(lengths.to_numpy()))))


def sharpe_confidence_interval(
    returns: object,
    *,
    periods_per_year: float = 1.0,
    level: float = 0.95,
    reps: int = 1000,
    method: CIMethod = "percentile",
    kind: BootstrapKind = "stationary",
    block: int | None = None,
    seed: int = 0,
) -> SharpeCI:
    """Two-sided ``level`` bootstrap interval of the annualised Sharpe ratio of ``returns``.

    ``block`` is the (expected, for ``stationary``) block length; ``None`` picks
    :func:`block_length`. ``method`` is passed to arch's ``conf_int``: ``percentile``
    (default), ``basic``, ``norm``, ``bc`` or ``bca`` — ``bca`` estimates its acceleration
    by a leave-one-out jackknife, i.e. ``n`` extra Sharpe evaluations (quadratic in ``n``).
    The same ``seed`` gives the same interval.
    """
    r = as_returns(returns, min_obs=MIN_BOOTSTRAP_OBS)
    if not np.ptp(r) > 0.0:
        raise ValidityError("returns: constant series (zero variance), Sharpe ratio undefined")
    if not 0.0 < level < 1.0:
        raise ValidityError(f"level must lie in (0, 1), got {level}")
    if reps < 10:
        raise ValidityError(f"reps must be at least 10, got {reps}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValidityError(f"periods_per_year must be positive, got {periods_per_year}")
    length = block_length(r, kind) if block is None else int(block)
    if not 1 <= length <= r.size // 2:
        raise ValidityError(f"block length must lie in [1, {r.size // 2}], got {length}")
    scale = math.sqrt(periods_per_year)

    def annual_sharpe(x: np.ndarray) -> np.ndarray:
        sd = x.std(ddof=1)
        # A resample made of one repeated value has no spread; count it as Sharpe 0.
        return np.array([x.mean() / sd * scale if sd > 0.0 else 0.0])

    cls = StationaryBootstrap if kind == "stationary" else CircularBlockBootstrap
    boot = cls(length, r, seed=np.random.default_rng(seed))
    ci = boot.conf_int(annual_sharpe, reps=reps, method=method, size=level)
    return SharpeCI(
        sharpe=float(annual_sharpe(r)[0]),
        lower=float(ci[0, 0]),
        upper=float(ci[1, 0]),
        level=level,
        method=method,
        kind=kind,
        block_length=length,
        reps=reps,
        seed=seed,
        periods_per_year=float(periods_per_year),
    )
