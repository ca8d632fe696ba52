"""Probability calibration: isotonic, Platt and temperature scaling, and their metrics.

A calibrator maps the raw probability ``p`` that the price goes up to a calibrated one. It
must be fitted on predictions its model never trained on (out-of-fold or later data). Every
calibrator is monotone non-decreasing, keeps its output in [0, 1], passes NaN through and
round-trips through JSON (:meth:`Calibrator.to_dict` / :meth:`Calibrator.from_dict`).

Where a logit is taken, ``p`` is first clipped to ``[EPS, 1 - EPS]`` with ``EPS = 1e-12``
(``|logit| <= 27.7``), so that 0 and 1 stay finite.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from mlengine.backtest.confidence import reliability
from mlengine.data.schema import MLEngineError

__all__ = [
    "EPS",
    "METHODS",
    "CalibrationError",
    "Calibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "calibration_metrics",
    "choose_calibrator",
    "make_calibrator",
]

EPS = 1e-12
METHODS: tuple[str, ...] = ("isotonic", "platt", "temperature")
ArrayLike = pd.Series | np.ndarray | Sequence[float]
# Temperature search range: T in [1e-2, 1e2], on log T.
_LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))


class CalibrationError(MLEngineError, ValueError):
    """Probabilities, outcomes or settings a calibrator cannot use."""


# --- inputs ---------------------------------------------------------------------------------


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_array(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CalibrationError(f"{name} must be numbers: {err}") from None
    if out.ndim != 1:
        raise CalibrationError(f"{name} must be one-dimensional, got shape {out.shape}")
    return out


def _probabilities(p: ArrayLike, *, allow_nan: bool) -> np.ndarray:
    out = _as_array(p, "p")
    if not allow_nan and np.isnan(out).any():
        raise CalibrationError(f"p is NaN at index {_first(np.isnan(out))}")
    outside = (out < 0) | (out > 1) | np.isinf(out)
    if outside.any():
        pos = _first(outside)
        raise CalibrationError(f"p must lie in [0, 1]: {out[pos]} at index {pos}")
    return out


def _pairs(p: ArrayLike, y: ArrayLike, *, both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``p`` in [0, 1] and ``y`` in {0, 1} of one length, without NaN."""
    prob = _probabilities(p, allow_nan=False)
    out = _as_array(y, "y")
    if out.size != prob.size:
        raise CalibrationError(f"y has {out.size} values, p {prob.size}")
    if prob.size == 0:
        raise CalibrationError("p and y are empty")
    bad = (out != 0) & (out != 1)
    if bad.any():
        pos = _first(bad)
        raise CalibrationError(f"y must hold 0/1 outcomes: {out[pos]} at index {pos}")
    if both_classes and np.unique(out).size < 2:
        raise CalibrationError(f"y holds only the class {int(out[0])}: a calibrator needs both")
    return prob, out


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))


# --- calibrators ----------------------------------------------------------------------------


class Calibrator(ABC):
    """Maps raw probabilities of "up" to calibrated ones; fit, then transform."""

    method: ClassVar[str]
    _fitted: bool = False

    def fit(self, p: ArrayLike, y: ArrayLike) -> Calibrator:
        """Fit on probabilities ``p`` in [0, 1] and outcomes ``y`` in {0, 1}; returns self."""
        prob, out = _pairs(p, y, both_classes=True)
        self._fit(prob, out)
        self._fitted = True
        return self

    def transform(self, p: ArrayLike) -> np.ndarray:
        """Calibrated probabilities of ``p`` (NaN stays NaN)."""
        if not self._fitted:
            raise CalibrationError(f"the {self.method} calibrator is not fitted")
        prob = _probabilities(p, allow_nan=True)
        out = np.full(prob.shape, np.nan)
        known = ~np.isnan(prob)
        out[known] = np.clip(self._transform(prob[known]), 0.0, 1.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters: ``{"method": ..., **params}``."""
        if not self._fitted:
            raise CalibrationError(f"the {self.method} calibrator is not fitted")
        return {"method": self.method, **self._params()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Calibrator:
        """The fitted calibrator that :meth:`to_dict` wrote."""
        method = data.get("method") if isinstance(data, dict) else None
        calibrator = make_calibrator(str(method))
        params = {k: v for k, v in data.items() if k != "method"}
        try:
            calibrator._load(params)
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(
                f"bad {method} calibrator parameters {params!r}: {err}"
            ) from None
        calibrator._fitted = True
        return calibrator

    @abstractmethod
    def _fit(self, p: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def _transform(self, p: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _params(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load(self, params: dict[str, Any]) -> None: ...


class IsotonicCalibrator(Calibrator):
    """Isotonic regression (``out_of_bounds="clip"``, output in [0, 1]), kept as thresholds.

    Between thresholds the map is linear; outside them it is flat.
    """

    method = "isotonic"

    def __init__(self) -> None:
        self.x_thresholds = np.zeros(0)
        self.y_thresholds = np.zeros(0)

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        self.x_thresholds = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_thresholds = np.asarray(iso.y_thresholds_, dtype=np.float64)

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return np.interp(p, self.x_thresholds, self.y_thresholds)

    def _params(self) -> dict[str, Any]:
        return {"x": self.x_thresholds.tolist(), "y": self.y_thresholds.tolist()}

    def _load(self, params: dict[str, Any]) -> None:
        x = np.asarray(params["x"], dtype=np.float64)
        y = np.asarray(params["y"], dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0 or np.any(np.diff(x) < 0):
            raise ValueError("x and y must be non-empty equal-length arrays, x sorted")
        if np.any(np.diff(y) < 0) or np.any((y < 0) | (y > 1)):
            raise ValueError("y must be non-decreasing in [0, 1]")
        self.x_thresholds, self.y_thresholds = x, y


class PlattCalibrator(Calibrator):
    """Platt scaling on the logit: ``sigmoid(a * logit(p) + b)``.

    Fitted as scikit-learn's sigmoid calibration (Platt's smoothed targets, L-BFGS-B) on
    ``logit(p)``, with the slope ``a >= 0`` so that the ranking is never inverted.
    """

    method = "platt"

    def __init__(self) -> None:
        self.a = 1.0
        self.b = 0.0

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        f = _logit(p)
        n1 = float(y.sum())
        n0 = y.size - n1
        target = np.where(y > 0, (n1 + 1.0) / (n1 + 2.0), 1.0 / (n0 + 2.0))

        def loss_grad(ab: np.ndarray) -> tuple[float, np.ndarray]:
            z = ab[0] * f + ab[1]
            loss = float(np.sum(np.logaddexp(0.0, z) - target * z))
            g = expit(z) - target
            return loss, np.array([g @ f, g.sum()])

        start = np.array([0.0, math.log((n1 + 1.0) / (n0 + 1.0))])
        result = minimize(
            loss_grad,
            start,
            method="L-BFGS-B",
            jac=True,
            bounds=[(0.0, None), (None, None)],
            options={"gtol": 1e-6, "ftol": 64 * np.finfo(float).eps},
        )
        self.a, self.b = float(result.x[0]), float(result.x[1])

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(expit(self.a * _logit(p) + self.b), dtype=np.float64)

    def _params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}

    def _load(self, params: dict[str, Any]) -> None:
        a, b = float(params["a"]), float(params["b"])
        if not (math.isfinite(a) and math.isfinite(b) and a >= 0):
            raise ValueError("a must be finite and >= 0, b finite")
        self.a, self.b = a, b


class TemperatureCalibrator(Calibrator):
    """Temperature scaling: ``sigmoid(logit(p) / T)``, ``T`` in [1e-2, 1e2] minimising log-loss.

    ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens timid ones.
    """

    method = "temperature"

    def __init__(self) -> None:
        self.temperature = 1.0

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        f = _logit(p)

        def loss(log_t: float) -> float:
            z = f * math.exp(-log_t)
            return float(np.mean(np.logaddexp(0.0, z) - y * z))

        result = minimize_scalar(
            loss, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-10}
        )
        self.temperature = math.exp(float(result.x))

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(expit(_logit(p) / self.temperature), dtype=np.float64)

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _load(self, params: dict[str, Any]) -> None:
        t = float(params["temperature"])
        if not (math.isfinite(t) and t > 0):
            raise ValueError("temperature must be finite and > 0")
        self.temperature = t


_CLASSES: dict[str, type[Calibrator]] = {
    cls.method: cls for cls in (IsotonicCalibrator, PlattCalibrator, TemperatureCalibrator)
}


def make_calibrator(method: str) -> Calibrator:
    """An unfitted calibrator: ``"isotonic"``, ``"platt"`` or ``"temperature"``."""
    if method not in _CLASSES:
        raise CalibrationError(f"unknown calibration method {method!r}: use one of {METHODS}")
    return _CLASSES[method]()


# --- metrics and choice ---------------------------------------------------------------------


def calibration_metrics(p: ArrayLike, y: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Brier score, log-loss (``p`` clipped to ``[EPS, 1 - EPS]``) and expected calibration error.

    ``bins`` is the reliability-diagram table of ``n_bins`` equal-width bins on [0, 1]
    (``bin lo hi n mean_predicted observed_frequency``, see
    :func:`mlengine.backtest.confidence.reliability`); ``ece`` is weighted by bin count.
    """
    prob, out = _pairs(p, y, both_classes=False)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise CalibrationError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    rel = reliability(prob, out, bins=int(n_bins))
    return {
        "n": rel.n,
        "brier": rel.brier,
        "log_loss": _log_loss(prob, out),
        "ece": rel.ece,
        "bins": rel.table,
    }


def choose_calibrator(
    p: ArrayLike,
    y: ArrayLike,
    methods: Sequence[str] = METHODS,
    holdout: float = 0.3,
    method: str | None = None,
) -> tuple[Calibrator, pd.DataFrame]:
    """The calibrator with the lowest out-of-sample log-loss, refitted on all of ``p, y``.

    ``p, y`` are in time order: each candidate is fitted on the earlier ``1 - holdout`` share
    and scored on the later ``holdout`` share. ``method`` fixes the choice (it is still
    scored). Returns the fitted calibrator and a table ``method oos_log_loss``, best first.
    """
    prob, out = _pairs(p, y, both_classes=True)
    candidates = tuple(methods) if method is None else (method,)
    if not candidates:
        raise CalibrationError("methods is empty: give at least one calibration method")
    for name in candidates:
        make_calibrator(name)
    if not 0.0 < holdout < 1.0:
        raise CalibrationError(f"holdout must lie in (0, 1), got {holdout}")
    split = round(prob.size * (1.0 - holdout))
    if split < 2 or split >= prob.size:
        raise CalibrationError(
            f"holdout={holdout} splits {prob.size} values into {split} to fit and "
            f"{prob.size - split} to score: both parts need values"
        )
    if np.unique(out[:split]).size < 2:
        raise CalibrationError(
            f"the fit part (first {split} values) holds only the class {int(out[0])}"
        )
    scores = {}
    for name in candidates:
        fitted = make_calibrator(name).fit(prob[:split], out[:split])
        scores[name] = _log_loss(fitted.transform(prob[split:]), out[split:])
    table = pd.DataFrame({"method": list(scores), "oos_log_loss": list(scores.values())})
    table = table.sort_values("oos_log_loss", kind="stable", ignore_index=True)
    return make_calibrator(str(table["method"].iloc[0])).fit(prob, out), table
