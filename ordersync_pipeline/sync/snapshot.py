"""Taking a snapshot (a registered ``Snapshot``, sync/stream.py): fetch the whole listing into the lake, then
load it as one dated copy per shop.

Like a stream partition, the two steps have the lake between them: the listing's pages are published
atomically under the dataset ``<name>.snapshot`` with the partition key ``taken_at`` (UTC, to the second),
and loading reads only the lake. Loading deletes the rows of that (shop, ``taken_at``) and inserts the
normalised ones in one transaction, so loading the same snapshot again changes nothing and a reader never
sees half a snapshot. Records that fail validation go to quarantine; the rest land.

Failures are per shop: ``take_snapshots`` returns one ``SnapshotOutcome`` per shop, with its error when
it failed, and never stops the other shops for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.failures import describe
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.stream import Snapshot
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import metadata

__all__ = ["SnapshotOutcome", "take_snapshot", "take_snapshots", "load_snapshot", "snapshot_key", "dataset"]

log = logging.getLogger("ordersync.snapshot")
KEY_FORMAT = "%Y%m%dT%H%M%SZ"


def dataset(snapshot: Snapshot) -> str:
    return f"{snapshot.name}.snapshot"


def snapshot_key(taken_at: datetime) -> str:
    """The lake partition key of a snapshot taken at ``taken_at``: UTC to the second, e.g. 20261130T083000Z."""
    return taken_at.astimezone(timezone.utc).strftime(KEY_FORMAT)


@dataclass
class SnapshotOutcome:
    shop_id: str
    taken_at: datetime
    pages: int = 0
    records: int = 0
    rows: int = 0
    quarantined: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def take_snapshot(snapshot: Snapshot, *, client: TopClient, session: str, warehouse: Warehouse, lake: PageLake,
                  shop_id: str, taken_at: datetime, page_size: int = 100) -> SnapshotOutcome:
    """Fetch the shop's listing into the lake, then load it (raises what the fetch or load raises)."""
    taken_at = taken_at.astimezone(timezone.utc).replace(microsecond=0)
    started = time.perf_counter()
    manifest = lake.write_partition(
        shop_id=shop_id, stream=dataset(snapshot), partition_key=snapshot_key(taken_at),
        pages=snapshot.pages(client, shop_id=shop_id, session=session, taken_at=taken_at, page_size=page_size))
    outcome = load_snapshot(snapshot, warehouse=warehouse, lake=lake, shop_id=shop_id, taken_at=taken_at)
    outcome.pages, outcome.records = manifest.pages, manifest.items
    outcome.seconds = time.perf_counter() - started
    return outcome


def load_snapshot(snapshot: Snapshot, *, warehouse: Warehouse, lake: PageLake, shop_id: str,
                  taken_at: datetime) -> SnapshotOutcome:
    """Lake pages of one snapshot -> its rows, replacing any earlier load of the same snapshot."""
    taken_at = taken_at.astimezone(timezone.utc).replace(microsecond=0)
    outcome = SnapshotOutcome(shop_id=shop_id, taken_at=taken_at)
    items: list[Any] = []
    details: list[Any] = []
    shapes = {snapshot.method: snapshot.shape, **snapshot.detail_shapes}
    for page in lake.read_partition(shop_id=shop_id, stream=dataset(snapshot), partition_key=snapshot_key(taken_at),
                                    shape=shapes):
        (items if page.method == snapshot.method else details).extend(page.items)
        outcome.pages += 1
        outcome.records += len(page.items)
    # A catalogue is small (thousands of SKUs): normalised whole, so detail answers meet their items.
    batch = snapshot.normalize(shop_id, items, taken_at=taken_at, details=details)
    rows = _unique(batch.rows.get(snapshot.table, []))
    table = metadata.tables[snapshot.table]
    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.shop_id == shop_id, table.c.taken_at == taken_at))
        if rows:
            conn.execute(sa.insert(table), rows)
    if batch.quarantine:
        warehouse.add_quarantine(batch.quarantine)
    outcome.rows, outcome.quarantined = len(rows), len(batch.quarantine)
    outcome.quarantine_reasons = [str(q["reason"]) for q in batch.quarantine[:10]]
    return outcome


def take_snapshots(snapshot: Snapshot, *, shop_ids: Sequence[str], client: TopClient,
                   sessions: Callable[[str], str], warehouse: Warehouse, lake: PageLake, taken_at: datetime,
                   page_size: int = 100) -> list[SnapshotOutcome]:
    """``take_snapshot`` for each shop; a shop that fails is reported in its outcome, the others go on."""
    outcomes = []
    for shop_id in shop_ids:
        try:
            outcome = take_snapshot(snapshot, client=client, session=sessions(shop_id), warehouse=warehouse,
                                    lake=lake, shop_id=shop_id, taken_at=taken_at, page_size=page_size)
        except Exception as exc:  # noqa: BLE001 - this shop's failure alone
            outcome = SnapshotOutcome(shop_id=shop_id, taken_at=taken_at, error=describe(exc))
            log.warning("%s snapshot of %s failed: %s", snapshot.name, shop_id, outcome.error)
        outcomes.append(outcome)
    return outcomes


def _unique(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per (num_iid, sku_id) across the snapshot's pages, the last listing winning."""
    keyed = {(row.get("num_iid"), row.get("sku_id")): row for row in rows}
    return list(keyed.values())
