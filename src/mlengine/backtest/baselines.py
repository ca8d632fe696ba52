"""Rule baselines: buy-and-hold, SMA crossover and time-series momentum.

Each follows the strategy contract (:class:`mlengine.strategies.base.Strategy`), so the
walk-forward runner and :func:`mlengine.backtest.compare.compare` treat them like the ML
strategies, and offers ``signals(bars)``: the target-position frame (column ``position`` in
[-1, 1], the engine's target mode) decided at each bar's close from bars ``<= t`` only.

* :class:`BuyAndHoldBaseline` — long at every bar.
* :class:`SMACrossover` — long while the ``fast`` simple moving average of the close is above
  the ``slow`` one, short (flat with ``allow_short=False``) while below; flat in the warm-up
  and on ties.
* :class:`TimeSeriesMomentum` — the sign of the close-to-close return over the last
  ``lookback`` bars (Moskowitz, Ooi & Pedersen 2012); with ``vol_target`` the position is
  scaled by ``min(1, vol_target / annualised realised volatility)`` over ``vol_window``
  bars (:func:`mlengine.backtest.sizing.volatility_target`).

``p_up`` is a documented mapping of the rule's position, not a fitted probability:
``p_up = (1 + position) / 2`` — 1.0 long, 0.0 short, 0.5 flat (warm-up included), in between
for scaled positions, so :class:`mlengine.backtest.signals.ProportionalSignal` recovers
the position exactly. ``fit`` learns nothing; it records the last training bar only.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from mlengine.backtest.sizing import volatility_target
from mlengine.data.schema import check_bar_frame
from mlengine.strategies.base import Context, NotFittedError, StrategyError, resolve_params
from mlengine.strategies.registry import register

__all__ = [
    "BuyAndHoldBaseline",
    "BuyAndHoldParams",
    "SMACrossover",
    "SMACrossoverParams",
    "TimeSeriesMomentum",
    "TimeSeriesMomentumParams",
]

_MANIFEST = "manifest.json"


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StrategyError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class BuyAndHoldParams:
    """Buy-and-hold has no parameters."""


@dataclass(frozen=True)
class SMACrossoverParams:
    fast: int = 10
    slow: int = 50
    allow_short: bool = True

    def __post_init__(self) -> None:
        _positive_int("fast", self.fast)
        _positive_int("slow", self.slow)
        if self.fast >= self.slow:
            raise StrategyError(f"fast={self.fast} must be shorter than slow={self.slow}")


@dataclass(frozen=True)
class TimeSeriesMomentumParams:
    lookback: int = 20
    allow_short: bool = True
    vol_target: float | None = None  # annualised, e.g. 0.15; None = unscaled (|position| 1)
    vol_window: int = 20
    market: str | None = None  # for annualising; default bars.attrs["market"]

    def __post_init__(self) -> None:
        _positive_int("lookback", self.lookback)
        _positive_int("vol_window", self.vol_window)
        if self.vol_window < 2:
            raise StrategyError(f"vol_window must be >= 2, got {self.vol_window}")
        vt = self.vol_target
        if vt is not None and not (isinstance(vt, int | float) and 0 < vt < np.inf):
            raise StrategyError(f"vol_target must be positive or None, got {vt!r}")


class _RuleBaseline(ABC):
    """Shared contract plumbing; subclasses define ``name``, ``params`` and ``_rule``."""

    name: str
    params_type: ClassVar[type]
    params: Any

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        params = resolve_params(self.name, self.params_type, params, kwargs)
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    # -- the rule -----------------------------------------------------------------------

    @abstractmethod
    def _rule(self, bars: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Position per bar and diagnostics columns, from bars ``<= t``."""

    def signals(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Target positions (column ``position``) on ``bars``' index; no fit needed."""
        check_bar_frame(bars)
        position, _ = self._rule(bars)
        return pd.DataFrame({"position": position}, index=bars.index)

    # -- the contract -------------------------------------------------------------------

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Self:
        """Learns nothing; records the last training bar (``train_end_``)."""
        check_bar_frame(bars)
        if len(bars) == 0:
            raise StrategyError(f"{self.name}: fit on empty bars")
        self.train_end_: pd.Timestamp | None = bars.index[-1]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_end_"):
            raise NotFittedError(f"{self.name}: call fit before predict_proba or save")

    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        """``p_up = (1 + position) / 2`` plus ``position`` and the rule's inputs."""
        self._check_fitted()
        check_bar_frame(bars)
        position, diagnostics = self._rule(bars)
        return pd.DataFrame(
            {"p_up": (1.0 + position) / 2.0, "position": position, **diagnostics},
            index=bars.index,
        )

    def save(self, path: Path) -> None:
        """Write ``path/manifest.json`` (name, parameters, last training bar)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        end = self.train_end_
        manifest = {
            "strategy": self.name,
            "params": asdict(self.params),
            "train_end": None if end is None else end.isoformat(),
        }
        (path / _MANIFEST).write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        """The baseline saved at ``path`` (fitted)."""
        file = Path(path) / _MANIFEST
        try:
            manifest = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise StrategyError(f"{file}: cannot read the strategy manifest: {err}") from None
        if not isinstance(manifest, dict) or manifest.get("strategy") != cls.name:
            found = manifest.get("strategy") if isinstance(manifest, dict) else manifest
            raise StrategyError(f"{file}: holds strategy {found!r}, not {cls.name!r}")
        try:
            params = cls.params_type(**manifest.get("params", {}))
        except TypeError as err:
            raise StrategyError(f"{file}: bad params: {err}") from None
        out = cls(params)
        end = manifest.get("train_end")
        out.train_end_ = None if end is None else pd.Timestamp(end)
        return out


@register
class BuyAndHoldBaseline(_RuleBaseline):
    """Long at every bar."""

    name = "buy_and_hold"
    params_type = BuyAndHoldParams
    params: BuyAndHoldParams

    def _rule(self, bars: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return np.ones(len(bars)), {}


@register
class SMACrossover(_RuleBaseline):
    """Sign of ``SMA(fast) - SMA(slow)`` of the close."""

    name = "sma_crossover"
    params_type = SMACrossoverParams
    params: SMACrossoverParams

    def _rule(self, bars: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        p = self.params
        close = bars["close"]
        fast = close.rolling(p.fast).mean().to_numpy()
        slow = close.rolling(p.slow).mean().to_numpy()
        with np.errstate(invalid="ignore"):
            position = np.nan_to_num(np.sign(fast - slow), nan=0.0)
        if not p.allow_short:
            position = np.maximum(position, 0.0)
        return position, {"sma_fast": fast, "sma_slow": slow}


@register
class TimeSeriesMomentum(_RuleBaseline):
    """Sign of the past ``lookback``-bar return, optionally volatility-scaled."""

    name = "tsmom"
    params_type = TimeSeriesMomentumParams
    params: TimeSeriesMomentumParams

    def _rule(self, bars: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        p = self.params
        close = bars["close"].to_numpy(dtype=np.float64)
        past = np.full(close.size, np.nan)
        if close.size > p.lookback:
            past[p.lookback :] = close[p.lookback :] / close[: -p.lookback] - 1.0
        direction = np.nan_to_num(np.sign(past), nan=0.0)
        if not p.allow_short:
            direction = np.maximum(direction, 0.0)
        if p.vol_target is None or len(bars) == 0:
            return direction, {"past_return": past}
        market = p.market or bars.attrs.get("market")
        if market is None:
            # Inferring the market from a prefix of the bars could change with its length
            # and break the truncation property, so it must be given.
            raise StrategyError(f"{self.name}: vol_target needs market= or bars.attrs['market']")
        position = volatility_target(
            bars,
            pd.Series(direction, index=bars.index),
            target=float(p.vol_target),
            method="realised",
            window=p.vol_window,
            market=market,
        ).to_numpy()
        return position, {"past_return": past}
