"""Trading costs of one asset: commission, spread and slippage.

Every fill pays, against the reference price ``ref`` (the open for orders decided at the
previous close, the level for stops and targets, the last close for the final exit):

* half the quoted spread: ``ref * spread_bps / 2 / 10_000`` (so a round trip pays one
  spread);
* slippage: ``ref * slippage_bps / 10_000`` plus ``slippage_range`` times the high-low
  range of the bar in which the fill happens;
* commission: ``commission_bps / 10_000`` of the fill's notional, plus ``fixed`` currency
  per order.

Spread and slippage move the fill price against the trader (buys higher, sells lower); the
ledger reports their currency amount in its ``slippage`` column and the commissions in
``fees``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from mlengine.backtest._core import BacktestInputError

__all__ = ["CostModel"]

_MAX_BPS = 10_000.0


@dataclass(frozen=True)
class CostModel:
    """Costs of trading one asset (all non-negative; bps = 1/10,000)."""

    commission_bps: float = 0.0
    fixed: float = 0.0
    spread_bps: float = 0.0
    slippage_bps: float = 0.0
    slippage_range: float = 0.0

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "costs") -> CostModel:
        """Raise :class:`BacktestInputError` on a negative, non-finite or absurd cost."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BacktestInputError(f"{where}: {f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise BacktestInputError(
                    f"{where}: {f.name} must be finite and >= 0, got {value!r}"
                )
        for name in ("commission_bps", "spread_bps", "slippage_bps"):
            if getattr(self, name) >= _MAX_BPS:
                raise BacktestInputError(
                    f"{where}: {name}={getattr(self, name)} is 100% or more of the price"
                )
        if self.slippage_range > 1:
            raise BacktestInputError(
                f"{where}: slippage_range={self.slippage_range} is more than the bar's range"
            )
        return self

    @property
    def is_zero(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))

    def kernel_args(self) -> np.ndarray:
        """(half_spread, slippage_rate, slippage_range, commission_rate, fixed) as fractions."""
        return np.array(
            [
                self.spread_bps / 2 / _MAX_BPS,
                self.slippage_bps / _MAX_BPS,
                self.slippage_range,
                self.commission_bps / _MAX_BPS,
                self.fixed,
            ],
            dtype=np.float64,
        )

    @classmethod
    def from_fraction(cls, commission: float = 0.0, **kwargs: float) -> CostModel:
        """A cost model with the commission given as a fraction (``0.001`` = 0.1%)."""
        return cls(commission_bps=commission * _MAX_BPS, **kwargs)
