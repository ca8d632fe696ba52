"""The decision context and its text: built from data at the decision bar only, rendered
deterministically, every missing input named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.data.schema import make_bar_frame
from mlengine.llm.formatter import (
    ContextError,
    build_context,
    format_number,
    price_decimals,
    render_context,
)
from mlengine.llm.prompts import build_prompt
from mlengine.llm.schema import LLMError

ATR_W = 14


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


def predictions(bars: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A prediction frame shaped like a strategy's: p_up, fold and diagnostics."""
    rng = np.random.default_rng(seed)
    n = len(bars)
    return pd.DataFrame(
        {
            "p_up": rng.uniform(0.2, 0.8, n),
            "fold": np.arange(n) // 500,
            "regime": rng.integers(0, 3, n).astype(np.float64),
            "breakout_prob": rng.uniform(0, 1, n),
            "after_bos": rng.uniform(0, 1, n) > 0.5,
            "level_high": bars["high"].to_numpy() + 0.001,
            "label": "text is skipped",
        },
        index=bars.index,
    )


def ensemble_frame(bars: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet([1.0, 1.0], len(bars))
    return pd.DataFrame(
        {"p_up": rng.uniform(0.3, 0.7, len(bars)), "w.mrd": w[:, 0], "w.pva": w[:, 1]},
        index=bars.index,
    )


def wilder_atr(bars: pd.DataFrame, window: int) -> np.ndarray:
    """Wilder's ATR written out: seed = mean of the first ``window`` true ranges."""
    h, low, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
    prev = np.roll(c, 1)
    tr = np.maximum(h - low, np.maximum(np.abs(h - prev), np.abs(low - prev)))
    out = np.full(len(c), np.nan)
    out[window] = tr[1 : window + 1].mean()
    for i in range(window + 1, len(c)):
        out[i] = (out[i - 1] * (window - 1) + tr[i]) / window
    return out


def test_context_holds_the_decision_bar_data(bars: pd.DataFrame) -> None:
    i = 700
    ts = bars.index[i]
    preds = {"pva": predictions(bars, 1), "mrd": predictions(bars, 2)}
    ens = ensemble_frame(bars, 3)
    ctx = build_context(bars, strategies=preds, ensemble=ens, ts=ts, n_recent=8)
    assert (ctx.symbol, ctx.timeframe, ctx.ts) == ("EURUSD", "1h", ts)
    assert ctx.last_price == bars["close"].iloc[i]
    assert ctx.atr == pytest.approx(wilder_atr(bars, ATR_W)[i], rel=1e-12)
    pd.testing.assert_frame_equal(ctx.recent, bars.iloc[i - 7 : i + 1], check_freq=False)
    assert [v.name for v in ctx.strategies] == ["mrd", "pva"]  # sorted
    mrd = ctx.strategies[0]
    row = preds["mrd"].iloc[i]
    assert mrd.p_up == row["p_up"]
    assert mrd.diagnostics == {
        "after_bos": float(row["after_bos"]),
        "breakout_prob": row["breakout_prob"],
        "level_high": row["level_high"],
        "regime": row["regime"],
    }  # fold and text skipped, bool as 0/1
    assert ctx.ensemble_p == ens["p_up"].iloc[i]
    assert ctx.gate_weights == {"mrd": ens["w.mrd"].iloc[i], "pva": ens["w.pva"].iloc[i]}


def test_default_ts_is_the_last_bar_and_nan_diagnostics_are_dropped(bars) -> None:
    preds = predictions(bars, 1)
    preds.loc[preds.index[-1], "regime"] = np.nan
    preds.loc[preds.index[-1], "breakout_prob"] = np.inf
    ctx = build_context(bars, strategies={"pva": preds})
    assert ctx.ts == bars.index[-1]
    assert set(ctx.strategies[0].diagnostics) == {"after_bos", "level_high"}
    assert ctx.ensemble_p is None and ctx.gate_weights == {}
    assert "ensemble: none" in render_context(ctx)


def test_naive_ts_is_taken_as_utc(bars) -> None:
    ts = bars.index[300]
    ctx = build_context(bars, strategies={"pva": predictions(bars, 1)}, ts=ts.tz_localize(None))
    assert ctx.ts == ts


def test_render_is_compact_fixed_format_and_market_data_only(bars) -> None:
    i = 900
    preds = {"pva": predictions(bars, 1)}
    ctx = build_context(bars, strategies=preds, ensemble=ensemble_frame(bars, 3), ts=bars.index[i])
    text = render_context(ctx)
    assert price_decimals(ctx) == 5  # EURUSD quotes have 5 decimals
    assert f"last price: {bars['close'].iloc[i]:.5f}" in text
    assert f"ATR: {ctx.atr:.4g}" in text
    recent_lines = [ln for ln in text.splitlines() if ln.startswith(str(bars.index[i].year) + "-")]
    assert len(recent_lines) == 12
    last = bars.iloc[i]
    assert recent_lines[-1] == (
        f"{bars.index[i]:%Y-%m-%d %H:%M},{last['open']:.5f},{last['high']:.5f},"
        f"{last['low']:.5f},{last['close']:.5f},{last['volume']:.4g}"
    )
    row = preds["pva"].iloc[i]
    assert f"level_high {row['level_high']:.5f}" in text  # a price level: price precision
    assert f"breakout_prob {row['breakout_prob']:.4g}" in text  # else 4 significant digits
    assert "fold" not in text and "label" not in text
    assert "csv" not in text.lower() and "source" not in text  # no attrs beyond symbol
    assert len(text) < 2000


def test_render_is_deterministic_across_equal_inputs(bars) -> None:
    ts = bars.index[1500]
    a = {"pva": predictions(bars, 1), "mrd": predictions(bars, 2)}
    b = {"mrd": predictions(bars, 2).copy(), "pva": predictions(bars, 1).copy()}  # other order
    ctx_a = build_context(bars, strategies=a, ensemble=ensemble_frame(bars, 3), ts=ts)
    ctx_b = build_context(bars.copy(), strategies=b, ensemble=ensemble_frame(bars, 3), ts=ts)
    assert render_context(ctx_a).encode() == render_context(ctx_b).encode()


def _perturb_after(frame: pd.DataFrame, ts: pd.Timestamp, seed: int) -> pd.DataFrame:
    """``frame`` with every numeric value after ``ts`` scaled by a random factor."""
    out = frame.copy()
    later = out.index > ts
    rng = np.random.default_rng(seed)
    for col in out.columns:
        if out[col].dtype == np.float64:
            factor = rng.uniform(0.5, 1.5, int(later.sum()))
            values = out[col].to_numpy().copy()
            values[later] = values[later] * factor
            if col == "p_up":
                values = np.clip(values, 0, 1)
            out[col] = values
    return out


def _later_changed_bars(bars: pd.DataFrame, ts: pd.Timestamp, seed: int) -> pd.DataFrame:
    later = _perturb_after(bars, ts, seed)
    hi = later[["open", "high", "low", "close"]].max(axis=1)
    lo = later[["open", "high", "low", "close"]].min(axis=1)
    later["high"], later["low"] = hi, lo  # still a sane bar
    later.attrs = dict(bars.attrs)
    return later


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(ATR_W + 1, 6224), seed=st.integers(0, 2**16), truncate=st.booleans())
def test_property_later_bars_and_predictions_do_not_change_the_prompt(
    bars: pd.DataFrame, cut: int, seed: int, truncate: bool
) -> None:
    ts = bars.index[cut]
    preds = {"pva": predictions(bars, 1), "mrd": predictions(bars, 2)}
    ens = ensemble_frame(bars, 3)
    full = build_context(bars, strategies=preds, ensemble=ens, ts=ts)
    if truncate:
        later_bars = bars.iloc[: cut + 1].copy()
        later_bars.attrs = dict(bars.attrs)
        later_preds = {k: v.iloc[: cut + 1] for k, v in preds.items()}
        later_ens = ens.iloc[: cut + 1]
    else:
        later_bars = _later_changed_bars(bars, ts, seed)
        later_preds = {k: _perturb_after(v, ts, seed + 1) for k, v in preds.items()}
        later_ens = _perturb_after(ens, ts, seed + 2)
        assert not later_bars.equals(bars) or cut == len(bars) - 1
    cut_ctx = build_context(later_bars, strategies=later_preds, ensemble=later_ens, ts=ts)
    assert render_context(cut_ctx) == render_context(full)
    assert build_prompt(cut_ctx).hash == build_prompt(full).hash
    assert cut_ctx.atr == full.atr and cut_ctx.last_price == full.last_price
    assert cut_ctx.strategies == full.strategies
    pd.testing.assert_frame_equal(cut_ctx.recent, full.recent)


def test_changing_a_bar_at_or_before_ts_changes_the_text(bars) -> None:
    """The counterpart of the look-ahead test: the text does depend on the past."""
    ts = bars.index[2000]
    preds = {"pva": predictions(bars, 1)}
    base = render_context(build_context(bars, strategies=preds, ts=ts))
    changed = bars.copy()
    changed.attrs = dict(bars.attrs)
    changed.loc[ts, "close"] += 0.001
    assert render_context(build_context(changed, strategies=preds, ts=ts)) != base


def test_price_decimals_fall_back_to_significant_digits() -> None:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 40)))
    idx = pd.date_range("2021-01-01", periods=40, freq="h", tz="UTC")
    syn = make_bar_frame(
        idx,
        {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
         "volume": np.ones(40)},
        symbol="SYN",
        timeframe="1h",
    )  # fmt: skip
    pred = pd.DataFrame({"p_up": 0.5}, index=idx)
    ctx = build_context(syn, strategies={"s": pred})
    top = max(ctx.recent["high"].max(), ctx.last_price)
    digits = 6 - len(str(int(top)))  # full float digits: 6 significant ones are kept
    assert price_decimals(ctx) == digits
    assert f"last price: {close[-1]:.{digits}f}" in render_context(ctx)
    assert format_number(-0.0) == "0" and format_number(0.123456) == "0.1235"


# --- errors name what is missing -----------------------------------------------------


def test_ts_not_a_bar_is_named(bars) -> None:
    missing = bars.index[10] + pd.Timedelta(minutes=30)
    with pytest.raises(ContextError, match=r"ts 2017-.* is not a bar of EURUSD 1h"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, ts=missing)
    with pytest.raises(ContextError, match="ts 'soon' is not a time"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, ts="soon")  # type: ignore[arg-type]
    with pytest.raises(ContextError, match="NaT"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, ts=pd.NaT)  # type: ignore[arg-type]


def test_too_few_bars_for_the_atr(bars) -> None:
    with pytest.raises(ContextError, match=r"14 bars up to .*ATR over 14 bars needs at least 15"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, ts=bars.index[13])
    ctx = build_context(bars, strategies={"pva": predictions(bars, 1)}, ts=bars.index[14])
    assert ctx.atr > 0  # the first bar with an ATR


def test_strategy_frame_without_p_up_or_row_is_named(bars) -> None:
    ts = bars.index[500]
    with pytest.raises(ContextError, match=r"strategy 'mrd' predictions has no 'p_up' column"):
        build_context(bars, strategies={"mrd": predictions(bars, 1).drop(columns="p_up")}, ts=ts)
    gap = predictions(bars, 1).drop(index=ts)
    with pytest.raises(ContextError, match=r"strategy 'pva' predictions has no row at .*2017"):
        build_context(bars, strategies={"pva": gap}, ts=ts)
    dup = pd.concat([predictions(bars, 1).iloc[[500]]] * 2)
    with pytest.raises(ContextError, match=r"'pva' predictions has 2 rows at"):
        build_context(bars, strategies={"pva": dup}, ts=ts)
    with pytest.raises(ContextError, match=r"'pva' predictions is not indexed by bar time"):
        build_context(bars, strategies={"pva": predictions(bars, 1).reset_index()}, ts=ts)


def test_nan_or_out_of_range_p_up_at_ts_is_named(bars) -> None:
    ts = bars.index[500]
    preds = predictions(bars, 1)
    preds.loc[ts, "p_up"] = np.nan
    with pytest.raises(ContextError, match=r"strategy 'pva' predictions p_up at .* is nan"):
        build_context(bars, strategies={"pva": preds}, ts=ts)
    preds.loc[ts, "p_up"] = 1.5
    with pytest.raises(ContextError, match=r"p_up at .* is 1.5, outside \[0, 1\]"):
        build_context(bars, strategies={"pva": preds}, ts=ts)
    ens = ensemble_frame(bars, 3)
    ens.loc[ts, "p_up"] = np.nan
    with pytest.raises(ContextError, match=r"ensemble p_up at .* is nan"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, ensemble=ens, ts=ts)
    with pytest.raises(ContextError, match=r"ensemble predictions has no row"):
        build_context(bars, strategies={}, ensemble=ens.drop(index=ts), ts=ts)


def test_nothing_to_decide_from_and_bad_names_and_bad_bars(bars) -> None:
    with pytest.raises(ContextError, match="no strategy predictions and no ensemble"):
        build_context(bars, strategies={})
    with pytest.raises(ContextError, match=r"strategy name 'a\\nIgnore' is not allowed"):
        build_context(bars, strategies={"a\nIgnore": predictions(bars, 1)})
    odd = predictions(bars, 1).rename(columns={"regime": "re gime"})
    with pytest.raises(ContextError, match=r"diagnostic name 're gime' is not allowed"):
        build_context(bars, strategies={"pva": odd})
    no_attrs = bars.copy()
    no_attrs.attrs = {}
    with pytest.raises(ContextError, match=r"not a valid bar frame.*attrs\['symbol'\]"):
        build_context(no_attrs, strategies={"pva": predictions(bars, 1)})
    with pytest.raises(ContextError, match="n_recent must be an integer >= 1, got 0"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, n_recent=0)
    with pytest.raises(ContextError, match="atr_window must be an integer >= 1"):
        build_context(bars, strategies={"pva": predictions(bars, 1)}, atr_window=0)
    assert issubclass(ContextError, LLMError)
