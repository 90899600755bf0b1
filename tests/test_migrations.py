"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Base

# What only PostgreSQL has, for search: a generated tsvector column and GIN indexes the models cannot
# declare for both backends. Migration 0004_search creates them; tests/test_search.py checks that
# searches use them.
MIGRATION_ONLY = frozenset(
    {("column", "search_document"), ("index", "ix_products_search_document"), ("index", "ix_products_name_trgm")}
)


def _declared(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return not (reflected and compare_to is None and (type_, name) in MIGRATION_ONLY)


async def test_migrations_match_models(engine: AsyncEngine) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(connection, opts={"compare_type": False, "include_object": _declared})
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    # alembic_version is Alembic's own bookkeeping, not a model
    changes = [c for c in changes if not (c[0] == "remove_table" and c[1].name == "alembic_version")]
    assert changes == []
