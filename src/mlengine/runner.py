"""One run from a config file, with an id, a directory of its own, and resume.

``mlengine run configs/x.yaml`` makes a :class:`ConfigRun`: the id
``<name>-<UTC time>-<6 hex>`` and the directory ``<data_dir>/runs/<run_id>/`` holding

* ``config.yaml`` — the validated configuration (every default filled in), so the run can
  be repeated or resumed from its directory alone;
* ``manifest.json`` — the id, name, times, the configuration's SHA-256, package versions,
  the state of the run and of each asset (``pending``, ``running``, ``done``, ``failed``
  with the error), each asset's candidate run ids, report and summary table;
* ``jobs/<SYMBOL>_<TF>/`` — every finished (strategy, fold) job
  (:mod:`mlengine.backtest.jobstore`);
* ``candidates/<candidate run id>/`` — the run directory of each compared candidate (the
  ensemble, the simple ensembles, each strategy; :mod:`mlengine.backtest.runs`), whose rows
  in the store carry ``config_run`` = this run's id;
* ``reports/ensemble_<SYMBOL>_<TF>.html`` — each asset's comparison report.

:meth:`ConfigRun.resume` reopens a run: the assets already ``done`` are skipped and, in the
others, every job whose output is stored is reused, so an interrupted run finishes with the
predictions it would have made in one go. A resume refuses a different configuration (it
names the keys that differ), except for the settings that only say where the jobs run
(executor, address, workers, retries).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlengine.backtest.runs import RunError, RunNotFoundError, runs_root
from mlengine.data.schema import MLEngineError
from mlengine.pipeline import (
    AssetSpec,
    EnsembleConfig,
    EnsemblePipeline,
    EnsembleResult,
    RunConfig,
    asset_bars,
    load_run_config,
)

if TYPE_CHECKING:
    from mlengine.data.store import Store

__all__ = ["ConfigRun", "ConfigRunError", "asset_key", "config_run_path", "is_config_run"]

_KIND = "config_run"
_SLUG = re.compile(r"[^a-z0-9]+")


class ConfigRunError(MLEngineError, ValueError):
    """A config run that cannot be started or resumed (names the run and what is wrong)."""


def asset_key(asset: AssetSpec) -> str:
    """The asset's name in the run directory and manifest: ``SYMBOL_TF``."""
    return f"{asset.symbol}_{asset.timeframe}"


def _settings(cfg: RunConfig) -> dict[str, Any]:
    """The configuration as stored, without the settings that do not change a result."""
    data = cfg.model_dump(mode="json")
    for key in EnsembleConfig.EXECUTION:
        data["ensemble"].pop(key, None)
    return data


def _sha(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(_settings(cfg), sort_keys=True).encode()).hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def _differences(old: RunConfig, new: RunConfig) -> list[str]:
    a, b = _flat(_settings(old)), _flat(_settings(new))
    keys = sorted(a.keys() | b.keys())
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in keys if a.get(k) != b.get(k)]


def config_run_path(run: str | Path, root: Path | None = None) -> Path | None:
    """The directory of the config run with id ``run`` (under ``root``) or at ``run``; None
    when there is no config run there."""
    for path in (Path(run), runs_root(root) / str(run)):
        if path.is_dir() and is_config_run(path):
            return path
    return None


def is_config_run(path: Path) -> bool:
    """Whether ``path`` is a config run's directory (not a single walk-forward run's)."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("kind") == _KIND
    except (OSError, ValueError, AttributeError):
        return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ConfigRun:
    """A config run's directory and manifest (see the module docstring)."""

    run_id: str
    path: Path
    config: RunConfig
    manifest: dict[str, Any]

    @classmethod
    def start(cls, config: RunConfig, root: Path | None = None) -> ConfigRun:
        """A new run of ``config`` under ``root`` (default the settings' runs dir)."""
        from mlengine.backtest.runs import _versions

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        slug = _SLUG.sub("-", config.name.lower()).strip("-") or "run"
        run_id = f"{slug}-{stamp}-{uuid.uuid4().hex[:6]}"
        path = runs_root(root) / run_id
        try:
            path.mkdir(parents=True)
            text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
            (path / "config.yaml").write_text(text)
        except OSError as err:
            raise ConfigRunError(f"{path}: cannot create the run directory: {err}") from None
        manifest = {
            "kind": _KIND,
            "run_id": run_id,
            "name": config.name,
            "created_at": _now(),
            "updated_at": _now(),
            "config_sha256": _sha(config),
            "versions": _versions(),
            "status": "pending",
            "assets": {
                asset_key(a): {"symbol": a.symbol, "timeframe": a.timeframe, "status": "pending"}
                for a in config.assets
            },
        }
        run = cls(run_id, path, config, manifest)
        run._write()
        return run

    @classmethod
    def open(cls, run: str | Path, root: Path | None = None) -> ConfigRun:
        """The config run with id ``run`` (under ``root``) or at the directory ``run``."""
        path = Path(run) if Path(run).is_dir() else runs_root(root) / str(run)
        if not path.is_dir():
            raise RunNotFoundError(f"no run directory at {path}")
        if not is_config_run(path):
            raise ConfigRunError(f"{path}: not a config run (no manifest.json of kind {_KIND!r})")
        manifest = json.loads((path / "manifest.json").read_text())
        config = load_run_config(path / "config.yaml")
        return cls(str(manifest["run_id"]), path, config, manifest)

    @classmethod
    def resume(
        cls, run: str | Path, config: RunConfig | None = None, root: Path | None = None
    ) -> ConfigRun:
        """Reopen a run to finish it; ``config`` (e.g. the file given again) must be the
        run's own up to the execution settings, which it may change."""
        opened = cls.open(run, root)
        if config is None:
            return opened
        changed = _differences(opened.config, config)
        if changed:
            raise ConfigRunError(
                f"run {opened.run_id} was made with another configuration; it differs in "
                + "; ".join(changed)
                + ": start a new run instead of resuming"
            )
        opened.config = config
        return opened

    def jobs_dir(self, symbol: str, timeframe: str) -> Path:
        """Where the run stores the finished jobs of a series (:class:`ConfigRunError`
        when the series is not one of the run's assets)."""
        key = f"{symbol}_{timeframe}"
        if key not in self.manifest["assets"]:
            known = ", ".join(self.manifest["assets"])
            raise ConfigRunError(f"run {self.run_id} has no asset {key} (its assets: {known})")
        return self.path / "jobs" / key

    def _write(self) -> None:
        self.manifest["updated_at"] = _now()
        file = self.path / "manifest.json"
        tmp = file.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.manifest, indent=2, allow_nan=True, default=str))
            tmp.replace(file)
        except OSError as err:
            raise RunError(f"{file}: cannot write the manifest: {err}") from None

    def _asset(self, asset: AssetSpec) -> dict[str, Any]:
        return dict(self.manifest["assets"][asset_key(asset)])

    def _set(self, asset: AssetSpec, **fields: Any) -> None:
        self.manifest["assets"][asset_key(asset)] = self._asset(asset) | fields
        self._write()

    def execute(
        self, store: Store, *, progress: bool = True
    ) -> Iterator[tuple[AssetSpec, EnsembleResult | None]]:
        """Run every asset not done yet, in the config's order, yielding ``(asset, result)``
        as each finishes (``None`` for an asset done before). A failing asset is marked
        ``failed`` with its error, which is raised again; its finished jobs stay stored."""
        self.manifest["status"] = "running"
        self._write()
        settings = self.config.ensemble
        for asset in self.config.assets:
            if self._asset(asset)["status"] == "done":
                yield asset, None
                continue
            key = asset_key(asset)
            self._set(asset, status="running", error=None, started_at=_now())
            started = time.perf_counter()
            try:
                result = EnsemblePipeline(settings).run(
                    asset_bars(store, asset),
                    store=store,
                    save=self.path / "candidates",
                    report=self.path / "reports" / f"ensemble_{key}.html",
                    jobs_dir=self.jobs_dir(asset.symbol, asset.timeframe),
                    tags={"config_run": self.run_id},
                    progress=progress,
                )
            except Exception as err:
                self._set(asset, status="failed", error=f"{type(err).__name__}: {err}")
                self.manifest["status"] = "failed"
                self._write()
                raise
            assert result.report is not None
            summary = result.summary.reset_index().to_dict(orient="records")
            self._set(
                asset,
                status="done",
                seconds=round(time.perf_counter() - started, 1),
                candidates={name: run.run_id for name, run in result.comparison.runs.items()},
                report=str(result.report.relative_to(self.path)),
                summary=summary,
            )
            yield asset, result
        self.manifest["status"] = "done"
        self._write()
