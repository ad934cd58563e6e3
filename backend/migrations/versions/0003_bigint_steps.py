"""64-bit steps on alerts, artifacts and run events (the API accepts any step below 2^63, as metric points do)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("alert", "artifact", "runevent")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's INTEGER is 64-bit already
    for table in TABLES:
        op.alter_column(
            table, "step", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(
            table, "step", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True
        )
