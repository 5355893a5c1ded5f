"""Monotonic upserts on every backend: newer never loses to older, equal overwrites, re-runs change nothing."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import trade_details

GMT8 = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 11, 0, 0, 5, tzinfo=GMT8)
SYNCED = datetime(2026, 11, 12, tzinfo=timezone.utc)
FETCHED = datetime(2026, 11, 11, 23, 59, tzinfo=timezone.utc)  # when "the page" came back



def trade(tid: int, version: int, **extra: Any) -> dict[str, Any]:
    """Version ``version`` of a trade: modified, status and payment all move with the version."""
    row = {
        "tid": tid, "shop_id": "shop-1", "status": f"STATUS_{version}", "type": "fixed",
        "created": T0, "modified": T0 + timedelta(minutes=version), "payment": Decimal(version) + Decimal("0.99"),
        "buyer_nick": "买家", "num": version, "source": "increment", "synced_at": SYNCED, "fetched_at": FETCHED,
    }
    row.update(extra)
    return row


def order(oid: int, tid: int, version: int) -> dict[str, Any]:
    return {
        "oid": oid, "tid": tid, "shop_id": "shop-1", "num_iid": 600000000000 + oid, "sku_id": "5000123",
        "title": "羊毛大衣 冬季", "num": 1, "price": Decimal("199.00"), "payment": Decimal(version),
        "status": f"STATUS_{version}", "refund_status": "NO_REFUND",
        "modified": T0 + timedelta(minutes=version), "synced_at": SYNCED, "fetched_at": FETCHED,
    }


def test_insert_then_newer_version_replaces_the_row(wh: Warehouse) -> None:
    wh.upsert_trades([trade(1, 1)])
    wh.upsert_trades([trade(1, 2)])
    stored = wh.get_trade(1)
    assert stored is not None
    assert stored["status"] == "STATUS_2"
    assert stored["modified"] == T0 + timedelta(minutes=2)
    assert wh.trade_count() == 1


def test_older_version_leaves_the_row_unchanged(wh: Warehouse) -> None:
    wh.upsert_trades([trade(1, 5)])
    before = wh.get_trade(1)
    wh.upsert_trades([trade(1, 3, synced_at=SYNCED + timedelta(days=1), source="refetch")])
    assert wh.get_trade(1) == before


def test_equal_modified_overwrites_so_reruns_are_idempotent(wh: Warehouse) -> None:
    wh.upsert_trades([trade(1, 4, source="increment")])
    wh.upsert_trades([trade(1, 4, source="fullinfo", buyer_open_uid="AAH-xyz")])
    stored = wh.get_trade(1)
    assert stored is not None
    assert (stored["source"], stored["buyer_open_uid"]) == ("fullinfo", "AAH-xyz")


def test_newest_wins_within_one_batch_whatever_the_order(wh: Warehouse) -> None:
    result = wh.upsert_trades([trade(1, 2), trade(1, 7), trade(1, 3), trade(2, 1)])
    assert (result.sent, result.unique) == (4, 2)
    assert wh.get_trade(1)["status"] == "STATUS_7"  # type: ignore[index]
    assert wh.trade_count() == 2


def test_reupserting_the_same_rows_changes_nothing(wh: Warehouse) -> None:
    rows = [trade(tid, tid % 5) for tid in range(1, 201)]
    orders = [order(tid * 10 + k, tid, tid % 5) for tid in range(1, 201) for k in (1, 2)]
    wh.upsert_trades(rows)
    wh.upsert_trade_orders(orders)
    snapshot = [wh.get_trade(tid) for tid in range(1, 201)], [wh.orders_for(tid) for tid in range(1, 201)]
    wh.upsert_trades(rows)
    wh.upsert_trade_orders(orders)
    assert ([wh.get_trade(tid) for tid in range(1, 201)], [wh.orders_for(tid) for tid in range(1, 201)]) == snapshot
    assert wh.trade_count() == 200


def test_order_lines_follow_their_trades_modified(wh: Warehouse) -> None:
    wh.upsert_trade_orders([order(11, 1, 3), order(12, 1, 3)])
    wh.upsert_trade_orders([order(11, 1, 2)])  # a stale page
    wh.upsert_trade_orders([order(12, 1, 4)])
    lines = wh.orders_for(1)
    assert [(o["oid"], o["status"]) for o in lines] == [(11, "STATUS_3"), (12, "STATUS_4")]
    assert lines[0]["title"] == "羊毛大衣 冬季"


def test_trade_details_cache_is_keyed_by_tid_and_modified(wh: Warehouse) -> None:
    detail = {"tid": 9, "shop_id": "shop-1", "modified": T0, "detail": '{"tid": 9, "title": "店"}'}
    wh.upsert_trade_details([detail])
    wh.upsert_trade_details([{**detail, "modified": T0 - timedelta(hours=1), "detail": "{}"}])
    assert wh.cached_detail_modified([9, 10]) == {9: T0}


def test_rows_missing_optional_columns_store_null(wh: Warehouse) -> None:
    wh.upsert_trades([{"tid": 3, "shop_id": "s", "modified": T0}])
    stored = wh.get_trade(3)
    assert stored is not None
    assert stored["payment"] is None and stored["pay_time"] is None
    assert stored["synced_at"] is not None  # stamped with the load time


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"tid": 1, "shop_id": "s"}, "modified"),
        ({"tid": 1, "shop_id": "s", "modified": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"tid": 1, "shop_id": "s", "modified": T0, "receiver_mobile": "138"}, "unknown column"),
    ],
)
def test_malformed_rows_are_refused_before_anything_is_written(
    sqlite_url: str, bad: dict[str, Any], message: str
) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    with pytest.raises(ValueError, match=message):
        wh.upsert_trades([trade(2, 1), bad])
    assert wh.trade_count() == 0


_example_ids = itertools.count(1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), n_trades=st.integers(1, 4), n_versions=st.integers(1, 4))
def test_any_order_and_batching_of_versions_ends_at_the_newest(
    wh: Warehouse, data: st.DataObject, n_trades: int, n_versions: int
) -> None:
    base = next(_example_ids) * 1000  # fresh tids per example: the database is shared
    versions = [trade(base + t, v) for t in range(n_trades) for v in range(n_versions)]
    shuffled = data.draw(st.permutations(versions), label="arrival order")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=4), label="batch cuts"))
    bounds = [0, *cuts, len(shuffled)]
    for start, end in itertools.pairwise(bounds):
        wh.upsert_trades(shuffled[start:end])
    for t in range(n_trades):
        stored = wh.get_trade(base + t)
        assert stored is not None
        assert stored["status"] == f"STATUS_{n_versions - 1}"
        assert stored["modified"] == T0 + timedelta(minutes=n_versions - 1)


def test_trades_and_their_lines_land_in_one_call(wh: Warehouse) -> None:
    trades_result, orders_result = wh.upsert_trades_with_orders(
        [trade(1, 2), trade(2, 1)], [order(11, 1, 2), order(12, 1, 2), order(21, 2, 1)]
    )
    assert (trades_result.table, trades_result.sent, orders_result.table, orders_result.sent) == (
        "trades", 2, "trade_orders", 3,
    )
    assert [o["oid"] for o in wh.orders_for(1)] == [11, 12]


def test_a_bad_order_line_keeps_its_trade_out_too(wh: Warehouse) -> None:
    with pytest.raises(ValueError):
        wh.upsert_trades_with_orders([trade(1, 1)], [{"oid": 11, "tid": 1, "shop_id": "shop-1"}])
    assert wh.trade_count() == 0


def test_large_batches_span_chunks_and_reuse_the_staging_table(wh: Warehouse) -> None:
    first = [trade(tid, 1) for tid in range(1, 2501)]
    second = [trade(tid, 2 if tid % 2 else 0) for tid in range(1, 2501)]  # odd tids newer, even older
    wh.upsert_trades(first)
    wh.upsert_trades(second)
    assert wh.trade_count() == 2500
    assert wh.get_trade(1)["status"] == "STATUS_2"  # type: ignore[index]
    assert wh.get_trade(2)["status"] == "STATUS_1"  # type: ignore[index]
    assert wh.get_trade(2499)["status"] == "STATUS_2"  # type: ignore[index]


def test_cached_details_never_keep_receiver_personal_fields(wh: Warehouse) -> None:
    fullinfo = {"tid": 4_123_456_789_012_345_678, "receiver_name": "张*", "receiver_mobile": "138****0000",
                "receiver_address": "西湖区**路**号", "receiver_zip": "310000", "oaid": "1abc",
                "receiver_city": "杭州市", "title": "店铺", "orders": [{"oid": 1}]}
    wh.upsert_trade_details([{"tid": 9, "shop_id": "shop-1", "modified": T0, "detail": json.dumps(fullinfo)}])
    with wh.engine.connect() as conn:
        stored = json.loads(conn.execute(sa.select(trade_details.c.detail)).scalar_one())
    assert stored == {"tid": 4_123_456_789_012_345_678, "receiver_city": "杭州市", "title": "店铺",
                      "orders": [{"oid": 1}]}


def test_amounts_land_exactly_however_they_are_written(wh: Warehouse) -> None:
    # Equal amounts of different exponents, signs and sizes, repeated within and across batches:
    # PostgreSQL's COPY encodes each distinct Decimal once and reuses it (upsert._cached_numeric_dumper).
    amounts: list[Decimal | int] = [Decimal("1.5"), Decimal("1.50"), Decimal("-0.01"), Decimal("0"),
                                    Decimal("-0.00"), Decimal("999999999999.99"), 7, Decimal("7.00")]
    for batch in range(2):
        wh.upsert_trades([trade(100 * batch + i, 1, payment=amount, total_fee=amount)
                          for i, amount in enumerate(amounts)])
    for batch in range(2):
        for i, amount in enumerate(amounts):
            stored = wh.get_trade(100 * batch + i)
            assert stored is not None
            expected = Decimal(amount).quantize(Decimal("0.01"))
            assert (stored["payment"], stored["total_fee"]) == (expected, expected)
            assert str(stored["payment"]) == str(expected + 0)  # -0.00 is stored as 0.00 everywhere


def test_a_float_amount_is_still_refused_on_postgresql(pg_url: str) -> None:
    """The COPY path's cached amount dumper takes Decimal and int only (PostgreSQL alone uses it)."""
    wh = Warehouse(pg_url)
    wh.migrate()
    try:
        with pytest.raises(Exception, match="float"):
            wh.upsert_trades([trade(1, 1, payment=1.5)])
        assert wh.trade_count() == 0
    finally:
        wh.dispose()


def test_lines_a_newer_version_dropped_are_deleted_at_platform_sized_ids(wh: Warehouse) -> None:
    # 19-digit ids, beyond 2^53: the key lists of the cleanup travel as array text on PostgreSQL.
    tid, oid = 4_123_456_789_012_345_678, 4_123_456_789_012_345_000
    wh.upsert_trades_with_orders([trade(tid, 1)], [order(oid + 1, tid, 1), order(oid + 2, tid, 1)])
    wh.upsert_trades_with_orders([trade(tid, 2)], [order(oid + 2, tid, 2), order(oid + 3, tid, 2)])
    assert [o["oid"] for o in wh.orders_for(tid)] == [oid + 2, oid + 3]
