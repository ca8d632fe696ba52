"""A hierarchical multi-timeframe encoder: one transformer per timeframe, then attention
across the timeframe embeddings.

Input: a packed float tensor ``x`` ``(B, K, L, F)`` — for each of the ``K`` timeframes
(base first, then the higher ones in the configured order) a window of its last ``L``
closed bars, oldest bar first, each with the same ``F`` features. Branch ``k`` is a
:class:`~mlengine.nn.encoders.TransformerEncoder` over ``x[:, k]`` only, giving the
timeframe embedding ``h_k`` ``(B, d_model)`` (plus a learned embedding of the timeframe's
slot). :class:`TimeframeAttention` then pools the ``K`` embeddings: a learned query scores
each key ``W_k h_k``, the softmax over timeframes gives the cross-timeframe weights
``(B, K)``, and the embedding is ``LayerNorm(W_o Σ_k a_k W_v h_k)``.

The weights come out of the same pass as the embedding (:meth:`HierarchicalEncoder.
forward_with_weights`, :func:`timeframe_weights`), so reading them never changes outputs.
Built from its config under a seed and rebuilt from its manifest by
:func:`~mlengine.nn.encoders.build_encoder` (kind ``"hierarchical"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mlengine.nn.encoders import (
    EncoderConfig,
    EncoderConfigError,
    Pooling,
    TransformerConfig,
    TransformerEncoder,
    WindowEncoder,
    register_encoder,
    seeded,
)
from mlengine.nn.encodings import ModelInputError, TimeInput

__all__ = [
    "HierarchicalConfig",
    "HierarchicalEncoder",
    "TimeframeAttention",
    "timeframe_weights",
]


@dataclass(frozen=True, kw_only=True)
class HierarchicalConfig(EncoderConfig):
    """Hierarchical encoder hyper-parameters (small CPU-friendly defaults).

    ``n_features`` and ``window`` are per timeframe (every branch reads ``F`` features over
    at most ``window`` bars); ``n_timeframes`` is ``K``. The other fields configure each
    branch's :class:`~mlengine.nn.encoders.TransformerConfig` (the price bias reads column
    ``return_feature`` of each timeframe's window; ``None`` turns the bias off);
    ``dropout`` also acts on the cross-timeframe output.
    """

    n_timeframes: int = 3
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 1
    d_ff: int = 64
    dropout: float = 0.1
    return_feature: int | None = None
    pooling: Pooling = "last"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("n_timeframes")
        self.branch_config()  # the branch's own checks (heads, dropout, pooling, column)

    def branch_config(self) -> TransformerConfig:
        """The :class:`TransformerConfig` of every per-timeframe branch."""
        return TransformerConfig(
            n_features=self.n_features,
            window=self.window,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            price_bias=self.return_feature is not None,
            return_feature=self.return_feature,
            pooling=self.pooling,
        )


class TimeframeAttention(nn.Module):
    """A learned query attending over ``K`` timeframe embeddings ``(B, K, d) -> (B, d)``,
    with the attention weights ``(B, K)``."""

    def __init__(self, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(d_model) * d_model**-0.5)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.key(h) @ self.query * h.shape[-1] ** -0.5
        weights = scores.softmax(dim=-1)
        pooled = (weights[:, :, None] * self.value(h)).sum(dim=1)
        return self.norm(self.drop(self.out(pooled))), weights


@register_encoder
class HierarchicalEncoder(WindowEncoder):
    """One transformer branch per timeframe, then :class:`TimeframeAttention` (module docs)."""

    kind = "hierarchical"
    config_class = HierarchicalConfig
    config: HierarchicalConfig

    def __init__(self, config: HierarchicalConfig, *, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)
        cfg = config
        with seeded(seed):
            self.branches = nn.ModuleList(
                TransformerEncoder(cfg.branch_config()) for _ in range(cfg.n_timeframes)
            )
            self.slot = nn.Parameter(torch.zeros(cfg.n_timeframes, cfg.d_model))
            nn.init.normal_(self.slot, std=0.02)
            self.across = TimeframeAttention(cfg.d_model, cfg.dropout)

    @property
    def embedding_dim(self) -> int:
        return self.config.d_model

    def _check(self, x: Tensor, returns: Tensor | None, time: TimeInput | None) -> None:
        k = self.config.n_timeframes
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ModelInputError(f"windows must be a float tensor (B, K, L, F), got {what}")
        if x.shape[1] != k:
            raise ModelInputError(f"windows have {x.shape[1]} timeframes, expected {k}")
        if returns is not None and (
            not isinstance(returns, Tensor) or tuple(returns.shape) != tuple(x.shape[:3])
        ):
            got = tuple(returns.shape) if isinstance(returns, Tensor) else type(returns).__name__
            raise ModelInputError(f"returns must have shape {tuple(x.shape[:3])}, got {got}")
        if time is not None:
            raise ModelInputError("the hierarchical encoder takes no time input")

    def branch_embeddings(self, x: Tensor, *, returns: Tensor | None = None) -> Tensor:
        """Per-timeframe embeddings ``(B, K, d_model)``: branch ``k`` reads ``x[:, k]`` only."""
        self._check(x, returns, None)
        h = [
            branch(x[:, k], returns=None if returns is None else returns[:, k])
            for k, branch in enumerate(self.branches)
        ]
        return torch.stack(h, dim=1) + self.slot

    def forward_with_weights(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> tuple[Tensor, Tensor]:
        """Embeddings ``(B, d_model)`` and cross-timeframe weights ``(B, K)`` of ``x``."""
        self._check(x, returns, time)
        return self.across(self.branch_embeddings(x, returns=returns))

    def forward(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        """Embeddings ``(B, d_model)`` of the packed windows ``x`` ``(B, K, L, F)``."""
        return self.forward_with_weights(x, returns=returns, time=time)[0]


def timeframe_weights(
    encoder: HierarchicalEncoder, x: Tensor | np.ndarray, *, batch_size: int = 512
) -> np.ndarray:
    """Cross-timeframe weights ``(B, K)`` of the packed windows ``x`` (rows sum to 1), in
    inference mode (no dropout, no gradients); the encoder's mode is restored after."""
    if not isinstance(encoder, HierarchicalEncoder):
        raise EncoderConfigError(
            f"timeframe weights need a HierarchicalEncoder, got {type(encoder).__name__}"
        )
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
    was_training = encoder.training
    encoder.eval()
    parts = [np.empty((0, encoder.config.n_timeframes))]
    try:
        with torch.no_grad():
            for lo in range(0, len(t), batch_size):
                w = encoder.forward_with_weights(t[lo : lo + batch_size])[1]
                parts.append(w.numpy().astype(np.float64))
    finally:
        encoder.train(was_training)
    return np.concatenate(parts)
