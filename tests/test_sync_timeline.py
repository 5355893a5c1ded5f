"""The timeline: historical days end exactly at the sync anchor and increments start at or before it,
whatever the anchor's time of day or offset, so every created / modified instant is covered (issue 6.1)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordersync_pipeline.sync.windows import Timeline, Window
from ordersync_pipeline.timeutil import SHANGHAI

UTC = timezone.utc


def _coverage(timeline: Timeline) -> tuple[list[Window], datetime]:
    """The created-time windows of the historical path and where the increment (modified) path starts."""
    return [timeline.history_window(k) for k in timeline.history_day_keys()], timeline.increment_start


def _covered(timeline: Timeline, created: datetime, modified: datetime) -> bool:
    """Would a trade created at ``created`` and last modified at ``modified`` be fetched by either path?"""
    days, increments_from = _coverage(timeline)
    by_history = any(w.start <= created < w.end for w in days)
    by_increments = modified >= increments_from
    return by_history or by_increments


@pytest.mark.parametrize("anchor", [
    datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI),
    datetime(2026, 11, 30, 10, 7, 31, tzinfo=SHANGHAI),
    datetime(2026, 11, 30, 2, 7, tzinfo=UTC),                     # an offset: 10:07 in Shanghai
    datetime(2026, 11, 30, 0, 0, tzinfo=SHANGHAI),
])
def test_history_ends_at_the_anchor_and_increments_start_at_or_before_it(anchor: datetime) -> None:
    timeline = Timeline(anchor=anchor, history_days=3, increment_minutes=15)
    days, increments_from = _coverage(timeline)
    assert days[-1].end == anchor
    assert increments_from <= anchor and anchor - increments_from < timedelta(minutes=15)
    for earlier, later in zip(days, days[1:]):
        assert earlier.end == later.start  # contiguous: no created instant skipped
    assert days[0].start == datetime.combine(anchor.astimezone(SHANGHAI).date() - timedelta(days=3),
                                             datetime.min.time(), SHANGHAI)


def test_a_ten_o_clock_anchor_keeps_its_own_morning_as_a_historical_day() -> None:
    # The reported gap: trades created before 10:00 on the anchor's day and never modified after it.
    anchor = datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI)
    timeline = Timeline(anchor=anchor, history_days=2, increment_minutes=15)
    assert timeline.history_day_keys() == ["2026-11-28", "2026-11-29", "2026-11-30"]
    morning = datetime(2026, 11, 30, 9, 12, tzinfo=SHANGHAI)
    assert _covered(timeline, created=morning, modified=morning)
    assert timeline.history_window("2026-11-30") == Window(datetime(2026, 11, 30, tzinfo=SHANGHAI), anchor)


def test_a_midnight_anchor_has_no_partial_day() -> None:
    timeline = Timeline(anchor=datetime(2026, 11, 30, tzinfo=SHANGHAI), history_days=2, increment_minutes=15)
    assert timeline.history_day_keys() == ["2026-11-28", "2026-11-29"]
    assert timeline.increment_start == datetime(2026, 11, 30, tzinfo=SHANGHAI)


@settings(max_examples=300, deadline=None)
@given(anchor_minutes=st.integers(min_value=0, max_value=3 * 24 * 60 - 1),
       anchor_seconds=st.integers(min_value=0, max_value=59),
       minutes=st.sampled_from([5, 10, 15, 20, 30, 60]),
       history_days=st.integers(min_value=1, max_value=5),
       created_offset=st.integers(min_value=0, max_value=10 * 24 * 3600),
       modified_after=st.integers(min_value=0, max_value=3 * 24 * 3600),
       offset_hours=st.sampled_from([0, 8, -5]))
def test_every_trade_since_the_horizon_is_fetched_by_one_path(anchor_minutes: int, anchor_seconds: int,
                                                              minutes: int, history_days: int,
                                                              created_offset: int, modified_after: int,
                                                              offset_hours: int) -> None:
    base = datetime(2026, 11, 27, tzinfo=SHANGHAI)
    anchor = (base + timedelta(minutes=anchor_minutes, seconds=anchor_seconds)).astimezone(
        timezone(timedelta(hours=offset_hours)))
    timeline = Timeline(anchor=anchor, history_days=history_days, increment_minutes=minutes)
    horizon = datetime.combine(anchor.astimezone(SHANGHAI).date() - timedelta(days=history_days),
                               datetime.min.time(), SHANGHAI)
    created = horizon + timedelta(seconds=created_offset)
    modified = created + timedelta(seconds=modified_after)
    assert _covered(timeline, created, modified), (anchor, created, modified)


def test_closed_increment_keys_stop_at_now_minus_the_safety_lag() -> None:
    timeline = Timeline(anchor=datetime(2026, 11, 30, 10, 7, tzinfo=SHANGHAI), history_days=1,
                        increment_minutes=15, safety_lag=timedelta(minutes=3))
    now = datetime(2026, 11, 30, 11, 2, tzinfo=SHANGHAI)
    assert timeline.closed_increment_keys(now) == ["2026-11-30-10:00", "2026-11-30-10:15", "2026-11-30-10:30"]
    assert timeline.closed_increment_keys(now + timedelta(minutes=1))[-1] == "2026-11-30-10:45"


def test_a_historical_day_in_progress_is_clipped_at_the_lag_and_an_open_increment_is_refused() -> None:
    timeline = Timeline(anchor=datetime(2026, 11, 30, 10, tzinfo=SHANGHAI), history_days=1,
                        increment_minutes=15, safety_lag=timedelta(minutes=3))
    now = datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI)
    day = timeline.history_window("2026-11-30")
    assert timeline.clip("historical", day, now) == Window(day.start, now - timedelta(minutes=3))
    assert timeline.clip("increment", timeline.increment_window("2026-11-30-08:45"), now) is None
    assert timeline.clip("increment", timeline.increment_window("2026-11-30-08:30"), now) is not None


def test_first_history_day_is_history_days_before_the_anchor_day() -> None:
    timeline = Timeline(anchor=datetime(2026, 11, 30, 10, tzinfo=SHANGHAI), history_days=90, increment_minutes=15)
    assert timeline.first_history_day == date(2026, 9, 1)
