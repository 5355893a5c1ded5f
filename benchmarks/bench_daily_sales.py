"""daily_sales of one forecast day, two ways, on an existing warehouse: "pandas" reads every order line of
the window and reduces it in Python (sale_lines + daily_sales_of, run_daily_sales until it grouped in the
database), "sql" is forecast/sql_sales.py. Not a test.

    .venv/bin/python benchmarks/bench_pipeline.py --trades 200000 --keep     # leaves ordersync_bench_<id>
    .venv/bin/python benchmarks/bench_daily_sales.py \\
        --url postgresql+psycopg://postgres@127.0.0.1:5432/ordersync_bench_<id> --day 2026-11-30 --repeat 3

Each run is a fresh interpreter (so its peak RSS is its own), the two ways alternating. Reported per way:
median wall seconds, CPU seconds of the process and, on PostgreSQL on this machine, of the database
backends it used (from /proc: the grouping work moves there), and peak RSS. The frames, exclusion and
refund counts of the two ways must be equal (checked on the first pair).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

WAYS = ("pandas", "sql")


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _once(way: str, url: str, day: date, out: str | None) -> dict[str, Any]:
    import sqlalchemy as sa

    from ordersync_pipeline.config import ForecastConfig
    from ordersync_pipeline.forecast import store
    from ordersync_pipeline.forecast.daily import history_window
    from ordersync_pipeline.forecast.sales import daily_sales_of, sale_lines
    from ordersync_pipeline.forecast.sql_sales import daily_sales_in_warehouse
    from ordersync_pipeline.warehouse.connect import open_warehouse

    wh = open_warehouse(url, store_receiver_pii=False)
    shops = [str(s) for s in wh.engine.connect().execute(sa.text("SELECT DISTINCT shop_id FROM trades")).scalars()]
    start, end = history_window(day, ForecastConfig())[0], day
    backends: set[int] = set()
    if wh.engine.dialect.name == "postgresql":
        with wh.engine.connect() as conn:
            backends.add(int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()))
        sa.event.listen(wh.engine, "connect", lambda dbapi, _rec: backends.add(
            int(dbapi.execute("SELECT pg_backend_pid()").fetchone()[0])))
    db_before = {pid: _proc_cpu_s(pid) for pid in backends}
    cpu0, t0 = time.process_time(), time.perf_counter()
    if way == "pandas":
        lines, excluded = sale_lines(store.iter_order_lines(wh, shops, start=start, end=end))
        sales = daily_sales_of(lines, excluded, store.read_refunds(wh, shops, start=start, end=end),
                               start=start, end=end)
    else:
        sales = daily_sales_in_warehouse(wh, shops, start=start, end=end)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    db_cpu = sum(_proc_cpu_s(pid) - db_before.get(pid, 0.0) for pid in backends) if backends else None
    if out:
        with open(out, "wb") as fh:
            pickle.dump((sales.frame, sales.lines_counted, sales.lines_excluded, sales.refunds_applied,
                         sales.refunds_ignored, sales.promo_days), fh)
    wh.engine.dispose()
    return {"way": way, "seconds": round(wall, 2), "cpu_s": round(cpu, 2),
            "db_cpu_s": None if db_cpu is None else round(db_cpu, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rows": len(sales.frame), "lines_counted": sales.lines_counted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="SQLAlchemy URL of the warehouse")
    ap.add_argument("--day", type=date.fromisoformat, required=True, help="the forecast day (Shanghai)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_once(args.child, args.url, args.day, args.out)))
        return

    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for way in WAYS:
                cmd = [sys.executable, __file__, "--url", args.url, "--day", args.day.isoformat(), "--child", way]
                if i == 0:
                    cmd += ["--out", f"{tmp}/{way}.pickle"]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[way][-1]), flush=True)
        import pandas as pd

        got = {w: pickle.loads(Path(f"{tmp}/{w}.pickle").read_bytes()) for w in WAYS}
        pd.testing.assert_frame_equal(got["sql"][0], got["pandas"][0])
        assert got["sql"][1:] == got["pandas"][1:], (got["sql"][1:], got["pandas"][1:])
    summary = {w: {k: statistics.median(r[k] for r in rs) if rs[0][k] is not None else None
                   for k in ("seconds", "cpu_s", "db_cpu_s", "peak_rss_mb")} for w, rs in runs.items()}
    print(json.dumps({"day": args.day.isoformat(), "repeat": args.repeat, "equal": True, "median": summary},
                     indent=2))


if __name__ == "__main__":
    main()
