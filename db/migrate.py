"""Apply Alembic migrations programmatically (used by `storefront db upgrade`, `run` and the tests)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    cfg = Config(str(INI))
    cfg.set_main_option("script_location", str(INI.parent / "migrations"))
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision in db/migrations (read from the scripts once per process)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("db/migrations has no revisions")
    return head


async def database_revisions(engine: AsyncEngine) -> list[str]:
    """The revision(s) the database says it is at: one query of Alembic's own table. Raises when the
    database cannot be reached or was never migrated (no alembic_version table)."""
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    cfg = alembic_config()

    def _run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # One migrator at a time when several processes start together.
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7301001)")
        await conn.run_sync(_run)
