"""The numpy fast paths behind MTS's live prediction give exactly what the pandas ones gave.

* :func:`~mlengine.data.resample.resample` aggregates bins with numpy instead of pandas'
  groupby-aggregate: the same bins, labels, partial-bin rule and values, bit for bit
  (NaN skipped, signed zeros, infinities, long bins), on random bar series with gaps.
* :func:`~mlengine.data.resample.closed_positions` (binary search) puts at every lower row
  the higher row ``pandas.merge_asof`` matches under the closed-bar rule;
  :func:`~mlengine.data.resample.align_to_lower` and
  :func:`~mlengine.data.multiframe.stack_timeframes` take their rows from it.
* :meth:`MTS.predict_proba <mlengine.strategies.mts.MTS.predict_proba>` builds its stack and
  aligned features once per call and its output frame at once: the same frame as the base
  prediction plus the trend columns computed from :meth:`MTS._features` outside a call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.data.multiframe import build_stack, stack_timeframes
from mlengine.data.resample import (
    _AGG,
    align_to_lower,
    closed_positions,
    default_prefix,
    resample,
)
from mlengine.data.schema import OHLCV, BarDataError, Timeframe, make_bar_frame
from mlengine.strategies._windowed import WindowedStrategy
from mlengine.strategies.mts import MTS, TREND, alignment

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")  # a Monday
#: values that pandas' reductions treat specially: skipped NaN, signed zeros, infinities,
#: sums that overflow or cancel
SPECIAL = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1e308, -1e308, 1e-300, 1.5, -2.25])


def _column(rng: np.random.Generator, n: int, mode: str) -> np.ndarray:
    if mode == "special":
        return rng.choice(SPECIAL, n)
    if mode == "some_nan":
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 9)
        x[rng.random(n) < 0.2] = np.nan
        return x
    return rng.standard_normal(n) * 10.0 ** rng.integers(-3, 9)  # cancelling float sums


@st.composite
def bar_series(draw: st.DrawFn) -> pd.DataFrame:
    """Bars of a 15m or 1h base on its grid, starting anywhere, with random gaps, and
    columns of plain, NaN-holding or special values (not OHLC-consistent: the
    aggregation must not care)."""
    tf = draw(st.sampled_from(["15m", "1h"]))
    step = Timeframe.parse(tf).delta
    n = draw(st.integers(1, 300))
    gaps = draw(st.sampled_from([1, 2, 5]))  # slots per bar: 1 is gap-free
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    slots = np.sort(rng.choice(np.arange(n * gaps), size=n, replace=False))
    stamps = T0 + step * (slots + draw(st.integers(0, 200)))
    modes = draw(
        st.lists(st.sampled_from(["plain", "some_nan", "special"]), min_size=5, max_size=5)
    )
    cols = {c: _column(rng, n, m) for c, m in zip(OHLCV, modes, strict=True)}
    return make_bar_frame(stamps, cols, symbol="FAST", timeframe=tf)


def _pandas_resample(
    bars: pd.DataFrame, timeframe: str, offset: str | None, drop_partial: bool
) -> pd.DataFrame:
    """The groupby-aggregate resample that the numpy path replaced (the reference)."""
    source, target = Timeframe.parse(bars.attrs["timeframe"]), Timeframe.parse(timeframe)
    anchor = int(pd.Timedelta(offset or 0).value)
    step = int(target.delta.value)
    codes = (pd.DatetimeIndex(bars.index).asi8 - anchor) // step
    agg = bars.groupby(codes, sort=True).agg(_AGG)
    if drop_partial and len(agg):
        keep = np.ones(len(agg), dtype=bool)
        keep[0] &= int(bars.index[0].value) <= anchor + int(codes[0]) * step
        last_close = int(bars.index[-1].value) + int(source.delta.value)
        keep[-1] &= last_close >= anchor + (int(codes[-1]) + 1) * step
        agg = agg[keep]
    index = pd.DatetimeIndex(
        (anchor + agg.index.to_numpy(dtype=np.int64) * step).astype("datetime64[ns]"), name="ts"
    ).tz_localize("UTC")
    out = pd.DataFrame({c: agg[c].to_numpy(dtype=np.float64) for c in OHLCV}, index=index)
    out.attrs.update(bars.attrs)
    out.attrs["timeframe"] = target.name
    return out


def _assert_same_bits(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same index, columns, attrs and dtypes; values equal bit for bit (any NaN for NaN)."""
    pd.testing.assert_index_equal(got.index, want.index, exact=True)
    assert list(got.columns) == list(want.columns)
    assert got.attrs == want.attrs
    assert (got.dtypes == want.dtypes).all()
    for c in want.columns:
        a, b = got[c].to_numpy(), want[c].to_numpy()
        nan = np.isnan(b)
        np.testing.assert_array_equal(np.isnan(a), nan, err_msg=c)
        np.testing.assert_array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64), err_msg=c)


@SETTINGS
@given(
    bars=bar_series(),
    target=st.sampled_from(["1h", "4h", "1d", "1w"]),
    offset=st.sampled_from([None, "22h"]),
    drop_partial=st.booleans(),
)
def test_resample_equals_the_pandas_groupby(
    bars: pd.DataFrame, target: str, offset: str | None, drop_partial: bool
) -> None:
    got = resample(bars, target, offset=offset, drop_partial=drop_partial)
    _assert_same_bits(got, _pandas_resample(bars, target, offset, drop_partial))


def test_resample_equals_the_pandas_groupby_on_real_data() -> None:
    bars = datasets.load("eurusd_1h")
    for target in ("4h", "1d", "1w"):
        _assert_same_bits(resample(bars, target), _pandas_resample(bars, target, None, True))


def _stamps(quarters: np.ndarray) -> pd.DatetimeIndex:
    """UTC stamps ``quarters`` quarter-hours after T0 (tz-aware even when empty)."""
    ns = T0.value + pd.Timedelta("15min").value * quarters.astype(np.int64)
    return pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")


@st.composite
def index_pairs(draw: st.DrawFn) -> tuple[pd.DatetimeIndex, str, pd.DatetimeIndex, str]:
    """A lower and a higher index, each strictly increasing with random gaps (the higher
    one's stamps anywhere on a 15m grid, as features of a resample or anything else)."""
    lower_tf, higher_tf = draw(
        st.sampled_from([("15m", "1h"), ("1h", "4h"), ("1h", "1d"), ("15m", "15m")])
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = pd.Timedelta("15min")
    lo_step = Timeframe.parse(lower_tf).delta // q
    n_lo, n_hi = draw(st.integers(0, 200)), draw(st.integers(0, 80))
    lower = _stamps(lo_step * np.sort(rng.choice(np.arange(3 * n_lo + 1), n_lo, False)))
    higher = _stamps(np.sort(rng.choice(np.arange(20 * n_hi + 1), n_hi, False)) - 100)
    return pd.DatetimeIndex(lower, name="ts"), lower_tf, pd.DatetimeIndex(higher), higher_tf


def merge_asof_rows(
    higher: pd.DatetimeIndex, htf: str, lower: pd.DatetimeIndex, ltf: str
) -> np.ndarray:
    """The closed-bar rule by ``pandas.merge_asof`` (the reference): per lower bar, the
    position of the last higher bar with ``T + htf <= t + ltf``, -1 before the first."""
    right = pd.DataFrame(
        {"row": np.arange(len(higher), dtype=np.float64)},
        index=pd.DatetimeIndex(higher + Timeframe.parse(htf).delta, name="close"),
    )
    left = pd.DataFrame(index=pd.DatetimeIndex(lower + Timeframe.parse(ltf).delta, name="close"))
    merged = pd.merge_asof(left, right, left_index=True, right_index=True, direction="backward")
    return merged["row"].fillna(-1).to_numpy(dtype=np.int64)


@SETTINGS
@given(pair=index_pairs())
def test_closed_positions_and_align_to_lower_follow_merge_asof(
    pair: tuple[pd.DatetimeIndex, str, pd.DatetimeIndex, str],
) -> None:
    lower, ltf, higher, htf = pair
    want = merge_asof_rows(higher, htf, lower, ltf)
    got = closed_positions(higher, lower, higher_timeframe=htf, lower_timeframe=ltf)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    rows = pd.DataFrame({"row": np.arange(len(higher))}, index=higher)
    merged = align_to_lower(rows, lower, lower_timeframe=ltf, higher_timeframe=htf)
    np.testing.assert_array_equal(merged.iloc[:, 0].fillna(-1).to_numpy(dtype=np.int64), want)


def test_stack_positions_equal_align_to_lower_on_real_data() -> None:
    bars = datasets.load("eurusd_1h").iloc[:3000]
    stack = build_stack(bars, ("4h", "1d"), lambda f: f[["close"]])
    for k, tf in enumerate(stack.timeframes[1:], start=1):
        higher = resample(bars, tf)
        rows = pd.DataFrame({"row": np.arange(len(higher))}, index=higher.index)
        seen = align_to_lower(rows, bars, higher_timeframe=tf).iloc[:, 0]
        np.testing.assert_array_equal(stack.positions[:, k], seen.fillna(-1).to_numpy(np.int64))


@pytest.mark.parametrize(
    ("higher", "match"),
    [
        (pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 04:00"]), "tz-aware"),
        (pd.DatetimeIndex(["2024-01-01 04:00", "2024-01-01 00:00"], tz="UTC"), "increasing"),
        (pd.DatetimeIndex(["2024-01-01 00:00", None], tz="UTC"), "NaT"),
        (pd.Index([1, 2]), "DatetimeIndex"),
    ],
)
def test_closed_positions_reject_bad_indexes(higher: pd.Index, match: str) -> None:
    lower = pd.date_range("2024-01-01", periods=8, freq="1h", tz="UTC")
    with pytest.raises(BarDataError, match=match):
        closed_positions(higher, lower, higher_timeframe="4h", lower_timeframe="1h")
    with pytest.raises(BarDataError, match=match):
        closed_positions(lower, higher, higher_timeframe="1h", lower_timeframe="1h")
    with pytest.raises(BarDataError, match=match):
        align_to_lower(pd.DataFrame({"x": range(len(higher))}, index=higher), lower,
                       lower_timeframe="1h", higher_timeframe="4h")  # fmt: skip
    frames = [pd.DataFrame({"x": range(8)}, index=lower), pd.DataFrame({"x": range(2)}, higher)]
    with pytest.raises(BarDataError, match=match):
        stack_timeframes(frames, ["1h", "4h"])


# --- MTS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:1400]


@pytest.fixture(scope="module")
def fitted(eurusd: pd.DataFrame) -> MTS:
    params: dict[str, Any] = {**MTS.contract_params(), "timeframes": ("4h", "1d")}
    return MTS(**params, seed=0).fit(eurusd.iloc[:1000])


def _concat_features(model: MTS, bars: pd.DataFrame) -> pd.DataFrame:
    """MTS's features as they were built: one frame per timeframe, concatenated."""
    stack = model._stack(bars)
    parts = []
    for k, (tf, x) in enumerate(zip(stack.timeframes, stack.features, strict=True)):
        rows = stack.positions[:, k]
        values = np.where((rows >= 0)[:, None], x[np.maximum(rows, 0)], np.nan)
        names = [f"{default_prefix(tf)}_{c}" for c in stack.columns]
        parts.append(pd.DataFrame(values, index=bars.index, columns=names))
    return pd.concat(parts, axis=1)


def test_mts_features_equal_the_concatenated_ones(fitted: MTS, eurusd: pd.DataFrame) -> None:
    for bars in (eurusd, eurusd.iloc[:300]):
        got = fitted._features(bars)
        pd.testing.assert_frame_equal(got, _concat_features(fitted, bars), check_exact=True)
        assert list(got.columns) == fitted.feature_names_


def _reference(model: MTS, bars: pd.DataFrame, last: int | None) -> pd.DataFrame:
    """MTS's output assembled the way it was: the base prediction (stack and features
    rebuilt per hook), then trend_{prefix} and tf_alignment inserted one by one from the
    features of :meth:`MTS._features` outside a prediction."""
    out = WindowedStrategy.predict_proba(model, bars, last=last)
    features = _concat_features(model, bars)
    trend = [c for c in features.columns if c.endswith(f"_{TREND}")]
    signs = np.sign(features[trend].to_numpy(dtype=np.float64))
    for col, sign in zip(trend, signs.T, strict=True):
        out[f"trend_{col.split('_', 1)[0]}"] = sign
    out["tf_alignment"] = alignment(signs)
    return out


@pytest.mark.parametrize("last", [None, 1, 7])
def test_mts_prediction_equals_the_hook_by_hook_one(
    fitted: MTS, eurusd: pd.DataFrame, last: int | None
) -> None:
    for bars in (eurusd, eurusd.iloc[:1200], eurusd.iloc[-900:]):
        got = fitted.predict_proba(bars, last=last)
        pd.testing.assert_frame_equal(got, _reference(fitted, bars, last), check_exact=True)
        assert fitted._memo is None  # the per-call stack is not kept


def test_mts_last_predicts_the_same_newest_bars(fitted: MTS, eurusd: pd.DataFrame) -> None:
    full = fitted.predict_proba(eurusd)
    tail = fitted.predict_proba(eurusd, last=5)
    pd.testing.assert_frame_equal(tail.iloc[-5:], full.iloc[-5:], check_exact=True)
    assert tail["p_up"].iloc[:-5].isna().all()
    trend = [c for c in full.columns if c.startswith("trend_")] + ["tf_alignment"]
    pd.testing.assert_frame_equal(tail[trend], full[trend], check_exact=True)


def test_mts_predicts_nan_before_the_first_higher_bar(fitted: MTS, eurusd: pd.DataFrame) -> None:
    """Bars too few to close one 1d bar: every output is unknown (was an IndexError)."""
    for n in (1, 5, 20):
        pred = fitted.predict_proba(eurusd.iloc[:n], last=1)
        assert len(pred) == n
        assert pred.isna().all().all()
