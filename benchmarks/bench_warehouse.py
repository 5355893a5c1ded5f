"""Warehouse load speed: upsert N synthetic trades (2 order lines each) in batches, then re-upsert them
all as newer versions (every row an update), and report trades/s and peak RSS.

    .venv/bin/python benchmarks/bench_warehouse.py postgresql://postgres@127.0.0.1:5432/bench --trades 200000

The database must exist; its trades and trade_orders tables are emptied first (use a scratch database).
Only the upsert calls are timed; building the synthetic rows is measured separately.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.warehouse import Warehouse

GMT8 = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 11, tzinfo=GMT8)
TID_BASE = 4_000_000_000_000_000_000  # 19-digit ids, like the platform's


def synthetic_batch(first: int, size: int, version: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``size`` trades starting at index ``first``, each with 2 order lines, at ``version``."""
    synced = datetime.now(timezone.utc)
    trades, orders = [], []
    for i in range(first, first + size):
        tid = TID_BASE + i
        modified = T0 + timedelta(seconds=i, minutes=version)
        trades.append({
            "tid": tid, "shop_id": f"shop-{i % 4}", "status": "WAIT_SELLER_SEND_GOODS" if version else "WAIT_BUYER_PAY",
            "type": "fixed", "created": T0 + timedelta(seconds=i), "modified": modified, "pay_time": modified,
            "payment": Decimal("398.00"), "total_fee": Decimal("418.00"), "post_fee": Decimal("0.00"),
            "discount_fee": Decimal("20.00"), "adjust_fee": Decimal("0.00"), "buyer_open_uid": f"AAH{i:012d}",
            "buyer_nick": "t**买家", "seller_nick": "示例旗舰店", "receiver_state": "浙江省",
            "receiver_city": "杭州市", "receiver_district": "西湖区", "num": 2, "source": "increment",
            "synced_at": synced,
        })
        for line in (1, 2):
            orders.append({
                "oid": TID_BASE + 10 * i + line, "tid": tid, "shop_id": f"shop-{i % 4}",
                "num_iid": 600_000_000_000 + i % 500, "sku_id": f"{5_000_000_000 + line}",
                "outer_iid": f"ART-{i % 500}", "outer_sku_id": f"ART-{i % 500}-{line}", "title": "羊毛大衣 冬季新款",
                "num": 1, "price": Decimal("209.00"), "payment": Decimal("199.00"), "total_fee": Decimal("209.00"),
                "discount_fee": Decimal("10.00"), "adjust_fee": Decimal("0.00"),
                "divide_order_fee": Decimal("199.00"), "status": trades[-1]["status"],
                "refund_status": "NO_REFUND", "modified": modified, "synced_at": synced,
            })
    return trades, orders


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(0, n, size):
        yield first, min(size, n - first)


def run_pass(wh: Warehouse, n: int, size: int, version: int) -> tuple[float, float]:
    """Returns (seconds in upserts, seconds building rows)."""
    load = build = 0.0
    for first, count in batches(n, size):
        t0 = time.perf_counter()
        trades, orders = synthetic_batch(first, count, version)
        t1 = time.perf_counter()
        wh.upsert_trades_with_orders(trades, orders)
        load += time.perf_counter() - t1
        build += t1 - t0
    return load, build


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="warehouse URL of a scratch database")
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args(argv)

    wh = Warehouse(args.url)
    wh.migrate()
    with wh.engine.begin() as conn:
        for table in ("trade_orders", "trades"):
            verb = "DELETE FROM" if wh.dialect_name == "sqlite" else "TRUNCATE TABLE"
            conn.execute(sa.text(f"{verb} {table}"))
    print(f"# {wh.dialect_name}, {args.trades:,} trades x 2 lines, batches of {args.batch:,}")
    print(f"# machine: nproc={os.cpu_count()}, python {platform.python_version()}, {platform.platform()}")
    for label, version in (("fresh insert", 0), ("all-update rerun", 1)):
        load, build = run_pass(wh, args.trades, args.batch, version)
        print(f"{label:17s} {args.trades / load:>9,.0f} trades/s  ({load:.1f} s in upserts, "
              f"{build:.1f} s building rows, peak RSS {peak_rss_mb():.0f} MB)")
    assert wh.trade_count() == args.trades, "every trade must have landed"
    wh.dispose()


if __name__ == "__main__":
    sys.exit(main())
