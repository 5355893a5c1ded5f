"""The core (client, simulator, sync logic, warehouse, forecast) must not load Dagster."""

import os
import subprocess
import sys

CORE_MODULES = [
    "ordersync_pipeline.config",
    "ordersync_pipeline.timeutil",
    "ordersync_pipeline.top.client",
    "ordersync_pipeline.top.paging",
    "ordersync_pipeline.top.ratelimit",
    "ordersync_pipeline.simulator",
    "ordersync_pipeline.sync.normalize",
    "ordersync_pipeline.sync.lake",
    "ordersync_pipeline.sync.runner",
    "ordersync_pipeline.warehouse",
    "ordersync_pipeline.alerts",
    "ordersync_pipeline.metrics",
    "ordersync_pipeline.forecast.sales",
    "ordersync_pipeline.forecast.sql_sales",
    "ordersync_pipeline.forecast.model",
    "ordersync_pipeline.forecast.replenish",
    "ordersync_pipeline.forecast.backtest",
    "ordersync_pipeline.forecast.charts",
    "ordersync_pipeline.forecast.frames",
    "ordersync_pipeline.reconcile.daily",
    "ordersync_pipeline.reconcile.quality",
    "ordersync_pipeline.reconcile.gaps",
    "ordersync_pipeline.reconcile.breaker",
    "ordersync_pipeline.reconcile.fullpull",
]


def test_core_imports_without_dagster() -> None:
    code = "\n".join([*(f"import {m}" for m in CORE_MODULES), "import sys",
                      "assert 'dagster' not in sys.modules, sorted(m for m in sys.modules if 'dagster' in m)"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cli_help_is_instant_and_dagster_free() -> None:
    code = ("import sys; from click.testing import CliRunner; from ordersync_pipeline.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'sync' in r.output and 'demo' in r.output and 'simulator' in r.output; "
            "assert 'dagster' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_loading_the_definitions_leaves_pandas_and_statsforecast_to_the_forecast_run(tmp_path) -> None:
    """Every process that loads the code (each run the daemon launches, the webserver, the daemon, every
    ``ordersync sync``) builds the definitions; most runs are syncs, which need neither pandas nor
    statsforecast (~1 CPU-second of imports a process). The forecast assets import them when they run."""
    code = ("import sys; from ordersync_pipeline.defs import build_definitions; "
            "from ordersync_pipeline.settings import load_settings; "
            "repo = build_definitions(load_settings()).get_repository_def(); "
            "assert repo.get_all_jobs(); "
            "loaded = [m for m in ('pandas', 'statsforecast') if m in sys.modules]; "
            "assert not loaded, loaded")
    (tmp_path / "ordersync.yaml").write_text(
        'gateway: http://127.0.0.1:9/router/rest\napp_key: "12345678"\napp_secret: not-a-secret\n'
        "shops:\n  - {shop_id: one, seller_nick: one, session: s1}\n  - {shop_id: two, seller_nick: two, session: s2}\n")
    env = {**os.environ, "ORDERSYNC_HOME": str(tmp_path)}
    env.pop("ORDERSYNC_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
