"""Market structure: swings, BOS / CHoCH, FVG, order blocks and sweeps on hand-built bars,
checked event by event; stamping at confirmation; the per-bar features; bad parameters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from mlengine.data.schema import BarDataError
from mlengine.features import FeatureError, compute_features
from mlengine.features._structure import wilder_atr
from mlengine.features.structure import (
    EVENT_COLUMNS,
    fvg,
    market_structure,
    order_block,
    structure_events,
    swings,
)
from tests.features import bars_from, real_slice, synthetic_bars

NaT = pd.NaT

# (open, high, low, close): a rally breaks the swing high at bar 7 (BOS, with an order
# block and a gap), then a drop breaks the swing low at bar 10 (CHoCH, likewise)
RALLY_THEN_DROP = [
    (10.0, 11.0, 9.0, 10.0),
    (10.0, 12.0, 10.0, 11.0),
    (11.0, 14.0, 11.0, 13.0),  # swing high 14 (n=1), known at bar 3
    (13.0, 13.5, 11.0, 12.0),
    (12.0, 12.5, 9.0, 10.0),
    (10.0, 11.0, 8.0, 9.0),  # swing low 8, known at bar 6; last bearish candle: the OB
    (9.0, 12.0, 8.5, 11.5),
    (11.5, 15.0, 11.4, 14.5),  # close above 14: BOS; low 11.4 > high[5] 11: bull FVG
    (14.5, 14.8, 12.0, 12.5),
    (12.5, 13.0, 11.2, 11.5),  # trades into the gap: mitigated
    (11.5, 11.6, 7.5, 7.8),  # close below 8: CHoCH; through the gap and the OB; bear FVG
    (7.8, 11.3, 7.0, 8.5),
    (8.5, 11.8, 8.0, 9.0),  # into the bear gap and the bear OB
]

# two swing highs 0.02 apart (a pool at 10.02) swept at bar 10; two lows 0.02 apart
# (a pool at 8.0) broken by a close at bar 11: no sweep, a BOS with its order block
EQUAL_HIGHS = [
    (9.0, 9.5, 8.5, 9.0),
    (9.0, 9.8, 8.8, 9.5),
    (9.5, 10.0, 9.0, 9.2),
    (9.2, 9.6, 8.6, 8.8),
    (8.8, 9.0, 8.0, 8.5),
    (8.5, 9.6, 8.3, 9.4),
    (9.4, 10.02, 8.9, 9.6),
    (9.6, 9.7, 8.9, 9.0),
    (9.0, 9.2, 8.02, 8.4),
    (8.4, 9.5, 8.5, 9.3),
    (9.3, 10.5, 9.2, 9.8),
    (9.8, 9.9, 7.5, 7.8),
]


def ohlc(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    o, h, low, c = (list(x) for x in zip(*rows, strict=True))
    return bars_from(c, open_=o, high=h, low=low)


def mirrored(bars: pd.DataFrame, k: float = 30.0) -> pd.DataFrame:
    """Prices reflected about ``k / 2``: every bullish event becomes bearish."""
    return bars_from(
        k - bars["close"], open_=k - bars["open"], high=k - bars["low"], low=k - bars["high"]
    )


def event(
    bars: pd.DataFrame,
    kind: str,
    direction: int,
    top: float,
    bottom: float,
    formed: int,
    confirmed: int,
    mitigated: int | None = None,
    filled: int | None = None,
) -> dict[str, object]:
    idx = bars.index
    return {
        "kind": kind,
        "direction": direction,
        "level": top if direction > 0 else bottom,
        "top": top,
        "bottom": bottom,
        "formed": idx[formed],
        "confirmed": idx[confirmed],
        "mitigated": NaT if mitigated is None else idx[mitigated],
        "filled": NaT if filled is None else idx[filled],
    }


def assert_events(got: pd.DataFrame, expected: list[dict[str, object]]) -> None:
    assert list(got.columns) == list(EVENT_COLUMNS)
    assert len(got) == len(expected), got
    for i, want in enumerate(expected):
        row = got.iloc[i]
        for col, value in want.items():
            if value is NaT:
                assert row[col] is NaT, (i, col, row[col])
            elif isinstance(value, float):
                assert math.isclose(row[col], value, abs_tol=1e-12), (i, col, row[col])
            else:
                assert row[col] == value, (i, col, row[col])


def talib_atr(bars: pd.DataFrame, window: int) -> np.ndarray:
    h, low, c = (bars[x].to_numpy() for x in ("high", "low", "close"))
    return talib.ATR(h, low, c, timeperiod=window)


def swing_tuples(bars: pd.DataFrame, table: pd.DataFrame) -> list[tuple[int, float, int, int]]:
    """(direction, level, formed bar, confirmed bar) of each swing."""
    pos = bars.index.get_indexer
    return list(
        zip(
            table["direction"].tolist(),
            table["level"].tolist(),
            pos(pd.Index(table["formed"])).tolist(),
            pos(pd.Index(table["confirmed"])).tolist(),
            strict=True,
        )
    )


# --- swings --------------------------------------------------------------------------------------


def test_fractal_swings_are_stamped_n_bars_after_they_form() -> None:
    bars = ohlc(RALLY_THEN_DROP)
    table = swings(bars, n=1)
    assert list(table.columns) == ["kind", "direction", "level", "formed", "confirmed"]
    assert (table["kind"] == "swing").all()
    assert swing_tuples(bars, table) == [
        (1, 14.0, 2, 3),
        (-1, 8.0, 5, 6),
        (1, 15.0, 7, 8),
        (-1, 7.0, 11, 12),
    ]
    # n = 2: bar 7's high (15) is above two bars on each side, known at bar 9
    assert (1, 15.0, 7, 9) in swing_tuples(bars, swings(bars, n=2))


def test_equal_highs_are_not_fractal_swings() -> None:
    bars = bars_from([1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 2.0, 1.0])
    assert swing_tuples(bars, swings(bars, n=1)) == [(-1, 1.0, 5, 6), (1, 2.0, 6, 7)]


def test_zigzag_percent_swings() -> None:
    bars = bars_from([100.0, 102.0, 105.0, 103.0, 100.5, 99.0, 101.0, 103.5, 104.0])
    table = swings(bars, method="zigzag", threshold=4.0, unit="percent")
    # the rise to 105 is 5% of the low at 100; the fall to 100.5 is 4.3% of 105; the rise
    # to 103.5 is 4.5% of 99; each is known at the bar that completes the move
    assert swing_tuples(bars, table) == [(-1, 100.0, 0, 2), (1, 105.0, 2, 4), (-1, 99.0, 5, 7)]
    # at 5%: the fall of 6 from 105 completes at 99 (bar 5), the rise of 5 from 99 at 104
    five = swings(bars, method="zigzag", threshold=5.0, unit="percent")
    assert swing_tuples(bars, five) == [(-1, 100.0, 0, 2), (1, 105.0, 2, 5), (-1, 99.0, 5, 8)]
    assert swings(bars, method="zigzag", threshold=6.0, unit="percent").empty


def test_zigzag_atr_swings_use_the_atr_at_the_confirming_bar() -> None:
    bars = synthetic_bars(600, seed=4)
    table = swings(bars, method="zigzag", threshold=3.0, unit="atr", atr_window=10)
    atr = talib_atr(bars, 10)
    assert len(table) > 5
    assert (np.diff(table["direction"].to_numpy()) != 0).all()  # highs and lows alternate
    pos = bars.index.get_indexer
    for d, level, conf in zip(
        table["direction"], table["level"], pos(pd.Index(table["confirmed"])), strict=True
    ):
        far = level - bars["low"].iloc[conf] if d > 0 else bars["high"].iloc[conf] - level
        assert far >= 3.0 * atr[conf] - 1e-12


def test_wilder_atr_matches_talib() -> None:
    bars = real_slice("eurusd_1h", 500, 400)
    h, low, c = (bars[x].to_numpy() for x in ("high", "low", "close"))
    np.testing.assert_allclose(wilder_atr(h, low, c, 14), talib.ATR(h, low, c, timeperiod=14))


# --- structure events ----------------------------------------------------------------------------


def test_bos_choch_fvg_and_order_blocks_event_by_event() -> None:
    bars = ohlc(RALLY_THEN_DROP)
    got = structure_events(bars, n=1, atr_window=2)
    assert_events(
        got,
        [
            event(bars, "bos", 1, 14.0, 14.0, formed=2, confirmed=7),
            event(bars, "ob", 1, 11.0, 8.0, formed=5, confirmed=7, mitigated=10, filled=10),
            event(bars, "fvg", 1, 11.4, 11.0, formed=6, confirmed=7, mitigated=9, filled=10),
            event(bars, "choch", -1, 8.0, 8.0, formed=5, confirmed=10),
            event(bars, "ob", -1, 15.0, 11.4, formed=7, confirmed=10, mitigated=12),
            event(bars, "fvg", -1, 12.0, 11.6, formed=9, confirmed=10, mitigated=12),
        ],
    )


def test_sweep_of_equal_highs_and_break_of_equal_lows() -> None:
    bars = ohlc(EQUAL_HIGHS)
    assert swing_tuples(bars, swings(bars, n=1)) == [
        (1, 10.0, 2, 3),
        (-1, 8.0, 4, 5),
        (1, 10.02, 6, 7),
        (-1, 8.02, 8, 9),
        (1, 10.5, 10, 11),
    ]
    got = structure_events(bars, n=1, atr_window=2, eq_tol=0.1)
    assert_events(
        got,
        [
            event(bars, "sweep", -1, 10.02, 10.02, formed=6, confirmed=10),
            event(bars, "bos", -1, 8.02, 8.02, formed=8, confirmed=11),
            event(bars, "ob", -1, 10.5, 9.2, formed=10, confirmed=11),
        ],
    )
    # a tolerance below the 0.02 gap makes no pool, so no sweep
    tight = structure_events(bars, n=1, atr_window=2, eq_tol=0.001)
    assert "sweep" not in set(tight["kind"])


@pytest.mark.parametrize("rows", [RALLY_THEN_DROP, EQUAL_HIGHS])
def test_mirrored_prices_give_mirrored_events(rows: list[tuple[float, ...]]) -> None:
    bars = ohlc(rows)  # type: ignore[arg-type]
    up = structure_events(bars, n=1, atr_window=2)
    down = structure_events(mirrored(bars), n=1, atr_window=2)
    assert (down["kind"] == up["kind"]).all()
    assert (down["direction"] == -up["direction"]).all()
    np.testing.assert_allclose(down["level"], 30.0 - up["level"])
    np.testing.assert_allclose(down["top"], 30.0 - up["bottom"])
    for col in ("formed", "confirmed", "mitigated", "filled"):
        pd.testing.assert_series_equal(down[col], up[col])


@pytest.mark.parametrize("method", ["fractal", "zigzag"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_events_are_known_at_confirmation_only(method: str, seed: int) -> None:
    """On a prefix ending at bar k the events are those of the full series confirmed by k,
    with the mitigations and fills up to k: nothing is stamped before it is known."""
    bars = synthetic_bars(500, seed=seed)
    kwargs: dict[str, Any] = {"method": method, "n": 2, "atr_window": 10}
    full = structure_events(bars, **kwargs)
    full_sw = swings(bars, **kwargs)
    assert {"bos", "choch", "fvg", "ob"} <= set(full["kind"])
    assert (full["confirmed"] >= full["formed"]).all()
    assert (full["mitigated"].dropna() > full.loc[full["mitigated"].notna(), "confirmed"]).all()
    for k in (40, 137, 300, 499):
        end = bars.index[k - 1]
        part = structure_events(bars.iloc[:k], **kwargs)
        want = full[full["confirmed"] <= end].copy()
        for col in ("mitigated", "filled"):
            want[col] = want[col].where(want[col] <= end)
        pd.testing.assert_frame_equal(part, want.reset_index(drop=True))
        sw = swings(bars.iloc[:k], **kwargs)
        pd.testing.assert_frame_equal(
            sw, full_sw[full_sw["confirmed"] <= end].reset_index(drop=True)
        )


def test_no_events_on_too_few_bars() -> None:
    bars = synthetic_bars(40, seed=1)
    for k in (0, 1, 2):
        assert structure_events(bars.iloc[:k]).empty
        assert swings(bars.iloc[:k]).empty


# --- features ------------------------------------------------------------------------------------


def test_structure_features_on_the_hand_built_bars() -> None:
    bars = ohlc(RALLY_THEN_DROP)
    ms = market_structure(bars, n=1, atr_window=2, window=4)
    nan = np.nan
    np.testing.assert_array_equal(ms["ms_trend_1"], [nan, nan, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1, -1])
    np.testing.assert_array_equal(
        ms["ms_since_bos_1_4"], [nan, nan, 4, 4, 4, 4, 4, 0, 1, 2, 3, 4, 4]
    )
    np.testing.assert_array_equal(
        ms["ms_since_choch_1_4"], [nan, nan, 4, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2]
    )
    np.testing.assert_array_equal(ms["ms_bos_net_1_4"], [nan, nan, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(
        ms["ms_choch_net_1_4"], [nan, nan, 0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1]
    )
    assert (ms["ms_sweep_net_1_4"].iloc[2:] == 0).all()

    atr = talib_atr(bars, 2)
    gaps = fvg(bars, atr_window=2, window=3, cap=50.0)
    bull, bear = gaps["fvg_bull_dist_2"].to_numpy(), gaps["fvg_bear_dist_2"].to_numpy()
    # the bull gap [11, 11.4] is open from bar 7 to bar 9 (bar 9 trades into it but
    # closes above it)
    np.testing.assert_allclose(bull[7:10], (np.array([14.5, 12.5, 11.5]) - 11.4) / atr[7:10])
    assert (bull[[2, 3, 4, 5, 6, 10, 11, 12]] == 50.0).all()
    # the bear gap [11.6, 12] from bar 10 on; bar 12 trades into it but fills nothing
    np.testing.assert_allclose(bear[10:], (11.6 - np.array([7.8, 8.5, 9.0])) / atr[10:])
    assert (bear[2:10] == 50.0).all()
    np.testing.assert_array_equal(gaps["fvg_net_3"], [nan, nan, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1, -1])

    obs = order_block(bars, n=1, atr_window=2, cap=50.0)
    ob_bull, ob_bear = obs["ob_bull_dist_1_2"].to_numpy(), obs["ob_bear_dist_1_2"].to_numpy()
    np.testing.assert_allclose(ob_bull[7:10], (np.array([14.5, 12.5, 11.5]) - 11.0) / atr[7:10])
    assert (ob_bull[10:] == 50.0).all()  # mitigated at bar 10
    np.testing.assert_allclose(ob_bear[10:12], (11.4 - np.array([7.8, 8.5])) / atr[10:12])
    assert ob_bear[12] == 50.0  # mitigated at bar 12
    # the cap bounds every distance
    capped = order_block(bars, n=1, atr_window=2, cap=0.5)
    assert capped["ob_bull_dist_1_2"].max() == 0.5


def test_structure_features_are_shared_and_scale_free() -> None:
    bars = real_slice("btcusd_1h_coinbase", 3000, 600)
    frame = compute_features(bars, ["structure"])
    assert list(frame.columns) == [
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
    ]
    assert frame.iloc[:14].isna().all().all()
    assert frame.iloc[14:].notna().all().all()
    scaled = bars_from(
        bars["close"] * 1000,
        open_=bars["open"] * 1000,
        high=bars["high"] * 1000,
        low=bars["low"] * 1000,
    )
    np.testing.assert_allclose(
        compute_features(scaled, ["structure"]).to_numpy(), frame.to_numpy(), rtol=1e-9
    )


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "pivot"}, "swings: method must be 'fractal' or 'zigzag', got 'pivot'"),
        ({"n": 0}, r"swings: n must be an int in \[1, 100000\], got 0"),
        ({"n": 2.5}, "swings: n must be an int"),
        ({"method": "zigzag", "threshold": 0.0}, "swings: threshold must be a finite number > 0"),
        ({"method": "zigzag", "unit": "pips"}, "swings: unit must be 'atr' or 'percent'"),
        ({"atr_window": 0}, "swings: atr_window must be an int"),
    ],
)
def test_bad_swing_params(kwargs: dict[str, Any], match: str) -> None:
    bars = synthetic_bars(50, seed=0)
    with pytest.raises(FeatureError, match=match):
        swings(bars, **kwargs)
    with pytest.raises(FeatureError, match=match):
        structure_events(bars, **kwargs)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("market_structure", {"n": 0}, "market_structure: n must be an int"),
        ("market_structure", {"window": 0}, "market_structure: window must be an int"),
        ("market_structure", {"eq_tol": -0.1}, "market_structure: eq_tol must be a finite"),
        ("fvg", {"atr_window": 1.5}, "fvg: atr_window must be an int"),
        ("fvg", {"cap": 0.0}, "fvg: cap must be a finite number > 0"),
        ("order_block", {"cap": float("inf")}, "order_block: cap must be a finite number > 0"),
        ("order_block", {"n": True}, "order_block: n must be an int"),
    ],
)
def test_bad_feature_params(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(FeatureError, match=match):
        compute_features(synthetic_bars(50, seed=0), [name], params={name: params})


def test_bad_eq_tol_and_bars() -> None:
    bars = synthetic_bars(50, seed=0)
    with pytest.raises(FeatureError, match="structure_events: eq_tol must be a finite number"):
        structure_events(bars, eq_tol=0.0)
    with pytest.raises(BarDataError, match="features need a bar frame"):
        swings(bars.to_numpy())  # type: ignore[arg-type]
    with pytest.raises(BarDataError, match="features need a bar frame"):
        structure_events(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [5, 6])
def test_mitigation_and_fill_match_a_direct_scan(seed: int) -> None:
    """Each zone's mitigation (fill) is the first later bar trading to its near (far) edge."""
    bars = synthetic_bars(800, seed=seed)
    events = structure_events(bars, n=2, atr_window=10)
    zones = events[events["kind"].isin(["fvg", "ob"])]
    assert {"fvg", "ob"} <= set(zones["kind"]) and zones["filled"].notna().any()
    h, low = bars["high"].to_numpy(), bars["low"].to_numpy()
    later = np.arange(len(bars))
    pos = bars.index.get_indexer  # NaT: -1
    columns = [zones[c].to_numpy() for c in ("direction", "top", "bottom")]
    columns += [pos(pd.Index(zones[c])) for c in ("confirmed", "mitigated", "filled")]
    for d, top, bottom, conf, mitigated, filled in zip(*columns, strict=True):
        near, far = (low <= top, low <= bottom) if d > 0 else (h >= bottom, h >= top)
        for hit, got in ((near & (later > conf), mitigated), (far & (later > conf), filled)):
            assert got == (np.flatnonzero(hit)[0] if hit.any() else -1)
