"""SQLAlchemy 2 async models, session factory and Alembic migrations."""
