"""Where the benchmarks write their figures: ``benchmarks/results/<name>.json`` (git-ignored),
read back by ``summarize.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def write_result(name: str, payload: Any) -> Path:
    """Write ``payload`` as ``results/<name>.json`` and say so; returns the path."""
    out = RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return out
