"""Run the packaged Alembic migrations programmatically: no alembic.ini on the user's cwd needed.

The version table is ``warehouse_alembic_version`` rather than Alembic's default, because users may
point the warehouse at the same database as Dagster's own storage, which keeps its own
``alembic_version``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "warehouse_alembic_version"
# Arbitrary constant: several processes starting at once must not migrate concurrently.
_PG_LOCK_KEY = 0x6F72_6473_796E_63  # "ordsync"
_MYSQL_LOCK_NAME = "ordersync_warehouse_migrate"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    # Imported here: every process that opens a warehouse imports this module, few of them migrate
    # (loader processes never do), and alembic costs ~10 MB of memory and 0.15 s to import.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(engine: sa.Engine) -> None:
    from alembic import command

    with engine.connect() as conn:
        _lock(conn)
        try:
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
        finally:
            _unlock(conn)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
    elif conn.dialect.name in ("mysql", "mariadb"):
        conn.execute(sa.text("SELECT GET_LOCK(:n, 300)"), {"n": _MYSQL_LOCK_NAME})
    conn.commit()


def _unlock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
    elif conn.dialect.name in ("mysql", "mariadb"):
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": _MYSQL_LOCK_NAME})
    conn.commit()
