"""MTS — Multi-Timeframe Synthesis: a hierarchical encoder over causal windows of the base
timeframe and of higher timeframes aggregated from it, with an XGBoost head on its
embedding plus every timeframe's latest features (trend included).

The training, prediction and artefacts are those of every windowed neural strategy
(:mod:`mlengine.strategies._windowed`), with the encoder inputs supplied through its
``_decision_rows`` / ``_gather`` hooks. MTS's own parts:

* timeframes: the base (``attrs["timeframe"]``) and ``params.timeframes``, resampled from
  the base bars (:func:`~mlengine.data.resample.resample`); default ``("4h", "1d")`` above
  a 1h base and ``("1h", "4h")`` above a 15m base;
* features: per timeframe, on its own bars, :func:`mlengine.features.compute_features` of
  ``params.features`` plus ``trend_strength`` (raw ATR dropped);
* encoder input at base bar ``t``: per timeframe the ``window`` feature rows of its last
  bars closed by ``t``'s close (:class:`~mlengine.data.multiframe.TimeframeStack`), packed
  ``(K, window, F)`` for :class:`~mlengine.nn.hierarchical.HierarchicalEncoder`;
* head inputs and the feature matrix: each timeframe's latest closed features aligned to
  the base bars, columns ``{prefix}_{feature}`` (``h1_``, ``h4_``, ``d1_``);
* labels: direction over ``horizon`` bars (dead zone in bps, flat class left out);
* outputs: ``p_up`` (XGBoost), ``encoder_p_up``, per timeframe ``trend_{prefix}`` (sign of
  its efficiency ratio ``er_20``) and ``tf_alignment`` (share of the timeframes on the
  majority's side, 1 when all agree);
* ``explain``: ``timeframe_attention``, the cross-timeframe weights (mean and last
  window); ``summarize``: ``alignment_metrics``, how often the timeframes agree and the
  accuracy of ``p_up`` when they agree vs disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlengine import labels
from mlengine.data.multiframe import TimeframeStack, build_stack
from mlengine.data.resample import default_prefix
from mlengine.data.schema import Timeframe, TimeframeError
from mlengine.features import check_bars, compute_features
from mlengine.features.registry import checked_bars
from mlengine.nn.hierarchical import HierarchicalConfig, HierarchicalEncoder, timeframe_weights
from mlengine.strategies._training import Gather
from mlengine.strategies._windowed import WindowedParams, WindowedStrategy, scale_free
from mlengine.strategies.base import Context, StrategyError
from mlengine.strategies.registry import register

__all__ = ["MTS", "MTSParams"]

#: higher timeframes used when ``params.timeframes`` is not given, by base timeframe
DEFAULT_TIMEFRAMES = {"15m": ("1h", "4h"), "1h": ("4h", "1d")}
TREND = "er_20"  # the efficiency ratio of trend_strength: its sign is a timeframe's trend


@dataclass(frozen=True)
class MTSParams(WindowedParams):
    """MTS hyper-parameters (small CPU-friendly defaults): the shared window and training
    settings (``window`` counts bars of each timeframe), the higher timeframes (``None``:
    by the base timeframe, see :data:`DEFAULT_TIMEFRAMES`), the label's dead zone (bps),
    the feature groups per timeframe and the shape of each timeframe's transformer."""

    who: ClassVar[str] = "mts"

    window: int = 16
    epochs: int = 8
    timeframes: tuple[str, ...] | None = None
    dead_zone: float = 0.0  # bps
    features: tuple[str, ...] = ("log_returns", "realised_vol")
    d_model: int = 16  # per timeframe branch and for the synthesis: K branches run per window
    n_heads: int = 2
    n_layers: int = 1
    d_ff: int = 32
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if self.timeframes is not None:
            object.__setattr__(self, "timeframes", tuple(self.timeframes))
        super().__post_init__()
        self.check_positive_ints("d_model", "n_heads", "n_layers", "d_ff")
        self.check_range("dead_zone", 0.0, np.inf)
        self.check_range("dropout", 0.0, 1.0)
        if self.d_model % self.n_heads:
            raise StrategyError(f"mts: d_model={self.d_model} not divisible by n_heads")
        if not self.features or not all(isinstance(f, str) for f in self.features):
            raise StrategyError(f"mts: features must be feature or group names: {self.features}")
        if self.timeframes is not None:
            if not self.timeframes:
                raise StrategyError("mts: timeframes must name at least one higher timeframe")
            try:
                for tf in self.timeframes:
                    Timeframe.parse(tf)
            except TimeframeError as err:
                raise StrategyError(f"mts: timeframes: {err}") from None


@register
class MTS(WindowedStrategy):
    """Multi-Timeframe Synthesis (see the module docstring)."""

    name = "mts"
    params_class = MTSParams
    params: MTSParams

    @classmethod
    def contract_params(cls) -> dict[str, Any]:
        """Tiny settings for the contract suite (a fit in about a second)."""
        return {
            "window": 4,
            "timeframes": ("4h",),
            "features": ("log_returns",),
            "d_model": 8,
            "n_heads": 2,
            "d_ff": 16,
            "epochs": 2,
            "batch_size": 64,
            "n_estimators": 20,
            "early_stopping_rounds": 5,
        }

    # -- timeframes -------------------------------------------------------------------------

    def _timeframes(self, bars: pd.DataFrame) -> tuple[str, ...]:
        """Base timeframe, then the higher ones."""
        if "timeframe" not in bars.attrs:
            raise StrategyError("mts: the bars need attrs['timeframe'] (the base timeframe)")
        base = Timeframe.parse(bars.attrs["timeframe"]).name
        higher = self.params.timeframes
        if higher is None:
            if base not in DEFAULT_TIMEFRAMES:
                raise StrategyError(
                    f"mts: no default higher timeframes above {base} bars; set timeframes "
                    f"(defaults exist for {sorted(DEFAULT_TIMEFRAMES)})"
                )
            higher = DEFAULT_TIMEFRAMES[base]
        return (base, *(Timeframe.parse(tf).name for tf in higher))

    def _tf_features(self, bars: pd.DataFrame) -> pd.DataFrame:
        frame = compute_features(bars, [*self.params.features, "trend_strength"])
        return scale_free(frame)

    #: within one predict_proba call: its bars, their stack and aligned features
    _memo: tuple[pd.DataFrame, TimeframeStack, pd.DataFrame] | None = None

    def _stack(self, bars: pd.DataFrame) -> TimeframeStack:
        memo = self._memo
        if memo is not None and memo[0] is bars:  # within one predict_proba call
            return memo[1]
        tfs = self._timeframes(bars)
        try:
            return build_stack(bars, tfs[1:], self._tf_features)
        except TimeframeError as err:
            raise StrategyError(f"mts: timeframes {list(tfs)}: {err}") from None

    # -- hooks ------------------------------------------------------------------------------

    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Each timeframe's latest closed features on the base bars, ``{prefix}_`` columns."""
        memo = self._memo
        if memo is not None and memo[0] is bars:  # within one predict_proba call
            return memo[2]
        return _aligned(self._stack(bars), bars.index)

    def _labels(self, bars: pd.DataFrame) -> np.ndarray:
        p = self.params
        lab = labels.direction(bars, p.horizon, dead_zone=p.dead_zone).values.to_numpy()
        y = np.where(lab > 0, 1.0, 0.0)
        y[np.isnan(lab)] = np.nan
        if p.dead_zone > 0:
            y[lab == 0] = np.nan
        return y

    def _decision_rows(self, bars: pd.DataFrame, x: np.ndarray) -> np.ndarray:
        """Bars with ``window`` closed, finite feature rows in every timeframe."""
        return np.flatnonzero(self._stack(bars).complete(self.params.window))

    def _gather(
        self, bars: pd.DataFrame, xs: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> Gather:
        """Packed scaled windows ``(n, K, window, F)``; the scaler of timeframe ``k`` is
        that of its ``{prefix}_`` columns."""
        stack = self._stack(bars)
        shape = (len(stack.timeframes), len(stack.columns))
        scaled = stack.scaled(mean.reshape(shape), std.reshape(shape))
        window = self.params.window
        return lambda idx: scaled.windows(idx, window)

    def _encoder(self, names: list[str]) -> HierarchicalEncoder:
        p = self.params
        prefixes = dict.fromkeys(n.split("_", 1)[0] for n in names)  # one per timeframe
        first = next(iter(prefixes))
        per_tf = [n.split("_", 1)[1] for n in names if n.startswith(f"{first}_")]
        k = len(prefixes)
        cfg = HierarchicalConfig(
            n_features=len(per_tf),
            window=p.window,
            n_timeframes=k,
            d_model=p.d_model,
            n_heads=p.n_heads,
            n_layers=p.n_layers,
            d_ff=p.d_ff,
            dropout=p.dropout,
            return_feature=per_tf.index("ret_log_1") if "ret_log_1" in per_tf else None,
        )
        return HierarchicalEncoder(cfg, seed=p.seed)

    def _outputs(self, head: np.ndarray, encoder: np.ndarray) -> dict[str, np.ndarray]:
        return {"p_up": head, "encoder_p_up": encoder}

    # -- diagnostics ------------------------------------------------------------------------

    def predict_proba(
        self, bars: pd.DataFrame, *, context: Context | None = None, last: int | None = None
    ) -> pd.DataFrame:
        """``p_up``, ``encoder_p_up``, each timeframe's ``trend_{prefix}`` and
        ``tf_alignment`` per bar (module docs); NaN where unknown. ``last`` as in the base.
        The timeframe stack of ``bars`` and its aligned features are built once for the call
        (the base's hooks each ask for them, and the trends read the features)."""
        self._check_fitted()
        with checked_bars(bars):  # checked once, here: the base's prediction does not again
            if not len(bars):
                return super().predict_proba(bars, context=context, last=last)
            stack = self._stack(bars)
            features = _aligned(stack, bars.index)
            self._memo = (bars, stack, features)
            try:
                out = super().predict_proba(bars, context=context, last=last)
            finally:
                self._memo = None
        trend = [j for j, c in enumerate(features.columns) if c.endswith(f"_{TREND}")]
        signs = np.sign(features.to_numpy(dtype=np.float64)[:, trend])
        # the base's columns, then trend_{prefix} per trend column (a repeated prefix keeps
        # its last) and tf_alignment: one frame rather than columns inserted one by one
        extra = {
            f"trend_{features.columns[j].split('_', 1)[0]}": sign
            for j, sign in zip(trend, signs.T, strict=True)
        }
        extra["tf_alignment"] = alignment(signs)
        return pd.DataFrame(
            np.column_stack([out.to_numpy(dtype=np.float64), *extra.values()]),
            index=out.index,
            columns=[*out.columns, *extra],
        )

    def explain(
        self, bars: pd.DataFrame, *, context: Context | None = None, n_windows: int = 256
    ) -> dict[str, pd.DataFrame]:
        """``timeframe_attention``: the encoder's cross-timeframe weights over the last
        ``n_windows`` complete windows of ``bars`` — rows ``mean`` and ``last`` (the last
        window), one column per timeframe."""
        self._check_fitted()
        check_bars(bars)
        if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
            raise StrategyError(f"mts: n_windows must be a positive integer, got {n_windows!r}")
        x = self._feature_frame(bars, self.feature_names_).to_numpy(dtype=np.float64)
        idx = self._decision_rows(bars, x)[-n_windows:]
        if not idx.size:
            raise StrategyError(
                f"mts: {len(bars)} bars hold no complete window of {self.params.window} bars "
                "in every timeframe to explain"
            )
        gather = self._gather(bars, self.scaler_.transform(x), self.scaler_.mean, self.scaler_.std)
        encoder = self.net_.encoder
        if not isinstance(encoder, HierarchicalEncoder):
            raise StrategyError("mts: the fitted encoder is not hierarchical")
        weights = timeframe_weights(encoder, gather(idx))
        frame = pd.DataFrame(
            [weights.mean(axis=0), weights[-1]],
            index=pd.Index(["mean", "last"], name="windows"),
            columns=list(self._timeframes(bars)),
        )
        return {"timeframe_attention": frame}

    def summarize(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``alignment_metrics`` of the out-of-sample ``predictions`` on ``bars``: rows
        ``all``, ``agree`` (every timeframe's trend on one side), ``disagree``; columns
        ``n_bars`` (bars with a prediction and an alignment), ``share`` of them,
        ``accuracy`` (direction accuracy of ``p_up > 0.5`` over ``horizon`` bars, on bars
        that moved) and ``trend_accuracy`` (the same for the majority trend's side, on bars
        with a majority)."""
        check_bars(bars)
        missing = [c for c in ("p_up", "tf_alignment") if c not in predictions.columns]
        if missing:
            raise StrategyError(f"mts: predictions lack the columns {missing}")
        pred = predictions.reindex(bars.index)
        h = self.params.horizon
        close = bars["close"].to_numpy(dtype=np.float64)
        move = np.full(len(bars), np.nan)
        move[: len(bars) - h] = np.log(close[h:] / close[: len(bars) - h])
        p = pred["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
        align = pred["tf_alignment"].to_numpy(dtype=np.float64, na_value=np.nan)
        trend_cols = [c for c in pred.columns if str(c).startswith("trend_")]
        side = np.sign(np.nansum(pred[trend_cols].to_numpy(dtype=np.float64), axis=1))
        known = np.isfinite(p) & np.isfinite(align)
        moved = np.isfinite(move) & (move != 0)
        rows = {"all": known, "agree": known & (align == 1.0), "disagree": known & (align < 1.0)}
        n_known = max(int(known.sum()), 1)
        stats = {}
        for name, mask in rows.items():
            hit = mask & moved
            sided = hit & (side != 0)
            stats[name] = {
                "n_bars": int(mask.sum()),
                "share": mask.sum() / n_known,
                "accuracy": _mean((p[hit] > 0.5) == (move[hit] > 0)),
                "trend_accuracy": _mean(side[sided] * move[sided] > 0),
            }
        frame = pd.DataFrame.from_dict(stats, orient="index")
        frame.index.name = "timeframes"
        return {"alignment_metrics": frame}


def _aligned(stack: TimeframeStack, index: pd.Index) -> pd.DataFrame:
    """Each timeframe's latest closed features at every base row (NaN before its first
    closed bar), columns ``{prefix}_{feature}`` timeframe by timeframe: one frame."""
    n_cols = len(stack.columns)
    values = np.empty((len(index), len(stack.timeframes) * n_cols))
    names: list[str] = []
    for k, (tf, x) in enumerate(zip(stack.timeframes, stack.features, strict=True)):
        rows = stack.positions[:, k]
        block = values[:, k * n_cols : (k + 1) * n_cols]
        if len(x):
            block[:] = x[np.maximum(rows, 0)]
            block[rows < 0] = np.nan
        else:  # bars too few for one closed bar of this timeframe: nothing known yet
            block[:] = np.nan
        names += [f"{default_prefix(tf)}_{c}" for c in stack.columns]
    return pd.DataFrame(values, index=index, columns=pd.Index(names))


def alignment(signs: np.ndarray) -> np.ndarray:
    """Per row of trend signs ``(n, K)``, the share of timeframes on the majority's side
    (ups vs downs; a zero sign counts for neither); NaN where a sign is unknown."""
    up = (signs > 0).sum(axis=1)
    down = (signs < 0).sum(axis=1)
    out = np.maximum(up, down) / signs.shape[1]
    out = out.astype(np.float64)
    out[~np.isfinite(signs).all(axis=1)] = np.nan
    return out


def _mean(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")
