"""The registry and compute_features: names, groups, parameters, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from mlengine.data.schema import BarDataError
from mlengine.features import (
    FeatureError,
    UnknownFeatureError,
    compute_features,
    feature,
    feature_spec,
    list_features,
    list_groups,
    registry,
)
from mlengine.features.momentum import rsi
from tests.features import bars_from, real_slice, synthetic_bars

DEFAULT_COLUMNS = [
    "ret_log_1",
    "ret_log_3",
    "ret_log_6",
    "ret_log_12",
    "ret_log_24",
    "ret_z_20",
    "ret_z_100",
    "candle_body",
    "candle_upper",
    "candle_lower",
    "atr_ratio_5_50",
    "rvol_ratio_5_20",
    "rvol_ratio_20_100",
    "bb_squeeze_20_100",
    "kc_pos_20_1.5",
    "kc_squeeze_20_1.5_2",
    "range_comp_20",
    "range_comp_20_100",
    "range_pos_20",
    "volume_surge_20",
    "rsi_14",
    "macd_rel_12_26_9",
    "macd_signal_rel_12_26_9",
    "macd_hist_rel_12_26_9",
    "roc_10",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "stoch_k_14_3_3",
    "stoch_d_14_3_3",
    "ms_trend_3",
    "ms_since_bos_3_50",
    "ms_since_choch_3_50",
    "ms_bos_net_3_50",
    "ms_choch_net_3_50",
    "ms_sweep_net_3_50",
    "fvg_bull_dist_14",
    "fvg_bear_dist_14",
    "fvg_net_50",
    "ob_bull_dist_3_14",
    "ob_bear_dist_3_14",
    "er_20",
    "trend_t_20",
    "sign_ac_20",
    "sign_mean_20",
    "atr_14",
    "atr_rel_14",
    "rvol_10",
    "rvol_20",
    "rvol_50",
    "vol_parkinson_20",
    "vol_gk_20",
    "bb_width_20_2",
    "bb_pctb_20_2",
]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return real_slice("btcusd_1h_coinbase", 2000, 600)


def test_default_set_has_stable_prefixed_float_columns(bars: pd.DataFrame) -> None:
    frame = compute_features(bars)
    assert list(frame.columns) == DEFAULT_COLUMNS
    assert frame.index.equals(bars.index)
    assert (frame.dtypes == np.float64).all()
    assert frame.iloc[200:].notna().all().all()


def test_compute_does_not_touch_the_bars(bars: pd.DataFrame) -> None:
    before = bars.copy()
    compute_features(bars)
    pd.testing.assert_frame_equal(bars, before)


def test_groups_and_listing() -> None:
    assert list_groups() == ["returns", "breakout", "momentum", "structure", "trend", "volatility"]
    assert list_features("returns") == ["log_returns", "return_zscore", "candle"]
    assert set(list_features()) == {n for g in list_groups() for n in list_features(g)}
    with pytest.raises(UnknownFeatureError, match="the groups are returns, breakout, momentum"):
        list_features("orderflow")


def test_names_mix_features_and_groups_each_once(bars: pd.DataFrame) -> None:
    frame = compute_features(bars, ["atr", "volatility", "rsi", "atr"])
    expected = ["atr_14", "atr_rel_14", "rvol_10", "rvol_20", "rvol_50"]
    expected += ["vol_parkinson_20", "vol_gk_20", "bb_width_20_2", "bb_pctb_20_2", "rsi_14"]
    assert list(frame.columns) == expected
    assert list(compute_features(bars, "candle").columns) == [
        "candle_body",
        "candle_upper",
        "candle_lower",
    ]
    assert compute_features(bars, []).shape == (len(bars), 0)


def test_params_override_defaults(bars: pd.DataFrame) -> None:
    frame = compute_features(
        bars, ["rsi", "log_returns"], params={"rsi": {"window": 21}, "log_returns": {"lags": 2}}
    )
    assert list(frame.columns) == ["rsi_21", "ret_log_2"]
    expected = talib.RSI(bars["close"].to_numpy(), timeperiod=21)
    np.testing.assert_array_equal(frame["rsi_21"].to_numpy(), expected)


def test_unknown_feature_lists_the_known_ones(bars: pd.DataFrame) -> None:
    with pytest.raises(UnknownFeatureError) as err:
        compute_features(bars, ["rsi", "vwap"])
    message = str(err.value)
    assert "'vwap'" in message
    assert all(name in message for name in list_features())
    assert "the groups are returns, breakout, momentum, structure, trend, volatility" in message
    assert isinstance(err.value, LookupError)
    with pytest.raises(UnknownFeatureError, match="'vwap'"):
        feature_spec("vwap")


def test_unknown_parameter_lists_the_accepted_ones(bars: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match=r"macd: unknown parameter\(s\) fastperiod; it takes"):
        compute_features(bars, ["macd"], params={"macd": {"fastperiod": 5}})
    with pytest.raises(FeatureError, match="window=14"):
        rsi(bars, timeperiod=3)  # type: ignore[call-arg]


def test_params_for_a_feature_not_selected(bars: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match="params given for 'rsi', not among the selected"):
        compute_features(bars, ["atr"], params={"rsi": {"window": 3}})


def test_params_must_be_a_mapping_per_feature(bars: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match=r"params\['rsi'\] must map parameter names"):
        compute_features(bars, ["rsi"], params={"rsi": 21})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("rsi", {"window": 1}, r"rsi: window must be an int in \[2, 100000\], got 1"),
        ("rsi", {"window": 14.0}, "rsi: window must be an int"),
        ("rsi", {"window": True}, "rsi: window must be an int"),
        ("atr", {"window": 100_001}, "atr: window must be an int in"),
        ("atr", {"window": "14"}, "atr: window must be an int"),
        ("log_returns", {"lags": ()}, "log_returns: lags must be distinct ints, at least one"),
        ("log_returns", {"lags": (1, 1)}, "log_returns: lags must be distinct ints"),
        ("log_returns", {"lags": (1, 0)}, "log_returns: lags must be an int in"),
        ("realised_vol", {"windows": (1, 20)}, r"realised_vol: windows must be an int in \[2,"),
        ("return_zscore", {"windows": [20, None]}, "return_zscore: windows must be an int"),
        ("bollinger", {"k": -1.0}, "bollinger: k must be a finite number > 0"),
        ("bollinger", {"k": float("nan")}, "bollinger: k must be a finite number > 0"),
        ("bollinger", {"k": "2"}, "bollinger: k must be a finite number > 0"),
        ("macd", {"fast": 26, "slow": 12}, "macd: fast must be < slow"),
        ("stochastic", {"d_window": 0}, "stochastic: d_window must be an int"),
        ("range_vol", {"window": 1}, "range_vol: window must be an int"),
    ],
)
def test_bad_params(bars: pd.DataFrame, name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(FeatureError, match=match):
        compute_features(bars, [name], params={name: params})
    with pytest.raises(FeatureError, match=match):
        feature_spec(name).func(bars, **params)


@pytest.mark.parametrize("bad", [np.ones((10, 5)), pd.Series([1.0, 2.0]), None, "bars"])
def test_not_a_bar_frame(bad: object) -> None:
    with pytest.raises(BarDataError, match="features need a bar frame"):
        compute_features(bad)  # type: ignore[arg-type]
    with pytest.raises(BarDataError, match="features need a bar frame"):
        rsi(bad)  # type: ignore[arg-type]


def test_frame_that_breaks_the_contract(bars: pd.DataFrame) -> None:
    no_attrs = bars.copy()
    no_attrs.attrs = {}
    with pytest.raises(BarDataError, match=r"attrs\['symbol'\] is missing"):
        compute_features(no_attrs)
    with pytest.raises(BarDataError, match="columns must be"):
        compute_features(bars[["open", "high", "low", "close"]])
    reversed_ = bars.iloc[::-1]
    with pytest.raises(BarDataError, match="out-of-order timestamp"):
        compute_features(reversed_)


@pytest.mark.parametrize(
    ("column", "value"),
    [("high", np.nan), ("close", 0.0), ("low", -1.0), ("open", np.inf)],
)
def test_bad_price_names_row_and_column(bars: pd.DataFrame, column: str, value: float) -> None:
    broken = bars.copy()
    prices = broken[column].to_numpy().copy()
    prices[7] = value
    broken[column] = prices
    with pytest.raises(BarDataError) as err:
        compute_features(broken)
    assert err.value.row == 8
    assert err.value.column == column
    assert "is not positive and finite" in str(err.value)
    assert str(broken.index[7]) in str(err.value)


@pytest.mark.parametrize("n", [0, 1, 2, 9])
def test_too_few_bars_give_nan_not_errors(n: int) -> None:
    bars = synthetic_bars(60, seed=1).iloc[:n]
    frame = compute_features(bars)
    assert list(frame.columns) == DEFAULT_COLUMNS
    assert frame.index.equals(bars.index)
    short = ["candle_body", "candle_upper", "candle_lower", "ret_log_1", "ret_log_3", "ret_log_6"]
    assert frame.drop(columns=short).isna().all().all()
    assert frame["candle_body"].notna().all()
    assert frame["ret_log_6"].notna().sum() == max(n - 6, 0)


def test_flat_bars_give_finite_values() -> None:
    """Runs of open = high = low = close (outage fills in the real data) divide by no
    zero: every value after the warm-up is finite."""
    bars = synthetic_bars(600, seed=3, flat_every=150)
    frame = compute_features(bars)
    assert np.isfinite(frame.iloc[130:].to_numpy()).all()
    flat = bars.index[150 + 29]  # the 30th bar of the first flat run
    assert frame.loc[flat, "candle_body"] == 0.0
    assert frame.loc[flat, "ret_z_20"] == 0.0
    assert frame.loc[flat, "rvol_20"] == 0.0
    assert frame.loc[flat, "bb_width_20_2"] == 0.0
    assert frame.loc[flat, "bb_pctb_20_2"] == 0.5
    # the running sum behind the range estimators keeps a rounding residue of the
    # volatile bars that left the window: ~1e-11, not 0
    assert 0.0 <= frame.loc[flat, "vol_parkinson_20"] < 1e-9
    assert 0.0 <= frame.loc[flat, "vol_gk_20"] < 1e-9


def test_registration_rules() -> None:
    with pytest.raises(FeatureError, match="'rsi' is already taken"):
        feature("rsi")(lambda bars: bars)
    with pytest.raises(FeatureError, match="'returns' is already taken"):
        feature("returns")(lambda bars: bars)

    def positional(bars: pd.DataFrame, window: int = 3) -> pd.DataFrame:
        return bars

    def no_default(bars: pd.DataFrame, *, window: int) -> pd.DataFrame:
        return bars

    with pytest.raises(FeatureError, match="'window' must be keyword-only, defaulted"):
        feature("x_positional")(positional)
    with pytest.raises(FeatureError, match="'window' must be keyword-only, defaulted"):
        feature("x_no_default")(no_default)
    assert "x_positional" not in list_features()
    assert "x_no_default" not in list_features()


def test_spec_exposes_defaults_and_summary() -> None:
    spec = feature_spec("macd")
    assert dict(spec.defaults) == {"fast": 12, "slow": 26, "signal": 9}
    assert spec.group == "momentum"
    assert spec.summary.startswith("MACD of the close over the close")


def test_output_contract_is_checked(bars: pd.DataFrame) -> None:
    other = pd.date_range("2000-01-01", periods=len(bars), freq="h", tz="UTC", name="ts")
    shifted = pd.DataFrame({"x": np.ones(len(bars))}, index=other)
    with pytest.raises(FeatureError, match="did not return a frame on the bars' index"):
        registry._check_output("x", shifted, bars)
    ints = pd.DataFrame({"x": np.ones(len(bars), dtype=np.int64)}, index=bars.index)
    with pytest.raises(FeatureError, match=r"non-float64 columns \['x'\]"):
        registry._check_output("x", ints, bars)


def test_shared_intermediates_are_read_only_and_reused() -> None:
    bars = bars_from([1.0, 2.0, 3.0])
    calls = []

    def make() -> np.ndarray:
        calls.append(1)
        return np.arange(3.0)

    first = registry.shared(bars, "k", make)
    assert not first.flags.writeable
    registry.shared(bars, "k", make)
    assert len(calls) == 2  # outside compute_features nothing is kept
    # inside, realised_vol and return_zscore share one series of returns
    frame = compute_features(synthetic_bars(300, seed=2), ["realised_vol", "return_zscore"])
    alone = compute_features(synthetic_bars(300, seed=2), ["return_zscore"])
    pd.testing.assert_frame_equal(frame[alone.columns], alone)
