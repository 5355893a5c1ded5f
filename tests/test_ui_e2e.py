"""The Dagster UI end to end, as a user meets it: `ordersync sync` against the simulator (a small real sync),
then `ordersync dev` on a free port. Through the webserver's GraphQL API every asset has its description,
owners, kinds and column schema, the increment tables carry each partition's own figures and a freshness
policy, and the quarantine check is evaluated per partition; the terminal shows no warning and no debug
line; and, where Chromium is installed (.ci/run installs Debian's package), the rendered catalog names
every asset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import write_sim_config

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import SHANGHAI

ORDERSYNC = [sys.executable, "-m", "ordersync_pipeline.cli"]
ASSETS_QUERY = """{ assetNodes { assetKey { path } description kinds
  owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy { failWindowSeconds } }
  metadataEntries { label ... on TableSchemaMetadataEntry { schema { columns { name description } } } } } }"""
MATERIALIZATIONS_QUERY = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
  assetMaterializations(limit: 500) { partition metadataEntries { label
    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }"""
CHECKS_QUERY = """query($k: AssetKeyInput!) {
  assetCheckExecutions(assetKey: $k, checkName: "no_quarantined_records", limit: 500) {
    partition status evaluation { partition success description } } }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class UI:
    url: str
    out: Path
    err: Path

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        request = urllib.request.Request(self.url + "/graphql", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"query": query, "variables": variables}).encode())
        with urllib.request.urlopen(request, timeout=30) as reply:
            body = json.load(reply)
        assert "errors" not in body, body["errors"]
        return body["data"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    home = tmp_path_factory.mktemp("ui-home")
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "ORDERSYNC_CONFIG")}
    env["ORDERSYNC_HOME"] = str(home)
    # Increments from about an hour ago (whatever the time of day: at least three closed partitions),
    # and a day of history, synced by the real command.
    start = (datetime.now(SHANGHAI) - timedelta(minutes=75)).replace(second=0, microsecond=0)
    start -= timedelta(minutes=start.minute % 15)
    with start_simulator(SimulatorSettings(seed=9, shops=1, orders_per_day=300, history_days=2)) as sim:
        config = write_sim_config(sim, home / "ordersync.yaml", sync={"start": start.isoformat(),
                                                                     "history_days": 1})
        subprocess.run([*ORDERSYNC, "sync", "--config", str(config)], env=env, check=True,
                       capture_output=True, timeout=120)
        yield from _serve(home, config, env)


def _serve(home: Path, config: Path, env: dict[str, str]) -> Iterator[UI]:
    port = _free_port()
    out, err = home / "dev.out", home / "dev.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([*ORDERSYNC, "dev", "--config", str(config), "--port", str(port)], env=env,
                                stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Dagster UI on" not in out.read_text(encoding="utf-8", errors="replace"):
            assert proc.poll() is None, f"ordersync dev exited: {err.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "the UI did not come up in 90 s"
            time.sleep(0.5)
        yield UI(url=f"http://127.0.0.1:{port}", out=out, err=err)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _schema(node: dict[str, Any]) -> list[dict[str, Any]]:
    for entry in node["metadataEntries"]:
        if entry["label"] == "dagster/column_schema":
            return list(entry["schema"]["columns"])
    return []


def test_every_asset_explains_itself_in_the_catalog(ui: UI) -> None:
    nodes = {"/".join(n["assetKey"]["path"]): n for n in ui.graphql(ASSETS_QUERY)["assetNodes"]}
    assert {"raw_trade_pages", "trades", "trade_orders", "historical_trades", "trade_details"} <= set(nodes)
    for name, node in nodes.items():
        assert node["description"] and "``" not in node["description"], name
        assert node["owners"] == [{"team": "ordersync"}], name
        assert "taobao" in node["kinds"] and ({"sqlite", "parquet"} & set(node["kinds"])), name
        columns = _schema(node)
        assert columns and all(c["description"] for c in columns), name
    for name in ("raw_trade_pages", "trades", "trade_orders", "trade_details"):
        assert nodes[name]["internalFreshnessPolicy"]["failWindowSeconds"] > 0, name
    assert {c["name"] for c in _schema(nodes["trades"])} >= {"tid", "modified", "payment", "shop_id"}


def test_each_partition_has_its_own_figures_and_check_evaluation(ui: UI) -> None:
    data = ui.graphql(MATERIALIZATIONS_QUERY, k={"path": ["trades"]})
    materializations = data["assetOrError"]["assetMaterializations"]
    increments = [m for m in materializations if m["partition"]]
    assert len({m["partition"] for m in increments}) >= 2
    windows = set()
    for m in increments:
        meta = {e["label"]: e.get("intValue", e.get("text")) for e in m["metadataEntries"]}
        assert meta["window_end"] > meta["window_start"] and meta["pages"] >= 1, m
        assert meta["rows_upserted"] == meta["dagster/partition_row_count"], m
        windows.add((meta["window_start"], meta["window_end"]))
    assert len(windows) == len(increments), "two partitions report the same window"
    assert any("dagster/row_count" in {e["label"] for e in m["metadataEntries"]} for m in increments)
    for asset in ("trades", "trade_orders"):
        executions = ui.graphql(CHECKS_QUERY, k={"path": [asset]})["assetCheckExecutions"]
        assert {e["partition"] for e in executions} == {m["partition"] for m in increments}, asset
        assert len(executions) >= 3, asset
        for e in executions:
            assert e["evaluation"]["partition"] == e["partition"] and e["evaluation"]["success"], e
            assert e["partition"] in e["evaluation"]["description"]


def test_the_terminal_shows_no_warning_and_no_debug_line(ui: UI) -> None:
    text = ui.out.read_text(encoding="utf-8") + ui.err.read_text(encoding="utf-8")
    assert "Dagster UI on " + ui.url in text
    noisy = [line for line in text.splitlines()
             if "Warning" in line or " - DEBUG - " in line or "Checking for new runs for sensor" in line]
    assert not noisy, noisy


def _render(url: str) -> str:
    """The page's DOM once its scripts ran (headless Chromium, up to 20 s of virtual time)."""
    # A tall window: the catalog renders only the rows in view.
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,6000",
                           "--disable-dev-shm-usage", "--dump-dom", "--virtual-time-budget=20000", url],
                          capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed here (.ci/run installs it in CI)")
def test_the_rendered_catalog_names_every_asset(ui: UI) -> None:
    names = ["raw_trade_pages", "trades", "trade_orders", "historical_trades", "trade_details"]
    dom = _render(ui.url + "/assets")
    assert all(f">{name}<" in dom for name in names), [n for n in names if f">{n}<" not in dom]
    page = _render(ui.url + "/assets/trades")
    assert "One row per trade" in page and "amount the buyer actually paid" in page
