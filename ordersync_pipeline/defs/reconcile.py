"""Reconciliation in Dagster: the ``daily_reconciliation`` asset (shop x Asia/Shanghai day) with its checks,
its job and morning schedule, and the degraded full pull the breaker launches.

Thin: the work is ``reconcile/`` (plain Python). Each shop-day partition is materialised on its own with
its figures per stream (the warehouse's side of a run's days is read once per shop: reconcile/batch.py),
and evaluates:

* ``no_reconciliation_gap`` (ERROR): fails while a gap survives the re-fetch, passes once repaired; the
  gap opens a ``reconciliation_gap`` alert, which the next passing evaluation resolves;
* the order quality checks (WARN, reconcile/quality.py): they warn and never block anything.

The day partitions are the timeline's: from the first historical day up to yesterday, so any day the
warehouse covers can be (re-)reconciled from the UI; a day older than the platform's ~90-day horizon
fails with a message saying so.
"""


import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

import dagster as dg

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.defs.automation import range_tags, shop_ranges
from ordersync_pipeline.defs.metadata import asset_spec_metadata, table_kinds
from ordersync_pipeline.defs.partitions import SHOP, TIME, multi_key, split_key
from ordersync_pipeline.failures import describe
from ordersync_pipeline.reconcile import quality
from ordersync_pipeline.reconcile.daily import DayOutcome, day_checks, reconcile_day
from ordersync_pipeline.reconcile.fullpull import degraded_streams, full_pull, full_pull_window
from ordersync_pipeline.reconcile.batch import ShopDays
from ordersync_pipeline.reconcile.records import save_days
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.windows import DAY_KEY_FORMAT, Timeline
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.recorder import WarehouseCallRecorder

__all__ = ["Monitoring", "build_monitoring", "day_partitions", "RECONCILE_ASSET", "RECONCILE_JOB",
           "RECONCILE_SCHEDULE", "GAP_CHECK", "DEGRADED_ASSET", "DEGRADED_JOB", "GAP_ALERT", "previous_day"]

RECONCILE_ASSET = "daily_reconciliation"
RECONCILE_JOB = "daily_reconciliation_job"
RECONCILE_SCHEDULE = "daily_reconciliation_schedule"
GAP_CHECK = "no_reconciliation_gap"
GAP_ALERT: Final = "reconciliation_gap"
DEGRADED_ASSET = "degraded_full_pull"
DEGRADED_JOB = "degraded_full_pull_job"
GROUP = "monitoring"


@dataclass(frozen=True)
class Monitoring:
    assets: list[dg.AssetsDefinition]
    jobs: list[Any]                   # dg.define_asset_job results
    schedules: list[dg.ScheduleDefinition]
    days: dg.MultiPartitionsDefinition
    shops: dg.StaticPartitionsDefinition


def day_partitions(shop_ids: Sequence[str], timeline: Timeline) -> dg.MultiPartitionsDefinition:
    """Shops x Asia/Shanghai days, from the first historical day to yesterday (the last complete day)."""
    days = dg.DailyPartitionsDefinition(start_date=timeline.first_history_day.strftime(DAY_KEY_FORMAT),
                                        timezone="Asia/Shanghai", fmt=DAY_KEY_FORMAT, end_offset=0)
    return dg.MultiPartitionsDefinition({SHOP: dg.StaticPartitionsDefinition(sorted(shop_ids)), TIME: days})


def previous_day(at: datetime) -> date:
    """The Asia/Shanghai day before the one ``at`` falls in."""
    return at.astimezone(SHANGHAI).date() - timedelta(days=1)


def build_monitoring(settings: Settings, timeline: Timeline, *, max_shops_per_run: int) -> Monitoring:
    days = day_partitions(settings.shop_ids, timeline)
    shops = dg.StaticPartitionsDefinition(settings.shop_ids)
    reconcile = _reconciliation_asset(settings, timeline, days)
    pull = _degraded_pull_asset(settings, timeline, shops)
    jobs = [
        dg.define_asset_job(RECONCILE_JOB, selection=dg.AssetSelection.assets(reconcile),
                            description="Reconcile shop-days against the platform and re-fetch what is missing "
                                        "or stale; what the morning schedule launches."),
        dg.define_asset_job(DEGRADED_JOB, selection=dg.AssetSelection.assets(pull),
                            description="The degraded full pull of one shop, launched by the failure-rate "
                                        "sensor while the shop's breaker is open."),
    ]
    return Monitoring(assets=[reconcile, pull], jobs=jobs,
                      schedules=[_reconciliation_schedule(settings, max_shops_per_run)], days=days, shops=shops)


def _partitioned_check(name: str, description: str, partitions_def: dg.PartitionsDefinition,
                       ) -> dg.AssetCheckSpec:
    # Dagster marks partitioned checks as a preview: a note for its developers, not for operators.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=RECONCILE_ASSET, description=description,
                                 partitions_def=partitions_def)


def _reconciliation_asset(settings: Settings, timeline: Timeline,
                          days: dg.MultiPartitionsDefinition) -> dg.AssetsDefinition:
    checks = day_checks()
    monitoring = settings.config.monitoring
    compared = "; ".join(f"{stream.title}: {check.compared}" for stream, check in checks)
    check_specs = [_partitioned_check(GAP_CHECK, (
        "Fails while the platform and the warehouse still disagree about the shop's day after the re-fetch; "
        "passes once they agree (re-run the partition after fixing the cause)."), days)]
    check_specs += [_partitioned_check(name, quality.CHECKS[name], days) for name in quality.check_names()]

    @dg.multi_asset(
        name="reconciliation", partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=check_specs, can_subset=True,
        specs=[dg.AssetSpec(RECONCILE_ASSET, skippable=True, group_name=GROUP, kinds={"taobao", *table_kinds(settings.warehouse_url)},
                            metadata=asset_spec_metadata(["reconciliation_daily"]),
                            description=(
            "Each shop's Asia/Shanghai day checked against the platform (每日对账): the platform's count "
            "against the warehouse's and, when they differ, the day's records listed cheaply, diffed, and "
            "exactly the missing and stale ones re-fetched (补抓) and loaded; records changed after the "
            "increments' synced range are pending (not yet due), not gaps. Compared: " + compared + ". "
            "Results in the reconciliation_daily table; scheduled early each morning for the previous day, "
            "and any day can be re-run here."))])
    def reconciliation(context: dg.AssetExecutionContext, top: dg.ResourceParam[Gateway],
                       warehouse: dg.ResourceParam[Warehouse], lake: dg.ResourceParam[PageLake],
                       ) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        alerts = Alerts.from_settings(settings, warehouse)
        failures: list[str] = []
        keys = [(shop, day_key, date.fromisoformat(day_key))
                for shop, day_key in map(split_key, context.partition_keys)]
        per_shop: dict[str, list[date]] = defaultdict(list)
        for shop, _, day in keys:
            per_shop[shop].append(day)
        shop_days = {shop: ShopDays(warehouse=warehouse, lake=lake, timeline=timeline, shop_id=shop, days=days,
                                    checks=checks) for shop, days in per_shop.items()}
        # Most days have no open gap alert: one read here instead of a resolve transaction per day and stream.
        open_gaps = {(alert.shop_id, alert.key) for alert in alerts.open_alerts(GAP_ALERT)}
        with WarehouseCallRecorder(warehouse, run_id=context.run.run_id) as recorder:
            client = top.client(recorder)
            try:
                for shop, day_key, day in keys:
                    calls = recorder.total
                    asked = shop_days[shop]
                    try:
                        now = settings.clock()
                        outcomes = []
                        for stream, check in checks:
                            outcome = reconcile_day(client=client, warehouse=warehouse, stream=stream, check=check,
                                                    shop_id=shop, session=top.session(shop), day=day,
                                                    run_id=context.run.run_id,
                                                    always_list=monitoring.reconcile_always_list, now=now,
                                                    synced_until=asked.synced_until(stream, day, now=now),
                                                    stored_count=asked.stored_count(stream, day))
                            if outcome.result.refetched_count:
                                asked.changed()
                            outcomes.append(outcome)
                        save_days(warehouse, [outcome.result for outcome in outcomes])
                        results = asked.quality(day)
                    except Exception as exc:  # noqa: BLE001 - this shop-day's failure alone
                        asked.changed()  # it may have failed after a re-fetch loaded some records
                        failures.append(f"{shop} {day_key}: {describe(exc)}")
                        context.log.warning(f"reconciliation of {shop} {day_key} failed: {describe(exc)}")
                        continue
                    _alert(alerts, shop, outcomes, open_gaps)
                    yield from _report(multi_key(shop, day_key), outcomes, results, recorder.total - calls)
            finally:
                client.close()
        if failures:
            raise dg.Failure(description=f"{len(failures)} shop-day(s) could not be reconciled (a re-run retries "
                                         f"them); first: {failures[0]}",
                             metadata={"failed_partitions": "\n".join(failures[:50])}, allow_retries=False)

    return reconciliation


def _alert(alerts: Alerts, shop: str, outcomes: Sequence[DayOutcome], open_gaps: set[tuple[str | None, str]]) -> None:
    """Open the gap alert of each stream's day that has a gap, resolve the open ones of those that have none.
    ``open_gaps``: the (shop, key) of open gap alerts, kept up to date here (one opened by another
    process since it was read is resolved by the day's next reconciliation)."""
    for outcome in outcomes:
        row, left = outcome.result, outcome.remaining
        key = f"{row.stream}:{row.day.isoformat()}"
        if row.gap:
            open_gaps.add((shop, key))
            alerts.open(GAP_ALERT, shop_id=shop, key=key, message=(
                f"shop {shop} {row.stream} {row.day.isoformat()}: still {len(left.missing) + len(left.unseen)} missing, "
                f"{len(left.stale)} stale and {len(left.extra)} unexpected after re-fetching {row.refetched_count} "
                f"(platform {row.platform_count}, warehouse {row.warehouse_count}). Look at the quarantine "
                f"table for these records, then re-run daily_reconciliation for {shop}|{row.day.isoformat()}."))
        elif (shop, key) in open_gaps:
            open_gaps.discard((shop, key))
            alerts.resolve(GAP_ALERT, shop_id=shop, key=key)


def _report(key: dg.MultiPartitionKey, outcomes: Sequence[DayOutcome], results: Sequence[quality.QualityResult],
            api_calls: int) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    metadata: dict[str, Any] = {"api_calls": api_calls}
    for outcome in outcomes:
        row = outcome.result
        metadata.update({f"{row.stream}_{name}": getattr(row, name) for name in (
            "platform_count", "warehouse_count", "missing_count", "stale_count", "extra_count",
            "pending_count", "refetched_count", "status")})
    yield dg.AssetMaterialization(asset_key=RECONCILE_ASSET, partition=str(key), metadata=metadata)
    gaps = [o for o in outcomes if o.result.gap]
    description = "; ".join(
        f"{o.result.stream}: {len(o.remaining.missing) + len(o.remaining.unseen)} missing, "
        f"{len(o.remaining.stale)} stale, "
        f"{len(o.remaining.extra)} unexpected remain (e.g. {o.remaining.keys[:5]})" for o in gaps)
    yield dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(RECONCILE_ASSET), check_name=GAP_CHECK, passed=not gaps, partition=str(key),
        severity=dg.AssetCheckSeverity.ERROR,
        description=description or "; ".join(f"{o.result.stream}: {o.result.status}, platform "
                                               f"{o.result.platform_count} = warehouse {o.result.warehouse_count}"
                                               for o in outcomes),
        metadata={f"{o.result.stream}_status": o.result.status for o in outcomes})
    for result in results:
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(RECONCILE_ASSET), check_name=result.name, passed=result.passed,
            partition=str(key), severity=dg.AssetCheckSeverity.WARN, description=result.summary(str(key)),
            metadata={"checked": result.checked, "violations": result.violations,
                      "examples": "\n".join(result.examples) or "none"})


def _reconciliation_schedule(settings: Settings, max_shops_per_run: int) -> dg.ScheduleDefinition:
    hour, minute = (int(part) for part in settings.config.monitoring.reconcile_at.split(":"))
    shop_ids = settings.shop_ids

    @dg.schedule(name=RECONCILE_SCHEDULE, job_name=RECONCILE_JOB, cron_schedule=f"{minute} {hour} * * *",
                 execution_timezone="Asia/Shanghai", default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=(f"Every day at {settings.config.monitoring.reconcile_at} Asia/Shanghai: reconcile the "
                              "previous day of every shop (one run per up to "
                              f"{max_shops_per_run} shops)."))
    def daily_reconciliation_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        if not shop_ids:
            return dg.SkipReason("no configured shop")
        day = previous_day(context.scheduled_execution_time).strftime(DAY_KEY_FORMAT)
        return [dg.RunRequest(run_key=f"{day}|{first}..{last}",
                              tags={**range_tags(first, last, day, day), "ordersync/started_by": "schedule"})
                for first, last in shop_ranges(shop_ids, max_shops_per_run)]

    return daily_reconciliation_schedule


def _degraded_pull_asset(settings: Settings, timeline: Timeline,
                         shops: dg.StaticPartitionsDefinition) -> dg.AssetsDefinition:
    breaker = settings.config.monitoring.breaker
    streams = degraded_streams()

    @dg.multi_asset(
        name="degraded_pull", partitions_def=shops, backfill_policy=dg.BackfillPolicy.single_run(), can_subset=True,
        specs=[dg.AssetSpec(DEGRADED_ASSET, skippable=True, group_name=GROUP,
                            kinds={"taobao", *table_kinds(settings.warehouse_url)},
                            metadata=asset_spec_metadata([t for s in streams for t in s.tables]),
                            description=(
            "The degraded full pull (降级全量): while a shop's failure-rate breaker is open, its "
            f"{', '.join(s.title for s in streams)} created in the last {breaker.full_pull_hours} hours fetched by "
            "the historical list API (taobao.trades.sold.get) and upserted into the same tables. Launched by the "
            f"failure_rate_sensor every {breaker.full_pull_every_minutes} minutes while the breaker is open; it "
            "completes no increment window, so the gap sensor repairs those once the breaker closes."))])
    def degraded_full_pull(context: dg.AssetExecutionContext, top: dg.ResourceParam[Gateway],
                           warehouse: dg.ResourceParam[Warehouse]) -> Iterator[dg.AssetMaterialization]:
        window = full_pull_window(settings.clock(), pull_range=timedelta(hours=breaker.full_pull_hours),
                                  safety_lag=timeline.safety_lag)
        with WarehouseCallRecorder(warehouse, run_id=context.run.run_id) as recorder:
            with top.client(recorder) as client:
                for shop in context.partition_keys:
                    calls = recorder.total
                    metadata: dict[str, Any] = {"window_start": window.start.isoformat(),
                                                "window_end": window.end.isoformat()}
                    for stream in streams:
                        pulled = full_pull(client, warehouse, stream, shop_id=shop, session=top.session(shop),
                                           window=window, page_size=settings.config.sync.page_size,
                                           run_id=context.run.run_id)
                        metadata.update({f"{stream.name}_pages": pulled.figures.pages,
                                         f"{stream.name}_records": pulled.figures.records,
                                         f"{stream.name}_quarantined": pulled.figures.quarantined,
                                         **{f"{table}_upserted": n for table, n in pulled.figures.rows.items()}})
                    metadata["api_calls"] = recorder.total - calls
                    yield dg.AssetMaterialization(asset_key=DEGRADED_ASSET, partition=shop, metadata=metadata)

    return degraded_full_pull
