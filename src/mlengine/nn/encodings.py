"""Positional encodings for windows of bars: sinusoidal, learnable and time-aware.

Positions are counted in *bars ago* from the decision bar: in a window of ``L`` bars
(oldest first, as :class:`mlengine.data.loader.WindowDataset` yields them) position
``k`` is ``L - 1 - k`` bars ago, so the decision bar always gets the encoding of offset 0
whatever the window length.

The time-aware encoding embeds the hour of day (0-23) and day of week (0 = Monday) of
each bar, in UTC. It takes either

* an ``int64`` tensor ``(B, L)`` of bar timestamps in nanoseconds since the Unix epoch
  (``index.as_unit("ns").asi8`` — pandas 3 may store microseconds; :func:`window_timestamps`
  builds it). Stamps within about three years of 1970 (``|t| < 1e17`` ns) are refused as
  probably not nanoseconds; pass codes for such bars. Or
* :class:`CalendarCodes` of precomputed ``hour`` and ``dow`` integer tensors ``(B, L)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from mlengine.data.schema import MLEngineError

__all__ = [
    "CalendarCodes",
    "LearnableEncoding",
    "ModelInputError",
    "SinusoidalEncoding",
    "TimeEncoding",
    "TimeInput",
    "calendar_codes",
    "window_timestamps",
]

_NS_PER_HOUR = 3_600 * 10**9
_NS_PER_DAY = 24 * _NS_PER_HOUR
_NS_PLAUSIBLE = 10**17  # 1973-03-03 in ns; a µs/ms/s stamp of any recent date is below it
_EPOCH_DOW = 3  # 1970-01-01 was a Thursday (Monday = 0)


class ModelInputError(MLEngineError, ValueError):
    """A tensor handed to a network that has the wrong shape, dtype or values."""


@dataclass(frozen=True)
class CalendarCodes:
    """Hour of day (0-23) and day of week (0 = Monday .. 6) per window position, UTC."""

    hour: Tensor
    dow: Tensor


TimeInput = Tensor | CalendarCodes


def calendar_codes(time: TimeInput) -> CalendarCodes:
    """Hour and day-of-week codes from ns timestamps (or checked, if already codes)."""
    if isinstance(time, CalendarCodes):
        for name, codes, top in (("hour", time.hour, 24), ("dow", time.dow, 7)):
            if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ModelInputError(f"calendar {name} codes must be integers, got {codes.dtype}")
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= top):
                raise ModelInputError(
                    f"calendar {name} codes must lie in 0..{top - 1}, got "
                    f"{int(codes.min())}..{int(codes.max())}"
                )
        if time.hour.shape != time.dow.shape:
            raise ModelInputError(
                f"hour codes {tuple(time.hour.shape)} and dow codes {tuple(time.dow.shape)} "
                "differ in shape"
            )
        return CalendarCodes(time.hour.long(), time.dow.long())
    if not isinstance(time, Tensor) or time.dtype != torch.int64:
        what = time.dtype if isinstance(time, Tensor) else type(time).__name__
        raise ModelInputError(
            f"time must be int64 ns timestamps or CalendarCodes, got {what}; "
            'use index.as_unit("ns").asi8 (nanoseconds since the epoch, UTC)'
        )
    if time.numel() and int(time.abs().min()) < _NS_PLAUSIBLE:
        raise ModelInputError(
            f"timestamp {int(time.abs().min())} is not in nanoseconds (|t| < 1e17 ns, within "
            '~3 years of 1970): use index.as_unit("ns").asi8, or pass CalendarCodes'
        )
    days = torch.div(time, _NS_PER_DAY, rounding_mode="floor")
    hour = torch.div(time - days * _NS_PER_DAY, _NS_PER_HOUR, rounding_mode="floor")
    return CalendarCodes(hour, torch.remainder(days + _EPOCH_DOW, 7))


def window_timestamps(index: pd.DatetimeIndex, decision_bars: ArrayLike, length: int) -> Tensor:
    """``int64`` ns timestamps ``(n, L)`` of the windows ending at ``decision_bars``.

    Row ``k`` holds the stamps of bars ``i - L + 1 .. i`` for ``i = decision_bars[k]``, the
    same bars as :class:`~mlengine.data.loader.WindowDataset` puts in window ``k``.
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise ModelInputError(f"index must be a DatetimeIndex, got {type(index).__name__}")
    if index.tz is None:
        raise ModelInputError("index must be tz-aware (UTC); naive timestamps are ambiguous")
    stamps = np.asarray(index.tz_convert("UTC").as_unit("ns").asi8, dtype=np.int64)
    bars = np.asarray(decision_bars, dtype=np.int64)
    if bars.ndim != 1:
        raise ModelInputError(f"decision_bars must be 1-D, got shape {bars.shape}")
    if bars.size and (bars.min() < length - 1 or bars.max() >= stamps.size):
        raise ModelInputError(
            f"decision bars must lie in {length - 1}..{stamps.size - 1} for windows of "
            f"{length} bars, got {int(bars.min())}..{int(bars.max())}"
        )
    offsets = np.arange(-length + 1, 1, dtype=np.int64)
    return torch.from_numpy(stamps[bars[:, None] + offsets[None, :]])


def _bars_ago(length: int, device: torch.device) -> Tensor:
    return torch.arange(length - 1, -1, -1, device=device)


class SinusoidalEncoding(nn.Module):
    """Fixed sine/cosine encoding of the bars-ago offset (Vaswani et al. 2017), added to h."""

    pe: Tensor

    def __init__(self, d_model: int, max_len: int = 4096) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model)
        )
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)[:, : d_model // 2]
        # Not persistent: it is a function of (d_model, max_len), not learned state.
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        length = h.shape[-2]
        if length > self.max_len:
            raise ModelInputError(f"window of {length} bars exceeds max_len={self.max_len}")
        return h + self.pe[_bars_ago(length, h.device)].to(h.dtype)


class LearnableEncoding(nn.Module):
    """One learned vector per bars-ago offset ``0 .. max_len - 1``, added to h."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, h: Tensor) -> Tensor:
        length = h.shape[-2]
        if length > self.max_len:
            raise ModelInputError(f"window of {length} bars exceeds max_len={self.max_len}")
        return h + self.table(_bars_ago(length, h.device))


class TimeEncoding(nn.Module):
    """Learned hour-of-day and day-of-week embeddings of each bar, added to h."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.hour = nn.Embedding(24, d_model)
        self.dow = nn.Embedding(7, d_model)
        nn.init.normal_(self.hour.weight, std=0.02)
        nn.init.normal_(self.dow.weight, std=0.02)

    def forward(self, h: Tensor, time: TimeInput) -> Tensor:
        codes = calendar_codes(time)
        if tuple(codes.hour.shape) != tuple(h.shape[:-1]):
            raise ModelInputError(
                f"time must have shape {tuple(h.shape[:-1])} (windows x bars), "
                f"got {tuple(codes.hour.shape)}"
            )
        device = h.device
        return h + self.hour(codes.hour.to(device)) + self.dow(codes.dow.to(device))
