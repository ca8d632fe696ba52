"""Artefacts of the XGBoost-headed strategies: a JSON manifest beside the head in
XGBoost's binary JSON (``head.ubj``); strategies with more (an encoder, a regime model)
add their own fields and files through ``extra`` and ``restore``. No pickles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar, cast

import pandas as pd
import xgboost as xgb

from mlengine.strategies.base import StrategyError

__all__ = ["HEAD", "MANIFEST", "load_model", "save_model"]

MANIFEST, HEAD = "manifest.json", "head.ubj"
_LOAD_ERRORS = (OSError, KeyError, TypeError, ValueError, RuntimeError, xgb.core.XGBoostError)

T = TypeVar("T")


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
