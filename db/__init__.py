"""The crash database: SQLAlchemy 2, SQLite by default, PostgreSQL for the farm.

Stores plain records (buckets of findings, their reproducers, corpus, campaigns, regression
runs); knows nothing of RQ/Redis or of the emulator. Open with `open_db(url)`; the schema is
migrated by Alembic (db/migrations) on open.
"""

from .campaigns import (
    campaign_jobs,
    campaign_totals,
    cancel_campaign,
    create_campaign,
    create_job,
    farm_token,
    finish_campaign,
    finish_job,
    get_campaign,
    get_job,
    job_progress,
    list_campaigns,
    settle_campaign,
    start_job,
)
from .crashes import (
    add_corpus_entries,
    corpus_entries,
    get_bucket,
    get_sample,
    list_buckets,
    list_regression_runs,
    list_samples,
    mark,
    record_regression_run,
    set_minimized,
    store_finding,
    store_findings_batch,
    store_job_findings,
    unminimized_buckets,
)
from .engine import Database, open_db, resolve_url, sqlite_path
from .errors import DatabaseError, NotFound
from .models import BUCKET_STATUSES

__all__ = [
    "campaign_jobs", "campaign_totals", "cancel_campaign", "job_progress", "list_campaigns",
    "settle_campaign", "store_job_findings", "farm_token",
    "BUCKET_STATUSES", "Database", "DatabaseError", "NotFound", "add_corpus_entries", "corpus_entries",
    "create_campaign", "create_job", "finish_campaign", "finish_job", "get_bucket", "get_campaign",
    "get_job", "get_sample", "list_buckets", "list_regression_runs", "list_samples", "mark", "open_db",
    "record_regression_run", "resolve_url", "set_minimized", "sqlite_path", "start_job", "store_finding",
    "store_findings_batch", "unminimized_buckets",
]
