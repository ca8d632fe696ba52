"""Window encoders: a window of bars ``(B, L, F)`` in, one embedding ``(B, E)`` per window out.

Every encoder subclasses :class:`WindowEncoder` (a frozen dataclass config, ``kind``,
``embedding_dim``, ``forward(x, *, returns=None, time=None)``) and registers under its
``kind``, so a strategy can rebuild any encoder from the JSON manifest it saved next to the
``state_dict`` (``build_encoder(**encoder.manifest())`` and then
``load_state_dict(torch.load(path, weights_only=True))``). The windows are oldest bar first,
decision bar last (:class:`mlengine.data.loader.WindowDataset`); ``returns`` are the one-bar
log returns of the window's bars ``(B, L)`` and ``time`` their timestamps or calendar codes
(:mod:`mlengine.nn.encodings`), needed only by encoders configured to use them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

from mlengine.data.schema import MLEngineError
from mlengine.nn.attention import (
    N_PAIR_FEATURES,
    AttentionPooling,
    PairMLP,
    PriceFocusedAttention,
    price_pair_features,
)
from mlengine.nn.encodings import (
    LearnableEncoding,
    ModelInputError,
    SinusoidalEncoding,
    TimeEncoding,
    TimeInput,
)

__all__ = [
    "ENCODERS",
    "EncoderConfig",
    "EncoderConfigError",
    "SequenceEncoder",
    "TransformerConfig",
    "TransformerEncoder",
    "WindowEncoder",
    "build_encoder",
    "positional_encoding",
    "register_encoder",
    "seeded",
]


class EncoderConfigError(MLEngineError, ValueError):
    """An encoder configuration that cannot describe a network."""


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Fields every encoder shares: features per bar and (maximum) window length."""

    n_features: int
    window: int = 64

    def __post_init__(self) -> None:
        self._positive("n_features", "window")

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EncoderConfigError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EncoderConfigError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls(**values)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Initialise under ``seed`` without touching the caller's global RNG state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class WindowEncoder(nn.Module, ABC):
    """Base of the window encoders (transformer, LSTM, causal CNN; hierarchical later)."""

    kind: ClassVar[str]
    config_class: ClassVar[type[EncoderConfig]]
    config: EncoderConfig

    def __init__(self, config: EncoderConfig, *, seed: int | None = None) -> None:
        """Store ``config``; subclasses build their layers under ``seeded(seed)``."""
        super().__init__()
        if not isinstance(config, self.config_class):
            raise EncoderConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width ``E`` of the embeddings returned by ``forward``."""

    @abstractmethod
    def forward(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        """Embeddings ``(B, E)`` of the windows ``x`` ``(B, L, F)``."""

    def manifest(self) -> dict[str, Any]:
        """``{"kind", "config"}``, JSON-ready; ``build_encoder(**manifest)`` rebuilds it."""
        return {"kind": self.kind, "config": self.config.to_dict()}

    def check_windows(self, x: Tensor) -> Tensor:
        """``x`` as a float tensor of the parameters' dtype, after shape and value checks."""
        cfg = self.config
        if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ModelInputError(f"windows must be a float tensor (B, L, F), got {what}")
        if x.shape[2] != cfg.n_features:
            raise ModelInputError(f"windows have {x.shape[2]} features, expected {cfg.n_features}")
        if not 1 <= x.shape[1] <= cfg.window:
            raise ModelInputError(f"windows have {x.shape[1]} bars, expected 1..{cfg.window}")
        _check_finite(x, "windows")
        return x.to(next(self.parameters()).dtype)


def _check_finite(t: Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        where = [int(i) for i in (~torch.isfinite(t)).nonzero()[0]]
        raise ModelInputError(f"{name} hold a non-finite value at index {tuple(where)}")


ENCODERS: dict[str, type[WindowEncoder]] = {}

E = TypeVar("E", bound=type[WindowEncoder])


class SequenceEncoder(WindowEncoder):
    """A window encoder with a state per position (:meth:`forward_sequence`), pooled into
    the embedding: the decision bar's state (config ``pooling = "last"``), the mean
    (``"mean"``), or learned attention weights (``self.pooling``, an
    :class:`~mlengine.nn.attention.AttentionPooling` set by the subclass for
    ``"attention"``)."""

    # annotation only: a class attribute would shadow the submodule nn.Module registers
    pooling: AttentionPooling | None

    @abstractmethod
    def forward_sequence(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        """States ``(B, L, E)`` of every position of the windows ``x`` ``(B, L, F)``."""

    def pool(self, h: Tensor) -> Tensor:
        """States ``(B, L, E)`` to embeddings ``(B, E)`` as configured."""
        attention = getattr(self, "pooling", None)
        if attention is not None:
            return attention(h)
        return h[:, -1] if getattr(self.config, "pooling", "last") == "last" else h.mean(dim=1)

    def forward(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        return self.pool(self.forward_sequence(x, returns=returns, time=time))


def positional_encoding(kind: str, dim: int, window: int) -> nn.Module | None:
    """The bars-ago encoding ``kind`` (``sinusoidal``, ``learnable`` or ``none``)."""
    if kind == "sinusoidal":
        return SinusoidalEncoding(dim, max_len=window)
    if kind == "learnable":
        return LearnableEncoding(dim, max_len=window)
    return None


def register_encoder(cls: E) -> E:
    """Class decorator: make ``cls`` buildable by its ``kind``."""
    if cls.kind in ENCODERS:
        raise EncoderConfigError(f"an encoder of kind {cls.kind!r} is already registered")
    ENCODERS[cls.kind] = cls
    return cls


def build_encoder(
    kind: str, config: Mapping[str, Any] | EncoderConfig, *, seed: int | None = None
) -> WindowEncoder:
    """A fresh encoder of ``kind`` from its config (a dict as in ``manifest()`` or the object)."""
    if kind not in ENCODERS:
        raise EncoderConfigError(f"unknown encoder kind {kind!r}; known: {sorted(ENCODERS)}")
    cls = ENCODERS[kind]
    cfg = config if isinstance(config, EncoderConfig) else cls.config_class.from_dict(config)
    if not isinstance(cfg, cls.config_class):
        raise EncoderConfigError(f"{kind!r} needs a {cls.config_class.__name__}")
    return cls(cfg, seed=seed)


# --- transformer -------------------------------------------------------------------------

Positional = Literal["sinusoidal", "learnable", "none"]
Pooling = Literal["last", "mean", "attention"]


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(EncoderConfig):
    """Transformer encoder hyper-parameters (small CPU-friendly defaults).

    ``positional``: bars-ago encoding added after the input projection; ``time_encoding``
    adds hour/day-of-week embeddings (then ``time`` is required). ``price_bias`` turns on the
    price-structure attention bias, fed by ``returns`` or, when not given, by column
    ``return_feature`` of the windows (one-bar log returns; a constant rescaling, as from
    standardisation, does not change the bias). ``bias_hidden``: width of the shared pair
    trunk (:class:`~mlengine.nn.attention.PairMLP`), 0 for per-head linear coefficients on
    the raw pair features. ``dropout`` acts on the embeddings, residual branches and FFN;
    ``attention_dropout`` on the attention probabilities. ``pooling``: ``"last"`` takes the decision
    bar's final state, ``"mean"`` averages all positions, ``"attention"`` learns a softmax
    weighting of positions.
    """

    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    attention_dropout: float = 0.0
    causal: bool = True
    positional: Positional = "sinusoidal"
    time_encoding: bool = False
    price_bias: bool = True
    bias_hidden: int = 8
    return_feature: int | None = None
    pooling: Pooling = "last"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("d_model", "n_heads", "n_layers", "d_ff")
        if isinstance(self.bias_hidden, bool) or not isinstance(self.bias_hidden, int):
            raise EncoderConfigError(f"bias_hidden must be an integer, got {self.bias_hidden!r}")
        if self.bias_hidden < 0:
            raise EncoderConfigError(f"bias_hidden must be >= 0, got {self.bias_hidden}")
        if self.d_model % self.n_heads:
            raise EncoderConfigError(f"d_model={self.d_model} not divisible by n_heads")
        for name in ("dropout", "attention_dropout"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
                raise EncoderConfigError(f"{name} must lie in [0, 1), got {rate!r}")
        if self.positional not in ("sinusoidal", "learnable", "none"):
            raise EncoderConfigError(f"unknown positional encoding {self.positional!r}")
        if self.pooling not in ("last", "mean", "attention"):
            raise EncoderConfigError(f"unknown pooling {self.pooling!r}")
        rf = self.return_feature
        if rf is not None and (isinstance(rf, bool) or not 0 <= rf < self.n_features):
            raise EncoderConfigError(
                f"return_feature={rf!r} is not a column index below n_features={self.n_features}"
            )


class _Block(nn.Module):
    """Pre-norm residual block: ``h + attn(LN h)``, then ``h + FFN(LN h)``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = PriceFocusedAttention(
            cfg.d_model,
            cfg.n_heads,
            dropout=cfg.attention_dropout,
            price_bias=cfg.price_bias,
            pair_dim=cfg.bias_hidden or N_PAIR_FEATURES,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, h: Tensor, pairs: Tensor | None, causal: bool) -> Tensor:
        h = h + self.drop(self.attn(self.norm1(h), pairs=pairs, causal=causal)[0])
        return h + self.ffn(self.norm2(h))


@register_encoder
class TransformerEncoder(SequenceEncoder):
    """Input projection F -> d_model, positional (+ time) encoding, N pre-norm blocks of
    price-focused attention + FFN, final LayerNorm, pooling to a ``d_model`` embedding."""

    kind = "transformer"
    config_class = TransformerConfig
    config: TransformerConfig

    def __init__(self, config: TransformerConfig, *, seed: int | None = None) -> None:
        super().__init__(config, seed=seed)
        cfg = config
        with seeded(seed):
            self.input = nn.Linear(cfg.n_features, cfg.d_model)
            self.position = positional_encoding(cfg.positional, cfg.d_model, cfg.window)
            self.time = TimeEncoding(cfg.d_model) if cfg.time_encoding else None
            self.drop = nn.Dropout(cfg.dropout)
            self.pair_mlp = PairMLP(cfg.bias_hidden) if cfg.price_bias and cfg.bias_hidden else None
            self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
            self.norm = nn.LayerNorm(cfg.d_model)
            self.pooling = AttentionPooling(cfg.d_model) if cfg.pooling == "attention" else None

    @property
    def embedding_dim(self) -> int:
        return self.config.d_model

    def _returns(self, x: Tensor, returns: Tensor | None) -> Tensor | None:
        cfg = self.config
        if not cfg.price_bias:
            return None
        if returns is None:
            if cfg.return_feature is None:
                raise ModelInputError(
                    "the price bias needs returns: pass returns= or set return_feature"
                )
            return x[:, :, cfg.return_feature]
        if not isinstance(returns, Tensor) or not returns.is_floating_point():
            raise ModelInputError("returns must be a float tensor (B, L)")
        if tuple(returns.shape) != tuple(x.shape[:2]):
            raise ModelInputError(
                f"returns must have shape {tuple(x.shape[:2])}, got {tuple(returns.shape)}"
            )
        _check_finite(returns, "returns")
        return returns.to(x.dtype)

    def forward_sequence(
        self, x: Tensor, *, returns: Tensor | None = None, time: TimeInput | None = None
    ) -> Tensor:
        """Final hidden states ``(B, L, d_model)`` of every position."""
        cfg = self.config
        x = self.check_windows(x)
        r = self._returns(x, returns)
        h = self.input(x)
        if self.position is not None:
            h = self.position(h)
        if self.time is not None:
            if time is None:
                raise ModelInputError("time_encoding is on: pass time= (ns stamps or codes)")
            h = self.time(h, time)
        h = self.drop(h)
        pairs = None if r is None else price_pair_features(r, causal=cfg.causal)
        if pairs is not None and self.pair_mlp is not None:
            pairs = self.pair_mlp(pairs)
        for block in self.blocks:
            h = block(h, pairs, cfg.causal)
        return self.norm(h)
