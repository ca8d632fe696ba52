"""Run directories: everything one walk-forward run produced, on disk, reloadable.

``<data_dir>/runs/<run_id>/`` holds

* ``config.json`` — the run configuration (strategy, params, splitter, costs, validity, seed);
* ``manifest.json`` — run id, name, created_at (UTC), seed, data range, folds, package
  versions and the file list;
* ``equity.parquet`` — per OOS bar: ``equity, cash, net_exposure, returns, benchmark`` (the
  asset's buy-and-hold equity from the same capital, no costs), ``close`` and ``signal``
  (the decided target exposure);
* ``trades.parquet`` — the engine's ledger; ``predictions.parquet`` — ``p_up, fold`` and
  the strategy's diagnostics per predicted bar;
* ``metrics.json`` (``Metrics.to_dict()``), ``verdict.json`` (``Verdict.to_dict()``);
* ``explain_<name>.parquet`` — each of the strategy's model explanations
  (:class:`mlengine.strategies.base.Explainable`), named in the manifest's
  ``explanations``;
* ``report.html`` — the self-contained report (:mod:`mlengine.backtest.report`), built from
  the files above, so :func:`write_run_report` can rebuild it from a loaded run.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlengine.data.schema import MLEngineError

if TYPE_CHECKING:
    from mlengine.backtest.walkforward import WalkForwardRun
    from mlengine.data.store import Store

__all__ = [
    "RunError",
    "RunNotFoundError",
    "RunRecord",
    "list_runs",
    "load_run",
    "read_json_object",
    "report_inputs",
    "runs_root",
    "save_run",
    "to_record",
    "write_run_report",
]

_JSON_FILES = ("config", "manifest", "metrics", "verdict")
_FRAMES = ("equity", "trades", "predictions")
_VERSIONED = ("mlengine", "numpy", "pandas", "numba", "pyarrow", "scipy", "plotly", "duckdb")
_EXPLANATION_NAME = re.compile(r"[a-z0-9_]+")


class RunError(MLEngineError, ValueError):
    """A run directory that cannot be written or read back (names the file)."""


class RunNotFoundError(RunError, LookupError):
    """No run directory for the given id or path."""


@dataclass(frozen=True, eq=False)
class RunRecord:
    """A run as saved: its frames, JSON documents and model explanations."""

    run_id: str
    path: Path | None  # None: built in memory, not saved
    config: dict[str, Any]
    manifest: dict[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    verdict: dict[str, Any]
    explanations: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        if self.path is None:
            raise RunError(f"run {self.run_id} is not saved: give the report a path")
        return self.path / "report.html"


def runs_root(root: Path | None = None) -> Path:
    """``root``, else ``<settings.data_dir>/runs``."""
    if root is not None:
        return Path(root)
    from mlengine.config import get_settings

    return get_settings().data_dir / "runs"


def _versions(names: tuple[str, ...] = _VERSIONED) -> dict[str, str]:
    """Python's and the installed ``names``' versions (a package not installed is left out)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns Parquet cannot type (mixed objects) become text."""
    out = frame.copy()
    for col in out.columns:
        kind = out[col].dtype
        plain = pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_bool_dtype(kind)
        typed = isinstance(kind, pd.DatetimeTZDtype | pd.StringDtype | pd.CategoricalDtype)
        if not (plain or typed):
            out[col] = out[col].astype("str")
    return out


def _fold_rows(run: WalkForwardRun) -> list[dict[str, Any]]:
    return [
        {
            "fold": f.fold,
            "n_train": int(f.train.size),
            "n_test": int(f.test.size),
            "train_start": str(f.train_start),
            "train_end": str(f.train_end),
            "test_start": str(f.test_start),
            "test_end": str(f.test_end),
        }
        for f in run.folds
    ]


def _explanation_file(name: object, where: str) -> str:
    """``explain_<name>.parquet``; ``name`` must be lowercase letters, digits, underscores."""
    if not (isinstance(name, str) and _EXPLANATION_NAME.fullmatch(name)):
        raise RunError(
            f"{where}: explanation name {name!r} must be lowercase letters, digits and underscores"
        )
    return f"explain_{name}.parquet"


def _explanations(run: WalkForwardRun) -> dict[str, pd.DataFrame]:
    """``run.explanations`` checked to be stored as they are: DataFrames with text columns."""
    for name, frame in run.explanations.items():
        _explanation_file(name, f"run {run.run_id}")
        if not isinstance(frame, pd.DataFrame):
            raise RunError(
                f"run {run.run_id}: explanation {name!r} must be a DataFrame, "
                f"got {type(frame).__name__}"
            )
        labels = [c for c in frame.columns if not isinstance(c, str)]
        if labels:
            raise RunError(
                f"run {run.run_id}: explanation {name!r} has non-text column labels "
                f"({labels[0]!r}); Parquet stores column labels as text"
            )
    return dict(run.explanations)


def to_record(run: WalkForwardRun, path: Path | None = None) -> RunRecord:
    """The frames and documents of ``run`` as :func:`save_run` writes them (in memory)."""
    res = run.result
    explanations = _explanations(run)
    equity = pd.DataFrame(
        {
            "equity": res.equity,
            "cash": res.cash,
            "net_exposure": res.net_exposure,
            "returns": res.returns,
            "benchmark": run.benchmark,
            "close": res.close.iloc[:, 0],
            "signal": res.signal.sum(axis=1),
        }
    )
    manifest = {
        "run_id": run.run_id,
        "name": run.name,
        "strategy": run.strategy,
        "symbol": run.symbol,
        "timeframe": run.timeframe,
        "created_at": datetime.now(UTC).isoformat(),
        "seed": run.seed,
        "data_range": run.data_range,
        "folds": _fold_rows(run),
        "versions": _versions(),
        "files": [f"{n}.json" for n in _JSON_FILES]
        + [f"{n}.parquet" for n in _FRAMES]
        + [_explanation_file(n, run.run_id) for n in explanations],
        "explanations": list(explanations),
    }
    return RunRecord(
        run_id=run.run_id,
        path=path,
        config=run.config,
        manifest=manifest,
        equity=equity,
        trades=res.trades,
        predictions=run.predictions,
        metrics=run.metrics.to_dict(),
        verdict=run.verdict.to_dict(),
        explanations=explanations,
    )


def save_run(run: WalkForwardRun, root: Path | None = None, *, report: bool = True) -> Path:
    """Write ``run`` to ``<root>/<run_id>/`` (files replaced if present); returns the path.

    ``report``: also write ``report.html`` (from the files written, read back).
    """
    path = runs_root(root) / run.run_id
    record = to_record(run, path)  # checks the run before anything is written
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{path}: cannot create the run directory: {err}") from None
    if report:
        record.manifest["files"].append("report.html")
    for name in _JSON_FILES:
        doc = getattr(record, name)
        (path / f"{name}.json").write_text(json.dumps(doc, indent=2, allow_nan=False))
    for name in _FRAMES:
        _parquet_safe(getattr(record, name)).to_parquet(path / f"{name}.parquet")
    for name, frame in record.explanations.items():
        _parquet_safe(frame).to_parquet(path / _explanation_file(name, str(path)))
    if report:
        write_run_report(load_run(path))
    return path


def _resolve(run: str | Path, root: Path | None) -> Path:
    candidate = Path(run)
    if isinstance(run, Path) or candidate.is_dir() or len(candidate.parts) > 1:
        path = candidate
    else:
        path = runs_root(root) / str(run)
    if not path.is_dir():
        raise RunNotFoundError(f"no run directory at {path}")
    return path


def load_run(run: str | Path, root: Path | None = None) -> RunRecord:
    """The run saved under id ``run`` (in ``root``, default the settings' runs dir) or at
    the directory ``run``."""
    path = _resolve(run, root)
    docs: dict[str, dict[str, Any]] = {}
    for name in _JSON_FILES:
        docs[name] = read_json_object(path / f"{name}.json", RunError, "the run directory")
    frames = {name: _read_parquet(path / f"{name}.parquet") for name in _FRAMES}
    names = docs["manifest"].get("explanations", [])  # absent in runs saved before them
    if not isinstance(names, list):
        raise RunError(f"{path / 'manifest.json'}: 'explanations' must be a list of names")
    explanations = {
        name: _read_parquet(path / _explanation_file(name, str(path / "manifest.json")))
        for name in names
    }
    run_id = str(docs["manifest"].get("run_id", path.name))
    parts: dict[str, Any] = {**docs, **frames, "explanations": explanations}
    return RunRecord(run_id=run_id, path=path, **parts)


def read_json_object(file: Path, error: type[Exception], where: str) -> dict[str, Any]:
    """The JSON object in ``file``; ``error`` names the file when it is missing from
    ``where``, unreadable, or not an object."""
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise error(f"{file}: missing from {where}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise error(f"{file}: cannot read JSON: {err}") from None
    if not isinstance(doc, dict):
        raise error(f"{file}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _read_parquet(file: Path) -> pd.DataFrame:
    if not file.is_file():
        raise RunError(f"{file}: missing from the run directory")
    try:
        return pd.read_parquet(file)
    except Exception as err:  # pyarrow raises several unrelated types on a bad file
        raise RunError(f"{file}: cannot read Parquet: {err}") from None


def report_inputs(record: RunRecord) -> dict[str, Any]:
    """Keyword arguments of :func:`mlengine.backtest.report.render_report` for ``record``."""
    eq = record.equity
    p_up = record.predictions["p_up"].reindex(eq.index)
    return {
        "title": f"{record.manifest.get('name', record.run_id)} — walk-forward",
        "equity": eq["equity"],
        "returns": eq["returns"],
        "benchmark": eq["benchmark"],
        "trades": record.trades,
        "exposure": eq["net_exposure"],
        "periods_per_year": float(record.metrics["periods_per_year"]),
        "metrics": record.metrics,
        "verdict": record.verdict,
        "p_up": p_up,
        "close": eq["close"],
        "config": record.config,
        "data_range": {**record.manifest.get("data_range", {}), "run_id": record.run_id},
        "explanations": record.explanations,
    }


def write_run_report(record: RunRecord, path: Path | None = None, **extra: Any) -> Path:
    """Write the HTML report of ``record`` (default ``<run dir>/report.html``); ``extra``
    keyword arguments go to ``render_report`` (e.g. ``comparison``)."""
    from mlengine.backtest.report import write_report

    return write_report(path or record.report_path, **{**report_inputs(record), **extra})


def list_runs(store: Store) -> pd.DataFrame:
    """The runs in ``ml.backtest_runs``, newest first, with their headline numbers."""
    rows = store.read_table("ml.backtest_runs")
    keys = ("total_return", "sharpe", "max_drawdown", "direction_accuracy", "n_trades")
    out = rows[["run_id", "name", "created_at", "timeframe", "start_ts", "end_ts"]].copy()
    out.insert(3, "symbols", [",".join(s or []) for s in rows["symbols"]])
    metrics = [m if isinstance(m, dict) else {} for m in rows["metrics"]]
    for key in keys:
        out[key] = [m.get(key) for m in metrics]
    out["score"] = [(m.get("verdict") or {}).get("score") for m in metrics]
    out["effective"] = [(m.get("verdict") or {}).get("effective") for m in metrics]
    return out.sort_values("created_at", ascending=False, ignore_index=True)
