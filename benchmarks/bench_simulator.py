"""Simulator throughput: cold and warm sweeps of whole worlds over keep-alive HTTP, as the pipeline reads them.

Not a test. Run:  .venv/bin/python benchmarks/bench_simulator.py [--trades 100000 1000000] [--days 10]

For each world size, the simulator runs in its own process (so its CPU time and peak RSS are its own)
and one client in this process (http.client, one keep-alive connection: cheaper than requests, so the
client is not what we measure) sweeps it the way the pipeline does:

- sold cold:  ``taobao.trades.sold.get`` per created day, page_size 100, use_has_next=true, forward,
              every trade rendered for the first time;
- sold warm:  the same sweep again (fragment cache; a 1M world overflows the default 512 MB bound);
- incr cold:  after dropping every cache, ``taobao.trades.sold.increment.get`` per one-day modified
              window: a count call (page 1, use_has_next=false), pages last..2, page 1 again;
- time.get:   a tiny API, to show what the HTTP layer alone costs.

Reported: pages/s (wall), simulator CPU ms per page (one core), p50/p99 latency, peak RSS.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import platform
import re
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlencode, urlsplit

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import GMT8, format_top_time
from ordersync_pipeline.top.paging import ALL_TRADE_TYPES
from ordersync_pipeline.top.signing import sign

# Exactly what the pipeline asks for (sync layer's list fields).
FIELDS = ("tid,status,type,created,modified,pay_time,consign_time,end_time,payment,total_fee,post_fee,"
          "discount_fee,adjust_fee,step_trade_status,step_paid_fee,buyer_open_uid,buyer_nick,seller_nick,"
          "receiver_state,receiver_city,receiver_district,num,has_buyer_message,orders")
TYPES = ",".join(ALL_TRADE_TYPES)
DAY = 86_400
TOTAL_RE = re.compile(rb'"total_results":(\d+)')


# ---------------------------------------------------------------- the simulator process

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _clear_caches(sim: Any) -> None:
    """Forget every rendered byte so the next sweep is cold again (world and indexes stay)."""
    if hasattr(sim.fragments, "clear"):
        sim.fragments.clear()
    else:  # the simulator before the cold-path work
        sim.fragments._d.clear()
        sim.fragments.size = 0
    for owner, name in ((sim.world, "_details"), (sim.gateway.apis, "_created_cache"),
                        (sim.gateway.apis, "_modified_cache")):
        cache = getattr(owner, name, None)
        if cache is not None:
            cache.clear()


def serve(trades: int, days: int, conn: Connection) -> None:
    t0 = time.perf_counter()
    sim = start_simulator(SimulatorSettings(seed=1, shops=1, orders_per_day=trades // days, history_days=days,
                                            clock="stepped"))
    build_s = time.perf_counter() - t0
    conn.send({"url": sim.gateway_url, "key": sim.app_key, "secret": sim.app_secret,
               "session": sim.shops[0].session, "now": sim.clock.now_ts(), "first_day": sim.world.first_day,
               "count": sim.world.trade_count("shop-1"), "build_s": build_s, "rss_mb": _rss_mb(),
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            sim.stop()
            return
        if cmd == "clear":
            _clear_caches(sim)
        conn.send({"cpu_s": _cpu_s(), "rss_mb": _rss_mb(),
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "cache": sim.state()["fragment_cache"]})


# ---------------------------------------------------------------- the client

class Client:
    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        url = urlsplit(info["url"])
        self.path = url.path
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

    def call(self, method: str, **business: Any) -> bytes:
        params = {"method": method, "app_key": self.info["key"], "v": "2.0", "format": "json",
                  "sign_method": "hmac-sha256", "timestamp": format_top_time(datetime.now(timezone.utc)),
                  "session": self.info["session"]}
        params.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in business.items()})
        params["sign"] = sign(params, self.info["secret"], "hmac-sha256")
        self.conn.request("POST", self.path, urlencode(params).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200 or b"error_response" in body[:40]:
            raise RuntimeError(body[:300])
        return body


@dataclass
class Sweep:
    latencies: list[float] = field(default_factory=list)
    trades: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def timed(self, client: Client, method: str, **business: Any) -> bytes:
        t = time.perf_counter()
        body = client.call(method, **business)
        self.latencies.append(time.perf_counter() - t)
        self.trades += body.count(b'"tid":')  # orders carry oid, not tid: one hit per trade
        return body

    def row(self, label: str) -> str:
        lat = sorted(self.latencies)
        n = len(lat)
        return (f"| {label} | {n} | {n / self.wall_s:,.0f} | {self.cpu_s / n * 1000:.2f} | "
                f"{self.trades / self.wall_s:,.0f} | {statistics.median(lat) * 1000:.1f} | "
                f"{lat[min(n - 1, int(n * 0.99))] * 1000:.1f} |")


def _day_windows(info: dict[str, Any]) -> list[tuple[str, str]]:
    def fmt(ts: int) -> str:
        return format_top_time(datetime.fromtimestamp(ts, GMT8))
    out, day = [], info["first_day"]
    while day <= info["now"]:
        out.append((fmt(day), fmt(min(day + DAY - 1, info["now"]))))
        day += DAY
    return out


def sold_sweep(client: Client, sweep: Sweep) -> None:
    for start, end in _day_windows(client.info):
        page = 1
        while True:
            body = sweep.timed(client, "taobao.trades.sold.get", fields=FIELDS, type=TYPES, start_created=start,
                               end_created=end, page_no=page, page_size=100, use_has_next=True)
            if b'"has_next":true' not in body[:80]:
                break
            page += 1


def increment_sweep(client: Client, sweep: Sweep) -> None:
    """The pipeline's loss-free reverse walk per one-day window."""
    for start, end in _day_windows(client.info):
        args = {"fields": FIELDS, "type": TYPES, "start_modified": start, "end_modified": end, "page_size": 100,
                "use_has_next": False}
        first = sweep.timed(client, "taobao.trades.sold.increment.get", page_no=1, **args)
        m = TOTAL_RE.search(first[:120])
        total = int(m.group(1)) if m else 0
        for page in range((total + 99) // 100, 1, -1):
            sweep.timed(client, "taobao.trades.sold.increment.get", page_no=page, **args)
        if total > 100:
            sweep.timed(client, "taobao.trades.sold.increment.get", page_no=1, **args)


def time_sweep(client: Client, sweep: Sweep, n: int = 3000) -> None:
    for _ in range(n):
        sweep.timed(client, "taobao.time.get")


def run_world(trades: int, days: int) -> None:
    parent, child = mp.Pipe()
    proc = mp.Process(target=serve, args=(trades, days, child))
    proc.start()
    info = parent.recv()
    print(f"\n### world {info['count']:,} trades ({days} days)\n\n"
          f"build {info['build_s']:.2f} s, RSS after build {info['rss_mb']:.0f} MB\n\n"
          "| sweep | requests | pages/s (wall) | sim CPU ms/page | trades/s | p50 ms | p99 ms |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    client = Client(info)

    def measure(label: str, body: Any, clear: bool = False) -> dict[str, Any]:
        parent.send("clear" if clear else "stats")
        before = parent.recv()
        sweep = Sweep()
        t = time.perf_counter()
        body(client, sweep)
        sweep.wall_s = time.perf_counter() - t
        parent.send("stats")
        after = parent.recv()
        sweep.cpu_s = after["cpu_s"] - before["cpu_s"]
        print(sweep.row(label), flush=True)
        return after

    measure("sold.get cold", sold_sweep)
    after = measure("sold.get warm", sold_sweep)
    measure("increment.get cold (reverse)", increment_sweep, clear=True)
    after = measure("time.get", time_sweep)
    print(f"\npeak RSS of the simulator process after the sweeps: {after['peak_mb']:.0f} MB "
          f"(now {after['rss_mb']:.0f} MB); fragment cache {after['cache']}", flush=True)
    parent.send("stop")
    proc.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--days", type=int, default=10)
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {mp.cpu_count()} cpus, "
          f"{platform.platform()}")
    for n in args.trades:
        run_world(n, args.days)


if __name__ == "__main__":
    sys.exit(main())
