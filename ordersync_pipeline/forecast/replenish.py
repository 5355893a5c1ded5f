"""``replenishment_suggestions``: what to reorder today, per SKU, with the reason in words.

Inputs: the ``sales_forecast`` frame (model.py), an ``inventory`` frame (``shop_id, quantity`` and
``sku_key`` or the raw id columns; with ``taken_at`` only each SKU's latest snapshot counts) and an
optional ``freezes`` frame (``shop_id, quantity`` and ``sku_key`` or raw ids; rows with a
``released_at`` are released and ignored).

The formula, per SKU, for lead time L days and service level p:

* ``available = on_hand - frozen`` (stock held by unpaid presale balances cannot be sold again);
* ``forecast_lead_time`` = the sum of the point forecasts over the next L days; beyond the forecast's
  7 days the week repeats (day 8 is day 1 again: the weekly pattern, no trend);
* daily standard deviation ``s_d = (upper_d - lower_d) / (2 * z_0.90)``: the 80 % interval is the
  mean +- 1.2816 s_d; days are taken as independent, so over the lead time
  ``sigma = sqrt(sum s_d^2)`` and ``safety_stock = z_p * sigma`` (z_0.95 = 1.645);
* ``suggested_qty = ceil((forecast_lead_time + safety_stock - available) / pack) * pack``, never below 0.

Bad input, never a crash; the rule shows in ``reason`` (and the forecast's ``model``):

* a SKU with no sales history (``no_history`` forecast, or stock without any forecast row): 0, no
  demand to go on;
* a SKU that left the catalogue (``left_catalogue``): 0, not reordered;
* a SKU with a forecast but no inventory row: on hand unknown, 0 suggested (an unknown stock must not
  turn into a blind purchase order), and the reason states the lead-time need so a person can act;
* a negative stock figure is taken as 0 and said so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.keys import require_columns, sku_keys

SUGGESTION_COLUMNS = ("shop_id", "sku_key", "as_of", "on_hand", "frozen", "available", "forecast_lead_time",
                      "safety_stock", "lead_time_days", "service_level", "suggested_qty", "reason", "model")
NOT_REORDERED = {"no_history", "left_catalogue"}
MAX_COVER_DAYS = 365


@dataclass(frozen=True)
class ReplenishSettings:
    """Ordering policy; ``pack_sizes`` overrides ``pack_size`` per sku_key."""

    lead_time_days: int = 7
    service_level: float = 0.95
    pack_size: int = 1
    pack_sizes: Mapping[str, int] = field(default_factory=dict)
    interval_level: int = 80   # coverage of the forecast's lower..upper

    def __post_init__(self) -> None:
        if self.lead_time_days < 1:
            raise ValueError(f"lead_time_days must be >= 1 day, got {self.lead_time_days}")
        if not 0.5 <= self.service_level < 1:
            raise ValueError(f"service_level must be within 0.5..0.999 (e.g. 0.95), got {self.service_level}")
        bad = {k: v for k, v in {"*": self.pack_size, **self.pack_sizes}.items() if v < 1}
        if bad:
            raise ValueError(f"pack sizes must be >= 1 unit, got {bad}")


@dataclass
class _Demand:
    units: np.ndarray[Any, np.dtype[np.float64]]   # point forecast per day, weekly-extended as needed
    sigma: float                                     # standard deviation of lead-time demand
    model: str


def replenishment_suggestions(forecast: pd.DataFrame, inventory: pd.DataFrame | None,
                              freezes: pd.DataFrame | None = None, *, as_of: date | None = None,
                              settings: ReplenishSettings | None = None) -> pd.DataFrame:
    """One suggestion per SKU found in ``forecast`` or ``inventory`` (see the module docstring)."""
    cfg = settings or ReplenishSettings()
    require_columns(forecast, ["shop_id", "sku_key", "as_of", "target_day", "units", "lower", "upper", "model"],
                    "sales_forecast")
    demand = _demand(forecast, cfg)
    stock = _keyed_quantity(inventory, "inventory", latest=True)
    frozen = _keyed_quantity(freezes, "freezes", latest=False, open_only=True)
    run_as_of = as_of or (max(forecast["as_of"]) if len(forecast) else None)
    z = NormalDist().inv_cdf(cfg.service_level)
    rows = [_suggest(key, demand.get(key), stock.get(key), int(frozen.get(key, 0)), z, cfg, run_as_of)
            for key in sorted(set(demand) | set(stock))]
    frame = pd.DataFrame(rows, columns=list(SUGGESTION_COLUMNS))
    return frame.astype({"shop_id": "string", "sku_key": "string", "on_hand": "Int64", "frozen": "int64",
                         "available": "Int64", "forecast_lead_time": "float64", "safety_stock": "float64",
                         "lead_time_days": "int64", "service_level": "float64", "suggested_qty": "int64",
                         "reason": "string", "model": "string"})


def _demand(forecast: pd.DataFrame, cfg: ReplenishSettings) -> dict[tuple[str, str], _Demand]:
    z_interval = NormalDist().inv_cdf(0.5 + cfg.interval_level / 200)
    out: dict[tuple[str, str], _Demand] = {}
    ordered = forecast.sort_values(["shop_id", "sku_key", "target_day"], kind="stable")
    for (shop, sku), g in ordered.groupby(["shop_id", "sku_key"], sort=False):
        units = np.clip(g["units"].to_numpy("float64"), 0, None)
        spread = np.clip(g["upper"].to_numpy("float64") - g["lower"].to_numpy("float64"), 0, None)
        reps = math.ceil(max(cfg.lead_time_days, MAX_COVER_DAYS) / max(len(units), 1))
        sd = np.tile(spread / (2 * z_interval), reps)[:cfg.lead_time_days]
        out[(str(shop), str(sku))] = _Demand(np.tile(units, reps), float(np.sqrt((sd ** 2).sum())),
                                             str(g["model"].iloc[0]))
    return out


def _keyed_quantity(frame: pd.DataFrame | None, what: str, *, latest: bool,
                    open_only: bool = False) -> dict[tuple[str, str], int]:
    """Quantity per (shop_id, sku_key): the latest snapshot per SKU, or the sum of open freezes."""
    if frame is None or frame.empty:
        return {}
    require_columns(frame, ["shop_id", "quantity"], what)
    keys = frame["sku_key"].astype("string") if "sku_key" in frame.columns else sku_keys(frame)
    rows = pd.DataFrame({"shop_id": frame["shop_id"].astype(str), "sku_key": keys,
                         "quantity": pd.to_numeric(frame["quantity"], errors="coerce").fillna(0).astype("int64")})
    if open_only and "released_at" in frame.columns:
        rows = rows[frame["released_at"].isna().to_numpy()]
    if latest and "taken_at" in frame.columns and frame["taken_at"].notna().any():
        taken = pd.to_datetime(frame["taken_at"], utc=True)
        newest = taken.groupby([rows["shop_id"], rows["sku_key"]]).transform("max")
        rows = rows[(taken == newest).to_numpy()]
    rows = rows[rows["sku_key"].notna()]
    summed = rows.groupby(["shop_id", "sku_key"])["quantity"].sum()
    shops, skus = summed.index.get_level_values(0), summed.index.get_level_values(1)
    return {(str(s), str(k)): int(q) for s, k, q in zip(shops, skus, summed.to_numpy())}


def _suggest(key: tuple[str, str], demand: _Demand | None, on_hand: int | None, frozen: int, z: float,
             cfg: ReplenishSettings, as_of: date | None) -> dict[str, Any]:
    pack = int(cfg.pack_sizes.get(key[1], cfg.pack_size))
    L = cfg.lead_time_days
    row: dict[str, Any] = {"shop_id": key[0], "sku_key": key[1], "as_of": as_of, "on_hand": on_hand,
                           "frozen": frozen, "available": None, "forecast_lead_time": 0.0, "safety_stock": 0.0,
                           "lead_time_days": L, "service_level": cfg.service_level, "suggested_qty": 0,
                           "model": demand.model if demand else "no_history"}
    notes = [f"{frozen} frozen by presale"] if frozen else []
    if on_hand is not None and on_hand < 0:
        notes.insert(0, f"snapshot quantity {on_hand} taken as 0")
        on_hand = row["on_hand"] = 0
    if on_hand is not None:
        row["available"] = on_hand - frozen
    if demand is None or demand.model == "no_history":
        return {**row, "reason": _join("no sale in the history window: no demand forecast, nothing suggested",
                                       notes)}
    if demand.model == "left_catalogue":
        return {**row, "reason": _join("left the catalogue: not reordered", notes)}
    need = float(demand.units[:L].sum())
    safety = z * demand.sigma
    row["forecast_lead_time"], row["safety_stock"] = round(need, 2), round(safety, 2)
    target = f"{L}-day lead time needs {need:.1f} + {safety:.1f} safety ({cfg.service_level:.0%} service)"
    if on_hand is None:
        return {**row, "reason": _join(f"no inventory snapshot: on hand unknown, nothing suggested; {target}", notes)}
    available = on_hand - frozen
    short = need + safety - available
    qty = int(math.ceil(short / pack - 1e-9)) * pack if short > 0 else 0
    row["suggested_qty"] = qty
    have = f"available {available} covers {_cover_days(demand.units, available)} of forecast demand"
    if qty == 0:
        return {**row, "reason": _join(f"{have}; {target}: no order", notes)}
    packs = f" ({qty // pack} packs of {pack})" if pack > 1 else ""
    after = _cover_days(demand.units, available + qty)
    return {**row, "reason": _join(f"order {qty}{packs} to cover {after} of forecast demand; {have}; {target}",
                                   notes)}


def _cover_days(units: np.ndarray[Any, np.dtype[np.float64]], stock: int) -> str:
    """How many whole days of forecast demand ``stock`` covers, in words."""
    if units.sum() <= 0:
        return "every day (no forecast demand)"
    if stock <= 0:
        return "0 days"
    days = int(np.searchsorted(np.cumsum(units), stock, side="right"))
    return f"{days}+ days" if days >= len(units) else f"{days} day{'s' if days != 1 else ''}"


def _join(head: str, notes: list[str]) -> str:
    return "; ".join([head, *notes])
