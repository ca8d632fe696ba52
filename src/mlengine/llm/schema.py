"""The contracts of the LLM decision layer: what goes in, what must come back, who answers.

* :class:`DecisionContext` — everything the prompt may say about one decision bar, built only
  from data available at that bar's close (:func:`mlengine.llm.formatter.build_context`).
* :class:`Decision` — the answer's schema (pydantic): ``action`` BUY / SELL / HOLD,
  ``confidence`` in [0, 1], ``entry``, ``stop_loss``, ``take_profit`` (prices), ``horizon``
  (bars) and a length-capped ``reasoning``. :func:`decision_schema` is its JSON schema, sent
  to the providers that constrain their output.
* :class:`Prompt` — system and user text, the schema, the template version and the hash that
  identifies the prompt in the signal log.
* :class:`Provider` — one interface for every source of decisions (the local model, an
  OpenAI-compatible server, Ollama, Anthropic, the deterministic rules): ``complete(prompt)``
  returns a :class:`Reply` (raw text and usage) or raises :class:`ProviderError`.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlengine.data.schema import MLEngineError

__all__ = [
    "MAX_REASONING",
    "Action",
    "Decision",
    "DecisionContext",
    "LLMError",
    "Prompt",
    "Provider",
    "ProviderError",
    "Reply",
    "StrategyView",
    "decision_schema",
]

#: Characters of ``reasoning`` kept; a longer one is rejected, not cut.
MAX_REASONING = 600

Action = Literal["BUY", "SELL", "HOLD"]


class LLMError(MLEngineError, RuntimeError):
    """The decision layer could not produce a valid decision."""


class ProviderError(LLMError):
    """A provider failed to answer (unreachable, timeout, HTTP error, empty reply)."""


def _finite_price(value: float, name: str) -> float:
    if not math.isfinite(value) or value <= 0 or value > 1e12:
        raise ValueError(f"{name} must be a finite price > 0, got {value!r}")
    return value


class Decision(BaseModel):
    """A trading decision for the next bars. Prices are in the quote currency of the bar
    frame; ``horizon`` is in bars of its timeframe."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    action: Action
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    entry: float = Field(allow_inf_nan=False)
    stop_loss: float = Field(allow_inf_nan=False)
    take_profit: float = Field(allow_inf_nan=False)
    horizon: int = Field(ge=1, le=10_000)
    reasoning: str = Field(max_length=MAX_REASONING)

    @field_validator("entry", "stop_loss", "take_profit")
    @classmethod
    def _price(cls, value: float, info: Any) -> float:
        return _finite_price(value, info.field_name)


def decision_schema() -> dict[str, Any]:
    """The JSON schema of :class:`Decision` (all fields required, no others); a fresh copy
    each call, of a schema generated once (generating it took a millisecond per decision)."""
    return copy.deepcopy(_decision_schema())


@functools.cache
def _decision_schema() -> dict[str, Any]:
    schema = Decision.model_json_schema()
    schema["additionalProperties"] = False
    return schema


@dataclass(frozen=True)
class StrategyView:
    """One strategy's output at the decision bar: ``p_up`` and its numeric diagnostics."""

    name: str
    p_up: float
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionContext:
    """What the prompt may say about the decision bar ``ts`` (its close is ``last_price``).

    ``recent`` holds the last bars (OHLCV, oldest first) up to ``ts``; ``atr`` is the
    average true range at ``ts``; ``strategies`` their outputs at ``ts``; ``ensemble_p`` the
    calibrated ensemble probability (None without an ensemble) and ``gate_weights`` its
    weights per strategy.
    """

    symbol: str
    timeframe: str
    ts: pd.Timestamp
    last_price: float
    atr: float
    recent: pd.DataFrame
    strategies: tuple[StrategyView, ...]
    ensemble_p: float | None = None
    gate_weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """The text sent to a provider. ``hash``: SHA-256 of version, system, user and schema."""

    system: str
    user: str
    schema: dict[str, Any]
    version: str
    hash: str


@dataclass(frozen=True)
class Reply:
    """A provider's raw answer and what it cost."""

    text: str
    provider: str
    model: str
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class Provider(Protocol):
    """A source of decisions. ``complete`` returns the raw reply or raises
    :class:`ProviderError`; it never returns a parsed decision (the parser and the risk
    checks judge every provider alike)."""

    name: str
    model: str

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply: ...
