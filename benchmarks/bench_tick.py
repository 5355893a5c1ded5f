"""CPU per scheduled tick: many small shops' 15-minute increment windows through the schedule's own path.

Not a test. Starts the simulator in its own process (its CPU is not counted), configures ``--shops``
ordersync shops on it (the simulator serves at most 50 sellers, so shop i uses seller i mod 50: each is
a small shop of its own partitions), and for each of the last ``--ticks`` 15-minute ticks evaluates the
increment schedule (breaker reading included) and executes every run it requests in this process, as
the in-process executor does, against the embedded defaults a user gets: a SQLite Dagster instance under
ORDERSYNC_HOME and a SQLite warehouse. Reports CPU seconds (this process and its children) per tick and
per shop, medians over the ticks, plus the CPU of starting one run process (what the daemon's default
run launcher pays per run on top: imports, configuration, definitions, instance) and the sum of the two
per tick (``median_cpu_s_per_tick_through_daemon``).

    .venv/bin/python benchmarks/bench_tick.py --shops 200 --ticks 8
    .venv/bin/python benchmarks/bench_tick.py --shops 200 --ticks 2 --profile /tmp/tick.prof
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _process_start_cpu(env: dict[str, str]) -> float:
    """CPU of what a run process the daemon launches does before its first step: a fresh interpreter
    importing Dagster and the project, loading the configuration, building the definitions (the code
    location) and resolving the job, and opening the instance."""
    code = ("import dagster as dg; from ordersync_pipeline.defs import build_definitions; "
            "from ordersync_pipeline.settings import load_settings; "
            "build_definitions(load_settings()).resolve_job_def('incremental_sync_job'); "
            "dg.DagsterInstance.get()")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shops", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=8)
    ap.add_argument("--orders-per-day", type=int, default=200, help="per simulator seller")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--dagster-storage", choices=["sqlite", "sqlite-unpooled", "postgres"], default="sqlite",
                    help="the embedded SQLite default; the same with Dagster's own SQLite event log (as before "
                         "issue 9); or PostgreSQL (a fresh database, dropped after)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ordersync-tick-"))
    pg_db = None
    if args.dagster_storage == "postgres":
        import uuid

        import sqlalchemy as sa

        pg_db = f"ordersync_tick_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{pg_db}"'))
        admin.dispose()
        (home / "dagster").mkdir()
        (home / "dagster" / "dagster.yaml").write_text(
            "telemetry: {enabled: false}\nstorage:\n  postgres:\n    postgres_url: "
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{pg_db}\n", encoding="utf-8")
    sim_config = home / "sim.yaml"
    sim = subprocess.Popen([sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--port", "0",
                            "--seed", "4", "--shops", str(min(args.shops, 50)), "--orders-per-day",
                            str(args.orders_per_day), "--history-days", "2", "--write-config", str(sim_config)],
                           stdout=subprocess.PIPE, text=True)
    try:
        if not (sim.stdout and sim.stdout.readline()):
            raise SystemExit("simulator did not start")
        os.environ["ORDERSYNC_HOME"] = str(home)
        for name in ("ORDERSYNC_REDIS_URL", "ORDERSYNC_WAREHOUSE_URL", "DAGSTER_HOME", "ORDERSYNC_LAKE_URL"):
            os.environ.pop(name, None)
        if pg_db:
            os.environ["DAGSTER_HOME"] = str(home / "dagster")
        if args.dagster_storage == "sqlite-unpooled":
            from ordersync_pipeline.app.instance import DAGSTER_YAML

            (home / "dagster").mkdir()
            (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML.replace("# Written by ordersync", "# copy"),
                                                           encoding="utf-8")
            os.environ["DAGSTER_HOME"] = str(home / "dagster")
        import dagster as dg

        from ordersync_pipeline.app.instance import ensure_dagster_home
        from ordersync_pipeline.app.sync import QUIET_RUN_CONFIG
        from ordersync_pipeline.config import load_config, write_config
        from ordersync_pipeline.defs import build_definitions
        from ordersync_pipeline.settings import load_settings
        from ordersync_pipeline.timeutil import SHANGHAI, now

        cfg = load_config(sim_config)
        sellers = cfg.shops
        data = cfg.model_dump()
        data["shops"] = [{"shop_id": f"shop-{i:03d}", "seller_nick": sellers[i % len(sellers)].seller_nick,
                          "session": sellers[i % len(sellers)].session_key().get_secret_value()}
                         for i in range(args.shops)]
        data["app_secret"] = cfg.secret().get_secret_value()
        data["rate_limit_per_minute"] = 60_000
        start = (now().astimezone(SHANGHAI) - timedelta(hours=args.ticks // 4 + 2)).replace(
            minute=0, second=0, microsecond=0)
        data["sync"] = {"start": start.isoformat(), "history_days": 1}
        config = type(cfg).model_validate(data)
        config_path = home / "ordersync.yaml"
        write_config(config, config_path)
        settings = load_settings(config_path, os.environ)
        ensure_dagster_home(settings.home)
        instance = dg.DagsterInstance.get()
        defs = build_definitions(settings)
        schedule = defs.resolve_schedule_def("incremental_sync_schedule")
        job = defs.resolve_job_def("incremental_sync_job")
        lag = timedelta(minutes=settings.config.sync.safety_lag_minutes)
        latest = now().astimezone(SHANGHAI)
        latest = latest.replace(minute=latest.minute - latest.minute % 15, second=0, microsecond=0) + lag
        if latest > now():
            latest -= timedelta(minutes=15)
        ticks = [latest - timedelta(minutes=15 * i) for i in range(args.ticks)][::-1]
        profiler = cProfile.Profile() if args.profile else None
        per_tick: list[dict[str, Any]] = []
        for tick in ticks:
            cpu0, wall0 = _cpu(), time.perf_counter()
            if profiler:
                profiler.enable()
            context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
            requests = schedule.evaluate_tick(context).run_requests or []
            ok = 0
            for request in requests:
                result = job.execute_in_process(instance=instance, tags=request.tags, run_config=QUIET_RUN_CONFIG,
                                                raise_on_error=False)
                ok += int(result.success)
            if profiler:
                profiler.disable()
            cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
            per_tick.append({"tick": tick.isoformat(), "runs": len(requests), "runs_ok": ok,
                             "cpu_s": round(cpu, 2), "wall_s": round(wall, 2)})
            print(json.dumps(per_tick[-1]), flush=True)
        if profiler:
            profiler.dump_stats(args.profile)
        import sqlalchemy as sa

        engine = sa.create_engine(settings.warehouse_url)
        with engine.connect() as conn:
            windows = conn.execute(sa.text("select count(*) from sync_windows where kind='increment'")).scalar_one()
            calls = conn.execute(sa.text("select count(*) from api_calls")).scalar_one()
        engine.dispose()
        start_env = {**os.environ, "ORDERSYNC_CONFIG": str(config_path),
                     "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(settings.home / "dagster"))}
        start_cpu = statistics.median(_process_start_cpu(start_env) for _ in range(3))
        cpu_med = statistics.median(t["cpu_s"] for t in per_tick)
        runs_med = statistics.median(t["runs"] for t in per_tick)
        print(json.dumps({
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_at_end": os.getloadavg(), "note": "shared with other jobs"},
            "command": " ".join(["benchmarks/bench_tick.py", *sys.argv[1:]]),
            "shops": args.shops, "ticks": len(per_tick), "dagster_storage": args.dagster_storage, "executor": settings.config.orchestration.executor,
            "max_shops_per_run": settings.config.orchestration.max_shops_per_run,
            "increment_windows_recorded": windows, "api_calls": calls,
            "median_cpu_s_per_tick": cpu_med, "median_cpu_ms_per_shop": round(1000 * cpu_med / args.shops, 1),
            "median_wall_s_per_tick": statistics.median(t["wall_s"] for t in per_tick),
            "cpu_s_to_start_one_run_process": round(start_cpu, 2),
            # What the daemon's default run launcher pays: the runs in-process plus one process start each.
            "median_cpu_s_per_tick_through_daemon": round(cpu_med + runs_med * start_cpu, 2),
            "ticks_detail": per_tick}, indent=2))
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        if pg_db:
            import sqlalchemy as sa

            admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
