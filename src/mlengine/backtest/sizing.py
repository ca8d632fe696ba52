"""Position sizing: from a direction (or a calibrated probability) to a target exposure.

Each rule gives a magnitude in ``[0, cap]`` per bar from bars ``<= t`` only (every rule
passes the truncation test: sizing ``bars[:k]`` gives the same values up to ``k``):

* :class:`FixedFraction` — a constant fraction of equity.
* :class:`VolatilityTarget` — ``target / annualised volatility``, capped. The per-bar
  volatility is the rolling standard deviation of log close-to-close returns
  (``"realised"``) or the rolling mean true range over the close divided by ``sqrt(8/pi)``
  (``"atr"``: the expected high-low range of a random walk over one bar is
  ``sqrt(8/pi)`` times its standard deviation). It is annualised with
  :func:`mlengine.data.calendar.periods_per_year`; during the warm-up (fewer than
  ``window`` bars) the size is 0.
* :class:`Kelly` — a capped fractional Kelly bet from a probability ``p_up``: for the side
  ``d`` the win probability is ``p = p_up`` (long) or ``1 - p_up`` (short) and
  ``f* = p - (1 - p) / b`` with payoff ratio ``b`` (a constant, or ``"levels"``: the
  target distance over the stop distance from the decision close); the size is
  ``min(cap, fraction * f*)``, or 0 when the edge is not positive.

The engine multiplies the signal by the magnitude (``position * m`` in target mode,
``size * m`` for order intents). The functions :func:`fixed_fraction`,
:func:`volatility_target` and :func:`kelly` give the signed exposures directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlengine.backtest import _core
from mlengine.backtest._core import BacktestInputError
from mlengine.backtest._inputs import frozen
from mlengine.data.calendar import check_market, infer_market, periods_per_year
from mlengine.data.schema import Timeframe
from mlengine.features.volatility import realised_vol

__all__ = [
    "SIZINGS",
    "FixedFraction",
    "Kelly",
    "Sizing",
    "VolatilityTarget",
    "bar_volatility",
    "bars_market",
    "bars_periods_per_year",
    "bars_timeframe",
    "fixed_fraction",
    "kelly",
    "resolve_sizing",
    "volatility_target",
]

_RANGE_TO_SIGMA = math.sqrt(8.0 / math.pi)


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
        raise BacktestInputError(f"sizing: {name} must be in (0, 1], got {value!r}")


def _first_bad(index: pd.Index, bad: np.ndarray, what: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BacktestInputError(f"{what} at bar {i} ({index[i]})")


def bars_market(bars: pd.DataFrame, market: str | None = None) -> str:
    """``market``, else ``bars.attrs["market"]``, else inferred from the timestamps."""
    kind = market or bars.attrs.get("market")
    if kind is None:
        idx = pd.DatetimeIndex(bars.index)
        if len(idx) < 2:
            raise BacktestInputError("cannot infer the market of fewer than 2 bars: pass market=")
        kind = infer_market(idx if idx.tz is not None else idx.tz_localize("UTC"))
    return check_market(kind)


def bars_timeframe(bars: pd.DataFrame) -> Timeframe:
    """``bars.attrs["timeframe"]``, else the median spacing of the bars."""
    tf = bars.attrs.get("timeframe")
    if tf is None:
        ns = pd.DatetimeIndex(bars.index).as_unit("ns").asi8
        if len(ns) < 2:
            raise BacktestInputError("cannot infer the timeframe of fewer than 2 bars")
        minutes = int(np.median(np.diff(ns))) // 60_000_000_000
        if minutes <= 0:
            raise BacktestInputError("bars closer than one minute apart: set attrs['timeframe']")
        tf = f"{minutes}m"
    return Timeframe.parse(tf)


def bars_periods_per_year(bars: pd.DataFrame, market: str | None = None) -> float:
    """Bars per year of ``bars`` (see :func:`bars_market` and :func:`bars_timeframe`)."""
    return periods_per_year(bars_market(bars, market), bars_timeframe(bars))


def bar_volatility(bars: pd.DataFrame, *, method: str = "atr", window: int = 20) -> pd.Series:
    """Per-bar volatility (standard deviation of log returns) from bars ``<= t``; NaN in the
    warm-up."""
    close = bars["close"].to_numpy(dtype=np.float64)
    if method == "realised":
        vol = realised_vol(bars, windows=(window,))[f"rvol_{window}"]
    elif method == "atr":
        high, low = (bars[c].to_numpy(dtype=np.float64) for c in ("high", "low"))
        atr = _core.mean_true_range(frozen(high), frozen(low), frozen(close), int(window))
        vol = pd.Series(atr / close / _RANGE_TO_SIGMA, index=bars.index)
    else:
        raise BacktestInputError(f"sizing: unknown volatility method {method!r}: atr or realised")
    return vol.rename("volatility")


@dataclass(frozen=True)
class FixedFraction:
    """A constant fraction of equity."""

    fraction: float = 1.0

    def __post_init__(self) -> None:
        _check_fraction("fraction", self.fraction)

    def magnitude(
        self, bars: pd.DataFrame, signals: pd.DataFrame, direction: np.ndarray, ppy: float
    ) -> np.ndarray:
        return np.full(len(bars), float(self.fraction))


@dataclass(frozen=True)
class VolatilityTarget:
    """``min(cap, target / annualised volatility)``; ``target`` is an annual fraction. With
    ``method="atr"`` the magnitude is 0 where the direction is 0 (it multiplies the
    direction)."""

    target: float = 0.15
    method: Literal["atr", "realised"] = "atr"
    window: int = 20
    cap: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.target, int | float) and 0 < self.target < math.inf):
            raise BacktestInputError(f"sizing: target must be > 0, got {self.target!r}")
        if self.method not in ("atr", "realised"):
            raise BacktestInputError(f"sizing: unknown volatility method {self.method!r}")
        if not (isinstance(self.window, int) and self.window >= 2):
            raise BacktestInputError(f"sizing: window must be an int >= 2, got {self.window!r}")
        _check_fraction("cap", self.cap)

    def magnitude(
        self, bars: pd.DataFrame, signals: pd.DataFrame, direction: np.ndarray, ppy: float
    ) -> np.ndarray:
        if self.method == "atr":
            h, lo, c = (
                frozen(bars[k].to_numpy(dtype=np.float64)) for k in ("high", "low", "close")
            )
            size: Any = _core.volatility_size  # a numba dispatcher
            return size(
                h,
                lo,
                c,
                frozen(np.asarray(direction, dtype=np.float64)),
                self.window,
                _RANGE_TO_SIGMA,
                float(np.sqrt(ppy)),
                float(self.target),
                float(self.cap),
            )
        vol = bar_volatility(bars, method=self.method, window=self.window).to_numpy() * np.sqrt(ppy)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.minimum(self.cap, self.target / vol)
        return np.where(np.isfinite(m) & (vol > 0), m, 0.0)


@dataclass(frozen=True)
class Kelly:
    """Capped fractional Kelly from the signal frame's ``p_up`` column."""

    fraction: float = 0.5
    cap: float = 1.0
    payoff: float | Literal["levels"] = 1.0

    def __post_init__(self) -> None:
        _check_fraction("fraction", self.fraction)
        _check_fraction("cap", self.cap)
        ok = self.payoff == "levels" or (
            isinstance(self.payoff, int | float) and 0 < self.payoff < math.inf
        )
        if not ok:
            raise BacktestInputError(f"sizing: payoff must be > 0 or 'levels', got {self.payoff!r}")

    def magnitude(
        self, bars: pd.DataFrame, signals: pd.DataFrame, direction: np.ndarray, ppy: float
    ) -> np.ndarray:
        if "p_up" not in signals.columns:
            raise BacktestInputError("sizing Kelly needs a 'p_up' column in the signals")
        p_up = signals["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
        active = direction != 0
        _first_bad(signals.index, active & ~((p_up >= 0) & (p_up <= 1)), "p_up not in [0, 1]")
        if self.payoff == "levels":
            ref = bars["close"].to_numpy(dtype=np.float64)
            stop = _column(signals, "stop_loss")
            take = _column(signals, "take_profit")
            b = np.abs(take - ref) / np.abs(ref - stop)
            _first_bad(signals.index, active & ~np.isfinite(b), "payoff='levels' needs both levels")
        else:
            b = np.full(len(bars), float(self.payoff))
        return _kelly_size(p_up, direction, b, self.fraction, self.cap)


def _column(signals: pd.DataFrame, name: str) -> np.ndarray:
    if name not in signals.columns:
        return np.full(len(signals), np.nan)
    return signals[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _kelly_size(
    p_up: np.ndarray, direction: np.ndarray, b: np.ndarray, fraction: float, cap: float
) -> np.ndarray:
    p = np.where(direction > 0, p_up, 1.0 - p_up)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = p - (1.0 - p) / b
    size = np.clip(fraction * edge, 0.0, cap)
    return np.where((direction != 0) & np.isfinite(size), size, 0.0)


Sizing = FixedFraction | VolatilityTarget | Kelly
SIZINGS: dict[str, type[FixedFraction] | type[VolatilityTarget] | type[Kelly]] = {
    "fixed": FixedFraction,
    "volatility": VolatilityTarget,
    "kelly": Kelly,
}


def resolve_sizing(sizing: Sizing | str | None) -> Sizing | None:
    """A sizing rule from a rule, its name (``fixed``, ``volatility``, ``kelly``) or None."""
    if sizing is None or isinstance(sizing, FixedFraction | VolatilityTarget | Kelly):
        return sizing
    if isinstance(sizing, str) and sizing in SIZINGS:
        return SIZINGS[sizing]()
    raise BacktestInputError(
        f"unknown sizing {sizing!r}: use one of {', '.join(SIZINGS)}, a FixedFraction, "
        "VolatilityTarget or Kelly, or None"
    )


# --- signed exposures, for use outside the engine -------------------------------------------


def _direction(direction: pd.Series) -> np.ndarray:
    d = direction.to_numpy(dtype=np.float64, na_value=np.nan)
    _first_bad(direction.index, ~np.isfinite(d), "direction is NaN")
    return d


def fixed_fraction(direction: pd.Series, fraction: float = 1.0) -> pd.Series:
    """``direction * fraction``, clipped to [-1, 1]."""
    d = _direction(direction)
    m = FixedFraction(fraction).magnitude(pd.DataFrame(index=direction.index), pd.DataFrame(), d, 1)
    return pd.Series(np.clip(d * m, -1, 1), index=direction.index, name="position")


def volatility_target(
    bars: pd.DataFrame,
    direction: pd.Series,
    *,
    target: float = 0.15,
    method: Literal["atr", "realised"] = "atr",
    window: int = 20,
    cap: float = 1.0,
    market: str | None = None,
) -> pd.Series:
    """``direction * min(cap, target / annualised volatility)`` (0 in the warm-up)."""
    d = _direction(direction)
    rule = VolatilityTarget(target=target, method=method, window=window, cap=cap)
    m = rule.magnitude(bars, pd.DataFrame(), d, bars_periods_per_year(bars, market))
    return pd.Series(np.clip(d * m, -1, 1), index=bars.index, name="position")


def kelly(
    p_up: pd.Series,
    *,
    payoff: float | np.ndarray = 1.0,
    fraction: float = 0.5,
    cap: float = 1.0,
    direction: pd.Series | None = None,
) -> pd.Series:
    """Signed capped fractional Kelly exposure; the side is ``sign(p_up - 0.5)`` unless a
    ``direction`` is given."""
    p = p_up.to_numpy(dtype=np.float64, na_value=np.nan)
    _first_bad(p_up.index, ~((p >= 0) & (p <= 1)), "p_up not in [0, 1]")
    d = np.sign(p - 0.5) if direction is None else np.sign(_direction(direction))
    if isinstance(payoff, int | float):
        Kelly(fraction=fraction, cap=cap, payoff=float(payoff))  # checks the arguments
    else:
        Kelly(fraction=fraction, cap=cap)
    b = np.broadcast_to(np.asarray(payoff, dtype=np.float64), p.shape)
    return pd.Series(d * _kelly_size(p, d, b, fraction, cap), index=p_up.index, name="position")
