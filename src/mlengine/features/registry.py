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

>>> from mlengine.features import compute_features, list_features
>>> frame = compute_features(bars)                                  # every feature
>>> frame = compute_features(bars, ["returns", "atr"], params={"atr": {"window": 20}})
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd

from mlengine.data.schema import PRICE_COLUMNS, BarDataError, MLEngineError, check_bar_frame

__all__ = [
    "FeatureError",
    "FeatureSpec",
    "UnknownFeatureError",
    "check_bars",
    "compute_features",
    "feature",
    "feature_spec",
    "list_features",
    "list_groups",
    "shared",
]

F = TypeVar("F", bound=Callable[..., pd.DataFrame])


class FeatureError(MLEngineError, ValueError):
    """Bad feature parameters, or a feature function that breaks the contract."""


class UnknownFeatureError(FeatureError, LookupError):
    """A feature or group name that is not registered."""


@dataclass(frozen=True)
class FeatureSpec:
    """One registered feature: its name, group, function and default parameters.

    ``func`` validates the bars and then calls ``compute``, the undecorated function.
    """

    name: str
    group: str
    func: Callable[..., pd.DataFrame]
    compute: Callable[..., pd.DataFrame]
    defaults: Mapping[str, Any]

    @property
    def summary(self) -> str:
        """The first line of the feature's docstring."""
        return (inspect.getdoc(self.compute) or "").split("\n", 1)[0]


_REGISTRY: dict[str, FeatureSpec] = {}
# intermediates shared by several features within one compute_features call (see shared())
_SHARED: ContextVar[dict[tuple[int, str], np.ndarray] | None] = ContextVar("_SHARED", default=None)


def feature(name: str) -> Callable[[F], F]:
    """Register a feature function under ``name`` (see the module docstring)."""

    def register(func: F) -> F:
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

        @functools.wraps(func)
        def checked(bars: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
            _check_param_names(name, kwargs, defaults)
            return _check_output(name, func(check_bars(bars), **kwargs), bars)

        _REGISTRY[name] = FeatureSpec(name, group, checked, func, MappingProxyType(defaults))
        return cast(F, checked)

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
    check_bars(bars)
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
    frames = []
    token = _SHARED.set({})
    try:
        for name in selected:
            spec = _REGISTRY[name]
            kwargs = dict(params.get(name, {}))
            _check_param_names(name, kwargs, spec.defaults)
            frames.append(_check_output(name, spec.compute(bars, **kwargs), bars))
    finally:
        _SHARED.reset(token)
    if not frames:
        return pd.DataFrame(index=bars.index)
    out = pd.concat(frames, axis=1)
    dup = out.columns[out.columns.duplicated()]
    if len(dup):
        raise FeatureError(f"features give duplicate columns {list(dup)}: change a parameter")
    return out


def check_bars(bars: object) -> pd.DataFrame:
    """``bars`` if it is a bar frame with positive, finite prices; :class:`BarDataError`
    naming the row and column otherwise."""
    if not isinstance(bars, pd.DataFrame):
        raise BarDataError(f"features need a bar frame (a pandas DataFrame), got {type(bars)}")
    check_bar_frame(bars)
    label = str(bars.attrs.get("symbol") or "bar frame")
    for col in PRICE_COLUMNS:
        a = bars[col].to_numpy()
        # two reductions instead of a mask: NaN makes min() NaN, which fails the comparison
        if a.size and not (a.min() > 0.0 and a.max() < np.inf):
            i = int(np.flatnonzero(~((a > 0.0) & (a < np.inf)))[0])
            raise BarDataError(
                f"price {float(a[i])} at {bars.index[i]} is not positive and finite",
                source=label,
                row=i + 1,
                column=col,
            )
    return bars


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


def frame(bars: pd.DataFrame, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """A feature frame on ``bars.index`` holding ``columns`` without copying them."""
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
