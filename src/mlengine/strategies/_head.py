"""The XGBoost head every learned strategy ends in: the purged holdout it stops early on,
its training, and its artefacts — a JSON manifest beside the booster in XGBoost's binary
JSON (``head.ubj``); strategies with more (an encoder, a regime model) add their own
fields and files through ``extra`` and ``restore``. No pickles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import xgboost as xgb

from mlengine.strategies.base import StrategyError

__all__ = ["HEAD", "MANIFEST", "fit_head", "holdout", "load_model", "save_model"]

MANIFEST, HEAD = "manifest.json", "head.ubj"
_LOAD_ERRORS = (OSError, KeyError, TypeError, ValueError, RuntimeError, xgb.core.XGBoostError)

T = TypeVar("T")


def holdout(idx: np.ndarray, fraction: float, purge: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` of the sorted bar indices ``idx``: the last
    ``ceil(fraction * len(idx))`` validate; the training rows stop ``purge`` bars (the label
    horizon) before the first validation bar, so no training label sees it."""
    n_val = int(np.ceil(fraction * idx.size))
    val_idx = idx[idx.size - n_val :]
    train_idx = idx[: idx.size - n_val]
    if val_idx.size:
        train_idx = train_idx[train_idx < val_idx[0] - purge]
    return train_idx, val_idx


def fit_head(
    dtrain: xgb.DMatrix,
    dval: xgb.DMatrix,
    params: Any,
    *,
    learning_rate: float,
    n_classes: int = 2,
) -> tuple[xgb.Booster, int]:
    """XGBoost (``binary:logistic``, or ``multi:softprob`` over ``n_classes``) with the
    tree settings of ``params`` (``max_depth``, ``n_estimators``, ``early_stopping_rounds``,
    ``seed``, ``nthread``), early stopping on ``dval``: the booster trimmed to its best
    iteration, and that iteration."""
    config: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "max_depth": params.max_depth,
        "eta": learning_rate,
        "seed": params.seed,
        "nthread": params.nthread,
        "tree_method": "hist",
    }
    if n_classes > 2:
        config |= {"objective": "multi:softprob", "eval_metric": "mlogloss"}
        config["num_class"] = n_classes
    booster = xgb.train(
        config,
        dtrain,
        num_boost_round=params.n_estimators,
        evals=[(dval, "val")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    return booster[: best + 1], best


def save_model(
    model: Any, path: Path, *, versions: dict[str, str] | None = None, **extra: Any
) -> Path:
    """Write ``manifest.json`` (name, parameters, feature names, ``extra``, training range,
    fit information, versions) and ``head.ubj`` (``model.booster_``) under ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    manifest = {
        "strategy": model.name,
        "params": asdict(model.params),
        "feature_names": model.feature_names_,
        **extra,
        "train_start": model.train_start_.isoformat(),
        "train_end": model.train_end_.isoformat(),
        "fit_info": model.fit_info_,
        "versions": {**(versions or {}), "xgboost": xgb.__version__},
    }
    model.booster_.save_model(path / HEAD)
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def load_model(
    cls: type[T], path: Path, restore: Callable[[T, dict[str, Any], Path], None] | None = None
) -> T:
    """The fitted ``cls`` saved at ``path`` by :func:`save_model`; ``restore(model,
    manifest, path)`` reads what the strategy added. Any failure is a
    :class:`StrategyError` naming the path."""
    path = Path(path)
    file = path / MANIFEST
    name = getattr(cls, "name", cls.__name__)
    try:
        m = json.loads(file.read_text())
        if not isinstance(m, dict) or m.get("strategy") != name:
            raise StrategyError(f"{file}: not a manifest of strategy {name!r}")
        make: Any = cls  # a strategy class: ``params_class`` and ``__init__(params)``
        known = {f.name for f in fields(make.params_class)}
        out = make(make.params_class(**{k: v for k, v in m["params"].items() if k in known}))
        out.feature_names_ = [str(c) for c in m["feature_names"]]
        if restore is not None:
            restore(out, m, path)
        booster = xgb.Booster()
        booster.load_model(path / HEAD)
        out.booster_ = booster
        out.train_start_ = pd.Timestamp(m["train_start"])
        out.train_end_ = pd.Timestamp(m["train_end"])
        out.fit_info_ = dict(m.get("fit_info", {}))
    except _LOAD_ERRORS as err:
        if isinstance(err, StrategyError):
            raise
        raise StrategyError(f"{path}: cannot load the {name} artefacts: {err}") from None
    return cast(T, out)
