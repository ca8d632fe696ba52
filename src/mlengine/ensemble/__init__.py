"""The metamodel stage: combines strategy predictions and calibrates the probabilities.

:mod:`.gating` (the neural gate over the strategies), :mod:`.calibration` (isotonic, Platt,
temperature) and :mod:`.metamodel` (stacking the out-of-fold predictions, the gate and
calibrator walk-forward). The run that ties them to the strategies and the backtest is
:class:`mlengine.pipeline.EnsemblePipeline`.
"""

from __future__ import annotations

from mlengine.ensemble.calibration import (
    CalibrationError,
    Calibrator,
    calibration_metrics,
    choose_calibrator,
    make_calibrator,
)
from mlengine.ensemble.gating import Gate, GateError, GateParams, weight_entropy
from mlengine.ensemble.metamodel import MetamodelError, MetaResult, Stack, fit_predict, stack

__all__ = [
    "CalibrationError",
    "Calibrator",
    "Gate",
    "GateError",
    "GateParams",
    "MetaResult",
    "MetamodelError",
    "Stack",
    "calibration_metrics",
    "choose_calibrator",
    "fit_predict",
    "make_calibrator",
    "stack",
    "weight_entropy",
]
