"""Sync windows: which half-open time range ``[start, end)`` a partition fetches, and in what pieces.

Pure functions on timezone-aware datetimes (naive ones are refused: a guessed offset shifts a window
by eight hours). Arithmetic is done on UTC instants, so results do not depend on which zone the
inputs were expressed in; results keep the zone of the input they came from.

* ``fetch_window``: a partition's window moved ``overlap`` earlier, so a trade whose change became
  visible late (platform lag) is still caught by the next partition. The overlap re-reads some
  trades; the monotonic upsert makes that harmless.
* ``split_window``: the increment API takes at most 1 day per call and advises 30 minutes, so a long
  window (a backfill, a catch-up after an outage) is cut into contiguous pieces that cover it exactly.
  The cutting itself is the pager's (top/paging.py), so the two can never disagree.
* ``window_is_closed``: a window is only fetched once ``end <= now - safety_lag``; fetching earlier
  would mark as complete a range the platform has not finished making visible.
* ``day_window`` / ``partition_key_window``: Asia/Shanghai days and Dagster time-partition keys.
* ``Timeline``: the one rule for which windows a shop's partitions fetch, built from the sync anchor: the
  historical (created-time) days end exactly at the anchor and the increment (modified-time) partitions
  start at or before it, whatever its time of day, so the two paths leave no gap (see
  docs/architecture.md, "Completeness").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from ordersync_pipeline.timeutil import SHANGHAI, require_aware
from ordersync_pipeline.top.paging import split_window as _pager_split_window

__all__ = [
    "Window", "DEFAULT_OVERLAP", "INCREMENT_MAX_SPAN", "INCREMENT_ADVISED_SPAN", "PARTITION_KEY_FORMAT",
    "fetch_window", "split_window", "fetch_windows", "window_is_closed", "day_window",
    "partition_windows", "partition_key_window", "Timeline", "Kind", "DAY_KEY_FORMAT",
    "HISTORY_HORIZON", "HORIZON_MARGIN", "clip_to_horizon", "BeyondHorizon",
]

DEFAULT_OVERLAP = timedelta(minutes=5)
INCREMENT_MAX_SPAN = timedelta(days=1)        # taobao.trades.sold.increment.get hard limit
INCREMENT_ADVISED_SPAN = timedelta(minutes=30)  # the platform's advice for speed and success rate
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"       # Dagster's key format for sub-daily time partitions
DAY_KEY_FORMAT = "%Y-%m-%d"
# The list APIs of the historical path see only the last three months, counted from the moment of the
# call. A window starting earlier is clipped there when it is fetched, with a margin for the walk's
# duration and for the platform's clock running ahead of ours (TOP accepts +-10 minutes of skew).
HISTORY_HORIZON = timedelta(days=90)
HORIZON_MARGIN = timedelta(minutes=5)

# The two ways a stream is fetched: the increment path by modified time on short partitions, the
# historical path over the platform's history horizon on Asia/Shanghai days.
Kind = Literal["increment", "historical"]


@dataclass(frozen=True, order=True)
class Window:
    """A half-open time range ``[start, end)`` between two aware datetimes, ``start < end``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        require_aware(self.start, "window start")
        require_aware(self.end, "window end")
        if not self.start < self.end:
            raise ValueError(f"window start {self.start.isoformat()} is not before "
                             f"end {self.end.isoformat()}")

    @property
    def span(self) -> timedelta:
        return _utc(self.end) - _utc(self.start)

    def __contains__(self, instant: object) -> bool:
        return isinstance(instant, datetime) and self.start <= instant < self.end


def _utc(dt: datetime) -> datetime:
    # Subtracting two datetimes that share a ZoneInfo uses wall time; UTC makes it real elapsed time.
    return dt.astimezone(timezone.utc)


def fetch_window(partition_start: datetime, partition_end: datetime, *,
                 overlap: timedelta = DEFAULT_OVERLAP) -> Window:
    """The range to fetch for partition ``[partition_start, partition_end)``, start moved ``overlap``
    earlier."""
    if overlap < timedelta(0):
        raise ValueError(f"overlap must not be negative, got {overlap}")
    require_aware(partition_start, "partition start")
    start = (_utc(partition_start) - overlap).astimezone(partition_start.tzinfo)
    return Window(start, partition_end)


def split_window(start: datetime, end: datetime, max_span: timedelta) -> list[Window]:
    """Contiguous windows covering ``[start, end)`` exactly, each at most ``max_span`` long.

    The pager's ``split_window`` (top/paging.py) is the one implementation; this wraps its pieces in
    ``Window`` and refuses an empty or reversed range instead of returning no pieces. Give a whole
    number of seconds: TOP times have second precision, so sub-second edges would blur on the wire.
    """
    Window(start, end)
    return [Window(piece_start, piece_end)
            for piece_start, piece_end in _pager_split_window(start, end, max_span)]


def fetch_windows(partition_start: datetime, partition_end: datetime, *,
                  overlap: timedelta = DEFAULT_OVERLAP,
                  max_span: timedelta = INCREMENT_ADVISED_SPAN) -> list[Window]:
    """``fetch_window`` then ``split_window``: the API calls' windows for one partition, oldest first."""
    window = fetch_window(partition_start, partition_end, overlap=overlap)
    return split_window(window.start, window.end, max_span)


def window_is_closed(window_end: datetime, *, now: datetime, safety_lag: timedelta) -> bool:
    """True when ``window_end <= now - safety_lag``: only then may the window be fetched and completed."""
    require_aware(window_end, "window end")
    require_aware(now, "now")
    if safety_lag < timedelta(0):
        raise ValueError(f"safety_lag must not be negative, got {safety_lag}")
    return _utc(window_end) <= _utc(now) - safety_lag


def day_window(day: date) -> Window:
    """The Asia/Shanghai calendar day ``day``: 00:00 to the next day's 00:00, both +08:00."""
    if isinstance(day, datetime):
        raise TypeError("day_window takes a date, not a datetime")
    return Window(datetime.combine(day, time(0), SHANGHAI),
                  datetime.combine(day + timedelta(days=1), time(0), SHANGHAI))


def partition_windows(start: datetime, end: datetime, span: timedelta) -> list[Window]:
    """The grid of partitions of length ``span`` from ``start`` to ``end`` (which must be a whole number
    of spans apart): e.g. every 15-minute partition a single-run backfill covers."""
    whole = Window(start, end)
    if span <= timedelta(0) or whole.span % span:
        raise ValueError(f"[{start.isoformat()}, {end.isoformat()}) is not a whole number of "
                         f"{span} partitions")
    return split_window(start, end, span)


def partition_key_window(key: str, *, span: timedelta = timedelta(minutes=15),
                         fmt: str = PARTITION_KEY_FORMAT) -> Window:
    """The window of a Dagster time-partition key read in Asia/Shanghai, e.g. ``"2026-11-26-10:15"``
    -> ``[10:15, 10:30) +08:00``. Raises ``ValueError`` for a key not in ``fmt``."""
    start = datetime.strptime(key, fmt).replace(tzinfo=SHANGHAI)
    return Window(start, (_utc(start) + span).astimezone(SHANGHAI))


@dataclass(frozen=True)
class Timeline:
    """Where a shop's partitions begin and end, and which window each fetches.

    * Historical days: Asia/Shanghai days from ``history_days`` before the anchor's day up to the anchor.
      When the anchor is not at midnight its own day is a historical partition too, clipped to end at the
      anchor, so trades created that day before the anchor are not left to neither path.
    * Increment partitions: ``increment_minutes`` long on an hour-aligned grid, the first one starting at
      the anchor rounded down to the grid (re-reading a few minutes before the anchor is harmless; starting
      after it would leave a gap).
    * Every increment window starts ``overlap`` before its partition; no window is fetched past
      ``now - safety_lag`` (a historical day still in progress is clipped there instead).
    """

    anchor: datetime
    history_days: int
    increment_minutes: int
    overlap: timedelta = DEFAULT_OVERLAP
    safety_lag: timedelta = timedelta(minutes=3)

    def __post_init__(self) -> None:
        require_aware(self.anchor, "sync anchor")
        if self.increment_minutes <= 0 or 60 % self.increment_minutes:
            raise ValueError(f"increment_minutes must divide 60, got {self.increment_minutes}")

    @property
    def _local_anchor(self) -> datetime:
        return self.anchor.astimezone(SHANGHAI)

    @property
    def increment_step(self) -> timedelta:
        return timedelta(minutes=self.increment_minutes)

    @property
    def increment_start(self) -> datetime:
        """The first increment partition's start: the anchor rounded down to the grid (Asia/Shanghai)."""
        local = self._local_anchor
        floored = local.replace(minute=local.minute - local.minute % self.increment_minutes, second=0,
                                microsecond=0)
        return floored

    @property
    def first_history_day(self) -> date:
        return self._local_anchor.date() - timedelta(days=self.history_days)

    @property
    def last_history_day(self) -> date:
        """The last historical day: the anchor's own day when the anchor is not at midnight."""
        local = self._local_anchor
        at_midnight = local.timetz().replace(tzinfo=None) == time(0)
        return local.date() - timedelta(days=1) if at_midnight else local.date()

    def history_day_keys(self) -> list[str]:
        first, last = self.first_history_day, self.last_history_day
        return [(first + timedelta(days=i)).strftime(DAY_KEY_FORMAT) for i in range((last - first).days + 1)]

    def history_window(self, day_key: str) -> Window:
        """The created-time range of a historical day: the whole day, or up to the anchor on its day."""
        day = datetime.strptime(day_key, DAY_KEY_FORMAT).date()
        whole = day_window(day)
        end = min(_utc(whole.end), _utc(self.anchor)).astimezone(SHANGHAI)
        return Window(whole.start, end)

    def increment_partition(self, key: str) -> Window:
        """The partition ``[start, end)`` of an increment key (no overlap)."""
        return partition_key_window(key, span=self.increment_step)

    def increment_window(self, key: str) -> Window:
        """What an increment partition fetches: its window moved ``overlap`` earlier."""
        part = self.increment_partition(key)
        return fetch_window(part.start, part.end, overlap=self.overlap)

    def window(self, kind: Kind, key: str) -> Window:
        return self.increment_window(key) if kind == "increment" else self.history_window(key)

    def partition_window(self, kind: Kind, key: str) -> Window:
        """The range a partition stands for (what must be recorded fetched for it to count complete)."""
        return self.increment_partition(key) if kind == "increment" else self.history_window(key)

    def closed_increment_keys(self, now: datetime, *, since: datetime | None = None) -> list[str]:
        """Keys of every increment partition from the first (or the one holding ``since``) whose window
        has closed by ``now`` (ends at or before ``now - safety_lag``)."""
        require_aware(now, "now")
        step = self.increment_step
        start = _utc(self.increment_start)
        if since is not None and _utc(since) > start:
            start += ((_utc(since) - start) // step) * step
        limit = _utc(now) - self.safety_lag
        keys: list[str] = []
        cursor = start
        while cursor + step <= limit:
            keys.append(cursor.astimezone(SHANGHAI).strftime(PARTITION_KEY_FORMAT))
            cursor += step
        return keys

    def clip(self, kind: Kind, window: Window, now: datetime) -> Window | None:
        """The part of ``window`` that may be fetched at ``now``; None when nothing may be fetched yet.

        An increment window is all or nothing (it runs once closed); a historical day in progress is
        fetched up to ``now - safety_lag`` and recorded as such, so it counts complete only later.
        """
        if window_is_closed(window.end, now=now, safety_lag=self.safety_lag):
            return window
        if kind == "increment":
            return None
        end = _utc(now) - self.safety_lag
        return Window(window.start, end.astimezone(SHANGHAI)) if end > _utc(window.start) else None


class BeyondHorizon(LookupError):
    """A historical window lies wholly before the platform's history horizon: nothing can fetch it
    (not transient: waiting only makes it older)."""


def clip_to_horizon(window: Window, *, now: datetime, horizon: timedelta = HISTORY_HORIZON,
                    margin: timedelta = HORIZON_MARGIN) -> Window | None:
    """The part of ``window`` the platform still lists at ``now`` (its start moved to ``now - horizon +
    margin`` when earlier, whole seconds); None when none of it is listed any more."""
    require_aware(now, "now")
    limit = (_utc(now) - horizon + margin).replace(microsecond=0)
    if _utc(window.start) >= limit:
        return window
    if _utc(window.end) <= limit:
        return None
    return Window(limit.astimezone(window.start.tzinfo), window.end)
