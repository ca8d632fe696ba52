"""Bar quality validation: each check on hand-built frames, the policies, the real data sets."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from mlengine import datasets
from mlengine.data._checks import MIN_OUTLIER_RETURNS
from mlengine.data.calendar import expected_index
from mlengine.data.schema import OHLCV, BarDataError, Timeframe, check_bar_frame
from mlengine.data.validate import BarQualityError, QualityReport, validate


def ts(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


def clean_bars(index: pd.DatetimeIndex, *, seed: int = 0, symbol: str = "TEST") -> pd.DataFrame:
    """A synthetic bar frame with valid OHLC on ``index`` (a random walk, fixed seed)."""
    rng = np.random.default_rng(seed)
    n = len(index)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + rng.uniform(1e-4, 1e-3, n)),
            "low": np.minimum(open_, close) * (1 - rng.uniform(1e-4, 1e-3, n)),
            "close": close,
            "volume": rng.uniform(1, 10, n),
        },
        index=pd.DatetimeIndex(index.tz_convert(None).as_unit("ns").values).tz_localize("UTC"),
    )
    frame.index.name = "ts"
    frame.attrs.update(symbol=symbol, timeframe=_tf(index))
    return check_bar_frame(frame)


def _tf(index: pd.DatetimeIndex) -> str:
    step = pd.Series(index).diff().mode()[0]
    minutes = int(step / pd.Timedelta(minutes=1))
    return f"{minutes // 1440}d" if minutes % 1440 == 0 else f"{minutes}m"


def raw(frame: pd.DataFrame, *, rows: bool = True, source: str = "test.csv") -> pd.DataFrame:
    """The raw form of ``frame``: a ``row`` column numbering rows in their current order."""
    out = frame.copy()
    if rows:
        out["row"] = np.arange(1, len(out) + 1, dtype=np.int64)
    out.attrs = {**frame.attrs, "source": source}
    return out


def crypto_1h(n: int = 48, seed: int = 0) -> pd.DataFrame:
    return clean_bars(pd.date_range("2021-03-01", periods=n, freq="1h", tz="UTC"), seed=seed)


def set_at(frame: pd.DataFrame, positions, column: str, value) -> None:
    """Set ``frame[column]`` at integer ``positions`` (an int, a slice or a list)."""
    values = frame[column].to_numpy(copy=True)
    values[positions] = value
    frame[column] = values


def bars_of(report: QualityReport) -> pd.DataFrame:
    assert report.bars is not None
    return report.bars


def checks(report: QualityReport) -> set[str]:
    return {f.check for f in report.findings}


def only(report: QualityReport, check: str):
    found = report.finding(check)
    assert found is not None, f"{check} not in {checks(report)}"
    return found


# --- clean input ---------------------------------------------------------------------------


def test_clean_frame_has_no_findings_and_report_returns_it():
    bars = crypto_1h()
    report = validate(bars, market="crypto")
    assert report.findings == [] and report.ok
    assert report.bars is bars
    assert (report.n_rows, report.n_bars) == (48, 48)
    assert report.first_ts == bars.index[0] and report.last_ts == bars.index[-1]


def test_raw_frame_in_report_policy_has_no_bars():
    report = validate(raw(crypto_1h()), market="crypto")
    assert report.ok and report.bars is None


def test_market_and_timeframe_are_inferred():
    bars = crypto_1h(24 * 8)  # a week and a day: Saturday bars make it crypto
    bars.attrs = {"symbol": "X"}
    report = validate(bars)
    assert (report.market, report.timeframe) == ("crypto", "1h")
    assert only(report, "market_inferred").severity == "info"


# --- each check ----------------------------------------------------------------------------


def test_exact_and_conflicting_duplicates():
    bars = raw(crypto_1h(6))
    rows = bars.iloc[[0, 1, 1, 2, 3, 3, 4, 5]].copy()
    set_at(rows, 4, "close", rows["close"].iloc[4] + 0.5)  # first copy of bar 3 differs
    rows["row"] = np.arange(1, 9)
    report = validate(rows, market="crypto")
    exact, conflict = only(report, "duplicate_rows"), only(report, "conflicting_duplicates")
    assert (exact.count, exact.rows, exact.timestamps) == (1, [2], [bars.index[1]])
    assert (conflict.count, conflict.rows, conflict.timestamps) == (1, [5], [bars.index[3]])
    assert exact.severity == conflict.severity == "error" and not report.ok
    assert "out_of_order" not in checks(report)

    repaired = validate(rows, market="crypto", policy="repair")
    pd.testing.assert_frame_equal(bars_of(repaired), bars.drop(columns="row"))
    actions = {r.action: (r.count, r.rows) for r in repaired.repairs}
    assert actions == {"drop_exact_duplicates": (1, [2]), "drop_superseded_duplicates": (1, [5])}
    assert repaired.ok and all(f.repaired for f in repaired.errors)


def test_conflicting_duplicates_keep_the_last_in_file_order():
    bars = raw(crypto_1h(4))
    revised = bars.iloc[[2]].copy()
    revised["close"] = revised["open"]  # a later revision of bar 2, still valid OHLC
    rows = pd.concat([bars, revised])
    rows["row"] = np.arange(1, 6)
    report = validate(rows, market="crypto", policy="repair")
    assert bars_of(report).loc[bars.index[2], "close"] == revised["close"].iloc[0]
    assert only(report, "conflicting_duplicates").rows == [3]
    sort = next(r for r in report.repairs if r.action == "sort")
    assert sort.count == 1 and sort.rows == [5]


def test_out_of_order_rows():
    bars = raw(crypto_1h(10))
    rows = bars.iloc[[0, 1, 2, 5, 3, 4, 6, 7, 8, 9]].copy()
    rows["row"] = np.arange(1, 11)
    finding = only(validate(rows, market="crypto"), "out_of_order")
    assert (finding.count, finding.rows, finding.timestamps) == (1, [5], [bars.index[3]])
    assert finding.details["reversed"] is False
    assert "earlier than the row before" in finding.message


def test_newest_first_file_is_reported_reversed_and_sorted_by_repair():
    bars = crypto_1h(10)
    rows = raw(bars.iloc[::-1])
    report = validate(rows, market="crypto", policy="repair")
    finding = only(report, "out_of_order")
    assert finding.count == 9 and finding.details["reversed"] is True
    assert "reverse time order (newest first)" in finding.message
    assert finding.rows[0] == 2 and finding.timestamps[0] == bars.index[-2]
    pd.testing.assert_frame_equal(bars_of(report), bars, check_freq=False)


def test_off_grid_partial_bars_are_dropped_by_repair():
    bars = clean_bars(pd.date_range("2021-10-27 13:00", periods=8, freq="15min", tz="UTC"))
    partial = bars.iloc[[3]].copy()
    partial.index = pd.DatetimeIndex(ts("2021-10-27 13:46:02"), name="ts")
    rows = raw(pd.concat([bars.iloc[:4], partial, bars.iloc[4:]]))
    finding = only(validate(rows, market="crypto"), "off_grid")
    assert (finding.count, finding.rows, finding.timestamps) == (1, [5], ts("2021-10-27 13:46:02"))
    assert finding.severity == "error"
    report = validate(rows, market="crypto", policy="repair")
    assert [(r.action, r.count, r.rows) for r in report.repairs] == [("drop_off_grid", 1, [5])]
    pd.testing.assert_frame_equal(bars_of(report), bars, check_freq=False)


def test_off_grid_accepts_new_york_anchored_bars():
    """09:30-anchored hourly equity bars are :30 in UTC; DST does not make them off grid."""
    idx = expected_index("equity", "2018-03-01 14:30", "2018-03-30", "1h")
    report = validate(clean_bars(idx), market="equity")
    assert "off_grid" not in checks(report) and "gaps" not in checks(report)


def test_gap_in_crypto_reports_count_start_and_length():
    idx = pd.date_range("2021-11-26", periods=96 * 4, freq="15min", tz="UTC")
    missing = (idx >= pd.Timestamp("2021-11-27 06:15", tz="UTC")) & (
        idx < pd.Timestamp("2021-11-28 12:00", tz="UTC")
    )
    idx = idx[~missing]
    finding = only(validate(clean_bars(idx), market="crypto"), "gaps")
    assert finding.severity == "warning" and finding.count == int(missing.sum()) == 119
    assert finding.timestamps == ts("2021-11-27 06:15")
    largest = finding.details["largest"][0]
    assert largest["start"] == pd.Timestamp("2021-11-27 06:15", tz="UTC")
    assert largest["end"] == pd.Timestamp("2021-11-28 12:00", tz="UTC")
    assert largest["length"] == pd.Timedelta("1 days 05:45:00") and largest["missing_bars"] == 119


def test_fx_weekend_is_normal_but_missing_tuesday_hour_is_a_gap():
    week = expected_index("fx", "2017-01-05", "2017-01-13", "1h")  # Thu .. next Fri
    assert "gaps" not in checks(validate(clean_bars(week), market="fx"))
    tuesday = pd.Timestamp("2017-01-10 14:00", tz="UTC")
    finding = only(validate(clean_bars(week.drop([tuesday])), market="fx"), "gaps")
    assert (finding.count, finding.timestamps) == (1, [tuesday])


def test_fx_holiday_gap_is_info():
    idx = expected_index("fx", "2017-12-21", "2017-12-28", "1h")  # Dec 25 trade date absent
    report = validate(clean_bars(idx), market="fx")
    assert "gaps" not in checks(report)
    finding = only(report, "holiday_gaps")
    assert finding.severity == "info" and finding.count == 24
    assert finding.timestamps == ts("2017-12-24 22:00")


def test_equity_overnight_is_normal_but_missing_session_bar_is_a_gap():
    idx = expected_index("equity", "2018-07-02 13:30", "2018-07-06 20:00", "15m")
    assert checks(validate(clean_bars(idx), market="equity")) == set()  # July 4 closed
    bar = pd.Timestamp("2018-07-05 14:00", tz="UTC")
    assert only(validate(clean_bars(idx.drop([bar])), market="equity"), "gaps").timestamps == [bar]


def test_ohlc_inconsistencies_name_the_column():
    rows = raw(crypto_1h(6))
    set_at(rows, 1, "high", rows["close"].iloc[1] * 0.99)  # high < close
    low = min(rows["open"].iloc[3], rows["close"].iloc[3]) * 1.001  # low > min(open, close)
    set_at(rows, 3, "low", low)
    set_at(rows, 3, "high", low * 1.01)
    finding = only(validate(rows, market="crypto"), "ohlc_inconsistent")
    assert (finding.count, finding.rows, finding.column) == (2, [2, 4], "high")
    assert finding.details["by_column"] == {"high": 1, "low": 1}
    with pytest.raises(BarQualityError) as err:
        validate(rows, market="crypto", policy="strict")
    assert (err.value.source, err.value.row, err.value.column) == ("test.csv", 2, "high")
    assert str(rows.index[1]) in str(err.value) and "test.csv, row 2, column 'high'" in str(
        err.value
    )


def test_high_below_low_is_inconsistent():
    rows = raw(crypto_1h(4))
    set_at(rows, 2, "high", rows["low"].iloc[2] - 1)
    assert only(validate(rows, market="crypto"), "ohlc_inconsistent").rows == [3]


@pytest.mark.parametrize(
    ("value", "check"),
    [(np.nan, "nan_prices"), (np.inf, "nan_prices"), (0.0, "non_positive_prices"),
     (-1.0, "non_positive_prices")],
)  # fmt: skip
def test_bad_prices_are_errors_repair_cannot_fix(value, check):
    rows = raw(crypto_1h(6))
    set_at(rows, 4, "low", value)
    finding = only(validate(rows, market="crypto"), check)
    assert (finding.count, finding.rows, finding.column, finding.severity) == (
        1,
        [5],
        "low",
        "error",
    )
    with pytest.raises(BarQualityError, match=f"row 5, column 'low': {check}") as err:
        validate(rows, market="crypto", policy="repair")
    assert not err.value.report.ok and err.value.report.repairs == []


def test_bad_row_dropped_by_another_repair_is_repaired():
    bars = raw(crypto_1h(4))
    broken = bars.iloc[[1]].copy()
    broken["close"] = np.nan
    rows = pd.concat([bars.iloc[:1], broken, bars.iloc[1:]])  # a bad row, revised later
    rows["row"] = np.arange(1, 6)
    report = validate(rows, market="crypto", policy="repair")
    assert only(report, "nan_prices").repaired and report.ok
    pd.testing.assert_frame_equal(bars_of(report), bars.drop(columns="row"))


def test_repair_error_names_a_bad_row_that_is_kept():
    bars = raw(crypto_1h(6))
    superseded = bars.iloc[[1]].copy()
    superseded["close"] = np.nan
    rows = pd.concat([bars.iloc[:1], superseded, bars.iloc[1:]])
    rows["row"] = np.arange(1, 8)
    set_at(rows, 5, "close", np.nan)  # bar 4, row 6: no later revision
    assert only(validate(rows, market="crypto"), "nan_prices").rows == [2, 6]
    with pytest.raises(BarQualityError, match=r"row 6, column 'close': nan_prices") as err:
        validate(rows, market="crypto", policy="repair")
    assert err.value.row == 6 and str(bars.index[4]) in str(err.value)


def test_volume_negative_is_error_and_unknown_is_warning():
    rows = raw(crypto_1h(6))
    set_at(rows, 1, "volume", -3.0)
    set_at(rows, 2, "volume", np.nan)
    report = validate(rows, market="crypto")
    assert only(report, "negative_volume").rows == [2]
    assert only(report, "negative_volume").severity == "error"
    unknown = only(report, "nan_volume")
    assert (unknown.rows, unknown.severity, unknown.column) == ([3], "warning", "volume")


def test_zero_volume_bars_and_runs():
    rows = raw(crypto_1h(20))
    volume = rows["volume"].to_numpy().copy()
    volume[[3, 4, 5, 9, 14, 15]] = 0.0
    rows["volume"] = volume
    finding = only(validate(rows, market="crypto"), "zero_volume")
    assert finding.count == 6 and finding.severity == "warning"
    assert finding.details["share"] == pytest.approx(0.3) and finding.details["runs"] == 2
    assert finding.details["longest_runs"][0] == {"start": rows.index[3], "bars": 3}
    assert finding.rows == [4, 5, 6, 10, 15] and "30.0%" in finding.message


def test_flat_bars_and_stale_runs():
    rows = raw(crypto_1h(20))
    price = rows["close"].iloc[5]
    for col in ("open", "high", "low", "close"):  # bars 6..11 flat at one price: a stale run
        set_at(rows, slice(6, 12), col, price)
    set_at(rows, slice(6, 12), "volume", np.arange(1.0, 7.0))
    report = validate(rows, market="crypto")
    flat = only(report, "flat_bars")
    assert (flat.count, flat.rows) == (6, [7, 8, 9, 10, 11])
    stale = only(report, "stale_runs")
    assert stale.count == 1 and stale.details["longest_runs"] == [
        {"start": rows.index[5], "bars": 7}
    ]
    assert stale.timestamps == [rows.index[5]]
    assert "stale_runs" not in checks(validate(rows, market="crypto", stale_run=8))


def test_outlier_return_by_robust_z():
    rows = raw(crypto_1h(200, seed=3))
    for col in ("open", "high", "low", "close"):  # a 5% jump among 0.1% moves
        set_at(rows, slice(120, None), col, rows[col].iloc[120:] * 1.05)
    set_at(rows, 120, "open", rows["close"].iloc[119])
    set_at(rows, 120, "low", rows["close"].iloc[119] * 0.999)
    finding = only(validate(rows, market="crypto"), "outlier_returns")
    assert (finding.count, finding.timestamps, finding.rows) == (1, [rows.index[120]], [121])
    assert finding.details["largest"][0]["log_return"] == pytest.approx(np.log(1.05), rel=0.05)
    assert "outlier_returns" not in checks(validate(rows, market="crypto", outlier_threshold=1e6))


def test_too_few_returns_for_a_robust_scale_give_no_outlier_finding():
    rows = raw(crypto_1h(MIN_OUTLIER_RETURNS + 1, seed=3))  # 20 returns: checked
    for col in ("open", "high", "low", "close"):
        set_at(rows, slice(10, None), col, rows[col].iloc[10:] * 1.05)
    set_at(rows, 10, "open", rows["close"].iloc[9])
    set_at(rows, 10, "low", rows["close"].iloc[9] * 0.999)
    assert only(validate(rows, market="crypto"), "outlier_returns").count == 1
    short = rows.iloc[:MIN_OUTLIER_RETURNS]  # 19 returns: not estimable
    assert "outlier_returns" not in checks(validate(short, market="crypto"))


def test_repeated_values_at_another_timestamp():
    rows = raw(crypto_1h(12))
    for col in OHLCV:  # bar 3 copied to bar 8's timestamp
        set_at(rows, 8, col, rows[col].iloc[3])
    finding = only(validate(rows, market="crypto"), "repeated_values")
    assert (finding.count, finding.rows) == (1, [9])
    assert finding.details["pairs"] == [{"ts": rows.index[8], "same_as": rows.index[3]}]


# --- policies and output -------------------------------------------------------------------


def test_strict_raises_on_first_error_with_source_row_and_timestamp():
    bars = raw(crypto_1h(6))
    rows = bars.iloc[[0, 1, 2, 2, 3, 4, 5]].copy()
    rows["row"] = np.arange(1, 8)
    with pytest.raises(BarQualityError) as err:
        validate(rows, market="crypto", policy="strict")
    assert isinstance(err.value, BarDataError) and err.value.row == 3
    assert str(err.value).startswith("test.csv, row 3: duplicate_rows:")
    assert str(bars.index[2]) in str(err.value)
    assert err.value.report.finding("duplicate_rows") is not None


def test_strict_without_row_column_names_the_timestamp():
    rows = raw(crypto_1h(4), rows=False)
    set_at(rows, 2, "close", -1.0)
    with pytest.raises(BarQualityError, match=r"column 'close'.*2021-03-01 02:00:00\+00:00") as err:
        validate(rows, market="crypto", policy="strict")
    assert err.value.row is None


def test_strict_on_clean_raw_frame_returns_a_bar_frame():
    bars = crypto_1h()
    report = validate(raw(bars), market="crypto", policy="strict")
    pd.testing.assert_frame_equal(bars_of(report), bars, check_freq=False)
    assert bars_of(report).attrs == {"symbol": "TEST", "timeframe": "1h", "market": "crypto",
                                 "source": "test.csv"}  # fmt: skip


def test_repair_records_every_change_and_returns_a_bar_frame():
    bars = crypto_1h(30, seed=4)
    shuffled = raw(bars).sample(frac=1.0, random_state=1)
    rows = pd.concat([shuffled, shuffled.iloc[:7]])  # 7 exact duplicates
    off = shuffled.iloc[[0]].copy()
    off.index = off.index + pd.Timedelta(seconds=62)
    rows = pd.concat([rows, off])
    rows["row"] = np.arange(1, len(rows) + 1)
    report = validate(rows, market="crypto", policy="repair")
    assert report.n_rows == 38 and report.n_bars == 30
    dropped = sum(r.count for r in report.repairs if r.action.startswith("drop"))
    assert dropped == report.n_rows - report.n_bars
    for r in report.repairs:
        if r.action.startswith("drop"):
            assert len(r.timestamps) == len(r.rows) == r.count
    exact = next(r for r in report.repairs if r.action == "drop_exact_duplicates")
    assert exact.rows == list(range(1, 8))  # the earlier copies go, the later ones stay
    check_bar_frame(bars_of(report))
    assert "row" not in bars_of(report).columns
    assert (
        bars_of(report).attrs["market"] == "crypto"
        and bars_of(report).attrs["source"] == "test.csv"
    )
    pd.testing.assert_frame_equal(bars_of(report), bars, check_freq=False)


def test_report_serialises_to_json_and_rich():
    rows = raw(crypto_1h(10).iloc[::-1])
    set_at(rows, 0, "volume", 0.0)
    report = validate(rows, market="crypto", policy="repair")
    data = json.loads(report.to_json())
    assert data["ok"] is True and data["n_rows"] == 10
    assert data["findings"][0]["check"] == "out_of_order"
    assert data["findings"][0]["timestamps"][0] == "2021-03-01T08:00:00+00:00"
    assert data["repairs"][0]["action"] == "sort"
    table = report.to_rich()
    assert isinstance(table, Table)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "out_of_order" in text and "zero_volume" in text and "sort" in text and "repair" in text


# --- bad input -----------------------------------------------------------------------------


def test_bad_input_is_rejected_clearly():
    bars = raw(crypto_1h(4))
    with pytest.raises(BarDataError, match="expected a DataFrame"):
        validate(bars.to_numpy())  # type: ignore[arg-type]
    with pytest.raises(BarDataError, match="naive"):
        validate(bars.tz_localize(None))
    with pytest.raises(BarDataError, match=r"test\.csv, column 'volume': column is missing"):
        validate(bars.drop(columns="volume"))
    text = bars.assign(open=bars["open"].astype(str))
    with pytest.raises(BarDataError, match="column 'open': dtype"):
        validate(text)
    with pytest.raises(BarDataError, match="no bars"):
        validate(bars.iloc[:0], timeframe="1h")
    one = bars.iloc[:1].copy()
    one.attrs = {"symbol": "X"}
    with pytest.raises(BarDataError, match="cannot infer the timeframe"):
        validate(one)
    with pytest.raises(ValueError, match="unknown policy"):
        validate(bars, policy="fix")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown market"):
        validate(bars, market="bonds")
    nameless = bars.copy()
    nameless.attrs = {}
    with pytest.raises(BarDataError, match="needs a symbol"):
        validate(nameless, policy="repair", market="crypto")
    float_rows = bars.assign(row=bars["row"].astype(float))
    with pytest.raises(BarDataError, match="column 'row': row numbers must be integers"):
        validate(float_rows)
    nat = bars.copy()
    nat.index = pd.DatetimeIndex([bars.index[0], pd.NaT, *bars.index[2:]], name="ts")
    with pytest.raises(BarDataError, match="row 2: missing timestamp"):
        validate(nat)


# --- properties ----------------------------------------------------------------------------


@st.composite
def calendar_frames(draw):
    market = draw(st.sampled_from(["crypto", "fx", "equity"]))
    timeframe = draw(st.sampled_from(["15m", "1h", "1d"]))
    n = draw(st.integers(min_value=3, max_value=300))
    day = draw(st.dates(min_value=dt.date(2010, 1, 1), max_value=dt.date(2030, 1, 1)))
    start = pd.Timestamp(day, tz="UTC")
    if market == "equity" and timeframe != "1d":
        start += pd.Timedelta(hours=13, minutes=30)  # a 09:30 New York anchor (EDT)
    span = Timeframe.parse(timeframe).delta * n * 8 + pd.Timedelta(days=10)
    idx = expected_index(market, start, start + span, timeframe)[:n]
    seed = draw(st.integers(min_value=0, max_value=2**16))
    return market, clean_bars(idx, seed=seed)


@settings(max_examples=60, deadline=None)
@given(case=calendar_frames())
def test_clean_frame_on_its_calendar_has_no_errors_or_warnings(case):
    market, bars = case
    report = validate(bars, market=market)
    assert report.errors == [] and report.warnings == []
    assert checks(report) <= {"holiday_gaps"}
    assert report.bars is bars


@settings(max_examples=60, deadline=None)
@given(case=calendar_frames(), data=st.data())
def test_shuffle_and_duplicate_then_repair_gives_back_the_original(case, data):
    market, bars = case
    n = len(bars)
    order = data.draw(st.permutations(range(n)))
    exact = data.draw(st.lists(st.integers(0, n - 1), max_size=5))
    revised = data.draw(st.lists(st.integers(0, n - 1), max_size=5, unique=True))
    stale = bars.iloc[revised].copy()
    stale["volume"] += 1.0  # earlier versions, superseded by the originals later in the file
    rows = pd.concat([stale, bars.iloc[list(order)], bars.iloc[exact]])
    rows["row"] = np.arange(1, len(rows) + 1)
    report = validate(rows, market=market, policy="repair")
    pd.testing.assert_frame_equal(bars_of(report), bars, check_freq=False)
    dropped = {r.action: r.count for r in report.repairs}
    assert dropped.get("drop_superseded_duplicates", 0) == len(revised)
    assert dropped.get("drop_exact_duplicates", 0) == len(exact)


# --- the real bundled data sets ------------------------------------------------------------


def real(name: str) -> pd.DataFrame:
    """A bundled data set as the project's reader gives it, less its market (to be inferred)."""
    frame = datasets.load_raw(name)
    del frame.attrs["market"]
    return frame


def test_real_eurusd_weekends_normal_christmas_info():
    report = validate(real("eurusd_1h"))
    assert report.market == "fx" and report.ok  # inferred from the timestamps
    assert only(report, "market_inferred").severity == "info"
    assert {f.check for f in report.warnings} == {"outlier_returns"}  # no gap warnings
    holiday = only(report, "holiday_gaps")
    assert (holiday.count, holiday.details["gaps"]) == (15, 2)
    assert holiday.timestamps == ts("2017-12-24 22:00", "2017-12-25 08:00")
    outliers = only(report, "outlier_returns")
    assert outliers.count == 5  # largest: the 2017-04-23 French election weekend open
    assert outliers.details["largest"][0]["ts"] == pd.Timestamp("2017-04-23 21:00", tz="UTC")
    assert report.n_bars == 6225


def test_real_btcusd_15m_defects():
    rows = real("btcusd_15m")
    report = validate(rows)
    assert report.market == "crypto"
    disorder = only(report, "out_of_order")  # a second download appended after the first
    assert (disorder.count, disorder.rows, disorder.details["reversed"]) == (1, [2883], False)
    exact, conflict = only(report, "duplicate_rows"), only(report, "conflicting_duplicates")
    assert (exact.count, conflict.count) == (21, 11)  # 32 duplicate timestamps
    assert conflict.timestamps[0] == pd.Timestamp("2021-10-27 06:00", tz="UTC")
    off = only(report, "off_grid")
    assert off.count == 3 and off.rows == [2882, 5854, 8721]
    assert off.timestamps == ts("2021-10-27 13:46:02", "2021-11-27 06:01:03", "2021-12-29 13:50:02")
    gaps = only(report, "gaps")
    big = gaps.details["largest"][0]
    assert big["start"] == pd.Timestamp("2021-11-27 06:15", tz="UTC")
    assert big["end"] == pd.Timestamp("2021-11-29 13:45", tz="UTC")
    assert big["length"] == pd.Timedelta("2 days 07:30:00") and big["missing_bars"] == 222
    assert (gaps.count, gaps.details["gaps"]) == (243, 9)
    zero = only(report, "zero_volume")
    assert zero.count == 2084 and zero.details["share"] == pytest.approx(0.239, abs=1e-3)
    assert "23.9%" in zero.message
    assert only(report, "flat_bars").count == 12

    repaired = validate(rows, policy="repair")
    assert repaired.ok and repaired.n_bars == len(bars_of(repaired)) == 8721 - 21 - 11 - 3
    check_bar_frame(bars_of(repaired))
    assert [(r.action, r.count) for r in repaired.repairs] == [
        ("drop_off_grid", 3),
        ("drop_exact_duplicates", 21),
        ("drop_superseded_duplicates", 11),
        ("sort", 1),
    ]
    with pytest.raises(BarQualityError, match=r"BTCUSD_15m_2021\.csv, row 2883: out_of_order"):
        validate(rows, policy="strict")


def test_real_coinbase_newest_first_zero_volume_and_copied_bars():
    rows = real("btcusd_1h_coinbase")
    report = validate(rows)
    disorder = only(report, "out_of_order")
    assert disorder.details["reversed"] is True and disorder.count == 20105
    assert "reverse time order (newest first)" in disorder.message
    assert disorder.details["against_file_order"] == 5  # 2017-11-12 04:00-08:00 interleaved
    zero = only(report, "zero_volume")
    assert zero.count == 28
    assert zero.details["longest_runs"][0] == {
        "start": pd.Timestamp("2018-08-10 01:00", tz="UTC"),
        "bars": 15,
    }
    assert only(report, "stale_runs").details["longest_runs"][0]["start"] == pd.Timestamp(
        "2018-08-10 00:00", tz="UTC"
    )
    assert only(report, "flat_bars").count == 30
    copied = only(report, "repeated_values")  # values of 23:00..03:00 stamped 04:00..08:00
    assert copied.count == 5
    assert copied.details["pairs"][0] == {
        "ts": pd.Timestamp("2017-11-12 04:00", tz="UTC"),
        "same_as": pd.Timestamp("2017-11-11 23:00", tz="UTC"),
    }
    assert "gaps" not in checks(report) and "duplicate_rows" not in checks(report)
    repaired = validate(rows, policy="repair")
    assert bars_of(repaired).index.is_monotonic_increasing and len(bars_of(repaired)) == 20111


@pytest.mark.slow
def test_a_million_bars_in_seconds():
    idx = expected_index("fx", "2010-01-03", "2014-01-01", "1m")[:1_000_000]
    rows = raw(clean_bars(idx).iloc[::-1])
    start = time.perf_counter()
    report = validate(rows, market="fx", policy="repair")
    elapsed = time.perf_counter() - start
    assert report.n_bars == 1_000_000 and report.ok
    assert elapsed < 5.0
