"""outbox table; idempotency keys on jobs and files

Revision ID: 0002_outbox_idempotency
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_outbox_idempotency"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_job_id"), ["job_id"], unique=False)
    for table in ("jobs", "files"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
            batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
            batch_op.create_index(f"uq_{table}_project_idempotency_key", ["project_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    for table in ("files", "jobs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"uq_{table}_project_idempotency_key")
            batch_op.drop_column("request_hash")
            batch_op.drop_column("idempotency_key")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_job_id"))
    op.drop_table("outbox")
