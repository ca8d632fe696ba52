"""Shared fixtures: real PostgreSQL and MariaDB servers on loopback, one fresh database per test.

Locally a test that needs a server skips when none answers; with
``MLENGINE_REQUIRE_SERVICES=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlengine.data.store import Store

PG_ADMIN_URL = os.environ.get("MLENGINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_HOST = os.environ.get("MLENGINE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("MLENGINE_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("MLENGINE_TEST_MYSQL_USER", "root")


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own data directory; nothing is written under the project."""
    from mlengine.config import get_settings

    monkeypatch.setenv("MLENGINE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.delenv("MLENGINE_DB_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def unavailable(message: str) -> None:
    """Skip locally, fail under ``MLENGINE_REQUIRE_SERVICES=1``: a service is missing."""
    if os.environ.get("MLENGINE_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (MLENGINE_REQUIRE_SERVICES=1)")
    pytest.skip(message)  # a missing service skips locally only


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    import psycopg

    name = _unique("mlengine_t")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        unavailable(f"PostgreSQL is not reachable: {err}")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """SQLAlchemy URL (``mysql+pymysql://``) of a fresh MariaDB database, dropped after."""
    import pymysql

    name = _unique("mlengine_t")
    try:
        admin = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, connect_timeout=5, autocommit=True
        )
    except pymysql.err.OperationalError as err:
        unavailable(f"MariaDB is not reachable: {err}")
        raise
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def duckdb_url(tmp_path) -> str:
    """URL of a fresh embedded DuckDB store in the test's temporary directory."""
    return f"duckdb:///{(tmp_path / 'store.duckdb').as_posix()}"


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """An open store on each engine: a fresh DuckDB file, and a fresh PostgreSQL database."""
    from mlengine.data.store import open_store

    url = request.getfixturevalue("duckdb_url" if request.param == "duckdb" else "pg_url")
    with open_store(url) as s:
        yield s
