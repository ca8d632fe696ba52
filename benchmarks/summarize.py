"""Gather every benchmark's JSON into one table: ``benchmarks/RESULTS.md`` and the README.

Run: ``.venv/bin/python benchmarks/summarize.py`` (``make bench`` runs it last).

Each benchmark writes ``benchmarks/results/<name>.json`` in its own shape; this script
knows the shapes (one reader per file, :data:`SOURCES`) and turns each into rows of one
table: area, figure, ours, peer, ratio ours / peer, goal, whether the goal is met. A
benchmark whose file is missing is listed as "not run", never an error, so the table can
be written after any subset of the suite; a file no reader knows is listed with what it
holds that looks like a figure. ``RESULTS.md`` adds the date, the commit and the machine;
the README's block between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` gets the
same table (the markers are added under the paragraph about ``make bench`` when absent;
nothing else in the README is touched).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlengine.data.schema import MLEngineError

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NOTE = (
    "Wall-clock times on a shared machine (other work ran on the same cores): the absolute "
    "figures move from run to run; each ratio is taken in one process, ours and the peer "
    "side by side, and travels better."
)

Json = Mapping[str, Any]


class SummaryError(MLEngineError):
    """A results file that is not JSON, or a README whose markers are broken."""


@dataclass(frozen=True)
class Row:
    """One line of the table. ``ratio`` is ours / peer (``None``: no peer); ``met`` is
    ``None`` when the figure has no goal."""

    area: str
    figure: str
    ours: str
    peer: str = "—"
    ratio: float | None = None
    goal: str = "—"
    met: bool | None = None

    def cells(self) -> list[str]:
        ratio = "—" if self.ratio is None else _num(self.ratio)
        met = {None: "—", True: "yes", False: "no"}[self.met]
        return [self.area, self.figure, self.ours, self.peer, ratio, self.goal, met]


def _num(x: float) -> str:
    """Three significant digits, no exponent for the usual magnitudes."""
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.2e}"


def _s(x: float) -> str:
    return f"{_num(x)} s"


def _ms(x: float) -> str:
    return f"{_num(x)} ms"


def _rows_per_s(x: float) -> str:
    return f"{x:,.0f} rows/s"


# --- one reader per results file ---------------------------------------------------------


def _engine(d: Json) -> list[Row]:
    """bench_engine.py: medians, as its own table reports them."""
    rows = []
    if (c := d.get("sma_1m")) is not None:
        rows.append(
            Row(
                "backtest",
                "SMA 10/50 long/short, 1M bars (median)",
                _s(c["ours_median_s"]),
                f"vectorbt {_s(c['vectorbt_median_s'])}",
                c["ratio_median"],
                "≤ 0.5",
                c["ratio_median"] <= 0.5,
            )
        )
    if (c := d.get("backtesting_py_100k")) is not None:
        rows.append(
            Row(
                "backtest",
                "same, 100k bars (median)",
                _s(c["ours_median_s"]),
                f"backtesting.py {_s(c['backtesting_py_median_s'])}",
                c["ratio_median"],
                "≤ 0.01 (100x faster)",
                c["ratio_median"] <= 0.01,
            )
        )
    if (c := d.get("stops_sizing_1m")) is not None:
        rows.append(
            Row(
                "backtest",
                "stops, targets and sizing vs the plain run, 1M bars",
                _s(c["ours_stops_median_s"]),
                f"ours plain {_s(c['ours_plain_median_s'])}",
                c["ratio_median"],
                "≤ 1.5",
                c["ratio_median"] <= 1.5,
            )
        )
    if (c := d.get("cold_start")) is not None:
        warm = c["warm_cache"]
        total = warm["import_s"] + warm["first_call_s"]
        rows.append(
            Row(
                "backtest",
                "cold start: import + first call",
                _s(total),
                goal="≤ 5 s",
                met=total <= 5,
            )
        )
    if (c := d.get("memory_1m")) is not None:
        mb = c["above_input_mb"]
        rows.append(
            Row(
                "backtest",
                "peak memory above the input, 1M bars",
                f"{mb:.0f} MB",
                goal="≤ 300 MB",
                met=mb <= 300,
            )
        )
    return rows


def _features(d: Json) -> list[Row]:
    return [
        Row(
            "features",
            f"TA-Lib feature set, {d['bars']:,} bars, vs the sum of its TA-Lib calls",
            _s(d["features_s"]),
            f"TA-Lib {_s(d['talib_sum_s'])}",
            d["ratio"],
            f"≤ {d['goal']}",
            bool(d["meets_goal"]),
        )
    ]


def _indicators(d: Json) -> list[Row]:
    rows = []
    for name, r in d["indicators"].items():
        agree = "same values" if r.get("values_agree") else "values differ"
        rows.append(
            Row(
                "indicators",
                f"{name}, {d['bars']:,} bars ({agree})",
                _s(r["ours_s"]),
                f"ta {_s(r['ta_s'])}",
                r["ratio"],
            )
        )
    rows.append(
        Row(
            "indicators",
            "all of the above",
            _s(d["ours_total_s"]),
            f"ta {_s(d['ta_total_s'])}",
            d["ratio"],
        )
    )
    return rows


def _resample(d: Json) -> list[Row]:
    return [
        Row(
            "resample",
            f"1m → 1h, {d['bars']:,} bars",
            _s(d["mlengine_s"]),
            f"pandas {_s(d['pandas_s'])}",
            d["ratio"],
        )
    ]


def _store(d: Json) -> list[Row]:
    rows = []
    for engine, r in d["results"].items():
        goal = r.get("write_goal_rows_per_s")
        rows.append(
            Row(
                "store",
                f"{engine} write (insert), {d['rows']:,} bars",
                _rows_per_s(r["insert_rows_per_s"]),
                goal="—" if goal is None else f"≥ {goal:,} rows/s",
                met=None if goal is None else r["insert_rows_per_s"] >= goal,
            )
        )
        rows.append(
            Row("store", f"{engine} read, {d['rows']:,} bars", _rows_per_s(r["read_rows_per_s"]))
        )
    return rows


def _structure(d: Json) -> list[Row]:
    return [
        Row(
            "structure",
            f"swings + events + features, {d['bars']:,} bars",
            _s(d["total_s"]),
            goal=f"≤ {_num(d['goal_s'])} s",
            met=bool(d["meets_goal"]),
        )
    ]


def _swings(d: Json) -> list[Row]:
    rows = []
    for peer, label in (("pandas", "pandas centred window"), ("scipy", "scipy argrelextrema")):
        same = d["agreement"][peer]["same_inside_edges"]
        rows.append(
            Row(
                "swings",
                f"fractal n={d['n']}, {d['bars']:,} bars ({'same' if same else 'other'} swings)",
                _s(d["ours_s"]),
                f"{label} {_s(d[f'{peer}_s'])}",
                d[f"ratio_{peer}"],
            )
        )
    return rows


def _training(d: Json) -> list[Row]:
    peer = d["peer"]
    rows = []
    for name, r in d["strategies"].items():
        rows.append(
            Row(
                "training",
                f"{name} fit, per 10k {d['dataset']} bars",
                _s(r["fit_s_per_10k"]),
                f"bare XGBoost {_s(peer['fit_s_per_10k'])}",
                r["fit_ratio"],
            )
        )
    for name, r in d["strategies"].items():
        rows.append(
            Row(
                "inference",
                f"{name} predict_proba, newest bar ({r['tail_bars']}-bar tail), "
                "p50 / p99 (ratio of p50s)",
                f"{_ms(r['predict_p50_ms'])} / {_ms(r['predict_p99_ms'])}",
                f"XGBoost 1 row {_ms(peer['predict_p50_ms'])} / {_ms(peer['predict_p99_ms'])}",
                r["predict_ratio_p50"],
            )
        )
    return rows


def _walkforward(d: Json) -> list[Row]:
    return [
        Row(
            "walk-forward",
            f"{d['strategy']} on {d['dataset']}, {d['n_folds']} folds, end to end",
            _s(d["elapsed_s"]),
            goal=f"≤ {_num(d['goal_s'])} s",
            met=d["elapsed_s"] <= d["goal_s"],
        )
    ]


def _service(d: Json) -> list[Row]:
    goal = d.get("goal_p99_ms")
    return [
        Row(
            "service",
            "POST /predict, one new bar, p50 / p99 (ratio of p50s)",
            f"{_ms(d['p50_ms'])} / {_ms(d['p99_ms'])}",
            f"direct call {_ms(d['direct_p50_ms'])} / {_ms(d['direct_p99_ms'])}",
            d.get("ratio"),
            "—" if goal is None else f"p99 ≤ {_num(goal)} ms",
            None if goal is None else d["p99_ms"] <= goal,
        )
    ]


def _first(d: Json, *keys: str) -> Any:
    """The value of the first of ``keys`` that ``d`` has (``KeyError`` naming them all):
    for a results file whose key names changed between versions of its benchmark."""
    for key in keys:
        if key in d:
            return d[key]
    raise KeyError(" or ".join(keys))


def _jobs(d: Json) -> list[Row]:
    """bench_jobs.py: wall seconds per (strategy, fold) job, and the fan-out overhead of
    Ray against local processes (both ours: the ratio is Ray / local)."""
    rows = [
        Row(
            "jobs",
            f"{name}: one fold job on {d['dataset']}, ~{r['mean_train_bars']:,} training bars",
            _s(_first(r, "mean_wall_s_per_job", "mean_s_per_job")),
        )
        for name, r in d.get("strategies", {}).items()
    ]
    if (o := d.get("overhead")) is not None:
        ray = o["ray"]["ms_per_job"] if "ray" in o else o["ray_ms_per_job"]
        local = o["local"]["ms_per_job"] if "local" in o else o["local_ms_per_job"]
        rows.append(
            Row(
                "jobs",
                f"fan-out overhead per trivial job, {o['workers']} workers",
                f"Ray {_ms(ray)}",
                f"local processes {_ms(local)}",
                _first(o, "ratio_ms_per_job", "ratio"),
            )
        )
    return rows


def generic(name: str, d: Json) -> list[Row]:
    """A file no reader knows: its top-level figures (seconds, ms, rows/s), its ``ratio``
    and its goal, as far as the keys say."""
    figures = [
        f"{k}={_num(v)}"
        for k, v in d.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and k.endswith(("_s", "_ms", "_per_s"))
    ]
    ratio = d.get("ratio")
    goal = next((v for k, v in d.items() if k.startswith("goal")), None)
    met = next(
        (v for k, v in d.items() if k in ("meets_goal", "met") and isinstance(v, bool)), None
    )
    return [
        Row(
            name,
            name,
            ", ".join(figures[:4]) or "see the JSON",
            ratio=ratio if isinstance(ratio, int | float) and not isinstance(ratio, bool) else None,
            goal="—" if goal is None else str(goal),
            met=met,
        )
    ]


@dataclass(frozen=True)
class Source:
    """A results file (a glob pattern), the area and the script to list when none is
    there, and its reader."""

    pattern: str
    area: str
    figure: str
    read: Callable[[Json], list[Row]]


SOURCES: tuple[Source, ...] = (
    Source("engine.json", "backtest", "bench_engine.py", _engine),
    Source("indicators.json", "indicators", "bench_indicators.py", _indicators),
    Source("features.json", "features", "bench_features.py", _features),
    Source("resample.json", "resample", "bench_resample.py", _resample),
    Source("store.json", "store", "bench_store.py", _store),
    Source("swings.json", "swings", "bench_swings.py", _swings),
    Source("structure.json", "structure", "bench_structure.py", _structure),
    Source("training.json", "training", "bench_training.py", _training),
    Source("walkforward_*.json", "walk-forward", "bench_walkforward.py", _walkforward),
    Source("service.json", "service", "bench_service.py", _service),
    Source("jobs.json", "jobs", "bench_jobs.py", _jobs),
)


def _load(path: Path) -> Json:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SummaryError(f"{path.name}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise SummaryError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    return data


def build_rows(results_dir: Path) -> list[Row]:
    """The table's rows from every JSON file in ``results_dir``, in :data:`SOURCES` order;
    a missing file is a "not run" row; a file a reader cannot parse is a row saying so."""
    rows: list[Row] = []
    known: set[Path] = set()
    for source in SOURCES:
        paths = sorted(results_dir.glob(source.pattern))
        if not paths:
            rows.append(Row(source.area, source.figure, "not run", "not run"))
        for path in paths:
            known.add(path)
            try:
                rows.extend(source.read(_load(path)))
            except (KeyError, TypeError, AttributeError) as err:
                rows.append(Row(source.area, f"{path.name}: unreadable, missing {err}", "—"))
    for path in sorted(results_dir.glob("*.json")):
        if path not in known:
            rows.extend(generic(path.stem, _load(path)))
    return rows


def render_table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = ["area", "figure", "ours", "peer", "ratio ours/peer", "goal", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")
    return "\n".join(lines)


def machine() -> str:
    """Cores and CPU model (from ``/proc/cpuinfo`` where there is one)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if m:
            model = m.group(1).strip()
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def commit() -> str:
    """The short hash of HEAD ("unknown" outside a git checkout), marked when tracked files
    have changes not committed yet (the figures are then of the working tree)."""
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head} (plus uncommitted changes)" if dirty else head


def measured(results_dir: Path) -> str:
    """When the results files were written: the first and the last, UTC ("" if none)."""
    stamps = sorted(p.stat().st_mtime for p in results_dir.glob("*.json"))
    if not stamps:
        return ""
    first, last = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (stamps[0], stamps[-1]))
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"


def render_results(rows: list[Row], *, date: str, commit: str, machine: str, when: str = "") -> str:
    """The text of ``RESULTS.md``; ``when``: when the figures were measured."""
    ran = f"- figures measured: {when}\n" if when else ""
    return (
        "# Benchmark results\n\n"
        f"- date: {date}\n{ran}- commit: {commit}\n- machine: {machine}\n\n"
        f"{NOTE} Ratios below 1 mean ours is faster. Regenerate with `make bench`; each "
        "figure's method is in the docstring of its `benchmarks/bench_*.py`.\n\n"
        f"{render_table(rows)}\n"
    )


def update_readme(text: str, block: str) -> str:
    """``text`` with the block between the markers replaced by ``block``; without markers,
    they are inserted after the paragraph (or list item) that mentions ``make bench``."""
    n_start, n_end = text.count(START), text.count(END)
    if (n_start, n_end) not in ((0, 0), (1, 1)) or text.find(START) > text.find(END):
        raise SummaryError(f"README: expected one {START} before one {END}")
    body = f"{START}\n{block}\n{END}"
    if n_start:
        head, rest = text.split(START, 1)
        return head + body + rest.split(END, 1)[1]
    lines = text.split("\n")
    at = next((i for i, line in enumerate(lines) if "make bench" in line), None)
    if at is None:
        raise SummaryError("README: no paragraph mentions `make bench`; add the markers by hand")
    end = at + 1
    # the paragraph or list item goes on while lines are indented continuations / non-blank
    item = lines[at].lstrip().startswith(("- ", "* "))
    while end < len(lines) and lines[end].strip():
        if item and not lines[end].startswith((" ", "\t")):
            break
        end += 1
    after = [] if end < len(lines) and not lines[end].strip() else [""]
    return "\n".join([*lines[:end], "", body, *after, *lines[end:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--readme", type=Path, default=HERE.parent / "README.md")
    args = parser.parse_args()
    rows = build_rows(args.results)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = commit()
    text = render_results(
        rows, date=date, commit=where, machine=machine(), when=measured(args.results)
    )
    args.out.write_text(text)
    block = (
        f"Latest figures ({date}, commit {where}; wall-clock on a shared machine, see "
        f"`benchmarks/RESULTS.md`):\n\n{render_table(rows)}"
    )
    args.readme.write_text(update_readme(args.readme.read_text(), block))
    print(render_table(rows))
    print(f"wrote {args.out} and the bench block of {args.readme.name}")


if __name__ == "__main__":
    main()
