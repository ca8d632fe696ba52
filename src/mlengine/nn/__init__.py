"""Neural building blocks: positional encodings, price-focused attention, window encoders
(transformer, LSTM, causal CNN with attention, hierarchical over timeframes), attention
extraction."""

from mlengine.nn.attention import (
    AttentionPooling,
    PairMLP,
    PriceFocusedAttention,
    causal_mask,
    price_pair_features,
)
from mlengine.nn.convolutional import CNNConfig, CNNEncoder
from mlengine.nn.encoders import (
    ENCODERS,
    EncoderConfig,
    EncoderConfigError,
    TransformerConfig,
    TransformerEncoder,
    WindowEncoder,
    build_encoder,
    register_encoder,
)
from mlengine.nn.encodings import (
    CalendarCodes,
    LearnableEncoding,
    ModelInputError,
    SinusoidalEncoding,
    TimeEncoding,
    TimeInput,
    calendar_codes,
    window_timestamps,
)
from mlengine.nn.extraction import (
    AttentionCapture,
    AttentionMaps,
    ExtractionError,
    attention_rollout,
    capture_attention,
    extract_attention,
    feature_importance,
    heatmap_frame,
)
from mlengine.nn.hierarchical import HierarchicalConfig, HierarchicalEncoder, timeframe_weights
from mlengine.nn.recurrent import LSTMConfig, LSTMEncoder

__all__ = [
    "ENCODERS",
    "AttentionCapture",
    "AttentionMaps",
    "AttentionPooling",
    "CNNConfig",
    "CNNEncoder",
    "CalendarCodes",
    "EncoderConfig",
    "EncoderConfigError",
    "ExtractionError",
    "HierarchicalConfig",
    "HierarchicalEncoder",
    "LSTMConfig",
    "LSTMEncoder",
    "LearnableEncoding",
    "ModelInputError",
    "PairMLP",
    "PriceFocusedAttention",
    "SinusoidalEncoding",
    "TimeEncoding",
    "TimeInput",
    "TransformerConfig",
    "TransformerEncoder",
    "WindowEncoder",
    "attention_rollout",
    "build_encoder",
    "calendar_codes",
    "capture_attention",
    "causal_mask",
    "extract_attention",
    "feature_importance",
    "heatmap_frame",
    "price_pair_features",
    "register_encoder",
    "timeframe_weights",
    "window_timestamps",
]
