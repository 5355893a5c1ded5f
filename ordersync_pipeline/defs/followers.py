"""Followers: assets a stream's partition feeds once it is loaded, run in the same step as the sync.

``trade_details`` (the fullinfo cache for what the trade tables do not hold, sync/details.py) takes its
candidates from the partition's load, which reads the pages anyway (a ``PageWatch``); run without its
stream, it reads them from the lake. It runs inside the path's sync step, right after each trades partition
loads, rather than as a step of its own: the sync step reports partitions one by one (so a failed one is
not shown as materialised) and yields no op output, and Dagster skips every step downstream of an output
that was not yielded. A follower's partition fails alone, like a sync partition.
"""

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import dagster as dg

from ordersync_pipeline.defs.metadata import column_schema, freshness_policy, table_kinds
from ordersync_pipeline.defs.partitions import Partitions, multi_key, split_key
from ordersync_pipeline.failures import describe
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.details import DetailCandidates, detail_candidates, refresh_details
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.runner import PartitionOutcome, PartitionTask, Watch, lake_dataset
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.windows import Kind, Timeline
from ordersync_pipeline.top.recorder import CallRecorder
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.gateway import Gateway
from ordersync_pipeline.top.pages import TRADES
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["Follower", "FOLLOWERS", "FollowerContext", "RunFollowers"]


@dataclass(frozen=True)
class FollowerContext:
    """What a follower may use for one partition."""

    client: TopClient
    top: Gateway
    warehouse: Warehouse
    lake: PageLake
    settings: Settings


@dataclass(frozen=True)
class Follower:
    """An asset computed per partition from a stream's loaded partition."""

    spec: Callable[[Partitions, Settings], dg.AssetSpec]
    # (context, shop_id, partition time key, what ``watch`` made of the loaded pages or None when the
    # stream was not loaded in this step) -> the partition's materialisation metadata
    run: Callable[[FollowerContext, str, str, Any], Mapping[str, Any]]
    # What sees the pages of the stream's load for ``run`` (None: ``run`` reads the lake itself).
    watch: Callable[[Settings], Watch] | None = None


def _trade_details_spec(partitions: Partitions, settings: Settings) -> dg.AssetSpec:
    reasons = sorted(settings.config.sync.detail_reasons)
    return dg.AssetSpec(
        "trade_details", skippable=True, deps=["trades"], group_name="increment",
        kinds=table_kinds(settings.warehouse_url), freshness_policy=freshness_policy(partitions.timeline),
        tags={"ordersync/stream": "trades", "ordersync/path": "increment", "ordersync/layer": "table"},
        metadata={"dagster/column_schema": column_schema("trade_details"), "dagster/table_name": "trade_details"},
        description=("Full trade records (taobao.trade.fullinfo.get) cached by (tid, modified) for the trades "
                     f"the tables cannot describe; reasons: {', '.join(reasons)} (sync.detail_reasons). A trade "
                     "is fetched again only after it changed, and an answer already fetched for an incomplete "
                     "list record costs no call. Refreshed in the sync step right after each trades partition "
                     "loads."))


def _trade_details_watch(settings: Settings) -> Watch:
    return functools.partial(DetailCandidates, frozenset(settings.config.sync.detail_reasons))


def _trade_details_run(ctx: FollowerContext, shop_id: str, time_key: str, watched: Any) -> Mapping[str, Any]:
    if watched is not None:
        wanted, answered = watched
    else:
        reasons = frozenset(ctx.settings.config.sync.detail_reasons)
        pages = ctx.lake.read_partition(shop_id=shop_id, stream=lake_dataset("trades", "increment"),
                                        partition_key=time_key, shape=TRADES)
        wanted, answered = detail_candidates(pages, reasons)
    session = ctx.top.session(shop_id) if wanted else None
    result = refresh_details(client=ctx.client, warehouse=ctx.warehouse, shop_id=shop_id, session=session,
                             candidates=wanted, answered=answered)
    return {"candidates": result.candidates, "fetched": result.fetched, "cache_hits": result.cached,
            "refused": result.refused}


# Follower assets by name, as the stream registry names them (StreamAssets.followers).
FOLLOWERS: dict[str, Follower] = {
    "trade_details": Follower(spec=_trade_details_spec, run=_trade_details_run, watch=_trade_details_watch),
}


class RunFollowers:
    """The selected followers of one sync step (``selected``: follower name -> the stream feeding it),
    with one client of their own, closed on exit. Failures are appended to the step's list."""

    def __init__(self, selected: Mapping[str, Stream], *, top: Gateway, recorder: CallRecorder,
                 warehouse: Warehouse, lake: PageLake, settings: Settings) -> None:
        self.selected = dict(selected)
        # stream name -> the one follower fed by its load's watch (a second follower of the same
        # stream, were there one, would read the lake).
        self._watcher: dict[str, str] = {}
        self.watches: dict[str, Watch] = {}
        for name, stream in self.selected.items():
            make = FOLLOWERS[name].watch
            if make is not None and stream.name not in self.watches:
                self._watcher[stream.name], self.watches[stream.name] = name, make(settings)
        self._client = top.client(recorder) if self.selected else None
        self._ctx = (FollowerContext(client=self._client, top=top, warehouse=warehouse, lake=lake,
                                     settings=settings) if self._client is not None else None)

    def __enter__(self) -> "RunFollowers":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._client is not None:
            self._client.close()

    def after(self, task: PartitionTask, failures: list[PartitionOutcome],
              watched: Any = None) -> Iterator[dg.AssetMaterialization]:
        """Followers of the stream whose partition ``task`` just loaded; ``watched``: the outcome's
        result of the stream's watch (``self.watches``), None when it had none."""
        names = [name for name, stream in self.selected.items() if stream.name == task.stream.name]
        yield from self._run(names, task, failures, watched)

    def alone(self, partition_keys: Sequence[str], synced: Sequence[Stream], kind: Kind, timeline: Timeline,
              failures: list[PartitionOutcome]) -> Iterator[dg.AssetMaterialization]:
        """Followers selected without their stream: fed by the partitions already in the lake."""
        names = [name for name, stream in self.selected.items() if stream not in synced]
        for key in partition_keys if names else ():
            shop_id, time_key = split_key(key)
            for name in names:
                task = PartitionTask(stream=self.selected[name], kind=kind, shop_id=shop_id,
                                     partition_key=time_key, window=timeline.window(kind, time_key))
                yield from self._run([name], task, failures)

    def _run(self, names: Sequence[str], task: PartitionTask, failures: list[PartitionOutcome],
             watched: Any = None) -> Iterator[dg.AssetMaterialization]:
        if not names:
            return
        ctx = self._ctx
        assert ctx is not None, "names come from self.selected, which made the context"
        for name in names:
            try:
                mine = watched if self._watcher.get(task.stream.name) == name else None
                figures = FOLLOWERS[name].run(ctx, task.shop_id, task.partition_key, mine)
            except Exception as exc:  # noqa: BLE001 - this partition's failure alone, named in the step's failure
                failures.append(PartitionOutcome(task=task, error=f"{name}: {describe(exc)}"))
                continue
            yield dg.AssetMaterialization(asset_key=name, partition=str(multi_key(task.shop_id, task.partition_key)),
                                          metadata=dict(figures))
