"""Gap repair: every closed increment window, per shop and stream, that ``sync_windows`` does not hold.

The schedule launches only the newest closed window; when the daemon was down for two hours, a run was
killed half-way or a breaker kept a shop's increments paused, the windows in between are never
fetched unless someone backfills them. ``find_gaps`` answers, as ``ordersync sync`` does
(sync/plan.py), which partitions are not complete, and cuts them into the fewest runs that target
exactly those partitions (``plan.rectangles``).

It leaves alone:

* the newest ``grace`` of closed windows: the schedule's own run for them may simply not have finished
  (a duplicate would be harmless, the monotonic upserts see to that, but it costs the calls twice);
* windows older than ``lookback`` (``ordersync sync`` repairs those);
* ``busy`` cells: partitions a queued or running run already covers;
* ``paused`` shops: their breaker is open, and their windows are repaired once it closes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from ordersync_pipeline.sync.plan import RunRect, is_complete, rectangles, wanted_keys
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.windows import Timeline, Window
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["GapPlan", "find_gaps", "synced_until", "SyncedRange"]

Cell = tuple[str, str]  # (shop_id, increment time key)


class GapPlan:
    """What a gap-repair tick found: the wanted cells per stream and the runs that cover them."""

    def __init__(self, wanted: Mapping[str, Mapping[str, Sequence[str]]], runs: list[RunRect]) -> None:
        self.wanted = wanted
        self.runs = runs

    @property
    def partitions(self) -> int:
        """Partitions x streams wanted."""
        return sum(len(keys) for per_shop in self.wanted.values() for keys in per_shop.values())


def find_gaps(warehouse: Warehouse, timeline: Timeline, *, streams: Sequence[Stream], shop_ids: Sequence[str],
              now: datetime, lookback: timedelta, grace: timedelta, busy: Collection[Cell] = (),
              paused: Collection[str] = ()) -> GapPlan:
    """The increment partitions of ``streams`` x ``shop_ids`` (sorted) left incomplete; see the module."""
    shops = [shop for shop in sorted(shop_ids) if shop not in paused]
    since = now - lookback
    keys = timeline.closed_increment_keys(now - grace, since=since)
    if not keys or not shops:
        return GapPlan({}, [])
    first_start = timeline.increment_partition(keys[0]).start
    wanted: dict[str, dict[str, list[str]]] = {}
    for stream in streams:
        recorded: dict[str, dict[str, list[Window]]] = defaultdict(lambda: defaultdict(list))
        for window in warehouse.windows_ending_since(stream.name, "increment", first_start, shops):
            if window.partition_key:
                recorded[window.shop_id][window.partition_key].append(Window(window.window_start,
                                                                             window.window_end))
        per_shop = {}
        for shop in shops:
            missing = [key for key in wanted_keys(timeline, "increment", keys, recorded[shop])
                       if (shop, key) not in busy]
            if missing:
                per_shop[shop] = missing
        if per_shop:
            wanted[stream.name] = per_shop
    return GapPlan(wanted, rectangles("increment", wanted, sorted(shop_ids), keys))


def synced_until(warehouse: Warehouse, timeline: Timeline, *, stream: str, shop_id: str, since: datetime,
                 now: datetime) -> datetime:
    """How far the increment path has synced the shop's stream without a hole, from ``since`` on: the end
    of the last partition of the unbroken run of complete ones starting at ``since`` (or at the first
    increment partition, when ``since`` is earlier). Every change stamped before it has been fetched;
    a change after it may simply not have been fetched yet."""
    return SyncedRange(warehouse, timeline, stream=stream, shop_id=shop_id, since=since).until(since=since, now=now)


class SyncedRange:
    """``synced_until`` for any ``since`` from ``since`` on, from one read of the shop's stream's completed
    increment windows: a reconciliation asks it for each of its days and streams, and reading
    ``sync_windows`` once per shop and stream instead spares a query (of every window after the day) each.
    Windows completed after the read are not seen: the answer can only be earlier, so a change is at worst
    taken as pending rather than as a gap."""

    def __init__(self, warehouse: Warehouse, timeline: Timeline, *, stream: str, shop_id: str,
                 since: datetime) -> None:
        self._timeline = timeline
        self.since = since
        # A step earlier than the first partition any ``until`` looks at: a window ending before that
        # partition starts cannot complete it (nor any later one).
        start = max(since, timeline.increment_start) - timeline.increment_step
        self._recorded: dict[str, list[Window]] = defaultdict(list)
        for window in warehouse.windows_ending_since(stream, "increment", start, [shop_id]):
            if window.partition_key:
                self._recorded[window.partition_key].append(Window(window.window_start, window.window_end))

    def until(self, *, since: datetime, now: datetime) -> datetime:
        """``synced_until`` of ``since`` (not before the ``since`` read from) at ``now``."""
        if since < self.since:
            raise ValueError(f"synced range read from {self.since.isoformat()} asked about {since.isoformat()}")
        timeline = self._timeline
        start = max(since, timeline.increment_start)
        keys = timeline.closed_increment_keys(now, since=start)
        if not keys:
            return start
        covered = timeline.increment_partition(keys[0]).start
        for key in keys:
            if not is_complete(timeline, "increment", key, self._recorded.get(key, ())):
                break
            covered = timeline.increment_partition(key).end
        return covered
