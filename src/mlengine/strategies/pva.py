"""PVA — Price Variation Attention: a transformer encoder over windows of return and
volatility features, with an XGBoost head on its embedding plus the decision bar's features.

``fit(bars)``:

1. features (:func:`mlengine.features.compute_features`, groups ``params.features``; the
   raw ATR in price units is dropped, its close-relative form kept) on the bars given;
2. direction labels over ``horizon`` bars (:func:`mlengine.labels.direction`, dead zone in
   bps; with a dead zone the flat class is left out of training); target ``label > 0``;
3. decision bars: those whose ``window`` bars of features are all finite and whose label is
   known. The last ``val_fraction`` of them is the validation slice; the ``horizon`` bars
   before it are purged, so no training label sees a validation bar;
4. the scaler (``scaler_``: per-feature mean and standard deviation) from the training
   slice's bars only;
5. encoder + linear head trained with BCE, early stopping on the validation loss (torch,
   CPU, seeded; :mod:`mlengine.strategies._training`);
6. XGBoost (``binary:logistic``) on ``[embedding, decision bar's scaled features]``, trained
   on the training slice with early stopping on the validation slice; kept trimmed to its
   best iteration.

``predict_proba(bars)`` computes the features on all the bars given and then takes the
windows: ``p_up`` from the XGBoost head, ``encoder_p_up`` from the linear head, NaN where the
window is not complete. Each value uses its window's bars only (truncation property); as
with the features, give the full history, not a slice with a different start.

``explain(bars)`` (:class:`mlengine.strategies.base.Explainable`): the attention heatmap
of the last window and the encoder's feature importance, for the report.

Artefacts (``save``): ``manifest.json`` (parameters, feature names, scaler, encoder config,
versions, training range), ``encoder.pt`` (``state_dict``, loads with ``weights_only=True``)
and ``head.ubj`` (XGBoost's binary JSON).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
import xgboost as xgb

from mlengine import labels
from mlengine.data.loader import sliding_windows
from mlengine.features import check_bars, compute_features
from mlengine.nn.encoders import TransformerConfig, TransformerEncoder, build_encoder
from mlengine.nn.extraction import extract_attention, feature_importance, heatmap_frame
from mlengine.strategies._training import EncoderNet, TrainConfig, deterministic, infer, train
from mlengine.strategies.base import Context, NotFittedError, StrategyError
from mlengine.strategies.registry import register

__all__ = ["PVA", "PVAParams"]

_MANIFEST, _WEIGHTS, _HEAD = "manifest.json", "encoder.pt", "head.ubj"
_RAW_ATR = re.compile(r"atr_\d+$")  # ATR in price units: not comparable across price levels
_MIN_ROWS = 20  # fewest decision bars for each of the training and validation slices


@dataclass(frozen=True)
class PVAParams:
    """PVA hyper-parameters (small CPU-friendly defaults)."""

    window: int = 32
    horizon: int = 1
    dead_zone: float = 0.0  # bps
    features: tuple[str, ...] = ("returns", "volatility")
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    patience: int = 3
    val_fraction: float = 0.2
    n_estimators: int = 200
    max_depth: int = 3
    xgb_learning_rate: float = 0.05
    early_stopping_rounds: int = 20
    nthread: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        ints = (
            *("window", "horizon", "d_model", "n_heads", "n_layers", "d_ff", "epochs"),
            *("batch_size", "patience", "n_estimators", "max_depth", "nthread"),
            "early_stopping_rounds",
        )
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise StrategyError(f"pva: {name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise StrategyError(f"pva: seed must be an integer, got {self.seed!r}")
        for name, lo, hi in (
            ("dead_zone", 0.0, np.inf),
            ("dropout", 0.0, 1.0),
            ("val_fraction", 0.0, 1.0),
            ("learning_rate", 0.0, np.inf),
            ("xgb_learning_rate", 0.0, np.inf),
        ):
            v = getattr(self, name)
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if not ok or not lo <= v < hi or (name in {"val_fraction", "learning_rate"} and v == 0):
                raise StrategyError(f"pva: {name} must lie in [{lo}, {hi}), got {v!r}")
        if self.d_model % self.n_heads:
            raise StrategyError(f"pva: d_model={self.d_model} not divisible by n_heads")
        if not self.features or not all(isinstance(f, str) for f in self.features):
            raise StrategyError(f"pva: features must be feature or group names: {self.features}")


@dataclass(frozen=True)
class _Scaler:
    mean: np.ndarray
    std: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


@register
class PVA:
    """Price Variation Attention (see the module docstring)."""

    name = "pva"

    def __init__(self, params: PVAParams | None = None, *, seed: int | None = None, **kwargs: Any):
        if params is not None and kwargs:
            raise StrategyError("pva: give params or keyword arguments, not both")
        if params is None:
            params = PVAParams(**kwargs) if seed is None else PVAParams(seed=seed, **kwargs)
        elif not isinstance(params, PVAParams):
            raise StrategyError(f"pva: params must be PVAParams, got {type(params).__name__}")
        elif seed is not None:
            params = replace(params, seed=seed)
        self.params = params

    def __repr__(self) -> str:
        return f"PVA({self.params!r})"

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

    # -- features ---------------------------------------------------------------------------

    def _features(self, bars: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
        frame = compute_features(bars, list(self.params.features))
        if names is None:
            return frame[[c for c in frame.columns if not _RAW_ATR.match(str(c))]]
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise StrategyError(f"pva: features {missing} of the fitted model are not computed")
        return frame[names]

    def _decision_bars(self, x: np.ndarray) -> np.ndarray:
        """Bars ``i`` whose window ``i - L + 1 .. i`` holds finite features only."""
        L = self.params.window
        ok = np.isfinite(x).all(axis=1).astype(np.int64)
        if len(ok) < L:
            return np.empty(0, dtype=np.int64)
        full = np.convolve(ok, np.ones(L, dtype=np.int64), mode="valid") == L
        return np.flatnonzero(full) + (L - 1)

    def _inputs(self, emb: np.ndarray, xs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.hstack([emb, xs[idx]])

    # -- the contract -----------------------------------------------------------------------

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Self:
        """Learn scaler, encoder and XGBoost head from ``bars`` only (module docstring)."""
        p = self.params
        check_bars(bars)
        feats = self._features(bars)
        x = feats.to_numpy(dtype=np.float64)
        lab = labels.direction(bars, p.horizon, dead_zone=p.dead_zone).values.to_numpy()
        idx = self._decision_bars(x)
        idx = idx[np.isfinite(lab[idx])]
        if p.dead_zone > 0:
            idx = idx[lab[idx] != 0]
        n_val = int(np.ceil(p.val_fraction * idx.size))
        val_idx = idx[idx.size - n_val :]
        train_idx = idx[: idx.size - n_val]
        if val_idx.size:
            train_idx = train_idx[train_idx < val_idx[0] - p.horizon]
        if train_idx.size < _MIN_ROWS or val_idx.size < _MIN_ROWS:
            raise StrategyError(
                f"pva: {len(bars)} bars give {train_idx.size} training and {val_idx.size} "
                f"validation windows of {p.window} bars with a known {p.horizon}-bar label; "
                f"need at least {_MIN_ROWS} of each (feature warm-up included): give more bars"
            )
        # scaler statistics from the bars of the training slice only
        rows = x[: int(train_idx[-1]) + 1]
        rows = rows[np.isfinite(rows).all(axis=1)]
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        scaler = _Scaler(mean, np.where(std > 0, std, 1.0))
        xs = scaler.transform(x)
        target = (lab > 0).astype(np.float32)

        names = [str(c) for c in feats.columns]
        net = self._new_net(names)
        cfg = TrainConfig(p.epochs, p.batch_size, p.learning_rate, p.patience, p.seed)
        best_epoch, best_loss = train(net, xs, target, p.window, train_idx, val_idx, cfg)

        emb_tr, _ = infer(net, xs, p.window, train_idx)
        emb_va, _ = infer(net, xs, p.window, val_idx)
        dtrain = xgb.DMatrix(self._inputs(emb_tr, xs, train_idx), label=target[train_idx])
        dval = xgb.DMatrix(self._inputs(emb_va, xs, val_idx), label=target[val_idx])
        booster = xgb.train(
            {
                "objective": "binary:logistic",
                "eval_metric": "logloss",
                "max_depth": p.max_depth,
                "eta": p.xgb_learning_rate,
                "seed": p.seed,
                "nthread": p.nthread,
                "tree_method": "hist",
            },
            dtrain,
            num_boost_round=p.n_estimators,
            evals=[(dval, "val")],
            early_stopping_rounds=p.early_stopping_rounds,
            verbose_eval=False,
        )
        self.feature_names_ = names
        self.scaler_ = scaler
        self.net_ = net
        self.booster_ = booster[: booster.best_iteration + 1]
        self.train_start_: pd.Timestamp = bars.index[0]
        self.train_end_: pd.Timestamp = bars.index[-1]
        self.fit_info_ = {
            "n_train": int(train_idx.size),
            "n_val": int(val_idx.size),
            "encoder_best_epoch": best_epoch,
            "encoder_val_loss": best_loss,
            "xgb_best_iteration": int(booster.best_iteration),
        }
        return self

    def _new_net(self, names: list[str]) -> EncoderNet:
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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            return EncoderNet(TransformerEncoder(cfg, seed=p.seed))

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("pva: call fit before predict_proba or save")

    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        """``p_up`` (XGBoost head) and ``encoder_p_up`` (linear head) per bar; NaN where the
        window of features is incomplete."""
        self._check_fitted()
        check_bars(bars)
        p_up = np.full(len(bars), np.nan)
        enc = np.full(len(bars), np.nan)
        if len(bars):
            x = self._features(bars, self.feature_names_).to_numpy(dtype=np.float64)
            idx = self._decision_bars(x)
            if idx.size:
                xs = self.scaler_.transform(x)
                emb, enc_p = infer(self.net_, xs, self.params.window, idx)
                p_up[idx] = self.booster_.predict(xgb.DMatrix(self._inputs(emb, xs, idx)))
                enc[idx] = enc_p
        return pd.DataFrame({"p_up": p_up, "encoder_p_up": enc}, index=bars.index)

    def explain(
        self, bars: pd.DataFrame, *, context: Context | None = None, n_windows: int = 256
    ) -> dict[str, pd.DataFrame]:
        """What the encoder looks at, from the last ``n_windows`` complete windows of ``bars``.

        ``attention``: the last window's attention of the decision bar to each bar, per
        layer and head, plus the rollout (columns: the window's bar times);
        ``feature_importance``: mean-ablation occlusion of each feature over the windows,
        scored on the encoder head's probability (the XGBoost head also reads the decision
        bar's features directly, which this does not measure).
        """
        self._check_fitted()
        check_bars(bars)
        if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
            raise StrategyError(f"pva: n_windows must be a positive integer, got {n_windows!r}")
        x = self._features(bars, self.feature_names_).to_numpy(dtype=np.float64)
        idx = self._decision_bars(x)[-n_windows:]
        if not idx.size:
            raise StrategyError(
                f"pva: {len(bars)} bars hold no complete window of {self.params.window} bars "
                "to explain"
            )
        L = self.params.window
        windows = sliding_windows(self.scaler_.transform(x).astype(np.float32), L)
        batch = torch.from_numpy(np.ascontiguousarray(windows[idx - (L - 1)]))
        encoder = self.net_.encoder
        with deterministic():
            maps = extract_attention(encoder, batch)
            head = self.net_.head

            def p_up(emb: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    logit = head(torch.from_numpy(emb.astype(np.float32))).squeeze(-1)
                return torch.sigmoid(logit).numpy()

            importance = feature_importance(
                encoder, batch, feature_names=self.feature_names_, score=p_up
            )
        last = int(idx[-1])
        times = pd.DatetimeIndex(bars.index[last - L + 1 : last + 1]).strftime("%Y-%m-%d %H:%M")
        attention = heatmap_frame(maps, window=-1, bars=list(times))
        return {"attention": attention, "feature_importance": importance}

    # -- artefacts --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``manifest.json``, ``encoder.pt`` and ``head.ubj`` under ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "strategy": self.name,
            "params": asdict(self.params),
            "feature_names": self.feature_names_,
            "scaler": {"mean": self.scaler_.mean.tolist(), "std": self.scaler_.std.tolist()},
            "encoder": self.net_.encoder.manifest(),
            "train_start": self.train_start_.isoformat(),
            "train_end": self.train_end_.isoformat(),
            "fit_info": self.fit_info_,
            "versions": {"torch": torch.__version__, "xgboost": xgb.__version__},
        }
        torch.save(self.net_.state_dict(), path / _WEIGHTS)
        self.booster_.save_model(path / _HEAD)
        (path / _MANIFEST).write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        """The fitted PVA saved at ``path``."""
        path = Path(path)
        file = path / _MANIFEST
        try:
            m = json.loads(file.read_text())
            if not isinstance(m, dict) or m.get("strategy") != cls.name:
                raise StrategyError(f"{file}: not a {cls.name!r} manifest")
            known = {f.name for f in fields(PVAParams)}
            out = cls(PVAParams(**{k: v for k, v in m["params"].items() if k in known}))
            out.feature_names_ = [str(c) for c in m["feature_names"]]
            out.scaler_ = _Scaler(
                np.asarray(m["scaler"]["mean"], dtype=np.float64),
                np.asarray(m["scaler"]["std"], dtype=np.float64),
            )
            net = EncoderNet(build_encoder(**m["encoder"]))
            net.load_state_dict(torch.load(path / _WEIGHTS, weights_only=True))
            net.eval()
            out.net_ = net
            booster = xgb.Booster()
            booster.load_model(path / _HEAD)
            out.booster_ = booster
            out.train_start_ = pd.Timestamp(m["train_start"])
            out.train_end_ = pd.Timestamp(m["train_end"])
            out.fit_info_ = dict(m.get("fit_info", {}))
        except (
            OSError,
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
            xgb.core.XGBoostError,
        ) as err:
            if isinstance(err, StrategyError):
                raise
            raise StrategyError(f"{path}: cannot load the pva artefacts: {err}") from None
        return out
