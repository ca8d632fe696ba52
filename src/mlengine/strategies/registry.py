"""Strategies by name: the CLI, the runner and the contract test suite find them here.

A strategy class registers itself with :func:`register` where it is defined; the modules
that define strategies are listed in :data:`STRATEGY_MODULES` and imported on first use,
so asking for a name never depends on what happened to be imported before.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from mlengine.strategies.base import Strategy, StrategyError

__all__ = ["STRATEGY_MODULES", "create", "get", "names", "register"]

#: Modules whose import registers strategies.
STRATEGY_MODULES: tuple[str, ...] = (
    "mlengine.backtest.baselines",
    "mlengine.strategies.mrd",
    "mlengine.strategies.msa",
    "mlengine.strategies.mts",
    "mlengine.strategies.pva",
    "mlengine.strategies.vbp",
)

_REGISTRY: dict[str, type[Strategy]] = {}
_loaded = False

T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: register ``cls`` under its ``name``; a name is taken once."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise StrategyError(f"{cls.__name__}: a registered strategy needs a non-empty name")
    known = _REGISTRY.get(name)
    if known is not None and known is not cls:
        raise StrategyError(
            f"strategy name {name!r} is taken by {known.__module__}.{known.__qualname__}"
        )
    for method in ("fit", "predict_proba", "save", "load"):
        if not callable(getattr(cls, method, None)):
            raise StrategyError(f"{cls.__name__}: the Strategy contract needs {method}()")
    _REGISTRY[name] = cast("type[Strategy]", cls)
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in STRATEGY_MODULES:
            importlib.import_module(module)
        _loaded = True


def names() -> list[str]:
    """Registered strategy names, sorted."""
    _load()
    return sorted(_REGISTRY)


def get(name: str) -> type[Strategy]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StrategyError(f"unknown strategy {name!r}; known: {', '.join(names())}") from None


def create(name: str, *, seed: int | None = None, **params: Any) -> Strategy:
    """A new, unfitted strategy ``name`` with hyper-parameters ``params``.

    ``seed`` goes to strategies whose constructor takes one (learned models); rule-based
    strategies are deterministic and take none.
    """
    cls = get(name)
    factory = cast(Callable[..., Strategy], cls)
    if seed is not None and "seed" in inspect.signature(cls).parameters:
        params = {**params, "seed": seed}
    return factory(**params)
