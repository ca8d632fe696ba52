"""Runs of the pipeline, end to end.

:func:`evaluate` — strategies side by side on the same walk-forward folds and costs.

:func:`train_strategy` — bars → walk-forward (a fresh model per fold, trained on the fold's
training bars only, predicting its test window) → stitched out-of-sample predictions →
signal rule → backtest with costs → validity verdict → run directory with the HTML report
(attention heatmap and feature importance when the strategy explains itself) and rows in
the store; then the model for live use, fitted on all the bars, saved under
``<data_dir>/models/<SYMBOL>_<timeframe>/<strategy>/`` with a ``training.json`` naming the
run that measured it. Buy-and-hold runs beside it on the same folds and costs. The live
model's training bars include the whole OOS period: its own performance is the run's,
measured on models that never saw those bars.

:class:`EnsemblePipeline` — the strategies walk-forward, their out-of-fold predictions
stacked, the gate and calibrator walk-forward over them, and every candidate (the ensemble,
the simple ensembles, each strategy) backtested and judged on the same bars, from one
:class:`EnsembleConfig`.

:class:`RunConfig` — the YAML run config (assets with date ranges, the ensemble settings,
the store); :mod:`mlengine.runner` gives such a run its id, directory and resume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console

from mlengine.backtest.compare import Comparison, compare, comparison
from mlengine.backtest.confidence import accuracy_coverage
from mlengine.backtest.costs import CostModel
from mlengine.backtest.engine import DEFAULT_COSTS
from mlengine.backtest.signals import HysteresisSignal, SignalRule
from mlengine.backtest.validity import ValidityConfig
from mlengine.backtest.walkforward import (
    Predicted,
    StrategyFactory,
    WalkForwardRun,
    backtest_predictions,
    predict_folds,
    score_predictions,
)
from mlengine.data.loader import Fold, WalkForwardSplit
from mlengine.data.schema import MLEngineError, check_bar_frame
from mlengine.ensemble.calibration import calibration_metrics
from mlengine.ensemble.gating import GateParams
from mlengine.ensemble.metamodel import (
    Calibration,
    MetaResult,
    Stack,
    calibration_report,
    fit_predict,
    stack,
)
from mlengine.parallel import Executor
from mlengine.strategies import registry
from mlengine.strategies.base import Strategy, StrategyError, strategy_params

if TYPE_CHECKING:
    from mlengine.data.store import Store

__all__ = [
    "DEFAULT_MIN_TRAIN",
    "DEFAULT_TEST_SIZE",
    "ENSEMBLE_STRATEGIES",
    "AssetSpec",
    "ConfigFileError",
    "EnsembleConfig",
    "EnsemblePipeline",
    "EnsembleResult",
    "RegisteredFactory",
    "RunConfig",
    "TrainResult",
    "asset_bars",
    "default_signal",
    "ensemble_summary",
    "ensemble_title",
    "evaluate",
    "label_horizon",
    "level_one",
    "load_run_config",
    "models_root",
    "read_settings",
    "strategy_factory",
    "train_strategy",
    "validated",
]

#: The walk-forward scheme of ``mlengine train`` / ``backtest`` unless told otherwise:
#: expanding training windows of at least 2,000 bars, 60-day test windows.
DEFAULT_TEST_SIZE = "60D"
DEFAULT_MIN_TRAIN = 2000


def default_signal() -> HysteresisSignal:
    """Enter when ``p_up`` leaves 0.5 by more than 0.03, leave when it crosses back to 0.5."""
    return HysteresisSignal(enter=0.03, exit=0.0)


def models_root(root: Path | None = None) -> Path:
    """``root``, else ``<settings.data_dir>/models``."""
    if root is not None:
        return Path(root)
    from mlengine.config import get_settings

    return get_settings().data_dir / "models"


@dataclass(frozen=True)
class RegisteredFactory:
    """Makes the registered strategy ``name`` with ``params``: ``factory(seed=None)``.
    A plain picklable object, so that worker processes can make strategies."""

    name: str
    params: Mapping[str, Any]

    def __call__(self, seed: int | None = None) -> Strategy:
        return registry.create(self.name, seed=seed, **self.params)


def strategy_factory(name: str, params: Mapping[str, Any] | None = None) -> RegisteredFactory:
    """A factory of the registered strategy ``name``; the parameters are checked at once by
    building one instance."""
    chosen = dict(params or {})
    try:
        registry.create(name, **chosen)
    except TypeError as err:  # an unknown keyword of a strategy's constructor
        raise StrategyError(f"{name}: {err}") from None
    return RegisteredFactory(name, chosen)


def label_horizon(strategy: Strategy) -> int:
    """The strategy's label horizon in bars (its ``horizon`` parameter; 1 when it has none):
    the walk-forward purge."""
    horizon = strategy_params(strategy).get("horizon", 1)
    return int(horizon) if isinstance(horizon, int) and not isinstance(horizon, bool) else 1


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The walk-forward comparison (the strategy and buy-and-hold on the same folds, bars
    and costs), the strategy's run, and where the live model went (``None``: not saved)."""

    comparison: Comparison
    model_dir: Path | None
    name: str

    @property
    def run(self) -> WalkForwardRun:
        return self.comparison.runs[self.name]


def evaluate(
    factories: Mapping[str, StrategyFactory],
    bars: pd.DataFrame,
    *,
    splitter: WalkForwardSplit | None = None,
    to_signal: SignalRule | None = None,
    **options: Any,
) -> Comparison:
    """Walk-forward every factory on the same folds, with the purge of the longest label
    horizon among them; ``splitter`` defaults to :data:`DEFAULT_TEST_SIZE` test windows
    after :data:`DEFAULT_MIN_TRAIN` bars, ``to_signal`` to :func:`default_signal`;
    ``options`` go to :func:`mlengine.backtest.walkforward.walk_forward`."""
    split = splitter or WalkForwardSplit(
        test_size=DEFAULT_TEST_SIZE, min_train_size=DEFAULT_MIN_TRAIN
    )
    horizon = max(label_horizon(make()) for make in factories.values())
    return compare(
        factories,
        bars,
        splitter=split,
        horizon=horizon,
        to_signal=to_signal or default_signal(),
        **options,
    )


def train_strategy(
    name: str,
    bars: pd.DataFrame,
    *,
    params: Mapping[str, Any] | None = None,
    splitter: WalkForwardSplit | None = None,
    to_signal: SignalRule | None = None,
    costs: CostModel = DEFAULT_COSTS,
    store: Store | None = None,
    seed: int = 0,
    save_model: bool = True,
    runs_dir: Path | None = None,
    models_dir: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Walk-forward evaluate strategy ``name`` on ``bars`` beside buy-and-hold, then fit
    and save the live model (see the module docstring). ``splitter`` and ``to_signal`` as
    in :func:`evaluate`. ``runs_dir`` / ``models_dir``: roots of the run and model
    directories (default under the settings' data dir)."""
    factory = strategy_factory(name, params)
    factories = {name: factory}
    if name != "buy_and_hold":
        factories["buy_and_hold"] = strategy_factory("buy_and_hold")
    comparison = evaluate(
        factories,
        bars,
        splitter=splitter,
        to_signal=to_signal,
        costs=costs,
        store=store,
        seed=seed,
        save=runs_dir if runs_dir is not None else True,
        progress=progress,
    )
    run = comparison.runs[name]
    model_dir = None
    if save_model:
        model = factory(seed=seed)
        status = Console(stderr=True).status(f"fitting the live {name} model on {len(bars):,} bars")
        with status if progress else nullcontext():
            model.fit(bars)
        model_dir = models_root(models_dir) / f"{run.symbol}_{run.timeframe}" / name
        model.save(model_dir)
        training = {
            "strategy": name,
            "params": run.params,
            "symbol": run.symbol,
            "timeframe": run.timeframe,
            "trained_at": datetime.now(UTC).isoformat(),
            "train_start": bars.index[0].isoformat(),
            "train_end": bars.index[-1].isoformat(),
            "n_bars": len(bars),
            "seed": seed,
            "walk_forward_run": run.run_id,
            "oos": {"metrics": run.metrics.to_dict(), "verdict": run.verdict.to_dict()},
        }
        text = json.dumps(training, indent=2, allow_nan=False, default=str)
        (model_dir / "training.json").write_text(text)
    return TrainResult(comparison=comparison, model_dir=model_dir, name=name)


# --- the ensemble ---------------------------------------------------------------------------

#: The five strategies the ensemble combines by default.
ENSEMBLE_STRATEGIES: tuple[str, ...] = ("pva", "mrd", "vbp", "msa", "mts")


class EnsembleConfig(BaseModel):
    """One ensemble run: the strategies and their parameters, the level-1 and meta
    walk-forward schemes, the gate, the calibration, the signal rule, costs and sizing, and
    how the jobs are fanned out. Sizes are bar counts or time spans (``"60D"``).

    ``horizon`` is the ensemble's label: the direction over that many bars (1: the next bar,
    which the bar-by-bar backtest trades); the level-1 purge is the longest label horizon of
    the strategies, the meta purge this one. ``llm``: a provider chain (``"local,rules"``)
    asked for a decision at each of the ensemble's entries, for the ablation ensemble alone
    vs ensemble + decisions (:mod:`mlengine.llm.replay`). ``executor`` / ``address`` /
    ``workers``: where the (strategy, fold) jobs run (:func:`mlengine.parallel.run_jobs`);
    a failed job runs again up to ``retries`` times. None of these four changes a result."""

    #: The settings that only say where and how the jobs run, not what they compute.
    EXECUTION: ClassVar[tuple[str, ...]] = ("executor", "address", "workers", "retries")

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategies: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: dict[str, Any]() for name in ENSEMBLE_STRATEGIES}
    )
    test_size: int | str = DEFAULT_TEST_SIZE
    min_train: int = Field(default=DEFAULT_MIN_TRAIN, ge=1)
    train_size: int | str | None = None
    meta_test_size: int | str = "30D"
    meta_min_train: int = Field(default=1000, ge=1)
    meta_embargo: int = Field(default=0, ge=0)
    horizon: int = Field(default=1, ge=1)
    gate: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration = "auto"
    calibration_share: float = Field(default=0.3, ge=0.0, lt=1.0)
    enter: float = Field(default=0.03, ge=0.0, lt=0.5)
    exit: float = Field(default=0.0, gt=-0.5, lt=0.5)
    min_hold: int = Field(default=1, ge=1)
    commission_bps: float = Field(default=DEFAULT_COSTS.commission_bps, ge=0.0)
    spread_bps: float = Field(default=DEFAULT_COSTS.spread_bps, ge=0.0)
    slippage_bps: float = Field(default=DEFAULT_COSTS.slippage_bps, ge=0.0)
    sizing: str | None = None
    validity: dict[str, Any] = Field(default_factory=dict)
    llm: str | None = None
    executor: Executor = "local"
    address: str | None = None
    workers: int | None = Field(default=None, ge=1)
    retries: int = Field(default=1, ge=0)
    seed: int = 0

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(value) < 2:
            raise ValueError(f"an ensemble needs at least 2 strategies, got {list(value)}")
        for name, params in value.items():
            strategy_factory(name, params)
        return value

    @field_validator("gate")
    @classmethod
    def _gate(cls, value: dict[str, Any]) -> dict[str, Any]:
        GateParams(**value)
        return value

    @field_validator("llm")
    @classmethod
    def _llm(cls, value: str | None) -> str | None:
        if value is not None:
            from mlengine.llm.decision import parse_chain
            from mlengine.llm.schema import LLMError

            try:
                parse_chain(value)
            except LLMError as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("validity")
    @classmethod
    def _validity(cls, value: dict[str, Any]) -> dict[str, Any]:
        ValidityConfig(**value)
        return value

    def signal(self) -> HysteresisSignal:
        return HysteresisSignal(enter=self.enter, exit=self.exit, min_hold=self.min_hold)

    def costs(self) -> CostModel:
        return CostModel(
            commission_bps=self.commission_bps,
            spread_bps=self.spread_bps,
            slippage_bps=self.slippage_bps,
        )


@dataclass(frozen=True, eq=False)
class EnsembleResult:
    """The comparison on the meta test bars (the ensemble, the simple ensembles and each
    strategy, same bars, costs and signal rule), the level-1 stack, the metamodel's
    result and the summary table (:func:`ensemble_summary`)."""

    comparison: Comparison
    stack: Stack
    meta: MetaResult
    summary: pd.DataFrame
    report: Path | None = None
    decisions: pd.DataFrame | None = None

    @property
    def run(self) -> WalkForwardRun:
        return self.comparison.runs["ensemble"]


class EnsemblePipeline:
    """bars → the strategies walk-forward (level 1, fanned out over strategies and folds) →
    stacked out-of-fold predictions → gate walk-forward with calibration (level 2) →
    signals → backtest → verdicts → report, from one :class:`EnsembleConfig`."""

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        self.config = config or EnsembleConfig()

    def run(
        self,
        bars: pd.DataFrame,
        *,
        store: Store | None = None,
        save: bool | Path = True,
        report: Path | None = None,
        jobs_dir: Path | None = None,
        tags: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> EnsembleResult:
        """Run the ensemble on ``bars``. ``save``: write the candidates' run directories
        (True: under the settings' runs dir; a path: there) and the comparison report (to
        ``report``, default ``ensemble_<SYMBOL>_<TF>.html`` beside the run directories).
        ``jobs_dir``: store each finished (strategy, fold) job there and reuse the ones stored
        before (:func:`predict_folds`). ``tags`` join each candidate's stored config (e.g.
        the id of the config run it belongs to)."""
        cfg = self.config
        check_bar_frame(bars)
        horizon, predicted = level_one(bars, cfg, jobs_dir=jobs_dir, progress=progress)
        data = stack(predicted, bars, cfg.horizon)
        meta_split = WalkForwardSplit(
            test_size=cfg.meta_test_size,
            min_train_size=cfg.meta_min_train,
            purge=cfg.horizon,
            embargo=cfg.meta_embargo,
        )
        meta = fit_predict(
            data,
            meta_split,
            gate=GateParams(**cfg.gate),
            calibration=cfg.calibration,
            calibration_share=cfg.calibration_share,
            seed=cfg.seed,
            progress=progress,
        )
        candidates = _candidates(predicted, meta, data)
        decisions = None
        if cfg.llm is not None:
            decisions = _llm_ablation(cfg, bars, predicted, candidates["ensemble"], store, progress)
        positions = bars.index.get_indexer(meta.index)
        meta_folds = tuple(
            Fold(
                fold=f.fold,
                train=np.empty(0, dtype=np.int64),
                test=positions[(meta.index >= f.test_start) & (meta.index <= f.test_end)],
                train_start=f.gate_start,
                train_end=f.calibration_end or f.gate_end,
                test_start=f.test_start,
                test_end=f.test_end,
            )
            for f in meta.folds
        )
        backtest: dict[str, Any] = {"costs": cfg.costs(), "sizing": cfg.sizing}
        oos = bars.iloc[int(positions[0]) : int(positions[-1]) + 1]
        returns = {
            name: backtest_predictions(c.predictions, oos, to_signal=cfg.signal(), **backtest)[
                1
            ].returns
            for name, c in candidates.items()
        }
        runs = {
            name: score_predictions(
                c,
                bars,
                meta_folds,
                to_signal=cfg.signal(),
                trials_matrix=pd.DataFrame(returns),
                store=store,
                run_name=name,
                seed=cfg.seed,
                config={"ensemble": cfg.model_dump(mode="json"), "horizon": horizon}
                | dict(tags or {}),
                validity=ValidityConfig(**cfg.validity),
                **backtest,
            )
            for name, c in candidates.items()
        }
        result = comparison(runs)
        summary = ensemble_summary(result, meta, data)
        runs["ensemble"].explanations["ensemble_summary"] = summary.reset_index()
        written = None
        if save is not False:
            from mlengine.backtest.runs import runs_root, save_run

            root = None if save is True else Path(save)
            for run in runs.values():
                save_run(run, root=root)
            first = runs["ensemble"]
            written = result.write_report(
                report or runs_root(root) / f"ensemble_{first.symbol}_{first.timeframe}.html",
                main="ensemble",
                title=ensemble_title(first),
            )
        return EnsembleResult(result, data, meta, summary, written, decisions)


def level_one(
    bars: pd.DataFrame,
    cfg: EnsembleConfig,
    *,
    jobs_dir: Path | None = None,
    progress: bool = True,
) -> tuple[int, dict[str, Predicted]]:
    """The ensemble's level 1: each strategy of ``cfg`` walk-forward on ``bars`` (purged by
    the longest label horizon, which is returned with the out-of-fold predictions), the jobs
    fanned out and stored as ``cfg`` and ``jobs_dir`` say (:func:`predict_folds`)."""
    factories = {name: strategy_factory(name, p) for name, p in cfg.strategies.items()}
    horizon = max(label_horizon(make()) for make in factories.values())
    split = WalkForwardSplit(
        test_size=cfg.test_size,
        train_size=cfg.train_size,
        min_train_size=cfg.min_train,
        purge=horizon,
    )
    predicted = predict_folds(
        factories,
        bars,
        tuple(split.folds(bars)),
        seed=cfg.seed,
        executor=cfg.executor,
        address=cfg.address,
        workers=cfg.workers,
        retries=cfg.retries,
        jobs_dir=jobs_dir,
        progress=progress,
    )
    return horizon, predicted


def _llm_ablation(
    cfg: EnsembleConfig,
    bars: pd.DataFrame,
    predicted: Mapping[str, Predicted],
    ensemble: Predicted,
    store: Store | None,
    progress: bool,
) -> pd.DataFrame:
    """Decisions of ``cfg.llm`` at the ensemble's entries (logged), replayed beside the
    ensemble's own signal; the tables join the ensemble's explanations."""
    from mlengine.llm.decision import DecisionMaker, make_chain
    from mlengine.llm.replay import ablation, decide_entries

    assert cfg.llm is not None
    records = decide_entries(
        DecisionMaker(make_chain(cfg.llm)),
        bars,
        strategies={name: p.predictions for name, p in predicted.items()},
        ensemble=ensemble.predictions,
        to_signal=cfg.signal(),
        store=store,
        progress=progress,
    )
    decisions = pd.DataFrame([r.to_log() for r in records])
    results = ablation(
        bars, ensemble.predictions, decisions, to_signal=cfg.signal(), costs=cfg.costs()
    )
    rows = []
    for name, res in results.items():
        m = res.metrics
        keys = ("total_return", "sharpe", "max_drawdown", "n_trades", "win_rate")
        rows.append({"name": name, **{k: getattr(m, k) for k in keys}})
    steps = pd.DataFrame(
        [s.to_dict() for r in records for s in r.chain] or None,
        columns=["provider", "outcome", "reason", "attempts"],
    )
    outcomes = steps.groupby(["provider", "outcome"]).size().rename("n").reset_index()
    ensemble.explanations["llm_ablation"] = pd.DataFrame(rows)
    ensemble.explanations["llm_outcomes"] = outcomes
    return decisions


def ensemble_title(run: WalkForwardRun) -> str:
    return f"Ensemble of {len(run.params['strategies'])} strategies on {run.symbol} {run.timeframe}"


def _candidates(
    predicted: Mapping[str, Predicted], meta: MetaResult, data: Stack
) -> dict[str, Predicted]:
    """Everything compared on the meta test bars: the ensemble (calibrated ``p_up``, the raw
    mixture ``p_raw`` and the gate weights ``w.<strategy>``), the simple ensembles and each
    strategy's own level-1 predictions on those bars."""
    index = meta.index
    weights = meta.weights.add_prefix("w.")
    ensemble = pd.concat([meta.candidates["ensemble"], meta.raw, weights], axis=1)
    table, metrics = calibration_report(meta, data.y)
    gate = weights.set_axis(list(meta.weights.columns), axis=1)
    regime = [c for c in data.features.columns if c.endswith(".regime")]
    if regime:
        gate["regime"] = data.features.loc[index, regime[0]]
    gate.insert(0, "ts", [t.isoformat() for t in index])
    names = list(predicted)
    out = {
        "ensemble": Predicted(
            "ensemble",
            {"strategies": names, "meta_folds": [f.to_dict() for f in meta.folds]},
            ensemble,
            {
                "gate_weights": gate.reset_index(drop=True),
                "calibration": table,
                "calibration_metrics": metrics,
                "meta_folds": pd.DataFrame([f.to_dict() for f in meta.folds]),
            },
        ),
        "equal_weight": Predicted(
            "equal_weight", {"strategies": names}, meta.candidates["equal_weight"]
        ),
        "logistic_stack": Predicted(
            "logistic_stack", {"strategies": names}, meta.candidates["logistic_stack"]
        ),
    }
    for name, p in predicted.items():
        out[name] = Predicted(p.strategy, p.params, p.predictions.reindex(index), p.explanations)
    return out


def ensemble_summary(result: Comparison, meta: MetaResult, data: Stack) -> pd.DataFrame:
    """Per compared candidate, on the meta test bars: direction accuracy of ``p_up`` on the
    bars with a known direction where it takes a side (``p_up != 0.5``), and on the 20% most
    confident of them (ties: earlier bar first), expected calibration error
    (the ensemble's also before calibration), Sharpe after costs, max drawdown, deflated
    Sharpe ratio, probability of backtest overfitting of picking the best of the candidates,
    and the verdict."""
    y = data.y.reindex(meta.index)
    known = y.notna().to_numpy()
    nxt = (y.to_numpy() - 0.5)[known]
    rows = []
    for name, run in result.runs.items():
        p = run.predictions["p_up"].reindex(meta.index).fillna(0.5).to_numpy()[known]
        cover = accuracy_coverage(p, next_return=nxt, coverage=(1.0, 0.2))
        m, v = run.metrics, run.verdict
        rows.append(
            {
                "name": name,
                "direction_accuracy": float(cover["accuracy"].iloc[0]),
                "top20_accuracy": float(cover["accuracy"].iloc[1]),
                "ece": calibration_metrics(p, y.to_numpy()[known])["ece"],
                "sharpe": m.sharpe,
                "max_drawdown": m.max_drawdown,
                "dsr": v.dsr.dsr if v.dsr is not None else math.nan,
                "pbo": v.pbo.pbo if v.pbo is not None else math.nan,
                "score": v.score,
                "effective": v.effective,
            }
        )
    table = pd.DataFrame(rows).set_index("name")
    raw = meta.raw.to_numpy()[known]
    table.insert(3, "ece_raw", math.nan)
    table.loc["ensemble", "ece_raw"] = calibration_metrics(raw, y.to_numpy()[known])["ece"]
    return table


# --- one run from a config file -------------------------------------------------------------


class AssetSpec(BaseModel):
    """One asset of a run: a stored series (``symbol``, ``timeframe``), optionally cut to
    ``[start, end]`` (bar open times, UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    timeframe: str = Field(min_length=1)
    start: datetime | None = None
    end: datetime | None = None

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime | None, info: Any) -> datetime | None:
        start = info.data.get("start")
        if value is not None and start is not None and _utc(value) < _utc(start):
            raise ValueError(f"end {value} is before start {start}")
        return value


class RunConfig(BaseModel):
    """A run: a name, the assets, the ensemble settings (:class:`EnsembleConfig`) and the
    store URL (None: ``MLENGINE_DB_URL`` or the embedded DuckDB file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    assets: list[AssetSpec] = Field(min_length=1)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    store: str | None = None


class ConfigFileError(MLEngineError, ValueError):
    """A run config file that cannot be read or does not validate; names the file and key."""


_Model = TypeVar("_Model", bound=BaseModel)


def read_settings(path: Path) -> dict[str, Any]:
    """The mapping of settings in the YAML file ``path`` (:class:`ConfigFileError` naming the
    file when it cannot be read or is not a mapping)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigFileError(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def validated(model: type[_Model], data: Mapping[str, Any], where: str) -> _Model:
    """``model(**data)``; a :class:`ConfigFileError` starting with ``where`` names each bad
    key by its dotted path (``ensemble.gate.entropy``)."""
    from pydantic import ValidationError

    try:
        return model(**data)
    except ValidationError as err:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigFileError(f"{where}: " + "; ".join(lines)) from None


def load_run_config(path: Path) -> RunConfig:
    """The :class:`RunConfig` in the YAML file ``path``; errors name the file and each bad
    key by its dotted path."""
    return validated(RunConfig, read_settings(path), str(path))


def _utc(value: datetime) -> pd.Timestamp:
    """A time without a zone is UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def asset_bars(store: Store, asset: AssetSpec) -> pd.DataFrame:
    """The asset's stored bars within its date range."""
    bars = store.read_bars(asset.symbol, asset.timeframe)
    index = pd.DatetimeIndex(bars.index)
    keep = np.ones(len(bars), dtype=bool)
    if asset.start is not None:
        keep &= index >= _utc(asset.start)
    if asset.end is not None:
        keep &= index <= _utc(asset.end)
    out = bars[keep]
    if out.empty:
        raise ConfigFileError(
            f"{asset.symbol} {asset.timeframe}: no stored bar between {asset.start} and {asset.end}"
        )
    return out
