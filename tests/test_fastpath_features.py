"""The fast paths of the feature layer and the strategies' prediction path give exactly
what the pandas paths they replace gave: the same frames, values, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine.data.schema import PRICE_COLUMNS, BarDataError, Timeframe, TimeframeError
from mlengine.features import (
    FeatureError,
    check_bars,
    compute_features,
    feature_spec,
    list_features,
    registry,
)
from mlengine.features.structure import structure_events, swings
from mlengine.strategies._windowed import scale_free, take_columns
from tests.features import real_slice, synthetic_bars


def _concat_of_features(bars: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """What compute_features gave before: each feature's checked frame, concatenated."""
    return pd.concat([feature_spec(n).func(bars) for n in names], axis=1)


def _old_check_prices(bars: pd.DataFrame) -> None:
    """The per-column price check of check_bars before the fast path."""
    label = str(bars.attrs.get("symbol") or "bar frame")
    for col in PRICE_COLUMNS:
        a = bars[col].to_numpy()
        if a.size and not (a.min() > 0.0 and a.max() < np.inf):
            i = int(np.flatnonzero(~((a > 0.0) & (a < np.inf)))[0])
            raise BarDataError(
                f"price {float(a[i])} at {bars.index[i]} is not positive and finite",
                source=label,
                row=i + 1,
                column=col,
            )


@pytest.mark.parametrize("n", [0, 1, 5, 300])
def test_compute_features_equals_the_concat_of_the_features(n: int) -> None:
    bars = synthetic_bars(max(n, 1), seed=n)[:n]
    names = list_features()
    out = compute_features(bars)
    expected = _concat_of_features(bars, names)
    pd.testing.assert_frame_equal(out, expected, check_exact=True)
    assert out.columns.dtype == expected.columns.dtype
    assert out.index is bars.index
    assert out.attrs == {}
    assert all(out[c].to_numpy().flags.c_contiguous for c in out.columns[:3])


def test_compute_features_on_real_bars_and_slices() -> None:
    bars = real_slice("eurusd_1h", 1000, 800)
    for part in (bars, bars.iloc[-512:], bars.iloc[3:]):
        for groups in (["returns", "volatility"], ["structure", "breakout"], None):
            out = compute_features(part, groups)
            names = (
                list_features()
                if groups is None
                else list(dict.fromkeys(f for g in groups for f in list_features(g)))
            )
            pd.testing.assert_frame_equal(out, _concat_of_features(part, names), check_exact=True)


def test_structure_detection_inside_and_outside_compute_features() -> None:
    bars = synthetic_bars(400, seed=3)
    # the scan skips its own bar check inside compute_features only: the same events
    events = structure_events(bars)
    assert len(events) and len(swings(bars))
    with pytest.raises(BarDataError, match="not positive and finite"):
        bad = bars.copy()
        bad.iloc[10, 2] = -1.0
        structure_events(bad)


@given(
    col=st.sampled_from(range(4)),
    row=st.integers(0, 49),
    value=st.sampled_from([0.0, -1.0, np.nan, np.inf, -np.inf]),
    second=st.booleans(),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_price_check_names_what_the_per_column_check_named(
    col: int, row: int, value: float, second: bool
) -> None:
    bars = synthetic_bars(50, seed=1)
    bars.iloc[row, col] = value
    if second:  # a later bad cell in an earlier column: the column order decides
        bars.iloc[min(row + 7, 49), max(col - 1, 0)] = np.nan
    with pytest.raises(BarDataError) as old:
        _old_check_prices(bars)
    with pytest.raises(BarDataError) as new:
        check_bars(bars)
    assert str(new.value) == str(old.value)
    assert (new.value.row, new.value.column) == (old.value.row, old.value.column)
    with pytest.raises(BarDataError) as via_features:
        compute_features(bars, ["rsi"])
    assert str(via_features.value) == str(old.value)


def test_bar_frame_dtype_error_names_the_column() -> None:
    bars = synthetic_bars(20, seed=2)
    bad = bars.astype({"low": np.float32})
    with pytest.raises(BarDataError, match="dtype float32 is not float64") as err:
        check_bars(bad)
    assert err.value.column == "low"


def test_frame_builds_one_block_and_keeps_odd_columns_for_the_check() -> None:
    bars = synthetic_bars(30, seed=4)
    a, b = np.arange(30.0), np.linspace(0.0, 1.0, 30)
    fast = registry.frame(bars, {"a": a, "b": b})
    slow = pd.DataFrame({"a": a, "b": b}, index=bars.index)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert fast.columns.dtype == slow.columns.dtype
    ints = registry.frame(bars, {"a": a, "i": np.arange(30)})
    assert ints["i"].dtype == np.int64
    with pytest.raises(FeatureError, match=r"non-float64 columns \['i'\]"):
        registry._check_output("x", ints, bars)


def test_feature_functions_may_return_frames_or_bad_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars = synthetic_bars(40, seed=5)
    spec = feature_spec("rsi")

    def as_frame(bars: pd.DataFrame, *, window: int = 14) -> pd.DataFrame:
        return pd.DataFrame({"rsi_x": np.ones(len(bars))}, index=bars.index)

    def ints(bars: pd.DataFrame, *, window: int = 14) -> dict[str, np.ndarray]:
        return {"rsi_i": np.ones(len(bars), dtype=np.int64)}

    def short(bars: pd.DataFrame, *, window: int = 14) -> dict[str, np.ndarray]:
        return {"rsi_s": np.ones(len(bars) - 1)}

    def shifted(bars: pd.DataFrame, *, window: int = 14) -> pd.DataFrame:
        return pd.DataFrame(
            {"rsi_x": np.ones(len(bars))}, index=pd.DatetimeIndex(bars.index).shift(1, "h")
        )

    registry._REGISTRY["rsi"] = registry.FeatureSpec(
        "rsi", spec.group, spec.func, as_frame, spec.defaults
    )
    try:
        out = compute_features(bars, ["rsi", "atr"])
        assert list(out.columns) == ["rsi_x", "atr_14", "atr_rel_14"]
        np.testing.assert_array_equal(out["rsi_x"].to_numpy(), np.ones(40))
        for bad, match in (
            (ints, r"returned non-float64 columns \['rsi_i'\]"),
            (shifted, "did not return a frame on the bars' index"),
            (short, "same length|Length|length"),
        ):
            registry._REGISTRY["rsi"] = registry.FeatureSpec(
                "rsi", spec.group, spec.func, bad, spec.defaults
            )
            with pytest.raises((FeatureError, ValueError), match=match):
                compute_features(bars, ["rsi"])
    finally:
        registry._REGISTRY["rsi"] = spec


def test_duplicate_columns_are_still_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    bars = synthetic_bars(60, seed=6)
    for name in ("atr_ratio", "rvol_ratio"):  # two features giving one column name
        spec = feature_spec(name)
        clash = registry.FeatureSpec(
            name, spec.group, spec.func, lambda b, **kw: {"x_5": np.ones(len(b))}, spec.defaults
        )
        monkeypatch.setitem(registry._REGISTRY, name, clash)
    with pytest.raises(FeatureError, match=r"duplicate columns \['x_5'\]"):
        compute_features(bars, ["atr_ratio", "rvol_ratio"])


def test_bar_columns_are_the_frame_columns() -> None:
    bars = real_slice("eurusd_1h", 0, 100).iloc[7:]
    direct = registry.bar_columns(bars, "close", "open")
    for a, c in zip(direct, ("close", "open"), strict=True):
        np.testing.assert_array_equal(a, bars[c].to_numpy())
    seen = {}

    def grab(b: pd.DataFrame, **kw: object) -> dict[str, np.ndarray]:
        cols = registry.bar_columns(b, "open", "high", "low", "close", "volume")
        seen["cols"] = cols
        return {"grab": np.zeros(len(b))}

    spec = feature_spec("rsi")
    registry._REGISTRY["rsi"] = registry.FeatureSpec("rsi", spec.group, spec.func, grab, {})
    try:
        compute_features(bars, ["rsi"])
    finally:
        registry._REGISTRY["rsi"] = spec
    for a, c in zip(seen["cols"], ("open", "high", "low", "close", "volume"), strict=True):
        np.testing.assert_array_equal(a, bars[c].to_numpy())
        assert a.flags.c_contiguous and not a.flags.writeable


def _frame(n: int, names: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC", name="ts")
    return pd.DataFrame(rng.normal(size=(n, len(names))), index=idx, columns=names)


@given(
    keep=st.lists(st.integers(0, 5), min_size=0, max_size=6, unique=True),
    seed=st.integers(0, 10),
)
@settings(max_examples=40, deadline=None)
def test_take_columns_is_the_label_selection(keep: list[int], seed: int) -> None:
    names = ["a", "atr_14", "b", "atr_rel_14", "c", "d"]
    frame = _frame(17, names, seed)
    pick = [names[i] for i in keep]
    fast = take_columns(frame, pick)
    slow = frame[pick].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(fast, slow)
    assert fast.shape == slow.shape
    with pytest.raises(KeyError):
        take_columns(frame, ["nope"])


def test_scale_free_is_the_label_selection() -> None:
    names = ["a", "atr_14", "atr_rel_14", "atr_5"]
    frame = _frame(9, names, 0)
    fast = scale_free(frame)
    slow = frame[["a", "atr_rel_14"]]
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert fast.columns.dtype == slow.columns.dtype
    mixed = frame.assign(atr_rel_14=np.arange(9))  # not all float64: pandas' selection
    pd.testing.assert_frame_equal(scale_free(mixed), mixed[["a", "atr_rel_14"]])
    tagged = frame.copy()
    tagged.attrs = {"symbol": "X"}
    assert scale_free(tagged).attrs == {"symbol": "X"}


def test_timeframe_parse_is_remembered_but_errors_are_not() -> None:
    assert Timeframe.parse("1H") is Timeframe.parse("1H")
    assert Timeframe.parse("1H") == Timeframe.parse("60m")
    for _ in range(2):
        with pytest.raises(TimeframeError, match="unknown timeframe '7y'"):
            Timeframe.parse("7y")


def test_checked_bars_skips_only_the_recheck_of_the_same_bars() -> None:
    bars = synthetic_bars(120, seed=7)
    with registry.checked_bars(bars) as checked:
        assert checked is bars
        pd.testing.assert_frame_equal(
            compute_features(bars, ["returns"]),
            _concat_of_features(bars, list_features("returns")),
            check_exact=True,
        )
        bad = bars.copy()
        bad.iloc[5, 1] = np.nan  # other bars in the block are checked as ever
        with pytest.raises(BarDataError, match="not positive and finite"):
            compute_features(bad, ["rsi"])
    with (
        pytest.raises(BarDataError, match="not positive and finite"),
        registry.checked_bars(bad),
    ):
        pass
    with pytest.raises(BarDataError, match="not positive and finite"):
        compute_features(bad, ["rsi"])  # the block is over


def test_a_nested_block_on_the_same_bars_does_not_check_them_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars = synthetic_bars(120, seed=7)
    checked: list[int] = []
    original = registry._checked_values

    def counted(frame: object) -> np.ndarray:
        checked.append(id(frame))
        return original(frame)

    monkeypatch.setattr(registry, "_checked_values", counted)
    with registry.checked_bars(bars), registry.checked_bars(bars):  # e.g. MTS, then its base
        compute_features(bars, ["returns"])
    assert checked == [id(bars)]


def test_infer_on_some_windows_converts_only_their_rows() -> None:
    import torch

    from mlengine.nn.recurrent import LSTMConfig, LSTMEncoder
    from mlengine.strategies._training import EncoderNet, deterministic, infer, sliding

    window, n = 8, 60
    net = EncoderNet(LSTMEncoder(LSTMConfig(n_features=3, window=window, hidden_size=4), seed=0))
    net.eval()
    x = np.random.default_rng(0).normal(size=(n, 3))

    def reference(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """infer before the fast path: windows gathered from all rows in float32."""
        with deterministic(), torch.no_grad():
            z, logits = net(torch.from_numpy(sliding(x, window)(idx)))
        return z.numpy().astype(np.float64), net.probabilities(logits)

    for idx in (np.array([n - 1]), np.array([n - 5, n - 1]), np.array([window - 1, 30])):
        emb, prob = infer(net, np.asfortranarray(x), window, idx)
        ref_emb, ref_prob = reference(idx)
        np.testing.assert_array_equal(emb, ref_emb)
        np.testing.assert_array_equal(prob, ref_prob)
    net.train()  # infer puts a net in training mode into eval mode, as before
    infer(net, x, window, np.array([n - 1]))
    assert not any(m.training for m in net.modules())
