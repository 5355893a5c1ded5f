"""Daily reconciliation (每日对账 + 补抓): one shop's Asia/Shanghai day, the platform against the warehouse.

For a stream with a ``DayCheck`` (trades; refunds when registered):

1. **Count** (one call): the list API with ``page_size=1`` and ``use_has_next=false`` answers how many
   records the platform has for the day (trades: created in the day, every trade type listed). The
   warehouse counts its rows for the same day.
2. When the counts differ (or ``always_list``), **list** the day cheaply (``fields=<key>,modified``)
   and **diff** (``diff``): *missing* (listed, not stored), *stale* (stored at an older ``modified``
   than listed), *extra* (stored for the day, not listed). A record listed at a version stamped after
   the increment path's synced range (``gaps.synced_until``) is not yet the sync's to have, so it is
   not a gap: absent, it is re-fetched all the same (the increment API may have dropped it, and then
   nothing else would bring it); present at an older version, it is left to the next windows. Both
   count as *pending*. Reconciling yesterday at 01:00, that is what changed in the last half hour;
   after ``ordersync sync --to`` a past time, everything changed since.
3. **Re-fetch** exactly those records through the stream's detail API (fullinfo for trades), load them
   through the same normaliser and monotonic upserts as any partition (``source = "refetch"``), and
   diff again. What is left is a gap: ``status = "gap"``, which the asset check fails on and which
   raises an alert.

What each stream compares:

* trades: ``taobao.trades.sold.get`` by **created** time. ``created`` never changes, so the platform's
  set for a past day is fixed and the comparison is exact: every trade created that day present, each
  at the platform's newest ``modified``.
* refunds: ``taobao.refunds.receive.get`` filters by **modified** only, so a day's set is the refunds
  whose *newest* change falls in the day; a refund changed again later has moved on to a later day.
  Compared: each listed ``(refund_id, modified)`` must be stored at that version or newer; a refund the
  warehouse dates to the day but the platform no longer lists there is re-fetched (a newer version is
  due). The counts alone mean less here: a refund changed since the day leaves both sides' counts.

TOP's end bounds are inclusive to the second, so a day is asked as ``[00:00:00, 23:59:59]``: a record
stamped exactly at midnight belongs to the next day only, as in the warehouse's ``[start, end)``.

The only shortcut is the issue's: when the counts agree the day is taken as complete without listing
(a missing and an extra record could cancel out, and a change the increment API dropped is not seen);
``always_list`` compares versions every day, at one call per 100 records of the day.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

from ordersync_pipeline.reconcile.load import load_pages
from ordersync_pipeline.reconcile.records import DayResult
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.sync.windows import Window, day_window
from ordersync_pipeline.timeutil import SHANGHAI, parse_top_time
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top import paging
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.errors import BusinessError, MalformedResponseError
from ordersync_pipeline.top.pages import Page, list_from_response
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import metadata

__all__ = ["DayCheck", "DAY_CHECKS", "Diff", "DayOutcome", "diff", "day_checks", "reconcile_day", "platform_count",
           "platform_versions", "refetch", "PLATFORM_HORIZON", "REFETCH_SOURCE"]

log = logging.getLogger("ordersync.reconcile")

DayField = Literal["created", "modified"]
REFETCH_SOURCE = "refetch"
# The list APIs see about three months back; an older day cannot be asked about.
PLATFORM_HORIZON = timedelta(days=90)
# Re-fetched records are loaded this many at a time (one transaction each).
_REFETCH_BATCH = 100


@dataclass(frozen=True)
class DayCheck:
    """How a stream's day is reconciled: which list API is asked, and what its day filter means."""

    stream: str
    api: paging.ListApi
    day_field: DayField
    compared: str                 # for people: what the comparison covers


DAY_CHECKS: dict[str, DayCheck] = {check.stream: check for check in (
    DayCheck("trades", paging.TRADES_SOLD, "created",
             "trades created in the day (taobao.trades.sold.get, every trade type): each present, at the "
             "platform's newest modified"),
    DayCheck("refunds", paging.REFUNDS_RECEIVE, "modified",
             "refunds whose newest change falls in the day (taobao.refunds.receive.get filters by modified "
             "only): each held at that version or newer"),
)}


def day_checks(streams: Sequence[Stream] = STREAMS) -> list[tuple[Stream, DayCheck]]:
    """The registered streams that can be reconciled (a day check and a warehouse table), in order."""
    return [(s, DAY_CHECKS[s.name]) for s in streams
            if s.name in DAY_CHECKS and s.tables[0] in metadata.tables]


@dataclass(frozen=True)
class Diff:
    """How a day's listing and the warehouse differ. A listed version stamped at or after the increment
    path's synced range is not yet the sync's to have: absent, it is *unseen* (re-fetched all the same,
    since the platform may have dropped it from the increment API, and nothing else would bring it);
    present at an older version, it is *pending* (the next increment windows bring the newer one)."""

    missing: list[int] = field(default_factory=list)   # listed, not stored
    stale: list[int] = field(default_factory=list)     # stored older than listed
    extra: list[int] = field(default_factory=list)     # stored for the day, not listed
    unseen: list[int] = field(default_factory=list)    # not stored, changed after the synced range
    pending: list[int] = field(default_factory=list)   # stored older, changed after the synced range

    @property
    def gap(self) -> bool:
        """Something the sync should have had is wrong (unseen and pending records are not a gap)."""
        return bool(self.missing or self.stale or self.extra)

    @property
    def keys(self) -> list[int]:
        """The records to re-fetch."""
        return [*self.missing, *self.stale, *self.extra, *self.unseen]

    @property
    def empty(self) -> bool:
        """Nothing left to re-fetch."""
        return not self.keys


def diff(listed: Mapping[int, datetime], stored: Mapping[int, datetime], stored_day: Mapping[int, datetime],
         *, synced_until: datetime | None = None) -> Diff:
    """Compare the platform's ``{key: modified}`` of a day with the warehouse's.

    ``stored`` holds the warehouse's versions of the listed keys (wherever it dates them),
    ``stored_day`` the keys it dates to the day. A version newer than the listed one is fine (the
    record changed after it was listed). ``synced_until``: how far the increment path has synced (None:
    everything is due); see ``Diff``."""
    out = Diff()
    for key, modified in sorted(listed.items()):
        have = stored.get(key)
        if have is not None and have >= modified:
            continue
        due = synced_until is None or modified < synced_until
        if have is None:
            (out.missing if due else out.unseen).append(key)
        else:
            (out.stale if due else out.pending).append(key)
    out.extra.extend(sorted(k for k in stored_day if k not in listed))
    return out


@dataclass(frozen=True)
class DayOutcome:
    result: DayResult             # the row for reconciliation_daily (found, re-fetched, status)
    remaining: Diff               # what is still wrong after the re-fetch (empty unless a gap)


def _bounds(check: DayCheck, day: date) -> tuple[Window, dict[str, datetime]]:
    window = day_window(day)
    last_second = window.end - timedelta(seconds=1)  # TOP's end is inclusive: [00:00:00, 23:59:59]
    prefix = "created" if check.day_field == "created" else "modified"
    return window, {f"start_{prefix}": window.start, f"end_{prefix}": last_second}


def platform_count(client: TopClient, check: DayCheck, *, shop_id: str, session: str, day: date) -> int:
    """The platform's number of the stream's records for ``day``: one call."""
    _, bounds = _bounds(check, day)
    resp = client.call(check.api.method, {
        "fields": check.api.key, **bounds, "type": list(paging.ALL_TRADE_TYPES), "page_no": 1,
        "page_size": 1, "use_has_next": False}, session=session, shop_id=shop_id)
    _, total, _ = list_from_response(resp.data, check.api.shape, method=check.api.method, shop_id=shop_id)
    if total is None:
        raise MalformedResponseError(f"{check.api.method} answered a count request without total_results",
                                     method=check.api.method, request_id=resp.request_id, shop_id=shop_id)
    return total


def platform_versions(client: TopClient, check: DayCheck, *, shop_id: str, session: str,
                      day: date) -> dict[int, datetime]:
    """``{key: modified}`` of every record the platform lists for ``day`` (two fields per record).

    A record without a readable key or ``modified`` is left out, so the day's count and listing then
    disagree and the day reports a gap (the warehouse cannot hold such a record either)."""
    _, bounds = _bounds(check, day)
    fields = f"{check.api.key},modified"
    pages: Iterator[Page]
    if check.day_field == "created":  # created never changes: forward paging cannot skip a record
        pages = paging.iter_sold_pages(client, shop_id=shop_id, session=session,
                                       start_created=bounds["start_created"], end_created=bounds["end_created"],
                                       fields=fields)
    else:  # modified moves: the reverse walk of the increment path
        pages = paging.iter_increment_pages(client, shop_id=shop_id, session=session,
                                            start_modified=bounds["start_modified"],
                                            end_modified=bounds["end_modified"], fields=fields, api=check.api)
    listed: dict[int, datetime] = {}
    for page in pages:
        for record in page.items:
            parsed = _version(record, check.api.key)
            if parsed is None:
                log.warning("%s %s %s: unreadable record in the listing: %.200r", shop_id, check.stream,
                            day, record)
                continue
            key, modified = parsed
            if key not in listed or listed[key] < modified:
                listed[key] = modified
    return listed


def _version(record: object, key: str) -> tuple[int, datetime] | None:
    if not isinstance(record, dict):
        return None
    raw_key, raw_modified = record.get(key), record.get("modified")
    try:
        value = int(raw_key) if isinstance(raw_key, (int, str)) and not isinstance(raw_key, bool) else None
        modified = parse_top_time(raw_modified) if isinstance(raw_modified, str) else None
    except ValueError:
        return None
    return (value, modified) if value is not None and modified is not None else None


def refetch(client: TopClient, warehouse: Warehouse, stream: Stream, *, shop_id: str, session: str,
            keys: Sequence[int], window: Window, run_id: str | None) -> int:
    """Fetch ``keys`` one by one through the stream's detail API and load them (``source="refetch"``).
    Returns how many the platform answered; one it says does not exist is skipped (it stays a gap)."""
    detail = stream.detail
    if detail is None or not keys:
        return 0
    answered = 0
    for start in range(0, len(keys), _REFETCH_BATCH):
        pages: list[Page] = []
        for key in keys[start : start + _REFETCH_BATCH]:
            try:
                pages.append(detail.fetch(client, shop_id=shop_id, session=session,
                                          record={stream.record_key: key}, window=window))
            except BusinessError as exc:  # e.g. isv.trade-not-exist: nothing to load
                log.warning("%s %s %s: re-fetch refused: %s", shop_id, stream.name, key, exc)
        load_pages(warehouse, stream, shop_id, pages, source=REFETCH_SOURCE, run_id=run_id)
        answered += len(pages)
    return answered


def reconcile_day(*, client: TopClient, warehouse: Warehouse, stream: Stream, check: DayCheck, shop_id: str,
                  session: str, day: date, run_id: str | None, always_list: bool = False,
                  now: datetime | None = None, synced_until: datetime | None = None,
                  stored_count: int | None = None) -> DayOutcome:
    """Count, and when needed list, diff, re-fetch and diff again: the day's result (not saved) and what
    remains of the gap. ``synced_until``: how far the increment path has synced this shop's stream
    without a hole (``gaps.synced_until``); changes after it are pending, not gaps. None: all due.
    ``stored_count``: the warehouse's count of the day when the caller has it (counted with the other
    days of a run, nothing loaded since); None: counted here."""
    checked_at = now or utc_now()
    if day_window(day).end > checked_at.astimezone(SHANGHAI):
        raise ValueError(f"{day.isoformat()} has not ended yet (now {checked_at.isoformat()}): only a "
                         "complete day can be reconciled")
    if day_window(day).start < checked_at - PLATFORM_HORIZON:
        raise ValueError(f"{day.isoformat()} is older than the platform's ~90-day horizon: the list APIs "
                         "cannot be asked about it any more")
    window, _ = _bounds(check, day)
    table = stream.tables[0]

    def stored_day() -> dict[int, datetime]:
        return warehouse.versions_between(table, shop_id=shop_id, column=check.day_field, start=window.start,
                                          end=window.end)

    platform = platform_count(client, check, shop_id=shop_id, session=session, day=day)
    # Most days agree: a count in the database settles them without pulling the day's versions over.
    stored = stored_count if stored_count is not None else warehouse.count_between(
        table, shop_id=shop_id, column=check.day_field, start=window.start, end=window.end)
    row = DayResult(shop_id=shop_id, stream=stream.name, day=day, platform_count=platform,
                    warehouse_count=stored, missing_count=0, stale_count=0, extra_count=0,
                    refetched_count=0, pending_count=0, status="ok", checked_at=checked_at, run_id=run_id)
    if platform == stored and not always_list:
        return DayOutcome(row, Diff())
    before = stored_day()
    listed = platform_versions(client, check, shop_id=shop_id, session=session, day=day)
    first = diff(listed, warehouse.versions_of(table, listed), before, synced_until=synced_until)
    refetched = refetch(client, warehouse, stream, shop_id=shop_id, session=session, keys=first.keys,
                        window=window, run_id=run_id)
    after_day = stored_day() if refetched else before
    after = (diff(listed, warehouse.versions_of(table, listed), after_day, synced_until=synced_until)
             if refetched else first)
    complete = after.empty and len(listed) == platform
    if not first.gap and complete:
        status = "ok"
    else:
        status = "repaired" if complete else "gap"
    if status == "gap":
        log.warning("%s %s %s: gap after re-fetch: %d missing, %d stale, %d extra (platform %d, listed %d)",
                    shop_id, stream.name, day, len(after.missing), len(after.stale), len(after.extra),
                    platform, len(listed))
    return DayOutcome(replace(row, warehouse_count=len(after_day), missing_count=len(first.missing),
                              stale_count=len(first.stale), extra_count=len(first.extra),
                              pending_count=len(first.pending) + len(first.unseen), refetched_count=refetched,
                              status=status),
                      after if status == "gap" else Diff())
