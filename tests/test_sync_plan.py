"""Planning a sync: which partitions are complete, and runs that target exactly the wanted ones (issue 6.2)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ordersync_pipeline.sync.plan import is_complete, rectangles
from ordersync_pipeline.sync.windows import Timeline, Window
from ordersync_pipeline.timeutil import SHANGHAI

TIMELINE = Timeline(anchor=datetime(2026, 11, 30, tzinfo=SHANGHAI), history_days=3, increment_minutes=15)
SHOPS = ["a", "b", "c", "d"]
KEYS = [f"k{i:02d}" for i in range(8)]


def test_an_increment_partition_is_complete_only_when_a_recorded_window_covers_it() -> None:
    key = "2026-11-30-10:15"
    part = TIMELINE.increment_partition(key)
    fetched = TIMELINE.increment_window(key)
    assert is_complete(TIMELINE, "increment", key, [fetched])
    assert not is_complete(TIMELINE, "increment", key, [Window(part.start + timedelta(minutes=1), part.end)])
    assert not is_complete(TIMELINE, "increment", key, [])


def test_a_historical_day_fetched_while_in_progress_is_not_complete() -> None:
    key = "2026-11-29"
    day = TIMELINE.history_window(key)
    assert is_complete(TIMELINE, "historical", key, [day])
    assert not is_complete(TIMELINE, "historical", key, [Window(day.start, day.end - timedelta(hours=2))])
    # Its start clipped to the platform's horizon still counts: nothing can fetch past it.
    assert is_complete(TIMELINE, "historical", key, [Window(day.start + timedelta(hours=3), day.end)])


def test_all_shops_wanting_the_same_keys_is_one_run_whatever_the_configuration_order() -> None:
    wanted = {"trades": {shop: KEYS[2:6] for shop in ["c", "a", "d", "b"]}}
    rects = rectangles("increment", wanted, SHOPS, KEYS)
    assert [(r.shops, r.time_keys) for r in rects] == [(tuple(SHOPS), tuple(KEYS[2:6]))]


def test_a_shop_between_two_wanted_ones_is_never_swept_into_their_run() -> None:
    wanted = {"trades": {"a": KEYS[:2], "c": KEYS[:2]}}
    rects = rectangles("increment", wanted, SHOPS, KEYS)
    assert sorted(r.shops for r in rects) == [("a",), ("c",)]


def test_streams_wanting_the_same_cells_share_a_run() -> None:
    wanted = {"trades": {"a": KEYS[:3]}, "refunds": {"a": KEYS[:3], "b": KEYS[:1]}}
    rects = rectangles("increment", wanted, SHOPS, KEYS)
    assert sorted((r.streams, r.shops, r.time_keys) for r in rects) == [
        (("refunds",), ("b",), (KEYS[0],)),
        (("refunds", "trades"), ("a",), tuple(KEYS[:3])),
    ]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["trades", "refunds"]),
                       st.dictionaries(st.sampled_from(SHOPS), st.sets(st.sampled_from(KEYS), min_size=1)),
                       min_size=1))
def test_runs_cover_exactly_the_wanted_cells_once(wanted: dict[str, dict[str, set[str]]]) -> None:
    sorted_wanted = {s: {shop: sorted(keys) for shop, keys in per.items()} for s, per in wanted.items()}
    rects = rectangles("increment", sorted_wanted, SHOPS, KEYS)
    covered: list[tuple[str, str, str]] = []
    for rect in rects:
        assert list(rect.shops) == SHOPS[SHOPS.index(rect.shops[0]):SHOPS.index(rect.shops[-1]) + 1]
        assert list(rect.time_keys) == KEYS[KEYS.index(rect.time_keys[0]):KEYS.index(rect.time_keys[-1]) + 1]
        covered += [(s, shop, key) for s in rect.streams for shop, key in rect.cells]
    want = [(s, shop, key) for s, per in wanted.items() for shop, keys in per.items() for key in keys]
    assert sorted(covered) == sorted(want)
