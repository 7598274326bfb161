"""The crash database (SQLAlchemy; SQLite by default, PostgreSQL for the farm). Not built yet:
see the open issue "Crash database, deduplication, minimization". Knows nothing of RQ."""
