"""Database tables of the audit store, with their alembic migrations."""
