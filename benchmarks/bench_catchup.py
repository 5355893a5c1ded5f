"""API calls per 1,000 trades in a catch-up of a busy shop: a day of 15-minute increment partitions
synced in one `ordersync sync`, fetched partition by partition (``sync.coalesce_minutes: 0``) and
coalesced into one API window (the default, up to the increment API's one day).

Not a test. Starts the simulator in its own process (one shop, ``--orders-per-day`` orders, real clock),
anchors the increments ``--hours`` ago and syncs only them (``start`` = the anchor, so no historical day),
into a fresh SQLite warehouse under a fresh ORDERSYNC_HOME each time (the embedded defaults).

    .venv/bin/python benchmarks/bench_catchup.py --orders-per-day 20000 --hours 24 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa


def one(args: argparse.Namespace, coalesce_minutes: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="ordersync-catchup-"))
    config_path = home / "ordersync.yaml"
    sim = subprocess.Popen([sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--port", "0",
                            "--seed", "11", "--shops", "1", "--orders-per-day", str(args.orders_per_day),
                            "--history-days", "2", "--write-config", str(config_path)],
                           stdout=subprocess.PIPE, text=True)
    try:
        if not (sim.stdout and sim.stdout.readline()):
            raise SystemExit("simulator did not start")
        from ordersync_pipeline.app.sync import run_sync
        from ordersync_pipeline.config import load_config, write_config
        from ordersync_pipeline.settings import load_settings
        from ordersync_pipeline.timeutil import SHANGHAI, now

        anchor = (now().astimezone(SHANGHAI) - timedelta(hours=args.hours)).replace(second=0, microsecond=0)
        anchor = anchor.replace(minute=anchor.minute - anchor.minute % 15)
        cfg = load_config(config_path)
        cfg.rate_limit_per_minute = 60_000
        cfg.sync.start = anchor.isoformat()
        cfg.sync.history_days = 1
        cfg.sync.coalesce_minutes = coalesce_minutes
        write_config(cfg, config_path)
        env = {"ORDERSYNC_HOME": str(home), "ORDERSYNC_CONFIG": str(config_path)}
        os.environ.update(env)
        os.environ.pop("ORDERSYNC_REDIS_URL", None)
        os.environ.pop("ORDERSYNC_WAREHOUSE_URL", None)
        settings = load_settings(config_path, {**os.environ, **env})
        started = time.perf_counter()
        report = run_sync(settings, start=anchor, echo=lambda line: None, show_progress=False)
        wall = time.perf_counter() - started
        engine = sa.create_engine(settings.warehouse_url)
        with engine.connect() as conn:
            calls = dict(conn.execute(sa.text("select method, count(*) from api_calls group by method")).all())
            bans = conn.execute(sa.text("select count(*) from api_calls where code = '7'")).scalar_one()
            trades = conn.execute(sa.text("select count(*) from trades")).scalar_one()
            partitions = conn.execute(sa.text(
                "select count(*) from sync_windows where kind = 'increment'")).scalar_one()
        engine.dispose()
        list_calls = calls.get("taobao.trades.sold.increment.get", 0)
        return {"coalesce_minutes": coalesce_minutes, "ok": report.success, "partitions": partitions,
                "trades": trades, "calls": calls, "code_7": bans, "seconds": round(wall, 1),
                "list_calls_per_1000_trades": round(1000 * list_calls / trades, 2) if trades else None,
                "all_calls_per_1000_trades": round(1000 * sum(calls.values()) / trades, 2) if trades else None}
    finally:
        sim.terminate()
        sim.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders-per-day", type=int, default=20_000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--coalesce", default="0,1440", help="sync.coalesce_minutes values to compare")
    args = ap.parse_args()
    values = [int(v) for v in args.coalesce.split(",")]
    runs = [one(args, minutes) for _ in range(args.repeats) for minutes in values]
    summary = {}
    for minutes in values:
        mine = [r for r in runs if r["coalesce_minutes"] == minutes]
        summary[f"coalesce_minutes={minutes}"] = {
            "median_list_calls_per_1000_trades": statistics.median(float(r["list_calls_per_1000_trades"] or 0) for r in mine),
            "median_all_calls_per_1000_trades": statistics.median(float(r["all_calls_per_1000_trades"] or 0) for r in mine)}
    print(json.dumps({"machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                                  "load_avg_at_end": os.getloadavg()},
                      "command": " ".join(["benchmarks/bench_catchup.py", *sys.argv[1:]]),
                      "runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
