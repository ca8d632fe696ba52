"""One self-contained HTML report of a backtest: metrics, charts, verdict, configuration.

``render_report(...)`` returns the page as a string, ``write_report(path, ...)`` writes it.
The inputs are plain Series, frames and dicts (``Metrics.to_dict()``, ``Verdict.to_dict()``),
so a report can be rebuilt from a run's stored artefacts.

The page works offline: plotly.js is inlined once in the head (no CDN, no ``src=``) and
each chart is a ``Plotly.newPlot`` call on its own div (``id="fig-NAME"`` inside a
``<div class="figure" data-figure="NAME">``); ``<meta name="mlengine-figures">`` holds the
number of charts. Every
piece of text from the inputs is HTML-escaped; only ``extra_sections`` bodies are inserted
as given (they are HTML produced by later stages). Series longer than ``max_points`` bars
are min-max decimated for drawing (:func:`mlengine.backtest._charts.decimate`), so a
1,000,000-bar report stays a few megabytes; the numbers in the tables use every bar.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from mlengine.backtest import _charts
from mlengine.backtest.confidence import analyse_confidence
from mlengine.backtest.metrics import drawdown, returns_from_equity
from mlengine.data.schema import MLEngineError

__all__ = ["ReportError", "default_rolling_window", "render_report", "write_report"]

MAX_POINTS = _charts.MAX_POINTS
# Values of these keys are fractions, shown as percentages.
_PERCENT = {
    "total_return", "annual_return", "annual_volatility", "max_drawdown", "win_rate",
    "expectancy_return", "exposure", "direction_accuracy", "return", "volatility", "score",
    "min_score", "share", "hit_rate", "mean_confidence", "coverage", "accuracy", "long_share",
}  # fmt: skip
_METRIC_LABELS = {
    "total_return": "Total return",
    "annual_return": "Annual return (CAGR)",
    "annual_volatility": "Annual volatility",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "calmar": "Calmar ratio",
    "max_drawdown": "Max drawdown",
    "max_drawdown_duration": "Max drawdown duration",
    "max_drawdown_bars": "Max drawdown (bars)",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "expectancy": "Expectancy per trade",
    "expectancy_return": "Expectancy per trade (return)",
    "exposure": "Time in market",
    "turnover": "Turnover per year",
    "n_trades": "Trades",
    "direction_accuracy": "Direction accuracy",
    "n_direction_bars": "Bars with a direction",
    "n_bars": "Bars",
    "periods_per_year": "Bars per year",
    "start": "First bar",
    "end": "Last bar",
}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px;font-weight:600}
header .range{margin:0;color:#c9cfdb}
nav{background:#fff;border-bottom:1px solid #dde1e8;padding:8px 28px;position:sticky;top:0;
 display:flex;flex-wrap:wrap;row-gap:4px;
 z-index:10}
nav a{margin-right:14px;color:#1f77b4;text-decoration:none;white-space:nowrap}
main{max-width:1280px;margin:0 auto;padding:16px 20px 40px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:16px 0;
 padding:14px 18px}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{padding:4px 10px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
th{background:#f7f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:24px}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;
 font-size:13px;margin-top:8px}
.ok{background:#d8f3dc;color:#1b5e20}.bad{background:#fde2e1;color:#8e1b1b}
.na{background:#e6e8ec;color:#555}
.pass{color:#1b7a2e;font-weight:600}.fail{color:#b3261e;font-weight:600}
.muted{color:#667}
pre{background:#f7f8fa;border:1px solid #eceef2;padding:10px;overflow:auto;font-size:12px}
.figure{margin:8px 0}
"""


class ReportError(MLEngineError, ValueError):
    """Inputs a report cannot be built from (wrong types, misaligned series, bad numbers)."""


# --- formatting -------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(key: str, value: object) -> str:
    """Display text of one value: fractions as percentages, NaN/None as "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        if value in ("inf", "-inf"):
            return "∞" if value == "inf" else "−∞"
        if key == "max_drawdown_duration":
            try:
                return str(pd.Timedelta(value))
            except ValueError:
                return value
        return value.replace("T", " ") if key in ("start", "end") else value
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if key in _PERCENT or key.endswith(("_accuracy", "_rate", "_share")):
            return f"{value:.2%}"
        if abs(value) >= 1000:
            return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
        return f"{value:.4g}"
    return str(value)


def _plain(value: Any) -> Any:
    """NumPy / pandas scalars as Python ones, for formatting."""
    if isinstance(value, pd.Timestamp | pd.Timedelta):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _table(header: Sequence[str], rows: Iterable[Sequence[tuple[str, str]]]) -> str:
    """An HTML table; each cell is ``(css class, already-escaped html)``."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{cell}</td>' for c, cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(key: str, value: object) -> tuple[str, str]:
    value = _plain(value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return ("num" if numeric else "", _esc(_fmt(key, value)))


def _frame_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a table (index first unless it is the default 0..n-1)."""
    frame = frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index()
    header = [str(c) for c in frame.columns]
    rows = [
        [_cell(str(col), v) for col, v in zip(frame.columns, rec, strict=True)]
        for rec in frame.itertuples(index=False, name=None)
    ]
    return _table(header, rows)


# --- input checks -----------------------------------------------------------------------------


def _series(
    value: object, name: str, *, on: pd.Index | None = None, on_name: str = "the equity's bars"
) -> pd.Series:
    if not isinstance(value, pd.Series):
        raise ReportError(f"{name} must be a pandas Series, got {type(value).__name__}")
    if not isinstance(value.index, pd.DatetimeIndex):
        raise ReportError(f"{name} needs a DatetimeIndex, got {type(value.index).__name__}")
    if on is not None and not value.index.equals(on):
        raise ReportError(f"{name} is not on {on_name} ({len(value)} vs {len(on)} bars)")
    try:
        return value.astype("float64")
    except (TypeError, ValueError) as err:
        raise ReportError(f"{name} must hold numbers: {err}") from None


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(f"{name} must be a mapping (dict), got {type(value).__name__}")
    return value


def default_rolling_window(periods_per_year: float, n_bars: int) -> int:
    """A quarter of a year of bars (~3 months), at most a quarter of the run, at least 2."""
    return max(2, min(round(periods_per_year / 4), n_bars // 4))


# --- sections -----------------------------------------------------------------------------


def _figure(fig: go.Figure | None, name: str) -> tuple[str, int]:
    """HTML of one chart (no plotly.js: it is in the head) and 1, or a note and 0."""
    if fig is None:
        return '<p class="muted">Nothing to draw.</p>', 0
    config = {"displaylogo": False, "responsive": True}
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}", config=config)
    return f'<div class="figure" data-figure="{_esc(name)}">{div}</div>', 1


def _range_text(data_range: Mapping[str, Any]) -> str:
    parts = []
    for key in ("symbol", "symbols", "timeframe"):
        if key in data_range:
            value = data_range[key]
            parts.append(", ".join(map(str, value)) if isinstance(value, list | tuple) else value)
    if "start" in data_range or "end" in data_range:
        start, end = (_fmt(k, _plain(data_range.get(k, "?"))) for k in ("start", "end"))
        parts.append(f"{start} → {end}")
    if "bars" in data_range:
        parts.append(f"{_fmt('bars', _plain(data_range['bars']))} bars")
    return " · ".join(_esc(p) for p in parts)


def _badge(verdict: Mapping[str, Any] | None) -> str:
    if verdict is None:
        return '<span class="badge na">no validity verdict</span>'
    ok = bool(verdict.get("effective"))
    score = _fmt("score", verdict.get("score"))
    need = _fmt("score", verdict.get("min_score"))
    word = "EFFECTIVE" if ok else "NOT EFFECTIVE"
    cls = "ok" if ok else "bad"
    return f'<span class="badge {cls}">{word} · score {_esc(score)} (needs {_esc(need)})</span>'


def _metrics_html(metrics: Mapping[str, Any]) -> str:
    keys = [k for k in _METRIC_LABELS if k in metrics]
    keys += [k for k, v in metrics.items() if k not in _METRIC_LABELS and not isinstance(v, dict)]
    rows = [[("", _esc(_METRIC_LABELS.get(k, k))), _cell(k, metrics[k])] for k in keys]
    half = -(-len(rows) // 2)
    out = '<div class="cols">'
    out += _table(["Metric", "Value"], rows[:half]) + _table(["Metric", "Value"], rows[half:])
    yearly = metrics.get("yearly")
    if isinstance(yearly, Mapping) and yearly:
        frame = pd.DataFrame.from_dict(dict(yearly), orient="index")
        out += "<div><b>By year</b>" + _frame_table(frame.rename_axis("year")) + "</div>"
    return out + "</div>"


def _verdict_html(verdict: Mapping[str, Any] | None) -> str:
    if verdict is None:
        return '<p class="muted">No validity verdict was computed for this run.</p>'
    criteria = verdict.get("criteria")
    if not isinstance(criteria, Sequence) or isinstance(criteria, str):
        raise ReportError("verdict needs a 'criteria' list (Verdict.to_dict())")
    rows, failed = [], []
    for item in criteria:
        c = _mapping(item, "each verdict criterion")
        name = str(c.get("name", ""))
        key = name if name in ("direction_accuracy", "max_drawdown") else ""
        passed = c.get("passed")
        result = ("pass", "PASS") if passed is True else ("muted", "n/a")
        result = ("fail", "FAIL") if passed is False else result
        threshold = f"{c.get('op', '')} {_fmt(key, _plain(c.get('threshold')))}"
        rows.append(
            [
                ("", _esc(c.get("label", name))),
                ("", _esc(c.get("kind", ""))),
                _cell(key, c.get("value")),
                ("", _esc(threshold)),
                (result[0], result[1]),
                _cell("weight", c.get("weight")),
                ("", _esc(c.get("note", ""))),
            ]
        )
        if passed is False:
            value = _fmt(key, _plain(c.get("value")))
            failed.append(f"{c.get('label', name)}: {value} (needs {threshold})")
    header = ["Criterion", "Kind", "Value", "Threshold", "Result", "Weight", "Note"]
    out = f"<p>{_badge(verdict)}</p>" + _table(header, rows)
    if failed:
        items = "".join(f"<li>{_esc(f)}</li>" for f in failed)
        out += f"<p><b>Criteria not met:</b></p><ul>{items}</ul>"
    details = verdict.get("details")
    if isinstance(details, Mapping) and details:
        drows = [[("", _esc(k)), _cell(k, v)] for k, v in details.items()]
        out += "<details><summary>Test details</summary>"
        out += _table(["Quantity", "Value"], drows) + "</details>"
    return out


def _monthly_frame(metrics: Mapping[str, Any], returns: pd.Series) -> pd.DataFrame:
    """The year × month table of ``metrics["monthly"]``, else compounded from ``returns``."""
    stored = metrics.get("monthly")
    if isinstance(stored, Mapping) and stored:
        frame = pd.DataFrame.from_dict(dict(stored), orient="index").astype("float64")
        frame.columns = [int(c) for c in frame.columns]
        frame.index = [int(i) for i in frame.index]
        return frame.reindex(columns=range(1, 13)).sort_index()
    index = pd.DatetimeIndex(returns.index)
    growth = (1.0 + returns).groupby([index.year, index.month]).prod() - 1.0
    return growth.unstack().reindex(columns=range(1, 13))


def _confidence_html(page: _Page, p_up: pd.Series, close: pd.Series) -> str:
    """Reliability diagram, confidence buckets and accuracy-vs-coverage of ``p_up``."""
    next_return = close.shift(-1) / close - 1.0  # the outcome: sign of the next close change
    try:
        analysis = analyse_confidence(p_up, next_return=next_return)
    except MLEngineError as err:
        raise ReportError(f"confidence analysis: {err}") from None
    if analysis.buckets.empty:
        return '<p class="muted">No bar had a prediction, a direction and a next close.</p>'
    parts = []
    if analysis.reliability is not None:
        parts.append(page.figure(_charts.reliability_figure(analysis.reliability), "reliability"))
    parts.append(page.figure(_charts.buckets_figure(analysis.buckets), "confidence-buckets"))
    parts.append(page.figure(_charts.coverage_figure(analysis.coverage), "accuracy-coverage"))
    table = analysis.buckets.drop(columns=["bucket"])
    parts.append("<b>Confidence buckets</b>" + _frame_table(table))
    return "".join(parts)


def _comparison_html(
    page: _Page,
    comparison: pd.DataFrame | None,
    comparison_equity: Mapping[str, pd.Series] | None,
    max_points: int,
) -> str:
    body = ""
    if comparison is not None:
        if not isinstance(comparison, pd.DataFrame):
            raise ReportError(f"comparison must be a DataFrame, got {type(comparison).__name__}")
        body += _frame_table(comparison)
    if comparison_equity is not None:
        curves = {
            str(k): _series(v, f"comparison_equity[{k!r}]")
            for k, v in _mapping(comparison_equity, "comparison_equity").items()
        }
        body += page.figure(_charts.comparison_figure(curves, max_points), "comparison")
    return body


_ATTENTION_CAPTION = (
    "Each row but the last is one attention head of one layer: how much the window's last bar "
    "(the one the decision is made on) attends to each bar of the window, oldest on the left; "
    "a row sums to 1. The bars beneath are the attention rollout: the share of each bar in the "
    "model's embedding of the window, through all layers and heads."
)


def _attention_html(page: _Page, frame: pd.DataFrame) -> str:
    if "rollout" not in frame.index:
        raise ReportError("explanations['attention'] needs a 'rollout' row")
    if frame.shape[1] == 0:
        raise ReportError("explanations['attention'] has no bars (columns)")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ReportError(f"explanations['attention'] must hold numbers: {err}") from None
    with np.errstate(invalid="ignore"):
        bad = np.argwhere(~(np.isfinite(values) & (values >= 0.0) & (values <= 1.0)))
    if bad.size:
        i, j = bad[0]
        raise ReportError(
            f"explanations['attention'] values must be finite and in [0, 1]: row "
            f"{frame.index[i]!r}, bar {frame.columns[j]!r} is {values[i, j]}"
        )
    fig = page.figure(_charts.attention_heatmap(frame), "attention")
    return fig + f'<p class="muted">{_esc(_ATTENTION_CAPTION)}</p>'


def _importance_html(page: _Page, frame: pd.DataFrame) -> str:
    if "share" not in frame.columns:
        raise ReportError("explanations['feature_importance'] needs a 'share' column")
    try:
        share = frame["share"].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ReportError(f"explanations['feature_importance'] share: {err}") from None
    if not np.isfinite(share).all():
        bad = frame.index[int(np.flatnonzero(~np.isfinite(share))[0])]
        raise ReportError(f"explanations['feature_importance'] share is not finite at {bad!r}")
    return page.figure(_charts.feature_importance_figure(frame), "feature-importance")


_REGIME_CAPTION = (
    "The close over the out-of-sample bars, coloured by the regime the strategy gave each bar "
    "from the bars up to it (its most probable regime then); grey: no regime."
)


def _regime_path_html(page: _Page, frame: pd.DataFrame, max_points: int) -> str:
    """``explanations["regime_path"]``: columns ``ts`` (ISO 8601 text), ``close``,
    ``regime`` (whole numbers, NaN where none), drawn as the price coloured by regime."""
    where = "explanations['regime_path']"
    missing = [c for c in ("ts", "close", "regime") if c not in frame.columns]
    if missing:
        raise ReportError(f"{where} needs the columns ts, close and regime; missing {missing}")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True, format="ISO8601"))
    except (TypeError, ValueError) as err:
        raise ReportError(f"{where} ts must be ISO 8601 times: {err}") from None
    try:
        close = frame["close"].to_numpy(dtype=np.float64)
        regime = frame["regime"].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ReportError(f"{where} close and regime must hold numbers: {err}") from None
    if not np.isfinite(close).all():
        raise ReportError(
            f"{where} close is not finite at row {int(np.argmin(np.isfinite(close)))}"
        )
    whole = np.isnan(regime) | (regime == np.round(regime))
    if not whole.all():
        i = int(np.argmin(whole))
        raise ReportError(f"{where} regime must be whole numbers: row {i} is {regime[i]}")
    fig = _charts.regime_figure(
        pd.Series(close, index=index), pd.Series(regime, index=index), max_points
    )
    return page.figure(fig, "regime-path") + f'<p class="muted">{_esc(_REGIME_CAPTION)}</p>'


_STRUCTURE = ("structure_events", "swings")
_STRUCTURE_COLUMNS = {
    "structure_events": ("kind", "direction", "level", "top", "bottom", "formed", "confirmed",
                         "mitigated"),
    "swings": ("ts", "kind", "price", "confirmed"),
}  # fmt: skip
_STRUCTURE_KINDS = {"structure_events": _charts.EVENT_KINDS, "swings": ("high", "low")}
_STRUCTURE_CAPTION = (
    "The close with the market structure the strategy detected on the out-of-sample bars: "
    "swing highs and lows at their bar; breaks of structure (BOS), changes of character "
    "(CHoCH) and liquidity sweeps at the bar that confirmed them (▲ bullish, ▼ bearish), a "
    "dotted line back to the level's bar; fair value gaps and order blocks as zones from "
    "the bar that confirmed them to the first bar that traded into them (or the end)."
)


def _times(frame: pd.DataFrame, where: str, col: str, *, blank: bool = False) -> pd.Series:
    """Column ``col`` of ISO 8601 texts as UTC times; empty texts are NaT if ``blank``."""
    try:
        out = pd.to_datetime(frame[col].astype(str), utc=True, format="ISO8601")
    except (TypeError, ValueError) as err:
        raise ReportError(f"{where} {col} must be ISO 8601 times: {err}") from None
    if not blank and out.isna().any():
        raise ReportError(f"{where} {col} is empty at row {int(np.argmax(out.isna()))}")
    return out.reset_index(drop=True)


def _numbers(frame: pd.DataFrame, where: str, cols: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns ``cols`` as finite floats."""
    out = {}
    for col in cols:
        try:
            values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise ReportError(f"{where} {col} must hold numbers: {err}") from None
        if not np.isfinite(values).all():
            i = int(np.argmin(np.isfinite(values)))
            raise ReportError(f"{where} {col} is not finite at row {i}")
        out[col] = values
    return out


def _structure_frame(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``explanations[name]`` (``structure_events`` or ``swings``) checked, with times."""
    where = f"explanations[{name!r}]"
    columns = _STRUCTURE_COLUMNS[name]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReportError(f"{where} needs the columns {', '.join(columns)}; missing {missing}")
    kinds = frame["kind"].astype(str).to_numpy()
    bad = ~np.isin(kinds, _STRUCTURE_KINDS[name])
    if bad.any():
        i = int(np.argmax(bad))
        raise ReportError(
            f"{where} kind must be one of {', '.join(_STRUCTURE_KINDS[name])}: "
            f"row {i} is {kinds[i]!r}"
        )
    out = pd.DataFrame({"kind": kinds})
    if name == "swings":
        out["price"] = _numbers(frame, where, ["price"])["price"]
        out["ts"] = _times(frame, where, "ts")
        return out
    for col, values in _numbers(frame, where, ["direction", "level", "top", "bottom"]).items():
        out[col] = values
    if not np.isin(out["direction"], (-1.0, 1.0)).all():
        i = int(np.argmax(~np.isin(out["direction"], (-1.0, 1.0))))
        raise ReportError(f"{where} direction must be 1 or -1: row {i} is {out['direction'][i]}")
    for col in ("formed", "confirmed", "mitigated"):
        out[col] = _times(frame, where, col, blank=col == "mitigated")
    return out


def _structure_html(
    page: _Page, explanations: Mapping[str, pd.DataFrame], close: pd.Series | None, max_points: int
) -> str:
    """``structure_events`` and ``swings`` (either may be absent) drawn over the close."""
    frames = {}
    for name in _STRUCTURE:
        given = explanations.get(name, pd.DataFrame(columns=list(_STRUCTURE_COLUMNS[name])))
        frames[name] = _structure_frame(given, name)
    fig = _charts.structure_figure(close, frames["structure_events"], frames["swings"], max_points)
    return page.figure(fig, "structure") + f'<p class="muted">{_esc(_STRUCTURE_CAPTION)}</p>'


_TIMEFRAME_CAPTION = (
    "How much the model's decision draws on each timeframe: the encoder's attention across "
    "timeframes, one group of bars per row (e.g. the mean over the recent decision windows "
    "and the last window); each row sums to 100%."
)


def _timeframe_html(page: _Page, frame: pd.DataFrame) -> str:
    """``explanations["timeframe_attention"]``: rows of weights over the timeframes
    (columns), each in [0, 1] and summing to 1, drawn as grouped bars."""
    where = "explanations['timeframe_attention']"
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ReportError(f"{where} needs rows and timeframes (columns), got {frame.shape}")
    try:
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ReportError(f"{where} must hold numbers: {err}") from None
    with np.errstate(invalid="ignore"):
        bad = np.argwhere(~(np.isfinite(values) & (values >= 0.0) & (values <= 1.0)))
    if bad.size:
        i, j = bad[0]
        raise ReportError(
            f"{where} values must be finite and in [0, 1]: row {frame.index[i]!r}, "
            f"timeframe {frame.columns[j]!r} is {values[i, j]}"
        )
    sums = values.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if off.size:
        i = int(off[0])
        raise ReportError(f"{where} row {frame.index[i]!r} sums to {sums[i]:.4g}, not 1")
    fig = page.figure(_charts.timeframe_attention_figure(frame), "timeframe-attention")
    return fig + f'<p class="muted">{_esc(_TIMEFRAME_CAPTION)}</p>'


_GATE_CAPTION = (
    "How the metamodel's gate shares its weight among the strategies, bar by bar (the "
    "weights of a bar add up to 100%). The table beneath gives each strategy's mean weight "
    "over all bars and over the bars of each regime: which strategy leads, in which regime."
)


def _gate_weights_html(page: _Page, frame: pd.DataFrame, max_points: int) -> str:
    """``explanations["gate_weights"]``: ``ts`` (ISO 8601, increasing), one weight column per
    strategy (each in [0, 1], a row summing to 1) and optionally ``regime`` (whole numbers,
    NaN where none); a stacked area over time and the mean weights overall and per regime."""
    where = "explanations['gate_weights']"
    if "ts" not in frame.columns:
        raise ReportError(f"{where} needs a 'ts' column")
    strategies = [c for c in frame.columns if c not in ("ts", "regime")]
    if not strategies:
        raise ReportError(f"{where} needs one weight column per strategy besides ts and regime")
    ts = _times(frame, where, "ts")
    stale = ts.diff().to_numpy()[1:] <= np.timedelta64(0, "ns")
    if stale.any():
        i = int(np.argmax(stale)) + 1
        raise ReportError(
            f"{where} ts must increase: row {i} ({ts[i].isoformat()}) is not after row {i - 1}"
        )
    weights = pd.DataFrame(_numbers(frame, where, strategies), index=pd.DatetimeIndex(ts))
    for col in strategies:
        values = weights[col].to_numpy()
        outside = (values < 0.0) | (values > 1.0)
        if outside.any():
            i = int(np.argmax(outside))
            raise ReportError(
                f"{where} {col} must be in [0, 1]: row {i} ({ts[i].isoformat()}) is {values[i]}"
            )
    sums = weights.to_numpy().sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if off.size:
        i = int(off[0])
        raise ReportError(
            f"{where} weights must sum to 1: row {i} ({ts[i].isoformat()}) sums to {sums[i]:.10g}"
        )
    regime = None
    if "regime" in frame.columns:
        try:
            regime = frame["regime"].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise ReportError(f"{where} regime must hold numbers: {err}") from None
        whole = np.isnan(regime) | (np.isfinite(regime) & (regime == np.round(regime)))
        if not whole.all():
            i = int(np.argmin(whole))
            raise ReportError(f"{where} regime must be whole numbers: row {i} is {regime[i]}")
    fig = page.figure(_charts.gate_weights_figure(weights, max_points), "gate-weights")
    out = f'<p class="muted">{_esc(_GATE_CAPTION)}</p>' + fig
    if weights.empty:
        return out
    groups: list[tuple[str, pd.DataFrame]] = [("all", weights)]
    if regime is not None:
        for k in np.unique(regime[np.isfinite(regime)]).astype(np.int64):
            groups.append((f"regime {k}", weights[regime == k]))
        if np.isnan(regime).any():
            groups.append(("no regime", weights[np.isnan(regime)]))
    rows = []
    for label, part in groups:
        mean = part.mean()
        cells = [("", _esc(label)), _cell("bars", len(part))]
        cells += [_cell("share", float(mean[c])) for c in strategies]
        rows.append([*cells, ("", _esc(mean.idxmax()))])
    header = ["bars", "count", *(str(c) for c in strategies), "leads"]
    return out + "<b>Mean gate weight by regime</b>" + _table(header, rows)


_CALIBRATION = ("stage", "bin", "lo", "hi", "n", "mean_predicted", "observed_frequency")
_CALIBRATION_METRICS = ("stage", "brier", "log_loss", "ece", "n")
_CALIBRATION_CAPTION = (
    "Reliability of the probability of an up move at each stage (e.g. raw, then calibrated): "
    "per bin of predicted probability, the share of bars that went up against the mean "
    "prediction (marker size: bars in the bin). A calibrated model lies on the diagonal."
)


def _calibration_html(page: _Page, frame: pd.DataFrame, metrics: pd.DataFrame | None) -> str:
    """``explanations["calibration"]``: reliability tables
    (:func:`mlengine.backtest.confidence.reliability`) with a ``stage`` column, drawn as one
    diagram; ``explanations["calibration_metrics"]`` (if given) as the table under it."""
    where = "explanations['calibration']"
    missing = [c for c in _CALIBRATION if c not in frame.columns]
    if missing:
        raise ReportError(f"{where} needs the columns {', '.join(_CALIBRATION)}; missing {missing}")
    stage = frame["stage"].astype(str).to_numpy()
    values = _numbers(frame, where, ["lo", "hi", "n"])
    n = values["n"]
    if ((n < 0) | (n != np.round(n))).any():
        i = int(np.argmax((n < 0) | (n != np.round(n))))
        raise ReportError(f"{where} n must be a count of bars: row {i} is {n[i]}")
    for col in ("mean_predicted", "observed_frequency"):
        try:
            values[col] = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise ReportError(f"{where} {col} must hold numbers: {err}") from None
        unknown = (n > 0) & ~np.isfinite(values[col])
        if unknown.any():
            i = int(np.argmax(unknown))
            raise ReportError(
                f"{where} {col} is not finite at row {i} (stage {stage[i]!r}, {n[i]:.0f} bars)"
            )
    for col in ("lo", "hi", "mean_predicted", "observed_frequency"):
        v = values[col]
        with np.errstate(invalid="ignore"):
            outside = (v < 0.0) | (v > 1.0)  # NaN (an empty bin's mean) is not outside
        if outside.any():
            i = int(np.argmax(outside))
            raise ReportError(
                f"{where} {col} must be in [0, 1]: row {i} (stage {stage[i]!r}) is {v[i]}"
            )
    for name in pd.unique(stage):
        if not (n[stage == name] > 0).any():
            raise ReportError(f"{where} stage {name!r} has no non-empty bin")
    bins = pd.DataFrame({"stage": stage, **values})
    out = f'<p class="muted">{_esc(_CALIBRATION_CAPTION)}</p>'
    out += page.figure(_charts.calibration_figure(bins), "calibration")
    if metrics is not None:
        absent = [c for c in _CALIBRATION_METRICS if c not in metrics.columns]
        if absent:
            raise ReportError(
                "explanations['calibration_metrics'] needs the columns "
                f"{', '.join(_CALIBRATION_METRICS)}; missing {absent}"
            )
        out += "<b>Calibration metrics</b>" + _frame_table(metrics)
    return out


#: Words written in capitals in headings made from explanation names.
_ACRONYMS = frozenset({"llm", "atr", "ece", "dsr", "pbo", "fvg", "ob", "bos", "choch", "hmm"})


def _heading(name: str) -> str:
    """``"llm_ablation"`` → ``"LLM ablation"``: sentence case, acronyms in capitals."""
    words = name.replace("_", " ").capitalize().split(" ")
    return " ".join(w.upper() if w.lower() in _ACRONYMS else w for w in words)


def _explanations_html(
    page: _Page,
    explanations: Mapping[str, pd.DataFrame],
    close: pd.Series | None,
    max_points: int,
) -> str:
    """The attention heatmap, the feature importance chart, the price coloured by regime,
    the structure over the close (once, for ``structure_events`` and ``swings``), the
    attention across timeframes, the gate's weights, the calibration diagram (with
    ``calibration_metrics`` under it) and any other frame as a table."""
    for name, frame in _mapping(explanations, "explanations").items():
        if not isinstance(name, str):
            raise ReportError(f"explanations keys must be strings, got {name!r}")
        if not isinstance(frame, pd.DataFrame):
            raise ReportError(
                f"explanations[{name!r}] must be a DataFrame, got {type(frame).__name__}"
            )
    structure = [n for n in explanations if n in _STRUCTURE]
    parts = []
    for name, frame in explanations.items():
        if name == "attention":
            parts.append(_attention_html(page, frame))
        elif name == "feature_importance":
            parts.append(_importance_html(page, frame))
        elif name == "regime_path":
            parts.append(_regime_path_html(page, frame, max_points))
        elif name in _STRUCTURE:
            if name == structure[0]:
                parts.append(_structure_html(page, explanations, close, max_points))
        elif name == "timeframe_attention":
            parts.append(_timeframe_html(page, frame))
        elif name == "gate_weights":
            parts.append(_gate_weights_html(page, frame, max_points))
        elif name == "calibration":
            parts.append(_calibration_html(page, frame, explanations.get("calibration_metrics")))
        elif name == "calibration_metrics" and "calibration" in explanations:
            continue  # drawn under the calibration diagram
        else:
            parts.append(f"<h3>{_esc(_heading(name))}</h3>" + _frame_table(frame))
    return "".join(parts)


@dataclass
class _Page:
    """The sections of the page, in order, and the number of charts in them."""

    sections: list[tuple[str, str, str]] = field(default_factory=list)
    n_figures: int = 0

    def figure(self, fig: go.Figure | None, name: str) -> str:
        div, k = _figure(fig, name)
        self.n_figures += k
        return div

    def add(self, sid: str, title: str, body: str) -> None:
        self.sections.append((sid, title, body))

    def html(self, title: str, data_range: Mapping[str, Any], verdict: Any) -> str:
        nav = "".join(f'<a href="#{_esc(sid)}">{_esc(name)}</a>' for sid, name, _ in self.sections)
        body = "".join(
            f'<section id="{_esc(sid)}"><h2>{_esc(name)}</h2>{inner}</section>'
            for sid, name, inner in self.sections
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="mlengine-figures" content="{self.n_figures}">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style>"
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f'<header><h1>{_esc(title)}</h1><p class="range">{_range_text(data_range)}</p>'
            f"{_badge(verdict)}</header><nav>{nav}</nav><main>{body}</main></body></html>\n"
        )


# --- public API -------------------------------------------------------------------------------


def render_report(
    *,
    title: str,
    equity: pd.Series,
    trades: pd.DataFrame,
    exposure: pd.Series,
    periods_per_year: float,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    data_range: Mapping[str, Any],
    verdict: Mapping[str, Any] | None = None,
    returns: pd.Series | None = None,
    benchmark: pd.Series | None = None,
    p_up: pd.Series | None = None,
    close: pd.Series | None = None,
    comparison: pd.DataFrame | None = None,
    comparison_equity: Mapping[str, pd.Series] | None = None,
    explanations: Mapping[str, pd.DataFrame] | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
    rolling_window: int | None = None,
    max_points: int = MAX_POINTS,
) -> str:
    """The report as one HTML page.

    ``equity``, ``returns`` (default: from the equity) and ``exposure`` (net, per bar) share
    one bar index; ``benchmark`` is an equity curve (e.g. buy-and-hold). ``trades`` is the
    engine's ledger (``pnl`` and ``return`` are used). ``p_up`` with ``close`` (same index)
    adds the calibration section; the outcome of bar ``t`` is the sign of
    ``close[t+1] - close[t]``. ``comparison`` has one row per strategy, drawn as a table;
    ``comparison_equity`` maps names to equities, overlaid. ``explanations`` are a model's
    named frames (:class:`mlengine.strategies.base.Explainable`): ``"attention"`` is drawn as a
    heatmap, ``"feature_importance"`` as a bar chart, ``"regime_path"`` (``ts``, ``close``,
    ``regime``) as the price coloured by regime, ``"structure_events"`` and ``"swings"`` (the
    columns of :meth:`mlengine.strategies.msa.MSA.summarize`) as overlays on ``close``,
    ``"timeframe_attention"`` (rows of weights over timeframes) as grouped bars,
    ``"gate_weights"`` (``ts``, one weight column per strategy, optionally ``regime``) as a
    stacked area with the mean weights per regime beneath, ``"calibration"`` (the
    :func:`mlengine.backtest.confidence.reliability` table with a ``stage`` column) as one
    reliability diagram with ``"calibration_metrics"`` (``stage``, ``brier``, ``log_loss``,
    ``ece``, ``n``) as the table under it, others as tables. ``extra_sections`` are
    ``(title, html)`` pairs; their html is inserted unescaped. ``rolling_window`` (bars)
    defaults to :func:`default_rolling_window`; series longer than ``max_points`` are
    decimated for drawing. Bad input raises :class:`ReportError`.
    """
    if not isinstance(title, str):
        raise ReportError(f"title must be a string, got {type(title).__name__}")
    eq = _series(equity, "equity")
    if eq.empty:
        raise ReportError("equity is empty: no bars to report on")
    try:
        ppy = float(periods_per_year)
    except (TypeError, ValueError):
        ppy = math.nan
    if not (math.isfinite(ppy) and ppy > 0):
        raise ReportError(f"periods_per_year must be positive and finite, got {periods_per_year}")
    if max_points < 4:
        raise ReportError(f"max_points must be at least 4, got {max_points}")
    metrics, config = _mapping(metrics, "metrics"), _mapping(config, "config")
    data_range = _mapping(data_range, "data_range")
    if verdict is not None:
        verdict = _mapping(verdict, "verdict")
    try:
        derived = returns_from_equity(eq)  # also rejects NaN and non-positive starts
    except MLEngineError as err:
        raise ReportError(f"equity: {err}") from None
    ret = derived if returns is None else _series(returns, "returns", on=eq.index)
    if not np.isfinite(ret.to_numpy()).all():
        bad = int(np.flatnonzero(~np.isfinite(ret.to_numpy()))[0])
        raise ReportError(f"returns are not finite at bar {bad} ({ret.index[bad]})")
    expo = _series(exposure, "exposure", on=eq.index)
    bench = None if benchmark is None else _series(benchmark, "benchmark")
    if not isinstance(trades, pd.DataFrame):
        raise ReportError(f"trades must be a DataFrame, got {type(trades).__name__}")
    missing = [c for c in ("pnl", "return") if c not in trades.columns]
    if missing:
        raise ReportError(f"trades lack the column(s) {', '.join(missing)}")
    window = default_rolling_window(ppy, len(eq)) if rolling_window is None else rolling_window
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 2:
        raise ReportError(f"rolling_window must be a whole number of bars >= 2, got {window!r}")

    page = _Page()
    page.add("metrics", "Key metrics", _metrics_html(metrics))
    page.add("verdict", "Validity verdict", _verdict_html(verdict))
    page.add(
        "equity", "Equity", page.figure(_charts.equity_figure(eq, bench, max_points), "equity")
    )
    dd_fig = _charts.drawdown_figure(drawdown(ret), max_points)
    page.add("drawdown", "Drawdown", page.figure(dd_fig, "drawdown"))
    heatmap = _charts.monthly_heatmap(_monthly_frame(metrics, ret))
    page.add("monthly", "Monthly returns", page.figure(heatmap, "monthly"))
    sharpe = _charts.rolling_sharpe(ret, window, ppy)
    sharpe_fig = _charts.rolling_sharpe_figure(sharpe, window, ppy, max_points)
    page.add("rolling-sharpe", "Rolling Sharpe", page.figure(sharpe_fig, "rolling-sharpe"))
    page.add("trades", "Trades", page.figure(_charts.trade_figure(trades), "trades"))
    expo_fig = _charts.exposure_figure(expo, max_points)
    page.add("exposure", "Exposure", page.figure(expo_fig, "exposure"))
    if p_up is not None:
        if close is None:
            raise ReportError("p_up needs close (the same bars) to know what happened next")
        p = _series(p_up, "p_up")
        body = _confidence_html(page, p, _series(close, "close", on=p.index, on_name="p_up's bars"))
        page.add("confidence", "Confidence and calibration", body)
    if comparison is not None or comparison_equity is not None:
        body = _comparison_html(page, comparison, comparison_equity, max_points)
        page.add("comparison", "Strategy comparison", body)
    price = None if close is None else _series(close, "close")
    explained = (
        "" if explanations is None else _explanations_html(page, explanations, price, max_points)
    )
    if explained:
        page.add("explanations", "Model explanations", explained)
    for i, extra in enumerate(extra_sections):
        if not (
            isinstance(extra, tuple | list)
            and len(extra) == 2
            and all(isinstance(x, str) for x in extra)
        ):
            raise ReportError(f"extra_sections[{i}] must be a (title, html) pair of strings")
        page.add(f"extra-{i}", extra[0], extra[1])
    setup = "<h3>Data range</h3>" + _table(
        ["Field", "Value"], [[("", _esc(k)), _cell(k, v)] for k, v in data_range.items()]
    )
    setup += f"<h3>Configuration</h3><pre>{_esc(_json(config))}</pre>"
    page.add("config", "Configuration and data", setup)
    return page.html(title, data_range, verdict)


def write_report(path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_report` ``(**kwargs)`` to ``path`` (UTF-8); returns the path."""
    target = Path(path)
    page = render_report(**kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _json(config: Mapping[str, Any]) -> str:
    """Pretty JSON of the configuration (non-JSON values as their text)."""
    return json.dumps(config, indent=2, default=str, ensure_ascii=False)
