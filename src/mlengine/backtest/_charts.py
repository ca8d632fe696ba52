"""Plotly figures of the backtest report (see :mod:`mlengine.backtest.report`).

Every builder returns a ``plotly.graph_objects.Figure`` (or ``None`` when there is nothing to
draw). Time axes get float milliseconds since the epoch (UTC) on a ``date`` axis: Plotly
stores float arrays in binary (base64), about half the size of ISO date strings.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mlengine.backtest.confidence import Reliability

#: Series longer than this are decimated before plotting (see :func:`decimate`).
MAX_POINTS = 20_000

BLUE, GREY, GREEN, RED, ORANGE = "#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#ff7f0e"
PALETTE = (BLUE, ORANGE, GREEN, RED, "#9467bd", "#8c564b", "#e377c2", GREY, "#bcbd22", "#17becf")
_HEIGHT = 380
_TIME_HOVER = "%{x|%Y-%m-%d %H:%M} UTC<br>"


def decimate(series: pd.Series, max_points: int = MAX_POINTS) -> pd.Series:
    """At most ``max_points`` points of ``series`` that keep its shape and its extremes.

    The bars are cut into equal buckets and, of each, the minimum and the maximum are kept
    (in time order), plus the first and last bar: peaks, troughs and the deepest drawdown
    survive, which plain every-k-th sampling would miss. An all-NaN bucket keeps one NaN
    so gaps stay gaps. Hand-written because it is a few lines of NumPy; libraries that do
    this (tsdownsample, plotly-resampler) would add a compiled dependency or a server.
    """
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    n = len(series)
    if n <= max_points:
        return series
    size = -(-n // max(max_points // 2 - 1, 1))  # bars per bucket, rounded up
    rows = -(-n // size)
    flat = np.full(rows * size, np.nan)
    flat[:n] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    grid = flat.reshape(rows, size)
    missing = np.isnan(grid)
    base = np.arange(rows) * size
    lo = base + np.where(missing, np.inf, grid).argmin(axis=1)
    hi = base + np.where(missing, -np.inf, grid).argmax(axis=1)
    keep = np.unique(np.concatenate([[0, n - 1], lo, hi]))
    return series.iloc[keep[keep < n]]


def epoch_ms(index: pd.Index) -> np.ndarray:
    """Milliseconds since the epoch (UTC; a naive index is taken as UTC) as float64."""
    idx = pd.DatetimeIndex(index)
    return idx.as_unit("ns").asi8.astype(np.float64) / 1e6


def _values(series: pd.Series, scale: float = 1.0) -> np.ndarray:
    # float32 is ample for drawing and halves the size of the y arrays in the file
    return (series.to_numpy(dtype=np.float64, na_value=np.nan) * scale).astype(np.float32)


def _layout(fig: go.Figure, title: str, y_title: str, *, height: int = _HEIGHT) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        hovermode="x unified",
    )
    fig.update_layout(yaxis_title_text=y_title)
    return fig


def _time_lines(
    curves: Sequence[tuple[pd.Series, str, str]],
    max_points: int,
    *,
    scale: float = 1.0,
    fill: str | None = None,
) -> tuple[go.Figure, str]:
    """A figure of time lines ``(series, name, colour)``, each decimated, and a title note
    saying how many bars were drawn when any was. Names are shown as text, not markup."""
    fig, note = go.Figure(), ""
    for series, name, color in curves:
        shown = decimate(series, max_points)
        if len(shown) < len(series) and not note:
            note = f" <sup>(min-max decimated: {len(shown):,} of {len(series):,} bars drawn)</sup>"
        label = html.escape(name)
        fig.add_trace(
            go.Scatter(
                x=epoch_ms(shown.index),
                y=_values(shown, scale),
                name=label,
                mode="lines",
                line={"color": color, "width": 1.3},
                fill=fill,
                hovertemplate=_TIME_HOVER + "%{y:,.4g}<extra>" + label + "</extra>",
            )
        )
    fig.update_xaxes(type="date")
    return fig, note


def _log_toggle(fig: go.Figure) -> None:
    """Buttons at the top right that switch the y axis between linear and log scale (the
    legend moves to the left to make room); call after :func:`_layout`."""
    buttons = [
        {"label": label, "method": "relayout", "args": [{"yaxis.type": kind}]}
        for label, kind in (("Linear", "linear"), ("Log", "log"))
    ]
    menu = {
        "type": "buttons",
        "direction": "right",
        "buttons": buttons,
        "x": 1.0,
        "xanchor": "right",
        "y": 1.02,
        "yanchor": "bottom",
        "pad": {"t": 0, "b": 0},
        "showactive": True,
    }
    legend = {"x": 0.0, "xanchor": "left"}
    fig.update_layout(updatemenus=[menu], legend=legend)


def equity_figure(
    equity: pd.Series, benchmark: pd.Series | None, max_points: int = MAX_POINTS
) -> go.Figure:
    """Equity (and a benchmark equity, labelled with its name) over time, with a linear/log
    switch."""
    curves = [(equity, "strategy", BLUE)]
    if benchmark is not None:
        label = benchmark.name if isinstance(benchmark.name, str) else "benchmark"
        curves.append((benchmark, label, GREY))
    fig, note = _time_lines(curves, max_points)
    _layout(fig, "Equity" + note, "equity")
    _log_toggle(fig)
    return fig


def drawdown_figure(drawdown: pd.Series, max_points: int = MAX_POINTS) -> go.Figure:
    """Drawdown below the running peak, in percent (negative down)."""
    fig, note = _time_lines([(drawdown, "drawdown", RED)], max_points, scale=-100, fill="tozeroy")
    return _layout(fig, "Drawdown" + note, "drawdown (%)", height=300)


def rolling_sharpe(returns: pd.Series, window: int, periods_per_year: float) -> pd.Series:
    """Annualised Sharpe ratio of the last ``window`` bars (NaN where returns are constant)."""
    roll = returns.rolling(window, min_periods=window)
    mean, std = roll.mean(), roll.std(ddof=1)
    flat = roll.max() == roll.min()  # zero variance: undefined, not a huge number
    sharpe = (mean / std * math.sqrt(periods_per_year)).where(~flat & (std > 0))
    return sharpe.rename("rolling_sharpe")


def rolling_sharpe_figure(
    sharpe: pd.Series, window: int, periods_per_year: float, max_points: int = MAX_POINTS
) -> go.Figure:
    """Rolling annualised Sharpe ratio with a zero line."""
    fig, note = _time_lines([(sharpe, "rolling Sharpe", BLUE)], max_points)
    fig.add_hline(y=0.0, line={"color": GREY, "width": 1})
    days = window / periods_per_year * 365.25
    span = f"{days / 30.44:.1f} months" if days >= 45 else f"{days:.3g} days"
    title = f"Rolling Sharpe (annualised), window {window:,} bars ≈ {span}{note}"
    return _layout(fig, title, "Sharpe", height=320)


def exposure_figure(exposure: pd.Series, max_points: int = MAX_POINTS) -> go.Figure:
    """Net exposure (signed notional / equity) over time, in percent."""
    fig, note = _time_lines([(exposure, "net exposure", BLUE)], max_points, scale=100.0)
    return _layout(fig, "Net exposure" + note, "exposure (% of equity)", height=300)


def monthly_heatmap(monthly: pd.DataFrame) -> go.Figure:
    """Compounded monthly returns (percent), years down, months across."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    z = monthly.to_numpy(dtype=np.float64, na_value=np.nan) * 100.0
    years = [str(y) for y in monthly.index]
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=months,
            y=years,
            colorscale="RdYlGn",
            zmid=0.0,
            zmin=-bound,
            zmax=bound,
            texttemplate="%{z:.1f}",
            hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
            colorbar={"title": {"text": "%"}},
            xgap=2,
            ygap=2,
        )
    )
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(type="category", side="top")
    _layout(fig, "Monthly returns (%)", "", height=120 + 34 * max(len(years), 2))
    fig.update_layout(hovermode="closest", margin={"t": 80})
    return fig


def trade_figure(trades: pd.DataFrame, bins: int = 60) -> go.Figure | None:
    """Histogram of net trade returns (percent of entry notional), wins and losses apart.

    Binned here (NumPy) so that a ledger of any length costs ``bins`` bars in the file.
    """
    ret = trades["return"].to_numpy(dtype=np.float64, na_value=np.nan) * 100.0
    pnl = trades["pnl"].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(ret) & np.isfinite(pnl)
    ret, pnl = ret[ok], pnl[ok]
    if ret.size == 0:
        return None
    edges = np.histogram_bin_edges(ret, bins=min(bins, max(ret.size, 1)))
    fig = go.Figure()
    for name, mask, color in (("wins", pnl > 0, GREEN), ("losses", pnl <= 0, RED)):
        counts, _ = np.histogram(ret[mask], bins=edges)
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts,
                width=np.diff(edges),
                name=f"{name} ({int(mask.sum()):,})",
                marker={"color": color, "line": {"width": 0}},
                opacity=0.8,
                hovertemplate="%{x:.2f}%: %{y:,} trades<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="net trade return (% of entry notional)")
    _layout(fig, f"Trade PnL distribution ({ret.size:,} trades)", "trades", height=320)
    fig.update_layout(hovermode="closest")
    return fig


def reliability_figure(rel: Reliability) -> go.Figure:
    """Observed frequency of an up move against the mean predicted probability, per bin."""
    t = rel.table[rel.table["n"] > 0]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=t["mean_predicted"],
            y=t["n"],
            name="bars per bin",
            yaxis="y2",
            marker={"color": "rgba(127,127,127,0.25)"},
            width=(t["hi"] - t["lo"]) * 0.9,
            hovertemplate="%{y:,} bars<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"color": GREY, "dash": "dash"}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=t["mean_predicted"],
            y=t["observed_frequency"],
            mode="lines+markers",
            name="observed",
            line={"color": BLUE},
            hovertemplate="predicted %{x:.3f}, observed %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        yaxis={"range": [0, 1], "title": {"text": "observed frequency of up"}},
        yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": {"text": "bars"}},
        xaxis={"range": [0, 1], "title": {"text": "predicted probability of up"}},
    )
    title = f"Reliability (ECE {rel.ece:.3f}, Brier {rel.brier:.4f}, {rel.n:,} bars)"
    _layout(fig, title, "observed frequency of up")
    fig.update_layout(hovermode="closest", margin={"r": 60})
    return fig


def buckets_figure(buckets: pd.DataFrame) -> go.Figure:
    """Hit rate per confidence bucket (bar labels: the number of bars)."""
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in zip(buckets["lo"], buckets["hi"], strict=True)]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=buckets["hit_rate"] * 100.0,
            text=[f"n={n:,}" for n in buckets["n"]],
            textposition="outside",
            marker={"color": BLUE},
            name="hit rate",
            hovertemplate="confidence %{x}: hit rate %{y:.1f}%<extra></extra>",
        )
    )
    fig.add_hline(y=50.0, line={"color": GREY, "dash": "dash"})
    fig.update_xaxes(type="category", title_text="confidence bucket")
    _layout(fig, "Hit rate by confidence bucket", "hit rate (%)", height=340)
    fig.update_layout(hovermode="closest")
    return fig


def coverage_figure(coverage: pd.DataFrame) -> go.Figure:
    """Accuracy when trading only the most confident share of the bars."""
    fig = go.Figure(
        go.Scatter(
            x=coverage["coverage"] * 100.0,
            y=coverage["accuracy"] * 100.0,
            mode="lines+markers",
            name="accuracy",
            line={"color": BLUE},
            hovertemplate="top %{x:.0f}%: accuracy %{y:.1f}%<extra></extra>",
        )
    )
    fig.add_hline(y=50.0, line={"color": GREY, "dash": "dash"})
    fig.update_xaxes(title_text="coverage: most confident share of bars traded (%)")
    _layout(fig, "Accuracy vs coverage", "accuracy (%)", height=340)
    fig.update_layout(hovermode="closest")
    return fig


def comparison_figure(
    equities: Mapping[str, pd.Series], max_points: int = MAX_POINTS
) -> go.Figure | None:
    """Each strategy's equity scaled to 1 at its first bar, overlaid, with a log switch."""
    curves = [
        (equity / float(equity.iloc[0]) if equity.iloc[0] else equity, name, PALETTE[k % 10])
        for k, (name, equity) in enumerate(equities.items())
        if len(equity)
    ]
    if not curves:
        return None
    fig, note = _time_lines(curves, max_points)
    _layout(fig, "Equity of each strategy (growth of 1)" + note, "growth of 1", height=420)
    _log_toggle(fig)
    return fig


def attention_heatmap(frame: pd.DataFrame) -> go.Figure:
    """The decision bar's attention per layer and head (a heatmap, rows down, the window's
    bars across, oldest first) above the ``"rollout"`` row drawn as bars on the same axis.

    ``frame`` is :func:`mlengine.nn.extraction.heatmap_frame`'s output (values in [0, 1]).
    """
    heads = frame.drop(index="rollout")
    rollout = frame.loc["rollout"]
    bars = [html.escape(str(c)) for c in frame.columns]
    rows = [html.escape(str(r)) for r in heads.index]
    z = heads.to_numpy(dtype=np.float64)
    top = max(float(z.max()), 1e-9) if z.size else 1.0
    head_px, rollout_px = 26 * max(len(rows), 1), 150
    share = head_px / (head_px + rollout_px)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[share, 1 - share]
    )
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=bars,
            y=rows,
            colorscale="Blues",
            zmin=0.0,
            zmax=top,
            xgap=1,
            ygap=1,
            colorbar={"title": {"text": "attention"}, "len": share, "y": 1, "yanchor": "top"},
            hovertemplate="%{y}, bar %{x}: %{z:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=bars,
            y=rollout.to_numpy(dtype=np.float64),
            name="rollout",
            marker={"color": ORANGE},
            hovertemplate="bar %{x}: %{y:.3f} of the embedding<extra>rollout</extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="rollout", rangemode="tozero", row=2, col=1)
    title = f"Attention of the decision bar over the last {len(bars):,} bars"
    _layout(fig, title, "", height=140 + head_px + rollout_px)
    fig.update_layout(hovermode="closest", showlegend=False, bargap=0.1)
    return fig


def feature_importance_figure(frame: pd.DataFrame) -> go.Figure:
    """Each feature's ``share`` of the total importance (percent), largest at the top."""
    ordered = frame.sort_values("share", kind="stable")
    fig = go.Figure(
        go.Bar(
            x=ordered["share"].to_numpy(dtype=np.float64) * 100.0,
            y=[html.escape(str(f)) for f in ordered.index],
            orientation="h",
            marker={"color": BLUE},
            texttemplate="%{x:.1f}%",
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2f}% of the importance<extra></extra>",
        )
    )
    fig.update_yaxes(type="category")
    fig.update_xaxes(title_text="share of the total importance (%)", rangemode="tozero")
    _layout(fig, "Feature importance", "", height=120 + 24 * max(len(ordered), 2))
    fig.update_layout(hovermode="closest", margin={"r": 60})
    return fig


def regime_figure(
    close: pd.Series, regime: pd.Series, max_points: int = MAX_POINTS
) -> go.Figure | None:
    """The close coloured by regime: one line per regime (``regime`` holds whole numbers,
    NaN where a bar has none, drawn grey), each run of a regime joined to the next bar so
    the line stays unbroken at a switch; each line min-max decimated. None without bars."""
    if close.empty:
        return None
    code = regime.to_numpy(dtype=np.float64, na_value=np.nan)
    prev = np.r_[np.nan, code[:-1]]
    colours = [c for c in PALETTE if c != GREY]
    curves = []
    for k in np.unique(code[np.isfinite(code)]).astype(np.int64):
        on = (code == k) | (prev == k)
        curves.append((close.where(on), f"regime {k}", colours[k % len(colours)]))
    if np.isnan(code).any():
        none = np.isnan(code) | np.isnan(prev)
        curves.append((close.where(none), "no regime", GREY))
    fig, note = _time_lines(curves, max_points)
    _layout(fig, "Price by regime" + note, "close", height=420)
    _log_toggle(fig)
    return fig


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _utc(index: pd.Index) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(index)
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


#: Event kinds of the structure overlay: lines (marks at the confirming bar) and zones.
EVENT_KINDS = ("bos", "choch", "sweep", "fvg", "ob")
_LINES = {"bos": ("BOS", BLUE), "choch": ("CHoCH", ORANGE), "sweep": ("sweep", PALETTE[4])}
_ZONES = {
    ("fvg", 1): ("bullish FVG", GREEN, 0.18),
    ("fvg", -1): ("bearish FVG", RED, 0.18),
    ("ob", 1): ("bullish order block", PALETTE[9], 0.25),
    ("ob", -1): ("bearish order block", PALETTE[6], 0.25),
}


def structure_figure(
    close: pd.Series | None,
    events: pd.DataFrame,
    swings: pd.DataFrame,
    max_points: int = MAX_POINTS,
) -> go.Figure | None:
    """Market structure over the close (if given), from the first event or swing on (None
    without events and swings).

    ``events``: ``kind`` (:data:`EVENT_KINDS`), ``direction`` (+1 / -1), ``level``, ``top``,
    ``bottom`` and the UTC times ``formed``, ``confirmed``, ``mitigated`` (NaT: open);
    ``swings``: ``ts``, ``kind`` (``high`` / ``low``), ``price``. Swings are marks at their
    bar; BOS, CHoCH and sweeps marks at the confirming bar (▲ bullish, ▼ bearish) with a
    dotted line back to the level's bar; FVGs and order blocks rectangles from the
    confirming bar to the mitigating one (or the end). Each kind is one trace (the
    rectangles of a kind one filled path with gaps), so hundreds of zones stay cheap.
    """
    stamps = pd.concat([events["formed"], swings["ts"]])
    if stamps.empty:
        return None
    if close is not None:
        close = close[_utc(close.index) >= stamps.min()]
    if close is not None and not close.empty:
        fig, note = _time_lines([(close, "close", GREY)], max_points)
        end = _utc(close.index)[-1]
    else:
        fig, note = go.Figure(), ""
        times = pd.concat([stamps, events["confirmed"], events["mitigated"]])
        end = times.max()
    for (kind, d), (label, color, alpha) in _ZONES.items():
        z = events[(events["kind"] == kind) & (events["direction"] == d)]
        if z.empty:
            continue
        x0 = epoch_ms(pd.DatetimeIndex(z["confirmed"]))
        x1 = epoch_ms(pd.DatetimeIndex(z["mitigated"].fillna(end)))
        lo, hi = z["bottom"].to_numpy(np.float64), z["top"].to_numpy(np.float64)
        gap = np.full(len(z), np.nan)
        fig.add_trace(
            go.Scatter(
                x=np.column_stack([x0, x1, x1, x0, x0, gap]).ravel(),
                y=np.column_stack([lo, lo, hi, hi, lo, gap]).ravel(),
                mode="lines",
                fill="toself",
                fillcolor=_rgba(color, alpha),
                line={"color": _rgba(color, min(2 * alpha, 1.0)), "width": 0.5},
                name=f"{label} ({len(z):,})",
                hoveron="fills",
                hoverinfo="name",
            )
        )
    for kind, (label, color) in _LINES.items():
        e = events[events["kind"] == kind]
        if e.empty:
            continue
        x0 = epoch_ms(pd.DatetimeIndex(e["formed"]))
        x1 = epoch_ms(pd.DatetimeIndex(e["confirmed"]))
        level = e["level"].to_numpy(np.float64)
        gap = np.full(len(e), np.nan)
        fig.add_trace(
            go.Scatter(
                x=np.column_stack([x0, x1, gap]).ravel(),
                y=np.column_stack([level, level, gap]).ravel(),
                mode="lines",
                line={"color": color, "width": 1, "dash": "dot"},
                legendgroup=kind,
                showlegend=False,
                hoverinfo="skip",
            )
        )
        up = e["direction"].to_numpy() > 0
        fig.add_trace(
            go.Scatter(
                x=x1,
                y=level,
                mode="markers",
                marker={
                    "color": color,
                    "size": 9,
                    "symbol": np.where(up, "triangle-up", "triangle-down"),
                    "line": {"width": 0.5, "color": "#ffffff"},
                },
                customdata=np.where(up, "bullish", "bearish"),
                name=f"{label} ({len(e):,})",
                legendgroup=kind,
                hovertemplate=_TIME_HOVER
                + f"%{{customdata}} {label} at %{{y:,.5g}}<extra></extra>",
            )
        )
    for kind, color, symbol in (
        ("high", RED, "triangle-down-open"),
        ("low", GREEN, "triangle-up-open"),
    ):
        s = swings[swings["kind"] == kind]
        if s.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=epoch_ms(pd.DatetimeIndex(s["ts"])),
                y=s["price"].to_numpy(np.float64),
                mode="markers",
                marker={"color": color, "size": 7, "symbol": symbol},
                name=f"swing {kind}s ({len(s):,})",
                hovertemplate=_TIME_HOVER + f"swing {kind} " + "%{y:,.5g}<extra></extra>",
            )
        )
    fig.update_xaxes(type="date")
    title = f"Market structure: {len(events):,} events, {len(swings):,} swings{note}"
    _layout(fig, title, "price", height=520)
    legend = {"x": 0.0, "xanchor": "left", "y": -0.1, "yanchor": "top"}
    fig.update_layout(hovermode="closest", legend=legend, margin={"b": 100})
    return fig


def timeframe_attention_figure(frame: pd.DataFrame) -> go.Figure:
    """The weight of each timeframe (columns) in percent, one group of bars per row."""
    timeframes = [html.escape(str(c)) for c in frame.columns]
    fig = go.Figure()
    for k, (row, values) in enumerate(frame.iterrows()):
        label = html.escape(str(row))
        fig.add_trace(
            go.Bar(
                x=timeframes,
                y=values.to_numpy(dtype=np.float64) * 100.0,
                name=label,
                marker={"color": PALETTE[k % len(PALETTE)]},
                texttemplate="%{y:.1f}%",
                textposition="outside",
                cliponaxis=False,
                hovertemplate="%{x}: %{y:.1f}%<extra>" + label + "</extra>",
            )
        )
    fig.update_xaxes(type="category", title_text="timeframe")
    fig.update_yaxes(rangemode="tozero")
    _layout(fig, "Attention across timeframes", "weight (%)", height=340)
    fig.update_layout(barmode="group", hovermode="closest")
    return fig


def gate_weights_figure(weights: pd.DataFrame, max_points: int = MAX_POINTS) -> go.Figure | None:
    """The metamodel gate's weight of each strategy (columns) over time (a UTC
    ``DatetimeIndex``), stacked to 1 (one filled area per strategy). More than
    ``max_points`` bars are sub-sampled evenly (first and last bar kept): weights are
    not cumulative, so every drawn point is a true bar. None without bars."""
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    n = len(weights)
    if n == 0:
        return None
    shown, note = weights, ""
    if n > max_points:
        rows = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
        shown = weights.iloc[rows]
        note = f" <sup>(sub-sampled: {len(shown):,} of {n:,} bars drawn)</sup>"
    x = epoch_ms(shown.index)
    fig = go.Figure()
    for k, column in enumerate(shown.columns):
        label = html.escape(str(column))
        color = PALETTE[k % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_values(shown[column]),
                name=label,
                mode="lines",
                stackgroup="gate",
                line={"color": color, "width": 0.6},
                fillcolor=_rgba(color, 0.6),
                hovertemplate="%{y:.1%}<extra>" + label + "</extra>",
            )
        )
    fig.update_xaxes(type="date")
    fig.update_yaxes(range=[0.0, 1.0], tickformat=".0%")
    return _layout(fig, "Gate weights over time" + note, "weight", height=380)


def calibration_figure(bins: pd.DataFrame) -> go.Figure | None:
    """Reliability before and after calibration: per ``stage`` (in order of appearance) the
    observed frequency of an up move against the mean predicted probability of each
    non-empty bin, markers sized by the bin's bars, and the diagonal. ``bins`` has the
    columns ``stage``, ``n``, ``mean_predicted``, ``observed_frequency``. None without
    non-empty bins."""
    filled = bins[bins["n"] > 0]
    if filled.empty:
        return None
    largest = float(filled["n"].max())
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfectly calibrated",
            line={"color": GREY, "dash": "dash"},
            hoverinfo="skip",
        )
    )
    colours = [c for c in PALETTE if c != GREY]
    for k, stage in enumerate(pd.unique(filled["stage"])):
        t = filled[filled["stage"] == stage]
        label = html.escape(str(stage))
        n = t["n"].to_numpy(dtype=np.float64)
        fig.add_trace(
            go.Scatter(
                x=t["mean_predicted"].to_numpy(dtype=np.float64),
                y=t["observed_frequency"].to_numpy(dtype=np.float64),
                mode="lines+markers",
                name=label,
                line={"color": colours[k % len(colours)]},
                marker={"size": 6.0 + 12.0 * np.sqrt(n / largest)},
                customdata=n,
                hovertemplate="predicted %{x:.3f}, observed %{y:.3f}, %{customdata:,.0f} bars"
                "<extra>" + label + "</extra>",
            )
        )
    fig.update_xaxes(range=[0.0, 1.0], title_text="mean predicted probability of up")
    fig.update_yaxes(range=[0.0, 1.0])
    _layout(fig, "Calibration before and after", "observed frequency of up", height=440)
    fig.update_layout(hovermode="closest")
    return fig
