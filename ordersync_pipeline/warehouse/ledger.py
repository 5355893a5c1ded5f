"""Append-only bookkeeping: the API call ledger, quarantine, and the completed-window log.

These tables are written row by row as events happen (or in small batches), so plain multi-row
INSERTs are enough; only the trade tables need the bulk monotonic path in upsert.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.warehouse.tables import KINDS, api_calls, quarantine, sync_windows
from ordersync_pipeline.warehouse.types import escape_unstorable

Kind = Literal["increment", "historical"]
_CALL_FIELDS = ("started_at", "method", "shop_id", "outcome", "code", "sub_code", "latency_s",
                "request_id", "attempt", "error_kind")


@dataclass(frozen=True)
class CompletedWindow:
    shop_id: str
    stream: str
    kind: str
    window_start: datetime
    window_end: datetime
    partition_key: str | None
    pages: int
    records: int
    completed_at: datetime
    run_id: str | None


@dataclass(frozen=True)
class CallStats:
    calls: int
    errors: int

    @property
    def failure_rate(self) -> float:
        """Share of calls that failed; 0.0 when there were no calls."""
        return self.errors / self.calls if self.calls else 0.0


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def call_row(record: Any, run_id: str | None) -> dict[str, Any]:
    """One api_calls row from a CallRecord-like object or dict."""
    values = {name: _field(record, name) for name in _CALL_FIELDS}
    if values["started_at"] is None or values["method"] is None or values["outcome"] not in ("ok", "error"):
        raise ValueError(f"call record needs started_at, method and outcome ok|error, got {values!r}")
    latency = values["latency_s"]
    return {
        "called_at": values["started_at"],
        "run_id": run_id,
        "shop_id": values["shop_id"],
        "method": values["method"],
        "outcome": values["outcome"],
        # TOP codes are integers, sub_codes strings; both kept as text so either fits.
        "code": None if values["code"] is None else str(values["code"]),
        "sub_code": values["sub_code"],
        "error_kind": values["error_kind"],
        "latency_ms": None if latency is None else round(float(latency) * 1000),
        "request_id": values["request_id"],
        "attempt": values["attempt"],
    }


def insert_calls(conn: Connection, records: Iterable[Any], run_id: str | None) -> int:
    rows = [call_row(r, run_id) for r in records]
    if rows:
        conn.execute(api_calls.insert(), rows)
    return len(rows)


def _payload_text(payload: Any) -> str | None:
    if payload is None or isinstance(payload, str):
        return payload
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload).decode("utf-8", errors="replace")
    return json.dumps(payload, ensure_ascii=False, default=str)


def _storable(text: Any) -> str | None:
    """Quarantine must always land: NUL and lone surrogates (which the rejected record may well
    contain) are written as JSON escapes rather than failing the insert."""
    return None if text is None else escape_unstorable(str(text))


def insert_quarantine(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    stamp = utc_now()
    prepared = [
        {
            "quarantined_at": row.get("quarantined_at") or stamp,
            "run_id": _storable(row.get("run_id")),
            "source": _storable(row.get("source")),
            "shop_id": _storable(row.get("shop_id")),
            "record_key": _storable(row.get("record_key")),
            "reason": _storable(row.get("reason")),
            "payload": _storable(_payload_text(row.get("payload"))),
        }
        for row in rows
    ]
    if prepared:
        conn.execute(quarantine.insert(), prepared)
    return len(prepared)


def record_window(conn: Connection, *, shop_id: str, stream: str, kind: str, window_start: datetime,
                  window_end: datetime, partition_key: str | None, pages: int, records: int,
                  run_id: str | None) -> None:
    """Record a window as complete (re-recording it replaces the earlier entry)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    require_aware(window_start, "window_start")
    require_aware(window_end, "window_end")
    if window_end <= window_start:
        raise ValueError(f"empty window {window_start.isoformat()} .. {window_end.isoformat()}")
    key = (sync_windows.c.shop_id == shop_id) & (sync_windows.c.stream == stream) \
        & (sync_windows.c.kind == kind) & (sync_windows.c.window_start == window_start) \
        & (sync_windows.c.window_end == window_end)
    # Delete + insert in one transaction: portable, and a window row is tiny.
    conn.execute(sync_windows.delete().where(key))
    conn.execute(sync_windows.insert().values(
        shop_id=shop_id, stream=stream, kind=kind, window_start=window_start, window_end=window_end,
        partition_key=partition_key, pages=pages, records=records, completed_at=utc_now(), run_id=run_id,
    ))


def read_windows(conn: Connection, shop_id: str, stream: str, kind: str) -> list[CompletedWindow]:
    rows = conn.execute(
        sa.select(sync_windows)
        .where(sync_windows.c.shop_id == shop_id, sync_windows.c.stream == stream,
               sync_windows.c.kind == kind)
        .order_by(sync_windows.c.window_start, sync_windows.c.window_end)
    ).mappings()
    return [CompletedWindow(**row) for row in rows]


def read_call_stats(conn: Connection, since: datetime, shop_id: str | None) -> CallStats:
    require_aware(since, "since")
    errors = sa.func.sum(sa.case((api_calls.c.outcome == "error", 1), else_=0))
    query = sa.select(sa.func.count(), errors).where(api_calls.c.called_at >= since)
    if shop_id is not None:
        query = query.where(api_calls.c.shop_id == shop_id)
    calls, failed = conn.execute(query).one()
    return CallStats(calls=int(calls or 0), errors=int(failed or 0))
