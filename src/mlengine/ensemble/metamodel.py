"""The metamodel: learns to combine the strategies from their out-of-fold predictions only.

Two levels of walk-forward, so that nothing downstream sees a prediction made on data its
model trained on:

1. **Level 1** (:func:`mlengine.backtest.walkforward.predict_folds`): per fold, each
   strategy is fitted on the fold's training bars and predicts its test window. The
   stitched out-of-fold (OOF) predictions, with the level-1 fold that made each row, are
   :func:`stack`-ed into one frame: the strategies' ``p_up`` (the experts), their numeric
   diagnostics (regime, breakout probability, structure state, timeframe weights) and
   causal context features of the bars (:func:`context_features`), with the direction
   label of the next ``horizon`` bars.
2. **Level 2** (:func:`fit_predict`): the OOF rows are split walk-forward again (purge of
   the label horizon, optional embargo). In each meta fold the training rows, in time
   order, are split once more: the gate (:class:`mlengine.ensemble.gating.Gate`) learns on
   the earlier rows; after a purge, the later ``calibration_share`` of them — rows the gate
   never trained on — fit the calibrator (chosen by out-of-sample log-loss among
   isotonic / Platt / temperature, or fixed); then the gate and calibrator predict the meta
   fold's test rows. Logistic-regression stacking (on the experts' logits) learns on all
   the meta training rows; the equal-weight average needs no training.

Every row of the result carries its meta fold, and :class:`MetaFold` records the time
ranges of the gate's, the calibrator's and the test rows, so the order can be checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.linear_model import LogisticRegression

from mlengine.backtest.walkforward import Predicted
from mlengine.data.loader import SplitError, WalkForwardSplit
from mlengine.data.schema import MLEngineError
from mlengine.ensemble.calibration import (
    CalibrationError,
    Calibrator,
    calibration_metrics,
    choose_calibrator,
)
from mlengine.ensemble.gating import Gate, GateError, GateParams

__all__ = [
    "CALIBRATION_CHOICES",
    "CONTEXT_COLUMNS",
    "CONTEXT_WINDOW",
    "Calibration",
    "FittedGate",
    "MetaFold",
    "MetaResult",
    "MetamodelError",
    "Stack",
    "calibration_report",
    "context_features",
    "direction_labels",
    "fit_gate",
    "fit_predict",
    "numeric_columns",
    "numeric_row",
    "stack",
    "stack_features",
]

#: Bars of the rolling windows of the context features.
CONTEXT_WINDOW = 24
#: The columns of :func:`context_features`, in order.
CONTEXT_COLUMNS = (
    "ctx_volatility",
    "ctx_trend",
    "ctx_hour_sin",
    "ctx_hour_cos",
    "ctx_week_sin",
    "ctx_week_cos",
)
#: ``calibration`` settings: a method, ``"auto"`` (lowest out-of-sample log-loss) or ``"none"``.
Calibration = Literal["auto", "isotonic", "platt", "temperature", "none"]
CALIBRATION_CHOICES: tuple[str, ...] = get_args(Calibration)
_CLIP = 1e-6
_CANDIDATES = ("ensemble", "equal_weight", "logistic_stack")


class MetamodelError(MLEngineError, ValueError):
    """Predictions, bars or settings the metamodel cannot use."""


# --- level 1: the stack ---------------------------------------------------------------------


def context_features(bars: pd.DataFrame, window: int = CONTEXT_WINDOW) -> pd.DataFrame:
    """Context of each bar from bars up to it: ``ctx_volatility`` (log of the ``window``-bar
    realised volatility over its median of the last ``10 * window`` bars), ``ctx_trend``
    (the ``window``-bar log return in units of that volatility) and the time of day and week
    as sine/cosine pairs."""
    values = _context_values(bars, window, slice(None))
    return pd.DataFrame(dict(zip(CONTEXT_COLUMNS, values, strict=True)), index=bars.index)


def _context_values(bars: pd.DataFrame, window: int, rows: slice) -> list[np.ndarray]:
    """The :data:`CONTEXT_COLUMNS` of :func:`context_features` at ``rows`` of ``bars``. The
    rolling statistics run over all of ``bars`` (their online updates make each value's
    rounding depend on every bar before it); the rest is computed at ``rows`` only, so a
    live prediction asking for the last row does no more than it needs."""
    log_close = np.log(bars["close"].to_numpy())
    logret = np.empty_like(log_close)
    logret[:1] = np.nan
    np.subtract(log_close[1:], log_close[:-1], out=logret[1:])
    rolling = pd.Series(logret).rolling(window)
    vol_series = rolling.std()
    median = vol_series.rolling(10 * window, min_periods=window).median().to_numpy()[rows]
    total = rolling.sum().to_numpy()[rows]
    vol = vol_series.to_numpy()[rows]
    index = pd.DatetimeIndex(bars.index[rows])
    hour = (index.hour + index.minute / 60.0).to_numpy(dtype=np.float64)
    day = (index.day_of_week + hour / 24.0).to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.log(vol / median)
        trend = total / (vol * np.sqrt(window))
    rel[np.isinf(rel)] = np.nan
    trend[np.isinf(trend)] = np.nan
    return [
        rel,
        trend,
        np.sin(2 * np.pi * hour / 24.0),
        np.cos(2 * np.pi * hour / 24.0),
        np.sin(2 * np.pi * day / 7.0),
        np.cos(2 * np.pi * day / 7.0),
    ]


def _check_horizon(horizon: object) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise MetamodelError(f"horizon must be a whole number of bars >= 1, got {horizon!r}")
    return int(horizon)


def direction_labels(bars: pd.DataFrame, horizon: int) -> pd.Series:
    """1.0 when the close ``horizon`` bars ahead is higher, 0.0 when lower; NaN when equal or
    unknown (the last ``horizon`` bars)."""
    horizon = _check_horizon(horizon)
    close = bars["close"]
    ahead = close.shift(-horizon)
    y = pd.Series(np.where(ahead > close, 1.0, 0.0), index=bars.index, name="y")
    return y.where(ahead.notna() & (ahead != close))


@dataclass(frozen=True, eq=False)
class Stack:
    """The level-1 out-of-fold rows: ``probs`` (one ``p_up`` column per strategy),
    ``features`` (context, the experts' ``p_up - 0.5`` and numeric diagnostics as
    ``<strategy>.<column>``), ``y`` (direction label), ``folds`` (the level-1 fold that
    predicted each row, per strategy) and the bars of these rows."""

    probs: pd.DataFrame
    features: pd.DataFrame
    y: pd.Series
    folds: pd.DataFrame
    bars: pd.DataFrame
    horizon: int

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.probs.index)


def _is_number(dtype: Any) -> bool:
    """Whether a column of ``dtype`` holds numbers or booleans. For a numpy dtype this is
    its kind (bool, signed / unsigned integer, float, complex: what pandas'
    ``is_bool_dtype`` / ``is_numeric_dtype`` accept, timedelta excluded) at a fraction of
    their cost; for a pandas extension dtype it is their answer."""
    if isinstance(dtype, np.dtype):
        return dtype.kind in "biufc"
    return bool(pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype))


def numeric_columns(frame: pd.DataFrame) -> list[Any]:
    """The columns of ``frame`` that are numbers or booleans (what the gate can read).
    Decided from the column dtypes, without building a Series per column."""
    names = frame.columns.tolist()
    if not frame.columns.is_unique:
        # a repeated name selects a frame, which is neither a number nor a boolean column
        repeated = frame.columns.duplicated(keep=False)
        return [
            c
            for c, dtype, twice in zip(names, frame.dtypes, repeated, strict=True)
            if not twice and _is_number(dtype)
        ]
    return [c for c, dtype in zip(names, frame.dtypes, strict=True) if _is_number(dtype)]


def numeric_row(frame: pd.DataFrame) -> dict[Any, float] | None:
    """The numeric / boolean columns (:func:`numeric_columns`) of a one-row ``frame`` with
    their values as floats, read in one conversion instead of a Series per column (on one
    row that costs more than the values). ``None`` (read the columns one by one) unless
    ``frame`` has one row, distinct column names and numpy dtypes of kind bool, integer or
    float for those columns: for these the conversion to float64 gives what ``float`` of
    each value gives."""
    read = _numeric_row(frame)
    return None if read is None else read[0]


def _numeric_row(frame: pd.DataFrame) -> tuple[dict[Any, float], dict[Any, np.dtype]] | None:
    """:func:`numeric_row` and the dtypes of its columns."""
    if len(frame) != 1:
        return None
    names = frame.columns.tolist()
    # distinct strings are distinct names (cheaper than the index's own check); else ask it
    distinct = len(set(names)) == len(names) and all(isinstance(n, str) for n in names)
    if not distinct and not frame.columns.is_unique:
        return None
    dtypes: dict[Any, np.dtype] = {}
    positions = []
    for j, (name, dtype) in enumerate(zip(names, frame.dtypes, strict=True)):
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            dtypes[name] = dtype
            positions.append(j)
        elif _is_number(dtype):
            return None
    part = frame if len(positions) == frame.shape[1] else frame.iloc[:, positions]
    values = part.to_numpy(dtype=np.float64)[0].tolist()
    return dict(zip(dtypes, values, strict=True)), dtypes


def _numeric_diagnostics(name: str, pred: pd.DataFrame) -> pd.DataFrame:
    cols = {
        f"{name}.{col}": pred[col].astype(np.float64)
        for col in numeric_columns(pred)
        if col not in ("p_up", "fold")
    }
    return pd.DataFrame(cols, index=pred.index)


def stack_features(
    predictions: Mapping[str, pd.DataFrame], bars: pd.DataFrame, index: pd.Index
) -> pd.DataFrame:
    """The gate's features on the rows ``index`` of ``bars``: context, each strategy's
    ``p_up - 0.5`` (``p.<strategy>``) and numeric diagnostics (``<strategy>.<column>``),
    from its predictions (``p_up`` plus diagnostics; a ``fold`` column is skipped).

    A live prediction asks for one row, the last bar, from one-row predictions at it: that
    row is built from numpy values (:func:`_stack_row`), the same numbers without the frame
    operations, which cost far more than one row's arithmetic."""
    row = _stack_row(predictions, bars, index)
    if row is not None:
        return row
    probs = pd.DataFrame({n: p["p_up"].reindex(index) for n, p in predictions.items()}, index=index)
    parts = [context_features(bars).reindex(index), (probs - 0.5).add_prefix("p.")]
    parts += [_numeric_diagnostics(n, p.reindex(index)) for n, p in predictions.items()]
    return pd.concat(parts, axis=1)


def _context_last(bars: pd.DataFrame, window: int = CONTEXT_WINDOW) -> list[float] | None:
    """The last row of :func:`context_features` of ``bars``, in its column order; ``None``
    unless the closes are float64 and the index a :class:`~pandas.DatetimeIndex` (what the
    one-row path of :func:`stack_features` takes)."""
    if bars["close"].dtype != np.float64 or not isinstance(bars.index, pd.DatetimeIndex):
        return None
    return [float(v[0]) for v in _context_values(bars, window, slice(-1, None))]


def _stack_row(
    predictions: Mapping[str, pd.DataFrame], bars: pd.DataFrame, index: pd.Index
) -> pd.DataFrame | None:
    """:func:`stack_features` on one row, built from numpy values: when ``index`` is the
    last bar of ``bars`` (whose bars are distinct) and every prediction is one row at that
    bar, with distinct column names, a float64 ``p_up`` and numeric columns of numpy
    dtypes (:func:`numeric_row`). The frame path then reindexes nothing and its columns are
    all float64, so the same numbers in the same column order make the same frame. ``None``
    for any other input (the frame path takes it, and raises what it raises)."""
    if not predictions or not isinstance(index, pd.Index) or len(index) != 1:
        return None
    if not index.equals(bars.index[-1:]) or not bars.index.is_unique:
        return None
    names: list[str] = []
    probs: list[float] = []
    diagnostics: list[tuple[str, float]] = []
    for name, pred in predictions.items():
        if pred.index.dtype != index.dtype or not pred.index.equals(index):
            return None
        read = _numeric_row(pred)
        if read is None or read[1].get("p_up") != np.float64:
            return None
        values = read[0]
        names.append(f"p.{name}")
        probs.append(values["p_up"] - 0.5)
        # a dict, as in _numeric_diagnostics: a repeated name keeps its first place, last value
        own = {f"{name}.{c}": v for c, v in values.items() if c not in ("p_up", "fold")}
        diagnostics += own.items()
    context = _context_last(bars)
    if context is None:
        return None
    columns = [*CONTEXT_COLUMNS, *names, *(c for c, _ in diagnostics)]
    row = np.array([[*context, *probs, *(v for _, v in diagnostics)]], dtype=np.float64)
    return pd.DataFrame(row, index=index, columns=pd.Index(columns))


def stack(predicted: Mapping[str, Predicted], bars: pd.DataFrame, horizon: int = 1) -> Stack:
    """Stack the level-1 OOF predictions of several strategies (same folds) on ``bars``;
    ``horizon``: the bars ahead of the ensemble's direction label (1: the next bar, what a
    bar-by-bar backtest trades), whatever the strategies' own label horizons."""
    horizon = _check_horizon(horizon)
    if len(predicted) < 2:
        raise MetamodelError(f"the metamodel needs at least 2 strategies, got {list(predicted)}")
    index: pd.Index | None = None
    for name, pred in predicted.items():
        rows = pred.predictions.index
        if not rows.isin(bars.index).all():
            raise MetamodelError(f"strategy {name!r}: predictions on bars that are not in bars")
        if index is not None and not rows.equals(index):
            raise MetamodelError(
                f"strategy {name!r} predicted other bars than {next(iter(predicted))!r}: "
                "stack predictions made on the same walk-forward folds"
            )
        index = rows
    assert index is not None
    probs = pd.DataFrame({n: p.predictions["p_up"] for n, p in predicted.items()}, index=index)
    outside = (probs < 0) | (probs > 1)
    for name in probs.columns[outside.any().to_numpy()]:
        row = int(np.flatnonzero(outside[name].to_numpy())[0])
        value = float(probs[name].iloc[row])
        raise MetamodelError(
            f"strategy {name!r}: p_up = {value} at {index[row]} lies outside [0, 1]"
        )
    features = stack_features({n: p.predictions for n, p in predicted.items()}, bars, index)
    folds = pd.DataFrame({n: p.predictions["fold"] for n, p in predicted.items()}, index=index)
    return Stack(
        probs=probs,
        features=features,
        y=direction_labels(bars, horizon).reindex(index),
        folds=folds,
        bars=bars.loc[index],
        horizon=horizon,
    )


# --- level 2: the meta walk-forward ---------------------------------------------------------


@dataclass(frozen=True)
class MetaFold:
    """Time ranges (first and last bar, inclusive) of one meta fold's parts."""

    fold: int
    gate_start: pd.Timestamp
    gate_end: pd.Timestamp
    calibration_start: pd.Timestamp | None
    calibration_end: pd.Timestamp | None
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    n_gate: int
    n_calibration: int
    n_test: int
    calibration: str

    def to_dict(self) -> dict[str, Any]:
        items = vars(self).items()
        return {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in items}


@dataclass(frozen=True, eq=False)
class MetaResult:
    """Level-2 OOS predictions on the meta test rows.

    ``candidates``: name → frame with ``p_up`` and ``fold`` (the meta fold) for
    ``"ensemble"`` (the gate, calibrated), ``"equal_weight"`` and ``"logistic_stack"``.
    ``raw``: the gate's uncalibrated mixture; ``weights``: the gate's weights per strategy;
    ``folds``: :class:`MetaFold` per meta fold; ``calibrators``: the one of each fold.
    """

    candidates: dict[str, pd.DataFrame]
    raw: pd.Series
    weights: pd.DataFrame
    folds: tuple[MetaFold, ...]
    calibrators: tuple[Calibrator | None, ...] = field(default_factory=tuple)

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.raw.index)


def _logits(probs: pd.DataFrame) -> np.ndarray:
    p = np.clip(probs.fillna(0.5).to_numpy(dtype=np.float64), _CLIP, 1 - _CLIP)
    return np.log(p / (1 - p))


def _split_train(rows: np.ndarray, share: float, purge: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered training positions → (gate rows, calibration rows): the later ``share``
    calibrates, the ``purge`` rows before it are dropped."""
    if share <= 0:
        return rows, rows[:0]
    n_cal = round(rows.size * share)
    cut = rows.size - n_cal
    return rows[: max(cut - purge, 0)], rows[cut:]


def _fit_calibrator(
    raw: np.ndarray, y: np.ndarray, calibration: str, where: str
) -> tuple[Calibrator | None, str]:
    if calibration == "none":
        return None, "none"
    if raw.size < 20 or np.unique(y).size < 2:
        raise MetamodelError(
            f"{where}: {raw.size} calibration rows with classes {np.unique(y).tolist()}"
            " cannot fit a calibrator; lower calibration_share, lengthen the data or set "
            "calibration='none'"
        )
    method = None if calibration == "auto" else calibration
    fitted, _ = choose_calibrator(raw, y, method=method)
    return fitted, type(fitted).__name__.removesuffix("Calibrator").lower()


@dataclass(frozen=True, eq=False)
class FittedGate:
    """A gate and the calibrator of its mixture (``None`` with ``calibration="none"``),
    the calibration method chosen, and the stack positions each learned from."""

    gate: Gate
    calibrator: Calibrator | None
    method: str
    gate_rows: np.ndarray
    calibration_rows: np.ndarray


def fit_gate(
    data: Stack,
    rows: np.ndarray,
    *,
    gate: GateParams | None = None,
    calibration: str = "auto",
    calibration_share: float = 0.3,
    purge: int = 1,
    seed: int = 0,
    where: str = "metamodel",
) -> FittedGate:
    """Fit a gate and its calibrator on the stack positions ``rows`` (time order, labels
    known): the gate on the earlier rows, the calibrator on the later ``calibration_share``
    of them after a purge of ``purge`` rows, so that no calibration row is one the gate
    trained on (``calibration_share = 0``: the gate takes every row, no calibrator). The
    gate is seeded with ``seed``; errors start with ``where``."""
    gate_rows, cal_rows = _split_train(rows, calibration_share, purge)
    y = data.y.to_numpy(dtype=np.float64)
    model = Gate(gate or GateParams(), seed=seed)
    try:
        model.fit(data.features.iloc[gate_rows], data.probs.iloc[gate_rows], y[gate_rows])
        raw_cal = model.predict(data.features.iloc[cal_rows], data.probs.iloc[cal_rows])
        calibrator, method = _fit_calibrator(raw_cal.to_numpy(), y[cal_rows], calibration, where)
    except (GateError, CalibrationError) as err:
        raise MetamodelError(f"{where}: {err}") from None
    return FittedGate(model, calibrator, method, gate_rows, cal_rows)


def fit_predict(
    data: Stack,
    splitter: WalkForwardSplit,
    *,
    gate: GateParams | None = None,
    calibration: str = "auto",
    calibration_share: float = 0.3,
    seed: int = 0,
    progress: bool = True,
) -> MetaResult:
    """The meta walk-forward of the module docstring over ``data``'s rows. The splitter's
    purge is raised to the label horizon. Meta fold ``k``'s gate is seeded with ``seed + k``
    (``gate.seed`` is not used). With ``calibration="none"`` the gate learns on all the
    training rows."""
    if calibration not in CALIBRATION_CHOICES:
        raise MetamodelError(f"calibration={calibration!r}: use one of {CALIBRATION_CHOICES}")
    if not 0.0 <= calibration_share < 1.0:
        raise MetamodelError(f"calibration_share must lie in [0, 1), got {calibration_share}")
    if calibration != "none" and calibration_share == 0.0:
        raise MetamodelError("calibration needs rows of its own: calibration_share > 0")
    share = 0.0 if calibration == "none" else calibration_share
    split = splitter.with_purge(data.horizon)
    purge = split.purge
    try:
        folds = list(split.folds(data.bars))
    except SplitError as err:
        raise MetamodelError(
            f"the meta walk-forward on {len(data.y)} out-of-fold rows: {err}; lower "
            "meta_min_train or meta_test_size, or give more data"
        ) from None
    known = data.y.notna().to_numpy()
    y_all = data.y.fillna(0.0).to_numpy(dtype=np.float64)
    names = list(data.probs.columns)
    parts: dict[str, list[pd.DataFrame]] = {
        k: [] for k in ("ensemble", "equal_weight", "logistic_stack")
    }
    raws, weights, metas, calibrators = [], [], [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task("metamodel walk-forward", total=len(folds))
        for fold in folds:
            train = fold.train[known[fold.train]]
            fitted = fit_gate(
                data,
                train,
                gate=gate,
                calibration=calibration,
                calibration_share=share,
                purge=purge,
                seed=seed + fold.fold,
                where=f"meta fold {fold.fold}",
            )
            model, calibrator, method = fitted.gate, fitted.calibrator, fitted.method
            gate_rows, cal_rows = fitted.gate_rows, fitted.calibration_rows
            test = fold.test
            raw = model.predict(data.features.iloc[test], data.probs.iloc[test])
            p = raw.to_numpy() if calibrator is None else calibrator.transform(raw.to_numpy())
            index = data.probs.index[test]
            fold_id = np.full(test.size, fold.fold, dtype=np.int64)
            parts["ensemble"].append(pd.DataFrame({"p_up": p, "fold": fold_id}, index=index))
            mean = data.probs.iloc[test].fillna(0.5).mean(axis=1).to_numpy()
            parts["equal_weight"].append(pd.DataFrame({"p_up": mean, "fold": fold_id}, index=index))
            lr = LogisticRegression(C=1.0, max_iter=1000)
            lr.fit(_logits(data.probs.iloc[train]), y_all[train])
            p_lr = lr.predict_proba(_logits(data.probs.iloc[test]))[:, 1]
            lr_frame = pd.DataFrame({"p_up": p_lr, "fold": fold_id}, index=index)
            parts["logistic_stack"].append(lr_frame)
            raws.append(raw)
            weights.append(model.weights(data.features.iloc[test]))
            calibrators.append(calibrator)
            ts = data.probs.index
            metas.append(
                MetaFold(
                    fold=fold.fold,
                    gate_start=ts[gate_rows[0]],
                    gate_end=ts[gate_rows[-1]],
                    calibration_start=ts[cal_rows[0]] if cal_rows.size else None,
                    calibration_end=ts[cal_rows[-1]] if cal_rows.size else None,
                    test_start=ts[test[0]],
                    test_end=ts[test[-1]],
                    n_gate=int(gate_rows.size),
                    n_calibration=int(cal_rows.size),
                    n_test=int(test.size),
                    calibration=method,
                )
            )
            bar.advance(task)
    w = pd.concat(weights)
    w.columns = names
    return MetaResult(
        candidates={k: pd.concat(v) for k, v in parts.items()},
        raw=pd.concat(raws).rename("p_raw"),
        weights=w,
        folds=tuple(metas),
        calibrators=tuple(calibrators),
    )


def calibration_report(
    result: MetaResult, y: pd.Series, n_bins: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reliability bins (column ``stage``: raw / calibrated) and metrics (Brier, log-loss,
    ECE, n per stage) of the ensemble on its meta test rows with a known label."""
    labels = y.reindex(result.index)
    known = labels.notna().to_numpy()
    bins, metrics = [], []
    stages = {"raw": result.raw, "calibrated": result.candidates["ensemble"]["p_up"]}
    for stage, p in stages.items():
        m = calibration_metrics(p.to_numpy()[known], labels.to_numpy()[known], n_bins)
        bins.append(m["bins"].assign(stage=stage))
        metrics.append({"stage": stage, **{k: m[k] for k in ("brier", "log_loss", "ece", "n")}})
    table = pd.concat(bins, ignore_index=True)
    table = table[["stage", *[c for c in table.columns if c != "stage"]]]
    return table, pd.DataFrame(metrics)
