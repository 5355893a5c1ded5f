"""Stock, presale freeze and the daily forecast in Dagster: thin assets over forecast/daily.py and
sync/snapshot.py, their jobs and schedules.

* ``inventory_snapshots`` (one asset per registered snapshot, sync/streams.py ``SNAPSHOTS``) and
  ``inventory_freeze``: the ``inventory_job``, on ``forecast.inventory_cron`` (hourly by default) and on
  demand. Unpartitioned: a snapshot is "now", every configured shop each run (a shop that fails fails
  alone; the others land).
* ``daily_sales`` -> ``sales_forecast`` -> ``replenishment_suggestions``: Asia/Shanghai day partitions
  (every shop in one run), the ``daily_forecast_job``, scheduled at ``forecast.run_at`` for the previous
  day, after the day's reconciliation (``monitoring.reconcile_at``, validated earlier). ``sales_forecast``
  carries the backtest check ``beats_seasonal_naive``; ``replenishment_suggestions`` attaches the top
  suggestions and a chart per top SKU (Markdown, SVG data URIs) and writes them under
  ``ORDERSYNC_HOME/reports/<day>/``.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from types import ModuleType
from typing import TYPE_CHECKING, Any

import dagster as dg

from ordersync_pipeline.defs.metadata import asset_spec_metadata, table_kinds
from ordersync_pipeline.defs.reconcile import previous_day
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.snapshot import take_snapshots
from ordersync_pipeline.sync.stream import Snapshot
from ordersync_pipeline.sync.streams import SNAPSHOTS, STREAMS
from ordersync_pipeline.sync.windows import DAY_KEY_FORMAT, Timeline
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.recorder import WarehouseCallRecorder

if TYPE_CHECKING:
    from ordersync_pipeline.forecast.backtest import Backtest

__all__ = ["ForecastDefs", "build_forecast", "INVENTORY_JOB", "INVENTORY_SCHEDULE", "FORECAST_JOB",
           "FORECAST_SCHEDULE", "BACKTEST_CHECK", "FREEZE_ASSET", "SALES_ASSET", "FORECAST_ASSET",
           "SUGGESTIONS_ASSET", "forecast_days", "backtest_check", "backtest_figures"]

INVENTORY_JOB = "inventory_job"
INVENTORY_SCHEDULE = "inventory_schedule"
FORECAST_JOB = "daily_forecast_job"
FORECAST_SCHEDULE = "daily_forecast_schedule"
BACKTEST_CHECK = "beats_seasonal_naive"
FREEZE_ASSET = "inventory_freeze"
SALES_ASSET = "daily_sales"
FORECAST_ASSET = "sales_forecast"
SUGGESTIONS_ASSET = "replenishment_suggestions"
GROUP = "forecast"
SINGLE_RUN = dg.BackfillPolicy.single_run()


def _forecast() -> ModuleType:
    """forecast/daily.py, imported when a forecast asset runs, not when the definitions load: it brings
    pandas and statsforecast (~1 CPU-second of imports) into every process that loads the code (each
    run the daemon launches, the webserver, the daemon itself), and most runs are syncs."""
    from ordersync_pipeline.forecast import daily

    return daily


@dataclass(frozen=True)
class ForecastDefs:
    assets: list[dg.AssetsDefinition]
    jobs: list[Any]                   # dg.define_asset_job results
    schedules: list[dg.ScheduleDefinition]


def forecast_days(timeline: Timeline) -> dg.DailyPartitionsDefinition:
    """Asia/Shanghai days from the first historical day up to yesterday (the last complete day)."""
    return dg.DailyPartitionsDefinition(start_date=timeline.first_history_day.strftime(DAY_KEY_FORMAT),
                                        timezone="Asia/Shanghai", fmt=DAY_KEY_FORMAT, end_offset=0)


def build_forecast(settings: Settings, timeline: Timeline) -> ForecastDefs:
    days = forecast_days(timeline)
    snapshots = [_snapshot_asset(settings, snapshot) for snapshot in SNAPSHOTS]
    freeze = _freeze_asset(settings)
    daily = [_daily_sales_asset(settings, days), _forecast_asset(settings, days), _suggestions_asset(settings, days)]
    jobs = [
        dg.define_asset_job(INVENTORY_JOB, selection=dg.AssetSelection.assets(*snapshots, freeze),
                            description="Take every shop's inventory snapshot and rebuild the presale freeze."),
        dg.define_asset_job(FORECAST_JOB, selection=dg.AssetSelection.assets(*daily),
                            description="Daily sales, the 7-day forecast and replenishment suggestions for a day."),
    ]
    return ForecastDefs(assets=[*snapshots, freeze, *daily], jobs=jobs,
                        schedules=[_inventory_schedule(settings), _forecast_schedule(settings)])


def _snapshot_asset(settings: Settings, snapshot: Snapshot) -> dg.AssetsDefinition:
    shop_ids = settings.shop_ids
    page_size = settings.config.sync.page_size

    @dg.asset(name=snapshot.asset, group_name=GROUP, backfill_policy=SINGLE_RUN,
              kinds={"taobao", *table_kinds(settings.warehouse_url)}, description=snapshot.description,
              metadata=asset_spec_metadata(snapshot.table))
    def _take(context: dg.AssetExecutionContext, top: dg.ResourceParam[Gateway],
              warehouse: dg.ResourceParam[Warehouse], lake: dg.ResourceParam[PageLake]) -> dg.MaterializeResult[Any]:
        taken_at = settings.clock()
        with WarehouseCallRecorder(warehouse, run_id=context.run.run_id) as recorder:
            client = top.client(recorder)
            try:
                outcomes = take_snapshots(snapshot, shop_ids=shop_ids, client=client, sessions=top.session,
                                          warehouse=warehouse, lake=lake, taken_at=taken_at, page_size=page_size)
            finally:
                client.close()
        failed = [o for o in outcomes if not o.ok]
        rows = sum(o.rows for o in outcomes)
        meta: dict[str, Any] = {
            "taken_at": outcomes[0].taken_at.isoformat() if outcomes else taken_at.isoformat(),
            "rows": rows, "dagster/row_count": rows, "api_calls": recorder.total,
            "quarantined": sum(o.quarantined for o in outcomes),
            "per_shop": "\n".join(f"{o.shop_id}: {o.rows} rows, {o.pages} pages" if o.ok else f"{o.shop_id}: FAILED "
                                  f"{o.error}" for o in outcomes)}
        if failed:
            raise dg.Failure(description=f"{len(failed)} of {len(outcomes)} shop snapshots failed (the others "
                                         f"landed); first: {failed[0].shop_id}: {failed[0].error}",
                             metadata=meta, allow_retries=False)
        return dg.MaterializeResult(metadata=meta)

    return _take


def _freeze_asset(settings: Settings) -> dg.AssetsDefinition:
    shop_ids = settings.shop_ids
    trade_tables = [t for s in STREAMS if s.name == "trades" for t in s.assets.tables["increment"]]

    @dg.asset(name=FREEZE_ASSET, group_name=GROUP, backfill_policy=SINGLE_RUN,
              kinds=table_kinds(settings.warehouse_url), deps=trade_tables, metadata=asset_spec_metadata(FREEZE_ASSET),
              description=(
                  "Stock held by presale deposits (预售): one row per order line of a step trade whose deposit is "
                  "paid; open while the balance is unpaid, released on balance paid, forfeit or close. Rebuilt "
                  "from the warehouse's own trades on every run (forecast/freeze.py)."))
    def inventory_freeze(warehouse: dg.ResourceParam[Warehouse]) -> dg.MaterializeResult[Any]:
        result = _forecast().rebuild_freezes(warehouse, shop_ids)
        return dg.MaterializeResult(metadata={"rows": result.rows, "dagster/row_count": result.rows,
                                              "open_lines": result.open_lines, "frozen_units": result.frozen_units})

    return inventory_freeze


def _days(context: dg.AssetExecutionContext) -> list[date]:
    """The run's days, oldest first (a backfill of many days is one run)."""
    return sorted(date.fromisoformat(key) for key in context.partition_keys)


def _daily_sales_asset(settings: Settings, days: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    cfg, shop_ids = settings.config.forecast, settings.shop_ids
    upstream = [t for s in STREAMS for t in s.assets.tables["increment"]]

    @dg.asset(name=SALES_ASSET, group_name=GROUP, partitions_def=days, deps=upstream, backfill_policy=SINGLE_RUN,
              kinds=table_kinds(settings.warehouse_url), metadata=asset_spec_metadata(SALES_ASSET),
              description=(
                  "Units and revenue per shop, SKU and Asia/Shanghai day, gross and net of successful refunds "
                  "(on the day they succeed); presales count when the balance is paid; zeros for every active "
                  f"SKU's quiet days; promotion days flagged. A partition rebuilds the {cfg.history_days} days up "
                  "to its day (forecast/sales.py)."))
    def daily_sales(context: dg.AssetExecutionContext,
                    warehouse: dg.ResourceParam[Warehouse]) -> dg.MaterializeResult[Any]:
        days = _days(context)
        day = days[-1]  # one rebuild covers the range: the history window of the first day to the last
        sales = _forecast().run_daily_sales(warehouse, shop_ids, day, cfg, first=days[0])
        frame = sales.frame
        on_day = frame[frame["day"] == day] if len(frame) else frame
        return dg.MaterializeResult(metadata={
            "window": f"{sales.start} .. {sales.end}", "rows": len(frame), "dagster/row_count": len(frame),
            "skus": int(frame[["shop_id", "sku_key"]].drop_duplicates().shape[0]) if len(frame) else 0,
            "units_net_on_day": int(on_day["units_net"].sum()) if len(on_day) else 0,
            "lines_counted": sales.lines_counted, "refunds_applied": sales.refunds_applied,
            "refunds_known": "no refunds table: net = gross" if "refunds" not in {s.name for s in STREAMS}
            else "yes",
            "lines_excluded": ", ".join(f"{k}: {v}" for k, v in sales.lines_excluded.items() if v) or "none",
            "promo_days": ", ".join(f"{shop}: {', '.join(map(str, d))}" for shop, d in sales.promo_days.items())
            or "none"})

    return daily_sales


def _forecast_asset(settings: Settings, days: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    cfg, shop_ids = settings.config.forecast, settings.shop_ids
    snapshot_assets = [s.asset for s in SNAPSHOTS]

    @dg.asset(name=FORECAST_ASSET, group_name=GROUP, partitions_def=days, deps=[SALES_ASSET, *snapshot_assets],
              backfill_policy=SINGLE_RUN,
              kinds=table_kinds(settings.warehouse_url), metadata=asset_spec_metadata(FORECAST_ASSET),
              check_specs=[dg.AssetCheckSpec(BACKTEST_CHECK, asset=FORECAST_ASSET, description=(
                  "Rolling-origin backtest over the last four weeks up to the partition's day: the model's WAPE "
                  "must be lower than seasonal naive's (same weekday last week). Moving average, bias and the "
                  "80 % interval's coverage are reported beside it."))],
              description=(
                  "The next 7 days per active SKU (listed in the newest inventory snapshot or sold in the "
                  "history): point forecast and 80 % interval, weekly seasonality, promotion days kept out of "
                  "the baseline; the model column names the method or the fallback (forecast/model.py)."))
    def sales_forecast(context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse],
                       ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        days = _days(context)
        for day in days:  # a range is one run; the metadata and the check are the newest day's
            result = _forecast().run_sales_forecast(warehouse, shop_ids, day, cfg)
        yield dg.MaterializeResult(metadata={
            "as_of": day.isoformat(), "days_in_run": len(days), "rows": result.rows, "dagster/row_count": result.rows,
            "skus_by_model": ", ".join(f"{k}: {v}" for k, v in sorted(result.models.items())) or "none",
            "catalogue": "newest inventory snapshot" if result.catalogue_known else "unknown (no snapshot yet)",
            "skus_with_negative_days_clipped": result.negative_day_skus,
            "sku_notes": dg.MetadataValue.md(_notes_table(result.notes))})
        yield backtest_check(result.daily, day)

    return sales_forecast


def _notes_table(notes: dict[tuple[str, str], str], limit: int = 50) -> str:
    """The model's notes per SKU (fallbacks, clipped negative days, promotion days replaced) as Markdown."""
    if not notes:
        return "_No SKU needed a fallback or a correction._"
    lines = ["| shop | SKU | note |", "|---|---|---|"]
    lines += [f"| {shop} | {sku} | {note.replace('|', '/')} |" for (shop, sku), note in sorted(notes.items())[:limit]]
    if len(notes) > limit:
        lines.append(f"\n_{len(notes) - limit} more SKU(s) not shown._")
    return "\n".join(lines)


def backtest_check(daily: Any, day: date) -> dg.AssetCheckResult:
    backtest = _forecast().backtest_day(daily, day)
    if backtest is None:
        return dg.AssetCheckResult(check_name=BACKTEST_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description=(f"not evaluated: fewer than {_forecast().MIN_BACKTEST_DAYS} days of sales "
                                                f"history up to {day} (or none at all) to backtest four weeks"))
    figures = backtest_figures(backtest)
    # Both perfect (a series that repeats its week exactly) counts as not beaten.
    passed = figures["model_wape"] < figures["seasonal_naive_wape"] or figures["model_wape"] == 0
    return dg.AssetCheckResult(
        check_name=BACKTEST_CHECK, passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=figures,
        description=(f"model WAPE {figures['model_wape']:.3f} vs seasonal naive {figures['seasonal_naive_wape']:.3f} "
                     f"({figures['improvement']:+.1%} lower), moving average {figures['moving_average_wape']:.3f}; "
                     f"interval coverage {figures['coverage']:.0%}"))


def backtest_figures(backtest: "Backtest") -> dict[str, float]:
    """WAPE and bias per method, the improvement over seasonal naive and the interval coverage."""
    out: dict[str, float] = {}
    for method in ("model", "seasonal_naive", "moving_average"):
        out[f"{method}_wape"] = round(backtest.figure(method), 4)
        out[f"{method}_bias"] = round(backtest.figure(method, "bias"), 4)
    naive = out["seasonal_naive_wape"]
    out["improvement"] = round(1 - out["model_wape"] / naive, 4) if naive > 0 else 0.0
    out["coverage"] = round(backtest.figure("model", "coverage"), 4)
    out["points"] = float(len(backtest.points))
    return out


def _suggestions_asset(settings: Settings, days: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    cfg, shop_ids = settings.config.forecast, settings.shop_ids
    snapshot_assets = [s.asset for s in SNAPSHOTS]
    reports = settings.home / "reports"

    @dg.asset(name=SUGGESTIONS_ASSET, group_name=GROUP, partitions_def=days, backfill_policy=SINGLE_RUN,
              deps=[FORECAST_ASSET, FREEZE_ASSET, *snapshot_assets], kinds=table_kinds(settings.warehouse_url),
              metadata=asset_spec_metadata(SUGGESTIONS_ASSET),
              description=(
                  f"What to reorder per SKU: available = newest snapshot - open presale freezes; demand over "
                  f"{cfg.lead_time_days} lead-time days plus safety stock for a {cfg.service_level:.0%} service "
                  f"level, rounded up to packs of {cfg.pack_size}; the reason in words. The top suggestions and "
                  "a chart per top SKU are attached here and written to ORDERSYNC_HOME/reports/<day>/."))
    def replenishment_suggestions(context: dg.AssetExecutionContext,
                                  warehouse: dg.ResourceParam[Warehouse]) -> dg.MaterializeResult[Any]:
        days = _days(context)
        for day in days:  # a range is one run; the metadata is the newest day's
            result = _forecast().run_suggestions(warehouse, shop_ids, day, cfg, reports / day.isoformat())
        frame = result.frame
        ordering = frame[frame["suggested_qty"] > 0]
        return dg.MaterializeResult(metadata={
            "as_of": day.isoformat(), "days_in_run": len(days), "rows": result.rows, "dagster/row_count": result.rows,
            "skus_to_reorder": len(ordering), "units_suggested": int(ordering["suggested_qty"].sum()),
            "report": dg.MetadataValue.path(str(result.report_paths[0])) if result.report_paths else "none",
            "top_suggestions": dg.MetadataValue.md(result.markdown)})

    return replenishment_suggestions


def _inventory_schedule(settings: Settings) -> dg.ScheduleDefinition:
    cron = settings.config.forecast.inventory_cron
    return dg.ScheduleDefinition(name=INVENTORY_SCHEDULE, job_name=INVENTORY_JOB, cron_schedule=cron,
                                 execution_timezone="Asia/Shanghai", default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description=f"Inventory snapshot and presale freeze on `{cron}` (Asia/Shanghai).")


def _forecast_schedule(settings: Settings) -> dg.ScheduleDefinition:
    at = settings.config.forecast.run_at
    hour, minute = (int(part) for part in at.split(":"))

    @dg.schedule(name=FORECAST_SCHEDULE, job_name=FORECAST_JOB, cron_schedule=f"{minute} {hour} * * *",
                 execution_timezone="Asia/Shanghai", default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=(f"Every day at {at} Asia/Shanghai (after the {settings.config.monitoring.reconcile_at} "
                              "reconciliation): daily sales, forecast and suggestions for the previous day."))
    def daily_forecast_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = previous_day(context.scheduled_execution_time).strftime(DAY_KEY_FORMAT)
        return dg.RunRequest(run_key=day, partition_key=day, tags={"ordersync/started_by": "schedule"})

    return daily_forecast_schedule

