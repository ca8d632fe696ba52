"""Sharpe ratio inference: probabilistic and deflated Sharpe ratios.

All Sharpe ratios here are per period (per bar, not annualised): mean over standard
deviation (``ddof=1``) of the per-bar returns.

* Probabilistic Sharpe ratio (Bailey & López de Prado, 2012, "The Sharpe ratio efficient
  frontier", J. of Risk 15(2)): the probability that the true Sharpe ratio exceeds a
  benchmark ``SR*``, given the estimate ``SR``, ``n`` observations, the skewness ``g3`` and
  the (non-excess) kurtosis ``g4`` of the returns::

      PSR(SR*) = Φ( (SR − SR*) · √(n − 1) / √(1 − g3·SR + (g4 − 1)/4 · SR²) )

* Deflated Sharpe ratio (Bailey & López de Prado, 2014, "The deflated Sharpe ratio:
  correcting for selection bias, backtest overfitting and non-normality", J. of Portfolio
  Management 40(5)): ``DSR = PSR(SR0)`` with ``SR0`` the expected maximum Sharpe ratio of
  ``N`` independent trials whose Sharpe estimates have variance ``V`` and mean zero::

      SR0 = √V · ((1 − γ) · Φ⁻¹(1 − 1/N) + γ · Φ⁻¹(1 − 1/(N·e)))

  with γ the Euler–Mascheroni constant. For ``N = 1`` there is no selection: ``SR0 = 0``.

Skewness and kurtosis are the sample moments of :func:`scipy.stats.skew` and
:func:`scipy.stats.kurtosis` (``fisher=False``), both with their default ``bias=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mlengine.data.schema import MLEngineError

EULER_GAMMA = float(np.euler_gamma)
MIN_OBS = 3


class ValidityError(MLEngineError, ValueError):
    """Input that the validity tests cannot judge (NaN, misaligned, too short, constant)."""


def as_returns(values: object, name: str = "returns", *, min_obs: int = MIN_OBS) -> np.ndarray:
    """``values`` as a finite 1-D float64 array, or a :class:`ValidityError` saying where not."""
    labels = values.index if isinstance(values, pd.Series) else None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValidityError(f"{name}: not numeric ({err})") from None
    if arr.ndim != 1:
        raise ValidityError(f"{name}: expected one dimension, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        where = f"label {labels[bad[0]]}" if labels is not None else f"position {bad[0]}"
        raise ValidityError(
            f"{name}: {bad.size} non-finite value(s), first {arr[bad[0]]} at {where}"
        )
    if arr.size < min_obs:
        raise ValidityError(f"{name}: needs at least {min_obs} observations, got {arr.size}")
    return arr


@dataclass(frozen=True)
class SharpeStats:
    """Per-period Sharpe ratio of a return series and the moments PSR needs."""

    sharpe: float
    n_obs: int
    skewness: float
    kurtosis: float  # non-excess: 3 for a normal distribution


def sharpe_stats(returns: object, name: str = "returns") -> SharpeStats:
    """Sharpe ratio, length, skewness and kurtosis of ``returns`` (finite, not constant)."""
    r = as_returns(returns, name)
    if not np.ptp(r) > 0.0:
        raise ValidityError(f"{name}: constant series (zero variance), Sharpe ratio undefined")
    return SharpeStats(
        sharpe=float(np.mean(r) / np.std(r, ddof=1)),
        n_obs=int(r.size),
        skewness=float(stats.skew(r)),
        kurtosis=float(stats.kurtosis(r, fisher=False)),
    )


def sharpe_ratio(returns: object) -> float:
    """Per-period Sharpe ratio ``mean / std(ddof=1)`` (multiply by √periods to annualise)."""
    return sharpe_stats(returns).sharpe


def psr_from_moments(
    sharpe: float, n_obs: int, skewness: float, kurtosis: float, benchmark: float = 0.0
) -> float:
    """PSR of a per-period Sharpe estimate against the per-period ``benchmark``."""
    if n_obs < 2:
        raise ValidityError(f"PSR needs at least 2 observations, got {n_obs}")
    # 1 − g3·SR + (g4 − 1)/4·SR² ≥ (1 − g3·SR/2)² ≥ 0 because g4 ≥ 1 + g3²; it is zero only
    # for degenerate two-point samples, where PSR is a step function.
    var = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    diff = sharpe - benchmark
    if not var > 0.0:
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    return float(stats.norm.cdf(diff * math.sqrt(n_obs - 1) / math.sqrt(var)))


def probabilistic_sharpe_ratio(returns: object, benchmark: float = 0.0) -> float:
    """Probability that the true per-period Sharpe ratio of ``returns`` exceeds ``benchmark``."""
    s = sharpe_stats(returns)
    return psr_from_moments(s.sharpe, s.n_obs, s.skewness, s.kurtosis, benchmark)


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum per-period Sharpe of ``n_trials`` zero-mean independent trials."""
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValidityError(f"n_trials must be a positive integer, got {n_trials!r}")
    if n_trials == 1:
        return 0.0
    if not (math.isfinite(sharpe_variance) and sharpe_variance >= 0.0):
        raise ValidityError(
            f"trial_sharpe_variance must be finite and >= 0 for {n_trials} trials, "
            f"got {sharpe_variance!r}"
        )
    n = float(n_trials)
    z1 = stats.norm.ppf(1.0 - 1.0 / n)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


@dataclass(frozen=True)
class DeflatedSharpe:
    """Result of :func:`deflated_sharpe_ratio`; Sharpe ratios per period."""

    dsr: float
    """PSR against ``expected_max``: probability that the true Sharpe beats the best of luck."""
    psr: float
    """PSR against 0 (no deflation)."""
    expected_max: float
    """``SR0``, the expected maximum Sharpe of ``n_trials`` unskilled trials."""
    stats: SharpeStats
    n_trials: int
    trial_sharpe_variance: float


def deflated_sharpe_ratio(
    returns: object, *, n_trials: int, trial_sharpe_variance: float | None
) -> DeflatedSharpe:
    """DSR of ``returns`` selected as the best of ``n_trials`` trials.

    ``trial_sharpe_variance`` is the variance of the trials' per-period Sharpe ratios (see
    :func:`mlengine.backtest.validity.trials_summary`); it may be ``None`` when
    ``n_trials == 1``.
    """
    var = float("nan") if trial_sharpe_variance is None else float(trial_sharpe_variance)
    sr0 = expected_max_sharpe(n_trials, var)
    s = sharpe_stats(returns)
    return DeflatedSharpe(
        dsr=psr_from_moments(s.sharpe, s.n_obs, s.skewness, s.kurtosis, sr0),
        psr=psr_from_moments(s.sharpe, s.n_obs, s.skewness, s.kurtosis, 0.0),
        expected_max=sr0,
        stats=s,
        n_trials=int(n_trials),
        trial_sharpe_variance=var,
    )
