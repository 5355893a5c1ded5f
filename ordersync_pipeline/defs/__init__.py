"""The Dagster layer: definitions built from one ``Settings`` object, over the Dagster-free core.

``build_definitions(settings)`` is the one factory: partitions, assets (made per stream by
defs/factory.py), checks, jobs, the schedule and the resources all come from the same object, and
nothing is read from the environment or the configuration file again.
"""

from __future__ import annotations

import dagster as dg

from ordersync_pipeline.defs.alerting import alerting_sensors
from ordersync_pipeline.defs.automation import build_jobs, build_schedules
from ordersync_pipeline.defs.executors import build_executor
from ordersync_pipeline.defs.factory import sync_assets
from ordersync_pipeline.defs.forecast import build_forecast
from ordersync_pipeline.defs.partitions import Partitions
from ordersync_pipeline.defs.reconcile import build_monitoring
from ordersync_pipeline.defs.metadata import user_facing
from ordersync_pipeline.defs.resources import build_resources
from ordersync_pipeline.defs.sensors import build_sensors, paused_shops_reader
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.windows import Timeline

__all__ = ["build_definitions", "timeline_for"]

def timeline_for(settings: Settings) -> Timeline:
    sync = settings.config.sync
    from datetime import timedelta

    return Timeline(anchor=settings.anchor, history_days=sync.history_days,
                    increment_minutes=sync.incremental_minutes,
                    overlap=timedelta(minutes=sync.overlap_minutes),
                    safety_lag=timedelta(minutes=sync.safety_lag_minutes))


@user_facing
def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = Partitions(settings.shop_ids, timeline_for(settings))
    increment = [sync_assets("increment", partitions, settings)]
    historical = [sync_assets("historical", partitions, settings)]
    orchestration = settings.config.orchestration
    max_shops = orchestration.max_shops_per_run
    monitoring = build_monitoring(settings, partitions.timeline, max_shops_per_run=max_shops)
    forecast = build_forecast(settings, partitions.timeline)
    return dg.Definitions(
        assets=[*increment, *historical, *monitoring.assets, *forecast.assets],
        jobs=[*build_jobs(increment, historical), *monitoring.jobs, *forecast.jobs],
        schedules=[*build_schedules(partitions, settings.shop_ids, max_shops_per_run=max_shops,
                                    paused_shops=paused_shops_reader(settings)), *monitoring.schedules,
                   *forecast.schedules],
        sensors=[*alerting_sensors(settings), *build_sensors(settings, partitions, max_shops_per_run=max_shops)],
        resources=build_resources(settings),
        executor=build_executor(orchestration.executor),
    )
