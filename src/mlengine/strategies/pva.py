"""PVA — Price Variation Attention: a transformer encoder over windows of return and
volatility features, with an XGBoost head on its embedding plus the decision bar's features.

The training, prediction, explanation and artefacts are those of every windowed neural
strategy (:mod:`mlengine.strategies._windowed`). PVA's own parts:

* features: :func:`mlengine.features.compute_features` of the groups ``params.features``;
  the raw ATR in price units is dropped, its close-relative form kept;
* labels: direction over ``horizon`` bars (:func:`mlengine.labels.direction`, dead zone in
  bps; with a dead zone the flat class is left out of training); target ``label > 0``;
* encoder: :class:`mlengine.nn.encoders.TransformerEncoder` with the price-focused
  attention bias fed by the one-bar log return column;
* outputs: ``p_up`` from the XGBoost head, ``encoder_p_up`` from the encoder's linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlengine import labels
from mlengine.features import compute_features
from mlengine.nn.encoders import TransformerConfig, TransformerEncoder
from mlengine.strategies._windowed import WindowedParams, WindowedStrategy, scale_free
from mlengine.strategies.base import StrategyError
from mlengine.strategies.registry import register

__all__ = ["PVA", "PVAParams"]


@dataclass(frozen=True)
class PVAParams(WindowedParams):
    """PVA hyper-parameters (small CPU-friendly defaults): the shared window and training
    settings of :class:`~mlengine.strategies._windowed.WindowedParams`, the label's dead
    zone (bps), the feature groups and the transformer's shape."""

    who: ClassVar[str] = "pva"

    dead_zone: float = 0.0  # bps
    features: tuple[str, ...] = ("returns", "volatility")
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        super().__post_init__()
        self.check_positive_ints("d_model", "n_heads", "n_layers", "d_ff")
        self.check_range("dead_zone", 0.0, np.inf)
        self.check_range("dropout", 0.0, 1.0)
        if self.d_model % self.n_heads:
            raise StrategyError(f"pva: d_model={self.d_model} not divisible by n_heads")
        if not self.features or not all(isinstance(f, str) for f in self.features):
            raise StrategyError(f"pva: features must be feature or group names: {self.features}")


@register
class PVA(WindowedStrategy):
    """Price Variation Attention (see the module docstring)."""

    name = "pva"
    params_class = PVAParams
    params: PVAParams

    @classmethod
    def contract_params(cls) -> dict[str, Any]:
        """Tiny settings for the contract suite (a fit in about a second)."""
        return {
            "window": 16,
            "d_model": 16,
            "n_heads": 2,
            "n_layers": 1,
            "d_ff": 32,
            "epochs": 2,
            "batch_size": 64,
            "n_estimators": 20,
            "early_stopping_rounds": 5,
        }

    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        frame = compute_features(bars, list(self.params.features))
        return scale_free(frame)

    def _labels(self, bars: pd.DataFrame) -> np.ndarray:
        p = self.params
        lab = labels.direction(bars, p.horizon, dead_zone=p.dead_zone).values.to_numpy()
        y = np.where(lab > 0, 1.0, 0.0)
        y[np.isnan(lab)] = np.nan
        if p.dead_zone > 0:
            y[lab == 0] = np.nan
        return y

    def _encoder(self, names: list[str]) -> TransformerEncoder:
        p = self.params
        ret = names.index("ret_log_1") if "ret_log_1" in names else None
        cfg = TransformerConfig(
            n_features=len(names),
            window=p.window,
            d_model=p.d_model,
            n_heads=p.n_heads,
            n_layers=p.n_layers,
            d_ff=p.d_ff,
            dropout=p.dropout,
            price_bias=ret is not None,
            return_feature=ret,
        )
        return TransformerEncoder(cfg, seed=p.seed)

    def _outputs(self, head: np.ndarray, encoder: np.ndarray) -> dict[str, np.ndarray]:
        return {"p_up": head, "encoder_p_up": encoder}
