"""The hostile end-to-end check, as an operator would run it: a simulator with visibility lag, page drift
and faults in its own process, `ordersync sync` as a subprocess (optionally killed with kill -9 mid-way
and run again, or run twice at once), then the warehouse compared with the simulator's ground truth
(/admin/trades): nothing missing, doubled or stale among the trades the synced windows cover.

    uv run python benchmarks/hostile_check.py --lag 240 --drift 0.3 --faults 0.05 [--kill-after 20]
        [--concurrent] [--warehouse postgresql://postgres@127.0.0.1:5432/hostile]

Exits non-zero when anything is missing or wrong. Not a test (minutes long, real clock); run it after any
change to fetching, paging, windows or loading, and paste its last lines into the change's notes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.timeutil import SHANGHAI, parse_top_time
from ordersync_pipeline.warehouse import tables

ORDERSYNC = str(Path(sys.executable).with_name("ordersync"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shops", type=int, default=2)
    parser.add_argument("--orders-per-day", type=int, default=1500)
    parser.add_argument("--history-days", type=int, default=2)
    parser.add_argument("--lag", type=float, default=240.0, help="visibility lag, seconds")
    parser.add_argument("--drift", type=float, default=0.3, help="page drift probability")
    parser.add_argument("--faults", type=float, default=0.05, help="fault rate")
    parser.add_argument("--hours", type=float, default=6.0, help="increment hours before now to sync")
    parser.add_argument("--kill-after", type=float, default=None, help="kill -9 the first sync after N s")
    parser.add_argument("--concurrent", action="store_true", help="start a second sync beside the first")
    parser.add_argument("--warehouse", default=None, help="warehouse URL (default: SQLite in a temp home)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ordersync-hostile-"))
    config = home / "ordersync.yaml"
    sim = subprocess.Popen(
        [sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--port", "0", "--seed", "11",
         "--shops", str(args.shops), "--orders-per-day", str(args.orders_per_day),
         "--history-days", str(args.history_days + 2), "--fault-rate", str(args.faults),
         "--visibility-lag", str(args.lag), "--page-drift", str(args.drift), "--write-config", str(config)],
        stdout=subprocess.PIPE, text=True)
    try:
        gateway = json.loads(sim.stdout.readline() if sim.stdout else "{}")["gateway"]
        admin = gateway.rsplit("/router/rest", 1)[0]
        now = datetime.now(SHANGHAI)
        start = (now - timedelta(hours=args.hours)).replace(minute=0, second=0, microsecond=0)
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("sync:\n", f"sync:\n  start: '{start.isoformat()}'\n"
                                       f"  history_days: {args.history_days}\n", 1)
                          if "sync:\n" in text else
                          text + f"sync:\n  start: '{start.isoformat()}'\n  history_days: {args.history_days}\n",
                          encoding="utf-8")
        url = args.warehouse or f"sqlite:///{home / 'warehouse.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERSYNC_", "DAGSTER_"))}
        env.update(ORDERSYNC_HOME=str(home), ORDERSYNC_WAREHOUSE_URL=url)
        command = [ORDERSYNC, "sync", "--config", str(config)]
        started = time.monotonic()
        if args.kill_after is not None:
            victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(args.kill_after)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            print(f"killed the first sync with kill -9 after {args.kill_after:.0f}s")
        if args.concurrent:
            first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(3)
            second = subprocess.run(command, env=env, capture_output=True, text=True)
            print(f"second sync beside the first: exit {second.returncode}: "
                  f"{(second.stdout + second.stderr).strip().splitlines()[-1:]}")
            out, _ = first.communicate()
            final = subprocess.CompletedProcess(command, first.returncode, out, "")
        else:
            final = subprocess.run(command, env=env, capture_output=True, text=True)
        print(final.stdout[-1500:], final.stderr[-1500:])
        elapsed = time.monotonic() - started
        return _compare(admin, url, args.shops, elapsed, args)
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def _compare(admin: str, url: str, shops: int, elapsed: float, args: argparse.Namespace) -> int:
    engine = sa.create_engine(url)
    bad = 0
    with engine.connect() as conn:
        covered_until = {}
        for shop, end in conn.execute(sa.text(
                "SELECT shop_id, MAX(window_end) FROM sync_windows WHERE kind = 'increment' GROUP BY shop_id")):
            covered_until[shop] = _utc(end)
        horizon = {shop: _utc(start) for shop, start in conn.execute(sa.text(
            "SELECT shop_id, MIN(window_start) FROM sync_windows WHERE kind = 'historical' GROUP BY shop_id"))}
        for n in range(1, shops + 1):
            shop = f"shop-{n}"
            truth = json.loads(urllib.request.urlopen(f"{admin}/admin/trades?shop_id={shop}").read())
            until = covered_until.get(shop)
            if until is None or shop not in horizon:
                print(f"{shop}: nothing completed")
                bad += 1
                continue
            # Settled truth: changed before the last completed window's end minus the lag (a change after
            # that may legitimately be newer than what was synced), created since the history began.
            cutoff = until - timedelta(seconds=args.lag)
            want = {int(t["tid"]): t for t in truth
                    if parse_top_time(t["created"]) >= horizon[shop] and parse_top_time(t["modified"]) < cutoff}
            # Read through the warehouse's column types (money is integer fen on SQLite).
            t = tables.trades
            rows = {int(tid): (status, _utc(modified), payment) for tid, status, modified, payment in conn.execute(
                sa.select(t.c.tid, t.c.status, t.c.modified, t.c.payment).where(t.c.shop_id == shop))}
            missing = [tid for tid in want if tid not in rows]
            stale = [tid for tid, t in want.items() if tid in rows
                     and (rows[tid][0], rows[tid][1], Decimal(str(rows[tid][2])))
                     != (t["status"], parse_top_time(t["modified"]), Decimal(t["payment"]))]
            doubled = conn.execute(sa.text("SELECT COUNT(*) - COUNT(DISTINCT tid) FROM trades WHERE shop_id = :s"),
                                   {"s": shop}).scalar_one()
            print(f"{shop}: {len(want)} settled trades checked, {len(missing)} missing, {len(stale)} stale, "
                  f"{doubled} doubled")
            bad += len(missing) + len(stale) + int(doubled)
        errors = conn.execute(sa.text("SELECT COUNT(*) FROM api_calls WHERE outcome = 'error'")).scalar_one()
        calls = conn.execute(sa.text("SELECT COUNT(*) FROM api_calls")).scalar_one()
    engine.dispose()
    print(f"lag {args.lag:.0f}s, drift {args.drift}, faults {args.faults}: {calls} calls ({errors} failed, "
          f"retried), {elapsed:.0f}s; {'OK: nothing lost' if not bad else f'{bad} PROBLEMS'}")
    return 1 if bad else 0


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


if __name__ == "__main__":
    raise SystemExit(main())
