"""An LSTM window encoder: input projection, a unidirectional ``torch.nn.LSTM`` over the
window's bars (oldest first), the decision bar's final hidden state (or the mean over the
window's positions) as the embedding, dropout.

The LSTM reads the bars in order, so position ``i``'s state depends on bars ``<= i`` only,
and each window in a batch is encoded on its own. Built from its config under a seed, like
every :class:`~mlengine.nn.encoders.WindowEncoder`, and rebuilt from its manifest by
:func:`~mlengine.nn.encoders.build_encoder` (kind ``"lstm"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mlengine.nn.encoders import (
    EncoderConfig,
    EncoderConfigError,
    SequenceEncoder,
    register_encoder,
    seeded,
)
from mlengine.nn.encodings import TimeInput

__all__ = ["LSTMConfig", "LSTMEncoder"]

Pooling = Literal["last", "mean"]


@dataclass(frozen=True, kw_only=True)
class LSTMConfig(EncoderConfig):
    """LSTM encoder hyper-parameters (small CPU-friendly defaults).

    ``hidden_size``: width of the input projection and of the LSTM's state (the embedding);
    ``n_layers``: stacked LSTM layers; ``dropout`` acts between stacked layers and on the
    embedding; ``pooling``: ``"last"`` takes the decision bar's final state, ``"mean"``
    averages the top layer's states over the window.
    """

    hidden_size: int = 32
    n_layers: int = 1
    dropout: float = 0.1
    pooling: Pooling = "last"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("hidden_size", "n_layers")
        rate = self.dropout
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise EncoderConfigError(f"dropout must lie in [0, 1), got {rate!r}")
        if self.pooling not in ("last", "mean"):
            raise EncoderConfigError(f"unknown pooling {self.pooling!r}")


@register_encoder
class LSTMEncoder(SequenceEncoder):
    """Linear projection F -> hidden, an N-layer LSTM, pooling, dropout (module docs).

    The forget gates start with a bias of 1 (the LSTM's ``bias_ih`` forget slice; its
    ``bias_hh`` slice 0), so early in training the state is kept rather than forgotten.
    ``returns`` and ``time`` are accepted for the common signature and not used.
    """

    kind = "lstm"
    config_class = LSTMConfig
    config: LSTMConfig

    def __init__(self, config: LSTMConfig, *, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)
        cfg = config
        h = cfg.hidden_size
        with seeded(seed):
            self.input = nn.Linear(cfg.n_features, h)
            self.lstm = nn.LSTM(
                h,
                h,
                num_layers=cfg.n_layers,
                batch_first=True,
                dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
            )
            self.drop = nn.Dropout(cfg.dropout)
        with torch.no_grad():
            for name, param in self.lstm.named_parameters():
                if name.startswith("bias_"):  # gate order: input, forget, cell, output
                    param[h : 2 * h] = 1.0 if name.startswith("bias_ih") else 0.0

    @property
    def embedding_dim(self) -> int:
        return self.config.hidden_size

    def forward_sequence(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        """The top layer's hidden states ``(B, L, hidden)`` of every position."""
        out, _ = self.lstm(self.input(self.check_windows(x)))
        return out

    def forward(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        return self.drop(super().forward(x, returns=returns, time=time))
