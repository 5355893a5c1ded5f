"""How rows are kept current, on every backend: a trade's lines are exactly its newest version's, equal
``modified`` is decided by ``fetched_at`` (the later fetch wins), rows from before ``fetched_at`` lose
ties, an implausible ``modified`` is quarantined instead of freezing the row, and a new monotonic table
needs only its definition and a ``MONOTONIC_TABLES`` entry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import (
    MONOTONIC_TABLES,
    metadata,
    trade_orders,
    trades,
)

GMT8 = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 11, 10, 0, tzinfo=GMT8)
F0 = datetime(2026, 11, 11, 3, 0, tzinfo=timezone.utc)  # a page's fetched_at


def version(tid: int, minutes: int, oids: list[int] | None, *, fetched: datetime = F0,
            status: str = "WAIT_SELLER_SEND_GOODS") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A trade version as the loader writes it: the trade row, and its lines when it carries an order
    list (``oids`` None: a fields projection without ``orders``)."""
    modified = T0 + timedelta(minutes=minutes)
    trade = {"tid": tid, "shop_id": "shop-1", "status": status, "modified": modified, "fetched_at": fetched,
             "num": len(oids or [])}
    lines = [{"oid": oid, "tid": tid, "shop_id": "shop-1", "num_iid": 600 + oid, "sku_id": f"sku-{oid}",
              "num": 1, "status": status, "modified": modified, "fetched_at": fetched}
             for oid in oids or []]
    return [trade], lines


def load(wh: Warehouse, *versions: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    """One batch (one transaction) holding these versions, as ``_flush`` hands them over."""
    wh.upsert_trades_with_orders([t for v in versions for t in v[0]], [o for v in versions for o in v[1]])


def oids(wh: Warehouse, tid: int) -> list[int]:
    return [line["oid"] for line in wh.orders_for(tid)]


def units_sold(wh: Warehouse) -> int:
    """The documented top-SKU query's count of units, reduced to its join."""
    with wh.engine.connect() as conn:
        return int(conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(trade_orders.c.num), 0))
            .select_from(trade_orders.join(trades, trades.c.tid == trade_orders.c.tid))).scalar_one())


# --- a trade's lines are its newest version's --------------------------------------------------------

def test_lines_removed_in_a_newer_version_are_deleted(wh: Warehouse) -> None:
    load(wh, version(1, 0, [11, 12, 13]), version(2, 0, [21]))
    load(wh, version(1, 5, [11, 12]))
    assert oids(wh, 1) == [11, 12]
    assert oids(wh, 2) == [21]  # another trade's lines are not touched
    assert units_sold(wh) == 3
    load(wh, version(1, 9, [14]))  # every line replaced
    assert oids(wh, 1) == [14]


def test_an_older_version_never_brings_its_lines_back(wh: Warehouse) -> None:
    load(wh, version(1, 5, [11]))
    load(wh, version(1, 0, [11, 12, 13]))  # a stale page, loaded later
    assert oids(wh, 1) == [11]
    assert wh.get_trade(1)["modified"] == T0 + timedelta(minutes=5)  # type: ignore[index]


def test_versions_of_one_trade_in_one_batch_keep_the_newest_lines(wh: Warehouse) -> None:
    load(wh, version(1, 5, [11, 12]), version(1, 0, [11, 12, 13]))
    assert oids(wh, 1) == [11, 12]


def test_a_version_without_an_order_list_deletes_no_lines(wh: Warehouse) -> None:
    load(wh, version(1, 0, [11, 12, 13]))
    load(wh, version(1, 5, None, status="WAIT_BUYER_CONFIRM_GOODS"))  # fields projection: no orders
    assert oids(wh, 1) == [11, 12, 13]
    assert wh.get_trade(1)["status"] == "WAIT_BUYER_CONFIRM_GOODS"  # type: ignore[index]
    # A stale page with fewer lines must not delete lines either: its version lost, and the stored
    # version (the projection) says nothing about lines.
    load(wh, version(1, 0, [11]))
    assert oids(wh, 1) == [11, 12, 13]
    load(wh, version(1, 6, [11, 14]))  # the next full version decides again
    assert oids(wh, 1) == [11, 14]


def test_reloading_the_same_pages_changes_nothing_but_synced_at(wh: Warehouse) -> None:
    def stored() -> list[dict[str, Any]]:
        rows = [wh.get_trade(1) or {}, *wh.orders_for(1)]
        return [{k: v for k, v in row.items() if k != "synced_at"} for row in rows]  # when written

    load(wh, version(1, 0, [11, 12, 13]))
    load(wh, version(1, 5, [11, 12]))
    snapshot = stored()
    load(wh, version(1, 5, [11, 12]))
    load(wh, version(1, 0, [11, 12, 13]))
    assert stored() == snapshot and len(snapshot) == 3


# --- equal modified: the later fetch wins ---------------------------------------------------------

@pytest.mark.parametrize("later_first", [True, False], ids=["later-fetch-loaded-first", "in-fetch-order"])
def test_equal_modified_the_version_fetched_later_wins_whatever_the_load_order(
        wh: Warehouse, later_first: bool) -> None:
    earlier = version(1, 5, [11, 12], fetched=F0, status="WAIT_SELLER_SEND_GOODS")
    later = version(1, 5, [11], fetched=F0 + timedelta(minutes=15), status="WAIT_BUYER_CONFIRM_GOODS")
    for batch in ([later, earlier] if later_first else [earlier, later]):
        load(wh, batch)
    stored = wh.get_trade(1)
    assert stored is not None and stored["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    assert [(line["oid"], line["status"]) for line in wh.orders_for(1)] == [(11, "WAIT_BUYER_CONFIRM_GOODS")]
    assert stored["fetched_at"] == F0 + timedelta(minutes=15)


def test_equal_modified_in_one_batch_the_later_fetch_wins_wherever_it_stands(wh: Warehouse) -> None:
    later = version(1, 5, [11], fetched=F0 + timedelta(seconds=1), status="TRADE_FINISHED")
    load(wh, later, version(1, 5, [11, 12], fetched=F0, status="WAIT_BUYER_CONFIRM_GOODS"))
    assert wh.get_trade(1)["status"] == "TRADE_FINISHED"  # type: ignore[index]
    assert oids(wh, 1) == [11]


def test_rows_stored_before_fetched_at_existed_lose_ties(wh: Warehouse) -> None:
    modified = T0 + timedelta(minutes=5)
    with wh.engine.begin() as conn:  # as revision 0001 left them: no fetched_at
        conn.execute(trades.insert(), [
            {"tid": 1, "shop_id": "shop-1", "status": "WAIT_SELLER_SEND_GOODS", "modified": modified,
             "synced_at": F0},
            {"tid": 2, "shop_id": "shop-1", "status": "TRADE_FINISHED", "modified": modified,
             "synced_at": F0},
        ])
        conn.execute(trade_orders.insert(), [
            {"oid": oid, "tid": 1, "shop_id": "shop-1", "modified": modified, "synced_at": F0}
            for oid in (11, 12)])
    load(wh, version(1, 5, [11], status="TRADE_FINISHED"))  # equal modified, with a fetched_at: wins
    load(wh, version(2, 4, None, status="WAIT_SELLER_SEND_GOODS"))  # older modified: still loses
    assert wh.get_trade(1)["status"] == "TRADE_FINISHED"  # type: ignore[index]
    assert oids(wh, 1) == [11]
    assert wh.get_trade(2)["status"] == "TRADE_FINISHED"  # type: ignore[index]


# --- implausible times --------------------------------------------------------------------------

def top_trade(tid: int, modified: datetime, status: str) -> dict[str, Any]:
    return {"tid": tid, "status": status, "modified": format_top_time(modified),
            "orders": [{"oid": tid * 10 + 1, "num": 1, "status": status}]}


def test_a_far_future_modified_is_quarantined_and_never_freezes_the_row(wh: Warehouse) -> None:
    now = datetime.now(timezone.utc)
    pages = [
        [top_trade(1, now - timedelta(hours=2), "WAIT_BUYER_PAY")],
        [top_trade(1, datetime(2099, 1, 1, tzinfo=GMT8), "TRADE_CLOSED")],  # a broken clock upstream
        [top_trade(1, now - timedelta(hours=1), "WAIT_SELLER_SEND_GOODS")],  # the real next change
    ]
    for page in pages:
        batch = normalize_trades("shop-1", page, fetched_at=now, synced_at=now, source="increment")
        wh.upsert_trades_with_orders(batch.trades, batch.orders)
        wh.add_quarantine(batch.quarantine)
    stored = wh.get_trade(1)
    assert stored is not None and stored["status"] == "WAIT_SELLER_SEND_GOODS"
    assert wh.quarantine_count() == 1


# --- generic over monotonic tables ----------------------------------------------------------------

@pytest.fixture
def refunds(wh: Warehouse) -> sa.Table:
    """The refunds table: added with a definition, a MONOTONIC_TABLES entry and its migration, nothing
    else in the upsert code."""
    assert "refunds" in MONOTONIC_TABLES
    return metadata.tables["refunds"]


def test_a_new_monotonic_table_gets_the_same_rules(wh: Warehouse, refunds: sa.Table) -> None:
    def refund(minutes: int, fetched: datetime, status: str) -> dict[str, Any]:
        return {"refund_id": 7, "shop_id": "shop-1", "tid": 1, "oid": 1, "status": status,
                "modified": T0 + timedelta(minutes=minutes), "fetched_at": fetched}

    wh.upsert("refunds", [refund(5, F0 + timedelta(minutes=1), "WAIT_SELLER_AGREE")])
    wh.upsert("refunds", [refund(5, F0, "CLOSED")])  # equal modified, fetched earlier: loses
    wh.upsert("refunds", [refund(3, F0 + timedelta(days=1), "SUCCESS")])  # older modified: loses
    with wh.engine.connect() as conn:
        assert conn.execute(sa.select(refunds.c.status)).scalar_one() == "WAIT_SELLER_AGREE"
    wh.upsert("refunds", [refund(6, F0, "SUCCESS")])
    with wh.engine.connect() as conn:
        assert conn.execute(sa.select(refunds.c.status)).scalar_one() == "SUCCESS"
