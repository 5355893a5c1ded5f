"""Simulator throughput: pages/s of 100 multi-line trades over keep-alive HTTP, latency, build time.

Not a test. Run:  .venv/bin/python benchmarks/bench_simulator.py [--seconds 10] [--trades 100000]
It builds worlds of 100k and 1M trades (build time, RSS), then serves pages of 100 trades with
fields=<list fields + orders> from the 100k world to one keep-alive client in a separate process, and
reports pages/s, trades/s and p50/p99 latency for a cold pass (every trade rendered and serialized
for the first time) and a warm pass (served from the fragment cache).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from datetime import timedelta

import orjson

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.simulator.probe import Probe
from ordersync_pipeline.timeutil import format_top_time

FIELDS = ("tid,tid_str,status,type,created,modified,pay_time,consign_time,end_time,payment,total_fee,post_fee,"
          "discount_fee,buyer_nick,buyer_open_uid,receiver_state,receiver_city,receiver_district,"
          "step_trade_status,step_paid_fee,orders")


def build(trades: int) -> None:
    days = 10
    per_day = trades // days
    t0 = time.perf_counter()
    with start_simulator(SimulatorSettings(seed=1, shops=1, orders_per_day=per_day, history_days=days)) as sim:
        took = time.perf_counter() - t0
        n = sim.world.trade_count("shop-1")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| build {n:,} trades | {took:.2f} s | peak RSS {rss:.0f} MB |", flush=True)


def client(url: str, key: str, secret: str, session: str, start: str, end: str, pages: int,
           seconds: float, max_requests: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    probe = Probe(url, key, secret)
    latencies, trades, n = [], 0, 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline and n < max_requests:
        params = probe.params("taobao.trades.sold.get", session, fields=FIELDS, start_created=start,
                              end_created=end, page_size=100, page_no=n % pages + 1, use_has_next=True)
        t = time.perf_counter()
        body = probe.http.post(url, data=params, timeout=30).content
        latencies.append(time.perf_counter() - t)
        trades += len(orjson.loads(body)["trades_sold_get_response"]["trades"]["trade"])
        n += 1
    out.put((latencies, trades, time.perf_counter() - started))


def serve_bench(trades: int, seconds: float) -> None:
    days = 10
    with start_simulator(SimulatorSettings(seed=1, shops=1, orders_per_day=trades // days, history_days=days,
                                           clock="stepped")) as sim:
        end = sim.clock.now()
        start = end - timedelta(days=days + 1)
        total = sim.world.trade_count("shop-1")
        pages = int(total * 0.88) // 100  # default type filter keeps ~88%
        lines = sum(len(t["orders"]) for t in sim.world.trades("shop-1")[:2000]) / 2000
        print(f"\nserving {total:,} trades ({lines:.2f} lines/trade), {pages} distinct pages of 100", flush=True)
        for label, limit in (("cold (one sweep, every page read for the first time)", pages),
                             ("warm (fragment cache)", 10**9)):
            q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
            proc = mp.Process(target=client, args=(sim.gateway_url, sim.app_key, sim.app_secret,
                                                   sim.shops[0].session, format_top_time(start),
                                                   format_top_time(end), pages, seconds, limit, q))
            proc.start()
            latencies, served, elapsed = q.get()
            proc.join()
            latencies.sort()
            n = len(latencies)
            print(f"| {label} | {n / elapsed:.0f} pages/s | {served / elapsed:,.0f} trades/s | "
                  f"p50 {statistics.median(latencies) * 1000:.1f} ms | p99 {latencies[int(n * 0.99)] * 1000:.1f} ms |"
                  f" {n} pages |", flush=True)
        print(f"fragment cache: {sim.state()['fragment_cache']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--trades", type=int, default=100_000)
    ap.add_argument("--skip-1m", action="store_true")
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {mp.cpu_count()} cpus, {platform.platform()}")
    if args.skip_1m:
        build(args.trades)
    else:
        for n in (100_000, 1_000_000):
            p = mp.Process(target=build, args=(n,))  # a fresh process each, so RSS is per world
            p.start()
            p.join()
    serve_bench(args.trades, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
