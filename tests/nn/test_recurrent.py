"""The LSTM window encoder: shapes, causality, seeds, gradients, manifest round trip."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.nn.encoders import ENCODERS, EncoderConfigError, build_encoder
from mlengine.nn.encodings import ModelInputError
from mlengine.nn.recurrent import LSTMConfig, LSTMEncoder

F, L, B, H = 5, 16, 6, 12


def small(**overrides: Any) -> LSTMConfig:
    """A small LSTM config for tests; dropout off so outputs are comparable."""
    values: dict[str, Any] = {"n_features": F, "window": L, "hidden_size": H, "dropout": 0.0}
    values.update(overrides)
    return LSTMConfig(**values)


def encoder(seed: int = 0, **overrides: Any) -> LSTMEncoder:
    return LSTMEncoder(small(**overrides), seed=seed).eval()


def windows(seed: int = 0, batch: int = B, length: int = L) -> torch.Tensor:
    return torch.randn(batch, length, F, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_shapes(pooling: str, n_layers: int) -> None:
    enc = encoder(pooling=pooling, n_layers=n_layers)
    x = windows()
    assert enc(x).shape == (B, enc.embedding_dim) == (B, H)
    assert enc.forward_sequence(x).shape == (B, L, H)
    assert enc(x[:, -5:]).shape == (B, H)  # shorter windows are fine


def test_pooling_last_and_mean() -> None:
    x = windows()
    last, mean = encoder(pooling="last"), encoder(pooling="mean")
    seq = last.forward_sequence(x)
    torch.testing.assert_close(last(x), seq[:, -1])
    torch.testing.assert_close(mean(x), seq.mean(dim=1))


@settings(max_examples=20, deadline=None)
@given(cut=st.integers(0, L - 2), seed=st.integers(0, 1000), n_layers=st.integers(1, 2))
def test_states_ignore_later_bars(cut: int, seed: int, n_layers: int) -> None:
    """Position ``i``'s state depends on bars ``<= i`` only (the truncation property)."""
    enc = encoder(n_layers=n_layers)
    x = windows(seed)
    changed = x.clone()
    changed[:, cut + 1 :] = windows(seed + 1)[:, cut + 1 :]
    before, after = enc.forward_sequence(x), enc.forward_sequence(changed)
    assert torch.equal(after[:, : cut + 1], before[:, : cut + 1])
    assert not torch.allclose(after[:, cut + 1 :], before[:, cut + 1 :], atol=1e-4)
    # a window cut at position ``cut`` is encoded as the prefix of the full one
    prefix = enc.forward_sequence(x[:, : cut + 1])
    torch.testing.assert_close(prefix, before[:, : cut + 1], rtol=0, atol=1e-6)


def test_each_window_is_encoded_on_its_own() -> None:
    """Changing a later window of the batch changes no earlier window's embedding."""
    enc = encoder()
    x = windows()
    changed = x.clone()
    changed[-1] = windows(9)[0]
    before, after = enc(x), enc(changed)
    torch.testing.assert_close(after[:-1], before[:-1], rtol=0, atol=1e-6)
    assert not torch.allclose(after[-1], before[-1], atol=1e-4)


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    a, b = encoder(seed=7), encoder(seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    x = windows()
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), encoder(seed=8)(x))


def test_forget_gate_bias_starts_at_one() -> None:
    enc = encoder(n_layers=2)
    for layer in range(2):
        ih = getattr(enc.lstm, f"bias_ih_l{layer}")
        hh = getattr(enc.lstm, f"bias_hh_l{layer}")
        assert torch.equal(ih[H : 2 * H], torch.ones(H))
        assert torch.equal(hh[H : 2 * H], torch.zeros(H))
        assert not torch.equal(ih[:H], torch.zeros(H))  # the other gates keep their init


def test_dropout_acts_in_training_only() -> None:
    enc = LSTMEncoder(small(dropout=0.5), seed=0)
    x = windows()
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a = enc(x)
        b = enc(x)
    assert not torch.equal(a, b)
    assert bool((a == 0).any())


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_gradients_reach_every_parameter(pooling: str) -> None:
    enc = LSTMEncoder(small(n_layers=2, dropout=0.1, pooling=pooling), seed=0).train()
    target = torch.randn(B, H, generator=torch.Generator().manual_seed(5))
    (enc(windows()) * target).sum().backward()
    names = dict(enc.named_parameters())
    assert {n.split(".")[0] for n in names} == {"input", "lstm"}
    for name, p in names.items():
        assert p.grad is not None, name
        assert bool(p.grad.abs().sum() > 0), name
    # the first bar of the window reaches the embedding through the recurrence
    x = windows().requires_grad_(True)
    enc.eval()
    enc(x).sum().backward()
    assert x.grad is not None and bool(x.grad[:, 0].abs().sum() > 0)


def test_manifest_round_trip_with_weights_only() -> None:
    enc = encoder(seed=3, n_layers=2, pooling="mean")
    manifest = json.loads(json.dumps(enc.manifest()))
    assert manifest["kind"] == "lstm" and ENCODERS["lstm"] is LSTMEncoder
    buffer = io.BytesIO()
    torch.save(enc.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = build_encoder(**manifest, seed=99).eval()
    assert isinstance(fresh, LSTMEncoder) and fresh.config == enc.config
    x = windows()
    assert not torch.allclose(fresh(x), enc(x))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), enc(x))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"n_layers": 1.5}, "n_layers must be a positive integer"),
        ({"n_features": 0}, "n_features must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"dropout": "0.1"}, r"dropout must lie in \[0, 1\)"),
        ({"pooling": "attention"}, "unknown pooling 'attention'"),
    ],
)
def test_bad_configs_are_rejected(overrides: Any, match: str) -> None:
    with pytest.raises(EncoderConfigError, match=match):
        small(**overrides)


def test_build_errors() -> None:
    with pytest.raises(EncoderConfigError, match="unknown LSTMConfig fields: d_model"):
        build_encoder("lstm", {"n_features": 3, "d_model": 8})
    with pytest.raises(EncoderConfigError, match="LSTMEncoder needs a LSTMConfig"):
        LSTMEncoder(object())  # type: ignore[arg-type]


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
    bad[2, 7, 3] = float("inf")
    with pytest.raises(ModelInputError, match=r"non-finite value at index \(2, 7, 3\)"):
        enc(bad)
