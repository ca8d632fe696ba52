"""The LLM decision layer: the calibrated signals and the strategies' diagnostics go to a
language model (or the deterministic rules) for a trading decision, which is parsed
strictly, checked against risk rules and logged in ``ml.llm_signals``.

:mod:`.schema` (contracts), :mod:`.formatter` and :mod:`.prompts` (what the model is told),
:mod:`.providers` and :mod:`.rules` (who answers), :mod:`.parser` and :mod:`.risk` (what is
accepted), :mod:`.decision` (the flow), :mod:`.signal_log` (the record).
"""

from __future__ import annotations

from mlengine.llm.schema import (
    Decision,
    DecisionContext,
    LLMError,
    Prompt,
    Provider,
    ProviderError,
    Reply,
    decision_schema,
)

__all__ = [
    "Decision",
    "DecisionContext",
    "LLMError",
    "Prompt",
    "Provider",
    "ProviderError",
    "Reply",
    "decision_schema",
]
