"""Forecast speed and accuracy: (a) 5,000 synthetic weekly-seasonal SKUs x 180 days, seconds and peak RSS;
(b) rolling-origin backtests (last four weeks) on the simulator's demand and on synthetic demand, the model
against full AutoETS, seasonal naive and a 28-day moving average.

    .venv/bin/python benchmarks/bench_forecast.py speed --skus 5000 --days 180 --repeat 5
    .venv/bin/python benchmarks/bench_forecast.py backtest
    .venv/bin/python benchmarks/bench_forecast.py imports --repeat 3

Each timed forecast runs in a fresh interpreter (``_once``) so peak RSS is that run's alone (children
included when statsforecast uses both cores) and the statsforecast import is measured apart from the
forecast itself. Timings are medians: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.backtest import Backtest, run_backtest
from ordersync_pipeline.forecast.frames import order_lines_from_trades, refunds_from_records
from ordersync_pipeline.forecast.model import ForecastSettings, forecast_sales
from ordersync_pipeline.forecast.sales import build_daily_sales
from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import GMT8

END = date(2026, 11, 29)
SIM_START = datetime(2026, 11, 30, 6, 0, tzinfo=GMT8)   # fixed, so the simulator's days are the same every run
# ETS on every SKU with two weeks of history: what "one model for all" would do (no intermittent fallback).
EVERY_SKU: dict[str, Any] = {"dense_share": 0.0, "min_seasonal_days": 14}
WEEKDAY = np.array([0.9, 0.92, 0.95, 1.0, 1.08, 1.25, 1.2])  # the simulator's Monday..Sunday factors


def synthetic_daily(n_skus: int, days: int, seed: int = 0) -> pd.DataFrame:
    """daily_sales-shaped demand: per-SKU level (log-normal, median ~1.6 units/day: dense and intermittent
    SKUs), a weekly profile near the simulator's with per-SKU noise, a slow random-walk drift,
    negative-binomial noise and a 3x promotion day ten days before the end (flagged)."""
    rng = np.random.default_rng(seed)
    day_list = [END - timedelta(days=days - 1 - k) for k in range(days)]
    dow = np.array([d.weekday() for d in day_list])
    level = np.exp(rng.normal(0.5, 1.4, n_skus))
    profile = WEEKDAY[None, :] * np.exp(rng.normal(0, 0.08, (n_skus, 7)))
    profile /= profile.mean(axis=1, keepdims=True)
    drift = np.exp(np.cumsum(rng.normal(0, 0.02, (n_skus, days)), axis=1))
    mean = level[:, None] * profile[:, dow] * drift
    promo = days - 10
    mean[:, promo] *= 3
    units = rng.negative_binomial(5, 5 / (5 + mean))
    return pd.DataFrame({
        "shop_id": "shop-1", "sku_key": np.repeat([f"sku:{i}" for i in range(n_skus)], days),
        "day": np.tile(np.array(day_list, dtype=object), n_skus), "units_gross": units.ravel(),
        "units_net": units.ravel(), "promo_day": np.tile(np.arange(days) == promo, n_skus)})


def simulator_daily(shops: int, orders_per_day: int, history_days: int) -> pd.DataFrame:
    settings = SimulatorSettings(seed=7, shops=shops, orders_per_day=orders_per_day, history_days=history_days,
                                 clock="stepped", start_at=SIM_START)
    with start_simulator(settings) as sim:
        lines = pd.concat([order_lines_from_trades(s.shop_id, sim.world.trades(s.shop_id)) for s in sim.shops])
        refunds = pd.concat([refunds_from_records(s.shop_id, sim.world.refunds(s.shop_id)) for s in sim.shops])
    return build_daily_sales(lines, refunds, end=END).frame


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


# ------------------------------------------------------------------ (a) speed

def once(args: argparse.Namespace) -> None:
    """One timed forecast in this interpreter; prints a JSON line."""
    frame = synthetic_daily(args.skus, args.days, seed=args.seed)
    t0 = time.perf_counter()
    import statsforecast.models  # noqa: F401 - timed apart from the forecast
    t1 = time.perf_counter()
    settings = ForecastSettings(ets_model=args.ets, n_jobs=args.n_jobs, **(EVERY_SKU if args.every_sku else {}))
    fc = forecast_sales(frame, settings=settings)
    t2 = time.perf_counter()
    own, children = peak_rss_mb()
    print(json.dumps({"import_s": t1 - t0, "forecast_s": t2 - t1, "rss_mb": own, "children_rss_mb": children,
                      "models": fc.groupby("model")["sku_key"].nunique().to_dict(), "rows": len(fc)}))


def speed(args: argparse.Namespace) -> None:
    print(f"# forecast speed: {args.skus:,} synthetic SKUs x {args.days} days, median of {args.repeat} "
          f"fresh-interpreter runs\n# machine: {machine()}")
    for ets, n_jobs in ((args.ets, 1), (args.ets, 2)):
        runs = [_run_once(args, ets, n_jobs, args.skus) for _ in range(args.repeat)]
        times = [r["forecast_s"] for r in runs]
        print(f"ets={ets} n_jobs={n_jobs} (load average now {os.getloadavg()[0]:.1f}): forecast {statistics.median(times):.1f} s "
              f"(min {min(times):.1f}, max {max(times):.1f}); statsforecast import "
              f"{statistics.median(r['import_s'] for r in runs):.1f} s; peak RSS "
              f"{max(r['rss_mb'] for r in runs):.0f} MB (+ children {max(r['children_rss_mb'] for r in runs):.0f} MB); "
              f"SKUs per model {runs[0]['models']}")
    if args.full_skus:
        # The alternative the issue measures against: full AutoETS model selection on every SKU.
        run = _run_once(args, "ZZZ", 2, args.full_skus, every_sku=True)
        print(f"full AutoETS (ZZZ) on every one of {args.full_skus:,} SKUs, n_jobs=2, one run: "
              f"{run['forecast_s']:.1f} s ({run['forecast_s'] / args.full_skus * 2000:.0f} ms per SKU-core); "
              f"peak RSS {run['rss_mb']:.0f} MB (+ children {run['children_rss_mb']:.0f} MB)")


def _run_once(args: argparse.Namespace, ets: str, n_jobs: int, skus: int, every_sku: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "_once", "--skus", str(skus), "--days", str(args.days), "--ets", ets,
           "--n-jobs", str(n_jobs), "--seed", str(args.seed), *(["--every-sku"] if every_sku else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# ------------------------------------------------------------------ (b) accuracy

def backtest(args: argparse.Namespace) -> None:
    print(f"# rolling-origin backtest, 4 weekly origins, 7-day horizon\n# machine: {machine()}")
    cases: list[tuple[str, Any]] = [
        (f"simulator seed 7, 2 shops x 500 orders/day, {args.history} days", lambda: simulator_daily(2, 500, args.history)),
        (f"simulator seed 7, 2 shops x 100 orders/day, {args.history} days", lambda: simulator_daily(2, 100, args.history)),
        (f"synthetic, {args.synthetic_skus} SKUs x 180 days", lambda: synthetic_daily(args.synthetic_skus, 180, seed=1)),
    ]
    for title, make in cases:
        t = time.perf_counter()
        daily = make()
        built = time.perf_counter() - t
        n_skus = daily.groupby(["shop_id", "sku_key"]).ngroups
        print(f"\n## {title}: {n_skus} SKUs (daily_sales built in {built:.1f} s)")
        results = {}
        for name, settings in VARIANTS.items():
            t = time.perf_counter()
            results[name] = run_backtest(daily, settings=settings)
            print(f"backtest, {name}: {time.perf_counter() - t:.1f} s")
        print(table(results))
        mix = results[CHOSEN].points.groupby("model_name").size() / 7
        print("SKU-forecasts per model (4 origins):", {k: int(v) for k, v in mix.items()})


CHOSEN = "model: ETS(A,N,A) + fallbacks"
VARIANTS = {CHOSEN: ForecastSettings(),
            "full AutoETS + the same fallbacks": ForecastSettings(ets_model="ZZZ"),
            "ETS(A,N,A) on every SKU": ForecastSettings(**EVERY_SKU),
            "full AutoETS on every SKU": ForecastSettings(ets_model="ZZZ", **EVERY_SKU)}


def table(results: dict[str, Backtest]) -> str:
    lines = ["| scope | method | WAPE | vs seasonal naive | bias | 80 % coverage |", "|---|---|---:|---:|---:|---:|"]
    chosen = results[CHOSEN]
    for scope in ("all days", "non-promotion days"):
        naive = chosen.figure("seasonal_naive", scope=scope)
        rows = [(name, bt, "model") for name, bt in results.items()]
        rows += [("seasonal naive", chosen, "seasonal_naive"), ("28-day moving average", chosen, "moving_average")]
        for name, bt, method in rows:
            wape = bt.figure(method, scope=scope)
            cov = bt.figure(method, "coverage", scope)
            lines.append(f"| {scope} | {name} | {wape:.3f} | {1 - wape / naive:+.1%} | "
                         f"{bt.figure(method, 'bias', scope):+.3f} | {'' if np.isnan(cov) else f'{cov:.1%}'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ import time

def imports(args: argparse.Namespace) -> None:
    print(f"# import time, fresh interpreters, median of {args.repeat}\n# machine: {machine()}")
    for what in ("pandas", "ordersync_pipeline.forecast.model", "statsforecast.models"):
        code = f"import time; t = time.perf_counter(); import {what}; print(time.perf_counter() - t)"
        times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(args.repeat)]
        print(f"import {what}: {statistics.median(times):.2f} s")


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"nproc={os.cpu_count()}, python {platform.python_version()}, {platform.platform()}; load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("speed", "_once"):
        p = sub.add_parser(name)
        p.add_argument("--skus", type=int, default=5000)
        p.add_argument("--days", type=int, default=180)
        p.add_argument("--ets", default="ANA")
        p.add_argument("--n-jobs", type=int, default=1)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--repeat", type=int, default=5)
        p.add_argument("--full-skus", type=int, default=5000, help="SKUs for the full-AutoETS timing (0 = skip)")
        p.add_argument("--every-sku", action="store_true", help="ETS on every SKU with 14+ days (no fallbacks)")
    p = sub.add_parser("backtest")
    p.add_argument("--history", type=int, default=150)
    p.add_argument("--synthetic-skus", type=int, default=500)
    p = sub.add_parser("imports")
    p.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    {"speed": speed, "_once": once, "backtest": backtest, "imports": imports}[args.cmd](args)


if __name__ == "__main__":
    main()
