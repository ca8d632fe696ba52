from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.nn.attention import (
    AttentionPooling,
    PairMLP,
    PriceFocusedAttention,
    causal_mask,
    price_pair_features,
)
from mlengine.nn.encodings import ModelInputError

B, L, D, H = 3, 12, 16, 4


def _returns(seed: int = 0, batch: int = B, length: int = L) -> torch.Tensor:
    return 0.01 * torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))


def _layer(price_bias: bool = True, seed: int = 0, **kw: object) -> PriceFocusedAttention:
    torch.manual_seed(seed)
    return PriceFocusedAttention(D, H, price_bias=price_bias, **kw).eval()  # type: ignore[arg-type]


# --- pair features -------------------------------------------------------------------------


def test_pair_features_are_price_distances_in_volatility_units() -> None:
    close = np.array([[100.0, 101.0, 99.0, 102.0, 102.0]])
    r = np.diff(np.log(np.concatenate([[100.0], close[0]])))[None, :]
    pairs = price_pair_features(torch.tensor(r), causal=False)
    assert pairs.shape == (1, 5, 5, 4)
    sigma = np.sqrt((r**2).mean())
    delta = np.log(close[0][None, :] / close[0][:, None]) / sigma  # [i, j] = log(c_j / c_i)
    np.testing.assert_allclose(pairs[0, :, :, 1].numpy(), delta, atol=1e-9)
    np.testing.assert_allclose(pairs[0, :, :, 0].numpy(), np.abs(delta), atol=1e-9)
    np.testing.assert_allclose(pairs[0, 2, :, 2].numpy(), np.abs(r[0]) / sigma)
    pos = np.arange(5)
    np.testing.assert_allclose(pairs[0, :, :, 3].numpy(), (pos[None, :] - pos[:, None]) / 5)


@pytest.mark.parametrize("causal", [True, False])
def test_pair_features_ignore_the_scale_of_the_returns(causal: bool) -> None:
    r = _returns()
    torch.testing.assert_close(
        price_pair_features(r, causal=causal), price_pair_features(250.0 * r, causal=causal)
    )


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(0, L - 2), seed=st.integers(0, 10_000))
def test_causal_pair_features_of_row_i_ignore_later_bars(cut: int, seed: int) -> None:
    r = _returns(seed)
    changed = r.clone()
    changed[:, cut + 1 :] = _returns(seed + 1)[:, cut + 1 :]
    a = price_pair_features(r, causal=True)[:, : cut + 1, : cut + 1]
    b = price_pair_features(changed, causal=True)[:, : cut + 1, : cut + 1]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_flat_window_gives_finite_zero_distances() -> None:
    pairs = price_pair_features(torch.zeros(2, 6), causal=True)
    assert bool(torch.isfinite(pairs).all())
    assert bool((pairs[..., :3] == 0).all())


def test_pair_features_need_2d_returns() -> None:
    with pytest.raises(ModelInputError, match="returns must be 2-D"):
        price_pair_features(torch.zeros(2, 6, 1), causal=True)


# --- attention ------------------------------------------------------------------------------


@pytest.mark.parametrize("price_bias", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_and_explicit_paths_agree(price_bias: bool, causal: bool) -> None:
    layer = _layer(price_bias)
    x = torch.randn(B, L, D)
    pairs = price_pair_features(_returns(), causal=causal) if price_bias else None
    fast, none = layer(x, pairs=pairs, causal=causal)
    slow, weights = layer(x, pairs=pairs, causal=causal, need_weights=True)
    assert none is None and weights is not None
    assert fast.shape == (B, L, D) and weights.shape == (B, H, L, L)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, L), rtol=0, atol=1e-6)


def test_causal_weights_to_future_positions_are_exactly_zero() -> None:
    layer = _layer()
    pairs = price_pair_features(_returns(), causal=True)
    _, weights = layer(torch.randn(B, L, D), pairs=pairs, causal=True, need_weights=True)
    assert weights is not None
    future = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    assert bool((weights[..., future] == 0).all())
    assert bool((weights[..., ~future] > 0).all())


def test_price_bias_changes_the_weights_and_reads_its_own_pairs() -> None:
    layer = _layer()
    x = torch.randn(B, L, D)
    _, w1 = layer(x, pairs=price_pair_features(_returns(1), causal=False), need_weights=True)
    _, w2 = layer(x, pairs=price_pair_features(_returns(2), causal=False), need_weights=True)
    assert w1 is not None and w2 is not None
    assert not torch.allclose(w1, w2, atol=1e-4)


def test_bias_over_a_pair_trunk() -> None:
    torch.manual_seed(0)
    trunk = PairMLP(8)
    layer = PriceFocusedAttention(D, H, pair_dim=8).eval()
    pairs = trunk(price_pair_features(_returns(), causal=True))
    assert pairs.shape == (B, L, L, 8)
    fast, _ = layer(torch.randn(B, L, D), pairs=pairs, causal=True)
    assert fast.shape == (B, L, D)


def test_permutation_equivariance_without_bias_only() -> None:
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(3))
    x = torch.randn(B, L, D)
    plain = _layer(price_bias=False)
    torch.testing.assert_close(plain(x[:, perm])[0], plain(x)[0][:, perm], rtol=0, atol=1e-6)
    biased = _layer(price_bias=True)
    r = _returns()
    out = biased(x, pairs=price_pair_features(r, causal=False))[0]
    out_perm = biased(x[:, perm], pairs=price_pair_features(r[:, perm], causal=False))[0]
    assert not torch.allclose(out_perm, out[:, perm], atol=1e-4)


def test_weight_sink_sees_the_weights_and_leaves_outputs_alone() -> None:
    layer = _layer()
    x = torch.randn(B, L, D)
    pairs = price_pair_features(_returns(), causal=True)
    before, _ = layer(x, pairs=pairs, causal=True)
    seen: list[torch.Tensor] = []
    layer.weight_sink = seen.append
    after, _ = layer(x, pairs=pairs, causal=True)
    _, weights = layer(x, pairs=pairs, causal=True, need_weights=True)
    assert torch.equal(before, after)
    assert len(seen) == 2 and weights is not None
    torch.testing.assert_close(seen[0], weights, rtol=0, atol=1e-6)
    assert not seen[0].requires_grad


def test_attention_input_errors() -> None:
    layer = _layer()
    with pytest.raises(ModelInputError, match="needs the window's pair features"):
        layer(torch.randn(B, L, D))
    with pytest.raises(ModelInputError, match=r"pair features \(3, 5, 5, 4\) do not match"):
        layer(torch.randn(B, L, D), pairs=price_pair_features(_returns(length=5), causal=False))
    with pytest.raises(ModelInputError, match="not divisible"):
        PriceFocusedAttention(10, 4)


def test_causal_mask() -> None:
    m = causal_mask(3, torch.float32)
    assert m.tolist() == [[0, -np.inf, -np.inf], [0, 0, -np.inf], [0, 0, 0]]


def test_attention_pooling_is_a_convex_combination() -> None:
    torch.manual_seed(0)
    pool = AttentionPooling(D)
    seen: list[torch.Tensor] = []
    pool.weight_sink = seen.append
    h = torch.randn(B, L, D)
    out = pool(h)
    assert out.shape == (B, D)
    (w,) = seen
    torch.testing.assert_close(w.sum(-1), torch.ones(B))
    torch.testing.assert_close(out, torch.einsum("bl,bld->bd", w, h))
