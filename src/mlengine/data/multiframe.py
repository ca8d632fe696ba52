"""Causal multi-timeframe windows: at each base bar, the last closed bars of every timeframe.

A :class:`TimeframeStack` holds, for timeframes base first then higher (``1h``, ``4h``,
``1d``), one feature matrix per timeframe (the same columns, computed on that timeframe's
own bars) and, per base row ``t``, the position of the last bar of each timeframe that had
closed by ``t``'s close — the closed-bar rule of
:func:`~mlengine.data.resample.align_to_lower` (higher bar ``T`` is visible at base row
``t`` iff ``T + htf <= t + ltf``; for the base timeframe that is ``t`` itself). The window
of timeframe ``k`` at row ``t`` is its ``L`` feature rows ending at that position, so a
row never sees a higher bar that was still open. Packed, the windows of ``n`` rows are
``(n, K, L, F)``, the input of :class:`~mlengine.nn.hierarchical.HierarchicalEncoder`.

:func:`build_stack` resamples the base bars (:func:`~mlengine.data.resample.resample`,
partial bins dropped) and computes the features on every timeframe;
:func:`stack_timeframes` stacks feature frames computed elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from mlengine.data.resample import closed_positions, resample
from mlengine.data.schema import BarDataError, Timeframe, TimeframeError

__all__ = ["TimeframeStack", "build_stack", "stack_timeframes"]


@dataclass(frozen=True)
class TimeframeStack:
    """Per-timeframe features and the causal position of each timeframe at each base row.

    ``timeframes``: names, base first; ``columns``: the ``F`` feature names;
    ``features[k]``: ``(n_k, F)`` rows of timeframe ``k`` (oldest first, NaN in warm-ups);
    ``positions``: ``(n_base, K)`` row of ``features[k]`` last closed at each base row,
    ``-1`` before the first; ``index``: the base bars' times.
    """

    timeframes: tuple[str, ...]
    columns: tuple[str, ...]
    features: tuple[np.ndarray, ...]
    positions: np.ndarray
    index: pd.DatetimeIndex

    def complete(self, window: int) -> np.ndarray:
        """Per base row, True when every timeframe has ``window`` closed rows, all finite."""
        _check_window(window)
        ok = np.ones(len(self.index), dtype=bool)
        for k, x in enumerate(self.features):
            finite = np.isfinite(x).all(axis=1).astype(np.int64)
            run = np.r_[0, np.cumsum(finite)]  # finite rows among the first i rows
            pos = self.positions[:, k]
            start = pos - window + 1
            has = start >= 0
            full = np.zeros(len(pos), dtype=bool)
            full[has] = run[pos[has] + 1] - run[start[has]] == window
            ok &= full
        return ok

    def windows(self, rows: np.ndarray, window: int) -> np.ndarray:
        """Packed windows ``(len(rows), K, window, F)`` (float32) of the base ``rows``;
        every row must be :meth:`complete`."""
        _check_window(window)
        rows = np.asarray(rows, dtype=np.int64)
        bad = rows[~self.complete(window)[rows]] if rows.size else rows
        if bad.size:
            raise BarDataError(
                f"base row {int(bad[0])} ({self.index[int(bad[0])]}) has no complete window "
                f"of {window} closed bars in every timeframe {list(self.timeframes)}"
            )
        offsets = np.arange(1 - window, 1)
        out = np.empty((rows.size, len(self.features), window, len(self.columns)), np.float32)
        for k, x in enumerate(self.features):
            out[:, k] = x[self.positions[rows, k][:, None] + offsets]
        return out

    def scaled(self, mean: np.ndarray, std: np.ndarray) -> TimeframeStack:
        """The stack with ``features[k]`` standardised by ``mean[k]``, ``std[k]`` ``(K, F)``."""
        shape = (len(self.features), len(self.columns))
        if np.shape(mean) != shape or np.shape(std) != shape:
            raise BarDataError(f"mean and std must have shape {shape} (timeframes x features)")
        feats = tuple((x - m) / s for x, m, s in zip(self.features, mean, std, strict=True))
        return TimeframeStack(self.timeframes, self.columns, feats, self.positions, self.index)


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise BarDataError(f"window must be a positive integer, got {window!r}")


def stack_timeframes(
    frames: Sequence[pd.DataFrame], timeframes: Sequence[str | Timeframe]
) -> TimeframeStack:
    """Stack feature frames ``frames[k]`` of ``timeframes[k]`` (base first; each indexed by
    its bars' open times, with the same columns) on the base frame's index."""
    if not frames or len(frames) != len(timeframes):
        raise TimeframeError(
            f"give one feature frame per timeframe: {len(frames)} frames for "
            f"{len(timeframes)} timeframes"
        )
    tfs = [Timeframe.parse(tf) for tf in timeframes]
    for lo, hi in pairwise(tfs):
        if hi.delta <= lo.delta:
            raise TimeframeError(
                f"timeframes must increase from the base: {hi.name} follows {lo.name}"
            )
    columns = tuple(str(c) for c in frames[0].columns)
    for tf, frame in zip(tfs, frames, strict=True):
        if tuple(str(c) for c in frame.columns) != columns:
            raise BarDataError(
                f"the {tf.name} features have columns {list(frame.columns)}, "
                f"expected those of the base: {list(columns)}"
            )
    base = frames[0]
    positions = np.empty((len(base), len(frames)), dtype=np.int64)
    positions[:, 0] = np.arange(len(base))
    lower = base.index
    if not isinstance(lower, pd.DatetimeIndex):
        lower = pd.DatetimeIndex(lower)
    for k in range(1, len(frames)):
        # align_to_lower's rule, as positions (no frames to build and merge)
        positions[:, k] = closed_positions(
            frames[k].index, lower, higher_timeframe=tfs[k], lower_timeframe=tfs[0]
        )
    return TimeframeStack(
        timeframes=tuple(tf.name for tf in tfs),
        columns=columns,
        features=tuple(f.to_numpy(dtype=np.float64) for f in frames),
        positions=positions,
        index=lower,
    )


def build_stack(
    bars: pd.DataFrame,
    timeframes: Sequence[str | Timeframe],
    features: Callable[[pd.DataFrame], pd.DataFrame],
) -> TimeframeStack:
    """Resample ``bars`` (base timeframe ``attrs["timeframe"]``) to each higher timeframe
    of ``timeframes`` and stack ``features(frame)`` of every timeframe's bars."""
    if "timeframe" not in bars.attrs:
        raise TimeframeError("base bars need attrs['timeframe']")
    base = Timeframe.parse(bars.attrs["timeframe"]).name
    frames = [bars] + [resample(bars, tf) for tf in timeframes]
    return stack_timeframes([features(f) for f in frames], [base, *timeframes])
