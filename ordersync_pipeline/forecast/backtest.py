"""Rolling-origin backtest of the forecast against seasonal-naive and moving-average baselines.

Origins are ``as_of - 7k`` for k = ``origins`` .. 1, so with the defaults the 7-day forecasts made at
four weekly origins cover the last 28 days exactly once. At each origin the model sees only days up to
the origin (``forecast_sales(..., as_of=origin)``); the baselines are computed from the same history:

* seasonal naive: the same weekday one week earlier (``units_net`` 7 days before the target day);
* moving average: the mean ``units_net`` of the 28 days up to the origin, flat over the week.

Every method is scored on the same points: (SKU, target day) pairs the model forecast with a model
(``no_history`` and ``left_catalogue`` SKUs are not scored), against the day's actual ``units_net``.
Negative forecasts are clipped to 0 for every method, as the model does.

* WAPE = sum |forecast - actual| / sum |actual|
* bias = sum (forecast - actual) / sum |actual| (negative = under-forecast)
* coverage = share of points with ``lower <= actual <= upper`` (model only; nominal 80 %)

Each figure is given for all days and for non-promotion days: nobody forecasts an unannounced
campaign, so the second scope shows the baseline quality the first one mixes with the spike.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.keys import day_numbers, require_columns
from ordersync_pipeline.forecast.model import DAILY_COLUMNS, ForecastSettings, forecast_sales

UNSCORED_MODELS = frozenset({"no_history", "left_catalogue"})
METHODS = ("model", "seasonal_naive", "moving_average")


@dataclass(frozen=True)
class Backtest:
    """``summary``: one row per (scope, method) with wape, bias, coverage, points, actual_units.
    ``points``: every scored (SKU, target day) with the actual and each method's forecast."""

    summary: pd.DataFrame
    points: pd.DataFrame
    origins: list[date]

    def figure(self, method: str, column: str = "wape", scope: str = "all days") -> float:
        row = self.summary[(self.summary["method"] == method) & (self.summary["scope"] == scope)]
        return float(row[column].iloc[0])

    @property
    def improvement(self) -> float:
        """1 - model WAPE / seasonal-naive WAPE over all days (0.15 = 15 % lower WAPE)."""
        return 1.0 - self.figure("model") / self.figure("seasonal_naive")


def run_backtest(daily: pd.DataFrame, *, as_of: date | None = None, origins: int = 4, step_days: int = 7,
                 average_days: int = 28, catalogue: pd.DataFrame | Collection[tuple[str, str]] | None = None,
                 settings: ForecastSettings | None = None) -> Backtest:
    """Backtest over the ``origins * step_days`` days up to ``as_of`` (None = the last day of ``daily``)."""
    cfg = settings or ForecastSettings()
    require_columns(daily, DAILY_COLUMNS, "daily_sales")
    day = day_numbers(daily["day"])
    actual = pd.Series(pd.to_numeric(daily["units_net"]).to_numpy("float64"),
                       index=pd.MultiIndex.from_arrays([daily["shop_id"].astype(str).to_numpy(),
                                                        daily["sku_key"].astype(str).to_numpy(), day]))
    actual = actual.groupby(level=[0, 1, 2]).sum()
    promo = pd.Series(daily["promo_day"].fillna(False).to_numpy(bool),
                      index=pd.MultiIndex.from_arrays([daily["shop_id"].astype(str).to_numpy(), day]))
    promo = promo.groupby(level=[0, 1]).any()
    end = as_of or (date(1970, 1, 1) + timedelta(days=int(day.max())))
    starts = [end - timedelta(days=step_days * k) for k in range(origins, 0, -1)]
    parts = [_score_origin(daily, actual, origin, average_days, catalogue, cfg) for origin in starts]
    points = pd.concat(parts, ignore_index=True)
    points["promo_day"] = promo.reindex(pd.MultiIndex.from_arrays(
        [points["shop_id"].to_numpy(), points["day"].to_numpy()]), fill_value=False).to_numpy(bool)
    points = points[points["day"] <= (end - date(1970, 1, 1)).days].reset_index(drop=True)
    return Backtest(_summary(points), points, starts)


def _score_origin(daily: pd.DataFrame, actual: pd.Series, origin: date, average_days: int,
                  catalogue: pd.DataFrame | Collection[tuple[str, str]] | None,
                  cfg: ForecastSettings) -> pd.DataFrame:
    fc = forecast_sales(daily, as_of=origin, catalogue=catalogue, settings=cfg)
    fc = fc[~fc["model"].isin(UNSCORED_MODELS)]
    shop, sku = fc["shop_id"].astype(str).to_numpy(), fc["sku_key"].astype(str).to_numpy()
    target = day_numbers(fc["target_day"])
    o = (origin - date(1970, 1, 1)).days

    def lookup(days: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        index = pd.MultiIndex.from_arrays([shop, sku, days])
        return actual.reindex(index).to_numpy("float64")

    history = actual[(actual.index.get_level_values(2) > o - average_days) & (actual.index.get_level_values(2) <= o)]
    average = history.groupby(level=[0, 1]).sum() / average_days
    points = pd.DataFrame({
        "origin": origin, "shop_id": shop, "sku_key": sku, "day": target, "model_name": fc["model"].to_numpy(),
        "actual": lookup(target), "model": fc["units"].to_numpy("float64"),
        "lower": fc["lower"].to_numpy("float64"), "upper": fc["upper"].to_numpy("float64"),
        "seasonal_naive": np.clip(lookup(target - 7), 0, None),
        "moving_average": np.clip(average.reindex(pd.MultiIndex.from_arrays([shop, sku])).to_numpy("float64"),
                                  0, None)})
    return points.dropna(subset=["actual"])


def _summary(points: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for scope, sel in (("all days", points), ("non-promotion days", points[~points["promo_day"]])):
        scale = float(sel["actual"].abs().sum()) or float("nan")
        for method in METHODS:
            forecast = sel[method].fillna(0.0)
            error = forecast - sel["actual"]
            covered = (sel["lower"] <= sel["actual"]) & (sel["actual"] <= sel["upper"])
            rows.append({"scope": scope, "method": method, "wape": float(error.abs().sum()) / scale,
                         "bias": float(error.sum()) / scale,
                         "coverage": float(covered.mean()) if method == "model" and len(sel) else float("nan"),
                         "points": len(sel), "actual_units": float(sel["actual"].sum())})
    return pd.DataFrame(rows)
