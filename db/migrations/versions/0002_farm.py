"""Farm bookkeeping: per-job progress columns and the per-job hit ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Frozen like 0001: later changes go into new revisions.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)

_JOB_COLUMNS = (
    ("attempts", sa.Integer(), False, "0"),
    ("coverage", sa.BigInteger(), True, None),
    ("corpus", sa.Integer(), False, "0"),
    ("findings", sa.BigInteger(), False, "0"),
    ("new_buckets", sa.Integer(), False, "0"),
    ("heartbeat", Time, True, None),
)


def upgrade() -> None:
    # batch mode: SQLite cannot alter a table in place; a server default fills existing rows
    with op.batch_alter_table("jobs") as batch:
        for name, type_, nullable, default in _JOB_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=nullable, server_default=default))
    with op.batch_alter_table("jobs") as batch:
        for name, _type, _nullable, default in _JOB_COLUMNS:
            if default is not None:
                batch.alter_column(name, server_default=None)
    op.create_table(
        "job_findings",
        sa.Column("id", Id, nullable=False),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_findings"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE",
                                name="fk_job_findings_job_id_jobs"),
        sa.UniqueConstraint("job_id", "signature", name="uq_job_findings_job_id_signature"),
    )


def downgrade() -> None:
    op.drop_table("job_findings")
    with op.batch_alter_table("jobs") as batch:
        for name, *_ in reversed(_JOB_COLUMNS):
            batch.drop_column(name)
