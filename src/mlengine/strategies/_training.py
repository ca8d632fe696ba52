"""Private helpers of the neural strategies: the encoder-plus-linear-head network, its
seeded training loop with early stopping, and batched inference."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from mlengine.data.loader import WindowDataset, sliding_windows
from mlengine.nn.encoders import WindowEncoder

__all__ = ["EncoderNet", "Gather", "TrainConfig", "deterministic", "infer", "sliding", "train"]

Gather = Callable[[np.ndarray], np.ndarray]
"""The encoder inputs of the decision bars ``idx``: float32 ``(len(idx), ...)``."""


class EncoderNet(nn.Module):
    """A window encoder and a linear head: one logit of "up" (``n_outputs = 1``, binary)
    or one logit per class (``n_outputs > 1``, softmax)."""

    def __init__(self, encoder: WindowEncoder, n_outputs: int = 1) -> None:
        super().__init__()
        self.encoder = encoder
        self.n_outputs = n_outputs
        self.head = nn.Linear(encoder.embedding_dim, n_outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings ``(B, E)`` and logits (``(B,)`` binary, else ``(B, C)``) of the
        windows ``x`` ``(B, L, F)``."""
        z = self.encoder(x)
        logits = self.head(z)
        return z, logits.squeeze(-1) if self.n_outputs == 1 else logits

    def probabilities(self, logits: Tensor) -> np.ndarray:
        """Probability of "up" ``(B,)`` (binary) or of each class ``(B, C)``."""
        if self.n_outputs == 1:
            return torch.sigmoid(logits.reshape(logits.shape[0])).numpy().astype(np.float64)
        return torch.softmax(logits, dim=-1).numpy().astype(np.float64)

    def loss(self) -> nn.Module:
        """Mean binary or categorical cross-entropy of logits against targets."""
        return nn.BCEWithLogitsLoss() if self.n_outputs == 1 else nn.CrossEntropyLoss()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int


@contextmanager
def deterministic(seed: int | None = None) -> Iterator[None]:
    """Seed torch (when ``seed`` is given), ask for deterministic kernels and use one
    intra-op thread, restoring the caller's RNG state and settings after.

    One thread: these models are small, and with several threads on a busy 2-core machine
    torch's OpenMP workers contend (a control fit measured 4 s on one thread, 89 s on two);
    it also makes results independent of the machine's core count.
    """
    before = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(before)


def sliding(features: np.ndarray, window: int) -> Gather:
    """The windows of ``window`` rows of ``features`` ending at each decision bar."""
    windows = sliding_windows(np.ascontiguousarray(features, dtype=np.float32), window)
    return lambda idx: np.ascontiguousarray(windows[np.asarray(idx) - (window - 1)])


class _Gathered(Dataset[tuple[Tensor, Tensor]]):
    """Whole batches of gathered inputs and targets: item ``positions`` (a list from a
    batch sampler) is the batch of decision bars ``idx[positions]``."""

    def __init__(self, gather: Gather, target: np.ndarray, idx: np.ndarray) -> None:
        self.gather, self.target, self.idx = gather, target, np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, positions: list[int]) -> tuple[Tensor, Tensor]:
        rows = self.idx[positions]
        return torch.from_numpy(self.gather(rows)), torch.from_numpy(self.target[rows])


def _gathered_loader(
    gather: Gather,
    target: np.ndarray,
    idx: np.ndarray,
    batch_size: int,
    gen: torch.Generator | None,
) -> DataLoader[tuple[Tensor, Tensor]]:
    """Batches as ``DataLoader(batch_size, shuffle=gen is not None, generator=gen)`` gives."""
    data = _Gathered(gather, target, idx)
    order = RandomSampler(data, generator=gen) if gen is not None else SequentialSampler(data)
    batches = BatchSampler(order, batch_size, drop_last=False)
    return DataLoader(data, sampler=batches, batch_size=None, generator=gen)


def _loss(net: EncoderNet, loader: DataLoader[tuple[Tensor, Tensor]]) -> float:
    fn = net.loss()
    total, count = 0.0, 0
    net.eval()
    with torch.no_grad():
        for x, y in loader:
            total += float(fn(net(x)[1], y)) * int(y.shape[0])
            count += int(y.shape[0])
    return total / max(count, 1)


def train(
    net: EncoderNet,
    features: np.ndarray,
    target: np.ndarray,
    window: int,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    *,
    gather: Gather | None = None,
) -> tuple[int, float]:
    """Train ``net`` with cross-entropy on ``target`` (0/1 float per bar when binary, class
    ids otherwise) at the decision bars ``train_idx`` (repeats allowed: oversampling);
    keep the weights of the epoch with the lowest loss on ``val_idx`` (early stopping after
    ``patience`` epochs without improvement). Returns (best epoch, best validation loss).
    The inputs are the ``window``-row windows of ``features``, or ``gather(idx)`` when
    given (then ``features`` and ``window`` are unused)."""
    with deterministic(cfg.seed):
        gen = torch.Generator().manual_seed(cfg.seed)
        loader: DataLoader[tuple[Tensor, Tensor]]
        val_loader: DataLoader[tuple[Tensor, Tensor]]
        if gather is None:
            train_set = WindowDataset(features, target, window, indices=train_idx)
            val_set = WindowDataset(features, target, window, indices=val_idx)
            loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen)
            val_loader = DataLoader(val_set, batch_size=1024)
        else:
            loader = _gathered_loader(gather, target, train_idx, cfg.batch_size, gen)
            val_loader = _gathered_loader(gather, target, val_idx, 1024, None)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate)
        fn = net.loss()
        best = (0, _loss(net, val_loader))
        best_state = copy.deepcopy(net.state_dict())
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            for x, y in loader:
                opt.zero_grad()
                fn(net(x)[1], y).backward()
                opt.step()
            loss = _loss(net, val_loader)
            if loss < best[1]:
                best, best_state = (epoch, loss), copy.deepcopy(net.state_dict())
            elif epoch - best[0] >= cfg.patience:
                break
        net.load_state_dict(best_state)
        net.eval()
    return best


def infer(
    net: EncoderNet,
    features: np.ndarray,
    window: int,
    idx: np.ndarray,
    batch_size: int = 512,
    *,
    gather: Gather | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``(len(idx), E)`` and head probabilities (``(len(idx),)`` binary, else
    ``(len(idx), C)``) of the windows ending at the decision bars ``idx`` (eval mode, no
    gradients); inputs as in :func:`train`."""
    idx = np.asarray(idx)
    if gather is None:
        # only the rows the windows read go to float32 (a live prediction reads the last
        # window alone); the same windows as over all the rows
        lo = max(int(idx.min()) - (window - 1), 0) if idx.size else 0
        inputs, idx = sliding(np.asarray(features)[lo:], window), idx - lo
    else:
        inputs = gather
    emb, prob = [], []
    if any(m.training for m in net.modules()):  # eval() walks and sets every module
        net.eval()
    with deterministic(), torch.no_grad():
        for lo in range(0, len(idx), batch_size):
            z, logits = net(torch.from_numpy(inputs(idx[lo : lo + batch_size])))
            emb.append(z.numpy().astype(np.float64))
            prob.append(net.probabilities(logits))
    if not emb:
        shape = (0,) if net.n_outputs == 1 else (0, net.n_outputs)
        return np.empty((0, net.encoder.embedding_dim)), np.empty(shape)
    return np.concatenate(emb), np.concatenate(prob)
