"""World clocks. The world runs on integer epoch seconds (TOP times have second precision).

``real`` follows the host clock, ``accelerated`` runs ``speed`` times faster from its start, and
``stepped`` stands still until a test calls ``advance``. All three start at the host's current second
(stepped and accelerated ones at ``SimulatorSettings.start_at`` when given), so a freshly started
simulator looks like "now" to a client whichever clock it uses.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from ordersync_pipeline.timeutil import GMT8


class Clock:
    """World time. ``now_ts`` is the hot-path integer; ``now`` the aware datetime for people."""

    kind = "real"

    def __init__(self, start_ts: int | None = None) -> None:
        self.start_ts = int(time.time()) if start_ts is None else start_ts

    def now_ts(self) -> int:
        return int(time.time())

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ts(), GMT8)

    def advance(self, seconds: float) -> datetime:
        raise RuntimeError(f"the {self.kind} clock cannot be advanced; start the simulator with clock='stepped'")


class AcceleratedClock(Clock):
    kind = "accelerated"

    def __init__(self, speed: float, start_ts: int | None = None) -> None:
        super().__init__(start_ts)
        self.speed = speed
        self._t0 = time.monotonic()

    def now_ts(self) -> int:
        return self.start_ts + int((time.monotonic() - self._t0) * self.speed)


class SteppedClock(Clock):
    kind = "stepped"

    def __init__(self, start_ts: int | None = None) -> None:
        super().__init__(start_ts)
        self._now = self.start_ts
        self._lock = threading.Lock()

    def now_ts(self) -> int:
        return self._now

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += int(round(seconds))
        return self.now()


def make_clock(kind: str, speed: float = 1.0, start_at: datetime | None = None) -> Clock:
    start_ts = None if start_at is None else int(start_at.timestamp())
    if kind == "stepped":
        return SteppedClock(start_ts)
    if kind == "accelerated":
        return AcceleratedClock(speed, start_ts)
    return Clock()
