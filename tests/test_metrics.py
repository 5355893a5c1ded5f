"""The metrics endpoint: every family read from a real warehouse on each backend, parsed with
prometheus-client's own parser; counters that count only new calls; a warehouse that is down, goes away
or lacks a table; the tables another branch adds; and the `ordersync metrics serve` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.config import OrdersyncConfig
from ordersync_pipeline.metrics import SECTIONS, WarehouseCollector, metrics_engine, start_metrics_server
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import breaker_state, reconciliation_daily

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)
SHOPS = ["shop-a", "shop-b", "shop-c"]   # shop-c has synced nothing yet
INCREMENT = "taobao.trades.sold.increment.get"
SOLD = "taobao.trades.sold.get"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def call(at: datetime, method: str, *, ok: bool = True, shop: str = "shop-a", latency: float = 0.08,
         code: int | None = None, kind: str | None = None) -> dict[str, Any]:
    return {"started_at": at, "method": method, "shop_id": shop, "outcome": "ok" if ok else "error",
            "code": code, "latency_s": latency, "error_kind": kind, "attempt": 1}


def populate(wh: Warehouse) -> None:
    """A small warehouse whose every figure is known."""
    wh.upsert_trades([
        {"shop_id": "shop-a", "tid": 1, "modified": NOW - timedelta(minutes=7)},
        {"shop_id": "shop-a", "tid": 2, "modified": NOW - timedelta(minutes=50)},
        {"shop_id": "shop-b", "tid": 3, "modified": NOW - timedelta(hours=2)},
    ])
    wh.upsert_trade_orders([{"oid": 11, "tid": 1, "shop_id": "shop-a", "modified": NOW - timedelta(minutes=7)}])
    for shop, end in (("shop-a", NOW - timedelta(minutes=3)), ("shop-a", NOW - timedelta(minutes=18)),
                      ("shop-b", NOW - timedelta(minutes=48))):
        wh.mark_window_complete(shop_id=shop, stream="trades", kind="increment", window_start=end - timedelta(minutes=20),
                                window_end=end, partition_key=None, pages=1, records=1, run_id=None)
    # Historical windows never count as sync lag.
    wh.mark_window_complete(shop_id="shop-c", stream="trades", kind="historical", window_start=NOW - timedelta(days=2),
                            window_end=NOW - timedelta(days=1), partition_key=None, pages=1, records=0, run_id=None)
    wh.add_quarantine([{"quarantined_at": NOW - timedelta(minutes=5), "source": "increment", "shop_id": "shop-a",
                        "record_key": "9", "reason": "bad", "payload": "{}"},
                       {"quarantined_at": NOW - timedelta(days=3), "source": "sold", "shop_id": "shop-a",
                        "record_key": "8", "reason": "bad", "payload": "{}"}])
    wh.record_calls([call(NOW - timedelta(minutes=10), INCREMENT),
                     call(NOW - timedelta(minutes=9), INCREMENT, ok=False, code=15, shop="shop-b"),
                     call(NOW - timedelta(hours=3), SOLD)])   # outside the last hour
    alerts = Alerts(wh, clock=lambda: NOW)
    alerts.open("failure_rate", shop_id="shop-b", key=INCREMENT, message="12 %")
    alerts.open("reconciliation_gap", shop_id="shop-a", key="2026-11-29", message="3 missing")
    alerts.open("reconciliation_gap", shop_id="shop-a", key="2026-11-28", message="1 missing")
    alerts.resolve("reconciliation_gap", shop_id="shop-a", key="2026-11-28")


def scrape(registry: CollectorRegistry) -> tuple[str, Samples]:
    """The exposition text and its samples, read back with prometheus-client's parser."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def registry_for(collector: WarehouseCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def test_every_family_from_a_real_warehouse(wh: Warehouse) -> None:
    populate(wh)
    collector = WarehouseCollector(wh.engine, shops=SHOPS, clock=lambda: NOW, webhook_configured=True)
    registry = registry_for(collector)
    _, first = scrape(registry)
    assert value(first, "ordersync_up") == 1
    assert {labels[0][1]: v for labels, v in named(first, "ordersync_scrape_section_ok").items()} == dict.fromkeys(
        SECTIONS, 1.0)
    # Counters start at the first scrape: the three calls already in the ledger are its baseline.
    assert named(first, "ordersync_api_calls_total") == {}

    wh.record_calls([call(NOW - timedelta(minutes=2), INCREMENT, latency=0.04),
                     call(NOW - timedelta(minutes=2), INCREMENT, latency=0.3, shop="shop-b"),
                     call(NOW - timedelta(minutes=1), INCREMENT, ok=False, code=7, latency=2.0),
                     call(NOW - timedelta(minutes=1), SOLD, ok=False, latency=31.0, kind="ReadTimeout")])
    _, samples = scrape(registry)
    calls = {tuple(v for _, v in labels): n for labels, n in named(samples, "ordersync_api_calls_total").items()}
    # labels sorted by name: code, error_kind, method, outcome
    assert calls == {("", "", INCREMENT, "ok"): 2, ("7", "", INCREMENT, "error"): 1,
                     ("", "ReadTimeout", SOLD, "error"): 1}
    buckets = {dict(labels)["le"]: n for labels, n in named(samples, "ordersync_api_call_latency_seconds_bucket").items()
               if dict(labels)["method"] == INCREMENT}
    assert buckets == {"0.05": 1, "0.1": 1, "0.25": 1, "0.5": 2, "1.0": 2, "2.5": 3, "5.0": 3, "10.0": 3,
                       "30.0": 3, "+Inf": 3}
    assert value(samples, "ordersync_api_call_latency_seconds_count", method=SOLD) == 1
    assert value(samples, "ordersync_api_call_latency_seconds_bucket", method=SOLD, le="30.0") == 0
    assert value(samples, "ordersync_api_call_latency_seconds_sum", method=INCREMENT) == pytest.approx(2.34)
    # A third scrape with nothing new changes nothing (each call counted once).
    _, again = scrape(registry)
    assert named(again, "ordersync_api_calls_total") == named(samples, "ordersync_api_calls_total")

    recent = {tuple(v for _, v in labels): n for labels, n in named(samples, "ordersync_api_calls_recent").items()}
    assert recent == {(INCREMENT, "ok", "shop-a"): 2, (INCREMENT, "error", "shop-b"): 1,
                      (INCREMENT, "ok", "shop-b"): 1, (INCREMENT, "error", "shop-a"): 1,
                      (SOLD, "error", "shop-a"): 1}

    assert named(samples, "ordersync_sync_lag_seconds") == {
        (("shop_id", "shop-a"), ("stream", "trades")): 7 * 60, (("shop_id", "shop-b"), ("stream", "trades")): 2 * 3600}
    assert named(samples, "ordersync_sync_window_lag_seconds") == {
        (("shop_id", "shop-a"), ("stream", "trades")): 3 * 60, (("shop_id", "shop-b"), ("stream", "trades")): 48 * 60}
    assert {dict(k)["table"]: v for k, v in named(samples, "ordersync_table_rows").items()} == {
        "trades": 3, "trade_orders": 1, "trade_details": 0, "refunds": 0}
    assert value(samples, "ordersync_quarantine_records") == 2
    assert named(samples, "ordersync_quarantine_records_recent") == {(("source", "increment"),): 1}
    assert {dict(k)["kind"]: v for k, v in named(samples, "ordersync_alerts_open").items()} == {
        "failure_rate": 1, "reconciliation_gap": 1, "run_failed": 0, "logistics_stall": 0, "quarantine": 0}
    assert value(samples, "ordersync_alerts_undelivered") == 2
    # Without a webhook no alert is ever delivered: no metric to page anyone about it.
    _, no_webhook = scrape(registry_for(WarehouseCollector(wh.engine, shops=SHOPS, clock=lambda: NOW)))
    assert named(no_webhook, "ordersync_alerts_undelivered") == {} and named(no_webhook, "ordersync_alerts_open")
    # The breaker and reconciliation tables are not on this branch yet: nothing is exported for them.
    assert not any(name.startswith(("ordersync_breaker", "ordersync_reconciliation")) for name, _ in samples)


def test_table_row_counts_are_cached_between_scrapes(sqlite_url: str) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    cached = registry_for(WarehouseCollector(wh.engine, shops=SHOPS, clock=lambda: NOW))
    fresh = registry_for(WarehouseCollector(wh.engine, shops=SHOPS, clock=lambda: NOW, table_rows_ttl=0))
    assert value(scrape(cached)[1], "ordersync_table_rows", table="trades") == 0
    wh.upsert_trades([{"shop_id": "shop-a", "tid": 1, "modified": NOW}])
    assert value(scrape(cached)[1], "ordersync_table_rows", table="trades") == 0
    assert value(scrape(fresh)[1], "ordersync_table_rows", table="trades") == 1
    wh.dispose()


def extra_tables(wh: Warehouse) -> tuple[sa.Table, sa.Table]:
    """``breaker_state`` and ``reconciliation_daily``: the migrated warehouse has them (revision 0006)."""
    assert {"breaker_state", "reconciliation_daily"} <= set(sa.inspect(wh.engine).get_table_names())
    return breaker_state, reconciliation_daily


def breaker_row(shop_id: str, state: str, opened_at: datetime | None) -> dict[str, Any]:
    return {"shop_id": shop_id, "api": INCREMENT, "state": state, "opened_at": opened_at, "failure_rate": 0.0,
            "calls": 0, "errors": 0, "calls_after_id": 0, "updated_at": NOW}


def day_row(day: Any, platform: int, warehouse: int, status: str, checked_at: datetime) -> dict[str, Any]:
    return {"shop_id": "shop-a", "stream": "trades", "day": day, "platform_count": platform,
            "warehouse_count": warehouse, "missing_count": 0, "stale_count": 0, "extra_count": 0,
            "pending_count": 0, "refetched_count": 0, "status": status, "checked_at": checked_at}


def test_breaker_and_reconciliation_figures_when_their_tables_exist(wh: Warehouse) -> None:
    breaker, daily = extra_tables(wh)
    day = NOW.date()
    with wh.engine.begin() as conn:
        conn.execute(breaker.insert(), [breaker_row("shop-a", "open", NOW), breaker_row("shop-b", "closed", None)])
        conn.execute(daily.insert(), [
            day_row(day - timedelta(days=d), 100, 100 - (d == 2), "gap" if d == 2 else "ok", NOW - timedelta(days=d))
            for d in range(1, 4)] + [day_row(day - timedelta(days=60), 5, 4, "gap", NOW - timedelta(days=60))])
    collector = WarehouseCollector(wh.engine, shops=SHOPS, clock=lambda: NOW, breaker_table=breaker,
                                   reconciliation_table=daily)
    _, samples = scrape(registry_for(collector))
    assert named(samples, "ordersync_breaker_open") == {
        (("api", INCREMENT), ("shop_id", "shop-a")): 1, (("api", INCREMENT), ("shop_id", "shop-b")): 0}
    assert value(samples, "ordersync_breaker_state", shop_id="shop-a", api=INCREMENT, state="open") == 1
    assert value(samples, "ordersync_reconciliation_gap_days", shop_id="shop-a", stream="trades") == 1  # 60 days ago: out
    assert value(samples, "ordersync_reconciliation_days", shop_id="shop-a", stream="trades", status="ok") == 2
    assert value(samples, "ordersync_reconciliation_last_check_timestamp_seconds", shop_id="shop-a",
                 stream="trades") == (NOW - timedelta(days=1)).timestamp()


def test_a_warehouse_that_is_down_is_up_0_and_never_an_exception(tmp_path: Path) -> None:
    for url in ("postgresql+psycopg://postgres@127.0.0.1:1/none", "mysql+pymysql://root@127.0.0.1:1/none"):
        collector = WarehouseCollector(metrics_engine(url), shops=SHOPS)
        text, samples = scrape(registry_for(collector))
        assert value(samples, "ordersync_up") == 0 and "ordersync_api_calls" not in text


def test_a_warehouse_that_goes_away_and_one_without_tables(pg_url: str, sqlite_url: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    wh = Warehouse(pg_url)
    wh.migrate()
    engine = metrics_engine(pg_url)
    registry = registry_for(WarehouseCollector(engine, shops=SHOPS))
    assert value(scrape(registry)[1], "ordersync_up") == 1
    name = sa.make_url(pg_url).database
    wh.dispose()
    admin = sa.create_engine(sa.make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        assert value(scrape(registry)[1], "ordersync_up") == 0     # gone: still a scrape, up 0
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))         # the fixture drops it again
    admin.dispose()
    engine.dispose()

    # An empty SQLite file: the warehouse answers, every read of a missing table fails on its own.
    caplog.clear()
    with caplog.at_level("WARNING", logger="ordersync.metrics"):
        registry = registry_for(WarehouseCollector(metrics_engine(sqlite_url), shops=SHOPS))
        _, samples = scrape(registry)
        scrape(registry)
    assert value(samples, "ordersync_up") == 1
    assert {dict(k)["section"] for k, v in named(samples, "ordersync_scrape_section_ok").items() if v == 0} == {
        "calls", "recent_calls", "sync_lag", "tables", "quarantine", "alerts", "breaker", "reconciliation"}
    failures = [r.getMessage() for r in caplog.records if "reads failed" in r.getMessage()]
    assert len(failures) == 8  # once each, not once per scrape
    assert failures[0] == ("metrics: calls reads failed (the rest is exported without them): database error: "
                           "no such table: api_calls")


def sqlite_settings(tmp_path: Path, url: str) -> Settings:
    config = OrdersyncConfig.model_validate({
        "gateway": "http://127.0.0.1:1/router/rest", "app_key": "k", "app_secret": "s",
        "shops": [{"shop_id": s, "seller_nick": s, "session": "x"} for s in SHOPS],
        "sync": {"start": "2026-11-29"}})
    return Settings.for_config(config, home=tmp_path, warehouse_url=url, clock=lambda: NOW)


@pytest.fixture
def served(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Warehouse, str]]:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    populate(wh)
    server, _thread, stop = start_metrics_server(sqlite_settings(tmp_path, sqlite_url), port=0)
    yield wh, f"http://127.0.0.1:{server.server_port}/metrics"
    stop()
    wh.dispose()


def test_the_http_endpoint_serves_the_exposition_format(served: tuple[Warehouse, str]) -> None:
    _, url = served
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    assert families["ordersync_up"].samples[0].value == 1
    assert families["ordersync_api_calls"].type == "counter"
    assert families["ordersync_api_call_latency_seconds"].type == "histogram"
    assert families["ordersync_sync_lag_seconds"].type == "gauge"


def test_the_metrics_serve_command(tmp_path: Path, sqlite_url: str) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    populate(wh)
    config = tmp_path / "ordersync.yaml"
    config.write_text("gateway: http://127.0.0.1:1/router/rest\napp_key: k\napp_secret: s\n"
                      "shops: [{shop_id: shop-a, seller_nick: n, session: x}]\nsync: {start: '2026-11-29'}\n")
    env = {**os.environ, "ORDERSYNC_HOME": str(tmp_path / "home"), "ORDERSYNC_WAREHOUSE_URL": sqlite_url}
    proc = subprocess.Popen([sys.executable, "-m", "ordersync_pipeline.cli", "metrics", "serve", "--config",
                             str(config), "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving Prometheus metrics of {sqlite_url} on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert 'ordersync_sync_lag_seconds{shop_id="shop-a",stream="trades"}' in text
        assert "ordersync_up 1.0" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    wh.dispose()
    # A port in use is one line, not a traceback.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "ordersync_pipeline.cli", "metrics", "serve", "--config",
                               str(config), "--port", str(port)], env=env, capture_output=True, text=True,
                              timeout=60)
    assert busy.returncode == 1
    assert busy.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"), busy.stderr
    assert "Traceback" not in busy.stderr
