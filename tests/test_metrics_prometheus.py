"""deploy/ against the real thing: promtool validates and unit-tests the shipped rules, every metric the
rules and the dashboard use is one the endpoint exports, and a real Prometheus server (Debian's package,
installed by .ci/run) scrapes `ordersync metrics serve`'s endpoint and answers PromQL over its HTTP API."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import (
    NOW,
    SHOPS,
    breaker_row,
    day_row,
    extra_tables,
    populate,
    registry_for,
    scrape,
    sqlite_settings,
)

from ordersync_pipeline.metrics import WarehouseCollector, start_metrics_server
from ordersync_pipeline.warehouse import Warehouse

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "ordersync.rules.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "ordersync-dashboard.json"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package (prometheus, promtool) is not installed; .ci/run installs it")


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_rules_and_dashboard_use_only_metrics_the_endpoint_exports(sqlite_url: str) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    populate(wh)
    breaker, daily = extra_tables(wh)   # the two tables the reconciliation adds
    with wh.engine.begin() as conn:
        conn.execute(breaker.insert().values(**breaker_row("shop-a", "open", NOW)))
        conn.execute(daily.insert().values(**day_row(NOW.date(), 3, 2, "gap", NOW)))
    registry = registry_for(WarehouseCollector(wh.engine, shops=SHOPS, clock=lambda: NOW, webhook_configured=True,
                                               breaker_table=breaker, reconciliation_table=daily))
    scrape(registry)   # the counters' baseline
    wh.record_calls([{"started_at": NOW, "method": "m", "shop_id": "shop-a", "outcome": "ok", "latency_s": 0.1}])
    _, samples = scrape(registry)
    exported = {name for name, _ in samples}
    used = set()
    for expr in [*rule_expressions().values(), *dashboard_expressions()]:
        used |= set(re.findall(r"\bordersync_[a-z_]+", expr))
    assert used and used <= exported, sorted(used - exported)
    assert {"OrdersyncApiFailureRate", "OrdersyncSyncLag", "OrdersyncReconciliationGap",
            "OrdersyncBreakerOpen"} <= set(rule_expressions())
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert all(sum(p["gridPos"]["w"] for p in dashboard["panels"] if p["gridPos"]["y"] == y) <= 24
               for y in {p["gridPos"]["y"] for p in dashboard["panels"]})
    wh.dispose()


@needs_prometheus
def test_promtool_accepts_the_config_and_the_rules() -> None:
    for args in (["check", "config", str(CONFIG)], ["check", "rules", str(RULES)]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_prometheus
def test_the_rules_fire_on_the_conditions_they_name(tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on its condition and stays quiet just below it."""
    shop = 'shop_id="a",method="taobao.trades.sold.increment.get"'
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            # shop a: 6 of 100 calls failed (6 %); shop b: 4 of 100 (4 %); shop c: 3 of 10 (too few calls).
            {"series": f'ordersync_api_calls_recent{{{shop},outcome="error"}}', "values": "6x20"},
            {"series": f'ordersync_api_calls_recent{{{shop},outcome="ok"}}', "values": "94x20"},
            {"series": 'ordersync_api_calls_recent{shop_id="b",method="m",outcome="error"}', "values": "4x20"},
            {"series": 'ordersync_api_calls_recent{shop_id="b",method="m",outcome="ok"}', "values": "96x20"},
            {"series": 'ordersync_api_calls_recent{shop_id="c",method="m",outcome="error"}', "values": "3x20"},
            {"series": 'ordersync_api_calls_recent{shop_id="c",method="m",outcome="ok"}', "values": "7x20"},
            {"series": 'ordersync_sync_window_lag_seconds{shop_id="a",stream="trades"}', "values": "1900x20"},
            {"series": 'ordersync_sync_window_lag_seconds{shop_id="b",stream="trades"}', "values": "1200x20"},
            {"series": 'ordersync_reconciliation_gap_days{shop_id="a",stream="trades"}', "values": "1x20"},
            {"series": 'ordersync_reconciliation_gap_days{shop_id="b",stream="trades"}', "values": "0x20"},
            {"series": 'ordersync_breaker_open{shop_id="a",api="increment"}', "values": "1x20"},
            {"series": 'ordersync_breaker_open{shop_id="b",api="increment"}', "values": "0x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "OrdersyncApiFailureRate", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "shop_id": "a", "method": "taobao.trades.sold.increment.get"},
                "exp_annotations": {
                    "summary": "a: 6% of taobao.trades.sold.increment.get calls failed in the last hour",
                    "description": "More than 5 % of TOP calls fail. Check the error codes "
                                   "(ordersync_api_calls_total by code) and whether the breaker opened."}}]},
            {"eval_time": "4m", "alertname": "OrdersyncApiFailureRate", "exp_alerts": []},   # not for 10m yet
            {"eval_time": "10m", "alertname": "OrdersyncSyncLag", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "shop_id": "a", "stream": "trades"},
                "exp_annotations": {
                    "summary": "a trades: increment sync is 31m 40s behind",
                    "description": "No increment window completed for more than 30 minutes: is the schedule "
                                   "running, is the breaker open, are runs failing?"}}]},
            {"eval_time": "1m", "alertname": "OrdersyncReconciliationGap", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "shop_id": "a", "stream": "trades"},
                "exp_annotations": {
                    "summary": "a trades: 1 reconciled day(s) still differ from the platform",
                    "description": "The daily reconciliation found trades missing or stale and re-fetching did "
                                   "not close the gap (see reconciliation_daily)."}}]},
            {"eval_time": "1m", "alertname": "OrdersyncBreakerOpen", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "shop_id": "a", "api": "increment"},
                "exp_annotations": {
                    "summary": "a: breaker open for increment",
                    "description": "Too many calls failed: increments for this shop are paused and an hourly "
                                   "full pull runs instead until a probe succeeds."}}]},
        ]}]}
    path = tmp_path / "ordersync.rules.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, Warehouse]]:
    """`ordersync metrics serve`'s endpoint over a populated warehouse, and a real Prometheus scraping it
    every second with the shipped configuration and rules. Yields Prometheus's URL."""
    wh = Warehouse(sqlite_url)
    wh.migrate()
    populate(wh)
    server, _thread, stop = start_metrics_server(sqlite_settings(tmp_path, sqlite_url), port=0)
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    job = config["scrape_configs"][0]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{server.server_port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", wh
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        stop()
        wh.dispose()


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(base: str, query: str, *, timeout: float = 40.0) -> list[Any]:
    """The instant-query result of ``query`` once it is non-empty (Prometheus needs a scrape or two)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result: list[Any] = api(base, "/api/v1/query", query=query)["result"]
            if result:
                return result
        except OSError as exc:   # not listening yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"Prometheus returned nothing for {query!r} within {timeout} s (last error: {last})")


@needs_prometheus
def test_a_real_prometheus_scrapes_the_endpoint_and_answers_promql(
        prometheus: tuple[str, Warehouse]) -> None:
    base, wh = prometheus
    [up] = wait_for(base, "ordersync_up")
    assert up["value"][1] == "1" and up["metric"]["job"] == "ordersync"
    # Series only a scrape of ordersync's data can produce, through PromQL aggregation.
    [alerts] = wait_for(base, "sum(ordersync_alerts_open)")
    assert alerts["value"][1] == "2"
    lag = wait_for(base, 'ordersync_sync_window_lag_seconds{shop_id="shop-a"}')
    assert float(lag[0]["value"][1]) == 180.0   # the settings' clock: NOW minus the newest window end
    # The dashboard's failure ratio (a shop without failed calls has no error series: "or ... * 0").
    [expr] = [e for e in dashboard_expressions() if "ordersync_api_calls_recent" in e]
    ratio = wait_for(base, expr)
    assert {r["metric"]["shop_id"]: float(r["value"][1]) for r in ratio} == {"shop-a": 0.0, "shop-b": 1.0}
    # Calls recorded after Prometheus began scraping show up in the counter.
    wh.record_calls([{"started_at": NOW, "method": "taobao.trades.sold.get", "shop_id": "shop-a",
                      "outcome": "error", "code": 7, "latency_s": 0.2}])
    [errors] = wait_for(base, 'sum(ordersync_api_calls_total{outcome="error",code="7"})')
    assert errors["value"][1] == "1"
    # The shipped rules loaded into the server and evaluate without error against real series.
    groups = api(base, "/api/v1/rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == set(rule_expressions())
    deadline = time.monotonic() + 20
    while any(rule.get("lastEvaluation", "").startswith("0001") for rule in rules.values()) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        rules = {rule["name"]: rule for group in api(base, "/api/v1/rules")["groups"] for rule in group["rules"]}
    assert all(rule["health"] == "ok" for rule in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
    # Endpoint content as Prometheus saw it is the parser's too.
    targets = api(base, "/api/v1/targets")["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
    with urllib.request.urlopen(targets[0]["scrapeUrl"], timeout=5) as response:
        assert any(f.name == "ordersync_up" for f in text_string_to_metric_families(response.read().decode()))
