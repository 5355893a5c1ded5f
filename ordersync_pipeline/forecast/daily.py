"""One day's forecast run over the warehouse, step by step, for the Dagster assets and ``ordersync sync``.

    rebuild_freezes(wh, shops)                     trades -> inventory_freeze (replaced per shop)
    run_daily_sales(wh, shops, day, cfg)           trade_orders+trades+refunds -> daily_sales (window),
                                                   grouped in the database (sql_sales.py)
    run_sales_forecast(wh, shops, day, cfg)        daily_sales -> sales_forecast (as_of = day)
    backtest_day(daily, day)                       daily_sales -> model vs seasonal naive vs moving average
    run_suggestions(wh, shops, day, cfg, reports)  forecast + inventory_latest + open freezes ->
                                                   replenishment_suggestions, Markdown + SVG report

``day`` is an Asia/Shanghai calendar day, the last complete one normally. ``daily_sales`` is rebuilt over
the ``history_days`` up to ``day`` each time (a refund today changes an earlier day's net, and the
forecast reads the whole window). Stock is the newest inventory snapshot whatever ``day`` is: a
snapshot records what is on hand now, and a reorder is placed now.

Bad data never raises here (forecast/ states the rules): a shop without any inventory snapshot gets its
SKUs forecast (catalogue unknown) and "no inventory snapshot" suggestions; SKUs of the snapshot with no
sales are ``no_history``; SKUs sold but no longer listed are ``left_catalogue``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ordersync_pipeline.config import ForecastConfig
from ordersync_pipeline.forecast import store
from ordersync_pipeline.forecast.charts import forecast_chart_svg, suggestions_markdown, svg_data_uri, write_report
from ordersync_pipeline.forecast.freeze import presale_freezes
from ordersync_pipeline.forecast.keys import sku_keys
from ordersync_pipeline.forecast.replenish import ReplenishSettings, replenishment_suggestions
from ordersync_pipeline.forecast.sales import DailySales
from ordersync_pipeline.forecast.sql_sales import daily_sales_in_warehouse
from ordersync_pipeline.warehouse import Warehouse

if TYPE_CHECKING:
    from ordersync_pipeline.forecast.backtest import Backtest

__all__ = ["FreezeResult", "ForecastResult", "SuggestionResult", "rebuild_freezes", "run_daily_sales",
           "run_sales_forecast", "backtest_day", "run_suggestions", "history_window", "MIN_BACKTEST_DAYS"]

# A backtest scores 4 weekly origins (28 days) and needs at least a week of history before the first.
MIN_BACKTEST_DAYS = 35


@dataclass(frozen=True)
class FreezeResult:
    frame: pd.DataFrame
    rows: int
    open_lines: int
    frozen_units: int


@dataclass(frozen=True)
class ForecastResult:
    frame: pd.DataFrame
    daily: pd.DataFrame
    rows: int
    models: dict[str, int]              # model -> SKUs
    catalogue_known: bool
    # (shop_id, sku_key) -> the model's note (fallbacks, clipped negative days, replaced promotion days):
    # the sales_forecast table keeps the columns, so the notes travel in the run's metadata.
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def negative_day_skus(self) -> int:
        return sum("negative net day" in note for note in self.notes.values())


@dataclass(frozen=True)
class SuggestionResult:
    frame: pd.DataFrame
    rows: int
    markdown: str                       # table + charts as data URIs: for the Dagster UI
    report_paths: list[Path] = field(default_factory=list)


def history_window(day: date, cfg: ForecastConfig) -> tuple[date, date]:
    return day - timedelta(days=cfg.history_days - 1), day


def rebuild_freezes(warehouse: Warehouse, shop_ids: Sequence[str]) -> FreezeResult:
    frame = presale_freezes(store.read_presale_lines(warehouse, shop_ids))
    rows = store.replace_freezes(warehouse, shop_ids, frame)
    open_ = frame[frame["released_at"].isna()] if len(frame) else frame
    return FreezeResult(frame, rows, len(open_), int(open_["quantity"].sum()) if len(open_) else 0)


def run_daily_sales(warehouse: Warehouse, shop_ids: Sequence[str], day: date, cfg: ForecastConfig, *,
                    first: date | None = None) -> DailySales:
    """Rebuild daily_sales over the history window of ``day`` (of ``first`` to ``day`` for a range)."""
    start, end = history_window(first or day, cfg)[0], day
    # Grouped in the database: the window's order lines (1.65M at 1M trades, 20-27 s and most of the
    # process's peak memory when read into pandas) never leave it; only groups per SKU and day do.
    sales = daily_sales_in_warehouse(warehouse, shop_ids, start=start, end=end)
    store.replace_daily_sales(warehouse, shop_ids, sales.frame, start=start, end=end)
    return sales


def run_sales_forecast(warehouse: Warehouse, shop_ids: Sequence[str], day: date,
                       cfg: ForecastConfig) -> ForecastResult:
    from ordersync_pipeline.forecast.model import ForecastSettings, forecast_sales  # statsforecast: slow import

    start, end = history_window(day, cfg)
    daily = store.read_daily_sales(warehouse, shop_ids, start=start, end=end)
    catalogue = _catalogue(store.read_inventory(warehouse, shop_ids), daily)
    frame = forecast_sales(daily, as_of=day, catalogue=catalogue,
                           settings=ForecastSettings(history_days=min(cfg.history_days, 182)))
    rows = store.replace_forecast(warehouse, shop_ids, frame, as_of=day)
    per_sku = frame.drop_duplicates(["shop_id", "sku_key"]) if len(frame) else frame
    models = {str(k): int(v) for k, v in per_sku["model"].value_counts().items()} if len(frame) else {}
    notes = {}
    if len(per_sku):
        noted = per_sku[per_sku["note"].fillna("").astype(str) != ""]
        notes = {(str(s), str(k)): str(n) for s, k, n in zip(noted["shop_id"], noted["sku_key"], noted["note"])}
    return ForecastResult(frame, daily, rows, models, catalogue is not None, notes)


def backtest_day(daily: pd.DataFrame, day: date) -> Backtest | None:
    """The rolling-origin backtest up to ``day``, or None when the history is shorter than
    ``MIN_BACKTEST_DAYS`` or holds no sale to score."""
    from ordersync_pipeline.forecast.backtest import run_backtest

    if daily.empty or (day - min(daily["day"])).days + 1 < MIN_BACKTEST_DAYS or daily["units_net"].abs().sum() == 0:
        return None
    result = run_backtest(daily, as_of=day)
    return result if len(result.points) else None


def run_suggestions(warehouse: Warehouse, shop_ids: Sequence[str], day: date, cfg: ForecastConfig,
                    reports_dir: Path | None) -> SuggestionResult:
    forecast = store.read_forecast(warehouse, shop_ids, as_of=day)
    inventory = store.read_inventory(warehouse, shop_ids)
    freezes = store.read_freezes(warehouse, shop_ids)
    settings = ReplenishSettings(lead_time_days=cfg.lead_time_days, service_level=cfg.service_level,
                                 pack_size=cfg.pack_size)
    frame = replenishment_suggestions(forecast, inventory if len(inventory) else None,
                                      freezes if len(freezes) else None, as_of=day, settings=settings)
    frame["as_of"] = day
    rows = store.replace_suggestions(warehouse, shop_ids, frame, as_of=day)
    start, end = history_window(day, cfg)
    daily = store.read_daily_sales(warehouse, shop_ids, start=max(start, day - timedelta(days=55)), end=end)
    markdown = _markdown(frame, daily, forecast, day, cfg.top_skus)
    paths = (write_report(reports_dir, daily, forecast, frame, top=cfg.top_skus, as_of=day)
             if reports_dir is not None else [])
    return SuggestionResult(frame, rows, markdown, paths)


def _catalogue(inventory: pd.DataFrame, daily: pd.DataFrame) -> pd.DataFrame | None:
    """(shop_id, sku_key) of the SKUs listed now, or None when no shop has a snapshot. A shop without a
    snapshot keeps its sold SKUs (its catalogue is unknown, not empty)."""
    if inventory.empty:
        return None
    listed = pd.DataFrame({"shop_id": inventory["shop_id"].astype("string"), "sku_key": sku_keys(inventory)})
    unknown = daily[~daily["shop_id"].isin(set(listed["shop_id"]))][["shop_id", "sku_key"]]
    return pd.concat([listed.dropna(), unknown.astype("string")], ignore_index=True).drop_duplicates()


def _markdown(suggestions: pd.DataFrame, daily: pd.DataFrame, forecast: pd.DataFrame, day: date, top: int) -> str:
    parts = [f"**Top replenishment suggestions as of {day.isoformat()}**\n", suggestions_markdown(suggestions, top=10)]
    chosen = suggestions[suggestions["suggested_qty"] > 0].sort_values(
        ["suggested_qty", "shop_id", "sku_key"], ascending=[False, True, True]).head(top)
    for r in chosen.itertuples(index=False):
        shop, sku = str(r.shop_id), str(r.sku_key)
        svg = forecast_chart_svg(daily[(daily["shop_id"] == shop) & (daily["sku_key"] == sku)],
                                 forecast[(forecast["shop_id"] == shop) & (forecast["sku_key"] == sku)],
                                 title=f"{shop} {sku}")
        parts.append(f"\n![{shop} {sku}]({svg_data_uri(svg)})\n")
    return "\n".join(parts)
