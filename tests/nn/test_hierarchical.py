from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch

from mlengine.nn.encoders import ENCODERS, EncoderConfigError, TransformerEncoder, build_encoder
from mlengine.nn.encodings import ModelInputError
from mlengine.nn.hierarchical import HierarchicalConfig, HierarchicalEncoder, timeframe_weights

B, K, L, F = 6, 3, 12, 4


def config(**overrides: Any) -> HierarchicalConfig:
    """A small config; dropout off so outputs are comparable."""
    values: dict[str, Any] = {
        "n_features": F,
        "window": L,
        "n_timeframes": K,
        "d_model": 16,
        "n_heads": 2,
        "d_ff": 32,
        "dropout": 0.0,
        "return_feature": 0,
    }
    values.update(overrides)
    return HierarchicalConfig(**values)


def encoder(seed: int = 0, **overrides: Any) -> HierarchicalEncoder:
    return HierarchicalEncoder(config(**overrides), seed=seed).eval()


def windows(seed: int = 0, batch: int = B) -> torch.Tensor:
    """Random packed windows whose column 0 looks like one-bar log returns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, K, L, F, generator=g)
    x[..., 0] *= 0.01
    return x


def test_registered_with_transformer_branches() -> None:
    enc = encoder()
    assert ENCODERS["hierarchical"] is HierarchicalEncoder
    assert len(enc.branches) == K
    assert all(isinstance(b, TransformerEncoder) for b in enc.branches)


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_shapes(pooling: str) -> None:
    enc = encoder(pooling=pooling)
    x = windows()
    assert enc(x).shape == (B, enc.embedding_dim) == (B, 16)
    assert enc.branch_embeddings(x).shape == (B, K, 16)
    emb, w = enc.forward_with_weights(x)
    assert emb.shape == (B, 16) and w.shape == (B, K)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(B))
    assert enc(x[:, :, -5:]).shape == (B, 16)  # shorter windows are fine


def test_deterministic_with_a_seed() -> None:
    x = windows()
    torch.testing.assert_close(encoder(seed=3)(x), encoder(seed=3)(x), rtol=0, atol=0)
    assert not torch.allclose(encoder(seed=3)(x), encoder(seed=4)(x))


def test_seed_leaves_global_rng_alone() -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    encoder(seed=5)
    torch.testing.assert_close(torch.rand(3), expected)


def test_gradients_reach_every_branch_and_the_cross_attention() -> None:
    enc = HierarchicalEncoder(config(), seed=0).train()
    x = windows().requires_grad_(True)
    enc(x).pow(2).sum().backward()
    assert x.grad is not None and bool((x.grad.abs().sum(dim=(0, 2, 3)) > 0).all())
    for name, param in enc.named_parameters():
        assert param.grad is not None, name
    assert enc.across.query.grad is not None and float(enc.across.query.grad.abs().sum()) > 0


def test_weight_extraction_does_not_change_outputs() -> None:
    enc = HierarchicalEncoder(config(), seed=0).train()
    x = windows()
    enc.eval()
    before = enc(x)
    enc.train()
    w = timeframe_weights(enc, x, batch_size=4)  # two batches
    assert enc.training  # mode restored
    enc.eval()
    torch.testing.assert_close(enc(x), before, rtol=0, atol=0)
    torch.testing.assert_close(torch.from_numpy(w).float(), enc.forward_with_weights(x)[1])
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(timeframe_weights(enc, x.numpy()), w)
    assert timeframe_weights(enc, x[:0]).shape == (0, K)


def test_weights_depend_on_the_timeframe_embeddings() -> None:
    enc = encoder()
    w = timeframe_weights(enc, windows(0))
    assert not np.allclose(w, 1.0 / K)
    assert not np.allclose(w, timeframe_weights(enc, windows(1)))


def test_manifest_round_trip() -> None:
    enc = encoder(seed=7, pooling="attention")
    doc = json.loads(json.dumps(enc.manifest()))
    assert doc["kind"] == "hierarchical"
    rebuilt = build_encoder(**doc)
    buffer = io.BytesIO()
    torch.save(enc.state_dict(), buffer)
    buffer.seek(0)
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    rebuilt.eval()
    x = windows()
    torch.testing.assert_close(rebuilt(x), enc(x), rtol=0, atol=0)
    assert isinstance(rebuilt, HierarchicalEncoder) and rebuilt.config == enc.config


@pytest.mark.parametrize("k", range(K))
def test_a_timeframe_window_acts_through_its_own_branch_only(k: int) -> None:
    enc = encoder()
    x = windows()
    changed = x.clone()
    changed[:, k] = windows(seed=9)[:, k]
    before, after = enc.branch_embeddings(x), enc.branch_embeddings(changed)
    others = [j for j in range(K) if j != k]
    torch.testing.assert_close(after[:, others], before[:, others], rtol=0, atol=0)
    assert not torch.allclose(after[:, k], before[:, k])
    assert not torch.allclose(enc(changed), enc(x))


def test_without_price_bias_needs_no_return_column() -> None:
    enc = encoder(return_feature=None)
    assert enc(windows()).shape == (B, 16)


def test_explicit_returns_feed_the_price_bias() -> None:
    enc = encoder()
    x = windows()
    torch.testing.assert_close(enc(x, returns=x[..., 0]), enc(x), rtol=0, atol=0)
    assert not torch.allclose(enc(x, returns=x[..., 1]), enc(x))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n_timeframes": 0}, "n_timeframes"),
        ({"n_heads": 3}, "divisible"),
        ({"return_feature": F}, "return_feature"),
        ({"pooling": "max"}, "pooling"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(EncoderConfigError, match=match):
        config(**overrides)


def test_unknown_manifest_field() -> None:
    doc = encoder().manifest()
    doc["config"]["timeframes"] = ["1h"]
    with pytest.raises(EncoderConfigError, match="timeframes"):
        build_encoder(**doc)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(B, L, F), r"\(B, K, L, F\)"),
        (torch.zeros(B, K, L, F, dtype=torch.int64), r"\(B, K, L, F\)"),
        (torch.zeros(B, K + 1, L, F), "4 timeframes, expected 3"),
        (torch.zeros(B, K, L, F + 1), "features"),
        (torch.zeros(B, K, L + 1, F), "bars"),
    ],
)
def test_bad_windows(x: torch.Tensor, match: str) -> None:
    with pytest.raises(ModelInputError, match=match):
        encoder()(x)


def test_non_finite_window() -> None:
    x = windows()
    x[2, 1, 3, 0] = float("nan")
    with pytest.raises(ModelInputError, match="non-finite"):
        encoder()(x)


def test_bad_returns_and_time() -> None:
    x = windows()
    with pytest.raises(ModelInputError, match="returns must have shape"):
        encoder()(x, returns=x[:, 0, :, 0])
    with pytest.raises(ModelInputError, match="no time input"):
        encoder()(x, time=torch.zeros(B, L, dtype=torch.int64))


def test_weights_need_a_hierarchical_encoder() -> None:
    flat = TransformerEncoder(config().branch_config(), seed=0)
    with pytest.raises(EncoderConfigError, match="HierarchicalEncoder"):
        timeframe_weights(flat, windows())  # type: ignore[arg-type]
