"""The asset factory: the sync assets of every registered stream, one multi-asset per path.

For each path (increment, historical) one multi-asset holds, for every stream in the registry, its raw
pages asset and its table assets (``raw_trade_pages``, ``trades``, ``trade_orders``, ``raw_refund_pages``,
``refunds`` ...). One step runs the whole path for a run's partitions through ``SyncRunner``: partitions
are fetched concurrently and each is loaded as soon as its pages are in the lake. Each partition that
completes is materialised on its own, with its own figures and its own quarantine check; a partition that
fails is reported failed alone (the step fails at the end, naming them), so the others are loaded and
marked complete and a re-run retries only what failed.
"""


import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from ordersync_pipeline.defs.followers import FOLLOWERS, RunFollowers
from ordersync_pipeline.defs.metadata import (
    PAGE_KINDS,
    asset_spec_metadata,
    asset_tags,
    check_description,
    freshness_policy,
    table_kinds,
)
from ordersync_pipeline.defs.partitions import Partitions, multi_key, split_key
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import PartitionOutcome, PartitionTask, RunnerSettings, SyncRunner
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.sync.windows import Kind, Timeline
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.recorder import WarehouseCallRecorder
from ordersync_pipeline.warehouse.tables import metadata as warehouse_metadata

__all__ = ["SyncConfig", "sync_assets", "QUARANTINE_CHECK", "SINGLE_RUN"]

SINGLE_RUN = dg.BackfillPolicy.single_run()
# One record per finished partition (ok or failed) for whoever wants progress: ``ordersync sync`` draws
# its progress bar from it. Carries ``ordersync_outcome`` (the PartitionOutcome) in the record.
PROGRESS = logging.getLogger("ordersync.progress")
QUARANTINE_CHECK = "no_quarantined_records"


class SyncConfig(dg.Config):
    """Run options for the sync assets."""

    from_lake: bool = False
    """Rebuild from pages already in the lake: make no API call (a partition not in the lake fails)."""


def sync_assets(kind: Kind, partitions: Partitions, settings: Settings,
                streams: Sequence[Stream] = STREAMS) -> dg.AssetsDefinition:
    """The multi-asset syncing every stream on one path."""
    partitions_def = partitions.for_kind(kind)
    dialect_kinds = table_kinds(settings.warehouse_url)
    # Increment assets are expected to move every partition length; history is loaded once.
    freshness = freshness_policy(partitions.timeline) if kind == "increment" else None
    specs: list[dg.AssetSpec] = []
    checks: list[dg.AssetCheckSpec] = []
    owner: dict[dg.AssetKey, Stream] = {}
    follows: dict[dg.AssetKey, Stream] = {}       # follower asset -> the stream whose partitions feed it
    for stream in streams:
        for follower in stream.assets.followers.get(kind, ()):
            specs.append(FOLLOWERS[follower].spec(partitions, settings))
            follows[dg.AssetKey(follower)] = stream
        pages = stream.assets.pages[kind]
        specs.append(dg.AssetSpec(
            pages, skippable=True, group_name=kind, kinds=PAGE_KINDS,
            description=stream.assets.descriptions[pages], freshness_policy=freshness,
            metadata=asset_spec_metadata(pages=True), tags=asset_tags(stream, kind, "pages")))
        owner[dg.AssetKey(pages)] = stream
        for table_asset in stream.assets.tables[kind]:
            specs.append(dg.AssetSpec(
                table_asset, skippable=True, deps=[pages], group_name=kind, kinds=dialect_kinds,
                description=stream.assets.descriptions[table_asset], freshness_policy=freshness,
                metadata=asset_spec_metadata(_tables_of(stream, table_asset)),
                tags=asset_tags(stream, kind, "table")))
            owner[dg.AssetKey(table_asset)] = stream
            checks.append(_partitioned_check(table_asset, check_description(stream, table_asset),
                                             partitions_def))
    sync = settings.config.sync
    runner_settings = RunnerSettings(page_size=sync.page_size, fetch_concurrency=sync.fetch_concurrency,
                                     load_workers=sync.load_workers, attempts=sync.partition_attempts,
                                     retry_delays=(sync.retry_delay_seconds, 4 * sync.retry_delay_seconds),
                                     coalesce_span=timedelta(minutes=sync.coalesce_minutes))
    timeline = partitions.timeline

    @dg.multi_asset(name=f"{kind}_sync", specs=specs, check_specs=checks, partitions_def=partitions_def,
                    backfill_policy=SINGLE_RUN, can_subset=True,
                    description=f"Fetch and load every stream's {kind} partitions (one step per run).")
    def _sync(context: dg.AssetExecutionContext, config: SyncConfig, top: dg.ResourceParam[Gateway],
              warehouse: dg.ResourceParam[Warehouse],
              lake: dg.ResourceParam[PageLake]) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        selected = {owner[key].name for key in context.selected_asset_keys if key in owner}
        chosen = [s for s in streams if s.name in selected]
        followers = {key.path[-1]: stream for key, stream in follows.items() if key in context.selected_asset_keys}
        tasks, refused = _tasks(context, chosen, kind, timeline, settings.clock())
        started = time.perf_counter()
        failures = list(refused)
        loaded = 0
        # The tables' row counts go on each stream's last partition of the run: one count per table and
        # run, however many partitions it loads (a run whose last partition failed reports none).
        left = Counter(task.stream.name for task in tasks)
        with WarehouseCallRecorder(warehouse, run_id=context.run.run_id) as ledger:
            with RunFollowers(followers, top=top, recorder=ledger, warehouse=warehouse, lake=lake,
                              settings=settings) as follow:
                runner = SyncRunner(lake=lake, warehouse=warehouse, run_id=context.run.run_id,
                                    settings=runner_settings, clients=top.client, sessions=top.session,
                                    ledger=ledger, clock=settings.clock, watches=follow.watches)
                for outcome in runner.run(tasks, from_lake=config.from_lake):
                    PROGRESS.debug("%s %s", outcome.task.label, "ok" if outcome.ok else outcome.error,
                                   extra={"ordersync_outcome": outcome})
                    left[outcome.task.stream.name] -= 1
                    if not outcome.ok:
                        failures.append(outcome)
                        continue
                    loaded += 1
                    last = not left[outcome.task.stream.name]
                    counts = _row_counts(warehouse, outcome.task.stream) if last else None
                    yield from _report(context, outcome, kind, row_counts=counts)
                    yield from follow.after(outcome.task, failures, outcome.watched)
                yield from follow.alone(context.partition_keys, chosen, kind, timeline, failures)
        context.log.info(f"{kind}: {loaded} partition(s) loaded, {len(failures)} failed, "
                         f"{ledger.total} API calls, in {time.perf_counter() - started:.1f}s")
        if failures:
            first = failures[0]
            raise dg.Failure(
                description=(f"{len(failures)} of {len(tasks) + len(refused)} {kind} partitions failed and "
                             f"are not marked complete (a re-run retries only those); first: "
                             f"{first.task.label}: {first.error}"),
                metadata={"failed_partitions": "\n".join(f"{o.task.label}: {o.error}"
                                                         for o in failures[:50])},
                allow_retries=False)

    return _sync


def _tables_of(stream: Stream, table_asset: str) -> list[str]:
    """The warehouse tables a table asset stands for: its own, or all of the stream's."""
    table = stream.assets.table_of(table_asset)
    return [table] if table else list(stream.tables)


def _partitioned_check(asset: str, description: str,
                       partitions_def: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    """A check evaluated per partition (the UI then shows which partition it is about). Dagster marks
    partitioned checks as a preview; that is a note for Dagster's developers, not for operators."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(QUARANTINE_CHECK, asset=asset, description=description,
                                 partitions_def=partitions_def)


def _tasks(context: dg.AssetExecutionContext, streams: Sequence[Stream], kind: Kind, timeline: Timeline,
           now: datetime) -> tuple[list[PartitionTask], list[PartitionOutcome]]:
    """The run's partitions as runner tasks; a partition that may not be fetched yet is refused."""
    tasks: list[PartitionTask] = []
    refused: list[PartitionOutcome] = []
    for key in context.partition_keys:
        shop_id, time_key = split_key(key)
        window = timeline.window(kind, time_key)
        clipped = timeline.clip(kind, window, now)
        for stream in streams:
            if clipped is None:
                task = PartitionTask(stream=stream, kind=kind, shop_id=shop_id, partition_key=time_key,
                                     window=window)
                refused.append(PartitionOutcome(task=task, error=(
                    f"window ends at {window.end.isoformat()}, later than now minus the "
                    f"{timeline.safety_lag} safety lag; it runs once closed")))
                continue
            tasks.append(PartitionTask(stream=stream, kind=kind, shop_id=shop_id, partition_key=time_key,
                                       window=clipped))
    return tasks, refused


def _row_counts(warehouse: Warehouse, stream: Stream) -> dict[str, int]:
    """Rows now in each of the stream's tables."""
    with warehouse.engine.connect() as conn:
        return {name: int(conn.execute(sa.select(sa.func.count()).select_from(
            warehouse_metadata.tables[name])).scalar_one()) for name in stream.tables}


def _report(context: dg.AssetExecutionContext, outcome: PartitionOutcome, kind: Kind,
            row_counts: dict[str, int] | None = None,
            ) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """One partition's materialisations and checks, with that partition's own figures (and, when given,
    the rows in the whole table: ``dagster/row_count``, what the catalog shows as the table's size)."""
    task = outcome.task
    key = multi_key(task.shop_id, task.partition_key)
    fetched: dict[str, Any] = {}
    if outcome.fetched is not None:
        fetched = {"window_start": outcome.fetched.start.isoformat(),
                   "window_end": outcome.fetched.end.isoformat()}
    common = {"pages": outcome.pages, f"{task.stream.title}_fetched": outcome.records,
              "api_calls": outcome.api_calls, "api_errors": outcome.api_errors,
              "seconds": round(outcome.seconds, 3), **fetched}
    coalesced = {"fetched_with_partitions": outcome.fetched_with} if outcome.fetched_with > 1 else {}
    yield dg.AssetMaterialization(asset_key=task.stream.assets.pages[kind], partition=key,
                                  metadata={**common, "from_lake": outcome.from_lake, **coalesced})
    for table_asset in task.stream.assets.tables[kind]:
        table = task.stream.assets.table_of(table_asset)
        tables = [table] if table else list(task.stream.tables)
        rows = {f"{name}_upserted": outcome.rows.get(name, 0) for name in tables} if not table else {}
        upserted = sum(outcome.rows.get(name, 0) for name in tables)
        totals: dict[str, int] = {}
        if row_counts is not None:
            # An asset for several tables (historical_trades) counts its main table, and names each.
            totals = {"dagster/row_count": row_counts[tables[0]]}
            if not table:
                totals.update({f"{name}_rows": row_counts[name] for name in tables})
        yield dg.AssetMaterialization(asset_key=table_asset, partition=key, metadata={
            **common, "rows_upserted": upserted, **rows, "quarantined": outcome.quarantined,
            "dagster/partition_row_count": upserted, **totals})
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(table_asset), check_name=QUARANTINE_CHECK,
            passed=outcome.quarantined == 0, severity=dg.AssetCheckSeverity.WARN, partition=str(key),
            description=(f"{outcome.quarantined} record(s) of {task.shop_id} {task.partition_key} went to "
                         "quarantine" if outcome.quarantined else f"nothing quarantined in {key}"),
            metadata={"partition": str(key), "quarantined": outcome.quarantined,
                      "first_reasons": "\n".join(outcome.quarantine_reasons[:10]) or "none"})
