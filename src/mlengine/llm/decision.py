"""The decision flow: prompt → providers in turn → strict parse → risk checks → log.

:class:`DecisionMaker` asks its providers in order. A provider that fails to answer
(:class:`mlengine.llm.schema.ProviderError`) is retried ``retries`` times with exponential
backoff; a reply that does not parse (:class:`mlengine.llm.parser.ReplyError`) or fails the
value checks (:func:`mlengine.llm.risk.check_decision`) is not retried — the next provider is
asked. Each provider has a :class:`CircuitBreaker`: after ``breaker_failures`` consecutive
failures (no answer or no parseable answer) it is skipped for ``breaker_cooldown`` seconds,
then tried once again. The chain usually ends with the deterministic rules provider, so a
valid decision comes back even with no model and no network; if every provider fails the
record says so and carries no decision — a bad reply never becomes an order.

Every step is kept in :attr:`DecisionRecord.chain` (provider, outcome, reason), and
:meth:`DecisionRecord.to_log` gives the row of ``ml.llm_signals``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlengine.llm.parser import ReplyError, parse_reply
from mlengine.llm.prompts import build_prompt
from mlengine.llm.risk import RiskLimits, check_decision
from mlengine.llm.schema import (
    Decision,
    DecisionContext,
    LLMError,
    Prompt,
    Provider,
    ProviderError,
    Reply,
)

__all__ = [
    "DEFAULT_CHAIN",
    "PROVIDERS",
    "CircuitBreaker",
    "DecisionMaker",
    "DecisionRecord",
    "Step",
    "make_chain",
    "make_provider",
    "parse_chain",
]

Outcome = Literal["ok", "unavailable", "unparseable", "rejected", "circuit_open"]


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; open → half-open after
    ``cooldown`` seconds (one call allowed: success closes, failure re-opens)."""

    def __init__(
        self, failures: int = 3, cooldown: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1 or cooldown < 0:
            raise LLMError(
                f"circuit breaker: failures >= 1 and cooldown >= 0, got {failures}, {cooldown}"
            )
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._count = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self._count = 0
        self._opened_at = None

    def failure(self) -> None:
        self._count += 1
        if self.state == "half_open" or self._count >= self.failures:
            self._opened_at = self._clock()


@dataclass(frozen=True)
class Step:
    """One provider's turn: ``outcome`` and why (empty when ok)."""

    provider: str
    outcome: Outcome
    reason: str = ""
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "outcome": self.outcome,
            "reason": self.reason,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class DecisionRecord:
    """The result of one decision: the accepted :class:`Decision` (None when every provider
    failed), who gave it, the prompt, the accepted reply, the validation errors met on the
    way, the chain of steps and the last reply received (the accepted one, or the last
    rejected one, logged for diagnosis)."""

    context: DecisionContext
    prompt: Prompt
    decision: Decision | None
    reply: Reply | None
    chain: tuple[Step, ...]
    validation_errors: tuple[str, ...] = field(default_factory=tuple)
    latency_ms: float = 0.0
    last_reply: Reply | None = None

    @property
    def valid(self) -> bool:
        return self.decision is not None

    @property
    def provider(self) -> str:
        return self.reply.provider if self.reply is not None else "none"

    @property
    def fallback_used(self) -> bool:
        return self.valid and len(self.chain) > 1

    def to_log(self) -> dict[str, Any]:
        """The row of ``ml.llm_signals`` (see :mod:`mlengine.llm.signal_log`)."""
        d = self.decision
        reply = self.reply or self.last_reply
        last = self.chain[-1] if self.chain else None
        return {
            "symbol": self.context.symbol,
            "timeframe": self.context.timeframe,
            "ts": self.context.ts,
            "action": d.action if d is not None else "NONE",
            "confidence": d.confidence if d is not None else None,
            "entry": d.entry if d is not None else None,
            "stop_loss": d.stop_loss if d is not None else None,
            "take_profit": d.take_profit if d is not None else None,
            "horizon": d.horizon if d is not None else None,
            "reasoning": d.reasoning if d is not None else None,
            "provider": self.provider,
            "model": reply.model if reply is not None else None,
            "prompt_hash": self.prompt.hash,
            "prompt_version": self.prompt.version,
            "raw_reply": reply.text if reply is not None else None,
            "latency_ms": self.latency_ms,
            "fallback_used": self.fallback_used,
            "valid": self.valid,
            "error": None if self.valid or last is None else f"{last.provider}: {last.reason}",
            "validation_errors": list(self.validation_errors),
            "fallback_chain": [s.to_dict() for s in self.chain],
            "prompt_tokens": reply.prompt_tokens if reply is not None else None,
            "completion_tokens": reply.completion_tokens if reply is not None else None,
        }


class DecisionMaker:
    """Asks ``providers`` in order for a decision on a context (see the module docstring)."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        limits: RiskLimits | None = None,
        retries: int = 1,
        backoff: float = 0.5,
        breaker_failures: int = 3,
        breaker_cooldown: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise LLMError("a decision needs at least one provider")
        for p in providers:
            if not isinstance(p, Provider):
                raise LLMError(f"{p!r} is not a provider (name, model, complete)")
        if retries < 0 or backoff < 0:
            raise LLMError(f"retries and backoff must be >= 0, got {retries}, {backoff}")
        self.providers = tuple(providers)
        self.limits = limits or RiskLimits()
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._clock = clock
        self.breakers = {
            p.name: CircuitBreaker(breaker_failures, breaker_cooldown, clock) for p in providers
        }

    def _ask(
        self, provider: Provider, prompt: Prompt, context: DecisionContext
    ) -> tuple[Reply | None, str, int]:
        """The provider's reply (None when it did not answer), the last error, attempts."""
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return provider.complete(prompt, context), "", attempt + 1
            except ProviderError as err:
                error = str(err)
        return None, error, self.retries + 1

    def decide(self, context: DecisionContext) -> DecisionRecord:
        start = self._clock()
        prompt = build_prompt(context)
        steps: list[Step] = []
        problems: list[str] = []
        last: Reply | None = None
        for provider in self.providers:
            breaker = self.breakers[provider.name]
            if not breaker.allow():
                steps.append(Step(provider.name, "circuit_open", "skipped after repeated failures"))
                continue
            reply, error, attempts = self._ask(provider, prompt, context)
            if reply is None:
                breaker.failure()
                steps.append(Step(provider.name, "unavailable", error, attempts))
                continue
            last = reply
            try:
                decision = parse_reply(reply.text)
            except ReplyError as err:
                breaker.failure()
                problems.append(f"{provider.name}: {err}")
                steps.append(Step(provider.name, "unparseable", str(err), attempts))
                continue
            breaker.success()
            failed = check_decision(decision, context, self.limits)
            if failed:
                problems.extend(f"{provider.name}: {msg}" for msg in failed)
                steps.append(Step(provider.name, "rejected", "; ".join(failed), attempts))
                continue
            steps.append(Step(provider.name, "ok", "", attempts))
            return DecisionRecord(
                context, prompt, decision, reply, tuple(steps), tuple(problems),
                (self._clock() - start) * 1000.0, reply,
            )  # fmt: skip
        return DecisionRecord(
            context, prompt, None, None, tuple(steps), tuple(problems),
            (self._clock() - start) * 1000.0, last,
        )  # fmt: skip


#: The chain of ``mlengine signal`` unless told otherwise: the embedded model, then the rules.
DEFAULT_CHAIN = "local,rules"
PROVIDERS = ("local", "openai", "ollama", "anthropic", "rules")


def make_provider(name: str) -> Provider:
    """The provider ``name`` configured from the environment: ``MLENGINE_OPENAI_URL`` /
    ``MLENGINE_OPENAI_MODEL`` / ``OPENAI_API_KEY``, ``MLENGINE_OLLAMA_URL`` /
    ``MLENGINE_OLLAMA_MODEL``, ``ANTHROPIC_API_KEY`` / ``MLENGINE_ANTHROPIC_MODEL``."""
    import os

    from mlengine.llm import providers
    from mlengine.llm.rules import RulesProvider

    env = os.environ.get
    if name == "rules":
        return RulesProvider()
    if name == "local":
        return providers.LocalProvider()
    if name == "openai":
        url = env("MLENGINE_OPENAI_URL", "http://127.0.0.1:8080/v1")
        return providers.OpenAIProvider(
            url, env("MLENGINE_OPENAI_MODEL", "default"), api_key=env("OPENAI_API_KEY")
        )
    if name == "ollama":
        return providers.OllamaProvider(
            env("MLENGINE_OLLAMA_URL", "http://127.0.0.1:11434"),
            model=env("MLENGINE_OLLAMA_MODEL", "llama3.2"),
        )
    if name == "anthropic":
        return providers.AnthropicProvider(env("MLENGINE_ANTHROPIC_MODEL", "claude-sonnet-4-5"))
    raise LLMError(f"unknown provider {name!r}: use one of {', '.join(PROVIDERS)}")


def parse_chain(spec: str) -> list[str]:
    """The provider names of a comma-separated ``spec``, checked."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise LLMError(f"no provider in {spec!r}: e.g. {DEFAULT_CHAIN!r}")
    if len(set(names)) != len(names):
        raise LLMError(f"a provider appears twice in {spec!r}")
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise LLMError(f"unknown provider {unknown[0]!r}: use one of {', '.join(PROVIDERS)}")
    return names


def make_chain(spec: str = DEFAULT_CHAIN) -> list[Provider]:
    """Providers from a comma-separated ``spec`` such as ``"ollama,anthropic,rules"``."""
    return [make_provider(n) for n in parse_chain(spec)]
