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

Concurrent writers: a trade batch inserting a line and a refund batch inserting that line's refund, at
once, would each miss the other's uncommitted row (write skew across two tables), and the line would keep
the older state. On PostgreSQL, where loader processes run side by side, ``lock_refund_state`` prevents
it: a transaction writing refunds takes an exclusive transaction-level advisory lock before any write,
one writing order lines a shared one, so trade batches still run in parallel with each other while a
refund batch runs alone, and whichever runs later reads the other's committed rows (READ COMMITTED
reads each statement afresh). SQLite has one writer at a time; MariaDB is loaded by one thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ordersync_pipeline.warehouse.tables import refunds, trade_orders
from ordersync_pipeline.warehouse.upsert import in_keys

__all__ = ["apply_refunds", "lock_refund_state", "REFUND_STATE_LOCK"]

# Keys per IN list (SQLite allows 32766 variables).
_CHUNK = 5000
# PostgreSQL advisory lock key of the refund state ("ordersync refund_status", arbitrary but fixed).
REFUND_STATE_LOCK = 0x0DE5_7EF0_0001


def lock_refund_state(conn: Connection, tables: set[str]) -> None:
    """PostgreSQL only, first in the transaction: exclusive when it writes ``refunds``, shared when it
    writes ``trade_orders`` (see the module docstring); nothing for other tables."""
    if "refunds" in tables:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": REFUND_STATE_LOCK})
    elif "trade_orders" in tables:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": REFUND_STATE_LOCK})


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
