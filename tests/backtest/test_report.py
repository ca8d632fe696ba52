"""The HTML report: sections, charts, escaping, offline page, size, bad input.

The report is built from a real backtest: an SMA(24/120) crossover on the bundled Coinbase
BTCUSD 1h bars, compared with buy-and-hold through the same engine; its model explanations
come from a small transformer encoder through :mod:`mlengine.nn.extraction`, MSA's market
structure summary of the last real bars, a timeframe-attention table, a metamodel gate's
weights over the last real bars and the reliability of the crossover's probability before
and after an isotonic calibration.
``report_inputs`` is shared with the browser test, ``model_explanations`` with the run tests.
"""

from __future__ import annotations

import functools
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plotly.offline import get_plotlyjs

from mlengine import datasets
from mlengine.backtest import _charts, report, validity
from mlengine.backtest.confidence import analyse_confidence, reliability
from mlengine.backtest.engine import BacktestResult, run_backtest
from mlengine.backtest.report import ReportError, default_rolling_window, render_report
from mlengine.data.schema import make_bar_frame
from mlengine.ensemble.calibration import IsotonicCalibrator, calibration_metrics
from mlengine.nn.extraction import extract_attention, feature_importance, heatmap_frame
from mlengine.strategies.msa import MSA, PREDICTION_TYPES
from tests.nn.test_encoders import L, encoder, windows

FULL_FIGURES = [
    "equity",
    "drawdown",
    "monthly",
    "rolling-sharpe",
    "trades",
    "exposure",
    "reliability",
    "confidence-buckets",
    "accuracy-coverage",
    "comparison",
    "attention",
    "feature-importance",
    "structure",
    "timeframe-attention",
    "gate-weights",
    "calibration",
]
BASIC_FIGURES = FULL_FIGURES[:6]
HOSTILE = "SMA <script>alert('x')</script> & <b>co</b>"
FEATURES = ["log_return", "range", "body", "volume_z", "hour"]


def model_explanations(bars: pd.DatetimeIndex) -> dict[str, pd.DataFrame]:
    """What an explainable strategy hands over: the attention of a small transformer's last
    window, labelled with the last ``L`` of ``bars`` as text, its feature importance and a
    free-form table."""
    enc, x = encoder(), windows()
    attention = heatmap_frame(extract_attention(enc, x), bars=bars[-L:])
    attention.columns = pd.DatetimeIndex(attention.columns).strftime("%Y-%m-%d %H:%M")
    fold_scores = pd.DataFrame(
        {"fold": [0, 1], "split": ["early", "late"], "accuracy": [0.51, 0.53]}
    )
    return {
        "attention": attention,
        "feature_importance": feature_importance(enc, x, feature_names=FEATURES),
        "fold_scores": fold_scores,
    }


@functools.cache
def _structure() -> dict[str, pd.DataFrame]:
    bars = datasets.load("btcusd_1h_coinbase").iloc[-2000:]
    diagnostics = dict.fromkeys(PREDICTION_TYPES[1:], 0.0)
    pred = pd.DataFrame({"p_up": 0.5, **diagnostics}, index=bars.index)
    return MSA().summarize(pred, bars)


def structure() -> dict[str, pd.DataFrame]:
    """MSA's summary of the last 2,000 real bars (``structure_metrics``,
    ``structure_events``, ``swings``), fresh copies."""
    return {name: frame.copy() for name, frame in _structure().items()}


def timeframe_attention() -> pd.DataFrame:
    """An MTS-style ``timeframe_attention`` table: rows of weights over three timeframes."""
    return pd.DataFrame(
        [[0.5, 0.3, 0.2], [0.62, 0.23, 0.15]],
        index=pd.Index(["mean", "last"], name="windows"),
        columns=["1h", "4h", "1d"],
    )


GATE_STRATEGIES = ["trend", "mean_reversion", "breakout"]
CALIBRATION_COLUMNS = ["stage", "bin", "lo", "hi", "n", "mean_predicted", "observed_frequency"]


@functools.cache
def _gate_weights() -> pd.DataFrame:
    path = regime_path()
    close = pd.Series(path["close"].to_numpy())
    momentum = (close.pct_change(24) * 40.0).fillna(0.0).to_numpy()
    activity = (close.pct_change().abs().rolling(24).mean() * 400.0).fillna(0.0).to_numpy()
    scores = np.column_stack([momentum, -momentum, activity - 1.0])
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    columns = dict(zip(GATE_STRATEGIES, weights.T, strict=True))
    return pd.DataFrame({"ts": path["ts"], **columns, "regime": path["regime"]})


def gate_weights() -> pd.DataFrame:
    """A metamodel gate's ``gate_weights`` over the 3,000 bars of :func:`regime_path`: a
    softmax of three scores of the real bars (24-bar momentum for the trend follower, its
    opposite for mean reversion, recent activity for the breakout strategy), with the
    regime of each bar (none for the first 24). A fresh copy."""
    return _gate_weights().copy()


@functools.cache
def _calibration() -> tuple[pd.DataFrame, pd.DataFrame]:
    close = runs()[0]["close"]
    after = close.shift(-1)
    keep = (p_up_of(close).notna() & after.notna()).to_numpy()
    prob = p_up_of(close).to_numpy()[keep]
    up = (after > close).to_numpy(dtype=np.float64)[keep]
    half = prob.size // 2
    fitted = IsotonicCalibrator().fit(prob[:half], up[:half])
    stages = {"raw": prob[half:], "calibrated": fitted.transform(prob[half:])}
    bins = pd.concat(
        [reliability(p, up[half:]).table.assign(stage=name) for name, p in stages.items()],
        ignore_index=True,
    )
    scores = [
        {"stage": name}
        | {k: v for k, v in calibration_metrics(p, up[half:]).items() if k != "bins"}
        for name, p in stages.items()
    ]
    return bins[CALIBRATION_COLUMNS], pd.DataFrame(scores)[
        ["stage", "brier", "log_loss", "ece", "n"]
    ]


def calibration_bins() -> pd.DataFrame:
    """The ``calibration`` frame of the crossover's probability on the later half of the
    real bars: reliability bins of the raw probability and of an isotonic calibration fitted
    on the earlier half (rows 0-9 raw, 10-19 calibrated). A fresh copy."""
    return _calibration()[0].copy()


def calibration_scores() -> pd.DataFrame:
    """The matching ``calibration_metrics`` frame (Brier, log-loss, ECE per stage)."""
    return _calibration()[1].copy()


def sma_position(close: pd.Series, fast: int = 24, slow: int = 120) -> pd.Series:
    """Long when the fast SMA is above the slow one, short below, flat before both exist."""
    spread = close.rolling(fast).mean() - close.rolling(slow).mean()
    return pd.Series(np.sign(spread), index=close.index).fillna(0.0)


def verdict_of(result: BacktestResult, close: pd.Series) -> validity.Verdict:
    held = result.signal.iloc[:, 0].shift(1, fill_value=0.0)  # decided at t-1, held over t
    return validity.assess(
        result.returns,
        result.metrics,
        bar_returns=close.pct_change().fillna(0.0),
        position=held,
        n_trials=1,
        config=validity.ValidityConfig(bootstrap_reps=100, baseline_samples=100),
    )


@functools.cache
def runs() -> tuple[pd.DataFrame, BacktestResult, BacktestResult]:
    """The real bars, the SMA crossover backtest and the buy-and-hold backtest."""
    bars = datasets.load("btcusd_1h_coinbase")
    sma = run_backtest(bars, pd.DataFrame({"position": sma_position(bars["close"])}))
    hold = run_backtest(bars, pd.DataFrame({"position": 1.0}, index=bars.index))
    return bars, sma, hold


def data_range(bars: pd.DataFrame) -> dict[str, Any]:
    return {
        "symbol": bars.attrs["symbol"],
        "timeframe": bars.attrs["timeframe"],
        "start": bars.index[0].isoformat(),
        "end": bars.index[-1].isoformat(),
        "bars": len(bars),
    }


def basic_inputs(bars: pd.DataFrame, result: BacktestResult) -> dict[str, Any]:
    """The required inputs only: no verdict, probabilities, benchmark or comparison."""
    return {
        "title": "SMA 24/120 crossover, BTCUSD 1h",
        "equity": result.equity,
        "trades": result.trades,
        "exposure": result.net_exposure,
        "periods_per_year": result.periods_per_year,
        "metrics": result.metrics.to_dict(),
        "config": {"strategy": "sma_crossover", "fast": 24, "slow": 120} | result.config.to_dict(),
        "data_range": data_range(bars),
    }


def p_up_of(close: pd.Series) -> pd.Series:
    """A probability of "up" from the SMA spread (a logistic squash; NaN before the SMAs)."""
    spread = close.rolling(24).mean() / close.rolling(120).mean() - 1.0
    return (1.0 / (1.0 + np.exp(-40.0 * spread))).rename("p_up")


@functools.cache
def _full() -> dict[str, Any]:
    bars, sma, hold = runs()
    close = bars["close"]
    verdicts = {"SMA 24/120": verdict_of(sma, close), "buy & hold": verdict_of(hold, close)}
    results = {"SMA 24/120": sma, "buy & hold": hold}
    comparison = pd.DataFrame(
        [
            {
                "name": name,
                "total_return": r.metrics.total_return,
                "sharpe": r.metrics.sharpe,
                "max_drawdown": r.metrics.max_drawdown,
                "n_trades": r.metrics.n_trades,
                "score": verdicts[name].score,
                "effective": verdicts[name].effective,
            }
            for name, r in results.items()
        ]
    )
    return basic_inputs(bars, sma) | {
        "returns": sma.returns,
        "benchmark": hold.equity.rename("buy & hold"),
        "verdict": verdicts["SMA 24/120"].to_dict(),
        "p_up": p_up_of(close),
        "close": close,
        "comparison": comparison,
        "comparison_equity": {name: r.equity for name, r in results.items()},
        "explanations": model_explanations(pd.DatetimeIndex(bars.index))
        | structure()
        | {
            "timeframe_attention": timeframe_attention(),
            "gate_weights": gate_weights(),
            "calibration": calibration_bins(),
            "calibration_metrics": calibration_scores(),
        },
        "extra_sections": [("Notes", "<p id='extra-note'>A later stage's section.</p>")],
    }


def report_inputs(full: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``render_report`` for the real SMA backtest (a fresh dict)."""
    if full:
        return dict(_full())
    bars, sma, _ = runs()
    return basic_inputs(bars, sma)


class PageParser(HTMLParser):
    """Scripts, external references, section ids and charts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.references: list[str] = []
        self.sections: list[str] = []
        self.figures: list[str] = []
        self.meta: dict[str, str] = {}
        self.h1 = ""
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
        for key in ("src", "href", "data"):
            if a.get(key) and not str(a[key]).startswith("#"):
                self.references.append(str(a[key]))
        if tag == "section" and a.get("id"):
            self.sections.append(str(a["id"]))
        if a.get("data-figure"):
            self.figures.append(str(a["data-figure"]))
        if tag == "meta" and a.get("name"):
            self.meta[str(a["name"])] = str(a.get("content"))
        self._in_h1 = tag == "h1"

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self.h1 += data


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def full_page() -> str:
    return render_report(**report_inputs())


# --- content ------------------------------------------------------------------------------


def test_full_report_has_every_section_and_chart(full_page: str) -> None:
    page = parse(full_page)
    assert page.sections == [
        "metrics", "verdict", "equity", "drawdown", "monthly", "rolling-sharpe", "trades",
        "exposure", "confidence", "comparison", "explanations", "extra-0", "config",
    ]  # fmt: skip
    assert page.figures == FULL_FIGURES
    assert page.meta["mlengine-figures"] == str(len(FULL_FIGURES))
    assert full_page.count("Plotly.newPlot(") == len(FULL_FIGURES)
    assert "id='extra-note'" in full_page  # extra sections are inserted as given


def test_page_is_self_contained(full_page: str) -> None:
    page = parse(full_page)
    assert all("src" not in s for s in page.scripts)  # every script is inline
    assert page.references == []  # no src/href/data pointing anywhere
    assert full_page.count(get_plotlyjs()) == 1  # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]+src=", full_page)
    assert "cdn.plot.ly/plotly" not in full_page.replace(get_plotlyjs(), "")


def test_key_metrics_and_verdict_are_shown(full_page: str) -> None:
    _, sma, _ = runs()
    m = sma.metrics
    assert f"{m.sharpe:.4g}" in full_page
    assert f"{m.total_return:.2%}" in full_page
    assert f"{m.max_drawdown:.2%}" in full_page
    assert f">{m.n_trades:,}<" in full_page
    verdict = report_inputs()["verdict"]
    passed = [c["passed"] for c in verdict["criteria"]]
    assert full_page.count('class="pass">PASS') == passed.count(True)
    assert full_page.count('class="fail">FAIL') == passed.count(False)
    for c in verdict["criteria"]:
        assert c["label"] in full_page
    word = "EFFECTIVE" if verdict["effective"] else "NOT EFFECTIVE"
    assert f"{word} · score {verdict['score']:.2%}" in full_page
    assert "Criteria not met" in full_page  # this crossover misses the drawdown target
    assert "sma_crossover" in full_page and "commission_bps" in full_page  # configuration


def test_confidence_section_matches_the_analysis(full_page: str) -> None:
    bars, _, _ = runs()
    close = bars["close"]
    analysis = analyse_confidence(p_up_of(close), next_return=close.shift(-1) / close - 1.0)
    assert analysis.reliability is not None
    assert f"ECE {analysis.reliability.ece:.3f}" in full_page
    for rate in analysis.buckets["hit_rate"]:
        assert f"{rate:.2%}" in full_page


def test_report_without_optional_inputs() -> None:
    page_text = render_report(**report_inputs(full=False))
    page = parse(page_text)
    assert page.figures == BASIC_FIGURES
    assert "confidence" not in page.sections and "comparison" not in page.sections
    assert "explanations" not in page.sections and "Model explanations" not in page_text
    empty = render_report(**report_inputs(full=False), explanations={})
    assert "explanations" not in parse(empty).sections
    assert "No validity verdict was computed" in page_text
    assert "no validity verdict" in page_text  # the header badge


def test_a_run_without_trades_still_reports() -> None:
    bars, _, _ = runs()
    flat = run_backtest(bars, pd.DataFrame({"position": 0.0}, index=bars.index))
    page_text = render_report(**basic_inputs(bars, flat))
    page = parse(page_text)
    assert page.figures == [f for f in BASIC_FIGURES if f != "trades"]
    assert "Nothing to draw." in page_text
    assert "n/a" in page_text  # NaN metrics (win rate, Sharpe) are shown as n/a


def test_text_is_escaped() -> None:
    kwargs = report_inputs()
    evil = "</script><script>alert(1)</script>"
    kwargs["title"] = HOSTILE
    kwargs["comparison_equity"] = {evil: kwargs["equity"]}
    kwargs["comparison"] = kwargs["comparison"].assign(name=[evil, "<i>hold</i>"])
    kwargs["config"] = {"note": evil}
    kwargs["data_range"] = {"symbol": "<b>BTC</b>", "bars": 1}
    importance = kwargs["explanations"]["feature_importance"]
    kwargs["explanations"] = kwargs["explanations"] | {
        "feature_importance": importance.rename(index={FEATURES[0]: evil}),
        "gate_weights": kwargs["explanations"]["gate_weights"].rename(columns={"trend": evil}),
        "calibration": kwargs["explanations"]["calibration"].replace({"stage": {"raw": evil}}),
        evil: pd.DataFrame({"note": [evil]}),
    }
    page_text = render_report(**kwargs)
    page = parse(page_text)
    assert page.h1 == HOSTILE  # shown as text
    assert "<title>SMA &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in page_text
    assert "alert(1)</script>" not in page_text
    assert "<b>BTC</b>" not in page_text and "&lt;b&gt;BTC&lt;/b&gt;" in page_text
    assert "<i>hold</i>" not in page_text
    scripts = [s for s in page.scripts if "src" in s]
    assert scripts == []
    assert len(page.figures) == len(FULL_FIGURES)


def test_size_is_bounded_for_200k_bars(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))  # synthetic: size test only
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0.0, 0.0005, n)) * close
    bars = make_bar_frame(
        pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC"),
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": np.ones(n),
        },
        symbol="SYNTH",
        timeframe="1m",
    )
    result = run_backtest(
        bars, pd.DataFrame({"position": sma_position(bars["close"], 60, 600)}), market="crypto"
    )
    inputs = basic_inputs(bars, result) | {
        "benchmark": result.equity.iloc[0] * bars["close"] / bars["close"].iloc[0]
    }
    path = report.write_report(tmp_path / "big" / "report.html", **inputs)
    size = path.stat().st_size
    plotly_js = len(get_plotlyjs())
    # 5 time series + a benchmark, at most 20,000 points each: ~2 MB beside plotly.js
    assert size < plotly_js + 3_000_000, size
    text = path.read_text(encoding="utf-8")
    assert text.count("min-max decimated") == 4  # equity, drawdown, rolling Sharpe, exposure
    drawn = [int(k.replace(",", "")) for k in re.findall(r"decimated: ([\d,]+) of 200,000", text)]
    assert len(drawn) == 4 and all(0 < k <= _charts.MAX_POINTS for k in drawn)


def test_explanations_section_draws_the_extraction_output(full_page: str) -> None:
    explained = report_inputs()["explanations"]
    attention, importance = explained["attention"], explained["feature_importance"]
    section = full_page.split('<section id="explanations">')[1].split("</section>")[0]
    figures = parse(section).figures
    assert figures == [
        "attention", "feature-importance", "structure", "timeframe-attention", "gate-weights",
        "calibration",
    ]  # fmt: skip
    assert "the window&#x27;s last bar" in section and "attention rollout" in section
    assert "<h3>Fold scores</h3>" in section and ">late<" in section
    assert ">53.00%<" in section  # a free-form table, formatted like the others
    fig = _charts.attention_heatmap(attention)
    heads, rollout = fig.data
    assert list(heads.y) == list(attention.index[:-1]) and attention.index[-1] == "rollout"
    assert list(heads.x) == list(rollout.x) == list(attention.columns)
    assert heads.x[-1] == pd.Timestamp(runs()[0].index[-1]).strftime("%Y-%m-%d %H:%M")
    np.testing.assert_array_equal(heads.z, attention.iloc[:-1].to_numpy())
    np.testing.assert_array_equal(rollout.y, attention.loc["rollout"].to_numpy())
    assert heads.zmin == 0.0 and heads.zmax == attention.iloc[:-1].to_numpy().max()
    bars = _charts.feature_importance_figure(importance).data[0]
    ordered = importance.sort_values("share")
    assert list(bars.y) == list(ordered.index) and list(bars.y)[-1] == importance["share"].idxmax()
    np.testing.assert_allclose(bars.x, ordered["share"] * 100.0)


@functools.cache
def regime_path() -> pd.DataFrame:
    """A strategy's ``regime_path`` summary over the last 3,000 real bars: regimes 0-2 by
    terciles of the mean absolute return of the last 24 bars, none before that."""
    bars = runs()[0].iloc[-3000:]
    close = bars["close"]
    activity = close.pct_change().abs().rolling(24).mean()
    regime = pd.qcut(activity, 3, labels=False).astype(float)
    return pd.DataFrame(
        {"ts": [t.isoformat() for t in bars.index], "close": close.to_numpy(), "regime": regime}
    ).reset_index(drop=True)


def test_regime_path_is_drawn_as_the_price_coloured_by_regime() -> None:
    frame = regime_path()
    stats = pd.DataFrame({"regime": [0, 1, 2], "share": [0.3, 0.3, 0.4]})
    explanations = {"regime_stats": stats, "regime_path": frame}
    page_text = render_report(**report_inputs(full=False), explanations=explanations)
    section = page_text.split('<section id="explanations">')[1].split("</section>")[0]
    assert parse(section).figures == ["regime-path"]
    assert "<h3>Regime stats</h3>" in section and "<h3>Regime path</h3>" not in section
    assert "coloured by the regime" in section
    index = pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True))
    close = pd.Series(frame["close"].to_numpy(), index=index)
    regime = pd.Series(frame["regime"].to_numpy(), index=index)
    fig = _charts.regime_figure(close, regime)
    assert fig is not None
    assert [t.name for t in fig.data] == ["regime 0", "regime 1", "regime 2", "no regime"]
    assert len({t.line.color for t in fig.data}) == 4
    code = frame["regime"].to_numpy()
    prev = np.r_[np.nan, code[:-1]]
    for k, trace in enumerate(fig.data[:3]):
        drawn = np.isfinite(np.asarray(trace.y, dtype=np.float64))
        # the regime's bars, each run joined to the bar after it
        np.testing.assert_array_equal(drawn, (code == k) | (prev == k))
        np.testing.assert_allclose(np.asarray(trace.y)[drawn], close[drawn], rtol=1e-6)
    assert np.isfinite(np.asarray(fig.data[3].y, dtype=np.float64)).sum() == 24 + 1
    small = _charts.regime_figure(close, regime, max_points=200)
    assert small is not None and "min-max decimated" in small.layout.title.text
    assert all(len(t.y) <= 200 for t in small.data)
    empty = frame.iloc[:0]
    assert "Nothing to draw." in render_report(
        **report_inputs(full=False), explanations={"regime_path": empty}
    )


def _explanations_section(page_text: str) -> str:
    return page_text.split('<section id="explanations">')[1].split("</section>")[0]


def test_structure_is_drawn_over_the_close_and_timeframes_as_bars(full_page: str) -> None:
    explained = report_inputs()["explanations"]
    section = _explanations_section(full_page)
    assert "<h3>Structure metrics</h3>" in section  # a free-form table
    assert "<h3>Structure events</h3>" not in section and "<h3>Swings</h3>" not in section
    assert "changes of character" in section and "each row sums to 100%" in section
    events = report._structure_frame(explained["structure_events"], "structure_events")
    found = report._structure_frame(explained["swings"], "swings")
    close = runs()[0]["close"]
    fig = _charts.structure_figure(close, events, found)
    assert fig is not None
    count = events.groupby(["kind", "direction"]).size()
    sides = {1: "bullish", -1: "bearish"}
    zones = [
        f"{sides[d]} {'FVG' if k == 'fvg' else 'order block'} ({count[k, d]:,})"
        for k in ("fvg", "ob")
        for d in (1, -1)
        if (k, d) in count
    ]
    labels = {"bos": "BOS", "choch": "CHoCH", "sweep": "sweep"}
    lines = [f"{label} ({(events['kind'] == k).sum():,})" for k, label in labels.items()]
    swing_names = [f"swing {k}s ({(found['kind'] == k).sum():,})" for k in ("high", "low")]
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert shown == ["close", *zones, *lines, *swing_names]
    assert len(zones) == 4 and len(fig.data) == 1 + 4 + 2 * 3 + 2  # one trace per kind
    traces = {str(t.name).split(" (")[0]: t for t in fig.data if t.name}
    # the close from the first event or swing on, to the last bar
    start = min(events["formed"].min(), found["ts"].min())
    drawn = close[close.index >= start]
    np.testing.assert_array_equal(traces["close"].x, _charts.epoch_ms(drawn.index))
    # zones: one rectangle per event, from the confirming bar to the mitigating one or the end
    z = events[(events["kind"] == "fvg") & (events["direction"] == 1)]
    x = np.asarray(traces["bullish FVG"].x, dtype=np.float64).reshape(-1, 6)
    y = np.asarray(traces["bullish FVG"].y, dtype=np.float64).reshape(-1, 6)
    assert traces["bullish FVG"].fill == "toself"
    np.testing.assert_array_equal(x[:, 0], _charts.epoch_ms(pd.DatetimeIndex(z["confirmed"])))
    end = z["mitigated"].fillna(close.index[-1])
    np.testing.assert_array_equal(x[:, 1], _charts.epoch_ms(pd.DatetimeIndex(end)))
    assert z["mitigated"].isna().any() and z["mitigated"].notna().any()
    np.testing.assert_array_equal(y[:, [0, 1, 4]], np.repeat(z["bottom"].to_numpy()[:, None], 3, 1))
    np.testing.assert_array_equal(y[:, [2, 3]], np.repeat(z["top"].to_numpy()[:, None], 2, 1))
    assert np.isnan(x[:, 5]).all() and np.isnan(y[:, 5]).all()
    # breaks: a mark at the confirming bar and level, pointing the break's way
    b = events[events["kind"] == "bos"]
    np.testing.assert_array_equal(
        traces["BOS"].x, _charts.epoch_ms(pd.DatetimeIndex(b["confirmed"]))
    )
    np.testing.assert_array_equal(traces["BOS"].y, b["level"])
    up = b["direction"].to_numpy() > 0
    assert list(traces["BOS"].marker.symbol) == [
        "triangle-up" if u else "triangle-down" for u in up
    ]
    highs = found[found["kind"] == "high"]
    np.testing.assert_array_equal(
        traces["swing highs"].x, _charts.epoch_ms(pd.DatetimeIndex(highs["ts"]))
    )
    np.testing.assert_array_equal(traces["swing highs"].y, highs["price"])
    # the attention across timeframes: one bar per timeframe and row, in percent
    frame = explained["timeframe_attention"]
    bars_fig = _charts.timeframe_attention_figure(frame)
    assert [t.name for t in bars_fig.data] == ["mean", "last"]
    assert bars_fig.layout.barmode == "group"
    for trace, (_, row) in zip(bars_fig.data, frame.iterrows(), strict=True):
        assert list(trace.x) == list(frame.columns)
        np.testing.assert_allclose(trace.y, row.to_numpy() * 100.0)


def test_structure_without_close_or_events(tmp_path: Path) -> None:
    frames = structure()
    page_text = render_report(
        **report_inputs(full=False), explanations={"swings": frames["swings"]}
    )
    assert parse(_explanations_section(page_text)).figures == ["structure"]
    found = report._structure_frame(frames["swings"], "swings")
    events = report._structure_frame(frames["structure_events"].iloc[:0], "structure_events")
    fig = _charts.structure_figure(None, events, found)
    assert fig is not None and [t.name for t in fig.data] == [
        f"swing highs ({(found['kind'] == 'high').sum():,})",
        f"swing lows ({(found['kind'] == 'low').sum():,})",
    ]
    empty = {name: frames[name].iloc[:0] for name in ("structure_events", "swings")}
    assert "Nothing to draw." in render_report(**report_inputs(full=False), explanations=empty)
    # as a run directory stores them (Parquet) they draw the same
    stored = {}
    for name in ("structure_events", "swings"):
        frames[name].to_parquet(tmp_path / f"{name}.parquet")
        stored[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    kwargs = report_inputs(full=False) | {"close": runs()[0]["close"]}
    assert render_report(**kwargs, explanations=stored) == render_report(
        **kwargs, explanations={k: frames[k] for k in stored}
    )


def _rows(table_html: str) -> dict[str, list[str]]:
    """The body rows of the tables in ``table_html``, by their first cell: the other cells."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table_html):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        if cells:
            rows[cells[0]] = cells[1:]
    return rows


def _gate_table(section: str) -> dict[str, list[str]]:
    return _rows(section.split("<b>Mean gate weight by regime</b>")[1].split("</table>")[0])


def _weights(frame: pd.DataFrame) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(frame["ts"], utc=True, format="ISO8601"))
    return frame[GATE_STRATEGIES].set_axis(index)


def test_gate_weights_are_stacked_over_time_with_the_mean_per_regime() -> None:
    frame = gate_weights()
    page_text = render_report(**report_inputs(full=False), explanations={"gate_weights": frame})
    assert parse(page_text).figures == [*BASIC_FIGURES, "gate-weights"]
    assert parse(page_text).meta["mlengine-figures"] == str(len(BASIC_FIGURES) + 1)
    section = _explanations_section(page_text)
    assert parse(section).figures == ["gate-weights"]
    assert "<h3>Gate weights</h3>" not in section
    assert "Gate weights over time" in section and "sub-sampled" not in section
    # the caption above the chart, the table under it
    caption = section.index("which strategy leads")
    chart = section.index('data-figure="gate-weights"')
    assert caption < chart < section.index("Mean gate weight by regime")
    for name in GATE_STRATEGIES:
        assert f'"name":"{name}"' in section and '"stackgroup":"gate"' in section
    # the mean weight of each strategy over all bars and over each regime's bars
    weights, regime = frame[GATE_STRATEGIES], frame["regime"]
    means = {"all": weights.mean()}
    means |= {f"regime {k:.0f}": m for k, m in weights.groupby(regime).mean().iterrows()}
    means["no regime"] = weights[regime.isna()].mean()
    sizes = {"all": len(frame), "no regime": int(regime.isna().sum())}
    sizes |= {f"regime {k:.0f}": n for k, n in regime.value_counts().items()}
    table = _gate_table(section)
    assert list(table) == ["all", "regime 0", "regime 1", "regime 2", "no regime"]
    assert sizes["no regime"] == 24
    for label, mean in means.items():
        expected = [f"{sizes[label]:,}", *(f"{v:.2%}" for v in mean), str(mean.idxmax())]
        assert table[label] == expected, label
    assert len({row[-1] for row in table.values()}) > 1  # the lead changes with the regime
    # the chart: one stacked area per strategy, every bar, y on [0, 1]
    fig = _charts.gate_weights_figure(_weights(frame))
    assert fig is not None
    assert [t.name for t in fig.data] == GATE_STRATEGIES
    assert {t.stackgroup for t in fig.data} == {"gate"}
    assert tuple(fig.layout.yaxis.range) == (0.0, 1.0)
    for trace, name in zip(fig.data, GATE_STRATEGIES, strict=True):
        np.testing.assert_array_equal(trace.x, _charts.epoch_ms(_weights(frame).index))
        np.testing.assert_allclose(trace.y, frame[name], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="max_points must be at least 4"):
        _charts.gate_weights_figure(_weights(frame), 3)


def test_gate_weights_without_regime_within_tolerance_or_empty() -> None:
    # rounding within the 1e-6 tolerance is accepted
    frame = _unbalanced(gate_weights().drop(columns="regime"), 11, 5e-7)
    page_text = render_report(**report_inputs(full=False), explanations={"gate_weights": frame})
    table = _gate_table(_explanations_section(page_text))
    assert list(table) == ["all"]
    assert table["all"][1:-1] == [f"{frame[n].mean():.2%}" for n in GATE_STRATEGIES]
    over = _unbalanced(frame, 11, 1e-5)
    ts = pd.Timestamp(str(frame["ts"].iloc[11])).isoformat()
    with pytest.raises(ReportError, match=re.escape(f"sum to 1: row 11 ({ts}) sums to 1.0000")):
        render_report(**report_inputs(full=False), explanations={"gate_weights": over})
    empty = render_report(**report_inputs(full=False), explanations={"gate_weights": frame[:0]})
    assert "Nothing to draw." in empty and "Mean gate weight" not in empty


def test_gate_weights_are_sub_sampled_to_max_points() -> None:
    frame = gate_weights()
    page_text = render_report(
        **report_inputs(full=False), explanations={"gate_weights": frame}, max_points=200
    )
    section = _explanations_section(page_text)
    assert "sub-sampled: 200 of 3,000 bars drawn" in section
    assert _gate_table(section)["all"][0] == "3,000"  # the table uses every bar


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), max_points=st.integers(4, 300))
def test_gate_weights_sub_sampling_keeps_true_bars_and_the_ends(n: int, max_points: int) -> None:
    weights = _weights(_gate_weights().iloc[:n])
    fig = _charts.gate_weights_figure(weights, max_points)
    assert fig is not None
    ms = _charts.epoch_ms(weights.index)
    x = np.asarray(fig.data[0].x, dtype=np.float64)
    assert len(x) == min(n, max_points)
    assert x[0] == ms[0] and x[-1] == ms[-1]
    rows = np.searchsorted(ms, x)
    np.testing.assert_array_equal(ms[rows], x)  # every point drawn is a bar
    for trace in fig.data:
        np.testing.assert_array_equal(trace.x, x)
        np.testing.assert_allclose(trace.y, weights[trace.name].to_numpy()[rows], rtol=1e-6)
    assert ("sub-sampled" in fig.layout.title.text) == (n > max_points)


def test_calibration_is_one_reliability_diagram_with_the_metrics_under_it() -> None:
    bins, scores = calibration_bins(), calibration_scores()
    fold_scores = pd.DataFrame({"fold": [0, 1], "accuracy": [0.51, 0.53]})
    explanations = {"calibration_metrics": scores, "calibration": bins, "fold_scores": fold_scores}
    page_text = render_report(**report_inputs(full=False), explanations=explanations)
    assert parse(page_text).figures == [*BASIC_FIGURES, "calibration"]
    section = _explanations_section(page_text)
    assert parse(section).figures == ["calibration"]
    assert "Calibration before and after" in section and "on the diagonal" in section
    for name in ("perfectly calibrated", "raw", "calibrated"):
        assert f'"name":"{name}"' in section
    # the metrics table right under the diagram, and nowhere else
    assert (
        section.count("Calibration metrics") == 1 and "<h3>Calibration metrics</h3>" not in section
    )
    between = section.split('data-figure="calibration"')[1].split("<b>Calibration metrics</b>")[0]
    assert "Plotly.newPlot(" in between and "<table" not in between and "<h3>" not in between
    after = section.split("<b>Calibration metrics</b>")[1]
    assert after.startswith("<table>")
    table = _rows(after.split("</table>")[0])
    for _, row in scores.iterrows():
        shown = [f"{row[k]:.4g}" for k in ("brier", "log_loss", "ece")] + [f"{row['n']:,}"]
        assert table[row["stage"]] == shown
    assert section.index("<h3>Fold scores</h3>") > section.index("<b>Calibration metrics</b>")
    # one line per stage through its non-empty bins, marker size growing with the bars
    fig = _charts.calibration_figure(bins)
    assert fig is not None
    assert [t.name for t in fig.data] == ["perfectly calibrated", "raw", "calibrated"]
    assert (bins["n"] == 0).any()  # empty bins exist and are left out
    largest = bins["n"].max()
    for trace in fig.data[1:]:
        t = bins[(bins["stage"] == trace.name) & (bins["n"] > 0)]
        assert trace.mode == "lines+markers"
        np.testing.assert_allclose(trace.x, t["mean_predicted"])
        np.testing.assert_allclose(trace.y, t["observed_frequency"])
        np.testing.assert_array_equal(trace.customdata, t["n"])
        np.testing.assert_allclose(trace.marker.size, 6.0 + 12.0 * np.sqrt(t["n"] / largest))
    assert list(fig.data[0].x) == [0, 1] and list(fig.data[0].y) == [0, 1]
    assert tuple(fig.layout.xaxis.range) == tuple(fig.layout.yaxis.range) == (0.0, 1.0)
    # the rows the bad-input cases change: raw bin 5 and calibrated bin 5 are not empty
    assert bins.loc[5, "stage"] == "raw" and bins.loc[15, "stage"] == "calibrated"
    assert int(bins["n"].iloc[5]) > 0 and int(bins["bin"].iloc[15]) == 5


def test_calibration_metrics_alone_or_no_bins() -> None:
    alone = render_report(
        **report_inputs(full=False), explanations={"calibration_metrics": calibration_scores()}
    )
    section = _explanations_section(alone)
    assert "<h3>Calibration metrics</h3>" in section and parse(section).figures == []
    empty = {"calibration": calibration_bins()[:0]}
    assert "Nothing to draw." in render_report(**report_inputs(full=False), explanations=empty)


def test_report_rebuilt_from_json_artefacts_is_identical(full_page: str) -> None:
    kwargs = report_inputs()
    for key in ("metrics", "verdict", "config", "data_range"):
        kwargs[key] = json.loads(json.dumps(kwargs[key]))  # as stored with a run
    assert render_report(**kwargs) == full_page


def test_write_report_writes_the_rendered_page(tmp_path: Path) -> None:
    kwargs = report_inputs(full=False)
    path = report.write_report(tmp_path / "a" / "b.html", **kwargs)
    assert path == tmp_path / "a" / "b.html"
    assert path.read_text(encoding="utf-8") == render_report(**kwargs)


# --- parts --------------------------------------------------------------------------------


def test_monthly_table_from_metrics_and_from_returns_agree() -> None:
    _, sma, _ = runs()
    expected = sma.metrics.monthly.to_numpy()
    stored = report._monthly_frame(sma.metrics.to_dict(), sma.returns)
    computed = report._monthly_frame({}, sma.returns)
    for frame in (stored, computed):
        assert list(frame.columns) == list(range(1, 13))
        assert list(frame.index) == list(sma.metrics.monthly.index)
        np.testing.assert_allclose(frame.to_numpy(), expected, rtol=1e-9, equal_nan=True)
    fig = _charts.monthly_heatmap(stored)
    np.testing.assert_allclose(fig.data[0].z, expected * 100, rtol=1e-9, equal_nan=True)


def test_rolling_sharpe_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    idx = pd.date_range("2021-01-01", periods=300, freq="h", tz="UTC")
    r = pd.Series(rng.normal(0.0005, 0.01, 300), index=idx)
    r.iloc[100:160] = 0.0  # a flat stretch: Sharpe undefined there
    got = _charts.rolling_sharpe(r, 50, 8760.0)
    for t in (49, 99, 200, 299):
        w = r.iloc[t - 49 : t + 1]
        assert got.iloc[t] == pytest.approx(w.mean() / w.std(ddof=1) * math.sqrt(8760.0))
    assert got.iloc[:49].isna().all()
    assert got.iloc[149:160].isna().all()


def test_default_rolling_window_is_a_quarter_year() -> None:
    assert default_rolling_window(8760.0, 20_000) == 2190  # hourly crypto: ~3 months
    assert default_rolling_window(252.0, 5_000) == 63
    assert default_rolling_window(8760.0, 400) == 100  # short run: a quarter of it
    assert default_rolling_window(8760.0, 3) == 2


def test_trade_histogram_counts_every_trade() -> None:
    _, sma, _ = runs()
    trades = sma.trades
    fig = _charts.trade_figure(trades)
    assert fig is not None
    wins, losses = fig.data
    assert sum(wins.y) == int((trades["pnl"] > 0).sum())
    assert sum(losses.y) == int((trades["pnl"] <= 0).sum())
    assert f"({len(trades):,} trades)" in fig.layout.title.text
    assert _charts.trade_figure(trades.iloc[:0]) is None


def test_equity_chart_has_a_log_switch_and_epoch_ms_axis() -> None:
    idx = pd.DatetimeIndex(["2020-01-01", "2020-01-02"], tz="UTC")
    fig = _charts.equity_figure(pd.Series([1.0, 2.0], index=idx), None)
    kinds = [b.args[0]["yaxis.type"] for b in fig.layout.updatemenus[0].buttons]
    assert kinds == ["linear", "log"]
    assert list(_charts.epoch_ms(idx)) == [1577836800000.0, 1577923200000.0]
    assert fig.layout.xaxis.type == "date"


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False) | st.just(math.nan), min_size=1, max_size=3000
    ),
    max_points=st.integers(4, 300),
)
def test_decimate_keeps_ends_and_extremes(values: list[float], max_points: int) -> None:
    idx = pd.date_range("2020-01-01", periods=len(values), freq="min", tz="UTC")
    s = pd.Series(values, index=idx)
    out = _charts.decimate(s, max_points)
    assert len(out) <= max(max_points, len(s) if len(s) <= max_points else 0)
    assert out.index.is_monotonic_increasing and out.index.isin(s.index).all()
    np.testing.assert_array_equal(out.to_numpy(), s.loc[out.index].to_numpy())
    assert out.index[0] == s.index[0] and out.index[-1] == s.index[-1]
    if s.notna().any():
        assert out.max() == s.max() and out.min() == s.min()


def test_decimate_leaves_short_series_alone_and_rejects_tiny_budgets() -> None:
    s = pd.Series([3.0, 1.0, 2.0], index=pd.date_range("2020", periods=3, freq="D"))
    assert _charts.decimate(s, 4) is s
    with pytest.raises(ValueError, match="max_points must be at least 4"):
        _charts.decimate(s, 3)


# --- bad input ----------------------------------------------------------------------------


def _shifted(s: pd.Series) -> pd.Series:
    return s.set_axis(s.index + pd.Timedelta("1min"))


def _explained(name: str, change: Any) -> Any:
    """A change of ``kwargs["explanations"][name]``, the others kept."""
    return lambda k: k["explanations"] | {name: change(k["explanations"][name])}


def _set(frame: pd.DataFrame, row: str | int, col: int | str, value: float | str) -> pd.DataFrame:
    out = frame.copy()
    out.loc[row, col if isinstance(col, str) else out.columns[col]] = value
    return out


def _swapped_ts(frame: pd.DataFrame, row: int) -> pd.DataFrame:
    """``frame`` with the ``ts`` of ``row`` and ``row + 1`` swapped."""
    out = frame.copy()
    out.loc[[row, row + 1], "ts"] = out.loc[[row + 1, row], "ts"].to_numpy()
    return out


def _unbalanced(frame: pd.DataFrame, row: int, delta: float) -> pd.DataFrame:
    """``frame`` with ``delta`` added to the smallest gate weight of ``row``."""
    out = frame.copy()
    weights = out[GATE_STRATEGIES].to_numpy(dtype=np.float64, copy=True)
    weights[row, weights[row].argmin()] += delta
    out[GATE_STRATEGIES] = weights
    return out


def _with_empty_stage(bins: pd.DataFrame, stage: str) -> pd.DataFrame:
    empty = reliability(np.full(4, np.nan), np.full(4, np.nan)).table.assign(stage=stage)
    return pd.concat([bins, empty[CALIBRATION_COLUMNS]], ignore_index=True)


GATE = r"explanations\['gate_weights'\]"
CALIBRATION = r"explanations\['calibration'\]"
TS = r"\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\)"  # the bar's time, ISO 8601


BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("title", lambda k: 42, "title must be a string"),
    ("equity", lambda k: k["equity"].to_numpy(), "equity must be a pandas Series"),
    ("equity", lambda k: k["equity"].reset_index(drop=True), "equity needs a DatetimeIndex"),
    ("equity", lambda k: k["equity"].iloc[:0], "equity is empty"),
    ("equity", lambda k: k["equity"].where(k["equity"].index != k["equity"].index[5]),
     "equity: equity is not finite at bar 5"),
    ("equity", lambda k: k["equity"].astype(str).replace(k["equity"].astype(str).iloc[0], "x"),
     "equity must hold numbers"),
    ("exposure", lambda k: k["exposure"].iloc[1:], "exposure is not on the equity's bars"),
    ("returns", lambda k: _shifted(k["returns"]), "returns is not on the equity's bars"),
    ("trades", lambda k: k["trades"].drop(columns=["return"]), "trades lack the column"),
    ("trades", lambda k: [], "trades must be a DataFrame"),
    ("periods_per_year", lambda k: 0.0, "periods_per_year must be positive"),
    ("periods_per_year", lambda k: math.nan, "periods_per_year must be positive"),
    ("periods_per_year", lambda k: "hourly", "periods_per_year must be positive"),
    ("returns", lambda k: k["returns"].where(k["returns"].index != k["returns"].index[7]),
     "returns are not finite at bar 7"),
    ("metrics", lambda k: [1, 2], "metrics must be a mapping"),
    ("verdict", lambda k: {"score": 0.5}, "verdict needs a 'criteria' list"),
    ("close", lambda k: None, "p_up needs close"),
    ("close", lambda k: _shifted(k["close"]), "close is not on p_up's bars"),
    ("p_up", lambda k: k["p_up"] * 3, "confidence analysis: p_up must lie in"),
    ("comparison", lambda k: {"a": 1}, "comparison must be a DataFrame"),
    ("comparison_equity", lambda k: {"a": [1.0]}, r"comparison_equity\['a'\] must be a pandas"),
    ("extra_sections", lambda k: [("title only",)], r"extra_sections\[0\] must be a"),
    ("extra_sections", lambda k: [("title", 3)], r"extra_sections\[0\] must be a"),
    ("rolling_window", lambda k: 1, "rolling_window must be a whole number of bars >= 2"),
    ("rolling_window", lambda k: 24.5, "rolling_window must be a whole number of bars >= 2"),
    ("max_points", lambda k: 3, "max_points must be at least 4"),
    ("explanations", lambda k: [("attention", 1)], "explanations must be a mapping"),
    ("explanations", lambda k: {1: k["explanations"]["attention"]},
     "explanations keys must be strings, got 1"),
    ("explanations", lambda k: {"attention": [[0.5]]},
     r"explanations\['attention'\] must be a DataFrame, got list"),
    ("explanations", _explained("attention", lambda f: f.drop(index="rollout")),
     r"explanations\['attention'\] needs a 'rollout' row"),
    ("explanations", _explained("attention", lambda f: f.iloc[:, :0]),
     r"explanations\['attention'\] has no bars"),
    ("explanations", _explained("attention", lambda f: f.assign(**{f.columns[0]: "high"})),
     r"explanations\['attention'\] must hold numbers"),
    ("explanations", _explained("attention", lambda f: _set(f, "layer 1 head 2", 3, 1.5)),
     r"finite and in \[0, 1\]: row 'layer 1 head 2', bar '[-\d]+ [\d:]+' is 1.5"),
    ("explanations", _explained("attention", lambda f: _set(f, "rollout", 0, -0.1)),
     r"finite and in \[0, 1\]: row 'rollout', bar '[-\d]+ [\d:]+' is -0.1"),
    ("explanations", _explained("attention", lambda f: _set(f, "layer 2 head 4", 7, math.nan)),
     r"finite and in \[0, 1\]: row 'layer 2 head 4', bar '[-\d]+ [\d:]+' is nan"),
    ("explanations", _explained("feature_importance", lambda f: f.drop(columns="share")),
     r"explanations\['feature_importance'\] needs a 'share' column"),
    ("explanations", _explained("feature_importance", lambda f: _set(f, "body", "share", math.inf)),
     r"explanations\['feature_importance'\] share is not finite at 'body'"),
    ("explanations", _explained("feature_importance", lambda f: f.assign(share="a lot")),
     r"explanations\['feature_importance'\] share: could not convert"),
    ("explanations", lambda k: {"regime_path": regime_path().drop(columns="regime")},
     r"explanations\['regime_path'\] needs the columns ts, close and regime; missing \['regime'\]"),
    ("explanations", lambda k: {"regime_path": regime_path().drop(columns=["ts", "close"])},
     r"explanations\['regime_path'\] needs the columns .* missing \['ts', 'close'\]"),
    ("explanations", lambda k: {"regime_path": regime_path().assign(ts="yesterday")},
     r"explanations\['regime_path'\] ts must be ISO 8601 times"),
    ("explanations", lambda k: {"regime_path": regime_path().assign(close="high")},
     r"explanations\['regime_path'\] close and regime must hold numbers"),
    ("explanations", lambda k: {"regime_path": _set(regime_path(), 5, "close", math.inf)},
     r"explanations\['regime_path'\] close is not finite at row 5"),
    ("explanations", lambda k: {"regime_path": _set(regime_path(), 30, "regime", 1.5)},
     r"explanations\['regime_path'\] regime must be whole numbers: row 30 is 1.5"),
    ("explanations", _explained("structure_events", lambda f: f.drop(columns="mitigated")),
     r"explanations\['structure_events'\] needs the columns kind, direction, level, top, "
     r"bottom, formed, confirmed, mitigated; missing \['mitigated'\]"),
    ("explanations", _explained("swings", lambda f: f.drop(columns=["price", "ts"])),
     r"explanations\['swings'\] needs the columns ts, kind, price, confirmed; "
     r"missing \['ts', 'price'\]"),
    ("explanations", _explained("structure_events", lambda f: _set(f, 3, "kind", "bosx")),
     r"explanations\['structure_events'\] kind must be one of bos, choch, sweep, fvg, ob: "
     r"row 3 is 'bosx'"),
    ("explanations", _explained("swings", lambda f: _set(f, 4, "kind", "top")),
     r"explanations\['swings'\] kind must be one of high, low: row 4 is 'top'"),
    ("explanations", _explained("structure_events", lambda f: _set(f, 2, "direction", 0)),
     r"explanations\['structure_events'\] direction must be 1 or -1: row 2 is 0"),
    ("explanations", _explained("structure_events", lambda f: _set(f, 6, "top", math.inf)),
     r"explanations\['structure_events'\] top is not finite at row 6"),
    ("explanations", _explained("swings", lambda f: f.assign(price="high")),
     r"explanations\['swings'\] price must hold numbers"),
    ("explanations", _explained("structure_events", lambda f: _set(f, 1, "formed", "yesterday")),
     r"explanations\['structure_events'\] formed must be ISO 8601 times"),
    ("explanations", _explained("structure_events", lambda f: _set(f, 5, "confirmed", "")),
     r"explanations\['structure_events'\] confirmed is empty at row 5"),
    ("explanations", _explained("swings", lambda f: _set(f, 0, "ts", "soon")),
     r"explanations\['swings'\] ts must be ISO 8601 times"),
    ("explanations", _explained("timeframe_attention", lambda f: f.iloc[:, :0]),
     r"explanations\['timeframe_attention'\] needs rows and timeframes \(columns\), got \(2, 0\)"),
    ("explanations", _explained("timeframe_attention", lambda f: f.assign(**{"4h": "much"})),
     r"explanations\['timeframe_attention'\] must hold numbers"),
    ("explanations", _explained("timeframe_attention", lambda f: _set(f, "last", "1d", 1.2)),
     r"explanations\['timeframe_attention'\] values must be finite and in \[0, 1\]: "
     r"row 'last', timeframe '1d' is 1.2"),
    ("explanations", _explained("timeframe_attention", lambda f: _set(f, "mean", "4h", math.nan)),
     r"row 'mean', timeframe '4h' is nan"),
    ("explanations", _explained("timeframe_attention", lambda f: _set(f, "mean", "1h", 0.4)),
     r"explanations\['timeframe_attention'\] row 'mean' sums to 0.9, not 1"),
    ("explanations", lambda k: {"gate_weights": gate_weights().drop(columns="ts")},
     GATE + r" needs a 'ts' column"),
    ("explanations", lambda k: {"gate_weights": gate_weights()[["ts", "regime"]]},
     GATE + r" needs one weight column per strategy besides ts and regime"),
    ("explanations", lambda k: {"gate_weights": gate_weights().assign(ts="yesterday")},
     GATE + r" ts must be ISO 8601 times"),
    ("explanations", lambda k: {"gate_weights": _swapped_ts(gate_weights(), 4)},
     GATE + r" ts must increase: row 5 " + TS + " is not after row 4"),
    ("explanations", lambda k: {"gate_weights": gate_weights().assign(breakout="most")},
     GATE + r" breakout must hold numbers"),
    ("explanations", lambda k: {"gate_weights": _set(gate_weights(), 7, "trend", math.nan)},
     GATE + r" trend is not finite at row 7"),
    ("explanations", lambda k: {"gate_weights": _set(gate_weights(), 8, "trend", math.inf)},
     GATE + r" trend is not finite at row 8"),
    ("explanations", lambda k: {"gate_weights": _set(gate_weights(), 9, "mean_reversion", 1.25)},
     GATE + r" mean_reversion must be in \[0, 1\]: row 9 " + TS + r" is 1.25"),
    ("explanations", lambda k: {"gate_weights": _set(gate_weights(), 3, "breakout", -0.1)},
     GATE + r" breakout must be in \[0, 1\]: row 3 " + TS + r" is -0.1"),
    ("explanations", lambda k: {"gate_weights": _unbalanced(gate_weights(), 11, 1e-5)},
     GATE + r" weights must sum to 1: row 11 " + TS + r" sums to 1.00001"),
    ("explanations", lambda k: {"gate_weights": _unbalanced(gate_weights(), 12, -2e-6)},
     GATE + r" weights must sum to 1: row 12 " + TS + r" sums to 0.999998"),
    ("explanations", lambda k: {"gate_weights": gate_weights().assign(regime="calm")},
     GATE + r" regime must hold numbers"),
    ("explanations", lambda k: {"gate_weights": _set(gate_weights(), 30, "regime", 1.5)},
     GATE + r" regime must be whole numbers: row 30 is 1.5"),
    ("explanations", lambda k: {"gate_weights": _set(gate_weights(), 31, "regime", math.inf)},
     GATE + r" regime must be whole numbers: row 31 is inf"),
    ("explanations", lambda k: {"calibration": calibration_bins().drop(columns=["stage", "n"])},
     CALIBRATION + r" needs the columns stage, bin, lo, hi, n, mean_predicted, "
     r"observed_frequency; missing \['stage', 'n'\]"),
    ("explanations", lambda k: {"calibration": calibration_bins().assign(lo="low")},
     CALIBRATION + r" lo must hold numbers"),
    ("explanations",
     lambda k: {"calibration": calibration_bins().assign(observed_frequency="often")},
     CALIBRATION + r" observed_frequency must hold numbers"),
    ("explanations", lambda k: {"calibration": _set(calibration_bins(), 2, "n", -3)},
     CALIBRATION + r" n must be a count of bars: row 2 is -3.0"),
    ("explanations",
     lambda k: {"calibration": _set(calibration_bins().astype({"n": float}), 4, "n", 2.5)},
     CALIBRATION + r" n must be a count of bars: row 4 is 2.5"),
    ("explanations", lambda k: {"calibration": _set(calibration_bins(), 5, "mean_predicted", 1.2)},
     CALIBRATION + r" mean_predicted must be in \[0, 1\]: row 5 \(stage 'raw'\) is 1.2"),
    ("explanations",
     lambda k: {"calibration": _set(calibration_bins(), 5, "observed_frequency", -0.1)},
     CALIBRATION + r" observed_frequency must be in \[0, 1\]: row 5 \(stage 'raw'\) is -0.1"),
    ("explanations", lambda k: {"calibration": _set(calibration_bins(), 15, "hi", 1.5)},
     CALIBRATION + r" hi must be in \[0, 1\]: row 15 \(stage 'calibrated'\) is 1.5"),
    ("explanations",
     lambda k: {"calibration": _set(calibration_bins(), 5, "mean_predicted", math.nan)},
     CALIBRATION + r" mean_predicted is not finite at row 5 \(stage 'raw', [\d,]+ bars\)"),
    ("explanations",
     lambda k: {"calibration": _with_empty_stage(calibration_bins(), "temperature")},
     CALIBRATION + r" stage 'temperature' has no non-empty bin"),
    ("explanations",
     lambda k: {"calibration": calibration_bins(),
                "calibration_metrics": calibration_scores().drop(columns=["ece", "n"])},
     r"explanations\['calibration_metrics'\] needs the columns stage, brier, log_loss, ece, n; "
     r"missing \['ece', 'n'\]"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "change", "message"), BAD_INPUTS)
def test_bad_input_is_rejected_with_the_reason(key: str, change: Any, message: str) -> None:
    kwargs = report_inputs()
    if key == "explanations":  # checked whatever else is drawn: the required inputs will do
        kwargs = report_inputs(full=False) | {"explanations": kwargs["explanations"]}
    kwargs[key] = change(kwargs)
    with pytest.raises(ReportError, match=message):
        render_report(**kwargs)


def test_table_headings_are_sentence_case_with_acronyms_in_capitals() -> None:
    assert report._heading("llm_ablation") == "LLM ablation"
    assert report._heading("regime_stats") == "Regime stats"
    assert report._heading("fvg_ob_summary") == "FVG OB summary"
    inputs = report_inputs(full=False) | {
        "explanations": {"llm_outcomes": pd.DataFrame({"n": [1]})}
    }
    assert "<h3>LLM outcomes</h3>" in render_report(**inputs)
