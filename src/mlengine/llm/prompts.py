"""Versioned prompt templates and the prompt hash that identifies a prompt in the signal log.

A template version is a pair (system, user). The system text gives the role, the trading
decision to make, how the prices must relate to the ATR, and the JSON schema of the answer
(:func:`mlengine.llm.schema.decision_schema`, keys sorted); it does not depend on the
decision bar. The user text is the rendered decision context
(:func:`mlengine.llm.formatter.render_context`) and nothing else: prompts carry market
data only, never settings, file names or keys.

A version is never edited once used: a changed wording is a new version, so that every
logged ``prompt_hash`` and ``prompt_version`` keeps meaning what it meant. The hash is the
SHA-256 of the version, the system text, the user text and the schema JSON.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mlengine.llm.formatter import render_context
from mlengine.llm.schema import MAX_REASONING, DecisionContext, LLMError, Prompt, decision_schema

__all__ = ["PROMPT_VERSION", "TEMPLATES", "build_prompt", "prompt_hash", "schema_json"]

#: The template version used unless another is asked for.
PROMPT_VERSION = "decision-v1"

_SYSTEM_V1 = """\
You are a careful trading assistant. You are given market data for one instrument at the \
close of a decision bar: the last price, the average true range (ATR), the recent bars, the \
probabilities and diagnostics of several trading strategies, and the calibrated probability \
of their ensemble.

Decide BUY, SELL or HOLD for the next bars, using only the data given.
- entry: the price to enter at, the last price or very close to it.
- BUY: stop_loss below entry and take_profit above it. SELL: stop_loss above entry and \
take_profit below it. HOLD: entry is the last price, stop_loss below it and take_profit \
above it.
- Prices are in the same units as the bars. Put stop_loss about 1 to 3 ATR away from entry \
and take_profit at least as far from entry as stop_loss, within 10 ATR.
- confidence: from 0 to 1, consistent with the probabilities given; a BUY against a clearly \
bearish ensemble, or a SELL against a clearly bullish one, is a mistake.
- horizon: the number of bars to hold the position, an integer of at least 1.
- reasoning: one or two short sentences (at most {max_reasoning} characters) on the data \
given.

Answer with one JSON object that matches this JSON schema, and nothing else: no other \
text, no code fences.
{schema}"""

_USER_V1 = """\
Market data at the decision bar:
{context}

Answer with the JSON decision only."""

#: Every template version: name -> (system template, user template).
TEMPLATES: dict[str, tuple[str, str]] = {"decision-v1": (_SYSTEM_V1, _USER_V1)}


def schema_json(schema: dict[str, Any] | None = None) -> str:
    """The answer's JSON schema as canonical JSON (keys sorted)."""
    return json.dumps(decision_schema() if schema is None else schema, sort_keys=True)


def prompt_hash(version: str, system: str, user: str, schema: dict[str, Any]) -> str:
    """SHA-256 (hex) of version, system, user and the schema's canonical JSON.

    The four parts are hashed as one JSON array, so no two different prompts share an
    encoding.
    """
    payload = json.dumps([version, system, user, schema_json(schema)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def build_prompt(context: DecisionContext, version: str = PROMPT_VERSION) -> Prompt:
    """The :class:`Prompt` of ``context`` with the template ``version``.

    Raises :class:`LLMError` naming the known versions when ``version`` is unknown.
    """
    try:
        system_template, user_template = TEMPLATES[version]
    except (KeyError, TypeError):
        raise LLMError(f"unknown prompt version {version!r}; known: {sorted(TEMPLATES)}") from None
    schema = decision_schema()
    system = system_template.format(schema=schema_json(schema), max_reasoning=MAX_REASONING)
    user = user_template.format(context=render_context(context))
    return Prompt(
        system=system,
        user=user,
        schema=schema,
        version=version,
        hash=prompt_hash(version, system, user, schema),
    )
