"""The one-row fast paths of a live prediction give exactly what the frame paths give: the
gate's features of the last bar (``stack_features`` on a one-row index), the numeric values
of a one-row prediction, the gate's mixture and weights from one pass, and the gate's
reading of its inputs (values and error messages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.ensemble import metamodel
from mlengine.ensemble.gating import Gate, GateError, GateParams, _numeric
from mlengine.ensemble.live import CONTEXT_HISTORY, _diagnostics
from mlengine.ensemble.metamodel import (
    context_features,
    numeric_columns,
    numeric_row,
    stack_features,
)


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


def _predictions(index: pd.Index, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Made-up predictions of three strategies on every bar of ``index``: ``p_up`` and float,
    boolean, integer, float32, text, missing and infinite diagnostics, and a ``fold``."""
    rng = np.random.default_rng(seed)
    n = len(index)
    tf = rng.normal(size=n)
    tf[rng.uniform(size=n) < 0.2] = np.nan
    tf[rng.uniform(size=n) < 0.05] = np.inf
    return {
        "mrd": pd.DataFrame(
            {
                "p_up": rng.uniform(size=n),
                "regime": rng.integers(0, 3, n).astype(np.float64),
                "regime_prob": rng.uniform(size=n),
                "fold": np.zeros(n, dtype=np.int64),
            },
            index=index,
        ),
        "msa": pd.DataFrame(
            {
                "p_up": rng.uniform(size=n),
                "after_bos": rng.uniform(size=n) > 0.5,
                "count": rng.integers(-5, 5, n),
                "label": np.where(rng.uniform(size=n) > 0.5, "up", "down"),
            },
            index=index,
        ),
        "mts": pd.DataFrame(
            {
                "p_up": rng.uniform(size=n),
                "tf_alignment": tf,
                "weight": rng.normal(size=n).astype(np.float32),
            },
            index=index,
        ),
    }


def _frame_path(
    predictions: dict[str, pd.DataFrame], bars: pd.DataFrame, index: pd.Index
) -> pd.DataFrame:
    """``stack_features`` without its one-row path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metamodel, "_stack_row", lambda *_: None)
        return stack_features(predictions, bars, index)


def _assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal frames, to the bit: values (NaN where NaN), signs of zeros, dtypes, columns
    and their dtype, index."""
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.columns.dtype == expected.columns.dtype
    a, b = got.to_numpy(dtype=np.float64), expected.to_numpy(dtype=np.float64)
    assert np.array_equal(a, b, equal_nan=True)
    assert np.array_equal(np.signbit(a), np.signbit(b))


def _ends(bars: pd.DataFrame, n: int) -> Iterator[int]:
    """``n`` consecutive end positions of ``CONTEXT_HISTORY``-bar windows, from the middle
    of ``bars``."""
    start = max(CONTEXT_HISTORY, len(bars) // 2)
    return iter(range(start, start + n))


def test_the_one_row_path_equals_the_last_row_of_the_full_computation(
    eurusd: pd.DataFrame,
) -> None:
    """On the bundled EUR/USD hours, over enough consecutive bars to meet every hour of
    the week: the features of the last bar from one-row predictions are the last row of
    the features of every bar of the same window."""
    seen = set()
    for end in _ends(eurusd, 24 * 7 + 24):
        bars = eurusd.iloc[end - CONTEXT_HISTORY : end]
        preds = _predictions(bars.index, seed=end)
        full = stack_features(preds, bars, bars.index)
        index = pd.DatetimeIndex([bars.index[-1]], name="ts")
        last = {n: p.iloc[-1:] for n, p in preds.items()}
        assert metamodel._stack_row(last, bars, index) is not None
        row = stack_features(last, bars, index)
        _assert_same(row, full.iloc[-1:])
        _assert_same(row, _frame_path(last, bars, index))
        seen.add((index[0].day_of_week, index[0].hour))
    assert len(seen) >= 24 * 5  # the trading hours of a week


def test_the_context_of_the_last_bar_equals_context_features(eurusd: pd.DataFrame) -> None:
    """Including flat closes: a zero volatility (log 0 = -inf) and 0 / 0 become NaN."""
    bars = eurusd.iloc[-CONTEXT_HISTORY:].copy()
    windows = [bars]
    flat = bars.copy()
    flat["close"] = np.r_[bars["close"].to_numpy()[:-30], np.full(30, bars["close"].iloc[-30])]
    windows.append(flat)
    constant = bars.copy()
    constant["close"] = 1.1
    windows.append(constant)
    for w in windows:
        expected = context_features(w).iloc[-1].to_numpy()
        got = np.array(metamodel._context_last(w))
        assert np.array_equal(got, expected, equal_nan=True)
        assert list(context_features(w).columns) == list(metamodel.CONTEXT_COLUMNS)
    flat_context = metamodel._context_last(constant)
    assert flat_context is not None and np.isnan(flat_context[:2]).all()


def _cases(eurusd: pd.DataFrame) -> Iterator[tuple[str, dict[str, pd.DataFrame], pd.DataFrame]]:
    bars = eurusd.iloc[-CONTEXT_HISTORY:]
    last = {n: p.iloc[-1:] for n, p in _predictions(bars.index).items()}
    yield "float32 p_up", last | {"mrd": last["mrd"].astype({"p_up": np.float32})}, bars
    yield "extension dtype", last | {"msa": last["msa"].astype({"count": "Int64"})}, bars
    earlier = {n: p.iloc[-2:-1] for n, p in _predictions(bars.index).items()}
    yield "a prediction at an earlier bar", last | {"mts": earlier["mts"]}, bars
    two = {n: p.iloc[-2:] for n, p in _predictions(bars.index).items()}
    yield "two-row predictions", two, bars
    yield "float32 closes", last, bars.astype({"close": np.float32})
    dup = pd.concat([last["mrd"], last["mrd"][["regime"]]], axis=1)
    yield "a repeated column", last | {"mrd": dup}, bars


def test_other_inputs_take_the_frame_path(eurusd: pd.DataFrame) -> None:
    """What the one-row path cannot reproduce exactly is left to the frame path."""
    index = pd.DatetimeIndex([eurusd.index[-1]], name="ts")
    for what, preds, bars in _cases(eurusd):
        assert metamodel._stack_row(preds, bars, index) is None, what
        _assert_same(stack_features(preds, bars, index), _frame_path(preds, bars, index))
    bars = eurusd.iloc[-CONTEXT_HISTORY:]
    last = {n: p.iloc[-1:] for n, p in _predictions(bars.index).items()}
    earlier = pd.DatetimeIndex([bars.index[-2]], name="ts")
    assert metamodel._stack_row(last, bars, earlier) is None
    paris = pd.DatetimeIndex(bars.index[-1:]).tz_convert("Europe/Paris")
    assert metamodel._stack_row(last, bars, paris) is None


# --- one-row values --------------------------------------------------------------------------


def _old_numeric_columns(frame: pd.DataFrame) -> list[Any]:
    """``numeric_columns`` as it was: pandas' checks on each column."""
    is_number = pd.api.types.is_numeric_dtype
    return [c for c in frame.columns if pd.api.types.is_bool_dtype(frame[c]) or is_number(frame[c])]


_DTYPES = ["float64", "float32", "int64", "int8", "uint64", "bool", "object", "datetime64[ns]"]
_DTYPES += ["Int64", "Float64", "boolean", "category", "timedelta64[ns]", "complex128", "str"]


def _column(dtype: Any, value: float) -> pd.Series:
    if dtype in ("object", "str"):
        return pd.Series([str(value)], dtype=dtype)
    if dtype == "category":
        return pd.Series([value > 0], dtype=dtype)
    if dtype.startswith(("datetime", "timedelta")):
        return pd.Series([0], dtype="int64").astype(dtype)
    if dtype in ("bool", "boolean"):
        return pd.Series([value > 0], dtype=dtype)
    if dtype.startswith(("int", "uint", "Int")):
        return pd.Series([int(abs(value)) % 100 if np.isfinite(value) else 7], dtype=dtype)
    return pd.Series([value], dtype=dtype)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_DTYPES),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.sampled_from(["p_up", "a", "b", "c", "fold", 0, 1]),
        ),
        max_size=8,
    )
)
def test_one_row_values_equal_reading_column_by_column(
    columns: list[tuple[str, float, Any]],
) -> None:
    frame = pd.concat(
        [_column(dtype, value).rename(name) for dtype, value, name in columns]
        or [pd.Series([1.0], name="p_up")],
        axis=1,
    )
    assert numeric_columns(frame) == _old_numeric_columns(frame)
    values = numeric_row(frame)
    if values is None:
        return
    assert frame.columns.is_unique
    expected = {c: float(frame[c].to_numpy()[0]) for c in _old_numeric_columns(frame)}
    assert list(values) == list(expected)
    assert np.array_equal(list(values.values()), list(expected.values()), equal_nan=True)
    assert _diagnostics(frame, values) == _diagnostics(frame)


# --- the gate --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate() -> tuple[Gate, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    index = pd.date_range("2024-01-01", periods=80, freq="h", tz="UTC", name="ts")
    features = pd.DataFrame(rng.normal(size=(80, 4)), index=index, columns=list("wxyz"))
    probs = pd.DataFrame(rng.uniform(size=(80, 3)), index=index, columns=["a", "b", "c"])
    y = (rng.uniform(size=80) > 0.5).astype(np.float64)
    model = Gate(GateParams(hidden=4, epochs=10, patience=5), seed=1).fit(features, probs, y)
    return model, features, probs


def test_one_gate_pass_gives_predict_and_weights(
    gate: tuple[Gate, pd.DataFrame, pd.DataFrame],
) -> None:
    model, features, probs = gate
    for rows in (slice(None), slice(-1, None)):
        f, p = features.iloc[rows], probs.iloc[rows]
        mix, w = model.predict_with_weights(f, p)
        assert np.array_equal(mix, model.predict(f, p).to_numpy())
        assert np.array_equal(w, model.weights(f).to_numpy())
        # columns in another order are put in the fitted order
        shuffled = f[["z", "x", "w", "y"]]
        assert np.array_equal(model.predict_with_weights(shuffled, p[["c", "a", "b"]])[0], mix)
    with pytest.raises(GateError, match=r"missing \['z'\], extra \[\]"):
        model.predict_with_weights(features[["w", "x", "y"]], probs)


def test_the_gate_reads_numpy_columns_at_once_as_it_reads_them_one_by_one() -> None:
    """Same values, and the same error for the same first infinity, whether the frame
    converts at once (numpy dtypes) or column by column (a nullable column among them)."""
    rng = np.random.default_rng(5)
    index = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC", name="ts")
    x = rng.normal(size=(6, 4))
    x[2, 1] = np.nan
    frame = pd.DataFrame(x, index=index, columns=list("abcd"))
    frame["e"] = rng.integers(0, 9, 6)
    frame["f"] = rng.uniform(size=6) > 0.5
    slow = frame.astype({"a": "Float64"})
    assert np.array_equal(_numeric(frame, "features"), _numeric(slow, "features"), equal_nan=True)
    # many rows: C order as before, so that sums along the rows round as before
    big = pd.DataFrame(rng.normal(size=(500, 6)) * 1e3, columns=list("abcdef"))
    big["g"] = rng.integers(0, 9, 500)
    fast, by_column = _numeric(big, "features"), _numeric(big.astype({"g": "Int64"}), "features")
    assert fast.flags["C_CONTIGUOUS"] and by_column.flags["C_CONTIGUOUS"]
    assert np.array_equal(fast, by_column)
    assert np.array_equal(fast.sum(axis=0), by_column.sum(axis=0))
    for inf in ((4, "c"), (1, "d"), (0, "b")):
        bad = frame.copy()
        bad.loc[bad.index[inf[0]], inf[1]] = -np.inf
        bad.loc[bad.index[5], "d"] = np.inf
        messages = []
        for f in (bad, bad.astype({"a": "Float64"})):
            with pytest.raises(GateError) as err:
                _numeric(f, "features")
            messages.append(str(err.value))
        assert messages[0] == messages[1]
        assert f"column {inf[1]!r} is infinite" in messages[0]


def test_one_row_values_of_mixed_numpy_columns() -> None:
    index = pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")], name="ts")
    frame = pd.DataFrame(
        {
            "p_up": [0.25],
            "flag": [True],
            "n": np.array([3], dtype=np.int16),
            "w": np.array([0.1], dtype=np.float32),
            "label": ["up"],
            "gap": [np.inf],
            "miss": [np.nan],
        },
        index=index,
    )
    values = numeric_row(frame)
    assert values is not None
    assert list(values) == ["p_up", "flag", "n", "w", "gap", "miss"]
    assert values["w"] == float(np.float32(0.1)) and values["flag"] == 1.0
    assert _diagnostics(frame, values) == {"flag": 1.0, "n": 3.0, "w": float(np.float32(0.1))}
    assert _diagnostics(frame, values) == _diagnostics(frame)
