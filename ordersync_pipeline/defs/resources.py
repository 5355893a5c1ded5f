"""Resources hand out core objects built from the one ``Settings`` object; none holds a secret.

They are plain objects to Dagster (nothing to configure in the UI, nothing shown there): the app secret
and session keys stay inside the ``Gateway`` and are used only to sign requests. The warehouse is opened
(and migrated) when a run first needs it, once per process, so a database that is down fails the run
that needs it with one clear line instead of breaking the code location.
"""

from __future__ import annotations

import functools

import dagster as dg

from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.connect import open_warehouse

__all__ = ["build_resources", "cached_warehouse"]


@functools.lru_cache(maxsize=8)
def cached_warehouse(url: str, store_receiver_pii: bool) -> Warehouse:
    """One ``Warehouse`` (one engine and connection pool) per database and process, migrated once."""
    return open_warehouse(url, store_receiver_pii=store_receiver_pii)


def build_resources(settings: Settings) -> dict[str, dg.ResourceDefinition]:
    pii = settings.config.sync.store_receiver_pii
    return {
        "top": dg.ResourceDefinition.hardcoded_resource(
            Gateway(settings.config, home=settings.home, redis_url=settings.redis_url, retry=settings.retry),
            description="TOP clients for the configured app (shared rate budget) and shop sessions."),
        "warehouse": dg.ResourceDefinition(
            resource_fn=lambda _: cached_warehouse(settings.warehouse_url, pii),
            description="The warehouse database (ORDERSYNC_WAREHOUSE_URL, SQLite under ORDERSYNC_HOME "
                        "by default), migrated to the newest schema on first use."),
        "lake": dg.ResourceDefinition.hardcoded_resource(
            PageLake(settings.lake_root),
            description="The raw page lake: every fetched page as received, one Parquet file per partition."),
    }
