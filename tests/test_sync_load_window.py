"""Loading a partition records its window complete in the transaction of its last rows (one commit, not
two), and never before every row is in: refused rows are quarantined first, in the same transaction."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import load_partition
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.top.pages import TRADES, Page, parse_list_body
from ordersync_pipeline.warehouse import Warehouse

SAMPLES = Path(__file__).parent / "data" / "top-samples"
START = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
END = START + timedelta(minutes=15)
KEY = "2026-11-26-10:00"
GMT8 = timezone(timedelta(hours=8))


def _warehouse(url: str) -> Warehouse:
    wh = Warehouse(url)
    wh.migrate()
    return wh


def _windows(wh: Warehouse) -> list[tuple[Any, ...]]:
    with wh.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "select shop_id, stream, partition_key, pages, records from sync_windows"))]


def test_the_last_rows_and_the_window_commit_together(tmp_path: Path, sqlite_url: str) -> None:
    body = (SAMPLES / "trades_sold_increment_get_has_next.json").read_bytes()
    method = "taobao.trades.sold.increment.get"
    items, total, has_next = parse_list_body(body, TRADES, method=method)
    lake = PageLake(tmp_path / "lake")
    lake.write_partition(shop_id="shop-1", stream="trades.increment", partition_key=KEY, pages=[Page(
        shop_id="shop-1", method=method, window_start=START, window_end=END, page_no=1, page_size=100,
        request_id="r-1", fetched_at=END, body=body, items=items, total_results=total, has_next=has_next)])
    wh = _warehouse(sqlite_url)
    commits: list[int] = []
    sa.event.listen(wh.engine, "commit", lambda conn: commits.append(1))
    figures = load_partition(lake=lake, warehouse=wh, stream=stream("trades"), kind="increment",
                             shop_id="shop-1", partition_key=KEY, run_id="run-1")
    assert figures.records == len(items) > 0 and figures.rows["trades"] > 0
    assert len(commits) == 1  # rows, lines and the window's record: one transaction
    assert _windows(wh) == [("shop-1", "trades", KEY, 1, len(items))]


def test_a_window_whose_rows_were_split_out_is_recorded_with_their_quarantine(sqlite_url: str) -> None:
    wh = _warehouse(sqlite_url)
    modified = (START - timedelta(hours=1)).astimezone(GMT8)
    trade_rows = [{"tid": 100 + i, "shop_id": "shop-1", "status": "WAIT_SELLER_SEND_GOODS", "source": "sold",
                   "modified": modified, "buyer_nick": "\ud800" if i == 1 else "t**"} for i in range(3)]
    window = {"shop_id": "shop-1", "stream": "trades", "kind": "increment", "window_start": START,
              "window_end": END, "partition_key": KEY, "pages": 1, "records": 3, "run_id": "run-1"}
    results = wh.upsert_many([("trades", trade_rows)], run_id="run-1", complete_window=window)
    assert results[0].quarantined == 1
    assert wh.trade_count() == 2 and wh.quarantine_count() == 1
    assert _windows(wh) == [("shop-1", "trades", KEY, 1, 3)]
