"""The one Definitions object that workspace.yaml (and `dagster dev -m`) loads."""

from __future__ import annotations

import dagster as dg

from ordersync_pipeline.defs.assets import HISTORICAL_ASSETS, INCREMENT_ASSETS, SETTINGS
from ordersync_pipeline.defs.automation import JOBS, SCHEDULES, SENSORS
from ordersync_pipeline.defs.resources import PageLakeResource, TopApiResource, WarehouseResource

defs = dg.Definitions(
    assets=[*INCREMENT_ASSETS, *HISTORICAL_ASSETS],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={
        "top": TopApiResource(),
        "warehouse": WarehouseResource(store_receiver_pii=SETTINGS.store_receiver_pii),
        "lake": PageLakeResource(),
    },
)
