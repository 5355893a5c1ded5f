"""The load path alone: a kept lake's historical partitions -> a fresh PostgreSQL warehouse, in one process.

Not a test. Loads every historical partition of each stream (trades, then refunds) through
``runner.load_partition`` sequentially, in this process, and reports the loader's CPU-seconds (this
process: lake read, parse, normalise, COPY encoding) and the PostgreSQL backend's (COPY, merge, cleanup),
per record. The lake comes from a benchmark run kept with ``--keep``:

    .venv/bin/python benchmarks/bench_pipeline.py --trades 200000 --keep
    ls -d /tmp/ordersync-bench-*/lake                  # the kept home (a temp folder) holds the lake
    .venv/bin/python benchmarks/bench_load.py /tmp/ordersync-bench-XXXX/lake [--partitions 45]

To compare two versions of the code in one sitting, run the old one from an extracted copy
(``git archive <rev> ordersync_pipeline | tar -x -C /tmp/old``, then ``PYTHONPATH=/tmp/old``),
interleaved with the new, and compare medians: the machine's other work moves single runs by ~15 %.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

import ordersync_pipeline
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import lake_dataset, load_partition
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.warehouse import Warehouse

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backend_cpu_s(admin: sa.Engine, db: str) -> float:
    """CPU-seconds of the database's server processes (their whole life: the pool's connections)."""
    with admin.connect() as conn:
        pids = list(conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db"),
                                 {"db": db}).scalars())
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])   # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lake", help="the lake folder of a kept bench_pipeline.py run")
    ap.add_argument("--shop", default="shop-1")
    ap.add_argument("--partitions", type=int, default=None, help="only the first N partitions of each stream")
    args = ap.parse_args()

    gc_s = [0.0, 0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_s[1] = time.process_time()
        else:
            gc_s[0] += time.process_time() - gc_s[1]

    db = f"ordersync_load_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        warehouse = Warehouse(f"postgresql://postgres@127.0.0.1:5432/{db}")
        warehouse.migrate()
        warehouse.dispose()  # the migration's backend goes; the load's backends are all that is measured
        lake = PageLake(args.lake)
        report: dict[str, object] = {"code": os.path.dirname(ordersync_pipeline.__file__)}
        gc.callbacks.append(gc_timer)
        started, wall = _cpu_s(), time.perf_counter()
        records = 0
        for stream in STREAMS:
            dataset = lake_dataset(stream, "historical")
            directory = Path(args.lake) / "pages" / f"stream={dataset}" / f"shop_id={args.shop}"
            keys = sorted(name.removeprefix("partition=").removesuffix(".manifest.json")
                          for name in os.listdir(directory) if name.endswith(".manifest.json"))
            stream_started, loaded = _cpu_s(), 0
            for key in keys[: args.partitions]:
                loaded += load_partition(lake=lake, warehouse=warehouse, stream=stream, kind="historical",
                                         shop_id=args.shop, partition_key=key, run_id="bench_load").records
            cpu = _cpu_s() - stream_started
            report[stream.name] = {"records": loaded, "loader_cpu_s": round(cpu, 2),
                                   "loader_cpu_us_per_record": round(cpu / max(loaded, 1) * 1e6, 1)}
            records += loaded
        gc.callbacks.remove(gc_timer)
        loader = _cpu_s() - started
        backend = _backend_cpu_s(admin, db)
        report.update({
            "records": records, "wall_s": round(time.perf_counter() - wall, 2),
            "loader_cpu_s": round(loader, 2), "of_which_gc_cpu_s": round(gc_s[0], 2),
            "postgres_cpu_s": round(backend, 2),
            "postgres_cpu_us_per_record": round(backend / max(records, 1) * 1e6, 1),
        })
        warehouse.dispose()
        print(json.dumps(report, indent=2))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
