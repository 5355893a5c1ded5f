"""Text no backend can store (a NUL, a lone UTF-16 surrogate) never blocks a batch: the normaliser
quarantines such records, the warehouse bisects a batch the database still refuses, a rolled-back batch
leaves PostgreSQL's staging table usable, and quarantine payloads and cached details always land."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from ordersync_pipeline.sync.normalize import normalize_trades, payload_json
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import quarantine, trade_details, trades
from ordersync_pipeline.warehouse.upsert import PostgresCopyUpsert, prepare_rows

GMT8 = timezone(timedelta(hours=8))
NOW = datetime.now(timezone.utc)
MODIFIED = (NOW - timedelta(hours=1)).astimezone(GMT8).replace(microsecond=0)
TID0 = 381_209_447_123_556_800  # lines get tid * 10 + k: still 64-bit


def top_trades(n: int) -> list[dict[str, Any]]:
    """``n`` trades as a page holds them (TOP field names and text values), two lines each."""
    modified = MODIFIED.strftime("%Y-%m-%d %H:%M:%S")
    return [{"tid": TID0 + i, "status": "WAIT_SELLER_SEND_GOODS", "modified": modified, "payment": "398.00",
             "buyer_nick": "t**买家", "orders": [
                 {"oid": (TID0 + i) * 10 + k, "title": "羊毛大衣 冬季新款", "num": 1, "price": "199.00"}
                 for k in (1, 2)]}
            for i in range(n)]


def load_page(wh: Warehouse, page: list[dict[str, Any]]) -> None:
    """What the loader does with a page: normalise, upsert, quarantine."""
    batch = normalize_trades("shop-1", page, fetched_at=NOW, synced_at=NOW, source="increment")
    wh.upsert_trades_with_orders(batch.trades, batch.orders, run_id="run-1")
    for row in batch.quarantine:
        row["run_id"] = "run-1"
    wh.add_quarantine(batch.quarantine)


def quarantined(wh: Warehouse) -> list[dict[str, Any]]:
    with wh.engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(quarantine).order_by(quarantine.c.id)).mappings()]


# --- the normaliser quarantines what cannot be stored -------------------------------------------------

@pytest.mark.parametrize(("where", "text", "reason"), [
    ("line", "羊毛\x00大衣", "order[1] (oid={oid}): field 'title' contains a NUL character (cannot be stored)"),
    ("trade", "t**\ud800", "field 'buyer_nick' contains a lone UTF-16 surrogate U+D800 (cannot be stored)"),
], ids=["nul-in-a-line-title", "surrogate-in-buyer-nick"])
def test_one_unstorable_trade_among_many_is_quarantined_and_the_rest_lands(
        wh: Warehouse, where: str, text: str, reason: str) -> None:
    page = top_trades(200)
    bad = page[37]
    if where == "line":
        bad["orders"][1]["title"] = text
    else:
        bad["buyer_nick"] = text
    load_page(wh, page)
    assert wh.trade_count() == 199 and wh.order_count() == 398
    assert wh.get_trade(bad["tid"]) is None
    (q,) = quarantined(wh)
    assert q["reason"] == f"trade {bad['tid']}: " + reason.format(oid=bad["orders"][1]["oid"])
    assert (q["record_key"], q["run_id"], q["shop_id"]) == (str(bad["tid"]), "run-1", "shop-1")
    assert json.loads(q["payload"]) == bad  # the raw record, escaped but exact


def test_the_next_page_loads_after_a_quarantined_one(pg_url: str) -> None:
    wh = Warehouse(pg_url)
    wh.migrate()
    first, second = top_trades(20), top_trades(40)[20:]
    first[3]["buyer_nick"] = "\x00"
    load_page(wh, first)
    load_page(wh, second)
    assert wh.trade_count() == 39 and wh.quarantine_count() == 1


# --- the warehouse bisects a batch the database refuses ---------------------------------------------

def rows(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` warehouse rows, two lines per trade (fetched_at left out: the load time is stamped)."""
    trade_rows = [{"tid": TID0 + i, "shop_id": "shop-1", "status": "WAIT_SELLER_SEND_GOODS", "source": "sold",
                   "modified": MODIFIED, "buyer_nick": "t**买家"} for i in range(n)]
    line_rows = [{"oid": (TID0 + i) * 10 + k, "tid": TID0 + i, "shop_id": "shop-1", "title": "羊毛大衣",
                  "modified": MODIFIED} for i in range(n) for k in (1, 2)]
    return trade_rows, line_rows


def check_refused_rows_are_bisected_out(url: str, text: str, error: str) -> None:
    wh = Warehouse(url)
    wh.migrate()
    trade_rows, line_rows = rows(300)
    bad_tids = (TID0 + 7, TID0 + 250)
    for line in line_rows:
        if line["tid"] in bad_tids and line["oid"] % 10 == 2:
            line["title"] = text
    trades_result, orders_result = wh.upsert_trades_with_orders(trade_rows, line_rows)
    assert wh.trade_count() == 298 and wh.order_count() == 596
    assert (trades_result.quarantined, orders_result.quarantined) == (2, 4)
    assert all(wh.get_trade(tid) is None and wh.orders_for(tid) == [] for tid in bad_tids)
    found = quarantined(wh)
    assert [q["record_key"] for q in found] == [str(tid) for tid in bad_tids]
    for q in found:
        assert q["reason"].startswith(f"tid={q['record_key']}: the {wh.dialect_name} warehouse refused "
                                      "its rows (trades, trade_orders): ")
        assert error in q["reason"]
        assert (q["source"], q["shop_id"]) == ("sold", "shop-1")
        payload = json.loads(q["payload"])
        assert [line["title"] for line in payload["trade_orders"]] == ["羊毛大衣", text]
        assert payload["trades"][0]["tid"] == int(q["record_key"])
    # The pooled connection is fine afterwards.
    wh.upsert_trades([{**rows(1)[0][0], "tid": TID0 + 1000}])
    assert wh.trade_count() == 299
    wh.dispose()


def test_rows_postgresql_refuses_are_bisected_out_to_quarantine(pg_url: str) -> None:
    # Rows that bypassed the normaliser: PostgreSQL refuses NUL (MariaDB and SQLite store it).
    check_refused_rows_are_bisected_out(pg_url, "a\x00b", 'CharacterNotInRepertoire: invalid byte sequence '
                                        'for encoding "UTF8": 0x00 (COPY _stage_trade_orders, line ')


def test_rows_no_driver_can_encode_are_bisected_out_to_quarantine(any_warehouse_url: str) -> None:
    check_refused_rows_are_bisected_out(any_warehouse_url, "\udc80", "UnicodeEncodeError: 'utf-8' codec "
                                        "can't encode character '\\udc80'")


def test_rows_refused_by_the_database_are_quarantined_with_the_run_id(sqlite_url: str) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    trade_rows, line_rows = rows(3)
    trade_rows[1]["buyer_nick"] = "\ud800"
    wh.upsert_trades_with_orders(trade_rows, line_rows, run_id="run-9")
    (q,) = quarantined(wh)
    assert (q["record_key"], q["run_id"]) == (str(TID0 + 1), "run-9")


def test_a_connection_failure_is_raised_not_bisected(wh: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def server_gone(conn: Any, table: sa.Table, key: str, batch: list[dict[str, Any]]) -> None:
        calls.append(len(batch))
        raise sa.exc.OperationalError("INSERT ...", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(wh._strategy, "upsert", server_gone)
    with pytest.raises(sa.exc.OperationalError, match="server closed"):
        wh.upsert_trades_with_orders(*rows(50))
    assert calls == [50] and wh.quarantine_count() == 0


def test_a_rolled_back_batch_leaves_the_staging_table_usable_on_the_same_connection(pg_url: str) -> None:
    wh = Warehouse(pg_url)
    wh.migrate()
    wh.engine.dispose()  # one pooled connection from here on, so both batches share it

    def backend_pid() -> int:
        with wh.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    pid = backend_pid()
    with pytest.raises(RuntimeError), wh.engine.begin() as conn:
        # The staging table is created on this connection's first batch; the batch then fails, which
        # rolls the CREATE back with it.
        PostgresCopyUpsert().upsert(conn, trades, "tid", prepare_rows(trades, "tid", rows(3)[0]))
        raise RuntimeError("the rest of the batch failed")
    assert backend_pid() == pid
    wh.upsert_trades(rows(5)[0])  # was: relation "_stage_trades" does not exist, on every later batch
    assert wh.trade_count() == 5 and backend_pid() == pid
    wh.dispose()


# --- what is written for rejected records always lands -------------------------------------------------

def test_quarantine_payloads_with_nul_and_lone_surrogates_round_trip(wh: Warehouse) -> None:
    record = {"tid": 2**70, "buyer_nick": "a\x00b", "title": "\ud800羊\udfff", "k\x00ey": ["\ud83d"]}
    raw = '{"tid": 1, "buyer_nick": "\x00\ud800"}'  # a caller's raw text, not valid JSON for a database
    wh.add_quarantine([
        {"source": "increment", "shop_id": "shop-1", "record_key": "1\x00", "reason": "bad \ud800 text",
         "payload": payload_json(record)},
        {"source": "increment", "shop_id": "shop-1", "record_key": "2", "reason": "raw", "payload": raw},
    ])
    first, second = quarantined(wh)
    assert json.loads(first["payload"]) == record
    assert (first["record_key"], first["reason"]) == ("1\\u0000", "bad \\ud800 text")
    assert second["payload"] == '{"tid": 1, "buyer_nick": "\\u0000\\ud800"}'  # now JSON, too
    assert json.loads(second["payload"]) == {"tid": 1, "buyer_nick": "\x00\ud800"}


def test_cached_details_with_a_lone_surrogate_are_stored(wh: Warehouse) -> None:
    detail = {"tid": 9, "title": "店\ud800", "seller_memo": "x\x00y", "receiver_name": "王*"}
    wh.upsert_trade_details([{"tid": 9, "shop_id": "shop-1", "modified": MODIFIED, "detail": detail}])
    with wh.engine.connect() as conn:
        stored = conn.execute(sa.select(trade_details.c.detail)).scalar_one()
    assert json.loads(stored) == {"tid": 9, "title": "店\ud800", "seller_memo": "x\x00y"}
