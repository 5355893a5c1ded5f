"""sales_forecast: interval invariants, weekly seasonality, fallbacks for short/intermittent/new SKUs, promotion
days and negative days, catalogue rules, and that the model library is only loaded when a forecast runs."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ordersync_pipeline.forecast import ets as ets_module
from ordersync_pipeline.forecast import model as model_module
from ordersync_pipeline.forecast.model import ForecastSettings, forecast_sales

END = date(2026, 11, 29)  # a Sunday
WEEKLY = np.array([0.9, 0.92, 0.95, 1.0, 1.08, 1.25, 1.2])  # Monday .. Sunday, like the simulator


def daily(series: dict[str, np.ndarray], *, promo: set[date] | None = None, gross: dict[str, np.ndarray] | None = None,
          shop: str = "shop-1") -> pd.DataFrame:
    """A zero-filled daily_sales frame ending at END from net units per SKU."""
    frames = []
    for sku, units in series.items():
        days = [END - timedelta(days=len(units) - 1 - k) for k in range(len(units))]
        g = (gross or {}).get(sku, np.clip(units, 0, None))
        frames.append(pd.DataFrame({"shop_id": shop, "sku_key": sku, "day": days, "units_gross": g.astype(int),
                                    "units_net": np.asarray(units).astype(int),
                                    "promo_day": [d in (promo or set()) for d in days]}))
    return pd.concat(frames, ignore_index=True)


def weekly_counts(level: float, days: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dows = np.array([(END - timedelta(days=days - 1 - k)).weekday() for k in range(days)])
    return rng.poisson(level * WEEKLY[dows] / WEEKLY.mean())


def test_intervals_hold_for_every_kind_of_series() -> None:
    rng = np.random.default_rng(1)
    series = {
        "dense": weekly_counts(30, 120, 2),
        "sparse": (rng.random(120) < 0.2).astype(int),
        "zeros_after_one_sale": np.r_[1, np.zeros(119, dtype=int)],
        "spiky": np.where(rng.random(120) < 0.05, 200, rng.poisson(2, 120)),
        "short": rng.poisson(4, 10),
        "new": np.r_[np.zeros(117, dtype=int), 3, 0, 5],
        "huge": rng.poisson(5000, 120),
        "constant": np.full(120, 7),
    }
    fc = forecast_sales(daily(series))
    assert set(fc["sku_key"]) == set(series)
    assert (fc.groupby("sku_key").size() == 7).all()
    assert (fc["lower"] >= 0).all() and (fc["lower"] <= fc["units"]).all() and (fc["units"] <= fc["upper"]).all()
    assert np.isfinite(fc[["units", "lower", "upper"]].to_numpy()).all()
    assert fc["target_day"].tolist()[:7] == [END + timedelta(days=k) for k in range(1, 8)]
    assert set(fc["as_of"]) == {END}
    constant = fc[fc["sku_key"] == "constant"]
    assert constant["units"].round(1).eq(7.0).all()


def test_dense_weekly_series_gets_per_sku_ets_with_its_weekly_shape() -> None:
    fc = forecast_sales(daily({"a": weekly_counts(40, 140, 3)}))
    assert set(fc["model"]) == {"ets_ana"}
    by_day = dict(zip(fc["target_day"], fc["units"]))
    saturday, monday = END + timedelta(days=6), END + timedelta(days=1)
    assert by_day[saturday] > by_day[monday] * 1.15  # the weekend peak survives into the forecast
    assert 35 < fc["units"].mean() < 45
    # An 80 % interval of Poisson-like days is about +-1.28 sqrt(mean) wide: neither degenerate nor absurd.
    poisson_width = 2 * 1.2816 * np.sqrt(fc["units"])
    width = fc["upper"] - fc["lower"]
    assert ((width > 0.6 * poisson_width) & (width < 2.0 * poisson_width)).all(), width.tolist()


def test_short_new_and_intermittent_histories_use_the_named_fallbacks() -> None:
    rng = np.random.default_rng(4)
    sparse = np.zeros(120, dtype=int)
    sparse[rng.choice(120, 30, replace=False)] = 1
    series = {"dense": weekly_counts(20, 120, 5), "short": np.r_[np.zeros(100, dtype=int), rng.poisson(3, 20)],
              "new": np.r_[np.zeros(116, dtype=int), 2, 1, 3, 2], "sparse": sparse}
    series["short"][100] = 2  # make sure the first sale is exactly 20 days ago
    fc = forecast_sales(daily(series)).groupby("sku_key").first()
    assert fc.loc["dense", "model"] == "ets_ana"
    assert fc.loc["short", "model"] == "ses_shop_weekday"
    assert fc.loc["short", "note"].startswith("short history: 20 days since the first sale")
    assert fc.loc["new", "model"] == "mean_shop_weekday" and fc.loc["new", "note"].startswith("new: 4 day(s)")
    assert fc.loc["sparse", "model"] == "ses_shop_weekday" and fc.loc["sparse", "note"].startswith("intermittent")
    new = forecast_sales(daily(series))
    new = new[new["sku_key"] == "new"]
    assert 1.0 < new["units"].mean() < 3.5  # the mean of 2, 1, 3, 2 times a weekday factor
    assert (new["upper"] >= new["units"]).all() and new["upper"].max() >= 4  # Poisson spread, not zero width


def test_promotion_days_do_not_inflate_the_baseline() -> None:
    base = weekly_counts(20, 120, 6)
    promo_day = END - timedelta(days=3)
    spiked = base.copy()
    spiked[-4] = base[-4] * 6
    clean = forecast_sales(daily({"a": base}))
    marked = forecast_sales(daily({"a": spiked}, promo={promo_day}))
    unmarked = forecast_sales(daily({"a": spiked}))
    same_weekday = END + timedelta(days=4)  # a week after the promotion's weekday

    def on(fc: pd.DataFrame, day: date) -> float:
        return float(fc[fc["target_day"] == day]["units"].iloc[0])

    assert abs(marked["units"].sum() - clean["units"].sum()) < 0.03 * clean["units"].sum()
    assert abs(on(marked, same_weekday) - on(clean, same_weekday)) < 0.05 * on(clean, same_weekday)
    # the same spike left unmarked does leak into that weekday's seasonal level
    assert on(unmarked, same_weekday) > 1.15 * on(clean, same_weekday)
    assert "promotion day 2026-11-26 replaced" in marked["note"].iloc[0]


def test_negative_net_days_are_clipped_and_said_so() -> None:
    net = weekly_counts(10, 90, 7)
    net[-10], net[-20] = -4, -2
    gross = np.clip(net, 0, None)
    fc = forecast_sales(daily({"a": net}, gross={"a": gross}))
    assert (fc["units"] >= 0).all()
    assert "2 negative net day(s) clipped to 0" in fc["note"].iloc[0]


def test_catalogue_rules_no_history_and_left_catalogue() -> None:
    frame = daily({"sku:listed": weekly_counts(5, 60, 8), "sku:gone": weekly_counts(5, 60, 9)})
    catalogue = pd.DataFrame({"shop_id": ["shop-1", "shop-1"], "sku_id": ["listed", "never-sold"]})
    fc = forecast_sales(frame, catalogue=catalogue).groupby("sku_key").agg(
        model=("model", "first"), units=("units", "sum"), upper=("upper", "max"), rows=("units", "size"),
        note=("note", "first"))
    assert fc.loc["sku:listed", "model"] == "ets_ana" and fc.loc["sku:listed", "units"] > 0
    assert fc.loc["sku:gone", "model"] == "left_catalogue" and fc.loc["sku:gone", "units"] == 0
    assert fc.loc["sku:never-sold", "model"] == "no_history" and fc.loc["sku:never-sold", "upper"] == 0
    assert (fc["rows"] == 7).all()
    assert fc.loc["sku:gone", "note"] == "not in the catalogue: not forecast"


def test_refund_only_sku_has_no_history() -> None:
    net = np.zeros(60, dtype=int)
    net[-5] = -1
    fc = forecast_sales(daily({"a": weekly_counts(5, 60, 10), "refund_only": net},
                              gross={"refund_only": np.zeros(60, dtype=int)}))
    only = fc[fc["sku_key"] == "refund_only"]
    assert set(only["model"]) == {"no_history"} and only["units"].sum() == 0


def test_as_of_uses_only_the_history_up_to_it() -> None:
    units = np.r_[np.full(60, 5), np.full(7, 500)]
    frame = daily({"a": units})
    fc = forecast_sales(frame, as_of=END - timedelta(days=7))
    assert set(fc["as_of"]) == {END - timedelta(days=7)}
    assert fc["units"].max() < 10


def test_a_failed_fit_moves_the_sku_to_the_next_simpler_model(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ets_module.forecast_one

    def failing_ana(y: np.ndarray, *, season: int, spec: str, h: int, level: int):  # type: ignore[no-untyped-def]
        if spec == "ANA" and y[0] == 11:
            raise FloatingPointError("simulated ETS failure")
        return real(y, season=season, spec=spec, h=h, level=level)

    monkeypatch.setattr(ets_module, "forecast_one", failing_ana)
    bad = weekly_counts(20, 90, 11)
    bad[0] = 11
    good = weekly_counts(20, 90, 12)
    good[0] = 12
    fc = forecast_sales(daily({"a_bad": bad, "b_good": good})).groupby("sku_key").first()
    assert fc.loc["a_bad", "model"] == "ses_shop_weekday"
    assert "ETS(ANA) fit failed" in fc.loc["a_bad", "note"]
    assert fc.loc["b_good", "model"] == "ets_ana"


def test_full_autoets_is_a_setting() -> None:
    fc = forecast_sales(daily({"a": weekly_counts(20, 60, 13)}), settings=ForecastSettings(ets_model="ZZZ"))
    assert set(fc["model"]) == {"ets_zzz"}


def test_empty_input_gives_an_empty_forecast() -> None:
    empty = daily({"a": np.zeros(0, dtype=int)})
    fc = forecast_sales(empty, catalogue=[("shop-1", "sku:x")])
    assert fc.empty and list(fc.columns) == list(model_module.FORECAST_COLUMNS)
    dated = forecast_sales(empty, as_of=END, catalogue=[("shop-1", "sku:x")])
    assert set(dated["model"]) == {"no_history"} and set(dated["as_of"]) == {END} and len(dated) == 7


def test_importing_the_package_loads_neither_dagster_nor_statsforecast() -> None:
    code = ("import sys; import ordersync_pipeline.forecast.model, ordersync_pipeline.forecast.replenish, "
            "ordersync_pipeline.forecast.backtest, ordersync_pipeline.forecast.charts; "
            "assert 'dagster' not in sys.modules; assert 'statsforecast' not in sys.modules, 'loaded eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_direct_ets_call_gives_what_statsforecasts_driver_gives() -> None:
    # ets.py calls statsforecast.ets per series instead of StatsForecast(...).forecast: same numbers.
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    rng = np.random.default_rng(3)
    ys = [weekly_counts(20, 60, 1) + rng.poisson(3, 60), rng.poisson(2, 30).astype(float), rng.poisson(8, 21).astype(float)]
    for spec, season in (("ANA", 7), ("ANN", 1), ("ZZZ", 7)):
        frame = pd.DataFrame({"unique_id": np.repeat(np.arange(len(ys)), [len(y) for y in ys]),
                              "ds": np.concatenate([pd.date_range("2026-01-01", periods=len(y)) for y in ys]),
                              "y": np.concatenate(ys).astype("float64")})
        want = StatsForecast(models=[AutoETS(season_length=season, model=spec, alias="m")], freq="D").forecast(
            df=frame, h=7, level=[80]).sort_values(["unique_id", "ds"])
        got = ets_module.fit_series(ys, season=season, spec=spec, h=7, level=80)
        for j, fit in enumerate(got):
            assert fit is not None
            rows = want[want["unique_id"] == j]
            np.testing.assert_array_equal(fit[0], rows["m"].to_numpy())
            np.testing.assert_array_equal(fit[1], rows["m-lo-80"].to_numpy())
            np.testing.assert_array_equal(fit[2], rows["m-hi-80"].to_numpy())


def test_the_ets_import_skips_statsforecasts_driver_and_leaves_the_package_importable() -> None:
    code = ("import sys; from ordersync_pipeline.forecast.ets import ets_module; ets_module(); "
            "assert 'statsforecast.ets' in sys.modules; assert 'statsforecast' not in sys.modules; "
            "assert 'fugue' not in sys.modules and 'statsforecast.core' not in sys.modules, 'driver loaded'; "
            "from statsforecast import StatsForecast; from statsforecast.models import AutoETS; "
            "import statsforecast.ets as e; assert e is sys.modules['statsforecast.ets']")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
