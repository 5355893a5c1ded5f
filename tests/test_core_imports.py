"""The core (client, simulator, sync logic, warehouse, forecast) must not load Dagster."""

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
