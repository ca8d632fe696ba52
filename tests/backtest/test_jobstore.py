"""Finished jobs on disk: a run resumes where it stopped with the same predictions, reruns
exactly the jobs whose inputs changed, retries a failed job once, and names a job that
still fails by its asset, strategy and fold."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlengine.backtest import jobstore
from mlengine.backtest.jobstore import JobStoreError, job_dir
from mlengine.backtest.walkforward import FoldJob, Predicted, predict_folds
from mlengine.data.loader import Fold, WalkForwardSplit
from mlengine.parallel import JobError
from mlengine.pipeline import strategy_factory
from tests.backtest.test_walkforward import ExplainingSpy, random_walk

FACTORIES = {"msa": strategy_factory("msa"), "tsmom": strategy_factory("tsmom")}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return random_walk(1600, seed=3)


@pytest.fixture(scope="module")
def folds(bars: pd.DataFrame) -> tuple[Fold, ...]:
    return tuple(WalkForwardSplit(test_size=200, min_train_size=800, purge=1).folds(bars))


def _predict(bars: pd.DataFrame, folds: tuple[Fold, ...], **kw: Any) -> dict[str, Predicted]:
    factories = kw.pop("factories", FACTORIES)
    return predict_folds(factories, bars, folds, **({"seed": 0, "progress": False} | kw))


def _stamps(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("output.json")}


def _assert_same(a: dict[str, Predicted], b: dict[str, Predicted]) -> None:
    assert list(a) == list(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name].predictions, b[name].predictions, check_freq=False)
        assert a[name].params == b[name].params


def test_a_resumed_run_reuses_every_stored_job_and_predicts_the_same(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    fresh = _predict(bars, folds)
    first = _predict(bars, folds, jobs_dir=tmp_path)
    _assert_same(fresh, first)
    stamps = _stamps(tmp_path)
    assert len(stamps) == len(FACTORIES) * len(folds)
    again = _predict(bars, folds, jobs_dir=tmp_path)
    _assert_same(fresh, again)
    assert _stamps(tmp_path) == stamps  # nothing ran again


def test_only_the_jobs_whose_inputs_changed_run_again(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    _predict(bars, folds, jobs_dir=tmp_path)
    stamps = _stamps(tmp_path)
    changed = bars.copy()
    # the last bar, inside the last fold's test window only
    changed.loc[changed.index[-1], ["close", "high"]] *= 1.001
    _predict(changed, folds, jobs_dir=tmp_path)
    now = _stamps(tmp_path)
    last_fold = f"fold_{folds[-1].fold:03d}"
    rerun = {k for k in stamps if now[k] != stamps[k]}
    assert rerun == {k for k in stamps if last_fold in k}
    # other settings are part of the fingerprint too: another seed reruns everything
    _predict(changed, folds, jobs_dir=tmp_path, seed=1)
    assert all(_stamps(tmp_path)[k] != now[k] for k in now)


def test_jobs_made_by_other_code_run_again(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert jobstore.code_version() == jobstore.code_version()  # once per process, stable
    _predict(bars, folds, jobs_dir=tmp_path)
    stamps = _stamps(tmp_path)
    monkeypatch.setattr(jobstore, "code_version", lambda: "another version of the code")
    _predict(bars, folds, jobs_dir=tmp_path)
    assert all(_stamps(tmp_path)[k] != stamps[k] for k in stamps)


class FlakySpy(ExplainingSpy):
    """Fails its fit when the marker file named by ``MLENGINE_TEST_FLAKY`` is missing for its
    fold, and creates it: the first attempt of each fold fails, the next one succeeds.
    With ``MLENGINE_TEST_FAIL_AT=k`` the fit of fold ``k`` always fails."""

    def fit(self, bars: pd.DataFrame, *, context: Any = None) -> FlakySpy:
        fold = self.seed or 0
        if os.environ.get("MLENGINE_TEST_FAIL_AT") == str(fold):
            raise RuntimeError(f"planted failure in fold {fold}")
        marker = Path(os.environ.get("MLENGINE_TEST_FLAKY", "")) / f"fold{fold}"
        if os.environ.get("MLENGINE_TEST_FLAKY") and not marker.exists():
            marker.touch()
            raise RuntimeError(f"first attempt of fold {fold} fails")
        super().fit(bars, context=context)
        return self


def test_a_failed_job_is_retried_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    monkeypatch.setenv("MLENGINE_TEST_FLAKY", str(tmp_path))
    out = _predict(bars, folds, factories={"spy": FlakySpy}, retries=1)
    assert sorted(out["spy"].predictions["fold"].unique()) == [f.fold for f in folds]
    assert len(list(tmp_path.glob("fold*"))) == len(folds)  # each failed once


def test_a_job_that_keeps_failing_is_named_and_the_finished_ones_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    bad = folds[1].fold
    monkeypatch.setenv("MLENGINE_TEST_FAIL_AT", str(bad))
    with pytest.raises(JobError) as err:
        _predict(bars, folds, factories={"spy": FlakySpy}, jobs_dir=tmp_path, retries=1)
    assert err.value.job == f"SYN 1h spy fold {bad}"
    assert err.value.attempts == 2
    assert "planted failure" in str(err.value)
    assert set(_stamps(tmp_path)) == {f"spy/fold_{folds[0].fold:03d}/output.json"}
    # the failure fixed, the run resumes: the first fold is not fitted again
    monkeypatch.delenv("MLENGINE_TEST_FAIL_AT")
    before = _stamps(tmp_path)
    out = _predict(bars, folds, factories={"spy": FlakySpy}, jobs_dir=tmp_path)
    after = _stamps(tmp_path)
    assert len(after) == len(folds)
    assert all(after[k] == v for k, v in before.items())
    _assert_same(out, _predict(bars, folds, factories={"spy": FlakySpy}))


def test_unreadable_or_foreign_outputs_are_run_again(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    fresh = _predict(bars, folds, jobs_dir=tmp_path)
    job = FoldJob("msa", FACTORIES["msa"], bars, folds[0], None, None, 0, False)
    target = job_dir(tmp_path, job)
    (target / "output.json").write_text("{not json")
    other = job_dir(
        tmp_path, FoldJob("tsmom", FACTORIES["tsmom"], bars, folds[0], None, None, 0, False)
    )
    doc = json.loads((other / "output.json").read_text())
    (other / "output.json").write_text(json.dumps(doc | {"fingerprint": "0" * 64}))
    (
        job_dir(tmp_path, FoldJob("msa", FACTORIES["msa"], bars, folds[1], None, None, 0, False))
        / "predictions.parquet"
    ).unlink()
    _assert_same(fresh, _predict(bars, folds, jobs_dir=tmp_path))
    assert json.loads((target / "output.json").read_text())["fingerprint"] != "0" * 64


def test_explanations_survive_the_round_trip(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    fresh = _predict(bars, folds, factories={"spy": ExplainingSpy}, jobs_dir=tmp_path)
    again = _predict(bars, folds, factories={"spy": ExplainingSpy}, jobs_dir=tmp_path)
    assert fresh["spy"].explanations.keys() == again["spy"].explanations.keys()
    for name, frame in fresh["spy"].explanations.items():
        pd.testing.assert_frame_equal(frame, again["spy"].explanations[name], check_freq=False)


def test_a_jobs_dir_that_cannot_be_written_is_named(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    blocked = tmp_path / "jobs"
    blocked.write_text("a file, not a directory")
    with pytest.raises(
        JobStoreError, match=r"jobs/msa/fold_000: cannot store the output of job 'msa' fold 0"
    ):
        _predict(bars, folds, jobs_dir=blocked)
    assert blocked.read_text() == "a file, not a directory"


def test_the_local_executor_stores_and_resumes_the_same(
    tmp_path: Path, bars: pd.DataFrame, folds: tuple[Fold, ...]
) -> None:
    serial = _predict(bars, folds, jobs_dir=tmp_path / "a")
    local = _predict(bars, folds, jobs_dir=tmp_path / "b", executor="local", workers=2)
    _assert_same(serial, local)
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert names == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet")
    )
    assert np.isfinite(local["msa"].predictions["p_up"]).any()
