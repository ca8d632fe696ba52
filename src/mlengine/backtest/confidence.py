"""Does confidence pay? Hit rate and outcome by confidence, calibration, accuracy vs coverage.

Inputs, one value per bar (NumPy arrays or Series on one index):

* ``p_up`` the predicted probability that the price goes up (calibrated or not); NaN means
  no prediction and drops the bar.
* ``position`` the signal acted on (optional): its sign is the predicted direction, its size
  scales the outcome. Without it the direction is ``sign(p_up - 0.5)`` with unit size.
* The realised outcome, exactly one of

  - ``next_return``: the asset's return over the holding period that follows the decision
    (e.g. ``close[t+1] / close[t] - 1``). A hit is ``direction * next_return > 0``, the
    outcome ``position * next_return``, and the bar went up if ``next_return > 0``;
  - ``pnl``: the signed result of acting on the signal (a trade's pnl or return). A hit is
    ``pnl > 0`` and the outcome ``pnl``.

  NaN means unknown (the last bar, a signal never traded) and drops the bar.

A bar counts when it has a prediction, a non-zero direction and a known outcome. Its
confidence is ``|p_up - 0.5| * 2`` in [0, 1] (``method="distance"``) or
``max(p_up, 1 - p_up)`` in [0.5, 1] (``"max"``); both rank bars alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mlengine.data.schema import MLEngineError

__all__ = [
    "ConfidenceAnalysis",
    "ConfidenceError",
    "Reliability",
    "accuracy_coverage",
    "analyse_confidence",
    "confidence",
    "confidence_buckets",
    "reliability",
]

Method = Literal["distance", "max"]
ArrayLike = pd.Series | np.ndarray | Sequence[float]
DEFAULT_COVERAGE: tuple[float, ...] = tuple(k / 100 for k in range(5, 101, 5))
BUCKET_COLUMNS = [
    "bucket", "lo", "hi", "n", "share", "mean_confidence", "mean_p_up", "hit_rate",
    "mean_pnl", "total_pnl",
]  # fmt: skip


class ConfidenceError(MLEngineError, ValueError):
    """Probabilities, signals or outcomes that cannot be analysed (lengths, ranges, NaN)."""


@dataclass(frozen=True, eq=False)
class Reliability:
    """Reliability-diagram data: per bin ``lo, hi, n, mean_predicted, observed_frequency``.

    ``ece`` is the expected calibration error ``sum_b n_b / N * |mean_predicted_b -
    observed_frequency_b|``, ``brier`` the mean squared error of the probabilities.
    """

    table: pd.DataFrame
    ece: float
    brier: float
    n: int


@dataclass(frozen=True, eq=False)
class ConfidenceAnalysis:
    """Everything :func:`analyse_confidence` computes, ready to plot."""

    buckets: pd.DataFrame
    coverage: pd.DataFrame
    reliability: Reliability | None  # None when only pnl is known (no up/down outcome)


# --- inputs ---------------------------------------------------------------------------------


def _array(values: ArrayLike, name: str, index: pd.Index | None) -> np.ndarray:
    if isinstance(values, pd.Series):
        if index is not None and not values.index.equals(index):
            raise ConfidenceError(f"{name} is not on the same index as p_up")
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfidenceError(f"{name} must be numbers: {err}") from None
    if out.ndim != 1:
        raise ConfidenceError(f"{name} must be one-dimensional, got shape {out.shape}")
    return out


def _probabilities(p_up: ArrayLike) -> np.ndarray:
    p = _array(p_up, "p_up", None)
    outside = (p < 0) | (p > 1) | np.isinf(p)
    if outside.any():
        pos = int(np.flatnonzero(outside)[0])
        raise ConfidenceError(f"p_up must lie in [0, 1]: {p[pos]} at position {pos}")
    return p


def confidence(p_up: ArrayLike, method: Method = "distance") -> np.ndarray:
    """Confidence of each probability: ``|p - 0.5| * 2`` or ``max(p, 1 - p)``."""
    p = _probabilities(p_up)
    if method == "distance":
        return np.abs(p - 0.5) * 2.0
    if method == "max":
        return np.maximum(p, 1.0 - p)
    raise ConfidenceError(f"unknown confidence method {method!r}: use 'distance' or 'max'")


@dataclass(frozen=True)
class _Bars:
    """The counted bars: probability, confidence, hit and signed outcome."""

    p: np.ndarray
    conf: np.ndarray
    hit: np.ndarray
    pnl: np.ndarray


def _bars(
    p_up: ArrayLike,
    position: ArrayLike | None,
    next_return: ArrayLike | None,
    pnl: ArrayLike | None,
    method: Method,
) -> _Bars:
    given = next_return if pnl is None else pnl
    if given is None or (next_return is not None and pnl is not None):
        raise ConfidenceError("give exactly one outcome: next_return or pnl")
    p = _probabilities(p_up)
    conf = confidence(p, method)
    index = p_up.index if isinstance(p_up, pd.Series) else None
    outcome = _array(given, "outcome", index)
    if position is None:
        size = np.sign(p - 0.5)
    else:
        size = _array(position, "position", index)
        if np.isnan(size).any():
            pos = int(np.flatnonzero(np.isnan(size))[0])
            raise ConfidenceError(f"position is NaN at position {pos}")
    for name, values in (("outcome", outcome), ("position", size)):
        if values.shape != p.shape:
            raise ConfidenceError(f"{name} has {values.size} values, p_up {p.size}")
    keep = np.isfinite(p) & np.isfinite(outcome) & (size != 0)
    size, outcome = size[keep], outcome[keep]
    signed = size * outcome if pnl is None else outcome
    hit = (np.sign(size) * outcome > 0) if pnl is None else (outcome > 0)
    return _Bars(p=p[keep], conf=conf[keep], hit=hit, pnl=signed)


# --- binning --------------------------------------------------------------------------------


def _bin(values: np.ndarray, edges: np.ndarray, what: str) -> np.ndarray:
    """Bin of each value: ``[e_i, e_{i+1})``, the last bin closed on the right."""
    if values.size and (values.min() < edges[0] or values.max() > edges[-1]):
        raise ConfidenceError(
            f"{what} edges [{edges[0]}, {edges[-1]}] do not cover the values "
            f"[{values.min()}, {values.max()}]"
        )
    return np.minimum(np.searchsorted(edges, values, side="right") - 1, max(edges.size - 2, 0))


def _edges(values: np.ndarray, spec: int | Sequence[float], what: str) -> np.ndarray:
    if isinstance(spec, int | np.integer):
        if spec < 1:
            raise ConfidenceError(f"the number of {what} bins must be at least 1, got {spec}")
        if values.size == 0:
            return np.zeros(0)
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, int(spec) + 1)))
        return edges if edges.size > 1 else np.repeat(edges, 2)
    edges = np.asarray(spec, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ConfidenceError(f"{what} edges must be at least two increasing numbers: {spec!r}")
    return edges


def _grouped(bins: np.ndarray, k: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(bins, minlength=k)
    sums = np.bincount(bins, weights=values, minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums / counts, sums


# --- the three analyses ---------------------------------------------------------------------


def confidence_buckets(
    p_up: ArrayLike,
    *,
    next_return: ArrayLike | None = None,
    pnl: ArrayLike | None = None,
    position: ArrayLike | None = None,
    buckets: int | Sequence[float] = 5,
    method: Method = "distance",
) -> pd.DataFrame:
    """Hit rate and outcome per confidence bucket.

    ``buckets`` is a count of equal-count (quantile) buckets, merged where quantiles tie, or
    fixed edges on the confidence scale. Columns: ``bucket lo hi n share mean_confidence
    mean_p_up hit_rate mean_pnl total_pnl`` (``pnl`` is the signed outcome).
    """
    bars = _bars(p_up, position, next_return, pnl, method)
    edges = _edges(bars.conf, buckets, "confidence")
    if edges.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in BUCKET_COLUMNS})
    k = edges.size - 1
    which = _bin(bars.conf, edges, "confidence bucket")
    counts = np.bincount(which, minlength=k)
    mean_pnl, total_pnl = _grouped(which, k, bars.pnl)
    return pd.DataFrame(
        {
            "bucket": np.arange(k),
            "lo": edges[:-1],
            "hi": edges[1:],
            "n": counts,
            "share": counts / max(bars.conf.size, 1),
            "mean_confidence": _grouped(which, k, bars.conf)[0],
            "mean_p_up": _grouped(which, k, bars.p)[0],
            "hit_rate": _grouped(which, k, bars.hit.astype(np.float64))[0],
            "mean_pnl": mean_pnl,
            "total_pnl": total_pnl,
        }
    )


def accuracy_coverage(
    p_up: ArrayLike,
    *,
    next_return: ArrayLike | None = None,
    pnl: ArrayLike | None = None,
    position: ArrayLike | None = None,
    coverage: Sequence[float] = DEFAULT_COVERAGE,
    method: Method = "distance",
) -> pd.DataFrame:
    """Accuracy when trading only the most confident ``coverage`` share of the counted bars.

    For each share ``k`` the ``ceil(k * N)`` most confident bars are kept (ties: earlier bar
    first). Columns: ``coverage n min_confidence accuracy mean_pnl``; at 100% the accuracy is
    the overall hit rate.
    """
    cover = np.asarray(coverage, dtype=np.float64)
    if cover.ndim != 1 or cover.size == 0 or np.any((cover <= 0) | (cover > 1)):
        raise ConfidenceError(f"coverage must be shares in (0, 1], got {coverage!r}")
    bars = _bars(p_up, position, next_return, pnl, method)
    order = np.argsort(-bars.conf, kind="stable")
    n_total = order.size
    kept = np.maximum(np.ceil(cover * n_total - 1e-9).astype(np.int64), min(n_total, 1))
    if n_total == 0:
        nan = np.full(cover.size, np.nan)
        return pd.DataFrame(
            {"coverage": cover, "n": kept, "min_confidence": nan, "accuracy": nan, "mean_pnl": nan}
        )
    hits = np.cumsum(bars.hit[order])
    pnl_sum = np.cumsum(bars.pnl[order])
    return pd.DataFrame(
        {
            "coverage": cover,
            "n": kept,
            "min_confidence": bars.conf[order][kept - 1],
            "accuracy": hits[kept - 1] / kept,
            "mean_pnl": pnl_sum[kept - 1] / kept,
        }
    )


def reliability(
    p_up: ArrayLike,
    up: ArrayLike,
    *,
    bins: int | Sequence[float] = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> Reliability:
    """Reliability-diagram data of probabilities ``p_up`` against outcomes ``up`` (0/1).

    ``bins`` is a count (equal-width on [0, 1] with ``strategy="uniform"``, equal-count
    with ``"quantile"``) or explicit edges. Bars with NaN in either input are dropped.
    """
    p = _probabilities(p_up)
    y = _array(up, "up", p_up.index if isinstance(p_up, pd.Series) else None)
    if y.shape != p.shape:
        raise ConfidenceError(f"up has {y.size} values, p_up {p.size}")
    keep = np.isfinite(p) & np.isfinite(y)
    p, y = p[keep], y[keep]
    if np.any((y != 0) & (y != 1)):
        raise ConfidenceError("up must hold 0/1 (or False/True) outcomes")
    if strategy not in ("uniform", "quantile"):
        raise ConfidenceError(f"unknown strategy {strategy!r}: use 'uniform' or 'quantile'")
    if isinstance(bins, int | np.integer) and strategy == "uniform":
        if bins < 1:
            raise ConfidenceError(f"the number of reliability bins must be at least 1, got {bins}")
        edges = np.linspace(0.0, 1.0, int(bins) + 1)
    else:
        edges = _edges(p, bins, "reliability")
    if edges.size == 0:
        edges = np.array([0.0, 1.0])
    k = edges.size - 1
    which = _bin(p, edges, "reliability bin")
    counts = np.bincount(which, minlength=k)
    mean_p = _grouped(which, k, p)[0]
    observed = _grouped(which, k, y)[0]
    filled = counts > 0
    n = int(p.size)
    ece = float(np.sum(counts[filled] / n * np.abs(mean_p - observed)[filled])) if n else math.nan
    table = pd.DataFrame(
        {
            "bin": np.arange(k),
            "lo": edges[:-1],
            "hi": edges[1:],
            "n": counts,
            "mean_predicted": mean_p,
            "observed_frequency": observed,
        }
    )
    brier = float(np.mean((p - y) ** 2)) if n else math.nan
    return Reliability(table=table, ece=ece, brier=brier, n=n)


def analyse_confidence(
    p_up: ArrayLike,
    *,
    next_return: ArrayLike | None = None,
    pnl: ArrayLike | None = None,
    position: ArrayLike | None = None,
    buckets: int | Sequence[float] = 5,
    coverage: Sequence[float] = DEFAULT_COVERAGE,
    reliability_bins: int | Sequence[float] = 10,
    method: Method = "distance",
) -> ConfidenceAnalysis:
    """Buckets, accuracy-vs-coverage and (given ``next_return``) the reliability diagram.

    The reliability diagram uses every bar with a prediction and a known ``next_return``,
    traded or not: calibration is a property of ``p_up``, not of the trading rule.
    """
    table = confidence_buckets(
        p_up, next_return=next_return, pnl=pnl, position=position, buckets=buckets, method=method
    )
    curve = accuracy_coverage(
        p_up, next_return=next_return, pnl=pnl, position=position, coverage=coverage, method=method
    )
    calib = None
    if next_return is not None:
        ret = _array(
            next_return, "next_return", p_up.index if isinstance(p_up, pd.Series) else None
        )
        up = np.where(np.isfinite(ret), (ret > 0).astype(np.float64), np.nan)
        calib = reliability(_probabilities(p_up), up, bins=reliability_bins)
    return ConfidenceAnalysis(buckets=table, coverage=curve, reliability=calib)
