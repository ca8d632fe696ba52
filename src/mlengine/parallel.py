"""The one place that fans work out: run a function over a list of jobs, in order.

:func:`run_jobs` applies ``fn`` to every job and returns the results in the order of the
jobs, whatever order they finish in, so that a run is reproducible however it was spread
out. Executors (:data:`EXECUTORS`):

* ``"serial"``: in this process, one job after the other — for debugging, profiling and
  functions that cannot be pickled (closures, lambdas).
* ``"local"``: a :class:`concurrent.futures.ProcessPoolExecutor` on this machine. With one
  worker or one job it runs in-process like ``"serial"`` (no process start-up cost).

The local workers are started with the ``spawn`` method, not ``fork``: the parent may
already hold torch, numba or an OpenMP runtime, whose thread pools and locks do not
survive a fork (a forked child can deadlock in them). Spawned workers start a fresh
interpreter, so ``fn`` and the jobs must be picklable — a module-level function and plain
data; this is checked up front on ``fn`` and the first job, so the error is immediate.

Each worker limits its own threads so that workers x threads stays near the number of
cores instead of every worker starting one thread per core: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` are set to
``max(1, cores // workers)`` before the job runs (torch and numba read them when first
imported), and when torch or numba is already loaded in the worker its thread count is set
directly.

A failed job is re-run up to ``retries`` times; then :class:`JobError` is raised from the
original exception, the jobs not yet started are cancelled, the running ones are let finish,
and the results of every finished job travel with the error (``.completed``) so that a
caller can resume. A Rich progress bar on stderr shows the jobs done and the last one.

A Ray executor, for fanning out over a cluster, will be added beside these two with the
same contract.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, TypeVar, get_args

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlengine.data.schema import MLEngineError

__all__ = [
    "EXECUTORS",
    "Executor",
    "JobError",
    "ParallelError",
    "default_workers",
    "run_jobs",
]

J = TypeVar("J")
R = TypeVar("R")

Executor = Literal["serial", "local"]
EXECUTORS: tuple[str, ...] = get_args(Executor)
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
_LABEL_MAX = 60


class ParallelError(MLEngineError, RuntimeError):
    """Invalid fan-out arguments, or work that cannot be sent to the executor."""


class JobError(ParallelError):
    """A job failed: ``.job`` (the label), ``.cause`` (the original exception's type name and
    message).

    ``.index`` is the job's position in the jobs, ``.attempts`` how many times it ran, and
    ``.completed`` maps the index of every job that finished to its result.
    """

    def __init__(
        self,
        message: str,
        *,
        job: str,
        cause: str,
        index: int = -1,
        attempts: int = 1,
        completed: dict[int, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.job = job
        self.cause = cause
        self.index = index
        self.attempts = attempts
        self.completed: dict[int, Any] = {} if completed is None else completed

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields: rebuilt through a helper so a JobError raised inside a job
        # (nested fan-out) can travel back from a worker process
        fields = (self.job, self.cause, self.index, self.attempts, self.completed)
        return _rebuild_job_error, (str(self), *fields)


def _rebuild_job_error(
    message: str, job: str, cause: str, index: int, attempts: int, completed: dict[int, Any]
) -> JobError:
    return JobError(
        message, job=job, cause=cause, index=index, attempts=attempts, completed=completed
    )


def default_workers() -> int:
    """The number of cores this process may run on (its CPU affinity when known), at least 1."""
    process_cpu_count: Callable[[], int | None] | None = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:  # Python >= 3.13
        count = process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count()
    return max(1, count or 1)


def _default_label(job: object) -> str:
    text = str(job)
    return text if len(text) <= _LABEL_MAX else text[: _LABEL_MAX - 3] + "..."


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _limit_threads(threads: int) -> None:
    """Worker initializer: at most ``threads`` threads per numeric library in this worker."""
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    # a library imported from here on reads the variables above; one already loaded (by the
    # re-import of the parent's main module) is told directly — importing torch here only to
    # set it would cost every worker seconds of start-up
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParallelError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_picklable(fn: Callable[..., Any], first_job: object, first_label: str) -> None:
    hint = "or run with executor='serial'"
    try:
        pickle.dumps(fn)
    except Exception as err:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ParallelError(
            f"the function {name} cannot be pickled for the 'local' executor "
            f"({_describe(err)}); use a module-level function (not a lambda, closure or "
            f"nested function), {hint}"
        ) from err
    try:
        pickle.dumps(first_job)
    except Exception as err:
        raise ParallelError(
            f"job {first_label!r} cannot be pickled for the 'local' executor "
            f"({_describe(err)}); jobs must be plain data or instances of module-level "
            f"classes, {hint}"
        ) from err


def _job_error(
    label: str, index: int, attempts: int, exc: BaseException, completed: dict[int, Any]
) -> JobError:
    cause = _describe(exc)
    return JobError(
        f"job {label!r} failed after {attempts} attempt(s): {cause}",
        job=label,
        cause=cause,
        index=index,
        attempts=attempts,
        completed=completed,
    )


class _Bar:
    """The progress bar's updates: a job finished, a job is re-run."""

    def __init__(self, progress: Progress, total: int, description: str) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total, last="")

    def done(self, label: str) -> None:
        self._progress.update(self._task, advance=1, last=label)

    def retry(self, label: str, attempt: int) -> None:
        self._progress.update(self._task, last=f"{label} failed, attempt {attempt}")


def _run_serial(
    fn: Callable[[J], R], jobs: Sequence[J], labels: list[str], retries: int, bar: _Bar
) -> list[R]:
    results: list[R] = []
    for index, job in enumerate(jobs):
        attempts = 0
        while True:
            attempts += 1
            try:
                result = fn(job)
            except Exception as exc:
                if attempts <= retries:
                    bar.retry(labels[index], attempts + 1)
                    continue
                completed: dict[int, Any] = dict(enumerate(results))
                raise _job_error(labels[index], index, attempts, exc, completed) from exc
            break
        results.append(result)
        bar.done(labels[index])
    return results


def _run_local(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    labels: list[str],
    retries: int,
    workers: int,
    bar: _Bar,
) -> list[R]:
    threads = max(1, default_workers() // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_limit_threads,
        initargs=(threads,),
    )
    results: dict[int, R] = {}
    attempts = [1] * len(jobs)
    pending: dict[Future[R], int] = {}
    try:
        for index, job in enumerate(jobs):
            try:
                pending[pool.submit(fn, job)] = index
            except BrokenProcessPool:  # a worker died already: its future reports it below
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):
                index = pending.pop(future)
                exc = future.exception()
                if exc is None:
                    results[index] = future.result()
                    bar.done(labels[index])
                    continue
                # a broken pool (a worker killed or crashed) cannot run a retry
                if attempts[index] <= retries and not isinstance(exc, BrokenProcessPool):
                    try:
                        pending[pool.submit(fn, jobs[index])] = index
                    except BrokenProcessPool:
                        pass  # the pool died meanwhile: this failure is the last one
                    else:
                        attempts[index] += 1
                        bar.retry(labels[index], attempts[index])
                        continue
                # cancel what has not started, let the running jobs finish and keep them
                pool.shutdown(wait=True, cancel_futures=True)
                for other, other_index in pending.items():
                    if other.done() and not other.cancelled() and other.exception() is None:
                        results[other_index] = other.result()
                error = _job_error(labels[index], index, attempts[index], exc, dict(results))
                raise error from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[index] for index in range(len(jobs))]


def run_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    *,
    executor: str = "local",
    workers: int | None = None,
    label: Callable[[J], str] | None = None,
    description: str = "jobs",
    retries: int = 0,
    progress: bool = True,
) -> list[R]:
    """``[fn(job) for job in jobs]``, fanned out by ``executor``; results in job order.

    ``workers``: processes for ``"local"`` (default :func:`default_workers`), capped at the
    number of jobs. ``label``: a job's name in the progress bar and in errors (default
    ``str(job)`` cut to 60 characters). ``description``: the progress bar's title. A job that
    raises is re-run up to ``retries`` times, then :class:`JobError` is raised (its
    ``.completed`` holds the results of the jobs that finished). ``progress=False`` hides the
    bar. Raises :class:`ParallelError` on invalid arguments, and for ``"local"`` when ``fn``
    or the first job cannot be pickled.
    """
    if executor not in EXECUTORS:
        raise ParallelError(
            f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}"
        )
    if not callable(fn):
        raise ParallelError(f"fn must be callable, got {fn!r}")
    n_workers = default_workers() if workers is None else _check_int(workers, "workers", 1)
    _check_int(retries, "retries", 0)
    jobs = list(jobs)
    if not jobs:
        return []
    name_of: Callable[[Any], str] = _default_label if label is None else label
    labels = [str(name_of(job)) for job in jobs]
    n_workers = min(n_workers, len(jobs))
    in_process = executor == "serial" or n_workers == 1
    if not in_process:
        _check_picklable(fn, jobs[0], labels[0])

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    last = TextColumn("{task.fields[last]}")
    with Progress(*columns, TimeElapsedColumn(), last, console=console, disable=not progress) as p:
        bar = _Bar(p, len(jobs), description)
        if in_process:
            return _run_serial(fn, jobs, labels, retries, bar)
        return _run_local(fn, jobs, labels, retries, n_workers, bar)
