"""Value checks on a parsed decision: a well-formed reply can still be a bad order.

:func:`check_decision` judges a :class:`~mlengine.llm.schema.Decision` against the
:class:`~mlengine.llm.schema.DecisionContext` it was made for and returns the rules it
breaks, one message each naming the rule and the numbers (an empty list passes):

* ``order`` — a BUY needs ``stop_loss < entry < take_profit``, a SELL
  ``take_profit < entry < stop_loss``;
* ``entry distance`` — ``|entry - last_price| <= max_entry_distance_atr * atr``;
* ``stop distance`` — ``min_stop_atr * atr <= |entry - stop_loss| <= max_stop_atr * atr``;
* ``target distance`` — ``|take_profit - entry| <= max_target_atr * atr``;
* ``reward/risk`` — ``|take_profit - entry| / |entry - stop_loss| >= min_reward_risk``;
* ``against ensemble`` — a BUY when ``ensemble_p < 0.5 - against_ensemble`` or a SELL when
  ``ensemble_p > 0.5 + against_ensemble`` (only when the context has a finite
  ``ensemble_p``).

A HOLD is not an order: only its entry distance is checked. Distances are compared in ATR
units and the ratio as is, each with a tolerance of :data:`TOLERANCE` so that a value built
exactly at a limit is not failed by floating-point rounding. A context whose ``atr`` is not
finite and positive (or whose ``last_price`` is not) fails every rule that needs it, with a
message saying so — nothing is divided by zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from mlengine.data.schema import MLEngineError
from mlengine.llm.schema import Decision, DecisionContext

__all__ = ["TOLERANCE", "RiskLimits", "RiskLimitsError", "check_decision"]

#: Slack on every limit comparison (in ATR units for distances, absolute for the ratio).
TOLERANCE = 1e-9


class RiskLimitsError(MLEngineError, ValueError):
    """Risk limits that cannot be applied (not finite, negative, or inconsistent)."""


@dataclass(frozen=True)
class RiskLimits:
    """The limits of :func:`check_decision`; distances in multiples of the context's ATR."""

    max_entry_distance_atr: float = 0.5
    min_stop_atr: float = 0.25
    max_stop_atr: float = 5.0
    max_target_atr: float = 10.0
    min_reward_risk: float = 1.0
    against_ensemble: float = 0.15

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RiskLimitsError(f"RiskLimits.{item.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise RiskLimitsError(
                    f"RiskLimits.{item.name} must be finite and >= 0, got {value!r}"
                )
        if self.min_stop_atr > self.max_stop_atr:
            raise RiskLimitsError(
                f"RiskLimits.min_stop_atr ({self.min_stop_atr}) exceeds max_stop_atr "
                f"({self.max_stop_atr})"
            )
        if self.against_ensemble > 0.5:
            raise RiskLimitsError(
                f"RiskLimits.against_ensemble must be <= 0.5, got {self.against_ensemble}"
            )


def _num(value: float) -> str:
    return f"{value:.10g}"


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _entry_distance(decision: Decision, context: DecisionContext, limits: RiskLimits) -> list[str]:
    rule = "entry distance"
    if not _usable(context.last_price):
        return [
            f"{rule}: cannot check, context last_price is {context.last_price!r} "
            "(must be finite and > 0)"
        ]
    if not _usable(context.atr):
        return [f"{rule}: cannot check, context atr is {context.atr!r} (must be finite and > 0)"]
    distance = abs(decision.entry - context.last_price) / context.atr
    if distance > limits.max_entry_distance_atr + TOLERANCE:
        return [
            f"{rule}: |entry - last_price| = |{_num(decision.entry)} - "
            f"{_num(context.last_price)}| = {_num(distance)} ATR > "
            f"{_num(limits.max_entry_distance_atr)} ATR (atr {_num(context.atr)})"
        ]
    return []


def _order(decision: Decision) -> list[str]:
    entry, stop, target = decision.entry, decision.stop_loss, decision.take_profit
    if decision.action == "BUY" and not stop < entry < target:
        return [
            f"order: BUY needs stop_loss < entry < take_profit: {_num(stop)} / {_num(entry)} "
            f"/ {_num(target)}"
        ]
    if decision.action == "SELL" and not target < entry < stop:
        return [
            f"order: SELL needs take_profit < entry < stop_loss: {_num(target)} / "
            f"{_num(entry)} / {_num(stop)}"
        ]
    return []


def _distances(decision: Decision, context: DecisionContext, limits: RiskLimits) -> list[str]:
    atr = context.atr
    if not _usable(atr):
        why = f"cannot check, context atr is {atr!r} (must be finite and > 0)"
        return [f"stop distance: {why}", f"target distance: {why}"]
    problems = []
    stop = abs(decision.entry - decision.stop_loss) / atr
    low, high = limits.min_stop_atr, limits.max_stop_atr
    if not low - TOLERANCE <= stop <= high + TOLERANCE:
        problems.append(
            f"stop distance: |entry - stop_loss| = |{_num(decision.entry)} - "
            f"{_num(decision.stop_loss)}| = {_num(stop)} ATR outside [{_num(low)}, "
            f"{_num(high)}] ATR (atr {_num(atr)})"
        )
    target = abs(decision.take_profit - decision.entry) / atr
    if target > limits.max_target_atr + TOLERANCE:
        problems.append(
            f"target distance: |take_profit - entry| = |{_num(decision.take_profit)} - "
            f"{_num(decision.entry)}| = {_num(target)} ATR > {_num(limits.max_target_atr)} "
            f"ATR (atr {_num(atr)})"
        )
    return problems


def _reward_risk(decision: Decision, limits: RiskLimits) -> list[str]:
    reward = abs(decision.take_profit - decision.entry)
    risk = abs(decision.entry - decision.stop_loss)
    if risk == 0:
        return [
            f"reward/risk: undefined, stop_loss equals entry ({_num(decision.entry)}); "
            f"needs >= {_num(limits.min_reward_risk)}"
        ]
    ratio = reward / risk
    if ratio < limits.min_reward_risk - TOLERANCE:
        return [
            f"reward/risk: |take_profit - entry| / |entry - stop_loss| = {_num(reward)} / "
            f"{_num(risk)} = {_num(ratio)} < {_num(limits.min_reward_risk)}"
        ]
    return []


def _against_ensemble(
    decision: Decision, context: DecisionContext, limits: RiskLimits
) -> list[str]:
    p = context.ensemble_p
    if p is None or not math.isfinite(p):
        return []
    if decision.action == "BUY" and p < 0.5 - limits.against_ensemble:
        return [
            f"against ensemble: BUY while ensemble_p = {_num(p)} < "
            f"{_num(0.5 - limits.against_ensemble)} (0.5 - {_num(limits.against_ensemble)})"
        ]
    if decision.action == "SELL" and p > 0.5 + limits.against_ensemble:
        return [
            f"against ensemble: SELL while ensemble_p = {_num(p)} > "
            f"{_num(0.5 + limits.against_ensemble)} (0.5 + {_num(limits.against_ensemble)})"
        ]
    return []


def check_decision(
    decision: Decision, context: DecisionContext, limits: RiskLimits | None = None
) -> list[str]:
    """The risk rules ``decision`` breaks in ``context`` (empty: it passes)."""
    limits = RiskLimits() if limits is None else limits
    problems = _entry_distance(decision, context, limits)
    if decision.action == "HOLD":
        return problems
    problems += _order(decision)
    problems += _distances(decision, context, limits)
    problems += _reward_risk(decision, limits)
    problems += _against_ensemble(decision, context, limits)
    return problems
