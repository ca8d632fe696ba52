"""Attention extraction: capture every layer's and head's weights, aggregate to importances.

* :func:`capture_attention` — context manager that records the attention probabilities of
  every :class:`~mlengine.nn.attention.PriceFocusedAttention` (and the attention pooling)
  in a model while it runs. The probabilities are computed beside the model's own SDPA
  path, so outputs are bit-identical with and without capture.
* :func:`extract_attention` — runs an encoder in inference mode over windows and returns
  :class:`AttentionMaps`: weights ``(n, layers, heads, L, L)`` and per-bar importance by
  attention rollout (Abnar & Zuidema 2020) for the embedding.
* :func:`feature_importance` — per-feature importance by mean-ablation occlusion: how far
  the embedding (or a downstream score) moves when one feature is replaced by its mean.
  Occlusion is model-agnostic, so it also ranks features for a non-differentiable head
  (XGBoost) through ``score``; gradient × input could not.
* :func:`heatmap_frame` — the decision bar's attention per layer/head plus the rollout as a
  DataFrame (rows × bars of the window), ready for a heatmap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from mlengine.data.schema import MLEngineError
from mlengine.nn.attention import AttentionPooling, PriceFocusedAttention
from mlengine.nn.encoders import WindowEncoder
from mlengine.nn.encodings import CalendarCodes, TimeInput

__all__ = [
    "AttentionCapture",
    "AttentionMaps",
    "ExtractionError",
    "attention_rollout",
    "capture_attention",
    "extract_attention",
    "feature_importance",
    "heatmap_frame",
]


class ExtractionError(MLEngineError, ValueError):
    """Attention cannot be extracted from this model or these inputs."""


def attention_rollout(weights: np.ndarray, *, residual: bool = True) -> np.ndarray:
    """Rollout ``(..., L, L)`` of weights ``(..., layers, heads, L, L)``.

    Heads are averaged; with ``residual`` the identity is added for the skip connection
    (``0.5 A + 0.5 I``) and rows renormalised; layers are multiplied bottom-up,
    ``R = Â_N ⋯ Â_1``. Row ``i`` of ``R`` is how much each input bar flows into position
    ``i``'s output; every row sums to 1.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim < 4 or w.shape[-1] != w.shape[-2]:
        raise ExtractionError(f"weights must be (..., layers, heads, L, L), got {w.shape}")
    a = w.mean(axis=-3)
    if residual:
        a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
    a = a / a.sum(axis=-1, keepdims=True)
    rollout = a[..., 0, :, :]
    for layer in range(1, a.shape[-3]):
        rollout = a[..., layer, :, :] @ rollout
    return rollout


@dataclass(frozen=True)
class AttentionMaps:
    """Captured attention of ``n`` windows.

    ``weights`` ``(n, layers, heads, L, L)`` (query row, key column, oldest bar first);
    ``pooling_weights`` ``(n, L)`` when the encoder pools by attention; ``pooling`` names
    how the embedding is read from the last layer (``last``, ``mean`` or ``attention``).
    ``embeddings`` ``(n, E)`` are the encoder outputs of the same pass, when known.
    """

    weights: np.ndarray
    pooling: str = "last"
    pooling_weights: np.ndarray | None = None
    embeddings: np.ndarray | None = field(default=None, repr=False)

    def mean(self) -> np.ndarray:
        """Weights averaged over windows: ``(layers, heads, L, L)``."""
        return np.asarray(self.weights.mean(axis=0))

    def rollout(self) -> np.ndarray:
        """Attention rollout per window ``(n, L, L)``."""
        return attention_rollout(self.weights)

    def bar_importance(self) -> np.ndarray:
        """Share of each bar in the embedding ``(n, L)`` (rows sum to 1).

        The rollout row of the decision bar (``last``), the mean of all rows (``mean``), or
        the rows weighted by the pooling weights (``attention``).
        """
        r = self.rollout()
        if self.pooling == "attention":
            if self.pooling_weights is None:
                raise ExtractionError("attention pooling weights were not captured")
            # the weights come from a float32 softmax (rows sum to 1 within ~1e-7):
            # renormalised in float64 so that each bar-importance row is a distribution
            w = self.pooling_weights.astype(np.float64)
            return np.einsum("nl,nlk->nk", w / w.sum(axis=1, keepdims=True), r)
        if self.pooling == "mean":
            return np.asarray(r.mean(axis=1))
        return np.asarray(r[:, -1, :])


class AttentionCapture:
    """What :func:`capture_attention` records: one list of batches per attention layer."""

    def __init__(self, n_layers: int) -> None:
        self.layers: list[list[Tensor]] = [[] for _ in range(n_layers)]
        self.pooling: list[Tensor] = []

    def maps(self, pooling: str = "last") -> AttentionMaps:
        """The batches so far as :class:`AttentionMaps` (attention pooling if captured)."""
        if not self.layers[0]:
            raise ExtractionError("nothing captured: run the model inside capture_attention")
        weights = torch.stack([torch.cat(batches) for batches in self.layers], dim=1)
        pool = torch.cat(self.pooling).numpy() if self.pooling else None
        return AttentionMaps(weights.numpy(), "attention" if pool is not None else pooling, pool)


def _sink(store: list[Tensor]) -> Callable[[Tensor], None]:
    def record(weights: Tensor) -> None:
        store.append(weights.detach().to("cpu", torch.float32).clone())

    return record


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[AttentionCapture]:
    """Record every attention layer's (and the attention pooling's) weights while inside.

    Layers are ordered as ``model.modules()`` visits them (input side first). The model's
    outputs do not change. Nested captures of the same model are refused.
    """
    layers = [m for m in model.modules() if isinstance(m, PriceFocusedAttention)]
    pools = [m for m in model.modules() if isinstance(m, AttentionPooling)]
    if not layers:
        raise ExtractionError(f"{type(model).__name__} has no attention layers to capture")
    if len(pools) > 1:
        raise ExtractionError(f"{type(model).__name__} has {len(pools)} attention poolings")
    modules: list[PriceFocusedAttention | AttentionPooling] = [*layers, *pools]
    if any(m.weight_sink is not None for m in modules):
        raise ExtractionError("attention of this model is already being captured")
    capture = AttentionCapture(len(layers))
    try:
        for layer, store in zip(layers, capture.layers, strict=True):
            layer.weight_sink = _sink(store)
        for pool in pools:
            pool.weight_sink = _sink(capture.pooling)
        yield capture
    finally:
        for m in modules:
            m.weight_sink = None


# --- running an encoder ------------------------------------------------------------------


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batches(
    x: Tensor, returns: Tensor | None, time: TimeInput | None, size: int
) -> Iterator[tuple[Tensor, Tensor | None, TimeInput | None]]:
    if size < 1:
        raise ExtractionError(f"batch_size must be positive, got {size}")
    for start in range(0, x.shape[0], size):
        sl = slice(start, start + size)
        t: TimeInput | None = time
        if isinstance(time, CalendarCodes):
            t = CalendarCodes(time.hour[sl], time.dow[sl])
        elif isinstance(time, Tensor):
            t = time[sl]
        yield x[sl], None if returns is None else returns[sl], t


def _as_windows(x: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 3 or t.shape[0] == 0:
        raise ExtractionError(f"windows must be a non-empty (n, L, F) array, got {tuple(t.shape)}")
    return t.float() if not t.is_floating_point() else t


def _embed(
    encoder: WindowEncoder,
    x: Tensor,
    returns: Tensor | None,
    time: TimeInput | None,
    batch_size: int,
) -> np.ndarray:
    parts = [
        encoder(xb, returns=rb, time=tb) for xb, rb, tb in _batches(x, returns, time, batch_size)
    ]
    return torch.cat(parts).numpy()


def extract_attention(
    encoder: WindowEncoder,
    x: Tensor | np.ndarray,
    *,
    returns: Tensor | None = None,
    time: TimeInput | None = None,
    batch_size: int = 256,
) -> AttentionMaps:
    """Attention maps and embeddings of windows ``x`` ``(n, L, F)``, in inference mode.

    Holds ``n × layers × heads × L²`` floats: pass the recent windows, not a whole history.
    """
    xt = _as_windows(x)
    pooling = str(getattr(encoder.config, "pooling", "last"))
    with _inference(encoder), capture_attention(encoder) as capture:
        embeddings = _embed(encoder, xt, returns, time, batch_size)
    maps = capture.maps(pooling)
    return AttentionMaps(maps.weights, maps.pooling, maps.pooling_weights, embeddings)


def feature_importance(
    encoder: WindowEncoder,
    x: Tensor | np.ndarray,
    *,
    returns: Tensor | None = None,
    time: TimeInput | None = None,
    feature_names: Sequence[str] | None = None,
    score: Callable[[np.ndarray], ArrayLike] | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Mean-ablation occlusion importance of each feature over windows ``x`` ``(n, L, F)``.

    Feature ``f`` is replaced by its mean over all windows and bars of ``x``; its importance
    is the mean over windows of the Euclidean distance between the outputs before and after,
    the outputs being the embeddings or ``score(embeddings)`` (e.g. a head's probabilities).
    When the price bias reads its returns from a column of ``x`` (``return_feature``),
    occluding that column removes it from the bias too; explicit ``returns`` are untouched.
    Columns: ``importance`` and ``share`` (importance / total), index ``feature``.
    """
    xt = _as_windows(x)
    n_features = xt.shape[2]
    names = (
        list(feature_names) if feature_names is not None else [str(i) for i in range(n_features)]
    )
    if len(names) != n_features:
        raise ExtractionError(f"{len(names)} feature names for {n_features} features")

    def output(windows: Tensor) -> np.ndarray:
        emb = _embed(encoder, windows, returns, time, batch_size)
        out = np.asarray(score(emb) if score is not None else emb, dtype=np.float64)
        return out.reshape(out.shape[0], -1)

    baseline = xt.mean(dim=(0, 1))
    with _inference(encoder):
        reference = output(xt)
        importance = np.empty(n_features)
        for f in range(n_features):
            occluded = xt.clone()
            occluded[:, :, f] = baseline[f]
            importance[f] = np.linalg.norm(output(occluded) - reference, axis=1).mean()
    total = importance.sum()
    share = importance / total if total > 0 else np.zeros_like(importance)
    index = pd.Index(names, name="feature")
    return pd.DataFrame({"importance": importance, "share": share}, index=index)


def heatmap_frame(
    maps: AttentionMaps,
    *,
    window: int | None = -1,
    bars: Sequence[object] | pd.Index | None = None,
) -> pd.DataFrame:
    """Rows ``"layer l head h"`` (the decision bar's attention) plus ``"rollout"``; columns
    the window's bars: ``bars`` (e.g. their timestamps) or offsets ``-(L-1) .. 0`` from the
    decision bar. ``window`` picks one window (default the last); ``None`` averages all.
    """
    n, n_layers, n_heads, length, _ = maps.weights.shape
    if window is not None and not -n <= window < n:
        raise ExtractionError(f"window {window} out of range for {n} windows")
    pick = slice(None) if window is None else [window]
    decision = maps.weights[pick, :, :, -1, :].mean(axis=0).reshape(n_layers * n_heads, length)
    rollout = maps.bar_importance()[pick].mean(axis=0)
    columns = list(bars) if bars is not None else list(range(-(length - 1), 1))
    if len(columns) != length:
        raise ExtractionError(f"{len(columns)} bar labels for windows of {length} bars")
    rows = [f"layer {i + 1} head {h + 1}" for i in range(n_layers) for h in range(n_heads)]
    return pd.DataFrame(
        np.vstack([decision, rollout[None, :]]),
        index=pd.Index([*rows, "rollout"], name="attention"),
        columns=pd.Index(columns, name="bar"),
    )
