"""Rolling-origin backtest: its mechanics on exact series, and the model beating seasonal naive on simulator demand."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.backtest import run_backtest
from ordersync_pipeline.forecast.frames import order_lines_from_trades, refunds_from_records
from ordersync_pipeline.forecast.sales import build_daily_sales
from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import GMT8

END = date(2026, 11, 29)


def test_backtest_origins_points_and_metrics_on_a_constant_series() -> None:
    days = [END - timedelta(days=k) for k in range(89, -1, -1)]
    frame = pd.DataFrame({"shop_id": "s", "sku_key": "a", "day": days, "units_gross": 6, "units_net": 6,
                          "promo_day": False})
    bt = run_backtest(frame)
    assert bt.origins == [END - timedelta(days=28), END - timedelta(days=21), END - timedelta(days=14),
                          END - timedelta(days=7)]
    assert len(bt.points) == 28 and sorted(bt.points["day"].unique().tolist()) == list(
        range((END - date(1970, 1, 1)).days - 27, (END - date(1970, 1, 1)).days + 1))
    for method in ("model", "seasonal_naive", "moving_average"):
        assert bt.figure(method) < 0.01
    assert bt.figure("model", "coverage") == 1.0


def test_backtest_scores_a_known_error_exactly() -> None:
    # Alternating weeks of 10 and 20 per day: seasonal naive is always off by 10, the 28-day average by 5.
    units = np.array([10 if (k // 7) % 2 == 0 else 20 for k in range(84)])
    days = [END - timedelta(days=83 - k) for k in range(84)]
    frame = pd.DataFrame({"shop_id": "s", "sku_key": "a", "day": days, "units_gross": units, "units_net": units,
                          "promo_day": False})
    bt = run_backtest(frame)
    assert abs(bt.figure("seasonal_naive") - 10 / 15) < 1e-9
    assert abs(bt.figure("moving_average") - 5 / 15) < 1e-9
    summary = bt.summary.set_index(["scope", "method"])
    assert summary.loc[("all days", "model"), "points"] == 28


def test_model_beats_seasonal_naive_on_simulator_demand() -> None:
    settings = SimulatorSettings(seed=7, shops=1, orders_per_day=200, history_days=120, clock="stepped",
                                 start_at=datetime(2026, 11, 30, 6, 0, tzinfo=GMT8))
    with start_simulator(settings) as sim:
        shop = sim.shops[0].shop_id
        lines = order_lines_from_trades(shop, sim.world.trades(shop))
        refunds = refunds_from_records(shop, sim.world.refunds(shop))
    daily = build_daily_sales(lines, refunds, end=END).frame
    bt = run_backtest(daily)
    model, naive = bt.figure("model"), bt.figure("seasonal_naive")
    assert bt.improvement >= 0.15, bt.summary.to_string()
    assert model < bt.figure("moving_average"), bt.summary.to_string()
    assert 0.65 <= bt.figure("model", "coverage") <= 0.95, bt.summary.to_string()
    # the simulator's promotion day (two days before the start) is in the last fold and is flagged
    assert bt.points["promo_day"].any()
    assert bt.figure("model", scope="non-promotion days") < model < naive
