"""``trade_orders.refund_status`` from two sources, converging on the newest without rolling back.

A line's refund state arrives with its trade (the order's ``refund_status``, as of the trade's
``modified``) and with its refunds (``refunds.status``, as of the refund's ``modified``), in any order.
The rule: the state stamped later wins. ``trade_orders.refund_modified`` says which one the line holds:
NULL means the trade's own state, as of the line's ``modified``; otherwise the ``modified`` of the refund
it was taken from. So the line's state is as of ``COALESCE(refund_modified, modified)``.

``apply_refunds`` runs inside the transaction that wrote either side:

* after trades (and their lines) were upserted: the lines just written carry the trade's state with
  ``refund_modified`` NULL; a stored refund newer than or as new as the line's trade version takes it back.
  So a refund seen before its trade is applied when the trade arrives.
* after refunds were upserted: each line of their ``oid`` takes the newest refund when that is at least
  as new as what the line holds. A refund replayed after a newer trade change therefore does nothing.

Several refunds of one line (one closed, a later one opened) resolve to the newest by ``modified``
(then refund_id). The UPDATE repeats the guard, so concurrent loaders cannot roll a line back either.
A trade batch's read of ``refunds`` could miss a refund committed by a concurrent transaction after its
snapshot began (MariaDB's REPEATABLE READ); the sync loads MariaDB in one thread, and that refund's own
transaction then updates the line once the trade batch commits (it waits on the line's row lock), so
the line still converges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ordersync_pipeline.warehouse.tables import refunds, trade_orders
from ordersync_pipeline.warehouse.upsert import in_keys

__all__ = ["apply_refunds"]

# Keys per IN list (SQLite allows 32766 variables).
_CHUNK = 5000


def _newest_refunds(conn: Connection, oids: Sequence[int]) -> dict[int, tuple[datetime, int, str]]:
    newest: dict[int, tuple[datetime, int, str]] = {}
    query = sa.select(refunds.c.oid, refunds.c.modified, refunds.c.refund_id, refunds.c.status).where(
        in_keys(conn.dialect.name, refunds.c.oid.type, refunds.c.oid))
    for start in range(0, len(oids), _CHUNK):
        for oid, modified, refund_id, status in conn.execute(query, {"keys": list(oids[start:start + _CHUNK])}):
            held = newest.get(int(oid))
            candidate = (modified, int(refund_id), str(status))
            if held is None or candidate[:2] > held[:2]:
                newest[int(oid)] = candidate
    return newest


def apply_refunds(conn: Connection, oids: Iterable[Any]) -> int:
    """Bring ``refund_status`` of the lines ``oids`` up to their newest refund where that is newer (see
    the module docstring). Returns how many lines were updated."""
    wanted = sorted({int(oid) for oid in oids if oid is not None})
    if not wanted:
        return 0
    newest = _newest_refunds(conn, wanted)
    if not newest:
        return 0
    lines = sa.select(trade_orders.c.oid, trade_orders.c.modified, trade_orders.c.refund_modified,
                      trade_orders.c.refund_status).where(
        in_keys(conn.dialect.name, trade_orders.c.oid.type, trade_orders.c.oid))
    keys = sorted(newest)
    due: list[dict[str, Any]] = []
    for start in range(0, len(keys), _CHUNK):
        for oid, line_modified, refund_modified, status in conn.execute(lines, {"keys": keys[start:start + _CHUNK]}):
            modified, _, refund_status = newest[int(oid)]
            since = refund_modified if refund_modified is not None else line_modified
            if modified >= since and (status != refund_status or refund_modified != modified):
                due.append({"b_oid": int(oid), "b_status": refund_status, "b_modified": modified})
    if not due:
        return 0
    when = sa.bindparam("b_modified", type_=trade_orders.c.modified.type)
    update = (trade_orders.update()
              .where(trade_orders.c.oid == sa.bindparam("b_oid"),
                     sa.or_(sa.and_(trade_orders.c.refund_modified.is_(None), trade_orders.c.modified <= when),
                            trade_orders.c.refund_modified <= when))
              .values(refund_status=sa.bindparam("b_status"), refund_modified=when))
    conn.execute(update, due)
    return len(due)
