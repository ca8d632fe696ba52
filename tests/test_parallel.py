"""Fan-out: serial and local processes agree and keep job order, workers are other processes
with limited threads, failures name the job and keep finished results, retries, pickling
checks and bad arguments.

The functions run by the ``"local"`` executor are defined at module level: spawned workers
import this module to unpickle them.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlengine.parallel import (
    EXECUTORS,
    JobError,
    ParallelError,
    default_workers,
    run_jobs,
)

PARENT = os.getpid()


def square_slowly(job: tuple[int, float]) -> tuple[int, int, str | None]:
    """The square of the job's number after its delay, the worker's pid and thread limit."""
    number, delay = job
    time.sleep(delay)
    return number * number, os.getpid(), os.environ.get("OMP_NUM_THREADS")


def fail_once(job: tuple[str, str]) -> str:
    """Fails the first time it meets a missing marker file (creating it), then succeeds."""
    name, marker = job
    if marker:
        path = Path(marker)
        if not path.exists():
            path.write_text("failed once")
            raise OSError(f"transient failure of {name}")
    return name.upper()


def exit_abruptly(job: int) -> int:
    """Kills its worker process without a Python exception."""
    os._exit(3)


def explode_on_three(job: int) -> int:
    if job == 3:
        raise ValueError(f"bad job {job}")
    return job * 10


# ---------------------------------------------------------------- local processes


@pytest.fixture(scope="module")
def local_results() -> list[tuple[int, int, str | None]]:
    # later jobs sleep less, so with two workers they finish out of order
    jobs = [(n, 0.05 * (4 - n)) for n in range(4)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "inherited")  # the workers must override it
        return run_jobs(square_slowly, jobs, executor="local", workers=2, progress=False)


def test_local_matches_serial_in_job_order(local_results):
    jobs = [(n, 0.0) for n in range(4)]
    serial = run_jobs(square_slowly, jobs, executor="serial", progress=False)
    assert [r[0] for r in local_results] == [r[0] for r in serial] == [0, 1, 4, 9]


def test_local_runs_in_other_processes_with_limited_threads(local_results):
    pids = {pid for _, pid, _ in local_results}
    assert pids - {PARENT}
    assert len(pids) <= 2
    expected = str(max(1, default_workers() // 2))
    assert [threads for _, _, threads in local_results] == [expected] * 4


def test_local_retry_succeeds_then_failure_keeps_finished_results(tmp_path):
    jobs = [("flaky", str(tmp_path / "a")), ("steady", "")]
    out = run_jobs(fail_once, jobs, executor="local", workers=2, retries=1, progress=False)
    assert out == ["FLAKY", "STEADY"]
    assert (tmp_path / "a").exists()

    jobs = [("flaky", str(tmp_path / "b")), ("steady", "")]
    with pytest.raises(JobError) as info:
        run_jobs(fail_once, jobs, executor="local", workers=2, label=lambda j: j[0], progress=False)
    err = info.value
    assert err.job == "flaky" and err.index == 0 and err.attempts == 1
    assert err.cause == "OSError: transient failure of flaky"
    assert "job 'flaky' failed after 1 attempt(s): OSError: transient failure" in str(err)
    assert isinstance(err.__cause__, OSError)
    assert set(err.completed) <= {1} and all(v == "STEADY" for v in err.completed.values())


def test_local_dead_worker_is_a_job_error_without_retry():
    with pytest.raises(JobError) as info:
        run_jobs(exit_abruptly, [1, 2], executor="local", workers=2, retries=3, progress=False)
    assert info.value.attempts == 1
    assert "BrokenProcessPool" in info.value.cause
    assert info.value.completed == {}


# ---------------------------------------------------------------- in-process


def test_single_job_or_worker_runs_in_process():
    assert run_jobs(square_slowly, [(3, 0.0)], progress=False)[0][1] == PARENT
    local_one = run_jobs(square_slowly, [(1, 0.0), (2, 0.0)], workers=1, progress=False)
    assert [pid for _, pid, _ in local_one] == [PARENT, PARENT]


def test_failing_job_names_label_and_cause_and_keeps_completed():
    with pytest.raises(JobError) as info:
        run_jobs(
            explode_on_three,
            [1, 2, 3, 4],
            executor="serial",
            label=lambda j: f"job-{j}",
            progress=False,
        )
    err = info.value
    assert err.job == "job-3" and err.index == 2
    assert err.cause == "ValueError: bad job 3"
    assert str(err) == "job 'job-3' failed after 1 attempt(s): ValueError: bad job 3"
    assert isinstance(err.__cause__, ValueError)
    assert err.completed == {0: 10, 1: 20}


def test_serial_retry_with_marker_file(tmp_path):
    job = [("flaky", str(tmp_path / "marker"))]
    with pytest.raises(JobError, match="failed after 1 attempt"):
        run_jobs(fail_once, job, executor="serial", progress=False)
    (tmp_path / "marker").unlink()
    assert run_jobs(fail_once, job, executor="serial", retries=1, progress=False) == ["FLAKY"]


@settings(max_examples=30, deadline=None)
@given(failures=st.integers(0, 4), retries=st.integers(0, 4))
def test_a_job_succeeds_iff_its_failures_fit_in_the_retries(failures, retries):
    calls: list[int] = []

    def flaky(job: int) -> int:
        calls.append(job)
        if len(calls) <= failures:
            raise RuntimeError(f"failure {len(calls)}")
        return job + 1

    if failures <= retries:
        assert run_jobs(flaky, [41], executor="serial", retries=retries, progress=False) == [42]
        assert len(calls) == failures + 1
    else:
        with pytest.raises(JobError) as info:
            run_jobs(flaky, [41], executor="serial", retries=retries, progress=False)
        assert info.value.attempts == len(calls) == retries + 1
        assert info.value.cause == f"RuntimeError: failure {retries + 1}"


def test_default_label_is_the_job_text_cut_to_60_chars():
    long_job = "x" * 100
    with pytest.raises(JobError) as info:
        run_jobs(int, ["7", long_job], executor="serial", progress=False)
    assert info.value.job == "x" * 57 + "..."
    assert info.value.completed == {0: 7}
    with pytest.raises(JobError) as info:
        run_jobs(int, ["seven"], executor="serial", progress=False)
    assert info.value.job == "seven"


def test_job_error_survives_pickling():
    err = JobError("job 'a' failed", job="a", cause="KeyError: 1", index=2, completed={0: 1})
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.job, back.cause, back.index, back.completed) == (
        "job 'a' failed",
        "a",
        "KeyError: 1",
        2,
        {0: 1},
    )


def test_progress_bar_shows_title_count_and_last_label(capsys):
    run_jobs(str, [1, 2, 3], executor="serial", description="folds", label=lambda j: f"f{j}")
    err = capsys.readouterr().err
    assert "folds" in err and "3/3" in err and "f3" in err
    run_jobs(str, [1, 2, 3], executor="serial", description="folds", progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- bad input


def test_unpicklable_function_is_refused_up_front_but_runs_serially():
    with pytest.raises(ParallelError, match=r"cannot be pickled.*module-level function"):
        run_jobs(lambda j: j + 1, [1, 2], executor="local", workers=2, progress=False)
    assert run_jobs(lambda j: j + 1, [1, 2], executor="serial", progress=False) == [2, 3]


def test_unpicklable_job_is_named():
    jobs = [lambda: 1, lambda: 2]
    with pytest.raises(ParallelError, match="job 'first' cannot be pickled"):
        run_jobs(callable, jobs, workers=2, label=lambda j: "first", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"executor": "dask"}, "unknown executor 'dask'; valid executors: serial, local, ray"),
        ({"workers": 0}, "workers must be an int >= 1, got 0"),
        ({"workers": 2.5}, "workers must be an int >= 1, got 2.5"),
        ({"workers": True}, "workers must be an int >= 1, got True"),
        ({"retries": -1}, "retries must be an int >= 0, got -1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ParallelError) as info:
        run_jobs(str, [1, 2], progress=False, **kwargs)
    assert str(info.value) == message


def test_bad_arguments_are_rejected_even_without_jobs():
    with pytest.raises(ParallelError, match="unknown executor"):
        run_jobs(str, [], executor="threads")
    with pytest.raises(ParallelError, match="fn must be callable"):
        run_jobs(42, [1])  # type: ignore[arg-type]


def test_empty_jobs_give_an_empty_list():
    for executor in EXECUTORS:
        assert run_jobs(str, [], executor=executor) == []


def test_default_workers_is_a_positive_count():
    assert 1 <= default_workers() <= (os.cpu_count() or 1)


NUMBA_MAIN = """
import numba  # loaded by the main module, so again in every spawned worker
from mlengine.parallel import run_jobs

def job(x):
    @numba.njit
    def twice(v):
        return 2 * v
    return twice(x), numba.get_num_threads()

if __name__ == "__main__":
    print(run_jobs(job, [1, 2], executor="local", workers=2, progress=False))
"""


def test_workers_compile_numba_when_the_main_module_loaded_it(tmp_path):
    # numba refuses a changed NUMBA_NUM_THREADS once its pool runs: a worker that set the
    # variable after the main module's re-import loaded numba failed every compilation
    import subprocess
    import sys

    script = tmp_path / "numba_main.py"
    script.write_text(NUMBA_MAIN)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    threads = max(1, default_workers() // 2)
    assert done.stdout.strip().splitlines()[-1] == str([(2, threads), (4, threads)])
