"""Training windows over feature arrays, and the walk-forward splitter.

Convention: a model deciding "at bar ``i``" decides at the close of bar ``i``, so the window
for decision bar ``i`` holds the features of bars ``i - L + 1 .. i`` (inclusive) and never
anything after ``i``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from torch.utils.data import Dataset

from mlengine.data.schema import MLEngineError, Timeframe

__all__ = [
    "Fold",
    "SplitError",
    "WalkForwardSplit",
    "WindowDataset",
    "sliding_windows",
]


class SplitError(MLEngineError, ValueError):
    """Invalid windowing or splitting parameters, or too little data for them."""


# --- windows -----------------------------------------------------------------------------


def _check_length(length: int, n: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise SplitError(f"window length must be a positive integer, got {length!r}")
    if length > n:
        raise SplitError(f"window length {length} is longer than the {n} bars available")


def sliding_windows(features: np.ndarray, length: int) -> np.ndarray:
    """Read-only view of shape ``(n - L + 1, L, F)`` over a ``(n, F)`` array, no copy.

    ``windows[i - (L - 1)]`` is the window of decision bar ``i``: rows ``i - L + 1 .. i``.
    """
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise SplitError(f"features must be 2-D (bars x features), got shape {arr.shape}")
    _check_length(length, arr.shape[0])
    # sliding_window_view puts the window axis last: (n-L+1, F, L); swap to (n-L+1, L, F).
    return np.lib.stride_tricks.sliding_window_view(arr, length, axis=0).transpose(0, 2, 1)


class WindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(window, target)`` pairs for the decision bars in ``indices``, built lazily.

    ``features`` (n x F) is converted once to a C-contiguous float32 base array (no copy if
    it already is one); item ``k`` is the float32 tensor ``base[i - L + 1 : i + 1]`` (L x F)
    for ``i = indices[k]`` — a view of the base, never a copy — and ``targets[i]`` as a
    0-d tensor (float targets as float32, integer targets as int64). ``indices`` default to
    every valid decision bar ``L - 1 .. n - 1``; a fold's train indices restrict them.
    Returned windows share memory with the base: do not modify them in place. For several
    assets, build one dataset per asset and join them with ``torch.utils.data.ConcatDataset``.
    """

    def __init__(
        self,
        features: ArrayLike,
        targets: ArrayLike,
        length: int,
        indices: ArrayLike | None = None,
    ) -> None:
        base = np.ascontiguousarray(features, dtype=np.float32)
        if base.ndim != 2:
            raise SplitError(f"features must be 2-D (bars x features), got shape {base.shape}")
        n = base.shape[0]
        _check_length(length, n)
        y = np.asarray(targets)
        if y.ndim != 1 or y.shape[0] != n:
            raise SplitError(f"targets must be 1-D with one value per bar ({n}), got {y.shape}")
        if y.dtype.kind == "f":
            y = y.astype(np.float32, copy=False)
        elif y.dtype.kind in "iub":
            y = y.astype(np.int64, copy=False)
        else:
            raise SplitError(f"targets must be numeric, got dtype {y.dtype}")
        idx = self._check_indices(indices, length, n)
        if y.dtype.kind == "f":
            nan = idx[np.isnan(y[idx])]
            if nan.size:
                raise SplitError(
                    f"target is NaN at decision bar {int(nan[0])} ({nan.size} such indices); "
                    "drop bars without a label from the indices"
                )
        self.length = int(length)
        self.base = base
        self.indices = idx
        self.windows = sliding_windows(base, self.length)
        with warnings.catch_warnings():
            # A read-only base is fine: windows are handed out as views and never written.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self._x = torch.from_numpy(base)
            self._y = torch.from_numpy(y)

    @staticmethod
    def _check_indices(indices: ArrayLike | None, length: int, n: int) -> np.ndarray:
        if indices is None:
            return np.arange(length - 1, n, dtype=np.int64)
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise SplitError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        low = idx[idx < length - 1]
        if low.size:
            raise SplitError(
                f"decision bar {int(low[0])} has fewer than L={length} bars of history; "
                f"indices must be >= L - 1 = {length - 1}"
            )
        high = idx[idx >= n]
        if high.size:
            raise SplitError(f"decision bar {int(high[0])} is beyond the last bar ({n - 1})")
        return idx

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[k])
        return self._x[i - self.length + 1 : i + 1], self._y[i]


# --- walk-forward ------------------------------------------------------------------------

Size = int | str | pd.Timedelta


@dataclass(frozen=True, eq=False)
class Fold:
    """One walk-forward fold: positions, and first/last bar (inclusive) of each part.

    The bounds are timestamps when the split was given a DatetimeIndex (or a frame with
    one), else positions.
    """

    fold: int
    train: np.ndarray
    test: np.ndarray
    train_start: pd.Timestamp | int
    train_end: pd.Timestamp | int
    test_start: pd.Timestamp | int
    test_end: pd.Timestamp | int


def _is_time(size: Size | None) -> bool:
    return isinstance(size, str | pd.Timedelta)


def _time(size: Size, name: str) -> pd.Timedelta:
    try:
        delta = pd.Timedelta(size)
    except (TypeError, ValueError) as err:
        raise SplitError(f"{name}={size!r} is neither a bar count nor a time span") from err
    if delta <= pd.Timedelta(0):
        raise SplitError(f"{name} must be positive, got {size!r}")
    return delta


def _count(size: object, name: str, minimum: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < minimum:
        raise SplitError(f"{name} must be an integer >= {minimum}, got {size!r}")
    return int(size)


class WalkForwardSplit:
    """Walk-forward splits in the scikit-learn splitter style (``split``, ``get_n_splits``).

    Test windows of ``test_size`` bars start every ``step`` bars (default ``test_size``;
    ``step >= test_size``, so test windows never overlap) and are placed from the end of the
    data backwards, so the last window ends at the last bar; ``n_splits`` keeps the last
    ``n_splits`` of them, ``None`` as many as the data allow. Folds are numbered oldest first.
    For the test window ``[s, e)`` of a fold:

    * train window: ``[0, s)`` (expanding, ``train_size=None``) or ``[s - train_size, s)``
      (rolling; a fold is only made when the full window exists);
    * purge: the last ``purge`` bars of the train window, ``[s - purge, s)``, are dropped.
      Set ``purge`` >= the label horizon: a label at bar ``i`` looks at bars up to
      ``i + horizon``, so these are the bars whose labels see into the test window;
    * embargo: the ``embargo`` bars right after *every* test window of the split,
      ``[e_j, e_j + embargo)``, are dropped from *every* fold's training set. This is López
      de Prado's embargo (training bars that follow a test window carry its information
      through overlapping features and serial correlation), applied to all test windows of
      the split. In pure walk-forward a fold's training always precedes its own test window,
      so the embargo never changes what a fold's model knows about the window it is scored
      on; its only effect is to remove, from later folds, the bars right after earlier test
      windows (split-wide guarantee: no fold trains on a bar within ``embargo`` bars after
      any test window). It keeps López de Prado's meaning so that one definition serves
      every use of the splitter, the ensemble's second-level split included; for plain
      walk-forward scores leave it at 0, where it would only cost training data.
    * a fold is made only when at least ``min_train_size`` training bars remain.

    Sizes ``test_size``, ``step`` (same kind as ``test_size``) and ``train_size`` may also be
    time spans (``"30D"``) when ``X`` is a DatetimeIndex or a frame with one: test windows
    then cover the bar open times ``[E - test_size, E)`` with ``E`` stepping back by ``step``
    from the close of the last bar (its open plus ``attrs["timeframe"]`` of a frame, else
    the smallest bar spacing); empty windows (market closed) are skipped, and a rolling train
    window holds the bars that open in ``[S - train_size, S)`` for test window start ``S``.
    ``purge``, ``embargo`` and ``min_train_size`` are always bar counts.
    """

    def __init__(
        self,
        n_splits: int | None = None,
        *,
        test_size: Size,
        train_size: Size | None = None,
        min_train_size: int = 1,
        purge: int = 0,
        embargo: int = 0,
        step: Size | None = None,
    ) -> None:
        self.n_splits = n_splits
        self.test_size = test_size
        self.train_size = train_size
        self.min_train_size = min_train_size
        self.purge = purge
        self.embargo = embargo
        self.step = step
        self._validate()

    def with_purge(self, purge: int) -> WalkForwardSplit:
        """This split with its purge raised to ``purge`` bars (itself when already >=): the
        label horizon of whatever is trained on it."""
        if self.purge >= purge:
            return self
        return WalkForwardSplit(
            self.n_splits,
            test_size=self.test_size,
            train_size=self.train_size,
            min_train_size=self.min_train_size,
            purge=purge,
            embargo=self.embargo,
            step=self.step,
        )

    def _validate(self) -> None:
        if self.n_splits is not None:
            _count(self.n_splits, "n_splits", 1)
        _count(self.min_train_size, "min_train_size", 1)
        _count(self.purge, "purge", 0)
        _count(self.embargo, "embargo", 0)
        step = self.test_size if self.step is None else self.step
        if _is_time(self.test_size) != _is_time(step):
            raise SplitError("test_size and step must both be bar counts or both time spans")
        if _is_time(self.test_size):
            if _time(step, "step") < _time(self.test_size, "test_size"):
                raise SplitError(f"step={step!r} is shorter than test_size: test windows overlap")
        else:
            test = _count(self.test_size, "test_size", 1)
            if _count(step, "step", 1) < test:
                raise SplitError(f"step={step} is smaller than test_size={test}: windows overlap")
        if self.train_size is not None:
            if _is_time(self.train_size):
                _time(self.train_size, "train_size")
            else:
                train = _count(self.train_size, "train_size", 1)
                if train - self.purge < self.min_train_size:
                    raise SplitError(
                        f"train_size={train} minus purge={self.purge} leaves fewer than "
                        f"min_train_size={self.min_train_size} training bars"
                    )

    def __repr__(self) -> str:
        params = ("n_splits", "test_size", "train_size", "min_train_size", "purge", "embargo")
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in (*params, "step"))
        return f"WalkForwardSplit({args})"

    # -- planning ---------------------------------------------------------------------

    @staticmethod
    def _index(X: object) -> tuple[int, pd.DatetimeIndex | None, pd.Timedelta | None]:
        """Number of bars, the DatetimeIndex (if any) and the bar length (if known)."""
        index = X if isinstance(X, pd.DatetimeIndex) else getattr(X, "index", None)
        if not isinstance(index, pd.DatetimeIndex):
            try:
                return len(X), None, None  # type: ignore[arg-type]
            except TypeError as err:
                raise SplitError(f"X must have a length, got {type(X).__name__}") from err
        if index.size > 1 and not index.is_monotonic_increasing:
            raise SplitError("X's DatetimeIndex must be in time order")
        bar = None
        tf = getattr(X, "attrs", {}).get("timeframe")
        if tf is not None:
            bar = Timeframe.parse(tf).delta
        elif index.size > 1:
            bar = pd.Timedelta(int(np.diff(index.asi8).min()), unit="ns")
        return len(index), index, bar

    def _candidates(
        self, n: int, index: pd.DatetimeIndex | None, bar: pd.Timedelta | None
    ) -> list[tuple[int, int, int]]:
        """``(train_lo, s, e)`` per test window ``[s, e)``, newest first, full windows only."""
        step = self.test_size if self.step is None else self.step
        windows: list[tuple[int, int, pd.Timestamp | None]] = []  # (s, e, nominal start)
        if not _is_time(self.test_size):
            test, stride = _count(self.test_size, "test_size", 1), _count(step, "step", 1)
            for s in range(n - test, -1, -stride):
                windows.append((s, s + test, None if index is None else index[s]))
        else:
            if index is None or bar is None:
                raise SplitError("time-based sizes need X with a DatetimeIndex of 2 or more bars")
            test_t, stride_t = _time(self.test_size, "test_size"), _time(step, "step")
            end = index[-1] + bar
            while end > index[0]:
                s, e = (int(p) for p in index.searchsorted([end - test_t, end]))
                if e > s:  # an empty window (market closed) is no fold
                    windows.append((s, e, end - test_t))
                end -= stride_t
        out: list[tuple[int, int, int]] = []
        for s, e, start in windows:
            if self.train_size is None:
                lo = 0
            elif _is_time(self.train_size):
                if index is None or start is None:
                    raise SplitError("a time-based train_size needs X with a DatetimeIndex")
                lo_t = start - _time(self.train_size, "train_size")
                if lo_t < index[0]:
                    break  # the full rolling window does not exist here nor further back
                lo = int(index.searchsorted(lo_t))
            else:
                lo = s - _count(self.train_size, "train_size", 1)
                if lo < 0:
                    break
            out.append((lo, s, e))
        return out

    def _needed(self) -> str:
        """How many bars the requested folds need (bar-count sizes), for error messages."""
        k = self.n_splits or 1
        if _is_time(self.test_size) or _is_time(self.train_size):
            return f"{k} fold(s) of test_size={self.test_size!r}, train_size={self.train_size!r}"
        test = _count(self.test_size, "test_size", 1)
        step = test if self.step is None else _count(self.step, "step", 1)
        if self.train_size is None:
            first = self.min_train_size + self.purge
        else:
            first = _count(self.train_size, "train_size", 1)
        return f"{first + test + (k - 1) * step} bars"

    def _plan(
        self, X: object
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], pd.DatetimeIndex | None]:
        n, index, bar = self._index(X)
        chosen: list[tuple[int, int, int]] = []
        for lo, s, e in self._candidates(n, index, bar):
            if s - self.purge - lo < self.min_train_size:
                break  # going back, training before purge and embargo only shrinks
            chosen.append((lo, s, e))
            if len(chosen) == self.n_splits:
                break
        if not chosen or len(chosen) < (self.n_splits or 1):
            raise SplitError(
                f"not enough bars: {n} given, {self._needed()} needed for {self.n_splits or 1} "
                f"fold(s) (min_train_size={self.min_train_size}, purge={self.purge})"
            )
        chosen.reverse()
        embargoed = np.zeros(n, dtype=bool)  # [e_j, e_j + embargo) for every test window j
        for _, _, e in chosen:
            embargoed[e : e + self.embargo] = True
        folds: list[tuple[np.ndarray, np.ndarray]] = []
        for k, (lo, s, e) in enumerate(chosen):
            train = np.arange(lo, s - self.purge, dtype=np.int64)
            train = train[~embargoed[train]]
            if train.size < self.min_train_size:
                raise SplitError(
                    f"fold {k}: the embargo of {self.embargo} bars leaves {train.size} training "
                    f"bars (< min_train_size={self.min_train_size}); reduce embargo or enlarge "
                    "train_size"
                )
            folds.append((train, np.arange(s, e, dtype=np.int64)))
        return folds, index

    # -- scikit-learn splitter API -------------------------------------------------------

    def split(
        self, X: object, y: object = None, groups: object = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` position arrays, oldest fold first."""
        folds, _ = self._plan(X)
        yield from folds

    def get_n_splits(self, X: object = None, y: object = None, groups: object = None) -> int:
        """Number of folds; without ``X`` only when ``n_splits`` was given."""
        if X is None:
            if self.n_splits is None:
                raise SplitError("get_n_splits needs X when n_splits is None")
            return int(self.n_splits)
        return len(self._plan(X)[0])

    def folds(self, X: object) -> list[Fold]:
        """The folds with their first/last train and test bars, for reports."""
        plan, index = self._plan(X)

        def at(i: int) -> pd.Timestamp | int:
            return int(i) if index is None else index[int(i)]

        return [
            Fold(k, tr, te, at(tr[0]), at(tr[-1]), at(te[0]), at(te[-1]))
            for k, (tr, te) in enumerate(plan)
        ]
