from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.nn.encoders import (
    ENCODERS,
    EncoderConfig,
    EncoderConfigError,
    TransformerConfig,
    TransformerEncoder,
    build_encoder,
    register_encoder,
)
from mlengine.nn.encodings import ModelInputError

F, L, B = 5, 16, 6


def small(**overrides: Any) -> TransformerConfig:
    """A small transformer config for tests; dropout off so outputs are comparable."""
    values: dict[str, Any] = {
        "n_features": F,
        "window": L,
        "d_model": 16,
        "n_heads": 4,
        "d_ff": 32,
        "dropout": 0.0,
        "return_feature": 0,
    }
    values.update(overrides)
    return TransformerConfig(**values)


def windows(seed: int = 0, batch: int = B, length: int = L) -> torch.Tensor:
    """Random windows whose column 0 looks like one-bar log returns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, F, generator=g)
    x[:, :, 0] *= 0.01
    return x


def hourly_stamps(batch: int = B, length: int = L, stride: int = 29) -> torch.Tensor:
    """ns stamps of hourly windows starting ``stride`` hours apart (all hours and weekdays
    appear when batch * stride spans a week)."""
    index = pd.date_range("2024-01-01", periods=stride * batch + length, freq="h", tz="UTC")
    ns = torch.from_numpy(index.as_unit("ns").asi8)
    return torch.stack([ns[k * stride : k * stride + length] for k in range(batch)])


def encoder(seed: int = 0, **overrides: Any) -> TransformerEncoder:
    return TransformerEncoder(small(**overrides), seed=seed).eval()


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
@pytest.mark.parametrize("positional", ["sinusoidal", "learnable", "none"])
def test_shapes(pooling: str, positional: str) -> None:
    enc = encoder(pooling=pooling, positional=positional)
    x = windows()
    assert enc(x).shape == (B, enc.embedding_dim) == (B, 16)
    assert enc.forward_sequence(x).shape == (B, L, 16)
    assert enc(x[:, -5:]).shape == (B, 16)  # shorter windows are fine


def test_last_pooling_is_the_decision_bar_state() -> None:
    enc = encoder()
    x = windows()
    torch.testing.assert_close(enc(x), enc.forward_sequence(x)[:, -1])


@settings(max_examples=20, deadline=None)
@given(cut=st.integers(0, L - 2), seed=st.integers(0, 1000))
def test_causal_outputs_ignore_later_bars(cut: int, seed: int) -> None:
    enc = encoder(time_encoding=True)
    x, time = windows(seed), hourly_stamps()
    changed = x.clone()
    changed[:, cut + 1 :] = windows(seed + 1)[:, cut + 1 :]
    before = enc.forward_sequence(x, time=time)
    after = enc.forward_sequence(changed, time=time)
    torch.testing.assert_close(after[:, : cut + 1], before[:, : cut + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, cut + 1 :], before[:, cut + 1 :], atol=1e-3)


def test_non_causal_outputs_see_later_bars() -> None:
    enc = encoder(causal=False)
    x = windows()
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(enc.forward_sequence(x)[:, 0], enc.forward_sequence(changed)[:, 0])


def _permuted(enc: TransformerEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(1))
    x = windows()
    return enc.forward_sequence(x[:, perm]), enc.forward_sequence(x)[:, perm]


def test_without_positions_and_bias_the_encoder_is_permutation_equivariant() -> None:
    enc = encoder(positional="none", price_bias=False, causal=False)
    out_perm, perm_out = _permuted(enc)
    torch.testing.assert_close(out_perm, perm_out, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"positional": "sinusoidal", "price_bias": False},
        {"positional": "learnable", "price_bias": False},
        {"positional": "none", "price_bias": True},
        {"positional": "none", "price_bias": True, "bias_hidden": 0},
    ],
)
def test_positions_or_price_bias_break_permutation_equivariance(overrides: Any) -> None:
    enc = encoder(causal=False, **overrides)
    out_perm, perm_out = _permuted(enc)
    assert not torch.allclose(out_perm, perm_out, atol=1e-4)


@pytest.mark.parametrize("bias_hidden", [8, 0])
def test_gradients_reach_every_parameter(bias_hidden: int) -> None:
    enc = encoder(
        positional="learnable",
        time_encoding=True,
        pooling="attention",
        bias_hidden=bias_hidden,
        dropout=0.1,
        attention_dropout=0.1,
    ).train()
    target = torch.randn(B, 16, generator=torch.Generator().manual_seed(5))
    loss = (enc(windows(), time=hourly_stamps()) * target).sum()
    loss.backward()
    names = dict(enc.named_parameters())
    assert any(n.startswith("pair_mlp") for n in names) == (bias_hidden > 0)
    assert any(".attn.bias." in n for n in names)
    for name, p in names.items():
        assert p.grad is not None, name
        assert bool(p.grad.abs().sum() > 0), name


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    a, b = encoder(seed=7), encoder(seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    x = windows()
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), encoder(seed=8)(x))


def test_torch_manual_seed_gives_identical_builds() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        enc = TransformerEncoder(small(dropout=0.1)).train()  # dropout draws from the RNG too
        outs.append(enc(windows()))
    assert torch.equal(outs[0], outs[1])


def test_state_dict_round_trip_with_weights_only() -> None:
    enc = encoder(seed=3, positional="learnable", time_encoding=True, pooling="attention")
    manifest = json.loads(json.dumps(enc.manifest()))
    buffer = io.BytesIO()
    torch.save(enc.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = build_encoder(**manifest, seed=99).eval()
    assert fresh.config == enc.config
    x, time = windows(), hourly_stamps()
    assert not torch.allclose(fresh(x, time=time), enc(x, time=time))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x, time=time), enc(x, time=time))


def test_returns_from_a_column_or_given_explicitly() -> None:
    enc = encoder()
    x = windows()
    torch.testing.assert_close(enc(x), enc(x, returns=x[:, :, 0].clone()))
    bare = encoder(return_feature=None)
    torch.testing.assert_close(bare(x, returns=x[:, :, 0] * 3.0), enc(x))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"d_model": 10}, "not divisible"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"window": True}, "window must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"attention_dropout": -0.1}, r"attention_dropout must lie in \[0, 1\)"),
        ({"positional": "rotary"}, "unknown positional encoding 'rotary'"),
        ({"pooling": "max"}, "unknown pooling 'max'"),
        ({"return_feature": F}, "return_feature=5 is not a column index"),
        ({"bias_hidden": -1}, "bias_hidden must be >= 0"),
    ],
)
def test_bad_configs_are_rejected(overrides: Any, match: str) -> None:
    with pytest.raises(EncoderConfigError, match=match):
        small(**overrides)


def test_build_encoder_errors() -> None:
    with pytest.raises(EncoderConfigError, match="unknown encoder kind 'gru'"):
        build_encoder("gru", {"n_features": 3})
    with pytest.raises(EncoderConfigError, match="unknown TransformerConfig fields: colour"):
        build_encoder("transformer", {"n_features": 3, "colour": "red"})
    with pytest.raises(EncoderConfigError, match="already registered"):
        register_encoder(TransformerEncoder)
    assert ENCODERS["transformer"] is TransformerEncoder
    with pytest.raises(EncoderConfigError, match="TransformerEncoder needs a TransformerConfig"):
        TransformerEncoder(EncoderConfig(n_features=3))  # type: ignore[arg-type]


def test_bad_inputs_are_rejected() -> None:
    enc = encoder()
    x = windows()
    with pytest.raises(ModelInputError, match="windows have 4 features, expected 5"):
        enc(x[:, :, :4])
    with pytest.raises(ModelInputError, match=r"windows have 17 bars, expected 1\.\.16"):
        enc(windows(length=L + 1))
    with pytest.raises(ModelInputError, match="float tensor"):
        enc(x.long())
    bad = x.clone()
    bad[2, 7, 3] = float("nan")
    with pytest.raises(
        ModelInputError, match=r"windows hold a non-finite value at index \(2, 7, 3\)"
    ):
        enc(bad)
    with pytest.raises(ModelInputError, match=r"returns must have shape \(6, 16\)"):
        enc(x, returns=x[:, :-1, 0])
    r = x[:, :, 0].clone()
    r[0, 0] = float("inf")
    with pytest.raises(ModelInputError, match="returns hold a non-finite value"):
        enc(x, returns=r)
    with pytest.raises(ModelInputError, match="pass returns= or set return_feature"):
        encoder(return_feature=None)(x)
    with pytest.raises(ModelInputError, match="time_encoding is on"):
        encoder(time_encoding=True)(x)
