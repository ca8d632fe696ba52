from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch.utils.data import ConcatDataset, DataLoader

from mlengine.data.loader import (
    Fold,
    SplitError,
    WalkForwardSplit,
    WindowDataset,
    sliding_windows,
)
from mlengine.data.schema import make_bar_frame

SETTINGS = settings(max_examples=200, deadline=None)


def _features(n: int, f: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, f)).astype(np.float32)


# --- sliding windows -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), f=st.integers(1, 5), data=st.data())
def test_windows_end_at_their_decision_bar_and_share_memory(
    n: int, f: int, data: st.DataObject
) -> None:
    length = data.draw(st.integers(1, n))
    x = _features(n, f, seed=n * 10 + f)
    win = sliding_windows(x, length)
    assert win.shape == (n - length + 1, length, f)
    assert np.shares_memory(win, x)
    assert not win.flags.writeable
    for i in range(length - 1, n):
        np.testing.assert_array_equal(win[i - length + 1], x[i - length + 1 : i + 1])
    # a window never holds data after its decision bar: changing the future changes nothing
    i = data.draw(st.integers(length - 1, n - 1))
    future = x.copy()
    future[i + 1 :] += 1000.0
    np.testing.assert_array_equal(
        sliding_windows(future, length)[i - length + 1], win[i - length + 1]
    )


@pytest.mark.parametrize(
    ("x", "length", "match"),
    [
        (np.zeros(10), 3, "2-D"),
        (np.zeros((2, 3, 4)), 1, "2-D"),
        (np.zeros((10, 2)), 0, "positive integer"),
        (np.zeros((10, 2)), True, "positive integer"),
        (np.zeros((10, 2)), 2.0, "positive integer"),
        (np.zeros((10, 2)), 11, "longer than the 10 bars"),
    ],
)
def test_sliding_windows_rejects_bad_input(x: np.ndarray, length: int, match: str) -> None:
    with pytest.raises(SplitError, match=match):
        sliding_windows(x, length)


# --- WindowDataset -------------------------------------------------------------------------


def test_dataset_items_are_views_of_one_float32_base() -> None:
    x = _features(50, 3)
    y = np.arange(50) % 2
    ds = WindowDataset(x, y, 8)
    assert len(ds) == 50 - 7
    assert np.shares_memory(ds.base, x)  # already float32 C-contiguous: not even one copy
    assert np.shares_memory(ds.windows, ds.base)
    window, target = ds[0]
    assert window.dtype == torch.float32 and window.shape == (8, 3)
    assert np.shares_memory(window.numpy(), ds.base)
    np.testing.assert_array_equal(window.numpy(), x[0:8])
    assert target.dtype == torch.int64 and int(target) == y[7]
    window, target = ds[len(ds) - 1]
    np.testing.assert_array_equal(window.numpy(), x[42:50])
    assert int(target) == y[49]


def test_dataset_converts_once_and_keeps_float_targets() -> None:
    x = np.random.default_rng(1).standard_normal((30, 2))  # float64: one float32 copy
    y = np.linspace(-1, 1, 30)
    ds = WindowDataset(x, y, 5, indices=[4, 10, 29])
    assert ds.base.dtype == np.float32 and not np.shares_memory(ds.base, x)
    assert np.shares_memory(ds.windows, ds.base)
    assert len(ds) == 3
    window, target = ds[1]
    np.testing.assert_allclose(window.numpy(), x[6:11].astype(np.float32))
    assert target.dtype == torch.float32 and float(target) == pytest.approx(y[10])


def test_dataset_accepts_read_only_features_without_warning() -> None:
    x = _features(20, 2)
    x.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = WindowDataset(x, np.zeros(20), 4)
    np.testing.assert_array_equal(ds[0][0].numpy(), x[:4])


def test_dataset_batches_through_a_dataloader_and_concat() -> None:
    a = WindowDataset(_features(40, 3, 1), np.ones(40), 6)
    b = WindowDataset(_features(25, 3, 2), np.zeros(25), 6, indices=[5, 6, 24])
    both: ConcatDataset[tuple[torch.Tensor, torch.Tensor]] = ConcatDataset([a, b])
    assert len(both) == 35 + 3
    batches = list(DataLoader(both, batch_size=16, shuffle=False))
    assert [tuple(xb.shape) for xb, _ in batches] == [(16, 6, 3), (16, 6, 3), (6, 6, 3)]
    assert batches[-1][1].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"indices": [3, 4]}, r"decision bar 3 has fewer than L=5 bars.*>= L - 1 = 4"),
        ({"indices": [-1]}, "fewer than L=5"),
        ({"indices": [4, 20]}, r"decision bar 20 is beyond the last bar \(19\)"),
        ({"indices": [4.0, 5.0]}, "1-D integer array"),
        ({"indices": [[4, 5]]}, "1-D integer array"),
        ({"targets": np.zeros(19)}, r"one value per bar \(20\)"),
        ({"targets": np.array(["up"] * 20)}, "numeric"),
        ({"features": np.zeros(20)}, "2-D"),
        ({"length": 21}, "longer than the 20 bars"),
    ],
)
def test_dataset_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, Any] = {"features": np.zeros((20, 2)), "targets": np.zeros(20), "length": 5}
    args.update(kwargs)
    with pytest.raises(SplitError, match=match):
        WindowDataset(**args)


def test_dataset_rejects_nan_targets_at_requested_bars_only() -> None:
    y = np.zeros(20)
    y[-3:] = np.nan  # labels unknown at the end of the data
    with pytest.raises(SplitError, match="NaN at decision bar 17"):
        WindowDataset(np.zeros((20, 2)), y, 5)
    assert len(WindowDataset(np.zeros((20, 2)), y, 5, indices=np.arange(4, 17))) == 13


# --- walk-forward splitter -----------------------------------------------------------------


@st.composite
def splitters(draw: st.DrawFn) -> tuple[WalkForwardSplit, int]:
    test_size = draw(st.integers(1, 40))
    step = draw(st.one_of(st.none(), st.integers(test_size, test_size + 15)))
    purge = draw(st.integers(0, 15))
    min_train = draw(st.integers(1, 30))
    rolling = draw(st.booleans())
    train_size = draw(st.integers(min_train + purge, min_train + purge + 100)) if rolling else None
    cv = WalkForwardSplit(
        draw(st.one_of(st.none(), st.integers(1, 6))),
        test_size=test_size,
        train_size=train_size,
        min_train_size=min_train,
        purge=purge,
        embargo=draw(st.integers(0, 25)),
        step=step,
    )
    return cv, draw(st.integers(1, 800))


def _int(size: object) -> int:
    assert isinstance(size, int)
    return size


def _needed(cv: WalkForwardSplit, folds: int) -> int:
    test = _int(cv.test_size)
    step = test if cv.step is None else _int(cv.step)
    first = cv.min_train_size + cv.purge if cv.train_size is None else _int(cv.train_size)
    return first + test + (folds - 1) * step


@SETTINGS
@given(splitters())
def test_walk_forward_properties(case: tuple[WalkForwardSplit, int]) -> None:
    cv, n = case
    if n < _needed(cv, cv.n_splits or 1):
        event("too few bars")
        with pytest.raises(SplitError, match=f"{_needed(cv, cv.n_splits or 1)} bars needed"):
            list(cv.split(np.zeros(n)))
        return
    try:
        folds = list(cv.split(np.zeros(n)))
    except SplitError as err:  # only a rolling window can be emptied by the embargo
        assert cv.train_size is not None and cv.embargo > 0
        assert "embargo" in str(err)
        event("embargo empties a rolling window")
        return
    event(f"{'rolling' if cv.train_size else 'expanding'}, {min(len(folds), 3)}+ folds")
    test_size = _int(cv.test_size)
    step = test_size if cv.step is None else _int(cv.step)
    assert len(folds) == cv.get_n_splits(np.zeros(n))
    if cv.n_splits is not None:
        assert len(folds) == cv.n_splits == cv.get_n_splits()
    else:  # as many folds as fit: one more, further back, would not
        assert n < _needed(cv, len(folds) + 1)
    zones = np.zeros(n, dtype=bool)
    for _, test in folds:
        zones[test[-1] + 1 : test[-1] + 1 + cv.embargo] = True

    assert folds[-1][1][-1] == n - 1  # the last test window ends at the last bar
    for k, (train, test) in enumerate(folds):
        assert train.dtype == np.int64 and test.dtype == np.int64
        assert np.all(np.diff(train) > 0) and train.size >= cv.min_train_size
        np.testing.assert_array_equal(test, np.arange(test[0], test[0] + test_size))
        assert np.intersect1d(train, test).size == 0
        assert train.max() < test.min()
        assert test[0] - train[-1] - 1 >= cv.purge  # bars strictly between
        assert not zones[train].any()  # no bar right after any test window is trained on
        # the train set is exactly its window minus the purge and the embargo zones
        lo = 0 if cv.train_size is None else test[0] - _int(cv.train_size)
        window = np.arange(lo, test[0] - cv.purge)
        np.testing.assert_array_equal(train, window[~zones[window]])
        if cv.train_size is not None and cv.embargo == 0:
            assert train.size == _int(cv.train_size) - cv.purge
        if k:
            prev_train, prev_test = folds[k - 1]
            assert test[0] == prev_test[0] + step  # in time order, never overlapping
            if step == test_size:
                assert test[0] == prev_test[-1] + 1  # consecutive
            if cv.train_size is None:  # expanding windows grow
                assert np.isin(prev_train, train).all() and train.size >= prev_train.size
                if cv.embargo == 0:
                    assert train.size == prev_train.size + step


def test_embargo_removes_bars_after_earlier_test_windows() -> None:
    cv = WalkForwardSplit(test_size=10, purge=2, embargo=3, min_train_size=20)
    folds = list(cv.split(np.zeros(60)))
    assert [(t[0], t[-1]) for _, t in folds] == [(30, 39), (40, 49), (50, 59)]
    np.testing.assert_array_equal(folds[0][0], np.arange(0, 28))
    np.testing.assert_array_equal(folds[1][0], np.arange(0, 38))  # 40..42 lie in its purge
    expected = np.setdiff1d(np.arange(0, 48), [40, 41, 42])  # after test window 30..39
    np.testing.assert_array_equal(folds[2][0], expected)


def test_rolling_window_and_folds_report() -> None:
    cv = WalkForwardSplit(test_size=10, train_size=25, purge=2)
    folds = cv.folds(np.zeros(60))
    assert [f.fold for f in folds] == [0, 1, 2]
    assert all(isinstance(f, Fold) and f.train.size == 23 for f in folds)
    assert (folds[0].train_start, folds[0].train_end) == (5, 27)
    assert (folds[0].test_start, folds[0].test_end) == (30, 39)
    assert (folds[2].train_start, folds[2].test_end) == (25, 59)


def test_too_few_bars_says_how_many_are_needed() -> None:
    with pytest.raises(SplitError, match="40 given, 60 bars needed for 3 fold"):
        WalkForwardSplit(3, test_size=10, train_size=30).get_n_splits(np.zeros(40))
    with pytest.raises(SplitError, match="5 given, 16 bars needed for 1 fold"):
        list(WalkForwardSplit(test_size=10, purge=5).split(np.zeros(5)))


def test_embargo_that_empties_a_rolling_window_is_an_error() -> None:
    cv = WalkForwardSplit(test_size=5, train_size=10, embargo=50)
    with pytest.raises(SplitError, match="fold 3: the embargo of 50 bars leaves 0"):
        cv.get_n_splits(np.zeros(40))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_size": 0}, "test_size must be an integer >= 1"),
        ({"test_size": True}, "test_size must be an integer >= 1"),
        ({"test_size": 10, "step": 5}, "step=5 is smaller than test_size=10"),
        ({"test_size": 10, "purge": -1}, "purge must be an integer >= 0"),
        ({"test_size": 10, "embargo": 1.5}, "embargo must be an integer >= 0"),
        ({"test_size": 10, "min_train_size": 0}, "min_train_size must be an integer >= 1"),
        ({"test_size": 10, "n_splits": 0}, "n_splits must be an integer >= 1"),
        ({"test_size": 10, "train_size": 5, "purge": 5}, "leaves fewer than min_train_size"),
        ({"test_size": "7D", "step": 24}, "both be bar counts or both time spans"),
        ({"test_size": "7D", "step": "1D"}, "shorter than test_size"),
        ({"test_size": "soon"}, "neither a bar count nor a time span"),
        ({"test_size": "-2D"}, "must be positive"),
        ({"test_size": 10, "train_size": "0D"}, "must be positive"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SplitError, match=match):
        WalkForwardSplit(**kwargs)


def test_bad_x_is_rejected() -> None:
    with pytest.raises(SplitError, match="X must have a length"):
        list(WalkForwardSplit(test_size=2).split(5))
    with pytest.raises(SplitError, match="needs X when n_splits is None"):
        WalkForwardSplit(test_size=2).get_n_splits()
    with pytest.raises(SplitError, match="time-based sizes need X with a DatetimeIndex"):
        list(WalkForwardSplit(test_size="1D").split(np.zeros(100)))
    backwards = pd.date_range("2024-01-01", periods=10, freq="1h", tz="UTC")[::-1]
    with pytest.raises(SplitError, match="time order"):
        list(WalkForwardSplit(test_size=2).split(backwards))


# --- time-based sizes ----------------------------------------------------------------------


def _hourly_with_gap() -> pd.DatetimeIndex:
    idx = pd.date_range("2024-01-01", "2024-03-01", freq="1h", inclusive="left", tz="UTC")
    return idx[
        (idx < pd.Timestamp("2024-02-06", tz="UTC")) | (idx >= pd.Timestamp("2024-02-16", tz="UTC"))
    ]  # a 10-day outage


def test_time_based_windows_are_calendar_periods_from_the_last_close() -> None:
    idx = _hourly_with_gap()
    cv = WalkForwardSplit(test_size="7D", train_size="14D", purge=3)
    folds = cv.folds(idx)
    # Weeks end at the close of the last bar (Mar 1 00:00); the week from Feb 9 falls in the
    # outage and is skipped; a week from Jan 12 would need training data before Jan 1.
    day = pd.Timedelta("1D")
    starts = [pd.Timestamp(d, tz="UTC") for d in ("2024-01-19", "2024-01-26", "2024-02-02")]
    starts += [pd.Timestamp(d, tz="UTC") for d in ("2024-02-16", "2024-02-23")]
    assert [f.test_start for f in folds] == starts
    assert [f.test.size for f in folds] == [168, 168, 96, 168, 168]
    for f, start in zip(folds, starts, strict=True):
        in_test = np.flatnonzero((idx >= start) & (idx < start + 7 * day))
        np.testing.assert_array_equal(f.test, in_test)
        in_train = np.flatnonzero((idx >= start - 14 * day) & (idx < start))[:-3]
        np.testing.assert_array_equal(f.train, in_train)
        assert isinstance(f.train_start, pd.Timestamp) and f.train_start >= start - 14 * day
    assert folds[3].train.size == 4 * 24 - 3  # its 14 days hold 4 days of bars


def test_time_based_test_size_on_a_bar_frame_uses_its_timeframe() -> None:
    idx = pd.date_range("2024-01-01", periods=24 * 20, freq="1h", tz="UTC")
    ones = np.ones(idx.size)
    bars = make_bar_frame(
        idx,
        {"open": ones, "high": ones, "low": ones, "close": ones, "volume": ones},
        symbol="X",
        timeframe="1h",
    )
    cv = WalkForwardSplit(test_size="5D", min_train_size=24)
    folds = cv.folds(bars)
    assert [pd.Timestamp(f.test_start).day for f in folds] == [6, 11, 16]
    assert all(f.test.size == 120 for f in folds)
    # the same with bar counts
    by_count = list(WalkForwardSplit(test_size=120, min_train_size=24).split(bars))
    for f, (train, test) in zip(folds, by_count, strict=True):
        np.testing.assert_array_equal(f.train, train)
        np.testing.assert_array_equal(f.test, test)


def test_train_windows_never_reach_into_the_test_window() -> None:
    """Splitter and dataset together: no training window holds a purged or test bar."""
    n, length, purge = 300, 12, 5
    x = np.arange(n, dtype=np.float32).reshape(-1, 1)  # feature = its own bar number
    cv = WalkForwardSplit(test_size=50, purge=purge, min_train_size=40)
    for train, test in cv.split(x):
        ds = WindowDataset(x, np.zeros(n), length, indices=train[train >= length - 1])
        last_seen = max(float(ds[k][0].max()) for k in range(len(ds)))
        assert last_seen <= test[0] - purge - 1


def test_with_purge_raises_the_purge_only() -> None:
    split = WalkForwardSplit(3, test_size="30D", min_train_size=50, purge=2, embargo=4)
    assert split.with_purge(1) is split and split.with_purge(2) is split
    raised = split.with_purge(12)
    assert raised.purge == 12 and split.purge == 2
    kept = ("n_splits", "test_size", "train_size", "min_train_size", "embargo", "step")
    assert all(getattr(raised, k) == getattr(split, k) for k in kept)
