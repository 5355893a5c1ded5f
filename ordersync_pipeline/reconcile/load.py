"""Records fetched outside the partition runs (a re-fetch, a degraded full pull) into the warehouse by the
same road as any partition: the stream's normaliser, the monotonic upserts, its ``after_load`` hook and
quarantine. Newer never loses to older, so whatever these write converges with the partition loads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ordersync_pipeline.sync.stream import Batch, Stream
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.pages import Page
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["LoadFigures", "load_pages", "with_details"]


@dataclass
class LoadFigures:
    pages: int = 0
    records: int = 0
    rows: dict[str, int] = field(default_factory=dict)    # rows upserted per table
    quarantined: int = 0


def load_pages(warehouse: Warehouse, stream: Stream, shop_id: str, pages: Iterable[Page], *, source: str,
               run_id: str | None, pages_per_flush: int = 10) -> LoadFigures:
    """Normalise and upsert ``pages`` (as ``source``), a flush every ``pages_per_flush`` pages."""
    figures = LoadFigures()
    pending, count = Batch(), 0
    for page in pages:
        pending.extend(stream.normalize(shop_id, page.items, synced_at=utc_now(), fetched_at=page.fetched_at,
                                        source=source))
        figures.pages += 1
        figures.records += len(page.items)
        count += 1
        if count >= pages_per_flush:
            _flush(warehouse, stream, pending, run_id, figures)
            pending, count = Batch(), 0
    _flush(warehouse, stream, pending, run_id, figures)
    return figures


def _flush(warehouse: Warehouse, stream: Stream, batch: Batch, run_id: str | None,
           figures: LoadFigures) -> None:
    loads = [(table, rows) for table, rows in batch.rows.items() if rows]
    if loads:
        for result in warehouse.upsert_many(loads, run_id=run_id):
            figures.rows[result.table] = figures.rows.get(result.table, 0) + result.unique - result.quarantined
            if result.table == stream.tables[0]:
                figures.quarantined += result.quarantined
        if stream.after_load is not None:
            stream.after_load(warehouse, batch)
    if batch.quarantine:
        warehouse.add_quarantine([{**row, "run_id": run_id} for row in batch.quarantine])
        figures.quarantined += len(batch.quarantine)


def with_details(pages: Iterable[Page], stream: Stream, client: TopClient, *, shop_id: str,
                 session: str) -> Iterator[Page]:
    """Each list page, followed by a detail page for every record the list call cannot describe (as the
    partition runs fetch them)."""
    detail = stream.detail
    for page in pages:
        yield page
        if detail is None:
            continue
        for record in page.items:
            if isinstance(record, dict) and detail.incomplete(record):
                yield detail.fetch(client, shop_id=shop_id, session=session, record=record,
                                   window=Window(page.window_start, page.window_end))
