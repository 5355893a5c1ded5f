"""A reconciliation run's per-day questions about one shop, asked once for all its days.

Reconciling a day asks the warehouse how many records it dates to the day (per stream), how far the
increment path has synced (per stream), which of the day's increment partitions the lake holds, and
the SQL quality checks' counts. Asked day by day that is ~10 round trips and 96 manifest opens a day;
``ShopDays`` asks each question once for every remaining day of the shop in the run instead.

The answers must be the ones the day would have got on its own, so a re-fetch (the only write a
reconciliation makes to the data it reads) forgets the counts and quality results: the next day asks
again, for itself alone first (so a run where every day re-fetches costs what it cost before), then for
the days left. ``sync_windows`` and the lake are not written by a reconciliation; they are read once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Generic, TypeVar

from ordersync_pipeline.reconcile import quality
from ordersync_pipeline.reconcile.daily import DayCheck
from ordersync_pipeline.reconcile.gaps import SyncedRange
from ordersync_pipeline.sync.lake import PageLake, PartitionListing
from ordersync_pipeline.sync.runner import lake_dataset
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.windows import Timeline, day_window
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["ShopDays"]

T = TypeVar("T")


class _PerDay(Generic[T]):
    """Answers for days by index, asked for the asked day and every later one at once; ``forget``
    drops them, and the next ask covers its own day only."""

    def __init__(self, ask: Callable[[Sequence[int]], Sequence[T]], count: int) -> None:
        self._ask, self._count = ask, count
        self._known: dict[int, T] = {}
        self._narrow = False

    def get(self, index: int) -> T:
        if index not in self._known:
            wanted = [index] if self._narrow else list(range(index, self._count))
            self._known = dict(zip(wanted, self._ask(wanted), strict=True))
            self._narrow = False
        return self._known[index]

    def forget(self) -> None:
        self._known = {}
        self._narrow = True


class ShopDays:
    """The per-day answers of one shop's ``days`` (in the order the run reconciles them)."""

    def __init__(self, *, warehouse: Warehouse, lake: PageLake, timeline: Timeline, shop_id: str,
                 days: Sequence[date], checks: Sequence[tuple[Stream, DayCheck]]) -> None:
        self._warehouse, self._lake, self._timeline, self.shop_id = warehouse, lake, timeline, shop_id
        self._checks = list(checks)
        self._index = {day: i for i, day in enumerate(days)}
        self._windows = [day_window(day) for day in days]
        self._counts = _PerDay(self._ask_counts, len(days))
        self._clean = _PerDay(self._ask_clean, len(days))
        self._synced: dict[str, SyncedRange] = {}
        self._listing: PartitionListing | None = None

    def stored_count(self, stream: Stream, day: date) -> int:
        """``Warehouse.count_between`` of the stream's table for ``day`` (by its check's day field)."""
        return self._counts.get(self._index[day])[stream.name]

    def synced_until(self, stream: Stream, day: date, *, now: datetime) -> datetime:
        """``gaps.synced_until`` of the stream from the start of ``day``."""
        since = day_window(day).start
        if stream.name not in self._synced:
            self._synced[stream.name] = SyncedRange(self._warehouse, self._timeline, stream=stream.name,
                                                    shop_id=self.shop_id, since=self._windows_start())
        return self._synced[stream.name].until(since=since, now=now)

    def quality(self, day: date) -> list[quality.QualityResult]:
        """``quality.run_all`` for ``day``."""
        if self._listing is None:
            self._listing = self._lake.listing(shop_id=self.shop_id, stream=lake_dataset("trades", "increment"))
        return quality.run_all(self._warehouse, self._lake, self.shop_id, day_window(day),
                               increment_minutes=self._timeline.increment_minutes,
                               clean=self._clean.get(self._index[day]), listing=self._listing)

    def changed(self) -> None:
        """Records were loaded (a re-fetch): counts and quality results are asked again."""
        self._counts.forget()
        self._clean.forget()

    def _windows_start(self) -> datetime:
        return min(window.start for window in self._windows)

    def _ask_counts(self, indexes: Sequence[int]) -> list[dict[str, int]]:
        spans = [(self._windows[i].start, self._windows[i].end) for i in indexes]
        out: list[dict[str, int]] = [{} for _ in indexes]
        for stream, check in self._checks:
            counts = self._warehouse.counts_between(stream.tables[0], shop_id=self.shop_id,
                                                    column=check.day_field, spans=spans)
            for answer, count in zip(out, counts, strict=True):
                answer[stream.name] = count
        return out

    def _ask_clean(self, indexes: Sequence[int]) -> list[dict[str, int]]:
        return quality.clean_days(self._warehouse, self.shop_id, [self._windows[i] for i in indexes])
