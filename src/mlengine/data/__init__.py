"""Data stage: read bars, store them, check their quality, resample, load training windows."""

from mlengine.data.schema import OHLCV, BarDataError, Timeframe, check_bar_frame, make_bar_frame

__all__ = ["OHLCV", "BarDataError", "Timeframe", "check_bar_frame", "make_bar_frame"]
