from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine.data.multiframe import build_stack, stack_timeframes
from mlengine.data.resample import resample
from mlengine.data.schema import OHLCV, BarDataError, Timeframe, TimeframeError
from mlengine.features import compute_features
from tests.features import real_slice, synthetic_bars

TFS = ("4h", "1d")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feats(bars: pd.DataFrame) -> pd.DataFrame:
    """Two causal features with a one-bar warm-up, so short series give complete windows."""
    close = np.log(bars["close"])
    return pd.DataFrame(
        {"ret": close.diff(), "range": np.log(bars["high"] / bars["low"])}, index=bars.index
    )


def log_returns(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_features(bars, ["log_returns"])


def bars_at(n: int, seed: int, start: int = 0) -> pd.DataFrame:
    """Hourly random-walk bars starting ``start`` hours after midnight."""
    return synthetic_bars(n + start, seed).iloc[start:]


def closes(index: pd.Index, tf: str) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(index).as_unit("ns").asi8) + int(
        Timeframe.parse(tf).delta.value
    )


@SETTINGS
@given(seed=st.integers(0, 2**16), start=st.integers(0, 23), n=st.integers(30, 400))
def test_positions_follow_the_closed_bar_rule(seed: int, start: int, n: int) -> None:
    bars = bars_at(n, seed, start)
    stack = build_stack(bars, TFS, feats)
    assert stack.timeframes == ("1h", *TFS)
    np.testing.assert_array_equal(stack.positions[:, 0], np.arange(n))
    base_close = closes(bars.index, "1h")
    for k, tf in enumerate(TFS, start=1):
        high_close = closes(resample(bars, tf).index, tf)
        # brute force: the number of higher bars closed by each base close, minus one
        expected = (high_close[None, :] <= base_close[:, None]).sum(axis=1) - 1
        np.testing.assert_array_equal(stack.positions[:, k], expected)


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    k=st.sampled_from([1, 2]),
    data=st.data(),
    factor=st.floats(0.5, 2.0).filter(lambda f: abs(f - 1) > 1e-3),
)
def test_shifting_a_higher_bar_changes_nothing_before_its_close(
    seed: int, k: int, data: st.DataObject, factor: float
) -> None:
    window = 3
    bars = bars_at(24 * 12, seed, start=5)
    frames = [bars] + [resample(bars, tf) for tf in TFS]
    tfs = ["1h", *TFS]
    n_k = len(frames[k])
    j = data.draw(st.integers(n_k // 2, n_k - 1), label="higher bar")
    shifted = list(frames)
    moved = frames[k].copy()
    stamp = moved.index[j]
    for col in OHLCV[:4]:
        moved.loc[stamp, col] = float(moved.loc[stamp, col]) * factor
    shifted[k] = moved
    before = stack_timeframes([feats(f) for f in frames], tfs)
    after = stack_timeframes([feats(f) for f in shifted], tfs)
    ok = before.complete(window)
    np.testing.assert_array_equal(after.complete(window), ok)
    close_j = closes(frames[k].index, tfs[k])[j]
    early = closes(bars.index, "1h") < close_j
    rows = np.flatnonzero(ok & early)
    assert rows.size
    np.testing.assert_array_equal(after.windows(rows, window), before.windows(rows, window))
    # the check can fail: rows whose window ends at the shifted bar see the change
    seeing = np.flatnonzero(ok & (before.positions[:, k] == j))
    assert seeing.size
    assert not np.array_equal(after.windows(seeing, window), before.windows(seeing, window))


@SETTINGS
@given(seed=st.integers(0, 2**16), cut=st.integers(60, 24 * 10))
def test_truncating_the_base_bars_changes_no_earlier_window(seed: int, cut: int) -> None:
    window = 2
    bars = bars_at(24 * 10, seed, start=7)
    full = build_stack(bars, TFS, feats)
    part = build_stack(bars.iloc[:cut], TFS, feats)
    ok = part.complete(window)
    np.testing.assert_array_equal(ok, full.complete(window)[:cut])
    rows = np.flatnonzero(ok)
    np.testing.assert_array_equal(part.windows(rows, window), full.windows(rows, window))


def test_windows_end_at_the_last_closed_bar_on_real_data() -> None:
    bars = real_slice("eurusd_1h", 1000, 24 * 120)
    stack = build_stack(bars, TFS, log_returns)
    window = 4
    rows = np.flatnonzero(stack.complete(window))
    assert rows.size > len(bars) // 2
    packed = stack.windows(rows, window)
    assert packed.shape == (rows.size, 3, window, len(stack.columns))
    daily = log_returns(resample(bars, "1d")).to_numpy(dtype=np.float32)
    base_close = closes(bars.index, "1h")
    daily_close = closes(resample(bars, "1d").index, "1d")
    for i, row in enumerate(rows[::97]):
        p = stack.positions[row, 2]
        assert daily_close[p] <= base_close[row]
        assert p + 1 == len(daily_close) or daily_close[p + 1] > base_close[row]
        np.testing.assert_array_equal(packed[::97][i, 2], daily[p - window + 1 : p + 1])
    base = log_returns(bars).to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(packed[:, 0, -1], base[rows])


def test_complete_matches_brute_force() -> None:
    bars = bars_at(24 * 8, 3, start=2)
    stack = build_stack(bars, TFS, feats)
    window = 3
    expected = [
        all(
            p >= window - 1 and np.isfinite(x[p - window + 1 : p + 1]).all()
            for p, x in zip(stack.positions[t], stack.features, strict=True)
        )
        for t in range(len(bars))
    ]
    np.testing.assert_array_equal(stack.complete(window), expected)
    assert 0 < stack.complete(window).sum() < len(bars)


def test_scaled_standardises_each_timeframe() -> None:
    stack = build_stack(bars_at(24 * 8, 1), TFS, feats)
    k, f = len(stack.timeframes), len(stack.columns)
    mean = np.arange(k * f, dtype=np.float64).reshape(k, f)
    std = np.full((k, f), 2.0)
    scaled = stack.scaled(mean, std)
    for x, y, m in zip(stack.features, scaled.features, mean, strict=True):
        np.testing.assert_allclose(y, (x - m) / 2.0)
    np.testing.assert_array_equal(scaled.positions, stack.positions)
    with pytest.raises(BarDataError, match="timeframes x features"):
        stack.scaled(mean[:1], std)


def test_incomplete_rows_are_refused() -> None:
    stack = build_stack(bars_at(24 * 8, 1), TFS, feats)
    with pytest.raises(BarDataError, match=r"base row 0 .* no complete window of 2"):
        stack.windows(np.array([0]), 2)
    assert stack.windows(np.array([], dtype=np.int64), 2).shape == (0, 3, 2, len(stack.columns))


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_bad_window(window: object) -> None:
    stack = build_stack(bars_at(24 * 3, 1), TFS, feats)
    with pytest.raises(BarDataError, match="window must be a positive integer"):
        stack.complete(window)  # type: ignore[arg-type]


def test_bad_stacks() -> None:
    bars = bars_at(24 * 3, 1)
    base, daily = feats(bars), feats(resample(bars, "1d"))
    with pytest.raises(TimeframeError, match="one feature frame per timeframe"):
        stack_timeframes([base, daily], ["1h"])
    with pytest.raises(TimeframeError, match="one feature frame per timeframe"):
        stack_timeframes([], [])
    with pytest.raises(TimeframeError, match="4h follows 1d"):
        stack_timeframes([base, daily, daily], ["1h", "1d", "4h"])
    with pytest.raises(BarDataError, match="the 1d features have columns"):
        stack_timeframes([base, daily.iloc[:, :1]], ["1h", "1d"])
    with pytest.raises(TimeframeError, match="unknown timeframe"):
        build_stack(bars, ["4x"], feats)
    no_tf = bars.copy()
    no_tf.attrs = {}
    with pytest.raises(TimeframeError, match="attrs"):
        build_stack(no_tf, TFS, feats)
