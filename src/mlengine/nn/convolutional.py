"""A 1-D convolutional window encoder with an attention layer over its feature maps.

:class:`CNNEncoder` (kind ``"cnn"``): a stack of causal 1-D convolutions over the bars of
the window (padding on the left only, so position ``i`` of every feature map sees bars
``<= i``; the dilation of layer ``l`` is ``dilation ** l``, a temporal-convolution stack
whose receptive field grows geometrically), each a residual ``GELU(conv)`` block; then
bars-ago positional encoding and one causal self-attention layer
(:class:`~mlengine.nn.attention.PriceFocusedAttention`, without the price bias) over the
positions of the feature maps, in a pre-norm residual block; then the embedding of the
decision bar (``pooling="last"``), the mean over positions or a learned attention pooling.

The attention layer is the model's only place where a bar's state reads other positions
by weights, so :func:`mlengine.nn.extraction.capture_attention` captures it as a
one-layer model: the heatmap row of the decision bar shows how much the embedding draws
on each position of the feature maps, each a summary of the ``receptive_field`` bars up
to it (not of that bar alone; the rollout has no convolution in it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from mlengine.nn.attention import AttentionPooling, PriceFocusedAttention
from mlengine.nn.encoders import (
    EncoderConfig,
    EncoderConfigError,
    Pooling,
    Positional,
    SequenceEncoder,
    positional_encoding,
    register_encoder,
    seeded,
)
from mlengine.nn.encodings import TimeInput

__all__ = ["CNNConfig", "CNNEncoder"]


@dataclass(frozen=True, kw_only=True)
class CNNConfig(EncoderConfig):
    """CNN encoder hyper-parameters (small CPU-friendly defaults).

    ``channels``: width of every feature map (and of the embedding); ``kernel_size`` and
    ``n_layers`` of the causal convolutions, layer ``l`` (from 0) dilated by ``dilation **
    l`` (1: no dilation); ``n_heads`` of the attention layer; ``dropout`` on the
    convolutions' outputs and the attention branch; ``positional`` and ``pooling`` as in
    :class:`~mlengine.nn.encoders.TransformerConfig`.
    """

    channels: int = 32
    kernel_size: int = 3
    n_layers: int = 3
    dilation: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    positional: Positional = "sinusoidal"
    pooling: Pooling = "last"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("channels", "kernel_size", "n_layers", "dilation", "n_heads")
        if self.channels % self.n_heads:
            raise EncoderConfigError(
                f"channels={self.channels} not divisible by n_heads={self.n_heads}"
            )
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise EncoderConfigError(f"dropout must lie in [0, 1), got {rate!r}")
        if self.positional not in ("sinusoidal", "learnable", "none"):
            raise EncoderConfigError(f"unknown positional encoding {self.positional!r}")
        if self.pooling not in ("last", "mean", "attention"):
            raise EncoderConfigError(f"unknown pooling {self.pooling!r}")

    @property
    def receptive_field(self) -> int:
        """Bars up to and including position ``i`` that its convolutional features see."""
        return 1 + (self.kernel_size - 1) * sum(self.dilation**i for i in range(self.n_layers))


class _CausalConv(nn.Module):
    """Residual block ``skip(h) + dropout(GELU(conv(left-padded h)))`` on ``(B, C, L)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        out = self.drop(F.gelu(self.conv(F.pad(h, (self.pad, 0)))))
        return out + (h if self.skip is None else self.skip(h))


@register_encoder
class CNNEncoder(SequenceEncoder):
    """Causal dilated convolutions, one causal attention layer over the feature maps,
    final LayerNorm, pooling to a ``channels`` embedding (see the module docstring)."""

    kind = "cnn"
    config_class = CNNConfig
    config: CNNConfig

    def __init__(self, config: CNNConfig, *, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)
        cfg = config
        c = cfg.channels
        with seeded(seed):
            self.convs = nn.ModuleList(
                _CausalConv(
                    cfg.n_features if i == 0 else c,
                    c,
                    cfg.kernel_size,
                    cfg.dilation**i,
                    cfg.dropout,
                )
                for i in range(cfg.n_layers)
            )
            self.position = positional_encoding(cfg.positional, c, cfg.window)
            self.norm1 = nn.LayerNorm(c)
            self.attn = PriceFocusedAttention(c, cfg.n_heads, price_bias=False)
            self.drop = nn.Dropout(cfg.dropout)
            self.norm = nn.LayerNorm(c)
            self.pooling = AttentionPooling(c) if cfg.pooling == "attention" else None

    @property
    def embedding_dim(self) -> int:
        return self.config.channels

    def conv_features(self, x: Tensor) -> Tensor:
        """The last convolution's feature maps ``(B, L, channels)`` of windows ``x``
        ``(B, L, F)``; position ``i`` depends on bars ``<= i`` only."""
        h = self.check_windows(x).transpose(1, 2)
        for conv in self.convs:
            h = conv(h)
        return h.transpose(1, 2)

    def forward_sequence(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        """Final states ``(B, L, channels)`` of every position (causal throughout).
        ``returns`` and ``time`` are not used."""
        h = self.conv_features(x)
        if self.position is not None:
            h = self.position(h)
        h = h + self.drop(self.attn(self.norm1(h), causal=True)[0])
        return self.norm(h)
