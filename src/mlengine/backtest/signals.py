"""Signal rules: out-of-sample predictions in, target positions in [-1, 1] out.

A rule is a callable ``rule(predictions, bars) -> positions`` with one position per bar of
``bars`` (the out-of-sample bars); ``predictions`` is aligned to the same bars (NaN
``p_up`` where a bar has no prediction, which every rule treats as flat). The position
decided at bar ``t``'s close is filled at the next bar's open by the engine, so a rule may
use ``predictions`` up to and including ``t`` and nothing later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from mlengine.data.schema import MLEngineError

__all__ = [
    "HysteresisSignal",
    "ProportionalSignal",
    "SignalError",
    "SignalRule",
    "ThresholdSignal",
]

SignalRule = Callable[[pd.DataFrame, pd.DataFrame], "pd.Series | np.ndarray"]


class SignalError(MLEngineError, ValueError):
    """Invalid signal-rule parameters."""


@dataclass(frozen=True)
class ThresholdSignal:
    """Long when ``p_up > 0.5 + margin``, short when ``p_up < 0.5 - margin``, else flat."""

    margin: float = 0.0
    long_only: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.margin, int | float) and 0.0 <= self.margin < 0.5):
            raise SignalError(f"margin must be in [0, 0.5), got {self.margin!r}")

    def __call__(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> np.ndarray:
        p = predictions["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            pos = np.where(p > 0.5 + self.margin, 1.0, 0.0)
            if not self.long_only:
                pos = np.where(p < 0.5 - self.margin, -1.0, pos)
        return pos


@dataclass(frozen=True)
class ProportionalSignal:
    """``position = 2 * p_up - 1`` (NaN flat; negative clipped to 0 when ``long_only``)."""

    long_only: bool = False

    def __call__(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> np.ndarray:
        p = predictions["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
        pos = np.nan_to_num(2.0 * p - 1.0, nan=0.0)
        return np.clip(pos, 0.0 if self.long_only else -1.0, 1.0)


@dataclass(frozen=True)
class HysteresisSignal:
    """Threshold entries with a separate exit band, so ``p_up`` hovering near 0.5 does not
    flip the position every bar.

    From flat: long when ``p_up > 0.5 + enter``, short when ``p_up < 0.5 - enter`` (never
    when ``long_only``). A long exits when ``p_up <= 0.5 + exit``, a short when
    ``p_up >= 0.5 - exit`` (so with ``exit = 0`` a "no view" of exactly 0.5 closes the
    position, which is what the rule baselines' flat ``p_up = 0.5`` means);
    ``-enter <= exit <= enter``, and ``exit = -enter`` holds a position until the opposite
    entry. An exit and an entry may happen on the same bar, which flips long to short (or
    back) directly. A position is held at least ``min_hold`` bars, counting its entry bar,
    before it may exit. A bar without a prediction (NaN ``p_up``, e.g. a gap between
    folds) is outside the model's coverage: the position goes flat there at once,
    whatever ``min_hold`` says.
    """

    enter: float = 0.05
    exit: float = 0.0
    long_only: bool = False
    min_hold: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.enter, int | float) and 0.0 <= self.enter < 0.5):
            raise SignalError(f"enter must be in [0, 0.5), got {self.enter!r}")
        if not (isinstance(self.exit, int | float) and -self.enter <= self.exit <= self.enter):
            raise SignalError(
                f"exit must be in [-enter, enter] = [{-self.enter!r}, {self.enter!r}], "
                f"got {self.exit!r}"
            )
        if isinstance(self.min_hold, bool) or not (
            isinstance(self.min_hold, int) and self.min_hold >= 1
        ):
            raise SignalError(f"min_hold must be an integer >= 1, got {self.min_hold!r}")

    def __call__(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> np.ndarray:
        p = predictions["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
        return _hysteresis(
            np.ascontiguousarray(p),
            float(self.enter),
            float(self.exit),
            bool(self.long_only),
            int(self.min_hold),
        )


# A loop rather than array operations: the position at a bar depends on the position (and
# how long it has been held) at the bar before, so the bars must be visited in order.
@njit(cache=True)
def _hysteresis(
    p: np.ndarray, enter: float, exit: float, long_only: bool, min_hold: int
) -> np.ndarray:
    """Positions of :class:`HysteresisSignal` for ``p_up`` values ``p``."""
    long_in, short_in, long_out, short_out = 0.5 + enter, 0.5 - enter, 0.5 + exit, 0.5 - exit
    pos = np.zeros(p.size)
    side = 0
    held = 0  # bars the open position has been held before this one
    for t in range(p.size):
        x = p[t]
        exits = (side == 1 and x <= long_out) or (side == -1 and x >= short_out)
        if np.isnan(x) or (exits and held >= min_hold):  # no prediction: flat at once
            side = 0
        if side == 0:  # a NaN compares false below: no entry
            held = 0
            if x > long_in:
                side = 1
            elif not long_only and x < short_in:
                side = -1
        held += 1
        pos[t] = side
    return pos
