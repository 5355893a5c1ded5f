"""After a bulk load the runner refreshes the planner's statistics of the tables it filled: a first
history load grows them from nothing before autovacuum's first pass, and until then PostgreSQL plans the
reconciliation's and the forecast's joins as if they were empty."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import PartitionTask, RunnerSettings, SyncRunner
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.top.pages import TRADES, Page, parse_list_body
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.connect import open_warehouse

SAMPLES = Path(__file__).parent / "data" / "top-samples"
START = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
END = datetime(2026, 11, 26, 2, 15, tzinfo=timezone.utc)
KEY = "2026-11-26-10:00"


def _lake_with_one_partition(root: Path) -> PageLake:
    body = (SAMPLES / "trades_sold_increment_get_has_next.json").read_bytes()
    method = "taobao.trades.sold.increment.get"
    items, total, has_next = parse_list_body(body, TRADES, method=method)
    page = Page(shop_id="shop-1", method=method, window_start=START, window_end=END, page_no=1,
                page_size=100, request_id="r1", fetched_at=END, body=body, items=items,
                total_results=total, has_next=has_next)
    lake = PageLake(root)
    lake.write_partition(shop_id="shop-1", stream="trades.increment", partition_key=KEY, pages=iter([page]))
    return lake


def _analysed(warehouse: Warehouse, table: str) -> bool:
    """pg_class.reltuples is -1 until a table's first ANALYZE (or VACUUM), which sets it at once."""
    with warehouse.engine.connect() as conn:
        return float(conn.execute(sa.text("select reltuples from pg_class where relname = :t"),
                                  {"t": table}).scalar_one()) >= 0


def _rebuild(lake: PageLake, warehouse: Warehouse, *, analyze_after_records: int) -> None:
    task = PartitionTask(stream=stream("trades"), kind="increment", shop_id="shop-1", partition_key=KEY,
                         window=Window(START, END))
    runner = SyncRunner(lake=lake, warehouse=warehouse, run_id=None,
                        settings=RunnerSettings(analyze_after_records=analyze_after_records))
    outcomes = list(runner.run([task], from_lake=True))
    assert [o.error for o in outcomes] == [None] and outcomes[0].records > 0


def test_a_load_above_the_threshold_analyses_the_tables_it_filled(tmp_path: Path, pg_url: str) -> None:
    warehouse = open_warehouse(pg_url, store_receiver_pii=False)
    lake = _lake_with_one_partition(tmp_path)
    _rebuild(lake, warehouse, analyze_after_records=10**9)
    assert not _analysed(warehouse, "trades")  # a small load leaves statistics to autovacuum
    _rebuild(lake, warehouse, analyze_after_records=1)
    assert _analysed(warehouse, "trades") and _analysed(warehouse, "trade_orders")
    warehouse.engine.dispose()


def test_analyze_runs_on_every_backend(wh: Warehouse) -> None:
    wh.analyze(["trades", "trade_orders"])
