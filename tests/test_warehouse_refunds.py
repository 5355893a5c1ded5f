"""Refunds in the warehouse on every backend: the refunds table's monotonic upsert, the refund state
reaching trade_orders.refund_status whichever side arrives first (a refund before its trade, an old
refund after a newer trade change, a refund closing and reopening), and the net_sales view."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.sync.normalize_refunds import normalize_refunds
from ordersync_pipeline.timeutil import GMT8, format_top_time
from ordersync_pipeline.warehouse import Warehouse

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=GMT8)
TID, OID, OID2 = 4_000_000_000_000_001, 4_000_000_000_000_002, 4_000_000_000_000_003
REFUND_A, REFUND_B = 300_000_000_000_001, 300_000_000_000_002


def _at(minutes: int) -> str:
    return format_top_time(T0 + timedelta(minutes=minutes))


def _load_trade(wh: Warehouse, *, minutes: int, refund_status: str, trade_status: str = "WAIT_SELLER_SEND_GOODS",
                ) -> None:
    trade = {"tid": TID, "status": trade_status, "created": _at(0), "modified": _at(minutes),
             "pay_time": _at(1), "payment": "150.00",
             "orders": [{"oid": OID, "status": trade_status, "refund_status": refund_status, "num": 2,
                         "payment": "100.00", "sku_id": "sku-a", "num_iid": 11},
                        {"oid": OID2, "status": trade_status, "refund_status": "NO_REFUND", "num": 1,
                         "payment": "50.00", "sku_id": "sku-b", "num_iid": 12}]}
    stamp = T0 + timedelta(minutes=minutes, seconds=5)
    batch = normalize_trades("shop-1", [trade], fetched_at=stamp, synced_at=stamp, source="increment")
    assert not batch.quarantine
    wh.upsert_many([("trades", batch.trades), ("trade_orders", batch.orders)])


def _load_refund(wh: Warehouse, *, minutes: int, status: str, refund_id: int = REFUND_A,
                 fee: str = "100.00", oid: int = OID) -> None:
    refund = {"refund_id": str(refund_id), "tid": TID, "oid": oid, "status": status, "refund_fee": fee,
              "total_fee": "100.00", "payment": "0.00", "good_status": "BUYER_NOT_RECEIVED",
              "has_good_return": False, "reason": "不想要了", "desc": "", "created": _at(2),
              "modified": _at(minutes)}
    stamp = T0 + timedelta(minutes=minutes, seconds=5)
    batch = normalize_refunds("shop-1", [refund], fetched_at=stamp, synced_at=stamp, source="increment")
    assert not batch.quarantine
    wh.upsert_many(list(batch.rows.items()))


def _line(wh: Warehouse) -> tuple[Any, ...]:
    with wh.engine.connect() as conn:
        return tuple(conn.execute(sa.text("SELECT refund_status FROM trade_orders WHERE oid = :oid"),
                                  {"oid": OID}).one())


def test_a_refund_seen_before_its_trade_reaches_the_line_when_the_trade_arrives(wh: Warehouse) -> None:
    _load_refund(wh, minutes=30, status="SUCCESS")
    _load_trade(wh, minutes=20, refund_status="WAIT_SELLER_AGREE")  # an older version of the trade
    assert _line(wh) == ("SUCCESS",)
    _load_trade(wh, minutes=40, refund_status="SUCCESS", trade_status="TRADE_FINISHED")
    assert _line(wh) == ("SUCCESS",)


def test_an_older_refund_after_a_newer_trade_change_rolls_nothing_back(wh: Warehouse) -> None:
    _load_trade(wh, minutes=40, refund_status="SUCCESS")
    _load_refund(wh, minutes=30, status="WAIT_SELLER_AGREE")        # replayed from an older page
    assert _line(wh) == ("SUCCESS",)
    _load_refund(wh, minutes=45, status="CLOSED")                   # genuinely newer than the trade
    assert _line(wh) == ("CLOSED",)
    _load_trade(wh, minutes=40, refund_status="SUCCESS")            # the same trade version again
    assert _line(wh) == ("CLOSED",)


def test_a_refund_closing_and_reopening_converges_in_any_arrival_order(wh: Warehouse) -> None:
    _load_trade(wh, minutes=10, refund_status="NO_REFUND")
    states = [(20, "WAIT_SELLER_AGREE"), (30, "CLOSED"), (40, "WAIT_SELLER_AGREE"), (50, "SUCCESS")]
    for minutes, status in states:
        _load_refund(wh, minutes=minutes, status=status)
        assert _line(wh) == (status,)
    for minutes, status in reversed(states[:-1]):                   # stale pages replayed afterwards
        _load_refund(wh, minutes=minutes, status=status)
    assert _line(wh) == ("SUCCESS",)
    with wh.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM refunds")).scalars().all() == ["SUCCESS"]
    # A second refund of the same line, opened after the first closed, is the line's state.
    _load_refund(wh, minutes=60, status="CLOSED")
    _load_refund(wh, minutes=70, status="WAIT_SELLER_AGREE", refund_id=REFUND_B)
    _load_refund(wh, minutes=30, status="SUCCESS")                  # the first one's old version
    assert _line(wh) == ("WAIT_SELLER_AGREE",)


def test_net_sales_nets_successful_refunds_out_of_units_and_amounts(wh: Warehouse) -> None:
    _load_trade(wh, minutes=10, refund_status="NO_REFUND")
    _load_refund(wh, minutes=20, status="WAIT_SELLER_AGREE")
    _load_refund(wh, minutes=25, status="SUCCESS", refund_id=REFUND_B, fee="20.00", oid=OID2)
    query = sa.text("SELECT oid, units, amount, refunded_units, refunded_amount, net_units, net_amount "
                    "FROM net_sales ORDER BY oid")
    # SQLite keeps money as integer fen (docs/warehouse.md): the view's amounts are fen there.
    scale = Decimal(100) if wh.dialect_name == "sqlite" else Decimal(1)

    def rows() -> list[tuple[Any, ...]]:
        with wh.engine.connect() as conn:
            return [(int(oid), int(units), Decimal(str(amount)) / scale, int(r_units), Decimal(str(r_amount)) / scale,
                     int(n_units), Decimal(str(n_amount)) / scale)
                    for oid, units, amount, r_units, r_amount, n_units, n_amount in conn.execute(query)]

    # An open refund takes nothing back; a partial successful one only lowers the amount.
    assert rows() == [(OID, 2, Decimal(100), 0, Decimal(0), 2, Decimal(100)),
                      (OID2, 1, Decimal(50), 0, Decimal(20), 1, Decimal(30))]
    _load_refund(wh, minutes=30, status="SUCCESS")                  # the whole line refunded
    assert rows()[0] == (OID, 2, Decimal(100), 2, Decimal(100), 0, Decimal(0))


def test_refund_rows_keep_their_types_and_the_desc_column(wh: Warehouse) -> None:
    _load_refund(wh, minutes=20, status="WAIT_SELLER_AGREE")
    refunds = sa.Table("refunds", sa.MetaData(), autoload_with=wh.engine)
    with wh.engine.connect() as conn:
        row = conn.execute(sa.select(refunds)).mappings().one()
    assert int(row["refund_id"]) == REFUND_A and int(row["tid"]) == TID
    assert row["desc"] == "" and bool(row["has_good_return"]) is False and row["reason"] == "不想要了"
    assert row["modified"].replace(tzinfo=row["modified"].tzinfo or timezone.utc) is not None


def test_the_documented_refund_queries_run_on_every_backend(wh: Warehouse) -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "warehouse.md").read_text()
    section = doc[doc.index("### Refund queries"):]
    queries = re.findall(r"```sql[^\n]*\n(.*?)```", section, re.DOTALL)  # the fence may carry tags (empty-ok)
    assert len(queries) == 4
    _load_trade(wh, minutes=10, refund_status="NO_REFUND")
    _load_refund(wh, minutes=20, status="SUCCESS")
    results = []
    with wh.engine.connect() as conn:
        for sql in queries:
            results.append(conn.execute(sa.text(sql.strip().rstrip(";"))).all())
    rate, by_sku, net, open_refunds = results
    assert [(shop, trades, refunded) for shop, _, trades, refunded, _ in rate] == [("shop-1", 1, 1)]
    assert [(row[2], row[5]) for row in by_sku] == [("sku-a", 1)]
    assert sorted((row[1], int(row[3]), int(row[4])) for row in net) == [("sku-a", 2, 0), ("sku-b", 1, 1)]
    assert open_refunds == []


def test_a_trade_batch_waits_for_a_refund_batch_in_flight_on_postgresql(pg_url: str) -> None:
    # Without the lock, a trade batch and a refund batch of the same line, committing at once, would each
    # miss the other's uncommitted row and the line would keep the older state.
    import threading

    from ordersync_pipeline.warehouse.refund_status import lock_refund_state

    wh = Warehouse(pg_url)
    wh.migrate()
    try:
        loaded = threading.Event()
        with wh.engine.connect() as conn, conn.begin():
            lock_refund_state(conn, {"refunds"})
            worker = threading.Thread(target=lambda: (_load_trade(wh, minutes=10, refund_status="NO_REFUND"),
                                                      loaded.set()))
            worker.start()
            assert not loaded.wait(0.5), "the trade batch must wait for the refund batch"
            # The refund batch's own writes, in the transaction holding the lock.
            batch = normalize_refunds("shop-1", [{"refund_id": str(REFUND_A), "tid": TID, "oid": OID,
                                                  "status": "SUCCESS", "modified": _at(20)}],
                                      fetched_at=T0 + timedelta(minutes=21), synced_at=T0 + timedelta(minutes=21),
                                      source="increment")
            conn.execute(sa.insert(sa.Table("refunds", sa.MetaData(), autoload_with=conn)), batch.rows["refunds"])
        worker.join(timeout=30)
        assert loaded.is_set()
        assert _line(wh) == ("SUCCESS",)
    finally:
        wh.dispose()
