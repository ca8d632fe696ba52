"""Recording trials in ``ml.trials`` and summarising them for the deflated Sharpe ratio.

A *trial* is one evaluated configuration: a strategy with its hyper-parameters, evaluated
on one series (symbol and timeframe, when given). The same parameters on another series
are another trial.

Scoping. :func:`trials_summary` counts the trials matching every filter given — strategy,
run id, symbol, timeframe — or all trials when none is given. Which scope is right depends
on the selection that was made: the trials among which the assessed configuration was
chosen (normally one strategy family on one series and timeframe, including the assessed
configuration itself). Sharpe ratios of different timeframes are per bar of different
lengths, so a scope spanning timeframes mixes units; scope by timeframe when it matters.

Counting. ``n_trials`` is the number of distinct ``(strategy, symbol, timeframe,
params_hash)`` in scope,
every one counted whether or not its Sharpe was recorded. A configuration evaluated
several times contributes the Sharpe of its latest row (highest ``trial_id``) to
``sharpe_variance``, the sample variance (``ddof=1``) of those per-bar Sharpe ratios; it is
NaN with fewer than two recorded Sharpe ratios.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mlengine.backtest._psr import ValidityError
from mlengine.data.schema import Timeframe, check_symbol

if TYPE_CHECKING:
    from mlengine.data.store import Store

TRIALS_TABLE = "ml.trials"


class TrialsSummary(NamedTuple):
    """What the deflated Sharpe ratio needs from ``ml.trials``."""

    n_trials: int
    sharpe_variance: float


def params_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``params`` (sorted keys, no spaces)."""
    try:
        text = json.dumps(dict(params), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValidityError(f"params are not JSON-serialisable: {err}") from None
    return hashlib.sha256(text.encode()).hexdigest()


def record_trial(
    store: Store,
    *,
    strategy: str,
    params: Mapping[str, Any],
    sharpe: float | None,
    n_obs: int | None,
    symbol: str | None = None,
    timeframe: str | Timeframe | None = None,
    run_id: str | None = None,
    metric: str = "sharpe",
    metric_value: float | None = None,
) -> str:
    """Append one trial to ``ml.trials``; returns its params hash.

    ``sharpe`` is the per-bar (not annualised) Sharpe ratio of the trial's returns, or
    ``None`` when the evaluation produced none. ``metric_value`` defaults to ``sharpe``.
    """
    if not isinstance(strategy, str) or not strategy.strip():
        raise ValidityError(f"strategy must be non-empty text, got {strategy!r}")
    if sharpe is not None and not math.isfinite(sharpe):
        raise ValidityError(f"sharpe must be finite or None, got {sharpe}")
    if n_obs is not None and n_obs < 0:
        raise ValidityError(f"n_obs must be >= 0, got {n_obs}")
    digest = params_hash(params)
    store.insert_records(
        TRIALS_TABLE,
        [
            {
                "run_id": run_id,
                "strategy": strategy,
                "symbol": None if symbol is None else check_symbol(symbol),
                "timeframe": None if timeframe is None else _tf(timeframe),
                "params": dict(params),
                "params_hash": digest,
                "metric": metric,
                "metric_value": sharpe if metric_value is None else metric_value,
                "sharpe": sharpe,
                "n_obs": n_obs,
            }
        ],
    )
    return digest


def trials_summary(
    store: Store,
    *,
    strategy: str | None = None,
    run_id: str | None = None,
    symbol: str | None = None,
    timeframe: str | Timeframe | None = None,
) -> TrialsSummary:
    """``(n_trials, sharpe_variance)`` of the trials matching every filter given."""
    filters = {
        "strategy": strategy,
        "run_id": run_id,
        "symbol": None if symbol is None else check_symbol(symbol),
        "timeframe": None if timeframe is None else _tf(timeframe),
    }
    rows = store.read_table(TRIALS_TABLE, where={k: v for k, v in filters.items() if v is not None})
    latest: dict[tuple[str, ...], tuple[int, float | None]] = {}
    for row in rows.to_dict("records"):
        key = tuple(str(row[c]) for c in ("strategy", "symbol", "timeframe", "params_hash"))
        sharpe = row["sharpe"]
        value = None if sharpe is None or not math.isfinite(float(sharpe)) else float(sharpe)
        trial_id = int(row["trial_id"])
        if key not in latest or trial_id > latest[key][0]:
            latest[key] = (trial_id, value)
    sharpes = np.array([s for _, s in latest.values() if s is not None], dtype=np.float64)
    variance = float(np.var(sharpes, ddof=1)) if sharpes.size >= 2 else math.nan
    return TrialsSummary(n_trials=len(latest), sharpe_variance=variance)


def _tf(value: str | Timeframe) -> str:
    return Timeframe.parse(value).name
