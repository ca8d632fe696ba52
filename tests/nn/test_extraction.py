from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlengine.nn.attention import PriceFocusedAttention
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
from tests.nn.test_encoders import B, L, encoder, hourly_stamps, windows

LAYERS, HEADS, D = 2, 4, 16


@pytest.mark.parametrize("pooling", ["last", "attention"])
@pytest.mark.parametrize("training", [False, True])
def test_capture_does_not_change_outputs(pooling: str, training: bool) -> None:
    enc = encoder(pooling=pooling, dropout=0.2, attention_dropout=0.2).train(training)
    x = windows()
    torch.manual_seed(11)  # same dropout masks in both runs
    plain = enc(x)
    torch.manual_seed(11)
    with capture_attention(enc) as capture:
        captured = enc(x)
    assert torch.equal(plain, captured)
    maps = capture.maps()
    assert maps.weights.shape == (B, LAYERS, HEADS, L, L)
    assert maps.pooling == pooling
    assert (maps.pooling_weights is not None) == (pooling == "attention")


def test_captured_weights_are_the_ones_the_layer_uses() -> None:
    enc = encoder()
    inputs: list[tuple[torch.Tensor, dict[str, object]]] = []
    first = next(m for m in enc.modules() if isinstance(m, PriceFocusedAttention))
    hook = first.register_forward_pre_hook(
        lambda _m, args, kwargs: inputs.append((args[0], dict(kwargs))), with_kwargs=True
    )
    with capture_attention(enc) as capture:
        enc(windows())
    hook.remove()
    (x, kwargs) = inputs[0]
    _, weights = first(x, pairs=kwargs["pairs"], causal=kwargs["causal"], need_weights=True)
    assert weights is not None
    np.testing.assert_allclose(
        capture.maps().weights[:, 0], weights.detach().numpy(), rtol=0, atol=1e-6
    )


def test_extract_attention_in_inference_mode() -> None:
    enc = encoder(time_encoding=True).train()
    x, time = windows(), hourly_stamps()
    maps = extract_attention(enc, x, time=time, batch_size=4)  # two batches
    assert enc.training  # mode restored
    enc.eval()
    assert maps.embeddings is not None
    # batches of 4 and 6 may round differently in BLAS; equal to float precision
    np.testing.assert_allclose(maps.embeddings, enc(x, time=time).detach().numpy(), atol=1e-5)
    w = maps.weights
    assert w.shape == (B, LAYERS, HEADS, L, L) and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    future = np.triu(np.ones((L, L), dtype=bool), k=1)
    assert (w[..., future] == 0).all()  # causal: nothing flows from later bars
    assert maps.mean().shape == (LAYERS, HEADS, L, L)


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_bar_importance_is_a_distribution_per_window(pooling: str) -> None:
    maps = extract_attention(encoder(pooling=pooling), windows())
    importance = maps.bar_importance()
    assert importance.shape == (B, L)
    assert (importance >= 0).all()
    np.testing.assert_allclose(importance.sum(axis=1), 1.0, atol=1e-9)
    if pooling == "last":
        np.testing.assert_allclose(importance, maps.rollout()[:, -1])


def _stochastic(raw: np.ndarray) -> np.ndarray:
    return raw / raw.sum(axis=-1, keepdims=True)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6)).map(
            lambda s: (2, s[0], s[1], s[2], s[2])
        ),
        elements=st.floats(0.01, 1.0),
    )
)
def test_rollout_rows_sum_to_one(raw: np.ndarray) -> None:
    rollout = attention_rollout(_stochastic(raw))
    assert rollout.shape == (2, raw.shape[-1], raw.shape[-1])
    assert (rollout >= 0).all()
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(attention_rollout(_stochastic(raw), residual=False).sum(-1), 1.0)


def test_rollout_is_the_product_of_residual_adjusted_head_means() -> None:
    rng = np.random.default_rng(0)
    w = _stochastic(rng.random((3, 2, 5, 5)))  # layers, heads, L, L
    eye = np.eye(5)
    adjusted = [0.5 * w[i].mean(axis=0) + 0.5 * eye for i in range(3)]
    np.testing.assert_allclose(attention_rollout(w), adjusted[2] @ adjusted[1] @ adjusted[0])
    single = attention_rollout(w[:1], residual=False)
    np.testing.assert_allclose(single, w[0].mean(axis=0))
    lower = _stochastic(np.tril(rng.random((2, 2, 5, 5)) + 0.1))
    assert np.allclose(np.triu(attention_rollout(lower), k=1), 0.0)


def test_rollout_rejects_bad_shapes() -> None:
    with pytest.raises(ExtractionError, match=r"\(\.\.\., layers, heads, L, L\)"):
        attention_rollout(np.ones((2, 3, 3)))


def test_occlusion_finds_an_unused_and_a_constant_feature() -> None:
    enc = encoder(price_bias=False)
    with torch.no_grad():
        enc.input.weight[:, 2] = 0.0  # the model ignores feature 2
    x = windows()
    x[:, :, 4] = 0.5  # feature 4 never varies: replacing it by its mean changes nothing
    names = ["r", "a", "unused", "b", "const"]
    frame = feature_importance(enc, x, feature_names=names)
    assert list(frame.index) == names and frame.index.name == "feature"
    assert frame.loc["unused", "importance"] == 0.0
    assert frame.loc["const", "importance"] == 0.0
    assert (frame.loc[["r", "a", "b"], "importance"] > 0).all()
    assert frame["share"].sum() == pytest.approx(1.0)


def test_occlusion_through_a_score() -> None:
    enc = encoder()
    x = windows()
    frame = feature_importance(enc, x, score=lambda emb: np.zeros(len(emb)))
    assert (frame["importance"] == 0).all() and (frame["share"] == 0).all()
    weights = np.random.default_rng(1).standard_normal(16)
    scored = feature_importance(enc, x, score=lambda emb: emb @ weights)
    assert (scored["importance"] > 0).all()
    assert list(scored.index) == ["0", "1", "2", "3", "4"]
    with pytest.raises(ExtractionError, match="2 feature names for 5 features"):
        feature_importance(enc, x, feature_names=["a", "b"])


def test_heatmap_frame() -> None:
    maps = extract_attention(encoder(), windows())
    frame = heatmap_frame(maps)
    assert frame.shape == (LAYERS * HEADS + 1, L)
    assert frame.index[0] == "layer 1 head 1" and frame.index[-1] == "rollout"
    assert list(frame.columns) == list(range(-(L - 1), 1))
    np.testing.assert_allclose(frame.loc["layer 2 head 3"], maps.weights[-1, 1, 2, -1])
    np.testing.assert_allclose(frame.loc["rollout"], maps.bar_importance()[-1])
    stamps = pd.date_range("2024-01-01", periods=L, freq="h", tz="UTC")
    averaged = heatmap_frame(maps, window=None, bars=stamps)
    assert averaged.columns.equals(pd.Index(stamps, name="bar"))
    np.testing.assert_allclose(averaged.loc["rollout"].sum(), 1.0)
    with pytest.raises(ExtractionError, match="window 6 out of range for 6 windows"):
        heatmap_frame(maps, window=B)
    with pytest.raises(ExtractionError, match="3 bar labels for windows of 16 bars"):
        heatmap_frame(maps, bars=["a", "b", "c"])


def test_capture_refuses_models_without_attention_and_nesting() -> None:
    with (
        pytest.raises(ExtractionError, match="Linear has no attention layers"),
        capture_attention(torch.nn.Linear(2, 2)),
    ):
        pass
    enc = encoder()
    nested = pytest.raises(ExtractionError, match="already being captured")
    with capture_attention(enc), nested, capture_attention(enc):
        pass
    with pytest.raises(ExtractionError, match="nothing captured"):
        AttentionCapture(2).maps()


def test_capture_is_undone_even_after_an_error() -> None:
    enc = encoder()
    with pytest.raises(RuntimeError, match="boom"), capture_attention(enc):
        raise RuntimeError("boom")
    layers = [m for m in enc.modules() if isinstance(m, PriceFocusedAttention)]
    assert len(layers) == LAYERS and all(m.weight_sink is None for m in layers)


def test_attention_pooled_maps_need_pooling_weights() -> None:
    maps = AttentionMaps(np.full((1, 1, 1, 3, 3), 1 / 3), pooling="attention")
    with pytest.raises(ExtractionError, match="pooling weights were not captured"):
        maps.bar_importance()
