"""What a stream is: the description the generic sync code, the asset factory and the tests work from.

The registry of streams is ``sync/streams.py``. A stream names everything the generic code needs: how its
list API is paged on each path (the increment path by modified time, the historical path over the
platform's history horizon), how a page is laid out, which API completes a record the list call cannot
describe, how raw records become warehouse rows, which tables they land in and what its Dagster assets
are called. The runners (``sync/runner.py``), the asset factory (``defs/factory.py``), ``ordersync sync``
and ``demo``, the summary and the generic tests iterate the registry; adding a stream means a pager entry
(when the generic ones do not fit), a normaliser module, one registry entry, and a table plus its
migration.

A *snapshot* (``Snapshot``) is the other kind of source: a listing with no time window or ``modified``
increment (the on-sale catalogue and its stock, ``taobao.items.onsale.get``). It is read whole each time
and kept as a dated copy; it is registered in ``SNAPSHOTS`` beside ``STREAMS`` and taken by
``sync/snapshot.py``, so it needs no partition window, no ``sync_windows`` entry and no reverse paging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from ordersync_pipeline.sync.windows import Kind, Window
from ordersync_pipeline.top.pages import ListShape, Page

__all__ = ["StreamName", "Stream", "StreamAssets", "ListCall", "DetailApi", "Batch", "Normalizer", "KINDS",
           "Snapshot", "SnapshotNormalizer"]

StreamName = Literal["trades", "refunds"]
KINDS: tuple[Kind, ...] = ("increment", "historical")


@dataclass
class Batch:
    """Normalised rows of some pages: rows per warehouse table, and quarantine rows for bad records."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Batch) -> None:
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        self.quarantine.extend(other.quarantine)

    def count(self, table: str) -> int:
        return len(self.rows.get(table, ()))


class Normalizer(Protocol):
    def __call__(self, shop_id: str, items: Sequence[Mapping[str, Any]], *, synced_at: datetime,
                 fetched_at: datetime, source: str) -> Batch:
        """Validate and type raw records; bad ones become quarantine rows instead of raising."""


PageSource = Callable[..., Iterator[Page]]


@dataclass(frozen=True)
class ListCall:
    """One path's list call: ``pages(client, shop_id=, session=, window=, page_size=)`` yields its pages."""

    method: str
    pages: PageSource
    source: str                       # what the rows' ``source`` column says ("increment", "sold", ...)
    description: str                  # for people: what is fetched and how


@dataclass(frozen=True)
class DetailApi:
    """Completes records the list call cannot describe (one call per such record, at fetch time; the
    answers are kept in the lake beside the list pages so a rebuild needs no call)."""

    method: str
    incomplete: Callable[[Mapping[str, Any]], bool]
    fetch: Callable[..., Page]        # (client, shop_id=, session=, record=, window=) -> a one-item Page


@dataclass(frozen=True)
class StreamAssets:
    """Dagster asset names: the raw pages and the tables, per path, with a description each."""

    pages: Mapping[Kind, str]
    tables: Mapping[Kind, Sequence[str]]
    descriptions: Mapping[str, str]
    # The warehouse table a table asset stands for, when it stands for exactly one (``trades`` ->
    # ``trades``); an asset for all of the stream's tables (``historical_trades``) is absent.
    warehouse_tables: Mapping[str, str] = field(default_factory=dict)
    # Hand-written assets that follow the stream's tables on a path (``trade_details`` after ``trades``):
    # selected with the stream when ``ordersync sync`` runs it.
    followers: Mapping[Kind, Sequence[str]] = field(default_factory=dict)

    def all_names(self, kind: Kind) -> list[str]:
        """Every asset of the stream on ``kind``: pages, tables, followers."""
        return [self.pages[kind], *self.tables[kind], *self.followers.get(kind, ())]

    def table_of(self, asset: str) -> str | None:
        return self.warehouse_tables.get(asset)


@dataclass(frozen=True)
class Stream:
    name: StreamName
    title: str                        # for people: "trades", "refunds"
    shape: ListShape
    record_key: str                   # the record's id field ("tid", "refund_id")
    time_field: str                   # what the increment path pages by ("modified")
    lists: Mapping[Kind, ListCall]
    normalize: Normalizer
    tables: Sequence[str]             # warehouse tables written, main table first
    assets: StreamAssets
    detail: DetailApi | None = None
    # After rows of this stream committed: bring dependent columns of other tables up to date
    # (e.g. refunds -> trade_orders.refund_status). Must be idempotent and monotonic.
    after_load: Callable[[Any, Batch], None] | None = None

    def window_label(self, window: Window) -> str:
        return f"{window.start.isoformat()} .. {window.end.isoformat()}"


class SnapshotNormalizer(Protocol):
    def __call__(self, shop_id: str, items: Sequence[Mapping[str, Any]], *, taken_at: datetime,
                 details: Sequence[Any] = ()) -> Batch:
        """Validate and type a whole listing taken at ``taken_at`` (``details``: the records of the detail
        API pages that complete it); bad records become quarantine rows."""


@dataclass(frozen=True)
class Snapshot:
    """A listing read whole on each run (no window, no increment) and kept as a dated copy per shop.

    ``pages(client, shop_id=, session=, taken_at=, page_size=)`` yields the listing's pages; the rows of
    one (shop, ``taken_at``) are replaced together, so re-loading a snapshot from the lake changes nothing.
    """

    name: str                         # "inventory": the lake dataset is ``<name>.snapshot``
    title: str
    method: str                       # the listing's API; pages of other methods are detail answers
    shape: ListShape
    detail_shapes: Mapping[str, ListShape]
    pages: PageSource
    normalize: SnapshotNormalizer
    table: str                        # the warehouse table, with ``shop_id`` and ``taken_at`` columns
    asset: str                        # the Dagster asset
    description: str
