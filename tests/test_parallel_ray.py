"""The Ray executor: job order, thread limits, retries (of exceptions and of dead workers),
the error that names the job, bad or unreachable addresses, a missing Ray, and the same
walk-forward predictions as the local executor.

A local Ray cluster with 2 CPUs is started once for the module and shut down after it. Its
workers import this module to run the functions below (Ray adds the test session's
``sys.path`` to theirs), so the module imports only what they need: the walk-forward is
imported by the one test that runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray

from mlengine.parallel import EXECUTORS, JobError, ParallelError, run_jobs

PARENT = os.getpid()


def square_slowly(job: tuple[int, float]) -> tuple[int, int, str | None]:
    """The square of the job's number after its delay, the worker's pid and thread limit."""
    number, delay = job
    time.sleep(delay)
    return number * number, os.getpid(), os.environ.get("OMP_NUM_THREADS")


def explode_on_three(job: int) -> int:
    if job == 3:
        raise ValueError(f"bad job {job}")
    return job * 10


def fail_once(job: tuple[str, str]) -> str:
    """Fails the first time it meets a missing marker file (creating it), then succeeds."""
    name, marker = job
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise OSError(f"transient failure of {name}")
    return name.upper()


def die_once(marker: str) -> str:
    """Kills its worker process (no Python exception) the first time, then succeeds."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os._exit(3)
    return "survived"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    if ray.is_initialized():  # another module's Ray: this module needs its own 2 CPUs
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


# ---------------------------------------------------------------- the contract


def test_results_come_in_job_order_from_ray_workers_with_one_thread_each(cluster, capsys):
    # later jobs sleep less, so with two tasks in flight they finish out of order
    jobs = [(n, 0.05 * (4 - n)) for n in range(4)]
    out = run_jobs(square_slowly, jobs, executor="ray", description="squares")
    assert [r[0] for r in out] == [0, 1, 4, 9]
    assert PARENT not in {pid for _, pid, _ in out}
    assert [threads for _, _, threads in out] == ["1"] * 4  # 2 CPUs / 2 tasks in flight
    err = capsys.readouterr().err
    assert "squares" in err and "4/4" in err


def test_one_task_in_flight_gets_every_cpu_of_the_node(cluster):
    out = run_jobs(square_slowly, [(2, 0.0), (3, 0.0)], executor="ray", workers=1, progress=False)
    assert [(r[0], r[2]) for r in out] == [(4, "2"), (9, "2")]


def test_lambdas_and_closures_travel_by_value(cluster):
    offset = 5
    assert run_jobs(lambda j: j + offset, [1, 2, 3], executor="ray", progress=False) == [6, 7, 8]


def test_a_transient_failure_is_retried_by_our_loop(cluster, tmp_path):
    jobs = [("flaky", str(tmp_path / "a")), ("steady", str(tmp_path / "b"))]
    (tmp_path / "b").write_text("never fails")
    out = run_jobs(fail_once, jobs, executor="ray", retries=1, progress=False)
    assert out == ["FLAKY", "STEADY"]


def test_failure_after_retries_names_the_job_and_keeps_finished_results(cluster):
    with pytest.raises(JobError) as info:
        run_jobs(
            explode_on_three,
            [1, 2, 3, 4],
            executor="ray",
            workers=1,  # one task in flight: jobs 1 and 2 finish first, job 4 never starts
            retries=2,
            label=lambda j: f"job-{j}",
            progress=False,
        )
    err = info.value
    assert (err.job, err.index, err.attempts) == ("job-3", 2, 3)
    assert err.cause == "ValueError: bad job 3"
    assert str(err) == "job 'job-3' failed after 3 attempt(s): ValueError: bad job 3"
    assert err.completed == {0: 10, 1: 20}
    # the job's own exception, not Ray's wrapper, with the worker's traceback as a note
    assert type(err.__cause__) is ValueError
    assert any("explode_on_three" in note for note in err.__cause__.__notes__)


def test_a_dead_worker_is_retried_and_the_cluster_carries_on(cluster, tmp_path):
    with pytest.raises(JobError) as info:
        run_jobs(die_once, [str(tmp_path / "first")], executor="ray", progress=False)
    assert info.value.attempts == 1 and "WorkerCrashedError" in info.value.cause
    out = run_jobs(die_once, [str(tmp_path / "second")], executor="ray", retries=1, progress=False)
    assert out == ["survived"]


def test_a_job_ray_cannot_serialise_is_named(cluster):
    jobs = [1, threading.Lock()]
    with pytest.raises(ParallelError, match="job 'the lock' cannot be sent to Ray"):
        run_jobs(str, jobs, executor="ray", label=lambda j: "the lock", progress=False)


# ---------------------------------------------------------------- addresses and installation


@pytest.mark.parametrize("address", ["nohost", "http://head:6379", "ray://", "head:port", 6379])
def test_a_malformed_address_is_refused_with_the_valid_forms(address):
    with pytest.raises(ParallelError) as info:
        run_jobs(str, [1], executor="ray", address=address, progress=False)
    message = str(info.value)
    assert message.startswith(f"invalid Ray address {address!r}")
    assert "'auto'" in message and "ray://host:10001" in message


def test_the_other_executors_ignore_the_address():
    # a run config may name its cluster and still be run here, with --executor serial
    assert run_jobs(str, [1, 2], executor="serial", address="auto", progress=False) == ["1", "2"]


def test_a_missing_ray_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when not installed
    with pytest.raises(ParallelError, match=r"pip install 'mlengine\[ray\]'"):
        run_jobs(str, [1], executor="ray", progress=False)


def test_an_unreachable_cluster_is_a_clear_error():
    # a fresh interpreter: this one is connected already. Nothing listens on port 1 (and
    # without the Ray Client installed, Ray refuses a ray:// address at once).
    code = textwrap.dedent(
        """
        from mlengine.parallel import ParallelError, run_jobs
        try:
            run_jobs(str, [1], executor="ray", address="ray://127.0.0.1:1", progress=False)
        except ParallelError as err:
            print(err)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.startswith("cannot connect to the Ray cluster at 'ray://127.0.0.1:1' (")
    assert "ray start --head" in done.stdout


def test_ray_is_a_listed_executor():
    assert EXECUTORS == ("serial", "local", "ray")


# ---------------------------------------------------------------- same walk-forward as local


def test_walk_forward_predictions_are_identical_on_ray_and_local(cluster):
    from mlengine import datasets
    from mlengine.backtest.walkforward import predict_folds
    from mlengine.data.loader import WalkForwardSplit
    from mlengine.pipeline import strategy_factory

    bars = datasets.load("eurusd_1h").iloc[:2900]
    folds = tuple(
        WalkForwardSplit(n_splits=3, test_size=250, min_train_size=2000, purge=24).folds(bars)
    )
    factories = {"msa": strategy_factory("msa"), "tsmom": strategy_factory("tsmom")}
    runs: dict[str, Any] = {}
    for executor in ("ray", "local"):
        runs[executor] = predict_folds(
            factories, bars, folds, seed=7, executor=executor, workers=2, progress=False
        )
    assert set(runs["ray"]) == set(runs["local"]) == {"msa", "tsmom"}
    for name in factories:
        on_ray, local = runs["ray"][name], runs["local"][name]
        assert len(on_ray.predictions) == 750
        assert on_ray.predictions["p_up"].notna().any()
        pd.testing.assert_frame_equal(on_ray.predictions, local.predictions, check_exact=True)
        assert on_ray.params == local.params
        assert set(on_ray.explanations) == set(local.explanations)
        for key, frame in on_ray.explanations.items():
            pd.testing.assert_frame_equal(frame, local.explanations[key], check_exact=True)
