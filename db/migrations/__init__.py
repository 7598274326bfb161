"""Alembic migrations of the crash database, run in code by db.engine (no alembic.ini)."""
