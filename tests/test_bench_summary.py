"""benchmarks/summarize.py: the table built from the benchmarks' JSON files, and the README
block it maintains. Small fake results in a temporary directory; nothing is timed."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def _load_summarize() -> types.ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the module from its file
    path = ROOT / "benchmarks" / "summarize.py"
    spec = importlib.util.spec_from_file_location("bench_summarize", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


summarize = _load_summarize()


def _write(results: Path, name: str, data: object) -> None:
    (results / name).write_text(json.dumps(data))


def _rows_by_area(rows: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(row.area, []).append(row)
    return out


@pytest.fixture
def results(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    return d


def test_empty_results_lists_every_benchmark_as_not_run(results: Path) -> None:
    rows = summarize.build_rows(results)
    assert len(rows) == len(summarize.SOURCES)
    assert all(r.ours == "not run" and r.peer == "not run" for r in rows)
    assert {r.figure for r in rows} >= {"bench_service.py", "bench_jobs.py", "bench_engine.py"}


def test_known_files_become_rows_with_ratio_goal_and_met(results: Path) -> None:
    _write(
        results, "resample.json", {"bars": 1000, "mlengine_s": 0.2, "pandas_s": 0.4, "ratio": 0.5}
    )
    _write(
        results,
        "features.json",
        {
            "bars": 1000,
            "features_s": 3.0,
            "talib_sum_s": 1.0,
            "ratio": 3.0,
            "goal": 1.5,
            "meets_goal": False,
        },
    )
    _write(
        results,
        "service.json",
        {
            "p50_ms": 10.0,
            "p99_ms": 40.0,
            "direct_p50_ms": 8.0,
            "direct_p99_ms": 20.0,
            "ratio": 2.0,
            "goal_p99_ms": 50.0,
        },
    )
    _write(
        results,
        "walkforward_pva_eurusd_1h.json",
        {
            "strategy": "pva",
            "dataset": "eurusd_1h",
            "n_folds": 7,
            "elapsed_s": 400.0,
            "goal_s": 300,
        },
    )
    by_area = _rows_by_area(summarize.build_rows(results))

    (resample,) = by_area["resample"]
    assert resample.ratio == 0.5 and resample.met is None and "pandas" in resample.peer
    (features,) = by_area["features"]
    assert features.ratio == 3.0 and features.met is False and features.goal == "≤ 1.5"
    (service,) = by_area["service"]
    assert service.ratio == 2.0 and service.met is True and "40" in service.ours
    (wf,) = by_area["walk-forward"]
    assert wf.met is False and "pva" in wf.figure
    assert by_area["jobs"][0].ours == "not run"  # absent: listed, not an error


def test_jobs_rows(results: Path) -> None:
    _write(
        results,
        "jobs.json",
        {
            "dataset": "eurusd_1h",
            "strategies": {"msa": {"mean_s_per_job": 1.5, "mean_train_bars": 3800}},
            "overhead": {
                "workers": 2,
                "ray_ms_per_job": 6.0,
                "local_ms_per_job": 80.0,
                "ratio": 0.075,
            },
        },
    )
    msa, overhead = _rows_by_area(summarize.build_rows(results))["jobs"]
    assert msa.ours == "1.5 s" and msa.ratio is None and "3,800" in msa.figure
    assert overhead.ratio == 0.075 and "Ray" in overhead.ours and "local" in overhead.peer


def test_jobs_rows_newer_layout(results: Path) -> None:
    _write(
        results,
        "jobs.json",
        {
            "dataset": "eurusd_1h",
            "strategies": {"pva": {"mean_wall_s_per_job": 10.0, "mean_train_bars": 3824}},
            "overhead": {
                "workers": 2,
                "ray": {"ms_per_job": 4.0},
                "local": {"ms_per_job": 40.0},
                "ratio_ms_per_job": 0.1,
            },
        },
    )
    pva, overhead = _rows_by_area(summarize.build_rows(results))["jobs"]
    assert pva.ours == "10 s"
    assert overhead.ratio == 0.1 and overhead.ours == "Ray 4 ms" and "40 ms" in overhead.peer


def test_training_and_swings_rows(results: Path) -> None:
    strategy = {
        "fit_s_per_10k": 20.0,
        "fit_ratio": 40.0,
        "tail_bars": 512,
        "predict_p50_ms": 30.0,
        "predict_p99_ms": 60.0,
        "predict_ratio_p50": 30.0,
        "predict_ratio_p99": 12.0,
    }
    _write(
        results,
        "training.json",
        {
            "dataset": "btcusd_1h_coinbase",
            "peer": {"fit_s_per_10k": 0.5, "predict_p50_ms": 1.0, "predict_p99_ms": 5.0},
            "strategies": {"pva": strategy, "mrd": strategy},
        },
    )
    agree = {"same_inside_edges": True}
    _write(
        results,
        "swings.json",
        {
            "bars": 100,
            "n": 3,
            "ours_s": 1.0,
            "pandas_s": 2.0,
            "scipy_s": 4.0,
            "ratio_pandas": 0.5,
            "ratio_scipy": 0.25,
            "agreement": {"pandas": agree, "scipy": agree},
        },
    )
    by_area = _rows_by_area(summarize.build_rows(results))
    assert [r.ratio for r in by_area["training"]] == [40.0, 40.0]
    assert [r.ratio for r in by_area["inference"]] == [30.0, 30.0]  # p50s: p99 is noisy
    assert "512" in by_area["inference"][0].figure
    assert [r.ratio for r in by_area["swings"]] == [0.5, 0.25]


def test_unknown_and_malformed_files_do_not_stop_the_table(results: Path) -> None:
    _write(results, "service.json", {"p50_ms": 1.0})  # keys missing
    _write(results, "mystery.json", {"elapsed_s": 2.5, "ratio": 0.8, "meets_goal": True})
    rows = summarize.build_rows(results)
    by_area = _rows_by_area(rows)
    assert "unreadable" in by_area["service"][0].figure
    (mystery,) = by_area["mystery"]
    assert mystery.ratio == 0.8 and mystery.met is True and "elapsed_s=2.5" in mystery.ours


def test_not_json_is_an_error_naming_the_file(results: Path) -> None:
    (results / "resample.json").write_text("{not json")
    with pytest.raises(summarize.SummaryError, match=r"resample\.json"):
        summarize.build_rows(results)


def test_markdown_table_has_one_line_per_row(results: Path) -> None:
    rows = summarize.build_rows(results)
    table = summarize.render_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| area | figure | ours | peer | ratio ours/peer | goal | met? |")
    assert len(lines) == len(rows) + 2
    text = summarize.render_results(rows, date="2026-01-01", commit="abc1234", machine="2 cores")
    assert "abc1234" in text and "2 cores" in text and "shared machine" in text
    assert "measured" not in text and summarize.measured(results) == ""
    _write(results, "resample.json", {})
    assert summarize.measured(results).endswith(" UTC")
    assert "- figures measured: then\n" in summarize.render_results(
        rows, date="d", commit="c", machine="m", when="then"
    )
    assert text.endswith(table + "\n")


README = """# project

## Development

- `make test` runs the tests.
- `make bench` runs the benchmarks
  side by side with their peers.
- The report's browser test.

## After
"""


def test_readme_markers_are_added_under_the_bench_item_then_replaced() -> None:
    once = summarize.update_readme(README, "TABLE 1")
    start, end = summarize.START, summarize.END
    assert once.count(start) == 1 and once.count(end) == 1
    # inserted right after the `make bench` item, everything else unchanged
    before, block_and_after = once.split(start)
    assert before.endswith("  side by side with their peers.\n\n")
    assert block_and_after.split(end)[1] == "\n\n- The report's browser test.\n\n## After\n"
    twice = summarize.update_readme(once, "TABLE 2")
    assert "TABLE 2" in twice and "TABLE 1" not in twice
    assert twice.replace("TABLE 2", "TABLE 1") == once


def test_readme_with_broken_markers_is_refused() -> None:
    with pytest.raises(summarize.SummaryError, match="bench:start"):
        summarize.update_readme(README + summarize.START, "T")


@given(st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=200))
def test_readme_outside_the_block_is_never_touched(extra: str) -> None:
    text = README + extra
    out = summarize.update_readme(text, "T")
    head, rest = out.split(summarize.START)
    tail = rest.split(summarize.END)[1]
    # removing the inserted block (and its separating blank line) gives the original back
    assert (head.rstrip("\n") + tail.lstrip("\n")).replace("\n", "") == text.replace("\n", "")
    assert summarize.update_readme(out, "T") == out
