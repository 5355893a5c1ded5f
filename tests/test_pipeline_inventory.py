"""Inventory snapshots, the presale freeze and the daily forecast assets through the real Dagster definitions:
snapshot rows equal the simulator's stock and join trade_orders, the latest view, re-runs, per-shop
failures, the day's sales/forecast/suggestions tables with the issue's columns, the report, and the
definitions (jobs, schedules, partitions) as data."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from pipeline_support import ANCHOR, HISTORY_DAYS, history_keys, query, run, sim_config, sim_settings

from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.forecast import (BACKTEST_CHECK, FORECAST_JOB, FORECAST_SCHEDULE, INVENTORY_JOB,
                                              INVENTORY_SCHEDULE)
from ordersync_pipeline.forecast.keys import sku_keys
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.timeutil import now as host_now

SHOPS = ["shop-1", "shop-2"]
DAY = (ANCHOR - timedelta(days=1)).date()   # the last historical day


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=3, shops=2, orders_per_day=60, history_days=HISTORY_DAYS)) as s:
        yield s


def _settings(sim: Simulator, home: Path, url: str, **forecast: Any) -> Settings:
    settings = sim_settings(sim, home, url)
    if forecast:
        cfg = settings.config.model_copy(update={"forecast": settings.config.forecast.model_copy(update=forecast)})
        settings = Settings.for_config(cfg, home=home, warehouse_url=url, lake_root=str(home / "lake"),
                                       anchor=settings.anchor)
    return settings


def _job(settings: Settings, name: str, instance: dg.DagsterInstance, **kwargs: Any) -> dg.ExecuteInProcessResult:
    defs = build_definitions(settings)
    return defs.resolve_job_def(name).execute_in_process(instance=instance, raise_on_error=False, **kwargs)


def test_the_forecast_definitions_as_data(sim: Simulator, tmp_path: Path) -> None:
    defs = build_definitions(_settings(sim, tmp_path, f"sqlite:///{tmp_path / 'w.db'}", inventory_cron="*/30 * * * *"))
    dg.Definitions.validate_loadable(defs)
    inventory = defs.resolve_schedule_def(INVENTORY_SCHEDULE)
    assert (inventory.cron_schedule, inventory.execution_timezone, inventory.job_name) == (
        "*/30 * * * *", "Asia/Shanghai", INVENTORY_JOB)
    daily = defs.resolve_schedule_def(FORECAST_SCHEDULE)
    assert (daily.cron_schedule, daily.execution_timezone, daily.job_name) == (
        "0 2 * * *", "Asia/Shanghai", FORECAST_JOB)
    assert daily.default_status == dg.DefaultScheduleStatus.RUNNING
    for asset in ("daily_sales", "sales_forecast", "replenishment_suggestions"):
        days = defs.resolve_assets_def(asset).partitions_def
        assert isinstance(days, dg.DailyPartitionsDefinition) and days.timezone == "Asia/Shanghai"
        assert days.get_last_partition_key() == ANCHOR.date().isoformat()  # yesterday
    graph = defs.resolve_asset_graph()
    assert dg.AssetCheckKey(dg.AssetKey("sales_forecast"), BACKTEST_CHECK) in graph.asset_check_keys
    deps = {k.to_user_string() for k in graph.get(dg.AssetKey("replenishment_suggestions")).parent_keys}
    assert deps == {"sales_forecast", "inventory_freeze", "inventory_snapshots"}
    context = dg.build_schedule_context(scheduled_execution_time=ANCHOR + timedelta(days=1, hours=2),
                                        repository_def=defs.get_repository_def())
    request = daily.evaluate_tick(context).run_requests
    assert request is not None and [r.partition_key for r in request] == [ANCHOR.date().isoformat()]


def test_inventory_snapshot_rows_equal_the_platform_stock_and_join_trade_orders(
        sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(sim, tmp_path, sqlite_url)
    instance = dg.DagsterInstance.ephemeral()
    run(settings, "historical", shops=SHOPS, time_keys=history_keys(), instance=instance)
    result = _job(settings, INVENTORY_JOB, instance)
    assert result.success
    for shop in SHOPS:
        truth = {(int(item["num_iid"]), str(sku["sku_id"])): int(sku["quantity"])
                 for item in sim.world.inventory(shop) for sku in item["skus"]}
        rows = query(sqlite_url, "SELECT num_iid, sku_id, quantity FROM inventory_latest WHERE shop_id = :s", s=shop)
        # The simulator's stock follows a sawtooth in time; the run took its snapshot moments ago.
        assert {(int(n), str(s)) for n, s, _ in rows} == set(truth)
        assert sum(abs(q - truth[(int(n), str(s))]) for n, s, q in rows) <= len(rows) * 2
    joined = query(sqlite_url, "SELECT COUNT(*) FROM trade_orders o JOIN inventory_latest i ON i.shop_id = o.shop_id "
                               "AND i.num_iid = o.num_iid AND i.sku_id = o.sku_id")
    lines = query(sqlite_url, "SELECT COUNT(*) FROM trade_orders")
    assert joined[0][0] == lines[0][0] > 0
    # The same snapshot loaded again replaces its rows; a later one is a second dated copy, and the view
    # shows only the newest per shop.
    at = host_now().replace(microsecond=0)
    for clock in (at, at, at + timedelta(hours=1)):
        assert _job(dataclasses.replace(settings, clock=lambda clock=clock: clock), INVENTORY_JOB, instance).success
    taken = query(sqlite_url, "SELECT shop_id, taken_at, COUNT(*) FROM inventory_snapshots GROUP BY shop_id, taken_at")
    copies: dict[str, list[int]] = {}
    for shop, _, n in sorted(taken):
        copies.setdefault(shop, []).append(n)
    # the first run's copy (unless it fell in the same second as ``at``), ``at`` once, ``at`` + 1 h
    assert all(len(set(ns)) == 1 and len(ns) in (2, 3) for ns in copies.values())
    newest = query(sqlite_url, "SELECT DISTINCT taken_at FROM inventory_latest")
    assert len(newest) == 1 and str(newest[0][0]).startswith((at + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"))
    per_sku = query(sqlite_url, "SELECT shop_id, num_iid, sku_id, COUNT(*) FROM inventory_latest "
                                "GROUP BY shop_id, num_iid, sku_id HAVING COUNT(*) > 1")
    assert per_sku == []
    meta = result.asset_materializations_for_node("inventory_snapshots")[0].metadata
    assert meta["rows"].value == sum(len(sku) for sku in [
        [s for item in sim.world.inventory(shop) for s in item["skus"]] for shop in SHOPS])


def test_a_shop_whose_snapshot_fails_fails_alone(sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    settings = sim_settings(sim, tmp_path, sqlite_url, session="not-a-session")
    cfg = settings.config.model_copy(deep=True)
    cfg.shops[1].session = sim.config().shops[1].session
    settings = Settings.for_config(cfg, home=tmp_path, warehouse_url=sqlite_url, anchor=settings.anchor)
    result = _job(settings, INVENTORY_JOB, dg.DagsterInstance.ephemeral())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "1 of 2 shop snapshots failed" in str(failure.step_failure_data.user_failure_data.description)
    assert "not-a-session" not in str(failure.step_failure_data.user_failure_data.description)
    landed = query(sqlite_url, "SELECT DISTINCT shop_id FROM inventory_snapshots")
    assert landed == [("shop-2",)]


def test_the_day_runs_sales_forecast_and_suggestions_with_the_issue_columns(
        sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(sim, tmp_path, sqlite_url, lead_time_days=5, pack_size=6)
    instance = dg.DagsterInstance.ephemeral()
    run(settings, "historical", shops=SHOPS, time_keys=history_keys(), instance=instance)
    assert _job(settings, INVENTORY_JOB, instance).success
    result = _job(settings, FORECAST_JOB, instance, partition_key=DAY.isoformat())
    assert result.success
    engine = sa.create_engine(sqlite_url)
    cols = {t: [c["name"] for c in sa.inspect(engine).get_columns(t)] for t in
            ("daily_sales", "sales_forecast", "replenishment_suggestions", "inventory_snapshots", "inventory_freeze")}
    assert cols["daily_sales"] == ["shop_id", "sku_key", "day", "units_gross", "units_net", "revenue_gross",
                                   "revenue_net", "orders", "promo_day"]
    assert cols["sales_forecast"] == ["shop_id", "sku_key", "as_of", "target_day", "units", "lower", "upper", "model"]
    assert cols["replenishment_suggestions"] == [
        "shop_id", "sku_key", "as_of", "on_hand", "frozen", "available", "forecast_lead_time", "safety_stock",
        "lead_time_days", "service_level", "suggested_qty", "reason"]
    assert cols["inventory_snapshots"] == ["shop_id", "num_iid", "sku_id", "outer_iid", "outer_sku_id", "title",
                                           "quantity", "price", "approve_status", "taken_at"]
    assert cols["inventory_freeze"] == ["shop_id", "tid", "oid", "sku_key", "quantity", "frozen_at", "released_at",
                                        "release_reason"]
    # Every active SKU has a row for every day of the window, zeros included.
    days = query(sqlite_url, "SELECT shop_id, sku_key, COUNT(*) FROM daily_sales GROUP BY shop_id, sku_key")
    assert days and {n for _, _, n in days} == {settings.config.forecast.history_days}
    forecast = query(sqlite_url, "SELECT as_of, target_day, units, lower, upper, model FROM sales_forecast")
    assert forecast and all(0 <= lo <= u <= up for _, _, u, lo, up, _ in forecast)
    assert {str(a) for a, *_ in forecast} == {DAY.isoformat()}
    skus = query(sqlite_url, "SELECT COUNT(DISTINCT shop_id || sku_key) FROM sales_forecast")[0][0]
    assert len(forecast) == 7 * skus
    listed = query(sqlite_url, "SELECT COUNT(*) FROM inventory_latest")[0][0]
    assert skus >= listed  # every listed SKU is forecast (no_history when it never sold)
    suggestions = query(sqlite_url, "SELECT suggested_qty, lead_time_days, reason, on_hand, frozen, available "
                                    "FROM replenishment_suggestions")
    assert suggestions and all(q >= 0 and q % 6 == 0 and lt == 5 and r for q, lt, r, *_ in suggestions)
    assert all(a == h - f for *_, h, f, a in suggestions if h is not None)
    meta = result.asset_materializations_for_node("replenishment_suggestions")[0].metadata
    markdown = meta["top_suggestions"].value
    assert "data:image/svg+xml;base64," in markdown or "No reorder" in markdown
    report = tmp_path / "reports" / DAY.isoformat() / "suggestions.md"
    assert report.exists() and "Replenishment suggestions" in report.read_text(encoding="utf-8")
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == BACKTEST_CHECK and not check.passed  # two days of history: not evaluated
    assert "not evaluated" in (check.description or "")
    # Re-running the day replaces its rows instead of adding to them.
    before = {t: query(sqlite_url, f"SELECT COUNT(*) FROM {t}")[0][0]
              for t in ("daily_sales", "sales_forecast", "replenishment_suggestions")}
    assert _job(settings, FORECAST_JOB, instance, partition_key=DAY.isoformat()).success
    assert before == {t: query(sqlite_url, f"SELECT COUNT(*) FROM {t}")[0][0] for t in before}


def test_snapshot_sku_keys_match_the_sales_keys(sim: Simulator) -> None:
    from ordersync_pipeline.forecast.frames import inventory_from_items, order_lines_from_trades

    shop = SHOPS[0]
    stock = set(sku_keys(inventory_from_items(shop, sim.world.inventory(shop))))
    sold = set(sku_keys(order_lines_from_trades(shop, sim.world.trades(shop))).dropna())
    assert sold and sold <= stock



def test_ordersync_sync_ends_with_the_snapshot_freeze_and_forecast_of_the_latest_day(
        sim: Simulator, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ordersync_pipeline.app.sync import latest_complete_day, run_sync

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    now = host_now().astimezone(SHANGHAI)
    start = now.replace(minute=now.minute // 15 * 15, second=0, microsecond=0) - timedelta(minutes=30)
    cfg = sim_config(sim, sync={"start": start.isoformat(), "history_days": 1})
    settings = Settings.for_config(cfg, home=tmp_path, warehouse_url=sqlite_url, lake_root=str(tmp_path / "lake"))
    report = run_sync(settings, echo=lambda _: None, show_progress=False)
    assert report.success, report.render()
    names = [run.name for run in report.runs]
    day = latest_complete_day(host_now())
    assert names[-2:] == ["inventory snapshot+freeze", f"forecast {day.isoformat()}"]
    stock = report.stock
    assert stock is not None and stock.day == day.isoformat()
    listed = sum(len(item["skus"]) for shop in SHOPS for item in sim.world.inventory(shop))
    assert stock.skus_listed == listed and 0 < stock.skus_in_stock <= listed
    text = report.render()
    assert "stock and replenishment" in text and "SKUs in stock:" in text and "backtest:" in text
    assert query(sqlite_url, "SELECT COUNT(*) FROM replenishment_suggestions WHERE as_of = :d",
                 d=day.isoformat())[0][0] > 0


def test_snapshot_freeze_and_a_two_day_backfill_in_one_run_on_every_backend(
        sim: Simulator, tmp_path: Path, any_warehouse_url: str) -> None:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ordersync_pipeline.warehouse.tables import (daily_sales, inventory_freeze, inventory_snapshots,
                                                     replenishment_suggestions, sales_forecast)

    settings = _settings(sim, tmp_path, any_warehouse_url, history_days=14)
    instance = dg.DagsterInstance.ephemeral()
    run(settings, "historical", shops=SHOPS, time_keys=history_keys(), instance=instance)
    assert _job(settings, INVENTORY_JOB, instance).success
    first, last = (DAY - timedelta(days=1)).isoformat(), DAY.isoformat()
    tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
    result = _job(settings, FORECAST_JOB, instance, tags=tags)
    assert result.success
    assert len([r for r in instance.get_runs() if r.job_name == FORECAST_JOB]) == 1
    keys = {m.partition for m in result.asset_materializations_for_node("sales_forecast")}
    assert keys == {first, last}
    engine = sa.create_engine(any_warehouse_url)
    with engine.connect() as conn:
        def count(table: sa.Table, *where: Any) -> int:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())

        listed = count(sa.table("inventory_latest"))
        assert listed == count(inventory_snapshots) == sum(
            len(s) for shop in SHOPS for s in (x["skus"] for x in sim.world.inventory(shop)))
        assert count(inventory_freeze) > 0  # the simulator's presales (7 % of trades) hold stock
        assert count(daily_sales) == count(daily_sales, daily_sales.c.day <= DAY) > 0
        for day in (DAY - timedelta(days=1), DAY):
            assert count(sales_forecast, sales_forecast.c.as_of == day) >= 7 * listed
            assert count(replenishment_suggestions, replenishment_suggestions.c.as_of == day) >= listed
        promo = conn.execute(sa.select(daily_sales.c.promo_day).limit(1)).scalar_one()
        assert promo in (True, False)
    engine.dispose()
