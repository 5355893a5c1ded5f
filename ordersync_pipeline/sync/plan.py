"""Which partitions a sync must run, and how to cut them into runs that target exactly those partitions.

A partition is complete when ``sync_windows`` holds a window recorded for it that covers its whole
range (increment: the partition itself; historical: up to the day's end or the anchor). Anything else
is wanted: never fetched, failed, killed half-way, or a historical day fetched while still in progress.

A Dagster run over multi-partitions targets a product: a range of shops times a range of time keys
(both in the partitions' own order: shops sorted, time keys in time order). ``rectangles`` cuts the
wanted cells into such products exactly, grouped by the streams that want them, so a run never
re-fetches a complete partition and never leaves out a wanted one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ordersync_pipeline.sync.windows import Kind, Timeline, Window

__all__ = ["RunRect", "is_complete", "wanted_keys", "rectangles", "shard", "increment_keys_between",
           "history_keys_between"]


@dataclass(frozen=True)
class RunRect:
    """One run: ``shops`` x ``time_keys`` (each contiguous in partition order) of ``streams`` on ``kind``."""

    kind: Kind
    streams: tuple[str, ...]
    shops: tuple[str, ...]
    time_keys: tuple[str, ...]

    @property
    def partitions(self) -> int:
        return len(self.shops) * len(self.time_keys)

    @property
    def cells(self) -> set[tuple[str, str]]:
        return {(shop, key) for shop in self.shops for key in self.time_keys}


def is_complete(timeline: Timeline, kind: Kind, key: str, recorded: Iterable[Window]) -> bool:
    """True when a recorded window covers partition ``key``.

    A historical day counts complete when a recorded window reaches its end: its start may have been
    clipped to the platform's history horizon, which nothing can fetch past anyway.
    """
    part = timeline.partition_window(kind, key)
    for window in recorded:
        if window.end >= part.end and (kind == "historical" or window.start <= part.start):
            return True
    return False


def wanted_keys(timeline: Timeline, kind: Kind, keys: Sequence[str],
                recorded: Mapping[str, Sequence[Window]]) -> list[str]:
    """The keys of ``keys`` not complete, given the windows recorded per partition key."""
    return [key for key in keys if not is_complete(timeline, kind, key, recorded.get(key, ()))]


def rectangles(kind: Kind, wanted: Mapping[str, Mapping[str, Sequence[str]]], shop_order: Sequence[str],
               key_order: Sequence[str]) -> list[RunRect]:
    """Cut ``wanted[stream][shop] = keys`` into runs that cover exactly the wanted cells.

    Cells wanted by the same set of streams go together; shops wanting the same keys and adjacent in
    ``shop_order`` share a run; keys are split where they stop being adjacent in ``key_order``.
    """
    position = {key: i for i, key in enumerate(key_order)}
    shop_position = {shop: i for i, shop in enumerate(shop_order)}
    streams_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for stream, per_shop in wanted.items():
        for shop, keys in per_shop.items():
            for key in keys:
                streams_of[(shop, key)].add(stream)
    by_streams: dict[tuple[str, ...], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for (shop, key), wanting in streams_of.items():
        by_streams[tuple(sorted(wanting))][shop].add(key)
    rects: list[RunRect] = []
    for names, cells in sorted(by_streams.items()):
        for shops, wanted_keys_ in _shop_groups(cells, shop_position):
            for run in _runs(sorted(wanted_keys_, key=position.__getitem__), position):
                rects.append(RunRect(kind=kind, streams=names, shops=tuple(shops), time_keys=tuple(run)))
    return rects


def shard(rects: Sequence[RunRect], max_shops: int) -> list[RunRect]:
    """``rects`` with every run of more than ``max_shops`` shops cut into runs of at most that many
    (the shops stay contiguous in partition order, so each piece is still a product)."""
    if max_shops < 1:
        raise ValueError(f"max_shops must be at least 1, got {max_shops}")
    return [RunRect(kind=rect.kind, streams=rect.streams, shops=rect.shops[i:i + max_shops],
                    time_keys=rect.time_keys)
            for rect in rects for i in range(0, len(rect.shops), max_shops)]


def _shop_groups(per_shop: Mapping[str, set[str]],
                 shop_position: Mapping[str, int]) -> list[tuple[list[str], set[str]]]:
    """Shops adjacent in partition order that want the same keys, as (shops, keys) groups."""
    groups: list[tuple[list[str], set[str]]] = []
    for shop in sorted(per_shop, key=shop_position.__getitem__):
        keys = per_shop[shop]
        if groups and groups[-1][1] == keys and shop_position[groups[-1][0][-1]] == shop_position[shop] - 1:
            groups[-1][0].append(shop)
        else:
            groups.append(([shop], set(keys)))
    return groups


def _runs(keys: list[str], position: Mapping[str, int]) -> list[list[str]]:
    runs: list[list[str]] = []
    for key in keys:
        if runs and position[runs[-1][-1]] == position[key] - 1:
            runs[-1].append(key)
        else:
            runs.append([key])
    return runs


def increment_keys_between(timeline: Timeline, now: datetime, start: datetime | None,
                           end: datetime | None) -> list[str]:
    """Closed increment keys whose partition overlaps ``[start, end)`` (all closed ones when unbounded)."""
    keys = timeline.closed_increment_keys(now, since=start)
    if end is None:
        return keys
    return [k for k in keys if timeline.increment_partition(k).start < end]


def history_keys_between(timeline: Timeline, start: datetime | None, end: datetime | None) -> list[str]:
    out = []
    for key in timeline.history_day_keys():
        window = timeline.history_window(key)
        if (start is None or window.end > start) and (end is None or window.start < end):
            out.append(key)
    return out

