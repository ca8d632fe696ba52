"""The one place that fans work out: run a function over a list of jobs, in order.

:func:`run_jobs` applies ``fn`` to every job and returns the results in the order of the
jobs, whatever order they finish in, so that a run is reproducible however it was spread
out. Executors (:data:`EXECUTORS`):

* ``"serial"``: in this process, one job after the other — for debugging, profiling and
  functions that cannot be pickled (closures, lambdas).
* ``"local"``: a :class:`concurrent.futures.ProcessPoolExecutor` on this machine. With one
  worker or one job it runs in-process like ``"serial"`` (no process start-up cost).
* ``"ray"``: tasks on a Ray cluster (the optional ``ray`` extra, imported only when asked
  for). ``address=None`` uses the Ray this process already initialised, else starts a local
  one (or joins the cluster in ``RAY_ADDRESS``, as Ray does); ``"auto"`` joins the cluster
  started on this machine with ``ray start``; ``"ray://host:10001"`` connects through the Ray
  Client and ``"host:6379"`` to a head node's GCS. Once connected, Ray stays up for the next
  fan-out and is shut down when the process exits.

The local workers are started with the ``spawn`` method, not ``fork``: the parent may
already hold torch, numba or an OpenMP runtime, whose thread pools and locks do not
survive a fork (a forked child can deadlock in them). Spawned workers start a fresh
interpreter, so ``fn`` and the jobs must be picklable — a module-level function and plain
data; this is checked up front on ``fn`` and the first job, so the error is immediate.
Ray pickles with cloudpickle, so lambdas and closures are fine there.

Ray gets work in a window of ``workers`` tasks in flight (default: the cluster's CPUs); each
job is put in the object store once, when it is first submitted (a retry reuses it), and
released when it is done, so that the store holds a window of jobs, not the whole run.

Each worker limits its own threads so that workers x threads stays near the number of
cores instead of every worker starting one thread per core: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` are set to
``max(1, cores // workers)`` before the job runs (torch and numba read them when first
imported), and when torch or numba is already loaded in the worker its thread count is set
directly. A Ray task reserves that many CPUs of the cluster (at most a node's) and runs with
as many threads.

A failed job is re-run up to ``retries`` times; then :class:`JobError` is raised from the
original exception, the jobs not yet started are cancelled (Ray also cancels the running
ones; local processes are let finish), and the results of every finished job travel with
the error (``.completed``) so that a caller can resume. Ray's own retries are off: a Ray
task that raises, or whose worker dies, is re-run by this module's loop, so that retries,
the progress bar and the error are the same for every executor (a dead local worker breaks
the pool, so it is not retried). A Rich progress bar on stderr shows the jobs done and the
last one.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import re
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

Executor = Literal["serial", "local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(Executor)
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
_LABEL_MAX = 60
#: a Ray address other than "auto": ``host:port`` (a head node's GCS) or ``ray://host:port``
_RAY_ADDRESS = re.compile(r"(?:ray://)?[^\s:/]+:\d{1,5}")


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
    numba = sys.modules.get("numba")
    for name in THREAD_ENV_VARS:
        # numba re-reads its variable at every compilation and refuses a pool size other than
        # the one it started with: once loaded, it keeps its variable and is told below
        if not (numba is not None and name == "NUMBA_NUM_THREADS"):
            os.environ[name] = str(threads)
    # a library imported from here on reads the variables above; one already loaded (by the
    # re-import of the parent's main module) is told directly — importing torch here only to
    # set it would cost every worker seconds of start-up
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
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


# ---------------------------------------------------------------- Ray


def _import_ray() -> Any:
    """The ``ray`` module, imported on first use: it is an optional extra and slow to load."""
    try:
        return importlib.import_module("ray")
    except ImportError as err:
        raise ParallelError(
            f"the 'ray' executor needs Ray, which is not installed ({_describe(err)}); "
            "install the ray extra: pip install 'mlengine[ray]'"
        ) from err


def _check_address(address: object) -> str | None:
    if address is None or address == "auto":
        return address
    if isinstance(address, str) and _RAY_ADDRESS.fullmatch(address):
        return address
    raise ParallelError(
        f"invalid Ray address {address!r}: use None (the Ray of this process, else a new "
        "local one), 'auto' (the cluster started on this machine with `ray start`), "
        "'ray://host:10001' (Ray Client) or 'host:6379' (the head node's GCS address)"
    )


def _connect_ray(ray: Any, address: str | None) -> None:
    """Use the Ray this process is connected to, else start or join one (see the module)."""
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if target is None:
            ray.init(include_dashboard=False)
        else:
            ray.init(address=target)
    except Exception as err:
        if target is None:
            raise ParallelError(f"cannot start a local Ray ({_describe(err)})") from err
        raise ParallelError(
            f"cannot connect to the Ray cluster at {target!r} ({_describe(err)}); is it "
            "running (`ray start --head` on the head node, `ray status` to check)?"
        ) from err


def _cluster_cpus(ray: Any) -> tuple[int, int]:
    """The cluster's CPUs in all and on its smallest node that has any (0, 0 when none)."""
    total = int(ray.cluster_resources().get("CPU", 0))
    per_node = [
        int(node["Resources"].get("CPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU", 0) >= 1
    ]
    return total, min(per_node, default=0)


def _ray_task(fn: Callable[[J], R], job: J, threads: int) -> R:
    """One job on a Ray worker (workers are reused, so the limit is set for every task)."""
    _limit_threads(threads)
    return fn(job)


def _ray_put(ray: Any, value: object, what: str) -> Any:
    try:
        return ray.put(value)
    except Exception as err:
        raise ParallelError(f"{what} cannot be sent to Ray ({_describe(err)})") from err


def _ray_cause(ray: Any, exc: Exception) -> Exception:
    """The job's own exception out of Ray's wrapper, with the worker's traceback as a note
    (the wrapper's text is the task's name and traceback on the worker)."""
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, Exception):
        cause: Exception = exc.cause
        cause.add_note(str(exc))
        return cause
    return exc


def _run_ray(
    ray: Any,
    fn: Callable[[J], R],
    jobs: Sequence[J],
    labels: list[str],
    retries: int,
    workers: int,
    cpus: int,
    bar: _Bar,
) -> list[R]:
    # max_retries=0: a dead worker is retried by this loop, like an exception
    task = ray.remote(_ray_task).options(num_cpus=cpus, max_retries=0, retry_exceptions=False)
    name = getattr(fn, "__qualname__", repr(fn))
    fn_ref = _ray_put(ray, fn, f"the function {name}")
    job_refs: dict[int, Any] = {}  # put once, kept for retries, released when done
    pending: dict[Any, int] = {}  # task -> job index
    results: dict[int, R] = {}
    attempts = [1] * len(jobs)

    def submit(index: int) -> None:
        if index not in job_refs:
            job_refs[index] = _ray_put(ray, jobs[index], f"job {labels[index]!r}")
        pending[task.remote(fn_ref, job_refs[index], cpus)] = index

    queued = iter(range(len(jobs)))
    try:
        for index in queued:
            submit(index)
            if len(pending) >= workers:
                break
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            try:
                results[index] = ray.get(ref)
            except Exception as exc:
                cause = _ray_cause(ray, exc)
                if attempts[index] <= retries:
                    attempts[index] += 1
                    bar.retry(labels[index], attempts[index])
                    submit(index)
                    continue
                # keep what has finished, cancel the rest
                done: list[Any] = []
                if pending:
                    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for other in done:
                    try:
                        results[pending[other]] = ray.get(other)
                    except Exception:  # a failure that was not collected yet: not a result
                        continue
                error = _job_error(labels[index], index, attempts[index], cause, dict(results))
                raise error from cause
            del job_refs[index]
            bar.done(labels[index])
            for following in queued:
                submit(following)
                break
    finally:
        for ref in pending:  # after a failure or an interrupt; nothing when all succeeded
            ray.cancel(ref)
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
    address: str | None = None,
) -> list[R]:
    """``[fn(job) for job in jobs]``, fanned out by ``executor``; results in job order.

    ``workers``: processes for ``"local"`` (default :func:`default_workers`), tasks in
    flight for ``"ray"`` (default: the cluster's CPUs); capped at the number of jobs.
    ``label``: a job's name in the progress bar and in errors (default ``str(job)`` cut to 60
    characters). ``description``: the progress bar's title. A job that raises is re-run up
    to ``retries`` times, then :class:`JobError` is raised (its ``.completed`` holds the
    results of the jobs that finished). ``progress=False`` hides the bar. ``address``: the
    Ray cluster for ``"ray"`` (None, ``"auto"``, ``"ray://host:port"`` or ``"host:port"``;
    see the module), ignored by the other executors (a run config may name its cluster and
    still be run locally). Raises :class:`ParallelError` on invalid arguments, for ``"local"``
    when ``fn`` or the first job cannot be pickled, and for ``"ray"`` when Ray is not
    installed, cannot be reached, or cannot take ``fn`` or a job.
    """
    if executor not in EXECUTORS:
        raise ParallelError(
            f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}"
        )
    if not callable(fn):
        raise ParallelError(f"fn must be callable, got {fn!r}")
    if workers is not None:
        _check_int(workers, "workers", 1)
    _check_int(retries, "retries", 0)
    ray = None
    if executor == "ray":
        address = _check_address(address)
        ray = _import_ray()
    jobs = list(jobs)
    if not jobs:
        return []
    name_of: Callable[[Any], str] = _default_label if label is None else label
    labels = [str(name_of(job)) for job in jobs]
    cpus = 1
    if ray is not None:
        _connect_ray(ray, address)
        total, smallest = _cluster_cpus(ray)
        n_workers = min(max(1, total) if workers is None else workers, len(jobs))
        cpus = max(1, min(total // n_workers, smallest))
        in_process = False
    else:
        n_workers = min(default_workers() if workers is None else workers, len(jobs))
        in_process = executor == "serial" or n_workers == 1
        if not in_process:
            _check_picklable(fn, jobs[0], labels[0])

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    last = TextColumn("{task.fields[last]}")
    with Progress(*columns, TimeElapsedColumn(), last, console=console, disable=not progress) as p:
        bar = _Bar(p, len(jobs), description)
        if ray is not None:
            return _run_ray(ray, fn, jobs, labels, retries, n_workers, cpus, bar)
        if in_process:
            return _run_serial(fn, jobs, labels, retries, bar)
        return _run_local(fn, jobs, labels, retries, n_workers, bar)
