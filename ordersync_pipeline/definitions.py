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
        # FIXME: WarehouseResource declares no ``store_receiver_pii`` field and get_warehouse() opens
        # Warehouse(url) without it, so Dagster drops this keyword and sync.store_receiver_pii has no
        # effect on runs (receiver PII is never kept). Wiring it through changes what is stored, so it
        # waits for a decision; the ignore only records the existing behaviour.
        "warehouse": WarehouseResource(store_receiver_pii=SETTINGS.store_receiver_pii),  # type: ignore[call-arg]
        "lake": PageLakeResource(),
    },
)
