"""VBP — Volatility Breakout Predictor: will price leave its recent range within the
horizon, and which way? A causal CNN encoder with attention over windows of return,
volatility and breakout features, with an XGBoost head on its embedding plus the decision
bar's features.

The training, prediction, explanation and artefacts are those of every windowed neural
strategy (:mod:`mlengine.strategies._windowed`). VBP's own parts:

* features: :func:`mlengine.features.compute_features` of the groups ``params.features``
  (the ``breakout`` group: squeezes, Keltner channel, range compression, volume surges);
  the label's range and ATR windows go to ``range_compression`` and ``atr`` when
  selected; the raw ATR in price units is dropped, its close-relative form kept;
* labels: :func:`mlengine.labels.breakout` — within ``horizon`` bars, does a high (low)
  reach ``k`` ATR above (below) the last ``range_window`` bars' range; classes 0 none,
  1 up, 2 down;
* balanced sampling: the training rows with a breakout are repeated ``oversample`` times
  (validation and test rows never: the base passes only training rows to
  :meth:`VBP._oversample`); with ``prior_correction`` the outputs divide the classes'
  probabilities by their repeat counts and renormalise, undoing the shift of the class
  prior that the repeats teach both heads, so that ``breakout_prob`` estimates the
  breakout frequency of unrepeated data;
* encoder: :class:`mlengine.nn.convolutional.CNNEncoder`;
* outputs: ``p_up = 0.5 + 0.5 (P(up) - P(down))`` (0.5 when no breakout is expected:
  no trade under the hysteresis rule), ``breakout_prob = P(up) + P(down)``,
  ``breakout_up``, ``breakout_down`` from the XGBoost head; ``encoder_p_up`` the same
  mapping of the encoder's own head;
* summary (:meth:`VBP.summarize`): breakout precision, recall, F1, lead time and
  false-breakout rate of the out-of-sample signals (:func:`breakout_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlengine import labels
from mlengine.features import check_bars, compute_features, list_features, list_groups
from mlengine.nn.convolutional import CNNConfig, CNNEncoder
from mlengine.nn.encoders import Pooling
from mlengine.strategies._windowed import WindowedParams, WindowedStrategy, scale_free
from mlengine.strategies.base import StrategyError
from mlengine.strategies.registry import register

__all__ = ["VBP", "VBPParams", "breakout_metrics"]

_DIAGNOSTICS = ("breakout_prob", "breakout_up", "breakout_down")
_COLUMNS = [
    "bars",
    "signals",
    "breakouts",
    "hits",
    "precision",
    "recall",
    "f1",
    "false_breakout_rate",
    "lead_median",
    "lead_mean",
]


@dataclass(frozen=True)
class VBPParams(WindowedParams):
    """VBP hyper-parameters (small CPU-friendly defaults): the shared window and training
    settings of :class:`~mlengine.strategies._windowed.WindowedParams` (``horizon``: the
    breakout label's, 6 bars here), the label's ``range_window``, ``k`` and
    ``atr_window``, the oversampling of breakout rows, the summary's signal threshold on
    ``breakout_prob``, the feature groups and the CNN's shape.

    Defaults, chosen before any run on real data: a breakout is a move of one ATR(14)
    beyond the last 20 bars' range within 6 bars; on a random walk about a quarter of the
    bars see one, so the 3x oversampling brings the classes near balance. Three causal
    convolutions (kernel 3, dilations 1, 2, 4: 15 bars each) of 32 channels under the
    attention over a 32-bar window; batches of 256 (the convolutions' compute dominates
    a fit: larger batches run them faster on one thread)."""

    who: ClassVar[str] = "vbp"

    horizon: int = 6
    batch_size: int = 256
    range_window: int = 20
    k: float = 1.0
    atr_window: int = 14
    oversample: int = 3
    prior_correction: bool = True
    signal_threshold: float = 0.5
    features: tuple[str, ...] = ("returns", "volatility", "breakout")
    channels: int = 32
    kernel_size: int = 3
    n_layers: int = 3
    dilation: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    pooling: Pooling = "last"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        super().__post_init__()
        self.check_positive_ints(
            "range_window", "atr_window", "oversample", "channels", "kernel_size", "n_layers",
            "dilation", "n_heads",
        )  # fmt: skip
        if self.range_window < 2:
            raise StrategyError(f"vbp: range_window must be >= 2, got {self.range_window}")
        self.check_range("k", 0.0, math.inf)
        self.check_range("signal_threshold", 0.0, 1.0, open_low=True)
        self.check_range("dropout", 0.0, 1.0)
        if not isinstance(self.prior_correction, bool):
            raise StrategyError(
                f"vbp: prior_correction must be True or False, got {self.prior_correction!r}"
            )
        if self.channels % self.n_heads:
            raise StrategyError(
                f"vbp: channels={self.channels} not divisible by n_heads={self.n_heads}"
            )
        if self.pooling not in ("last", "mean", "attention"):
            raise StrategyError(
                f"vbp: pooling must be 'last', 'mean' or 'attention', got {self.pooling!r}"
            )
        known = {*list_features(), *list_groups()}
        if not self.features or not all(isinstance(f, str) and f in known for f in self.features):
            raise StrategyError(
                f"vbp: features must be feature or group names, got {self.features} "
                f"(groups: {', '.join(list_groups())})"
            )


@register
class VBP(WindowedStrategy):
    """Volatility Breakout Predictor (see the module docstring)."""

    name = "vbp"
    params_class = VBPParams
    n_classes = 3  # 0 no breakout, 1 up, 2 down
    params: VBPParams

    @classmethod
    def contract_params(cls) -> dict[str, Any]:
        """Tiny settings for the contract suite (a fit in about a second)."""
        return {
            "window": 16,
            "channels": 16,
            "n_layers": 2,
            "epochs": 2,
            "batch_size": 64,
            "n_estimators": 20,
            "early_stopping_rounds": 5,
        }

    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        p = self.params
        names = list(p.features)
        selected = {f for n in names for f in (list_features(n) if n in list_groups() else [n])}
        # the label's range and ATR, where the features that describe them are selected
        tied = {
            "range_compression": {
                "window": p.range_window,
                "long": 5 * p.range_window,
                "atr_window": p.atr_window,
            },
            "atr": {"window": p.atr_window},
        }
        frame = compute_features(bars, names, {k: v for k, v in tied.items() if k in selected})
        return scale_free(frame)

    def _labels(self, bars: pd.DataFrame) -> np.ndarray:
        side = self._breakouts(bars).values.to_numpy()
        y = np.where(side > 0, 1.0, np.where(side < 0, 2.0, 0.0))
        y[np.isnan(side)] = np.nan
        return y

    def _breakouts(self, bars: pd.DataFrame) -> labels.Labels:
        p = self.params
        return labels.breakout(
            bars, p.horizon, range_window=p.range_window, k=p.k, atr_window=p.atr_window
        )

    def _encoder(self, names: list[str]) -> CNNEncoder:
        p = self.params
        cfg = CNNConfig(
            n_features=len(names),
            window=p.window,
            channels=p.channels,
            kernel_size=p.kernel_size,
            n_layers=p.n_layers,
            dilation=p.dilation,
            n_heads=p.n_heads,
            dropout=p.dropout,
            pooling=p.pooling,
        )
        return CNNEncoder(cfg, seed=p.seed)

    def _oversample(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The training rows ``idx``, those with a breakout (class 1 or 2) ``oversample``
        times."""
        breakout = idx[y[idx] > 0]
        return np.concatenate([idx, *[breakout] * (self.params.oversample - 1)])

    def _probabilities(self, prob: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, 3)`` with the oversampling's prior shift undone."""
        o = self.params.oversample
        if not self.params.prior_correction or o == 1:
            return prob
        prob = prob / np.array([1.0, o, o])
        return prob / prob.sum(axis=1, keepdims=True)

    def _outputs(self, head: np.ndarray, encoder: np.ndarray) -> dict[str, np.ndarray]:
        h, e = self._probabilities(head), self._probabilities(encoder)
        return {
            "p_up": 0.5 + 0.5 * (h[:, 1] - h[:, 2]),
            "breakout_prob": h[:, 1] + h[:, 2],
            "breakout_up": h[:, 1],
            "breakout_down": h[:, 2],
            "encoder_p_up": 0.5 + 0.5 * (e[:, 1] - e[:, 2]),
        }

    def summarize(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """``breakout_metrics``: :func:`breakout_metrics` of the predictions against the
        breakout labels of ``bars``, computed on these bars only: the bars before the
        first full range and ATR and the last ``horizon`` bars have none and are left
        out."""
        check_bars(bars)
        if not predictions.index.equals(bars.index):
            raise StrategyError("vbp: summarize needs predictions on the index of the bars")
        missing = [c for c in _DIAGNOSTICS if c not in predictions.columns]
        if missing:
            raise StrategyError(f"vbp: summarize needs the prediction columns {missing}")
        truth = self._breakouts(bars)
        table = breakout_metrics(
            predictions["breakout_prob"].to_numpy(dtype=np.float64),
            (predictions["breakout_up"] - predictions["breakout_down"]).to_numpy(np.float64),
            truth.values.to_numpy(),
            truth.info["touch_bars"].to_numpy(),
            threshold=self.params.signal_threshold,
        )
        return {"breakout_metrics": table}


def breakout_metrics(
    prob: np.ndarray,
    lean: np.ndarray,
    side: np.ndarray,
    lead: np.ndarray,
    *,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """How well breakout signals foretold breakouts, per direction and overall.

    Per bar: ``prob`` the predicted breakout probability, ``lean`` its direction
    (``P(up) - P(down)``), ``side`` the true breakout (+1, -1, 0 none, NaN unknown) and
    ``lead`` the bars from that bar to the breakout's first touch. Bars with a finite
    ``prob``, ``lean`` and ``side`` count (``bars``). A *signal* is ``prob > threshold``,
    pointing up where ``lean > 0``, down where ``lean < 0``.

    Rows ``up``, ``down`` (signals and breakouts of that direction; a hit needs both) and
    ``any`` (every signal against any breakout, direction ignored). Columns: ``bars``,
    ``signals``, ``breakouts`` (support), ``hits``, ``precision`` (hits / signals),
    ``recall`` (hits / breakouts), ``f1``, ``false_breakout_rate`` (share of the signals
    followed by no breakout at all within the horizon), ``lead_median`` and ``lead_mean``
    (bars from a hit's signal to the breakout). NaN where a ratio has no denominator.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (prob, lean, side, lead)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise StrategyError(
            f"breakout_metrics: prob, lean, side and lead must be 1-D of one length, got "
            f"shapes {[a.shape for a in arrays]}"
        )
    prob, lean, side, lead = arrays
    known = np.isfinite(prob) & np.isfinite(lean) & np.isfinite(side)
    signal = known & (prob > threshold)
    rows = []
    for d in (1.0, -1.0, 0.0):
        sig = signal & (np.sign(lean) == d) if d else signal
        truth = known & (side == d) if d else known & (side != 0)
        hits = sig & truth
        n_sig, n_true, n_hit = int(sig.sum()), int(truth.sum()), int(hits.sum())
        precision = n_hit / n_sig if n_sig else math.nan
        recall = n_hit / n_true if n_true else math.nan
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision + recall > 0
            else (0.0 if n_sig and n_true else math.nan)
        )
        false = int((sig & (side == 0)).sum()) / n_sig if n_sig else math.nan
        leads = lead[hits]
        rows.append(
            [
                int(known.sum()),
                n_sig,
                n_true,
                n_hit,
                precision,
                recall,
                f1,
                false,
                float(np.median(leads)) if n_hit else math.nan,
                float(leads.mean()) if n_hit else math.nan,
            ]
        )
    index = pd.Index(["up", "down", "any"], name="direction")
    return pd.DataFrame(rows, index=index, columns=_COLUMNS)
