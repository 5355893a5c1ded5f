"""Assets: thin wrappers that read their partitions and call the runners in ordersync_pipeline.sync.

Increment path (sync.incremental_minutes partitions, 15 by default, x shop):
    raw_trade_pages -> trades, trade_orders (+ asset check) -> trade_details
Historical path (Asia/Shanghai days x shop, created time, the platform's 90-day horizon):
    historical_trade_pages -> historical_trades (loads the same trades / trade_orders tables)

Every asset uses a single-run backfill policy, so a backfill over many partitions is one run that
loops over its partition keys, not thousands of runs.
"""


import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timedelta

import dagster as dg

from ordersync_pipeline.defs.partitions import (
    configured_sync,
    history_day_partitions,
    increment_time_partitions,
    multi,
    sync_anchor,
)
from ordersync_pipeline.defs.resources import PageLakeResource, TopApiResource, WarehouseResource
from ordersync_pipeline.sync import runner
from ordersync_pipeline.sync.recorder import WarehouseCallRecorder
from ordersync_pipeline.sync.windows import Window, fetch_window, window_is_closed
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.pages import TRADES

SETTINGS = configured_sync()
ANCHOR = sync_anchor()
INCREMENT_TIME = increment_time_partitions(ANCHOR, SETTINGS.incremental_minutes)
HISTORY_DAYS = history_day_partitions(ANCHOR, SETTINGS.history_days)
INCREMENT_PARTITIONS = multi(INCREMENT_TIME)
HISTORY_PARTITIONS = multi(HISTORY_DAYS)
OVERLAP = timedelta(minutes=SETTINGS.overlap_minutes)
SAFETY_LAG = timedelta(minutes=SETTINGS.safety_lag_minutes)

SINGLE_RUN = dg.BackfillPolicy.single_run()
SYNC_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


class PagesConfig(dg.Config):
    """Run options for the page assets."""

    from_lake: bool = False
    """Rebuild from pages already in the lake: make no API call (fails if a partition is missing)."""


def _keys(context: dg.AssetExecutionContext) -> list[dg.MultiPartitionKey]:
    return [k if isinstance(k, dg.MultiPartitionKey) else
            context.assets_def.partitions_def.get_partition_key_from_str(k)
            for k in context.partition_keys]


def increment_window(key: dg.MultiPartitionKey) -> Window:
    tw = INCREMENT_TIME.time_window_for_partition_key(key.keys_by_dimension["time"])
    return fetch_window(tw.start, tw.end, overlap=OVERLAP)


def history_window(key: dg.MultiPartitionKey) -> Window:
    tw = HISTORY_DAYS.time_window_for_partition_key(key.keys_by_dimension["time"])
    return Window(tw.start, tw.end)


def _run_fetch(context: dg.AssetExecutionContext, config: PagesConfig, top: TopApiResource,
               lake_res: PageLakeResource, warehouse_res: WarehouseResource, *, stream: str,
               historical: bool) -> dg.MaterializeResult:  # type: ignore[type-arg]
    lake = lake_res.get_lake()
    started = time.perf_counter()
    pages = trades = 0
    if config.from_lake:
        for key in _keys(context):
            shop, part = key.keys_by_dimension["shop"], key.keys_by_dimension["time"]
            if not lake.has_partition(shop_id=shop, stream=stream, partition_key=part):
                raise dg.Failure(f"from_lake: no complete {stream} pages for shop {shop} partition {part}; "
                                 "run it once without from_lake", allow_retries=False)
        return dg.MaterializeResult(metadata={"from_lake": True, "partitions": len(context.partition_keys)})
    warehouse = warehouse_res.get_warehouse()
    with WarehouseCallRecorder(warehouse, run_id=context.run.run_id) as recorder, \
            _ClientPerThread(top, recorder) as clients:

        def fetch_one(key: dg.MultiPartitionKey) -> runner.FetchResult:
            shop, part = key.keys_by_dimension["shop"], key.keys_by_dimension["time"]
            window = history_window(key) if historical else increment_window(key)
            window = _clip_or_refuse(window, historical=historical, key=key)
            source = (runner.sold_pages if historical else runner.increment_pages)(
                clients.get(), shop_id=shop, session=top.session_for(shop), window=window,
                page_size=SETTINGS.page_size)
            result = runner.fetch_partition(source, lake=lake, shop_id=shop, stream=stream,
                                            partition_key=part, window=window)
            context.log.info(f"{stream} {shop} {part}: {result.pages} pages, {result.trades} trades")
            return result

        # Partitions are fetched concurrently: against the real gateway a call is mostly waiting
        # (tens to hundreds of ms), and the shared rate budget, not the thread count, bounds the
        # call rate. Every partition is attempted; failures are reported together afterwards.
        failures: list[str] = []
        retryable = False
        with ThreadPoolExecutor(max_workers=SETTINGS.fetch_concurrency) as pool:
            futures = {pool.submit(fetch_one, key): key for key in _keys(context)}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - reported per partition below
                    failures.append(f"{futures[future]}: {type(exc).__name__}: {exc}")
                    retryable = retryable or getattr(exc, "retryable", True)
                    continue
                pages += result.pages
                trades += result.trades
        if failures:
            # When no failure can heal by waiting (an expired session, a rejected parameter), fail
            # now instead of sleeping through the step retry policy (30 s, then 60 s).
            raise dg.Failure(
                f"{len(failures)} of {len(futures)} {stream} partitions failed to fetch; "
                "their windows are not marked complete and a re-run retries them; first: "
                f"{sorted(failures)[0][:300]}",
                metadata={"failures": "\n".join(sorted(failures)[:50])}, allow_retries=retryable)
    context.log.info(f"fetched {trades} trades in {pages} pages for {len(context.partition_keys)} "
                     f"partitions in {time.perf_counter() - started:.1f}s ({recorder.total} API calls)")
    return dg.MaterializeResult(metadata={
        "partitions": len(context.partition_keys),
        "pages": pages,
        "trades_fetched": trades,
        "api_calls": recorder.total,
        "api_errors": recorder.errors,
        "seconds": round(time.perf_counter() - started, 3),
    })


class _ClientPerThread:
    """One ``TopClient`` per worker thread (a client owns one HTTP pool and is not shared)."""

    def __init__(self, top: TopApiResource, recorder: WarehouseCallRecorder) -> None:
        self._top, self._recorder = top, recorder
        self._local = threading.local()
        self._all: list[TopClient] = []
        self._lock = threading.Lock()

    def get(self) -> TopClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._top.get_client(recorder=self._recorder)
            with self._lock:
                self._all.append(client)
        return client

    def __enter__(self) -> "_ClientPerThread":
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self._all:
            client.close()


def _clip_or_refuse(window: Window, *, historical: bool, key: dg.MultiPartitionKey) -> Window:
    """Never fetch past now minus the safety lag: that part of the window may still change."""
    now = utc_now()
    if window_is_closed(window.end, now=now, safety_lag=SAFETY_LAG):
        return window
    if historical:  # a day still in progress: its created range up to the lag is all there is
        return Window(window.start, now - SAFETY_LAG)
    raise dg.Failure(
        f"partition {key} ends at {window.end.isoformat()}, later than now minus the "
        f"{SAFETY_LAG} safety lag; it runs once closed")


@dg.asset(partitions_def=INCREMENT_PARTITIONS, backfill_policy=SINGLE_RUN, retry_policy=SYNC_RETRY,
          group_name="increment", kinds={"python", "parquet"})
def raw_trade_pages(context: dg.AssetExecutionContext, config: PagesConfig, top: TopApiResource,
                    lake: PageLakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """taobao.trades.sold.increment.get pages for [partition start - 5 min, partition end), read last
    page first, stored as received in the Parquet lake."""
    return _run_fetch(context, config, top, lake, warehouse, stream=runner.INCREMENT, historical=False)


def _load(context: dg.AssetExecutionContext, lake_res: PageLakeResource,
          warehouse_res: WarehouseResource, *, stream: str,
          historical: bool) -> tuple[runner.LoadTotals, dict[str, int | float]]:
    lake, warehouse = lake_res.get_lake(), warehouse_res.get_warehouse()
    total = runner.LoadTotals()
    started = time.perf_counter()
    specs = [runner.LoadSpec(shop_id=key.keys_by_dimension["shop"], stream=stream,
                             partition_key=key.keys_by_dimension["time"],
                             window=history_window(key) if historical else increment_window(key),
                             source="sold" if historical else "increment")
             for key in _keys(context)]
    for result in runner.load_partitions(specs, lake=lake, warehouse=warehouse,
                                         run_id=context.run.run_id, workers=SETTINGS.load_workers):
        total.add(result)
    seconds = time.perf_counter() - started
    context.log.info(f"loaded {total.trades} trades, {total.orders} lines from {total.pages} pages "
                     f"of {len(specs)} partitions in {seconds:.1f}s")
    meta: dict[str, int | float] = {
        "partitions": len(context.partition_keys),
        "pages": total.pages,
        "quarantined": total.quarantined,
        "seconds": round(seconds, 3),
        "trades_per_second": round(total.trades / seconds, 1) if seconds > 0 else 0.0,
    }
    return total, meta


def _quarantine_check(asset: str, total: runner.LoadTotals) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset, check_name="no_quarantined_records", passed=total.quarantined == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined": total.quarantined,
                  "first_reasons": "\n".join(total.quarantine_reasons[:10]) or "none"})


@dg.multi_asset(
    specs=[dg.AssetSpec("trades", deps=[raw_trade_pages], group_name="increment", kinds={"sql"}),
           dg.AssetSpec("trade_orders", deps=[raw_trade_pages], group_name="increment", kinds={"sql"})],
    check_specs=[dg.AssetCheckSpec("no_quarantined_records", asset="trades",
                                   description="Records that failed validation went to quarantine")],
    partitions_def=INCREMENT_PARTITIONS, backfill_policy=SINGLE_RUN, retry_policy=SYNC_RETRY,
)
def trade_tables(context: dg.AssetExecutionContext, lake: PageLakeResource,
                 warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:  # type: ignore[type-arg]
    """Typed rows from the partition's pages, upserted by tid / oid; an older ``modified`` never
    overwrites a newer one. The window is recorded complete only after every page committed."""
    total, meta = _load(context, lake, warehouse, stream=runner.INCREMENT, historical=False)
    yield dg.MaterializeResult(asset_key="trades", metadata={**meta, "rows_upserted": total.trades})
    yield dg.MaterializeResult(asset_key="trade_orders", metadata={**meta, "rows_upserted": total.orders})
    yield _quarantine_check("trades", total)


@dg.asset(partitions_def=INCREMENT_PARTITIONS, backfill_policy=SINGLE_RUN, retry_policy=SYNC_RETRY,
          deps=["trades"], group_name="increment", kinds={"sql"})
def trade_details(context: dg.AssetExecutionContext, top: TopApiResource, lake: PageLakeResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """taobao.trade.fullinfo.get only for trades the list call cannot describe (presale, buyer
    messages), cached by (tid, modified) so a trade is fetched again only after it changed."""
    page_lake, wh = lake.get_lake(), warehouse.get_warehouse()
    candidates = fetched = cached = 0
    with WarehouseCallRecorder(wh, run_id=context.run.run_id) as recorder:
        client = top.get_client(recorder=recorder)
        try:
            for key in _keys(context):
                shop, part = key.keys_by_dimension["shop"], key.keys_by_dimension["time"]
                found = runner.detail_candidates(
                    page_lake.read_partition(shop_id=shop, stream=runner.INCREMENT, partition_key=part,
                                             shape=TRADES),
                    frozenset(SETTINGS.detail_reasons))
                result = runner.refresh_details(client=client, warehouse=wh, shop_id=shop,
                                                session=top.session_for(shop), candidates=found)
                candidates += result.candidates
                fetched += result.fetched
                cached += result.cached
        finally:
            client.close()
    return dg.MaterializeResult(metadata={"candidates": candidates, "fetched": fetched,
                                          "cache_hits": cached, "api_calls": recorder.total})


@dg.asset(partitions_def=HISTORY_PARTITIONS, backfill_policy=SINGLE_RUN, retry_policy=SYNC_RETRY,
          group_name="historical", kinds={"python", "parquet"})
def historical_trade_pages(context: dg.AssetExecutionContext, config: PagesConfig,
                           top: TopApiResource, lake: PageLakeResource,
                           warehouse: WarehouseResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """taobao.trades.sold.get pages by created day (every trade type listed), kept in the lake."""
    return _run_fetch(context, config, top, lake, warehouse, stream=runner.HISTORICAL, historical=True)


@dg.asset(partitions_def=HISTORY_PARTITIONS, backfill_policy=SINGLE_RUN, retry_policy=SYNC_RETRY,
          deps=[historical_trade_pages], group_name="historical", kinds={"sql"},
          check_specs=[dg.AssetCheckSpec("no_quarantined_records", asset="historical_trades")])
def historical_trades(context: dg.AssetExecutionContext, lake: PageLakeResource,
                      warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:  # type: ignore[type-arg]
    """The historical pages loaded into the same ``trades`` / ``trade_orders`` tables."""
    total, meta = _load(context, lake, warehouse, stream=runner.HISTORICAL, historical=True)
    yield dg.MaterializeResult(metadata={**meta, "trades_upserted": total.trades,
                                         "orders_upserted": total.orders})
    yield _quarantine_check("historical_trades", total)


INCREMENT_ASSETS = [raw_trade_pages, trade_tables, trade_details]
HISTORICAL_ASSETS = [historical_trade_pages, historical_trades]
