"""Compare strategies on the same data: same walk-forward split, same costs, one table.

``compare({"sma": factory, "hold": factory, ...}, bars, splitter=...)`` runs each factory
through :func:`mlengine.backtest.walkforward.walk_forward` with the same arguments (the
mapping's key becomes the run name), so every strategy is scored on the same out-of-sample
bars. The :class:`Comparison` holds the runs, one table of key metrics with the verdict
score, the equity curves side by side and each verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from mlengine.backtest.validity import Verdict
from mlengine.backtest.walkforward import (
    StrategyFactory,
    WalkForwardError,
    WalkForwardRun,
    walk_forward_many,
)
from mlengine.data.loader import WalkForwardSplit

__all__ = ["TABLE_COLUMNS", "Comparison", "compare", "comparison"]

TABLE_COLUMNS: tuple[str, ...] = (
    "strategy",
    "total_return",
    "annual_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "direction_accuracy",
    "win_rate",
    "n_trades",
    "exposure",
    "turnover",
    "score",
    "effective",
)
_PERCENT = {"total_return", "annual_return", "max_drawdown", "direction_accuracy", "win_rate",
            "exposure", "score"}  # fmt: skip


_TERMINAL = ("total_return", "annual_return", "sharpe", "max_drawdown", "direction_accuracy",
             "n_trades", "score", "effective")  # fmt: skip
_SHORT = {"total_return": "return", "annual_return": "CAGR", "max_drawdown": "max DD",
          "direction_accuracy": "dir. acc.", "n_trades": "trades", "effective": "ok"}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Comparison:
    """Runs by name; ``table`` (index ``name``, :data:`TABLE_COLUMNS`); ``equity`` (one
    column per name, on the common OOS bars)."""

    runs: dict[str, WalkForwardRun]
    table: pd.DataFrame
    equity: pd.DataFrame

    @property
    def verdicts(self) -> dict[str, Verdict]:
        return {name: run.verdict for name, run in self.runs.items()}

    def to_rich(self) -> Table:
        """The key columns for an 80-column terminal (the HTML report has them all)."""
        table = Table(title="Walk-forward comparison (out-of-sample, after costs)")
        table.add_column("name", no_wrap=True)
        for col in _TERMINAL:
            table.add_column(_SHORT.get(col, col), justify="right")
        for name, row in self.table.iterrows():
            table.add_row(str(name), *(_cell(col, row[col]) for col in _TERMINAL))
        return table

    def write_report(self, path: Path, main: str | None = None, title: str | None = None) -> Path:
        """One HTML report: ``main``'s run (default the first) plus the comparison table
        and the equity curves of all; ``title`` defaults to "Comparison on SYMBOL TF"."""
        from mlengine.backtest.runs import to_record, write_run_report

        key = main if main is not None else next(iter(self.runs))
        if key not in self.runs:
            raise WalkForwardError(f"no run named {key!r}; runs: {', '.join(self.runs)}")
        return write_run_report(
            to_record(self.runs[key]),
            Path(path),
            title=title or f"Comparison on {self.runs[key].symbol} {self.runs[key].timeframe}",
            comparison=self.table.reset_index(),
            comparison_equity={name: self.equity[name] for name in self.equity.columns},
        )


def _cell(col: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return "n/a"
    return f"{x:.1%}" if col in _PERCENT else f"{x:.3g}"


def _row(run: WalkForwardRun) -> dict[str, Any]:
    m = run.metrics
    out: dict[str, Any] = {"strategy": run.strategy}
    for col in TABLE_COLUMNS[1:-2]:
        out[col] = getattr(m, col)
    out["score"] = run.verdict.score
    out["effective"] = run.verdict.effective
    return out


def compare(
    strategies: Mapping[str, StrategyFactory],
    bars: pd.DataFrame,
    *,
    splitter: WalkForwardSplit,
    **options: Any,
) -> Comparison:
    """Walk-forward every factory on ``bars`` with ``splitter`` and ``options`` (keyword
    arguments of :func:`walk_forward_many`, e.g. ``horizon``, ``costs``, ``store``, ``seed``,
    ``executor``): the (strategy, fold) jobs of all of them are fanned out together."""
    if not isinstance(strategies, Mapping) or not strategies:
        raise WalkForwardError("compare needs a non-empty mapping of names to factories")
    if "run_name" in options:
        raise WalkForwardError("compare names each run by its key: do not pass run_name")
    for name in strategies:
        if not isinstance(name, str) or not name.strip():
            raise WalkForwardError(f"strategy names must be non-empty text, got {name!r}")
    runs = walk_forward_many(strategies, bars, splitter=splitter, **options)
    return comparison(runs)


def comparison(runs: Mapping[str, WalkForwardRun]) -> Comparison:
    """The :class:`Comparison` of runs scored on the same OOS bars."""
    runs = dict(runs)
    table = pd.DataFrame([_row(r) for r in runs.values()], index=pd.Index(list(runs), name="name"))
    equity = pd.DataFrame({name: r.result.equity for name, r in runs.items()})
    return Comparison(runs=runs, table=table, equity=equity)
