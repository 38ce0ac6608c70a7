"""Alembic environment: runs migrations on the connection that axisor.db.migrate passes in.

Migrations run only through axisor.db.migrate, which places an open connection in
``config.attributes["connection"]``, so the PostgreSQL search_path of the URL applies.
"""

from __future__ import annotations

from alembic import context

from axisor.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with axisor.db.migrate.upgrade(Database(url)); "
        "the alembic command line is not configured for this project"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most column properties, so later migrations copy the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
