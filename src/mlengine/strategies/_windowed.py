"""The shared shape of the neural strategies: a window encoder over per-bar features,
trained with a linear head, then an XGBoost head on ``[embedding, decision bar's features]``.

A subclass names itself, its parameter class and its label classes, and supplies the
strategy-specific parts through hooks:

* ``_features(bars)`` — per-bar features, NaN in the warm-up (the truncation property);
* ``_labels(bars)`` — per bar the class id (``0 .. n_classes - 1``, or 0/1 when
  ``n_classes == 2``) or NaN where the label is unknown or the bar is left out of training;
* ``_encoder(names)`` — a fresh encoder for those feature columns, seeded with the
  parameters' seed;
* ``_outputs(head, encoder)`` — the prediction columns (``p_up`` first) from the class
  probabilities of the XGBoost head and of the encoder's own head;
* optional: ``_fit_state(bars, features, train_end)`` to learn extra state from the rows of
  the training slice (``<= train_end``) and ``_augment(bars, features)`` to add the columns
  that state gives (e.g. regime probabilities), ``_state()`` / ``_load_state(doc)`` to save
  that state as JSON, ``_oversample(idx, y)`` to repeat training rows (never validation or
  test rows); ``_decision_rows(bars, x)`` and ``_gather(bars, xs, mean, std)`` for encoder
  inputs other than the ``window`` rows of the feature matrix ending at the decision bar
  (e.g. windows of several timeframes; such a subclass also overrides ``explain``).

``fit(bars)``:

1. features and labels of the bars given; decision bars are those whose ``window`` bars of
   features are all finite and whose label is known. The last ``val_fraction`` of them is
   the validation slice; the ``horizon`` bars before it are purged, so no training label
   sees a validation bar;
2. extra state (``_fit_state``) and the scaler (per-feature mean and standard deviation)
   from the bars of the training slice only;
3. encoder + linear head trained with cross-entropy (binary: BCE on "up"), early stopping on
   the validation loss (torch, CPU, seeded; :mod:`mlengine.strategies._training`);
4. XGBoost on ``[embedding, decision bar's scaled features]``, trained on the training slice
   with early stopping on the validation slice; kept trimmed to its best iteration.

``predict_proba(bars)`` computes the features on all the bars given, then the windows: each
value uses its window's bars only; as with the features, give the full history, not a
slice with a different start. ``explain(bars)`` gives the last window's attention heatmap
(encoders with attention) and the feature importance of the encoder's head.

Artefacts (``save``): ``manifest.json`` (parameters, feature names, scaler, encoder config,
extra state, versions, training range), ``encoder.pt`` (``state_dict``, loads with
``weights_only=True``) and ``head.ubj`` (XGBoost's binary JSON).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch
import xgboost as xgb

from mlengine.data.loader import sliding_windows
from mlengine.features import check_bars
from mlengine.features.registry import checked_bars, column_index
from mlengine.features.registry import frame as column_frame
from mlengine.nn.encoders import WindowEncoder, build_encoder, seeded
from mlengine.nn.extraction import (
    ExtractionError,
    extract_attention,
    feature_importance,
    heatmap_frame,
)
from mlengine.strategies._head import fit_head, holdout, load_model, save_model
from mlengine.strategies._training import (
    EncoderNet,
    Gather,
    TrainConfig,
    deterministic,
    infer,
    train,
)
from mlengine.strategies.base import Context, NotFittedError, StrategyError, resolve_params

__all__ = ["WindowedParams", "WindowedStrategy", "scale_free", "take_columns"]

_WEIGHTS = "encoder.pt"
_RAW_ATR = re.compile(r"atr_\d+$")  # ATR in price units: not comparable across price levels
_MIN_ROWS = 20  # fewest decision bars for each of the training and validation slices


@dataclass(frozen=True)
class WindowedParams:
    """Window, label horizon and training settings shared by the neural strategies.

    Subclasses add their own fields (all with defaults) and checks, calling
    ``super().__post_init__()``; ``who`` names the strategy in error messages.
    """

    who: ClassVar[str] = "strategy"

    window: int = 32
    horizon: int = 1
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
        self.check_positive_ints(
            "window", "horizon", "epochs", "batch_size", "patience", "n_estimators",
            "max_depth", "nthread", "early_stopping_rounds",
        )  # fmt: skip
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise StrategyError(f"{self.who}: seed must be an integer, got {self.seed!r}")
        self.check_range("val_fraction", 0.0, 1.0, open_low=True)
        self.check_range("learning_rate", 0.0, np.inf, open_low=True)
        self.check_range("xgb_learning_rate", 0.0, np.inf)

    def check_positive_ints(self, *names: str) -> None:
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise StrategyError(f"{self.who}: {name} must be a positive integer, got {v!r}")

    def check_range(self, name: str, lo: float, hi: float, *, open_low: bool = False) -> None:
        """``lo <= value < hi`` (``lo < value`` when ``open_low``)."""
        v = getattr(self, name)
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if not ok or not lo <= v < hi or (open_low and v == lo):
            low = "(" if open_low else "["
            raise StrategyError(f"{self.who}: {name} must lie in {low}{lo}, {hi}), got {v!r}")


def scale_free(features: pd.DataFrame) -> pd.DataFrame:
    """``features`` without the ATR in price units (its close-relative form stays)."""
    names = features.columns.tolist()
    keep = [i for i, c in enumerate(names) if not _RAW_ATR.match(str(c))]
    plain = not features.attrs and features.flags.allows_duplicate_labels
    if not plain or len(set(names)) != len(names) or not _all_float64(features):
        return features[[names[i] for i in keep]]
    # float64 columns, unique labels, no metadata to carry (the features' frames): a
    # selection by position on the values, far cheaper than pandas' by label, same frame
    values = features.to_numpy(dtype=np.float64).T[keep].T
    columns = column_index([names[i] for i in keep])
    if columns.dtype != features.columns.dtype:  # labels that are not (all) text
        columns = features.columns.take(keep)
    return pd.DataFrame(values, index=features.index, columns=columns, copy=False)


def take_columns(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """``frame[names].to_numpy(dtype=np.float64)``: the same values (a fresh array, each
    column contiguous), the columns picked by position where the labels are unique,
    without building the selected frame."""
    labels = frame.columns.tolist()
    pos = {c: i for i, c in enumerate(labels)}
    rows = [pos.get(c, -1) for c in names]
    if len(pos) != len(labels) or -1 in rows:  # pandas' semantics, and its KeyError
        return frame[names].to_numpy(dtype=np.float64)
    return frame.to_numpy(dtype=np.float64).T[rows].T


def _all_float64(frame: pd.DataFrame) -> bool:
    return all(dtype == np.float64 for dtype in frame.dtypes.tolist())


@dataclass(frozen=True)
class _Scaler:
    mean: np.ndarray
    std: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


class WindowedStrategy(ABC):
    """Base of the encoder + XGBoost strategies (see the module docstring)."""

    name: str  # set by each subclass (a class attribute, as the contract's ``name``)
    params_class: ClassVar[type[WindowedParams]]
    #: label classes: 2 is binary ("up" = 1, one logit); more is a softmax over classes
    n_classes: ClassVar[int] = 2

    params: Any  # an instance of ``params_class``

    def __init__(self, params: Any = None, *, seed: int | None = None, **kwargs: Any):
        params = resolve_params(self.name, self.params_class, params, kwargs, seed)
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    # -- hooks ------------------------------------------------------------------------------

    @abstractmethod
    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Per-bar features of ``bars`` (NaN in the warm-up)."""

    @abstractmethod
    def _labels(self, bars: pd.DataFrame) -> np.ndarray:
        """Class id per bar, NaN where unknown or left out of training."""

    @abstractmethod
    def _encoder(self, names: list[str]) -> WindowEncoder:
        """A fresh encoder for the feature columns ``names`` (seeded)."""

    @abstractmethod
    def _outputs(self, head: np.ndarray, encoder: np.ndarray) -> dict[str, np.ndarray]:
        """Prediction columns, ``p_up`` first, from the heads' class probabilities (``(n,)``
        probabilities of class 1 when binary, else ``(n, n_classes)``)."""

    def _fit_state(self, bars: pd.DataFrame, features: pd.DataFrame, train_end: int) -> None:
        """Learn extra state from rows ``<= train_end`` (default: none)."""
        return None

    def _augment(self, bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        """Features plus the columns the extra state gives (default: unchanged)."""
        return features

    def _state(self) -> dict[str, Any]:
        """The extra state as JSON (default: none)."""
        return {}

    def _load_state(self, doc: dict[str, Any]) -> None:
        """Restore the extra state saved by :meth:`_state`."""
        return None

    def _oversample(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Training rows, some repeated (default: as they are)."""
        return idx

    def _decision_rows(self, bars: pd.DataFrame, x: np.ndarray) -> np.ndarray:
        """Bars whose encoder input is complete (default: :meth:`_decision_bars` of the
        feature matrix ``x``)."""
        return self._decision_bars(x)

    def _gather(
        self, bars: pd.DataFrame, xs: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> Gather | None:
        """The encoder inputs of the decision bars, given the scaled feature matrix ``xs``
        and the scaler's per-column ``mean`` and ``std`` (default: ``None``, the ``window``
        rows of ``xs`` ending at each decision bar)."""
        return None

    # -- internals --------------------------------------------------------------------------

    def _feature_frame(self, bars: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
        frame = self._augment(bars, self._features(bars))
        if names is None:
            return frame
        self._check_computed(frame, names)
        return frame[names]

    def _feature_matrix(
        self, bars: pd.DataFrame, names: list[str]
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """``_feature_frame(bars, names).to_numpy(dtype=np.float64)`` (the same array), and
        the whole feature frame it is taken from."""
        frame = self._augment(bars, self._features(bars))
        self._check_computed(frame, names)
        return take_columns(frame, names), frame

    def _check_computed(self, frame: pd.DataFrame, names: list[str]) -> None:
        have = set(frame.columns.tolist())
        missing = [c for c in names if c not in have]
        if missing:
            raise StrategyError(
                f"{self.name}: features {missing} of the fitted model are not computed"
            )

    def _decision_bars(self, x: np.ndarray) -> np.ndarray:
        """Bars ``i`` whose window ``i - L + 1 .. i`` holds finite features only."""
        L = self.params.window
        ok = np.isfinite(x).all(axis=1).astype(np.int64)
        if len(ok) < L:
            return np.empty(0, dtype=np.int64)
        full = np.convolve(ok, np.ones(L, dtype=np.int64), mode="valid") == L
        return np.flatnonzero(full) + (L - 1)

    def _split(
        self, bars: pd.DataFrame, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        n_bars = len(bars)
        idx = self._decision_rows(bars, x)
        idx = idx[np.isfinite(y[idx])]
        train_idx, val_idx = holdout(idx, p.val_fraction, p.horizon)
        if train_idx.size < _MIN_ROWS or val_idx.size < _MIN_ROWS:
            raise StrategyError(
                f"{self.name}: {n_bars} bars give {train_idx.size} training and "
                f"{val_idx.size} validation windows of {p.window} bars with a known "
                f"{p.horizon}-bar label; need at least {_MIN_ROWS} of each (feature warm-up "
                "included): give more bars"
            )
        return train_idx, val_idx

    def _head_inputs(self, emb: np.ndarray, xs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.hstack([emb, xs[idx]])

    @classmethod
    def _n_outputs(cls) -> int:
        return 1 if cls.n_classes == 2 else cls.n_classes

    def _new_net(self, names: list[str]) -> EncoderNet:
        with seeded(self.params.seed):  # the linear head's initialisation too
            return EncoderNet(self._encoder(names), self._n_outputs())

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError(f"{self.name}: call fit before predict_proba or save")

    # -- the contract -----------------------------------------------------------------------

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Self:
        """Learn state, scaler, encoder and XGBoost head from ``bars`` only (module docs)."""
        p = self.params
        check_bars(bars)
        base = self._features(bars)
        y = np.asarray(self._labels(bars), dtype=np.float64)
        train_idx, _ = self._split(bars, base.to_numpy(dtype=np.float64), y)
        self._fit_state(bars, base, int(train_idx[-1]))
        feats = self._augment(bars, base)
        x = feats.to_numpy(dtype=np.float64)
        train_idx, val_idx = self._split(bars, x, y)
        # scaler statistics from the bars of the training slice only
        rows = x[: int(train_idx[-1]) + 1]
        rows = rows[np.isfinite(rows).all(axis=1)]
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        scaler = _Scaler(mean, np.where(std > 0, std, 1.0))
        xs = scaler.transform(x)
        target = np.nan_to_num(y, nan=0.0)
        target = target.astype(np.float32) if self.n_classes == 2 else target.astype(np.int64)
        fit_idx = np.sort(self._oversample(train_idx, y))

        names = [str(c) for c in feats.columns]
        net = self._new_net(names)
        cfg = TrainConfig(p.epochs, p.batch_size, p.learning_rate, p.patience, p.seed)
        gather = self._gather(bars, xs, scaler.mean, scaler.std)
        best_epoch, best_loss = train(
            net, xs, target, p.window, fit_idx, val_idx, cfg, gather=gather
        )

        emb_tr, _ = infer(net, xs, p.window, fit_idx, gather=gather)
        emb_va, _ = infer(net, xs, p.window, val_idx, gather=gather)
        dtrain = xgb.DMatrix(self._head_inputs(emb_tr, xs, fit_idx), label=target[fit_idx])
        dval = xgb.DMatrix(self._head_inputs(emb_va, xs, val_idx), label=target[val_idx])
        booster, best_iteration = fit_head(
            dtrain, dval, p, learning_rate=p.xgb_learning_rate, n_classes=self.n_classes
        )
        self.feature_names_ = names
        self.scaler_ = scaler
        self.net_ = net
        self.booster_ = booster
        self.train_start_: pd.Timestamp = bars.index[0]
        self.train_end_: pd.Timestamp = bars.index[-1]
        self.fit_info_ = {
            "n_train": int(train_idx.size),
            "n_train_oversampled": int(fit_idx.size),
            "n_val": int(val_idx.size),
            "encoder_best_epoch": best_epoch,
            "encoder_val_loss": best_loss,
            "xgb_best_iteration": best_iteration,
        }
        return self

    def predict_proba(
        self, bars: pd.DataFrame, *, context: Context | None = None, last: int | None = None
    ) -> pd.DataFrame:
        """The :meth:`_outputs` columns per bar; NaN where the window of features is
        incomplete. ``last``: run the networks for the last ``last`` bars only (the rows
        before are NaN), as a live prediction of the newest bar needs; the features still
        read every bar given."""
        out, _ = self._predict(bars, last)
        return column_frame(bars, out)

    def _predict(
        self, bars: pd.DataFrame, last: int | None
    ) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
        """The :meth:`predict_proba` columns as arrays, and the feature frame they come
        from (with the :meth:`_augment` columns; ``None`` for no bars), for a subclass that
        adds columns from it."""
        self._check_fitted()
        with checked_bars(bars):  # the features need not check the bars again
            shape = (0,) if self.n_classes == 2 else (0, self.n_classes)
            empty = self._outputs(np.empty(shape), np.empty(shape))
            out = {k: np.full(len(bars), np.nan) for k in empty}
            if not len(bars):
                return out, None
            x, features = self._feature_matrix(bars, self.feature_names_)
        idx = self._decision_rows(bars, x)
        if last is not None:
            idx = idx[idx >= len(bars) - last]
        if idx.size:
            xs = self.scaler_.transform(x)
            gather = self._gather(bars, xs, self.scaler_.mean, self.scaler_.std)
            emb, enc = infer(self.net_, xs, self.params.window, idx, gather=gather)
            head = self.booster_.predict(xgb.DMatrix(self._head_inputs(emb, xs, idx)))
            for k, v in self._outputs(head, enc).items():
                out[k][idx] = v
        return out, features

    def explain(
        self, bars: pd.DataFrame, *, context: Context | None = None, n_windows: int = 256
    ) -> dict[str, pd.DataFrame]:
        """What the encoder looks at, from the last ``n_windows`` complete windows of ``bars``.

        ``attention`` (encoders with attention layers): the last window's attention of the
        decision bar to each bar, per layer and head, plus the rollout (columns: the
        window's bar times); ``feature_importance``: mean-ablation occlusion of each feature
        over the windows, scored on the encoder head's probabilities (the XGBoost head also
        reads the decision bar's features directly, which this does not measure).
        """
        self._check_fitted()
        check_bars(bars)
        if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
            raise StrategyError(
                f"{self.name}: n_windows must be a positive integer, got {n_windows!r}"
            )
        x, _ = self._feature_matrix(bars, self.feature_names_)
        idx = self._decision_bars(x)[-n_windows:]
        L = self.params.window
        if not idx.size:
            raise StrategyError(
                f"{self.name}: {len(bars)} bars hold no complete window of {L} bars to explain"
            )
        windows = sliding_windows(self.scaler_.transform(x).astype(np.float32), L)
        batch = torch.from_numpy(np.ascontiguousarray(windows[idx - (L - 1)]))
        net = self.net_
        out: dict[str, pd.DataFrame] = {}
        with deterministic():
            try:
                maps = extract_attention(net.encoder, batch)
            except ExtractionError:  # an encoder without attention layers
                maps = None

            def score(emb: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return net.probabilities(net.head(torch.from_numpy(emb.astype(np.float32))))

            out["feature_importance"] = feature_importance(
                net.encoder, batch, feature_names=self.feature_names_, score=score
            )
        if maps is not None:
            last = int(idx[-1])
            times = pd.DatetimeIndex(bars.index[last - L + 1 : last + 1]).strftime("%Y-%m-%d %H:%M")
            out = {"attention": heatmap_frame(maps, window=-1, bars=list(times)), **out}
        return out

    # -- artefacts --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``manifest.json``, ``encoder.pt`` and ``head.ubj`` under ``path``."""
        self._check_fitted()
        path = save_model(
            self,
            path,
            versions={"torch": torch.__version__},
            scaler={"mean": self.scaler_.mean.tolist(), "std": self.scaler_.std.tolist()},
            encoder=self.net_.encoder.manifest(),
            state=self._state(),
        )
        torch.save(self.net_.state_dict(), path / _WEIGHTS)

    @classmethod
    def load(cls, path: Path) -> Self:
        """The fitted strategy saved at ``path``."""
        return load_model(cls, path, cls._restore)

    @classmethod
    def _restore(cls, out: Self, m: dict[str, Any], path: Path) -> None:
        """Scaler, encoder weights and extra state from the manifest and ``encoder.pt``."""
        out.scaler_ = _Scaler(
            np.asarray(m["scaler"]["mean"], dtype=np.float64),
            np.asarray(m["scaler"]["std"], dtype=np.float64),
        )
        net = EncoderNet(build_encoder(**m["encoder"]), cls._n_outputs())
        net.load_state_dict(torch.load(path / _WEIGHTS, weights_only=True))
        net.eval()
        out.net_ = net
        out._load_state(dict(m.get("state", {})))
