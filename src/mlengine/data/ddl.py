"""The store's schemas, defined once as SQLAlchemy Core metadata and compiled per engine.

Both engines get the same tables: the definition below is compiled with SQLAlchemy's
PostgreSQL dialect, and DuckDB (whose SQL is PostgreSQL-compatible for these types)
runs the same statements. ``docs/schema.md`` describes every table and column.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateSchema, CreateSequence, CreateTable, Sequence
from sqlalchemy.types import TIMESTAMP

SCHEMAS: tuple[str, ...] = ("market_data", "ml")

metadata = MetaData()


def _tstz() -> TIMESTAMP:
    return TIMESTAMP(timezone=True)


def _created_at() -> Column[object]:
    return Column("created_at", _tstz(), nullable=False, server_default=text("now()"))


def _seq_id(name: str, seq: Sequence) -> Column[int]:
    """A BIGINT key filled from a sequence (portable: DuckDB has no SERIAL/IDENTITY)."""
    return Column(
        name,
        BigInteger,
        nullable=False,
        server_default=text(f"nextval('{seq.schema}.{seq.name}')"),
    )


SYMBOL = String(64)
JSON_VALUE = JSON(none_as_null=True)  # Python None is SQL NULL, not the JSON value null
TIMEFRAME = String(16)

ohlcv = Table(
    "ohlcv",
    metadata,
    Column("symbol", SYMBOL, nullable=False),
    Column("timeframe", TIMEFRAME, nullable=False),
    Column("ts", _tstz(), nullable=False),
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),
    PrimaryKeyConstraint("symbol", "timeframe", "ts"),
    schema="market_data",
)

migration_checkpoints = Table(
    "migration_checkpoints",
    metadata,
    Column("source", Text, nullable=False),
    Column("symbol", SYMBOL, nullable=False),
    Column("timeframe", TIMEFRAME, nullable=False),
    Column("last_ts", _tstz(), nullable=False),
    Column("rows_copied", BigInteger, nullable=False),
    Column("updated_at", _tstz(), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("source", "symbol", "timeframe"),
    schema="market_data",
)

predictions = Table(
    "predictions",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("strategy", Text, nullable=False),
    Column("symbol", SYMBOL, nullable=False),
    Column("timeframe", TIMEFRAME, nullable=False),
    Column("ts", _tstz(), nullable=False),
    Column("fold", Integer, nullable=False),
    Column("p_up", Double, nullable=False),
    Column("diagnostics", JSON_VALUE),
    _created_at(),
    PrimaryKeyConstraint("run_id", "strategy", "symbol", "timeframe", "ts"),
    schema="ml",
)

llm_signals_id_seq = Sequence("llm_signals_id_seq", schema="ml", metadata=metadata)
llm_signals = Table(
    "llm_signals",
    metadata,
    _seq_id("id", llm_signals_id_seq),
    Column("symbol", SYMBOL, nullable=False),
    Column("timeframe", TIMEFRAME, nullable=False),
    Column("ts", _tstz(), nullable=False),
    Column("action", String(16), nullable=False),
    Column("confidence", Double),
    Column("entry", Double),
    Column("stop_loss", Double),
    Column("take_profit", Double),
    Column("horizon", Integer),
    Column("reasoning", Text),
    Column("provider", Text, nullable=False),
    Column("model", Text),
    Column("prompt_hash", Text),
    Column("raw_reply", Text),
    Column("latency_ms", Double),
    Column("fallback_used", Boolean, nullable=False, server_default=text("false")),
    Column("valid", Boolean, nullable=False),
    Column("error", Text),
    _created_at(),
    Column("prompt_version", Text),
    Column("validation_errors", JSON_VALUE),
    Column("fallback_chain", JSON_VALUE),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    PrimaryKeyConstraint("id"),
    schema="ml",
)

backtest_runs = Table(
    "backtest_runs",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("name", Text),
    Column("config", JSON_VALUE),
    Column("symbols", JSON_VALUE),
    Column("timeframe", TIMEFRAME),
    Column("start_ts", _tstz()),
    Column("end_ts", _tstz()),
    Column("metrics", JSON_VALUE),
    _created_at(),
    PrimaryKeyConstraint("run_id"),
    schema="ml",
)

trials_id_seq = Sequence("trials_id_seq", schema="ml", metadata=metadata)
trials = Table(
    "trials",
    metadata,
    _seq_id("trial_id", trials_id_seq),
    Column("run_id", Text),
    Column("strategy", Text, nullable=False),
    Column("symbol", Text),
    Column("timeframe", Text),
    Column("params", JSON_VALUE, nullable=False),
    Column("params_hash", Text, nullable=False),
    Column("metric", Text, nullable=False),
    Column("metric_value", Double),
    Column("sharpe", Double),
    Column("n_obs", BigInteger),
    _created_at(),
    PrimaryKeyConstraint("trial_id"),
    schema="ml",
)

TABLES: dict[str, Table] = {t.fullname: t for t in metadata.sorted_tables}

#: Columns added to a table after stores were first created with it: an existing store
#: gets them on open (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, nullable, no default).
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "ml.llm_signals": (
        "prompt_version",
        "validation_errors",
        "fallback_chain",
        "prompt_tokens",
        "completion_tokens",
    ),
}


def create_statements() -> list[str]:
    """Idempotent DDL (``IF NOT EXISTS``) for every schema, sequence and table, in order,
    then the upgrade of tables created before a column was added (:data:`ADDED_COLUMNS`)."""
    dialect = postgresql.dialect()
    stmts = [CreateSchema(name, if_not_exists=True) for name in SCHEMAS]
    out = [str(s.compile(dialect=dialect)) for s in stmts]
    for seq in (llm_signals_id_seq, trials_id_seq):
        out.append(str(CreateSequence(seq, if_not_exists=True).compile(dialect=dialect)))
    for table in metadata.sorted_tables:
        out.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip())
    for name, columns in ADDED_COLUMNS.items():
        meta = TABLES[name]
        for col in columns:
            kind = meta.columns[col].type.compile(dialect=dialect)
            out.append(f"ALTER TABLE {meta.fullname} ADD COLUMN IF NOT EXISTS {col} {kind}")
    return out


def table(name: str) -> Table:
    """The table called ``name`` (``schema.table``), or a ``KeyError`` listing the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}") from None
