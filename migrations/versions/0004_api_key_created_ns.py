"""api_keys.created_ns: creation time in nanoseconds, so keys made within one second list in order

Revision ID: 0004_api_key_created_ns
Revises: 0003_preflights
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_api_key_created_ns"
down_revision = "0003_preflights"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_ns", sa.BigInteger(), nullable=True))
    # Keys made before this column keep their second-resolution order.
    op.execute("UPDATE api_keys SET created_ns = created_at * 1000000000")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("created_ns", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("created_ns")
