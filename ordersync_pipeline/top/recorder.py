"""The call ledger: every HTTP attempt the client makes, reported to a ``CallRecorder``.

Contract (docs/architecture.md): ``record(call: CallRecord)``. The warehouse implementation lives in
``sync/recorder.py``; ``ListRecorder`` keeps records in memory for tests and small tools.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

__all__ = ["CallRecord", "CallRecorder", "ListRecorder", "NullRecorder", "Outcome"]

Outcome = Literal["ok", "error"]


@dataclass(frozen=True)
class CallRecord:
    started_at: datetime         # aware (UTC)
    method: str
    shop_id: str | None
    outcome: Outcome
    code: int | None
    sub_code: str | None
    latency_s: float
    request_id: str | None
    attempt: int                 # 1 for the first try of a call, 2 for its first retry, ...
    error_kind: str | None       # exception class name, or None when ok


@runtime_checkable
class CallRecorder(Protocol):
    def record(self, call: CallRecord) -> None:
        """Take one record; must be cheap and must not raise."""


class NullRecorder:
    """Drops every record (the client's default)."""

    def record(self, call: CallRecord) -> None:
        return None


class ListRecorder:
    """Keeps every record in ``calls`` (thread-safe); for tests and ad-hoc inspection."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self._lock = threading.Lock()

    def record(self, call: CallRecord) -> None:
        with self._lock:
            self.calls.append(call)

    def by_method(self, method: str) -> list[CallRecord]:
        """The records for one API method, in order."""
        return [c for c in self.calls if c.method == method]

    @property
    def errors(self) -> list[CallRecord]:
        return [c for c in self.calls if c.outcome == "error"]
