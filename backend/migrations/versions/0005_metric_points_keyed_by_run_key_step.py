"""metric points keyed by (run, key, step): the surrogate id and its index go, the unique (run, key, step) index
becomes the primary key (on SQLite a WITHOUT ROWID table, so the points are stored in that order, one b-tree);
each ingested point then maintains one index fewer

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:50:00
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NONFINITE = "value IS NULL OR abs(value) >= 1e308"  # backend.metrics.NONFINITE_SQL, the very same text
COLUMNS = "run_id, key, step, value, wall_time"
_SQLITE_TABLE = (
    "CREATE TABLE {name} ({id}run_id INTEGER NOT NULL, key VARCHAR NOT NULL, step BIGINT NOT NULL, value FLOAT, "
    "wall_time FLOAT NOT NULL, FOREIGN KEY(run_id) REFERENCES run (id) ON DELETE CASCADE, {keys}){suffix}"
)


def _sqlite_rebuild(id_column: bool) -> None:
    """SQLite cannot change a primary key in place: copy into the new shape, swap, index again."""
    keys = (
        "PRIMARY KEY (id), CONSTRAINT uq_metric_run_key_step UNIQUE (run_id, key, step)"
        if id_column
        else "PRIMARY KEY (run_id, key, step)"
    )
    op.execute(
        _SQLITE_TABLE.format(
            name="metricpoint_new",
            id="id INTEGER NOT NULL, " if id_column else "",
            keys=keys,
            suffix="" if id_column else " WITHOUT ROWID",
        )
    )
    op.execute(
        f"INSERT INTO metricpoint_new ({COLUMNS}) SELECT {COLUMNS} FROM metricpoint ORDER BY {COLUMNS}"
    )
    op.execute("DROP TABLE metricpoint")  # and its indexes
    op.execute("ALTER TABLE metricpoint_new RENAME TO metricpoint")
    op.execute(f"CREATE INDEX ix_metric_nonfinite ON metricpoint (run_id, key, step) WHERE {NONFINITE}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild(id_column=False)
        return
    op.execute("ALTER TABLE metricpoint DROP CONSTRAINT metricpoint_pkey")
    op.execute("ALTER TABLE metricpoint DROP COLUMN id")  # its sequence goes with it
    op.execute("ALTER TABLE metricpoint DROP CONSTRAINT uq_metric_run_key_step")
    op.execute("ALTER TABLE metricpoint ADD CONSTRAINT metricpoint_pkey PRIMARY KEY (run_id, key, step)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild(id_column=True)
        return
    op.execute("ALTER TABLE metricpoint DROP CONSTRAINT metricpoint_pkey")
    op.execute("ALTER TABLE metricpoint ADD COLUMN id SERIAL PRIMARY KEY")
    op.execute("ALTER TABLE metricpoint ADD CONSTRAINT uq_metric_run_key_step UNIQUE (run_id, key, step)")
