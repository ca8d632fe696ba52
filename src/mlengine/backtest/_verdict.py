"""The verdict of the effectiveness validator: its configuration, checklist and score.

See :mod:`mlengine.backtest.validity` for what each criterion tests.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.markup import escape
from rich.table import Table

from mlengine.backtest._baselines import BuyAndHold, RandomBaseline, ShuffleMethod
from mlengine.backtest._bootstrap import BootstrapKind, CIMethod, SharpeCI
from mlengine.backtest._pbo import PBOResult
from mlengine.backtest._psr import DeflatedSharpe

CRITERIA: tuple[str, ...] = (
    "direction_accuracy",
    "sharpe",
    "max_drawdown",
    "deflated_sharpe",
    "pbo",
    "bootstrap_ci",
    "random_baseline",
    "buy_and_hold",
)
_LABELS = {
    "direction_accuracy": "Direction accuracy",
    "sharpe": "Sharpe ratio (annualised)",
    "max_drawdown": "Max drawdown",
    "deflated_sharpe": "Deflated Sharpe ratio",
    "pbo": "Prob. of backtest overfitting",
    "bootstrap_ci": "Sharpe CI lower bound",
    "random_baseline": "p-value vs random exposure",
    "buy_and_hold": "Sharpe minus buy-and-hold",
}
_PERCENT = {"direction_accuracy", "max_drawdown"}


class ValidityConfig(BaseModel):
    """Thresholds, weights and settings of :func:`assess`; defaults are the project's.

    Sharpe thresholds (``min_sharpe``, ``min_ci_lower``) are annualised. ``weights`` may
    name any subset of :data:`CRITERIA` (the others weigh 1). "Effective" means
    ``score >= effective_score`` and every criterion in ``required`` passed. ``seed``
    drives the bootstrap and the random signals.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_direction_accuracy: float = Field(default=0.60, ge=0.0, le=1.0)
    min_sharpe: float = 1.5
    max_drawdown: float = Field(default=0.15, gt=0.0, le=1.0)
    min_dsr: float = Field(default=0.95, gt=0.0, lt=1.0)
    max_pbo: float = Field(default=0.5, ge=0.0, le=1.0)
    pbo_splits: int = Field(default=16, ge=2, le=20)
    min_ci_lower: float = 0.0
    ci_level: float = Field(default=0.95, gt=0.0, lt=1.0)
    bootstrap_reps: int = Field(default=1000, ge=10)
    bootstrap_method: CIMethod = "percentile"
    bootstrap_kind: BootstrapKind = "stationary"
    block_length: int | None = Field(default=None, ge=1)
    baseline_samples: int = Field(default=1000, ge=1)
    baseline_alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    baseline_method: ShuffleMethod = "runs"
    seed: int = 0
    weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(CRITERIA, 1.0))
    effective_score: float = Field(default=0.8, gt=0.0, le=1.0)
    required: tuple[str, ...] = ()
    """Criteria that must pass for "effective", whatever the score."""

    @field_validator("pbo_splits")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"pbo_splits must be even, got {value}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for key, weight in value.items():
            if key not in CRITERIA:
                raise ValueError(f"unknown criterion {key!r}; known: {', '.join(CRITERIA)}")
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"weight of {key!r} must be finite and >= 0, got {weight}")
        merged = {**dict.fromkeys(CRITERIA, 1.0), **value}
        if not any(merged.values()):
            raise ValueError("at least one criterion needs a positive weight")
        return merged

    @field_validator("required")
    @classmethod
    def _required(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            if key not in CRITERIA:
                raise ValueError(f"unknown criterion {key!r}; known: {', '.join(CRITERIA)}")
        return value


@dataclass(frozen=True)
class Criterion:
    """One line of the checklist. ``passed`` is ``None`` when it could not be evaluated."""

    name: str
    kind: Literal["target", "validity"]
    value: float
    op: Literal[">=", "<=", ">", "<"]
    threshold: float
    passed: bool | None
    weight: float
    note: str = ""

    @property
    def label(self) -> str:
        return _LABELS[self.name]

    def reason(self) -> str:
        """One line such as ``FAIL Deflated Sharpe ratio: 0.62 (needs >= 0.95); ...``."""
        status = {True: "PASS", False: "FAIL", None: "N/A "}[self.passed]
        text = f"{status} {self.label}: {_fmt(self.name, self.value)} (needs {self.op} "
        text += f"{_fmt(self.name, self.threshold)})"
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True)
class Verdict:
    """Criteria, score and the underlying test results of one assessment.

    ``score`` is the weighted share of the evaluated criteria that passed; ``details``
    holds the tests' numbers (Sharpe ratios per bar where named so, else annualised).
    """

    criteria: tuple[Criterion, ...]
    score: float
    effective: bool
    min_score: float
    periods_per_year: float
    dsr: DeflatedSharpe | None = None
    ci: SharpeCI | None = None
    baseline: RandomBaseline | None = None
    buy_hold: BuyAndHold | None = None
    pbo: PBOResult | None = None
    details: dict[str, float] = field(default_factory=dict)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(c.reason() for c in self.criteria)

    def criterion(self, name: str) -> Criterion:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(f"no criterion {name!r}; known: {', '.join(CRITERIA)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (NaN becomes ``None``)."""
        return {
            "effective": self.effective,
            "score": _num(self.score),
            "min_score": self.min_score,
            "periods_per_year": self.periods_per_year,
            "criteria": [
                {
                    "name": c.name,
                    "label": c.label,
                    "kind": c.kind,
                    "value": _num(c.value),
                    "op": c.op,
                    "threshold": _num(c.threshold),
                    "passed": c.passed,
                    "weight": c.weight,
                    "note": c.note,
                }
                for c in self.criteria
            ],
            "details": {k: _num(v) for k, v in self.details.items()},
        }

    def to_rich(self) -> Table:
        """The checklist as a rich table (title: verdict and score)."""
        word = "EFFECTIVE" if self.effective else "NOT EFFECTIVE"
        table = Table(
            title=f"Validity verdict: {word} (score {self.score:.0%}, needs {self.min_score:.0%})"
        )
        for col in ("Criterion", "Value", "Threshold", "Result", "Weight", "Note"):
            table.add_column(col, justify="right" if col in ("Value", "Weight") else "left")
        style = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[dim]n/a[/dim]"}
        for c in self.criteria:
            table.add_row(
                c.label,
                _fmt(c.name, c.value),
                f"{c.op} {_fmt(c.name, c.threshold)}",
                style[c.passed],
                f"{c.weight:g}",
                escape(c.note),
            )
        return table


def _num(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(name: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.1%}" if name in _PERCENT else f"{value:.4g}"


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def check_threshold(value: float, op: str, threshold: float) -> bool:
    """``value op threshold``; a NaN value (not measurable) never passes."""
    return math.isfinite(value) and bool(_OPS[op](value, threshold))


def verdict_details(
    n_obs: int,
    seed: int,
    dsr: DeflatedSharpe | None,
    ci: SharpeCI | None,
    bh: BuyAndHold | None,
    base: RandomBaseline,
    pbo: PBOResult | None,
) -> dict[str, float]:
    """The numbers behind the criteria, flat, for reports and ``Verdict.to_dict``."""
    out: dict[str, float] = {"n_obs": float(n_obs), "seed": float(seed)}
    if dsr:
        out |= {
            "sharpe_per_bar": dsr.stats.sharpe,
            "psr": dsr.psr,
            "dsr": dsr.dsr,
            "expected_max_sharpe_per_bar": dsr.expected_max,
            "n_trials": float(dsr.n_trials),
            "trial_sharpe_variance": dsr.trial_sharpe_variance,
            "skewness": dsr.stats.skewness,
            "kurtosis": dsr.stats.kurtosis,
        }
    if ci:
        out |= {
            "ci_lower": ci.lower,
            "ci_upper": ci.upper,
            "ci_sharpe": ci.sharpe,
            "ci_block_length": float(ci.block_length),
        }
    if bh:
        out |= {
            "strategy_sharpe": bh.sharpe,
            "asset_sharpe": bh.asset_sharpe,
            "strategy_total_return": bh.total_return,
            "asset_total_return": bh.asset_total_return,
        }
    out |= {
        "baseline_p_value": base.p_value,
        "timing_sharpe": base.sharpe,
        "null_sharpe_mean": base.null_mean,
        "null_sharpe_q95": base.null_quantile_95,
        "exposure": base.exposure,
        "long_share": base.long_share,
    }
    if pbo:
        out |= {
            "pbo": pbo.pbo,
            "pbo_prob_oos_loss": pbo.prob_oos_loss,
            "pbo_degradation_slope": pbo.degradation_slope,
        }
    return out
