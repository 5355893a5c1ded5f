"""Shared fixtures: real databases on this machine, one fresh database per test that asks for one.

PostgreSQL (127.0.0.1:5432, trust auth) and MariaDB (127.0.0.1:3306, root, no password) are started by
.ci/run; ``ORDERSYNC_TEST_PG`` / ``ORDERSYNC_TEST_MYSQL`` point elsewhere when needed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

if TYPE_CHECKING:
    from ordersync_pipeline.warehouse import Warehouse

PG_ADMIN_URL = os.environ.get("ORDERSYNC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("ORDERSYNC_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/")


def _fresh_database(admin_url: str, quote: str) -> Iterator[str]:
    name = f"ordersync_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database (dropped afterwards)."""
    yield from _fresh_database(PG_ADMIN_URL, '"')


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """URL of a fresh, empty MariaDB database (dropped afterwards)."""
    yield from _fresh_database(MYSQL_ADMIN_URL, "`")


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def any_warehouse_url(request: pytest.FixtureRequest) -> str:
    """The same test against each supported warehouse backend."""
    name = {"postgresql": "pg_url", "mariadb": "mysql_url", "sqlite": "sqlite_url"}[request.param]
    return request.getfixturevalue(name)


@pytest.fixture
def wh(any_warehouse_url: str) -> Iterator["Warehouse"]:
    """A migrated, empty warehouse on each backend in turn."""
    from ordersync_pipeline.warehouse import Warehouse

    warehouse = Warehouse(any_warehouse_url)
    warehouse.migrate()
    yield warehouse
    warehouse.dispose()
