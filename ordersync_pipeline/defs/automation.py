"""Jobs, the increment schedule and the shop registration sensor."""


from datetime import datetime, timedelta

import dagster as dg

from ordersync_pipeline.config import ConfigError
from ordersync_pipeline.defs.assets import (
    HISTORICAL_ASSETS,
    INCREMENT_ASSETS,
    INCREMENT_TIME,
    SAFETY_LAG,
    SETTINGS,
)
from ordersync_pipeline.defs.partitions import SHOPS, SHOPS_NAME
from ordersync_pipeline.defs.resources import TopApiResource

incremental_sync_job = dg.define_asset_job(
    "incremental_sync_job", selection=dg.AssetSelection.assets(*INCREMENT_ASSETS),
    description="Increment windows (15 minutes by default, plus the overlap) per shop into the warehouse.")

historical_load_job = dg.define_asset_job(
    "historical_load_job", selection=dg.AssetSelection.assets(*HISTORICAL_ASSETS),
    description="Created-time history (the platform keeps 90 days) per shop; backfill it as one run.")


def last_closed_increment_key(now: datetime, *, safety_lag: timedelta = SAFETY_LAG) -> str | None:
    """The newest increment time key whose window ends at or before ``now - safety_lag``."""
    keys = INCREMENT_TIME.get_partition_keys(current_time=now - safety_lag)
    return keys[-1] if keys else None


def _cron_after_lag() -> str:
    step = SETTINGS.incremental_minutes
    lag = int(SAFETY_LAG.total_seconds() // 60) % step
    minutes = ",".join(str(m + lag) for m in range(0, 60, step))
    return f"{minutes} * * * *"


@dg.schedule(job=incremental_sync_job, cron_schedule=_cron_after_lag(),
             execution_timezone="Asia/Shanghai", default_status=dg.DefaultScheduleStatus.RUNNING)
def incremental_sync_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Launches each shop's newest closed increment partition shortly after it closes."""
    now = context.scheduled_execution_time
    time_key = last_closed_increment_key(now)
    shops = context.instance.get_dynamic_partitions(SHOPS_NAME)
    if time_key is None or not shops:
        return dg.SkipReason("no closed increment partition or no registered shop yet")
    return [dg.RunRequest(run_key=f"{shop}|{time_key}",
                          partition_key=dg.MultiPartitionKey({"shop": shop, "time": time_key}))
            for shop in shops]


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def shop_partitions_sensor(context: dg.SensorEvaluationContext, top: TopApiResource) -> dg.SensorResult | dg.SkipReason:
    """Registers every shop of the configuration file as a partition: adding a shop is a config edit."""
    try:
        configured = [s.shop_id for s in top.settings().shops]
    except ConfigError as exc:
        return dg.SkipReason(str(exc))
    known = set(context.instance.get_dynamic_partitions(SHOPS_NAME))
    missing = [s for s in configured if s not in known]
    if not missing:
        return dg.SkipReason("all configured shops are registered")
    return dg.SensorResult(dynamic_partitions_requests=[SHOPS.build_add_request(missing)])


JOBS = [incremental_sync_job, historical_load_job]
SCHEDULES = [incremental_sync_schedule]
SENSORS = [shop_partitions_sensor]
