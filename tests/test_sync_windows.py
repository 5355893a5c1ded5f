"""Sync windows: overlap, exact splitting under the API span limit, the safety lag, Shanghai days."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordersync_pipeline.sync.windows import (
    INCREMENT_MAX_SPAN, Window, day_window, fetch_window, fetch_windows, partition_key_window,
    partition_windows, split_window, window_is_closed,
)
from ordersync_pipeline.timeutil import GMT8, SHANGHAI

UTC = timezone.utc
zones = st.sampled_from([UTC, GMT8, SHANGHAI, timezone(timedelta(hours=-5))])
instants = st.builds(lambda s, z: datetime(2020, 1, 1, tzinfo=UTC).astimezone(z) + timedelta(seconds=s),
                     st.integers(0, 10 * 365 * 86400), zones)
durations = st.integers(1, 3 * 86400).map(lambda s: timedelta(seconds=s))
spans = st.integers(600, 2 * 86400).map(lambda s: timedelta(seconds=s))  # <= 432 pieces: fast


def test_fetch_window_moves_start_back_by_the_overlap() -> None:
    start = datetime(2026, 11, 26, 10, 15, tzinfo=SHANGHAI)
    end = start + timedelta(minutes=15)
    assert fetch_window(start, end) == Window(datetime(2026, 11, 26, 10, 10, tzinfo=SHANGHAI), end)
    assert fetch_window(start, end, overlap=timedelta(0)) == Window(start, end)
    with pytest.raises(ValueError, match="overlap"):
        fetch_window(start, end, overlap=timedelta(minutes=-1))


def test_naive_or_empty_windows_are_refused() -> None:
    naive = datetime(2026, 11, 26, 10, 15)
    aware = naive.replace(tzinfo=SHANGHAI)
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(naive, aware)
    with pytest.raises(ValueError, match="not before"):
        Window(aware, aware)
    with pytest.raises(ValueError, match="timezone-aware"):
        window_is_closed(naive, now=aware, safety_lag=timedelta(0))


def test_split_window_example_and_limits() -> None:
    start = datetime(2026, 11, 26, 0, 0, tzinfo=SHANGHAI)
    pieces = split_window(start, start + timedelta(minutes=70), timedelta(minutes=30))
    assert [(p.start.strftime("%H:%M"), p.end.strftime("%H:%M")) for p in pieces] == [
        ("00:00", "00:30"), ("00:30", "01:00"), ("01:00", "01:10")]
    assert split_window(start, start + timedelta(days=1), INCREMENT_MAX_SPAN) == [
        Window(start, start + timedelta(days=1))]
    with pytest.raises(ValueError, match="max_span"):
        split_window(start, start + timedelta(hours=1), timedelta(0))


@given(instants, durations, spans)
def test_split_window_covers_exactly_contiguously_within_span(start: datetime, length: timedelta,
                                                              max_span: timedelta) -> None:
    end = start + length
    pieces = split_window(start, end, max_span)
    assert pieces[0].start == start and pieces[-1].end == end
    assert pieces[0].start.tzinfo is start.tzinfo
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    assert all(timedelta(0) < p.span <= max_span for p in pieces)
    assert all(p.span == max_span for p in pieces[:-1])
    assert sum((p.span for p in pieces), timedelta(0)) == end.astimezone(UTC) - start.astimezone(UTC)
    assert len(pieces) == -(-length // max_span)


@given(instants, durations, st.integers(0, 3600).map(lambda s: timedelta(seconds=s)))
def test_fetch_windows_cover_the_partition_plus_overlap(start: datetime, length: timedelta,
                                                       overlap: timedelta) -> None:
    pieces = fetch_windows(start, start + length, overlap=overlap, max_span=timedelta(minutes=30))
    assert pieces[0].start == start - overlap and pieces[-1].end == start + length
    assert all(p.span <= timedelta(minutes=30) for p in pieces)


@given(instants, st.integers(-86400, 86400).map(lambda s: timedelta(seconds=s)),
       st.integers(0, 3600).map(lambda s: timedelta(seconds=s)))
def test_window_is_closed_exactly_when_end_is_at_least_lag_old(end: datetime, age: timedelta,
                                                               lag: timedelta) -> None:
    now = (end + age).astimezone(UTC)
    assert window_is_closed(end, now=now, safety_lag=lag) is (age >= lag)


def test_window_is_closed_boundary() -> None:
    end = datetime(2026, 11, 26, 10, 30, tzinfo=SHANGHAI)
    lag = timedelta(minutes=3)
    assert window_is_closed(end, now=end + lag, safety_lag=lag)
    assert not window_is_closed(end, now=end + lag - timedelta(microseconds=1), safety_lag=lag)


def test_day_window_is_the_shanghai_day() -> None:
    window = day_window(date(2026, 11, 11))
    assert window.start == datetime(2026, 11, 10, 16, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 11, 16, 0, tzinfo=UTC)
    assert window.start.utcoffset() == timedelta(hours=8) and window.span == timedelta(days=1)
    assert datetime(2026, 11, 11, 23, 59, 59, tzinfo=GMT8) in window
    assert datetime(2026, 11, 12, 0, 0, tzinfo=GMT8) not in window
    with pytest.raises(TypeError):
        day_window(datetime(2026, 11, 11, tzinfo=SHANGHAI))


@given(st.dates(min_value=date(1995, 1, 1), max_value=date(2100, 1, 1)))
def test_consecutive_days_tile_time(day: date) -> None:
    today, tomorrow = day_window(day), day_window(day + timedelta(days=1))
    assert today.end == tomorrow.start and today.span == timedelta(days=1)


def test_partition_windows_is_an_exact_grid() -> None:
    start = datetime(2026, 11, 26, tzinfo=SHANGHAI)
    grid = partition_windows(start, start + timedelta(days=1), timedelta(minutes=15))
    assert len(grid) == 96 and grid[1].start == start + timedelta(minutes=15)
    with pytest.raises(ValueError, match="whole number"):
        partition_windows(start, start + timedelta(minutes=20), timedelta(minutes=15))


def test_partition_key_window_reads_dagster_keys_in_shanghai() -> None:
    window = partition_key_window("2026-11-26-10:15")
    assert window == Window(datetime(2026, 11, 26, 2, 15, tzinfo=UTC),
                            datetime(2026, 11, 26, 2, 30, tzinfo=UTC))
    assert partition_key_window("2026-11-26-23:45").end == datetime(2026, 11, 27, 0, 0, tzinfo=GMT8)
    with pytest.raises(ValueError):
        partition_key_window("2026-11-26")
