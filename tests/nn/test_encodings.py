from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.data.loader import WindowDataset
from mlengine.nn.encodings import (
    CalendarCodes,
    LearnableEncoding,
    ModelInputError,
    SinusoidalEncoding,
    TimeEncoding,
    calendar_codes,
    window_timestamps,
)

# 1900-01-01 .. 2200-01-01 in ns, both sides of the epoch, outside |t| < 1e17.
_NS_LO, _NS_HI = -2_208_988_800 * 10**9, 7_258_118_400 * 10**9
_STAMPS = st.integers(_NS_LO, -(10**17)) | st.integers(10**17, _NS_HI)


@settings(max_examples=50, deadline=None)
@given(st.lists(_STAMPS, min_size=1, max_size=40))
def test_calendar_codes_match_pandas(stamps: list[int]) -> None:
    ts = torch.tensor(stamps, dtype=torch.int64)[None, :]
    codes = calendar_codes(ts)
    index = pd.DatetimeIndex(np.array(stamps, dtype="datetime64[ns]"), tz="UTC")
    np.testing.assert_array_equal(codes.hour[0].numpy(), index.hour.to_numpy())
    np.testing.assert_array_equal(codes.dow[0].numpy(), index.day_of_week.to_numpy())


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (CalendarCodes(torch.tensor([[24]]), torch.tensor([[0]])), "hour codes must lie in 0..23"),
        (CalendarCodes(torch.tensor([[0]]), torch.tensor([[7]])), "dow codes must lie in 0..6"),
        (CalendarCodes(torch.tensor([[-1]]), torch.tensor([[0]])), "hour codes must lie"),
        (CalendarCodes(torch.tensor([[1.0]]), torch.tensor([[0]])), "must be integers"),
        (CalendarCodes(torch.tensor([[1, 2]]), torch.tensor([[0]])), "differ in shape"),
    ],
)
def test_bad_calendar_codes_are_rejected(codes: CalendarCodes, match: str) -> None:
    with pytest.raises(ModelInputError, match=match):
        calendar_codes(codes)


def test_stamps_not_in_nanoseconds_are_refused() -> None:
    index = pd.date_range("2024-03-01", periods=4, freq="h", tz="UTC")  # microsecond unit
    with pytest.raises(ModelInputError, match="not in nanoseconds"):
        calendar_codes(torch.from_numpy(index.as_unit("us").asi8)[None, :])
    calendar_codes(torch.from_numpy(index.as_unit("ns").asi8)[None, :])  # accepted


@pytest.mark.parametrize("time", [torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int32), [1, 2]])
def test_time_must_be_int64_stamps_or_codes(time: object) -> None:
    with pytest.raises(ModelInputError, match="int64 ns timestamps or CalendarCodes"):
        calendar_codes(time)  # type: ignore[arg-type]


def test_window_timestamps_hold_the_bars_of_the_dataset_windows() -> None:
    index = pd.date_range("2024-03-01", periods=50, freq="h", tz="UTC", name="ts")
    length = 8
    positions = np.arange(50, dtype=np.float32)[:, None]
    decision = np.array([7, 20, 49])
    ds = WindowDataset(positions, np.zeros(50), length, indices=decision)
    stamps = window_timestamps(index, decision, length)
    assert stamps.shape == (3, length) and stamps.dtype == torch.int64
    for k in range(3):
        window, _ = ds[k]
        bars = window[:, 0].long().numpy()
        np.testing.assert_array_equal(stamps[k].numpy(), index.as_unit("ns").asi8[bars])
        assert stamps[k, -1] == index.as_unit("ns").asi8[decision[k]]


def test_window_timestamps_reject_bad_input() -> None:
    index = pd.date_range("2024-03-01", periods=10, freq="h", tz="UTC")
    with pytest.raises(ModelInputError, match="tz-aware"):
        window_timestamps(index.tz_localize(None), [5], 3)
    with pytest.raises(ModelInputError, match=r"decision bars must lie in 2\.\.9"):
        window_timestamps(index, [1], 3)
    with pytest.raises(ModelInputError, match=r"decision bars must lie in 2\.\.9"):
        window_timestamps(index, [10], 3)
    with pytest.raises(ModelInputError, match="DatetimeIndex"):
        window_timestamps(pd.RangeIndex(10), [5], 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_is_fixed_and_anchored_at_the_decision_bar(d_model: int) -> None:
    enc = SinusoidalEncoding(d_model, max_len=32)
    assert list(enc.parameters()) == [] and enc.state_dict() == {}
    h = torch.zeros(2, 10, d_model)
    out = enc(h)
    assert out.shape == (2, 10, d_model)
    # offset 0 (the decision bar): sin(0) = 0 on even, cos(0) = 1 on odd dimensions
    expected = torch.zeros(d_model)
    expected[1::2] = 1.0
    torch.testing.assert_close(out[0, -1], expected)
    # the last position gets the same vector whatever the window length
    torch.testing.assert_close(enc(torch.zeros(1, 5, d_model))[0, -1], out[0, -1])
    torch.testing.assert_close(enc(torch.zeros(1, 5, d_model))[0, 0], out[0, 5])
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_learnable_encoding_is_learned_per_offset() -> None:
    enc = LearnableEncoding(6, max_len=12)
    h = torch.zeros(3, 12, 6)
    out = enc(h)
    torch.testing.assert_close(out[0], enc.table.weight.flip(0))
    out.pow(2).sum().backward()
    assert enc.table.weight.grad is not None and bool((enc.table.weight.grad != 0).all())


@pytest.mark.parametrize("enc", [SinusoidalEncoding(4, max_len=8), LearnableEncoding(4, max_len=8)])
def test_windows_longer_than_max_len_are_rejected(enc: torch.nn.Module) -> None:
    with pytest.raises(ModelInputError, match="window of 9 bars exceeds max_len=8"):
        enc(torch.zeros(1, 9, 4))


def test_time_encoding_from_stamps_equals_from_codes() -> None:
    torch.manual_seed(0)
    enc = TimeEncoding(8)
    stamps = torch.from_numpy(
        pd.date_range("2024-01-05 20:00", periods=30, freq="h", tz="UTC")
        .as_unit("ns")
        .asi8.reshape(2, 15)
    )
    h = torch.randn(2, 15, 8)
    from_stamps = enc(h, stamps)
    codes = calendar_codes(stamps)
    torch.testing.assert_close(enc(h, CalendarCodes(codes.hour, codes.dow)), from_stamps)
    # same hour and weekday -> the same added vector
    added = from_stamps - h
    same = pd.date_range("2024-01-01", periods=2, freq="7D", tz="UTC").as_unit("ns").asi8
    pair = enc(torch.zeros(1, 2, 8), torch.from_numpy(same)[None, :])
    torch.testing.assert_close(pair[0, 0], pair[0, 1])
    assert not torch.allclose(added[0, 0], added[0, 1])


def test_time_encoding_checks_the_shape() -> None:
    enc = TimeEncoding(4)
    with pytest.raises(ModelInputError, match=r"time must have shape \(2, 5\)"):
        enc(torch.zeros(2, 5, 4), torch.full((2, 4), 1_700_000_000 * 10**9))
