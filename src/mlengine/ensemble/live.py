"""The live ensemble: the strategies, the gate and the calibrator, fitted for use on new bars,
saved to a directory and loaded back by the signal service.

:meth:`LiveEnsemble.fit` trains what the walk-forward evaluated, on all the data:

* the gate and its calibrator on the whole level-1 out-of-fold stack (the one
  :class:`mlengine.pipeline.EnsemblePipeline` builds, or the ``stack`` given), split as each
  meta fold of :func:`mlengine.ensemble.metamodel.fit_predict` is
  (:func:`~mlengine.ensemble.metamodel.fit_gate`): the gate on the earlier rows, the
  calibrator on the later ``calibration_share`` after a purge of the label horizon, so no
  calibration row is one the gate trained on;
* each strategy on all the bars (the live models).

:meth:`LiveEnsemble.predict` scores the last bar of ``bars``: each strategy's ``p_up`` and
numeric diagnostics, the gate's weights, the raw mixture and the calibrated probability.

**How much history.** A strategy's value at a bar depends, in principle, on every bar before
it: Wilder-smoothed indicators (ATR, RSI, ADX) are seeded at the first bar of their input, the
market-structure state (trend, open gaps, unmitigated order blocks) is carried forward from the
start, the regime filter is a forward recursion, and the higher timeframes of MTS need whole
days of base bars. The influence of the distant past fades, so a long enough tail gives the
same prediction as the full history; how long is found by measurement at fit time
(:func:`history_needed`): the shortest tail in :data:`HISTORY_LADDER` whose predictions of the
last :data:`CHECK_BARS` training bars equal (to :data:`HISTORY_ATOL`) those made on all
the training bars, doubled as a margin for states older than any the check saw (an order
block unmitigated for months), capped by the training length. The gate's context features
need :data:`CONTEXT_HISTORY` bars. :attr:`LiveEnsemble.min_bars`, the largest of these, is the
fewest bars :meth:`~LiveEnsemble.predict` accepts; each strategy then reads only its own
tail, which keeps a prediction fast whatever history the caller sends.

**Where the time goes.** A prediction computes each strategy's features over its tail (the
bulk of the time: the tails are long for the reasons above) and scores the newest bar alone:
strategies whose ``predict_proba`` takes ``last`` (the neural ones and MSA) run their
networks and boosters on that one bar, not on every bar of the tail. The ensemble's own part
is kept to about a millisecond by avoiding pandas' per-call costs where they buy nothing on
one row: each strategy's row is read in one conversion
(:func:`~mlengine.ensemble.metamodel.numeric_row`), the gate's features of the bar are built
from numpy values (the one-row path of
:func:`~mlengine.ensemble.metamodel.stack_features`), and one pass of the gate gives both the
mixture and the weights; every value is the one the frame operations give.

A saved live ensemble is a directory: ``manifest.json`` (format version, the ensemble
config, each strategy's name, parameters and history, symbol, timeframe, training range,
the gate's feature columns, the calibration method, library versions), ``gate.json``
(:meth:`mlengine.ensemble.gating.Gate.to_dict`), ``calibrator.json``
(:meth:`mlengine.ensemble.calibration.Calibrator.to_dict`, absent with
``calibration="none"``) and ``strategies/<name>/``, each strategy's own artefacts.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlengine.backtest.runs import _versions, read_json_object
from mlengine.data.schema import MLEngineError, check_bar_frame
from mlengine.ensemble.calibration import CalibrationError, Calibrator
from mlengine.ensemble.gating import Gate, GateError, GateParams
from mlengine.ensemble.metamodel import (
    CONTEXT_WINDOW,
    Stack,
    fit_gate,
    numeric_columns,
    numeric_row,
    stack,
    stack_features,
)
from mlengine.strategies import registry
from mlengine.strategies.base import Strategy, strategy_params

if TYPE_CHECKING:
    from mlengine.pipeline import EnsembleConfig

__all__ = [
    "CHECK_BARS",
    "CONTEXT_HISTORY",
    "FORMAT_VERSION",
    "HISTORY_ATOL",
    "HISTORY_LADDER",
    "LiveEnsemble",
    "LiveEnsembleError",
    "LiveEnsembleNotFoundError",
    "LivePrediction",
    "StrategyOutput",
    "history_needed",
    "live_dir",
    "out_of_fold_stack",
]

#: Version of the saved directory's layout; another version is refused on load.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GATE_FILE = "gate.json"
CALIBRATOR_FILE = "calibrator.json"
STRATEGIES_DIR = "strategies"
#: Bars of the gate's context features: the ``CONTEXT_WINDOW``-bar volatility (one more bar
#: for its first return) over its median of the last ``10 * CONTEXT_WINDOW`` bars.
CONTEXT_HISTORY = 11 * CONTEXT_WINDOW + 1
#: Tail lengths tried by :func:`history_needed`, shortest first.
HISTORY_LADDER: tuple[int, ...] = (128, 256, 512, 1024, 1536, 2048, 3072, 4096)
#: Training bars whose predictions from a tail must equal those from the full history.
CHECK_BARS = 48
#: Largest difference of ``p_up`` or a numeric diagnostic (absolute, and relative to the
#: value) that still counts as equal: the neural strategies compute in float32, whose
#: rounding depends on how many windows go through the network together.
HISTORY_ATOL = 1e-6
_VERSIONED = ("mlengine", "numpy", "pandas", "torch", "xgboost", "scikit-learn", "hmmlearn")


class LiveEnsembleError(MLEngineError, ValueError):
    """A live ensemble that cannot be fitted, saved, loaded or asked (names what and where)."""


class LiveEnsembleNotFoundError(LiveEnsembleError, LookupError):
    """No saved live ensemble at the given directory."""


_DIR_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def live_dir(root: Path, symbol: str, timeframe: str) -> Path:
    """The directory of the live ensemble of a series: ``<root>/<SYMBOL>_<tf>/ensemble``
    (beside the CLI's per-strategy live models). A symbol or timeframe that cannot name a
    directory (path characters, ``..``) is refused."""
    for what, value in (("symbol", symbol), ("timeframe", timeframe)):
        if not _DIR_SAFE.match(value) or ".." in value:
            raise LiveEnsembleError(
                f"{what} {value!r} cannot name a model directory (letters, digits, . _ -)"
            )
    return Path(root) / f"{symbol}_{timeframe}" / "ensemble"


# --- predictions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyOutput:
    """One strategy's prediction at the bar: ``p_up`` and its numeric diagnostics."""

    p_up: float
    diagnostics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LivePrediction:
    """The live ensemble's prediction at the bar ``ts`` (open time, UTC): each strategy's
    output, the gate's weights, the raw mixture ``p_raw`` and the calibrated ``p_up``."""

    symbol: str
    timeframe: str
    ts: pd.Timestamp
    strategies: dict[str, StrategyOutput]
    weights: dict[str, float]
    p_raw: float
    p_up: float

    def strategy_frames(self) -> dict[str, pd.DataFrame]:
        """Each strategy's prediction as a one-row frame at ``ts`` (``p_up`` + diagnostics),
        the shape :func:`mlengine.llm.formatter.build_context` reads."""
        index = pd.DatetimeIndex([self.ts], name="ts")
        return {
            name: pd.DataFrame(
                {"p_up": [out.p_up], **{k: [v] for k, v in out.diagnostics.items()}}, index=index
            )
            for name, out in self.strategies.items()
        }

    def ensemble_frame(self) -> pd.DataFrame:
        """The ensemble as a one-row frame at ``ts``: ``p_up``, ``p_raw`` and ``w.<strategy>``."""
        row = {"p_up": [self.p_up], "p_raw": [self.p_raw]}
        row |= {f"w.{name}": [w] for name, w in self.weights.items()}
        return pd.DataFrame(row, index=pd.DatetimeIndex([self.ts], name="ts"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite diagnostics as ``None``)."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "ts": self.ts.isoformat(),
            "strategies": {
                name: {"p_up": out.p_up, "diagnostics": dict(out.diagnostics)}
                for name, out in self.strategies.items()
            },
            "weights": dict(self.weights),
            "p_raw": self.p_raw,
            "p_up": self.p_up,
        }


# --- history --------------------------------------------------------------------------------


def _diagnostics(row: pd.DataFrame, values: dict[Any, float] | None = None) -> dict[str, float]:
    """The finite numeric / boolean diagnostics of a one-row prediction frame (``p_up``
    left out). ``values``: the row's :func:`~mlengine.ensemble.metamodel.numeric_row`, read
    in one conversion; without it (a dtype that conversion does not take) the columns are
    read one by one."""
    if values is None:
        values = {col: float(row[col].to_numpy()[0]) for col in numeric_columns(row)}
    return {str(c): v for c, v in values.items() if c != "p_up" and math.isfinite(v)}


def _same(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> bool:
    """Whether ``p_up`` and the numeric diagnostics of two prediction frames agree."""
    x = a[numeric_columns(a)].to_numpy(dtype=np.float64)
    y = b[numeric_columns(b)].to_numpy(dtype=np.float64)
    if x.shape != y.shape:
        return False
    return bool(np.isclose(x, y, rtol=atol, atol=atol, equal_nan=True).all())


def history_needed(
    model: Strategy,
    bars: pd.DataFrame,
    *,
    ladder: tuple[int, ...] = HISTORY_LADDER,
    check: int = CHECK_BARS,
    atol: float = HISTORY_ATOL,
) -> int:
    """The bars of history the fitted ``model`` needs for a prediction at the last bar of a
    series (module docstring): twice the shortest tail of ``bars`` in ``ladder`` whose
    predictions of the last ``check`` bars match those from all of ``bars``, capped by
    ``len(bars)``; ``len(bars)`` when none does."""
    if len(bars) <= check:
        raise LiveEnsembleError(
            f"strategy {model.name!r}: {len(bars)} bars are too few to measure the history "
            f"it needs (more than {check})"
        )
    reference = model.predict_proba(bars).iloc[-check:]
    if reference["p_up"].isna().all():
        raise LiveEnsembleError(
            f"strategy {model.name!r} predicts none of the last {check} of {len(bars)} bars: "
            "give more bars"
        )
    for n in ladder:
        if n <= check or n >= len(bars):
            continue
        if _same(model.predict_proba(bars.iloc[-n:]).iloc[-check:], reference, atol):
            return min(2 * n, len(bars))
    return len(bars)


# --- the ensemble ---------------------------------------------------------------------------


def out_of_fold_stack(
    bars: pd.DataFrame,
    cfg: EnsembleConfig,
    *,
    jobs_dir: Path | None = None,
    progress: bool = True,
) -> Stack:
    """The out-of-fold stack of the strategies, on the folds the ensemble pipeline uses;
    with ``jobs_dir`` (a config run's ``jobs/<SYMBOL>_<TF>``), every job stored there with
    the same inputs is reused instead of run again."""
    from mlengine.pipeline import level_one

    _, predicted = level_one(bars, cfg, jobs_dir=jobs_dir, progress=progress)
    return stack(predicted, bars, cfg.horizon)


class LiveEnsemble:
    """The fitted strategies, gate and calibrator of one series (see the module docstring).
    Build with :meth:`fit` or :meth:`load`; ``manifest`` describes what was fitted."""

    def __init__(
        self,
        strategies: dict[str, Strategy],
        gate: Gate,
        calibrator: Calibrator | None,
        manifest: dict[str, Any],
    ) -> None:
        self.strategies = strategies
        self.gate = gate
        self.calibrator = calibrator
        self.manifest = manifest
        self.history: dict[str, int] = {
            name: int(doc["history"]) for name, doc in manifest["strategies"].items()
        }
        # strategies that can score the newest bar alone (``predict_proba(..., last=1)``)
        self._last_only = {
            name: "last" in inspect.signature(model.predict_proba).parameters
            for name, model in strategies.items()
        }

    def __repr__(self) -> str:
        return (
            f"LiveEnsemble({self.symbol} {self.timeframe}, strategies={list(self.strategies)}, "
            f"min_bars={self.min_bars})"
        )

    @property
    def symbol(self) -> str:
        return str(self.manifest["symbol"])

    @property
    def timeframe(self) -> str:
        return str(self.manifest["timeframe"])

    @property
    def min_bars(self) -> int:
        """The fewest bars :meth:`predict` accepts (module docstring)."""
        return max(CONTEXT_HISTORY, *self.history.values())

    # -- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        bars: pd.DataFrame,
        config: EnsembleConfig,
        *,
        stack: Stack | None = None,
        jobs_dir: Path | None = None,
        progress: bool = True,
    ) -> LiveEnsemble:
        """Fit the gate and calibrator on the out-of-fold ``stack`` (computed from ``bars``
        as the ensemble pipeline does when not given, reusing the jobs stored in ``jobs_dir``)
        and each strategy on all of ``bars``;
        measure each strategy's history (:func:`history_needed`)."""
        from mlengine.pipeline import strategy_factory

        check_bar_frame(bars)
        data = stack
        if data is None:
            data = out_of_fold_stack(bars, config, jobs_dir=jobs_dir, progress=progress)
        if not data.index.isin(bars.index).all():
            raise LiveEnsembleError("the stack holds rows at bars that are not in bars")
        if list(data.probs.columns) != list(config.strategies):
            raise LiveEnsembleError(
                f"the stack's strategies {list(data.probs.columns)} differ from the config's "
                f"{list(config.strategies)}"
            )
        rows = np.flatnonzero(data.y.notna().to_numpy())
        share = 0.0 if config.calibration == "none" else config.calibration_share
        fitted = fit_gate(
            data,
            rows,
            gate=GateParams(**config.gate),
            calibration=config.calibration,
            calibration_share=share,
            purge=config.horizon,
            seed=config.seed,
            where="live ensemble",
        )
        models: dict[str, Strategy] = {}
        history: dict[str, int] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        console = Console(stderr=True)
        with Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress) as bar:
            task = bar.add_task("live models", total=len(config.strategies))
            for name, params in config.strategies.items():
                bar.update(task, description=f"live model {name}")
                model = strategy_factory(name, params)(seed=config.seed)
                model.fit(bars)
                models[name] = model
                history[name] = history_needed(model, bars)
                bar.advance(task)
        ts = data.index
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "symbol": str(bars.attrs["symbol"]),
            "timeframe": str(bars.attrs["timeframe"]),
            "config": config.model_dump(mode="json"),
            "strategies": {
                name: {
                    "strategy": model.name,
                    "params": strategy_params(model),
                    "history": history[name],
                }
                for name, model in models.items()
            },
            "train_start": bars.index[0].isoformat(),
            "train_end": bars.index[-1].isoformat(),
            "n_bars": len(bars),
            "feature_columns": list(fitted.gate.feature_names_),
            "calibration": fitted.method,
            "gate_rows": _span(ts, fitted.gate_rows),
            "calibration_rows": _span(ts, fitted.calibration_rows),
            "context_history": CONTEXT_HISTORY,
            "versions": _versions(_VERSIONED),
        }
        return cls(models, fitted.gate, fitted.calibrator, manifest)

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Write the directory of the module docstring at ``path``; returns ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.strategies.items():
            model.save(path / STRATEGIES_DIR / name)
        (path / GATE_FILE).write_text(json.dumps(self.gate.to_dict(), allow_nan=False))
        calibrator = path / CALIBRATOR_FILE
        if self.calibrator is not None:
            calibrator.write_text(json.dumps(self.calibrator.to_dict(), allow_nan=False))
        elif calibrator.exists():
            calibrator.unlink()
        # the manifest last: a directory without one is an interrupted save
        (path / MANIFEST).write_text(json.dumps(self.manifest, indent=2, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: Path) -> LiveEnsemble:
        """The live ensemble saved at ``path``; a missing or broken file, or another format
        version, raises :class:`LiveEnsembleError` naming the file."""
        path = Path(path)
        if not path.is_dir():
            raise LiveEnsembleNotFoundError(f"no live ensemble directory at {path}")
        manifest = _read_json(path / MANIFEST)
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise LiveEnsembleError(
                f"{path / MANIFEST}: format version {version!r}, this library reads "
                f"{FORMAT_VERSION}; fit the live ensemble again"
            )
        required = ("symbol", "timeframe", "strategies", "calibration", "feature_columns")
        missing = [k for k in required if k not in manifest]
        if missing or not isinstance(manifest.get("strategies"), dict):
            raise LiveEnsembleError(f"{path / MANIFEST}: missing or bad keys {missing}")
        try:
            gate = Gate.from_dict(_read_json(path / GATE_FILE))
        except GateError as err:
            raise LiveEnsembleError(f"{path / GATE_FILE}: {err}") from None
        calibrator = None
        if manifest["calibration"] != "none":
            try:
                calibrator = Calibrator.from_dict(_read_json(path / CALIBRATOR_FILE))
            except CalibrationError as err:
                raise LiveEnsembleError(f"{path / CALIBRATOR_FILE}: {err}") from None
        models: dict[str, Strategy] = {}
        for name, doc in manifest["strategies"].items():
            where = path / STRATEGIES_DIR / name
            if not isinstance(doc, dict) or "history" not in doc or "strategy" not in doc:
                raise LiveEnsembleError(f"{path / MANIFEST}: strategies.{name} is incomplete")
            if not where.is_dir():
                raise LiveEnsembleError(f"{where}: the saved {name} model is missing")
            try:
                models[name] = registry.get(str(doc["strategy"])).load(where)
            except (MLEngineError, OSError, ValueError, KeyError) as err:
                raise LiveEnsembleError(f"{where}: cannot load the {name} model: {err}") from None
        if list(models) != list(gate.expert_names_):
            raise LiveEnsembleError(
                f"{path / GATE_FILE}: the gate's experts {gate.expert_names_} differ from the "
                f"manifest's strategies {list(models)}"
            )
        return cls(models, gate, calibrator, manifest)

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, bars: pd.DataFrame) -> LivePrediction:
        """The prediction at the last bar of ``bars`` (at least :attr:`min_bars` bars of the
        ensemble's series, oldest first); each strategy reads only its tail."""
        if not isinstance(bars, pd.DataFrame):
            raise LiveEnsembleError(f"bars must be a bar frame, got {type(bars).__name__}")
        if not bars.attrs.get("symbol") or not bars.attrs.get("timeframe"):
            bars = bars.copy(deep=False)
            bars.attrs = {**bars.attrs, "symbol": self.symbol, "timeframe": self.timeframe}
        for key in ("symbol", "timeframe"):
            if str(bars.attrs[key]) != self.manifest[key]:
                raise LiveEnsembleError(
                    f"bars of {key} {bars.attrs[key]!r}: this live ensemble was fitted on "
                    f"{self.manifest[key]!r}"
                )
        if len(bars) < self.min_bars:
            needs = {n: h for n, h in self.history.items()} | {"context": CONTEXT_HISTORY}
            raise LiveEnsembleError(
                f"{len(bars)} bars given: the live ensemble of {self.symbol} {self.timeframe} "
                f"needs at least {self.min_bars} (history per part: {needs})"
            )
        check_bar_frame(bars)
        ts = bars.index[-1]
        predictions: dict[str, pd.DataFrame] = {}
        outputs: dict[str, StrategyOutput] = {}
        # one XGBoost thread: scoring one row, OpenMP workers only add waits (on a busy
        # machine the p99 of a one-row prediction fell from ~130 ms to ~20 ms)
        with xgb.config_context(nthread=1):
            for name, model in self.strategies.items():
                tail = bars.iloc[-self.history[name] :]
                kw: dict[str, Any] = {"last": 1} if self._last_only[name] else {}
                out = model.predict_proba(tail, **kw)
                # one row already (``last=1``): a slice of it would only copy it and its attrs
                last = out if len(out) == 1 else out.iloc[-1:]
                values = numeric_row(last)
                if values is not None and "p_up" in values:
                    p = values["p_up"]
                else:
                    p = float(last["p_up"].iloc[0])
                if not math.isfinite(p):
                    raise LiveEnsembleError(
                        f"strategy {name!r} gives no prediction at {ts} from the last "
                        f"{self.history[name]} bars (an incomplete feature window: flat or "
                        "missing bars?)"
                    )
                predictions[name] = last
                outputs[name] = StrategyOutput(p, _diagnostics(last, values))
        index = pd.DatetimeIndex([ts], name="ts")
        features = stack_features(predictions, bars.iloc[-CONTEXT_HISTORY:], index)
        probs = pd.DataFrame(
            np.array([[o.p_up for o in outputs.values()]], dtype=np.float64),
            index=index,
            columns=pd.Index(list(outputs)),
        )
        try:
            mix, weights = self.gate.predict_with_weights(features, probs)
        except GateError as err:
            raise LiveEnsembleError(f"the gate cannot score {ts}: {err}") from None
        raw = float(mix[0])
        p_up = raw if self.calibrator is None else float(self.calibrator.transform([raw])[0])
        experts = self.gate.expert_names_
        return LivePrediction(
            symbol=self.symbol,
            timeframe=self.timeframe,
            ts=ts,
            strategies=outputs,
            weights={str(k): float(v) for k, v in zip(experts, weights[0], strict=True)},
            p_raw=raw,
            p_up=p_up,
        )


def _span(ts: pd.DatetimeIndex, rows: np.ndarray) -> dict[str, Any]:
    if rows.size == 0:
        return {"start": None, "end": None, "n": 0}
    return {"start": ts[rows[0]].isoformat(), "end": ts[rows[-1]].isoformat(), "n": int(rows.size)}


def _read_json(file: Path) -> dict[str, Any]:
    return read_json_object(file, LiveEnsembleError, "the live ensemble directory")
