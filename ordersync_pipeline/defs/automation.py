"""Jobs and the increment schedule.

One scheduled run per tick syncs every stream of every configured shop for the newest closed increment
window (sharded into runs of at most ``max_shops_per_run`` shops): at hundreds of shops, one run per
shop per tick would spend the machine on starting processes.

The schedule consults the failure-rate breaker: a shop whose breaker is open (reconcile/breaker.py) is
left out of the tick's runs (its degraded full pull runs instead, and the gap sensor repairs the windows
it skipped once the breaker closes). If the breaker state cannot be read, every shop is synced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import dagster as dg

from ordersync_pipeline.defs.partitions import Partitions, multi_key
from ordersync_pipeline.sync.windows import Timeline

__all__ = ["build_jobs", "build_schedules", "newest_closed_increment_key", "shop_ranges", "shop_ranges_except",
           "INCREMENT_JOB", "HISTORICAL_JOB", "range_tags"]

log = logging.getLogger("ordersync.schedule")

INCREMENT_JOB = "incremental_sync_job"
HISTORICAL_JOB = "historical_load_job"


def build_jobs(increment_assets: Sequence[dg.AssetsDefinition],
               historical_assets: Sequence[dg.AssetsDefinition]) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            INCREMENT_JOB, selection=dg.AssetSelection.assets(*increment_assets),
            description=("Every stream's increment windows (the partition plus the overlap, once the "
                         "safety lag has passed) for a range of shops; what the schedule launches.")),
        dg.define_asset_job(
            HISTORICAL_JOB, selection=dg.AssetSelection.assets(*historical_assets),
            description=("Every stream's history (the platform keeps about 90 days) by Asia/Shanghai day; "
                         "backfill it as one run.")),
    ]


def newest_closed_increment_key(timeline: Timeline, now: datetime) -> str | None:
    """The newest increment time key whose window ends at or before ``now - safety_lag``."""
    keys = timeline.closed_increment_keys(now, since=now - timeline.safety_lag - 2 * timeline.increment_step)
    return keys[-1] if keys else None


def shop_ranges(shop_ids: Sequence[str], max_shops: int) -> list[tuple[str, str]]:
    """Sorted shops cut into contiguous ranges of at most ``max_shops`` (first, last) each."""
    ordered = sorted(shop_ids)
    return [(ordered[i], ordered[min(i + max_shops, len(ordered)) - 1])
            for i in range(0, len(ordered), max_shops)]


def shop_ranges_except(shop_ids: Sequence[str], paused: set[str], max_shops: int) -> list[tuple[str, str]]:
    """``shop_ranges`` of the shops not paused: a paused shop splits the range it sits in, since a run
    covers every shop between its first and last."""
    segments: list[list[str]] = [[]]
    for shop in sorted(shop_ids):
        if shop in paused:
            segments.append([])
        else:
            segments[-1].append(shop)
    return [r for segment in segments if segment for r in shop_ranges(segment, max_shops)]


def range_tags(first_shop: str, last_shop: str, first_time: str, last_time: str) -> dict[str, str]:
    """Dagster's partition-range tags for shops [first, last] x times [first, last] (a product)."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    return {ASSET_PARTITION_RANGE_START_TAG: str(multi_key(first_shop, first_time)),
            ASSET_PARTITION_RANGE_END_TAG: str(multi_key(last_shop, last_time))}


def _cron_after_lag(timeline: Timeline) -> str:
    step = timeline.increment_minutes
    lag = int(timeline.safety_lag.total_seconds() // 60) % step
    return f"{','.join(str(m + lag) for m in range(0, 60, step))} * * * *"


def build_schedules(partitions: Partitions, shop_ids: Sequence[str], *, max_shops_per_run: int,
                    paused_shops: Callable[[], set[str]] | None = None) -> list[dg.ScheduleDefinition]:
    """``paused_shops``: the shops whose breaker is open now (none when not given)."""
    timeline = partitions.timeline

    def paused_now() -> set[str]:
        if paused_shops is None:
            return set()
        try:
            return paused_shops()
        except Exception as exc:  # noqa: BLE001 - a breaker we cannot read must not stop the sync
            log.warning("could not read the breaker state (%s): syncing every shop", type(exc).__name__)
            return set()

    @dg.schedule(job_name=INCREMENT_JOB, cron_schedule=_cron_after_lag(timeline),
                 execution_timezone="Asia/Shanghai", default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=(f"Every {timeline.increment_minutes} minutes, {timeline.safety_lag} after a "
                              "window closes: one run per up to "
                              f"{max_shops_per_run} shops syncing every stream for that window."))
    def incremental_sync_schedule(context: dg.ScheduleEvaluationContext,
                                  ) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time
        time_key = newest_closed_increment_key(timeline, now)
        if time_key is None or not shop_ids:
            return dg.SkipReason("no closed increment window yet, or no configured shop")
        paused = paused_now()
        ranges = shop_ranges_except(shop_ids, paused, max_shops_per_run)
        if not ranges:
            return dg.SkipReason(f"every shop's breaker is open ({', '.join(sorted(paused))}): their degraded "
                                 "full pulls run instead")
        if paused:
            context.log.info(f"breaker open, increments paused for: {', '.join(sorted(paused))}")
        return [dg.RunRequest(run_key=f"{time_key}|{first}..{last}",
                              tags={**range_tags(first, last, time_key, time_key),
                                    "ordersync/started_by": "schedule"})
                for first, last in ranges]

    return [incremental_sync_schedule]


