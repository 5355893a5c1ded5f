"""Partitions: shops (from configuration) x time.

Shops are a dynamic partition dimension so adding a shop to the configuration file needs no code
change: ``ordersync sync`` and the ``shop_partitions_sensor`` register configured shops with the
instance. Time is either increment windows (sync.incremental_minutes, 15 by default) or Asia/Shanghai days for the historical load.

Both time dimensions are anchored at one instant, the sync anchor: increment partitions start there
and the historical days end there. Trades created before the anchor are loaded by the historical
(created-time) path; every change at or after it is seen by an increment window, so together they
leave no gap.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from ordersync_pipeline.config import ENV_CONFIG, SyncSettings, load_config, ordersync_home
from ordersync_pipeline.timeutil import SHANGHAI, parse_local_time

# The name as a plain str: DynamicPartitionsDefinition.name is typed ``str | None``.
SHOPS_NAME = "shops"
SHOPS = dg.DynamicPartitionsDefinition(name=SHOPS_NAME)
TIME_FMT = "%Y-%m-%d-%H:%M"
DAY_FMT = "%Y-%m-%d"
ANCHOR_FILE = "sync_anchor"


def configured_sync() -> SyncSettings:
    """The ``sync`` section of the configuration named by ``ORDERSYNC_CONFIG`` (defaults if none)."""
    path = os.environ.get(ENV_CONFIG)
    if not path or not Path(path).exists():
        return SyncSettings()
    return load_config(path).sync


def sync_anchor(home: Path | None = None) -> datetime:
    """The instant increment partitions start, stable across processes and reloads.

    Taken from the configuration's ``sync.start`` when set; otherwise fixed on first use (the
    start of the current Asia/Shanghai day) and kept in ``ORDERSYNC_HOME/sync_anchor``.
    """
    start = configured_sync().start
    if start:
        return parse_local_time(start)
    home = home or ordersync_home()
    path = home / ANCHOR_FILE
    if path.exists():
        return datetime.fromisoformat(path.read_text(encoding="utf-8").strip())
    anchor = datetime.now(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(anchor.isoformat(), encoding="utf-8")
    return anchor


def increment_time_partitions(anchor: datetime, minutes: int) -> dg.TimeWindowPartitionsDefinition:
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=f"*/{minutes} * * * *",
        start=anchor.astimezone(SHANGHAI).replace(tzinfo=None),
        fmt=TIME_FMT,
        timezone="Asia/Shanghai",
    )


def history_day_partitions(anchor: datetime, days: int) -> dg.TimeWindowPartitionsDefinition:
    local = anchor.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    return dg.DailyPartitionsDefinition(
        start_date=(local - timedelta(days=days)).replace(tzinfo=None),
        end_date=local.replace(tzinfo=None),
        timezone="Asia/Shanghai",
        fmt=DAY_FMT,
    )


def multi(time_def: dg.PartitionsDefinition) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({"shop": SHOPS, "time": time_def})
