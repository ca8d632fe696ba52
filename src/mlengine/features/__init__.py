"""Features: pure, vectorised functions of a bar frame, registered by name.

>>> from mlengine.features import compute_features, list_features
>>> list_features()
['log_returns', 'return_zscore', 'candle', 'atr', 'realised_vol', 'parkinson', ...]
>>> frame = compute_features(bars, ["returns", "volatility"])

See :mod:`mlengine.features.registry` for the contract every feature keeps.
"""

from __future__ import annotations

from mlengine.features import breakout, momentum, returns, structure, trend, volatility
from mlengine.features.registry import (
    FeatureError,
    FeatureSpec,
    UnknownFeatureError,
    check_bars,
    compute_features,
    feature,
    feature_spec,
    list_features,
    list_groups,
)

__all__ = [
    "FeatureError",
    "FeatureSpec",
    "UnknownFeatureError",
    "breakout",
    "check_bars",
    "compute_features",
    "feature",
    "feature_spec",
    "list_features",
    "list_groups",
    "momentum",
    "returns",
    "structure",
    "trend",
    "volatility",
]
