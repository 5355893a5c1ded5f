"""``sales_forecast``: the next 7 days per active SKU, a point and an 80 % interval, from ``daily_sales``.

Models (the ``model`` column; measured in benchmarks/results/forecast.md):

* ``ets_ana``: statsforecast's ETS restricted to additive error, no trend, additive weekly season,
  fitted per SKU, with its analytic interval. For SKUs with at least 28 days since their first sale
  and a sale on at least 76 % of the last 56 days (Syntetos-Boylan: mean interval between sales
  <= 1.32 days). Full AutoETS model selection was no more accurate on the backtest and ~10x slower.
* ``ses_shop_weekday``: intermittent or short (7-27 days) histories. A SKU selling a few units a week
  cannot show its own weekly pattern, so the series is divided by its *shop's* weekday profile (from
  all its SKUs over the last 8 weeks), smoothed by ETS(A,N,N) and multiplied back, interval too.
* ``mean_shop_weekday``: new SKUs (< 7 days since the first sale; ETS needs 7 points): the mean of
  those days times the shop's weekday profile; the interval is the 10th-90th Poisson percentile of the
  point (count demand, too few days to measure spread).
* ``no_history``: in the catalogue but no sale in the history window: zeros (no demand to go on).
* ``left_catalogue``: sold in the window but absent from the catalogue the caller passed: zeros,
  it is not forecast (or reordered).

Before fitting, each series starts at its first sale (earlier zeros are "not yet listed", not
"no demand"); negative net days (refunds of earlier sales) are clipped to 0; promotion days are
replaced by the median of the same SKU's non-promotion values 7 and 14 days either side, so a spike
does not inflate the baseline. A fit that fails moves the SKU to the next simpler model, and ``note``
says so. Outputs satisfy ``0 <= lower <= units <= upper``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.keys import day_dates, day_numbers, require_columns, sku_keys

FORECAST_COLUMNS = ("shop_id", "sku_key", "as_of", "target_day", "units", "lower", "upper", "model", "note")
DAILY_COLUMNS = ("shop_id", "sku_key", "day", "units_gross", "units_net", "promo_day")
NDArray = np.ndarray[Any, Any]


@dataclass(frozen=True)
class ForecastSettings:
    """Knobs of the forecast; the defaults are the measured choice."""

    horizon: int = 7
    level: int = 80                  # interval coverage, percent
    season_length: int = 7
    history_days: int = 182          # only the last 26 weeks are used
    ets_model: str = "ANA"           # statsforecast AutoETS spec for dense SKUs ("ZZZ" = full AutoETS)
    min_seasonal_days: int = 28      # days since first sale for a per-SKU weekly model
    min_smoothing_days: int = 7      # days since first sale for exponential smoothing at all
    dense_share: float = 0.76        # share of days with a sale (last dense_window days) for ets
    dense_window: int = 56
    profile_weeks: int = 8           # weeks of shop totals behind the weekday profile
    n_jobs: int = 1                  # processes the ETS fits may use (-1 = every core)

    @property
    def dense_model_name(self) -> str:
        return f"ets_{self.ets_model.lower()}"


@dataclass
class _Series:
    """The SKUs of one forecast run as a dense matrix (rows: SKUs, columns: days up to as_of)."""

    shop_id: NDArray
    sku_key: NDArray
    days: NDArray        # day numbers of the columns
    y: NDArray           # cleaned net units, float
    first: NDArray       # column of the first sale, -1 = none
    notes: list[list[str]]


def forecast_sales(daily: pd.DataFrame, *, as_of: date | None = None,
                   catalogue: pd.DataFrame | Collection[tuple[str, str]] | None = None,
                   settings: ForecastSettings | None = None) -> pd.DataFrame:
    """The next ``horizon`` days after ``as_of`` for every SKU of ``daily`` (and of ``catalogue``).

    ``as_of`` None = the last day in ``daily`` (an empty ``daily`` then gives an empty forecast); only
    days up to it are used. ``catalogue`` None =
    unknown (every SKU with sales is forecast); otherwise (shop_id, sku_key) pairs or a frame with
    ``shop_id`` and ``sku_key`` (or the raw id columns) of the SKUs currently listed.
    """
    cfg = settings or ForecastSettings()
    require_columns(daily, DAILY_COLUMNS, "daily_sales")
    listed = _catalogue_pairs(catalogue)
    end = _day_number(as_of) if as_of is not None else (int(day_numbers(daily["day"]).max()) if len(daily) else None)
    if end is None:  # no sales and no day given: nothing to date a forecast by
        return _no_history_rows(set(), set(), 0, cfg)
    series = _matrix(daily, end, cfg)
    pairs = set(zip(series.shop_id.tolist(), series.sku_key.tolist()))
    in_catalogue = np.array([listed is None or p in listed for p in zip(series.shop_id, series.sku_key)], dtype=bool)
    kinds = _classify(series, in_catalogue, cfg)
    results = _fit_all(series, kinds, end, cfg)
    parts = [_rows(series, kinds, results, end, cfg)]
    if listed is not None:
        parts.append(_no_history_rows(listed, pairs, end, cfg))
    frame = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
    return frame.sort_values(["shop_id", "sku_key", "target_day"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------ input -> matrix

def _matrix(daily: pd.DataFrame, end: int, cfg: ForecastSettings) -> _Series:
    day = day_numbers(daily["day"])
    keep = (day <= end) & (day > end - cfg.history_days)
    frame = pd.DataFrame({"shop_id": daily["shop_id"].astype("string").to_numpy()[keep],
                          "sku_key": daily["sku_key"].astype("string").to_numpy()[keep], "day": day[keep],
                          "net": pd.to_numeric(daily["units_net"]).to_numpy("float64")[keep],
                          "gross": pd.to_numeric(daily["units_gross"]).to_numpy("float64")[keep],
                          "promo": daily["promo_day"].fillna(False).to_numpy(bool)[keep]})
    skus = frame[["shop_id", "sku_key"]].drop_duplicates().sort_values(["shop_id", "sku_key"]).reset_index(drop=True)
    lo = int(frame["day"].min()) if len(frame) else end
    days = np.arange(lo, end + 1, dtype="int64")
    row = pd.MultiIndex.from_frame(skus).get_indexer(pd.MultiIndex.from_frame(frame[["shop_id", "sku_key"]]))
    col = frame["day"].to_numpy() - lo
    net = np.zeros((len(skus), len(days)))
    gross = np.zeros_like(net)
    np.add.at(net, (row, col), frame["net"].to_numpy())
    np.add.at(gross, (row, col), frame["gross"].to_numpy())
    sold = gross > 0
    first = np.where(sold.any(axis=1), sold.argmax(axis=1), -1)
    shop_ids = skus["shop_id"].to_numpy(dtype=object)
    promo = frame[frame["promo"]].groupby("shop_id")["day"].unique()
    notes: list[list[str]] = [[] for _ in range(len(skus))]
    negative = ((net < 0) & (np.arange(len(days)) >= first[:, None])).sum(axis=1)
    for i in np.nonzero(negative)[0]:
        notes[i].append(f"{negative[i]} negative net day(s) clipped to 0")
    y = np.clip(net, 0, None)
    for shop, shop_days in promo.items():
        rows = np.nonzero(shop_ids == shop)[0]
        _replace_promo_days(y, rows, first, np.sort(np.asarray(shop_days, dtype="int64")) - lo, days, notes)
    return _Series(shop_ids, skus["sku_key"].to_numpy(dtype=object), days, y, first, notes)


def _replace_promo_days(y: NDArray, rows: NDArray, first: NDArray, promo_cols: NDArray, days: NDArray,
                        notes: list[list[str]]) -> None:
    """Promotion days -> median of the same weekday 7 and 14 days either side (non-promo, after the
    first sale); left as they are when no such day exists."""
    n = y.shape[1]
    is_promo = np.zeros(n, dtype=bool)
    is_promo[promo_cols] = True
    for c in promo_cols:
        near = [c + d for d in (-14, -7, 7, 14) if 0 <= c + d < n and not is_promo[c + d]]
        if not near:
            continue
        block = y[np.ix_(rows, near)].copy()
        block[np.array(near)[None, :] < first[rows][:, None]] = np.nan
        has = ~np.isnan(block).all(axis=1) & (first[rows] >= 0) & (first[rows] <= c)
        if not has.any():
            continue
        target = rows[has]
        y[target, c] = np.nanmedian(block[has], axis=1)
        label = str(day_dates(days[c:c + 1])[0])
        for i in target:
            notes[i].append(f"promotion day {label} replaced by the same-weekday median")


def _catalogue_pairs(catalogue: pd.DataFrame | Collection[tuple[str, str]] | None) -> set[tuple[str, str]] | None:
    if catalogue is None:
        return None
    if isinstance(catalogue, pd.DataFrame):
        require_columns(catalogue, ["shop_id"], "catalogue")
        keys = catalogue["sku_key"].astype("string") if "sku_key" in catalogue.columns else sku_keys(catalogue)
        ok = keys.notna()
        return set(zip(catalogue["shop_id"].astype(str)[ok], keys[ok].astype(str)))
    return {(str(s), str(k)) for s, k in catalogue}


# ------------------------------------------------------------------ classification

def _classify(series: _Series, in_catalogue: NDArray, cfg: ForecastSettings) -> NDArray:
    """Model name per SKU, with the reason appended to its notes."""
    n_days = series.y.shape[1]
    kinds = np.empty(len(series.first), dtype=object)
    for i, first in enumerate(series.first.tolist()):
        age = n_days - first
        if not in_catalogue[i]:
            kinds[i] = "left_catalogue"
            series.notes[i].insert(0, "not in the catalogue: not forecast")
        elif first < 0:
            kinds[i] = "no_history"
            series.notes[i].insert(0, f"no sale in the last {cfg.history_days} days")
        elif age < cfg.min_smoothing_days:
            kinds[i] = "mean_shop_weekday"
            series.notes[i].insert(0, f"new: {age} day(s) since the first sale")
        elif age < cfg.min_seasonal_days:
            kinds[i] = "ses_shop_weekday"
            series.notes[i].insert(0, f"short history: {age} days since the first sale")
        else:
            recent = series.y[i, n_days - min(age, cfg.dense_window):]
            share = float((recent > 0).mean())
            if share < cfg.dense_share:
                kinds[i] = "ses_shop_weekday"
                series.notes[i].insert(0, f"intermittent: sales on {share:.0%} of the last {len(recent)} days")
            else:
                kinds[i] = cfg.dense_model_name
    return kinds


# ------------------------------------------------------------------ fitting

@dataclass
class _Fit:
    point: NDArray   # (n, horizon)
    lower: NDArray
    upper: NDArray


def _fit_all(series: _Series, kinds: NDArray, end: int, cfg: ForecastSettings) -> dict[int, _Fit]:
    """Forecast every SKU that has a model; a failed fit falls back to the next simpler model."""
    profiles = _shop_profiles(series, cfg)
    target_dow = _weekday(np.arange(end + 1, end + 1 + cfg.horizon))
    prof_target = np.stack([profiles[s][target_dow] for s in series.shop_id]) if len(kinds) else np.zeros((0, 0))
    prof_hist = np.stack([profiles[s][_weekday(series.days)] for s in series.shop_id]) if len(kinds) else prof_target
    results: dict[int, _Fit] = {}
    dense = np.nonzero(kinds == cfg.dense_model_name)[0]
    failed = _ets(series, dense, None, None, cfg, cfg.ets_model, results)
    for i in failed:
        kinds[i] = "ses_shop_weekday"
        series.notes[i].append(f"ETS({cfg.ets_model}) fit failed; shop-weekday smoothing used")
    smooth = np.nonzero(kinds == "ses_shop_weekday")[0]
    failed = _ets(series, smooth, prof_hist, prof_target, cfg, "ANN", results)
    for i in failed:
        kinds[i] = "mean_shop_weekday"
        series.notes[i].append("smoothing fit failed; mean used")
    for k in np.nonzero(kinds == "mean_shop_weekday")[0].tolist():
        results[k] = _mean_fit(series, k, prof_hist[k], prof_target[k], cfg)
    return results


def _shop_profiles(series: _Series, cfg: ForecastSettings) -> dict[str, NDArray]:
    """Weekday factors (mean 1, Monday first) from each shop's total over the last profile_weeks;
    flat for a shop with under two weeks or no units."""
    window = min(series.y.shape[1], cfg.profile_weeks * 7)
    dow = _weekday(series.days[-window:]) if window else np.zeros(0, dtype="int64")
    out: dict[str, NDArray] = {}
    for shop in set(series.shop_id.tolist()):
        total = series.y[series.shop_id == shop, series.y.shape[1] - window:].sum(axis=0)
        sums = np.bincount(dow, weights=total, minlength=7)
        counts = np.bincount(dow, minlength=7)
        if window < 14 or total.sum() <= 0 or (counts == 0).any():
            out[shop] = np.ones(7)
            continue
        means = sums / counts
        out[shop] = means / means.mean() if (means > 0).all() else np.ones(7)
    return out


def _ets(series: _Series, idx: NDArray, prof_hist: NDArray | None, prof_target: NDArray | None,
         cfg: ForecastSettings, spec: str, results: dict[int, _Fit]) -> list[int]:
    """Fit statsforecast's ETS(spec) on the SKUs ``idx`` (from their first sale; divided by their shop
    profile when given); store the forecasts and return the SKUs whose fit failed."""
    if len(idx) == 0:
        return []
    from ordersync_pipeline.forecast.ets import fit_series  # statsforecast: only when a forecast runs

    y = series.y[idx] if prof_hist is None else series.y[idx] / prof_hist[idx]
    ys = [y[j, max(int(series.first[i]), 0):] for j, i in enumerate(idx.tolist())]
    season = 1 if spec[2:3] == "N" else cfg.season_length
    fits = fit_series(ys, season=season, spec=spec, h=cfg.horizon, level=cfg.level, n_jobs=cfg.n_jobs)
    failed: list[int] = []
    for i, fit in zip(idx.tolist(), fits):
        if fit is None:
            failed.append(i)
            continue
        point, lower, upper = fit
        if prof_target is not None:
            scale = prof_target[i]
            point, lower, upper = point * scale, lower * scale, upper * scale
        results[i] = _Fit(point, lower, upper)
    return failed


def _mean_fit(series: _Series, i: int, prof_hist: NDArray, prof_target: NDArray, cfg: ForecastSettings) -> _Fit:
    from scipy.stats import poisson

    first = max(int(series.first[i]), 0)
    level = series.y[i, first:].sum() / max(prof_hist[first:].sum(), 1e-9)
    point = level * prof_target
    tail = (100 - cfg.level) / 200
    return _Fit(point, poisson.ppf(tail, point), poisson.ppf(1 - tail, point))


# ------------------------------------------------------------------ output

def _rows(series: _Series, kinds: NDArray, results: dict[int, _Fit], end: int, cfg: ForecastSettings) -> pd.DataFrame:
    n, h = len(kinds), cfg.horizon
    point, lower, upper = np.zeros((n, h)), np.zeros((n, h)), np.zeros((n, h))
    for i, fit in results.items():
        point[i], lower[i], upper[i] = fit.point, fit.lower, fit.upper
    point = np.nan_to_num(point, nan=0.0, posinf=0.0)
    units = np.clip(point, 0, None)
    low = np.clip(np.nan_to_num(lower, nan=0.0), 0, units)
    high = np.maximum(np.nan_to_num(upper, nan=0.0, posinf=0.0), units)
    targets = np.arange(end + 1, end + 1 + h, dtype="int64")
    return pd.DataFrame({
        "shop_id": pd.array(np.repeat(series.shop_id, h), dtype="string"),
        "sku_key": pd.array(np.repeat(series.sku_key, h), dtype="string"),
        "as_of": day_dates(np.full(n * h, end, dtype="int64")),
        "target_day": day_dates(np.tile(targets, n)),
        "units": units.ravel().round(3), "lower": low.ravel().round(3), "upper": high.ravel().round(3),
        "model": np.repeat(kinds.astype(str), h), "note": np.repeat(np.array(["; ".join(x) for x in series.notes],
                                                                             dtype=object), h)})


def _no_history_rows(listed: set[tuple[str, str]], known: set[tuple[str, str]], end: int,
                     cfg: ForecastSettings) -> pd.DataFrame:
    missing = sorted(listed - known)
    h = cfg.horizon
    targets = np.arange(end + 1, end + 1 + h, dtype="int64")
    zeros = np.zeros(len(missing) * h)
    return pd.DataFrame({
        "shop_id": pd.array(np.repeat([s for s, _ in missing], h), dtype="string"),
        "sku_key": pd.array(np.repeat([k for _, k in missing], h), dtype="string"),
        "as_of": day_dates(np.full(len(missing) * h, end, dtype="int64")),
        "target_day": day_dates(np.tile(targets, len(missing))),
        "units": zeros, "lower": zeros, "upper": zeros, "model": ["no_history"] * len(zeros),
        "note": [f"no sale in the last {cfg.history_days} days"] * len(zeros)})


def _weekday(day_numbers_: NDArray) -> NDArray:
    return (np.asarray(day_numbers_, dtype="int64") + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days
