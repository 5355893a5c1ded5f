"""``ordersync sync``: bring the warehouse up to date through the same Dagster assets the schedule runs.

1. Open (and migrate) the warehouse first: a database that is down or misconfigured fails in one line.
2. Take the home's sync lock, and mark runs left STARTED by a killed sync as failed.
3. Plan from ``sync_windows`` (sync/plan.py): per stream and path, the partitions not yet complete; cut
   into runs that target exactly those partitions.
4. Execute each run in-process against the persistent instance (``ordersync dev`` then shows it), and
   check that it materialised every partition it was asked for: one that did less fails loudly.
5. Reconcile every completed day in range (``plan_reconciliation``): each shop-day not yet reconciled
   without a gap goes through the ``daily_reconciliation`` asset, which counts against the platform and
   re-fetches what is missing or stale. The summary shows each day's counts and what was re-fetched.
6. Stock and forecast (``run_stock``): the inventory job (a snapshot of every shop, the presale freeze
   rebuilt), then the daily forecast job (daily sales, forecast, suggestions) for the latest complete
   Asia/Shanghai day; the summary shows stock, frozen units, the top suggestions and the backtest. A sync
   limited with ``--to`` (a repair of a past range) skips this step: a snapshot is of now.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from ordersync_pipeline.app.instance import ensure_dagster_home, fail_dead_runs, run_tags, sync_lock
from ordersync_pipeline.app.progress import partition_progress
from ordersync_pipeline.app.report import RunReport, SyncReport, collect_figures, collect_stock
from ordersync_pipeline.reconcile.daily import PLATFORM_HORIZON, day_checks
from ordersync_pipeline.reconcile.records import passed_days
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.plan import RunRect, history_keys_between, increment_keys_between, rectangles, wanted_keys
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import KINDS, STREAMS, stream
from ordersync_pipeline.sync.windows import DAY_KEY_FORMAT, Kind, Timeline, Window, day_window
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.connect import open_warehouse

__all__ = ["run_sync", "plan_runs", "execute_rect", "plan_reconciliation", "execute_reconciliation", "Echo",
           "run_stock", "latest_complete_day"]

Echo = Callable[[str], None]
JOBS: dict[Kind, str] = {"increment": "incremental_sync_job", "historical": "historical_load_job"}
# CLI runs print their own progress and summary; Dagster's engine events stay in the run's event log
# (the UI shows them) instead of the terminal.
QUIET_RUN_CONFIG: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_sync(settings: Settings, *, start: datetime | None = None, end: datetime | None = None,
             streams: Sequence[Stream] = STREAMS, echo: Echo = print, wait_seconds: float = 0.0,
             show_progress: bool = True) -> SyncReport:
    """History for partitions never completed, then every closed increment window; returns the report."""
    import dagster as dg

    from ordersync_pipeline.defs import build_definitions, timeline_for

    started = time.perf_counter()
    warehouse = open_warehouse(settings.warehouse_url, store_receiver_pii=settings.config.sync.store_receiver_pii)
    report = SyncReport()
    with sync_lock(settings.home, wait_seconds=wait_seconds):
        ensure_dagster_home(settings.home)
        instance = dg.DagsterInstance.get()
        for run_id in fail_dead_runs(instance):
            echo(f"marked run {run_id} failed: the sync that ran it was killed")
        defs = build_definitions(settings)
        timeline = timeline_for(settings)
        run_ids: list[str] = []
        for rect in plan_runs(settings, timeline, warehouse, start=start, end=end, streams=streams):
            echo(_describe(rect))
            with partition_progress(_describe(rect), rect.partitions * len(rect.streams),
                                    enabled=show_progress):
                run = execute_rect(defs, instance, rect)
            report.runs.append(run)
            if run.run_id:
                run_ids.append(run.run_id)
        if not report.runs:
            echo("already up to date: every closed window is synced")
        for rect in plan_reconciliation(settings, timeline, warehouse, start=start, end=end):
            echo(_describe_days(rect))
            run = execute_reconciliation(defs, instance, rect)
            report.runs.append(run)
            if run.run_id:
                run_ids.append(run.run_id)
        if end is None:
            run_stock(defs, instance, settings, warehouse, timeline, report, run_ids, echo=echo)
        collect_figures(report, warehouse, settings.shop_ids, run_ids)
    report.seconds = time.perf_counter() - started
    return report


def plan_runs(settings: Settings, timeline: Timeline, warehouse: Warehouse, *, start: datetime | None,
              end: datetime | None, streams: Sequence[Stream] = STREAMS,
              now: datetime | None = None) -> list[RunRect]:
    """Historical runs first (they are the base the increments change), then increment runs."""
    now = now or settings.clock()
    rects: list[RunRect] = []
    for kind in KINDS[::-1]:  # historical, then increment
        keys = (history_keys_between(timeline, start, end) if kind == "historical"
                else increment_keys_between(timeline, now, start, end))
        if not keys:
            continue
        wanted: dict[str, dict[str, list[str]]] = {}
        for entry in streams:
            per_shop: dict[str, list[str]] = {}
            for shop in settings.shop_ids:
                recorded: dict[str, list[Window]] = defaultdict(list)
                for window in warehouse.completed_windows(shop, entry.name, kind):
                    if window.partition_key:
                        recorded[window.partition_key].append(Window(window.window_start, window.window_end))
                missing = wanted_keys(timeline, kind, keys, recorded)
                if missing:
                    per_shop[shop] = missing
            if per_shop:
                wanted[entry.name] = per_shop
        rects += rectangles(kind, wanted, settings.shop_ids, keys)
    return rects


def latest_complete_day(now: datetime) -> date:
    """The Asia/Shanghai day before the one ``now`` falls in."""
    from ordersync_pipeline.timeutil import SHANGHAI

    return now.astimezone(SHANGHAI).date() - timedelta(days=1)


def run_stock(defs: Any, instance: Any, settings: Settings, warehouse: Warehouse, timeline: Timeline,
              report: SyncReport, run_ids: list[str], *, echo: Echo = print) -> None:
    """The inventory job, then the forecast job for the latest complete day; fills ``report.stock``."""
    from ordersync_pipeline.defs.forecast import BACKTEST_CHECK, FORECAST_JOB, INVENTORY_JOB

    echo("inventory: snapshot of every shop's on-sale stock, presale freeze rebuilt")
    inventory, _ = _execute_job(defs, instance, INVENTORY_JOB, name="inventory snapshot+freeze", partition_key=None)
    report.runs.append(inventory)
    run_ids += [inventory.run_id] if inventory.run_id else []
    day = latest_complete_day(settings.clock())
    if day < timeline.first_history_day:
        return
    echo(f"forecast: daily sales, 7-day forecast and suggestions as of {day.isoformat()}")
    forecast, result = _execute_job(defs, instance, FORECAST_JOB, name=f"forecast {day.isoformat()}",
                                    partition_key=day.isoformat())
    report.runs.append(forecast)
    run_ids += [forecast.run_id] if forecast.run_id else []
    figures: dict[str, float] = {}
    note = "not run (the forecast run failed)"
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == BACKTEST_CHECK:
            figures = {k: float(v.value) for k, v in evaluation.metadata.items()}
            note = evaluation.description or ""
    reports = settings.home / "reports" / day.isoformat() / "suggestions.md"
    report.stock = collect_stock(warehouse, settings.shop_ids, day, backtest=figures, backtest_note=note,
                                 report_path=str(reports) if reports.exists() else None)


def cpu_seconds() -> float:
    """User + system CPU of this process and of its children that have ended (a run's loader processes
    end with the run, so a difference across one run counts them)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _execute_job(defs: Any, instance: Any, job_name: str, *, name: str,
                 partition_key: str | None) -> tuple[RunReport, Any]:
    started, cpu = time.perf_counter(), cpu_seconds()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, tags=run_tags("cli"), run_config=QUIET_RUN_CONFIG, raise_on_error=False,
        partition_key=partition_key)
    error = None if result.success else _failure_reason(result)
    report = RunReport(name=name, partitions=1, materialized=1 if result.success else 0,
                       seconds=time.perf_counter() - started, run_id=result.run_id, error=error,
                       cpu_seconds=cpu_seconds() - cpu)
    return report, result


def completed_days(timeline: Timeline, *, start: datetime | None, end: datetime | None,
                   now: datetime) -> list[date]:
    """Asia/Shanghai days wholly within ``[start, end)`` that the warehouse covers (from the first historical
    day), that have ended with their last increment window closed, and that the platform still lists.
    A day the range cuts is left out: its other part was not synced, so its count cannot agree."""
    day = timeline.first_history_day
    days = []
    while True:
        window = day_window(day)
        if window.end + timeline.safety_lag > now:
            break
        within = (start is None or window.start >= start) and (end is None or window.end <= end)
        if within and window.start >= now - PLATFORM_HORIZON:
            days.append(day)
        day += timedelta(days=1)
    return days


def plan_reconciliation(settings: Settings, timeline: Timeline, warehouse: Warehouse, *, start: datetime | None,
                        end: datetime | None, now: datetime | None = None) -> list[RunRect]:
    """Runs of ``daily_reconciliation`` over the completed days in range that some shop has not yet
    reconciled without a gap, cut (like the sync runs) into exact shop x day rectangles."""
    now = now or settings.clock()
    days = completed_days(timeline, start=start, end=end, now=now)
    checks = day_checks()
    if not days or not checks:
        return []
    passed = [passed_days(warehouse, stream=stream.name, since=days[0]) for stream, _ in checks]
    wanted: dict[str, list[str]] = {}
    for shop in settings.shop_ids:
        keys = [day.strftime(DAY_KEY_FORMAT) for day in days if not all((shop, day) in ok for ok in passed)]
        if keys:
            wanted[shop] = keys
    # Day partitions are ordered like the historical ones, so the same cutting applies; the kind is
    # only a label here.
    return rectangles("historical", {"daily_reconciliation": wanted}, settings.shop_ids,
                      [day.strftime(DAY_KEY_FORMAT) for day in days])


def _describe_days(rect: RunRect) -> str:
    span = rect.time_keys[0] if len(rect.time_keys) == 1 else f"{rect.time_keys[0]} .. {rect.time_keys[-1]}"
    return f"reconciliation: {len(rect.time_keys)} days x {len(rect.shops)} shop(s) ({span})"


def execute_reconciliation(defs: Any, instance: Any, rect: RunRect) -> RunReport:
    """One in-process run of ``daily_reconciliation`` over exactly ``rect``'s shop-days."""
    import dagster as dg

    from ordersync_pipeline.defs.partitions import multi_key
    from ordersync_pipeline.defs.reconcile import RECONCILE_ASSET, RECONCILE_JOB

    started, cpu = time.perf_counter(), cpu_seconds()
    first, last = multi_key(rect.shops[0], rect.time_keys[0]), multi_key(rect.shops[-1], rect.time_keys[-1])
    tags = {**range_tags_for(str(first), str(last)), **run_tags("cli")}
    result = defs.resolve_job_def(RECONCILE_JOB).execute_in_process(
        instance=instance, tags=tags, run_config=QUIET_RUN_CONFIG, raise_on_error=False)
    done = {mat.partition for mat in _materializations(result)
            if mat.asset_key == dg.AssetKey(RECONCILE_ASSET)}
    complete = sum(1 for shop, key in rect.cells if str(multi_key(shop, key)) in done)
    error = None if result.success else _failure_reason(result)
    if result.success and complete < rect.partitions:
        error = f"the run reconciled {complete} of the {rect.partitions} shop-days it was asked for"
    return RunReport(name="reconciliation", partitions=rect.partitions, materialized=complete,
                     seconds=time.perf_counter() - started, run_id=result.run_id, error=error,
                     cpu_seconds=cpu_seconds() - cpu)


def range_tags_for(first: str, last: str) -> dict[str, str]:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def _describe(rect: RunRect) -> str:
    span = rect.time_keys[0] if len(rect.time_keys) == 1 else f"{rect.time_keys[0]} .. {rect.time_keys[-1]}"
    what = "days" if rect.kind == "historical" else "windows"
    return (f"{rect.kind} {'+'.join(rect.streams)}: {len(rect.time_keys)} {what} x {len(rect.shops)} shop(s) "
            f"({span})")


def execute_rect(defs: Any, instance: Any, rect: RunRect) -> RunReport:
    """One in-process run over exactly ``rect``'s partitions; its report says how many completed."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ordersync_pipeline.defs.partitions import multi_key, split_key

    started, cpu = time.perf_counter(), cpu_seconds()
    name = f"{rect.kind} {'+'.join(rect.streams)}"
    entries = [stream(name_) for name_ in rect.streams]
    selection = [dg.AssetKey(asset) for entry in entries for asset in entry.assets.all_names(rect.kind)]
    job = defs.resolve_job_def(JOBS[rect.kind])
    first, last = multi_key(rect.shops[0], rect.time_keys[0]), multi_key(rect.shops[-1], rect.time_keys[-1])
    partitions_def = defs.resolve_assets_def(selection[0]).partitions_def
    resolved = {split_key(k) for k in partitions_def.get_partition_keys_in_range(
        dg.PartitionKeyRange(str(first), str(last)))}
    if resolved != rect.cells:  # the range would cover other partitions than planned: a bug, say so
        raise RuntimeError(f"run for {name} would cover {len(resolved)} partitions, planned {rect.partitions}")
    tags = {ASSET_PARTITION_RANGE_START_TAG: str(first), ASSET_PARTITION_RANGE_END_TAG: str(last),
            **run_tags("cli")}
    result = job.execute_in_process(instance=instance, tags=tags, run_config=QUIET_RUN_CONFIG,
                                    asset_selection=selection, raise_on_error=False)
    done = {(mat.asset_key.to_user_string(), mat.partition) for mat in _materializations(result)}
    complete = sum(1 for entry in entries for shop, key in rect.cells
                   if all((table, str(multi_key(shop, key))) in done for table in entry.assets.tables[rect.kind]))
    asked = rect.partitions * len(entries)
    error = None if result.success else _failure_reason(result)
    if result.success and complete < asked:
        error = f"the run materialised {complete} of the {asked} partitions it was asked for"
    return RunReport(name=name, partitions=asked, materialized=complete,
                     seconds=time.perf_counter() - started, run_id=result.run_id, error=error,
                     cpu_seconds=cpu_seconds() - cpu)


def _materializations(result: Any) -> list[Any]:
    return [event.event_specific_data.materialization for event in result.all_events
            if event.is_step_materialization]


def _failure_reason(result: Any) -> str:
    """Why the run failed, in the asset's words (e.g. "... re-authorise this shop X"), not Dagster's
    generic "Execution of step ... failed."."""
    reasons = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reasons.append(str(data.user_failure_data.description))
        elif data.error is not None:
            cause = data.error.cause or data.error
            reasons.append(f"{cause.cls_name}: {cause.message.strip()}" if cause.cls_name else cause.message)
    if not reasons:
        failure = next((e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"), None)
        return str(failure.message) if failure is not None else "run failed"
    return "; ".join(reason[:600] for reason in reasons[:3])
