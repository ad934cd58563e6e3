"""metric tiles: per (run, key, 32-step tile) count, step range, finite min/max and latest wall time, kept at
ingest so a long metric's chart reads ~1/30 of its rows; a partial index on the NaN/Inf points

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 17:10:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TILE = 32  # steps per tile (backend.metrics.TILE)
NONFINITE = "value IS NULL OR abs(value) >= 1e308"  # backend.metrics.NONFINITE_SQL, the very same text


def upgrade() -> None:
    op.create_table(
        "metrictile",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("tile", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("step_min", sa.BigInteger(), nullable=False),
        sa.Column("step_max", sa.BigInteger(), nullable=False),
        sa.Column("vmin", sa.Float(precision=53), nullable=True),
        sa.Column("vmax", sa.Float(precision=53), nullable=True),
        sa.Column("wall_max", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "key", "tile"),
    )
    op.create_index(
        "ix_metric_nonfinite",
        "metricpoint",
        ["run_id", "key", "step"],
        sqlite_where=sa.text(NONFINITE),
        postgresql_where=sa.text(NONFINITE),
    )
    finite = "CASE WHEN abs(value) < 1e308 THEN value END"
    op.execute(
        "INSERT INTO metrictile (run_id, key, tile, n, step_min, step_max, vmin, vmax, wall_max) "
        f"SELECT run_id, key, step / {TILE}, count(*), min(step), max(step), min({finite}), max({finite}), "
        f"max(wall_time) FROM metricpoint GROUP BY run_id, key, step / {TILE}"
    )


def downgrade() -> None:
    op.drop_index("ix_metric_nonfinite", table_name="metricpoint")
    op.drop_table("metrictile")
