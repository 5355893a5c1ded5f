"""open_warehouse against real PostgreSQL, MariaDB and SQLite: broken warehouses fail with one
password-free line saying what to do, split into "may heal by waiting" and "fix the configuration";
working ones are migrated; SQLite files are private; runtime database errors are classified."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.connect import (
    WarehouseError,
    WarehouseMisconfigured,
    WarehouseUnreachable,
    is_transient_db_error,
    normalize_url,
    open_warehouse,
)
from ordersync_pipeline.warehouse.migrator import current_revision

PASSWORD = "Pw7kQ2zX9"


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores mode bits; sysfs refuses it)."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


# (name, URL builder, expected class, text the message must contain)
BROKEN: list[tuple[str, Callable[[Path], str], type[WarehouseError], list[str]]] = [
    ("postgres down", lambda _: f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/wh", WarehouseUnreachable,
     ["PostgreSQL warehouse postgres@127.0.0.1:1/wh", "Connection refused", "is the server running"]),
    ("postgres bad port", lambda _: "postgresql://postgres@127.0.0.1:99999/wh", WarehouseMisconfigured,
     ["PostgreSQL warehouse postgres@127.0.0.1:99999/wh", "invalid port", "fix the warehouse URL"]),
    ("postgres port not a number", lambda _: f"postgresql://postgres:{PASSWORD}@127.0.0.1:54x2/wh",
     WarehouseMisconfigured, ["postgresql://postgres:***@127.0.0.1:54x2/wh", "cannot be parsed"]),
    ("postgres no such database", lambda _: "postgresql://postgres@127.0.0.1:5432/ordersync_no_such_db",
     WarehouseMisconfigured, ['database "ordersync_no_such_db" does not exist', "create the database"]),
    ("postgres no such user", lambda _: f"postgresql://nobody:{PASSWORD}@127.0.0.1:5432/postgres",
     WarehouseMisconfigured, ["nobody@127.0.0.1:5432/postgres", "check the user name and password"]),
    ("mariadb down", lambda _: "mysql://root@127.0.0.1:1/wh", WarehouseUnreachable,
     ["MariaDB/MySQL warehouse root@127.0.0.1:1/wh", "Can't connect", "is the server running"]),
    ("mariadb wrong credentials", lambda _: f"mysql://nobody:{PASSWORD}@127.0.0.1:3306/wh",
     WarehouseMisconfigured, ["MariaDB/MySQL warehouse nobody@127.0.0.1:3306/wh", "Access denied",
                              "check the user name and password"]),
    ("mariadb no such database", lambda _: "mariadb://root@127.0.0.1:3306/ordersync_no_such_db",
     WarehouseMisconfigured, ["Unknown database 'ordersync_no_such_db'", "create the database"]),
    ("unknown scheme", lambda _: f"oracle://scott:{PASSWORD}@db/wh", WarehouseMisconfigured,
     ["unsupported warehouse URL scheme 'oracle'", "oracle://scott:***@db/wh", "use postgresql://"]),
    ("sqlite directory missing", lambda tmp: f"sqlite:///{tmp / 'nope' / 'warehouse.db'}", WarehouseMisconfigured,
     ["does not exist", "make the directory exist and be writable"]),
    ("sqlite directory is a file", lambda tmp: f"sqlite:///{tmp / 'file'}/warehouse.db", WarehouseMisconfigured,
     ["cannot create or open the file: Not a directory"]),
    ("sqlite directory unwritable", lambda tmp: f"sqlite:///{unwritable_dir(tmp) / 'warehouse.db'}",
     WarehouseMisconfigured, ["SQLite warehouse", "Permission denied"]),
]


@pytest.mark.parametrize(("build", "cls", "needles"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_a_broken_warehouse_fails_with_one_clear_line(
        tmp_path: Path, build: Callable[[Path], str], cls: type[WarehouseError], needles: list[str]) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(WarehouseError) as info:
        open_warehouse(build(tmp_path))
    err = info.value
    message = str(err)
    assert type(err) is cls, message
    assert err.transient is (cls is WarehouseUnreachable)
    assert [n for n in needles if n not in message] == [], message
    assert "\n" not in message and PASSWORD not in message and PASSWORD not in repr(err)
    # The driver's exception (and its traceback) is not chained on.
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_a_misconfigured_warehouse_is_still_a_value_error() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        normalize_url("oracle://scott@h/db")


def test_a_working_warehouse_is_opened_and_migrated(any_warehouse_url: str) -> None:
    warehouse = open_warehouse(any_warehouse_url)
    try:
        assert current_revision(warehouse.engine) is not None
        assert warehouse.trade_count() == 0
    finally:
        warehouse.dispose()


def test_constructing_a_warehouse_does_not_connect() -> None:
    Warehouse("postgresql://postgres@127.0.0.1:1/wh").dispose()  # the check is open_warehouse's


def test_a_new_sqlite_warehouse_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.db"
    old = os.umask(0o022)
    try:
        warehouse = open_warehouse(f"sqlite:///{path}")
        warehouse.upsert_trades([])  # nothing to write; the migration already wrote through the WAL
        files = sorted(p.name for p in tmp_path.iterdir())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        warehouse.dispose()
    finally:
        os.umask(old)
    assert "warehouse.db" in files and "warehouse.db-wal" in files, files
    assert modes == {name: 0o600 for name in files}


def test_runtime_errors_split_into_transient_and_permanent(pg_url: str) -> None:
    engine = sa.create_engine(normalize_url(pg_url))
    try:
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as bad_data:
            conn.execute(sa.text("SELECT 1 / 0"))
        assert not is_transient_db_error(bad_data.value)
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as lost:
            conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert is_transient_db_error(lost.value)
    finally:
        engine.dispose()


def test_sqlite_runtime_errors(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError) as duplicate:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert not is_transient_db_error(duplicate.value)
    finally:
        engine.dispose()
