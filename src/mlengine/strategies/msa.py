"""MSA — Market Structure Analyst: XGBoost on market-structure, return and volatility
features, predicting the direction of the close over ``horizon`` bars.

* features: :func:`mlengine.features.compute_features` of the groups ``structure``
  (trend state, bars since BOS / CHoCH, net event counts, distances to the nearest open
  FVG and unmitigated order block in ATRs: :mod:`mlengine.features.structure`),
  ``returns`` and ``volatility`` (the raw ATR in price units dropped); every one causal;
* labels: :func:`mlengine.labels.direction` over ``horizon`` bars, up (1) or down (0);
  flat and unknown labels are left out of training;
* training: the bars whose features are all finite and whose label is known, the last
  ``val_fraction`` of them the validation slice for early stopping, the ``horizon`` bars
  before it purged (no training label sees a validation bar); seeded, ``nthread``
  threads;
* outputs: ``p_up`` and the diagnostics ``trend_state`` (+1 / -1 / 0), ``after_bos``,
  ``after_choch`` (1 within ``recent`` bars of one), ``near_fvg``, ``near_ob`` (1 within
  ``near_atr`` ATRs of an open gap / unmitigated block), and the nearest levels: the
  distance in ATRs from the close down to the nearest open bullish gap (``fvg_below_atr``)
  or unmitigated bullish block (``ob_below_atr``) and up to the nearest bearish one
  (``fvg_above_atr``, ``ob_above_atr``), 0 inside one, capped at 10; NaN in the warm-up;
* summary (:meth:`MSA.summarize`): ``structure_metrics``, the accuracy of the sign of
  ``p_up - 0.5`` by prediction type; ``structure_events`` and ``swings``, the last
  :data:`MAX_EVENTS` events and :data:`MAX_SWINGS` swings detected on the out-of-sample
  bars, as text for the report's price overlay.

Artefacts: ``manifest.json`` (parameters, feature names, training range, versions) and
``head.ubj`` (XGBoost's binary JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import xgboost as xgb

from mlengine import labels
from mlengine.features import check_bars, compute_features
from mlengine.features.registry import checked_bars
from mlengine.features.registry import frame as column_frame
from mlengine.features.structure import structure_events, swings
from mlengine.strategies._head import fit_head, holdout, load_model, save_model
from mlengine.strategies._windowed import scale_free, take_columns
from mlengine.strategies.base import Context, NotFittedError, StrategyError, resolve_params
from mlengine.strategies.registry import register

__all__ = ["MAX_EVENTS", "MAX_SWINGS", "MSA", "PREDICTION_TYPES", "MSAParams"]

_MIN_ROWS = 20
PREDICTION_TYPES = ("all", "after_bos", "after_choch", "near_fvg", "near_ob")
#: The summary keeps the last this many structure events and swings (the report's overlay
#: stays a few hundred marks and zones however long the out-of-sample span).
MAX_EVENTS = 300
MAX_SWINGS = 200


@dataclass(frozen=True)
class MSAParams:
    horizon: int = 12
    n: int = 3  # fractal swings: bars on each side
    atr_window: int = 14
    window: int = 50  # bars of the structure features' event counts
    recent: int = 5  # "after BOS / CHoCH": within this many bars
    near_atr: float = 1.0  # "near an FVG / OB": within this many ATRs
    val_fraction: float = 0.2
    n_estimators: int = 300
    max_depth: int = 3
    learning_rate: float = 0.05
    early_stopping_rounds: int = 30
    nthread: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("horizon", "n", "atr_window", "window", "recent", "n_estimators"):
            _positive_int(name, getattr(self, name))
        for name in ("max_depth", "early_stopping_rounds", "nthread"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise StrategyError(f"msa: seed must be an integer, got {self.seed!r}")
        for name, hi in (("near_atr", np.inf), ("val_fraction", 1.0), ("learning_rate", 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v < hi:
                raise StrategyError(f"msa: {name} must lie in (0, {hi}), got {v!r}")


def _iso(stamps: pd.Series) -> list[str]:
    """ISO 8601 texts of ``stamps``, empty for NaT."""
    return [t.isoformat() if not pd.isna(t) else "" for t in stamps]


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StrategyError(f"msa: {name} must be a positive integer, got {value!r}")


@register
class MSA:
    """Market Structure Analyst (see the module docstring)."""

    name = "msa"
    params_class = MSAParams

    def __init__(self, params: MSAParams | None = None, *, seed: int | None = None, **kwargs: Any):
        params = resolve_params(self.name, MSAParams, params, kwargs, seed)
        self.params = params

    def __repr__(self) -> str:
        return f"MSA({self.params!r})"

    @classmethod
    def contract_params(cls) -> dict[str, Any]:
        """Small settings for the contract suite (a fit well under a second)."""
        return {"horizon": 4, "n_estimators": 20, "early_stopping_rounds": 5, "nthread": 1}

    # -- features and labels ----------------------------------------------------------------

    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        p = self.params
        ms = {"n": p.n, "atr_window": p.atr_window, "window": p.window}
        params = {
            "market_structure": ms,
            "fvg": {"atr_window": p.atr_window, "window": p.window},
            "order_block": {"n": p.n, "atr_window": p.atr_window},
        }
        return scale_free(compute_features(bars, ["structure", "returns", "volatility"], params))

    def _diagnostics(self, feats: pd.DataFrame) -> dict[str, np.ndarray]:
        p = self.params
        names = {k: f"{k}_{s}" for k, s in self._structure_columns().items()}
        values = take_columns(feats, list(names.values()))  # no Series per column
        col = {k: values[:, i] for i, k in enumerate(names)}
        near_fvg = np.fmin(col["fvg_bull_dist"], col["fvg_bear_dist"]) <= p.near_atr
        near_ob = np.fmin(col["ob_bull_dist"], col["ob_bear_dist"]) <= p.near_atr
        out = {
            "trend_state": col["ms_trend"].copy(),
            "after_bos": (col["ms_since_bos"] < p.recent).astype(np.float64),
            "after_choch": (col["ms_since_choch"] < p.recent).astype(np.float64),
            "near_fvg": near_fvg.astype(np.float64),
            "near_ob": near_ob.astype(np.float64),
            "fvg_below_atr": col["fvg_bull_dist"].copy(),
            "fvg_above_atr": col["fvg_bear_dist"].copy(),
            "ob_below_atr": col["ob_bull_dist"].copy(),
            "ob_above_atr": col["ob_bear_dist"].copy(),
        }
        warm = np.isnan(col["ms_trend"])
        for v in out.values():
            v[warm] = np.nan
        return out

    def _structure_columns(self) -> dict[str, str]:
        p = self.params
        nw, na = f"{p.n}_{p.window}", f"{p.n}_{p.atr_window}"
        return {
            "ms_trend": str(p.n),
            "ms_since_bos": nw,
            "ms_since_choch": nw,
            "fvg_bull_dist": str(p.atr_window),
            "fvg_bear_dist": str(p.atr_window),
            "ob_bull_dist": na,
            "ob_bear_dist": na,
        }

    def _labels(self, bars: pd.DataFrame) -> np.ndarray:
        """1 up, 0 down, NaN flat or unknown."""
        v = labels.direction(bars, self.params.horizon).values.to_numpy()
        return np.where(v > 0, 1.0, np.where(v < 0, 0.0, np.nan))

    # -- the contract -----------------------------------------------------------------------

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Self:
        """Learn the XGBoost model from ``bars`` only (module docstring)."""
        p = self.params
        check_bars(bars)
        feats = self._features(bars)
        x = feats.to_numpy(dtype=np.float64)
        y = self._labels(bars)
        idx = np.flatnonzero(np.isfinite(x).all(axis=1) & np.isfinite(y))
        train_idx, val_idx = holdout(idx, p.val_fraction, p.horizon)
        if train_idx.size < _MIN_ROWS or val_idx.size < _MIN_ROWS:
            raise StrategyError(
                f"msa: {len(bars)} bars give {train_idx.size} training and {val_idx.size} "
                f"validation rows with finite features and a known {p.horizon}-bar label; "
                f"need at least {_MIN_ROWS} of each: give more bars"
            )
        names = [str(c) for c in feats.columns]
        dtrain = xgb.DMatrix(x[train_idx], label=y[train_idx], feature_names=names)
        dval = xgb.DMatrix(x[val_idx], label=y[val_idx], feature_names=names)
        booster, best_iteration = fit_head(dtrain, dval, p, learning_rate=p.learning_rate)
        self.feature_names_ = names
        self.booster_ = booster
        self.train_start_: pd.Timestamp = bars.index[0]
        self.train_end_: pd.Timestamp = bars.index[-1]
        self.fit_info_ = {
            "n_train": int(train_idx.size),
            "n_val": int(val_idx.size),
            "xgb_best_iteration": best_iteration,
        }
        return self

    def predict_proba(
        self, bars: pd.DataFrame, *, context: Context | None = None, last: int | None = None
    ) -> pd.DataFrame:
        """``p_up`` and the diagnostics per bar (NaN where a feature is). ``last``: score the
        last ``last`` bars only (``p_up`` NaN before them); the features still read every
        bar given."""
        self._check_fitted()
        with checked_bars(bars):  # the features need not check the bars again
            feats = self._features(bars)
        x = take_columns(feats, self.feature_names_)
        ok = np.flatnonzero(np.isfinite(x).all(axis=1))
        if last is not None:
            ok = ok[ok >= len(bars) - last]
        p_up = np.full(len(bars), np.nan)
        if ok.size:
            dm = xgb.DMatrix(x[ok], feature_names=self.feature_names_)
            p_up[ok] = self.booster_.predict(dm).astype(np.float64)
        return column_frame(bars, {"p_up": p_up, **self._diagnostics(feats)})

    def summarize(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``structure_metrics``: per prediction type (index ``type``: all bars, within
        ``recent`` bars after a BOS / CHoCH, near an FVG / OB) the bars with a directional
        prediction (``p_up != 0.5``) and a known label, and the accuracy of their sign.

        ``structure_events``: the last :data:`MAX_EVENTS` events detected on ``bars`` alone
        (:func:`~mlengine.features.structure.structure_events` with ``n`` and
        ``atr_window``, in order of confirmation), columns ``kind``, ``direction``,
        ``level``, ``top``, ``bottom`` and the ISO 8601 texts ``formed``, ``confirmed``,
        ``mitigated`` (empty while open); ``swings``: the last :data:`MAX_SWINGS` fractal
        swings, columns ``ts`` (the swing's bar), ``kind`` (``high`` / ``low``), ``price``
        and ``confirmed``."""
        y = self._labels(bars)
        p = predictions["p_up"].to_numpy(dtype=np.float64)
        scored = np.isfinite(p) & (p != 0.5) & np.isfinite(y)
        hit = (p > 0.5) == (y == 1.0)
        rows = []
        for kind in PREDICTION_TYPES:
            mask = scored.copy()
            if kind != "all":
                mask &= predictions[kind].to_numpy(dtype=np.float64) == 1.0
            n = int(mask.sum())
            rows.append({"n": n, "accuracy": float(hit[mask].mean()) if n else np.nan})
        frame = pd.DataFrame(rows, index=pd.Index(PREDICTION_TYPES, name="type"))
        return {"structure_metrics": frame, **self._structure_tables(bars)}

    def _structure_tables(self, bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``structure_events`` and ``swings`` of :meth:`summarize`."""
        p = self.params
        events = structure_events(bars, n=p.n, atr_window=p.atr_window).iloc[-MAX_EVENTS:]
        found = swings(bars, n=p.n, atr_window=p.atr_window).iloc[-MAX_SWINGS:]
        events_out = pd.DataFrame(
            {
                "kind": events["kind"].astype(str).to_numpy(),
                "direction": events["direction"].to_numpy(dtype=np.int64),
                **{c: events[c].to_numpy(dtype=np.float64) for c in ("level", "top", "bottom")},
                **{c: _iso(events[c]) for c in ("formed", "confirmed", "mitigated")},
            }
        )
        swings_out = pd.DataFrame(
            {
                "ts": _iso(found["formed"]),
                "kind": np.where(found["direction"].to_numpy() > 0, "high", "low"),
                "price": found["level"].to_numpy(dtype=np.float64),
                "confirmed": _iso(found["confirmed"]),
            }
        )
        return {"structure_events": events_out, "swings": swings_out}

    # -- artefacts --------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("msa: call fit before predict_proba or save")

    def save(self, path: Path) -> None:
        """Write ``manifest.json`` and ``head.ubj`` under ``path``."""
        self._check_fitted()
        save_model(self, path)

    @classmethod
    def load(cls, path: Path) -> Self:
        """The fitted strategy saved at ``path``."""
        return load_model(cls, path)
