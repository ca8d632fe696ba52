"""The metamodel stage: combines strategy predictions and calibrates the probabilities."""

from __future__ import annotations

from mlengine.ensemble.calibration import (
    CalibrationError,
    Calibrator,
    calibration_metrics,
    choose_calibrator,
    make_calibrator,
)

__all__ = [
    "CalibrationError",
    "Calibrator",
    "calibration_metrics",
    "choose_calibrator",
    "make_calibrator",
]
