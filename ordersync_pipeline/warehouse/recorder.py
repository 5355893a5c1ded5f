"""A call recorder that lands the client's call ledger in the warehouse ``api_calls`` table (beside the
ledger it writes to: warehouse/ledger.py)."""

from __future__ import annotations

import threading
from typing import Any

from ordersync_pipeline.warehouse.store import Warehouse


class WarehouseCallRecorder:
    """Buffers call records and writes them in batches (one insert per ``flush_every`` calls).

    Buffering keeps the ledger off the hot path: a page costs one HTTP call, and a row-at-a-time
    insert after each would be a measurable share of it.
    """

    def __init__(self, warehouse: Warehouse, *, run_id: str | None, flush_every: int = 200) -> None:
        self._warehouse = warehouse
        self._run_id = run_id
        self._flush_every = flush_every
        self._buffer: list[Any] = []
        self._lock = threading.Lock()
        self.total = 0
        self.errors = 0

    def record(self, call: Any) -> None:
        with self._lock:
            self._buffer.append(call)
            self.total += 1
            if getattr(call, "outcome", "ok") != "ok":
                self.errors += 1
            full = len(self._buffer) >= self._flush_every
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self._warehouse.record_calls(batch, run_id=self._run_id)

    def __enter__(self) -> WarehouseCallRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
