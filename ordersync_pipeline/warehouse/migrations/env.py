"""Alembic environment for the warehouse. Works from the installed package: the caller (see
``warehouse.migrator``) hands over a connection, or ``sqlalchemy.url`` / ORDERSYNC_WAREHOUSE_URL
names the database when the ``alembic`` command is run by hand."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from ordersync_pipeline.config import warehouse_url
from ordersync_pipeline.warehouse.connect import create_warehouse_engine
from ordersync_pipeline.warehouse.migrator import VERSION_TABLE
from ordersync_pipeline.warehouse.tables import metadata

config = context.config


def _configure_and_run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = create_warehouse_engine(config.get_main_option("sqlalchemy.url") or warehouse_url())
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
