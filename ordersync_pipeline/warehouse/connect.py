"""Warehouse URLs and engines: users write ``postgresql://``, ``mysql://``/``mariadb://`` or
``sqlite:///path``; ordersync picks the drivers (psycopg 3, PyMySQL, sqlite3) itself."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}
_SUPPORTED = {"postgresql+psycopg", "mysql+pymysql", "sqlite", "sqlite+pysqlite"}


def normalize_url(url: str | URL) -> URL:
    """Map a user's warehouse URL onto the driver ordersync loads with; refuse other drivers."""
    parsed = sa.make_url(url)
    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if drivername not in _SUPPORTED:
        raise ValueError(
            f"unsupported warehouse URL scheme {parsed.drivername!r}: use postgresql://, mysql://, "
            "mariadb:// or sqlite:///path"
        )
    parsed = parsed.set(drivername=drivername)
    if drivername == "mysql+pymysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def create_warehouse_engine(url: str | URL) -> sa.Engine:
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        # The embedded default is shared by several Dagster processes: wait for the write lock
        # instead of failing at once.
        kwargs = {"connect_args": {"timeout": 30}}
    engine = sa.create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (analysts, the UI) read while a sync writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
