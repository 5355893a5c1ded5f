"""replenishment_suggestions: the formula, pack-size rounding, never negative, frozen stock, and every bad-input rule."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest

from ordersync_pipeline.forecast.replenish import ReplenishSettings, replenishment_suggestions

AS_OF = date(2026, 11, 29)
Z80 = 1.2815515655446004


def forecast(sku: str, units: list[float], *, spread: float = 0.0, model: str = "ets_ana",
             shop: str = "shop-1") -> pd.DataFrame:
    return pd.DataFrame({"shop_id": shop, "sku_key": sku, "as_of": AS_OF,
                         "target_day": [AS_OF + timedelta(days=k + 1) for k in range(len(units))],
                         "units": units, "lower": [max(u - spread / 2, 0) for u in units],
                         "upper": [u + spread / 2 for u in units], "model": model, "note": ""})


def stock(*rows: tuple[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"shop_id": "shop-1", "sku_key": [r[0] for r in rows], "quantity": [r[1] for r in rows]})


def one(frame: pd.DataFrame, sku: str) -> pd.Series:
    rows = frame[frame["sku_key"] == sku]
    assert len(rows) == 1
    return rows.iloc[0]


def test_formula_lead_time_demand_plus_safety_stock_minus_available() -> None:
    fc = forecast("sku:a", [10.0] * 7, spread=2 * Z80 * 2.0)  # daily standard deviation 2
    out = replenishment_suggestions(fc, stock(("sku:a", 20)), settings=ReplenishSettings(lead_time_days=5,
                                                                                         service_level=0.95))
    row = one(out, "sku:a")
    safety = 1.6448536269514722 * math.sqrt(5 * 2.0 ** 2)
    assert row["forecast_lead_time"] == pytest.approx(50.0)
    assert row["safety_stock"] == pytest.approx(safety, abs=0.01)
    assert row["suggested_qty"] == math.ceil(50 + safety - 20)
    assert row["available"] == 20 and row["lead_time_days"] == 5 and row["service_level"] == 0.95
    assert row["reason"].startswith("order 38 to cover 5 days of forecast demand; available 20 covers 2 days")
    assert list(out.columns)[:12] == ["shop_id", "sku_key", "as_of", "on_hand", "frozen", "available",
                                      "forecast_lead_time", "safety_stock", "lead_time_days", "service_level",
                                      "suggested_qty", "reason"]


def test_pack_size_rounds_up_and_overstock_orders_nothing() -> None:
    fc = pd.concat([forecast("sku:a", [3.0] * 7), forecast("sku:b", [3.0] * 7), forecast("sku:c", [3.0] * 7)])
    settings = ReplenishSettings(lead_time_days=7, pack_size=12, pack_sizes={"sku:c": 5})
    out = replenishment_suggestions(fc, stock(("sku:a", 0), ("sku:b", 500), ("sku:c", 0)), settings=settings)
    assert one(out, "sku:a")["suggested_qty"] == 24  # 21 needed -> two packs of 12
    assert "(2 packs of 12)" in one(out, "sku:a")["reason"]
    assert one(out, "sku:b")["suggested_qty"] == 0
    assert one(out, "sku:b")["reason"].endswith(": no order")
    assert "covers 166+ days" not in one(out, "sku:b")["reason"] and "covers 166 days" in one(out, "sku:b")["reason"]
    assert one(out, "sku:c")["suggested_qty"] == 25  # per-SKU pack size
    assert (out["suggested_qty"] >= 0).all()


def test_frozen_presale_stock_is_not_available_and_is_named_in_the_reason() -> None:
    fc = forecast("sku:a", [2.0] * 7)
    freezes = pd.DataFrame({"shop_id": "shop-1", "sku_key": ["sku:a", "sku:a", "sku:a"], "quantity": [10, 2, 50],
                            "released_at": [None, None, datetime(2026, 11, 28, tzinfo=timezone.utc)]})
    out = replenishment_suggestions(fc, stock(("sku:a", 20)), freezes)
    row = one(out, "sku:a")
    assert row["frozen"] == 12 and row["available"] == 8 and row["on_hand"] == 20
    assert row["suggested_qty"] == 6
    assert row["reason"].endswith("; 12 frozen by presale")


def test_lead_time_beyond_the_forecast_repeats_the_week() -> None:
    fc = forecast("sku:a", [1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 4.0])
    out = replenishment_suggestions(fc, stock(("sku:a", 0)), settings=ReplenishSettings(lead_time_days=9))
    assert one(out, "sku:a")["forecast_lead_time"] == pytest.approx(13 + 2)


def test_no_history_and_stock_without_any_forecast_suggest_nothing() -> None:
    fc = pd.concat([forecast("sku:new", [0.0] * 7, model="no_history"), forecast("sku:a", [1.0] * 7)])
    out = replenishment_suggestions(fc, stock(("sku:new", 3), ("sku:orphan", 4), ("sku:a", 0)))
    for sku in ("sku:new", "sku:orphan"):
        row = one(out, sku)
        assert row["suggested_qty"] == 0 and row["model"] == "no_history"
        assert row["reason"].startswith("no sale in the history window")
    assert one(out, "sku:orphan")["as_of"] == AS_OF


def test_left_catalogue_is_not_reordered() -> None:
    out = replenishment_suggestions(forecast("sku:gone", [0.0] * 7, model="left_catalogue"), stock(("sku:gone", 0)))
    assert one(out, "sku:gone")["suggested_qty"] == 0
    assert one(out, "sku:gone")["reason"] == "left the catalogue: not reordered"


def test_missing_inventory_orders_nothing_but_states_the_need() -> None:
    out = replenishment_suggestions(forecast("sku:a", [5.0] * 7), stock(("sku:other", 1)))
    row = one(out, "sku:a")
    assert row["suggested_qty"] == 0 and pd.isna(row["on_hand"]) and pd.isna(row["available"])
    assert row["reason"].startswith("no inventory snapshot: on hand unknown, nothing suggested; "
                                    "7-day lead time needs 35.0")
    none_at_all = replenishment_suggestions(forecast("sku:a", [5.0] * 7), None)
    assert one(none_at_all, "sku:a")["suggested_qty"] == 0


def test_negative_stock_is_taken_as_zero() -> None:
    out = replenishment_suggestions(forecast("sku:a", [1.0] * 7), stock(("sku:a", -3)))
    row = one(out, "sku:a")
    assert row["on_hand"] == 0 and row["suggested_qty"] == 7
    assert row["reason"].endswith("snapshot quantity -3 taken as 0")


def test_latest_snapshot_per_sku_and_raw_id_columns() -> None:
    inventory = pd.DataFrame({"shop_id": "shop-1", "num_iid": [9, 9], "sku_id": [5001, 5001],
                              "quantity": [100, 3],
                              "taken_at": [datetime(2026, 11, 29, 1, tzinfo=timezone.utc),
                                           datetime(2026, 11, 29, 9, tzinfo=timezone.utc)]})
    out = replenishment_suggestions(forecast("sku:5001", [1.0] * 7), inventory)
    assert one(out, "sku:5001")["on_hand"] == 3


def test_bad_settings_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="service_level must be within"):
        ReplenishSettings(service_level=1.0)
    with pytest.raises(ValueError, match="pack sizes must be >= 1"):
        ReplenishSettings(pack_sizes={"sku:a": 0})
    with pytest.raises(ValueError, match="lead_time_days must be >= 1"):
        ReplenishSettings(lead_time_days=0)
