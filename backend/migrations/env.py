"""Alembic environment: runs on the connection `backend.core.db.migrate` hands over (or AIME_DATABASE_URL)."""

from alembic import context
from sqlmodel import SQLModel

import backend.models  # noqa: F401 - registers the tables on SQLModel.metadata

target_metadata = SQLModel.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # `alembic -c backend/alembic.ini upgrade head` from a shell
        from backend.core.db import get_engine

        with get_engine().begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
