"""Client benchmark: how fast the TOP client turns response bodies into trades.

Not a test. Fetches real page bodies from an in-process simulator (so the bytes are exactly what the
gateway shape produces), then times, on one core and with no network in the loop:

- envelope parsing (``top.envelope.parse_body``: JSON with exact big ints, error detection, unwrapping);
- page building (the pager's ``Page``: list wrappers removed, orders unwrapped);
- normalisation to warehouse rows (``sync.normalize.normalize_trades``), for scale.

Then it reads a whole day through ``iter_sold_pages`` over loopback HTTP (client + simulator).

    .venv/bin/python benchmarks/bench_client.py
"""

from __future__ import annotations

import os
import platform
import time
from datetime import timedelta

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.sync.runner import LIST_FIELDS
from ordersync_pipeline.timeutil import SHANGHAI, now
from ordersync_pipeline.top.client import TopClient, TopResponse
from ordersync_pipeline.top.envelope import parse_body
from ordersync_pipeline.top.pages import TRADES
from ordersync_pipeline.top.paging import _page, iter_sold_pages

METHOD = "taobao.trades.sold.get"


def _timed(label: str, pages: int, trades: int, fn) -> None:  # type: ignore[no-untyped-def]
    """Best of three, so allocator warm-up and GC pauses don't decide the figure."""
    seconds = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fn()
        seconds = min(seconds, time.perf_counter() - started)
    print(f"{label:<42} {pages / seconds:9.0f} pages/s {trades / seconds:11.0f} trades/s")


def main() -> None:
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} {platform.platform()}")
    with start_simulator(SimulatorSettings(seed=3, shops=1, orders_per_day=5000, history_days=3)) as sim:
        shop = sim.shops[0]
        client = TopClient(gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                           sign_method="hmac-sha256")
        day = now().astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        started = time.perf_counter()
        pages = list(iter_sold_pages(client, shop_id=shop.shop_id, session=shop.session, start_created=day,
                                     end_created=day + timedelta(days=1), fields=LIST_FIELDS, page_size=100))
        seconds = time.perf_counter() - started
        trades = sum(len(p.items) for p in pages)
        print(f"{'day over loopback HTTP (client + simulator)':<42} {len(pages) / seconds:9.0f} pages/s "
              f"{trades / seconds:11.0f} trades/s  ({trades} trades, {len(pages)} pages)")
        client.close()

    bodies = [p.body for p in pages] * 5
    n_trades = trades * 5
    def parse() -> None:
        for b in bodies:  # results dropped as they go, like the pager's pages
            parse_body(b, METHOD)

    _timed("envelope parse (parse_body)", len(bodies), n_trades, parse)

    def build() -> None:
        for b in bodies:
            data = parse_body(b, METHOD)
            _page(TopResponse(method=METHOD, data=data, body=b, request_id=None, latency_s=0.0), TRADES,
                  shop_id=shop.shop_id, start=day, end=day + timedelta(days=1), page_no=1, page_size=100)

    _timed("parse + Page (what the pager yields)", len(bodies), n_trades, build)
    raw = [t for p in pages for t in p.items]
    synced = now()
    _timed("normalise to warehouse rows", len(pages), trades,
           lambda: normalize_trades(shop.shop_id, raw, fetched_at=synced, synced_at=synced, source="sold"))


if __name__ == "__main__":
    main()
