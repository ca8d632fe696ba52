"""The deterministic rules provider: the decision of last resort, no model, no network.

It answers like any other provider (a :class:`~mlengine.llm.schema.Reply` whose text is
the decision as JSON, judged by the same parser and risk checks) and reads the decision
context, not the prompt text:

* **Vote.** ``p`` = the ensemble's calibrated probability when the context has one; else
  the mean of the strategies' ``p_up`` weighted by the gate's weights (strategies without
  a weight count 0) when those weights sum to more than 0; else their plain mean.
* **Action.** BUY when ``p > 0.5 + margin``, SELL when ``p < 0.5 - margin``, HOLD otherwise.
* **Prices.** ``entry`` = the last price. BUY: ``stop_loss = entry - stop_atr * ATR``,
  ``take_profit = entry + target_atr * ATR``; SELL the mirror image. HOLD is no order, but
  the record stays complete: its stop and target sit where a BUY's would.
* **Confidence** = ``|p - 0.5| * 2`` clipped to [0, 1], the same formula for every action.

When the ATR is so large against the price that a stop or target would not be a positive
price (``k * ATR >= last price``), no valid order can be placed and :class:`ProviderError`
says so.
"""

from __future__ import annotations

import math
import time

from pydantic import ValidationError

from mlengine.llm.formatter import format_number, format_price, price_decimals
from mlengine.llm.schema import Action, Decision, DecisionContext, Prompt, ProviderError, Reply

__all__ = ["RulesProvider", "vote"]


def vote(context: DecisionContext) -> tuple[float, str]:
    """The probability the rules act on, and where it came from (for the reasoning)."""
    if context.ensemble_p is not None:
        return float(context.ensemble_p), "ensemble p_up"
    if not context.strategies:
        raise ProviderError("rules: the context has no ensemble and no strategy: nothing to vote")
    ps = [v.p_up for v in context.strategies]
    ws = [max(float(context.gate_weights.get(v.name, 0.0)), 0.0) for v in context.strategies]
    total = sum(ws)
    if context.gate_weights and math.isfinite(total) and total > 0:
        return sum(p * w for p, w in zip(ps, ws, strict=True)) / total, "gate-weighted p_up"
    n = len(ps)
    return sum(ps) / n, f"mean p_up of {n} strateg{'y' if n == 1 else 'ies'}"


class RulesProvider:
    """Weighted vote of the calibrated signals, HOLD within ``margin`` of 0.5, stop and
    target at ``stop_atr`` / ``target_atr`` ATRs from the last price, ``horizon`` bars."""

    name: str = "rules"
    model: str = "rules-v1"

    def __init__(
        self,
        margin: float = 0.05,
        stop_atr: float = 1.5,
        target_atr: float = 3.0,
        horizon: int = 4,
    ) -> None:
        if not (isinstance(margin, int | float) and 0.0 <= margin < 0.5):
            raise ProviderError(f"rules: margin must be in [0, 0.5), got {margin!r}")
        for label, k in (("stop_atr", stop_atr), ("target_atr", target_atr)):
            if not (isinstance(k, int | float) and math.isfinite(k) and k > 0):
                raise ProviderError(f"rules: {label} must be a finite number > 0, got {k!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= 10_000:
            raise ProviderError(f"rules: horizon must be an integer in [1, 10000], got {horizon!r}")
        self.margin = float(margin)
        self.stop_atr = float(stop_atr)
        self.target_atr = float(target_atr)
        self.horizon = horizon

    def __repr__(self) -> str:
        return (
            f"RulesProvider(margin={self.margin}, stop_atr={self.stop_atr}, "
            f"target_atr={self.target_atr}, horizon={self.horizon})"
        )

    def decide(self, context: DecisionContext) -> Decision:
        """The rules' :class:`Decision` for ``context``."""
        price, atr = float(context.last_price), float(context.atr)
        if not (math.isfinite(price) and price > 0):
            raise ProviderError(f"rules: last price {price!r} is not a finite price > 0")
        if not (math.isfinite(atr) and atr > 0):
            raise ProviderError(f"rules: ATR {atr!r} is not a finite number > 0")
        p, source = vote(context)
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ProviderError(f"rules: {source} {p!r} is not a probability")
        action: Action
        if p > 0.5 + self.margin:
            action, sign = "BUY", 1.0
        elif p < 0.5 - self.margin:
            action, sign = "SELL", -1.0
        else:
            action, sign = "HOLD", 1.0
        stop = price - sign * self.stop_atr * atr
        target = price + sign * self.target_atr * atr
        d = price_decimals(context)
        threshold = {
            "BUY": f"> {format_number(0.5 + self.margin)}",
            "SELL": f"< {format_number(0.5 - self.margin)}",
            "HOLD": f"within 0.5 +/- {format_number(self.margin)}",
        }[action]
        reasoning = (
            f"Rules: {source} {format_number(p)} {threshold} -> {action}. Entry at the last "
            f"price {format_price(price, d)}; stop {format_number(self.stop_atr)} ATR and "
            f"target {format_number(self.target_atr)} ATR away (ATR {format_number(atr)}); "
            f"horizon {self.horizon} bars."
        )
        if action == "HOLD":
            reasoning += " HOLD places no order; stop and target are those of a BUY."
        try:
            return Decision(
                action=action,
                confidence=min(max(abs(p - 0.5) * 2.0, 0.0), 1.0),
                entry=price,
                stop_loss=stop,
                take_profit=target,
                horizon=self.horizon,
                reasoning=reasoning,
            )
        except ValidationError as err:
            raise ProviderError(
                f"rules: no valid {action} at last price {price!r} with ATR {atr!r} "
                f"(stop {stop!r}, target {target!r}): "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            ) from None

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        """The decision as JSON text (``Decision.model_dump_json()``); the prompt is unused."""
        start = time.perf_counter()
        text = self.decide(context).model_dump_json()
        latency_ms = (time.perf_counter() - start) * 1000.0
        return Reply(text=text, provider=self.name, model=self.model, latency_ms=latency_ms)
