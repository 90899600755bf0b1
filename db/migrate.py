"""Apply Alembic migrations programmatically (used by `storefront db upgrade`, `run` and the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    cfg = Config(str(INI))
    cfg.set_main_option("script_location", str(INI.parent / "migrations"))
    return cfg


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
