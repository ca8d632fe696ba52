"""Price-focused multi-head self-attention over a window of bars, and attention pooling.

The attention score of query bar ``i`` for key bar ``j`` is

    s[b, h, i, j] = q_i · k_j / sqrt(d_head) + bias[b, h, i, j]  (+ -inf where j > i, causal)

with ``bias[b, h, i, j] = w_h · g(phi_ij)``: per-head learned coefficients ``w_h`` (one set
per layer) on ``g(phi)``, either the raw pair features or a learned trunk
``GELU(Linear(phi))`` shared by the layers (:class:`PairMLP`), which makes the bias a tiny
MLP per layer. ``phi_ij`` is the pair's price structure (see :func:`price_pair_features`):
the signed and absolute log price distance ``log(close_j / close_i)`` and the return
magnitude ``|r_j|`` of the key bar, both in units of the window's volatility, and the
relative position ``(j - i) / L``.

Outputs come from :func:`torch.nn.functional.scaled_dot_product_attention`, with the bias
(and causal mask) as its additive float ``attn_mask``; without a bias it runs unmasked or
with ``is_causal``. ``need_weights=True`` computes softmax(scores) explicitly and returns it
(same outputs to float rounding). A module whose ``weight_sink`` is set (see
:func:`mlengine.nn.extraction.capture_attention`) hands the attention probabilities of every
call to it, computed beside the unchanged SDPA path, so capturing never alters outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlengine.nn.encodings import ModelInputError

__all__ = [
    "N_PAIR_FEATURES",
    "AttentionPooling",
    "PairMLP",
    "PriceFocusedAttention",
    "causal_mask",
    "price_pair_features",
]

N_PAIR_FEATURES = 4
_TINY = 1e-12  # volatility floor: a flat window gives zero distances, not 0/0

WeightSink = Callable[[Tensor], None]


def causal_mask(length: int, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """``(L, L)`` additive mask: 0 on and below the diagonal, ``-inf`` above (j > i)."""
    full = torch.full((length, length), float("-inf"), dtype=dtype, device=device)
    return torch.triu(full, diagonal=1)


def price_pair_features(returns: Tensor, *, causal: bool) -> Tensor:
    """Pair features ``(B, L, L, 4)`` from one-bar log returns ``(B, L)``, oldest bar first.

    For query ``i`` and key ``j``: ``[|Δp_ij|, Δp_ij, |r_j| / σ, (j - i) / L]`` with
    ``Δp_ij = (p_j - p_i) / σ``, ``p`` the cumulative log return in the window (so
    ``p_j - p_i = log(close_j / close_i)``) and ``σ`` the root mean square of the returns:
    over bars ``<= i`` (row ``i``) when ``causal``, so that row ``i`` never depends on later
    bars, else over the whole window. Both are invariant to rescaling the returns.
    """
    if returns.ndim != 2:
        raise ModelInputError(f"returns must be 2-D (windows x bars), got {tuple(returns.shape)}")
    length = returns.shape[1]
    squares = returns.square()
    if causal:
        count = torch.arange(1, length + 1, dtype=returns.dtype, device=returns.device)
        sigma = (squares.cumsum(dim=1) / count).sqrt()
    else:
        sigma = squares.mean(dim=1, keepdim=True).sqrt().expand(-1, length)
    sigma = sigma.clamp_min(_TINY)[:, :, None]  # per query row i
    level = returns.cumsum(dim=1)
    delta = (level[:, None, :] - level[:, :, None]) / sigma
    magnitude = returns.abs()[:, None, :] / sigma
    pos = torch.arange(length, dtype=returns.dtype, device=returns.device)
    rel = ((pos[None, :] - pos[:, None]) / length).expand_as(delta)
    return torch.stack((delta.abs(), delta, magnitude, rel), dim=-1)


class PairMLP(nn.Module):
    """Shared learned trunk ``(B, L, L, P) -> (B, L, L, hidden)``: ``GELU(Linear(phi))``.

    Computed once per forward and fed to every layer, whose own per-head linear read-out
    turns it into that layer's bias: a tiny MLP per layer at the cost of one.
    """

    def __init__(self, hidden: int, n_features: int = N_PAIR_FEATURES) -> None:
        super().__init__()
        self.hidden = hidden
        self.linear = nn.Linear(n_features, hidden)

    def forward(self, pairs: Tensor) -> Tensor:
        return F.gelu(self.linear(pairs))


def _probabilities(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1)


class PriceFocusedAttention(nn.Module):
    """Multi-head self-attention with an optional learned price-structure bias.

    ``forward(x, pairs=..., causal=...)`` maps ``x`` ``(B, L, d_model)`` to
    ``(output (B, L, d_model), weights (B, H, L, L) or None)``. ``pairs`` ``(B, L, L,
    pair_dim)`` are the window's :func:`price_pair_features` (or their :class:`PairMLP`
    embedding); required when ``price_bias`` is on. ``dropout`` acts on the attention
    probabilities in training (it makes SDPA take its slower materialising path).
    Returned / captured weights are the attention probabilities before dropout.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        dropout: float = 0.0,
        price_bias: bool = True,
        pair_dim: int = N_PAIR_FEATURES,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ModelInputError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.dropout = dropout
        # No projection biases: a key bias shifts a whole score row (cancels in the softmax)
        # and a value bias passes through the row-stochastic weights into proj's bias.
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model)
        # No intercept: a constant added to every score of a row cancels in the softmax.
        self.bias = nn.Linear(pair_dim, n_heads, bias=False) if price_bias else None
        self.weight_sink: WeightSink | None = None

    def _mask(self, pairs: Tensor | None, causal: bool, x: Tensor) -> Tensor | None:
        length = x.shape[1]
        mask: Tensor | None = None
        if self.bias is not None:
            if pairs is None:
                raise ModelInputError("price-biased attention needs the window's pair features")
            if tuple(pairs.shape[:3]) != (x.shape[0], length, length):
                raise ModelInputError(
                    f"pair features {tuple(pairs.shape)} do not match {x.shape[0]} windows "
                    f"of {length} bars"
                )
            mask = self.bias(pairs.to(x.dtype)).permute(0, 3, 1, 2)
        if causal:
            tri = causal_mask(length, x.dtype, x.device)
            mask = tri if mask is None else mask + tri
        return mask

    def forward(
        self,
        x: Tensor,
        *,
        pairs: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batch, length, _ = x.shape
        head = self.d_model // self.n_heads
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, head).permute(2, 0, 3, 1, 4)
        mask = self._mask(pairs, causal, x)
        p_drop = self.dropout if self.training else 0.0
        weights: Tensor | None = None
        if need_weights:
            weights = _probabilities(q, k, mask)
            context = F.dropout(weights, p_drop, training=self.training) @ v
        else:
            if self.bias is None:  # no bias: the plain (causal) SDPA kernel
                context = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=p_drop, is_causal=causal
                )
            else:
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        if self.weight_sink is not None:
            if weights is None:
                with torch.no_grad():
                    self.weight_sink(_probabilities(q, k, mask))
            else:
                self.weight_sink(weights.detach())
        out = self.proj(context.transpose(1, 2).reshape(batch, length, self.d_model))
        return out, weights


class AttentionPooling(nn.Module):
    """Softmax-weighted mean over positions ``(B, L, d) -> (B, d)``, scored by a learned
    linear query. Its weights ``(B, L)`` go to ``weight_sink`` when set.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Linear(d_model, 1, bias=False)  # an intercept cancels in the softmax
        self.weight_sink: WeightSink | None = None

    def forward(self, h: Tensor) -> Tensor:
        weights = self.score(h).squeeze(-1).softmax(dim=-1)
        if self.weight_sink is not None:
            self.weight_sink(weights.detach())
        return (weights[:, :, None] * h).sum(dim=1)
