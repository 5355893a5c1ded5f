"""failures.is_transient / describe as a table over every kind of failure a sync can meet, through
wrappers (cause chains, Dagster's step errors) and without secrets or SQL parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from ordersync_pipeline.config import ConfigError, OrdersyncConfig, ShopConfig
from ordersync_pipeline.failures import cause_of, describe, is_transient
from ordersync_pipeline.sync.lake import PartitionCorrupt, PartitionMissing
from ordersync_pipeline.top.errors import (
    BusinessError,
    GatewayURLError,
    InvalidArgumentsError,
    InvalidSessionError,
    InvalidSignatureError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from ordersync_pipeline.warehouse.connect import WarehouseMisconfigured, WarehouseUnreachable

M = "taobao.trades.sold.increment.get"
SECRET = "Qx8Rt3Lp0Wz5"


def _raised(exc: BaseException) -> BaseException:
    """``exc`` as it is after being raised (with a traceback)."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


def _config_validation_error() -> ValidationError:
    try:
        OrdersyncConfig.model_validate({"gateway": "http://h/x", "app_key": "1", "app_secert": SECRET,
                                        "shops": [{"shop_id": "s", "seller_nick": "n"}]})
    except ValidationError as exc:
        return exc
    raise AssertionError("the configuration was accepted")


def _missing_session_env() -> ConfigError:
    try:
        ShopConfig(shop_id="shop-1", seller_nick="n", session_env="OS_TEST_UNSET").session_key(environ={})
    except ConfigError as exc:
        return exc
    raise AssertionError("the session resolved")


def _unknown_shop() -> ConfigError:
    cfg = OrdersyncConfig.model_validate({"gateway": "http://h/x", "app_key": "1",
                                          "shops": [{"shop_id": "shop-1", "seller_nick": "n"}]})
    try:
        cfg.shop("shop-9")
    except ConfigError as exc:
        return exc
    raise AssertionError("shop-9 was found")


def _db_error(cls: type[sa.exc.DBAPIError], orig: Exception) -> sa.exc.DBAPIError:
    return cls("INSERT INTO trades (buyer_nick) VALUES (%(b)s)", {"b": "buyer-nick-4711"}, orig)


# (name, exception, transient?, text the description must contain)
TABLE: list[tuple[str, BaseException, bool, str]] = [
    ("TOP timeout", TransportError("ReadTimeout calling gw", method=M), True, "ReadTimeout calling gw"),
    ("TOP 5xx", TransportError("HTTP 502 from gw", method=M, status=502), True, "HTTP 502"),
    ("TOP 404", TransportError("HTTP 404 from gw", method=M, status=404), False, "HTTP 404"),
    ("TOP malformed body", MalformedResponseError("truncated", method=M), True, "truncated"),
    ("TOP ban", RateLimitedError("App Call Limited", method=M, code=7), True, "App Call Limited"),
    ("TOP isp fault", ServerError("e", method=M, code=15, sub_code="isp.unknown-error"), True, "isp.unknown"),
    ("TOP expired session", InvalidSessionError("Invalid session", method=M, code=27, shop_id="shop-1"), False,
     "re-authorise this shop shop-1"),
    ("TOP bad signature", InvalidSignatureError("Invalid signature", method=M, code=25), False, "code=25"),
    ("TOP bad arguments", InvalidArgumentsError("Invalid arguments:tid", method=M, code=41), False, "tid"),
    ("TOP business refusal", BusinessError("e", method=M, code=15, sub_code="isv.trade-not-exist"), False,
     "isv.trade-not-exist"),
    ("TOP gateway URL", GatewayURLError("gateway URL 'gw' cannot be requested", method=M), False, "'gw'"),
    ("unset session variable", _missing_session_env(), False, "OS_TEST_UNSET is not set"),
    ("unknown shop", _unknown_shop(), False, "unknown shop_id 'shop-9'"),
    ("configuration built in code", _config_validation_error(), False, "unknown key 'app_secert'"),
    ("warehouse down", WarehouseUnreachable("PostgreSQL warehouse h:5432/db: Connection refused"), True,
     "Connection refused"),
    ("warehouse misconfigured", WarehouseMisconfigured("MariaDB/MySQL warehouse: Access denied"), False,
     "Access denied"),
    ("database connection lost", _db_error(sa.exc.OperationalError, pymysql.err.OperationalError(
        2013, "Lost connection to server during query")), True, "Lost connection to server during query"),
    ("database deadlock", _db_error(sa.exc.OperationalError, psycopg.errors.DeadlockDetected("deadlock")), True,
     "deadlock"),
    ("database refuses the data", _db_error(sa.exc.DataError, psycopg.errors.CharacterNotInRepertoire(
        "invalid byte sequence for encoding UTF8: 0x00")), False, "invalid byte sequence"),
    ("database rights", _db_error(sa.exc.ProgrammingError, psycopg.errors.InsufficientPrivilege(
        "permission denied for table trades")), False, "permission denied"),
    ("lake partition missing", PartitionMissing("no published partition increment/shop-1/k"), False,
     "no published partition"),
    ("lake partition corrupt", PartitionCorrupt("sha256 mismatch"), False, "sha256 mismatch"),
    ("lake directory not writable", PermissionError(13, "Permission denied", "/lake"), False, "Permission denied"),
    ("unknown: a bug or a hiccup", RuntimeError("something odd"), True, "RuntimeError: something odd"),
    ("interrupt", KeyboardInterrupt(), False, "KeyboardInterrupt"),
    ("wrapper around a permanent error", _wrapped(_unknown_shop(), RuntimeError("step failed")), False,
     "unknown shop_id 'shop-9'"),
    ("wrapper around a transient error", _wrapped(TransportError("ConnectionError", method=M),
                                                  RuntimeError("Exceeded max_retries of 2")), True,
     "ConnectionError"),
]


@pytest.mark.parametrize(("exc", "transient", "text"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_is_transient_and_describe(exc: BaseException, transient: bool, text: str) -> None:
    assert is_transient(exc) is transient
    line = describe(exc)
    assert text in line and "\n" not in line
    assert SECRET not in line and "buyer-nick-4711" not in line


def test_the_cause_not_the_wrapper_is_described() -> None:
    exc = _wrapped(InvalidSessionError("Invalid session", method=M, code=27, shop_id="shop-2"),
                   RuntimeError("Exceeded max_retries of 2"))
    assert "Exceeded" not in describe(exc) and "re-authorise this shop shop-2" in describe(exc)


def test_an_implicit_context_counts_and_a_suppressed_one_does_not() -> None:
    try:
        try:
            raise WarehouseMisconfigured("no such database")
        except WarehouseMisconfigured:
            raise RuntimeError("while handling")  # an implicit context, on purpose
    except RuntimeError as exc:
        assert not is_transient(exc) and describe(exc) == "no such database"
    try:
        try:
            raise WarehouseMisconfigured("no such database")
        except WarehouseMisconfigured:
            raise RuntimeError("replaced") from None
    except RuntimeError as exc:
        assert is_transient(exc) and describe(exc) == "RuntimeError: replaced"


def test_a_cause_cycle_ends() -> None:
    # Dagster's materialize re-raises the user's error whose context is the step error caused by it.
    inner, outer = ConfigError("bad"), RuntimeError("step")
    outer.__cause__ = inner
    inner.__context__ = outer
    assert cause_of(outer) is inner and not is_transient(outer)


def test_through_a_real_dagster_step() -> None:
    import dagster as dg

    @dg.asset
    def needs_a_session() -> None:
        raise InvalidSessionError("Invalid session", method=M, code=27, shop_id="shop-3")

    with pytest.raises(Exception) as info:
        dg.materialize([needs_a_session])
    assert not is_transient(info.value)
    assert describe(info.value).endswith("re-authorise this shop shop-3")


def test_describe_is_one_short_line_without_database_passwords() -> None:
    exc = _raised(RuntimeError("could not open postgresql://etl:Hunter2pw@db:5432/wh\n  retry later " + "x" * 900))
    line = describe(exc)
    assert "Hunter2pw" not in line and "postgresql://etl:***@db:5432/wh retry later" in line
    assert len(line) <= 500 and line.endswith("...")


def test_failures_is_core_and_does_not_load_dagster() -> None:
    code = "import sys, ordersync_pipeline.failures; assert 'dagster' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
