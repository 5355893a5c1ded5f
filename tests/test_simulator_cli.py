"""`ordersync simulator serve`: JSON first line, a ready config file, clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ordersync_pipeline.config import load_config
from ordersync_pipeline.simulator.cli import parse_rate, simulator
from ordersync_pipeline.simulator.probe import Probe


def test_serve_options_are_documented() -> None:
    result = CliRunner().invoke(simulator, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--seed", "--shops", "--orders-per-day", "--history-days", "--fault-rate",
                   "--visibility-lag", "--page-drift", "--rate-limit", "--app-key", "--app-secret",
                   "--write-config"):
        assert option in result.output


def test_rate_limit_option_parsing() -> None:
    assert parse_rate("100/min") == 100 and parse_rate("40") == 40 and parse_rate(None) is None
    with pytest.raises(Exception, match="N/min"):
        parse_rate("fast")


def test_serve_subprocess_prints_credentials_writes_config_and_stops(tmp_path: Path) -> None:
    config_path = tmp_path / "ordersync.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ordersync_pipeline.simulator.cli", "serve", "--port", "0", "--seed", "21",
         "--shops", "2", "--orders-per-day", "50", "--history-days", "2", "--rate-limit", "100/min",
         "--app-key", "12345678", "--app-secret", "s3cret", "--write-config", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["app_key"] == "12345678" and info["app_secret"] == "s3cret"
        assert [s["shop_id"] for s in info["shops"]] == ["shop-1", "shop-2"]
        probe = Probe(info["gateway"], info["app_key"], info["app_secret"], sign_method="md5")
        body = probe.call("taobao.trades.sold.get", info["shops"][0]["session"], fields="tid", page_size=1)
        assert body["trades_sold_get_response"]["total_results"] > 50
        config = load_config(config_path)
        assert config.gateway == info["gateway"] and config.rate_limit_per_minute == 100
        assert config.shops[1].session_key().get_secret_value() == info["shops"][1]["session"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
