"""The Strategy contract, checked on every registered strategy.

Like scikit-learn's ``parametrize_with_checks``: a strategy that registers itself gets all
of these checks without writing them. A strategy may offer ``contract_params()`` (a
classmethod returning small, fast hyper-parameters) for the suite to build it with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlengine import datasets
from mlengine.strategies import registry
from mlengine.strategies.base import NotFittedError, Strategy, check_predictions

N_TRAIN = 1000
N_ALL = 1400
CUT = 1200  # bars after this one are altered in the look-ahead check
FORBIDDEN_SUFFIXES = {".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle"}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return datasets.load("eurusd_1h").iloc[:N_ALL]


def _make(name: str, seed: int = 0) -> Strategy:
    cls = registry.get(name)
    params: dict[str, Any] = {}
    if hasattr(cls, "contract_params"):
        params = dict(cls.contract_params())
    return registry.create(name, seed=seed, **params)


def _fitted(name: str, bars: pd.DataFrame, seed: int = 0) -> Strategy:
    strategy = _make(name, seed)
    out = strategy.fit(bars.iloc[:N_TRAIN])
    assert out is strategy, "fit must return self"
    return strategy


def _p_up(strategy: Strategy, bars: pd.DataFrame) -> np.ndarray:
    pred = check_predictions(strategy.predict_proba(bars), bars, who=strategy.name)
    return pred["p_up"].to_numpy(dtype=np.float64)


STRATEGIES = registry.names()


def test_registry_is_not_empty_and_names_match() -> None:
    assert STRATEGIES
    for name in STRATEGIES:
        assert registry.get(name).name == name


@pytest.mark.parametrize("name", STRATEGIES)
def test_init_only_stores_and_predict_before_fit_raises(name: str, bars: pd.DataFrame) -> None:
    strategy = _make(name)
    learned = [k for k in vars(strategy) if k.endswith("_") and not k.startswith("_")]
    assert learned == [], f"{name}: __init__ set learned attributes {learned}"
    with pytest.raises(NotFittedError):
        strategy.predict_proba(bars)


@pytest.mark.parametrize("name", STRATEGIES)
def test_probabilities_in_unit_interval_on_the_input_index(name: str, bars: pd.DataFrame) -> None:
    p = _p_up(_fitted(name, bars), bars)
    finite = p[~np.isnan(p)]
    assert finite.size > N_ALL // 2, f"{name}: predicts on too few bars"
    assert ((finite >= 0) & (finite <= 1)).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_save_load_gives_identical_predictions(
    name: str, bars: pd.DataFrame, tmp_path: Path
) -> None:
    strategy = _fitted(name, bars)
    strategy.save(tmp_path / name)
    loaded = registry.get(name).load(tmp_path / name)
    np.testing.assert_array_equal(_p_up(loaded, bars), _p_up(strategy, bars))


@pytest.mark.parametrize("name", STRATEGIES)
def test_same_seed_same_predictions(name: str, bars: pd.DataFrame) -> None:
    a = _p_up(_fitted(name, bars, seed=7), bars)
    b = _p_up(_fitted(name, bars, seed=7), bars)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", STRATEGIES)
def test_no_look_ahead_later_bars_do_not_change_earlier_predictions(
    name: str, bars: pd.DataFrame
) -> None:
    strategy = _fitted(name, bars)
    before = _p_up(strategy, bars)
    rng = np.random.default_rng(0)
    shock = np.r_[np.ones(CUT + 1), np.exp(np.cumsum(rng.normal(0.0, 0.01, N_ALL - CUT - 1)))]
    altered = bars.copy()
    for col in ("open", "high", "low", "close"):
        altered[col] = bars[col].to_numpy() * shock
    altered["volume"] = np.where(shock == 1.0, bars["volume"].to_numpy(), 1.0)
    after = _p_up(strategy, altered)
    np.testing.assert_array_equal(after[: CUT + 1], before[: CUT + 1])


@pytest.mark.parametrize("name", STRATEGIES)
def test_artefacts_hold_no_pickled_code(name: str, bars: pd.DataFrame, tmp_path: Path) -> None:
    import torch

    _fitted(name, bars).save(tmp_path / name)
    files = [f for f in (tmp_path / name).rglob("*") if f.is_file()]
    assert files, f"{name}: save wrote nothing"
    for file in files:
        assert file.suffix not in FORBIDDEN_SUFFIXES, f"{name}: pickle artefact {file.name}"
        if file.suffix in {".pt", ".pth"}:
            torch.load(file, weights_only=True)  # refuses anything but tensors and plain data
        elif file.suffix == ".json":
            json.loads(file.read_text())
