"""The feature registry: every feature function by name, and one call that computes them.

A *feature* is a pure function ``f(bars, *, param=default, ...) -> DataFrame``: a bar frame
with positive, finite prices in, a float64 frame on the same index out, NaN during its
warm-up, columns prefixed by the feature and named after its parameters (``rsi_14``,
``atr_rel_14``). A value at bar ``t`` uses bars ``<= t`` only (the truncation property of
DESIGN.md, tested over the whole registry by ``tests/features/test_truncation.py``).
Exponentially smoothed indicators (RSI, ATR, ADX, MACD) also depend on the first bar of
their input, through their seed: compute on the whole history, then slice.

Registering is one decorator, ``@feature("rsi")``; the defaults of the keyword-only
parameters of the function are the feature's parameters. A feature belongs to the group of
the module that defines it (``returns``, ``volatility``, ``momentum``). Intermediates that
several features need are made once per :func:`compute_features` call (:func:`shared`).

The function decorated returns the feature's columns, a dict of float64 arrays of one
value per bar (:data:`Columns`; a frame is accepted too), and the registry makes the
frame: the decorated function returns it, and :func:`compute_features` builds one frame
for all the features it computes, not one per feature (at a few thousand bars, making and
checking a frame per feature cost more than most features' arithmetic). Features read the
bars' columns with :func:`bar_columns` (one read of the frame per call).

>>> from mlengine.features import compute_features, list_features
>>> frame = compute_features(bars)                                  # every feature
>>> frame = compute_features(bars, ["returns", "atr"], params={"atr": {"window": 20}})
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ParamSpec, cast

import numpy as np
import pandas as pd

from mlengine.data.schema import (
    OHLCV,
    PRICE_COLUMNS,
    BarDataError,
    MLEngineError,
    check_bar_frame,
)

__all__ = [
    "Columns",
    "FeatureError",
    "FeatureSpec",
    "UnknownFeatureError",
    "bar_columns",
    "check_bars",
    "checked_bars",
    "column_index",
    "compute_features",
    "feature",
    "feature_spec",
    "list_features",
    "list_groups",
    "shared",
]

P = ParamSpec("P")

#: What a registered feature function returns: its columns by name, float64, one per bar.
Columns = dict[str, np.ndarray]


class FeatureError(MLEngineError, ValueError):
    """Bad feature parameters, or a feature function that breaks the contract."""


class UnknownFeatureError(FeatureError, LookupError):
    """A feature or group name that is not registered."""


@dataclass(frozen=True)
class FeatureSpec:
    """One registered feature: its name, group, function and default parameters.

    ``func`` validates the bars, calls ``compute``, the undecorated function (which
    returns :data:`Columns`, or a frame), and returns the checked feature frame.
    """

    name: str
    group: str
    func: Callable[..., pd.DataFrame]
    compute: Callable[..., Columns | pd.DataFrame]
    defaults: Mapping[str, Any]

    @property
    def summary(self) -> str:
        """The first line of the feature's docstring."""
        return (inspect.getdoc(self.compute) or "").split("\n", 1)[0]


_REGISTRY: dict[str, FeatureSpec] = {}
# the memo key of the bars' values (transposed, one row per OHLCV column) in _SHARED
_OHLCV_KEY = "ohlcv"
_OHLCV_POS = {c: i for i, c in enumerate(OHLCV)}
# intermediates shared by several features within one compute_features call (see shared())
_SHARED: ContextVar[dict[tuple[int, str], np.ndarray] | None] = ContextVar("_SHARED", default=None)
# the bars of the enclosing checked_bars() block and their values
_CHECKED: ContextVar[tuple[pd.DataFrame, np.ndarray] | None] = ContextVar("_CHECKED", default=None)


def feature(
    name: str,
) -> Callable[[Callable[P, Columns | pd.DataFrame]], Callable[P, pd.DataFrame]]:
    """Register a feature function under ``name`` (see the module docstring); the function
    returned gives the feature frame."""

    def register(func: Callable[P, Columns | pd.DataFrame]) -> Callable[P, pd.DataFrame]:
        group = func.__module__.rsplit(".", 1)[-1]
        if name in _REGISTRY or name in list_groups() or name == group or group in _REGISTRY:
            raise FeatureError(f"feature name {name!r} is already taken (feature or group)")
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            raise FeatureError(f"feature {name!r}: the first parameter must be the bars")
        defaults: dict[str, Any] = {}
        for p in params[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is p.empty:
                raise FeatureError(f"feature {name!r}: {p.name!r} must be keyword-only, defaulted")
            defaults[p.name] = p.default

        compute = cast(Callable[..., Columns | pd.DataFrame], func)

        @functools.wraps(func)
        def checked(bars: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
            _check_param_names(name, kwargs, defaults)
            out = compute(check_bars(bars), **kwargs)
            return _check_output(name, _as_frame(bars, out), bars)

        _REGISTRY[name] = FeatureSpec(name, group, checked, compute, MappingProxyType(defaults))
        return cast(Callable[P, pd.DataFrame], checked)

    return register


def list_features(group: str | None = None) -> list[str]:
    """The registered feature names (of ``group`` if given), in registration order."""
    if group is not None and group not in list_groups():
        raise UnknownFeatureError(
            f"unknown feature group {group!r}: the groups are {', '.join(list_groups())}"
        )
    return [n for n, s in _REGISTRY.items() if group is None or s.group == group]


def list_groups() -> list[str]:
    """The feature groups (the modules that define features), in registration order."""
    return list(dict.fromkeys(s.group for s in _REGISTRY.values()))


def feature_spec(name: str) -> FeatureSpec:
    """The registry entry of ``name``; :class:`UnknownFeatureError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFeatureError(_unknown(name)) from None


def compute_features(
    bars: pd.DataFrame,
    names: Iterable[str] | str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Compute features on ``bars`` into one frame on the same index.

    ``names``: feature or group names (all registered features when None), computed in
    the order given, each once. ``params`` maps a feature name to the parameters that
    override its defaults, e.g. ``{"rsi": {"window": 21}}``.
    """
    values = _known_values(bars)
    selected = _resolve(names)
    params = dict(params or {})
    for name, kwargs in params.items():
        if not isinstance(kwargs, Mapping):
            raise FeatureError(
                f"params[{name!r}] must map parameter names to values, got {kwargs!r}"
            )
    stray = [n for n in params if n not in selected]
    if stray:
        raise FeatureError(
            f"params given for {', '.join(map(repr, stray))}, not among the selected "
            f"features ({', '.join(selected)})"
        )
    labels: list[str] = []
    arrays: list[np.ndarray] = []  # one per column, or (columns, bars) of a feature's frame
    # the checked bars' columns, read once for every feature of the call (bar_columns)
    token = _SHARED.set({(id(bars), _OHLCV_KEY): values.T})
    try:
        for name in selected:
            spec = _REGISTRY[name]
            kwargs = dict(params.get(name, {}))
            _check_param_names(name, kwargs, spec.defaults)
            out = spec.compute(bars, **kwargs)
            if isinstance(out, dict) and _float64_columns(out, len(bars)):
                labels.extend(out)  # the contract holds: the columns as they are
                arrays.extend(out.values())
            else:  # a frame, or columns to check as one
                checked = _check_output(name, _as_frame(bars, out), bars)
                labels.extend(checked.columns.tolist())
                arrays.append(checked.to_numpy(dtype=np.float64).T)
    finally:
        _SHARED.reset(token)
    if not labels:
        return pd.DataFrame(index=bars.index)
    if len(set(labels)) != len(labels):
        columns = pd.Index(labels)
        dup = columns[columns.duplicated()]
        raise FeatureError(f"features give duplicate columns {list(dup)}: change a parameter")
    # one 2-D float64 block (each column contiguous): the values pd.concat of the features'
    # frames would hold, without a frame per feature
    block = np.vstack(arrays)
    return pd.DataFrame(block.T, index=bars.index, columns=column_index(labels), copy=False)


def check_bars(bars: object) -> pd.DataFrame:
    """``bars`` if it is a bar frame with positive, finite prices; :class:`BarDataError`
    naming the row and column otherwise."""
    _checked_values(bars)
    return cast(pd.DataFrame, bars)


@contextmanager
def checked_bars(bars: object) -> Iterator[pd.DataFrame]:
    """:func:`check_bars` of ``bars`` once for a block of work on them: within the block,
    :func:`compute_features` of these same bars (the object, held by the block) does not
    check them again.

    For a strategy's prediction, which checks its bars and then computes features on them
    (once or several times): the result of those checks is already known. The block must
    not modify the bars."""
    values = _known_values(bars)  # a block nested in one on the same bars: checked already
    token = _CHECKED.set((cast(pd.DataFrame, bars), values))
    try:
        yield cast(pd.DataFrame, bars)
    finally:
        _CHECKED.reset(token)


def _known_values(bars: object) -> np.ndarray:
    """The values of ``bars`` from the enclosing :func:`checked_bars` block of these bars,
    else :func:`_checked_values` (which checks them)."""
    known = _CHECKED.get()
    if known is not None and known[0] is bars:
        return known[1]
    return _checked_values(bars)


def _checked_values(bars: object) -> np.ndarray:
    """:func:`check_bars` of ``bars``, returning its values ``(n, 5)`` (float64, the OHLCV
    columns in order; a view where pandas holds them in one block)."""
    if not isinstance(bars, pd.DataFrame):
        raise BarDataError(f"features need a bar frame (a pandas DataFrame), got {type(bars)}")
    check_bar_frame(bars)
    # a bar frame is exactly the OHLCV columns, all float64: one array holds them
    values = bars.to_numpy()
    if not len(values):
        return values
    prices = values[:, : len(PRICE_COLUMNS)]
    # two reductions instead of a mask: NaN makes min() NaN, which fails the comparison
    ok = (prices.min(axis=0) > 0.0) & (prices.max(axis=0) < np.inf)
    if not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        a = prices[:, j]
        i = int(np.flatnonzero(~((a > 0.0) & (a < np.inf)))[0])
        raise BarDataError(
            f"price {float(a[i])} at {bars.index[i]} is not positive and finite",
            source=str(bars.attrs.get("symbol") or "bar frame"),
            row=i + 1,
            column=PRICE_COLUMNS[j],
        )
    return values


def checked_in_call(bars: pd.DataFrame) -> bool:
    """Whether ``bars`` are the bars of the running :func:`compute_features` call, which
    checked them (:func:`check_bars`) on entry: a feature's helper need not again."""
    memo = _SHARED.get()
    return memo is not None and (id(bars), _OHLCV_KEY) in memo


def bar_columns(bars: pd.DataFrame, *names: str) -> tuple[np.ndarray, ...]:
    """The columns ``names`` of ``bars`` as read-only contiguous arrays.

    Within one :func:`compute_features` call (the bars checked: the OHLCV columns, all
    float64) they are views of one read of the frame's values; a direct call of a feature
    reads each column from the frame. Either way the same values.
    """
    memo = _SHARED.get()
    rows = None if memo is None else memo.get((id(bars), _OHLCV_KEY))
    if rows is None:
        return tuple(bars[c].to_numpy() for c in names)
    out = []
    for c in names:
        a = np.ascontiguousarray(rows[_OHLCV_POS[c]])
        a.flags.writeable = False  # as pandas' column views (and one numba signature)
        out.append(a)
    return tuple(out)


def shared(bars: pd.DataFrame, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
    """``make()`` as a read-only array, made once per :func:`compute_features` call.

    For intermediates that several features need (the one-bar log returns): within one
    call they are computed once; a direct call of a feature just makes them.
    """
    memo = _SHARED.get()
    slot = (id(bars), key)
    if memo is not None and slot in memo:
        return memo[slot]
    arr = make()
    arr.flags.writeable = False
    if memo is not None:
        memo[slot] = arr
    return arr


# --- parameter helpers for the feature modules --------------------------------------------


MAX_WINDOW = 100_000  # TA-Lib's upper bound on every period


def window_param(feature: str, param: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int in ``[minimum, MAX_WINDOW]``; :class:`FeatureError` otherwise."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or not (minimum <= cast(int, value) <= MAX_WINDOW):
        raise FeatureError(
            f"{feature}: {param} must be an int in [{minimum}, {MAX_WINDOW}], got {value!r}"
        )
    return int(cast(int, value))


def windows_param(feature: str, param: str, value: object, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of distinct ints ``>= minimum`` (an int is one)."""
    items = value if isinstance(value, list | tuple) else (value,)
    out = tuple(window_param(feature, param, v, minimum) for v in items)
    if not out or len(set(out)) != len(out):
        raise FeatureError(f"{feature}: {param} must be distinct ints, at least one: {value!r}")
    return out


def positive_param(feature: str, param: str, value: object) -> float:
    """``value`` as a finite float ``> 0``; :class:`FeatureError` otherwise."""
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not (0.0 < float(cast(float, value)) < np.inf):
        raise FeatureError(f"{feature}: {param} must be a finite number > 0, got {value!r}")
    return float(cast(float, value))


def fmt(value: float) -> str:
    """A parameter as it appears in a column name: ``2.0 -> "2"``, ``2.5 -> "2.5"``."""
    return f"{value:g}"


def column_index(labels: Iterable[str]) -> pd.Index:
    """``pd.Index(list(labels))``: a new Index of the same labels and dtype.

    Feature frames have the same few sets of column labels on every call, and making a
    string Index from a list costs more than the frame around it: each set is made once
    (bounded memo keyed by the labels' values) and each call gets a shallow copy of it,
    a new Index object over the same immutable labels.
    """
    return _index_of(tuple(labels)).copy()


@functools.lru_cache(maxsize=1024)
def _index_of(labels: tuple[str, ...]) -> pd.Index:
    return pd.Index(list(labels))


def _float64_columns(columns: Mapping[str, object], n: int) -> bool:
    """Whether ``columns`` are float64 arrays of ``n`` values each (the feature contract
    of :func:`_check_output`, met without making a frame)."""
    return all(
        isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (n,)
        for a in columns.values()
    )


def _as_frame(bars: pd.DataFrame, out: object) -> object:
    """A feature function's output as a frame (a frame as it is; anything else for
    :func:`_check_output` to reject)."""
    if isinstance(out, pd.DataFrame) or not isinstance(out, Mapping):
        return out
    return frame(bars, out)


def frame(bars: pd.DataFrame, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """A feature frame on ``bars.index`` holding ``columns``.

    Float64 columns of the bars' length go into one 2-D block (one copy of them: a frame
    of separate column arrays costs several times more to build and to read); anything
    else is kept as given, for the output check to name.
    """
    if columns and _float64_columns(columns, len(bars.index)):
        block = np.stack(list(columns.values()))  # (columns, bars): each column contiguous
        return pd.DataFrame(block.T, index=bars.index, columns=column_index(columns), copy=False)
    return pd.DataFrame(dict(columns), index=bars.index, copy=False)


# --- internals -------------------------------------------------------------------------------


def _unknown(name: object) -> str:
    return (
        f"unknown feature {name!r}: the features are {', '.join(_REGISTRY)}; "
        f"the groups are {', '.join(list_groups())}"
    )


def _resolve(names: Iterable[str] | str | None) -> list[str]:
    if names is None:
        return list(_REGISTRY)
    if isinstance(names, str):
        names = [names]
    groups = set(list_groups())
    out: list[str] = []
    for name in names:
        if isinstance(name, str) and name in groups:
            out.extend(list_features(name))
        elif isinstance(name, str) and name in _REGISTRY:
            out.append(name)
        else:
            raise UnknownFeatureError(_unknown(name))
    return list(dict.fromkeys(out))


def _check_param_names(name: str, kwargs: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    bad = [k for k in kwargs if k not in defaults]
    if bad:
        known = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
        raise FeatureError(f"{name}: unknown parameter(s) {', '.join(bad)}; it takes {known}")


def _check_output(name: str, out: object, bars: pd.DataFrame) -> pd.DataFrame:
    """The contract of a feature's output; a breach is a bug in the feature."""
    if not isinstance(out, pd.DataFrame) or not (
        out.index.is_(bars.index) or out.index.equals(bars.index)
    ):
        raise FeatureError(f"feature {name!r} did not return a frame on the bars' index")
    bad = [c for c, dtype in out.dtypes.items() if dtype != np.float64]
    if bad:
        raise FeatureError(f"feature {name!r} returned non-float64 columns {bad}")
    return out
