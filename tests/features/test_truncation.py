"""No look-ahead, by construction: every registered feature passes the truncation test.

One property test parametrised over the registry as it stands at collection time, and a
guard that no public function of a feature module escapes the registry, so a feature
cannot be added without being tested here.

Equality is exact: TA-Lib's loops run forward from the first bar and the hand-written
parts are elementwise or lagged differences, so cutting the end changes no earlier value.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from collections.abc import Collection

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlengine.features
from mlengine.features import compute_features, feature_spec, list_features
from tests.features import real_bars, real_slice, synthetic_bars

FEATURES = list_features()
LENGTH = 400
SOURCES = ("eurusd_1h", "btcusd_1h_coinbase", "synthetic", "synthetic_flat")


def _draw_bars(data: st.DataObject) -> pd.DataFrame:
    source = data.draw(st.sampled_from(SOURCES), label="source")
    if source == "synthetic":
        return synthetic_bars(LENGTH, seed=data.draw(st.integers(0, 2**16), label="seed"))
    if source == "synthetic_flat":
        seed = data.draw(st.integers(0, 2**16), label="seed")
        return synthetic_bars(LENGTH, seed=seed, flat_every=120)
    start = data.draw(st.integers(0, len(real_bars(source)) - LENGTH), label="start")
    return real_slice(source, start, LENGTH)


@pytest.mark.parametrize("name", FEATURES)
@settings(max_examples=50, deadline=None, derandomize=True)
@given(data=st.data())
def test_truncation(name: str, data: st.DataObject) -> None:
    bars = _draw_bars(data)
    full = compute_features(bars, [name])
    cuts = data.draw(
        st.lists(st.one_of(st.integers(1, 60), st.integers(1, LENGTH)), min_size=1, max_size=4),
        label="cuts",
    )
    for k in cuts:
        part = compute_features(bars.iloc[:k], [name])
        assert list(part.columns) == list(full.columns)
        assert part.index.equals(bars.index[:k])
        expected = full.iloc[:k].to_numpy()
        got = part.to_numpy()
        same = (got == expected) | (np.isnan(got) & np.isnan(expected))
        assert same.all(), (
            f"{name}: computing on bars[:{k}] changes row {np.argwhere(~same)[0][0]} "
            f"of {list(full.columns)}"
        )


def test_full_rows_are_filled_after_warm_up() -> None:
    """The property above is not vacuous: on 400 real bars every column has values."""
    frame = compute_features(real_slice("eurusd_1h", 1000, LENGTH))
    assert frame.shape[1] >= len(FEATURES)
    assert frame.iloc[-1].notna().all()


def _unregistered(module: types.ModuleType, registered: Collection[object]) -> list[str]:
    """Public functions defined in ``module`` that the registry does not hold."""
    return [
        name
        for name, obj in vars(module).items()
        if inspect.isfunction(obj)
        and obj.__module__ == module.__name__
        and not name.startswith("_")
        and obj not in registered
    ]


def _feature_modules() -> list[types.ModuleType]:
    return [
        importlib.import_module(f"mlengine.features.{info.name}")
        for info in pkgutil.iter_modules(mlengine.features.__path__)
        if info.name != "registry" and not info.name.startswith("_")
    ]


def test_every_public_feature_function_is_registered() -> None:
    assert FEATURES, "the feature registry is empty"
    assert list_features() == FEATURES, "features registered after collection escape the test"
    registered = {feature_spec(name).func for name in FEATURES}
    modules = _feature_modules()
    assert {m.__name__.rsplit(".", 1)[-1] for m in modules} >= {
        "returns",
        "volatility",
        "momentum",
    }
    for module in modules:
        assert _unregistered(module, registered) == [], module.__name__
    # every registered feature lives in one of the scanned modules
    assert {feature_spec(n).group for n in FEATURES} <= {
        m.__name__.rsplit(".", 1)[-1] for m in modules
    }


def test_the_guard_catches_an_unregistered_function() -> None:
    module = types.ModuleType("mlengine.features.fake")

    def stray_feature(bars: pd.DataFrame) -> pd.DataFrame:
        return bars

    def _helper() -> None:
        return None

    stray_feature.__module__ = _helper.__module__ = module.__name__
    module.stray_feature = stray_feature  # type: ignore[attr-defined]
    module._helper = _helper  # type: ignore[attr-defined]
    assert _unregistered(module, set()) == ["stray_feature"]
