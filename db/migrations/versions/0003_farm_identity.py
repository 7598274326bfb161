"""The database's farm identity: a random token that every farm job carries, so a worker
pointed at another database refuses the job instead of writing into the wrong place.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "farm_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_farm_identity"),
        sa.CheckConstraint("id = 1", name="ck_farm_identity_one_row"),
    )


def downgrade() -> None:
    op.drop_table("farm_identity")
