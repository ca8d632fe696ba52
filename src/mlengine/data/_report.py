"""The quality report: findings, repairs, their JSON and Rich renderings, and the error.

Private to :mod:`mlengine.data.validate`, which re-exports the public names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.table import Table

from mlengine.data.schema import BarDataError

Severity = Literal["error", "warning", "info"]
#: How many offending timestamps and rows a finding keeps as examples.
MAX_EXAMPLES = 5


def stamp(ns: int | np.integer) -> pd.Timestamp:
    """The UTC timestamp of ``ns`` nanoseconds since the epoch."""
    return pd.Timestamp(int(ns), tz="UTC")


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat()


def _jsonable(value: Any) -> Any:
    """``value`` with timestamps as ISO text, timedeltas as text, numpy scalars as Python."""
    if isinstance(value, pd.Timestamp):
        return _iso(value)
    if isinstance(value, pd.Timedelta):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fields_dict(record: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of the dataclass instance ``record``, less ``skip``, JSON-safe."""
    return {
        f.name: _jsonable(getattr(record, f.name)) for f in fields(record) if f.name not in skip
    }


@dataclass
class Finding:
    """One quality check that found something: its first offending timestamps and rows."""

    check: str
    severity: Severity
    count: int
    message: str
    timestamps: list[pd.Timestamp] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    column: str | None = None
    repaired: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass
class Repair:
    """One change made by the ``repair`` policy, with every timestamp and row affected."""

    action: str
    count: int
    message: str
    timestamps: list[pd.Timestamp] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


@dataclass
class QualityReport:
    """What :func:`validate` found. ``n_bars`` counts the bars a repair keeps (or kept)."""

    symbol: str | None
    timeframe: str
    market: str
    source: str | None
    n_rows: int
    n_bars: int
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    findings: list[Finding] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    bars: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error finding left unrepaired."""
        return all(f.repaired for f in self.errors)

    def finding(self, check: str) -> Finding | None:
        """The finding of ``check``, or None when that check found nothing."""
        return next((f for f in self.findings if f.check == check), None)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the bars, JSON-safe."""
        return {
            **_fields_dict(self, skip=("findings", "repairs", "bars")),
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "repairs": [r.to_dict() for r in self.repairs],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_rich(self) -> Table:
        """A table of findings and repairs for the CLI."""
        status = "[green]OK[/]" if self.ok else "[red]ERRORS[/]"
        table = Table(
            title=f"{self.symbol or self.source or 'bars'} {self.timeframe} ({self.market}): "
            f"{self.n_rows} rows → {self.n_bars} bars  {status}"
        )
        table.add_column("check", no_wrap=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("count", justify="right", no_wrap=True)
        table.add_column("first at (UTC)", no_wrap=True)
        table.add_column("message", ratio=1, overflow="fold")
        style = {"error": "red", "warning": "yellow", "info": "cyan"}
        for f in self.findings:
            sev = f"[{style[f.severity]}]{f.severity}[/]" + (
                " [green]fixed[/]" if f.repaired else ""
            )
            first = _short(f.timestamps[0]) if f.timestamps else ""
            table.add_row(f.check, sev, f"{f.count:,}", first, f.message)
        for r in self.repairs:
            first = _short(r.timestamps[0]) if r.timestamps else ""
            table.add_row(r.action, "[green]repair[/]", f"{r.count:,}", first, r.message)
        return table


def _short(ts: pd.Timestamp) -> str:
    """Compact UTC time for narrow terminals; seconds only when they are not zero."""
    return ts.strftime("%Y-%m-%d %H:%M:%S" if ts.second else "%Y-%m-%d %H:%M")


class BarQualityError(BarDataError):
    """Bars with errors that the policy does not allow; ``report`` holds every finding."""

    def __init__(
        self,
        message: str,
        *,
        report: QualityReport,
        source: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message, source=source, row=row, column=column)
        self.report = report


def raise_errors(
    report: QualityReport,
    errors: list[Finding],
    first_at: tuple[pd.Timestamp, int | None] | None = None,
) -> None:
    """Raise :class:`BarQualityError` naming the first error's source, row, column and time."""
    first = errors[0]
    if first_at is None and first.timestamps:
        first_at = (first.timestamps[0], first.rows[0] if first.rows else None)
    when = f" (first at {first_at[0]})" if first_at else ""
    also = ", ".join(f"{f.check} ({f.count})" for f in errors[1:])
    message = f"{first.check}: {first.message}{when}" + (f"; also {also}" if also else "")
    raise BarQualityError(
        message,
        report=report,
        source=report.source,
        row=first_at[1] if first_at else None,
        column=first.column,
    )
