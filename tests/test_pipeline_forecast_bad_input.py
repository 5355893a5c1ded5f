"""Bad input through the real daily forecast assets (materialised with the Dagster definitions over a real
warehouse): a listed SKU with no sales, a SKU that left the catalogue, a shop without any inventory
snapshot, a presale freeze larger than the stock, a negative snapshot quantity. Each is handled by its
stated rule, visible in ``model`` or ``reason``, and the run succeeds."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from pipeline_support import sim_settings

from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.forecast import FORECAST_JOB
from ordersync_pipeline.forecast.daily import rebuild_freezes
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import inventory_snapshots

DAY = (datetime.now(SHANGHAI) - timedelta(days=2)).date()
ITEM = 600_000_000_000


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=5, shops=2, orders_per_day=5, history_days=1)) as s:
        yield s


def _trade(tid: int, shop: str, day: date, lines: list[tuple[int, str | None, int]], *, ttype: str = "fixed",
           step: str | None = None) -> dict[str, Any]:
    at = datetime(day.year, day.month, day.day, 12, tzinfo=SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    trade: dict[str, Any] = {"tid": tid, "status": "TRADE_FINISHED", "type": ttype, "created": at, "modified": at,
                             "pay_time": at, "payment": "10.00", "orders": [
                                 {"oid": tid * 10 + i, "num_iid": num_iid, "sku_id": sku, "num": num,
                                  "payment": "10.00", "price": "10.00", "title": "t"}
                                 for i, (num_iid, sku, num) in enumerate(lines)]}
    if step is not None:
        trade.update(status="WAIT_BUYER_PAY", step_trade_status=step)
        trade.pop("pay_time")
    return trade


def _load(wh: Warehouse, shop: str, trades: list[dict[str, Any]]) -> None:
    now = datetime.now(timezone.utc)
    batch = normalize_trades(shop, trades, fetched_at=now, synced_at=now, source="sold")
    assert not batch.quarantine
    wh.upsert_trades_with_orders(batch.trades, batch.orders)


def test_bad_input_is_stated_in_model_and_reason_never_a_crash(sim: Simulator, tmp_path: Path,
                                                               sqlite_url: str) -> None:
    settings = sim_settings(sim, tmp_path, sqlite_url)
    wh = Warehouse(sqlite_url)
    wh.migrate()
    trades, tid = [], 1
    noise = random.Random(11)
    for back in range(42):  # six weeks of daily sales of SKU "1" (stocked) and "3" (no longer listed)
        day = DAY - timedelta(days=back)
        units = (4, 4, 5, 5, 6, 9, 8)[day.weekday()] + noise.randint(-2, 2)
        trades.append(_trade(tid, "shop-1", day, [(ITEM + 1, "1", units), (ITEM + 3, "3", 2)]))
        tid += 1
        trades.append(_trade(tid, "shop-2", day, [(ITEM + 9, "9", 4)]))  # shop-2 has no snapshot at all
        tid += 1
    _load(wh, "shop-1", [t for t in trades if t["orders"][0]["num_iid"] != ITEM + 9])
    _load(wh, "shop-2", [t for t in trades if t["orders"][0]["num_iid"] == ITEM + 9])
    # An open presale on SKU "4": more frozen than its (negative) stock.
    _load(wh, "shop-1", [_trade(tid, "shop-1", DAY, [(ITEM + 4, "4", 5)], ttype="step",
                                step="FRONT_PAID_FINAL_NOPAID")])
    rebuild_freezes(wh, ["shop-1", "shop-2"])
    taken = datetime.now(timezone.utc)
    with wh.engine.begin() as conn:
        conn.execute(sa.insert(inventory_snapshots), [
            {"shop_id": "shop-1", "num_iid": ITEM + n, "sku_id": sku, "quantity": q, "taken_at": taken}
            for n, sku, q in ((1, "1", 10), (2, "2", 50), (4, "4", -3))])

    result = build_definitions(settings).resolve_job_def(FORECAST_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=DAY.isoformat(), raise_on_error=False)
    assert result.success
    with wh.engine.connect() as conn:
        models = dict(conn.execute(sa.text(
            "SELECT shop_id || '/' || sku_key, MIN(model) FROM sales_forecast GROUP BY shop_id, sku_key")).all())
        reasons = {f"{s}/{k}": (q, r, h, f, a) for s, k, q, r, h, f, a in conn.execute(sa.text(
            "SELECT shop_id, sku_key, suggested_qty, reason, on_hand, frozen, available "
            "FROM replenishment_suggestions"))}
    assert models["shop-1/sku:2"] == "no_history"            # listed, never sold
    assert models["shop-1/sku:3"] == "left_catalogue"        # sold, no longer listed
    assert models["shop-2/sku:9"] not in ("no_history", "left_catalogue")  # catalogue unknown: forecast
    assert models["shop-1/sku:1"] not in ("no_history", "left_catalogue")
    assert "no sale in the history window" in reasons["shop-1/sku:2"][1] and reasons["shop-1/sku:2"][0] == 0
    assert "left the catalogue" in reasons["shop-1/sku:3"][1] and reasons["shop-1/sku:3"][0] == 0
    assert "no inventory snapshot" in reasons["shop-2/sku:9"][1] and reasons["shop-2/sku:9"][0] == 0
    assert reasons["shop-1/sku:1"][0] > 0 and "order" in reasons["shop-1/sku:1"][1]
    qty, reason, on_hand, frozen, available = reasons["shop-1/sku:4"]
    assert (on_hand, frozen, available, qty) == (0, 5, -5, 0)
    assert "snapshot quantity -3 taken as 0" in reason and "5 frozen by presale" in reason
    # Six weeks of history: the backtest is evaluated (two of the SKUs sell the same every day, which
    # seasonal naive forecasts perfectly, so whether the model wins here is not the point).
    check = result.get_asset_check_evaluations()[0]
    assert "model WAPE" in (check.description or "")
    assert {"model_wape", "seasonal_naive_wape", "moving_average_wape", "coverage"} <= set(check.metadata)
    wh.dispose()


def test_the_backtest_check_passes_on_simulator_demand_and_says_why_when_it_cannot_run() -> None:
    from ordersync_pipeline.defs.forecast import backtest_check
    from ordersync_pipeline.forecast.frames import order_lines_from_trades
    from ordersync_pipeline.forecast.sales import build_daily_sales
    from ordersync_pipeline.timeutil import GMT8

    settings = SimulatorSettings(seed=7, shops=1, orders_per_day=200, history_days=56, clock="stepped",
                                 start_at=datetime(2026, 11, 30, 6, 0, tzinfo=GMT8))
    with start_simulator(settings) as sim:
        shop = sim.shops[0].shop_id
        lines = order_lines_from_trades(shop, sim.world.trades(shop))
    end = date(2026, 11, 29)
    daily = build_daily_sales(lines, None, start=end - timedelta(days=55), end=end).frame
    check = backtest_check(daily, end)
    assert check.passed, check.description
    figures = {k: v.value for k, v in check.metadata.items()}  # type: ignore[union-attr]
    assert figures["model_wape"] < figures["seasonal_naive_wape"] and 0 < figures["coverage"] <= 1
    short = backtest_check(daily[daily["day"] > end - timedelta(days=20)], end)
    assert not short.passed and "not evaluated" in (short.description or "")


def test_a_refund_after_the_sale_day_gives_a_negative_net_day_clipped_by_a_stated_rule(
        sim: Simulator, tmp_path: Path, sqlite_url: str) -> None:
    settings = sim_settings(sim, tmp_path, sqlite_url)
    wh = Warehouse(sqlite_url)
    wh.migrate()
    trades = [_trade(100 + back, "shop-1", DAY - timedelta(days=back), [(ITEM + 1, "1", 4)]) for back in range(21)]
    sold = DAY - timedelta(days=3)   # three units of SKU "5" sold, refunded on DAY
    trades.append(_trade(200, "shop-1", sold, [(ITEM + 5, "5", 3)]))
    _load(wh, "shop-1", trades)
    refunded = datetime(DAY.year, DAY.month, DAY.day, 15, tzinfo=SHANGHAI)
    now = datetime.now(timezone.utc)
    wh.upsert("refunds", [{"refund_id": 9001, "shop_id": "shop-1", "tid": 200, "oid": 2000, "status": "SUCCESS",
                           "refund_fee": Decimal("10.00"), "modified": refunded, "created": refunded,
                           "synced_at": now, "fetched_at": now}])
    result = build_definitions(settings).resolve_job_def(FORECAST_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=DAY.isoformat(), raise_on_error=False)
    assert result.success
    with wh.engine.connect() as conn:
        net = conn.execute(sa.text("SELECT units_net FROM daily_sales WHERE sku_key = 'sku:5' AND day = :d"),
                           {"d": DAY.isoformat()}).scalar_one()
        units = conn.execute(sa.text("SELECT MIN(lower), MIN(units) FROM sales_forecast WHERE sku_key = 'sku:5'")).one()
    assert net == -3 and units[0] >= 0 and units[1] >= 0
    meta = result.asset_materializations_for_node("sales_forecast")[0].metadata
    assert meta["skus_with_negative_days_clipped"].value == 1
    assert "negative net day(s) clipped to 0" in meta["sku_notes"].value
    wh.dispose()
