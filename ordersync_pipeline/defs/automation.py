"""Jobs and the increment schedule.

One scheduled run per tick syncs every stream of every configured shop for the newest closed increment
window (sharded into runs of at most ``max_shops_per_run`` shops): at hundreds of shops, one run per
shop per tick would spend the machine on starting processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

from ordersync_pipeline.defs.partitions import Partitions, multi_key
from ordersync_pipeline.sync.windows import Timeline

__all__ = ["build_jobs", "build_schedules", "newest_closed_increment_key", "shop_ranges",
           "INCREMENT_JOB", "HISTORICAL_JOB", "range_tags"]

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


def range_tags(first_shop: str, last_shop: str, first_time: str, last_time: str) -> dict[str, str]:
    """Dagster's partition-range tags for shops [first, last] x times [first, last] (a product)."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    return {ASSET_PARTITION_RANGE_START_TAG: str(multi_key(first_shop, first_time)),
            ASSET_PARTITION_RANGE_END_TAG: str(multi_key(last_shop, last_time))}


def _cron_after_lag(timeline: Timeline) -> str:
    step = timeline.increment_minutes
    lag = int(timeline.safety_lag.total_seconds() // 60) % step
    return f"{','.join(str(m + lag) for m in range(0, 60, step))} * * * *"


def build_schedules(partitions: Partitions, shop_ids: Sequence[str], *,
                    max_shops_per_run: int) -> list[dg.ScheduleDefinition]:
    timeline = partitions.timeline

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
        return [dg.RunRequest(run_key=f"{time_key}|{first}..{last}",
                              tags={**range_tags(first, last, time_key, time_key),
                                    "ordersync/started_by": "schedule"})
                for first, last in shop_ranges(shop_ids, max_shops_per_run)]

    return [incremental_sync_schedule]


