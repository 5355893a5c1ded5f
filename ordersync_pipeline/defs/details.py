"""The ``trade_details`` asset: the fullinfo cache for what the trade tables do not hold (sync/details.py)."""


from collections.abc import Iterator

import dagster as dg

from ordersync_pipeline.defs.metadata import column_schema, freshness_policy, table_kinds
from ordersync_pipeline.defs.partitions import Partitions, split_key
from ordersync_pipeline.failures import describe
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.details import detail_candidates, refresh_details
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import lake_dataset
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.top.pages import TRADES
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.recorder import WarehouseCallRecorder


def trade_details_asset(partitions: Partitions, settings: Settings) -> dg.AssetsDefinition:
    reasons = frozenset(settings.config.sync.detail_reasons)
    dataset = lake_dataset("trades", "increment")

    @dg.multi_asset(
        name="trade_details_cache", partitions_def=partitions.increment,
        backfill_policy=dg.BackfillPolicy.single_run(),
        specs=[dg.AssetSpec(
            "trade_details", skippable=True, deps=["trades"], group_name="increment",
            kinds=table_kinds(settings.warehouse_url),
            freshness_policy=freshness_policy(partitions.timeline),
            tags={"ordersync/stream": "trades", "ordersync/path": "increment", "ordersync/layer": "table"},
            metadata={"dagster/column_schema": column_schema("trade_details"),
                      "dagster/table_name": "trade_details"},
            description=("Full trade records (taobao.trade.fullinfo.get) cached by (tid, modified) for the "
                         f"trades the tables cannot describe; reasons: {', '.join(sorted(reasons))} "
                         "(sync.detail_reasons). A trade is fetched again only after it changed, and an "
                         "answer already fetched for an incomplete list record costs no call."))])
    def trade_details(context: dg.AssetExecutionContext, top: dg.ResourceParam[Gateway],
                      warehouse: dg.ResourceParam[Warehouse],
                      lake: dg.ResourceParam[PageLake]) -> Iterator[dg.AssetMaterialization]:
        failures: list[str] = []
        with WarehouseCallRecorder(warehouse, run_id=context.run.run_id) as recorder:
            client = top.client(recorder)
            try:
                for key in context.partition_keys:
                    shop, part = split_key(key)
                    calls_before = recorder.total
                    try:
                        pages = lake.read_partition(shop_id=shop, stream=dataset, partition_key=part,
                                                    shape=TRADES)
                        wanted, answered = detail_candidates(pages, reasons)
                        session = top.session(shop) if wanted else None
                        result = refresh_details(client=client, warehouse=warehouse, shop_id=shop,
                                                 session=session, candidates=wanted, answered=answered)
                    except Exception as exc:  # noqa: BLE001 - this partition's failure alone
                        failures.append(f"{key}: {describe(exc)}")
                        continue
                    yield dg.AssetMaterialization(asset_key="trade_details", partition=str(key), metadata={
                        "candidates": result.candidates, "fetched": result.fetched,
                        "cache_hits": result.cached, "api_calls": recorder.total - calls_before})
            finally:
                client.close()
        if failures:
            raise dg.Failure(description=f"{len(failures)} trade_details partition(s) failed; first: "
                                         f"{failures[0]}",
                             metadata={"failed_partitions": "\n".join(failures[:50])}, allow_retries=False)

    return trade_details
