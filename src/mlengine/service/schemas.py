"""The service's request and response bodies (pydantic), which are also its OpenAPI schema.

Input is checked here, before any model runs: a bar has finite prices above zero, a
non-negative volume and a high at or above its open, close and low (and a low at or below
its open and close); the bars of a request are in strictly increasing time. A failed check
is a 422 naming the field and bar (``bars: bar 3: high ... is below low ...``), never a stack
trace.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from mlengine.data.schema import Timeframe, TimeframeError

__all__ = [
    "MAX_BARS",
    "SYMBOL_PATTERN",
    "Asset",
    "AssetsResponse",
    "BarIn",
    "DecisionOut",
    "ErrorResponse",
    "HealthResponse",
    "PredictRequest",
    "PredictResponse",
    "RunResponse",
    "SignalResponse",
    "StepOut",
    "StrategyPrediction",
]

#: A symbol the service accepts: it names a model directory, so no path characters.
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: The most bars one request may carry.
MAX_BARS = 20_000

_PRICE = Field(gt=0.0, allow_inf_nan=False)


class ErrorResponse(BaseModel):
    """Every error: a short ``error`` kind and a ``detail`` that says what and where."""

    error: str = Field(examples=["invalid input"])
    detail: str = Field(examples=["bars: bar 3: high 1.05 is below low 1.06"])


class BarIn(BaseModel):
    """One bar: open time (ISO 8601; without a zone it is UTC) and OHLCV. The checks across
    its fields (high >= low, ...) run over all the bars of a request at once
    (:meth:`PredictRequest._bars`): per-bar Python validators would cost more than the
    prediction of a thousand-bar request."""

    model_config = ConfigDict(extra="forbid")

    ts: datetime
    open: float = _PRICE
    high: float = _PRICE
    low: float = _PRICE
    close: float = _PRICE
    volume: float = Field(ge=0.0, allow_inf_nan=False)


class PredictRequest(BaseModel):
    """The newest bars of one series, oldest first, ending with the bar to decide on — one
    new bar is enough: the service adds the history the live ensemble needs from the bars
    earlier requests sent and from the store (:mod:`mlengine.service.history`); given bars
    replace those it has at the same times. ``providers``: the decision chain
    (comma-separated, e.g. ``"local,rules"``)."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["EURUSD"])
    timeframe: str = Field(min_length=1, max_length=16, examples=["1h"])
    bars: list[BarIn] = Field(min_length=1, max_length=MAX_BARS)
    providers: str = Field(default="rules", min_length=1, max_length=200, examples=["rules"])

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        try:
            return Timeframe.parse(value).name
        except TimeframeError as err:
            raise ValueError(str(err)) from None

    @field_validator("providers")
    @classmethod
    def _providers(cls, value: str) -> str:
        from mlengine.llm.decision import parse_chain
        from mlengine.llm.schema import LLMError

        try:
            return ",".join(parse_chain(value))
        except LLMError as err:
            raise ValueError(str(err)) from None

    @field_validator("bars")
    @classmethod
    def _bars(cls, value: list[BarIn]) -> list[BarIn]:
        """Times in UTC and strictly increasing; each high at or above its low, open and
        close, each low at or below its open and close. Errors name the first bad bar."""
        for bar in value:
            bar.ts = bar.ts.replace(tzinfo=UTC) if bar.ts.tzinfo is None else bar.ts
        stamps = np.fromiter((b.ts.timestamp() for b in value), np.float64, len(value))
        cols = {
            c: np.fromiter((getattr(b, c) for b in value), np.float64, len(value))
            for c in ("open", "high", "low", "close")
        }
        back = np.flatnonzero(np.diff(stamps) <= 0)
        if back.size:
            i = int(back[0]) + 1
            raise ValueError(
                f"bar times must be strictly increasing: bar {i} ({value[i].ts.isoformat()}) "
                f"is not after bar {i - 1} ({value[i - 1].ts.isoformat()})"
            )
        o, h, lo, c = cols["open"], cols["high"], cols["low"], cols["close"]
        checks = (
            (h < lo, "high {h} is below low {lo}"),
            (h < np.maximum(o, c), "high {h} is below open {o} or close {c}"),
            (lo > np.minimum(o, c), "low {lo} is above open {o} or close {c}"),
        )
        for bad, text in checks:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"bar {i}: " + text.format(h=h[i], lo=lo[i], o=o[i], c=c[i]))
        return value


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])
    version: str
    loaded: int = Field(description="live ensembles loaded in this process")


class Asset(BaseModel):
    symbol: str
    timeframe: str
    rows: int
    first_ts: AwareDatetime | None
    last_ts: AwareDatetime | None
    live_ensemble: bool = Field(description="a saved live ensemble exists for the series")


class AssetsResponse(BaseModel):
    assets: list[Asset]


class StrategyPrediction(BaseModel):
    p_up: float
    diagnostics: dict[str, float]


class StepOut(BaseModel):
    provider: str
    outcome: str
    reason: str
    attempts: int


class DecisionOut(BaseModel):
    """The decision (action ``NONE`` and no prices when every provider failed)."""

    action: str
    valid: bool
    provider: str
    confidence: float | None = None
    entry: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    horizon: int | None = None
    reasoning: str | None = None
    fallback_used: bool
    chain: list[StepOut]
    validation_errors: list[str]


class PredictResponse(BaseModel):
    symbol: str
    timeframe: str
    ts: AwareDatetime = Field(description="open time of the bar predicted (the last one given)")
    strategies: dict[str, StrategyPrediction]
    weights: dict[str, float] = Field(description="the gate's weight of each strategy")
    p_raw: float = Field(description="the gate's mixture before calibration")
    p_up: float = Field(description="the calibrated ensemble probability that price rises")
    decision: DecisionOut
    history_added: int = Field(
        description="bars of history the service added before the given ones (sent by earlier "
        "requests or read from the store)"
    )
    logged: bool = Field(
        description="the decision and predictions are written to the store (after the response)"
    )


class SignalResponse(BaseModel):
    """The latest logged decision of a series and the ensemble probability it was made with
    (``None`` when no stored prediction matches its bar)."""

    symbol: str
    timeframe: str
    ts: AwareDatetime
    action: str
    valid: bool
    provider: str
    confidence: float | None
    entry: float | None
    stop_loss: float | None
    take_profit: float | None
    horizon: int | None
    reasoning: str | None
    fallback_used: bool
    created_at: AwareDatetime | None
    ensemble_p_up: float | None
    ensemble_run: str | None = Field(description="run id of the stored ensemble prediction")


class RunResponse(BaseModel):
    run_id: str
    name: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    verdict: dict[str, Any]


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively:
    JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
