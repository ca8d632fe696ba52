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


def _bars_for(
    dataset: str | None, symbol: str | None, timeframe: str | None, db: str | None
) -> Any:
    """Bars from a bundled dataset, or a stored series."""
    from mlengine import datasets

    if dataset:
        return datasets.load(dataset)
    if symbol and timeframe:
        with _store(db) as store:
            return store.read_bars(symbol, timeframe)
    raise typer.BadParameter("give --dataset NAME, or --symbol and --timeframe of stored bars")


def _baselines(fast: int, slow: int, lookback: int) -> dict[str, Any]:
    """Factories of the registered rule baselines, named by their parameters."""
    from mlengine.strategies import registry

    return {
        f"sma_{fast}_{slow}": lambda: registry.create("sma_crossover", fast=fast, slow=slow),
        f"tsmom_{lookback}": lambda: registry.create("tsmom", lookback=lookback),
        "buy_and_hold": lambda: registry.create("buy_and_hold"),
    }


def _compare_baselines(
    bars: Any,
    *,
    strategies: list[str] | None,
    test_size: str,
    min_train: int,
    costs: Any,
    store: Any,
    runs_dir: Path | None = None,
    fast: int = 10,
    slow: int = 50,
    lookback: int = 24,
) -> Any:
    from mlengine.backtest.compare import compare
    from mlengine.data.loader import WalkForwardSplit

    factories = _baselines(fast, slow, lookback)
    chosen = strategies or list(factories)
    unknown = [name for name in chosen if name not in factories]
    if unknown:
        raise typer.BadParameter(f"unknown strategies {unknown}: choose from {list(factories)}")
    splitter = WalkForwardSplit(test_size=test_size, min_train_size=min_train)
    return compare(
        {name: factories[name] for name in chosen},
        bars,
        splitter=splitter,
        costs=costs,
        store=store,
        save=runs_dir if runs_dir is not None else True,
    )


@app.command()
def backtest(
    dataset: Annotated[str | None, typer.Option(help="Bundled dataset, e.g. eurusd_1h.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Stored symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe of the stored series.")] = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Baselines to compare (default all): sma_F_S, tsmom_L, buy_and_hold."),
    ] = None,
    fast: Annotated[int, typer.Option(help="SMA crossover fast window.")] = 10,
    slow: Annotated[int, typer.Option(help="SMA crossover slow window.")] = 50,
    lookback: Annotated[int, typer.Option(help="Time-series momentum lookback (bars).")] = 24,
    test_size: Annotated[str, typer.Option(help="Walk-forward test window, e.g. 30D.")] = "30D",
    min_train: Annotated[int, typer.Option(help="Minimum training bars.")] = 720,
    commission_bps: Annotated[float, typer.Option(help="Commission, bps of notional.")] = 2.0,
    spread_bps: Annotated[float, typer.Option(help="Spread, bps (half paid each side).")] = 2.0,
    slippage_bps: Annotated[float, typer.Option(help="Slippage, bps.")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Comparison report (HTML) path.")] = None,
    db: DbOption = None,
) -> None:
    """Walk-forward backtest of the rule baselines, compared, with validity verdicts."""
    from mlengine.backtest.costs import CostModel

    with _errors():
        costs = CostModel(
            commission_bps=commission_bps, spread_bps=spread_bps, slippage_bps=slippage_bps
        ).check()
        bars = _bars_for(dataset, symbol, timeframe, db)
        with _store(db) as store:
            result = _compare_baselines(
                bars,
                strategies=strategy,
                test_size=test_size,
                min_train=min_train,
                costs=costs,
                store=store,
                fast=fast,
                slow=slow,
                lookback=lookback,
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


def _reports_dir() -> Path:
    from mlengine.config import get_settings

    return get_settings().data_dir / "reports"


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="Run id (or run directory).")],
    out: Annotated[Path | None, typer.Option(help="Where to write the HTML report.")] = None,
) -> None:
    """(Re)build the HTML report of a stored run from its run directory."""
    from mlengine.backtest.runs import load_run, write_run_report

    with _errors():
        record = load_run(run_id)
        path = write_run_report(record, out)
    console.print(f"report: {path}")


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the embedded store lives (default: ./data).")
    ] = None,
) -> None:
    """Bundled real data → embedded store → quality reports → walk-forward baselines → HTML."""
    from mlengine import datasets
    from mlengine.backtest.costs import CostModel
    from mlengine.config import Settings, get_settings
    from mlengine.data.store import open_store
    from mlengine.data.validate import validate

    settings = Settings(data_dir=data_dir) if data_dir else get_settings()
    url = f"duckdb:///{(settings.data_dir / 'mlengine.duckdb').as_posix()}"
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
        costs = CostModel(commission_bps=2.0, spread_bps=2.0, slippage_bps=1.0)
        for symbol in ("EURUSD", "BTCUSD"):
            bars = store.read_bars(symbol, "1h")
            console.rule(f"[bold]walk-forward baselines: {symbol} 1h")
            result = _compare_baselines(
                bars,
                strategies=None,
                test_size="30D",
                min_train=720,
                costs=costs,
                store=store,
                runs_dir=settings.data_dir / "runs",
            )
            console.print(result.to_rich())
            path = settings.data_dir / "reports" / f"demo_{symbol}_1h.html"
            reports.append(result.write_report(path))
    console.rule("[bold]reports")
    for path in reports:
        console.print(f"report: {path}")
