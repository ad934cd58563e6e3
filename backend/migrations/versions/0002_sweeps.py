"""sweeps: the sweep table and the run's sweep, group, hold, early-stop and lineage columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:40:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("base", sa.JSON(), nullable=False),
        sa.Column("grid", sa.JSON(), nullable=False),
        sa.Column("random", sa.JSON(), nullable=False),
        sa.Column("sweep_seed", sa.Integer(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("metric", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("parallel", sa.Integer(), nullable=False),
        sa.Column("early_stop", sa.JSON(), nullable=False),
        sa.Column("configs", sa.JSON(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("promotion", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["parent_id"], ["sweep.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_status"), ["status"], unique=False)
    # Existing rows get the defaults (server_default) so the NOT NULL columns can be added to a filled table.
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sweep_config", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("group_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("stop_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("lineage", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.create_index(batch_op.f("ix_run_sweep_id"), ["sweep_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_run_group_id"), ["group_id"], unique=False)
        batch_op.create_foreign_key("fk_run_sweep_id", "sweep", ["sweep_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_constraint("fk_run_sweep_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_run_group_id"))
        batch_op.drop_index(batch_op.f("ix_run_sweep_id"))
        for name in ("lineage", "stop_reason", "held", "group_id", "sweep_config", "sweep_id"):
            batch_op.drop_column(name)
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_status"))
    op.drop_table("sweep")
