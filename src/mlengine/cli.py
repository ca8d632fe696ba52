"""Command line: ``mlengine data ...`` and ``mlengine demo``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from mlengine.data.schema import MLEngineError

app = typer.Typer(
    name="mlengine",
    help="ML engine for trading signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Import, inspect, validate, resample and migrate bars.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
runs_app = typer.Typer(help="Stored walk-forward runs: list and show.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # paths and messages never folded

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL (default: MLENGINE_DB_URL or DuckDB under the data dir)."),
]
EpochUnit = Literal["s", "ms", "us"]
Policy = Annotated[str, typer.Option("--policy", help="Quality policy: strict, repair or report.")]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the engine's own errors into one red line and exit code 2, no traceback."""
    try:
        yield
    except MLEngineError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=2) from err
    except FileNotFoundError as err:
        err_console.print(f"[bold red]error:[/] file not found: {err.filename}", highlight=False)
        raise typer.Exit(code=2) from err


def _store(url: str | None) -> Any:
    from mlengine.data.store import open_store

    return open_store(url)


def _check_policy(policy: str) -> Literal["strict", "repair"]:
    """Importing needs a bar frame, so ``report`` imports what ``repair`` would."""
    if policy == "strict":
        return "strict"
    if policy in ("repair", "report"):
        return "repair"
    raise typer.BadParameter(f"unknown policy {policy!r}: use strict, repair or report")


@data_app.command("import")
def data_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file of bars.")],
    symbol: Annotated[str | None, typer.Option(help="Symbol (default: from the file).")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe (default: inferred).")] = None,
    market: Annotated[
        str | None, typer.Option(help="crypto, fx or equity (default: inferred).")
    ] = None,
    policy: Policy = "repair",
    db: DbOption = None,
) -> None:
    """Read FILE, check its quality, and upsert its bars into the store."""
    from mlengine.data.sources import read_raw
    from mlengine.data.validate import validate

    chosen = _check_policy(policy)
    with _errors():
        raw = read_raw(file, symbol=symbol, timeframe=timeframe, market=market)
        report = validate(raw, policy=chosen)
        console.print(report.to_rich())
        if report.bars is None:
            raise MLEngineError(f"{file}: no bars to import")
        with _store(db) as store:
            written = store.write_bars(report.bars)
        console.print(
            f"[green]imported[/] {written:,} bars of {report.bars.attrs['symbol']} "
            f"{report.bars.attrs['timeframe']} into {store.url}"
        )


@data_app.command("list")
def data_list(db: DbOption = None) -> None:
    """List the stored series: symbol, timeframe, bar count and time range."""
    with _errors(), _store(db) as store:
        series = store.list_series()
    table = Table(title="stored series")
    for col in series.columns:
        table.add_column(str(col))
    for row in series.itertuples(index=False):
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    console.print(table)


@data_app.command("validate")
def data_validate(
    file: Annotated[Path | None, typer.Argument(help="File to check (or use --symbol).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Stored symbol to check.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe of the stored series.")] = None,
    market: Annotated[str | None, typer.Option(help="crypto, fx or equity.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    db: DbOption = None,
) -> None:
    """Check the quality of a file, or of stored bars; exit 1 if errors are found."""
    from mlengine.data.sources import read_raw
    from mlengine.data.validate import validate

    with _errors():
        if file is not None:
            bars = read_raw(file, symbol=symbol, timeframe=timeframe, market=market)
        elif symbol and timeframe:
            with _store(db) as store:
                bars = store.read_bars(symbol, timeframe)
        else:
            raise typer.BadParameter("give a FILE, or --symbol and --timeframe of stored bars")
        report = validate(bars, policy="report", market=market)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report.to_rich())
    if not report.ok:
        raise typer.Exit(code=1)


@data_app.command("resample")
def data_resample(
    symbol: Annotated[str, typer.Option(help="Stored symbol.")],
    source_tf: Annotated[str, typer.Option("--from", help="Stored timeframe, e.g. 15m.")],
    target_tfs: Annotated[
        list[str], typer.Option("--to", help="Higher timeframe(s), e.g. --to 1h --to 4h.")
    ],
    db: DbOption = None,
) -> None:
    """Aggregate stored bars to higher timeframes and store the result."""
    from mlengine.data.resample import resample

    with _errors(), _store(db) as store:
        bars = store.read_bars(symbol, source_tf)
        for tf in target_tfs:
            higher = resample(bars, tf)
            written = store.write_bars(higher)
            console.print(f"[green]{symbol} {source_tf} → {tf}[/]: {written:,} bars stored")


@data_app.command("migrate")
def data_migrate(
    source: Annotated[str, typer.Option(help="Source URL, e.g. mysql+pymysql://user@host/db.")],
    target: Annotated[
        str | None, typer.Option(help="Target store URL (default: the store).")
    ] = None,
    table: Annotated[str, typer.Option(help="Source table.")] = "ohlcv",
    column: Annotated[
        list[str] | None,
        typer.Option("--map", help="Column mapping FIELD=SOURCE_COLUMN, e.g. --map ts=time."),
    ] = None,
    timeframe: Annotated[
        str | None, typer.Option(help="Timeframe, if the source table holds only one.")
    ] = None,
    epoch_unit: Annotated[
        str, typer.Option(help="Unit of integer time columns: s, ms or us.")
    ] = "s",
    chunk_size: Annotated[int, typer.Option(help="Rows per chunk.")] = 50_000,
    pause: Annotated[
        float, typer.Option(help="Seconds to wait between chunks, to spare a busy source.")
    ] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be copied.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Copy an OHLCV table from MySQL/MariaDB into the store: chunked, resumable, verified."""
    from mlengine.config import get_settings
    from mlengine.data.migrate import migrate

    if epoch_unit not in ("s", "ms", "us"):
        raise typer.BadParameter(f"unknown epoch unit {epoch_unit!r}: use s, ms or us")
    mapping = _parse_mapping(column or [])
    with _errors():
        report = migrate(
            source,
            target or get_settings().store_url,
            table=table,
            columns=mapping,
            timeframe=timeframe,
            epoch_unit=cast(EpochUnit, epoch_unit),
            chunk_size=chunk_size,
            pause=pause,
            dry_run=dry_run,
            progress=progress,
            console=console,
        )
    if not progress:
        console.print(report.table())
    if not dry_run and not report.ok:
        raise typer.Exit(code=1)


def _parse_mapping(items: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items:
        field, sep, col = item.partition("=")
        if not sep or not field or not col:
            raise typer.BadParameter(f"--map expects FIELD=COLUMN, got {item!r}")
        mapping[field.strip()] = col.strip()
    return mapping


_BUNDLED = {("EURUSD", "1h"): "eurusd_1h", ("BTCUSD", "1h"): "btcusd_1h_coinbase"}
_BUNDLED[("BTCUSD", "15m")] = "btcusd_15m"


def _bars_for(dataset: str | None, symbol: str | None, timeframe: str | None, store: Any) -> Any:
    """Bars from a bundled dataset, or a stored series. A series missing from the store that
    a bundled sample holds is imported first (said on the console)."""
    from mlengine import datasets

    if dataset:
        return datasets.load(dataset)
    if not (symbol and timeframe):
        raise typer.BadParameter("give --dataset NAME, or --symbol and --timeframe")
    stored = store.list_series()
    known = ((stored["symbol"] == symbol) & (stored["timeframe"] == timeframe)).any()
    bundled = _BUNDLED.get((symbol, timeframe))
    if not known and bundled:
        console.print(f"{symbol} {timeframe} is not in the store: importing the bundled {bundled}")
        store.write_bars(datasets.load(bundled))
    return store.read_bars(symbol, timeframe)


def _parse_value(text: str) -> Any:
    """JSON scalars and lists (``32``, ``0.1``, ``true``, ``["returns"]``), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_params(items: list[str], strategies: list[str]) -> dict[str, dict[str, Any]]:
    """``--param [STRATEGY.]KEY=VALUE`` per strategy; without ``STRATEGY.`` only when one
    strategy is chosen."""
    out: dict[str, dict[str, Any]] = {name: {} for name in strategies}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param expects [STRATEGY.]KEY=VALUE, got {item!r}")
        owner, dot, field = key.rpartition(".")
        if not dot:
            if len(strategies) != 1:
                raise typer.BadParameter(
                    f"--param {item!r}: name the strategy (STRATEGY.{key}=...) when several run"
                )
            owner = strategies[0]
        if owner not in out:
            raise typer.BadParameter(f"--param {item!r}: {owner!r} is not among {strategies}")
        out[owner][field] = _parse_value(value)
    return out


def _signal_rule(enter: float, exit_: float, min_hold: int) -> Any:
    from mlengine.backtest.signals import HysteresisSignal

    return HysteresisSignal(enter=enter, exit=exit_, min_hold=min_hold)


def _splitter(test_size: str, min_train: int) -> Any:
    from mlengine.data.loader import WalkForwardSplit

    return WalkForwardSplit(test_size=test_size, min_train_size=min_train)


def _costs(commission_bps: float, spread_bps: float, slippage_bps: float) -> Any:
    from mlengine.backtest.costs import CostModel

    costs = CostModel(
        commission_bps=commission_bps, spread_bps=spread_bps, slippage_bps=slippage_bps
    )
    return costs.check()


def _factories(chosen: list[str], params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from mlengine.pipeline import strategy_factory

    return {name: strategy_factory(name, params[name]) for name in chosen}


BASELINES = ["sma_crossover", "tsmom", "buy_and_hold"]
DatasetOption = Annotated[str | None, typer.Option(help="Bundled dataset, e.g. eurusd_1h.")]
SymbolOption = Annotated[str | None, typer.Option(help="Symbol (stored, or a bundled sample).")]
TimeframeOption = Annotated[str | None, typer.Option(help="Timeframe, e.g. 1h.")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", help="Hyper-parameter [STRATEGY.]KEY=VALUE (JSON value), repeatable."),
]
TestSizeOption = Annotated[str, typer.Option(help="Walk-forward test window, e.g. 60D.")]
MinTrainOption = Annotated[int, typer.Option(help="Minimum training bars of a fold.")]
EnterOption = Annotated[
    float, typer.Option(help="Signal: enter when p_up leaves 0.5 by more than this.")
]
ExitOption = Annotated[
    float, typer.Option("--exit", help="Signal: leave when p_up is back within 0.5 + this.")
]
MinHoldOption = Annotated[int, typer.Option(help="Signal: bars a position is held at least.")]
CommissionOption = Annotated[float, typer.Option(help="Commission, bps of notional.")]
SpreadOption = Annotated[float, typer.Option(help="Spread, bps (half paid each side).")]
SlippageOption = Annotated[float, typer.Option(help="Slippage, bps.")]
SeedOption = Annotated[int, typer.Option(help="Base seed (fold k uses seed + k).")]
ExecutorOption = Annotated[
    str | None, typer.Option(help="Where the jobs run: serial, local (processes) or ray.")
]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster address (auto, ray://host:10001).")
]
WorkersOption = Annotated[
    int | None, typer.Option(min=1, help="Jobs at once (default: cores, or the cluster's).")
]


@app.command()
def train(
    strategy: Annotated[str, typer.Option(help="Registered strategy, e.g. pva.")],
    dataset: DatasetOption = None,
    symbol: SymbolOption = None,
    timeframe: TimeframeOption = None,
    param: ParamOption = None,
    test_size: TestSizeOption = "60D",
    min_train: MinTrainOption = 2000,
    enter: EnterOption = 0.03,
    exit_: ExitOption = 0.0,
    min_hold: MinHoldOption = 1,
    commission_bps: CommissionOption = 2.0,
    spread_bps: SpreadOption = 2.0,
    slippage_bps: SlippageOption = 1.0,
    seed: SeedOption = 0,
    db: DbOption = None,
) -> None:
    """Walk-forward train STRATEGY on one asset: OOS predictions, backtest with costs,
    verdict, HTML report; then fit the live model on all bars and save it."""
    from mlengine.pipeline import train_strategy

    with _errors():
        params = _parse_params(param or [], [strategy])[strategy]
        rule = _signal_rule(enter, exit_, min_hold)
        costs = _costs(commission_bps, spread_bps, slippage_bps)
        with _store(db) as store:
            bars = _bars_for(dataset, symbol, timeframe, store)
            result = train_strategy(
                strategy,
                bars,
                params=params,
                splitter=_splitter(test_size, min_train),
                to_signal=rule,
                costs=costs,
                store=store,
                seed=seed,
            )
        run = result.run
        console.print(result.comparison.to_rich())
        console.print(run.verdict.to_rich())
        console.print(f"[bold]{strategy}[/] run {run.run_id}")
        console.print(f"report: {_run_report(run.run_id)}")
        console.print(f"model: {result.model_dir}")


def _run_report(run_id: str) -> Path:
    from mlengine.backtest.runs import runs_root

    return runs_root() / run_id / "report.html"


@app.command()
def backtest(
    dataset: DatasetOption = None,
    symbol: SymbolOption = None,
    timeframe: TimeframeOption = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Registered strategies to compare (default: the rule baselines)."),
    ] = None,
    param: ParamOption = None,
    test_size: TestSizeOption = "60D",
    min_train: MinTrainOption = 2000,
    enter: EnterOption = 0.03,
    exit_: ExitOption = 0.0,
    min_hold: MinHoldOption = 1,
    commission_bps: CommissionOption = 2.0,
    spread_bps: SpreadOption = 2.0,
    slippage_bps: SlippageOption = 1.0,
    seed: SeedOption = 0,
    out: Annotated[Path | None, typer.Option(help="Comparison report (HTML) path.")] = None,
    db: DbOption = None,
) -> None:
    """Walk-forward backtest of registered strategies on one asset, side by side, with
    validity verdicts and one report per run plus a comparison report."""
    from mlengine.pipeline import evaluate
    from mlengine.strategies import registry

    chosen = list(dict.fromkeys(strategy or BASELINES))
    with _errors():
        for name in chosen:
            registry.get(name)  # an unknown name lists the known ones
        params = _parse_params(param or [], chosen)
        rule = _signal_rule(enter, exit_, min_hold)
        costs = _costs(commission_bps, spread_bps, slippage_bps)
        with _store(db) as store:
            bars = _bars_for(dataset, symbol, timeframe, store)
            result = evaluate(
                _factories(chosen, params),
                bars,
                splitter=_splitter(test_size, min_train),
                to_signal=rule,
                costs=costs,
                store=store,
                seed=seed,
                save=True,
            )
        console.print(result.to_rich())
        for name, run in result.runs.items():
            console.print(f"[bold]{name}[/] run {run.run_id}")
            console.print(run.verdict.to_rich())
        path = (
            out or _reports_dir() / f"compare_{bars.attrs['symbol']}_{bars.attrs['timeframe']}.html"
        )
        result.write_report(path)
    console.print(f"report: {path}")


def _ensemble_config(
    config: Path | None,
    strategies: list[str] | None,
    params: list[str],
    overrides: dict[str, Any],
    entropy: float | None,
) -> Any:
    """An :class:`mlengine.pipeline.EnsembleConfig` from a YAML/JSON file (if given), then
    the options given on the command line."""
    from mlengine.pipeline import EnsembleConfig, read_settings, validated

    base = read_settings(config) if config is not None else {}
    if strategies:
        chosen = list(dict.fromkeys(strategies))
        base["strategies"] = {n: base.get("strategies", {}).get(n, {}) for n in chosen}
    if params:
        names = list(base.get("strategies") or EnsembleConfig().strategies)
        parsed = _parse_params(params, names)
        current = base.get("strategies") or {n: {} for n in names}
        base["strategies"] = {n: {**current.get(n, {}), **parsed[n]} for n in names}
    base |= {k: v for k, v in overrides.items() if v is not None}
    if entropy is not None:
        base["gate"] = {**(base.get("gate") or {}), "entropy": entropy}
    where = f"ensemble settings in {config}" if config else "ensemble settings"
    return validated(EnsembleConfig, base, where)


@app.command()
def ensemble(
    dataset: DatasetOption = None,
    symbol: SymbolOption = None,
    timeframe: TimeframeOption = None,
    config: Annotated[
        Path | None, typer.Option(help="Ensemble settings, YAML (keys of EnsembleConfig).")
    ] = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Strategies to combine (default: pva mrd vbp msa mts)."),
    ] = None,
    param: ParamOption = None,
    calibration: Annotated[
        str | None, typer.Option(help="auto, isotonic, platt, temperature or none.")
    ] = None,
    entropy: Annotated[
        float | None, typer.Option(help="Coefficient of the gate's entropy regulariser.")
    ] = None,
    llm: Annotated[
        str | None,
        typer.Option(help="Provider chain asked at the ensemble's entries, e.g. local,rules."),
    ] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    workers: WorkersOption = None,
    seed: Annotated[int | None, typer.Option(help="Base seed.")] = None,
    out: Annotated[Path | None, typer.Option(help="Comparison report (HTML) path.")] = None,
    db: DbOption = None,
) -> None:
    """Train the strategies walk-forward, learn the gating ensemble on their out-of-fold
    predictions, calibrate it, and compare it after costs with each strategy, an
    equal-weight average and logistic stacking on the same bars."""
    from mlengine.pipeline import EnsemblePipeline, ensemble_title

    with _errors():
        cfg = _ensemble_config(
            config,
            strategy,
            param or [],
            {
                "calibration": calibration,
                "llm": llm,
                "executor": executor,
                "address": address,
                "workers": workers,
                "seed": seed,
            },
            entropy,
        )
        with _store(db) as store:
            bars = _bars_for(dataset, symbol, timeframe, store)
            result = EnsemblePipeline(cfg).run(bars, store=store, save=True)
        console.print(result.comparison.to_rich())
        console.print(_summary_table(result.summary))
        explained = result.run.explanations
        if "llm_ablation" in explained:
            console.print(_plain_table(explained["llm_ablation"], "Ensemble vs ensemble + LLM"))
            console.print(_plain_table(explained["llm_outcomes"], "LLM provider outcomes"))
        if out is not None:
            result.comparison.write_report(out, main="ensemble", title=ensemble_title(result.run))
    console.print(f"report: {out or result.report}")


def _plain_table(frame: Any, title: str) -> Table:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="left" if frame[col].dtype == object else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return table


def _summary_table(summary: Any) -> Table:
    table = Table(title="Ensemble summary (meta test bars)")
    table.add_column("name", no_wrap=True)
    shown = ["direction_accuracy", "top20_accuracy", "ece_raw", "ece", "sharpe", "max_drawdown",
             "dsr", "pbo"]  # fmt: skip
    short = {"direction_accuracy": "acc.", "top20_accuracy": "acc. top 20%",
             "ece_raw": "ECE raw", "ece": "ECE", "max_drawdown": "max DD"}  # fmt: skip
    for col in shown:
        table.add_column(short.get(col, col), justify="right")
    for name, row in summary.iterrows():
        cells = []
        for col in shown:
            x = float(row[col])
            pct = col in ("direction_accuracy", "top20_accuracy", "max_drawdown", "ece_raw", "ece")
            cells.append("n/a" if x != x else (f"{x:.1%}" if pct else f"{x:.3g}"))
        table.add_row(str(name), *cells)
    return table


def _live_predictions(
    bars: Any, strategies: list[str], models_dir: Path, seed: int
) -> dict[str, Any]:
    """Each strategy's predictions on ``bars`` from its saved live model, fitting and saving
    the model first when there is none (said on the console)."""
    from mlengine.strategies import registry

    out = {}
    for name in strategies:
        path = models_dir / name
        if (path / "manifest.json").exists():
            model = registry.get(name).load(path)
        else:
            console.print(
                f"no live {name} model in {path}: fitting it on {len(bars):,} bars",
                soft_wrap=True,  # a long path must not break the line
            )
            with err_console.status(f"fitting {name}"):
                model = registry.create(name, seed=seed).fit(bars)
            model.save(path)
        out[name] = model.predict_proba(bars)
    return out


@app.command()
def signal(
    symbol: Annotated[str, typer.Option(help="Symbol (stored, or a bundled sample).")],
    timeframe: Annotated[str, typer.Option(help="Timeframe, e.g. 1h.")],
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Strategies whose live models inform the decision (default: msa, mrd)."),
    ] = None,
    providers: Annotated[
        str, typer.Option(help="Provider chain, e.g. local,rules or ollama,anthropic,rules.")
    ] = "local,rules",
    seed: SeedOption = 0,
    db: DbOption = None,
) -> None:
    """The latest decision for one asset: live models' predictions at the last bar → prompt →
    providers in turn → strict parse and risk checks → ``ml.llm_signals``."""
    from mlengine.llm.decision import DecisionMaker, make_chain
    from mlengine.llm.formatter import build_context
    from mlengine.llm.signal_log import log_decision
    from mlengine.pipeline import models_root

    chosen = list(dict.fromkeys(strategy or ["msa", "mrd"]))
    with _errors(), _store(db) as store:
        maker = DecisionMaker(make_chain(providers))
        bars = _bars_for(None, symbol, timeframe, store)
        models = models_root() / f"{bars.attrs['symbol']}_{bars.attrs['timeframe']}"
        predictions = _live_predictions(bars, chosen, models, seed)
        context = build_context(bars, strategies=predictions)
        record = maker.decide(context)
        log_decision(store, record.to_log())
    console.print(_decision_table(record))


def _last_bar_decision(result: Any, bars: Any, store: Any) -> Any:
    """The ensemble's last out-of-sample bar put to the local model (then the rules), with
    every strategy's out-of-fold prediction, the calibrated ensemble and its gate weights;
    logged in ``ml.llm_signals``."""
    from mlengine.llm.decision import DecisionMaker, make_chain
    from mlengine.llm.formatter import build_context
    from mlengine.llm.signal_log import log_decision

    ensemble = result.run.predictions
    strategies = {
        name: run.predictions
        for name, run in result.comparison.runs.items()
        if name not in ("ensemble", "equal_weight", "logistic_stack")
    }
    with err_console.status("asking the local model"):
        context = build_context(bars, strategies=strategies, ensemble=ensemble)
        record = DecisionMaker(make_chain("local,rules")).decide(context)
    log_decision(store, record.to_log())
    return record


def _decision_table(record: Any) -> Table:
    context = record.context
    title = f"Decision for {context.symbol} {context.timeframe} at {context.ts.isoformat()}"
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    d = record.decision
    rows = [("valid", "yes" if record.valid else "no"), ("provider", record.provider)]
    if d is not None:
        rows += [(k, str(v)) for k, v in d.model_dump().items()]
    chain = ", ".join(f"{s.provider}: {s.outcome}" for s in record.chain)
    rows += [("chain", chain), ("latency", f"{record.latency_ms:.0f} ms")]
    rows += [("rejected", e) for e in record.validation_errors]
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command("run")
def run_config(
    config: Annotated[
        Path | None, typer.Argument(help="Run config, YAML (keys of RunConfig).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Finish this run (id or directory): skip its finished jobs."),
    ] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    workers: WorkersOption = None,
    db: DbOption = None,
) -> None:
    """One run from a config file: for each asset, the ensemble pipeline (strategies
    walk-forward, gate, calibration, backtest, verdicts, report) with the config's settings,
    in a run directory of its own. --resume RUN_ID finishes an interrupted run."""
    from mlengine.pipeline import RunConfig, ensemble_title, load_run_config, validated
    from mlengine.runner import ConfigRun

    if config is None and resume is None:
        console.print("[red]error:[/] give a config file, or --resume RUN_ID")
        raise typer.Exit(2)
    with _errors():
        cfg = load_run_config(config) if config is not None else None
        if resume:
            run = ConfigRun.resume(resume, cfg)
        else:
            assert cfg is not None
            run = ConfigRun.start(cfg)
        overrides = {"executor": executor, "address": address, "workers": workers}
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if chosen:
            ensemble = run.config.ensemble.model_dump() | chosen
            settings = run.config.model_dump() | {"ensemble": ensemble}
            run.config = validated(RunConfig, settings, "command-line options")
        console.print(f"run {run.run_id}: {run.path}", soft_wrap=True)
        with _store(db or run.config.store) as store:
            for asset in run.config.assets:
                _bars_for(None, asset.symbol, asset.timeframe, store)  # bundled sample if new
            try:
                for asset, result in run.execute(store):
                    console.rule(f"[bold]{run.config.name}: {asset.symbol} {asset.timeframe}")
                    if result is None:
                        console.print("done before: skipped")
                        continue
                    console.print(result.comparison.to_rich())
                    console.print(_summary_table(result.summary))
                    console.print(f"{ensemble_title(result.run)}: report {result.report}")
            except Exception:
                console.print(f"[yellow]resume with:[/] mlengine run --resume {run.run_id}")
                raise
        console.print(f"run {run.run_id} done: {run.path}", soft_wrap=True)


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(help="Newest runs shown.")] = 20,
    db: DbOption = None,
) -> None:
    """The runs in the store, newest first, with their headline numbers and verdicts."""
    from mlengine.backtest.runs import list_runs

    with _errors(), _store(db) as store:
        rows = list_runs(store).head(limit)
    table = Table(title=f"Runs (newest {len(rows)})")
    shown = ("run_id", "name", "symbols", "timeframe", "sharpe", "max_drawdown", "effective")
    table.add_column("run_id", no_wrap=True, min_width=32)  # whole: `runs show` takes it
    for col in shown[1:]:
        table.add_column(col, justify="right" if col in ("sharpe", "max_drawdown") else "left")
    for row in rows.itertuples(index=False):
        cells = [getattr(row, col) for col in shown]
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells))
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id (or run directory).")]) -> None:
    """One saved run: its configuration, key metrics, verdict and report path; for a config
    run, its state, each asset's summary table and report, and its candidates' run ids."""
    from mlengine.backtest.runs import load_run
    from mlengine.runner import ConfigRun, config_run_path

    with _errors():
        path = config_run_path(run_id)
        if path is not None:
            _show_config_run(ConfigRun.open(path))
            return
        record = load_run(run_id)
    cfg = record.config
    console.print(f"[bold]{cfg.get('name')}[/] ({record.run_id}): {cfg.get('strategy')} on "
                  f"{cfg.get('symbol')} {cfg.get('timeframe')}", soft_wrap=True)  # fmt: skip
    keys = ("total_return", "sharpe", "max_drawdown", "direction_accuracy", "n_trades")
    table = Table(title="Key metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        value = record.metrics.get(key)
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    verdict = record.verdict
    state = "EFFECTIVE" if verdict.get("effective") else "NOT EFFECTIVE"
    console.print(f"verdict: {state} (score {verdict.get('score')})")
    console.print(f"parameters: {json.dumps(cfg.get('params'), default=str)}", soft_wrap=True)
    console.print(f"report: {record.report_path}", soft_wrap=True)


def _show_config_run(run: Any) -> None:
    import pandas as pd

    m = run.manifest
    console.print(f"[bold]{m['name']}[/] ({run.run_id}): {m['status']}, created {m['created_at']}, "
                  f"updated {m['updated_at']}", soft_wrap=True)  # fmt: skip
    console.print(f"directory: {run.path}", soft_wrap=True)
    for key, entry in m["assets"].items():
        console.rule(f"[bold]{key}[/]: {entry['status']}")
        if entry.get("error"):
            console.print(f"[red]error:[/] {entry['error']}", soft_wrap=True)
        if entry.get("summary"):
            console.print(_summary_table(pd.DataFrame(entry["summary"]).set_index("name")))
        for name, cid in entry.get("candidates", {}).items():
            console.print(f"{name}: {cid}", soft_wrap=True)
        if entry.get("report"):
            console.print(f"report: {run.path / entry['report']}", soft_wrap=True)
    if m["status"] != "done":
        console.print(f"resume with: mlengine run --resume {run.run_id}", soft_wrap=True)


def _reports_dir() -> Path:
    from mlengine.config import get_settings

    return get_settings().data_dir / "reports"


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="Run id (or run directory).")],
    out: Annotated[Path | None, typer.Option(help="Where to write the HTML report.")] = None,
) -> None:
    """(Re)build the HTML report of a stored run from its run directory; for a config run,
    each candidate's report, and the path of each asset's comparison report."""
    from mlengine.backtest.runs import load_run, write_run_report
    from mlengine.runner import ConfigRun, config_run_path

    with _errors():
        config_path = config_run_path(run_id)
        if config_path is None:
            console.print(f"report: {write_run_report(load_run(run_id), out)}")
            return
        run = ConfigRun.open(config_path)
        for key, entry in run.manifest["assets"].items():
            for cid in entry.get("candidates", {}).values():
                write_run_report(load_run(run.path / "candidates" / cid))
            if entry.get("report"):
                console.print(f"{key}: report {run.path / entry['report']}", soft_wrap=True)


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the embedded store lives (default: ./data).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Run config (default: the five strategies on EURUSD 1h, rules)."),
    ] = None,
) -> None:
    """Bundled real data → embedded store → quality reports → one config run (the five
    strategies walk-forward on EURUSD 1h, their gating ensemble, calibration, rules-provider
    decisions at its entries, backtests, verdicts, report) → the last bar put to the local
    LLM → the live ensemble fitted and saved for ``mlengine serve`` → rule baselines on
    EURUSD and BTCUSD 1h → HTML reports."""
    from mlengine import datasets
    from mlengine.config import Settings, get_settings
    from mlengine.data.store import open_store
    from mlengine.data.validate import validate
    from mlengine.ensemble.live import LiveEnsemble, live_dir
    from mlengine.pipeline import (
        AssetSpec,
        EnsembleConfig,
        RunConfig,
        asset_bars,
        ensemble_title,
        evaluate,
        load_run_config,
    )
    from mlengine.runner import ConfigRun

    settings = Settings(data_dir=data_dir) if data_dir else get_settings()
    url = f"duckdb:///{(settings.data_dir / 'mlengine.duckdb').as_posix()}"
    runs_dir, reports_dir = settings.data_dir / "runs", settings.data_dir / "reports"
    models = settings.data_dir / "models"
    costs = _costs(commission_bps=2.0, spread_bps=2.0, slippage_bps=1.0)
    reports: list[Path] = []
    with _errors(), open_store(url) as store:
        for name in datasets.names():
            info = datasets.info(name)
            console.rule(f"[bold]{name}[/]: {info.symbol} {info.timeframe} ({info.market})")
            quality = validate(datasets.load_raw(name), policy="repair", market=info.market)
            console.print(quality.to_rich())
            assert quality.bars is not None
            written = store.write_bars(quality.bars)
            console.print(f"[green]stored[/] {written:,} bars")
        console.rule("[bold]store")
        console.print(store.list_series().to_string(index=False))

        if config is not None:
            run_config = load_run_config(config)
        else:
            eurusd_1h = AssetSpec(symbol="EURUSD", timeframe="1h")
            run_config = RunConfig(
                name="demo", assets=[eurusd_1h], ensemble=EnsembleConfig(llm="rules")
            )
        run = ConfigRun.start(run_config, runs_dir)
        console.print(f"run {run.run_id}: {run.path}", soft_wrap=True)
        for asset, result in run.execute(store):
            assert result is not None and result.report is not None
            console.rule(f"[bold]{ensemble_title(result.run)}, walk-forward")
            console.print(result.comparison.to_rich())
            console.print(_summary_table(result.summary))
            reports.append(result.report)

            console.rule("[bold]decision on the last bar: the local LLM, then the rules")
            bars = asset_bars(store, asset)
            record = _last_bar_decision(result, bars, store)
            console.print(_decision_table(record))

            console.rule(f"[bold]live ensemble of {asset.symbol} {asset.timeframe}")
            live = LiveEnsemble.fit(bars, run.config.ensemble, stack=result.stack)
            where = live.save(live_dir(models, asset.symbol, asset.timeframe))
            newest = live.predict(bars.iloc[-live.min_bars :])
            console.print(f"saved {where}; needs the last {live.min_bars:,} bars", soft_wrap=True)
            console.print(f"newest bar {newest.ts}: ensemble p_up {newest.p_up:.3f}, " + ", ".join(
                f"{name} {out.p_up:.3f}" for name, out in newest.strategies.items()
            ), soft_wrap=True)  # fmt: skip
            console.print(f"serve it: mlengine serve --db {url}", soft_wrap=True)

        factories = _factories(BASELINES, {name: {} for name in BASELINES})
        for symbol in ("EURUSD", "BTCUSD"):
            console.rule(f"[bold]walk-forward baselines: {symbol} 1h")
            baselines = evaluate(
                factories,
                store.read_bars(symbol, "1h"),
                costs=costs,
                store=store,
                save=runs_dir,
            )
            console.print(baselines.to_rich())
            reports.append(baselines.write_report(reports_dir / f"demo_{symbol}_1h.html"))
    console.rule("[bold]reports")
    for path in reports:
        console.print(f"report: {path}")


# the signal service's commands live beside the service (imported lazily by their bodies)
from mlengine.service.cli import fit_live, serve  # noqa: E402

app.command("serve")(serve)
app.command("fit-live")(fit_live)
