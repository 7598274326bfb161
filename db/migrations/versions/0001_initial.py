"""Initial schema: campaigns, jobs, crash buckets and samples, corpus, regression runs, views.

Revision ID: 0001
Revises:
Create Date: 2025-11-21

Written by hand and frozen: later schema changes go into new revisions, never here.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Ids and the keys to them: SQLite numbers rows by itself only for INTEGER PRIMARY KEY.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.DateTime(timezone=True)  # db.coltypes.UTCDateTime stores through this


# The views are per dialect only where dates are involved. SQLite keeps our timestamps as naive
# UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', which sorts like time, so text comparisons are exact.
VIEWS = {
    "crashes_per_protocol_per_day": {
        "sqlite": """
            SELECT protocol, variant, date(created) AS day, COUNT(*) AS samples
            FROM crash_samples
            GROUP BY protocol, variant, date(created)""",
        "postgresql": """
            SELECT protocol, variant, CAST(created AT TIME ZONE 'UTC' AS DATE) AS day,
                   COUNT(*) AS samples
            FROM crash_samples
            GROUP BY protocol, variant, CAST(created AT TIME ZONE 'UTC' AS DATE)""",
    },
    "new_buckets_this_week": {
        "sqlite": """
            SELECT id, signature, protocol, variant, oracle, title, status, count,
                   first_seen, last_seen
            FROM crash_buckets
            WHERE first_seen >= strftime('%Y-%m-%d %H:%M:%f', 'now', '-7 days')""",
        "postgresql": """
            SELECT id, signature, protocol, variant, oracle, title, status, count,
                   first_seen, last_seen
            FROM crash_buckets
            WHERE first_seen >= now() - INTERVAL '7 days'""",
    },
    "buckets_still_reproducing": {
        "*": """
            SELECT id, signature, protocol, variant, oracle, title, status, count,
                   first_seen, last_seen
            FROM crash_buckets
            WHERE status NOT IN ('fixed', 'invalid')""",
    },
}


def _dialect() -> str:
    # get_context() rather than get_bind(): it also works when rendering SQL offline.
    return op.get_context().dialect.name


def upgrade() -> None:
    dialect = _dialect()

    op.create_table(
        "campaigns",
        sa.Column("id", Id, nullable=False),
        sa.Column("protocol", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(128), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("config", Json, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created", Time, nullable=False),
        sa.Column("finished", Time, nullable=True),
        sa.Column("schedules_run", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("coverage", sa.BigInteger(), nullable=True),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column("unique_findings", sa.Integer(), nullable=False),
        sa.Column("new_buckets", sa.Integer(), nullable=False),
        sa.Column("stats", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
    )

    op.create_table(
        "jobs",
        sa.Column("id", Id, nullable=False),
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("budget", sa.Float(), nullable=False),
        sa.Column("created", Time, nullable=False),
        sa.Column("started", Time, nullable=True),
        sa.Column("finished", Time, nullable=True),
        sa.Column("schedules_run", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE",
                                name="fk_jobs_campaign_id_campaigns"),
    )
    op.create_index("ix_jobs_campaign_id", "jobs", ["campaign_id"])

    # Buckets and samples point at each other. SQLite accepts a key to a table that does not
    # exist yet (and cannot add one later without rebuilding the table); Postgres is the reverse.
    best_fk = []
    if dialect == "sqlite":
        best_fk = [sa.ForeignKeyConstraint(["best_sample_id"], ["crash_samples.id"], ondelete="SET NULL",
                                           name="fk_crash_buckets_best_sample_id_crash_samples")]
    op.create_table(
        "crash_buckets",
        sa.Column("id", Id, nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.Column("protocol", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(128), nullable=False),
        sa.Column("oracle", sa.String(64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", Time, nullable=False),
        sa.Column("last_seen", Time, nullable=False),
        sa.Column("best_sample_id", Id, nullable=True),
        sa.Column("minimized", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_crash_buckets"),
        sa.UniqueConstraint("signature", name="uq_crash_buckets_signature"),
        sa.CheckConstraint("status IN ('new', 'fixed', 'duplicate', 'invalid')",
                           name="ck_crash_buckets_status"),
        *best_fk,
    )
    op.create_index("ix_crash_buckets_protocol_variant", "crash_buckets", ["protocol", "variant"])
    op.create_index("ix_crash_buckets_last_seen", "crash_buckets", ["last_seen"])

    op.create_table(
        "crash_samples",
        sa.Column("id", Id, nullable=False),
        sa.Column("bucket_id", Id, nullable=False),
        sa.Column("schedule", sa.LargeBinary(), nullable=False),
        sa.Column("schedule_len", sa.Integer(), nullable=False),
        sa.Column("schedule_format", sa.Integer(), nullable=False),
        sa.Column("engine_version", sa.String(32), nullable=False),
        sa.Column("protocol", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(128), nullable=False),
        sa.Column("config", Json, nullable=False),
        sa.Column("trace_sha256", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("consequence", Json, nullable=False),
        sa.Column("minimized", sa.Boolean(), nullable=False),
        sa.Column("campaign_id", Id, nullable=True),
        sa.Column("job_id", Id, nullable=True),
        sa.Column("created", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_crash_samples"),
        sa.ForeignKeyConstraint(["bucket_id"], ["crash_buckets.id"], ondelete="CASCADE",
                                name="fk_crash_samples_bucket_id_crash_buckets"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="SET NULL",
                                name="fk_crash_samples_campaign_id_campaigns"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL",
                                name="fk_crash_samples_job_id_jobs"),
    )
    op.create_index("ix_crash_samples_bucket_id", "crash_samples", ["bucket_id"])
    op.create_index("ix_crash_samples_created", "crash_samples", ["created"])
    if dialect != "sqlite":
        op.create_foreign_key("fk_crash_buckets_best_sample_id_crash_samples", "crash_buckets",
                              "crash_samples", ["best_sample_id"], ["id"], ondelete="SET NULL")

    op.create_table(
        "corpus_entries",
        sa.Column("id", Id, nullable=False),
        sa.Column("protocol", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(128), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created", Time, nullable=False),
        sa.Column("campaign_id", Id, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_corpus_entries"),
        sa.UniqueConstraint("protocol", "variant", "sha1", name="uq_corpus_entries_protocol_variant_sha1"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="SET NULL",
                                name="fk_corpus_entries_campaign_id_campaigns"),
    )

    op.create_table(
        "regression_runs",
        sa.Column("id", Id, nullable=False),
        sa.Column("started", Time, nullable=False),
        sa.Column("finished", Time, nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("regressions", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("details", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_regression_runs"),
    )

    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.get(dialect, sql.get('*'))}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    if _dialect() != "sqlite":
        op.drop_constraint("fk_crash_buckets_best_sample_id_crash_samples", "crash_buckets",
                           type_="foreignkey")
    # Samples before buckets: on SQLite dropping a table deletes its rows first, and the
    # bucket -> best sample key then only nulls best_sample_id.
    for table in ("regression_runs", "corpus_entries", "crash_samples", "crash_buckets", "jobs", "campaigns"):
        op.drop_table(table)
