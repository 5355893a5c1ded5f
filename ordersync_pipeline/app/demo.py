"""``ordersync demo``: the simulator in the background, a full sync through Dagster, and where things are.

The demo's simulator is seeded and anchored to calendar days, so ``ordersync dev`` can later bring the
same shops back on the same port (``demo_simulator_for``) for the schedule's runs to reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import make_url

from ordersync_pipeline.app.report import SyncReport
from ordersync_pipeline.app.sync import Echo, run_sync
from ordersync_pipeline.config import ENV_CONFIG, ENV_HOME, load_config, ordersync_home, write_config
from ordersync_pipeline.settings import ANCHOR_FILE, load_settings

__all__ = ["run_demo", "start_simulator_process", "stop_process", "demo_simulator_for", "DEMO_MARKER"]

DEMO_MARKER = ".demo"


def run_demo(*, shops: int, orders_per_day: int, history_days: int, seed: int, echo: Echo = print,
             show_progress: bool = True) -> SyncReport:
    """Simulator in the background + ``run_sync`` + a summary of where everything is."""
    home = ordersync_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_HOME] = str(home)
    _reset_demo_state(home)
    config_path = home / "ordersync.yaml"
    params = {"seed": seed, "shops": shops, "orders_per_day": orders_per_day, "history_days": history_days}
    echo(f"starting the TOP simulator: {shops} shops, {orders_per_day} orders/day, {history_days} days of history")
    proc, gateway = start_simulator_process(params, port=0, write_config=config_path)
    try:
        echo(f"simulator serving {gateway}; configuration written to {config_path}")
        _set_demo_history(config_path, history_days)
        # Remembered so `ordersync dev` can bring the same (seeded, deterministic) shop back up.
        (home / DEMO_MARKER).write_text(json.dumps({**params, "gateway": gateway}), encoding="utf-8")
        os.environ[ENV_CONFIG] = str(config_path)
        settings = load_settings(config_path)
        report = run_sync(settings, echo=echo, show_progress=show_progress)
    finally:
        stop_process(proc)
    report.notes += [
        "",
        f"Warehouse:   {make_url(settings.warehouse_url).render_as_string(hide_password=True)}",
        f"Raw pages:   {settings.lake_root}",
        f"Dagster:     {os.environ['DAGSTER_HOME']}",
        "Open the Dagster UI on these runs with:  ordersync dev",
        "Prometheus metrics of this warehouse:    ordersync metrics serve --port 9464",
    ]
    return report


def start_simulator_process(params: dict[str, int], *, port: int,
                            write_config: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """``ordersync simulator serve`` in a child process; returns it and its gateway URL."""
    cmd = [sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--seed", str(params["seed"]), "--shops", str(params["shops"]),
           "--orders-per-day", str(params["orders_per_day"]), "--history-days", str(params["history_days"])]
    if write_config is not None:
        cmd += ["--write-config", str(write_config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline() if proc.stdout else ""
    if not first:
        stop_process(proc)
        err = proc.stderr.read() if proc.stderr else ""
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the simulator did not start on port {port}: {last}")
    return proc, str(json.loads(first)["gateway"])


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def demo_simulator_for(config_path: Path) -> dict[str, object] | None:
    """The demo's simulator parameters when ``config_path`` is the configuration the demo wrote."""
    marker = config_path.parent / DEMO_MARKER
    if not marker.exists() or not config_path.exists():
        return None
    params: dict[str, object] = json.loads(marker.read_text(encoding="utf-8"))
    return params if load_config(config_path).gateway == params.get("gateway") else None


def _reset_demo_state(home: Path) -> None:
    """A demo starts from an empty warehouse and lake (its simulator is new each time)."""
    marker = home / DEMO_MARKER
    if marker.exists():
        for name in ("lake", "warehouse.db", "warehouse.db-wal", "warehouse.db-shm", ANCHOR_FILE,
                     "ratelimit.sqlite3"):
            target = home / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    marker.touch()


def _set_demo_history(config_path: Path, history_days: int) -> None:
    cfg = load_config(config_path)
    cfg.sync.history_days = history_days
    # The demo's simulator enforces no quota; a real app's quota goes in the real config.
    cfg.rate_limit_per_minute = 6000
    write_config(cfg, config_path, header="# Written by `ordersync demo` for the local TOP simulator.\n")
