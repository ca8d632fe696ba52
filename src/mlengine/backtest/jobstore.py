"""Finished walk-forward jobs on disk, so that an interrupted run resumes where it stopped.

A (strategy, fold) job (:class:`mlengine.backtest.walkforward.FoldJob`) given a jobs
directory writes its output there itself, in the worker, as soon as it has finished:
``<jobs_dir>/<name>/fold_<k>/`` holds ``output.json`` (the strategy's name and parameters,
the explanation names and the job's fingerprint), ``predictions.parquet`` and one
``explain_<name>.parquet`` per explanation. The files go into a temporary sibling directory
that is renamed into place last, so a job killed while writing leaves nothing that looks
finished. With a shared file system (NFS, a cluster volume) this works the same from
processes on other machines.

The fingerprint is a SHA-256 of everything that decides the output: the factory (its
``repr``: a registered factory's strategy name and parameters), the seed, the fold's train
and test positions, the history, and the values of the bars up to the end of the test
window and of the context's higher-timeframe bars, and the code (:func:`code_version`: this
package's source and the numeric libraries' versions). A resumed run reuses a stored output
only when its fingerprint matches; otherwise the job runs again (the data, the parameters,
the scheme or the code changed), so a resume can never mix outputs of two different runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlengine.backtest.runs import _parquet_safe
from mlengine.data.schema import MLEngineError

if TYPE_CHECKING:
    from mlengine.backtest.walkforward import FoldJob

__all__ = [
    "FoldOutput",
    "JobStoreError",
    "code_version",
    "fingerprint",
    "job_dir",
    "load_output",
    "save_output",
]

_FORMAT = 1


class JobStoreError(MLEngineError, OSError):
    """A finished job's output that cannot be written (names the directory)."""


@dataclass(frozen=True, eq=False)
class FoldOutput:
    """What one (strategy, fold) job produced: its predictions on the fold's test window
    (``p_up``, ``fold``, diagnostics), the strategy's name and parameters and, for the last
    fold, the model's explanations."""

    name: str
    strategy: str
    params: dict[str, Any]
    predictions: pd.DataFrame
    explanations: dict[str, pd.DataFrame] = field(default_factory=dict)


def _frame_digest(frame: pd.DataFrame) -> bytes:
    hashed = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    return hashlib.sha256(np.ascontiguousarray(hashed).tobytes()).digest()


#: Libraries whose version can change a job's output.
_LIBRARIES = ("numpy", "pandas", "numba", "torch", "xgboost", "scikit-learn", "hmmlearn", "ta-lib")


@functools.cache
def code_version() -> str:
    """SHA-256 (hex) of this package's Python source (every module, by relative path) and
    the installed versions of :data:`_LIBRARIES`: a stored job made by other code is not
    reused. Computed once per process."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())
    for name in _LIBRARIES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}=={version}".encode())
    return digest.hexdigest()


def fingerprint(job: FoldJob) -> str:
    """The SHA-256 (hex) of what decides ``job``'s output (see the module docstring)."""
    fold = job.fold
    end = int(fold.test[-1]) + 1
    digest = hashlib.sha256()
    head = {
        "format": _FORMAT,
        "name": job.name,
        "factory": repr(job.factory),
        "seed": job.seed,
        "fold": fold.fold,
        "history": job.history,
        "explain": job.explain,
        "columns": [str(c) for c in job.bars.columns],
        "code": code_version(),
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for positions in (fold.train, fold.test):
        digest.update(np.asarray(positions, dtype=np.int64).tobytes())
    digest.update(_frame_digest(job.bars.iloc[:end]))
    if job.context is not None:
        for tf in sorted(job.context.higher_timeframes):
            digest.update(tf.encode())
            digest.update(_frame_digest(job.context.higher_timeframes[tf]))
        digest.update(json.dumps(dict(job.context.asset), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def job_dir(root: Path, job: FoldJob) -> Path:
    """Where ``job``'s output lives under the jobs directory ``root``."""
    return Path(root) / job.name / f"fold_{job.fold.fold:03d}"


def save_output(root: Path, job: FoldJob, key: str, output: FoldOutput) -> Path:
    """Write ``output`` of ``job`` (fingerprint ``key``) under ``root``, replacing a stale
    copy; returns its directory."""
    final = job_dir(root, job)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        output.predictions.to_parquet(tmp / "predictions.parquet")
        for name, frame in output.explanations.items():
            _parquet_safe(frame).to_parquet(tmp / f"explain_{name}.parquet")
        doc = {
            "format": _FORMAT,
            "fingerprint": key,
            "name": output.name,
            "strategy": output.strategy,
            "params": output.params,
            "explanations": list(output.explanations),
        }
        (tmp / "output.json").write_text(json.dumps(doc, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except (OSError, ValueError, TypeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        what = f"job {job.name!r} fold {job.fold.fold}"
        raise JobStoreError(f"{final}: cannot store the output of {what}: {err}") from err
    return final


def load_output(root: Path, job: FoldJob, key: str) -> FoldOutput | None:
    """The stored output of ``job`` when there is one with fingerprint ``key``, else None
    (none stored, another fingerprint, or unreadable files: the job runs again)."""
    where = job_dir(root, job)
    try:
        doc = json.loads((where / "output.json").read_text())
        if doc.get("format") != _FORMAT or doc.get("fingerprint") != key:
            return None
        predictions = pd.read_parquet(where / "predictions.parquet")
        explanations = {
            str(name): pd.read_parquet(where / f"explain_{name}.parquet")
            for name in doc["explanations"]
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return FoldOutput(doc["name"], doc["strategy"], doc["params"], predictions, explanations)
