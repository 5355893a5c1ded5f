"""End-to-end benchmark: simulator on loopback -> Dagster jobs -> PostgreSQL.

Not a test. Starts the TOP simulator in its own process (so it has its own core), writes a config for
it, and runs ``ordersync sync`` (the historical load as one run, then today's increment partitions) in
this process against a fresh PostgreSQL database. Reports trades/s per step, API calls per 1,000
trades in the increment (steady-state) path, and peak RSS of the pipeline and the simulator.

    .venv/bin/python benchmarks/bench_pipeline.py --trades 100000
    .venv/bin/python benchmarks/bench_pipeline.py --trades 1000000 --profile /tmp/pipeline.prof

The world is 1 shop x 90 days; orders per day is derived from --trades (the simulator's weekly
pattern and promotion day move the exact count a little; the real count is reported).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


class _TreeRss:
    """Peak summed RSS, and PSS, of this process and its descendants (loader processes), the simulator
    excluded. RSS counts a shared page (a library two processes map) once per process; PSS splits it
    between them, so the PSS sum is what the tree really occupies."""

    def __init__(self, exclude: int) -> None:
        import threading

        self.exclude, self.peak_kb, self.peak_pss_kb = exclude, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss, pss = self._sample()
            self.peak_kb, self.peak_pss_kb = max(self.peak_kb, rss), max(self.peak_pss_kb, pss)

    def _sample(self) -> tuple[int, int]:
        # Walk down from this process through /proc/<pid>/task/<tid>/children: reading every process's
        # status on a busy machine cost the pipeline process more CPU than some of its steps.
        total = pss = 0
        pending = [os.getpid()]
        while pending:
            pid = pending.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                pss += int(next(x for x in rollup.splitlines() if x.startswith("Pss:")).split()[1])
                total += rss
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split() if int(c) != self.exclude]
            except (OSError, StopIteration, ValueError):
                continue
        return total, pss


def _machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every process, PostgreSQL's included), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--shops", type=int, default=1)
    ap.add_argument("--rate-limit", default=None, help="simulator limit, e.g. 300/min")
    ap.add_argument("--client-rate", type=int, default=60_000, help="client budget, calls/min")
    ap.add_argument("--profile", default=None, help="write a cProfile of the pipeline process here")
    ap.add_argument("--keep", action="store_true", help="keep the database and ORDERSYNC_HOME")
    ap.add_argument("--fetch-concurrency", type=int, default=None, help="sync.fetch_concurrency")
    ap.add_argument("--load-workers", type=int, default=0,
                    help="sync.load_workers (1: load in the pipeline process, no loader processes)")
    ap.add_argument("--rss-trace", action="store_true", help="print this process's RSS every 2 s")
    ap.add_argument("--dagster-storage", choices=["sqlite", "postgres"], default="sqlite",
                    help="Dagster instance storage: the embedded SQLite default (as a user runs it) or PostgreSQL")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ordersync-bench-"))
    db = f"ordersync_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    if args.dagster_storage == "postgres":
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}_dagster"'))
        (home / "dagster").mkdir()
        (home / "dagster" / "dagster.yaml").write_text(
            "telemetry: {enabled: false}\n"
            "storage:\n  postgres:\n    postgres_url: "
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}_dagster\n", encoding="utf-8")
    per_day = max(1, round(args.trades / args.days / args.shops))
    config_path = home / "ordersync.yaml"
    cmd = [sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--port", "0",
           "--shops", str(args.shops), "--orders-per-day", str(per_day), "--history-days", str(args.days),
           "--write-config", str(config_path)]
    if args.rate_limit:
        cmd += ["--rate-limit", args.rate_limit]
    t0 = time.perf_counter()
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    first = sim.stdout.readline() if sim.stdout else ""
    sim_start = time.perf_counter() - t0
    if not first:
        raise SystemExit("simulator did not start")
    os.environ.update({
        "ORDERSYNC_HOME": str(home),
        "ORDERSYNC_CONFIG": str(config_path),
        "ORDERSYNC_WAREHOUSE_URL": f"postgresql://postgres@127.0.0.1:5432/{db}",
    })
    os.environ.pop("ORDERSYNC_REDIS_URL", None)
    from ordersync_pipeline.config import load_config, write_config

    cfg = load_config(config_path)
    cfg.sync.history_days = min(args.days, 90)
    cfg.rate_limit_per_minute = args.client_rate
    if args.fetch_concurrency:
        cfg.sync.fetch_concurrency = args.fetch_concurrency
    if args.load_workers:
        cfg.sync.load_workers = args.load_workers
    write_config(cfg, config_path)

    from ordersync_pipeline.app.sync import run_sync
    from ordersync_pipeline.settings import load_settings

    if args.dagster_storage == "postgres":
        os.environ["DAGSTER_HOME"] = str(home / "dagster")
    else:
        os.environ.pop("DAGSTER_HOME", None)
    tree = _TreeRss(exclude=sim.pid)
    tree.start()

    if args.rss_trace:
        import threading

        def loader_rss_kb() -> list[int]:
            """RSS of the spawned loader processes (children running multiprocessing.spawn)."""
            found = []
            for proc in Path("/proc").iterdir():
                try:
                    if b"multiprocessing.spawn" in (proc / "cmdline").read_bytes():
                        status = (proc / "status").read_text()
                        found.append(int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]))
                except (OSError, StopIteration, ValueError):
                    continue
            return found

        def trace() -> None:
            while True:
                with open("/proc/self/status") as status:
                    rss = next(line for line in status if line.startswith("VmRSS"))
                print(f"[rss] {time.perf_counter() - t0:7.1f}s {rss.split()[1]} kB loaders {loader_rss_kb()} kB",
                      flush=True)
                time.sleep(2)

        threading.Thread(target=trace, daemon=True).start()
    profiler = cProfile.Profile() if args.profile else None
    started, machine_before = time.perf_counter(), _machine_cpu_s()
    if profiler:
        profiler.enable()
    report = run_sync(load_settings(config_path), echo=lambda line: print(line, flush=True), show_progress=False)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    wall = time.perf_counter() - started
    machine_busy = _machine_cpu_s() - machine_before
    tree.stop()

    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}")
    with engine.connect() as conn:
        calls = dict(conn.execute(sa.text(
            "select method, count(*) from api_calls group by method")).all())
        bans = conn.execute(sa.text("select count(*) from api_calls where code = '7'")).scalar_one()
        # The historical fetch is the stretch where the pipeline is limited by the quota alone;
        # between steps and runs no call is due, so spans across them would understate the use.
        first_call, last_call = conn.execute(sa.text(
            "select min(called_at), max(called_at) from api_calls where method = 'taobao.trades.sold.get'")).one()
        # Every call in that stretch counts against the quota: the refunds stream's list calls share it.
        ok_calls = conn.execute(sa.text(
            "select count(*) from api_calls where outcome = 'ok' and called_at between :a and :b"),
            {"a": first_call, "b": last_call}).scalar_one()
        windows = dict(conn.execute(sa.text(
            "select kind, sum(records) from sync_windows group by kind")).all())
        trades = conn.execute(sa.text("select count(*) from trades")).scalar_one()
        lines = conn.execute(sa.text("select count(*) from trade_orders")).scalar_one()
    engine.dispose()
    sim_cpu = _cpu_s(sim.pid)
    own = resource.getrusage(resource.RUSAGE_SELF)
    loaders = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped loader processes (the simulator still runs)
    sim.terminate()
    sim.wait(timeout=30)
    sim_rss = _rss_mb(resource.RUSAGE_CHILDREN)
    inc_trades = int(windows.get("increment") or 0)
    inc_calls = calls.get("taobao.trades.sold.increment.get", 0)
    result = {
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "command": " ".join(["benchmarks/bench_pipeline.py", *sys.argv[1:]]),
        "dagster_storage": args.dagster_storage,
        "simulator_start_s": round(sim_start, 1),
        "trades_in_warehouse": trades,
        "order_lines": lines,
        "runs": [{"name": r.name, "partitions": r.partitions, "seconds": round(r.seconds, 1),
                  "cpu_s": round(r.cpu_seconds, 1),
                  "ok": r.success} for r in report.runs],
        "sync_wall_s": round(wall, 1),
        "trades_per_s_end_to_end": round(trades / wall),
        "api_calls": calls,
        "code_7_bans": bans,
        "historical_fetch_calls_per_minute": round(60 * ok_calls / max((last_call - first_call).total_seconds(), 1e-9), 1),
        "share_of_limit_used": (round(ok_calls / (int(args.rate_limit.split("/")[0]) / 60
                                                  * max((last_call - first_call).total_seconds(), 1e-9)), 3)
                                if args.rate_limit else None),
        "increment_trades_seen": inc_trades,
        "increment_calls_per_1000_trades": round(1000 * inc_calls / inc_trades, 2) if inc_trades else None,
        "peak_rss_mb_pipeline": round(_rss_mb(resource.RUSAGE_SELF)),
        "peak_rss_mb_process_tree": round(tree.peak_kb / 1024),
        "peak_pss_mb_process_tree": round(tree.peak_pss_kb / 1024),
        # CPU seconds of the whole bench process (the sync, plus this script's setup and checks), of
        # the loader processes it spawned, and of the simulator; PostgreSQL's own is not counted.
        "cpu_s": {"pipeline": round(own.ru_utime + own.ru_stime, 1),
                  "loader_processes": round(loaders.ru_utime + loaders.ru_stime, 1),
                  "simulator": round(sim_cpu, 1),
                  # Everything busy on the machine during the sync (PostgreSQL included; on a quiet
                  # machine the rest is PostgreSQL's share).
                  "machine_during_sync": round(machine_busy, 1)},
        "load_avg_at_end": os.getloadavg(),
        "peak_rss_mb_simulator": round(sim_rss),
    }
    print(json.dumps(result, indent=2))
    if not args.keep:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}_dagster" WITH (FORCE)'))
        shutil.rmtree(home, ignore_errors=True)
    admin.dispose()


if __name__ == "__main__":
    main()
