"""Warehouse URLs, engines, and the one call that opens and checks a warehouse.

Users write ``postgresql://``, ``mysql://``/``mariadb://`` or ``sqlite:///path``; ordersync picks the
drivers (psycopg 3, PyMySQL, sqlite3) itself.

```
WarehouseError                 one line: backend, host:port/database or file, what to do; no password
 ├── WarehouseUnreachable      refused, timed out, gone away, restarting, busy: may heal by waiting
 └── WarehouseMisconfigured    URL/scheme, credentials, missing database, rights, SQLite path: will not
                               heal until the configuration is fixed (also a ValueError)
```

``Warehouse(url)`` stays cheap (no connection); ``open_warehouse(url)`` connects once, runs the
migrations and turns driver errors into these. ``is_transient_db_error`` answers the same question for
a database error met later, in the middle of a run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

if TYPE_CHECKING:
    # Alembic (~10 MB and 0.15 s of imports) is needed only to migrate; loader processes use this
    # module without ever migrating, so it is imported where a migration runs.
    from alembic.util.exc import CommandError

    from ordersync_pipeline.warehouse.store import Warehouse

__all__ = [
    "WarehouseError", "WarehouseUnreachable", "WarehouseMisconfigured", "normalize_url",
    "create_warehouse_engine", "open_warehouse", "warehouse_error", "describe_db_error",
    "is_transient_db_error",
    "SQLITE_FILE_MODE",
]

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}
_SUPPORTED = {"postgresql+psycopg", "mysql+pymysql", "sqlite", "sqlite+pysqlite"}
# A warehouse file holds buyer identifiers: readable by its owner only (SQLite gives its -wal and
# -shm files the database file's mode).
SQLITE_FILE_MODE = 0o600
# libpq waits for the kernel's TCP timeout (about two minutes) by default; PyMySQL's default is 10 s.
PG_CONNECT_TIMEOUT_S = 15
_URL_HINT = "the warehouse URL (ORDERSYNC_WAREHOUSE_URL)"


class WarehouseError(Exception):
    """The warehouse cannot be used. ``transient``: may waiting (and retrying) help?"""

    transient: bool = False


class WarehouseUnreachable(WarehouseError):
    """The server did not answer or went away: connection refused, timeout, restart, too busy."""

    transient = True


class WarehouseMisconfigured(WarehouseError, ValueError):
    """Wrong URL or scheme, credentials, database name, rights or SQLite path: fix the configuration."""


def normalize_url(url: str | URL) -> URL:
    """Map a user's warehouse URL onto the driver ordersync loads with; refuse other drivers."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        # SQLAlchemy's own text may quote the whole URL, password included.
        raise WarehouseMisconfigured(
            f"warehouse URL {_mask_password(str(url))!r} cannot be parsed ({_first_line(exc)}): write it "
            "as postgresql://user:password@host:port/database, mysql://..., mariadb://... or sqlite:///path"
        ) from None
    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if drivername not in _SUPPORTED:
        raise WarehouseMisconfigured(
            f"unsupported warehouse URL scheme {parsed.drivername!r} in "
            f"{parsed.render_as_string(hide_password=True)!r}: use postgresql://, mysql://, "
            "mariadb:// or sqlite:///path"
        )
    parsed = parsed.set(drivername=drivername)
    if drivername == "mysql+pymysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def create_warehouse_engine(url: str | URL) -> sa.Engine:
    """An engine for ``url``; nothing connects until the engine is first used."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if parsed.get_backend_name() == "sqlite":
        # The embedded default is shared by several Dagster processes: wait for the write lock
        # instead of failing at once.
        kwargs = {"connect_args": {"timeout": 30}}
    engine = sa.create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        path = _sqlite_path(parsed)
        if path is not None:
            sa.event.listen(engine, "do_connect", lambda *_: _create_private_file(path))
    return engine


def open_warehouse(url: str | URL, *, store_receiver_pii: bool = False) -> Warehouse:
    """The warehouse at ``url``, connected once and migrated to the newest schema.

    The call every driver (CLI command, Dagster resource) makes before doing work, so that a
    warehouse that is down or misconfigured fails first, with one line naming the backend, where it
    is and what to do, instead of a traceback from deep inside a run. Raises ``WarehouseError``.
    """
    # store.py builds its engine with this module, so it is imported when needed, not at the top.
    from alembic.util.exc import CommandError

    from ordersync_pipeline.warehouse.store import Warehouse

    warehouse = Warehouse(url, store_receiver_pii=store_receiver_pii)
    try:
        warehouse.migrate()
    except (sa.exc.DBAPIError, CommandError) as exc:
        warehouse.dispose()
        raise warehouse_error(exc, warehouse.engine.url) from None
    return warehouse


def warehouse_error(exc: sa.exc.DBAPIError | CommandError, url: URL) -> WarehouseError:
    """The ``WarehouseError`` for a driver (or migration) error met while using ``url``."""
    where = _describe_target(url)
    if not isinstance(exc, sa.exc.DBAPIError):  # a CommandError (alembic is not imported to check)
        # e.g. the schema is at a revision this version of ordersync does not know (a newer one).
        return WarehouseMisconfigured(f"{where}: schema migration failed: {_first_line(exc)}; is this "
                                      "warehouse used by a newer ordersync? Upgrade ordersync")
    verdict = _classify(exc.orig)
    detail = _detail(exc.orig)
    if url.password:
        detail = detail.replace(str(url.password), "***")
    if verdict.kind == "sqlite_path":
        detail = _sqlite_path_problem(url) or detail
    message = f"{where}: {detail}; {verdict.hint}"
    return WarehouseUnreachable(message) if verdict.transient else WarehouseMisconfigured(message)


def describe_db_error(exc: sa.exc.DBAPIError) -> str:
    """The driver's message on one line, without the statement and parameters SQLAlchemy adds."""
    return _detail(exc.orig)


def is_transient_db_error(exc: sa.exc.DBAPIError) -> bool:
    """Can this database error heal by waiting (lost connection, deadlock, busy), or will a retry
    meet it again (bad data, missing rights, wrong credentials)? Unknown errors count as transient."""
    return exc.connection_invalidated or _classify(exc.orig).transient


# -- classification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    transient: bool
    hint: str
    kind: str = ""


_UNREACHABLE = _Verdict(True, f"is the server running and reachable, and are host and port in {_URL_HINT} "
                              "right? Retrying later may help")
_BUSY = _Verdict(True, "the database is busy or restarting; retrying later should help")
_AUTH = _Verdict(False, f"check the user name and password in {_URL_HINT}")
_NO_DATABASE = _Verdict(False, f"create the database, or fix its name in {_URL_HINT}")
_RIGHTS = _Verdict(False, "grant this database user the right to create and change tables in that database")
_BAD_URL = _Verdict(False, f"fix {_URL_HINT}")
_BAD_DATA = _Verdict(False, "the data was refused; retrying the same data cannot help")
_SQLITE_PATH = _Verdict(False, "make the directory exist and be writable by this user, or point "
                               "ORDERSYNC_WAREHOUSE_URL (or ORDERSYNC_HOME) elsewhere", kind="sqlite_path")

# PostgreSQL SQLSTATE classes and codes (errors raised once connected carry one).
_PG_SQLSTATE = [
    ("08", _UNREACHABLE), ("57P", _BUSY), ("53", _BUSY), ("40001", _BUSY), ("40P01", _BUSY),
    ("55P03", _BUSY), ("28", _AUTH), ("3D000", _NO_DATABASE), ("42501", _RIGHTS), ("22", _BAD_DATA),
    ("23", _BAD_DATA),
]
# Connection failures carry only libpq's text (English unless the server's lc_messages say otherwise;
# anything unrecognised counts as unreachable).
_PG_TEXT = [
    (re.compile(r'password authentication failed|no pg_hba\.conf entry|authentication|role ".*" does not'),
     _AUTH),
    (re.compile(r'database ".*" does not exist'), _NO_DATABASE),
    (re.compile(r"permission denied"), _RIGHTS),
    (re.compile(r"invalid (port|connection option|integer value|sslmode)"), _BAD_URL),
    (re.compile(r"starting up|shutting down|recovery mode|too many"), _BUSY),
]
_MYSQL_CODES: dict[int, _Verdict] = {
    1044: _RIGHTS, 1045: _AUTH, 1049: _NO_DATABASE, 1142: _RIGHTS, 1143: _RIGHTS, 1227: _RIGHTS,
    1251: _AUTH, 1698: _AUTH, 2059: _AUTH, 1040: _BUSY, 1053: _BUSY, 1205: _BUSY, 1213: _BUSY,
    1264: _BAD_DATA, 1292: _BAD_DATA, 1366: _BAD_DATA, 1406: _BAD_DATA, 1062: _BAD_DATA,
}
_SQLITE_NAMES: dict[str, _Verdict] = {
    "SQLITE_CANTOPEN": _SQLITE_PATH, "SQLITE_READONLY": _SQLITE_PATH, "SQLITE_PERM": _SQLITE_PATH,
    "SQLITE_NOTADB": _Verdict(False, f"the file is not an SQLite database: fix {_URL_HINT}"),
    "SQLITE_CORRUPT": _Verdict(False, "the SQLite file is damaged: restore it from a backup"),
    "SQLITE_BUSY": _BUSY, "SQLITE_LOCKED": _BUSY, "SQLITE_CONSTRAINT": _BAD_DATA,
    "SQLITE_TOOBIG": _BAD_DATA, "SQLITE_MISMATCH": _BAD_DATA,
}


def _classify(orig: BaseException | None) -> _Verdict:
    sqlstate = getattr(orig, "sqlstate", None)
    module = type(orig).__module__
    if module.startswith("psycopg"):
        if isinstance(sqlstate, str) and sqlstate:
            return next((v for prefix, v in _PG_SQLSTATE if sqlstate.startswith(prefix)), _UNREACHABLE)
        text = _detail(orig)
        return next((v for pattern, v in _PG_TEXT if pattern.search(text)), _UNREACHABLE)
    if module.startswith("pymysql"):
        args: tuple[object, ...] = getattr(orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        return _MYSQL_CODES.get(code, _UNREACHABLE) if code is not None else _UNREACHABLE
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):  # extended codes add a suffix: SQLITE_CONSTRAINT_PRIMARYKEY
        return next((v for base, v in _SQLITE_NAMES.items() if name == base or name.startswith(base + "_")),
                    _UNREACHABLE)
    return _UNREACHABLE  # unknown: waiting is the cheap guess, and a retry bounds the cost


def _detail(orig: BaseException | None) -> str:
    """The driver's message, first line, without libpq's 'connection to server ... failed:' preamble."""
    if orig is None:
        return "unknown database error"
    args = orig.args
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        return f"{args[1]} (error {args[0]})"
    text = _first_line(orig)
    return text.rsplit(" failed: ", 1)[-1].replace("FATAL:  ", "").strip() or type(orig).__name__


def _describe_target(url: URL) -> str:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"SQLite warehouse {url.database or ':memory:'}"
    label = {"postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL"}.get(backend, backend)
    port = url.port or {"postgresql": 5432, "mysql": 3306}.get(backend)
    user = f"{url.username}@" if url.username else ""
    return f"{label} warehouse {user}{url.host or 'localhost'}:{port}/{url.database or ''}"


# -- SQLite files --------------------------------------------------------------------------------


def _sqlite_path(url: URL) -> Path | None:
    """The database file of a plain SQLite URL (None for in-memory and URI-mode databases)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return None
    return Path(database)


def _create_private_file(path: Path) -> None:
    """Create a missing database file readable by its owner only, before SQLite creates it 0o644."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SQLITE_FILE_MODE))
    except OSError:
        pass  # exists already, or SQLite's own open will fail and say why


def _sqlite_path_problem(url: URL) -> str | None:
    """Why SQLite could not open its file, in the operating system's words."""
    path = _sqlite_path(url)
    if path is None:
        return None
    if path.is_dir():
        return f"{path} is a directory"
    if not path.parent.exists():
        return f"directory {path.parent} does not exist"
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, SQLITE_FILE_MODE))
    except OSError as exc:
        return f"cannot create or open the file: {exc.strerror}"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"directory {path.parent} is not writable by this user (SQLite keeps its -wal file there)"
    return None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (analysts, the UI) read while a sync writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# -- text ----------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _mask_password(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` in text that did not parse as a URL."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", text)
