"""preflights table: dry runs of job bodies

Revision ID: 0003_preflights
Revises: 0002_outbox_idempotency
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_preflights"
down_revision = "0002_outbox_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preflights",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("training_file", sa.String(length=40), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("prompts", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("preflights", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_preflights_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("preflights", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_preflights_project_id"))
    op.drop_table("preflights")
