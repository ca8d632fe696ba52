"""The neural gate of the metamodel: a mixture of experts over the strategies.

Each strategy (expert) gives ``p_up`` per bar. The gate is a small network that reads the
features of the bar (context such as volatility or time of day, the strategies' own
probabilities and diagnostics) and outputs softmax weights ``w`` over the experts; the
ensemble probability is the mixture ``p = sum_k w_k * p_k``. It learns from out-of-fold
strategy predictions only, so that it weighs each strategy by how it does on data it never
trained on.

Training minimises, full batch with Adam, the binary cross-entropy of ``p`` against the
outcome ``y`` minus ``entropy`` times the mean entropy of the weights
(``H = -sum_k w_k log w_k``, in nats): the larger ``entropy``, the more the gate keeps its
weights spread unless the data insist on one strategy. The output layer starts at zero, so
the untrained gate is the equal-weight ensemble, and training moves away from it only as far
as the data lead. The last ``validation`` share of the (time-ordered) rows is held out: the
gate keeps the epoch with the lowest validation cross-entropy (the untrained, equal-weight
gate included) and stops after ``patience`` epochs without improvement.

Features are standardised with the mean and standard deviation of the training rows (not
the validation rows); missing values then become 0 (the training mean), constant columns
keep a standard deviation of 1, and standardised values are clipped to ``±Z_CLIP``. Missing
expert probabilities count as 0.5 (no opinion). Inside the loss ``p`` is clipped to
``[P_CLIP, 1 - P_CLIP]``; :meth:`Gate.predict` returns the mixture unclipped.

Fitting is seeded (initial weights under ``torch.manual_seed(seed)`` in a forked RNG, so the
caller's global RNG state is untouched) and runs on one torch thread (restored after), so the
same seed gives the same gate. A fitted gate round-trips through JSON
(:meth:`Gate.to_dict` / :meth:`Gate.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from mlengine.data.schema import MLEngineError

__all__ = [
    "MIN_ROWS",
    "P_CLIP",
    "Z_CLIP",
    "Gate",
    "GateError",
    "GateParams",
    "GatingNetwork",
    "weight_entropy",
]

P_CLIP = 1e-6
"""The mixture probability is clipped to ``[P_CLIP, 1 - P_CLIP]`` inside the loss."""
Z_CLIP = 1e4
"""Standardised features are clipped to ``[-Z_CLIP, Z_CLIP]`` (keeps float32 finite)."""
MIN_ROWS = 20
"""The fewest training rows (after the validation share is held out) a fit accepts."""

ArrayLike = pd.Series | np.ndarray | Sequence[float]


class GateError(MLEngineError, ValueError):
    """Features, probabilities, outcomes or settings the gate cannot use."""


# --- settings -------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class GateParams:
    """Settings of the gate (see the module docstring)."""

    hidden: int = 16  # hidden units of the one-hidden-layer MLP (0: linear gate)
    entropy: float = 0.01  # coefficient of the entropy regulariser, >= 0
    epochs: int = 200  # max full-batch epochs (Adam)
    lr: float = 0.01
    weight_decay: float = 1e-4
    validation: float = 0.2  # last share of the rows for early stopping; 0: none
    patience: int = 20  # epochs without validation-loss improvement before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("hidden", 0), ("epochs", 1), ("patience", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise GateError(f"gate: {name} must be an integer >= {low}, got {value!r}")
        if not _is_int(self.seed):
            raise GateError(f"gate: seed must be an integer, got {self.seed!r}")
        checks = (
            ("entropy", lambda v: v >= 0, ">= 0"),
            ("lr", lambda v: v > 0, "> 0"),
            ("weight_decay", lambda v: v >= 0, ">= 0"),
            ("validation", lambda v: 0 <= v < 1, "in [0, 1)"),
        )
        for name, ok, what in checks:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or not ok(value):
                raise GateError(f"gate: {name} must be a finite number {what}, got {value!r}")


# --- network --------------------------------------------------------------------------------


class GatingNetwork(nn.Module):
    """Softmax weights over ``n_experts`` from ``n_features`` inputs: a one-hidden-layer MLP
    (``tanh``, ``hidden`` units) or, with ``hidden = 0``, a linear map. The output layer
    starts at zero: the untrained network gives equal weights."""

    def __init__(self, n_features: int, n_experts: int, hidden: int) -> None:
        super().__init__()
        if not _is_int(n_features) or n_features < 1:
            raise GateError(f"n_features must be an integer >= 1, got {n_features!r}")
        if not _is_int(n_experts) or n_experts < 2:
            raise GateError(f"n_experts must be an integer >= 2, got {n_experts!r}")
        if not _is_int(hidden) or hidden < 0:
            raise GateError(f"hidden must be an integer >= 0, got {hidden!r}")
        self.n_features, self.n_experts, self.hidden = n_features, n_experts, hidden
        out = nn.Linear(hidden if hidden else n_features, n_experts)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), out) if hidden else out

    def logits(self, x: Tensor) -> Tensor:
        """Unnormalised log-weights ``(n, n_experts)`` of the inputs ``x`` ``(n, n_features)``."""
        out: Tensor = self.net(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Softmax weights ``(n, n_experts)`` of the inputs ``x`` ``(n, n_features)``."""
        return torch.softmax(self.logits(x), dim=-1)


@contextmanager
def _torch_state(seed: int | None = None) -> Iterator[None]:
    """Seed torch in a forked RNG (when ``seed`` is given) and use one intra-op thread,
    restoring the caller's RNG state and thread count after. One thread: the network is
    small, and results then do not depend on the machine's core count."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


# --- inputs ---------------------------------------------------------------------------------


def _label(index: pd.Index, pos: int) -> str:
    return f"row {index[pos]!r} (position {pos})"


def _frame(data: object, what: str) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise GateError(f"{what} must be a pandas DataFrame, got {type(data).__name__}")
    # tolist: the names as iterating gives them, converted at once (str columns are arrow-backed)
    names = data.columns.tolist()
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise GateError(f"{what} column names must be strings, got {bad[0]!r}")
    # strings: a set keeps one of each name, as the index's duplicate check counts them
    if len(set(names)) != len(names):
        dup = data.columns[data.columns.duplicated()][0]
        raise GateError(f"{what} has the column {dup!r} more than once")
    return data


def _same_label(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _same_rows(index: pd.Index, other: pd.Index, what: str) -> None:
    """``other`` (of ``what``) must equal the features' ``index``."""
    if len(other) != len(index):
        raise GateError(f"{what} has {len(other)} rows, features {len(index)}")
    if not other.equals(index):
        pos = next(i for i in range(len(index)) if not _same_label(other[i], index[i]))
        raise GateError(
            f"{what} index differs from the features index at position {pos}: "
            f"{other[pos]!r} vs {index[pos]!r}"
        )


def _numeric(frame: pd.DataFrame, what: str) -> np.ndarray:
    """The columns of ``frame`` as float64 ``(n, d)``; NaN kept, infinities rejected.

    When every column has a numpy bool, integer or float dtype (the stack's features and
    probabilities), the frame converts in one step, which on few rows costs far less than a
    Series per column and gives the same values; the first infinity is then reported as the
    column-by-column reading reports it (the first such column, its first such row). The
    result is a new C-ordered array either way: the layout decides how numpy sums along an
    axis (pairwise along a contiguous one), so the scaler's rounding depends on it."""
    dtypes = list(frame.dtypes)
    if all(isinstance(t, np.dtype) and t.kind in "biuf" for t in dtypes):
        block = np.array(frame.to_numpy(dtype=np.float64, na_value=np.nan), order="C")
        infinite = np.isinf(block)
        if infinite.any():
            j = int(np.flatnonzero(infinite.any(axis=0))[0])
            pos = int(np.flatnonzero(infinite[:, j])[0])
            name = frame.columns[j]
            raise GateError(f"{what} column {name!r} is infinite at {_label(frame.index, pos)}")
        return block
    out = np.empty(frame.shape, dtype=np.float64)
    for j, col in enumerate(frame.columns):
        series = frame[col]
        if pd.api.types.is_bool_dtype(series.dtype):
            series = series.astype(np.float64)
        if not pd.api.types.is_numeric_dtype(series.dtype):
            raise GateError(f"{what} column {col!r} is not numeric (dtype {series.dtype})")
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        inf = np.isinf(values)
        if inf.any():
            pos = int(np.flatnonzero(inf)[0])
            raise GateError(f"{what} column {col!r} is infinite at {_label(frame.index, pos)}")
        out[:, j] = values
    return out


def _probabilities(probs: pd.DataFrame) -> np.ndarray:
    """Expert probabilities in [0, 1] as float64, NaN replaced by 0.5."""
    values = _numeric(probs, "probs")
    outside = (values < 0) | (values > 1)
    if outside.any():
        pos, j = (int(a[0]) for a in np.nonzero(outside))
        raise GateError(
            f"probs column {probs.columns[j]!r} must lie in [0, 1]: {values[pos, j]} at "
            f"{_label(probs.index, pos)}"
        )
    return np.where(np.isnan(values), 0.5, values)


def _outcomes(y: object, index: pd.Index) -> np.ndarray:
    """Outcomes 0/1 as float64, one per row of ``index``."""
    if isinstance(y, pd.Series):
        _same_rows(index, y.index, "y")
        try:
            out = y.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise GateError(f"y must hold 0/1 outcomes: {err}") from None
    else:
        try:
            out = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise GateError(f"y must hold 0/1 outcomes: {err}") from None
        if out.ndim != 1:
            raise GateError(f"y must be one-dimensional, got shape {out.shape}")
        if out.size != len(index):
            raise GateError(f"y has {out.size} values, features {len(index)} rows")
    nan = np.isnan(out)
    if nan.any():
        raise GateError(f"y is NaN at {_label(index, int(np.flatnonzero(nan)[0]))}")
    bad = (out != 0) & (out != 1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise GateError(f"y must hold 0/1 outcomes: {out[pos]} at {_label(index, pos)}")
    return out


def _columns(frame: pd.DataFrame, expected: list[str], what: str) -> pd.DataFrame:
    """``frame`` with the columns ``expected`` (in that order); any other set is an error."""
    have = frame.columns.tolist()
    if have == expected:
        # already in order (names are distinct: _frame checks), nothing to select
        return frame
    if set(have) != set(expected):
        missing = [c for c in expected if c not in have]
        extra = [c for c in have if c not in expected]
        raise GateError(
            f"{what} columns differ from those at fit time: missing {missing}, extra {extra}"
        )
    return frame[expected]


# --- the estimator --------------------------------------------------------------------------


def _mixture_terms(w_log: Tensor, probs: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean binary cross-entropy of the mixture and mean weight entropy, from log-weights."""
    w = torch.exp(w_log)
    p = (w * probs).sum(dim=1).clamp(P_CLIP, 1.0 - P_CLIP)
    bce = -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p)).mean()
    entropy = -(w * w_log).sum(dim=1).mean()
    return bce, entropy


class Gate:
    """Fit/predict estimator around :class:`GatingNetwork` (see the module docstring).

    ``__init__`` only stores the settings (``params``, with ``kwargs`` overriding its fields);
    what :meth:`fit` learns ends in ``_``: ``feature_names_``, ``expert_names_``, ``mean_``,
    ``std_`` (the scaler), ``network_``, ``n_epochs_`` (epochs run), ``best_epoch_`` (the one
    kept; 0: the untrained equal-weight gate) and ``history_`` (per epoch: ``loss``, ``bce``
    and ``entropy`` of the training rows before the epoch's update, ``val_bce`` after it,
    ``None`` without validation).
    """

    def __init__(self, params: GateParams | None = None, **kwargs: Any) -> None:
        if params is not None and not isinstance(params, GateParams):
            raise GateError(f"params must be GateParams, got {type(params).__name__}")
        known = {f.name for f in dataclasses.fields(GateParams)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise GateError(f"unknown gate settings: {', '.join(unknown)}")
        base = params if params is not None else GateParams()
        self.params = dataclasses.replace(base, **kwargs) if kwargs else base

    def __repr__(self) -> str:
        return f"Gate({self.params!r})"

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, features: pd.DataFrame, probs: pd.DataFrame, y: ArrayLike) -> Gate:
        """Learn the gate from ``features`` ``(n, d)``, the experts' ``probs`` ``(n, k)``
        (columns = expert names) and the outcomes ``y`` (0/1), rows in time order."""
        p = self.params
        features = _frame(features, "features")
        probs = _frame(probs, "probs")
        index = features.index
        _same_rows(index, probs.index, "probs")
        if features.shape[1] < 1:
            raise GateError("features has no columns: the gate needs at least one")
        if probs.shape[1] < 2:
            raise GateError(
                f"probs has {probs.shape[1]} expert column(s) {list(probs.columns)}: "
                "a gate needs at least 2"
            )
        x = _numeric(features, "features")
        prob = _probabilities(probs)
        out = _outcomes(y, index)
        n = len(index)
        n_val = round(n * p.validation) if p.validation > 0 else 0
        n_train = n - n_val
        if n_train < MIN_ROWS or (p.validation > 0 and n_val < 1):
            raise GateError(
                f"too few rows to train: {n} rows give {n_train} to train and {n_val} to "
                f"validate (validation={p.validation}); need >= {MIN_ROWS} to train"
                + (" and >= 1 to validate" if p.validation > 0 else "")
            )
        if np.unique(out).size < 2:
            raise GateError(f"y holds only the class {int(out[0])}: the gate needs both")
        if np.unique(out[:n_train]).size < 2:
            raise GateError(
                f"y holds only the class {int(out[0])} in the training rows "
                f"(first {n_train}): the gate needs both"
            )

        mean, std = _scaler(x[:n_train])
        z = torch.from_numpy(_standardise(x, mean, std))
        probs_t = torch.from_numpy(prob.astype(np.float32))
        y_t = torch.from_numpy(out.astype(np.float32))
        train, val = slice(0, n_train), slice(n_train, n)

        with _torch_state(p.seed):
            net = GatingNetwork(x.shape[1], prob.shape[1], p.hidden)
            opt = torch.optim.Adam(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)

            def val_bce() -> float | None:
                if not n_val:
                    return None
                with torch.no_grad():
                    bce, _ = _mixture_terms(
                        torch.log_softmax(net.logits(z[val]), dim=-1), probs_t[val], y_t[val]
                    )
                return float(bce)

            best_epoch, best_loss = 0, val_bce()
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
            history: list[dict[str, float | None]] = []
            for epoch in range(1, p.epochs + 1):
                opt.zero_grad()
                w_log = torch.log_softmax(net.logits(z[train]), dim=-1)
                bce, entropy = _mixture_terms(w_log, probs_t[train], y_t[train])
                loss = bce - p.entropy * entropy
                loss.backward()
                opt.step()
                current = val_bce()
                history.append(
                    {
                        "loss": float(loss.detach()),
                        "bce": float(bce.detach()),
                        "entropy": float(entropy.detach()),
                        "val_bce": current,
                    }
                )
                if current is None or best_loss is None:
                    continue
                if current < best_loss:
                    best_epoch, best_loss = epoch, current
                    best_state = {k: v.clone() for k, v in net.state_dict().items()}
                elif epoch - best_epoch >= p.patience:
                    break
            if n_val:
                net.load_state_dict(best_state)
            else:
                best_epoch = len(history)
            net.eval()

        self.feature_names_ = list(features.columns)
        self.expert_names_ = list(probs.columns)
        self.mean_, self.std_ = mean, std
        self.network_ = net
        self.n_epochs_ = len(history)
        self.best_epoch_ = best_epoch
        self.history_ = history
        return self

    # -- inference ----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise GateError("the gate is not fitted: call fit first")

    def _weights(self, features: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        features = _columns(_frame(features, "features"), self.feature_names_, "features")
        z = torch.from_numpy(_standardise(_numeric(features, "features"), self.mean_, self.std_))
        with _torch_state(), torch.no_grad():
            w = self.network_(z)
        return w.numpy().astype(np.float64)

    def weights(self, features: pd.DataFrame) -> pd.DataFrame:
        """The experts' weights per row: index of ``features``, columns = expert names."""
        w = self._weights(features)
        return pd.DataFrame(w, index=features.index, columns=pd.Index(self.expert_names_))

    def predict(self, features: pd.DataFrame, probs: pd.DataFrame) -> pd.Series:
        """The mixture probability ``sum_k w_k p_k`` per row, named ``p_up`` (missing expert
        probabilities count as 0.5)."""
        mix, _ = self.predict_with_weights(features, probs)
        return pd.Series(mix, index=features.index, name="p_up")

    def predict_with_weights(
        self, features: pd.DataFrame, probs: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`predict` and :meth:`weights` give, as arrays ``(n,)`` and
        ``(n, k)``, from one check of the inputs and one pass of the network (a live
        prediction needs both; asking for each checked the features and ran the network
        twice). Raises what :meth:`predict` raises."""
        self._check_fitted()
        w = self._weights(features)
        probs = _columns(_frame(probs, "probs"), self.expert_names_, "probs")
        _same_rows(features.index, probs.index, "probs")
        mix = np.einsum("ij,ij->i", w, _probabilities(probs))
        return np.clip(mix, 0.0, 1.0), w

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, feature and expert names, scaler, network weights (nested
        lists), epochs and history."""
        self._check_fitted()
        return {
            "params": dataclasses.asdict(self.params),
            "feature_names": list(self.feature_names_),
            "expert_names": list(self.expert_names_),
            "mean": self.mean_.tolist(),
            "std": self.std_.tolist(),
            "state": {k: v.tolist() for k, v in self.network_.state_dict().items()},
            "n_epochs": self.n_epochs_,
            "best_epoch": self.best_epoch_,
            "history": [dict(h) for h in self.history_],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        """The fitted gate that :meth:`to_dict` wrote."""
        if not isinstance(data, Mapping):
            raise GateError(f"gate data must be a mapping, got {type(data).__name__}")
        try:
            gate = cls(GateParams(**data["params"]))
            features = [str(c) for c in data["feature_names"]]
            experts = [str(c) for c in data["expert_names"]]
            mean = np.asarray(data["mean"], dtype=np.float64)
            std = np.asarray(data["std"], dtype=np.float64)
            if mean.shape != (len(features),) or std.shape != (len(features),):
                raise ValueError(f"mean and std must hold {len(features)} values each")
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError("mean must be finite and std finite and > 0")
            net = GatingNetwork(len(features), len(experts), gate.params.hidden)
            state = {k: torch.tensor(v, dtype=torch.float32) for k, v in data["state"].items()}
            net.load_state_dict(state, strict=True)
            history = [dict(h) for h in data.get("history", [])]
            n_epochs = int(data.get("n_epochs", len(history)))
            best_epoch = int(data.get("best_epoch", n_epochs))
        except GateError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise GateError(f"bad gate data: {type(err).__name__}: {err}") from None
        net.eval()
        gate.feature_names_, gate.expert_names_ = features, experts
        gate.mean_, gate.std_ = mean, std
        gate.network_ = net
        gate.n_epochs_, gate.best_epoch_, gate.history_ = n_epochs, best_epoch, history
        return gate


def _scaler(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation over the non-missing values of ``x``; an
    all-missing column gets (0, 1), a constant one std 1."""
    known = ~np.isnan(x)
    count = known.sum(axis=0)
    filled = np.where(known, x, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = filled.sum(axis=0) / np.maximum(count, 1)
        dev = np.where(known, x - mean, 0.0)
        std = np.sqrt((dev * dev).sum(axis=0) / np.maximum(count, 1))
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return mean, std


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` clipped to ``±Z_CLIP``, missing values 0, as float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x - mean) / std
    z = np.clip(np.nan_to_num(z, nan=0.0), -Z_CLIP, Z_CLIP)
    return np.ascontiguousarray(z, dtype=np.float32)


def weight_entropy(weights: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of ``weights`` ``(n, k)``: ``-sum_k w_k log w_k``, with
    ``0 log 0 = 0``; ``log k`` for equal weights, 0 for all weight on one expert."""
    w = (
        weights.to_numpy(dtype=np.float64, na_value=np.nan)
        if isinstance(weights, pd.DataFrame)
        else np.asarray(weights, dtype=np.float64)
    )
    if w.ndim != 2:
        raise GateError(f"weights must be two-dimensional (rows x experts), got shape {w.shape}")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        pos, j = (int(a[0]) for a in np.nonzero(bad))
        raise GateError(f"weights must be finite and >= 0: {w[pos, j]} at row {pos}, column {j}")
    safe = np.where(w > 0, w, 1.0)
    return np.asarray(-(w * np.log(safe)).sum(axis=1), dtype=np.float64)
