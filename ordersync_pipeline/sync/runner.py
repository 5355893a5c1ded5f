"""Partition runners: the whole of one sync step as plain functions the Dagster assets call.

Two steps per partition, with the raw page lake between them:

1. ``fetch_partition``: API pages for a window -> the lake (nothing else). Published atomically, so a
   partition whose pages did not all land is never readable.
2. ``load_partition``: lake -> normalised rows -> monotonic upserts + quarantine, then the window is
   recorded complete. Because it reads only the lake, any partition can be rebuilt with no API call.

``refresh_details`` fetches ``taobao.trade.fullinfo.get`` only for trades whose list fields are not
enough, skipping those already cached at the same ``modified``.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.normalize import detail_row, merge_batches, normalize_trades
from ordersync_pipeline.sync.pages import TradePage
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.timeutil import format_top_time
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.paging import get_trade_fullinfo, iter_increment_pages, iter_sold_pages
from ordersync_pipeline.warehouse import Warehouse

Stream = str  # "increment" | "historical"
INCREMENT: Stream = "increment"
HISTORICAL: Stream = "historical"

# What the list APIs are asked for: every column the warehouse keeps, plus the flags that decide
# whether a trade needs a fullinfo call. Receiver personal fields are deliberately not requested.
LIST_FIELDS = ",".join([
    "tid", "status", "type", "created", "modified", "pay_time", "consign_time", "end_time",
    "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee", "step_trade_status",
    "step_paid_fee", "buyer_open_uid", "buyer_nick", "seller_nick", "receiver_state", "receiver_city",
    "receiver_district", "num", "has_buyer_message", "orders",
])
DETAIL_FIELDS = LIST_FIELDS + ",buyer_message,seller_memo,step_pay_details,promotion_details"

# Flush rows to the warehouse every this many pages: big enough for set-based upserts to pay off,
# small enough to keep memory flat whatever the window size.
PAGES_PER_FLUSH = 10

# Below this many trades a run loads in-process: starting loader processes (~1-2 s each, imports
# included) costs more than it saves on small increments.
PARALLEL_LOAD_MIN_TRADES = 20_000


@dataclass(frozen=True)
class FetchResult:
    shop_id: str
    stream: Stream
    partition_key: str
    window: Window
    pages: int
    trades: int
    seconds: float


@dataclass
class LoadResult:
    shop_id: str
    stream: Stream
    partition_key: str
    window: Window
    pages: int = 0
    trades: int = 0
    orders: int = 0
    quarantined: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class LoadTotals:
    """Sums over the partitions of one run (what the run's metadata and asset check report)."""

    partitions: int = 0
    pages: int = 0
    trades: int = 0
    orders: int = 0
    quarantined: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)

    def add(self, result: LoadResult) -> None:
        self.partitions += 1
        self.pages += result.pages
        self.trades += result.trades
        self.orders += result.orders
        self.quarantined += result.quarantined
        self.quarantine_reasons.extend(result.quarantine_reasons)


@dataclass(frozen=True)
class DetailsResult:
    shop_id: str
    candidates: int
    fetched: int
    cached: int


def increment_pages(client: TopClient, *, shop_id: str, session: str, window: Window,
                    page_size: int) -> Iterator[TradePage]:
    return iter_increment_pages(client, shop_id=shop_id, session=session, start_modified=window.start,
                                end_modified=window.end, fields=LIST_FIELDS, page_size=page_size)


def sold_pages(client: TopClient, *, shop_id: str, session: str, window: Window,
               page_size: int) -> Iterator[TradePage]:
    return iter_sold_pages(client, shop_id=shop_id, session=session, start_created=window.start,
                           end_created=window.end, fields=LIST_FIELDS, page_size=page_size)


def fetch_partition(pages: Iterable[TradePage], *, lake: PageLake, shop_id: str, stream: Stream,
                    partition_key: str, window: Window) -> FetchResult:
    """Stream ``pages`` into the lake; the partition becomes readable only if every page landed."""
    started = time.perf_counter()
    manifest = lake.write_partition(shop_id=shop_id, stream=stream, partition_key=partition_key,
                                    pages=pages)
    return FetchResult(shop_id=shop_id, stream=stream, partition_key=partition_key, window=window,
                       pages=manifest.pages, trades=manifest.trades,
                       seconds=time.perf_counter() - started)


def load_partition(*, lake: PageLake, warehouse: Warehouse, shop_id: str, stream: Stream,
                   partition_key: str, window: Window, run_id: str | None,
                   source: str) -> LoadResult:
    """Lake pages -> warehouse rows; marks the window complete only after every page committed."""
    started = time.perf_counter()
    result = LoadResult(shop_id=shop_id, stream=stream, partition_key=partition_key, window=window)
    pending: list[TradePage] = []
    for page in lake.read_partition(shop_id=shop_id, stream=stream, partition_key=partition_key):
        pending.append(page)
        if len(pending) >= PAGES_PER_FLUSH:
            _flush(pending, warehouse=warehouse, shop_id=shop_id, source=source, run_id=run_id,
                   result=result)
            pending = []
    if pending:
        _flush(pending, warehouse=warehouse, shop_id=shop_id, source=source, run_id=run_id,
               result=result)
    warehouse.mark_window_complete(shop_id=shop_id, stream=stream, window_start=window.start,
                                   window_end=window.end, partition_key=partition_key,
                                   pages=result.pages, trades=result.trades, run_id=run_id)
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class LoadSpec:
    """One partition to load: everything a worker process needs, all picklable."""

    shop_id: str
    stream: Stream
    partition_key: str
    window: Window
    source: str


def load_partitions(specs: Sequence[LoadSpec], *, lake: PageLake, warehouse: Warehouse,
                    run_id: str | None, workers: int = 1) -> Iterator[LoadResult]:
    """Load many partitions, in ``workers`` processes when that is safe and worth it.

    Loading is CPU-bound Python (parse, normalise, encode COPY) while the database merges in its
    own process, so on PostgreSQL two loader processes keep both cores busy. Overlapping windows
    hold the same trades; the monotonic upsert makes any interleaving converge and rows are written
    in key order so concurrent transactions queue instead of deadlocking. SQLite allows one writer
    and MariaDB's gap locks deadlock under concurrent upserts, so they load in-process.
    """
    parallel = (workers > 1 and len(specs) > 1 and warehouse.dialect_name == "postgresql"
                and _lake_trades(lake, specs) >= PARALLEL_LOAD_MIN_TRADES)
    if not parallel:
        for spec in specs:
            yield load_partition(lake=lake, warehouse=warehouse, shop_id=spec.shop_id,
                                 stream=spec.stream, partition_key=spec.partition_key,
                                 window=spec.window, run_id=run_id, source=spec.source)
        return
    url = warehouse.engine.url.render_as_string(hide_password=False)
    # spawn, not fork: the parent holds live database connections and threads that must not be
    # duplicated into children.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(specs)), mp_context=context) as pool:
        futures = [pool.submit(_load_in_worker, spec, str(lake.root), url, run_id) for spec in specs]
        for future in futures:
            yield future.result()


def _lake_trades(lake: PageLake, specs: Sequence[LoadSpec]) -> int:
    """Trades waiting in the lake for ``specs`` (from manifests; a missing one fails later, clearly)."""
    total = 0
    for spec in specs:
        try:
            total += lake.manifest(shop_id=spec.shop_id, stream=spec.stream,
                                   partition_key=spec.partition_key).trades
        except Exception:  # noqa: BLE001 - load_partition reports the missing partition itself
            continue
    return total


_WORKER_WAREHOUSES: dict[str, Warehouse] = {}


def _load_in_worker(spec: LoadSpec, lake_root: str, url: str, run_id: str | None) -> LoadResult:
    warehouse = _WORKER_WAREHOUSES.get(url)
    if warehouse is None:
        warehouse = _WORKER_WAREHOUSES[url] = Warehouse(url)
    return load_partition(lake=PageLake(Path(lake_root)), warehouse=warehouse, shop_id=spec.shop_id,
                          stream=spec.stream, partition_key=spec.partition_key, window=spec.window,
                          run_id=run_id, source=spec.source)


def _flush(pages: Sequence[TradePage], *, warehouse: Warehouse, shop_id: str, source: str,
           run_id: str | None, result: LoadResult) -> None:
    synced_at = utc_now()
    # Per page: each row's version includes when its page was fetched.
    batch = merge_batches(normalize_trades(shop_id, page.trades, fetched_at=page.fetched_at,
                                           synced_at=synced_at, source=source) for page in pages)
    if batch.trades or batch.orders:
        # One transaction: a trade and its lines land together.
        stored, _ = warehouse.upsert_trades_with_orders(batch.trades, batch.orders, run_id=run_id)
        result.quarantined += stored.quarantined  # trades the database refused (see Warehouse)
    if batch.quarantine:
        for row in batch.quarantine:
            row["run_id"] = run_id
        warehouse.add_quarantine(batch.quarantine)
        result.quarantine_reasons.extend(str(r["reason"]) for r in batch.quarantine[:20])
    result.pages += len(pages)
    result.trades += len(batch.trades)
    result.orders += len(batch.orders)
    result.quarantined += len(batch.quarantine)


DetailReason = str  # "incomplete" | "presale" | "buyer_message"
DEFAULT_DETAIL_REASONS: frozenset[DetailReason] = frozenset({"incomplete"})


def needs_details(trade: dict[str, Any], reasons: frozenset[DetailReason] = DEFAULT_DETAIL_REASONS) -> bool:
    """True when the list call cannot give what is needed for this trade, so fullinfo must.

    By default only incomplete list records (no order lines, or lines without ``oid``) qualify:
    every warehouse column comes from the list call, and a fullinfo call per trade would cost an
    order of magnitude more calls than the one per page that incremental sync is built for. Opt in to
    ``presale`` (``step_pay_details``) or ``buyer_message`` in ``sync.detail_reasons`` when a later step
    needs them; the (tid, modified) cache keeps each such trade to one call per change.
    """
    orders = trade.get("orders")
    if "incomplete" in reasons and (not isinstance(orders, list) or not orders
                                    or any(not isinstance(o, dict) or "oid" not in o for o in orders)):
        return True
    if "presale" in reasons and trade.get("type") == "step":
        return True
    return "buyer_message" in reasons and bool(trade.get("has_buyer_message"))


def detail_candidates(pages: Iterable[TradePage],
                      reasons: frozenset[DetailReason] = DEFAULT_DETAIL_REASONS) -> dict[int, datetime | str]:
    """Newest ``modified`` per tid, for the trades in ``pages`` that need a fullinfo call."""
    found: dict[int, Any] = {}
    for page in pages:
        for trade in page.trades:
            tid = trade.get("tid")
            if isinstance(tid, int) and needs_details(trade, reasons):
                modified = trade.get("modified")
                if tid not in found or str(modified) > str(found[tid]):
                    found[tid] = modified
    return found


def refresh_details(*, client: TopClient, warehouse: Warehouse, shop_id: str, session: str,
                    candidates: dict[int, Any], synced_at: datetime | None = None,
                    fetch: Callable[..., dict[str, Any]] = get_trade_fullinfo) -> DetailsResult:
    """Fetch fullinfo for candidates not yet cached at the same ``modified``; cache the result."""
    cached = warehouse.cached_detail_modified(list(candidates))
    todo = [tid for tid, modified in candidates.items()
            if _as_top_text(cached.get(tid)) != _as_top_text(modified)]
    rows = []
    for tid in todo:
        trade = fetch(client, shop_id=shop_id, session=session, tid=tid, fields=DETAIL_FIELDS)
        rows.append(detail_row(shop_id, trade, fetched_at=synced_at or utc_now(),
                               keep_pii=warehouse.store_receiver_pii))
    if rows:
        warehouse.upsert_trade_details(rows)
    return DetailsResult(shop_id=shop_id, candidates=len(candidates), fetched=len(rows),
                         cached=len(candidates) - len(todo))


def _as_top_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_top_time(value)
    return str(value)
