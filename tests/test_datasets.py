from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from mlengine import datasets
from mlengine.data.schema import BarDataError, MLEngineError, check_bar_frame

EXPECTED = {
    # name: file, symbol, timeframe, market, raw rows, first and last bar (UTC)
    "eurusd_1h": ("EURUSD_1h_2017_ask.csv", "EURUSD", "1h", "fx", 6225,
                  "2017-01-01 22:00", "2017-12-29 21:00"),
    "btcusd_15m": ("BTCUSD_15m_2021.csv", "BTCUSD", "15m", "crypto", 8721,
                   "2021-09-27 13:45", "2021-12-29 13:45"),
    "btcusd_1h_coinbase": ("BTCUSD_1h_coinbase_2017_2019.csv", "BTCUSD", "1h", "crypto", 20111,
                           "2017-07-01 11:00", "2019-10-17 09:00"),
}  # fmt: skip


def test_names() -> None:
    assert datasets.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_and_path(name: str) -> None:
    file, symbol, timeframe, market, *_ = EXPECTED[name]
    info = datasets.info(name)
    assert (info.name, info.file, info.symbol, info.timeframe, info.market) == (
        name, file, symbol, timeframe, market,
    )  # fmt: skip
    assert info.licence and info.source
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(info, "symbol", "X")  # noqa: B010 (mypy rejects the plain assignment)
    path = datasets.path(name)
    assert path.name == file and path.is_file()
    assert (path.parent / f"LICENSE.{path.stem}").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_raw(name: str) -> None:
    _, symbol, timeframe, market, rows, *_ = EXPECTED[name]
    raw = datasets.load_raw(name)
    assert len(raw) == rows and raw["row"].iloc[-1] == rows
    assert raw.attrs == {"symbol": symbol, "timeframe": timeframe, "market": market,
                         "source": EXPECTED[name][0]}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load(name: str) -> None:
    _, symbol, timeframe, market, rows, first, last = EXPECTED[name]
    bars = datasets.load(name)
    check_bar_frame(bars)
    assert bars.attrs["symbol"] == symbol and bars.attrs["timeframe"] == timeframe
    assert bars.attrs["market"] == market
    assert bars.index[0] == pd.Timestamp(first, tz="UTC")
    assert bars.index[-1] == pd.Timestamp(last, tz="UTC")
    assert 0.99 * rows < len(bars) <= rows


def test_load_strict_raises_on_the_known_defects() -> None:
    with pytest.raises(BarDataError, match=r"BTCUSD_15m_2021\.csv"):
        datasets.load("btcusd_15m", policy="strict")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(datasets.UnknownDatasetError) as err:
        datasets.load("eurusd_1m")
    assert isinstance(err.value, MLEngineError) and isinstance(err.value, LookupError)
    assert "'eurusd_1m'" in str(err.value)
    assert all(name in str(err.value) for name in EXPECTED)
    with pytest.raises(datasets.UnknownDatasetError):
        datasets.path("nope")
