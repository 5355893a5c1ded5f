"""`ordersync demo` ends with the metrics command, and that command, run as printed, serves the demo's data."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def test_the_demo_leaves_a_metrics_command_that_serves_its_warehouse(tmp_path: Path) -> None:
    env = {**os.environ, "ORDERSYNC_HOME": str(tmp_path / ".ordersync")}
    env.pop("ORDERSYNC_CONFIG", None)
    env.pop("ORDERSYNC_WAREHOUSE_URL", None)
    cli = [sys.executable, "-m", "ordersync_pipeline.cli"]
    demo = subprocess.run([*cli, "demo", "--shops", "1", "--orders-per-day", "20", "--history-days", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stderr[-2000:]
    closing = demo.stdout.strip().splitlines()[-1]
    assert closing.endswith("ordersync metrics serve --port 9464"), closing

    command = closing.split(":", 1)[1].split()   # ["ordersync", "metrics", "serve", "--port", "9464"]
    assert command[:3] == ["ordersync", "metrics", "serve"]
    # Run as printed, but on a free port (9464 may be taken on this machine).
    proc = subprocess.Popen([*cli, *command[1:-1], "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url, timeout=10) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert families["ordersync_up"].samples[0].value == 1
    trades = [s.value for s in families["ordersync_table_rows"].samples if s.labels["table"] == "trades"]
    assert trades and trades[0] > 0
    # One lag per stream of the registry: the demo synced trades and refunds.
    lags = {lag.labels["stream"]: lag for lag in families["ordersync_sync_window_lag_seconds"].samples}
    assert sorted(lags) == ["refunds", "trades"]
    for lag in lags.values():
        assert lag.labels["shop_id"] == "shop-1" and 0 < lag.value < 3600
