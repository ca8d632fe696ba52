"""Command-line entry points of the service, as plain functions with Typer annotations:
:func:`serve` runs the app under uvicorn; :func:`fit_live` fits and saves the live ensemble
of a stored series, which ``POST /predict`` then uses. The main CLI registers them
(``mlengine serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mlengine.data.schema import MLEngineError

__all__ = ["fit_live", "serve"]

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL (default: MLENGINE_DB_URL or DuckDB under the data dir)."),
]
ModelsOption = Annotated[
    Path | None,
    typer.Option("--models", help="Root of the live models (default: <data dir>/models)."),
]


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    db: DbOption = None,
    models: ModelsOption = None,
    max_gap_hours: Annotated[
        float,
        typer.Option(
            help="Longest time between two bars of a prediction's history (a longer gap is "
            "refused as missing data; at least one bar of the timeframe).",
            min=0.0,
        ),
    ] = 24.0 * 7,
) -> None:
    """Run the signal service (FastAPI under uvicorn). API keys, when wanted, come from
    MLENGINE_API_KEYS (comma-separated); every route but /health then needs X-API-Key."""
    from datetime import timedelta

    import uvicorn

    from mlengine.service.app import ServiceSettings, create_app

    settings = ServiceSettings.from_env(
        db_url=db, models_dir=models, max_gap=timedelta(hours=max_gap_hours)
    )
    auth = f"{len(settings.api_keys)} API key(s)" if settings.api_keys else "no API key (open)"
    err_console.print(f"serving on http://{host}:{port} with {auth}; docs at /docs")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def fit_live(
    symbol: Annotated[str, typer.Option(help="Symbol of a stored series.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe of the series, e.g. 1h.")],
    config_path: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML of ensemble settings (EnsembleConfig keys, or a run config whose "
            "'ensemble' section is used); default: the defaults.",
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            help="A config run (id or directory): its ensemble settings, and its stored "
            "strategy x fold jobs of this series reused instead of run again."
        ),
    ] = None,
    db: DbOption = None,
    models: ModelsOption = None,
) -> None:
    """Fit the live ensemble of a stored series (the strategies walk-forward for the gate
    and calibrator, then every strategy on all the bars) and save it where the service
    looks for it."""
    from mlengine.data.store import open_store
    from mlengine.ensemble.live import LiveEnsemble, live_dir
    from mlengine.pipeline import EnsembleConfig, models_root, read_settings, validated
    from mlengine.runner import ConfigRun

    try:
        config = EnsembleConfig()
        jobs_dir = None
        if run is not None and config_path is not None:
            raise typer.BadParameter("give --config or --run, not both")
        if run is not None:
            opened = ConfigRun.open(run)
            config, jobs_dir = opened.config.ensemble, opened.jobs_dir(symbol, timeframe)
        if config_path is not None:
            data = read_settings(config_path)
            section = data.get("ensemble", {}) if "assets" in data else data
            config = validated(EnsembleConfig, section, str(config_path))
        target = live_dir(models_root(models), symbol, timeframe)
        with open_store(db) as store:
            bars = store.read_bars(symbol, timeframe)
        console.print(f"fitting the live ensemble of {symbol} {timeframe} on {len(bars):,} bars")
        live = LiveEnsemble.fit(bars, config, jobs_dir=jobs_dir, progress=True)
        live.save(target)
    except MLEngineError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=2) from err
    console.print(
        f"saved {live!r} to {target}; predictions need the last {live.min_bars:,} bars "
        f"(per strategy: {live.history})",
        soft_wrap=True,
    )
