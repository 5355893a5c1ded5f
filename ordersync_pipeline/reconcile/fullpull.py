"""The degraded full pull: while a shop's increment API is failing, its recent orders by another road.

For each stream whose historical list API is not its increment API (trades: ``taobao.trades.sold.get``
by created time), the records created in ``[now - range, now - safety_lag)`` are fetched with every
page, completed by the detail API where the list record cannot describe them, and loaded through the
same normaliser and monotonic upserts (``source`` as the historical path's, ``sold``). It records no
window in ``sync_windows``: a created-time pull does not see changes to older orders, so the skipped
increment windows stay incomplete and the gap sensor repairs them once the breaker closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ordersync_pipeline.reconcile.load import LoadFigures, load_pages, with_details
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["degraded_streams", "full_pull_window", "full_pull", "PullResult"]


def degraded_streams(streams: Sequence[Stream] = STREAMS) -> list[Stream]:
    """Streams with a second road: a historical list API other than the increment one."""
    return [s for s in streams if s.lists["historical"].method != s.lists["increment"].method]


def full_pull_window(now: datetime, *, pull_range: timedelta, safety_lag: timedelta) -> Window:
    return Window(now - pull_range, now - safety_lag)


@dataclass(frozen=True)
class PullResult:
    stream: str
    window: Window
    figures: LoadFigures


def full_pull(client: TopClient, warehouse: Warehouse, stream: Stream, *, shop_id: str, session: str,
              window: Window, page_size: int, run_id: str | None) -> PullResult:
    listing = stream.lists["historical"]
    pages = listing.pages(client, shop_id=shop_id, session=session, window=window, page_size=page_size)
    figures = load_pages(warehouse, stream, shop_id,
                         with_details(pages, stream, client, shop_id=shop_id, session=session),
                         source=listing.source, run_id=run_id)
    return PullResult(stream.name, window, figures)
