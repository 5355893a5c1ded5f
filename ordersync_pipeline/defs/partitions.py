"""Partitions: shops (from the configuration) x time (increment windows or historical days).

Shops are a static dimension built from the configuration, sorted by shop_id: every process that builds
the definitions from the same configuration agrees on it, reordering the configuration changes nothing,
and a run over a shop range covers exactly the shops between its ends. Adding or removing a shop is a
configuration edit (reload the code location, or restart ``ordersync dev``); a removed shop's rows stay in
the warehouse and its partitions simply stop being offered.

The time dimensions come from ``Timeline`` (sync/windows.py), the one rule for where increments begin and
history ends.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from ordersync_pipeline.sync.windows import DAY_KEY_FORMAT, PARTITION_KEY_FORMAT, Kind, Timeline

SHOP = "shop"
TIME = "time"


def shop_partitions(shop_ids: list[str]) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(shop_ids))


def increment_time_partitions(timeline: Timeline) -> dg.TimeWindowPartitionsDefinition:
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=f"*/{timeline.increment_minutes} * * * *",
        start=timeline.increment_start.replace(tzinfo=None),
        fmt=PARTITION_KEY_FORMAT,
        timezone="Asia/Shanghai",
    )


def history_day_partitions(timeline: Timeline) -> dg.TimeWindowPartitionsDefinition:
    # end_offset=1 offers the anchor's own day while it is still in progress (its window ends at the
    # anchor); end_date keeps every later day out.
    return dg.DailyPartitionsDefinition(
        start_date=timeline.first_history_day.strftime(DAY_KEY_FORMAT),
        end_date=(timeline.last_history_day + timedelta(days=1)).strftime(DAY_KEY_FORMAT),
        end_offset=1,
        timezone="Asia/Shanghai",
        fmt=DAY_KEY_FORMAT,
    )


class Partitions:
    """The two multi-partition definitions of one set of definitions."""

    def __init__(self, shop_ids: list[str], timeline: Timeline) -> None:
        self.timeline = timeline
        self.shops = shop_partitions(shop_ids)
        self.increment_time = increment_time_partitions(timeline)
        self.history_days = history_day_partitions(timeline)
        self.increment = dg.MultiPartitionsDefinition({SHOP: self.shops, TIME: self.increment_time})
        self.historical = dg.MultiPartitionsDefinition({SHOP: self.shops, TIME: self.history_days})

    def for_kind(self, kind: Kind) -> dg.MultiPartitionsDefinition:
        return self.increment if kind == "increment" else self.historical


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """``(shop_id, time_key)`` of a multi-partition key."""
    multi = key if isinstance(key, dg.MultiPartitionKey) else None
    if multi is None:
        shop, time_key = str(key).split("|", 1)  # MultiPartitionKey's string form orders dimensions by name
        return shop, time_key
    return multi.keys_by_dimension[SHOP], multi.keys_by_dimension[TIME]


def multi_key(shop_id: str, time_key: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({SHOP: shop_id, TIME: time_key})
