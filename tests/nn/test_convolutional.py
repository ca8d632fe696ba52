"""The CNN encoder: shapes, causality, seeds, gradients, manifests, attention extraction."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.nn.convolutional import CNNConfig, CNNEncoder
from mlengine.nn.encoders import ENCODERS, EncoderConfigError, build_encoder
from mlengine.nn.encodings import ModelInputError
from mlengine.nn.extraction import capture_attention, extract_attention, heatmap_frame

F, L, B, C = 5, 16, 6, 8


def small(**overrides: Any) -> CNNConfig:
    """A small config; dropout off so outputs are comparable."""
    values: dict[str, Any] = {
        "n_features": F,
        "window": L,
        "channels": C,
        "n_heads": 2,
        "n_layers": 3,
        "dropout": 0.0,
    }
    values.update(overrides)
    return CNNConfig(**values)


def encoder(seed: int = 0, **overrides: Any) -> CNNEncoder:
    return CNNEncoder(small(**overrides), seed=seed).eval()


def windows(seed: int = 0, batch: int = B, length: int = L) -> torch.Tensor:
    return torch.randn(batch, length, F, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
@pytest.mark.parametrize("positional", ["sinusoidal", "learnable", "none"])
def test_shapes(pooling: str, positional: str) -> None:
    enc = encoder(pooling=pooling, positional=positional)
    x = windows()
    assert enc(x).shape == (B, enc.embedding_dim) == (B, C)
    assert enc.conv_features(x).shape == enc.forward_sequence(x).shape == (B, L, C)
    assert enc(x[:, -5:]).shape == (B, C)  # shorter windows are fine
    assert ENCODERS["cnn"] is CNNEncoder


def test_last_pooling_is_the_decision_bar_state() -> None:
    enc = encoder()
    x = windows()
    torch.testing.assert_close(enc(x), enc.forward_sequence(x)[:, -1])
    mean = encoder(pooling="mean")
    torch.testing.assert_close(mean(x), mean.forward_sequence(x).mean(dim=1))


def test_receptive_field() -> None:
    assert small(kernel_size=3, n_layers=3, dilation=2).receptive_field == 1 + 2 * (1 + 2 + 4)
    assert small(kernel_size=5, n_layers=2, dilation=1).receptive_field == 9
    assert small(kernel_size=1).receptive_field == 1


@settings(max_examples=25, deadline=None)
@given(
    j=st.integers(1, L - 1),
    seed=st.integers(0, 1000),
    dilation=st.sampled_from([1, 2, 3]),
    kernel=st.sampled_from([2, 3, 5]),
)
def test_changing_bar_j_leaves_earlier_positions_alone(
    j: int, seed: int, dilation: int, kernel: int
) -> None:
    enc = encoder(seed=seed, dilation=dilation, kernel_size=kernel)
    x = windows(seed)
    changed = x.clone()
    changed[:, j] += 1.0 + torch.rand(B, F, generator=torch.Generator().manual_seed(seed))
    for part in (enc.conv_features, enc.forward_sequence):
        before, after = part(x), part(changed)
        assert torch.equal(after[:, :j], before[:, :j])  # bit for bit: nothing reads bar j
        assert not torch.allclose(after[:, j], before[:, j], atol=1e-4)


def test_the_receptive_field_bounds_what_a_conv_position_sees() -> None:
    enc = encoder(kernel_size=2, n_layers=2, dilation=2)  # receptive field 4
    x = windows()
    changed = x.clone()
    changed[:, 3] += 5.0
    before, after = enc.conv_features(x), enc.conv_features(changed)
    seen = ~torch.isclose(after, before).all(dim=(0, 2))
    assert seen.tolist() == [False] * 3 + [True] * 4 + [False] * (L - 7)


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    a, b = encoder(seed=7), encoder(seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    x = windows()
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), encoder(seed=8)(x))


def test_gradients_reach_every_parameter() -> None:
    enc = CNNEncoder(small(pooling="attention", positional="learnable", dropout=0.1), seed=1)
    enc.train()
    target = torch.randn(B, C, generator=torch.Generator().manual_seed(5))
    (enc(windows()) * target).sum().backward()
    names = dict(enc.named_parameters())
    assert any(n.startswith("convs.0.skip") for n in names)  # F != C: a 1x1 projection
    assert not any(n.startswith("convs.1.skip") for n in names)
    for name, p in names.items():
        assert p.grad is not None, name
        assert bool(p.grad.abs().sum() > 0), name


def test_manifest_round_trip_through_build_encoder() -> None:
    enc = encoder(seed=3, pooling="attention", dilation=3, kernel_size=4)
    manifest = json.loads(json.dumps(enc.manifest()))
    assert manifest["kind"] == "cnn"
    buffer = io.BytesIO()
    torch.save(enc.state_dict(), buffer)
    buffer.seek(0)
    fresh = build_encoder(**manifest, seed=99).eval()
    assert isinstance(fresh, CNNEncoder) and fresh.config == enc.config
    x = windows()
    assert not torch.allclose(fresh(x), enc(x))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), enc(x))


# --- attention extraction --------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["last", "attention"])
@pytest.mark.parametrize("training", [False, True])
def test_capture_does_not_change_outputs(pooling: str, training: bool) -> None:
    enc = encoder(pooling=pooling, dropout=0.2).train(training)
    x = windows()
    torch.manual_seed(11)  # same dropout masks in both runs
    plain = enc(x)
    torch.manual_seed(11)
    with capture_attention(enc) as capture:
        captured = enc(x)
    assert torch.equal(plain, captured)
    maps = capture.maps()
    assert maps.weights.shape == (B, 1, 2, L, L)
    assert (maps.pooling_weights is not None) == (pooling == "attention")


def test_extract_attention_and_heatmap() -> None:
    enc = encoder().train()
    x = windows()
    maps = extract_attention(enc, x, batch_size=4)
    assert enc.training  # mode restored
    enc.eval()
    assert maps.embeddings is not None
    np.testing.assert_allclose(maps.embeddings, enc(x).detach().numpy(), atol=1e-5)
    w = maps.weights
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert (w[..., np.triu(np.ones((L, L), dtype=bool), k=1)] == 0).all()  # causal
    frame = heatmap_frame(maps)
    assert list(frame.index) == ["layer 1 head 1", "layer 1 head 2", "rollout"]
    assert frame.shape == (3, L)
    np.testing.assert_allclose(frame.loc["layer 1 head 2"], w[-1, 0, 1, -1])
    np.testing.assert_allclose(frame.loc["rollout"].sum(), 1.0, rtol=1e-6)


# --- bad configuration and input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"channels": 9}, "channels=9 not divisible by n_heads=2"),
        ({"kernel_size": 0}, "kernel_size must be a positive integer"),
        ({"n_layers": 1.5}, "n_layers must be a positive integer"),
        ({"dilation": 0}, "dilation must be a positive integer"),
        ({"n_heads": True}, "n_heads must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"positional": "rotary"}, "unknown positional encoding 'rotary'"),
        ({"pooling": "max"}, "unknown pooling 'max'"),
        ({"n_features": 0}, "n_features must be a positive integer"),
    ],
)
def test_bad_configs_are_rejected(overrides: Any, match: str) -> None:
    with pytest.raises(EncoderConfigError, match=match):
        small(**overrides)


def test_build_and_input_errors() -> None:
    with pytest.raises(EncoderConfigError, match="unknown CNNConfig fields: colour"):
        build_encoder("cnn", {"n_features": 3, "colour": "red"})
    enc = encoder()
    with pytest.raises(ModelInputError, match="windows have 4 features, expected 5"):
        enc(windows()[:, :, :4])
    with pytest.raises(ModelInputError, match=r"windows have 17 bars, expected 1\.\.16"):
        enc(windows(length=L + 1))
    bad = windows()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ModelInputError, match=r"non-finite value at index \(1, 2, 3\)"):
        enc(bad)
