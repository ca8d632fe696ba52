"""Settings from the environment (``MLENGINE_*``) with sensible local defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-wide settings.

    ``data_dir`` holds the embedded DuckDB store and run directories; ``db_url`` picks the
    store (``duckdb:///path/file.duckdb`` or ``postgresql://user@host/db``) and defaults to
    a DuckDB file under ``data_dir``.
    """

    model_config = SettingsConfigDict(env_prefix="MLENGINE_", extra="ignore")

    data_dir: Path = Field(default=Path("data"))
    db_url: str | None = None

    @property
    def store_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"duckdb:///{(self.data_dir / 'mlengine.duckdb').as_posix()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
