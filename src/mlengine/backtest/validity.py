"""The effectiveness validator: is a backtest's edge real, and does it meet the targets?

:func:`assess` returns a :class:`Verdict`: every criterion with its value, threshold and
pass/fail, and an effectiveness score, the weighted share of the evaluated criteria met.

Targets (from the :class:`MetricsLike` object, e.g. :class:`mlengine.backtest.metrics.Metrics`):
direction accuracy ≥ 60 %, annualised Sharpe ≥ 1.5, max drawdown ≤ 15 %.

Validity tests (on the per-bar returns):

* ``deflated_sharpe`` — DSR ≥ 0.95, with the number of trials and the variance of their
  Sharpe ratios from ``ml.trials`` (:func:`trials_summary`); see :mod:`._psr`.
* ``pbo`` — probability of backtest overfitting ≤ 0.5 by CSCV, only when a trials matrix
  (per-bar returns of every configuration tried) is given; see :mod:`._pbo`.
* ``bootstrap_ci`` — lower bound of the block-bootstrap CI of the annualised Sharpe > 0;
  see :mod:`._bootstrap`.
* ``random_baseline`` — timing beats random signals with the same exposure, p < 0.05;
  see :mod:`._baselines`.
* ``buy_and_hold`` — annualised Sharpe above the asset's over the same bars.

Score = weighted share of the evaluated criteria met; "effective" when the score reaches
``effective_score`` (0.8) and every ``required`` criterion (none by default) passed. A
criterion that cannot be evaluated (no trials matrix) is reported and left out of the
score. Returns with no spread (a strategy that never traded) fail every test on returns.
Thresholds, weights, bootstrap and baseline settings live in :class:`ValidityConfig`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from mlengine.backtest._baselines import (
    BuyAndHold,
    RandomBaseline,
    aligned,
    buy_and_hold,
    random_exposure_baseline,
)
from mlengine.backtest._bootstrap import SharpeCI, block_length, sharpe_confidence_interval
from mlengine.backtest._pbo import PBOResult, probability_of_backtest_overfitting
from mlengine.backtest._psr import (
    DeflatedSharpe,
    SharpeStats,
    ValidityError,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    psr_from_moments,
    sharpe_ratio,
    sharpe_stats,
)
from mlengine.backtest._trials import TrialsSummary, params_hash, record_trial, trials_summary
from mlengine.backtest._verdict import (
    CRITERIA,
    Criterion,
    ValidityConfig,
    Verdict,
    check_threshold,
    verdict_details,
)

__all__ = [
    "CRITERIA",
    "BuyAndHold",
    "Criterion",
    "DeflatedSharpe",
    "MetricsLike",
    "PBOResult",
    "RandomBaseline",
    "SharpeCI",
    "SharpeStats",
    "TrialsSummary",
    "ValidityConfig",
    "ValidityError",
    "Verdict",
    "assess",
    "block_length",
    "buy_and_hold",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "params_hash",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "psr_from_moments",
    "random_exposure_baseline",
    "record_trial",
    "sharpe_confidence_interval",
    "sharpe_ratio",
    "sharpe_stats",
    "trials_summary",
]


class MetricsLike(Protocol):
    """What :func:`assess` reads from the metrics (fields of the backtest ``Metrics``)."""

    @property
    def sharpe(self) -> float: ...  # annualised
    @property
    def max_drawdown(self) -> float: ...  # positive fraction
    @property
    def direction_accuracy(self) -> float: ...  # fraction, NaN when no bar had a position


def assess(
    returns: object,
    metrics: MetricsLike,
    *,
    bar_returns: object,
    position: object,
    n_trials: int,
    trial_sharpe_variance: float | None = None,
    trials_matrix: object = None,
    periods_per_year: float | None = None,
    config: ValidityConfig | None = None,
) -> Verdict:
    """Judge one backtest. Inputs share one bar index (pandas) or length (arrays).

    ``returns``: the strategy's net per-bar returns. ``bar_returns``: the asset's per-bar
    returns. ``position``: exposure held over each bar (the signal decided at the previous
    close). ``n_trials`` / ``trial_sharpe_variance``: from :func:`trials_summary`, the
    assessed configuration included. ``trials_matrix``: per-bar returns of every
    configuration tried (T × N), for PBO. ``periods_per_year`` annualises the Sharpe ratios
    (default: ``metrics.periods_per_year`` when present, else 1 = per bar). Random draws
    (bootstrap, random signals) use ``config.seed``.
    """
    cfg = config or ValidityConfig()
    ppy = periods_per_year
    if ppy is None:
        ppy = float(getattr(metrics, "periods_per_year", None) or 1.0)
    if not (math.isfinite(ppy) and ppy > 0):
        raise ValidityError(f"periods_per_year must be positive, got {ppy}")
    ret, asset = aligned(returns, bar_returns, ("returns", "bar_returns"))
    aligned(bar_returns, position, ("bar_returns", "position"))
    var = math.nan if trial_sharpe_variance is None else float(trial_sharpe_variance)
    expected_max_sharpe(n_trials, var)  # rejects bad trial inputs before any work
    _check_metrics(metrics)

    w = cfg.weights

    def row(name: str, value: float, op: Any, thr: float, note: str = "") -> Criterion:
        kind: Any = "target" if name in CRITERIA[:3] else "validity"
        return Criterion(
            name, kind, float(value), op, thr, check_threshold(value, op, thr), w[name], note
        )

    acc = float(metrics.direction_accuracy)
    rows = [
        row(
            "direction_accuracy",
            acc,
            ">=",
            cfg.min_direction_accuracy,
            "" if math.isfinite(acc) else "no bar with a position",
        ),
        row("sharpe", float(metrics.sharpe), ">=", cfg.min_sharpe),
        row("max_drawdown", float(metrics.max_drawdown), "<=", cfg.max_drawdown),
    ]

    dsr = ci = bh = None
    if np.ptp(ret) > 0.0:
        dsr = deflated_sharpe_ratio(ret, n_trials=n_trials, trial_sharpe_variance=var)
        ci = sharpe_confidence_interval(
            ret,
            periods_per_year=ppy,
            level=cfg.ci_level,
            reps=cfg.bootstrap_reps,
            method=cfg.bootstrap_method,
            kind=cfg.bootstrap_kind,
            block=cfg.block_length,
            seed=cfg.seed,
        )
        bh = buy_and_hold(ret, asset, periods_per_year=ppy)
        rows.append(
            row("deflated_sharpe", dsr.dsr, ">=", cfg.min_dsr, f"best of {n_trials} trial(s)")
        )
    else:
        rows.append(row("deflated_sharpe", math.nan, ">=", cfg.min_dsr, _FLAT))

    pbo = None
    if trials_matrix is not None:
        pbo = probability_of_backtest_overfitting(trials_matrix, cfg.pbo_splits)
        rows.append(
            row(
                "pbo",
                pbo.pbo,
                "<=",
                cfg.max_pbo,
                f"{pbo.n_configs} configurations, {pbo.n_combinations} combinations",
            )
        )
    else:
        rows.append(
            replace(row("pbo", math.nan, "<=", cfg.max_pbo, "no trials matrix given"), passed=None)
        )

    rows.append(
        row(
            "bootstrap_ci",
            ci.lower,
            ">",
            cfg.min_ci_lower,
            f"{ci.level:.0%} {ci.kind} bootstrap, block {ci.block_length}",
        )
        if ci
        else row("bootstrap_ci", math.nan, ">", cfg.min_ci_lower, _FLAT)
    )
    base = random_exposure_baseline(
        asset,
        position,
        n_samples=cfg.baseline_samples,
        seed=cfg.seed,
        method=cfg.baseline_method,
        periods_per_year=ppy,
    )
    rows.append(
        row(
            "random_baseline",
            base.p_value,
            "<",
            cfg.baseline_alpha,
            f"{cfg.baseline_samples} random signals ({cfg.baseline_method}), "
            f"exposure {base.exposure:.0%}",
        )
    )
    rows.append(
        row("buy_and_hold", bh.excess_sharpe, ">", 0.0, f"asset Sharpe {bh.asset_sharpe:.3g}")
        if bh
        else row("buy_and_hold", math.nan, ">", 0.0, _FLAT)
    )

    scored = [c for c in rows if c.passed is not None]
    total = sum(c.weight for c in scored)
    if total <= 0:
        raise ValidityError("every evaluated criterion has weight 0: nothing to score")
    score = sum(c.weight for c in scored if c.passed) / total
    required_ok = all(c.passed for c in rows if c.name in cfg.required)
    return Verdict(
        criteria=tuple(rows),
        score=score,
        effective=score >= cfg.effective_score and required_ok,
        min_score=cfg.effective_score,
        periods_per_year=ppy,
        dsr=dsr,
        ci=ci,
        baseline=base,
        buy_hold=bh,
        pbo=pbo,
        details=verdict_details(ret.size, cfg.seed, dsr, ci, bh, base, pbo),
    )


_FLAT = "returns have no spread (no trades?)"


def _check_metrics(metrics: MetricsLike) -> None:
    for name in ("sharpe", "max_drawdown", "direction_accuracy"):
        value = getattr(metrics, name, None)
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValidityError(f"metrics.{name} must be a number, got {value!r}")
    if metrics.max_drawdown < 0:
        raise ValidityError(
            f"metrics.max_drawdown must be a positive fraction, got {metrics.max_drawdown}"
        )
